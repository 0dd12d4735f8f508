//! Client session tests: whole conversations as server bytes in, client bytes out. Three kinds:
//! scripted conversations (one behaviour each), a property test against a naive model of the
//! outcome rules with a scripted server that answers whatever the client sends (pipelined or
//! not), and conversations with ringrelay's own server `smtp::Session` on the other end.

use super::*;
use crate::smtp::envelope::{Notify, QueueId, QueueIdGen};
use crate::smtp::reply::Reply;
use crate::smtp::scanner::BareLf;
use crate::smtp::session::{self, Host, Session, SessionConfig};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};

const EHLO_FULL: &str = "250-mx.test Hello\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n\
250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250 CHUNKING\r\n";
const EHLO_PLAIN: &str = "250-mx.test Hello\r\n250 8BITMIME\r\n";

/// A client plus the server bytes it has not consumed yet, as the runtime keeps them.
struct H {
    c: ClientSession,
    pending: Vec<u8>,
}

impl H {
    fn new(cfg: ClientConfig) -> H {
        H { c: ClientSession::new(Rc::new(cfg)), pending: Vec::new() }
    }

    fn plain() -> H {
        H::new(ClientConfig::new("relay.test", Tls::Off))
    }

    /// Feeds server bytes; returns (what the client wrote, events).
    fn server(&mut self, bytes: &str) -> (String, Vec<Event>) {
        self.pending.extend_from_slice(bytes.as_bytes());
        let mut out = Output::default();
        let n = self.c.receive(&self.pending, &mut out);
        self.pending.drain(..n);
        (String::from_utf8(out.wire).unwrap(), out.events)
    }

    /// Greeting and EHLO with the given capability reply; expects Ready.
    fn ready(ehlo_reply: &str) -> H {
        let mut h = H::plain();
        assert_eq!(h.server("220 mx.test ESMTP\r\n").0, "EHLO relay.test\r\n");
        let (wire, events) = h.server(ehlo_reply);
        assert_eq!((wire.as_str(), events.as_slice()), ("", &[Event::Ready][..]));
        h
    }

    fn start(&mut self, tx: &Transaction<'_>, rcpts: &[Recipient]) -> (String, Vec<Event>) {
        let mut out = Output::default();
        self.c.start_transaction(tx, rcpts, &mut out).unwrap();
        (String::from_utf8(out.wire).unwrap(), out.events)
    }

    fn body(&mut self, chunks: &[&[u8]]) -> String {
        let mut out = Output::default();
        for c in chunks {
            assert!(self.c.write_body(c, &mut out));
        }
        assert!(self.c.finish_body(&mut out));
        assert!(out.events.is_empty());
        String::from_utf8(out.wire).unwrap()
    }

    fn statuses(&self) -> Vec<(RecipientStatus, Stage, u16)> {
        self.c.result().recipients().iter().map(|o| (o.status, o.stage, o.reply.code())).collect()
    }
}

fn rcpt(address: &str) -> Recipient {
    Recipient { address: address.into(), notify: Notify::default(), orcpt: None }
}

fn tx(sender: &str, size: u64) -> Transaction<'_> {
    Transaction { sender, size, body: BodyType::SevenBit, eight_bit: false, smtputf8: false, ret: None, envid: None }
}

fn closed_reason(events: &[Event]) -> &CloseReason {
    match events.last() {
        Some(Event::Closed(r)) => r,
        other => panic!("expected Closed last, got {other:?} in {events:?}"),
    }
}

use RecipientStatus::{Deferred, Delivered, Failed};

#[test]
fn pipelined_transaction_sends_one_write_and_matches_replies_in_order() {
    let mut h = H::ready(EHLO_FULL);
    let caps = h.c.capabilities();
    assert!(caps.pipelining && caps.dsn && caps.smtputf8 && caps.eight_bit_mime);
    let mut rcpts = vec![rcpt("a@x.test"), rcpt("b@x.test"), rcpt("c@x.test")];
    rcpts[0].notify = Notify(Notify::SUCCESS | Notify::FAILURE);
    rcpts[0].orcpt = Some("rfc822;A+2Bb@x.test".into());
    rcpts[2].notify = Notify(Notify::NEVER);
    let t = Transaction {
        sender: "s@y.test",
        size: 1234,
        body: BodyType::EightBitMime,
        eight_bit: true,
        smtputf8: false,
        ret: Some(Ret::Hdrs),
        envid: Some("QQ+2B1"),
    };
    let (wire, events) = h.start(&t, &rcpts);
    assert!(events.is_empty());
    assert_eq!(
        wire,
        "MAIL FROM:<s@y.test> SIZE=1234 BODY=8BITMIME RET=HDRS ENVID=QQ+2B1\r\n\
RCPT TO:<a@x.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;A+2Bb@x.test\r\n\
RCPT TO:<b@x.test>\r\n\
RCPT TO:<c@x.test> NOTIFY=NEVER\r\n\
DATA\r\n"
    );
    assert_eq!(h.c.timeout(), Some(TimeoutKind::Mail));
    // Replies may come in any pieces.
    let (wire, events) = h.server("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n");
    assert_eq!((wire.as_str(), events.len()), ("", 0));
    assert_eq!(h.c.timeout(), Some(TimeoutKind::Rcpt));
    let (_, events) = h.server("250 2.1.5 ok\r\n354 go ahead\r\n");
    assert_eq!(events, [Event::SendBody]);
    assert_eq!(h.c.timeout(), Some(TimeoutKind::DataBlock));
    let wire = h.body(&[b"Subject: hi\r\n\r\n.dot\n", b"end"]);
    assert_eq!(wire, "Subject: hi\r\n\r\n..dot\r\nend\r\n.\r\n");
    assert_eq!(h.c.timeout(), Some(TimeoutKind::DataTermination));
    let (_, events) = h.server("250 2.0.0 queued as 42\r\n");
    assert_eq!(events, [Event::TransactionDone, Event::Ready]);
    assert_eq!(
        h.statuses(),
        [(Delivered, Stage::DataEnd, 250), (Failed, Stage::Rcpt, 550), (Delivered, Stage::DataEnd, 250)]
    );
    let r = h.c.result();
    assert_eq!(r.message(), MessageOutcome::Delivered);
    assert!(r.next_hop_dsn());
    assert_eq!(r.recipients()[0].reply.one_line(), "250 2.0.0 queued as 42");
    assert_eq!(r.recipients()[1].reply.one_line(), "550 5.1.1 no such user");
    assert_eq!(r.count(Delivered), 2);
    assert_eq!(h.c.transactions(), 1);
    assert_eq!(h.c.timeout(), None, "idle: the pool's timeout applies");
}

