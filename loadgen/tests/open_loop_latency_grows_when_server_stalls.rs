//! No coordinated omission: in open loop, a server that cannot keep up shows up as latency
//! (measured from each message's intended send time) and as a backlog of unsent messages, not
//! as a quietly lower send rate. Here the sink takes 20 ms per message and two connections
//! can therefore carry 100 messages/s; we offer 500/s for two seconds.

mod common;

use common::{Sink, count, phase_us, run_ok};

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
