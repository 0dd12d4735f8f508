//! The command line as an operator meets it: check-config verdicts and messages, the
//! embedded default, hash-password, start-up errors that name the fix, and the startup
//! summary: lines for people on stdout, or structured JSON events on stderr with --log-json.

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

/// The default test configuration with fsync = never and a tracking file size below the
/// minimum: two startup warnings.
fn risky_config() -> String {
    let spool = "dir = \"{spool}\"\n";
    assert!(common::DEFAULT_CONFIG.contains(spool));
    let text = common::DEFAULT_CONFIG.replace(spool, &format!("{spool}fsync = \"never\"\n"));
    // A table after the last [[send_connector]] is a top-level table again.
    format!("{text}[tracking]\nmax_file_size = \"1KiB\"\n")
}

/// Runs `serve` on `cfg` until "ringrelay ready", then SIGTERM: every line it wrote.
fn serve_until_ready_then_stop(cfg: &common::ops::ConfigFile, args: &[&str]) -> Vec<common::ops::Line> {
    let (mut child, rx) = common::ops::serve(&cfg.path, args, &[]);
    let mut lines = common::ops::lines_until(&rx, 30, |(_, l)| l.contains("ringrelay ready"));
    let status = common::ops::signal_and_wait(&mut child, libc::SIGTERM, 40);
    assert!(status.success(), "{status:?}");
    // The readers end at EOF, after the process exited.
    while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(5)) {
        lines.push(line);
    }
    lines
}

#[test]
fn log_json_makes_the_startup_summary_structured_events() {
    let cfg = common::ops::ConfigFile::new(&risky_config());
    let lines = serve_until_ready_then_stop(&cfg, &["--log-json"]);
    let stdout: Vec<&String> = lines.iter().filter(|(err, _)| !err).map(|(_, l)| l).collect();
    assert!(stdout.is_empty(), "nothing but JSON, and on the log: stdout had {stdout:?}");
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|(_, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let listen = format!("127.0.0.1:{}", cfg.port);
    let listening = events.iter().find(|e| e["fields"]["message"] == "listening").expect("a listening event");
    assert_eq!(listening["fields"]["listen"], listen.as_str(), "{listening}");
    assert_eq!(listening["fields"]["connectors"], "loopback");
    assert_eq!(listening["level"], "INFO");
    let spool = events.iter().find(|e| e["fields"]["message"] == "spool").expect("a spool event");
    assert_eq!(spool["fields"]["fsync"], "never");
    assert_eq!(spool["fields"]["dir"], cfg.dir.path().join("spool").display().to_string().as_str());
    let warn = |key: &str| {
        events
            .iter()
            .find(|e| e["fields"]["key"] == key)
            .unwrap_or_else(|| panic!("no event for {key}: {events:#?}"))
            .clone()
    };
    let fsync = warn("spool.fsync");
    assert_eq!(fsync["level"], "WARN");
    assert!(fsync["fields"]["message"].as_str().unwrap().contains("benchmarks only"), "{fsync}");
    let size = warn("tracking.max_file_size");
    assert_eq!(size["level"], "WARN");
    assert!(size["fields"]["message"].as_str().unwrap().contains("1024 bytes is below the 4096-byte minimum"));
    let ready = events.iter().position(|e| e["fields"]["message"] == "ringrelay ready").unwrap();
    let listened = events.iter().position(|e| e["fields"]["message"] == "listening").unwrap();
    assert!(listened < ready, "ready comes last");
    assert!(events.iter().any(|e| e["fields"]["message"] == "stopped"), "the shutdown is logged too");
}

#[test]
fn text_mode_prints_the_summary_and_its_warnings_on_stdout() {
    let cfg = common::ops::ConfigFile::new(&risky_config());
    let lines = serve_until_ready_then_stop(&cfg, &[]);
    let stdout: Vec<&str> = lines.iter().filter(|(err, _)| !err).map(|(_, l)| l.as_str()).collect();
    let text = stdout.join("\n");
    let listen = format!("listening on 127.0.0.1:{} (connectors: loopback) on 2 SMTP cores", cfg.port);
    assert!(stdout.contains(&listen.as_str()), "{text}");
    assert!(stdout.iter().any(|l| l.starts_with("cores: 2 SMTP, 1 delivery, ")), "{text}");
    assert!(text.contains("(fsync = \"never\")"), "{text}");
    assert!(text.contains("WARNING: spool.fsync: \"never\" acknowledges messages"), "{text}");
    assert!(text.contains("WARNING: tracking.max_file_size: 1024 bytes is below the 4096-byte minimum"), "{text}");
    assert_eq!(stdout.last(), Some(&"ringrelay ready"), "{text}");
    // The log (stderr) stays text: no JSON objects there.
    for (_, l) in lines.iter().filter(|(err, _)| *err) {
        assert!(serde_json::from_str::<serde_json::Value>(l).is_err(), "JSON in text mode: {l}");
    }
}
