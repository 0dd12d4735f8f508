//! On an authenticated connector with `require_tls` (the default with `users`), nothing about
//! credentials happens in clear: EHLO before STARTTLS offers STARTTLS but not AUTH, AUTH and
//! MAIL before STARTTLS get `530 5.7.0`, and after the handshake (verified against the test
//! CA) AUTH is offered, STARTTLS no longer is, and MAIL still needs AUTH (`530 5.7.57`).

mod common;
mod tls_support;

use common::Relay;
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
send_as = ["app@corp.test"]
[[receive_connector]]
name = "submission"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = ["users"]
relay = "any"
{tls}
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

#[test]
fn credentials_never_travel_in_clear() {
    let pki = Pki::new();
    let relay = Relay::start(&CONFIG.replace("{tls}", &pki.tls_toml()).replace("{hash}", &cheap_hash("s3cret")));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], relay.port));
    let mut c = SmtpClient::connect(addr, None);
    let ehlo = c.hello();
    assert!(ehlo.offers("STARTTLS"), "{ehlo:?}");
    assert!(!ehlo.offers("AUTH"), "no AUTH before TLS: {ehlo:?}");
    assert_eq!(c.auth_plain("svc-mailer", "s3cret").line(), "530 5.7.0 Must issue a STARTTLS command first");
    assert_eq!(c.cmd("AUTH LOGIN").line(), "530 5.7.0 Must issue a STARTTLS command first");
    assert_eq!(c.cmd("MAIL FROM:<app@corp.test>").line(), "530 5.7.0 Must issue a STARTTLS command first");

    c.starttls(&pki);
    assert!(c.tls_version().is_some());
    assert_eq!(c.cmd("MAIL FROM:<app@corp.test>").code, 503, "EHLO again first: the session restarted");
    let ehlo = c.ehlo();
    assert!(ehlo.offers("AUTH"), "{ehlo:?}");
    assert!(ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"), "{ehlo:?}");
    assert!(!ehlo.offers("STARTTLS"), "not twice: {ehlo:?}");
    assert_eq!(c.cmd("STARTTLS").code, 503);
    assert_eq!(
        c.cmd("MAIL FROM:<app@corp.test>").line(),
        "530 5.7.57 Client was not authenticated to send anonymous mail during MAIL FROM"
    );
    assert_eq!(c.auth_plain("svc-mailer", "s3cret").code, 235);
    let r = c.send_mail("app@corp.test", &["ops@external.test"], "From: app@corp.test\r\nSubject: hi\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{r:?}");
}
