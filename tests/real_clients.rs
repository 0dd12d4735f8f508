//! Real SMTP clients, as a new user would try the relay: Python's smtplib, swaks (plain, and
//! with STARTTLS + AUTH PLAIN/LOGIN verifying the relay's certificate) and `openssl s_client
//! -starttls smtp`. Each is skipped (with a message) where it is not installed; `.ci/run`
//! installs swaks.

mod common;
mod tls_support;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Relay, spool_messages, strip_received};
use tls_support::{Pki, cheap_hash};

fn have(cmd: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {cmd}")).output().is_ok_and(|o| o.status.success())
}

#[test]
fn python_smtplib_submits() {
    if !have("python3") {
        eprintln!("SKIP: python3 not installed");
        return;
    }
    let relay = Relay::start_default();
    let script = format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}, timeout=10)
code, caps = s.ehlo()
assert code == 250 and b"PIPELINING" in caps, caps
s.sendmail("app@example.test", ["ops@dest.test", "dev@dest.test"], "Subject: from python\r\n\r\nline\r\n.starts with a dot\r\n")
code, text = s.docmd("NOOP")
assert code == 250
s.quit()
print("OK")
"#,
        port = relay.port
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored = spool_messages(&relay.spool());
    assert_eq!(stored.len(), 1);
    let (env, msg) = stored.values().next().unwrap();
    assert_eq!(env.recipients.len(), 2);
    assert_eq!(strip_received(msg), b"Subject: from python\r\n\r\nline\r\n.starts with a dot\r\n");
}

#[test]
fn swaks_submits() {
    if !have("swaks") {
        eprintln!("SKIP: swaks not installed (apt-get install swaks)");
        return;
    }
    let relay = Relay::start_default();
    let out = Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{}", relay.port),
            "--from",
            "printer@example.test",
            "--to",
            "ops@dest.test",
        ])
        .args(["--header", "Subject: scan ready", "--body", "your scan is ready", "--timeout", "10"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("<-  250 2.6.0 <") && text.contains("> Queued mail for delivery"), "{text}");
    assert_eq!(spool_messages(&relay.spool()).len(), 1);
}

/// An authenticated connector (STARTTLS required, then AUTH), as in the README.
const AUTH_CONFIG: &str = r#"
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
name = "SMTP Auth Relay"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.1/32"]
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

fn start_auth_relay(pki: &Pki) -> Relay {
    Relay::start(&AUTH_CONFIG.replace("{tls}", &pki.tls_toml()).replace("{hash}", &cheap_hash("s3cret")))
}

/// The queue id in a transcript line `... 250 2.6.0 <ID> Queued mail for delivery`.
fn queued_id(transcript: &str) -> Option<String> {
    let line = transcript.lines().find(|l| l.contains("250 2.6.0 <") && l.ends_with("> Queued mail for delivery"))?;
    let rest = &line[line.find("250 2.6.0 <")? + "250 2.6.0 <".len()..];
    Some(rest[..rest.find('>')?].to_string())
}

/// The transcript lines a reader of the issue note needs: replies and what was sent.
fn key_lines(transcript: &str) -> String {
    let keep = ["STARTTLS", "TLS started", "AUTH", " 235 ", " 535 ", "2.6.0", "verify", "***"];
    transcript.lines().filter(|l| keep.iter().any(|k| l.contains(k))).collect::<Vec<_>>().join("\n")
}

