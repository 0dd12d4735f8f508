//! Relay end to end: a message submitted to ringrelay arrives at the next hop with the same
//! bytes (apart from our Received: header), dot lines and all, with its envelope and DSN
//! parameters passed on; and the spool forgets it once delivered. A message too big to be kept
//! in memory (over 64 KiB) is streamed from the spool for each of its transactions, and
//! arrives just as intact at every destination.

mod common;

use common::dns::{Dns, Zone};
use common::sink::{Sink, SinkOptions};
use common::{Relay, strip_received};

fn relay_to(sink: &Sink) -> Relay {
    let cfg = common::DEFAULT_CONFIG.replace("{sink}", &sink.addr.port().to_string());
    Relay::start(&cfg)
}

#[test]
fn bytes_arrive_identical_apart_from_received() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let relay = relay_to(&sink);
    let mut c = relay.client();
    c.hello();
    let body = "From: app@example.test\r\nSubject: e2e\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n";
    assert_eq!(c.cmd("MAIL FROM:<app@example.test> RET=HDRS ENVID=abc123").code, 250);
    assert_eq!(c.cmd("RCPT TO:<ops@dest.test> NOTIFY=FAILURE ORCPT=rfc822;ops@dest.test").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&common::dot_stuff(body.as_bytes()));
    c.send(b".\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    let got = sink.wait_for(1, 20);
    let m = &got[0];
    assert_eq!(m.from, "app@example.test");
    assert_eq!(m.rcpts, vec!["ops@dest.test"]);
    assert!(m.mail_params.contains("RET=HDRS") && m.mail_params.contains("ENVID=abc123"), "{}", m.mail_params);
    assert!(m.rcpt_params[0].contains("NOTIFY=FAILURE") && m.rcpt_params[0].contains("ORCPT=rfc822;ops@dest.test"));
    assert!(
        m.data.starts_with(b"Received: from client.test ([127.0.0.1])\r\n\tby relay.test (ringrelay) with ESMTP id ")
    );
    assert_eq!(strip_received(&m.data), body.as_bytes());
    // Delivered: the spool forgets it.
    let deadline = common::now() + std::time::Duration::from_secs(10);
    while !common::spool_messages(&relay.spool()).is_empty() {
        assert!(common::now() < deadline, "delivered message still live in the spool");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_large_message_to_five_domains_is_streamed_from_the_spool_to_each() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let mut z = Zone::default();
    let domains: Vec<String> = (0..5).map(|i| format!("big{i}.test")).collect();
    for d in &domains {
        z.mx.insert(d.clone(), vec![(10, "mx.big.test".into())]);
    }
    z.a.insert("mx.big.test".into(), vec!["127.0.0.1".parse().unwrap()]);
    let dns = Dns::start(z);
    let cfg = dns
        .configure(common::DEFAULT_CONFIG)
        .replace("max_message_size = \"64KiB\"", "max_message_size = \"8MiB\"")
        .replace("smart_hosts = [\"127.0.0.1:{sink}\"]", &format!("port = {}", sink.addr.port()));
    let relay = Relay::start(&cfg);
    // 3 MiB: many read pieces, lines of every length, dots at line starts, 8-bit octets.
    let mut body = String::from("Subject: big\r\nMIME-Version: 1.0\r\n\r\n");
    let mut n = 0u64;
    while body.len() < 3 << 20 {
        n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let len = (n >> 33) as usize % 300;
        if n.is_multiple_of(7) {
            body.push('.');
        }
        body.extend(std::iter::repeat_n(if n.is_multiple_of(5) { '\u{e9}' } else { 'x' }, len));
        body.push_str("\r\n");
    }
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<app@example.test> BODY=8BITMIME").code, 250);
    for d in &domains {
        assert_eq!(c.cmd(&format!("RCPT TO:<user@{d}>")).code, 250);
    }
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&common::dot_stuff(body.as_bytes()));
    c.send(b".\r\n");
    assert_eq!(c.reply().code, 250);
    let got = sink.wait_for(5, 60);
    let mut seen: Vec<&str> = got.iter().map(|m| m.rcpts[0].as_str()).collect();
    seen.sort();
    assert_eq!(seen, domains.iter().map(|d| format!("user@{d}")).collect::<Vec<_>>());
    for m in &got {
        assert_eq!(m.rcpts.len(), 1);
        assert!(strip_received(&m.data) == body.as_bytes(), "{} arrived changed", m.rcpts[0]);
    }
}