#[test]
fn without_pipelining_one_command_per_reply() {
    let mut h = H::ready(EHLO_PLAIN);
    let rcpts = [rcpt("a@x.test"), rcpt("b@x.test")];
    let mut t = tx("s@y.test", 10);
    t.body = BodyType::EightBitMime;
    t.ret = Some(Ret::Full);
    assert_eq!(h.start(&t, &rcpts).0, "MAIL FROM:<s@y.test> BODY=8BITMIME\r\n", "no SIZE/DSN params unless offered");
    assert_eq!(h.server("250 ok\r\n").0, "RCPT TO:<a@x.test>\r\n");
    assert_eq!(h.server("451 4.3.0 later\r\n").0, "RCPT TO:<b@x.test>\r\n");
    assert_eq!(h.server("250 ok\r\n").0, "DATA\r\n");
    assert_eq!(h.c.timeout(), Some(TimeoutKind::DataInit));
    assert_eq!(h.server("354 go\r\n").1, [Event::SendBody]);
    h.body(&[b"x"]);
    assert_eq!(h.server("250 ok\r\n").1, [Event::TransactionDone, Event::Ready]);
    assert_eq!(h.statuses(), [(Deferred, Stage::Rcpt, 451), (Delivered, Stage::DataEnd, 250)]);
}

#[test]
fn ehlo_5xx_falls_back_to_helo_and_plain_commands() {
    let mut h = H::plain();
    h.server("220 old.test\r\n");
    assert_eq!(h.server("502 5.5.1 unrecognized\r\n").0, "HELO relay.test\r\n");
    assert_eq!(h.server("250 old.test\r\n").1, [Event::Ready]);
    assert!(!h.c.capabilities().esmtp);
    // Declared 8BITMIME but all 7-bit: goes as is, without the parameter nobody offered.
    let mut t = tx("s@y.test", 10);
    t.body = BodyType::EightBitMime;
    assert_eq!(h.start(&t, &[rcpt("a@x.test")]).0, "MAIL FROM:<s@y.test>\r\n");
}

#[test]
fn eight_bit_content_is_not_sent_to_a_server_without_8bitmime() {
    // RFC 6152 3: convert or do not send. We do not convert.
    let mut h = H::ready("250-mx.test\r\n250-PIPELINING\r\n250 SIZE 10000\r\n");
    let mut t = tx("s@y.test", 10);
    t.body = BodyType::EightBitMime;
    t.eight_bit = true;
    let (wire, events) = h.start(&t, &[rcpt("a@x.test"), rcpt("b@x.test")]);
    assert_eq!(wire, "", "nothing is sent");
    assert_eq!(events, [Event::TransactionDone, Event::Ready]);
    for o in h.c.result().recipients() {
        assert_eq!((o.status, o.cause, o.stage), (Failed, Cause::Capability, Stage::Mail));
        assert!(o.reply.one_line().starts_with("554 5.6.3 Conversion required but not supported"), "{}", o.reply);
    }
    assert_eq!(h.c.result().message(), MessageOutcome::NotSent);
    // The connection stays usable, and 7-bit content declared 8BITMIME goes as is.
    t.eight_bit = false;
    assert_eq!(h.start(&t, &[rcpt("a@x.test")]).0, "MAIL FROM:<s@y.test> SIZE=10\r\nRCPT TO:<a@x.test>\r\nDATA\r\n");
    // A server that offers 8BITMIME gets the 8-bit content with the parameter.
    let mut h = H::ready(EHLO_PLAIN);
    t.eight_bit = true;
    assert_eq!(h.start(&t, &[rcpt("a@x.test")]).0, "MAIL FROM:<s@y.test> BODY=8BITMIME\r\n");
    // A message declared 7BIT is not looked at (what the submitter said is what goes).
    let mut h = H::ready("250-mx.test\r\n250 PIPELINING\r\n");
    t.body = BodyType::SevenBit;
    assert!(h.start(&t, &[rcpt("a@x.test")]).0.starts_with("MAIL FROM:<s@y.test>\r\n"));
}

#[test]
fn has_eight_bit_finds_any_high_octet() {
    assert!(!has_eight_bit(b""));
    assert!(!has_eight_bit(b"Subject: plain\r\n\r\nseven bit only, longer than eight bytes\r\n"));
    for len in 1..40 {
        for at in 0..len {
            let mut v = vec![b'a'; len];
            v[at] = 0x80;
            assert!(has_eight_bit(&v), "len {len} at {at}");
        }
    }
    assert!(has_eight_bit("caf\u{e9}".as_bytes()));
    let e = Envelope { body_type: BodyType::EightBitMime, ..Envelope::default() };
    assert!(Transaction::from_envelope(&e, "\u{e9}".as_bytes()).eight_bit);
    assert!(!Transaction::from_envelope(&e, b"ascii").eight_bit);
    let e = Envelope { body_type: BodyType::SevenBit, ..Envelope::default() };
    assert!(!Transaction::from_envelope(&e, "\u{e9}".as_bytes()).eight_bit, "only 8BITMIME messages are looked at");
}

#[test]
fn ehlo_4xx_and_helo_failure_close_the_connection() {
    let mut h = H::plain();
    h.server("220 mx\r\n");
    let (wire, events) = h.server("451 4.3.2 busy\r\n");
    assert_eq!(wire, "QUIT\r\n");
    assert!(matches!(closed_reason(&events), CloseReason::Failed { stage: Stage::Ehlo, cause: Cause::Reply, .. }));
    let mut h = H::plain();
    h.server("220 mx\r\n");
    h.server("500 what\r\n");
    let (_, events) = h.server("550 go away\r\n");
    assert!(matches!(closed_reason(&events), CloseReason::Failed { stage: Stage::Helo, .. }));
}

#[test]
fn greeting_other_than_220_is_a_host_failure() {
    let mut h = H::plain();
    assert_eq!(h.c.timeout(), Some(TimeoutKind::Greeting));
    let (wire, events) = h.server("554 5.7.1 no thanks\r\n");
    assert_eq!(wire, "QUIT\r\n");
    let CloseReason::Failed { stage, cause, reply } = closed_reason(&events) else { panic!() };
    assert_eq!((*stage, *cause, reply.code()), (Stage::Greeting, Cause::Reply, 554));
    assert!(h.c.is_closed());
    // 421 greeting: closed without QUIT.
    let mut h = H::plain();
    let (wire, events) = h.server("421 4.3.2 try later\r\n");
    assert_eq!(wire, "");
    assert!(matches!(closed_reason(&events), CloseReason::Failed { stage: Stage::Greeting, .. }));
}