#[test]
fn swaks_starttls_auth_plain_and_login() {
    if !have("swaks") {
        eprintln!("SKIP: swaks not installed (apt-get install swaks)");
        return;
    }
    let support = Command::new("swaks").arg("--support").output().unwrap();
    let support = format!("{}{}", String::from_utf8_lossy(&support.stdout), String::from_utf8_lossy(&support.stderr));
    if !support.contains("=== TLS supported") {
        eprintln!("SKIP: this swaks has no TLS (install libnet-ssleay-perl): {support}");
        return;
    }
    let pki = Pki::new();
    let relay = start_auth_relay(&pki);
    let swaks = |mechanism: &str, password: &str| {
        let out = Command::new("swaks")
            .args(["--server", &format!("127.0.0.1:{}", relay.port), "--tls", "--tls-verify", "--tls-ca-path"])
            .arg(&pki.ca_path)
            .args(["--auth", mechanism, "--auth-user", "svc-mailer", "--auth-password", password])
            .args(["--from", "app@corp.test", "--to", "ops@dest.test", "--header", "Subject: swaks test"])
            .args(["--timeout", "20"])
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("--- swaks --tls --auth {mechanism} (password {password}):\n{}", key_lines(&text));
        (out.status.success(), text)
    };

    let mut ids = Vec::new();
    for mechanism in ["PLAIN", "LOGIN"] {
        let (ok, text) = swaks(mechanism, "s3cret");
        assert!(ok, "{text}");
        assert!(text.contains("=== TLS started with cipher TLSv1.3"), "STARTTLS, certificate verified: {text}");
        assert!(text.contains(&format!(" ~> AUTH {mechanism}")), "AUTH under TLS: {text}");
        assert!(text.contains("<~  235 2.7.0 Authentication successful"), "{text}");
        ids.push(queued_id(&text).unwrap_or_else(|| panic!("no 250 2.6.0 <ID>: {text}")));
    }
    let (ok, text) = swaks("LOGIN", "wrong");
    assert!(!ok, "{text}");
    assert!(text.contains("<~* 535 5.7.8 Authentication credentials invalid"), "{text}");
    assert!(queued_id(&text).is_none(), "{text}");

    let stored = spool_messages(&relay.spool());
    let mut seen: Vec<String> = stored.keys().cloned().collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids, "the queue ids swaks was given are the messages stored");
    assert!(stored.values().all(|(e, _)| e.auth_user.as_deref() == Some("svc-mailer") && e.tls));
}

#[test]
fn openssl_s_client_starttls_auth_and_data() {
    if !have("openssl") {
        eprintln!("SKIP: openssl not installed");
        return;
    }
    let pki = Pki::new();
    let relay = start_auth_relay(&pki);
    // -quiet: without it (or -ign_eof), s_client reads a line starting with Q as "quit" and R
    // as "renegotiate", and the piped QUIT would never reach the relay.
    let mut child = Command::new("timeout")
        .args(["30", "openssl", "s_client", "-connect", &format!("127.0.0.1:{}", relay.port), "-starttls", "smtp"])
        .arg("-CAfile")
        .arg(&pki.ca_path)
        .args(["-verify_return_error", "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let plain = ringrelay::smtp::auth::encode(b"\0svc-mailer\0s3cret");
    let input = format!(
        "EHLO client.test\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<app@corp.test>\r\nRCPT TO:<ops@dest.test>\r\nDATA\r\n\
         From: app@corp.test\r\nSubject: from s_client\r\n\r\nhello\r\n.\r\nQUIT\r\n"
    );
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("--- openssl s_client -starttls smtp -quiet:\n{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("depth=0 CN = relay.test") && !text.contains("verify error"), "chain verified: {text}");
    assert!(text.contains("250-AUTH PLAIN LOGIN"), "AUTH offered once under TLS: {text}");
    assert!(!text.contains("250-STARTTLS"), "{text}");
    assert!(text.contains("235 2.7.0 Authentication successful"), "{text}");
    assert!(text.contains("354 Start mail input"), "{text}");
    assert!(text.contains("221 2.0.0"), "QUIT reached the relay: {text}");
    let id = queued_id(&text).unwrap_or_else(|| panic!("no 250 2.6.0 <ID>: {text}"));
    let stored = spool_messages(&relay.spool());
    let (envelope, message) = stored.get(&id).unwrap_or_else(|| panic!("{id} not in the spool"));
    assert_eq!(envelope.auth_user.as_deref(), Some("svc-mailer"));
    assert_eq!(strip_received(message), b"From: app@corp.test\r\nSubject: from s_client\r\n\r\nhello\r\n");
}
