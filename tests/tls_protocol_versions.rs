//! TLS 1.2 and 1.3 only: a client offering only TLS 1.0 or 1.1 gets a handshake alert from
//! the relay, whatever ciphers it offers; TLS 1.2 and 1.3 handshakes succeed, verify against
//! the test CA, and the SMTP session goes on under TLS. The client is `openssl s_client`
//! (rustls cannot speak TLS 1.1 at all); skipped, with a message, where openssl is missing.

mod common;
mod tls_support;

use std::io::Write;
use std::process::{Command, Stdio};

use common::Relay;
use tls_support::Pki;

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
[[receive_connector]]
name = "starttls"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.1/32"]
relay = "any"
{tls}
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

fn have_openssl() -> bool {
    Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success())
}

/// Runs `openssl s_client -starttls smtp` limited to `version` (e.g. `-tls1_1`), writes
/// `input` to it, and returns (success, stdout + stderr). Bounded by a timeout.
fn s_client(port: u16, pki: &Pki, version: &str, input: &str) -> (bool, String) {
    let mut child = Command::new("timeout")
        .args(["30", "openssl", "s_client", "-connect", &format!("127.0.0.1:{port}"), "-starttls", "smtp"])
        .args(["-servername", tls_support::SERVER_NAME, "-verify_return_error", "-ign_eof", version])
        .arg("-CAfile")
        .arg(&pki.ca_path)
        // Security level 0: OpenSSL 3 would not even offer TLS 1.0/1.1 at its default level;
        // the refusal tested here must come from the relay.
        .args(["-cipher", "DEFAULT@SECLEVEL=0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn tls_1_0_and_1_1_are_refused_1_2_and_1_3_work() {
    if !have_openssl() {
        eprintln!("SKIP: openssl not installed");
        return;
    }
    let pki = Pki::new();
    let relay = Relay::start(&CONFIG.replace("{tls}", &pki.tls_toml()));

    for version in ["-tls1", "-tls1_1"] {
        let (ok, text) = s_client(relay.port, &pki, version, "EHLO client.test\r\nQUIT\r\n");
        assert!(!ok, "{version} handshake succeeded:\n{text}");
        // The ClientHello went out and the relay answered with an alert: the client did not
        // give up on its own.
        assert!(text.contains("SSL alert number"), "{version}: no alert from the relay:\n{text}");
        assert!(!text.contains("New, TLSv1"), "{version}: no session was established:\n{text}");
        assert!(!text.contains("250-relay.test Hello"), "{version}: no SMTP under TLS:\n{text}");
    }

    for (version, protocol) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, text) = s_client(relay.port, &pki, version, "EHLO client.test\r\nNOOP\r\nQUIT\r\n");
        assert!(ok, "{version}:\n{text}");
        assert!(text.contains(&format!("New, {protocol}, Cipher is ")), "{version}:\n{text}");
        assert!(text.contains("Verification: OK"), "{version}: verified against the test CA:\n{text}");
        assert!(text.contains("250-relay.test Hello [127.0.0.1]"), "{version}: EHLO under TLS:\n{text}");
        assert!(!text.contains("250-STARTTLS"), "{version}: STARTTLS is not offered twice:\n{text}");
        assert!(text.contains("221 2.0.0"), "{version}: QUIT answered:\n{text}");
    }

    // The refused handshakes did not hurt the relay.
    let mut c = tls_support::SmtpClient::connect(std::net::SocketAddr::from(([127, 0, 0, 1], relay.port)), None);
    c.hello();
    c.starttls(&pki);
    assert_eq!(c.tls_version().as_deref(), Some("TLSv1_3"));
}
