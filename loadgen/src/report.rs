//! `ringload report`: one self-contained HTML page from a `run`, `sweep` or `sink` JSON file.
//! The charts are inline SVG drawn here (no JavaScript needed to see them, no network: no
//! external script, style, font or image); a few lines of inline JavaScript only toggle
//! series when a legend entry is clicked. The input JSON is embedded in the page
//! (`<script type="application/json" id="ringload-data">`), so the page is its own archive.
//!
//! Charts: the HDR percentile distribution (x: percentile on the usual `1/(1-p)` log scale,
//! y: latency, log), throughput and latency per second, and for a sweep the accepted-vs-offered
//! and p99-vs-throughput curves with the target and the capacity marked.

use std::fmt::Write as _;

use crate::client::Phase;
use crate::hist::Summary;
use crate::run::RunResult;
use crate::sink::SinkResult;
use crate::sweep::SweepResult;
use crate::units::{fmt_micros, fmt_rate};

const WIDTH: f64 = 880.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 52.0;

/// Series colours (Okabe–Ito, readable by colour-blind readers).
const COLORS: &[&str] = &["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"];

/// Percentile axis cap: 99.9999 %.
const PCT_X_MAX: f64 = 6.0;

#[derive(Debug, Clone)]
struct Axis {
    label: String,
    log: bool,
    min: f64,
    max: f64,
    ticks: Vec<(f64, String)>,
}

impl Axis {
    /// Position in [0, 1] of `v`.
    fn frac(&self, v: f64) -> f64 {
        if self.log {
            let (lo, hi) = (self.min.log10(), self.max.log10());
            (v.max(self.min).log10() - lo) / (hi - lo).max(1e-12)
        } else {
            (v - self.min) / (self.max - self.min).max(1e-12)
        }
    }

    /// A linear axis from `min` to a nice number above `max`.
    fn linear(label: &str, min: f64, max: f64) -> Axis {
        let max = if max <= min { min + 1.0 } else { max };
        let step = nice_step((max - min) / 6.0);
        let top = (max / step).ceil() * step;
        let mut ticks = Vec::new();
        let mut v = min;
        while v <= top + step * 1e-9 {
            ticks.push((v, fmt_number(v)));
            v += step;
        }
        Axis { label: label.into(), log: false, min, max: top, ticks }
    }

    /// A log axis covering `[min, max]` in whole decades, ticks at 1, 2, 5.
    fn log(label: &str, min: f64, max: f64) -> Axis {
        let min = min.max(1e-3);
        let max = max.max(min * 10.0);
        let lo = min.log10().floor();
        let hi = max.log10().ceil();
        let mut ticks = Vec::new();
        let mut e = lo;
        while e <= hi {
            for m in [1.0, 2.0, 5.0] {
                let v = m * 10f64.powf(e);
                if v >= 10f64.powf(lo) && v <= 10f64.powf(hi) {
                    ticks.push((v, fmt_number(v)));
                }
            }
            e += 1.0;
        }
        Axis { label: label.into(), log: true, min: 10f64.powf(lo), max: 10f64.powf(hi), ticks }
    }

    /// The percentile axis: x = -log10(1 - p), ticks at 0 %, 90 %, 99 %...
    fn percentile(max_x: f64) -> Axis {
        let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"];
        let ticks = (0..=max_x as usize).map(|i| (i as f64, labels[i].to_string())).collect();
        Axis { label: "percentile".into(), log: false, min: 0.0, max: max_x, ticks }
    }
}

fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(raw.log10().floor());
    let r = raw / mag;
    let m = if r <= 1.0 {
        1.0
    } else if r <= 2.0 {
        2.0
    } else if r <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

