//! ringload against ringrelay itself on its TLS and AUTH paths (issue 6): a submission
//! connector that requires STARTTLS then AUTH, and an implicit-TLS (SMTPS) connector, both
//! with a certificate made at test time by rcgen and a user whose argon2id hash comes from
//! `ringrelay hash-password`. `ringload run` sends with AUTH PLAIN, with AUTH LOGIN, and over
//! implicit TLS: every message is accepted, nothing fails, and the STARTTLS (TLS handshake)
//! and AUTH histograms hold one sample per connection; the relay's own counters agree. A wrong
//! password fails every session at AUTH with `535 5.7.8`, counted as such by ringload.
//!
//! The ringload binary belongs to the other package of the workspace, so cargo gives this
//! crate no `CARGO_BIN_EXE_ringload`: it is found next to the ringrelay binary under test
//! (`cargo test --workspace` builds both before running any test), and refused if it is
//! missing or older than its sources, with the command that builds it.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::ops::scrape;
use common::pki::Pki;
use common::{Relay, free_port};
use serde_json::Value;

const NAME: &str = "relay.test";
const PASSWORD: &str = "pr1nter & toner";

/// target/<profile>/ringload. `cargo test --workspace` builds it (with the sources of this
/// tree); a single `cargo test --test` run uses whatever ringload was built last.
fn ringload_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_ringrelay")).with_file_name("ringload");
    assert!(
        bin.exists(),
        "{} does not exist: build it with `cargo build -p ringload` (or run `cargo test --workspace`, which builds it)",
        bin.display()
    );
    bin
}