#[test]
fn starttls_then_ehlo_again_with_fresh_capabilities() {
    let mut h = H::new(ClientConfig::new("relay.test", Tls::Opportunistic));
    h.server("220 mx\r\n");
    let (wire, _) = h.server("250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n");
    assert_eq!(wire, "STARTTLS\r\n");
    let (wire, events) = h.server("220 2.0.0 ready\r\n");
    assert_eq!((wire.as_str(), events.as_slice()), ("", &[Event::NeedTls][..]));
    assert_eq!(h.c.stage(), Stage::TlsHandshake);
    let mut out = Output::default();
    h.c.tls_established(&mut out);
    assert_eq!(out.wire, b"EHLO relay.test\r\n");
    assert!(h.c.tls_active());
    assert_eq!(h.c.capabilities(), &Capabilities::default(), "nothing learnt before TLS is kept");
    let (wire, events) = h.server("250-mx\r\n250 SIZE 5\r\n");
    assert_eq!((wire.as_str(), events.as_slice()), ("", &[Event::Ready][..]), "no second STARTTLS");
    assert_eq!(h.c.capabilities().size_limit(), Some(5));
}

#[test]
fn tls_handshake_failure_closes() {
    let mut h = H::new(ClientConfig::new("relay.test", Tls::Opportunistic));
    h.server("220 mx\r\n");
    h.server("250-mx\r\n250 STARTTLS\r\n");
    h.server("220 go\r\n");
    let mut out = Output::default();
    h.c.tls_failed(&mut out);
    assert!(out.wire.is_empty());
    let CloseReason::Failed { stage, cause, reply } = closed_reason(&out.events) else { panic!() };
    assert_eq!((*stage, *cause, reply.code()), (Stage::TlsHandshake, Cause::TlsFailed, 451));
}

#[test]
fn plaintext_after_the_starttls_reply_is_refused() {
    let mut h = H::new(ClientConfig::new("relay.test", Tls::Opportunistic));
    h.server("220 mx\r\n");
    h.server("250-mx\r\n250 STARTTLS\r\n");
    let (wire, events) = h.server("220 go\r\n250-injected\r\n250 AUTH PLAIN\r\n");
    assert_eq!(wire, "");
    let CloseReason::Failed { cause, .. } = closed_reason(&events) else { panic!() };
    assert_eq!(*cause, Cause::Protocol);
    assert!(!events.contains(&Event::NeedTls) || h.c.is_closed());
    assert!(h.c.is_closed());
}

#[test]
fn tls_required_but_not_offered_is_a_temporary_failure() {
    let mut h = H::new(ClientConfig::new("relay.test", Tls::Required));
    h.server("220 mx\r\n");
    let (wire, events) = h.server(EHLO_FULL);
    assert_eq!(wire, "QUIT\r\n");
    let CloseReason::Failed { stage, cause, reply } = closed_reason(&events) else { panic!() };
    assert_eq!((*stage, *cause), (Stage::StartTls, Cause::TlsNotOffered));
    assert!(reply.is_transient(), "{reply}");
    assert!(reply.text().contains("STARTTLS"));
    // After a HELO fallback there is no STARTTLS either.
    let mut h = H::new(ClientConfig::new("relay.test", Tls::Required));
    h.server("220 mx\r\n");
    h.server("502 no\r\n");
    let (_, events) = h.server("250 ok\r\n");
    assert!(matches!(closed_reason(&events), CloseReason::Failed { cause: Cause::TlsNotOffered, .. }));
}

#[test]
fn starttls_refusal_depends_on_the_policy() {
    for (tls, ready) in [(Tls::Required, false), (Tls::Opportunistic, true)] {
        let mut h = H::new(ClientConfig::new("relay.test", tls));
        h.server("220 mx\r\n");
        h.server("250-mx\r\n250 STARTTLS\r\n");
        let (_, events) = h.server("454 4.7.0 TLS not available\r\n");
        if ready {
            assert_eq!(events, [Event::Ready]);
            assert!(!h.c.tls_active());
        } else {
            assert!(matches!(closed_reason(&events), CloseReason::Failed { stage: Stage::StartTls, .. }));
        }
    }
}

#[test]
fn tls_off_never_sends_starttls() {
    let mut h = H::plain();
    h.server("220 mx\r\n");
    let (wire, events) = h.server("250-mx\r\n250 STARTTLS\r\n");
    assert_eq!((wire.as_str(), events.as_slice()), ("", &[Event::Ready][..]));
}

fn with_credentials(tls: Tls) -> H {
    let mut cfg = ClientConfig::new("relay.test", tls);
    cfg.credentials = Some(Credentials { user: "user".into(), password: "pass".into() });
    H::new(cfg)
}

#[test]
fn credentials_are_never_sent_without_tls() {
    let mut h = with_credentials(Tls::Opportunistic);
    h.server("220 mx\r\n");
    let (wire, events) = h.server("250-mx\r\n250 AUTH PLAIN LOGIN\r\n");
    assert_eq!(wire, "QUIT\r\n");
    assert!(!wire.contains("AUTH") && !wire.contains(&auth::encode(b"\0user\0pass")));
    let CloseReason::Failed { stage, cause, reply } = closed_reason(&events) else { panic!() };
    assert_eq!((*stage, *cause), (Stage::Auth, Cause::AuthNeedsTls));
    assert!(reply.is_transient());
}

/// Greeting, EHLO with STARTTLS, handshake; returns the harness waiting for the EHLO reply.
fn under_tls(mut h: H) -> H {
    h.server("220 mx\r\n");
    h.server("250-mx\r\n250 STARTTLS\r\n");
    h.server("220 go\r\n");
    let mut out = Output::default();
    h.c.tls_established(&mut out);
    h
}

#[test]
fn auth_plain_under_tls() {
    let mut h = under_tls(with_credentials(Tls::Opportunistic));
    let mut out = Output::default();
    h.pending.extend_from_slice(b"250-mx\r\n250 AUTH LOGIN PLAIN\r\n");
    let n = h.c.receive(&h.pending, &mut out);
    h.pending.drain(..n);
    assert_eq!(out.wire, format!("AUTH PLAIN {}\r\n", auth::encode(b"\0user\0pass")).as_bytes());
    assert!(out.secret, "the protocol log must redact this write");
    assert_eq!(h.c.stage(), Stage::Auth);
    assert_eq!(h.server("235 2.7.0 ok\r\n").1, [Event::Ready]);
}

