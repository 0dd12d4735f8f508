//! Message tracking of the failure paths: a recipient the next hop defers once (DEFER, with
//! the 451 reply and the next attempt, then DELIVER), one it refuses (FAIL, reason permanent,
//! the 550 reply), the bounce that follows (DSN, naming the original and the notice's own queue
//! id, then the notice's own DELIVER), and a message that is deferred until it expires
//! (FAIL, reason expired, with the last reply).

mod common;

use common::ops::{self, events};
use common::sink::{Sink, SinkOptions};
use common::{DEFAULT_CONFIG, Relay};

#[test]
fn defer_fail_and_dsn_are_tracked() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions { tempfail_times: 1, ..Default::default() });
    let cfg = DEFAULT_CONFIG.replace("{sink}", &sink.addr.port().to_string()).replace(
        "retry = { first = \"1h\", max = \"1h\", expire = \"2d\" }",
        "retry = { first = \"500ms\", max = \"1s\", expire = \"1h\" }",
    );
    let relay = Relay::start(&cfg);
    let mut c = relay.client();
    c.hello();
    let r = c.send_mail(
        "app@example.test",
        &["tempfail1@dest.test", "permfail1@dest.test"],
        "Message-ID: <mixed@example.test>\r\nSubject: mixed\r\n\r\nx\r\n",
    );
    assert_eq!(r.code, 250);
    let id = r.queue_id().unwrap();

    let all = ops::track_until(&relay, &[], 30, |all| {
        let dsn = events(all, "DSN");
        let delivered_dsn = dsn.first().is_some_and(|d| {
            let dsn_id = d["dsn_queue_id"].as_str().unwrap_or("");
            events(all, "DELIVER").iter().any(|e| e["queue_id"] == dsn_id)
        });
        delivered_dsn && events(all, "DELIVER").iter().any(|e| e["recipients"][0] == "tempfail1@dest.test")
    });

    let defer = events(&all, "DEFER");
    assert_eq!(defer.len(), 1, "{all:#?}");
    assert_eq!(defer[0]["queue_id"], id.as_str());
    assert_eq!(defer[0]["recipients"], serde_json::json!(["tempfail1@dest.test"]));
    assert_eq!(defer[0]["reply"], "451 4.2.0 mailbox busy, try later");
    assert_eq!(defer[0]["remote_host"], "127.0.0.1");
    let next = ringrelay::clock::parse_rfc3339(defer[0]["next_attempt"].as_str().unwrap()).unwrap();
    let at = ringrelay::clock::parse_rfc3339(defer[0]["time"].as_str().unwrap()).unwrap();
    assert!(next > at && next <= at + 1_500, "next attempt about 500 ms later: {next} vs {at}");

    let fail = events(&all, "FAIL");
    assert_eq!(fail.len(), 1, "{all:#?}");
    assert_eq!(fail[0]["queue_id"], id.as_str());
    assert_eq!(fail[0]["recipients"], serde_json::json!(["permfail1@dest.test"]));
    assert_eq!(fail[0]["reason"], "permanent");
    assert_eq!(fail[0]["reply"], "550 5.1.1 <permfail> no such user here");

    let dsn = events(&all, "DSN");
    assert_eq!(dsn.len(), 1);
    assert_eq!(dsn[0]["queue_id"], id.as_str(), "a DSN event names the original");
    assert_eq!(dsn[0]["dsn_action"], "failed");
    assert_eq!(dsn[0]["message_id"], "<mixed@example.test>");
    let dsn_id = dsn[0]["dsn_queue_id"].as_str().unwrap().to_string();
    assert_ne!(dsn_id, id);
    let dsn_deliver = events(&all, "DELIVER").into_iter().find(|e| e["queue_id"] == dsn_id.as_str()).unwrap();
    assert_eq!(dsn_deliver["sender"], "", "bounces have the null sender");
    assert_eq!(dsn_deliver["recipients"], serde_json::json!(["app@example.test"]));
    assert_eq!(dsn_deliver["connector"], "dsn");

    // --queue-id finds the notice by its own id too.
    let by_dsn = ops::track(&relay, &["--queue-id", &dsn_id]);
    let kinds: Vec<&str> = by_dsn.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, vec!["DSN", "DELIVER"], "{by_dsn:#?}");
    let fails = ops::track(&relay, &["--event", "fail", "--recipient", "permfail1@dest.test"]);
    assert_eq!(fails.len(), 1);
}

#[test]
fn expiry_is_a_fail_with_reason_expired() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions { tempfail_times: u32::MAX, ..Default::default() });
    let cfg = DEFAULT_CONFIG.replace("{sink}", &sink.addr.port().to_string()).replace(
        "retry = { first = \"1h\", max = \"1h\", expire = \"2d\" }",
        "retry = { first = \"300ms\", max = \"300ms\", expire = \"3s\" }",
    );
    let relay = Relay::start(&cfg);
    let mut c = relay.client();
    c.hello();
    let r = c.send_mail("app@example.test", &["tempfail9@dest.test"], "Subject: doomed\r\n\r\nx\r\n");
    let id = r.queue_id().unwrap();
    let all = ops::track_until(&relay, &["--queue-id", &id], 30, |all| !events(all, "FAIL").is_empty());
    // How many DEFER events come first depends on the machine's load (the first attempt may
    // come after the expiry); the FAIL and its reason do not.
    let fail = events(&all, "FAIL");
    assert_eq!(fail[0]["reason"], "expired");
    assert_eq!(fail[0]["reply"], "451 4.2.0 mailbox busy, try later", "the last reply");
    assert!(fail[0]["latency_ms"].as_u64().unwrap() >= 3000, "time since arrival");
}
