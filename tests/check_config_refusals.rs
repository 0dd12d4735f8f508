//! `ringrelay check-config` refuses every configuration that could make ringrelay an open
//! relay or leak credentials, and each refusal names the file, the key, why, and the fix.
//! Risky-but-allowed settings pass with a warning that says the same.

mod tls_support;

use std::path::Path;
use std::process::Command;

/// Runs check-config on `text`; returns (exit code, stderr, the file's path).
fn check(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringrelay")).arg("check-config").arg(&path).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned(), path.display().to_string())
}

/// Asserts a refusal whose message holds the file, `key`, and every one of `words`.
fn refused(text: &str, key: &str, words: &[&str]) {
    let (code, err, path) = check(text);
    assert_eq!(code, 1, "accepted:\n{text}\n{err}");
    let line = err.lines().find(|l| l.contains(key)).unwrap_or_else(|| panic!("no line about {key}:\n{err}"));
    assert!(line.starts_with(&format!("{path}: {key}: ")), "file, then key: {line}");
    for w in words {
        assert!(line.contains(w), "`{w}` missing from: {line}");
    }
}

/// Asserts a refusal whose line is exactly `<file>: <key>: <message>`.
fn refused_exactly(text: &str, key: &str, message: &str) {
    let (code, err, path) = check(text);
    assert_eq!(code, 1, "accepted:\n{text}\n{err}");
    let want = format!("{path}: {key}: {message}");
    assert!(err.lines().any(|l| l == want), "no line\n{want}\nin:\n{err}");
}

