//! No coordinated omission: in open loop, a server that cannot keep up shows up as latency
//! (measured from each message's intended send time) and as a backlog of unsent messages, not
//! as a quietly lower send rate. Here the sink takes 20 ms per message and two connections
//! can therefore carry 100 messages/s; we offer 500/s for two seconds. Nor at the end: the
//! messages still due but unsent when the run ends are in the message latency, as having
//! waited from their intended time to the end of the run.

mod common;

use std::time::Duration;

use common::{Sink, count, phase_us, ringload, run_ok};

#[test]
fn latency_from_intended_time_grows_and_the_backlog_is_reported() {
    let sink = Sink::start(&["--latency", "20ms"]);
    let run = run_ok(&[
        "--target",
        &sink.target(),
        "--rate",
        "500/s",
        "--concurrency",
        "2",
        "--per-connection",
        "0",
        "--duration",
        "2s",
        "--drain",
        "1s",
    ]);
    drop(sink);
    let ok = count(&run, "ok");
    // About 100/s for 2 s plus the 1 s drain: far fewer than the 1000 offered.
    assert!((150..=450).contains(&ok), "accepted {ok}");
    let unsent = run["unsent"].as_u64().unwrap();
    assert!(unsent >= 400, "backlog {unsent}");
    // The server's own time stays ~20 ms...
    let sub_p50 = phase_us(&run, "submission", "p50_us");
    assert!((20_000..=40_000).contains(&sub_p50), "submission p50 {sub_p50} us");
    // ...but messages waited for a connection: latency from the intended time grows to
    // seconds (message k is sent at about k/100 s instead of k/500 s).
    let msg_p50 = phase_us(&run, "message", "p50_us");
    let msg_p99 = phase_us(&run, "message", "p99_us");
    assert!(msg_p50 > 300_000, "message p50 {msg_p50} us should show the queueing");
    assert!(msg_p99 > 1_000_000, "message p99 {msg_p99} us should show the queueing");
    // The per-second series shows it growing.
    let series = run["timeseries"].as_array().unwrap();
    let first = series.first().unwrap()["p99_us"].as_u64().unwrap();
    let last_busy = series.iter().rev().find(|p| p["ok"].as_u64() > Some(0)).unwrap()["p99_us"].as_u64().unwrap();
    assert!(last_busy > 2 * first, "p99 per second should grow: first {first} us, last {last_busy} us");
}

#[test]
fn messages_never_sent_count_in_the_latency_until_the_end_of_the_run() {
    // One connection and 250 ms per message: 4 messages/s get through; 50/s are offered for
    // 1 s and the run ends 3 s later (the drain). At most 16 of the 50 can be accepted; the
    // rest were due by 1 s and are still waiting at 4 s: each waited at least 3 s.
    let sink = Sink::start(&["--latency", "250ms"]);
    let target = sink.target();
    let args = [
        "run",
        "--quiet",
        "--no-pin",
        "--target",
        &target,
        "--rate",
        "50/s",
        "--concurrency",
        "1",
        "--per-connection",
        "0",
        "--duration",
        "1s",
        "--drain",
        "3s",
    ];
    let out = ringload(&args, Duration::from_secs(60));
    drop(sink);
    assert!(out.status.success(), "{:?}\n{}\n{}", out.status, out.stdout, out.stderr);
    let run = out.json.expect("json");
    let ok = count(&run, "ok");
    let unsent = run["unsent"].as_u64().unwrap();
    assert!((1..=16).contains(&ok), "accepted {ok}");
    assert!(unsent >= 30, "backlog {unsent}");
    // Every due message is accounted for: accepted, failed (the one in flight at the end) or unsent.
    let failed = count(&run, "failed");
    assert_eq!(ok + failed + unsent, 50, "ok {ok} failed {failed} unsent {unsent}");
    // The backlog is in the message histogram...
    assert_eq!(phase_us(&run, "message", "count"), ok + unsent);
    // ...with its wait: more than half the samples waited at least the 3 s drain (0.1 %
    // histogram resolution), and none longer than the run.
    let p50 = phase_us(&run, "message", "p50_us");
    let max = phase_us(&run, "message", "max_us");
    assert!(p50 >= 2_990_000, "message p50 {p50} us: the backlog waited at least 3 s");
    let elapsed_us = (run["elapsed_s"].as_f64().unwrap() * 1e6) as u64;
    assert!(max >= 3_000_000 && max <= elapsed_us + 100_000, "max {max} us, run {elapsed_us} us");
    // The submission latency (end of data → 250) is the server's own time only.
    let sub_max = phase_us(&run, "submission", "max_us");
    assert!(sub_max < 2_000_000, "submission max {sub_max} us");
    // The people's report says so too.
    assert!(out.stdout.contains(&format!("{unsent} due but unsent (backlog)")), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("the message latency includes the {unsent} messages due but never sent")));
}
