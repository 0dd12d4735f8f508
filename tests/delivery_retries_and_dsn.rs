//! Retries and DSNs: a temporary failure is retried and then delivered; a permanent one sends
//! an RFC 3464 bounce carrying the remote reply to the sender; NOTIFY=NEVER sends none;
//! NOTIFY=SUCCESS to a next hop without DSN sends a "relayed" notice; a message that stays
//! deferred past `retry.expire` bounces with 5.4.7. Everything, bounces included, goes to one
//! test sink, and the spool is empty at the end.

mod common;

use std::time::Duration;

use common::Relay;
use common::sink::{Received, Sink, SinkOptions};

fn relay(sink: &Sink, retry: &str) -> Relay {
    let cfg = common::DEFAULT_CONFIG
        .replace("{sink}", &sink.addr.port().to_string())
        .replace("retry = { first = \"1h\", max = \"1h\", expire = \"2d\" }", retry);
    Relay::start(&cfg)
}

fn wait_spool_empty(relay: &Relay) {
    let deadline = common::now() + Duration::from_secs(20);
    while !common::spool_messages(&relay.spool()).is_empty() {
        assert!(common::now() < deadline, "spool not empty: {:?}", common::spool_messages(&relay.spool()).keys());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn dsns(got: &[Received]) -> Vec<String> {
    got.iter().filter(|m| m.from.is_empty()).map(|m| String::from_utf8_lossy(&m.data).into_owned()).collect()
}

#[test]
fn tempfail_then_success() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions { tempfail_times: 1, ..Default::default() });
    let relay = relay(&sink, "retry = { first = \"500ms\", max = \"1s\", expire = \"1h\" }");
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("app@example.test", &["tempfail1@dest.test"], "Subject: retry me\r\n\r\nx\r\n").code, 250);
    let got = sink.wait_for(1, 20);
    assert_eq!(got[0].rcpts, vec!["tempfail1@dest.test"]);
    assert_eq!(sink.state.lock().unwrap().attempts["tempfail1@dest.test"], 2, "one deferral, then delivered");
    wait_spool_empty(&relay);
    assert!(dsns(&sink.wait_for(1, 1)).is_empty(), "no DSN for a delivered message");
}

#[test]
fn permfail_bounces_with_the_remote_reply_and_never_means_never() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let relay = relay(&sink, "retry = { first = \"1h\", max = \"1h\", expire = \"2d\" }");
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<app@example.test> ENVID=env-42").code, 250);
    assert_eq!(c.cmd("RCPT TO:<permfail1@dest.test> ORCPT=rfc822;permfail1@dest.test").code, 250);
    assert_eq!(c.cmd("RCPT TO:<good@dest.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: partly bad\r\nMessage-ID: <orig@example.test>\r\n\r\nbody\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    // Silent failure: NOTIFY=NEVER.
    assert_eq!(c.cmd("MAIL FROM:<quiet@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<permfail2@dest.test> NOTIFY=NEVER").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: quiet\r\n\r\nbody\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    // Delivered message + one DSN.
    let got = sink.wait_for(2, 20);
    wait_spool_empty(&relay);
    std::thread::sleep(Duration::from_millis(300));
    let got = if sink.count() > got.len() { sink.wait_for(sink.count(), 1) } else { got };
    let notices = dsns(&got);
    assert_eq!(notices.len(), 1, "one bounce, none for NOTIFY=NEVER: {notices:#?}");
    let n = &notices[0];
    let bounce = got.iter().find(|m| m.from.is_empty()).unwrap();
    assert_eq!(bounce.rcpts, vec!["app@example.test"]);
    for want in [
        "Content-Type: multipart/report; report-type=delivery-status",
        "Original-Envelope-Id: env-42",
        "Original-Recipient: rfc822; permfail1@dest.test",
        "Final-Recipient: rfc822; permfail1@dest.test",
        "Action: failed",
        "Status: 5.1.1",
        "Diagnostic-Code: smtp; 550 5.1.1 <permfail> no such user here",
        "Subject: partly bad",
    ] {
        assert!(n.contains(want), "missing {want:?} in:\n{n}");
    }
    assert!(!n.contains("good@dest.test"), "the delivered recipient is not in the bounce");
}

#[test]
fn success_notice_when_the_next_hop_has_no_dsn() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions { no_dsn: true, ..Default::default() });
    let relay = relay(&sink, "retry = { first = \"1h\", max = \"1h\", expire = \"2d\" }");
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<app@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<ops@dest.test> NOTIFY=SUCCESS").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: tell me\r\n\r\nbody\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    let got = sink.wait_for(2, 20);
    let notices = dsns(&got);
    assert_eq!(notices.len(), 1);
    assert!(notices[0].contains("Action: relayed"), "{}", notices[0]);
    assert!(
        !got.iter().find(|m| !m.from.is_empty()).unwrap().rcpt_params[0].contains("NOTIFY"),
        "no DSN params to a next hop without DSN"
    );
}