/// Asserts acceptance with a warning about `key` that holds `words`.
fn warned(text: &str, key: &str, words: &[&str]) {
    let (code, err, _) = check(text);
    assert_eq!(code, 0, "refused:\n{text}\n{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("warning:") && l.contains(key))
        .unwrap_or_else(|| panic!("no warning about {key}:\n{err}"));
    for w in words {
        assert!(line.contains(w), "`{w}` missing from: {line}");
    }
}

fn connector(body: &str) -> String {
    format!("hostname = \"relay.test\"\n[[receive_connector]]\nname = \"c\"\nbind = [\"127.0.0.1:2526\"]\n{body}\n")
}

#[test]
fn anonymous_relay_to_anywhere_from_everywhere_is_refused() {
    for range in ["0.0.0.0/0", "::/0"] {
        refused(
            &connector(&format!("remote_ip_ranges = [\"{range}\"]\nrelay = \"any\"")),
            "receive_connector[0].remote_ip_ranges",
            &[range, "whole Internet", "open relay", "Narrow remote_ip_ranges", "open_relay = true"],
        );
    }
    refused(
        &connector("remote_ip_ranges = [\"10.0.0.0/7\"]\nrelay = \"any\""),
        "receive_connector[0].remote_ip_ranges",
        &["10.0.0.0/7", "wider than the sanity bound", "open relay", "/8"],
    );
    // Explicitly forced: allowed, with a warning.
    warned(
        &connector("remote_ip_ranges = [\"0.0.0.0/0\"]\nrelay = \"any\"\nopen_relay = true"),
        "receive_connector[0].open_relay",
        &["0.0.0.0/0", "any domain"],
    );
    // The same range is fine where it cannot relay anywhere, or needs AUTH.
    assert_eq!(check(&connector("remote_ip_ranges = [\"0.0.0.0/0\"]\nrelay = \"accepted\"")).0, 0);
}

#[test]
fn a_wide_trusted_proxy_range_on_anonymous_relay_is_refused() {
    let base = "remote_ip_ranges = [\"192.168.1.13/32\"]\nrelay = \"any\"\nproxy_protocol = true";
    refused(
        &connector(&format!("{base}\ntrusted_proxies = [\"0.0.0.0/0\"]")),
        "receive_connector[0].trusted_proxies",
        &["0.0.0.0/0", "PROXY header", "open relay", "load balancers", "open_relay = true"],
    );
    assert_eq!(check(&connector(&format!("{base}\ntrusted_proxies = [\"10.0.0.1/32\"]"))).0, 0);
    warned(&connector(base), "receive_connector[0].trusted_proxies", &["every connection is refused"]);
}

#[test]
fn authentication_without_tls_is_refused() {
    refused(
        &format!(
            "{}[[users]]\nname = \"svc\"\npassword_hash = \"$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\"\nsend_as = [\"a@corp.test\"]\n",
            connector("remote_ip_ranges = [\"0.0.0.0/0\"]\npermission_groups = [\"users\"]\nrelay = \"any\"")
        ),
        "receive_connector[0].tls",
        &["AUTH would send passwords in clear", "tls = {"],
    );
    refused(
        &format!(
            "{}[[users]]\nname = \"svc\"\npassword_hash = \"secret\"\n",
            connector("remote_ip_ranges = [\"10.0.0.0/8\"]")
        ),
        "users[0].password_hash",
        &["not a PHC password hash", "ringrelay hash-password"],
    );
    refused(
        &connector("remote_ip_ranges = [\"10.0.0.0/8\"]\nimplicit_tls = true"),
        "receive_connector[0].implicit_tls",
        &["needs tls = {"],
    );
}

#[test]
fn ranges_and_limits_that_cannot_work_are_refused() {
    refused(
        &connector("remote_ip_ranges = [\"::ffff:192.168.1.0/120\"]"),
        "receive_connector[0].remote_ip_ranges",
        &["IPv4-mapped", "never matches", "IPv4 range"],
    );
    refused(
        &connector(
            "remote_ip_ranges = [\"10.0.0.0/8\"]\nproxy_protocol = true\ntrusted_proxies = [\"::ffff:10.0.0.1/128\"]",
        ),
        "receive_connector[0].trusted_proxies",
        &["IPv4-mapped"],
    );
    refused(
        &connector("remote_ip_ranges = [\"10.0.0.0/8\"]\nmax_connections_per_source = 0"),
        "receive_connector[0].max_connections_per_source",
        &["every connection would be refused", "remove the key"],
    );
    refused(
        &connector("remote_ip_ranges = []"),
        "receive_connector[0].remote_ip_ranges",
        &["is empty", "192.168.1.13/32"],
    );
    let users = "remote_ip_ranges = [\"10.0.0.0/8\"]\npermission_groups = [\"users\"]\n\
                 tls = { cert = \"/nonexistent/c.pem\", key = \"/nonexistent/k.pem\" }";
    refused(
        &connector(&format!("{users}\nauth_lockout = \"0s\"")),
        "receive_connector[0].auth_lockout",
        &["is 0", "never be slowed down", "\"5m\""],
    );
    refused(
        &connector(&format!("{users}\nmax_auth_failures = 0")),
        "receive_connector[0].max_auth_failures",
        &["at least 1", "lockout"],
    );
    let (code, err, path) = check(&connector("remote_ip_ranges = [\"10.0.0.0/8\"]\nmessage_rate_limit = \"0/m\""));
    assert_eq!(code, 1);
    assert!(err.contains(&path) && err.contains("message_rate_limit") && err.contains("600/m"), "{err}");
}

const ANONYMOUS_ACCEPTED_EVERYWHERE: &str = "remote_ip_ranges = [\"0.0.0.0/0\", \"::/0\"]\nrelay = \"accepted\"";

#[test]
fn accepted_domains_star_is_refused() {
    // With `*` among the accepted domains, this anonymous "accepted" connector open to the whole
    // Internet would relay to any domain: an open relay the open-relay check cannot see.
    refused_exactly(
        &format!("accepted_domains = [\"corp.test\", \"*\"]\n{}", connector(ANONYMOUS_ACCEPTED_EVERYWHERE)),
        "accepted_domains[1]",
        "`*` accepts every domain as one of ours: every connector with relay = \"accepted\" would relay to any \
         domain, and an anonymous one would be an open relay. List your own domains (e.g. [\"example.test\", \
         \"*.example.test\"]); for clients that must send anywhere, use relay = \"any\" on a connector whose \
         remote_ip_ranges hold only those clients",
    );
    // Listing the domains is fine, wildcard subdomains included.
    let (code, err, _) = check(&format!(
        "accepted_domains = [\"corp.test\", \"*.corp.test\"]\n{}",
        connector(ANONYMOUS_ACCEPTED_EVERYWHERE)
    ));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("accepted_domains"), "{err}");
}