/// `ringrelay hash-password`, the way an operator makes the hash.
fn hash_password(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

/// `ringload run --quiet --no-pin <args> --json FILE`, killed after 120 s: (exit code, result).
fn ringload_run(args: &[&str]) -> (Option<i32>, Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let mut child = Command::new(ringload_bin())
        .args(["run", "--quiet", "--no-pin", "--threads", "2", "--duration", "60s"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = common::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if common::now() > deadline {
            let _ = child.kill();
            panic!("ringload run {args:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| {
        panic!(
            "no JSON result ({e}); status {status:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (status.code(), serde_json::from_str(&text).unwrap())
}

fn count(run: &Value, name: &str) -> u64 {
    run["counts"][name].as_u64().unwrap_or_else(|| panic!("no counts.{name} in {run}"))
}

fn samples(run: &Value, phase: &str) -> u64 {
    run["phases"][phase]["count"].as_u64().unwrap_or_else(|| panic!("no phases.{phase}.count"))
}

/// A clean authenticated run: `messages` accepted, no failure, and one TLS handshake and one
/// AUTH per connection. Returns the connections used.
fn assert_clean(run: &Value, messages: u64, what: &str) -> u64 {
    assert_eq!(count(run, "ok"), messages, "{what}: {:#}", run["errors"]);
    assert_eq!(count(run, "failed"), 0, "{what}: {:#}", run["errors"]);
    assert_eq!(run["errors"], serde_json::json!([]), "{what}");
    assert_eq!(count(run, "connections_failed"), 0, "{what}");
    let connections = count(run, "connections");
    assert!(connections >= 1, "{what}");
    assert_eq!(samples(run, "starttls"), connections, "{what}: one TLS handshake per connection");
    assert_eq!(samples(run, "auth"), connections, "{what}: one AUTH per connection");
    assert_eq!(samples(run, "submission"), messages, "{what}");
    connections
}

#[test]
fn ringload_sends_through_starttls_and_implicit_tls_with_auth_plain_and_login() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &[NAME, "localhost"]);
    let smtps_port = free_port();
    let config = format!(
        r#"
hostname = "relay.test"
[spool]
dir = "{{spool}}"
[admin]
listen = "127.0.0.1:{{admin}}"
[cores]
smtp = 2
[dns]
nameservers = ["127.0.0.1:{{nodns}}"]
[[users]]
name = "svc-mailer"
password_hash = "{hash}"
send_as = ["*@ringload.test"]
[[receive_connector]]
name = "submission"
bind = ["127.0.0.1:{{port}}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = ["users"]
auth = ["plain", "login"]
require_tls = true
relay = "any"
max_auth_failures = 1000
protocol_log = true
tls = {{ cert = "{cert}", key = "{key}" }}
[[receive_connector]]
name = "smtps"
bind = ["127.0.0.1:{smtps_port}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = ["users"]
auth = ["plain", "login"]
implicit_tls = true
relay = "any"
tls = {{ cert = "{cert}", key = "{key}" }}
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{{sink}}"]
retry = {{ first = "1h", max = "1h", expire = "2d" }}
"#,
        hash = hash_password(PASSWORD),
        cert = pki.cert_file.display(),
        key = pki.key_file.display(),
    );
    let relay = Relay::start(&config);
    let submission = format!("127.0.0.1:{}", relay.port);
    let smtps = format!("127.0.0.1:{smtps_port}");
    let ca = pki.ca_file.to_str().unwrap();
    let auth = format!("svc-mailer:{PASSWORD}");
    let tls = ["--ca", ca, "--tls-name", NAME, "--auth", &auth];

    // STARTTLS, AUTH PLAIN, one message per connection.
    let mut args = vec!["--target", &submission, "--starttls", "--auth-mech", "plain"];
    args.extend(["--concurrency", "4", "--messages", "40"]);
    args.extend(tls);
    let (code, plain) = ringload_run(&args);
    assert_eq!(code, Some(0));
    assert_eq!(assert_clean(&plain, 40, "STARTTLS + PLAIN"), 40);
    assert_eq!(samples(&plain, "ehlo"), 80, "EHLO before and after STARTTLS");

    // STARTTLS, AUTH LOGIN, ten messages per connection.
    let mut args = vec!["--target", &submission, "--starttls", "--auth-mech", "login"];
    args.extend(["--concurrency", "2", "--messages", "40", "--per-connection", "10"]);
    args.extend(tls);
    let (code, login) = ringload_run(&args);
    assert_eq!(code, Some(0));
    let login_connections = assert_clean(&login, 40, "STARTTLS + LOGIN");
    assert!((4..=8).contains(&login_connections), "{login_connections} connections for 40 messages, 10 each");

    // Implicit TLS on the SMTPS connector, AUTH PLAIN, five messages per connection.
    let mut args = vec!["--target", &smtps, "--implicit-tls"];
    args.extend(["--concurrency", "2", "--messages", "20", "--per-connection", "5"]);
    args.extend(tls);
    let (code, implicit) = ringload_run(&args);
    assert_eq!(code, Some(0));
    let implicit_connections = assert_clean(&implicit, 20, "implicit TLS");
    assert_eq!(samples(&implicit, "ehlo"), implicit_connections, "one EHLO: TLS came first");
    assert!(implicit["config"]["implicit_tls"].as_bool().unwrap());

    // A wrong password: each session ends at AUTH with 535 5.7.8, and the exit status says
    // that nothing got through.
    let wrong = "svc-mailer:not the password";
    let args = ["--target", &submission, "--starttls", "--ca", ca, "--tls-name", NAME, "--auth", wrong];
    let mut args = args.to_vec();
    args.extend(["--concurrency", "2", "--messages", "4"]);
    let (code, bad) = ringload_run(&args);
    assert_eq!(code, Some(2), "{bad:#}");
    assert_eq!(count(&bad, "ok"), 0);
    assert_eq!(count(&bad, "failed"), 4);
    let errors = bad["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(
        (&errors[0]["stage"], &errors[0]["cause"], &errors[0]["count"]),
        (&"auth".into(), &"535 5.7.8".into(), &4.into())
    );

    // The relay counted the same: accepted messages and authenticated sessions per connector,
    // and the four refusals.
    let m = scrape(&relay);
    assert_eq!(m.get("ringrelay_messages_accepted_total{connector=\"submission\"}"), 80.0);
    assert_eq!(m.get("ringrelay_messages_accepted_total{connector=\"smtps\"}"), 20.0);
    let sub_sessions = (count(&plain, "connections") + login_connections) as f64;
    assert_eq!(m.get("ringrelay_sessions_authenticated_total{connector=\"submission\"}"), sub_sessions);
    assert_eq!(m.get("ringrelay_sessions_authenticated_total{connector=\"smtps\"}"), implicit_connections as f64);
    assert_eq!(m.get("ringrelay_smtp_rejects_total{connector=\"submission\",code=\"535\",enhanced=\"5.7.8\"}"), 4.0);

    // The submission connector's protocol log shows which mechanism each session used (the
    // secrets redacted): PLAIN in the first run and the wrong-password one, LOGIN in the second.
    let deadline = common::now() + Duration::from_secs(20);
    let (plain_sessions, login_sessions, transcript) = loop {
        let mut text = String::new();
        for f in ringrelay::obs::writer::log_files(&relay.spool(), ringrelay::obs::writer::LogKind::Protocol)
            .unwrap_or_default()
        {
            text.push_str(&std::fs::read_to_string(f).unwrap());
        }
        let plain = text.lines().filter(|l| l.contains("< AUTH PLAIN")).count() as u64;
        let login = text.lines().filter(|l| l.contains("< AUTH LOGIN")).count() as u64;
        if (plain, login) == (44, login_connections) || common::now() > deadline {
            break (plain, login, text);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((plain_sessions, login_sessions), (44, login_connections), "AUTH lines in the protocol log");
    assert!(!transcript.contains(PASSWORD) && !transcript.contains("not the password"), "secrets are redacted");
}
