//! Session tests: whole conversations as bytes in, bytes out, with a plain-struct `Host`.

use super::*;
use crate::smtp::envelope::{Notify, QueueIdGen};
use std::net::Ipv4Addr;

struct TestHost {
    ids: QueueIdGen,
    mail_refusal: Option<Reply>,
    locked_out: bool,
    /// (user, allowed sender)
    send_as: Vec<(&'static str, &'static str)>,
}

impl TestHost {
    fn new() -> TestHost {
        TestHost { ids: QueueIdGen::new(0, QueueId::default()), mail_refusal: None, locked_out: false, send_as: vec![] }
    }
}

impl Host for TestHost {
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
        self.mail_refusal.map_or(Ok(()), Err)
    }
    fn check_rcpt(&mut self, _: &Envelope, address: &str) -> Result<(), Reply> {
        if address.ends_with("@blocked.test") { Err(reply::RELAY_DENIED) } else { Ok(()) }
    }
    fn check_auth(&mut self, _: IpAddr) -> Result<(), Reply> {
        if self.locked_out { Err(reply::AUTH_LOCKED) } else { Ok(()) }
    }
    fn may_send_as(&self, user: &str, address: &str) -> bool {
        self.send_as.iter().any(|(u, a)| *u == user && a.eq_ignore_ascii_case(address))
    }
}

fn config() -> SessionConfig {
    SessionConfig {
        hostname: "relay.test".into(),
        connector: "default".into(),
        max_command_line: 512,
        max_message_size: 1000,
        max_recipients: 3,
        max_bad_commands: 5,
        bare_lf: BareLf::Reject,
        starttls: true,
        require_tls: false,
        auth: vec![],
        anonymous: true,
    }
}

/// A session plus the bytes it has not consumed yet, as the runtime keeps them.
struct Harness {
    s: Session,
    host: TestHost,
    pending: Vec<u8>,
}

impl Harness {
    fn new(cfg: SessionConfig) -> Harness {
        Harness::with_tls(cfg, false)
    }
    fn with_tls(cfg: SessionConfig, tls: bool) -> Harness {
        let s = Session::new(Rc::new(cfg), IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)), tls);
        Harness { s, host: TestHost::new(), pending: Vec::new() }
    }
    /// Feeds bytes; returns the reply text and the action asked for.
    fn send(&mut self, bytes: &[u8]) -> (String, Option<Action>) {
        self.pending.extend_from_slice(bytes);
        let mut out = Output::default();
        let n = self.s.receive(&self.pending, &mut self.host, &mut out);
        self.pending.drain(..n);
        (String::from_utf8(out.wire).unwrap(), out.action)
    }
    fn text(&mut self, bytes: &str) -> String {
        let (t, a) = self.send(bytes.as_bytes());
        assert_eq!(a, None, "unexpected action after {bytes:?}: {t}");
        t
    }
    fn persist(&mut self) -> String {
        let mut out = Output::default();
        self.s.persisted(Ok(()), &mut out);
        String::from_utf8(out.wire).unwrap()
    }
    fn resume(&mut self) -> (String, Option<Action>) {
        self.send(b"")
    }
}

fn codes(text: &str) -> Vec<&str> {
    text.split("\r\n").filter(|l| !l.is_empty()).map(|l| &l[..3]).collect()
}

#[test]
fn greeting_and_ehlo_capabilities() {
    let h = Harness::new(config());
    let mut out = Output::default();
    h.s.greet(&mut out);
    assert_eq!(out.wire, b"220 relay.test ESMTP ringrelay\r\n");
    let mut h = h;
    let ehlo = h.text("EHLO client.test\r\n");
    for cap in ["PIPELINING", "SIZE 1000", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "DSN", "STARTTLS"]
    {
        assert!(ehlo.contains(&format!("250-{cap}\r\n")), "{cap} missing in {ehlo}");
    }
    assert!(ehlo.starts_with("250-relay.test Hello [192.0.2.7]\r\n"));
    assert!(ehlo.ends_with("250 HELP\r\n"));
    assert!(!ehlo.contains("AUTH"), "no AUTH on an anonymous connector");
    assert_eq!(h.text("HELO x\r\n"), "250 relay.test Hello [192.0.2.7]\r\n");
}