#[test]
fn wildcards_over_a_public_suffix_warn() {
    for (domains, i, suffix) in [("\"*.com\"", 0, "com"), ("\"corp.test\", \"*.co.uk\"", 1, "co.uk")] {
        let text = format!("accepted_domains = [{domains}]\n{}", connector(ANONYMOUS_ACCEPTED_EVERYWHERE));
        let (code, err, path) = check(&text);
        assert_eq!(code, 0, "a warning, not a refusal:\n{err}");
        let key = format!("accepted_domains[{i}]");
        let want = format!(
            "warning: {path}: {key}: `*.{suffix}` accepts every domain under the public suffix `{suffix}` (other \
             people's domains), so relay = \"accepted\" connectors relay to all of them; list your own domains \
             instead (e.g. \"*.example.{suffix}\")"
        );
        assert!(err.lines().any(|l| l == want), "no line\n{want}\nin:\n{err}");
    }
}

#[test]
fn require_tls_without_tls_is_refused() {
    refused_exactly(
        &connector("remote_ip_ranges = [\"10.0.0.0/8\"]\nrelay = \"any\"\nrequire_tls = true"),
        "receive_connector[0].require_tls",
        "is true but the connector has no tls: without a certificate STARTTLS cannot be offered, and mail would be \
         taken in clear after all. Add tls = { cert = \"/etc/ringrelay/cert.pem\", key = \"/etc/ringrelay/key.pem\" }, \
         or remove require_tls",
    );
    // With a certificate it is what it says.
    let pki = tls_support::Pki::new();
    let (code, err, _) = check(&connector(&format!(
        "remote_ip_ranges = [\"10.0.0.0/8\"]\nrelay = \"any\"\nrequire_tls = true\n{}",
        pki.tls_toml()
    )));
    assert_eq!(code, 0, "{err}");
}

/// An argon2 PHC string of `alg` with cheap parameters.
fn argon2_hash(alg: argon2::Algorithm) -> String {
    use argon2::password_hash::PasswordHasher;
    let params = argon2::Params::new(8192, 1, 1, None).unwrap();
    argon2::Argon2::new(alg, argon2::Version::V0x13, params).hash_password(b"s3cret").unwrap().to_string()
}

#[test]
fn only_argon2id_password_hashes_are_accepted() {
    let pki = tls_support::Pki::new();
    let users = format!("remote_ip_ranges = [\"10.0.0.0/8\"]\npermission_groups = [\"users\"]\n{}", pki.tls_toml());
    for (alg, name) in [(argon2::Algorithm::Argon2i, "argon2i"), (argon2::Algorithm::Argon2d, "argon2d")] {
        let hash = argon2_hash(alg);
        assert!(hash.starts_with(&format!("${name}$")), "{hash}");
        refused_exactly(
            &format!(
                "{}[[users]]\nname = \"svc\"\npassword_hash = \"{hash}\"\nsend_as = [\"a@corp.test\"]\n",
                connector(&users)
            ),
            "users[0].password_hash",
            &format!(
                "algorithm `{name}` is not accepted, only argon2id (a `$argon2id$...` string; argon2i and argon2d are \
                 weaker variants); make one with `ringrelay hash-password` (it reads the password on stdin)"
            ),
        );
    }
    let hash = argon2_hash(argon2::Algorithm::Argon2id);
    let (code, err, _) = check(&format!(
        "{}[[users]]\nname = \"svc\"\npassword_hash = \"{hash}\"\nsend_as = [\"a@corp.test\"]\n",
        connector(&users)
    ));
    assert_eq!(code, 0, "{err}");
}

#[test]
fn anonymous_and_users_relay_any_from_everywhere_is_an_open_relay() {
    // AUTH is offered, but anonymous clients may relay without it: still an open relay.
    let pki = tls_support::Pki::new();
    let text = format!(
        "{}[[users]]\nname = \"svc\"\npassword_hash = \"{}\"\nsend_as = [\"a@corp.test\"]\n",
        connector(&format!(
            "remote_ip_ranges = [\"0.0.0.0/0\"]\npermission_groups = [\"anonymous\", \"users\"]\nrelay = \"any\"\n{}",
            pki.tls_toml()
        )),
        argon2_hash(argon2::Algorithm::Argon2id)
    );
    refused(
        &text,
        "receive_connector[0].remote_ip_ranges",
        &["0.0.0.0/0", "whole Internet", "open relay", "permission_groups = [\"users\"]", "open_relay = true"],
    );
    let (_, err, _) = check(&text);
    assert_eq!(err.lines().filter(|l| !l.starts_with("warning:")).count(), 1, "that is the only refusal:\n{err}");
    // Users only: not an open relay.
    let (code, err, _) = check(&text.replace("[\"anonymous\", \"users\"]", "[\"users\"]"));
    assert_eq!(code, 0, "{err}");
}

