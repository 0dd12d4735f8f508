//! RFC 6152 3: an 8-bit message must not go to a server that does not offer 8BITMIME (convert
//! it or do not send it; ringrelay does not convert). A message declared `BODY=8BITMIME` with
//! 8-bit content is taken to another host of the destination that offers 8BITMIME, and when no
//! host is left it bounces with `554 5.6.3 Conversion required but not supported`. Declared
//! 8BITMIME but all 7-bit, it goes as is.

mod common;

use std::time::Duration;

use common::Relay;
use common::sink::{Received, Sink, SinkOptions};

fn relay_to(smart_hosts: &[&Sink]) -> Relay {
    let hosts: Vec<String> = smart_hosts.iter().map(|s| format!("\"127.0.0.1:{}\"", s.addr.port())).collect();
    let cfg = common::DEFAULT_CONFIG
        .replace("smart_hosts = [\"127.0.0.1:{sink}\"]", &format!("smart_hosts = [{}]", hosts.join(", ")));
    assert!(cfg.contains(&hosts[0]), "config template changed");
    Relay::start(&cfg)
}

/// MAIL with BODY=8BITMIME, one recipient, `body` as the content.
fn send_8bitmime(c: &mut common::Client, to: &str, body: &str) {
    assert_eq!(c.cmd("MAIL FROM:<app@example.test> BODY=8BITMIME").code, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{to}>")).code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(&common::dot_stuff(body.as_bytes()));
    c.send(b".\r\n");
    assert_eq!(c.reply().code, 250);
}

fn has_8bit(m: &Received) -> bool {
    m.data.iter().any(|&b| b > 127)
}

#[test]
fn eight_bit_content_bounces_with_5_6_3_when_no_host_offers_8bitmime() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions { no_8bitmime: true, ..Default::default() });
    let relay = relay_to(&[&sink]);
    let mut c = relay.client();
    c.hello();
    send_8bitmime(&mut c, "eight@dest.test", "Subject: eight\r\n\r\nCaf\u{e9} cr\u{e8}me\r\n");
    send_8bitmime(&mut c, "seven@dest.test", "Subject: seven\r\n\r\nplain ASCII\r\n");
    // The 7-bit one, and the bounce of the 8-bit one (a 7-bit notice: headers only).
    let got = sink.wait_for(2, 30);
    std::thread::sleep(Duration::from_millis(300));
    let got = sink.wait_for(got.len().max(sink.count()), 1);
    assert!(got.iter().all(|m| !has_8bit(m)), "no 8-bit content reached a server without 8BITMIME");
    let seven = got.iter().find(|m| m.rcpts == ["seven@dest.test"]).expect("the 7-bit message is delivered");
    assert!(!seven.mail_params.contains("BODY="), "no parameter the server did not offer: {}", seven.mail_params);
    assert!(!got.iter().any(|m| m.rcpts == ["eight@dest.test"]), "the 8-bit message is not delivered");
    let bounce = got.iter().find(|m| m.from.is_empty()).expect("a bounce for the 8-bit message");
    assert_eq!(bounce.rcpts, ["app@example.test"]);
    let text = String::from_utf8_lossy(&bounce.data);
    assert!(text.contains("Final-Recipient: rfc822; eight@dest.test"), "{text}");
    assert!(text.contains("Status: 5.6.3"), "{text}");
    assert!(text.contains("554 5.6.3 Conversion required but not supported"), "{text}");
    assert_eq!(got.len(), 2, "nothing else: {got:#?}");
}

#[test]
fn eight_bit_content_goes_to_the_next_smart_host_that_offers_8bitmime() {
    let without = Sink::start("127.0.0.1:0", SinkOptions { no_8bitmime: true, ..Default::default() });
    let with = Sink::start("127.0.0.1:0", SinkOptions::default());
    let relay = relay_to(&[&without, &with]);
    let mut c = relay.client();
    c.hello();
    let body = "Subject: eight\r\n\r\nCaf\u{e9} cr\u{e8}me\r\n";
    send_8bitmime(&mut c, "eight@dest.test", body);
    let got = with.wait_for(1, 30);
    assert_eq!(got[0].rcpts, ["eight@dest.test"]);
    assert!(got[0].mail_params.contains("BODY=8BITMIME"), "{}", got[0].mail_params);
    assert!(
        common::strip_received(&got[0].data).ends_with("Caf\u{e9} cr\u{e8}me\r\n".as_bytes()),
        "8-bit content intact"
    );
    assert_eq!(without.count(), 0, "the first smart host, without 8BITMIME, got nothing");
    assert!(without.connections() >= 1, "it was tried first");
}
