//! With several delivery cores (`cores.delivery = 2`), an SMTP core splits each message's
//! recipients by the delivery core of their destination: here six send connectors, one per
//! domain, hashed over both cores. Every recipient is delivered exactly once, by a transaction
//! carrying its own message.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::Relay;
use common::sink::{Sink, SinkOptions};
use ringrelay::runtime::handoff::delivery_core_for_domain;

const DOMAINS: usize = 6;

fn config(sink_port: u16) -> String {
    let connectors: String = (0..DOMAINS)
        .map(|d| {
            format!(
                "[[send_connector]]\nname = \"to-d{d}\"\ndomains = [\"d{d}.test\"]\nsmart_hosts = [\"127.0.0.1:{sink_port}\"]\n"
            )
        })
        .collect();
    let base = common::DEFAULT_CONFIG
        .replace("max_recipients = 5", "max_recipients = 10")
        .replace("[cores]\nsmtp = 2", "[cores]\nsmtp = 2\ndelivery = 2");
    let send = base.find("[[send_connector]]").expect("template has a send connector");
    format!("{}{connectors}", &base[..send])
}

#[test]
fn recipients_split_over_two_delivery_cores_are_each_delivered_once() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let cfg = config(sink.addr.port());
    assert!(cfg.contains("delivery = 2"), "config template changed");

    let relay = Relay::start(&cfg);
    // The split this test relies on: the six destinations land on both delivery cores.
    let written = std::fs::read_to_string(&relay.config_path).unwrap();
    let parsed = ringrelay::config::Config::parse(&written, &relay.config_path).expect("test config parses");
    let cores: BTreeSet<usize> =
        (0..DOMAINS).map(|d| delivery_core_for_domain(&parsed.send_connectors, &format!("d{d}.test"), 2)).collect();
    assert_eq!(cores, BTreeSet::from([0, 1]), "all six destinations hash to one core: pick other names");

    let mut c = relay.client();
    c.hello();
    let messages = 10;
    for n in 0..messages {
        let to: Vec<String> = (0..DOMAINS).map(|d| format!("u{n}@d{d}.test")).collect();
        let to: Vec<&str> = to.iter().map(String::as_str).collect();
        let r = c.send_mail("app@example.test", &to, &format!("Subject: m{n}\r\n\r\nbody {n}\r\n"));
        assert_eq!(r.code, 250, "{r:?}");
    }
    // One transaction per message per connector: 60.
    let got = sink.wait_for(messages * DOMAINS, 30);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for m in &got {
        let text = String::from_utf8_lossy(&m.data);
        for rcpt in &m.rcpts {
            let n = rcpt.trim_start_matches('u').split('@').next().unwrap();
            assert!(text.contains(&format!("Subject: m{n}\r\n")), "{rcpt} got another message:\n{text}");
            *seen.entry(rcpt.clone()).or_default() += 1;
        }
    }
    assert_eq!(seen.len(), messages * DOMAINS, "every recipient delivered");
    assert!(seen.values().all(|&k| k == 1), "each exactly once: {seen:?}");
}