/// Writes `cert` and `key` (PEM text) to files in `dir` and returns the connector's TOML.
fn tls_files(dir: &Path, cert: &str, key: &str) -> (String, String, String) {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let (c, k) = (cert_path.display().to_string(), key_path.display().to_string());
    let toml = format!("remote_ip_ranges = [\"10.0.0.0/8\"]\ntls = {{ cert = \"{c}\", key = \"{k}\" }}");
    (connector(&toml), c, k)
}

/// A PEM block of `label` around `der`.
fn pem(label: &str, der: &[u8]) -> String {
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", ringrelay::smtp::auth::encode(der))
}

#[test]
fn certificate_and_key_errors_name_the_file_and_the_fix() {
    use rcgen::{CertificateParams, KeyPair};
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["relay.test".to_string()]).unwrap().self_signed(&key).unwrap();
    let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tls = "receive_connector[0].tls";

    // The good pair passes: the cases below fail for what they change.
    let (text, _, _) = tls_files(d, &cert_pem, &key_pem);
    assert_eq!(check(&text).0, 0, "{}", check(&text).1);

    // Missing files.
    let (text, c, _) = tls_files(d, &cert_pem, &key_pem);
    let text_missing_cert = text.replace(&c, &format!("{c}.missing"));
    refused(
        &text_missing_cert,
        tls,
        &[&format!("cannot read certificate file {c}.missing"), "No such file", "check the path"],
    );
    let (text, _, k) = tls_files(d, &cert_pem, &key_pem);
    refused(
        &text.replace(&k, &format!("{k}.missing")),
        tls,
        &[&format!("cannot read key file {k}.missing"), "check the path"],
    );

    // Unreadable (a directory: root reads any file, so permissions would not show it).
    let (text, c, _) = tls_files(d, &cert_pem, &key_pem);
    let sub = d.join("a-directory");
    std::fs::create_dir_all(&sub).unwrap();
    refused(
        &text.replace(&c, &sub.display().to_string()),
        tls,
        &[&format!("cannot read certificate file {}", sub.display()), "may read it"],
    );

    // Bad PEM: not base64 inside the markers.
    let (text, c, _) =
        tls_files(d, "-----BEGIN CERTIFICATE-----\n@@@@ not base64 @@@@\n-----END CERTIFICATE-----\n", &key_pem);
    refused(&text, tls, &[&format!("{c} is not valid PEM"), "-----BEGIN CERTIFICATE-----", "leaf first", "replace it"]);

    // No certificate: cert and key swapped.
    let (text, c, _) = tls_files(d, &key_pem, &cert_pem);
    refused(&text, tls, &[&format!("{c} holds no certificate"), "are cert and key swapped?", "point tls.cert at"]);

    // A CERTIFICATE block that is not a certificate.
    let (text, c, _) = tls_files(d, &pem("CERTIFICATE", b"this is not DER"), &key_pem);
    refused(&text, tls, &[&format!("the first certificate in {c} cannot be parsed"), "replace the file"]);

    // No key: the key file holds a certificate.
    let (text, _, k) = tls_files(d, &cert_pem, &cert_pem);
    refused(&text, tls, &[&format!("{k} holds no private key"), "are cert and key swapped?", "point tls.key at"]);

    // A key of a type rustls cannot sign with: X25519 (RFC 8410), a key-agreement key.
    let mut x25519 =
        vec![0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20];
    x25519.extend_from_slice(&[7u8; 32]);
    let (text, _, k) = tls_files(d, &cert_pem, &pem("PRIVATE KEY", &x25519));
    refused(
        &text,
        tls,
        &[&format!("{k} holds a private key of a type ringrelay cannot use"), "ECDSA P-256", "issued for it"],
    );

    // A key that is not the certificate's.
    let other = KeyPair::generate().unwrap();
    let (text, c, k) = tls_files(d, &cert_pem, &other.serialize_pem());
    refused(
        &text,
        tls,
        &[
            &format!("the key in {k} does not belong to the certificate in {c}"),
            "put the key the certificate was issued for",
        ],
    );
}