#[test]
fn auth_login_under_tls_and_its_failure() {
    let mut h = under_tls(with_credentials(Tls::Required));
    assert_eq!(h.server("250-mx\r\n250 AUTH LOGIN\r\n").0, "AUTH LOGIN\r\n");
    assert_eq!(h.server("334 VXNlcm5hbWU6\r\n").0, format!("{}\r\n", auth::encode(b"user")));
    assert_eq!(h.server("334 UGFzc3dvcmQ6\r\n").0, format!("{}\r\n", auth::encode(b"pass")));
    let (wire, events) = h.server("535 5.7.8 bad credentials\r\n");
    assert_eq!(wire, "QUIT\r\n");
    let CloseReason::Failed { stage, cause, reply } = closed_reason(&events) else { panic!() };
    assert_eq!((*stage, *cause, reply.code()), (Stage::Auth, Cause::Reply, 535));
}

#[test]
fn auth_without_a_usable_mechanism() {
    let mut h = under_tls(with_credentials(Tls::Required));
    let (_, events) = h.server("250-mx\r\n250 AUTH CRAM-MD5\r\n");
    assert!(matches!(closed_reason(&events), CloseReason::Failed { cause: Cause::NoAuthMechanism, .. }));
}

#[test]
fn message_over_the_server_size_fails_without_sending() {
    let mut h = H::ready("250-mx\r\n250-PIPELINING\r\n250 SIZE 1000\r\n");
    let (wire, events) = h.start(&tx("s@y.test", 1001), &[rcpt("a@x.test"), rcpt("b@x.test")]);
    assert_eq!(wire, "");
    assert_eq!(events, [Event::TransactionDone, Event::Ready]);
    for o in h.c.result().recipients() {
        assert_eq!((o.status, o.cause), (Failed, Cause::Capability));
        assert_eq!(o.reply.status().to_string(), "5.3.4");
        assert!(o.reply.text().contains("1001") && o.reply.text().contains("1000"), "{}", o.reply);
    }
    assert_eq!(h.c.result().message(), MessageOutcome::NotSent);
    // Exactly the limit is fine, and the connection is usable.
    assert!(h.start(&tx("s@y.test", 1000), &[rcpt("a@x.test")]).0.starts_with("MAIL FROM:<s@y.test> SIZE=1000"));
}

#[test]
fn smtputf8_needed_and_not_offered_fails_permanently() {
    let mut h = H::ready(EHLO_PLAIN);
    let (wire, events) = h.start(&tx("s@y.test", 10), &[rcpt("jürgen@x.test")]);
    assert_eq!(wire, "");
    assert_eq!(events, [Event::TransactionDone, Event::Ready]);
    let o = &h.c.result().recipients()[0];
    assert_eq!((o.status, o.reply.code(), o.reply.status().to_string().as_str()), (Failed, 553, "5.6.7"));
    assert_eq!(o.cause, Cause::Capability, "another host may offer SMTPUTF8");
    let mut t = tx("s@y.test", 10);
    t.smtputf8 = true;
    assert_eq!(h.start(&t, &[rcpt("a@x.test")]).0, "");
    // Offered: the parameter is passed.
    let mut h = H::ready(EHLO_FULL);
    assert!(
        h.start(&tx("ü@y.test", 10), &[rcpt("a@x.test")]).0.starts_with("MAIL FROM:<ü@y.test> SIZE=10 SMTPUTF8\r\n")
    );
}

#[test]
fn needs_smtputf8_looks_at_addresses_and_utf8_headers() {
    let mut e = Envelope { sender: "a@x.test".into(), recipients: vec![rcpt("b@x.test")], ..Envelope::default() };
    assert!(!needs_smtputf8(&e, "Subject: \u{e9}\r\n\r\n".as_bytes()), "SMTPUTF8 was not given");
    e.smtputf8 = true;
    assert!(!needs_smtputf8(&e, "Subject: hi\r\n\r\nbody \u{e9}".as_bytes()), "8-bit body is 8BITMIME's business");
    assert!(needs_smtputf8(&e, "Subject: \u{e9}\r\n\r\nbody".as_bytes()));
    e.smtputf8 = false;
    e.recipients.push(rcpt("ö@x.test"));
    assert!(needs_smtputf8(&e, b"Subject: x\r\n\r\n"));
}

#[test]
fn addresses_that_would_inject_commands_are_refused_locally() {
    let mut h = H::ready(EHLO_FULL);
    let rcpts = [rcpt("ok@x.test"), rcpt("evil@x.test>\r\nRCPT TO:<other@x.test"), rcpt("")];
    let (wire, _) = h.start(&tx("s@y.test", 10), &rcpts);
    assert_eq!(wire, "MAIL FROM:<s@y.test> SIZE=10\r\nRCPT TO:<ok@x.test>\r\nDATA\r\n");
    let o = h.c.result().recipients();
    assert_eq!((o[1].status, o[1].cause, o[1].reply.code()), (Failed, Cause::Local, 553));
    assert_eq!((o[2].status, o[2].cause), (Failed, Cause::Local));
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    h.body(&[b"x"]);
    h.server("250 ok\r\n");
    assert_eq!(h.statuses()[0], (Delivered, Stage::DataEnd, 250));

    let (wire, events) = h.start(&tx("s@y.test\r\nQUIT", 10), &[rcpt("a@x.test")]);
    assert_eq!(wire, "");
    assert_eq!(events, [Event::TransactionDone, Event::Ready]);
    assert_eq!(h.c.result().recipients()[0].reply.status().to_string(), "5.1.7");
    // Parameters that are not clean xtext are dropped rather than written.
    let mut r = rcpt("a@x.test");
    r.orcpt = Some("rfc822;a b\r\nQUIT".into());
    let mut t = tx("s@y.test", 10);
    t.envid = Some("x\ry");
    assert_eq!(h.start(&t, &[r]).0, "MAIL FROM:<s@y.test> SIZE=10\r\nRCPT TO:<a@x.test>\r\nDATA\r\n");
}

#[test]
fn pipelined_all_recipients_refused_data_refused_then_rset_before_reuse() {
    let mut h = H::ready(EHLO_FULL);
    h.start(&tx("s@y.test", 10), &[rcpt("a@x.test"), rcpt("b@x.test")]);
    let (wire, events) = h.server("250 ok\r\n550 5.1.1 no\r\n450 4.2.1 later\r\n554 5.5.1 no valid recipients\r\n");
    assert_eq!(wire, "", "no content without an accepted recipient");
    assert_eq!(events, [Event::TransactionDone, Event::Ready]);
    assert_eq!(h.statuses(), [(Failed, Stage::Rcpt, 550), (Deferred, Stage::Rcpt, 450)]);
    assert_eq!(h.c.result().message(), MessageOutcome::NotSent);
    // MAIL was accepted and never closed by a final reply: RSET, alone, before the next MAIL.
    let (wire, _) = h.start(&tx("s@y.test", 10), &[rcpt("c@x.test")]);
    assert_eq!(wire, "RSET\r\n");
    assert_eq!(h.c.timeout(), Some(TimeoutKind::Mail));
    let (wire, _) = h.server("250 2.0.0 reset\r\n");
    assert_eq!(wire, "MAIL FROM:<s@y.test> SIZE=10\r\nRCPT TO:<c@x.test>\r\nDATA\r\n");
}

