//! A smart host on 587 with STARTTLS and AUTH, as a provider relay (Microsoft 365 style): the
//! relay verifies the smart host's certificate against `tls_ca_file`, authenticates with the
//! password from `password_file` only under TLS, and delivers. With a certificate it cannot
//! verify, it does not deliver (and does not fall back to plaintext).

mod common;

use common::Relay;
use common::dns::{Dns, Zone};
use common::pki::Pki;
use common::sink::{Sink, SinkOptions};

fn setup(trust_ca: bool) -> (tempfile::TempDir, Dns, Sink, Relay) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), &["smarthost.test"]);
    let sink = Sink::start(
        "127.0.0.1:0",
        SinkOptions {
            tls: Some(pki.server_config()),
            auth: Some(("relay@example.test".into(), "s3cret pass".into())),
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
    let cfg = common::DEFAULT_CONFIG
        .replace("nameservers = [\"127.0.0.1:{nodns}\"]", &format!("nameservers = [\"127.0.0.1:{}\"]", dns.port))
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
fn starttls_and_auth_to_a_verified_smart_host() {
    let (_dir, _dns, sink, relay) = setup(true);
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
}

#[test]
fn unverifiable_smart_host_certificate_is_not_used() {
    let (_dir, _dns, sink, relay) = setup(false);
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("app@example.test", &["someone@customer.test"], "Subject: x\r\n\r\nx\r\n").code, 250);
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(sink.count(), 0, "no delivery to a smart host whose certificate does not verify");
    assert!(!common::spool_messages(&relay.spool()).is_empty(), "the message stays queued for a retry");
}
