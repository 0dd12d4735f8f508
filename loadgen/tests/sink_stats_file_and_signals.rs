//! How a test (or an operator) waits for "N received": the sink keeps `--stats-file` fresh
//! (rewritten atomically, so every read is complete JSON), answers SIGUSR1 with a counts line,
//! and on SIGTERM prints its final counts and exits 0; `--exit-after-messages` stops it by itself.
//! Its end-to-end delay (X-Ringload-Sent → end of data) covers exactly the stamped messages and
//! lies within the run.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Sink, bin, count, now, run_ok, send_raw, wait_with_deadline};

#[test]
fn stats_file_sigusr1_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let stats = dir.path().join("stats.json");
    let sink = Sink::start(&["--stats-file", stats.to_str().unwrap()]);
    let run = run_ok(&["--target", &sink.target(), "--concurrency", "4", "--messages", "300", "--duration", "60s"]);
    assert_eq!(count(&run, "ok"), 300);
    // Poll the file: every read must parse, and it must reach 300.
    let deadline = now() + Duration::from_secs(10);
    let mut seen = 0;
    while seen < 300 {
        assert!(now() < deadline, "stats file stuck at {seen}");
        if let Ok(text) = std::fs::read_to_string(&stats) {
            let v: serde_json::Value = serde_json::from_str(&text).expect("the stats file is always whole JSON");
            seen = v["messages"].as_u64().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = sink.counts();
    assert_eq!(c["messages"], 300);
    assert_eq!(c["connections"], 300);
    assert_eq!(sink.counts()["messages"], 300, "a second SIGUSR1 works too");
    let fin = sink.stop();
    assert_eq!(fin["messages"], 300);
    let last: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(last["event"], "final");
}

#[test]
fn exit_after_messages() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("sink.json");
    let mut child = Command::new(bin())
        .args(["sink", "--listen", "127.0.0.1:0", "--threads", "2", "--no-pin", "--duration", "60s"])
        .args(["--exit-after-messages", "50", "--json", json.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let target = v["addr"].as_str().unwrap().to_string();
    // Two messages from another client: no X-Ringload-Sent, and one that cannot be read.
    let addr = target.parse().unwrap();
    send_raw(addr, "other@example.test", "a@example.test", "Subject: no stamp\r\n\r\nbody\r\n");
    send_raw(addr, "other@example.test", "a@example.test", "X-Ringload-Sent: soon\r\nSubject: bad\r\n\r\nx\r\n");
    let started = now();
    let run = run_ok(&["--target", &target, "--concurrency", "2", "--messages", "48", "--duration", "60s"]);
    let run_us = now().duration_since(started).as_micros() as u64;
    assert_eq!(count(&run, "ok"), 48);
    let status = wait_with_deadline(&mut child, Duration::from_secs(10));
    assert!(status.success());
    let result: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(result["counts"]["messages"], 50);
    assert_eq!(result["kind"], "sink");
    // End-to-end delays were measured from X-Ringload-Sent, for ringload's 48 messages only.
    assert_eq!(result["e2e"]["count"], 48, "{}", result["e2e"]);
    assert_eq!(result["e2e_missing"], 2);
    // Each is the time from building the message to its end of data here: more than nothing,
    // less than the whole run took.
    let e2e = |k: &str| result["e2e"][k].as_u64().unwrap_or_else(|| panic!("e2e.{k}"));
    assert!(e2e("max_us") > 0, "{}", result["e2e"]);
    assert!(e2e("min_us") <= e2e("p50_us") && e2e("p50_us") <= e2e("max_us"));
    assert!(e2e("max_us") <= run_us, "e2e max {} us > the run's {run_us} us", e2e("max_us"));
}