#[test]
fn pipelined_data_354_without_recipients_sends_only_the_end_marker() {
    let mut h = H::ready(EHLO_FULL);
    h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]);
    let (wire, events) = h.server("250 ok\r\n550 5.1.1 no\r\n354 go ahead anyway\r\n");
    assert_eq!(wire, ".\r\n", "an empty message to nobody; none of the content");
    assert!(events.is_empty());
    assert!(!h.c.wants_body());
    let (_, events) = h.server("250 2.0.0 queued (to nobody)\r\n");
    assert_eq!(events, [Event::TransactionDone, Event::Ready]);
    assert_eq!(h.statuses(), [(Failed, Stage::Rcpt, 550)], "the final reply decides nothing");
    assert_eq!(h.c.result().message(), MessageOutcome::NotSent);
    // The final reply closed the server's transaction: no RSET needed.
    assert!(h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]).0.starts_with("MAIL FROM"));
}

#[test]
fn unpipelined_all_recipients_refused_sends_no_data_and_rset_failure_closes() {
    let mut h = H::ready(EHLO_PLAIN);
    h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]);
    h.server("250 ok\r\n");
    let (wire, events) = h.server("550 no\r\n");
    assert_eq!(wire, "", "no DATA");
    assert_eq!(events, [Event::TransactionDone, Event::Ready]);
    assert_eq!(h.start(&tx("s@y.test", 10), &[rcpt("b@x.test")]).0, "RSET\r\n");
    let (wire, events) = h.server("500 5.5.1 what\r\n");
    assert_eq!(wire, "QUIT\r\n");
    assert_eq!(events[0], Event::TransactionDone);
    let o = &h.c.result().recipients()[0];
    assert_eq!((o.status, o.stage), (Deferred, Stage::Rset));
    assert!(matches!(closed_reason(&events), CloseReason::Failed { stage: Stage::Rset, .. }));
}

#[test]
fn mail_refused_decides_every_recipient_and_needs_no_rset() {
    let mut h = H::ready(EHLO_PLAIN);
    h.start(&tx("s@y.test", 10), &[rcpt("a@x.test"), rcpt("b@x.test")]);
    let (wire, events) = h.server("451 4.7.1 greylisted\r\n");
    assert_eq!(wire, "", "no RCPT after a refused MAIL");
    assert_eq!(events, [Event::TransactionDone, Event::Ready]);
    assert_eq!(h.statuses(), [(Deferred, Stage::Mail, 451), (Deferred, Stage::Mail, 451)]);
    assert!(h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]).0.starts_with("MAIL FROM"));
    // Pipelined, 5xx: later replies (503s) change nothing.
    let mut h = H::ready(EHLO_FULL);
    h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]);
    let (_, events) = h.server("550 5.7.1 sender refused\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need RCPT\r\n");
    assert_eq!(events, [Event::TransactionDone, Event::Ready]);
    assert_eq!(h.statuses(), [(Failed, Stage::Mail, 550)]);
}

#[test]
fn data_refused_defers_or_fails_the_accepted_recipients() {
    for (code, status) in [("451 4.3.0 later", Deferred), ("554 5.7.0 no", Failed)] {
        let mut h = H::ready(EHLO_FULL);
        h.start(&tx("s@y.test", 10), &[rcpt("a@x.test"), rcpt("b@x.test")]);
        let (_, events) = h.server(&format!("250 ok\r\n250 ok\r\n550 no\r\n{code}\r\n"));
        assert_eq!(events, [Event::TransactionDone, Event::Ready]);
        assert_eq!(h.statuses()[0].0, status);
        assert_eq!(h.statuses()[0].1, Stage::Data);
        assert_eq!(h.statuses()[1].0, Failed);
        assert_eq!(h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]).0, "RSET\r\n");
    }
}

#[test]
fn final_reply_decides_the_accepted_recipients() {
    for (code, status, outcome) in [
        ("250 ok", Delivered, MessageOutcome::Delivered),
        ("452 4.3.1 full", Deferred, MessageOutcome::Refused),
        ("550 5.7.1 spam", Failed, MessageOutcome::Refused),
    ] {
        let mut h = H::ready(EHLO_FULL);
        h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]);
        h.server("250 ok\r\n250 ok\r\n354 go\r\n");
        h.body(&[b"hello"]);
        h.server(&format!("{code}\r\n"));
        assert_eq!(h.statuses(), [(status, Stage::DataEnd, code[..3].parse().unwrap())]);
        assert_eq!(h.c.result().message(), outcome);
        assert!(h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]).0.starts_with("MAIL"), "no RSET after a final reply");
    }
}

#[test]
fn reply_421_anywhere_defers_every_open_recipient_and_closes() {
    let mut h = H::ready(EHLO_FULL);
    h.start(&tx("s@y.test", 10), &[rcpt("a@x.test"), rcpt("b@x.test"), rcpt("c@x.test")]);
    let (wire, events) = h.server("250 ok\r\n550 5.1.1 no\r\n421 4.7.0 closing\r\n");
    assert_eq!(wire, "", "no QUIT: the server is closing");
    assert_eq!(events[0], Event::TransactionDone);
    assert_eq!(h.statuses(), [(Failed, Stage::Rcpt, 550), (Deferred, Stage::Rcpt, 421), (Deferred, Stage::Rcpt, 421)]);
    let CloseReason::Failed { stage, reply, .. } = closed_reason(&events) else { panic!() };
    assert_eq!((*stage, reply.code()), (Stage::Rcpt, 421));
    assert!(h.c.is_closed());
    assert_eq!(h.server("250 more\r\n"), (String::new(), vec![]), "input after close is ignored");

    // While idle: just closed.
    let mut h = H::ready(EHLO_FULL);
    let (_, events) = h.server("421 4.4.2 idle timeout\r\n");
    assert!(matches!(closed_reason(&events), CloseReason::Failed { stage: Stage::Idle, .. }));
    // At the final reply: the message was refused.
    let mut h = H::ready(EHLO_FULL);
    h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]);
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    h.body(&[b"x"]);
    h.server("421 4.3.2 shutting down\r\n");
    assert_eq!(h.statuses(), [(Deferred, Stage::DataEnd, 421)]);
    assert_eq!(h.c.result().message(), MessageOutcome::Refused);
}

