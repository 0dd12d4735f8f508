//! An authenticated user may send only as its `send_as` addresses, both in the envelope
//! (MAIL FROM) and in every mailbox of the header From: anything else gets `550 5.7.60` and
//! nothing is stored. `*@domain` entries cover the whole domain (and not its subdomains).

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
send_as = ["smb1@corp.test", "*@notify.corp.test"]
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

const DENIED: &str = "550 5.7.60 Client does not have permissions to send as this sender";

#[test]
fn envelope_and_header_from_must_be_in_send_as() {
    let pki = Pki::new();
    let relay = Relay::start(&CONFIG.replace("{tls}", &pki.tls_toml()).replace("{hash}", &cheap_hash("s3cret")));
    let addr = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let mut c = SmtpClient::connect(addr, None);
    c.hello();
    c.starttls(&pki);
    c.ehlo();
    assert_eq!(c.auth_plain("svc-mailer", "s3cret").code, 235);

    // Envelope.
    assert_eq!(c.cmd("MAIL FROM:<ceo@corp.test>").line(), DENIED);
    assert_eq!(c.cmd("MAIL FROM:<x@sub.notify.corp.test>").line(), DENIED, "not subdomains");
    assert_eq!(c.cmd("MAIL FROM:<SMB1@Corp.Test>").code, 250, "addresses compare without case");
    c.cmd("RSET");

    // Header From: the envelope is fine, the header is not.
    let r =
        c.send_mail("smb1@corp.test", &["a@external.test"], "From: CEO <ceo@corp.test>\r\nSubject: pay\r\n\r\nx\r\n");
    assert_eq!(r.line(), DENIED);
    let r = c.send_mail(
        "smb1@corp.test",
        &["a@external.test"],
        "From: smb1@corp.test, ceo@corp.test\r\nSubject: two authors\r\n\r\nx\r\n",
    );
    assert_eq!(r.line(), DENIED, "every mailbox of From");
    let r = c.send_mail(
        "smb1@corp.test",
        &["a@external.test"],
        "From: smb1@corp.test\r\nFrom: ceo@corp.test\r\nSubject: two From fields\r\n\r\nx\r\n",
    );
    assert_eq!(r.line(), DENIED, "every From field");
    assert!(spool_messages(&relay.spool()).is_empty(), "nothing of the refused messages is kept");

    // Allowed.
    let r = c.send_mail("smb1@corp.test", &["a@external.test"], "From: Scanner <smb1@corp.test>\r\n\r\nok\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.send_mail("alerts@notify.corp.test", &["a@external.test"], "From: alerts@notify.corp.test\r\n\r\nok\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(spool_messages(&relay.spool()).len(), 2);
}

/// MAIL, one RCPT, then the message in one `BDAT <n> LAST` chunk; the final reply.
fn send_bdat(c: &mut SmtpClient, from: &str, message: &str) -> tls_support::Reply {
    assert_eq!(c.cmd(&format!("MAIL FROM:<{from}>")).code, 250);
    assert_eq!(c.cmd("RCPT TO:<a@external.test>").code, 250);
    c.send(format!("BDAT {} LAST\r\n{message}", message.len()).as_bytes());
    c.reply()
}

#[test]
fn header_from_without_a_readable_allowed_mailbox_is_refused() {
    let pki = Pki::new();
    let relay = Relay::start(&CONFIG.replace("{tls}", &pki.tls_toml()).replace("{hash}", &cheap_hash("s3cret")));
    let addr = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let mut c = SmtpClient::connect(addr, None);
    c.hello();
    c.starttls(&pki);
    c.ehlo();
    assert_eq!(c.auth_plain("svc-mailer", "s3cret").code, 235);

    // Each of these has an allowed envelope sender and no From mailbox we could check (or
    // one we must not allow); a mail client could show any of them as someone else.
    let refused = [
        ("no From field", "Subject: no From\r\n\r\nx\r\n"),
        ("a display name only", "From: boss\r\nSubject: pay\r\n\r\nx\r\n"),
        ("an empty group", "From: undisclosed-recipients:;\r\n\r\nx\r\n"),
        ("an encoded word hiding the @", "From: =?utf-8?q?ceo=40corp.test?=\r\n\r\nx\r\n"),
        ("two angle-addrs in one mailbox", "From: <smb1@corp.test> <ceo@corp.test>\r\n\r\nx\r\n"),
        ("an address after the angle-addr", "From: <smb1@corp.test> ceo@corp.test\r\n\r\nx\r\n"),
        ("a readable mailbox and an unreadable one", "From: smb1@corp.test, boss\r\n\r\nx\r\n"),
        ("a folded From naming another sender", "From: Scanner\r\n <ceo@corp.test>\r\nSubject: s\r\n\r\nx\r\n"),
        ("a folded list with one bad mailbox", "From:\r\n smb1@corp.test,\r\n\tceo@corp.test\r\n\r\nx\r\n"),
        ("a folded second angle-addr", "From: <smb1@corp.test>\r\n <ceo@corp.test>\r\n\r\nx\r\n"),
    ];
    for (why, message) in refused {
        assert_eq!(c.send_mail("smb1@corp.test", &["a@external.test"], message).line(), DENIED, "DATA: {why}");
        assert_eq!(send_bdat(&mut c, "smb1@corp.test", message).line(), DENIED, "BDAT: {why}");
    }
    assert!(spool_messages(&relay.spool()).is_empty(), "nothing of the refused messages is kept");

    // Folded and allowed, over DATA and over BDAT in two chunks.
    let folded = "From: \"Scanner, 2nd floor\"\r\n <smb1@corp.test>,\r\n\talerts@notify.corp.test\r\n\r\nok\r\n";
    let r = c.send_mail("smb1@corp.test", &["a@external.test"], folded);
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(c.cmd("MAIL FROM:<smb1@corp.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<a@external.test>").code, 250);
    let (head, tail) = folded.split_at(20);
    c.send(format!("BDAT {}\r\n{head}", head.len()).as_bytes());
    assert_eq!(c.reply().code, 250, "first chunk");
    c.send(format!("BDAT {} LAST\r\n{tail}", tail.len()).as_bytes());
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    let stored = spool_messages(&relay.spool());
    assert_eq!(stored.len(), 2);
    for (_, message) in stored.values() {
        assert_eq!(common::strip_received(message), folded.as_bytes(), "stored as sent");
    }
}
