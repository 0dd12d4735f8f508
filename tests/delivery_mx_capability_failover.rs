//! A host that cannot take a message for a reason of its own (no SMTPUTF8 for a message that
//! needs it, a SIZE smaller than the message) is not the end: the other MX hosts are tried,
//! and only when none is left does the message bounce. The preferred MX (127.0.0.2) lacks
//! SMTPUTF8 and takes at most 2000 octets; the backup (127.0.0.3) takes anything.

mod common;

use common::Relay;
use common::dns::{Dns, Zone};
use common::sink::{Sink, SinkOptions};

fn setup() -> (Dns, Sink, Sink, Relay) {
    let mut z = Zone::default();
    for d in ["utf8.test", "big.test"] {
        z.mx.insert(d.into(), vec![(10, "old.mx.test".into()), (20, "new.mx.test".into())]);
    }
    z.mx.insert("onlyold.test".into(), vec![(10, "old.mx.test".into())]);
    z.mx.insert("back.test".into(), vec![(10, "new.mx.test".into())]);
    z.a.insert("old.mx.test".into(), vec!["127.0.0.2".parse().unwrap()]);
    z.a.insert("new.mx.test".into(), vec!["127.0.0.3".parse().unwrap()]);
    let dns = Dns::start(z);
    let old = SinkOptions { no_smtputf8: true, size: Some(2000), ..Default::default() };
    let (old, new) = common::sink::pair(old, SinkOptions::default());
    let cfg = dns
        .configure(common::DEFAULT_CONFIG)
        .replace("max_message_size = \"64KiB\"", "max_message_size = \"1MiB\"")
        .replace(
            "name = \"nowhere\"\ndomains = [\"*\"]\nsmart_hosts = [\"127.0.0.1:{sink}\"]",
            &format!("name = \"internet\"\ndomains = [\"*\"]\nport = {}", old.addr.port()),
        );
    assert!(cfg.contains("name = \"internet\""), "config template changed");
    let relay = Relay::start(&cfg);
    (dns, old, new, relay)
}

fn send_utf8(c: &mut common::Client, to: &str) {
    assert_eq!(c.cmd("MAIL FROM:<app@back.test> SMTPUTF8").code, 250);
    assert_eq!(c.cmd(&format!("RCPT TO:<{to}>")).code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: utf8\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
}

#[test]
fn preferred_mx_without_smtputf8_or_too_small_hands_over_to_the_next() {
    let (_dns, old, new, relay) = setup();
    let mut c = relay.client();
    c.hello();
    // Control: what the preferred MX can take goes there.
    assert_eq!(c.send_mail("app@back.test", &["plain@utf8.test"], "Subject: plain\r\n\r\nx\r\n").code, 250);
    assert_eq!(old.wait_for(1, 30)[0].rcpts, ["plain@utf8.test"]);
    // Needs SMTPUTF8: the backup MX.
    send_utf8(&mut c, "j\u{fc}rgen@utf8.test");
    let got = new.wait_for(1, 30);
    assert_eq!(got[0].rcpts, ["j\u{fc}rgen@utf8.test"]);
    assert!(got[0].mail_params.contains("SMTPUTF8"), "{}", got[0].mail_params);
    // Over the preferred MX's SIZE: the backup MX.
    let big = format!("Subject: big\r\n\r\n{}\r\n", "0123456789abcdef".repeat(300));
    assert_eq!(c.send_mail("app@back.test", &["x@big.test"], &big).code, 250);
    let got = new.wait_for(2, 30);
    let m = got.iter().find(|m| m.rcpts == ["x@big.test"]).expect("delivered to the backup MX");
    assert!(common::strip_received(&m.data).ends_with(big.as_bytes()));
    assert_eq!(old.count(), 1, "the preferred MX got only what it could take");
}

#[test]
fn no_host_with_smtputf8_left_bounces_with_5_6_7() {
    let (_dns, old, new, relay) = setup();
    let mut c = relay.client();
    c.hello();
    send_utf8(&mut c, "j\u{fc}rgen@onlyold.test");
    // The bounce goes to back.test: the backup sink.
    let got = new.wait_for(1, 30);
    assert_eq!(got[0].from, "");
    assert_eq!(got[0].rcpts, ["app@back.test"]);
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("onlyold.test") && text.contains("5.6.7"), "{text}");
    assert!(text.contains("Action: failed"), "{text}");
    assert_eq!(old.count(), 0);
    assert!(old.connections() >= 1, "the only MX was tried");
}
