//! Whole SMTP transactions over a real TCP socket against the real binary: pipelining, BDAT,
//! RSET, limits, long lines, smuggling attempts, and a client that vanishes mid-DATA.

mod common;

use common::{Relay, spool_messages, strip_received};

#[test]
fn pipelined_transaction_in_one_write_is_queued_with_identical_bytes() {
    let relay = Relay::start_default();
    let mut c = relay.client();
    c.reply();
    c.send(
        b"EHLO client.test\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@dest.test>\r\nRCPT TO:<c@dest.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@dest.test\r\nDATA\r\n",
    );
    let ehlo = c.reply();
    assert!(ehlo.lines.iter().any(|l| l == "PIPELINING"), "{ehlo:?}");
    assert_eq!(c.reply().code, 250);
    assert_eq!(c.reply().code, 250);
    assert_eq!(c.reply().code, 250);
    assert_eq!(c.reply().code, 354);
    c.send(b"Subject: pipelined\r\n\r\n..leading dot\r\nline 2\r\n.\r\nNOOP\r\n");
    let queued = c.reply();
    assert_eq!(queued.code, 250, "{queued:?}");
    assert!(queued.text().starts_with("2.6.0 <") && queued.text().ends_with("> Queued mail for delivery"));
    assert_eq!(c.reply().line(), "250 2.0.0 OK");
    let id = queued.queue_id().unwrap();
    let stored = spool_messages(&relay.spool());
    let (env, msg) = stored.get(&id).expect("queued message is in the spool");
    assert_eq!(strip_received(msg), b"Subject: pipelined\r\n\r\n.leading dot\r\nline 2\r\n");
    assert_eq!(env.sender, "a@example.test");
    assert_eq!(env.recipients.len(), 2);
    assert_eq!(env.recipients[1].orcpt.as_deref(), Some("rfc822;c@dest.test"));
    assert_eq!(env.connector, "loopback");
    assert_eq!(env.helo, "client.test");
    let age = ringrelay::clock::unix_ms().saturating_sub(env.received_at_ms);
    assert!(age < 60_000, "arrival time is stored with the message ({age} ms ago)");
}

#[test]
fn bdat_chunks_and_rset_mid_transaction() {
    let relay = Relay::start_default();
    let mut c = relay.client();
    let ehlo = c.hello();
    assert!(ehlo.lines.iter().any(|l| l == "CHUNKING"));
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@dest.test>").code, 250);
    assert_eq!(c.cmd("RSET").line(), "250 2.0.0 Resetting");
    assert_eq!(c.cmd("RCPT TO:<b@dest.test>").code, 503, "RSET ended the transaction");
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@dest.test>").code, 250);
    c.send(b"BDAT 23\r\nSubject: bdat\r\n\r\nfirst ");
    assert_eq!(c.reply().line(), "250 2.0.0 23 octets received");
    c.send(b"BDAT 14 LAST\r\n.second part\r\n");
    let r = c.reply();
    assert_eq!(r.code, 250, "{r:?}");
    let stored = spool_messages(&relay.spool());
    let (_, msg) = &stored[&r.queue_id().unwrap()];
    assert_eq!(strip_received(msg), b"Subject: bdat\r\n\r\nfirst .second part\r\n", "BDAT is not unstuffed");
}