#[test]
fn connection_lost_after_the_data_may_have_delivered() {
    let mut h = H::ready(EHLO_FULL);
    h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]);
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    h.body(&[b"x"]);
    let mut out = Output::default();
    h.c.connection_lost(&mut out);
    assert_eq!(out.events[0], Event::TransactionDone);
    let o = &h.c.result().recipients()[0];
    assert_eq!((o.status, o.stage, o.cause), (Deferred, Stage::DataEnd, Cause::ConnectionLost));
    assert!(o.reply.text().contains("delivered twice"), "{}", o.reply);
    assert_eq!(h.c.result().message(), MessageOutcome::Unknown);
    assert!(matches!(out.events[1], Event::Closed(CloseReason::Failed { cause: Cause::ConnectionLost, .. })));
}

#[test]
fn timeouts_defer_and_name_the_stage() {
    let mut h = H::ready(EHLO_FULL);
    h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]);
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    assert_eq!(h.c.timeout(), Some(TimeoutKind::DataBlock));
    assert_eq!(TimeoutKind::DataBlock.rfc5321(), Duration::from_secs(180));
    let mut out = Output::default();
    assert!(h.c.write_body(b"partial", &mut out));
    out.clear();
    h.c.timed_out(&mut out);
    assert!(out.wire.is_empty());
    let o = &h.c.result().recipients()[0];
    assert_eq!((o.status, o.stage, o.cause), (Deferred, Stage::Body, Cause::Timeout));
    assert_eq!(h.c.result().message(), MessageOutcome::NotSent, "a message cut off mid-content is not delivered");
    assert!(!h.c.write_body(b"more", &mut out), "no content after close");
    assert_eq!(h.c.timeout(), None);
}

#[test]
fn rfc5321_timeout_values() {
    let table = [
        (TimeoutKind::Greeting, 300),
        (TimeoutKind::Mail, 300),
        (TimeoutKind::Rcpt, 300),
        (TimeoutKind::DataInit, 120),
        (TimeoutKind::DataBlock, 180),
        (TimeoutKind::DataTermination, 600),
        (TimeoutKind::Command, 300),
    ];
    for (k, secs) in table {
        assert_eq!(k.rfc5321(), Duration::from_secs(secs), "{k:?}");
    }
}

#[test]
fn server_refusing_mid_content_stops_the_body() {
    let mut h = H::ready(EHLO_FULL);
    h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]);
    h.server("250 ok\r\n250 ok\r\n354 go\r\n");
    let (_, events) = h.server("552 5.3.4 too much\r\n");
    assert_eq!(events[0], Event::TransactionDone);
    assert_eq!(h.statuses(), [(Failed, Stage::Body, 552)]);
    assert!(matches!(closed_reason(&events), CloseReason::Failed { stage: Stage::Body, .. }));
    let mut out = Output::default();
    assert!(!h.c.write_body(b"x", &mut out) && !h.c.finish_body(&mut out));
    assert!(out.wire.is_empty());
}

#[test]
fn unexpected_and_malformed_replies_are_protocol_errors() {
    let mut h = H::ready(EHLO_FULL);
    let (_, events) = h.server("250 hello?\r\n");
    assert!(matches!(closed_reason(&events), CloseReason::Failed { cause: Cause::Protocol, .. }));
    let mut h = H::ready(EHLO_FULL);
    h.start(&tx("s@y.test", 10), &[rcpt("a@x.test")]);
    let (_, events) = h.server("250 ok\r\nHTTP/1.1 400 Bad Request\r\n");
    assert_eq!(events[0], Event::TransactionDone);
    assert_eq!(h.c.result().recipients()[0].cause, Cause::Protocol);
    assert!(h.c.is_closed());
}

#[test]
fn quit_ends_an_idle_connection() {
    let mut h = H::ready(EHLO_FULL);
    let mut out = Output::default();
    assert!(h.c.quit(&mut out));
    assert_eq!(out.wire, b"QUIT\r\n");
    assert_eq!(h.server("221 2.0.0 bye\r\n").1, [Event::Closed(CloseReason::Quit)]);
    // A server that closes without 221 is fine too.
    let mut h = H::ready(EHLO_FULL);
    let mut out = Output::default();
    h.c.quit(&mut out);
    out.clear();
    h.c.connection_lost(&mut out);
    assert_eq!(out.events, [Event::Closed(CloseReason::Quit)]);
}

#[test]
fn start_transaction_misuse_is_refused() {
    let mut h = H::plain();
    let mut out = Output::default();
    assert_eq!(h.c.start_transaction(&tx("s@y.test", 1), &[rcpt("a@x.test")], &mut out), Err(StartError::NotReady));
    let mut h = H::ready(EHLO_FULL);
    assert_eq!(h.c.start_transaction(&tx("s@y.test", 1), &[], &mut out), Err(StartError::NoRecipients));
    let many = vec![rcpt("a@x.test"); TRANSACTION_RECIPIENTS_MAX + 1];
    assert_eq!(h.c.start_transaction(&tx("s@y.test", 1), &many, &mut out), Err(StartError::TooManyRecipients));
    h.start(&tx("s@y.test", 1), &[rcpt("a@x.test")]);
    assert_eq!(h.c.start_transaction(&tx("s@y.test", 1), &[rcpt("a@x.test")], &mut out), Err(StartError::NotReady));
}

#[test]
fn buffers_are_reused_across_transactions() {
    let mut h = H::ready(EHLO_FULL);
    let rcpts: Vec<Recipient> = (0..20).map(|i| rcpt(&format!("r{i}@x.test"))).collect();
    let mut caps = None;
    for round in 0..5 {
        h.start(&tx("s@y.test", 10), &rcpts);
        let mut replies = "250 ok\r\n".repeat(21);
        replies.push_str("354 go\r\n");
        h.server(&replies);
        h.body(&[b"x"]);
        h.server("250 2.0.0 queued with a reasonably long reply text\r\n");
        let now = (h.c.result().outcomes.capacity(), h.c.plan.commands.capacity(), h.c.plan.spans.capacity());
        if round > 0 {
            assert_eq!(Some(now), caps, "steady state allocates no new buffers");
        }
        caps = Some(now);
    }
}

// ---- property test: outcomes match a naive model, pipelined or not ------------------------------

/// Reply codes the scripted server uses.
fn code_strategy() -> impl Strategy<Value = u16> {
    prop_oneof![Just(250u16), Just(251), Just(421), Just(451), Just(452), Just(550), Just(554)]
}

#[derive(Debug, Clone)]
struct Script {
    mail: u16,
    rcpts: Vec<u16>,
    /// 354 or a refusal.
    data: u16,
    last: u16,
}

