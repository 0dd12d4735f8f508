//! Relay end to end: a message submitted to ringrelay arrives at the next hop with the same
//! bytes (apart from our Received: header), dot lines and all, with its envelope and DSN
//! parameters passed on; and the spool forgets it once delivered.

mod common;

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
