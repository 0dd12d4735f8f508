//! The service files in dist/: `systemd-analyze verify` accepts the unit (when the tool is
//! installed; the unit's own settings are checked either way), and the example configuration
//! passes `ringrelay check-config` once its paths point at files that exist here.

mod common;

use common::ops::ringrelay;

const UNIT: &str = include_str!("../dist/ringrelay.service");

#[test]
fn unit_has_what_the_relay_needs() {
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/ringrelay serve --config /etc/ringrelay/ringrelay.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/spool/ringrelay",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service io_uring_setup io_uring_enter io_uring_register",
        "LimitNOFILE=1048576",
        "LimitMEMLOCK=infinity",
        "Restart=on-failure",
    ] {
        assert!(UNIT.lines().any(|l| l == line), "missing {line:?}");
    }
    let stop: u64 = UNIT
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .expect("TimeoutStopSec in seconds");
    assert!(stop > 30, "TimeoutStopSec must exceed the default shutdown_grace of 30s");
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let found =
        std::process::Command::new("systemd-analyze").arg("--version").output().is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("systemd-analyze not installed: skipped");
        return;
    }
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("ringrelay.service");
    std::fs::write(&unit, UNIT.replace("/usr/local/bin/ringrelay", env!("CARGO_BIN_EXE_ringrelay"))).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Complaints about other units of this machine (missing targets in a container) are not ours.
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("ringrelay.service")).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{err}");
}

#[test]
fn example_configuration_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::pki::Pki::new(dir.path(), &["relay.example.test"]);
    let hash = common::ops::cheap_hash("example");
    let text = include_str!("../dist/ringrelay.toml")
        .replace("/var/spool/ringrelay", &dir.path().join("spool").display().to_string())
        .replace("/etc/ringrelay/cert.pem", &pki.cert_file.display().to_string())
        .replace("/etc/ringrelay/key.pem", &pki.key_file.display().to_string());
    let text = regex_free_replace_hash(&text, &hash);
    let cfg = dir.path().join("ringrelay.toml");
    std::fs::write(&cfg, text).unwrap();
    let (code, _, err) = ringrelay(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}

/// Replaces the placeholder password hash line of the example with a real one.
fn regex_free_replace_hash(text: &str, hash: &str) -> String {
    text.lines()
        .map(|l| if l.starts_with("password_hash = ") { format!("password_hash = \"{hash}\"") } else { l.to_string() })
        .collect::<Vec<_>>()
        .join("\n")
}
