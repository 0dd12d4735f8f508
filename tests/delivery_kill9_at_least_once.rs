//! `kill -9` while delivering: after a restart, every message that got `250` reaches the next
//! hop at least once (recovered messages are tried at once), and the spool ends up empty.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::Relay;
use common::sink::{Sink, SinkOptions};

#[test]
fn every_accepted_message_is_delivered_at_least_once_across_kill9() {
    // A slow next hop, so the kill lands with deliveries in flight and messages queued.
    let sink =
        Sink::start("127.0.0.1:0", SinkOptions { data_latency: Some(Duration::from_millis(20)), ..Default::default() });
    let cfg = common::DEFAULT_CONFIG
        .replace("{sink}", &sink.addr.port().to_string())
        .replace("name = \"nowhere\"", "name = \"nowhere\"\nmax_connections_per_domain = 2");
    let mut relay = Relay::start(&cfg);
    let mut acked = BTreeSet::new();
    let mut c = relay.client();
    c.hello();
    for n in 0..300 {
        let r = c.send_mail("app@example.test", &["user@dest.test"], &format!("X-Test-Id: m{n}\r\n\r\nbody {n}\r\n"));
        assert_eq!(r.code, 250);
        acked.insert(format!("m{n}"));
    }
    drop(c);
    // Some delivered, most not yet.
    let before = sink.wait_for(10, 20).len();
    relay.kill9();
    assert!(before < 300, "the kill must come while deliveries are pending");
    relay.spawn();
    let deadline = common::now() + Duration::from_secs(60);
    loop {
        let seen: BTreeSet<String> = sink
            .state
            .lock()
            .unwrap()
            .messages
            .iter()
            .map(|m| {
                let body = String::from_utf8_lossy(common::strip_received(&m.data)).into_owned();
                body.lines().next().unwrap().trim_start_matches("X-Test-Id: ").to_string()
            })
            .collect();
        if seen.is_superset(&acked) {
            break;
        }
        let missing: Vec<_> = acked.difference(&seen).take(5).collect();
        assert!(common::now() < deadline, "not delivered after restart: {missing:?} ...");
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = common::now() + Duration::from_secs(20);
    while !common::spool_messages(&relay.spool()).is_empty() {
        assert!(common::now() < deadline, "spool not emptied after delivery");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("delivered before kill: {before}; total deliveries {} for 300 messages", sink.count());
    assert!(relay.stop().success());
}
