//! `max_connections_per_source`: the (N+1)th concurrent connection from one client IP to a
//! connector gets `421 4.7.0 Too many connections` and is closed, other sources are not
//! affected, and a slot is free again once a connection ends. One SMTP core, so the per-core
//! limit is the global one (README: "Abuse limits").

mod common;
mod tls_support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::Relay;
use tls_support::SmtpClient;

const CONFIG: &str = r#"
hostname = "relay.test"
accepted_domains = ["corp.test"]
[spool]
dir = "{spool}"
[admin]
listen = "127.0.0.1:{admin}"
[cores]
smtp = 1
[dns]
nameservers = ["127.0.0.1:{nodns}"]
[[receive_connector]]
name = "devices"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/8"]
relay = "accepted"
max_connections_per_source = 3
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn assert_refused(c: &mut SmtpClient) {
    let r = c.reply();
    assert_eq!(r.line(), "421 4.7.0 Too many connections", "spec section 5, verbatim: {r:?}");
    assert_eq!(r.lines.len(), 1, "{r:?}");
    assert!(c.is_closed(), "closed after the 421");
}

#[test]
fn one_connection_over_the_limit_is_refused_with_421() {
    let relay = Relay::start(CONFIG);
    let addr = SocketAddr::new(ip("127.0.0.1"), relay.port);
    let mut open: Vec<SmtpClient> = (0..3).map(|_| SmtpClient::connect(addr, Some(ip("127.0.0.2")))).collect();
    for c in &mut open {
        c.hello();
    }
    let mut fourth = SmtpClient::connect(addr, Some(ip("127.0.0.2")));
    assert_refused(&mut fourth);

    // Another source has its own count.
    let mut other = SmtpClient::connect(addr, Some(ip("127.0.0.3")));
    other.hello();

    // The open sessions are unaffected.
    for c in &mut open {
        assert_eq!(c.cmd("NOOP").code, 250);
    }

    // Refused connections hold no slot: still refused, not counted twice.
    for _ in 0..3 {
        assert_refused(&mut SmtpClient::connect(addr, Some(ip("127.0.0.2"))));
    }

    // One ends; its slot comes back (the server releases it when the session ends).
    let mut first = open.remove(0);
    assert_eq!(first.cmd("QUIT").code, 221);
    assert!(first.is_closed());
    let deadline = common::now() + Duration::from_secs(5);
    loop {
        let mut c = SmtpClient::connect(addr, Some(ip("127.0.0.2")));
        let r = c.reply();
        if r.code == 220 {
            open.push(c);
            break;
        }
        assert!(common::now() < deadline, "the slot was never released: {r:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_refused(&mut SmtpClient::connect(addr, Some(ip("127.0.0.2"))));

    // A client that vanishes without QUIT gives its slot back too.
    drop(open.pop());
    let deadline = common::now() + Duration::from_secs(5);
    loop {
        let mut c = SmtpClient::connect(addr, Some(ip("127.0.0.2")));
        if c.reply().code == 220 {
            break;
        }
        assert!(common::now() < deadline, "the slot of a vanished client was never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}
