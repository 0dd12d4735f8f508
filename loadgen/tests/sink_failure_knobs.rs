//! The sink's failure knobs, seen from both sides: recipient rules (`tempfail*` → 451 at RCPT,
//! `permfail*` → 550 at RCPT), per-message probabilities (`--tempfail` → 451 4.3.0,
//! `--permfail` → 554 5.3.0, `--disconnect` → 421 and close, all at the end of data), and the
//! connection cap (`--max-connections` → 421 4.7.0 instead of the greeting). What the run
//! counts by stage and reply is exactly what the sink counts.

mod common;

use std::time::Duration;

use common::{Sink, count, errors, ringload};
use serde_json::Value;

/// Runs N messages (a run where some fail exits 0, one where all fail exits 2).
fn run(target: &str, n: u64, extra: &[&str]) -> Value {
    let n = n.to_string();
    let mut args = vec!["run", "--quiet", "--no-pin", "--target", target, "--messages", &n, "--duration", "60s"];
    args.extend_from_slice(extra);
    let out = ringload(&args, Duration::from_secs(60));
    assert!(matches!(out.status.code(), Some(0 | 2)), "run failed: {}", out.stderr);
    out.json.unwrap()
}

#[test]
fn recipient_rules() {
    let sink = Sink::start(&[]);
    let t = run(&sink.target(), 20, &["--concurrency", "2", "--to", "tempfail{n}@dest.test"]);
    assert_eq!(errors(&t, "rcpt", "451 4.2.0"), 20);
    assert_eq!(count(&t, "failed"), 20);
    let p =
        run(&sink.target(), 30, &["--concurrency", "2", "--to", "PermFail.{n}@dest.test", "--per-connection", "10"]);
    assert_eq!(errors(&p, "rcpt", "550 5.1.1"), 30);
    assert_eq!(count(&p, "rcpts_refused"), 30);
    let fin = sink.stop();
    assert_eq!(fin["rcpts_refused"], 50);
    assert_eq!(fin["messages"], 0);
    assert_eq!(fin["transactions"], 50);
}

#[test]
fn certain_failures_at_end_of_data() {
    for (knob, stage, cause, counter) in [
        ("--tempfail", "end-of-data", "451 4.3.0", "tempfailed"),
        ("--permfail", "end-of-data", "554 5.3.0", "permfailed"),
        ("--disconnect", "end-of-data", "421 4.3.0", "disconnects"),
    ] {
        let sink = Sink::start(&[knob, "1"]);
        let r = run(&sink.target(), 25, &["--concurrency", "3", "--per-connection", "5"]);
        assert_eq!(errors(&r, stage, cause), 25, "{knob}: {}", r["errors"]);
        let fin = sink.stop();
        assert_eq!(fin[counter], 25, "{knob}");
        assert_eq!(fin["messages"], 0, "{knob}");
    }
}

#[test]
fn probabilistic_failures_add_up_on_both_sides() {
    let sink = Sink::start(&["--tempfail", "0.3", "--seed", "7"]);
    let r = run(&sink.target(), 1000, &["--concurrency", "8", "--per-connection", "25"]);
    let fin = sink.stop();
    let failed = count(&r, "failed");
    assert!((200..=400).contains(&failed), "{failed} of 1000 tempfailed at p=0.3");
    assert_eq!(errors(&r, "end-of-data", "451 4.3.0"), failed);
    assert_eq!(fin["tempfailed"].as_u64(), Some(failed));
    assert_eq!(fin["messages"].as_u64(), Some(count(&r, "ok")));
    assert_eq!(count(&r, "ok") + failed, 1000);
}

#[test]
fn connection_cap() {
    let sink = Sink::start(&["--max-connections", "1", "--latency", "20ms"]);
    let r = run(&sink.target(), 40, &["--concurrency", "4"]);
    let fin = sink.stop();
    let refused = errors(&r, "greeting", "421 4.7.0");
    assert!(refused > 0, "{}", r["errors"]);
    assert_eq!(fin["connections_refused"].as_u64(), Some(refused));
    assert_eq!(count(&r, "ok") + refused, 40);
    assert_eq!(fin["messages"].as_u64(), Some(count(&r, "ok")));
}
