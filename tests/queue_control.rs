//! `ringrelay queue` against a running relay whose next hop is down (nothing listens on the
//! smart host port): `list` shows the deferred messages per domain and per message, `delete`
//! removes one (FAIL in the tracking log, and a bounce queued for its sender), then a sink
//! comes up on the smart host port and `retry --all` delivers the rest and the bounce at once
//! (the retry schedule says one hour). With two domains deferred, `/metrics` shows each one's
//! depth and oldest age, `retry --domain` delivers that domain only and `retry ID` that message
//! only. Errors are clear: no relay, no such message.

mod common;

use std::time::Duration;

use common::ops::{self, events, ringrelay};
use common::sink::{Sink, SinkOptions};
use common::{DEFAULT_CONFIG, Relay};

fn queue(relay: &Relay, args: &[&str]) -> (i32, String, String) {
    let config = relay.config_path.display().to_string();
    let mut all = vec!["queue", "--config", &config];
    all.extend_from_slice(args);
    ringrelay(&all)
}

fn queue_json(relay: &Relay, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let (code, out, err) = queue(relay, &a);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn list_delete_and_retry_on_a_relay_whose_next_hop_is_down() {
    let relay = Relay::start(DEFAULT_CONFIG);
    let mut c = relay.client();
    c.hello();
    let mut ids = Vec::new();
    for (i, to) in ["a@one.test", "b@one.test", "c@two.test"].iter().enumerate() {
        let r = c.send_mail("app@example.test", &[to], &format!("Subject: {i}\r\n\r\nx\r\n"));
        assert_eq!(r.code, 250);
        ids.push(r.queue_id().unwrap());
    }
    // All three get deferred (connection refused).
    ops::track_until(&relay, &["--event", "DEFER"], 20, |e| e.len() == 3);

    let v = queue_json(&relay, &["list"]);
    assert_eq!(v["totals"]["messages"], 3, "{v:#}");
    assert_eq!(v["totals"]["deferred"], 3);
    let one = v["domains"].as_array().unwrap().iter().find(|d| d["domain"] == "one.test").unwrap();
    assert_eq!(one["messages"], 2);
    let (code, table, _) = queue(&relay, &["list"]);
    assert_eq!(code, 0);
    assert!(table.contains("DOMAIN") && table.contains("one.test") && table.contains("two.test"), "{table}");

    let v = queue_json(&relay, &["list", "--domain", "one.test"]);
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["queue_id"], ids[0].as_str());
    assert_eq!(msgs[0]["failures"], 1);
    assert!(msgs[0]["last_reply"].as_str().unwrap().starts_with("4"), "{:#}", msgs[0]);
    let (_, table, _) = queue(&relay, &["list", "--domain", "one.test"]);
    assert!(table.contains(&ids[1]) && table.contains("b@one.test"), "{table}");

    // Delete the first one: FAIL (deleted) and a bounce to app@example.test, queued.
    let (code, out, err) = queue(&relay, &["delete", &ids[0]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 recipient(s) deleted"), "{out}");
    let by_id = ops::track_until(&relay, &["--queue-id", &ids[0]], 20, |e| !events(e, "DSN").is_empty());
    let fail = events(&by_id, "FAIL");
    assert_eq!(fail.len(), 1, "{by_id:#?}");
    assert_eq!(fail[0]["reason"], "deleted");
    assert!(fail[0]["reply"].as_str().unwrap().contains("Deleted from the queue by the administrator"));
    let dsn_id = events(&by_id, "DSN")[0]["dsn_queue_id"].as_str().unwrap().to_string();
    // Deleting again: not queued any more.
    let (code, _, err) = queue(&relay, &["delete", &ids[0]]);
    assert_eq!(code, 1);
    assert!(err.contains("is not queued"), "{err}");
    // Delete without bounce: FAIL, no DSN.
    let (code, out, err) = queue(&relay, &["delete", &ids[2], "--no-bounce"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("no bounce"), "{out}");
    let by_id = ops::track_until(&relay, &["--queue-id", &ids[2]], 20, |e| !events(e, "FAIL").is_empty());
    assert!(events(&by_id, "DSN").is_empty());

    // The bounce got deferred like everything else; now the next hop comes up.
    ops::track_until(&relay, &["--queue-id", &dsn_id, "--event", "DEFER"], 20, |e| !e.is_empty());
    let sink = Sink::start(&format!("127.0.0.1:{}", relay.sink_port), SinkOptions::default());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.count(), 0, "nothing is tried before the retry (the schedule says 1h)");
    let (code, out, err) = queue(&relay, &["retry", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("2 queue entries moved to ready"), "{out}");
    let got = sink.wait_for(2, 20);
    let mut rcpts: Vec<&str> = got.iter().map(|m| m.rcpts[0].as_str()).collect();
    rcpts.sort();
    assert_eq!(rcpts, vec!["app@example.test", "b@one.test"], "the remaining message and the bounce");
    let bounce = got.iter().find(|m| m.from.is_empty()).unwrap();
    let text = String::from_utf8_lossy(&bounce.data);
    assert!(text.contains("Final-Recipient: rfc822; a@one.test"), "{text}");
    let v = ops::track_until(&relay, &["--event", "DELIVER"], 20, |e| e.len() == 2);
    assert_eq!(v.len(), 2);
    let deadline = common::now() + Duration::from_secs(10);
    while queue_json(&relay, &["list"])["totals"]["messages"] != 0 {
        assert!(common::now() < deadline, "queue not empty");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Retry of one message and one domain are accepted forms too (nothing left to move).
    assert_eq!(queue(&relay, &["retry", &ids[1]]).0, 0);
    assert_eq!(queue(&relay, &["retry", "--domain", "one.test"]).0, 0);
    assert_eq!(queue(&relay, &["retry"]).0, 2, "retry needs a target");
    assert_eq!(queue(&relay, &["delete", "not-an-id"]).0, 1);
}

/// Messages the sink has, waiting `settle` first so that any delivery that should not happen
/// has had its chance to.
fn sink_rcpts_after(sink: &Sink, settle: Duration) -> Vec<String> {
    std::thread::sleep(settle);
    let mut got: Vec<String> = sink.state.lock().unwrap().messages.iter().flat_map(|m| m.rcpts.clone()).collect();
    got.sort();
    got
}

#[test]
fn retry_of_one_domain_then_of_one_message_delivers_only_those() {
    let relay = Relay::start(DEFAULT_CONFIG);
    let mut c = relay.client();
    c.hello();
    // Two messages for each of two domains; the next hop is down, so all four are deferred
    // (first retry in 1 h). Keep when each was sent, to check the age gauges.
    let mut ids = Vec::new();
    let mut sent = Vec::new();
    for to in ["a@one.test", "b@one.test", "c@two.test", "d@two.test"] {
        let before = common::now();
        let r = c.send_mail("app@example.test", &[to], "Subject: retry\r\n\r\nx\r\n");
        assert_eq!(r.code, 250, "{r:?}");
        sent.push((before, common::now()));
        ids.push(r.queue_id().unwrap());
    }
    ops::track_until(&relay, &["--event", "DEFER"], 20, |e| e.len() == 4);
    // Let the oldest messages age measurably.
    std::thread::sleep(Duration::from_millis(1200));

    // /metrics while they are deferred: per-domain depth and the age of each domain's oldest.
    let scrape_start = common::now();
    let m = ops::scrape(&relay);
    let scrape_end = common::now();
    for (domain, first) in [("one.test", 0), ("two.test", 2)] {
        let label = format!("{{domain=\"{domain}\"}}");
        assert_eq!(m.get(&format!("ringrelay_queue_messages{label}")), 2.0, "{domain}");
        assert_eq!(m.get(&format!("ringrelay_queue_deferred{label}")), 2.0, "{domain}");
        assert_eq!(m.get(&format!("ringrelay_queue_recipients{label}")), 2.0, "{domain}");
        let age = m.samples[&format!("ringrelay_queue_oldest_age_seconds{label}")];
        // The oldest was accepted between `sent[first].0` and `.1`; ages are whole milliseconds
        // of the wall clock, so allow 10 ms either way.
        let least = scrape_start.duration_since(sent[first].1).as_secs_f64() - 0.01;
        let most = scrape_end.duration_since(sent[first].0).as_secs_f64() + 0.01;
        assert!((least..=most).contains(&age), "{domain}: oldest age {age} s not in [{least}, {most}]");
    }
    assert_eq!(m.get("ringrelay_queue_messages_all"), 4.0);
    assert_eq!(m.get("ringrelay_queue_domains"), 2.0);
    let oldest_all = m.get("ringrelay_queue_oldest_age_seconds_all");
    assert_eq!(oldest_all, m.samples["ringrelay_queue_oldest_age_seconds{domain=\"one.test\"}"]);

    // The next hop comes up; nothing moves until told (the schedule says 1 h).
    let sink = Sink::start(&format!("127.0.0.1:{}", relay.sink_port), SinkOptions::default());
    assert!(sink_rcpts_after(&sink, Duration::from_millis(300)).is_empty());

    // retry --domain one.test: its two messages go now, two.test's stay queued.
    let (code, out, err) = queue(&relay, &["retry", "--domain", "one.test"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("2 queue entries moved to ready"), "{out}");
    sink.wait_for(2, 20);
    assert_eq!(sink_rcpts_after(&sink, Duration::from_secs(1)), ["a@one.test", "b@one.test"]);
    let v = queue_json(&relay, &["list"]);
    assert_eq!(v["totals"]["messages"], 2, "{v:#}");
    let domains: Vec<&str> = v["domains"].as_array().unwrap().iter().map(|d| d["domain"].as_str().unwrap()).collect();
    assert_eq!(domains, ["two.test"]);

    // retry ID of c@two.test: only that one goes; d@two.test stays.
    let (code, out, err) = queue(&relay, &["retry", &ids[2]]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("1 queue entry moved to ready"), "{out}");
    sink.wait_for(3, 20);
    assert_eq!(sink_rcpts_after(&sink, Duration::from_secs(1)), ["a@one.test", "b@one.test", "c@two.test"]);
    let left = queue_json(&relay, &["list", "--domain", "two.test"]);
    let left: Vec<&str> =
        left["messages"].as_array().unwrap().iter().map(|m| m["queue_id"].as_str().unwrap()).collect();
    assert_eq!(left, [ids[3].as_str()]);
    let m = ops::scrape(&relay);
    assert_eq!(m.get("ringrelay_queue_messages{domain=\"two.test\"}"), 1.0);
    assert!(!m.samples.contains_key("ringrelay_queue_messages{domain=\"one.test\"}"), "one.test's queue is gone");
    assert_eq!(m.get("ringrelay_deliveries_total{outcome=\"delivered\"}"), 3.0);
    let delivered = ops::track_until(&relay, &["--event", "DELIVER"], 20, |e| e.len() == 3);
    let mut delivered_ids: Vec<&str> = delivered.iter().map(|e| e["queue_id"].as_str().unwrap()).collect();
    delivered_ids.sort();
    let mut expected = vec![ids[0].as_str(), ids[1].as_str(), ids[2].as_str()];
    expected.sort();
    assert_eq!(delivered_ids, expected);
}

#[test]
fn a_relay_that_is_not_running_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let cfg = dir.path().join("r.toml");
    let text = DEFAULT_CONFIG
        .replace("{admin}", &port.to_string())
        .replace("{spool}", &dir.path().join("spool").display().to_string())
        .replace("{port}", &common::free_port().to_string())
        .replace("{sink}", "1")
        .replace("{nodns}", "1");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = ringrelay(&["queue", "--config", cfg.to_str().unwrap(), "list"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("is ringrelay running? admin endpoint 127.0.0.1:{port} refused the connection")),
        "{err}"
    );
}
