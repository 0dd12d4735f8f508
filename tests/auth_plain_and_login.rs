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
