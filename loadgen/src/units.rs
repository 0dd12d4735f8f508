//! The operator's units: durations (`500ms`, `10s`, `2m`), sizes (`1024`, `10k`, `1MiB`),
//! rates (`500`, `500/s`, `30000/m`), probabilities (`0.05`, `5%`), and the way latencies and
//! rates are printed back. Parsers return a sentence that says what was expected.

use std::time::Duration;

/// Parses a duration: a number (fractions allowed) and a unit `us`, `ms`, `s`, `m` or `h`.
/// A bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration; write a number and a unit, e.g. 500ms, 10s, 2m"))?;
    let scale = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "" => return Err(format!("`{text}` has no unit; write e.g. {text}s or {text}ms")),
        other => return Err(format!("`{text}`: unknown unit `{other}`; use us, ms, s, m or h")),
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a byte size: a number with an optional binary unit, `k`/`K`/`KiB`/`KB` = 1024,
/// `m`/`M`/`MiB`/`MB` = 1024², `g`/`G`/`GiB`/`GB` = 1024³. Fractions allowed (`1.5k`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("`{text}` is not a size; write e.g. 1024, 10k or 1MiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("`{text}`: unknown size unit `{other}`; use k, M or G (binary)")),
    };
    let bytes = (value * scale).round();
    if !bytes.is_finite() || !(0.0..=64.0 * 1024.0 * 1024.0 * 1024.0).contains(&bytes) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses a rate into messages per second: `500`, `500/s`, `30000/m`, `1.8e6/h`.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (num, per) = match t.split_once('/') {
        Some((n, p)) => (n.trim(), p.trim()),
        None => (t, "s"),
    };
    let value: f64 = num.parse().map_err(|_| format!("`{text}` is not a rate; write e.g. 500/s or 30000/m"))?;
    let per_secs = match per {
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("`{text}`: unknown rate unit `/{other}`; use /s, /m or /h")),
    };
    let rate = value / per_secs;
    if !rate.is_finite() || rate <= 0.0 || rate > 1e8 {
        return Err(format!("`{text}`: the rate must be above 0 and at most 100 million per second"));
    }
    Ok(rate)
}

/// Parses a probability: `0.05` or `5%`, within 0..=1.
pub fn parse_probability(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let p = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| format!("`{text}` is not a probability; write e.g. 0.05 or 5%"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("`{text}`: a probability is between 0 and 1 (0% and 100%)"));
    }
    Ok(p)
}

/// A latency in microseconds as text with three significant digits: `850us`, `1.23ms`, `4.50s`.
pub fn fmt_micros(us: u64) -> String {
    let v = us as f64;
    if us < 1000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.prec$}ms", v / 1e3, prec = precision(v / 1e3))
    } else {
        format!("{:.prec$}s", v / 1e6, prec = precision(v / 1e6))
    }
}

/// Milliseconds with three decimals (for aligned tables).
pub fn fmt_ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1e3)
}

fn precision(v: f64) -> usize {
    if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    }
}

/// A duration for humans, like the parser takes it (`250ms`, `10s`, `1.5m`).
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 1.0 {
        format!("{}ms", d.as_millis())
    } else if s < 120.0 {
        format!("{}s", trim_float(s))
    } else {
        format!("{}m", trim_float(s / 60.0))
    }
}

fn trim_float(v: f64) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A rate per second for humans (`850/s`, `12.5k/s`).
pub fn fmt_rate(per_s: f64) -> String {
    if per_s >= 10_000.0 {
        format!("{:.1}k/s", per_s / 1000.0)
    } else if per_s >= 100.0 {
        format!("{per_s:.0}/s")
    } else {
        format!("{per_s:.1}/s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("10").unwrap_err().contains("no unit"));
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("1k").unwrap(), 1024);
        assert_eq!(parse_size("10KiB").unwrap(), 10240);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert!(parse_size("1q").is_err());
    }

    #[test]
    fn rates_and_probabilities() {
        assert_eq!(parse_rate("500").unwrap(), 500.0);
        assert_eq!(parse_rate("500/s").unwrap(), 500.0);
        assert_eq!(parse_rate("6000/m").unwrap(), 100.0);
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("5/d").is_err());
        assert_eq!(parse_probability("0.25").unwrap(), 0.25);
        assert_eq!(parse_probability("5%").unwrap(), 0.05);
        assert!(parse_probability("1.5").is_err());
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt_micros(850), "850us");
        assert_eq!(fmt_micros(1234), "1.23ms");
        assert_eq!(fmt_micros(45_600), "45.6ms");
        assert_eq!(fmt_micros(4_500_000), "4.50s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_secs(10)), "10s");
        assert_eq!(fmt_rate(12_500.0), "12.5k/s");
    }
}
