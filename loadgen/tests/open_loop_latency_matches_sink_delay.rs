//! Open loop at a low rate against a sink that waits 5 ms before each final reply: the
//! measured latency is the sink's delay plus loopback costs, nothing invented by the client's
//! timers (the schedule and the sink use timerfd, not tokio's millisecond wheel). The issue's
//! promise, p50 = 5 ms ± 1 ms, is checked on the submission latency (end of data → 250): its
//! median must lie in [4 ms, 6 ms], one retry allowed on a noisy machine. (On the 2-core dev
//! machine, in a debug build with other builds running, it measured 5.46 to 5.58 ms over five
//! runs: the loopback and debug-build overhead is about 0.5 ms.) The whole-message latency
//! (intended send time → 250) adds the pipelined MAIL/RCPT/DATA round trip: at most 1.5 ms
//! more, in a debug build.

mod common;

use common::{Sink, count, phase_us, run_ok};

fn attempt() -> Result<(), String> {
    let sink = Sink::start(&["--latency", "5ms"]);
    let run = run_ok(&[
        "--target",
        &sink.target(),
        "--rate",
        "50/s",
        "--duration",
        "2s",
        "--concurrency",
        "4",
        "--per-connection",
        "0",
    ]);
    drop(sink);
    let ok = count(&run, "ok");
    if ok != 100 {
        return Err(format!("accepted {ok}, expected 100"));
    }
    let submission = phase_us(&run, "submission", "p50_us");
    if !(4_000..=6_000).contains(&submission) {
        return Err(format!("submission p50 {submission} us outside 5 ms ± 1 ms"));
    }
    let message = phase_us(&run, "message", "p50_us");
    if !(submission..=submission + 1_500).contains(&message) {
        return Err(format!("message p50 {message} us not within 1.5 ms above submission p50 {submission} us"));
    }
    Ok(())
}

#[test]
fn median_latency_is_the_sink_delay() {
    if let Err(first) = attempt() {
        eprintln!("first attempt: {first}; retrying once (noisy machine)");
        attempt().unwrap_or_else(|e| panic!("twice out of bounds: {first}; then {e}"));
    }
}
