//! Several connectors on one address:port with overlapping ranges: the connection belongs to
//! the connector whose range holds the client with the longest prefix (as Exchange picks).
//! Shown by what each source may do and by the connector recorded with each stored message;
//! the same on an IPv6 loopback listener (skipped where the machine has no ::1).

mod common;
mod tls_support;

use std::net::{IpAddr, SocketAddr};

use common::{Relay, spool_messages};
use tls_support::{SmtpClient, free_port_on, have_ipv6_loopback};

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
name = "loopback-wide"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.0/8"]
relay = "accepted"
[[receive_connector]]
name = "pair"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.2/31"]
relay = "accepted"
permission_groups = ["anonymous"]
[[receive_connector]]
name = "one-host"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.3/32"]
relay = "any"
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

const CONFIG_V6: &str = r#"
[[receive_connector]]
name = "v6-any"
bind = ["[::1]:{port6}"]
remote_ip_ranges = ["::/0"]
relay = "accepted"
[[receive_connector]]
name = "v6-loopback"
bind = ["[::1]:{port6}"]
remote_ip_ranges = ["::1/128"]
relay = "any"
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Sends one message to an external and one to an accepted domain; returns (external code,
/// accepted code).
fn try_both(addr: SocketAddr, source: IpAddr) -> (u16, u16) {
    let mut c = SmtpClient::connect(addr, Some(source));
    c.hello();
    let body = "Subject: which connector\r\n\r\nx\r\n";
    let external = c.send_mail("a@corp.test", &["x@external.test"], body).code;
    let accepted = c.send_mail("a@corp.test", &["y@corp.test"], body).code;
    (external, accepted)
}

#[test]
fn the_longest_matching_prefix_picks_the_connector() {
    let v6 = have_ipv6_loopback();
    if !v6 {
        eprintln!("SKIP (IPv6 part): no IPv6 loopback on this machine");
    }
    let port6 = if v6 { free_port_on(ip("::1")) } else { 0 };
    let text = if v6 { format!("{CONFIG}{}", CONFIG_V6.replace("{port6}", &port6.to_string())) } else { CONFIG.into() };
    let relay = Relay::start(&text);
    let addr = SocketAddr::new(ip("127.0.0.1"), relay.port);

    // /32 beats /31 beats /8.
    assert_eq!(try_both(addr, ip("127.0.0.3")), (250, 250), "127.0.0.3 is `one-host` (relay any)");
    assert_eq!(try_both(addr, ip("127.0.0.2")), (550, 250), "127.0.0.2 is `pair`");
    assert_eq!(try_both(addr, ip("127.0.0.1")), (550, 250), "127.0.0.1 is `loopback-wide`");
    assert_eq!(try_both(addr, ip("127.0.0.9")), (550, 250), "127.0.0.9 is `loopback-wide`");

    if v6 {
        let addr6 = SocketAddr::new(ip("::1"), port6);
        assert_eq!(try_both(addr6, ip("::1")), (250, 250), "::1 is `v6-loopback` (/128 beats /0)");
    }

    let mut seen: Vec<(String, String, String)> = spool_messages(&relay.spool())
        .values()
        .map(|(e, _)| (e.client_ip.to_string(), e.connector.clone(), e.recipients[0].address.clone()))
        .collect();
    seen.sort();
    let mut expected = vec![
        ("127.0.0.1".into(), "loopback-wide".into(), "y@corp.test".into()),
        ("127.0.0.2".into(), "pair".into(), "y@corp.test".into()),
        ("127.0.0.3".into(), "one-host".into(), "x@external.test".into()),
        ("127.0.0.3".into(), "one-host".into(), "y@corp.test".into()),
        ("127.0.0.9".into(), "loopback-wide".into(), "y@corp.test".into()),
    ];
    if v6 {
        expected.push(("::1".into(), "v6-loopback".into(), "x@external.test".into()));
        expected.push(("::1".into(), "v6-loopback".into(), "y@corp.test".into()));
    }
    expected.sort();
    assert_eq!(seen, expected);
}

const CONFIG_DUAL_STACK: &str = r#"
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
name = "v6-everyone"
bind = ["[::]:{port}"]
remote_ip_ranges = ["::/0"]
relay = "accepted"
[[receive_connector]]
name = "loopback"
bind = ["[::]:{port}"]
remote_ip_ranges = ["127.0.0.0/8", "::1/128"]
relay = "accepted"
[[receive_connector]]
name = "v4-device"
bind = ["[::]:{port}"]
remote_ip_ranges = ["127.0.0.2/32"]
relay = "any"
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

/// Can this machine run a dual-stack IPv6 socket that IPv4 clients reach? Some containers
/// have no IPv6 at all, or force IPV6_V6ONLY.
fn dual_stack_available() -> Result<(), String> {
    let s = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).map_err(|e| e.to_string())?;
    s.set_only_v6(false).map_err(|e| format!("IPV6_V6ONLY cannot be cleared: {e}"))?;
    s.bind(&SocketAddr::new(ip("::"), 0).into()).map_err(|e| format!("cannot bind [::]: {e}"))?;
    s.listen(1).map_err(|e| e.to_string())?;
    let port = s.local_addr().ok().and_then(|a| a.as_socket()).map(|a| a.port()).ok_or("no local port")?;
    std::net::TcpStream::connect_timeout(&SocketAddr::new(ip("127.0.0.1"), port), std::time::Duration::from_secs(5))
        .map_err(|e| format!("IPv4 cannot reach a [::] listener: {e}"))?;
    Ok(())
}

#[test]
fn ipv4_clients_of_a_dual_stack_listener_match_ipv4_ranges() {
    if let Err(why) = dual_stack_available() {
        eprintln!("SKIP: no dual-stack IPv6 socket here ({why})");
        return;
    }
    let relay = Relay::start(CONFIG_DUAL_STACK);
    // IPv4 clients reach the [::] socket as ::ffff:127.0.0.x; they must be matched as IPv4,
    // never by the ::/0 range.
    let addr = SocketAddr::new(ip("127.0.0.1"), relay.port);
    assert_eq!(try_both(addr, ip("127.0.0.2")), (250, 250), "127.0.0.2 is `v4-device` (relay any)");
    assert_eq!(try_both(addr, ip("127.0.0.3")), (550, 250), "127.0.0.3 is `loopback`");
    let v6 = have_ipv6_loopback();
    if v6 {
        let addr6 = SocketAddr::new(ip("::1"), relay.port);
        assert_eq!(try_both(addr6, ip("::1")), (550, 250), "::1 is `loopback` (/128 beats /0)");
    } else {
        eprintln!("SKIP (::1 part): no IPv6 loopback on this machine");
    }
    let mut seen: Vec<(String, String, String)> = spool_messages(&relay.spool())
        .values()
        .map(|(e, _)| (e.client_ip.to_string(), e.connector.clone(), e.recipients[0].address.clone()))
        .collect();
    seen.sort();
    let mut expected = vec![
        ("127.0.0.2".into(), "v4-device".into(), "x@external.test".into()),
        ("127.0.0.2".into(), "v4-device".into(), "y@corp.test".into()),
        ("127.0.0.3".into(), "loopback".into(), "y@corp.test".into()),
    ];
    if v6 {
        expected.push(("::1".into(), "loopback".into(), "y@corp.test".into()));
    }
    expected.sort();
    assert_eq!(seen, expected, "recorded as IPv4 addresses, on their IPv4 connectors");
}