fn script_strategy() -> impl Strategy<Value = Script> {
    (
        code_strategy(),
        proptest::collection::vec(code_strategy(), 1..6),
        prop_oneof![Just(354u16), Just(354), Just(451), Just(554), Just(421)],
        code_strategy(),
    )
        .prop_map(|(mail, rcpts, data, last)| Script { mail, rcpts, data, last })
}

/// The rules, written out the obvious way: (status, stage) per recipient, and whether the
/// message content must appear on the wire.
fn naive_outcomes(s: &Script) -> (Vec<(RecipientStatus, Stage)>, bool) {
    let of = |code: u16| if code / 100 == 5 { Failed } else { Deferred };
    let n = s.rcpts.len();
    if s.mail / 100 != 2 {
        return (vec![(of(s.mail), Stage::Mail); n], false);
    }
    let mut out = Vec::new();
    let mut open = Vec::new();
    let mut closed_at = None;
    for (i, &c) in s.rcpts.iter().enumerate() {
        if closed_at.is_some() {
            out.push((Deferred, Stage::Rcpt));
            continue;
        }
        if c == 421 {
            closed_at = Some(i);
            out.push((Deferred, Stage::Rcpt));
            for &j in &open {
                out[j] = (Deferred, Stage::Rcpt);
            }
            continue;
        }
        if c / 100 == 2 {
            open.push(i);
            out.push((Delivered, Stage::Rcpt)); // provisional
        } else {
            out.push((of(c), Stage::Rcpt));
        }
    }
    if closed_at.is_some() || open.is_empty() {
        return (out, false);
    }
    if s.data != 354 {
        for &j in &open {
            out[j] = (of(s.data), Stage::Data);
        }
        return (out, false);
    }
    let last = if s.last / 100 == 2 { Delivered } else { of(s.last) };
    for &j in &open {
        out[j] = (last, Stage::DataEnd);
    }
    (out, true)
}

/// A server that answers each command the client writes from the script.
fn run_script(s: &Script, pipelining: bool) -> (Vec<(RecipientStatus, Stage)>, bool) {
    let ehlo = if pipelining { "250-mx\r\n250 PIPELINING\r\n" } else { "250 mx\r\n" };
    let mut h = H::ready(ehlo);
    let rcpts: Vec<Recipient> = (0..s.rcpts.len()).map(|i| rcpt(&format!("r{i}@x.test"))).collect();
    let (mut wire, _) = h.start(&tx("s@y.test", 10), &rcpts);
    let mut content_seen = false;
    let mut in_data = false;
    let mut next_rcpt = 0;
    let mut done = false;
    for _ in 0..100 {
        if done || wire.is_empty() {
            break;
        }
        let mut replies = String::new();
        for line in wire.split_inclusive("\r\n") {
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    replies.push_str(&format!("{} final\r\n", s.last));
                } else {
                    content_seen |= line.contains("SECRET-CONTENT");
                }
                continue;
            }
            let code = if line.starts_with("MAIL") {
                s.mail
            } else if line.starts_with("RCPT") {
                next_rcpt += 1;
                s.rcpts[next_rcpt - 1]
            } else if line.starts_with("DATA") {
                in_data = s.data == 354;
                s.data
            } else {
                panic!("unexpected command {line:?}");
            };
            replies.push_str(&format!("{code} scripted\r\n"));
        }
        let (w, events) = h.server(&replies);
        wire = w;
        for e in &events {
            match e {
                Event::SendBody => wire.push_str(&h.body(&[b"SECRET-CONTENT\r\n"])),
                Event::TransactionDone | Event::Closed(_) => done = true,
                _ => {}
            }
        }
    }
    assert!(done, "the transaction must end");
    let statuses = h.c.result().recipients().iter().map(|o| (o.status, o.stage)).collect();
    (statuses, content_seen)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]
    #[test]
    fn outcomes_match_the_naive_model(script in script_strategy(), pipelining in any::<bool>()) {
        prop_assert_eq!(run_script(&script, pipelining), naive_outcomes(&script));
    }
}

// ---- against ringrelay's own server -------------------------------------------------------------

struct SinkHost {
    ids: QueueIdGen,
}

impl Host for SinkHost {
    fn now_ms(&self) -> u64 {
        1_764_000_000_000
    }
    fn date_rfc5322(&self) -> String {
        "Tue, 25 Nov 2025 10:00:00 +0000".into()
    }
    fn next_queue_id(&mut self) -> QueueId {
        self.ids.next(1_764_000_000_000)
    }
    fn check_mail(&mut self, _: &Envelope) -> Result<(), Reply> {
        Ok(())
    }
    fn check_rcpt(&mut self, _: &Envelope, address: &str) -> Result<(), Reply> {
        if address.ends_with("@blocked.test") { Err(crate::smtp::reply::RELAY_DENIED) } else { Ok(()) }
    }
    fn check_auth(&mut self, _: IpAddr) -> Result<(), Reply> {
        Ok(())
    }
    fn may_send_as(&self, _: &str, _: &str) -> bool {
        true
    }
}

/// Client and server wired back to back; collects what the server stored.
struct Loop {
    client: ClientSession,
    server: Session,
    host: SinkHost,
    stored: Vec<(Envelope, Vec<u8>)>,
    to_server: Vec<u8>,
    to_client: Vec<u8>,
}

impl Loop {
    fn new(tls: Tls, starttls: bool) -> Loop {
        let cfg = SessionConfig {
            hostname: "mx.test".into(),
            connector: "default".into(),
            max_command_line: 2048,
            max_message_size: 1 << 20,
            max_recipients: 100,
            max_bad_commands: 5,
            bare_lf: BareLf::Reject,
            starttls,
            require_tls: false,
            auth: vec![],
            anonymous: true,
        };
        let server = Session::new(Rc::new(cfg), IpAddr::V4(Ipv4Addr::LOCALHOST), false);
        let mut greeting = session::Output::default();
        server.greet(&mut greeting);
        Loop {
            client: ClientSession::new(Rc::new(ClientConfig::new("relay.test", tls))),
            server,
            host: SinkHost { ids: QueueIdGen::new(0, QueueId::default()) },
            stored: Vec::new(),
            to_server: Vec::new(),
            to_client: greeting.wire,
        }
    }

