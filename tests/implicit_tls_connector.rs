//! An `implicit_tls = true` connector (SMTPS, port 465 style): TLS from the first byte, the
//! greeting inside TLS, no STARTTLS offered, AUTH offered at once; a plaintext client gets no
//! SMTP at all.

mod common;
mod tls_support;

use std::net::SocketAddr;

use common::{Relay, spool_messages};
use tls_support::{Pki, SmtpClient, cheap_hash};

const CONFIG: &str = r#"
hostname = "relay.test"
[spool]
dir = "{spool}"
[admin]
listen = "127.0.0.1:{admin}"
[cores]
smtp = 1
[dns]
nameservers = ["127.0.0.1:{nodns}"]
[[users]]
name = "svc-mailer"
password_hash = "{hash}"
send_as = ["*@corp.test"]
[[receive_connector]]
name = "smtps"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = ["users"]
relay = "any"
implicit_tls = true
{tls}
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

#[test]
fn tls_from_the_first_byte() {
    let pki = Pki::new();
    let relay = Relay::start(&CONFIG.replace("{tls}", &pki.tls_toml()).replace("{hash}", &cheap_hash("s3cret")));
    let addr = SocketAddr::from(([127, 0, 0, 1], relay.port));

    let mut c = SmtpClient::connect_tls(addr, None, &pki);
    assert!(c.tls_version().is_some());
    let ehlo = c.hello();
    assert!(!ehlo.offers("STARTTLS"), "{ehlo:?}");
    assert!(ehlo.offers("AUTH"), "{ehlo:?}");
    assert_eq!(c.auth_plain("svc-mailer", "s3cret").code, 235);
    let r = c.send_mail("app@corp.test", &["ops@external.test"], "From: app@corp.test\r\n\r\nsmtps\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("QUIT").code, 221);

    // A plaintext client: no greeting comes, and its EHLO ends the connection.
    let mut p = SmtpClient::connect(addr, None);
    p.send(b"EHLO plain.test\r\n");
    assert!(p.try_reply().is_err(), "no SMTP in clear on an implicit TLS port");

    let stored = spool_messages(&relay.spool());
    assert_eq!(stored.len(), 1);
    let (env, msg) = stored.values().next().unwrap();
    assert!(env.tls);
    assert!(String::from_utf8_lossy(msg).contains("with ESMTPSA"), "Received: says TLS + AUTH");
}
