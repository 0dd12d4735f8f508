//! RFC 3207 4.2: after STARTTLS the session starts afresh, and that includes AUTH. On a
//! connector with `require_tls = false`, AUTH is offered in clear; a client that
//! authenticated before STARTTLS is anonymous again under TLS (a man in the middle could
//! have done that AUTH), must AUTH again, and can.

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
send_as = ["app@corp.test"]
[[receive_connector]]
name = "legacy-submission"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = ["users"]
require_tls = false
relay = "any"
{tls}
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

#[test]
fn starttls_forgets_an_auth_done_in_clear() {
    let pki = Pki::new();
    let relay = Relay::start(&CONFIG.replace("{tls}", &pki.tls_toml()).replace("{hash}", &cheap_hash("s3cret")));
    let addr = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let mut c = SmtpClient::connect(addr, None);
    let ehlo = c.hello();
    assert!(ehlo.offers("AUTH") && ehlo.offers("STARTTLS"), "AUTH in clear where require_tls = false: {ehlo:?}");
    assert_eq!(c.auth_plain("svc-mailer", "s3cret").code, 235, "AUTH before TLS works here");
    assert_eq!(c.cmd("MAIL FROM:<app@corp.test>").code, 250, "and counts, before TLS");
    assert_eq!(c.cmd("RSET").code, 250);

    c.starttls(&pki);
    let ehlo = c.ehlo();
    assert!(ehlo.offers("AUTH"), "{ehlo:?}");
    assert_eq!(
        c.cmd("MAIL FROM:<app@corp.test>").line(),
        "530 5.7.57 Client was not authenticated to send anonymous mail during MAIL FROM",
        "the AUTH done before TLS is gone"
    );
    assert_eq!(c.auth_plain("svc-mailer", "s3cret").code, 235, "not `503 Already authenticated`");
    let r = c.send_mail("app@corp.test", &["ops@external.test"], "From: app@corp.test\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    let stored = spool_messages(&relay.spool());
    assert_eq!(stored.len(), 1);
    let (envelope, _) = stored.values().next().unwrap();
    assert!(envelope.tls, "the message came under TLS");
    assert_eq!(envelope.auth_user.as_deref(), Some("svc-mailer"));
}