fn fmt_number(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v.abs() >= 1e4 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() { "0".into() } else { s.to_string() }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Style {
    Line,
    Points,
    LinePoints,
}

#[derive(Debug, Clone)]
struct Series {
    name: String,
    color: &'static str,
    style: Style,
    points: Vec<(f64, f64)>,
    /// A tooltip per point (SVG `<title>`), for marker styles.
    tips: Vec<String>,
}

#[derive(Debug, Clone)]
struct Chart {
    id: String,
    title: String,
    x: Axis,
    y: Axis,
    series: Vec<Series>,
    /// Horizontal reference lines: (y value, label).
    hlines: Vec<(f64, String)>,
    /// Vertical reference lines: (x value, label).
    vlines: Vec<(f64, String)>,
}

impl Chart {
    fn px(&self, x: f64) -> f64 {
        LEFT + self.x.frac(x).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - self.y.frac(y).clamp(0.0, 1.0) * (HEIGHT - TOP - BOTTOM)
    }

    fn svg(&self) -> String {
        let mut s = String::with_capacity(16 * 1024);
        let _ = write!(
            s,
            r#"<figure class="chart" id="{id}"><svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{title}">"#,
            id = esc(&self.id),
            title = esc(&self.title)
        );
        let _ = write!(s, r#"<text class="title" x="{LEFT}" y="20">{}</text>"#, esc(&self.title));
        // Grid and ticks.
        let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
        for (v, label) in &self.y.ticks {
            let y = self.py(*v);
            let _ = write!(s, r#"<line class="grid" x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}"/>"#);
            let _ = write!(
                s,
                r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                x0 - 6.0,
                y + 4.0,
                esc(label)
            );
        }
        for (v, label) in &self.x.ticks {
            let x = self.px(*v);
            let _ = write!(s, r#"<line class="grid" x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}"/>"#);
            let _ = write!(
                s,
                r#"<text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                y1 + 16.0,
                esc(label)
            );
        }
        let _ = write!(s, r#"<rect class="frame" x="{x0}" y="{y0}" width="{:.1}" height="{:.1}"/>"#, x1 - x0, y1 - y0);
        let _ = write!(
            s,
            r#"<text class="axis" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            (x0 + x1) / 2.0,
            HEIGHT - 10.0,
            esc(&self.x.label)
        );
        let _ = write!(
            s,
            r#"<text class="axis" transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            (y0 + y1) / 2.0,
            esc(&self.y.label)
        );
        for (v, label) in &self.hlines {
            let y = self.py(*v);
            let _ = write!(s, r#"<line class="ref" x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}"/>"#);
            let _ = write!(
                s,
                r#"<text class="reflabel" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                x1 - 4.0,
                y - 4.0,
                esc(label)
            );
        }
        for (v, label) in &self.vlines {
            let x = self.px(*v);
            let _ = write!(s, r#"<line class="ref" x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}"/>"#);
            let _ =
                write!(s, r#"<text class="reflabel" x="{:.1}" y="{:.1}">{}</text>"#, x + 4.0, y0 + 12.0, esc(label));
        }
        for series in &self.series {
            let name = esc(&series.name);
            let _ = write!(s, r#"<g class="series" data-series="{name}" style="color:{}">"#, series.color);
            if matches!(series.style, Style::Line | Style::LinePoints) && !series.points.is_empty() {
                s.push_str(r#"<polyline fill="none" stroke="currentColor" stroke-width="2" points=""#);
                for (x, y) in &series.points {
                    let _ = write!(s, "{:.1},{:.1} ", self.px(*x), self.py(*y));
                }
                let _ = write!(s, r#""><title>{name}</title></polyline>"#);
            }
            if matches!(series.style, Style::Points | Style::LinePoints) {
                for (i, (x, y)) in series.points.iter().enumerate() {
                    let tip = series.tips.get(i).map(String::as_str).unwrap_or(&series.name);
                    let _ = write!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="currentColor"><title>{}</title></circle>"#,
                        self.px(*x),
                        self.py(*y),
                        esc(tip)
                    );
                }
            }
            s.push_str("</g>");
        }
        s.push_str("</svg>");
        // Legend (click to toggle).
        s.push_str(r#"<figcaption class="legend">"#);
        for series in &self.series {
            let _ = write!(
                s,
                r#"<button type="button" class="key" data-toggle="{}"><span class="swatch" style="background:{}"></span>{}</button>"#,
                esc(&series.name),
                series.color,
                esc(&series.name)
            );
        }
        s.push_str("</figcaption></figure>\n");
        s
    }
}

/// Escapes text for HTML (content and attributes).
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// x of a percentile on the `1/(1-p)` scale.
fn pct_x(pct: f64) -> f64 {
    let rest = (1.0 - pct / 100.0).max(10f64.powf(-PCT_X_MAX));
    (-rest.log10()).clamp(0.0, PCT_X_MAX)
}

/// The percentile-distribution chart of some summaries (values µs, shown in ms).
fn percentile_chart(id: &str, title: &str, summaries: &[(&str, &Summary)], hline_ms: Option<(f64, String)>) -> Chart {
    let mut min_ms = f64::MAX;
    let mut max_ms: f64 = 0.0;
    let mut count_max = 0u64;
    let mut series = Vec::new();
    for (i, (name, s)) in summaries.iter().enumerate() {
        if s.count == 0 {
            continue;
        }
        count_max = count_max.max(s.count);
        let points: Vec<(f64, f64)> =
            s.percentiles.iter().map(|&(p, us)| (pct_x(p), (us as f64 / 1000.0).max(0.001))).collect();
        for &(_, ms) in &points {
            min_ms = min_ms.min(ms);
            max_ms = max_ms.max(ms);
        }
        let tips = s.percentiles.iter().map(|&(p, us)| format!("{name} p{p:.4}: {}", fmt_micros(us))).collect();
        series.push(Series {
            name: name.to_string(),
            color: COLORS[i % COLORS.len()],
            style: Style::Line,
            points,
            tips,
        });
    }
    if let Some((v, _)) = &hline_ms {
        max_ms = max_ms.max(*v);
    }
    if series.is_empty() {
        min_ms = 0.1;
        max_ms = 1.0;
    }
    // The tail is meaningful up to about 1 - 1/count.
    let max_x = ((count_max.max(10) as f64).log10().ceil()).clamp(2.0, PCT_X_MAX);
    Chart {
        id: id.into(),
        title: title.into(),
        x: Axis::percentile(max_x),
        y: Axis::log("latency (ms, log scale)", min_ms, max_ms),
        series,
        hlines: hline_ms.into_iter().collect(),
        vlines: Vec::new(),
    }
}

/// Line style for a time series: markers too when there are few points.
fn series_style(points: usize) -> Style {
    if points < 30 { Style::LinePoints } else { Style::Line }
}

fn throughput_chart(id: &str, run: &RunResult) -> Chart {
    // A last, partial interval of a few milliseconds (the drain) would show a meaningless rate.
    let full = || run.timeseries.iter().filter(|p| p.duration_s >= 0.25);
    let ok: Vec<(f64, f64)> = full().map(|p| (p.t_s, p.ok_per_s)).collect();
    let failed: Vec<(f64, f64)> = full().map(|p| (p.t_s, p.failed as f64 / p.duration_s)).collect();
    let style = series_style(ok.len());
    let t_max = run.timeseries.last().map_or(1.0, |p| p.t_s);
    let y_max = ok.iter().chain(&failed).map(|p| p.1).fold(0.0, f64::max);
    let mut hlines = Vec::new();
    if let Some(rate) = run.config.rate_per_s {
        hlines.push((rate, format!("offered {}", fmt_rate(rate))));
    }
    let y_top = y_max.max(run.config.rate_per_s.unwrap_or(0.0)) * 1.05;
    Chart {
        id: id.into(),
        title: "Throughput per second".into(),
        x: Axis::linear("time (s)", 0.0, t_max),
        y: Axis::linear("messages per second", 0.0, y_top.max(1.0)),
        series: vec![
            Series { name: "accepted/s".into(), color: COLORS[0], style, points: ok, tips: Vec::new() },
            Series { name: "failed/s".into(), color: COLORS[1], style, points: failed, tips: Vec::new() },
        ],
        hlines,
        vlines: Vec::new(),
    }
}

fn latency_time_chart(id: &str, run: &RunResult) -> Chart {
    let pick = |f: &dyn Fn(&crate::run::TickPoint) -> u64| -> Vec<(f64, f64)> {
        run.timeseries.iter().filter(|p| p.ok > 0).map(|p| (p.t_s, (f(p) as f64 / 1000.0).max(0.001))).collect()
    };
    let series = vec![
        ("p50", pick(&|p| p.p50_us)),
        ("p90", pick(&|p| p.p90_us)),
        ("p99", pick(&|p| p.p99_us)),
        ("max", pick(&|p| p.max_us)),
        ("submission p99", pick(&|p| p.submission_p99_us)),
    ];
    let all = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1));
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi == 0.0 { (0.1, 1.0) } else { (lo, hi) };
    let t_max = run.timeseries.last().map_or(1.0, |p| p.t_s);
    Chart {
        id: id.into(),
        title: "Message latency per second (from the intended send time)".into(),
        x: Axis::linear("time (s)", 0.0, t_max),
        y: Axis::log("latency (ms, log scale)", lo, hi),
        series: series
            .into_iter()
            .enumerate()
            .map(|(i, (name, points))| Series {
                name: name.into(),
                color: COLORS[i % COLORS.len()],
                style: series_style(points.len()),
                points,
                tips: Vec::new(),
            })
            .collect(),
        hlines: Vec::new(),
        vlines: Vec::new(),
    }
}

fn summary_table(rows: &[(&str, &str, &Summary)]) -> String {
    let mut s = String::from(
        "<table class=\"num\"><thead><tr><th>latency</th><th>count</th><th>p50</th><th>p90</th><th>p99</th>\
         <th>p99.9</th><th>max</th><th>mean</th><th>measures</th></tr></thead><tbody>",
    );
    for (name, what, x) in rows {
        if x.count == 0 {
            continue;
        }
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}</td></tr>",
            esc(name),
            x.count,
            fmt_micros(x.p50_us),
            fmt_micros(x.p90_us),
            fmt_micros(x.p99_us),
            fmt_micros(x.p999_us),
            fmt_micros(x.max_us),
            fmt_micros(x.mean_us as u64),
            esc(what)
        );
    }
    s.push_str("</tbody></table>\n");
    s
}

fn kv_table(rows: &[(&str, String)]) -> String {
    let mut s = String::from("<table class=\"kv\"><tbody>");
    for (k, v) in rows {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    s.push_str("</tbody></table>\n");
    s
}

fn run_sections(run: &RunResult, prefix: &str) -> String {
    let mut body = String::new();
    let c = &run.config;
    let n = &run.counts;
    body.push_str(&kv_table(&[
        ("target", c.target.clone()),
        (
            "load",
            match c.rate_per_s {
                Some(r) => format!("open loop, {} offered, up to {} connections", fmt_rate(r), c.concurrency),
                None => format!("closed loop, {} connections", c.concurrency),
            },
        ),
        (
            "messages",
            format!("{} accepted, {} failed, {} attempted, {} unsent", n.ok, n.failed, n.attempted, run.unsent),
        ),
        ("throughput", format!("{:.1} accepted messages/s over {:.1} s", run.throughput_per_s, run.elapsed_s)),
        ("error rate", format!("{:.3}%", run.error_rate * 100.0)),
        (
            "recipients",
            format!(
                "{} accepted, {} refused ({} per message, {} domains)",
                n.rcpts_ok, n.rcpts_refused, c.rcpts, c.domains
            ),
        ),
        (
            "message size",
            format!(
                "{} (mean {:.0} bytes), {} messages per connection",
                c.size,
                c.size_mean_bytes,
                if c.per_connection == 0 { "unlimited".to_string() } else { c.per_connection.to_string() }
            ),
        ),
        (
            "session",
            format!(
                "starttls {}, implicit TLS {}, auth {}, pipelining {}, bdat {}, {} threads",
                c.starttls, c.implicit_tls, c.auth, c.pipelining, c.bdat, c.threads
            ),
        ),
        ("connections", format!("{} opened, {} failed", n.connections, n.connections_failed)),
    ]));
    let rows: Vec<(&str, &str, &Summary)> =
        Phase::ALL.iter().filter_map(|p| run.phases.get(p.name()).map(|s| (p.name(), p.describe(), s))).collect();
    body.push_str(&summary_table(&rows));
    let curves: Vec<(&str, &Summary)> = rows.iter().map(|(n, _, s)| (*n, *s)).collect();
    body.push_str(
        &percentile_chart(&format!("{prefix}percentiles"), "Latency percentile distribution", &curves, None).svg(),
    );
    if !run.timeseries.is_empty() {
        body.push_str(&throughput_chart(&format!("{prefix}throughput"), run).svg());
        body.push_str(&latency_time_chart(&format!("{prefix}latency-time"), run).svg());
    }
    if !run.errors.is_empty() {
        body.push_str("<h3>Failures</h3><table class=\"num\"><thead><tr><th>count</th><th>stage</th><th>cause</th></tr></thead><tbody>");
        for e in &run.errors {
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td></tr>",
                e.count,
                esc(&e.stage),
                esc(&e.cause)
            );
        }
        body.push_str("</tbody></table>\n");
    }
    body
}

fn sweep_sections(sw: &SweepResult) -> String {
    let mut body = String::new();
    let c = &sw.config;
    let target_ms = c.p99_target_us as f64 / 1000.0;
    let capacity = match &sw.capacity {
        Some(cap) => format!(
            "{} offered held: {} accepted, p99 {}, {:.0} messages/hour at {:.0} bytes",
            fmt_rate(cap.rate_per_s),
            fmt_rate(cap.achieved_per_s),
            fmt_micros(cap.p99_us),
            cap.messages_per_hour,
            cap.size_mean_bytes
        ),
        None => "no step held the limits".into(),
    };
    body.push_str(&kv_table(&[
        ("target", c.target.clone()),
        ("capacity", capacity),
        (
            "limits",
            format!(
                "{} p99 ≤ {}, errors ≤ {:.2}%, accepted ≥ {:.0}% of offered",
                c.metric,
                fmt_micros(c.p99_target_us),
                c.max_errors * 100.0,
                c.min_achieved * 100.0
            ),
        ),
        (
            "steps",
            format!(
                "start {}/s, growth {}, {} s each, up to {} connections",
                c.start_per_s, c.growth, c.step_duration_s, c.concurrency
            ),
        ),
        ("stopped", sw.stop_reason.clone()),
    ]));
    // p99 vs accepted throughput.
    let mut steps: Vec<_> = sw.steps.iter().collect();
    steps.sort_by(|a, b| a.offered_per_s.total_cmp(&b.offered_per_s));
    let mk = |pass: bool| -> (Vec<(f64, f64)>, Vec<String>) {
        let chosen: Vec<_> = steps.iter().filter(|s| s.pass == pass && s.p99_us > 0).collect();
        (
            chosen.iter().map(|s| (s.achieved_per_s, s.p99_us as f64 / 1000.0)).collect(),
            chosen
                .iter()
                .map(|s| {
                    format!(
                        "offered {} → accepted {}, p99 {}{}",
                        fmt_rate(s.offered_per_s),
                        fmt_rate(s.achieved_per_s),
                        fmt_micros(s.p99_us),
                        s.reason.as_deref().map(|r| format!(" — {r}")).unwrap_or_default()
                    )
                })
                .collect(),
        )
    };
    let curve: Vec<(f64, f64)> =
        steps.iter().filter(|s| s.p99_us > 0).map(|s| (s.achieved_per_s, s.p99_us as f64 / 1000.0)).collect();
    let (ok_pts, ok_tips) = mk(true);
    let (bad_pts, bad_tips) = mk(false);
    let x_max = steps.iter().map(|s| s.achieved_per_s.max(s.offered_per_s)).fold(1.0, f64::max);
    let y_vals: Vec<f64> = curve.iter().map(|p| p.1).chain([target_ms]).collect();
    let y_lo = y_vals.iter().copied().fold(f64::MAX, f64::min);
    let y_hi = y_vals.iter().copied().fold(0.0, f64::max);
    let mut vlines = Vec::new();
    if let Some(cap) = &sw.capacity {
        vlines.push((cap.achieved_per_s, format!("capacity {}", fmt_rate(cap.achieved_per_s))));
    }
    let knee = Chart {
        id: "sweep-knee".into(),
        title: format!("{} p99 vs accepted throughput", c.metric),
        x: Axis::linear("accepted messages per second", 0.0, x_max * 1.05),
        y: Axis::log("p99 latency (ms, log scale)", y_lo, y_hi),
        series: vec![
            Series { name: "sweep".into(), color: COLORS[7], style: Style::Line, points: curve, tips: Vec::new() },
            Series { name: "held".into(), color: COLORS[2], style: Style::Points, points: ok_pts, tips: ok_tips },
            Series {
                name: "broke a limit".into(),
                color: COLORS[1],
                style: Style::Points,
                points: bad_pts,
                tips: bad_tips,
            },
        ],
        hlines: vec![(target_ms, format!("target {}", fmt_micros(c.p99_target_us)))],
        vlines,
    };
    body.push_str(&knee.svg());
    let offered: Vec<(f64, f64)> = steps.iter().map(|s| (s.offered_per_s, s.achieved_per_s)).collect();
    let ideal = vec![(0.0, 0.0), (x_max, x_max)];
    let rate_chart = Chart {
        id: "sweep-rate".into(),
        title: "Accepted vs offered rate".into(),
        x: Axis::linear("offered messages per second", 0.0, x_max * 1.05),
        y: Axis::linear("accepted messages per second", 0.0, x_max * 1.05),
        series: vec![
            Series {
                name: "accepted".into(),
                color: COLORS[0],
                style: Style::LinePoints,
                points: offered,
                tips: Vec::new(),
            },
            Series {
                name: "offered (ideal)".into(),
                color: COLORS[7],
                style: Style::Line,
                points: ideal,
                tips: Vec::new(),
            },
        ],
        hlines: Vec::new(),
        vlines: Vec::new(),
    };
    body.push_str(&rate_chart.svg());
    body.push_str(
        "<table class=\"num\"><thead><tr><th>offered</th><th>accepted</th><th>p50</th><th>p99</th><th>p99.9</th>\
         <th>max</th><th>errors</th><th>unsent</th><th>verdict</th></tr></thead><tbody>",
    );
    for s in &sw.steps {
        let _ = write!(
            body,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}%</td><td>{}</td><td class=\"text\">{}</td></tr>",
            if s.pass { "pass" } else { "fail" },
            fmt_rate(s.offered_per_s),
            fmt_rate(s.achieved_per_s),
            fmt_micros(s.p50_us),
            fmt_micros(s.p99_us),
            fmt_micros(s.p999_us),
            fmt_micros(s.max_us),
            s.error_rate * 100.0,
            s.unsent,
            esc(s.reason.as_deref().unwrap_or("held"))
        );
    }
    body.push_str("</tbody></table>\n");
    // The capacity step in detail (or the last step).
    let detail = sw
        .capacity
        .as_ref()
        .and_then(|cap| sw.steps.iter().find(|s| s.pass && s.offered_per_s == cap.rate_per_s))
        .or_else(|| sw.steps.last());
    if let Some(step) = detail {
        let _ = writeln!(body, "<h2>Step at {} offered</h2>", esc(&fmt_rate(step.offered_per_s)));
        body.push_str(&run_sections(&step.run, "step-"));
    }
    body
}

fn sink_sections(sk: &SinkResult) -> String {
    let mut body = String::new();
    let c = &sk.counts;
    body.push_str(&kv_table(&[
        ("listen", sk.listen.clone()),
        ("ran", format!("{:.1} s, {:.1} messages/s accepted", sk.elapsed_s, sk.messages_per_s)),
        (
            "messages",
            format!(
                "{} accepted, {} tempfailed, {} permfailed, {} disconnects",
                c.messages, c.tempfailed, c.permfailed, c.disconnects
            ),
        ),
        ("transactions", c.transactions.to_string()),
        ("recipients", format!("{} accepted, {} refused by rule", c.recipients, c.rcpts_refused)),
        (
            "connections",
            format!(
                "{} accepted, {} refused over the cap, {} idle timeouts",
                c.connections, c.connections_refused, c.timeouts
            ),
        ),
        (
            "TLS / AUTH",
            format!("{} handshakes ({} failed), {} AUTH ok, {} failed", c.tls, c.tls_failed, c.auth_ok, c.auth_failed),
        ),
        ("bytes", c.bytes.to_string()),
        ("no timestamp", format!("{} messages had no X-Ringload-Sent header", sk.e2e_missing)),
    ]));
    body.push_str(&summary_table(&[("end-to-end", "X-Ringload-Sent → end of data received", &sk.e2e)]));
    body.push_str(
        &percentile_chart("sink-e2e", "End-to-end delay percentile distribution", &[("end-to-end", &sk.e2e)], None)
            .svg(),
    );
    body
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:940px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}h3{font-size:15px;margin:20px 0 6px}
.sub{color:#666;margin:0 0 16px}
table{border-collapse:collapse;margin:10px 0 18px;width:100%}
th,td{border-bottom:1px solid #e3e3e3;padding:4px 8px;text-align:left;vertical-align:top}
table.num td{text-align:right;font-variant-numeric:tabular-nums}table.num td.text{text-align:left}
table.kv th{width:140px;color:#555;font-weight:600}
tr.fail td{background:#fff3ef}tr.pass td{background:#f2fbf6}
figure.chart{margin:18px 0}svg.plot{max-width:100%;height:auto;background:#fff}
svg .grid{stroke:#eee;stroke-width:1}svg .frame{fill:none;stroke:#bbb}
svg .tick{font-size:11px;fill:#555}svg .axis{font-size:12px;fill:#333}svg .title{font-size:14px;font-weight:600;fill:#222}
svg .ref{stroke:#C00;stroke-dasharray:5 4;stroke-width:1.5}svg .reflabel{font-size:11px;fill:#C00}
.legend{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 0 64px}
.key{font:12px system-ui,sans-serif;border:1px solid #ccc;background:#fafafa;border-radius:4px;padding:2px 8px;cursor:pointer}
.key.off{opacity:.4}.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
footer{color:#888;font-size:12px;margin-top:30px}
"#;

const SCRIPT: &str = r#"
document.querySelectorAll('figure.chart').forEach(function (fig) {
  fig.querySelectorAll('button.key').forEach(function (key) {
    key.addEventListener('click', function () {
      var name = key.getAttribute('data-toggle');
      var off = key.classList.toggle('off');
      fig.querySelectorAll('g.series').forEach(function (g) {
        if (g.getAttribute('data-series') === name) { g.style.display = off ? 'none' : ''; }
      });
    });
  });
});
"#;

/// Renders the HTML page for a result JSON (`run`, `sweep` or `sink`).
pub fn render(json: &str) -> Result<String, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("the input is not JSON written by ringload: {e}"))?;
    let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_string();
    let (title, sub, body) = match kind.as_str() {
        "run" => {
            let r: RunResult = serde_json::from_value(value.clone()).map_err(|e| format!("not a run result: {e}"))?;
            let sub = format!(
                "{} — {:.1} accepted messages/s, message p99 {}",
                r.config.target,
                r.throughput_per_s,
                r.phase(Phase::Message).map(|s| fmt_micros(s.p99_us)).unwrap_or_else(|| "n/a".into())
            );
            ("ringload run".to_string(), sub, run_sections(&r, ""))
        }
        "sweep" => {
            let r: SweepResult =
                serde_json::from_value(value.clone()).map_err(|e| format!("not a sweep result: {e}"))?;
            let sub = match &r.capacity {
                Some(c) => format!(
                    "{} — capacity {} at p99 {}",
                    r.config.target,
                    fmt_rate(c.achieved_per_s),
                    fmt_micros(c.p99_us)
                ),
                None => format!("{} — no step held the limits", r.config.target),
            };
            ("ringload sweep".to_string(), sub, sweep_sections(&r))
        }
        "sink" => {
            let r: SinkResult = serde_json::from_value(value.clone()).map_err(|e| format!("not a sink result: {e}"))?;
            let sub = format!("{} — {} messages, {:.1}/s", r.listen, r.counts.messages, r.messages_per_s);
            ("ringload sink".to_string(), sub, sink_sections(&r))
        }
        other => {
            return Err(format!(
                "unknown result kind `{other}`: give a JSON file written by ringload run, sweep or sink --json"
            ));
        }
    };
    // The embedded copy of the data: `</` cannot end the script element early.
    let data = serde_json::to_string(&value).unwrap_or_default().replace("</", "<\\/");
    let mut page = String::with_capacity(body.len() + data.len() + 4096);
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>{STYLE}</style></head>\n<body>\n<h1>{t}</h1><p class=\"sub\">{s}</p>\n{body}\
         <footer>ringload {v}. Latencies are HDR histograms (3 significant digits); the data is embedded in this page.</footer>\n\
         <script type=\"application/json\" id=\"ringload-data\">{data}</script>\n<script>{SCRIPT}</script>\n</body></html>\n",
        t = esc(&title),
        s = esc(&sub),
        v = env!("CARGO_PKG_VERSION"),
    );
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes() {
        let a = Axis::log("x", 0.3, 42.0);
        assert_eq!((a.min, a.max), (0.1, 100.0));
        assert!(a.ticks.iter().any(|(v, l)| *v == 1.0 && l == "1"));
        assert!((a.frac(10.0) - 2.0 / 3.0).abs() < 1e-9);
        let l = Axis::linear("y", 0.0, 930.0);
        assert_eq!(l.max, 1000.0);
        assert_eq!(l.ticks.len(), 6);
        assert!((pct_x(99.0) - 2.0).abs() < 1e-9);
        assert_eq!(pct_x(100.0), PCT_X_MAX);
        assert_eq!(pct_x(0.0), 0.0);
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn unknown_kind_is_refused() {
        assert!(render("{\"kind\":\"other\"}").unwrap_err().contains("unknown result kind"));
        assert!(render("not json").is_err());
    }
}
