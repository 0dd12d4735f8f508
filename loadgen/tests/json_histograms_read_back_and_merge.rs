//! The JSON result carries its histograms in standard HdrHistogram forms, readable without
//! ringload: each phase's whole histogram as base64 of the V2 compressed encoding, and every
//! per-second histogram as an interval log (also written alone with --hdr-log). Read back with
//! the hdrhistogram crate, the intervals of a phase merge into exactly that phase's total, and
//! the histograms of two runs add up.

mod common;

use std::io::Cursor;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Sink, count, ringload_in};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use serde_json::Value;

fn decode(b64: &str) -> Histogram<u64> {
    let raw = STANDARD.decode(b64).expect("base64");
    Deserializer::new().deserialize(&mut Cursor::new(raw)).expect("V2 histogram")
}

/// Merges the interval-log histograms of `tag`.
fn merged_intervals(log: &str, tag: &str) -> (Histogram<u64>, usize) {
    let mut merged = Histogram::<u64>::new(3).unwrap();
    let mut n = 0;
    let mut base_time = false;
    for entry in IntervalLogIterator::new(log.as_bytes()) {
        match entry.expect("log parses") {
            LogEntry::BaseTime(_) => base_time = true,
            LogEntry::StartTime(_) => {}
            LogEntry::Interval(i) => {
                if i.tag().map(|t| t.as_str()) == Some(tag) {
                    assert!(i.duration().as_secs_f64() > 0.0 && i.duration().as_secs_f64() <= 1.0);
                    merged.add(decode(i.encoded_histogram())).unwrap();
                    n += 1;
                }
            }
        }
    }
    assert!(base_time, "the log has a BaseTime header");
    (merged, n)
}

fn run(dir: &std::path::Path, target: &str, hlog: &str) -> Value {
    let out = ringload_in(
        dir,
        &[
            "run",
            "--quiet",
            "--no-pin",
            "--target",
            target,
            "--rate",
            "400/s",
            "--duration",
            "2500ms",
            "--per-connection",
            "10",
            "--hdr-log",
            hlog,
        ],
        std::time::Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", out.stderr);
    out.json.unwrap()
}

#[test]
fn interval_logs_and_phase_histograms_read_back_and_merge() {
    let sink = Sink::start(&["--latency", "1ms"]);
    let dir = tempfile::tempdir().unwrap();
    let hlog1 = dir.path().join("a.hlog");
    let hlog2 = dir.path().join("b.hlog");
    let a = run(dir.path(), &sink.target(), hlog1.to_str().unwrap());
    let b = run(dir.path(), &sink.target(), hlog2.to_str().unwrap());
    drop(sink);

    let log = a["hdr_interval_log"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(&hlog1).unwrap(), log, "--hdr-log writes the same log");
    for phase in ["message", "submission", "mail_rcpt", "ehlo", "connect", "greeting"] {
        let whole = decode(a["phases"][phase]["hdr"].as_str().unwrap());
        let (merged, intervals) = merged_intervals(log, phase);
        assert!(intervals >= 2, "{phase}: {intervals} intervals");
        assert_eq!(merged.len(), whole.len(), "{phase}: intervals add up to the total");
        assert_eq!(merged.value_at_quantile(0.99), whole.value_at_quantile(0.99), "{phase}");
        assert_eq!(merged.max(), whole.max(), "{phase}");
        assert_eq!(whole.value_at_quantile(0.99), a["phases"][phase]["p99_us"].as_u64().unwrap(), "{phase}");
    }
    // One message sample per accepted message.
    let (msgs, _) = merged_intervals(log, "message");
    assert_eq!(msgs.len(), count(&a, "ok"));
    // Two runs merge (into an auto-resizing histogram: a decoded one keeps its encoded range,
    // and adding a histogram with larger values to it fails).
    let mut both = Histogram::<u64>::new(3).unwrap();
    both.add(decode(a["phases"]["submission"]["hdr"].as_str().unwrap())).unwrap();
    both.add(decode(b["phases"]["submission"]["hdr"].as_str().unwrap())).unwrap();
    assert_eq!(both.len(), count(&a, "ok") + count(&b, "ok"));
    // The sink delay is visible: every submission took at least 1 ms.
    assert!(both.min() >= 1000, "min {}", both.min());
    // The percentile curve is monotonic and ends at the max.
    let curve = a["phases"]["message"]["percentiles"].as_array().unwrap();
    let pts: Vec<(f64, u64)> = curve.iter().map(|p| (p[0].as_f64().unwrap(), p[1].as_u64().unwrap())).collect();
    assert!(pts.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    assert_eq!(pts.last().unwrap().0, 100.0);
}
