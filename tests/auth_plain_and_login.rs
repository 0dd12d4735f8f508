//! SMTP AUTH over STARTTLS as clients actually do it: PLAIN with an initial response, PLAIN
//! after an empty 334, and LOGIN; a wrong password or an unknown user gets `535 5.7.8`, the
//! right one `235`, and the message then carries the user (tracked in the spool envelope).

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
[[users]]
name = "printer"
password_hash = "{hash2}"
send_as = ["scanner@corp.test"]
[[receive_connector]]
name = "submission"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = ["users"]
relay = "any"
max_auth_failures = 100
{tls}
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

fn session(addr: SocketAddr, pki: &Pki) -> SmtpClient {
    let mut c = SmtpClient::connect(addr, None);
    c.hello();
    c.starttls(pki);
    c.ehlo();
    c
}

#[test]
fn plain_and_login_with_right_and_wrong_passwords() {
    let pki = Pki::new();
    let text = CONFIG
        .replace("{tls}", &pki.tls_toml())
        .replace("{hash}", &cheap_hash("s3cret"))
        .replace("{hash2}", &cheap_hash("ink & toner"));
    let relay = Relay::start(&text);
    let addr = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let bad = "535 5.7.8 Authentication credentials invalid";

    let mut c = session(addr, &pki);
    assert_eq!(c.auth_plain("svc-mailer", "wrong").line(), bad);
    assert_eq!(c.auth_plain("nobody", "s3cret").line(), bad, "unknown user: same answer");
    assert_eq!(c.auth_plain("svc-mailer", "s3cret ").line(), bad, "exactly the password");
    assert_eq!(c.auth_login("svc-mailer", "wrong").line(), bad);
    assert_eq!(c.cmd("MAIL FROM:<app@corp.test>").code, 530, "still anonymous after failures");
    assert_eq!(c.auth_plain("svc-mailer", "s3cret").line(), "235 2.7.0 Authentication successful");
    assert_eq!(c.auth_plain("svc-mailer", "s3cret").code, 503, "once per session");
    let r = c.send_mail("app@corp.test", &["a@external.test"], "From: app@corp.test\r\n\r\nplain\r\n");
    assert_eq!(r.code, 250, "{r:?}");

    let mut c = session(addr, &pki);
    assert_eq!(c.auth_plain_challenge("svc-mailer", "wrong").line(), bad);
    assert_eq!(c.auth_plain_challenge("svc-mailer", "s3cret").code, 235);

    let mut c = session(addr, &pki);
    assert_eq!(c.auth_login("printer", "ink & toner").code, 235);
    let r = c.send_mail("scanner@corp.test", &["b@external.test"], "From: scanner@corp.test\r\n\r\nlogin\r\n");
    assert_eq!(r.code, 250, "{r:?}");

    // `*` cancels an exchange.
    let mut c = session(addr, &pki);
    assert_eq!(c.cmd("AUTH LOGIN").code, 334);
    assert_eq!(c.cmd("*").code, 501);
    assert_eq!(c.cmd("AUTH CRAM-MD5").code, 504, "mechanisms not offered are refused");

    let mut users: Vec<(Option<String>, String)> =
        spool_messages(&relay.spool()).values().map(|(e, _)| (e.auth_user.clone(), e.sender.clone())).collect();
    users.sort();
    assert_eq!(
        users,
        vec![(Some("printer".into()), "scanner@corp.test".into()), (Some("svc-mailer".into()), "app@corp.test".into())]
    );
}

#[test]
fn authzid_cancel_and_login_initial_response() {
    use ringrelay::smtp::auth::encode;
    let pki = Pki::new();
    let text = CONFIG
        .replace("{tls}", &pki.tls_toml())
        .replace("{hash}", &cheap_hash("s3cret"))
        .replace("{hash2}", &cheap_hash("ink & toner"));
    let relay = Relay::start(&text);
    let addr = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let bad = "535 5.7.8 Authentication credentials invalid";

    // PLAIN asking to act as another identity (RFC 4616 authzid): not supported, so the
    // credentials do not do, even with the right password; the same identity is fine.
    let mut c = session(addr, &pki);
    assert_eq!(c.cmd(&format!("AUTH PLAIN {}", encode(b"printer\0svc-mailer\0s3cret"))).line(), bad);
    assert_eq!(c.cmd("AUTH PLAIN").code, 334);
    assert_eq!(c.cmd(&encode(b"printer\0svc-mailer\0s3cret")).line(), bad, "after a 334 too");
    assert_eq!(c.cmd("MAIL FROM:<app@corp.test>").code, 530, "not authenticated");
    let r = c.cmd(&format!("AUTH PLAIN {}", encode(b"svc-mailer\0svc-mailer\0s3cret")));
    assert_eq!(r.line(), "235 2.7.0 Authentication successful");

    // `*` cancels AUTH PLAIN after its 334; the session goes on, and AUTH works afterwards.
    let mut c = session(addr, &pki);
    assert_eq!(c.cmd("AUTH PLAIN").line(), "334 ");
    let r = c.cmd("*");
    assert_eq!(r.code, 501, "{r:?}");
    assert!(r.text().starts_with("5.7.0"), "{r:?}");
    assert_eq!(c.cmd("NOOP").code, 250, "a command again, not a SASL response");
    assert_eq!(c.cmd("MAIL FROM:<app@corp.test>").code, 530);
    assert_eq!(c.auth_plain("svc-mailer", "s3cret").code, 235);

    // LOGIN with the user name as initial response: 334 Password:, then the password.
    let mut c = session(addr, &pki);
    assert_eq!(c.cmd(&format!("AUTH LOGIN {}", encode(b"printer"))).line(), "334 UGFzc3dvcmQ6");
    assert_eq!(c.cmd(&encode(b"ink & toner")).line(), "235 2.7.0 Authentication successful");
    let r = c.send_mail("scanner@corp.test", &["b@external.test"], "From: scanner@corp.test\r\n\r\nir\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    let mut c = session(addr, &pki);
    assert_eq!(c.cmd(&format!("AUTH LOGIN {}", encode(b"printer"))).code, 334);
    assert_eq!(c.cmd(&encode(b"wrong")).line(), bad);

    let stored = spool_messages(&relay.spool());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored.values().next().unwrap().0.auth_user.as_deref(), Some("printer"));
}