#[test]
fn pipelined_transaction_is_queued_only_after_durable() {
    let mut h = Harness::new(config());
    let (t, a) = h.send(
        b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test> NOTIFY=SUCCESS\r\nRCPT TO:<c@z.test>\r\nDATA\r\n\
          Subject: hi\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(a, Some(Action::Persist));
    assert_eq!(codes(&t), ["250"; 10].iter().copied().chain(["250", "250", "250", "354"]).collect::<Vec<_>>());
    assert!(!t.contains("2.6.0"), "no queued reply before the spool confirms");
    let e = h.s.envelope();
    assert_eq!(e.sender, "a@x.test");
    assert_eq!(e.received_at_ms, 1_764_000_000_000, "arrival time stamped when the data starts");
    assert_eq!(e.recipients.len(), 2);
    assert_eq!(e.recipients[0].notify, Notify(Notify::SUCCESS));
    let msg = String::from_utf8(h.s.message().to_vec()).unwrap();
    assert!(msg.starts_with("Received: from c ([192.0.2.7])\r\n\tby relay.test (ringrelay) with ESMTP id "), "{msg}");
    assert!(msg.ends_with("\r\nSubject: hi\r\n\r\n.dot\r\n"), "{msg}");
    let qid = e.queue_id;
    // Still waiting: more input is not looked at.
    assert_eq!(h.resume(), (String::new(), None));
    assert_eq!(h.pending, b"QUIT\r\n");
    assert_eq!(h.persist(), format!("250 2.6.0 <{qid}> Queued mail for delivery\r\n"));
    let (t, a) = h.resume();
    assert!(t.starts_with("221 2.0.0"));
    assert_eq!(a, Some(Action::Close));
}

#[test]
fn spool_failure_is_a_temporary_reply_and_nothing_queued() {
    let mut h = Harness::new(config());
    let (_, a) = h.send(b"HELO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(a, Some(Action::Persist));
    let mut out = Output::default();
    h.s.persisted(Err(reply::SPOOL_FAILED), &mut out);
    assert!(String::from_utf8(out.wire).unwrap().starts_with("451 4.3.0"));
    assert_eq!(h.text("RCPT TO:<b@y.test>\r\n"), "503 5.5.1 Need MAIL before RCPT\r\n");
}

#[test]
fn sequence_errors_and_rset() {
    let mut cfg = config();
    cfg.max_bad_commands = 100;
    let mut h = Harness::new(cfg);
    assert!(h.text("MAIL FROM:<a@x.test>\r\n").starts_with("503 5.5.1 Send EHLO"));
    h.text("EHLO c\r\n");
    assert!(h.text("RCPT TO:<b@y.test>\r\n").starts_with("503"));
    assert!(h.text("DATA\r\n").starts_with("503"));
    assert!(h.text("MAIL FROM:<a@x.test>\r\n").starts_with("250 2.1.0"));
    assert!(h.text("MAIL FROM:<a@x.test>\r\n").starts_with("503 5.5.1 Sender already"));
    assert!(h.text("DATA\r\n").starts_with("554 5.5.1 No valid recipients"));
    assert_eq!(h.text("RSET\r\n"), "250 2.0.0 Resetting\r\n");
    assert!(h.text("RCPT TO:<b@y.test>\r\n").starts_with("503"));
    assert!(h.text("MAIL FROM:<a@x.test>\r\n").starts_with("250"));
    assert!(h.text("RCPT TO:<b@blocked.test>\r\n").starts_with("550 5.7.54"));
    assert!(h.text("VRFY b\r\n").starts_with("252"));
    assert!(h.text("NOOP\r\n").starts_with("250"));
    assert!(h.text("EXPN list\r\n").starts_with("502"));
    assert!(h.text("HELP\r\n").starts_with("214"));
}

#[test]
fn limits_on_size_and_recipients() {
    let mut h = Harness::new(config());
    h.text("EHLO c\r\n");
    assert!(h.text("MAIL FROM:<a@x.test> SIZE=1001\r\n").starts_with("552 5.3.4"));
    assert!(h.text("MAIL FROM:<a@x.test> SIZE=1000\r\n").starts_with("250"));
    for r in ["a", "b", "c"] {
        assert!(h.text(&format!("RCPT TO:<{r}@y.test>\r\n")).starts_with("250"));
    }
    assert_eq!(h.text("RCPT TO:<d@y.test>\r\n"), "452 4.5.3 Too many recipients\r\n");
    assert!(h.text("DATA\r\n").starts_with("354"));
    let big = format!("{}\r\n.\r\n", "x".repeat(1200));
    assert_eq!(h.text(&big), "552 5.3.4 Message size exceeds fixed maximum message size\r\n");
    // Nothing kept: the transaction is gone.
    assert!(h.text("RCPT TO:<a@y.test>\r\n").starts_with("503"));
}

#[test]
fn long_lines_are_refused_and_the_session_goes_on() {
    let mut h = Harness::new(config());
    let long = format!("NOOP {}\r\n", "a".repeat(600));
    assert_eq!(h.text(&long), "500 5.5.2 Line too long\r\n");
    // Split across reads, too.
    let (first, second) = long.split_at(300);
    assert_eq!(h.text(first), "");
    assert_eq!(h.text(second), "500 5.5.2 Line too long\r\n");
    assert!(h.pending.is_empty(), "an over-long line is never buffered whole");
    assert_eq!(h.text("NOOP\r\n"), "250 2.0.0 OK\r\n");
}

#[test]
fn too_many_bad_commands_close_the_session() {
    let mut h = Harness::new(config());
    for _ in 0..5 {
        assert!(h.text("BOGUS\r\n").starts_with("500 5.5.2"));
    }
    let (t, a) = h.send(b"BOGUS\r\nNOOP\r\n");
    assert_eq!(t, "500 5.5.2 Syntax error, command unrecognized\r\n421 4.7.0 Too many errors, closing connection\r\n");
    assert_eq!(a, Some(Action::Close));
    assert!(h.s.is_closed());
}

#[test]
fn bare_line_endings_in_data_are_refused() {
    for body in ["a\nb\r\n.\r\n", "a\rb\r\n.\r\n", "a\r\n.\nMAIL FROM:<x@y.test>\r\n.\r\n"] {
        let mut h = Harness::new(config());
        h.text("EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
        let t = h.text(body);
        assert!(t.starts_with("550 5.6.0"), "{body:?}: {t}");
        assert_eq!(codes(&t).len(), 1, "smuggled commands must not run: {t}");
    }
}

#[test]
fn bare_lf_normalized_when_configured() {
    let mut cfg = config();
    cfg.bare_lf = BareLf::Normalize;
    let mut h = Harness::new(cfg);
    h.text("EHLO c\nMAIL FROM:<a@x.test>\nRCPT TO:<b@y.test>\nDATA\n");
    let (t, a) = h.send(b"line1\nline2\n.\n.\r\n");
    assert_eq!((t.as_str(), a), ("", None), "`.\\n` is not the end of data");
    let (_, a) = h.send(b"tail\r\n.\r\n");
    assert_eq!(a, Some(Action::Persist));
    assert!(h.s.message().ends_with(b"\r\nline1\r\nline2\r\n\r\n\r\ntail\r\n"));
}

#[test]
fn command_lines_with_bare_lf_are_refused_in_reject_mode() {
    let mut h = Harness::new(config());
    assert!(h.text("EHLO c\n").starts_with("500 5.5.2 Command lines must end with CRLF"));
}

#[test]
fn bdat_chunks() {
    let mut h = Harness::new(config());
    h.text("EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n");
    assert_eq!(h.text("BDAT 5\r\nSubj:"), "250 2.0.0 5 octets received\r\n");
    let (t, a) = h.send(b"BDAT 6 LAST\r\n x\r\n\r\nNOOP\r\n");
    assert_eq!((t.as_str(), a), ("", Some(Action::Persist)));
    assert!(h.s.message().ends_with(b"Subj: x\r\n\r\n"));
    assert!(h.persist().starts_with("250 2.6.0"));
    assert_eq!(h.resume().0, "250 2.0.0 OK\r\n");
    // DATA after BDAT is refused; BDAT without a transaction discards its chunk.
    h.text("MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n");
    h.text("BDAT 3\r\nabc");
    assert!(h.text("DATA\r\n").starts_with("503 5.5.1 DATA not allowed after BDAT"));
    h.text("RSET\r\n");
    let t = h.text("BDAT 10 LAST\r\nNOOP\r\nNOOPNOOP\r\n");
    assert_eq!(codes(&t), ["503", "250"], "the 10 chunk bytes are dropped, not run: {t}");
}

#[test]
fn bdat_with_bare_lf_refused() {
    let mut h = Harness::new(config());
    h.text("EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n");
    assert!(h.text("BDAT 4 LAST\r\na\nb\r").starts_with("550 5.6.0"));
}

#[test]
fn starttls_stops_at_the_command_and_resets_state() {
    let mut h = Harness::new(config());
    h.text("EHLO c\r\n");
    let (t, a) = h.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n");
    assert_eq!(t, "220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(a, Some(Action::StartTls));
    assert_eq!(h.pending, b"MAIL FROM:<evil@x.test>\r\n", "the runtime sees what must be discarded");
    h.pending.clear();
    h.s.tls_started();
    assert!(h.text("MAIL FROM:<a@x.test>\r\n").starts_with("503 5.5.1 Send EHLO"), "EHLO again after TLS");
    let ehlo = h.text("EHLO c\r\n");
    assert!(!ehlo.contains("STARTTLS"));
    assert!(h.text("STARTTLS\r\n").starts_with("503 5.5.1 TLS already active"));
}

fn auth_config() -> SessionConfig {
    let mut cfg = config();
    cfg.auth = vec![Mechanism::Plain, Mechanism::Login];
    cfg.anonymous = false;
    cfg.require_tls = true;
    cfg
}

fn authenticate(h: &mut Harness, ok: bool) -> String {
    let mut out = Output::default();
    h.s.authenticated(ok, &mut out);
    String::from_utf8(out.wire).unwrap()
}

#[test]
fn auth_requires_tls_and_is_offered_only_under_tls() {
    let mut h = Harness::new(auth_config());
    let ehlo = h.text("EHLO c\r\n");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(h.text("AUTH PLAIN AHUAcA==\r\n"), "530 5.7.0 Must issue a STARTTLS command first\r\n");
    assert_eq!(h.text("MAIL FROM:<a@x.test>\r\n"), "530 5.7.0 Must issue a STARTTLS command first\r\n");
    let mut h = Harness::with_tls(auth_config(), true);
    assert!(h.text("EHLO c\r\n").contains("250-AUTH PLAIN LOGIN\r\n"));
    assert_eq!(
        h.text("MAIL FROM:<a@x.test>\r\n"),
        "530 5.7.57 Client was not authenticated to send anonymous mail during MAIL FROM\r\n"
    );
}

#[test]
fn auth_plain_and_login_exchanges() {
    let mut h = Harness::with_tls(auth_config(), true);
    h.text("EHLO c\r\n");
    let plain = auth::encode(b"\0svc\0pw");
    let (t, a) = h.send(format!("AUTH PLAIN {plain}\r\n").as_bytes());
    assert_eq!((t.as_str(), a), ("", Some(Action::Authenticate)));
    assert_eq!(h.s.credentials(), ("svc", "pw"));
    assert_eq!(authenticate(&mut h, false), "535 5.7.8 Authentication credentials invalid\r\n");
    // PLAIN without initial response.
    assert_eq!(h.text("AUTH PLAIN\r\n"), "334 \r\n");
    assert!(h.s.in_sasl_exchange());
    let (_, a) = h.send(format!("{plain}\r\n").as_bytes());
    assert_eq!(a, Some(Action::Authenticate));
    assert_eq!(authenticate(&mut h, true), "235 2.7.0 Authentication successful\r\n");
    assert_eq!(h.s.auth_user(), Some("svc"));
    assert!(h.text("AUTH PLAIN\r\n").starts_with("503 5.5.1 Already"));
    // LOGIN, fresh session.
    let mut h = Harness::with_tls(auth_config(), true);
    h.text("EHLO c\r\n");
    assert_eq!(h.text("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
    assert_eq!(h.text(&format!("{}\r\n", auth::encode(b"svc"))), "334 UGFzc3dvcmQ6\r\n");
    let (_, a) = h.send(format!("{}\r\n", auth::encode(b"pw")).as_bytes());
    assert_eq!(a, Some(Action::Authenticate));
    assert_eq!(h.s.credentials(), ("svc", "pw"));
    authenticate(&mut h, true);
    // LOGIN with initial response, cancel, garbage, unknown mechanism.
    let mut h = Harness::with_tls(auth_config(), true);
    h.text("EHLO c\r\n");
    assert_eq!(h.text(&format!("AUTH LOGIN {}\r\n", auth::encode(b"svc"))), "334 UGFzc3dvcmQ6\r\n");
    assert!(h.text("*\r\n").starts_with("501 5.7.0"));
    assert!(h.text("AUTH PLAIN !!!\r\n").starts_with("501 5.5.2"));
    assert!(h.text("AUTH CRAM-MD5\r\n").starts_with("504 5.5.4"));
    h.host.locked_out = true;
    assert_eq!(h.text("AUTH LOGIN\r\n"), "454 4.7.0 Temporary authentication failure\r\n");
}

#[test]
fn send_as_on_envelope_and_header_from() {
    let mut h = Harness::with_tls(auth_config(), true);
    h.host.send_as = vec![("svc", "app@example.test")];
    h.text("EHLO c\r\n");
    let (_, a) = h.send(format!("AUTH PLAIN {}\r\n", auth::encode(b"\0svc\0pw")).as_bytes());
    assert_eq!(a, Some(Action::Authenticate));
    authenticate(&mut h, true);
    assert_eq!(
        h.text("MAIL FROM:<ceo@example.test>\r\n"),
        "550 5.7.60 Client does not have permissions to send as this sender\r\n"
    );
    assert!(
        h.text("MAIL FROM:<app@example.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n")
            .ends_with("354 Start mail input; end with <CRLF>.<CRLF>\r\n")
    );
    let t = h.text("From: CEO <ceo@example.test>\r\n\r\nhi\r\n.\r\n");
    assert_eq!(t, "550 5.7.60 Client does not have permissions to send as this sender\r\n");
    h.text("MAIL FROM:<app@example.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    let (_, a) = h.send(b"From: App <APP@example.test>\r\n\r\nhi\r\n.\r\n");
    assert_eq!(a, Some(Action::Persist));
    assert!(h.s.message().starts_with(b"Received: from c ([192.0.2.7])\r\n\tby relay.test (ringrelay) with ESMTPSA"));
}

#[test]
fn mail_refused_by_host_policy() {
    let mut h = Harness::new(config());
    h.host.mail_refusal = Some(reply::NO_STORAGE);
    h.text("EHLO c\r\n");
    assert_eq!(h.text("MAIL FROM:<a@x.test>\r\n"), "452 4.3.1 Insufficient system storage\r\n");
}

#[test]
fn utf8_needs_smtputf8() {
    let mut h = Harness::new(config());
    h.text("EHLO c\r\n");
    assert!(h.text("MAIL FROM:<j\u{f6}rg@x.test>\r\n").starts_with("553 5.6.7"));
    assert!(h.text("MAIL FROM:<a@x.test>\r\n").starts_with("250"));
    assert!(h.text("RCPT TO:<j\u{f6}rg@x.test>\r\n").starts_with("553 5.6.7"));
    h.text("RSET\r\n");
    assert!(h.text("MAIL FROM:<j\u{f6}rg@x.test> SMTPUTF8\r\n").starts_with("250"));
    assert!(h.text("RCPT TO:<j\u{f6}rg@x.test>\r\n").starts_with("250"));
}

#[test]
fn timeouts_close_with_421() {
    let mut h = Harness::new(config());
    assert_eq!(h.s.timeout_kind(), TimeoutKind::Command);
    h.text("EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    assert_eq!(h.s.timeout_kind(), TimeoutKind::Data);
    let mut out = Output::default();
    h.s.timed_out(&mut out);
    assert_eq!(out.wire, b"421 4.4.2 Timeout exceeded, closing connection\r\n");
    assert_eq!(out.action, Some(Action::Close));
}

#[test]
fn every_split_of_a_conversation_gives_the_same_replies() {
    let convo = b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: s\r\n\r\n.x\r\n..\r\n.\r\nNOOP\r\nQUIT\r\n";
    let whole = run_split(convo, convo.len());
    assert!(whole.0.contains("250 2.6.0"));
    assert_eq!(whole.1.len(), 1, "one message persisted");
    assert!(
        whole.1[0].starts_with(b"Received: from c ([192.0.2.7])\r\n"),
        "{:?}",
        String::from_utf8_lossy(&whole.1[0])
    );
    assert!(whole.1[0].ends_with(b"\r\nSubject: s\r\n\r\nx\r\n.\r\n"), "unstuffed body as stored");
    for cut in 0..convo.len() {
        assert_eq!(run_split(convo, cut), whole, "cut at {cut}");
    }
}

/// Feeds `convo` in two reads split at `cut`, completing every Persist with success. Returns
/// the replies and each message as it was when the session asked for it to be stored (after
/// `persisted` the session's buffer is reused and empty).
fn run_split(convo: &[u8], cut: usize) -> (String, Vec<Vec<u8>>) {
    let mut h = Harness::new(config());
    run_split_with(&mut h, convo, cut)
}

fn run_split_with(h: &mut Harness, convo: &[u8], cut: usize) -> (String, Vec<Vec<u8>>) {
    let mut all = String::new();
    let mut messages = Vec::new();
    for part in [&convo[..cut], &convo[cut..]] {
        let (mut t, mut a) = h.send(part);
        while a == Some(Action::Persist) {
            messages.push(h.s.message().to_vec());
            t.push_str(&h.persist());
            let (t2, a2) = h.resume();
            t.push_str(&t2);
            a = a2;
        }
        all.push_str(&t);
    }
    (all, messages)
}

/// The named smuggling vectors in `normalize` mode, at every split of the conversation: a bare
/// LF becomes CRLF but never ends the data, a bare CR is refused, and the commands after the
/// vector are message content, never run. Only the literal `<CRLF>.<CRLF>` ends the data.
#[test]
fn smuggling_vectors_in_normalize_mode_never_end_data_at_any_split() {
    for v in crate::smtp::scanner::SMUGGLING_VECTORS {
        let mut convo =
            b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nSubject: v\r\n\r\nbody".to_vec();
        convo.extend_from_slice(v);
        convo.extend_from_slice(
            b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nforged\r\n.\r\nNOOP\r\n",
        );
        let normalize = || {
            let mut cfg = config();
            cfg.bare_lf = BareLf::Normalize;
            Harness::new(cfg)
        };
        let whole = run_split_with(&mut normalize(), &convo, convo.len());
        let name = String::from_utf8_lossy(v);
        let replies = codes(&whole.0);
        assert_eq!(replies.iter().filter(|c| **c == "354").count(), 1, "{name:?}: the smuggled DATA ran: {}", whole.0);
        assert_eq!(replies.last(), Some(&"250"), "{name:?}: NOOP after the one end of data");
        let bare_cr = v.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n') || v.ends_with(b"\r");
        if bare_cr {
            assert!(whole.1.is_empty(), "{name:?}: bare CR is refused even when normalising");
            assert!(whole.0.contains("550 5.6.0"), "{name:?}: {}", whole.0);
        } else {
            assert_eq!(whole.1.len(), 1, "{name:?}: {}", whole.0);
            let m = &whole.1[0];
            let body = &m[m.windows(4).position(|w| w == b"body").unwrap()..];
            assert!(
                body.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r') && body[0] != b'\n',
                "{name:?}: every LF stored as CRLF: {:?}",
                String::from_utf8_lossy(body)
            );
            assert!(body.ends_with(b"\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nforged\r\n"));
        }
        for cut in 0..convo.len() {
            assert_eq!(run_split_with(&mut normalize(), &convo, cut), whole, "{name:?} cut at {cut}");
        }
    }
}

/// RFC 5321 4.1.1.11 / RFC 1869: service extensions, and so MAIL and RCPT parameters, exist
/// only in a session that began with EHLO.
#[test]
fn esmtp_parameters_after_helo_are_not_recognised() {
    let mut cfg = config();
    cfg.max_bad_commands = 100;
    let mut h = Harness::new(cfg.clone());
    h.text("HELO c\r\n");
    let refused = "555 5.5.4 MAIL and RCPT parameters need EHLO, not HELO\r\n";
    for p in ["SIZE=10", "BODY=8BITMIME", "BODY=7BIT", "SMTPUTF8", "RET=FULL", "ENVID=abc", "AUTH=<>"] {
        assert_eq!(h.text(&format!("MAIL FROM:<a@x.test> {p}\r\n")), refused, "{p}");
    }
    assert_eq!(h.text("MAIL FROM:<a@x.test>\r\n"), "250 2.1.0 Sender OK\r\n");
    for p in ["NOTIFY=SUCCESS", "NOTIFY=NEVER", "ORCPT=rfc822;b@y.test"] {
        assert_eq!(h.text(&format!("RCPT TO:<b@y.test> {p}\r\n")), refused, "{p}");
    }
    assert_eq!(h.text("RCPT TO:<b@y.test>\r\n"), "250 2.1.5 Recipient OK\r\n");
    assert_eq!(h.s.envelope().recipients.len(), 1);
    // The same parameters after EHLO are fine.
    let mut h = Harness::new(cfg);
    h.text("EHLO c\r\n");
    let ok = h.text("MAIL FROM:<a@x.test> SIZE=10 BODY=8BITMIME SMTPUTF8 RET=FULL ENVID=abc\r\n");
    assert_eq!(ok, "250 2.1.0 Sender OK\r\n");
    assert_eq!(h.text("RCPT TO:<b@y.test> NOTIFY=SUCCESS ORCPT=rfc822;b@y.test\r\n"), "250 2.1.5 Recipient OK\r\n");
    assert_eq!(h.s.envelope().envid.as_deref(), Some("abc"));
    assert_eq!(h.s.envelope().recipients[0].orcpt.as_deref(), Some("rfc822;b@y.test"));
}

/// RFC 4954 5: `AUTH=` is a parameter of the AUTH extension; where AUTH is not advertised it
/// is an unknown parameter.
#[test]
fn mail_auth_parameter_only_where_auth_is_advertised() {
    let mut h = Harness::new(config());
    h.text("EHLO c\r\n");
    assert_eq!(h.text("MAIL FROM:<a@x.test> AUTH=<>\r\n"), "555 5.5.4 Unsupported MAIL or RCPT parameter\r\n");
    // AUTH offered (anonymous allowed too, no TLS required): the parameter is taken.
    let mut cfg = config();
    cfg.auth = vec![Mechanism::Plain];
    let mut h = Harness::new(cfg.clone());
    assert!(h.text("EHLO c\r\n").contains("250-AUTH PLAIN\r\n"));
    assert_eq!(h.text("MAIL FROM:<a@x.test> AUTH=<>\r\n"), "250 2.1.0 Sender OK\r\n");
    // AUTH only under TLS, and no TLS yet: not advertised, so not accepted either.
    cfg.require_tls = true;
    let mut h = Harness::new(cfg);
    assert!(!h.text("EHLO c\r\n").contains("AUTH"));
    assert_eq!(h.text("MAIL FROM:<a@x.test> AUTH=<>\r\n"), "555 5.5.4 Unsupported MAIL or RCPT parameter\r\n");
}

#[test]
fn smaller_rfc_points() {
    let mut cfg = config();
    cfg.max_bad_commands = 100;
    let mut h = Harness::new(cfg.clone());
    // VRFY needs an argument (RFC 5321 4.1.1.6).
    assert_eq!(h.text("VRFY\r\n"), "501 5.5.4 Syntax error in parameters or arguments\r\n");
    h.text("EHLO c\r\n");
    // NOTIFY keywords at most once (RFC 3461 4.1); a SIZE past u64 is over the limit.
    assert_eq!(
        h.text("MAIL FROM:<a@x.test> SIZE=184467440737095516160\r\n"),
        "552 5.3.4 Message size exceeds fixed maximum message size\r\n"
    );
    assert_eq!(h.text("MAIL FROM:<a@x.test>\r\n"), "250 2.1.0 Sender OK\r\n");
    assert_eq!(
        h.text("RCPT TO:<b@y.test> NOTIFY=SUCCESS,SUCCESS\r\n"),
        "501 5.5.4 Invalid MAIL or RCPT parameter value\r\n"
    );
    // STARTTLS inside a transaction is refused; after RSET it is taken.
    assert_eq!(h.text("STARTTLS\r\n"), "503 5.5.1 Command not allowed during a mail transaction\r\n");
    assert!(h.s.envelope().sender == "a@x.test", "the transaction is untouched");
    h.text("RSET\r\n");
    assert_eq!(h.send(b"STARTTLS\r\n"), ("220 2.0.0 Ready to start TLS\r\n".to_string(), Some(Action::StartTls)));
    // AUTH needs EHLO, not HELO (and not nothing).
    cfg.auth = vec![Mechanism::Plain, Mechanism::Login];
    let mut h = Harness::new(cfg);
    assert_eq!(h.text("AUTH LOGIN\r\n"), "503 5.5.1 Send EHLO first\r\n");
    h.text("HELO c\r\n");
    assert_eq!(h.text("AUTH LOGIN\r\n"), "503 5.5.1 Send EHLO first\r\n");
    h.text("EHLO c\r\n");
    assert_eq!(h.text("AUTH LOGIN\r\n"), "334 VXNlcm5hbWU6\r\n");
}

/// The `with` protocol names of RFC 3848 and RFC 6531 4.3.
#[test]
fn received_header_names_the_protocol() {
    fn with_of(helo: &str, utf8: bool, tls: bool, auth: bool) -> String {
        let mut cfg = config();
        cfg.auth = vec![Mechanism::Plain];
        let mut h = Harness::with_tls(cfg, tls);
        h.host.send_as = vec![("svc", "a@x.test")];
        h.text(&format!("{helo} c\r\n"));
        if auth {
            let (_, a) = h.send(format!("AUTH PLAIN {}\r\n", auth::encode(b"\0svc\0pw")).as_bytes());
            assert_eq!(a, Some(Action::Authenticate));
            authenticate(&mut h, true);
        }
        let mail = if utf8 { "MAIL FROM:<a@x.test> SMTPUTF8\r\n" } else { "MAIL FROM:<a@x.test>\r\n" };
        h.text(mail);
        // A From the user may send as: authenticated sessions must have one.
        let (_, a) = h.send(b"RCPT TO:<b@y.test>\r\nDATA\r\nFrom: <a@x.test>\r\n\r\nx\r\n.\r\n");
        assert_eq!(a, Some(Action::Persist));
        let m = String::from_utf8(h.s.message().to_vec()).unwrap();
        let with = m.split(" with ").nth(1).unwrap();
        with[..with.find(' ').unwrap()].to_string()
    }
    let cases = [
        ("HELO", false, false, false, "SMTP"),
        ("HELO", false, true, false, "SMTP"),
        ("EHLO", false, false, false, "ESMTP"),
        ("EHLO", false, false, true, "ESMTPA"),
        ("EHLO", false, true, false, "ESMTPS"),
        ("EHLO", false, true, true, "ESMTPSA"),
        ("EHLO", true, false, false, "UTF8SMTP"),
        ("EHLO", true, false, true, "UTF8SMTPA"),
        ("EHLO", true, true, false, "UTF8SMTPS"),
        ("EHLO", true, true, true, "UTF8SMTPSA"),
    ];
    for (helo, utf8, tls, auth, want) in cases {
        assert_eq!(with_of(helo, utf8, tls, auth), want, "{helo} utf8={utf8} tls={tls} auth={auth}");
    }
}

/// An over-long line inside a SASL exchange ends the exchange: the next line is a command,
/// never read as a secret (RFC 4954 4: `500 5.5.6`).
#[test]
fn over_long_line_in_sasl_exchange_ends_it() {
    let long = format!("{}\r\n", "QUJD".repeat(200));
    for (start, challenge) in [("AUTH LOGIN\r\n", "334 VXNlcm5hbWU6\r\n"), ("AUTH PLAIN\r\n", "334 \r\n")] {
        for split in [long.len(), 300] {
            let mut h = Harness::with_tls(auth_config(), true);
            h.text("EHLO c\r\n");
            assert_eq!(h.text(start), challenge);
            let (first, second) = long.split_at(split);
            let mut t = h.text(first);
            t.push_str(&h.text(second));
            assert_eq!(t, "500 5.5.6 Authentication Exchange line is too long\r\n", "{start:?}");
            assert!(!h.s.in_sasl_exchange(), "{start:?}: still reading secrets");
            assert_eq!(h.text("NOOP\r\n"), "250 2.0.0 OK\r\n", "{start:?}: the next line is a command");
        }
    }
    // LOGIN after the user name: the password line is the over-long one; the name is dropped.
    let mut h = Harness::with_tls(auth_config(), true);
    h.text("EHLO c\r\n");
    h.text("AUTH LOGIN\r\n");
    assert_eq!(h.text(&format!("{}\r\n", auth::encode(b"svc"))), "334 UGFzc3dvcmQ6\r\n");
    assert!(h.text(&long).starts_with("500 5.5.6"));
    assert_eq!(h.s.credentials(), ("", ""));
    assert_eq!(h.text("NOOP\r\n"), "250 2.0.0 OK\r\n");
}

/// Shutdown: the transaction in flight finishes; a MAIL pipelined behind it gets `421 4.3.2`
/// and the session closes, so no new transaction starts.
#[test]
fn draining_session_starts_no_new_transaction() {
    let mut h = Harness::new(config());
    h.text("EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nfirst half\r\n");
    h.s.drain();
    let (t, a) = h.send(b"second half\r\n.\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    assert_eq!((t.as_str(), a), ("", Some(Action::Persist)), "the message in flight is stored");
    assert!(h.s.message().ends_with(b"first half\r\nsecond half\r\n"));
    assert!(h.persist().starts_with("250 2.6.0 <"));
    let (t, a) = h.resume();
    assert_eq!(t, "421 4.3.2 Service shutting down, try again later\r\n");
    assert_eq!(a, Some(Action::Close));
    assert!(h.s.is_closed());
    // Between transactions: commands are still answered, MAIL is not.
    let mut h = Harness::new(config());
    h.text("EHLO c\r\n");
    h.s.drain();
    let (t, a) = h.send(b"NOOP\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\n");
    assert_eq!(t, "250 2.0.0 OK\r\n421 4.3.2 Service shutting down, try again later\r\n");
    assert_eq!(a, Some(Action::Close));
}

#[test]
fn auth_plain_for_another_identity_gets_535_not_501() {
    let mut h = Harness::with_tls(auth_config(), true);
    h.text("EHLO c\r\n");
    let other = auth::encode(b"ceo\0svc\0pw");
    assert_eq!(h.text(&format!("AUTH PLAIN {other}\r\n")), "535 5.7.8 Authentication credentials invalid\r\n");
    assert_eq!(h.s.auth_user(), None);
    // Without an initial response too; the session goes on, and the same identity is fine.
    assert_eq!(h.text("AUTH PLAIN\r\n"), "334 \r\n");
    assert_eq!(h.text(&format!("{other}\r\n")), "535 5.7.8 Authentication credentials invalid\r\n");
    assert!(!h.s.in_sasl_exchange());
    let (t, a) = h.send(format!("AUTH PLAIN {}\r\n", auth::encode(b"svc\0svc\0pw")).as_bytes());
    assert_eq!((t.as_str(), a), ("", Some(Action::Authenticate)));
    assert_eq!(h.s.credentials(), ("svc", "pw"));
    assert_eq!(authenticate(&mut h, true), "235 2.7.0 Authentication successful\r\n");
}

#[test]
fn star_cancels_auth_plain() {
    let mut h = Harness::with_tls(auth_config(), true);
    h.text("EHLO c\r\n");
    assert_eq!(h.text("AUTH PLAIN\r\n"), "334 \r\n");
    assert!(h.s.in_sasl_exchange());
    assert!(h.text("*\r\n").starts_with("501 5.7.0"));
    assert!(!h.s.in_sasl_exchange());
    // The next line is a command again, not a SASL response.
    assert!(h.text("NOOP\r\n").starts_with("250"));
    let (_, a) = h.send(format!("AUTH PLAIN {}\r\n", auth::encode(b"\0svc\0pw")).as_bytes());
    assert_eq!(a, Some(Action::Authenticate));
}

/// An authenticated session with a transaction open and DATA started; `body` is sent, and
/// the reply (or `Persist`) comes back.
fn header_from_verdict(body: &str) -> (String, Option<Action>) {
    let mut h = Harness::with_tls(auth_config(), true);
    h.host.send_as = vec![("svc", "smb1@corp.test")];
    h.text("EHLO c\r\n");
    h.send(format!("AUTH PLAIN {}\r\n", auth::encode(b"\0svc\0pw")).as_bytes());
    authenticate(&mut h, true);
    h.text("MAIL FROM:<smb1@corp.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n");
    h.send(body.as_bytes())
}

#[test]
fn header_from_must_name_an_allowed_mailbox() {
    let denied = "550 5.7.60 Client does not have permissions to send as this sender\r\n";
    for body in [
        "Subject: no From at all\r\n\r\nx\r\n.\r\n",
        "From: boss\r\n\r\nx\r\n.\r\n",
        "From: undisclosed-recipients:;\r\n\r\nx\r\n.\r\n",
        "From: =?utf-8?q?ceo=40corp.test?=\r\n\r\nx\r\n.\r\n",
        "From: <smb1@corp.test> <ceo@corp.test>\r\n\r\nx\r\n.\r\n",
        "From: Scanner\r\n <ceo@corp.test>\r\n\r\nx\r\n.\r\n",
    ] {
        assert_eq!(header_from_verdict(body), (denied.to_string(), None), "{body:?}");
    }
    let (t, a) = header_from_verdict("From: Scanner\r\n <smb1@corp.test>\r\n\r\nx\r\n.\r\n");
    assert_eq!((t.as_str(), a), ("", Some(Action::Persist)));
}