#[test]
fn expiry_bounces_with_5_4_7() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions { tempfail_times: u32::MAX, ..Default::default() });
    let relay = relay(&sink, "retry = { first = \"200ms\", max = \"200ms\", expire = \"1500ms\" }");
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("app@example.test", &["tempfail9@dest.test"], "Subject: doomed\r\n\r\nx\r\n").code, 250);
    let got = sink.wait_for(1, 20);
    let n = &dsns(&got)[0];
    assert!(n.contains("Action: failed") && n.contains("Status: 5.4.7"), "{n}");
    assert!(n.contains("451 4.2.0 mailbox busy"), "the last remote reply is reported: {n}");
    assert!(sink.state.lock().unwrap().attempts["tempfail9@dest.test"] >= 3, "retried before expiring");
    wait_spool_empty(&relay);
}

#[test]
fn delay_notice_once_then_failure_notice() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions { tempfail_times: u32::MAX, ..Default::default() });
    let cfg = common::DEFAULT_CONFIG
        .replace("{sink}", &sink.addr.port().to_string())
        .replace(
            "retry = { first = \"1h\", max = \"1h\", expire = \"2d\" }",
            "retry = { first = \"200ms\", max = \"200ms\", expire = \"2500ms\" }",
        )
        .replace("[cores]", "[delivery]\ndelay_warning = \"600ms\"\n[cores]");
    let relay = Relay::start(&cfg);
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<app@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<tempfail7@dest.test> NOTIFY=DELAY,FAILURE").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: slow\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    let got = sink.wait_for(2, 20);
    let notices = dsns(&got);
    assert_eq!(notices.len(), 2, "{notices:#?}");
    assert!(notices[0].contains("Action: delayed") && notices[0].contains("Will-Retry-Until:"), "{}", notices[0]);
    assert!(notices[0].contains("Status: 4.2.0"), "{}", notices[0]);
    assert!(notices[1].contains("Action: failed") && notices[1].contains("Status: 5.4.7"), "{}", notices[1]);
    wait_spool_empty(&relay);
}

#[test]
fn a_server_closing_with_421_is_backed_off_not_hammered() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions { mail_421_times: u32::MAX, ..Default::default() });
    let relay = relay(&sink, "retry = { first = \"300ms\", max = \"300ms\", expire = \"1h\" }");
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("app@example.test", &["user@dest.test"], "Subject: after 421\r\n\r\nx\r\n").code, 250);
    std::thread::sleep(Duration::from_secs(2));
    let connections = sink.connections();
    // Backoff from 300 ms, doubling: a handful of attempts in 2 s, not a hot loop.
    assert!((2..=8).contains(&connections), "421 led to {connections} connections in 2 s");
    assert_eq!(common::spool_messages(&relay.spool()).len(), 1, "still queued for a retry");
}

#[test]
fn a_dead_next_hop_is_probed_not_connected_to_per_message() {
    // A "server" that accepts and hangs up at once, counting connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let cfg = common::DEFAULT_CONFIG.replace("{sink}", &port.to_string()).replace(
        "retry = { first = \"1h\", max = \"1h\", expire = \"2d\" }",
        "retry = { first = \"30s\", max = \"1h\", expire = \"2d\" }",
    );
    let relay = Relay::start(&cfg);
    let mut c = relay.client();
    c.hello();
    for n in 0..50 {
        assert_eq!(
            c.send_mail("app@example.test", &["user@dest.test"], &format!("Subject: {n}\r\n\r\nx\r\n")).code,
            250
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!((1..=3).contains(&n), "{n} connections for 50 messages to a dead next hop");
    assert_eq!(common::spool_messages(&relay.spool()).len(), 50, "all still queued");
}