#[test]
fn size_and_recipient_limits() {
    let relay = Relay::start_default(); // 64 KiB, 5 recipients
    let mut c = relay.client();
    let ehlo = c.hello();
    assert!(ehlo.lines.iter().any(|l| l == "SIZE 65536"), "{ehlo:?}");
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.test> SIZE=65537").line(),
        "552 5.3.4 Message size exceeds fixed maximum message size"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@example.test> SIZE=1000").code, 250);
    for i in 0..5 {
        assert_eq!(c.cmd(&format!("RCPT TO:<r{i}@dest.test>")).code, 250);
    }
    assert_eq!(c.cmd("RCPT TO:<r5@dest.test>").line(), "452 4.5.3 Too many recipients");
    assert_eq!(c.cmd("DATA").code, 354);
    let line = format!("{}\r\n", "x".repeat(998));
    for _ in 0..70 {
        c.send(line.as_bytes());
    }
    c.send(b".\r\n");
    assert_eq!(c.reply().line(), "552 5.3.4 Message size exceeds fixed maximum message size");
    assert!(spool_messages(&relay.spool()).is_empty(), "nothing kept of an over-size message");
    assert_eq!(c.cmd("NOOP").code, 250, "the session goes on");
}

#[test]
fn long_command_lines_are_refused_and_the_session_continues() {
    let relay = Relay::start_default(); // max_command_line = 1000
    let mut c = relay.client();
    c.hello();
    let long = format!("MAIL FROM:<{}@example.test>", "a".repeat(1200));
    assert_eq!(c.cmd(&long).line(), "500 5.5.2 Line too long");
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    // A 3 MB line without CRLF is dropped as it streams, not buffered.
    let huge = vec![b'z'; 3 << 20];
    c.send(&huge);
    c.send(b"\r\n");
    assert_eq!(c.reply().line(), "500 5.5.2 Line too long");
    assert_eq!(c.cmd("NOOP").code, 250);
}

#[test]
fn smuggling_attempts_never_end_data_early() {
    let relay = Relay::start_default();
    for vector in ["\n.\r\n", "\r\n.\n", "\n.\n", "\r.\r\n", "\r\n.\r"] {
        let mut c = relay.client();
        c.hello();
        assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
        assert_eq!(c.cmd("RCPT TO:<b@dest.test>").code, 250);
        assert_eq!(c.cmd("DATA").code, 354);
        c.send(format!("Subject: smuggle\r\n\r\nbody{vector}MAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\nforged\r\n.\r\n").as_bytes());
        let r = c.reply();
        assert!(r.code == 550 && r.text().starts_with("5.6.0"), "{vector:?}: {r:?}");
        // Only one reply: the smuggled commands were message content, never commands.
        assert_eq!(c.cmd("NOOP").line(), "250 2.0.0 OK", "{vector:?}");
    }
    assert!(spool_messages(&relay.spool()).is_empty());
}

#[test]
fn client_vanishing_mid_data_leaves_nothing_stored() {
    let relay = Relay::start_default();
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@dest.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(b"Subject: cut\r\n\r\nhalf a message\r\n");
    drop(c);
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The relay is fine and the spool holds nothing.
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.send_mail("a@example.test", &["b@dest.test"], "Subject: ok\r\n\r\nfine\r\n").code, 250);
    let stored = spool_messages(&relay.spool());
    assert_eq!(stored.len(), 1, "only the completed message");
    assert!(strip_received(&stored.values().next().unwrap().1).starts_with(b"Subject: ok"));
}

#[test]
fn too_many_bad_commands_close_with_421() {
    let relay = Relay::start_default();
    let mut c = relay.client();
    c.hello();
    // max_bad_commands is 20: the 21st bad command gets its 500, then 421 and the close.
    for _ in 0..20 {
        assert_eq!(c.cmd("FROB").code, 500);
    }
    assert_eq!(c.cmd("FROB").code, 500);
    let r = c.reply();
    assert_eq!(r.line(), "421 4.7.0 Too many errors, closing connection", "{r:?}");
    assert!(c.is_closed());
}

