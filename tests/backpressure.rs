//! Backpressure: when the spool holds `spool.max_messages` undelivered messages, new mail is
//! refused with `452 4.3.1 Insufficient system storage` at MAIL, and accepted again once
//! deliveries bring the queue down.

mod common;

use common::Relay;
use common::sink::{Sink, SinkOptions};

#[test]
fn spool_limit_answers_452_4_3_1_then_recovers() {
    // The next hop is down at first (nothing listens on {sink}).
    let cfg = common::DEFAULT_CONFIG
        .replace("[cores]\nsmtp = 2", "[cores]\nsmtp = 1")
        .replace("dir = \"{spool}\"", "dir = \"{spool}\"\nmax_messages = 3")
        .replace(
            "retry = { first = \"1h\", max = \"1h\", expire = \"2d\" }",
            "retry = { first = \"300ms\", max = \"300ms\", expire = \"1h\" }",
        );
    assert!(cfg.contains("max_messages = 3") && cfg.contains("smtp = 1"));
    let relay = Relay::start(&cfg);
    let mut c = relay.client();
    c.hello();
    for n in 0..3 {
        assert_eq!(c.send_mail("a@example.test", &["b@dest.test"], &format!("Subject: {n}\r\n\r\nx\r\n")).code, 250);
    }
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").line(), "452 4.3.1 Insufficient system storage");
    // The next hop comes up on the configured port; the queue drains; mail is accepted again.
    let sink = Sink::start(&format!("127.0.0.1:{}", relay.sink_port), SinkOptions::default());
    sink.wait_for(3, 30);
    let deadline = common::now() + std::time::Duration::from_secs(20);
    loop {
        let r = c.cmd("MAIL FROM:<a@example.test>");
        if r.code == 250 {
            break;
        }
        assert_eq!(r.code, 452);
        assert!(common::now() < deadline, "still refusing after the queue drained");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
