//! HDR latency histograms: one per phase (`client::Phase`) per thread, in microseconds, merged
//! by the main thread; their summaries (p50/p90/p99/p99.9/max and the percentile curve for
//! the report); and their serialised forms: one histogram as base64 of the V2 compressed
//! encoding, and a run as an HdrHistogram interval log (`#[BaseTime: ...]` header, then
//! `Tag=<phase>,<start>,<duration>,<max>,<base64>` lines), the format the standard tools
//! (HistogramLogProcessor, HdrHistogram.js, hdrhistogram-rs) read.

use std::io::Cursor;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, Tag};
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

/// Significant decimal digits kept by every histogram (0.1 % value resolution).
pub const SIGFIGS: u8 = 3;

/// A latency histogram in microseconds. It starts small and grows to the largest value seen.
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new(SIGFIGS) {
        Ok(h) => h,
        Err(e) => unreachable!("3 significant figures is a valid histogram precision: {e:?}"),
    }
}

/// Records `us` microseconds (auto-resizing histograms accept any u64).
#[inline]
pub fn record(h: &mut Histogram<u64>, us: u64) {
    // Auto-resize never fails for values up to u64::MAX / 2; clamp to stay in that range.
    let _ = h.record(us.min(u64::MAX / 4));
}

/// Adds `from` into `into`.
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    // Auto-resizing histograms with equal precision always merge.
    let _ = into.add(from);
}

/// The summary of one histogram, as written to JSON and shown in tables.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    /// Samples.
    pub count: u64,
    /// Smallest value, µs.
    pub min_us: u64,
    /// Mean, µs.
    pub mean_us: f64,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest value, µs.
    pub max_us: u64,
    /// The percentile distribution: `[percentile, value_us]` pairs, denser towards the tail
    /// (HdrHistogram's "percentile distribution", five steps per halving of 1 - p).
    pub percentiles: Vec<(f64, u64)>,
    /// The whole histogram: base64 of its V2 compressed (deflate) encoding.
    pub hdr: String,
}

impl Summary {
    /// Summarises `h`.
    pub fn of(h: &Histogram<u64>) -> Summary {
        if h.is_empty() {
            return Summary { hdr: encode(h), ..Summary::default() };
        }
        Summary {
            count: h.len(),
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            percentiles: percentile_curve(h),
            hdr: encode(h),
        }
    }
}

/// The percentile curve of `h`: points from p0 to p100, five per halving of the tail.
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    let mut out: Vec<(f64, u64)> = Vec::new();
    for v in h.iter_quantiles(5) {
        let pct = v.quantile_iterated_to() * 100.0;
        let value = h.highest_equivalent(v.value_iterated_to());
        if out.last().is_some_and(|&(p, _)| p >= pct) {
            continue;
        }
        out.push((pct, value));
        if out.len() >= 400 {
            break;
        }
    }
    if out.last().is_none_or(|&(p, _)| p < 100.0) {
        out.push((100.0, h.max()));
    }
    out
}

/// base64 of the V2 compressed encoding of `h`.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut raw = Vec::new();
    let mut s = V2DeflateSerializer::new();
    match s.serialize(h, &mut raw) {
        Ok(_) => BASE64.encode(&raw),
        // Serialising into a Vec fails only for histograms too large to encode (> 2 GiB).
        Err(e) => unreachable!("V2 deflate serialisation into memory failed: {e:?}"),
    }
}

/// Decodes `encode`'s output (any V2 encoding, compressed or not).
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let raw = BASE64.decode(text.trim()).map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new().deserialize(&mut Cursor::new(raw)).map_err(|e| format!("histogram does not decode: {e:?}"))
}

/// One interval of an interval log.
#[derive(Debug, Clone)]
pub struct Interval {
    /// The tag (the phase name).
    pub tag: String,
    /// Start, seconds after the log's base time.
    pub start: Duration,
    /// Length.
    pub duration: Duration,
    /// The samples of the interval.
    pub hist: Histogram<u64>,
}

/// Writes an interval log with base time `base` and a comment naming the unit.
pub fn write_interval_log(base: SystemTime, intervals: &[Interval]) -> String {
    let mut out: Vec<u8> = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut builder = IntervalLogWriterBuilder::new();
        builder
            .add_comment("ringload latency histograms; values in microseconds; tag = phase")
            .with_start_time(base)
            .with_base_time(base)
            .with_max_value_divisor(1000.0); // the max column reads in milliseconds, as the Java tools expect
        let Ok(mut w) = builder.begin_log_with(&mut out, &mut serializer) else { return String::new() };
        for i in intervals {
            let tag = Tag::new(&i.tag);
            let _ = w.write_histogram(&i.hist, i.start, i.duration, tag);
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Reads an interval log back: `(tag, start, duration, histogram)` for each interval.
pub fn read_interval_log(text: &str) -> Result<Vec<Interval>, String> {
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(text.as_bytes()) {
        match entry.map_err(|e| format!("interval log does not parse: {e:?}"))? {
            LogEntry::Interval(ilh) => {
                let hist = decode(ilh.encoded_histogram())?;
                out.push(Interval {
                    tag: ilh.tag().map(|t| t.as_str().to_string()).unwrap_or_default(),
                    start: ilh.start_timestamp(),
                    duration: ilh.duration(),
                    hist,
                });
            }
            LogEntry::BaseTime(_) | LogEntry::StartTime(_) => {}
        }
    }
    Ok(out)
}

/// Seconds since the Unix epoch of `t` (for JSON).
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_encode_decode_and_merge() {
        let mut a = new_histogram();
        let mut b = new_histogram();
        for v in 1..=1000 {
            record(&mut a, v);
            record(&mut b, v * 1000);
        }
        let s = Summary::of(&a);
        assert_eq!(s.count, 1000);
        assert!((499..=501).contains(&s.p50_us));
        assert!((989..=991).contains(&s.p99_us));
        assert_eq!(s.max_us, 1000);
        assert_eq!(s.percentiles.last().unwrap().0, 100.0);
        assert!(s.percentiles.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        let back = decode(&s.hdr).unwrap();
        assert_eq!(back.len(), 1000);
        assert_eq!(back.value_at_quantile(0.5), a.value_at_quantile(0.5));
        merge(&mut a, &b);
        assert_eq!(a.len(), 2000);
        assert!(a.max() >= 999_000);
        assert_eq!(Summary::of(&new_histogram()).count, 0);
    }

    #[test]
    fn interval_log_round_trip() {
        let base = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h1 = new_histogram();
        let mut h2 = new_histogram();
        for v in 0..100 {
            record(&mut h1, 100 + v);
            record(&mut h2, 5000 + v);
        }
        let log = write_interval_log(
            base,
            &[
                Interval { tag: "message".into(), start: Duration::ZERO, duration: Duration::from_secs(1), hist: h1 },
                Interval {
                    tag: "submission".into(),
                    start: Duration::from_secs(1),
                    duration: Duration::from_secs(1),
                    hist: h2,
                },
            ],
        );
        assert!(log.contains("#[BaseTime: 1700000000.000"), "{log}");
        assert!(log.contains("Tag=message,0.000,1.000,"), "{log}");
        let back = read_interval_log(&log).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].tag, "submission");
        assert_eq!(back[1].hist.len(), 100);
        assert_eq!(back[1].start, Duration::from_secs(1));
    }
}
