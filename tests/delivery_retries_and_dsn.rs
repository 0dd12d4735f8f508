//! Retries and DSNs: a temporary failure is retried and then delivered; a permanent one sends
//! an RFC 3464 bounce carrying the remote reply to the sender; NOTIFY=NEVER sends none;
//! NOTIFY=SUCCESS to a next hop without DSN sends a "relayed" notice, stored before the
//! recipient is marked finished; a message that stays deferred past `retry.expire` bounces
//! with 5.4.7; a DELAY notice goes to every recipient that asked, in every domain; a message
//! that cannot be read from the spool is deferred, not dropped. Everything, bounces included,
//! goes to test sinks, and the spool is empty at the end.

mod common;

use std::time::Duration;

use common::Relay;
use common::dns::{Dns, Zone};
use common::ops;
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

/// A message to ops@dest.test with NOTIFY=SUCCESS; returns its queue id.
fn send_notify_success(relay: &Relay) -> String {
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<app@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<ops@dest.test> NOTIFY=SUCCESS").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: tell me\r\n\r\nbody\r\n.\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250);
    r.queue_id().unwrap()
}

#[test]
fn success_notice_when_the_next_hop_has_no_dsn() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions { no_dsn: true, ..Default::default() });
    let relay = relay(&sink, "retry = { first = \"1h\", max = \"1h\", expire = \"2d\" }");
    send_notify_success(&relay);
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

/// One record of a spool segment, as far as these tests care.
#[derive(Debug, PartialEq, Eq)]
enum Logged {
    Message { queue_id: String, sender: String },
    Done { queue_id: String },
}

/// Every record in the spool, in the order written: (segment path, offset, record).
fn spool_log(spool: &std::path::Path) -> Vec<(std::path::PathBuf, usize, Logged)> {
    use ringrelay::spool::record::{self, Record};
    let mut out = Vec::new();
    for (_, dir) in ringrelay::spool::list_core_dirs(spool).unwrap() {
        let mut segments: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        segments.retain(|p| p.extension().is_some_and(|e| e == "log"));
        segments.sort();
        for seg in segments {
            let Ok(bytes) = std::fs::read(&seg) else { continue };
            let mut pos = ringrelay::spool::SEGMENT_HEADER_BYTES;
            while let Some(Ok((rec, len))) = bytes.get(pos..).map(record::decode) {
                let logged = match rec {
                    Record::Message { envelope, .. } => {
                        Logged::Message { queue_id: envelope.queue_id.to_string(), sender: envelope.sender }
                    }
                    Record::Done { queue_id, .. } => Logged::Done { queue_id: queue_id.to_string() },
                };
                out.push((seg.clone(), pos, logged));
                pos += len;
            }
        }
    }
    out
}

