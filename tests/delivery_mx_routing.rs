//! MX routing through a real resolver against a DNS server on loopback: preference order with
//! failover past a dead MX, the implicit MX (A record only), null MX (RFC 7505) bouncing to the
//! sender, and NXDOMAIN. Sinks listen on 127.0.0.2 and 127.0.0.3; 127.0.0.4 is dead.

mod common;

use common::Relay;
use common::dns::{Dns, Zone};
use common::sink::{Sink, SinkOptions};

fn zone() -> Zone {
    let mut z = Zone::default();
    z.mx.insert("mx.test".into(), vec![(10, "dead.mx.test".into()), (20, "live.mx.test".into())]);
    z.a.insert("dead.mx.test".into(), vec!["127.0.0.4".parse().unwrap()]);
    z.a.insert("live.mx.test".into(), vec!["127.0.0.2".parse().unwrap()]);
    z.a.insert("nomx.test".into(), vec!["127.0.0.2".parse().unwrap()]);
    z.mx.insert("nullmx.test".into(), vec![(0, ".".into())]);
    z.mx.insert("back.test".into(), vec![(10, "bounces.back.test".into())]);
    z.a.insert("bounces.back.test".into(), vec!["127.0.0.3".parse().unwrap()]);
    z
}

fn setup() -> (Dns, Sink, Sink, Relay) {
    let dns = Dns::start(zone());
    // The same port on two addresses: MX delivery uses one port for every host.
    let (live, bounces) = common::sink::pair(SinkOptions::default(), SinkOptions::default());
    let cfg = dns.configure(common::DEFAULT_CONFIG).replace(
        "[[send_connector]]\nname = \"nowhere\"\ndomains = [\"*\"]\nsmart_hosts = [\"127.0.0.1:{sink}\"]\nretry = { first = \"1h\", max = \"1h\", expire = \"2d\" }",
        &format!("[[send_connector]]\nname = \"internet\"\ndomains = [\"*\"]\nport = {}\nconnect_timeout = \"2s\"\nretry = {{ first = \"1h\", max = \"1h\", expire = \"2d\" }}", live.addr.port()),
    );
    assert!(cfg.contains("name = \"internet\""), "config template changed");
    let relay = Relay::start(&cfg);
    (dns, live, bounces, relay)
}

#[test]
fn mx_preference_failover_and_implicit_mx() {
    let (dns, live, _bounces, relay) = setup();
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("app@example.test", &["a@mx.test"], "Subject: via mx\r\n\r\nx\r\n").code, 250);
    assert_eq!(c.send_mail("app@example.test", &["b@nomx.test"], "Subject: implicit\r\n\r\nx\r\n").code, 250);
    let got = live.wait_for(2, 30);
    let mut rcpts: Vec<&str> = got.iter().map(|m| m.rcpts[0].as_str()).collect();
    rcpts.sort();
    assert_eq!(rcpts, ["a@mx.test", "b@nomx.test"]);
    let q = dns.queries.lock().unwrap().clone();
    assert!(q.iter().any(|(n, t)| n == "dead.mx.test" && t == "A"), "preference 10 was tried first: {q:?}");
}

#[test]
fn null_mx_and_nxdomain_bounce_to_the_sender() {
    let (_dns, _live, bounces, relay) = setup();
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("sender@back.test", &["x@nullmx.test"], "Subject: to null mx\r\n\r\nx\r\n").code, 250);
    assert_eq!(c.send_mail("sender@back.test", &["y@nonexistent.test"], "Subject: to nowhere\r\n\r\nx\r\n").code, 250);
    let got = bounces.wait_for(2, 30);
    for m in &got {
        assert_eq!(m.from, "", "DSNs come from the null sender");
        assert_eq!(m.rcpts, vec!["sender@back.test"]);
        let text = String::from_utf8_lossy(&m.data);
        assert!(text.contains("multipart/report") && text.contains("report-type=delivery-status"), "{text}");
        assert!(text.contains("Action: failed"), "{text}");
    }
    let all: String = got.iter().map(|m| String::from_utf8_lossy(&m.data).into_owned()).collect();
    assert!(all.contains("Final-Recipient: rfc822; x@nullmx.test") && all.contains("5.1.10"), "{all}");
    assert!(all.contains("Final-Recipient: rfc822; y@nonexistent.test") && all.contains("5.1.2"), "{all}");
}

#[test]
fn a_domain_without_mx_and_only_an_aaaa_record_is_reached_over_ipv6() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: ::1 is not available on this machine");
        return;
    };
    drop(probe);
    let sink = Sink::start("[::1]:0", SinkOptions::default());
    let mut z = Zone::default();
    z.aaaa.insert("v6only.test".into(), vec!["::1".parse().unwrap()]);
    let dns = Dns::start(z);
    let cfg = dns
        .configure(common::DEFAULT_CONFIG)
        .replace("smart_hosts = [\"127.0.0.1:{sink}\"]", &format!("port = {}", sink.addr.port()));
    let relay = Relay::start(&cfg);
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("app@example.test", &["a@v6only.test"], "Subject: v6\r\n\r\nx\r\n").code, 250);
    let got = sink.wait_for(1, 30);
    assert_eq!(got[0].rcpts, ["a@v6only.test"]);
    let q = dns.queries.lock().unwrap().clone();
    assert!(q.iter().any(|(n, t)| n == "v6only.test" && t == "MX"), "MX first: {q:?}");
    assert!(q.iter().any(|(n, t)| n == "v6only.test" && t == "AAAA"), "then the implicit MX's AAAA: {q:?}");
}
