//! The service files in dist/: `systemd-analyze verify` accepts the unit (when the tool is
//! installed; the unit's own settings are checked either way), the example configuration
//! passes `ringrelay check-config` once its paths point at files that exist here, and the
//! unit's `Type=notify` is honoured: with `$NOTIFY_SOCKET` set, `serve` reports READY=1 once it
//! listens, RELOADING=1 and READY=1 around a SIGHUP, and STOPPING=1 on SIGTERM.

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

/// Reads the next datagram within 30 s.
fn next_state(sock: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("a notification from the relay within 30 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The relay answers SMTP on `port` right now.
fn greets(port: u16) -> bool {
    let mut c = common::Client::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)), None);
    c.reply().code == 220
}

#[test]
fn notify_socket_gets_ready_reloading_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let cfg = common::ops::ConfigFile::new(common::DEFAULT_CONFIG);
    let path = cfg.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let (mut child, _lines) = common::ops::serve(&cfg.path, &[], &[("NOTIFY_SOCKET", path.as_os_str())]);
    assert_eq!(next_state(&sock), "READY=1");
    assert!(greets(cfg.port), "READY=1 comes once the listeners accept");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
    assert_eq!(next_state(&sock), "RELOADING=1");
    assert_eq!(next_state(&sock), "READY=1");
    assert!(greets(cfg.port), "still serving after the reload");
    let status = common::ops::signal_and_wait(&mut child, libc::SIGTERM, 40);
    assert_eq!(next_state(&sock), "STOPPING=1");
    assert!(status.success(), "{status:?}");
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    assert!(sock.recv(&mut buf).is_err(), "nothing after STOPPING=1");
}

#[test]
fn notify_socket_in_the_abstract_namespace() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let cfg = common::ops::ConfigFile::new(common::DEFAULT_CONFIG);
    let name = format!("ringrelay-test-{}-{}", std::process::id(), cfg.port);
    let sock = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let value = std::ffi::OsString::from(format!("@{name}"));
    let (mut child, _lines) = common::ops::serve(&cfg.path, &[], &[("NOTIFY_SOCKET", value.as_os_str())]);
    assert_eq!(next_state(&sock), "READY=1");
    assert!(common::ops::signal_and_wait(&mut child, libc::SIGTERM, 40).success());
    assert_eq!(next_state(&sock), "STOPPING=1");
}