/// The `with` protocol in the stored `Received:` header (RFC 3848, RFC 6531 4.3), and MAIL or
/// RCPT parameters after HELO refused with 555 (RFC 5321 4.1.1.11).
#[test]
fn received_protocol_names_and_helo_without_parameters() {
    let relay = Relay::start_default();
    let received_with = |id: &str| -> String {
        let stored = spool_messages(&relay.spool());
        let msg = String::from_utf8(stored[id].1.clone()).unwrap();
        let with = msg.split(" with ").nth(1).unwrap().to_string();
        with[..with.find(' ').unwrap()].to_string()
    };
    let mut c = relay.client();
    c.reply();
    assert_eq!(c.cmd("HELO client.test").code, 250);
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.test> SIZE=100").line(),
        "555 5.5.4 MAIL and RCPT parameters need EHLO, not HELO"
    );
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@dest.test> NOTIFY=FAILURE").code, 555);
    let r = rcpt_and_data(&mut c, "b@dest.test", "Subject: helo\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(received_with(&r.queue_id().unwrap()), "SMTP");

    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<j\u{f6}rg@example.test> SMTPUTF8").code, 250);
    let r = rcpt_and_data(&mut c, "b@dest.test", "Subject: utf8\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    assert_eq!(received_with(&r.queue_id().unwrap()), "UTF8SMTP");

    let mut c = relay.client();
    c.hello();
    let r = c.send_mail("a@example.test", &["b@dest.test"], "Subject: plain\r\n\r\nx\r\n");
    assert_eq!(received_with(&r.queue_id().unwrap()), "ESMTP");
}

/// RCPT, DATA and a (dot-free) body after an accepted MAIL; the final reply.
fn rcpt_and_data(c: &mut common::Client, rcpt: &str, body: &str) -> common::Reply {
    assert_eq!(c.cmd(&format!("RCPT TO:<{rcpt}>")).code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(body.as_bytes());
    c.send(b".\r\n");
    c.reply()
}

/// `bare_line_feed = "normalize"` over a real socket: bare LFs are stored as CRLF, the
/// smuggling vectors made of LFs never end the data (their "commands" are stored as content,
/// one message), and a bare CR is still refused.
#[test]
fn normalize_mode_keeps_crlf_dot_crlf_the_only_end_of_data() {
    let relay = Relay::start(
        &common::DEFAULT_CONFIG.replace("relay = \"any\"", "relay = \"any\"\nbare_line_feed = \"normalize\""),
    );
    let smuggled = "MAIL FROM:<ceo@example.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\nforged\r\n";
    for vector in ["\n.\r\n", "\r\n.\n", "\n.\n"] {
        let mut c = relay.client();
        c.hello();
        assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
        assert_eq!(c.cmd("RCPT TO:<b@dest.test>").code, 250);
        assert_eq!(c.cmd("DATA").code, 354);
        c.send(format!("Subject: v\nX: lf\r\n\r\nbody{vector}{smuggled}.\r\n").as_bytes());
        let r = c.reply();
        assert_eq!(r.code, 250, "{vector:?}: {r:?}");
        assert_eq!(c.cmd("NOOP").line(), "250 2.0.0 OK", "{vector:?}: one reply for one message");
        let stored = spool_messages(&relay.spool());
        let body = strip_received(&stored[&r.queue_id().unwrap()].1).to_vec();
        assert!(
            body.starts_with(b"Subject: v\r\nX: lf\r\n\r\nbody\r\n"),
            "{vector:?}: {:?}",
            String::from_utf8_lossy(&body)
        );
        assert!(body.ends_with(smuggled.as_bytes()), "{vector:?}: the smuggled commands are content");
        assert!(body.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'), "{vector:?}: every LF stored as CRLF");
    }
    let mut c = relay.client();
    c.hello();
    assert_eq!(c.cmd("MAIL FROM:<a@example.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<b@dest.test>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    c.send(format!("Subject: cr\r\n\r\nbody\r.\r{smuggled}.\r\n").as_bytes());
    let r = c.reply();
    assert!(r.code == 550 && r.text().starts_with("5.6.0"), "a bare CR is refused in normalize mode too: {r:?}");
    assert_eq!(c.cmd("NOOP").line(), "250 2.0.0 OK");
    assert_eq!(spool_messages(&relay.spool()).len(), 3);
}