    /// Runs until the client has nothing more to say; returns the client's events.
    /// `message` is fed in `chunk`-byte pieces when the client asks for the body.
    fn pump(&mut self, message: &[u8], chunk: usize) -> Vec<Event> {
        let mut events = Vec::new();
        for _ in 0..1000 {
            if self.to_client.is_empty() && self.to_server.is_empty() {
                break;
            }
            let mut out = Output::default();
            let n = self.client.receive(&self.to_client, &mut out);
            self.to_client.drain(..n);
            self.to_server.extend_from_slice(&out.wire);
            for e in out.events {
                match &e {
                    Event::SendBody => {
                        let mut body = Output::default();
                        for piece in message.chunks(chunk.max(1)) {
                            assert!(self.client.write_body(piece, &mut body));
                        }
                        self.client.finish_body(&mut body);
                        self.to_server.extend_from_slice(&body.wire);
                    }
                    Event::NeedTls => {
                        let mut out = Output::default();
                        self.server.tls_started();
                        self.client.tls_established(&mut out);
                        self.to_server.extend_from_slice(&out.wire);
                    }
                    _ => {}
                }
                events.push(e);
            }
            let mut sout = session::Output::default();
            let n = self.server.receive(&self.to_server, &mut self.host, &mut sout);
            self.to_server.drain(..n);
            if sout.action == Some(session::Action::Persist) {
                self.stored.push((self.server.envelope().clone(), self.server.message().to_vec()));
                self.server.persisted(Ok(()), &mut sout);
                // Pipelined commands left over are served on the next turn.
            }
            if sout.action == Some(session::Action::StartTls) {
                self.to_server.clear(); // the runtime discards plaintext after STARTTLS
            }
            self.to_client.extend_from_slice(&sout.wire);
        }
        events
    }

    fn send(&mut self, tx: &Transaction<'_>, rcpts: &[Recipient], message: &[u8], chunk: usize) -> Vec<Event> {
        let mut out = Output::default();
        self.client.start_transaction(tx, rcpts, &mut out).unwrap();
        self.to_server.extend_from_slice(&out.wire);
        let mut events = out.events;
        events.extend(self.pump(message, chunk));
        events
    }
}

/// The body our server stores for a message: the canonical CRLF form (after its Received:).
fn canonical(message: &[u8]) -> Vec<u8> {
    let mut wire = Vec::new();
    crate::delivery::data::encode_message(message, &mut wire);
    let mut s = crate::smtp::scanner::DataScanner::new(u64::MAX, BareLf::Reject);
    let mut body = Vec::new();
    assert!(s.feed(&wire, &mut body).done);
    body
}

#[test]
fn delivers_to_ringrelay_server_with_starttls_pipelining_and_dsn_params() {
    let mut l = Loop::new(Tls::Opportunistic, true);
    let events = l.pump(b"", 1);
    assert_eq!(events, [Event::NeedTls, Event::Ready]);
    assert!(l.client.tls_active());
    let caps = *l.client.capabilities();
    assert!(caps.pipelining && caps.dsn && caps.smtputf8 && !caps.starttls, "{caps:?}");

    let mut rcpts = vec![rcpt("a@x.test"), rcpt("b@blocked.test"), rcpt("c@x.test")];
    rcpts[0].notify = Notify(Notify::SUCCESS);
    rcpts[0].orcpt = Some("rfc822;a@x.test".into());
    let message = b"Subject: test\r\n\r\n.leading dot\nbare LF\rbare CR\r\n.\r\nnot the end\r\n..\r\n";
    let t = Transaction {
        sender: "s@y.test",
        size: message.len() as u64,
        body: BodyType::EightBitMime,
        eight_bit: true,
        smtputf8: false,
        ret: Some(Ret::Full),
        envid: Some("id+2B1"),
    };
    for chunk in [1, 3, 7, 1000] {
        l.stored.clear();
        let events = l.send(&t, &rcpts, message, chunk);
        assert_eq!(events, [Event::SendBody, Event::TransactionDone, Event::Ready], "chunk {chunk}");
        let statuses: Vec<_> = l.client.result().recipients().iter().map(|o| o.status).collect();
        assert_eq!(statuses, [Delivered, Failed, Delivered]);
        assert_eq!(l.client.result().recipients()[1].reply.status().to_string(), "5.7.54");
        let (env, stored) = &l.stored[0];
        assert_eq!(env.sender, "s@y.test");
        assert_eq!(env.recipients.iter().map(|r| r.address.as_str()).collect::<Vec<_>>(), ["a@x.test", "c@x.test"]);
        assert_eq!(env.recipients[0].notify, Notify(Notify::SUCCESS));
        assert_eq!(env.recipients[0].orcpt.as_deref(), Some("rfc822;a@x.test"));
        assert_eq!(
            (env.ret, env.envid.as_deref(), env.body_type),
            (Some(Ret::Full), Some("id+2B1"), BodyType::EightBitMime)
        );
        assert!(stored.ends_with(&canonical(message)), "stored {:?}", String::from_utf8_lossy(stored));
    }
    assert_eq!(l.client.transactions(), 4);
}

#[test]
fn ringrelay_server_refusing_every_recipient_then_reuse_with_rset() {
    let mut l = Loop::new(Tls::Off, true);
    assert_eq!(l.pump(b"", 1), [Event::Ready]);
    let events = l.send(&tx("s@y.test", 5), &[rcpt("a@blocked.test")], b"never", 10);
    assert_eq!(events, [Event::TransactionDone, Event::Ready]);
    assert_eq!(l.client.result().message(), MessageOutcome::NotSent);
    assert!(l.stored.is_empty());
    let events = l.send(&tx("s@y.test", 5), &[rcpt("a@x.test")], b"hello", 10);
    assert_eq!(events, [Event::SendBody, Event::TransactionDone, Event::Ready]);
    assert_eq!(l.client.result().recipients()[0].status, Delivered);
    assert_eq!(l.stored.len(), 1);
    let mut out = Output::default();
    l.client.quit(&mut out);
    l.to_server.extend_from_slice(&out.wire);
    assert_eq!(l.pump(b"", 1), [Event::Closed(CloseReason::Quit)]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Whatever the message bytes and however the body is chunked, our own server stores
    /// exactly the canonical message and the transaction ends once.
    #[test]
    fn any_message_survives_the_round_trip(
        message in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), any::<u8>()], 0..400),
        chunk in 1usize..64,
        pipelining_server in any::<bool>(),
    ) {
        let mut l = Loop::new(Tls::Off, false);
        l.pump(b"", 1);
        if !pipelining_server {
            l.client.caps.pipelining = false;
        }
        let events = l.send(&tx("s@y.test", message.len() as u64), &[rcpt("a@x.test")], &message, chunk);
        prop_assert_eq!(events, vec![Event::SendBody, Event::TransactionDone, Event::Ready]);
        prop_assert_eq!(l.stored.len(), 1);
        let expected = canonical(&message);
        prop_assert!(l.stored[0].1.ends_with(&expected));
    }
}
