//! Real SMTP clients, as a new user would try the relay: Python's smtplib and swaks. Each is
//! skipped (with a message) where it is not installed; `.ci/run` installs swaks.

mod common;

use std::process::Command;

use common::{Relay, spool_messages, strip_received};

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