#[test]
fn relayed_notice_is_stored_before_the_recipient_is_finished() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions { no_dsn: true, ..Default::default() });
    let relay = relay(&sink, "retry = { first = \"1h\", max = \"1h\", expire = \"2d\" }");
    let id = send_notify_success(&relay);
    sink.wait_for(2, 20);
    // Poll until the original's DONE record is written (DONE records ride in later batches).
    let deadline = common::now() + Duration::from_secs(20);
    let log = loop {
        let log = spool_log(&relay.spool());
        if log.iter().any(|(_, _, l)| *l == Logged::Done { queue_id: id.clone() }) {
            break log;
        }
        assert!(common::now() < deadline, "no DONE record for {id}: {log:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let at = |want: &dyn Fn(&Logged) -> bool| log.iter().position(|(_, _, l)| want(l)).unwrap();
    let dsn = at(&|l| matches!(l, Logged::Message { sender, .. } if sender.is_empty()));
    let done = at(&|l| *l == Logged::Done { queue_id: id.clone() });
    assert!(dsn < done, "the notice is durable before the recipient is finished: {log:#?}");
}

#[test]
fn every_recipient_that_asked_gets_its_delay_notice_in_every_domain() {
    let mut z = Zone::default();
    for d in ["d1.test", "d2.test"] {
        z.mx.insert(d.into(), vec![(10, "slow.mx.test".into())]);
    }
    z.mx.insert("back.test".into(), vec![(10, "bounces.back.test".into())]);
    z.a.insert("slow.mx.test".into(), vec!["127.0.0.2".parse().unwrap()]);
    z.a.insert("bounces.back.test".into(), vec!["127.0.0.3".parse().unwrap()]);
    let dns = Dns::start(z);
    let slow = SinkOptions { tempfail_times: u32::MAX, ..Default::default() };
    let (_slow, bounces) = common::sink::pair(slow, SinkOptions::default());
    let cfg = dns
        .configure(common::DEFAULT_CONFIG)
        .replace(
            "smart_hosts = [\"127.0.0.1:{sink}\"]\nretry = { first = \"1h\", max = \"1h\", expire = \"2d\" }",
            &format!(
                "port = {}\nretry = {{ first = \"200ms\", max = \"200ms\", expire = \"1h\" }}",
                bounces.addr.port()
            ),
        )
        .replace("[cores]", "[delivery]\ndelay_warning = \"600ms\"\n[cores]");
    assert!(cfg.contains("delay_warning"), "config template changed");
    let relay = Relay::start(&cfg);
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<app@back.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<tempfail1@d1.test> NOTIFY=DELAY").code, 250);
    assert_eq!(c.cmd("RCPT TO:<tempfail2@d2.test> NOTIFY=DELAY").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: slow everywhere\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    let reported = |s: &common::sink::SinkState, rcpt: &str| {
        let line = format!("Final-Recipient: rfc822; {rcpt}");
        s.messages.iter().filter(|m| String::from_utf8_lossy(&m.data).contains(&line)).count()
    };
    bounces.wait_until(30, "a delay notice for each recipient", |s| {
        reported(s, "tempfail1@d1.test") >= 1 && reported(s, "tempfail2@d2.test") >= 1
    });
    // Retries go on every 200 ms; each recipient is told once.
    std::thread::sleep(Duration::from_secs(1));
    let s = bounces.state.lock().unwrap();
    assert_eq!((reported(&s, "tempfail1@d1.test"), reported(&s, "tempfail2@d2.test")), (1, 1));
    for m in &s.messages {
        let text = String::from_utf8_lossy(&m.data);
        assert!(text.contains("Action: delayed"), "{text}");
    }
}

#[test]
fn a_message_that_cannot_be_read_from_the_spool_is_deferred_not_dropped() {
    // Nothing listens on the smart host port at first: the message is deferred (and no longer
    // kept in memory), then its spool segment loses the record.
    let cfg = common::DEFAULT_CONFIG.replace(
        "retry = { first = \"1h\", max = \"1h\", expire = \"2d\" }",
        "retry = { first = \"1h\", max = \"1h\", expire = \"2d\" }\nconnect_timeout = \"5s\"",
    );
    let relay = Relay::start(&cfg);
    let mut c = relay.client();
    c.hello();
    let r = c.send_mail("app@example.test", &["user@dest.test"], "Subject: lost\r\n\r\nx\r\n");
    assert_eq!(r.code, 250);
    let id = r.queue_id().unwrap();
    ops::track_until(&relay, &["--event", "DEFER"], 20, |e| e.len() == 1);
    for (_, dir) in ringrelay::spool::list_core_dirs(&relay.spool()).unwrap() {
        for seg in std::fs::read_dir(&dir).unwrap() {
            let path = seg.unwrap().path();
            if !path.file_name().unwrap().to_string_lossy().starts_with("seg-") {
                continue;
            }
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            f.set_len(ringrelay::spool::SEGMENT_HEADER_BYTES as u64).unwrap();
        }
    }
    let sink = Sink::start(&format!("127.0.0.1:{}", relay.sink_port), SinkOptions::default());
    let (status, _) = ops::http(&relay, "POST", "/queue/retry");
    assert_eq!(status, 200);
    let defers = ops::track_until(&relay, &["--event", "DEFER", "--queue-id", &id], 30, |e| e.len() == 2);
    let reply = defers[1]["reply"].as_str().unwrap();
    assert!(reply.starts_with("451 4.3.0"), "a local temporary failure: {reply}");
    assert!(reply.contains("could not be read from the spool"), "{reply}");
    assert_eq!(sink.count(), 0, "nothing (no partial message) delivered");
    let (_, body) = ops::http(&relay, "GET", "/queue?domain=dest.test");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["messages"][0]["queue_id"], id.as_str(), "still queued for a retry: {v:#}");
}
