//! Idle timeouts (RFC 5321 4.5.3.2) and the per-core connection cap, over real sockets: a
//! client silent past `limits.command_timeout` or, inside DATA, past `limits.data_timeout` gets
//! `421 4.4.2` and the socket is closed (nothing half-received is stored); with
//! `limits.max_connections_per_core = 1` on one SMTP core a second connection gets
//! `421 4.7.0 Too many connections`, verbatim as spec section 5 writes it, and is closed.

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
command_timeout = "2s"
data_timeout = "5s"
[cores]
smtp = 1
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

fn assert_timed_out(c: &mut Client, what: &str) {
    // The client's own read timeout (20 s) is far past the server's; the reply comes first.
    let r = c.try_reply().unwrap_or_else(|e| panic!("{what}: no 421 before the close: {e}"));
    assert_eq!(r.line(), "421 4.4.2 Timeout exceeded, closing connection", "{what}: {r:?}");
    assert!(c.is_closed(), "{what}: the socket is closed after the 421");
}

#[test]
fn a_silent_client_gets_421_4_4_2_and_is_closed() {
    let relay = Relay::start(CONFIG);
    // Right after the greeting.
    let mut c = relay.client();
    assert_eq!(c.reply().code, 220);
    assert_timed_out(&mut c, "after the greeting");
    // Mid-session, in a transaction, between commands: the command timeout applies.
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_timed_out(&mut c, "between MAIL and RCPT");
    // A client that keeps talking is not cut off: each command resets the timer.
    let mut c = relay.client();
    c.hello();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(c.cmd("NOOP").code, 250);
    }
    assert_eq!(c.cmd("QUIT").code, 221);
}

#[test]
fn a_client_silent_inside_data_gets_421_4_4_2_and_nothing_is_stored() {
    let relay = Relay::start(CONFIG);
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@dest.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: stalled\r\n\r\nhalf a message\r\n");
    assert_timed_out(&mut c, "inside DATA");
    assert!(common::spool_messages(&relay.spool()).is_empty(), "nothing of the stalled message is kept");
    // Inside DATA the data timeout (5 s) applies, not the command timeout (2 s): a client
    // that pauses 2.5 s between lines of its message still gets its message through.
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@dest.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: slow\r\n\r\n");
    std::thread::sleep(Duration::from_millis(2500));
    c.send(b"slow line\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
}

#[test]
fn past_the_per_core_cap_a_connection_gets_421_4_7_0() {
    let relay = Relay::start(
        &CONFIG.replace("command_timeout = \"2s\"\ndata_timeout = \"5s\"", "max_connections_per_core = 1"),
    );
    let mut first = relay.client();
    first.hello();
    let mut second = relay.client();
    let r = second.reply();
    assert_eq!(r.line(), "421 4.7.0 Too many connections", "spec section 5, verbatim: {r:?}");
    assert_eq!(r.lines.len(), 1);
    assert!(second.is_closed(), "closed after the 421");
    // The first session is unaffected, and its slot is free again once it ends.
    assert_eq!(first.cmd("NOOP").code, 250);
    assert_eq!(first.cmd("QUIT").code, 221);
    assert!(first.is_closed());
    let deadline = common::now() + Duration::from_secs(10);
    loop {
        let mut c = relay.client();
        let r = c.reply();
        if r.code == 220 {
            break;
        }
        assert_eq!(r.line(), "421 4.7.0 Too many connections");
        assert!(common::now() < deadline, "the slot was never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}
