//! The command line as an operator meets it: check-config verdicts and messages, the
//! embedded default, hash-password, and start-up errors that name the fix.

mod common;

use std::process::Command;

fn ringrelay(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ringrelay")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.toml");
    std::fs::write(&path, "hostname = \"r.test\"\n[[receive_connector]]\nname = \"a\"\nbind = [\"127.0.0.1:2526\"]\nremote_ip_ranges = [\"192.168.1.13/32\"]\nrelay = \"any\"\n").unwrap();
    let (code, out, err) = ringrelay(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("max_message_size = \"25MiB\""), "defaults are printed: {out}");
    assert!(out.contains("require_tls = false"), "{out}");
    assert!(err.contains("configuration is valid"));
}

#[test]
fn check_config_refuses_an_open_relay_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(&path, "[[receive_connector]]\nname = \"open\"\nbind = [\"0.0.0.0:25\"]\nremote_ip_ranges = [\"0.0.0.0/0\"]\nrelay = \"any\"\n").unwrap();
    let (code, _, err) = ringrelay(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("open.toml") && err.contains("receive_connector[0].remote_ip_ranges"), "{err}");
    assert!(err.contains("open relay") && err.contains("open_relay = true"), "{err}");
}

#[test]
fn check_config_reports_unknown_keys_with_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.toml");
    std::fs::write(&path, "hostname = \"r.test\"\n[limits]\nmax_recipient = 10\n").unwrap();
    let (code, _, err) = ringrelay(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("typo.toml") && err.contains("line 3") && err.contains("max_recipient"), "{err}");
}

#[test]
fn embedded_default_checks_clean() {
    let (code, out, err) = ringrelay(&["check-config", "--embedded"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("127.0.0.1:2525") && out.contains("127.0.0.0/8"), "{out}");
}

#[test]
fn hash_password_reads_stdin_and_prints_a_verifiable_hash() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .arg("hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"correct horse\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(!hash.contains("correct horse"), "never echoes the password");
    let hash = hash.trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(ringrelay::policy::users::verify(b"correct horse", hash));
    assert!(!ringrelay::policy::users::verify(b"correct horse\n", hash), "the newline is not part of it");
}

#[test]
fn port_in_use_is_a_clear_start_up_error() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.toml");
    let text = common::DEFAULT_CONFIG
        .replace("{port}", &port.to_string())
        .replace("{admin}", &common::free_port().to_string())
        .replace("{spool}", &dir.path().join("spool").display().to_string())
        .replace("{sink}", "1")
        .replace("{nodns}", "1");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = ringrelay(&["serve", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("cannot listen on 127.0.0.1:{port}")) && err.contains("another program"), "{err}");
}
