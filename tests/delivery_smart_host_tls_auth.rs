//! A smart host on 587 with STARTTLS and AUTH, as a provider relay (Microsoft 365 style): the
//! relay verifies the smart host's certificate against `tls_ca_file`, authenticates (PLAIN, or
//! LOGIN where that is all the server offers) with the password from `password_file` only under
//! TLS, and delivers. With a certificate it cannot verify, it does not deliver, and it never
//! falls back to plaintext, not even under `tls = "opportunistic"`: the mail is deferred with
//! the handshake's error. MX hosts under `opportunistic` are different (RFC 7435): any
//! certificate will do.

mod common;

use common::Relay;
use common::dns::{Dns, Zone};
use common::ops;
use common::pki::Pki;
use common::sink::{Sink, SinkOptions};

fn setup(trust_ca: bool, mechanisms: Option<&'static str>) -> (tempfile::TempDir, Dns, Sink, Relay) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &["smarthost.test"]);
    let sink = Sink::start(
        "127.0.0.1:0",
        SinkOptions {
            tls: Some(pki.server_config()),
            auth: Some(("relay@example.test".into(), "s3cret pass".into())),
            auth_mechanisms: mechanisms,
            ..Default::default()
        },
    );
    let mut zone = Zone::default();
    zone.a.insert("smarthost.test".into(), vec!["127.0.0.1".parse().unwrap()]);
    let dns = Dns::start(zone);
    let pass = dir.path().join("smarthost.pass");
    std::fs::write(&pass, "s3cret pass\n").unwrap();
    let other_dir = dir.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other = Pki::new(&other_dir, &["other.test"]);
    let ca = if trust_ca { pki.ca_file.display().to_string() } else { other.ca_file.display().to_string() };
    let cfg = dns.configure(common::DEFAULT_CONFIG)
        .replace(
            "smart_hosts = [\"127.0.0.1:{sink}\"]",
            &format!(
                "smart_hosts = [\"smarthost.test:{}\"]\ntls = \"required\"\ntls_ca_file = \"{ca}\"\nauth = {{ user = \"relay@example.test\", password_file = \"{}\" }}",
                sink.addr.port(),
                pass.display()
            ),
        );
    let relay = Relay::start(&cfg);
    (dir, dns, sink, relay)
}

#[test]
fn starttls_and_auth_plain_to_a_verified_smart_host() {
    let (_dir, _dns, sink, relay) = setup(true, None);
    let mut c = relay.client();
    c.hello();
    assert_eq!(
        c.send_mail("app@example.test", &["someone@customer.test"], "Subject: via smart host\r\n\r\nx\r\n").code,
        250
    );
    let got = sink.wait_for(1, 30);
    assert!(got[0].tls, "delivered under TLS");
    assert_eq!(got[0].auth.as_deref(), Some("relay@example.test"));
    assert_eq!(got[0].rcpts, vec!["someone@customer.test"]);
    assert_eq!(sink.state.lock().unwrap().auth_mechanisms, ["PLAIN"], "PLAIN when offered");
}

#[test]
fn auth_login_when_that_is_all_the_smart_host_offers() {
    let (_dir, _dns, sink, relay) = setup(true, Some("LOGIN"));
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("app@example.test", &["someone@customer.test"], "Subject: login\r\n\r\nx\r\n").code, 250);
    let got = sink.wait_for(1, 30);
    assert!(got[0].tls);
    assert_eq!(got[0].auth.as_deref(), Some("relay@example.test"));
    assert_eq!(sink.state.lock().unwrap().auth_mechanisms, ["LOGIN"]);
}

#[test]
fn unverifiable_smart_host_certificate_is_not_used() {
    let (_dir, _dns, sink, relay) = setup(false, None);
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("app@example.test", &["someone@customer.test"], "Subject: x\r\n\r\nx\r\n").code, 250);
    ops::track_until(&relay, &["--event", "DEFER"], 30, |e| !e.is_empty());
    assert_eq!(sink.count(), 0, "no delivery to a smart host whose certificate does not verify");
    assert!(!common::spool_messages(&relay.spool()).is_empty(), "the message stays queued for a retry");
}

/// A sink presenting a certificate from a CA the relay does not know.
fn untrusted_sink(dir: &std::path::Path) -> Sink {
    let pki = Pki::new(dir, &["mx.customer.test", "smarthost.test"]);
    Sink::start("127.0.0.1:0", SinkOptions { tls: Some(pki.server_config()), ..Default::default() })
}

#[test]
fn opportunistic_smart_host_with_an_unknown_ca_is_deferred_never_sent_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let sink = untrusted_sink(dir.path());
    let cfg = common::DEFAULT_CONFIG.replace(
        "smart_hosts = [\"127.0.0.1:{sink}\"]",
        &format!("smart_hosts = [\"127.0.0.1:{}\"]\ntls = \"opportunistic\"", sink.addr.port()),
    );
    let relay = Relay::start(&cfg);
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("app@example.test", &["someone@customer.test"], "Subject: x\r\n\r\nx\r\n").code, 250);
    let defer = ops::track_until(&relay, &["--event", "DEFER"], 30, |e| !e.is_empty());
    let reply = defer[0]["reply"].as_str().unwrap();
    assert!(reply.starts_with("451 4.7.5 TLS handshake with smart host 127.0.0.1 failed"), "{reply}");
    assert!(reply.contains("not sent without TLS"), "{reply}");
    assert!(sink.connections() >= 1, "the smart host was tried");
    assert_eq!(sink.count(), 0, "nothing delivered, in plaintext or otherwise");
    assert!(relay.log_text().contains("never sent without TLS"), "the log says why: {}", relay.log_text());
    assert_eq!(common::spool_messages(&relay.spool()).len(), 1, "still queued for a retry");
}

#[test]
fn opportunistic_mx_delivery_takes_an_untrusted_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let sink = untrusted_sink(dir.path());
    let mut zone = Zone::default();
    zone.mx.insert("customer.test".into(), vec![(10, "mx.customer.test".into())]);
    zone.a.insert("mx.customer.test".into(), vec!["127.0.0.1".parse().unwrap()]);
    let dns = Dns::start(zone);
    let cfg = dns.configure(common::DEFAULT_CONFIG).replace(
        "smart_hosts = [\"127.0.0.1:{sink}\"]",
        &format!("port = {}\ntls = \"opportunistic\"", sink.addr.port()),
    );
    let relay = Relay::start(&cfg);
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("app@example.test", &["someone@customer.test"], "Subject: mx\r\n\r\nx\r\n").code, 250);
    let got = sink.wait_for(1, 30);
    assert!(got[0].tls, "delivered over TLS with a certificate nobody vouches for");
    assert_eq!(got[0].rcpts, ["someone@customer.test"]);
}
