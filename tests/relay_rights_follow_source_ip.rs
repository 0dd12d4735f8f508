//! Relay rights follow the client's source address: the same RCPT to an external domain is
//! relayed from 127.0.0.1 (a trusted relay = "any" connector) and refused with `550 5.7.54`
//! from 127.0.0.2 and 127.0.0.3, whose connectors only take mail for accepted domains (exact,
//! or `*.` for every subdomain); mail to an accepted domain works only where some connector
//! allows that source, and a source no connector on that port allows gets `554 5.7.1` instead
//! of the greeting.

mod common;
mod tls_support;

use std::net::{IpAddr, SocketAddr};

use common::{Relay, spool_messages};
use tls_support::{SmtpClient, free_port_on};

const CONFIG: &str = r#"
hostname = "relay.test"
accepted_domains = ["corp.test", "*.branch.test"]
[spool]
dir = "{spool}"
[admin]
listen = "127.0.0.1:{admin}"
[cores]
smtp = 1
[dns]
nameservers = ["127.0.0.1:{nodns}"]
[[receive_connector]]
name = "trusted-app"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.1/32"]
relay = "any"
[[receive_connector]]
name = "internal-only"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.2/32"]
relay = "accepted"
[[receive_connector]]
name = "lab"
bind = ["127.0.0.1:{port2}"]
remote_ip_ranges = ["127.0.0.3/32"]
relay = "accepted"
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn relay_rights_follow_the_source_address() {
    let port2 = free_port_on(ip("127.0.0.1"));
    let relay = Relay::start(&CONFIG.replace("{port2}", &port2.to_string()));
    let main: SocketAddr = SocketAddr::new(ip("127.0.0.1"), relay.port);
    let lab: SocketAddr = SocketAddr::new(ip("127.0.0.1"), port2);
    let body = "Subject: rights\r\n\r\nhello\r\n";

    // 127.0.0.1: trusted, relays anywhere.
    let mut c = SmtpClient::connect(main, Some(ip("127.0.0.1")));
    c.hello();
    let r = c.send_mail("app@corp.test", &["someone@external.test"], body);
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.send_mail("app@corp.test", &["ops@corp.test"], body);
    assert_eq!(r.code, 250, "{r:?}");

    // 127.0.0.2 on the same port: the accepted-only connector.
    let mut c = SmtpClient::connect(main, Some(ip("127.0.0.2")));
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<dev@corp.test>").code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<someone@external.test>").line(),
        "550 5.7.54 Unable to relay recipient in non-accepted domain"
    );
    assert_eq!(c.cmd("RCPT TO:<ops@corp.test>").code, 250, "accepted domains are fine");
    assert_eq!(c.cmd("RCPT TO:<x@sub.corp.test>").code, 550, "exact match: subdomains are not accepted");
    c.cmd("RSET");
    let r = c.send_mail("dev@corp.test", &["ops@corp.test"], body);
    assert_eq!(r.code, 250, "{r:?}");
    // `*.branch.test`: every subdomain of branch.test, at any depth, and nothing else.
    assert_eq!(c.cmd("MAIL FROM:<dev@corp.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<ops@paris.branch.test>").code, 250, "a subdomain");
    assert_eq!(c.cmd("RCPT TO:<ops@lab.Lyon.BRANCH.test>").code, 250, "any depth, any case");
    let denied = "550 5.7.54 Unable to relay recipient in non-accepted domain";
    assert_eq!(c.cmd("RCPT TO:<ops@branch.test>").line(), denied, "not the domain itself");
    assert_eq!(c.cmd("RCPT TO:<ops@evilbranch.test>").line(), denied, "not a look-alike");
    assert_eq!(c.cmd("RCPT TO:<ops@paris.branch.test.evil.test>").line(), denied, "not a suffix trick");
    c.cmd("RSET");
    let r = c.send_mail("dev@corp.test", &["ops@paris.branch.test"], body);
    assert_eq!(r.code, 250, "{r:?}");

    // 127.0.0.3 is allowed only on the lab port.
    let mut c = SmtpClient::connect(main, Some(ip("127.0.0.3")));
    let r = c.reply();
    assert_eq!(r.code, 554, "{r:?}");
    assert!(r.text().starts_with("5.7.1 "), "{r:?}");
    assert!(c.is_closed());
    let mut c = SmtpClient::connect(lab, Some(ip("127.0.0.3")));
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<lab@corp.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<someone@external.test>").code, 550);
    assert_eq!(c.cmd("RCPT TO:<ops@corp.test>").code, 250);
    c.cmd("RSET");
    // ...and 127.0.0.2 is not allowed on the lab port, not even for accepted domains.
    let mut c = SmtpClient::connect(lab, Some(ip("127.0.0.2")));
    assert_eq!(c.reply().code, 554);
    assert!(c.is_closed());

    // What was stored: two messages from .1 (one external), two from .2; nothing else.
    let stored = spool_messages(&relay.spool());
    let mut by_connector: Vec<(String, String, Vec<String>)> = stored
        .values()
        .map(|(e, _)| {
            (e.connector.clone(), e.client_ip.to_string(), e.recipients.iter().map(|r| r.address.clone()).collect())
        })
        .collect();
    by_connector.sort();
    assert_eq!(
        by_connector,
        vec![
            ("internal-only".into(), "127.0.0.2".into(), vec!["ops@corp.test".into()]),
            ("internal-only".into(), "127.0.0.2".into(), vec!["ops@paris.branch.test".into()]),
            ("trusted-app".into(), "127.0.0.1".into(), vec!["ops@corp.test".into()]),
            ("trusted-app".into(), "127.0.0.1".into(), vec!["someone@external.test".into()]),
        ]
    );
}
