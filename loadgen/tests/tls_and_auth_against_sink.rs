//! TLS and AUTH paths against `ringload sink`, with a CA and a leaf certificate made at test
//! time (distinct CommonNames: crates.md pitfall P6): STARTTLS with a verified chain and AUTH
//! PLAIN and LOGIN; a wrong password, an unknown CA, a missing AUTH and a missing STARTTLS are
//! each counted as the failure they are; implicit TLS with a self-signed sink certificate.

mod common;

use std::path::Path;

use common::{Sink, count, errors, phase_us, ringload, run_ok};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};

const NAME: &str = "mx.ringload.test";

/// Writes ca.pem, chain.pem (leaf then CA) and key.pem into `dir`.
fn make_pki(dir: &Path) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(DnType::CommonName, "ringload test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params = CertificateParams::new(vec![NAME.to_string(), "localhost".to_string()]).unwrap();
    leaf_params.distinguished_name.push(DnType::CommonName, NAME);
    let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("chain.pem"), format!("{}{}", leaf.pem(), ca.pem())).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
}

#[test]
fn starttls_with_a_verified_chain_and_auth() {
    let dir = tempfile::tempdir().unwrap();
    make_pki(dir.path());
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let sink = Sink::start(&["--tls-cert", &p("chain.pem"), "--tls-key", &p("key.pem"), "--auth", "loader:s3cret"]);
    let target = sink.target();
    let ca = p("ca.pem");
    let tls = ["--starttls", "--ca", &ca, "--tls-name", NAME];

    // STARTTLS + AUTH PLAIN, a connection per message.
    let mut args = vec!["--target", &target, "--concurrency", "4", "--messages", "40", "--duration", "60s"];
    args.extend(tls);
    args.extend(["--auth", "loader:s3cret"]);
    let plain = run_ok(&args);
    assert_eq!(count(&plain, "ok"), 40);
    assert_eq!(phase_us(&plain, "starttls", "count"), 40);
    assert_eq!(phase_us(&plain, "auth", "count"), 40);
    // EHLO twice per session: before and after STARTTLS.
    assert_eq!(phase_us(&plain, "ehlo", "count"), 80);

    // STARTTLS + AUTH LOGIN, 20 messages per connection.
    let mut args = vec!["--target", &target, "--concurrency", "2", "--messages", "40", "--duration", "60s"];
    args.extend(tls);
    args.extend(["--auth", "loader:s3cret", "--auth-mech", "login", "--per-connection", "20"]);
    let login = run_ok(&args);
    assert_eq!(count(&login, "ok"), 40);
    let login_connections = count(&login, "connections");
    assert!((2..=4).contains(&login_connections), "{login_connections} connections");

    // A wrong password: every session fails at AUTH with 535 5.7.8; the run says so in its
    // exit status (2: nothing got through).
    let mut args = vec!["run", "--quiet", "--no-pin", "--target", &target, "--concurrency", "2", "--messages", "6"];
    args.extend(["--duration", "60s", "--auth", "loader:wrong"]);
    args.extend(tls);
    let out = ringload(&args, std::time::Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let bad = out.json.unwrap();
    assert_eq!(errors(&bad, "auth", "535 5.7.8"), 6);

    // No AUTH where the sink requires it: MAIL is refused.
    let mut args = vec!["run", "--quiet", "--no-pin", "--target", &target, "--concurrency", "2", "--messages", "4"];
    args.extend(["--duration", "60s"]);
    args.extend(tls);
    let out = ringload(&args, std::time::Duration::from_secs(60));
    assert_eq!(errors(&out.json.unwrap(), "mail", "530 5.7.57"), 4);

    // A certificate from a CA we do not trust: the handshake fails.
    let args = ["run", "--quiet", "--no-pin", "--target", &target, "--concurrency", "1", "--messages", "2"];
    let mut args = args.to_vec();
    args.extend(["--duration", "60s", "--starttls", "--tls-name", NAME, "--auth", "loader:s3cret"]);
    let out = ringload(&args, std::time::Duration::from_secs(60));
    assert_eq!(errors(&out.json.unwrap(), "starttls", "TLS handshake failed"), 2);

    let fin = sink.stop();
    assert_eq!(fin["messages"], 80);
    assert_eq!(fin["auth_ok"].as_u64(), Some(40 + login_connections));
    assert_eq!(fin["auth_failed"], 6);
    assert_eq!(fin["tls"].as_u64(), Some(40 + login_connections + 6 + 4));
    assert_eq!(fin["tls_failed"], 2);
}

#[test]
fn implicit_tls_with_a_self_signed_sink() {
    let sink = Sink::start(&["--implicit-tls", "--tls-self-signed"]);
    let run = run_ok(&[
        "--target",
        &sink.target(),
        "--implicit-tls",
        "--tls-insecure",
        "--concurrency",
        "2",
        "--messages",
        "20",
        "--duration",
        "60s",
        "--per-connection",
        "5",
    ]);
    assert_eq!(count(&run, "ok"), 20);
    // 5 messages per connection: 4 connections, or a few more when a slot opens a new one
    // for the last messages while another connection still had room. One handshake each.
    let handshakes = phase_us(&run, "starttls", "count");
    assert!((4..=6).contains(&handshakes), "{handshakes} handshakes");
    assert_eq!(count(&run, "connections"), handshakes);
    let fin = sink.stop();
    assert_eq!(fin["messages"], 20);
    assert_eq!(fin["tls"].as_u64(), Some(handshakes));
}

#[test]
fn starttls_required_but_not_offered() {
    let sink = Sink::start(&[]);
    let out = ringload(
        &[
            "run",
            "--quiet",
            "--no-pin",
            "--target",
            &sink.target(),
            "--starttls",
            "--tls-insecure",
            "--messages",
            "3",
            "--concurrency",
            "1",
        ],
        std::time::Duration::from_secs(60),
    );
    let run = out.json.unwrap();
    assert_eq!(errors(&run, "starttls", "not offered by server"), 3);
    assert_eq!(sink.stop()["messages"], 0);
}
