//! SIGTERM: the relay stops accepting, a session in the middle of DATA finishes and gets its
//! `250`, an idle session is told `421 4.3.2`, and the process exits 0.

mod common;

use std::time::Duration;

use common::Relay;

#[test]
fn sigterm_lets_the_transaction_in_flight_finish() {
    let mut relay = Relay::start_default();
    let mut busy = relay.client();
    busy.hello();
    assert_eq!(busy.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(busy.cmd("RCPT TO:<b@dest.test>").code, 250);
    assert_eq!(busy.cmd("DATA").code, 354);
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n");
    let mut idle = relay.client();
    idle.hello();

    let child = relay.child.take().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    relay.child = Some(child);
    std::thread::sleep(Duration::from_millis(300));

    let r = idle.reply();
    assert_eq!(r.code, 421, "{r:?}");
    assert!(r.text().contains("4.3.2"));
    assert!(std::net::TcpStream::connect(("127.0.0.1", relay.port)).is_err(), "no new connections");
    busy.send(b"second half\r\n.\r\n");
    let r = busy.reply();
    assert_eq!(r.code, 250, "the message in flight is accepted: {r:?}");
    // Then, idle and shutting down, it is told so and closed.
    assert_eq!(busy.reply().code, 421);
    assert!(busy.is_closed());
    let mut child = relay.child.take().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    assert!(common::spool_messages(&relay.spool()).contains_key(&r.queue_id().unwrap()));
}
