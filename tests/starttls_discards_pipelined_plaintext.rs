//! STARTTLS command injection (CVE-2011-0411 and kin): commands pipelined in the same
//! plaintext packet as STARTTLS must never run, in the TLS session or at all. The client
//! sends `STARTTLS\r\nMAIL FROM:<evil@x>\r\n` (or an AUTH) in one write, completes a real TLS
//! handshake, and finds no trace of the injected command: RCPT gets `503` (no MAIL ran), MAIL
//! needs AUTH (no AUTH ran), and no reply to the injected line ever arrives.

mod common;
mod tls_support;

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
name = "devices"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.1/32"]
relay = "any"
{tls}
[[receive_connector]]
name = "submission"
bind = ["127.0.0.1:{port2}"]
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
fn commands_pipelined_after_starttls_are_never_executed() {
    let pki = Pki::new();
    let port2 = common::free_port();
    let text = CONFIG
        .replace("{tls}", &pki.tls_toml())
        .replace("{hash}", &cheap_hash("s3cret"))
        .replace("{port2}", &port2.to_string());
    let relay = Relay::start(&text);

    // Anonymous connector where TLS is optional: in plaintext the same MAIL is accepted, so
    // only the discard can explain a 503 later.
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], relay.port));
    let mut plain = SmtpClient::connect(addr, None);
    plain.hello();
    assert_eq!(plain.cmd("MAIL FROM:<evil@x.test>").code, 250, "MAIL is acceptable in plaintext here");

    let mut c = SmtpClient::connect(addr, None);
    c.hello();
    c.send(b"STARTTLS\r\nEHLO evil\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@external.test>\r\n");
    let r = c.reply();
    assert_eq!(r.code, 220, "{r:?}");
    assert!(c.buffered().is_empty(), "nothing after 220 in clear: {:?}", c.buffered());
    c.handshake(&pki).expect("TLS handshake");
    c.ehlo();
    assert_eq!(c.cmd("RCPT TO:<victim@external.test>").line(), "503 5.5.1 Need MAIL before RCPT");
    assert_eq!(c.cmd("NOOP").line(), "250 2.0.0 OK", "no stray replies for the injected lines");
    assert!(c.buffered().is_empty());
    drop(c);

    // Authenticated connector: an injected AUTH must not authenticate the TLS session.
    let addr2 = std::net::SocketAddr::from(([127, 0, 0, 1], port2));
    let mut c = SmtpClient::connect(addr2, None);
    c.hello();
    let auth = ringrelay::smtp::auth::encode(b"\0svc-mailer\0s3cret");
    c.send(format!("STARTTLS\r\nEHLO evil\r\nAUTH PLAIN {auth}\r\n").as_bytes());
    assert_eq!(c.reply().code, 220);
    c.handshake(&pki).expect("TLS handshake");
    c.ehlo();
    assert_eq!(c.cmd("MAIL FROM:<app@corp.test>").code, 530, "the injected AUTH did not run");
    assert_eq!(c.cmd("NOOP").line(), "250 2.0.0 OK");

    assert!(spool_messages(&relay.spool()).is_empty());
}
