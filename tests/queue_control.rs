//! `ringrelay queue` against a running relay whose next hop is down (nothing listens on the
//! smart host port): `list` shows the deferred messages per domain and per message, `delete`
//! removes one (FAIL in the tracking log, and a bounce queued for its sender), then a sink
//! comes up on the smart host port and `retry --all` delivers the rest and the bounce at once
//! (the retry schedule says one hour). Errors are clear: no relay, no such message.

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
