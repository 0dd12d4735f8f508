//! `ringrelay check-config` refuses every configuration that could make ringrelay an open
//! relay or leak credentials, and each refusal names the file, the key, why, and the fix.
//! Risky-but-allowed settings pass with a warning that says the same.

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
