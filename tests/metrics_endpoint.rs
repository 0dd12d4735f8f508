//! `/metrics` on the admin endpoint is valid Prometheus text (checked by a strict parser in
//! tests/common/ops.rs) and its counters move with traffic: connections, sessions, accepted
//! messages and bytes, rejections by reply and enhanced code, deliveries, transactions,
//! outbound connections, spool gauges, and both latency histograms. The endpoint refuses
//! other methods and unknown paths, and bounds the request head.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::ops::{self, http, scrape};
use common::sink::{Sink, SinkOptions};
use common::{DEFAULT_CONFIG, Relay};

#[test]
fn metrics_parse_and_move_with_traffic() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let relay = Relay::start(&DEFAULT_CONFIG.replace("{sink}", &sink.addr.port().to_string()));
    let before = scrape(&relay);
    assert_eq!(before.types["ringrelay_deliveries_total"], "counter");
    assert_eq!(before.types["ringrelay_accept_latency_seconds"], "histogram");
    assert_eq!(before.types["ringrelay_queue_messages"], "gauge");
    let accepted = "ringrelay_messages_accepted_total{connector=\"loopback\"}";
    assert_eq!(before.get(accepted), 0.0);
    assert_eq!(before.get("ringrelay_connections_open{connector=\"loopback\"}"), 0.0);

    let mut c = relay.client();
    c.hello();
    for i in 0..2 {
        let r = c.send_mail("app@example.test", &["a@dest.test", "b@dest.test"], &format!("Subject: {i}\r\n\r\nx\r\n"));
        assert_eq!(r.code, 250);
    }
    // A refused message (SIZE over the 64 KiB limit) and a refused recipient (over 5).
    assert_eq!(c.cmd("MAIL FROM:<app@example.test> SIZE=999999").code, 552);
    assert_eq!(c.cmd("MAIL FROM:<app@example.test>").code, 250);
    for i in 0..6 {
        c.cmd(&format!("RCPT TO:<r{i}@dest.test>"));
    }
    assert_eq!(c.cmd("RSET").code, 250);
    let open = scrape(&relay);
    assert_eq!(open.get("ringrelay_connections_open{connector=\"loopback\"}"), 1.0, "one session open now");
    sink.wait_for(2, 20);

    let deadline = common::now() + Duration::from_secs(10);
    let after = loop {
        let m = scrape(&relay);
        if m.get("ringrelay_deliveries_total{outcome=\"delivered\"}") >= 4.0 {
            break m;
        }
        assert!(common::now() < deadline, "deliveries never counted");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(after.get(accepted), 2.0);
    assert!(after.get("ringrelay_messages_accepted_bytes_total{connector=\"loopback\"}") > 100.0);
    assert!(after.get("ringrelay_connections_total{connector=\"loopback\"}") >= 1.0);
    assert!(after.get("ringrelay_sessions_total{connector=\"loopback\"}") >= 1.0);
    assert_eq!(after.get("ringrelay_smtp_rejects_total{connector=\"loopback\",code=\"552\",enhanced=\"5.3.4\"}"), 1.0);
    assert_eq!(after.get("ringrelay_smtp_rejects_total{connector=\"loopback\",code=\"452\",enhanced=\"4.5.3\"}"), 1.0);
    assert_eq!(after.get("ringrelay_deliveries_total{outcome=\"delivered\"}"), 4.0);
    assert_eq!(after.get("ringrelay_deliveries_total{outcome=\"failed\"}"), 0.0);
    assert!(after.get("ringrelay_delivery_transactions_total") >= 2.0);
    assert!(after.get("ringrelay_outbound_connections_total") >= 1.0);
    assert_eq!(after.get("ringrelay_accept_latency_seconds_count"), 2.0);
    assert!(after.get("ringrelay_accept_latency_seconds_sum") > 0.0);
    assert!(after.get("ringrelay_delivery_latency_seconds_count") >= 2.0);
    assert_eq!(after.get("ringrelay_build_info{version=\"0.1.0\"}"), 1.0);
    assert!(after.types.contains_key("ringrelay_spool_bytes"));
    for core in 0..2 {
        // Delivered messages leave the spool, so only their presence is certain here.
        assert!(after.samples.contains_key(&format!("ringrelay_spool_bytes{{core=\"{core}\"}}")));
        assert!(after.samples.contains_key(&format!("ringrelay_spool_messages{{core=\"{core}\"}}")));
    }
    drop(c);

    // The open gauge comes back down once the client is gone.
    let deadline = common::now() + Duration::from_secs(10);
    while scrape(&relay).get("ringrelay_connections_open{connector=\"loopback\"}") != 0.0 {
        assert!(common::now() < deadline, "connections_open never went back to 0");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Bounded and picky.
    assert_eq!(http(&relay, "DELETE", "/metrics").0, 405);
    assert_eq!(http(&relay, "GET", "/nope").0, 404);
    assert_eq!(http(&relay, "POST", "/metrics").0, 405);
    assert_eq!(http(&relay, "GET", "/health"), (200, "ok\n".to_string()));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", relay.admin_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let huge = format!("GET /metrics HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(20_000));
    let _ = s.write_all(huge.as_bytes());
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    let _ = ops::scrape(&relay);
}

/// The metric names (and label values) written in backquotes in the README's metrics table.
/// A name written as `_suffix` continues the name before it (`ringrelay_queue_messages_all`,
/// `_recipients_all` is `ringrelay_queue_recipients_all`).
fn readme_metrics_table() -> (std::collections::BTreeSet<String>, String) {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme.split("\n### Metrics\n").nth(1).expect("README has a ### Metrics section");
    let table: String = section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for row in table.lines() {
        let first_cell = row.split('|').nth(1).unwrap_or("");
        let mut prefix = String::new();
        for token in first_cell.split('`').skip(1).step_by(2) {
            if let Some(rest) = token.strip_prefix('_') {
                names.insert(format!("{prefix}_{rest}"));
            } else {
                // `ringrelay_queue_messages_all` → continuations start from `ringrelay_queue`.
                prefix = token.splitn(3, '_').take(2).collect::<Vec<_>>().join("_");
                names.insert(token.to_string());
            }
        }
    }
    (names, table)
}

#[test]
fn readme_metrics_table_lists_every_exposed_family_and_refusal_reason() {
    let relay = Relay::start(DEFAULT_CONFIG);
    let exposed = scrape(&relay);
    let (documented, table) = readme_metrics_table();
    let missing: Vec<&String> = exposed.types.keys().filter(|f| !documented.contains(*f)).collect();
    assert!(missing.is_empty(), "README's metrics table does not document {missing:?}");
    let stale: Vec<&String> = documented.iter().filter(|d| !exposed.types.contains_key(*d)).collect();
    assert!(stale.is_empty(), "README's metrics table names metrics /metrics does not expose: {stale:?}");
    // Every refusal reason the endpoint writes is named in the table's row.
    let row = table.lines().find(|l| l.contains("`ringrelay_connections_refused_total`")).unwrap();
    let reasons: Vec<&str> = exposed
        .samples
        .keys()
        .filter_map(|s| s.strip_prefix("ringrelay_connections_refused_total{reason=\""))
        .map(|s| s.trim_end_matches("\"}"))
        .collect();
    assert!(reasons.len() >= 4, "{reasons:?}");
    for r in reasons {
        assert!(row.contains(&format!("`{r}`")), "README does not name refusal reason {r}: {row}");
    }
}
