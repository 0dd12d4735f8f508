//! SIGTERM with sessions that do not finish: once `limits.shutdown_grace` is over, every session
//! still open is told `421 4.3.2` and its socket is closed (tokio-uring cannot cancel the read
//! it waits on: the socket is shut down), nothing half-received is stored, and the process
//! exits 0. During the drain, a MAIL pipelined behind a finished message starts no new
//! transaction: it gets `421 4.3.2` and the session closes.

mod common;

use std::time::Duration;

use common::{Client, Relay};

const CONFIG: &str = r#"
hostname = "relay.test"
[spool]
dir = "{spool}"
[admin]
listen = "127.0.0.1:{admin}"
[limits]
shutdown_grace = "3s"
[cores]
smtp = 2
[dns]
nameservers = ["127.0.0.1:{nodns}"]
[[receive_connector]]
name = "loopback"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.1/32"]
permission_groups = ["anonymous"]
relay = "any"
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

fn sigterm(relay: &mut Relay) {
    let child = relay.child.as_ref().expect("relay running");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// Polls until no listener takes connections: every SMTP core has started its drain.
fn wait_until_not_accepting(relay: &Relay) {
    let deadline = common::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", relay.port)).is_ok() {
        assert!(common::now() < deadline, "the relay still accepts connections after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(relay: &mut Relay) -> std::process::ExitStatus {
    let mut child = relay.child.take().unwrap();
    let deadline = common::now() + Duration::from_secs(40);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(common::now() < deadline, "no exit after SIGTERM:\n{}", relay.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_told_shutting_down_and_closed(c: &mut Client, what: &str) {
    let r = c.try_reply().unwrap_or_else(|e| panic!("{what}: no 421 before the close: {e}"));
    assert_eq!(r.code, 421, "{what}: {r:?}");
    assert!(r.text().starts_with("4.3.2 Service shutting down"), "{what}: {r:?}");
    assert!(c.is_closed(), "{what}: the socket is closed after the 421");
}

#[test]
fn sessions_left_after_the_grace_period_get_421_and_are_closed() {
    let mut relay = Relay::start(CONFIG);
    // Stalls in the middle of DATA.
    let mut in_data = relay.client();
    in_data.hello();
    assert_eq!(in_data.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(in_data.cmd("RCPT TO:<b@dest.test>").code, 250);
    assert_eq!(in_data.cmd("DATA").code, 354);
    in_data.send(b"Subject: never finished\r\n\r\nhalf\r\n");
    // Stalls between RCPT and DATA: in a transaction, so not closed at the start of the drain.
    let mut in_envelope = relay.client();
    in_envelope.hello();
    assert_eq!(in_envelope.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(in_envelope.cmd("RCPT TO:<b@dest.test>").code, 250);

    sigterm(&mut relay);
    wait_until_not_accepting(&relay);
    // Well inside the grace period nobody has been cut off yet: the in-flight session can
    // still talk (and a reply here would be a 421 that came too early).
    assert_eq!(in_envelope.cmd("NOOP").line(), "250 2.0.0 OK", "sessions in flight may go on during the grace");

    assert_told_shutting_down_and_closed(&mut in_data, "session in DATA");
    assert_told_shutting_down_and_closed(&mut in_envelope, "session between RCPT and DATA");
    let status = wait_exit(&mut relay);
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}\n{}", relay.log_text());
    assert!(common::spool_messages(&relay.spool()).is_empty(), "nothing half-received is stored");
    assert!(relay.log_text().contains("shutdown grace over"), "{}", relay.log_text());
}

#[test]
fn a_mail_pipelined_during_the_drain_starts_no_transaction() {
    let mut relay = Relay::start(&CONFIG.replace("shutdown_grace = \"3s\"", "shutdown_grace = \"30s\""));
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@dest.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: in flight\r\n\r\nfirst half\r\n");

    sigterm(&mut relay);
    wait_until_not_accepting(&relay);
    // The end of this message and a whole second transaction, in one write.
    c.send(b"second half\r\n.\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<c@dest.test>\r\nDATA\r\nSubject: second\r\n\r\nx\r\n.\r\n");
    let queued = c.reply();
    assert_eq!(queued.code, 250, "the message in flight is accepted: {queued:?}");
    assert_told_shutting_down_and_closed(&mut c, "MAIL pipelined during the drain");
    let status = wait_exit(&mut relay);
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    let stored = common::spool_messages(&relay.spool());
    assert_eq!(stored.keys().collect::<Vec<_>>(), [&queued.queue_id().unwrap()], "only the first message");
    let (env, msg) = &stored[&queued.queue_id().unwrap()];
    assert_eq!(env.recipients.len(), 1);
    assert!(common::strip_received(msg).ends_with(b"first half\r\nsecond half\r\n"));
}
