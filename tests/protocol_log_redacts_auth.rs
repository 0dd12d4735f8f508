//! The protocol log of a connector with `protocol_log = true` has the session transcript
//! (connect, greeting, EHLO, STARTTLS, commands, replies, message size, disconnect) and no
//! secret: not the AUTH PLAIN initial response, not the AUTH LOGIN user and password lines,
//! not a wrong password, not the password in clear, and not the message content.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use base64::Engine;
use common::ops::{self, TlsClient};
use common::pki::Pki;
use common::{DEFAULT_CONFIG, Relay};

#[test]
fn transcript_without_secrets() {
    let certs = tempfile::tempdir().unwrap();
    let pki = Pki::new(certs.path(), &["relay.test"]);
    let password = "Tr0ub4dor&3-horse";
    let cfg = DEFAULT_CONFIG.to_string() + &ops::auth_connector(&pki.cert_file, &pki.key_file, password, true);
    let relay = Relay::start(&cfg);
    let addr = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);

    // AUTH PLAIN with an initial response, wrong then right.
    let mut t = TlsClient::connect(addr, IpAddr::from([127, 0, 0, 2]), &pki.ca_file, "relay.test");
    assert_eq!(t.auth_plain("svc", "wrong-password-xyz").code, 535);
    assert_eq!(t.auth_plain("svc", password).code, 235);
    let r = t.send_mail("svc@example.test", &["x@dest.test"], "From: svc@example.test\r\n\r\nsecret body text\r\n");
    assert_eq!(r.code, 250);
    assert_eq!(t.cmd("QUIT").code, 221);
    // AUTH LOGIN: user and password on their own lines.
    let mut t = TlsClient::connect(addr, IpAddr::from([127, 0, 0, 2]), &pki.ca_file, "relay.test");
    assert_eq!(t.cmd("AUTH LOGIN").code, 334);
    assert_eq!(t.cmd(&b64("svc")).code, 334);
    assert_eq!(t.cmd(&b64(password)).code, 235);
    assert_eq!(t.cmd("QUIT").code, 221);

    let dir = relay.spool().join("protocol");
    let deadline = common::now() + Duration::from_secs(10);
    let log = loop {
        let text: String = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect())
            .unwrap_or_default();
        if text.matches("- disconnect").count() >= 2 {
            break text;
        }
        assert!(common::now() < deadline, "protocol log incomplete:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for want in [
        "+ connect to 127.0.0.1:",
        "connector \"auth\"",
        "> 220 relay.test ESMTP ringrelay",
        "< EHLO client.test",
        "< STARTTLS",
        "< AUTH PLAIN <redacted>",
        "> 535 5.7.8",
        "> 235 2.7.0",
        "< AUTH LOGIN",
        "< <redacted>",
        "< MAIL FROM:<svc@example.test>",
        "< RCPT TO:<x@dest.test>",
        "< DATA",
        "bytes of message data",
        "> 250 2.6.0 <",
        "< QUIT",
        "- disconnect",
    ] {
        assert!(log.contains(want), "missing {want:?} in:\n{log}");
    }
    assert!(log.contains(" 127.0.0.2:"), "client address on each line");
    for secret in [
        password.to_string(),
        b64(&format!("\0svc\0{password}")),
        b64(password),
        b64("svc"),
        "wrong-password-xyz".to_string(),
        b64("\0svc\0wrong-password-xyz"),
    ] {
        assert!(!log.contains(&secret), "secret {secret:?} in the protocol log:\n{log}");
    }
    assert!(!log.contains("secret body text"), "message content is not logged");
    assert_eq!(log.matches("< <redacted>").count(), 2, "both AUTH LOGIN lines redacted:\n{log}");
    // The anonymous connector has no protocol_log: its sessions are not there.
    let mut c = relay.client();
    c.hello();
    c.cmd("QUIT");
    std::thread::sleep(Duration::from_millis(400));
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    let all: String = files.iter().map(|e| std::fs::read_to_string(e.path()).unwrap()).collect();
    assert!(!all.contains("connector \"loopback\""), "{all}");
}
