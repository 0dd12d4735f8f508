//! Batching and pooling: thousands of messages to one domain go down at most
//! `max_connections_per_domain` connections, and a message with recipients in five domains
//! delivered by MX makes exactly one transaction per domain, each carrying all of that
//! domain's recipients (through smart hosts it is one transaction: tests/delivery_smart_hosts.rs).

mod common;

use std::collections::BTreeSet;

use common::Relay;
use common::dns::{Dns, Zone};
use common::sink::{Sink, SinkOptions};

#[test]
fn five_thousand_messages_over_at_most_the_connection_cap() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let cfg = common::DEFAULT_CONFIG.replace("{sink}", &sink.addr.port().to_string()).replace(
        "name = \"nowhere\"",
        "name = \"nowhere\"\nmax_connections_per_domain = 3\nmax_messages_per_connection = 100000",
    );
    let relay = Relay::start(&cfg);
    let total = 5000;
    let port = relay.port;
    let threads: Vec<_> = (0..10)
        .map(|t| {
            std::thread::spawn(move || {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let mut c = common::Client::connect(addr, None);
                c.hello();
                for n in 0..total / 10 {
                    // Pipelined: MAIL, RCPT and DATA in one write.
                    c.send(b"MAIL FROM:<bulk@example.test>\r\nRCPT TO:<user@one-domain.test>\r\nDATA\r\n");
                    for _ in 0..3 {
                        let r = c.reply();
                        assert!(r.code == 250 || r.code == 354, "{r:?}");
                    }
                    c.send(format!("Subject: {t}-{n}\r\n\r\nbody\r\n.\r\n").as_bytes());
                    assert_eq!(c.reply().code, 250);
                }
            })
        })
        .collect();
    let started = common::now();
    for t in threads {
        t.join().unwrap();
    }
    eprintln!("accepted in {:?}", started.elapsed());
    let got = sink.wait_for(total, 120);
    eprintln!("delivered in {:?}", started.elapsed());
    let subjects: BTreeSet<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(common::strip_received(&m.data)).lines().next().unwrap().to_string())
        .collect();
    assert_eq!(subjects.len(), total, "every message arrived once");
    let connections = sink.connections();
    assert!(connections <= 3, "{total} messages took {connections} connections (cap 3)");
    eprintln!("{total} messages over {connections} connections");
}

#[test]
fn one_transaction_per_domain_with_all_its_recipients() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let mut z = Zone::default();
    for d in 0..5 {
        z.mx.insert(format!("d{d}.test"), vec![(10, "mx.test".into())]);
    }
    z.a.insert("mx.test".into(), vec!["127.0.0.1".parse().unwrap()]);
    let dns = Dns::start(z);
    let cfg = dns
        .configure(common::DEFAULT_CONFIG)
        .replace("smart_hosts = [\"127.0.0.1:{sink}\"]", &format!("port = {}", sink.addr.port()))
        .replace("max_recipients = 5", "max_recipients = 100");
    let relay = Relay::start(&cfg);
    let mut c = relay.client();
    c.hello();
    let mut rcpts = Vec::new();
    for d in 0..5 {
        for u in 0..3 {
            rcpts.push(format!("u{u}@d{d}.test"));
        }
    }
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    assert_eq!(c.send_mail("app@example.test", &refs, "Subject: fan out\r\n\r\nhi\r\n").code, 250);
    let got = sink.wait_for(5, 20);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(sink.count(), 5, "exactly one transaction per domain");
    for m in &got {
        let domains: BTreeSet<&str> = m.rcpts.iter().map(|r| r.split('@').nth(1).unwrap()).collect();
        assert_eq!(domains.len(), 1, "one domain per transaction: {:?}", m.rcpts);
        assert_eq!(m.rcpts.len(), 3, "all of the domain's recipients in it: {:?}", m.rcpts);
    }
}
