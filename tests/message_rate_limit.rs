//! `message_rate_limit`: over the rate, MAIL gets `452 4.7.0` (the client retries later).
//! Anonymous sessions are counted per client IP; authenticated ones per user, wherever the
//! user connects from. One SMTP core, so the per-core limit is the global one.

mod common;
mod tls_support;

use std::net::{IpAddr, SocketAddr};

use common::{Relay, spool_messages};
use tls_support::{Pki, SmtpClient, cheap_hash};

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
[[users]]
name = "svc-a"
password_hash = "{hash}"
send_as = ["*@corp.test"]
[[users]]
name = "svc-b"
password_hash = "{hash}"
send_as = ["*@corp.test"]
[[receive_connector]]
name = "devices"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/8"]
relay = "accepted"
message_rate_limit = "3/h"
[[receive_connector]]
name = "submission"
bind = ["127.0.0.1:{port2}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = ["users"]
relay = "any"
message_rate_limit = "2/h"
{tls}
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const BODY: &str = "From: app@corp.test\r\nSubject: rate\r\n\r\nx\r\n";

#[test]
fn over_the_rate_mail_gets_452() {
    let pki = Pki::new();
    let port2 = common::free_port();
    let text = CONFIG
        .replace("{tls}", &pki.tls_toml())
        .replace("{hash}", &cheap_hash("pw"))
        .replace("{port2}", &port2.to_string());
    let relay = Relay::start(&text);
    let devices = SocketAddr::new(ip("127.0.0.1"), relay.port);
    let submission = SocketAddr::new(ip("127.0.0.1"), port2);

    // Anonymous: per client IP, across connections.
    let mut c = SmtpClient::connect(devices, Some(ip("127.0.0.2")));
    c.hello();
    assert_eq!(c.send_mail("app@corp.test", &["ops@corp.test"], BODY).code, 250);
    assert_eq!(c.send_mail("app@corp.test", &["ops@corp.test"], BODY).code, 250);
    let mut c = SmtpClient::connect(devices, Some(ip("127.0.0.2")));
    c.hello();
    assert_eq!(c.send_mail("app@corp.test", &["ops@corp.test"], BODY).code, 250);
    let r = c.cmd("MAIL FROM:<app@corp.test>");
    assert_eq!(r.code, 452, "{r:?}");
    assert!(r.text().starts_with("4.7.0 "), "{r:?}");
    assert_eq!(c.cmd("MAIL FROM:<app@corp.test>").code, 452, "refusals do not reset anything");
    assert_eq!(c.cmd("NOOP").code, 250, "the session goes on");
    let mut other = SmtpClient::connect(devices, Some(ip("127.0.0.3")));
    other.hello();
    assert_eq!(other.send_mail("app@corp.test", &["ops@corp.test"], BODY).code, 250, "another IP");

    // Authenticated: per user, whatever the address.
    let login = |source: &str, user: &str| {
        let mut c = SmtpClient::connect(submission, Some(ip(source)));
        c.hello();
        c.starttls(&pki);
        c.ehlo();
        assert_eq!(c.auth_plain(user, "pw").code, 235);
        c
    };
    let mut a1 = login("127.0.0.4", "svc-a");
    assert_eq!(a1.send_mail("app@corp.test", &["x@external.test"], BODY).code, 250);
    let mut a2 = login("127.0.0.5", "svc-a");
    assert_eq!(a2.send_mail("app@corp.test", &["x@external.test"], BODY).code, 250);
    assert_eq!(a1.cmd("MAIL FROM:<app@corp.test>").code, 452, "svc-a used its 2 from two addresses");
    assert_eq!(a2.cmd("MAIL FROM:<app@corp.test>").code, 452);
    let mut b = login("127.0.0.4", "svc-b");
    assert_eq!(b.send_mail("app@corp.test", &["x@external.test"], BODY).code, 250, "svc-b counts apart");

    assert_eq!(spool_messages(&relay.spool()).len(), 7);
}
