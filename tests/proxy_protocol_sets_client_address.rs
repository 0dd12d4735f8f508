//! PROXY protocol v1 and v2 on a connector behind a load balancer: from a trusted proxy
//! (127.0.0.1) the client address in the header decides everything: which connector, hence
//! relay rights, and what the envelope and `Received:` record. From an untrusted peer
//! (127.0.0.2), or without a valid header, the connection is refused with `554 5.7.1`. A v2
//! LOCAL header (a health check) uses the proxy's own address. Bytes sent in the same write
//! as the header, SMTP or a TLS ClientHello, are not lost.

mod common;
mod tls_support;

use std::net::{IpAddr, SocketAddr};

use common::{Relay, spool_messages, strip_received};
use ppp::v2::{Builder, Command, Protocol, Version};
use tls_support::{Pki, SmtpClient, tcp_connect};

const CONFIG: &str = r#"
hostname = "relay.test"
accepted_domains = ["corp.test"]
[spool]
dir = "{spool}"
[admin]
listen = "127.0.0.1:{admin}"
[cores]
smtp = 1
[dns]
nameservers = ["127.0.0.1:{nodns}"]
[[receive_connector]]
name = "lb-devices"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["192.0.2.0/24"]
relay = "any"
proxy_protocol = true
trusted_proxies = ["127.0.0.1/32"]
[[receive_connector]]
name = "lb-partners"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["198.51.100.0/24"]
relay = "accepted"
proxy_protocol = true
trusted_proxies = ["127.0.0.1/32"]
[[receive_connector]]
name = "lb-health"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.1/32"]
relay = "accepted"
proxy_protocol = true
trusted_proxies = ["127.0.0.1/32"]
[[receive_connector]]
name = "lb-smtps"
bind = ["127.0.0.1:{port2}"]
remote_ip_ranges = ["192.0.2.0/24"]
relay = "any"
proxy_protocol = true
trusted_proxies = ["127.0.0.1/32"]
implicit_tls = true
{tls}
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v1(client: &str) -> Vec<u8> {
    let family = if client.contains(':') { "TCP6" } else { "TCP4" };
    let dst = if client.contains(':') { "2001:db8::1" } else { "10.0.0.1" };
    format!("PROXY {family} {client} {dst} 51000 25\r\n").into_bytes()
}

fn v2(command: Command, client: &str) -> Vec<u8> {
    let src: SocketAddr = SocketAddr::new(ip(client), 51000);
    let dst: SocketAddr = "10.0.0.1:25".parse().unwrap();
    Builder::with_addresses(Version::Two | command, Protocol::Stream, (src, dst)).build().unwrap()
}

/// Connects from `source`, sends `header` (and `after` in the same write), returns the client.
fn via(addr: SocketAddr, source: &str, header: &[u8], after: &[u8]) -> SmtpClient {
    let mut c = SmtpClient::from_stream(tcp_connect(addr, Some(ip(source))));
    let mut first = header.to_vec();
    first.extend_from_slice(after);
    c.send(&first);
    c
}

/// (external RCPT code, accepted RCPT code) in a session that has had its greeting.
fn rights(c: &mut SmtpClient) -> (u16, u16) {
    c.ehlo();
    assert_eq!(c.cmd("MAIL FROM:<a@corp.test>").code, 250);
    let r = (c.cmd("RCPT TO:<x@external.test>").code, c.cmd("RCPT TO:<y@corp.test>").code);
    c.cmd("RSET");
    r
}

fn assert_refused(c: &mut SmtpClient, why: &str) {
    let r = c.reply();
    assert_eq!(r.code, 554, "{why}: {r:?}");
    assert!(r.text().starts_with("5.7.1 "), "{why}: {r:?}");
    assert!(c.is_closed(), "{why}: closed");
}

