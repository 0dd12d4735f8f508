//! Configuration tests: the spec's example parses, unknown keys fail with a position, and
//! every refusal of check-config says what is wrong.

use super::*;
use std::path::Path;

fn parse(text: &str) -> Result<Loaded, ConfigError> {
    Config::from_text(text, Path::new("test.toml"))
}

fn errors(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const MINIMAL: &str = r#"
hostname = "relay.example.test"
[[receive_connector]]
name = "r"
bind = ["127.0.0.1:2526"]
remote_ip_ranges = ["192.168.1.13/32"]
relay = "any"
"#;

#[test]
fn embedded_default_is_valid_and_safe() {
    let l = embedded::load();
    let c = &l.config;
    assert_eq!(c.receive_connectors.len(), 1);
    let rc = &c.receive_connectors[0];
    assert_eq!(rc.name, "default");
    assert_eq!(rc.bind, vec!["127.0.0.1:2525".parse().unwrap()]);
    assert!(rc.remote_ip_ranges.iter().all(|n| n.addr().is_loopback()));
    assert_eq!(c.spool.dir, std::path::PathBuf::from("./ringrelay-spool"));
    assert_eq!(c.admin.listen, "127.0.0.1:9425".parse().unwrap());
    assert!(c.accepted_domains.is_empty());
    assert!(c.send_connectors[0].smart_hosts.is_empty(), "delivery by MX lookup");
}

#[test]
fn defaults_fill_in() {
    let c = parse(MINIMAL).unwrap().config;
    assert_eq!(c.limits.max_message_size, ByteSize(25 << 20));
    assert_eq!(c.limits.max_recipients, 100);
    assert_eq!(c.limits.max_command_line, 2048);
    assert_eq!(c.spool.fsync, FsyncMode::Batch);
    assert_eq!(c.cores.delivery, 1);
    assert_eq!(c.receive_connectors[0].permission_groups, vec![PermissionGroup::Anonymous]);
    assert_eq!(c.log.level, "info", "without a [log] table too");
    // The effective configuration prints and reads back the same.
    let again = Config::parse(&c.to_toml(), Path::new("printed")).unwrap();
    assert_eq!(again.to_toml(), c.to_toml());
}

#[test]
fn unknown_keys_are_errors_with_position() {
    let e = errors(&format!("{MINIMAL}\n[limits]\nmax_mesage_size = 10\n"));
    assert!(e.contains("test.toml") && e.contains("max_mesage_size") && e.contains("line 10"), "{e}");
    let e = errors(&format!("{MINIMAL}open_rely = true\n"));
    assert!(e.contains("open_rely"), "{e}");
}

#[test]
fn bad_values_say_what_was_expected() {
    let e = errors(&MINIMAL.replace("relay = \"any\"", "relay = \"any\"\nauth_lockout = \"5 weeks\""));
    assert!(e.contains("unknown unit") && e.contains("30s"), "{e}");
    let e = errors(&MINIMAL.replace("192.168.1.13/32", "192.168.1.300/32"));
    assert!(e.contains("remote_ip_ranges") || e.contains("invalid"), "{e}");
}

#[test]
fn open_relay_is_refused_with_an_explanation() {
    for range in ["0.0.0.0/0", "::/0", "10.0.0.0/7", "2001:db8::/16"] {
        let e = errors(&MINIMAL.replace("192.168.1.13/32", range));
        assert!(e.contains("receive_connector[0].remote_ip_ranges"), "{e}");
        assert!(e.contains("open relay") && e.contains("open_relay = true"), "{e}");
    }
    // Fine when narrower, when relay is "accepted", when AUTH is required, or when forced.
    parse(&MINIMAL.replace("192.168.1.13/32", "10.0.0.0/8")).unwrap();
    parse(
        &MINIMAL
            .replace("0.0.0.0/0", "x")
            .replace("relay = \"any\"", "relay = \"accepted\"")
            .replace("192.168.1.13/32", "0.0.0.0/0"),
    )
    .unwrap();
    let forced = parse(
        &MINIMAL
            .replace("192.168.1.13/32", "0.0.0.0/0")
            .replace("relay = \"any\"", "relay = \"any\"\nopen_relay = true"),
    )
    .unwrap();
    assert!(forced.warnings.iter().any(|w| w.key.ends_with("open_relay")));
}

#[test]
fn narrower_sanity_bound_is_configurable() {
    let text =
        format!("{MINIMAL}\n[policy]\nanonymous_relay_min_prefix_v4 = 16\n").replace("192.168.1.13/32", "10.0.0.0/8");
    let e = errors(&text);
    assert!(e.contains("wider than the sanity bound"), "{e}");
}

#[test]
fn users_connector_needs_tls_and_valid_hashes() {
    let text = r#"
[[users]]
name = "svc"
password_hash = "not-a-hash"
send_as = ["*@example.test"]
[[receive_connector]]
name = "auth"
bind = ["127.0.0.1:2587"]
remote_ip_ranges = ["0.0.0.0/0"]
permission_groups = ["users"]
relay = "any"
"#;
    let e = errors(text);
    assert!(e.contains("users[0].password_hash") && e.contains("hash-password"), "{e}");
    assert!(e.contains("receive_connector[0].tls") && e.contains("in clear"), "{e}");
    assert!(!e.contains("open relay"), "an authenticated connector is not an open relay: {e}");
}

#[test]
fn tls_file_errors_name_the_file() {
    let text = MINIMAL.replace(
        "relay = \"any\"",
        "relay = \"any\"\ntls = { cert = \"/nonexistent/cert.pem\", key = \"/nonexistent/key.pem\" }",
    );
    let e = errors(&text);
    assert!(e.contains("/nonexistent/cert.pem"), "{e}");
}

#[test]
fn proxy_protocol_without_trusted_proxies_warns() {
    let l = parse(&MINIMAL.replace("relay = \"any\"", "relay = \"any\"\nproxy_protocol = true")).unwrap();
    assert!(l.warnings.iter().any(|w| w.key == "receive_connector[0].trusted_proxies"), "{:?}", l.warnings);
}

#[test]
fn shared_binds_must_agree_and_not_duplicate_ranges() {
    let text = format!(
        "{MINIMAL}\n[[receive_connector]]\nname = \"s\"\nbind = [\"127.0.0.1:2526\"]\nremote_ip_ranges = [\"192.168.1.13/32\"]\n"
    );
    assert!(errors(&text).contains("also a range of connector `r`"));
    let text = format!(
        "{MINIMAL}\n[[receive_connector]]\nname = \"s\"\nbind = [\"127.0.0.1:2526\"]\nremote_ip_ranges = [\"192.168.0.0/16\"]\nproxy_protocol = true\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
    );
    assert!(errors(&text).contains("differ in proxy_protocol"));
}

#[test]
fn send_connector_checks() {
    let base = format!("{MINIMAL}\n[[send_connector]]\nname = \"s\"\ndomains = [\"*\"]\n");
    assert!(
        errors(&format!("{base}retry = {{ first = \"2h\", max = \"1h\", expire = \"2d\" }}\n"))
            .contains("first <= max")
    );
    assert!(
        errors(&format!(
            "{base}smart_hosts = [\"10.0.0.5:25\"]\ntls = \"off\"\nauth = {{ user = \"u\", password = \"p\" }}\n"
        ))
        .contains("in clear")
    );
    assert!(
        errors(&format!(
            "{base}smart_hosts = [\"10.0.0.5:25\"]\nauth = {{ user = \"u\", password_file = \"/nonexistent/pw\" }}\n"
        ))
        .contains("/nonexistent/pw")
    );
}

#[test]
fn log_level_defaults_to_info_without_a_log_table() {
    let loaded = super::embedded::load();
    assert_eq!(loaded.config.log.level, "info");
}

#[test]
fn smtp_cores_zero_leaves_the_delivery_cores_their_cpus() {
    let mut c = parse(MINIMAL).unwrap().config;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    c.cores.smtp = 0;
    c.cores.delivery = 1;
    assert_eq!(c.smtp_cores(), (cpus - 1).max(1));
    c.cores.delivery = cpus + 5;
    assert_eq!(c.smtp_cores(), 1, "at least one");
    c.cores.smtp = 3;
    assert_eq!(c.smtp_cores(), 3, "an explicit figure is kept");
}

#[test]
fn pin_takes_true_false_or_auto() {
    for (text, want) in [("true", Pin::Yes), ("false", Pin::No), ("\"auto\"", Pin::Auto)] {
        let c = parse(&format!("{MINIMAL}\n[cores]\npin = {text}\n")).unwrap().config;
        assert_eq!(c.cores.pin, want);
        assert!(c.to_toml().contains(&format!("pin = {text}")), "{}", c.to_toml());
    }
    assert!(errors(&format!("{MINIMAL}\n[cores]\npin = \"sometimes\"\n")).contains("expected true, false or \"auto\""));
    assert_eq!(parse(MINIMAL).unwrap().config.cores.pin, Pin::Auto);
}

#[test]
fn accepted_domains_star_is_refused_and_public_suffix_wildcards_warn() {
    let e = errors(&format!("accepted_domains = [\"corp.test\", \"*\"]\n{MINIMAL}"));
    assert!(e.contains("accepted_domains[1]: `*` accepts every domain"), "{e}");
    assert!(e.contains("open relay") && e.contains("relay = \"any\""), "{e}");
    for (suffix, warned) in
        [("com", true), ("co.uk", true), ("com.au", true), ("example.test", false), ("corp.co.uk", false)]
    {
        let l = parse(&format!("accepted_domains = [\"*.{suffix}\"]\n{MINIMAL}")).unwrap();
        let w = l.warnings.iter().find(|w| w.key == "accepted_domains[0]");
        assert_eq!(w.is_some(), warned, "*.{suffix}: {:?}", l.warnings);
        if let Some(w) = w {
            assert!(w.message.contains(&format!("public suffix `{suffix}`")), "{w:?}");
        }
    }
}

#[test]
fn require_tls_without_a_certificate_is_refused() {
    let e = errors(&MINIMAL.replace("relay = \"any\"", "relay = \"any\"\nrequire_tls = true"));
    assert!(e.contains("receive_connector[0].require_tls: is true but the connector has no tls"), "{e}");
    parse(&MINIMAL.replace("relay = \"any\"", "relay = \"any\"\nrequire_tls = false")).unwrap();
}
