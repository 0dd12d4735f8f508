//! Without --quiet, `ringload run` prints a progress line on stderr once a second: the second's
//! rate, the counts so far (failures included), in flight, the offered rate and backlog in
//! open loop, the second's p50/p99/max and the p99 so far. Here 100 messages/s for 3 s go to a
//! sink that tempfails a fifth of them, so there are failures to show; the last line's counts
//! are the run's totals.

mod common;

use std::time::Duration;

use common::{Sink, count, ringload};

/// One parsed progress line.
#[derive(Debug)]
struct Progress {
    t_s: f64,
    rate: String,
    ok: u64,
    failed: u64,
    p99: String,
    p99_so_far: String,
}

/// A latency as progress prints it: `850us`, `5.54ms`, `1.20s`.
fn is_latency(s: &str) -> bool {
    let num = s.strip_suffix("us").or_else(|| s.strip_suffix("ms")).or_else(|| s.strip_suffix('s'));
    num.is_some_and(|n| n.parse::<f64>().is_ok())
}

fn parse(line: &str) -> Option<Progress> {
    let rest = line.strip_prefix('[')?;
    let (t, rest) = rest.split_once("s]")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
    let so_far = words.windows(3).position(|w| w == ["p99", "so", "far"])?;
    Some(Progress {
        t_s: t.trim().parse().ok()?,
        rate: words.first()?.to_string(),
        ok: after("ok")?.parse().ok()?,
        failed: after("failed")?.parse().ok()?,
        p99: after("p99")?.to_string(),
        p99_so_far: words.get(so_far + 3)?.to_string(),
    })
}

#[test]
fn a_progress_line_every_second_with_rate_failures_and_p99() {
    let sink = Sink::start(&["--tempfail", "20%", "--seed", "7"]);
    let target = sink.target();
    let args = [
        "run",
        "--no-pin",
        "--target",
        &target,
        "--rate",
        "100/s",
        "--duration",
        "3s",
        "--concurrency",
        "4",
        "--per-connection",
        "0",
    ];
    let out = ringload(&args, Duration::from_secs(60));
    drop(sink);
    assert!(out.status.success(), "{:?}\n{}", out.status, out.stderr);
    let lines: Vec<&str> = out.stderr.lines().filter(|l| l.starts_with('[')).collect();
    let progress: Vec<Progress> =
        lines.iter().map(|l| parse(l).unwrap_or_else(|| panic!("not a progress line: {l:?}"))).collect();
    // One per full second (1, 2, 3), and possibly one for a last, partial second.
    assert!((3..=4).contains(&progress.len()), "{}", out.stderr);
    for (i, p) in progress.iter().take(3).enumerate() {
        assert!((p.t_s - (i + 1) as f64).abs() <= 0.1, "line {i}: {:?}", lines[i]);
    }
    for (p, l) in progress.iter().zip(&lines) {
        assert!(p.rate.ends_with("/s") && p.rate.trim_end_matches("/s").parse::<f64>().is_ok(), "{l}");
        assert!(is_latency(&p.p99) && is_latency(&p.p99_so_far), "{l}");
        assert!(l.contains("offered 100/s") && l.contains("backlog "), "open loop shows the schedule: {l}");
    }
    for w in progress.windows(2) {
        assert!(w[1].t_s >= w[0].t_s && w[1].ok >= w[0].ok && w[1].failed >= w[0].failed, "{w:?}");
    }
    // A second's rate is about the offered 100/s once running (the first includes the start).
    let second: f64 = progress[1].rate.trim_end_matches("/s").parse().unwrap();
    assert!((40.0..=160.0).contains(&second), "second 2 accepted at {second}/s");
    let run = out.json.expect("json");
    let last = progress.last().unwrap();
    assert_eq!(last.ok, count(&run, "ok"), "the last line has the totals");
    assert_eq!(last.failed, count(&run, "failed"));
    assert!(last.failed > 0 && last.ok > 0, "{last:?}");
    assert_eq!(last.ok + last.failed, 300);
}