#[test]
fn the_header_decides_and_only_trusted_proxies_may_send_it() {
    let pki = Pki::new();
    let port2 = common::free_port();
    let relay = Relay::start(&CONFIG.replace("{tls}", &pki.tls_toml()).replace("{port2}", &port2.to_string()));
    let addr = SocketAddr::new(ip("127.0.0.1"), relay.port);

    // The same proxy, different clients in the header: different connectors.
    for header in [v1("192.0.2.9"), v2(Command::Proxy, "192.0.2.9")] {
        let mut c = via(addr, "127.0.0.1", &header, b"");
        assert_eq!(c.reply().code, 220);
        assert_eq!(rights(&mut c), (250, 250), "192.0.2.9 is a device: relays anywhere");
    }
    for header in [v1("198.51.100.7"), v2(Command::Proxy, "198.51.100.7")] {
        let mut c = via(addr, "127.0.0.1", &header, b"");
        assert_eq!(c.reply().code, 220);
        assert_eq!(rights(&mut c), (550, 250), "198.51.100.7 is a partner: accepted domains only");
    }
    for header in [v1("203.0.113.5"), v2(Command::Proxy, "203.0.113.5"), v1("2001:db8::5")] {
        let mut c = via(addr, "127.0.0.1", &header, b"");
        assert_refused(&mut c, "a client no connector allows");
    }

    // A health check (v2 LOCAL): the proxy's own address, 127.0.0.1 = lb-health.
    let mut c = via(addr, "127.0.0.1", &v2(Command::Local, "192.0.2.9"), b"");
    assert_eq!(c.reply().code, 220);
    assert_eq!(rights(&mut c), (550, 250), "LOCAL does not take the addresses in the header");

    // An untrusted peer: refused, whatever its header says.
    for header in [v1("192.0.2.9"), v2(Command::Proxy, "192.0.2.9")] {
        let mut c = via(addr, "127.0.0.2", &header, b"");
        assert_refused(&mut c, "untrusted peer");
    }
    // A trusted peer without a (valid) header.
    assert_refused(&mut via(addr, "127.0.0.1", b"EHLO lb.test\r\n", b""), "no header");
    assert_refused(&mut via(addr, "127.0.0.1", b"PROXY TCP4 192.0.2.9 nonsense\r\n", b""), "malformed v1");
    let mut bad = v2(Command::Proxy, "192.0.2.9");
    bad[12] = 0x31; // version 3
    assert_refused(&mut via(addr, "127.0.0.1", &bad, b""), "malformed v2");

    // Pipelined SMTP in the same write as the header is kept and answered in order.
    let mut c = via(
        addr,
        "127.0.0.1",
        &v2(Command::Proxy, "192.0.2.10"),
        b"EHLO dev.test\r\nMAIL FROM:<a@corp.test>\r\nRCPT TO:<x@external.test>\r\nDATA\r\n",
    );
    assert_eq!(c.reply().code, 220);
    assert_eq!(c.reply().code, 250);
    assert_eq!(c.reply().code, 250);
    assert_eq!(c.reply().code, 250, "relay right of 192.0.2.10");
    assert_eq!(c.reply().code, 354);
    c.send(b"Subject: via proxy\r\n\r\nhi\r\n.\r\n");
    let queued = c.reply();
    assert_eq!(queued.code, 250, "{queued:?}");

    // Implicit TLS behind the proxy: the ClientHello arrives in the same write as the header.
    let smtps = SocketAddr::new(ip("127.0.0.1"), port2);
    let mut c = SmtpClient::connect_tls_after(smtps, Some(ip("127.0.0.1")), &pki, &v1("192.0.2.11"));
    c.hello();
    let r = c.send_mail("a@corp.test", &["x@external.test"], "Subject: tls via proxy\r\n\r\nhi\r\n");
    assert_eq!(r.code, 250, "{r:?}");

    // What was recorded: the client from the header, in the envelope and Received.
    let stored = spool_messages(&relay.spool());
    let mut clients: Vec<(String, String)> =
        stored.values().map(|(e, _)| (e.client_ip.to_string(), e.connector.clone())).collect();
    clients.sort();
    assert_eq!(clients, vec![("192.0.2.10".into(), "lb-devices".into()), ("192.0.2.11".into(), "lb-smtps".into())]);
    let (_, msg) = &stored[&queued.queue_id_text()];
    let received = String::from_utf8_lossy(&msg[..msg.len() - strip_received(msg).len()]).into_owned();
    assert!(received.contains("([192.0.2.10])"), "{received}");
    assert!(!received.contains("127.0.0.1"), "{received}");
}
