//! Scripted conversations for the sans-IO client: what it writes, what it records.

use super::*;
use std::time::{Duration, Instant};

#[derive(Default, Debug)]
struct Rec {
    latencies: Vec<(Phase, Duration)>,
    refused: Vec<(Stage, Cause)>,
    done: Vec<Outcome>,
}

impl Recorder for Rec {
    fn latency(&mut self, phase: Phase, elapsed: Duration) {
        self.latencies.push((phase, elapsed));
    }
    fn refused(&mut self, stage: Stage, cause: Cause) {
        self.refused.push((stage, cause));
    }
    fn message_done(&mut self, outcome: &Outcome) {
        self.done.push(*outcome);
    }
}

impl Rec {
    fn phases(&self) -> Vec<Phase> {
        self.latencies.iter().map(|(p, _)| *p).collect()
    }
}

fn cfg() -> ClientConfig {
    ClientConfig {
        helo_name: "client.test".into(),
        starttls: false,
        implicit_tls: false,
        auth: None,
        pipelining: true,
        bdat: false,
    }
}

/// Drives a client: collects what it writes, feeds server lines, returns the last step.
struct Harness {
    c: Client,
    rec: Rec,
    t: Instant,
    out: Vec<u8>,
}

impl Harness {
    fn new(cfg: ClientConfig) -> Harness {
        let t = crate::clock::now();
        Harness { c: Client::new(Rc::new(cfg), t), rec: Rec::default(), t, out: Vec::new() }
    }

    /// Advances the fake clock and returns what the client wrote since the last call.
    fn flush(&mut self) -> String {
        self.t += Duration::from_millis(1);
        self.c.sent(self.t);
        let mut buf = Vec::new();
        self.c.take_output(&mut buf);
        self.out.extend_from_slice(&buf);
        String::from_utf8(buf).unwrap()
    }

    fn server(&mut self, lines: &str) -> Step {
        self.t += Duration::from_millis(2);
        let mut step = Step::Wait;
        for line in lines.split("\r\n").filter(|l| !l.is_empty()) {
            step = self.c.handle_line(line.as_bytes(), self.t, &mut self.rec);
        }
        step
    }

    fn message(&mut self, rcpts: &[&str], body: &[u8], last: bool) {
        let (env, msg) = self.c.message_slots();
        env.from = "a@x.test".into();
        env.set_recipients(rcpts);
        env.size = body.len() as u64;
        msg.clear();
        msg.extend_from_slice(body);
        let t = self.t;
        self.c.start_message(t, last);
    }
}

const EHLO_FULL: &str = "250-mx.test Hello\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n250-8BITMIME\r\n\
                         250-CHUNKING\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 DSN\r\n";
const EHLO_PLAIN: &str = "250-mx.test Hello\r\n250 8BITMIME\r\n";

#[test]
fn pipelined_message_then_quit() {
    let mut h = Harness::new(cfg());
    assert_eq!(h.server("220 mx.test ESMTP"), Step::Wait);
    assert_eq!(h.flush(), "EHLO client.test\r\n");
    assert_eq!(h.server(EHLO_FULL), Step::Ready);
    let caps = *h.c.caps();
    assert!(caps.pipelining && caps.chunking && caps.starttls && caps.auth_plain && caps.auth_login && caps.dsn);
    assert_eq!(caps.size, Some(1_000_000));
    h.message(&["b@y.test", "c@y.test"], b"Subject: t\r\n\r\nhello\r\n", true);
    assert_eq!(h.flush(), "MAIL FROM:<a@x.test> SIZE=21\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<c@y.test>\r\nDATA\r\n");
    assert_eq!(h.server("250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go ahead"), Step::Wait);
    assert_eq!(h.flush(), "Subject: t\r\n\r\nhello\r\n.\r\nQUIT\r\n");
    assert_eq!(h.server("250 2.0.0 queued"), Step::Wait);
    assert_eq!(h.server("221 bye"), Step::Closed);
    assert_eq!(h.rec.done, vec![Outcome { ok: true, rcpts_ok: 2, rcpts_refused: 0, bytes: 21 }]);
    assert!(h.rec.refused.is_empty());
    assert_eq!(h.rec.phases(), vec![Phase::Greeting, Phase::Ehlo, Phase::MailRcpt, Phase::Submission, Phase::Message]);
    // Submission: end of data sent (t=…) → reply 2 ms later.
    let sub = h.rec.latencies.iter().find(|(p, _)| *p == Phase::Submission).unwrap().1;
    assert_eq!(sub, Duration::from_millis(2));
}

#[test]
fn without_pipelining_commands_go_one_by_one() {
    let mut h = Harness::new(cfg());
    h.server("220 mx");
    h.flush();
    assert_eq!(h.server(EHLO_PLAIN), Step::Ready);
    h.message(&["b@y", "c@y"], b"x\r\n", false);
    assert_eq!(h.flush(), "MAIL FROM:<a@x.test>\r\n");
    h.server("250 ok");
    assert_eq!(h.flush(), "RCPT TO:<b@y>\r\n");
    h.server("250 ok");
    assert_eq!(h.flush(), "RCPT TO:<c@y>\r\n");
    h.server("250 ok");
    assert_eq!(h.flush(), "DATA\r\n");
    h.server("354 go");
    assert_eq!(h.flush(), "x\r\n.\r\n");
    assert_eq!(h.server("250 ok"), Step::Ready);
    h.c.quit();
    assert_eq!(h.flush(), "QUIT\r\n");
    assert_eq!(h.server("221 bye"), Step::Closed);
    assert_eq!(h.rec.done.len(), 1);
    assert!(h.rec.done[0].ok);
}

#[test]
fn dot_stuffing() {
    let mut h = Harness::new(cfg());
    h.server("220 mx");
    h.flush();
    h.server(EHLO_PLAIN);
    h.message(&["b@y"], b".first\r\nmid\r\n.\r\n..two\r\nend", false);
    h.flush();
    h.server("250 ok");
    h.flush();
    h.server("250 ok");
    h.flush();
    h.server("354 go");
    assert_eq!(h.flush(), "..first\r\nmid\r\n..\r\n...two\r\nend\r\n.\r\n");
}

#[test]
fn refused_recipient_is_counted_and_message_still_goes() {
    let mut h = Harness::new(cfg());
    h.server("220 mx");
    h.flush();
    h.server(EHLO_FULL);
    h.message(&["tempfail@y", "ok@y"], b"m\r\n", false);
    h.flush();
    h.server("250 ok\r\n451 4.2.0 try later\r\n250 ok\r\n354 go");
    h.flush();
    assert_eq!(h.server("250 2.0.0 ok"), Step::Ready);
    let r451 = ReplyCode { code: 451, enhanced: [4, 2, 0] };
    assert_eq!(h.rec.refused, vec![(Stage::Rcpt, Cause::Reply(r451))]);
    assert_eq!(h.rec.done, vec![Outcome { ok: true, rcpts_ok: 1, rcpts_refused: 1, bytes: 3 }]);
}

#[test]
fn all_recipients_refused_pipelined_resets() {
    let mut h = Harness::new(cfg());
    h.server("220 mx");
    h.flush();
    h.server(EHLO_FULL);
    h.message(&["permfail@y"], b"m\r\n", false);
    h.flush();
    assert_eq!(h.server("250 ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients"), Step::Wait);
    assert_eq!(h.flush(), "RSET\r\n");
    assert_eq!(h.server("250 ok"), Step::Ready);
    let r550 = ReplyCode { code: 550, enhanced: [5, 1, 1] };
    assert_eq!(h.rec.refused, vec![(Stage::Rcpt, Cause::Reply(r550))]);
    assert_eq!(h.rec.done, vec![Outcome { ok: false, rcpts_ok: 0, rcpts_refused: 1, bytes: 0 }]);
    assert!(!h.rec.phases().contains(&Phase::Message));
}

#[test]
fn refused_mail_pipelined_consumes_the_rest_without_counting_twice() {
    let mut h = Harness::new(cfg());
    h.server("220 mx");
    h.flush();
    h.server(EHLO_FULL);
    h.message(&["b@y", "c@y"], b"m\r\n", false);
    h.flush();
    let step = h.server(
        "452 4.3.1 Insufficient system storage\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL",
    );
    assert_eq!(step, Step::Ready);
    assert_eq!(h.flush(), "");
    let r452 = ReplyCode { code: 452, enhanced: [4, 3, 1] };
    assert_eq!(h.rec.refused, vec![(Stage::Mail, Cause::Reply(r452))]);
    assert_eq!(h.rec.done.len(), 1);
    assert!(!h.rec.done[0].ok);
    assert_eq!(r452.to_string(), "452 4.3.1");
}

#[test]
fn refused_end_of_data_counts_as_submission_failure() {
    let mut h = Harness::new(cfg());
    h.server("220 mx");
    h.flush();
    h.server(EHLO_FULL);
    h.message(&["b@y"], b"m\r\n", false);
    h.flush();
    h.server("250 ok\r\n250 ok\r\n354 go");
    h.flush();
    assert_eq!(h.server("451 4.3.0 try again"), Step::Ready);
    assert_eq!(h.flush(), "", "no RSET after a reply to the end of data");
    assert_eq!(h.rec.refused, vec![(Stage::Submission, Cause::Reply(ReplyCode { code: 451, enhanced: [4, 3, 0] }))]);
    assert!(!h.rec.done[0].ok);
}

#[test]
fn service_closing_mid_transaction_fails_the_message_once() {
    let mut h = Harness::new(cfg());
    h.server("220 mx");
    h.flush();
    h.server(EHLO_FULL);
    h.message(&["b@y"], b"m\r\n", false);
    h.flush();
    h.server("250 ok\r\n250 ok\r\n354 go");
    h.flush();
    assert_eq!(h.server("421 4.4.2 mx closing"), Step::Closed);
    let r421 = ReplyCode { code: 421, enhanced: [4, 4, 2] };
    assert_eq!(h.rec.refused, vec![(Stage::Submission, Cause::Reply(r421))]);
    assert_eq!(h.rec.done.len(), 1);
    assert_eq!(h.c.failure(), Some((Stage::Submission, Cause::Reply(r421))));
}

#[test]
fn bdat_pipelined_in_one_write() {
    let mut h = Harness::new(ClientConfig { bdat: true, ..cfg() });
    h.server("220 mx");
    h.flush();
    h.server(EHLO_FULL);
    h.message(&["b@y"], b".x\r\n", true);
    assert_eq!(h.flush(), "MAIL FROM:<a@x.test> SIZE=4\r\nRCPT TO:<b@y>\r\nBDAT 4 LAST\r\n.x\r\nQUIT\r\n");
    h.server("250 ok\r\n250 ok\r\n250 2.0.0 queued");
    assert_eq!(h.server("221 bye"), Step::Closed);
    assert_eq!(h.rec.done, vec![Outcome { ok: true, rcpts_ok: 1, rcpts_refused: 0, bytes: 4 }]);
}

#[test]
fn starttls_then_auth_login() {
    let creds = Credentials { user: "u".into(), pass: "p".into(), mechanism: Some(AuthMech::Login) };
    let mut h = Harness::new(ClientConfig { starttls: true, auth: Some(creds), ..cfg() });
    h.server("220 mx");
    h.flush();
    h.server(EHLO_FULL);
    assert_eq!(h.flush(), "STARTTLS\r\n");
    assert_eq!(h.server("220 2.0.0 ready"), Step::StartTls);
    h.t += Duration::from_millis(5);
    let t = h.t;
    h.c.tls_started(t, &mut h.rec);
    assert!(h.c.is_tls());
    assert_eq!(h.flush(), "EHLO client.test\r\n");
    assert_eq!(h.server(EHLO_FULL), Step::Wait);
    assert_eq!(h.flush(), "AUTH LOGIN\r\n");
    h.server("334 VXNlcm5hbWU6");
    assert_eq!(h.flush(), "dQ==\r\n");
    h.server("334 UGFzc3dvcmQ6");
    assert_eq!(h.flush(), "cA==\r\n");
    assert_eq!(h.server("235 2.7.0 ok"), Step::Ready);
    let phases = h.rec.phases();
    assert_eq!(phases, vec![Phase::Greeting, Phase::Ehlo, Phase::StartTls, Phase::Ehlo, Phase::Auth]);
}

#[test]
fn auth_plain_refused_is_fatal() {
    let creds = Credentials { user: "u".into(), pass: "bad".into(), mechanism: None };
    let mut h = Harness::new(ClientConfig { auth: Some(creds), ..cfg() });
    h.server("220 mx");
    h.flush();
    h.server(EHLO_FULL);
    assert_eq!(h.flush(), format!("AUTH PLAIN {}\r\n", BASE64.encode(b"\0u\0bad")));
    assert_eq!(h.server("535 5.7.8 Authentication credentials invalid"), Step::Closed);
    assert_eq!(h.c.failure(), Some((Stage::Auth, Cause::Reply(ReplyCode { code: 535, enhanced: [5, 7, 8] }))));
}

#[test]
fn starttls_not_offered_and_ehlo_fallback() {
    let mut h = Harness::new(ClientConfig { starttls: true, ..cfg() });
    h.server("220 mx");
    h.flush();
    assert_eq!(h.server("502 5.5.1 what?"), Step::Wait);
    assert_eq!(h.flush(), "HELO client.test\r\n");
    assert_eq!(h.server("250 mx"), Step::Closed);
    assert_eq!(h.c.failure(), Some((Stage::StartTls, Cause::NotOffered)));
    assert_eq!(h.rec.refused, vec![(Stage::StartTls, Cause::NotOffered)]);
}

#[test]
fn greeting_refusal_and_garbage() {
    let mut h = Harness::new(cfg());
    assert_eq!(h.server("554 5.7.1 go away"), Step::Closed);
    assert_eq!(h.c.failure(), Some((Stage::Greeting, Cause::Reply(ReplyCode { code: 554, enhanced: [5, 7, 1] }))));
    let mut h = Harness::new(cfg());
    assert_eq!(h.server("HTTP/1.1 400 Bad Request"), Step::Closed);
    assert_eq!(h.c.failure(), Some((Stage::Greeting, Cause::Protocol)));
}

#[test]
fn io_failure_mid_message_and_after_quit() {
    let mut h = Harness::new(cfg());
    h.server("220 mx");
    h.flush();
    h.server(EHLO_FULL);
    h.message(&["b@y"], b"m\r\n", false);
    h.flush();
    assert_eq!(h.c.waiting_stage(), Stage::Mail);
    h.c.io_failed(Cause::Timeout, &mut h.rec);
    assert_eq!(h.rec.refused, vec![(Stage::Mail, Cause::Timeout)]);
    assert_eq!(h.rec.done.len(), 1);

    let mut h = Harness::new(cfg());
    h.server("220 mx");
    h.flush();
    h.server(EHLO_FULL);
    h.c.quit();
    h.flush();
    h.c.io_failed(Cause::Closed, &mut h.rec);
    assert!(h.rec.refused.is_empty(), "a server closing instead of answering QUIT is no failure");
}

#[test]
fn reply_lines_and_enhanced_codes() {
    assert_eq!(parse_reply_line(b"250-PIPELINING"), Some(ReplyLine { code: 250, last: false, text: b"PIPELINING" }));
    assert_eq!(parse_reply_line(b"250"), Some(ReplyLine { code: 250, last: true, text: b"" }));
    assert_eq!(parse_reply_line(b"25"), None);
    assert_eq!(parse_reply_line(b"250x"), None);
    assert_eq!(parse_reply_line(b"650 no"), None);
    assert_eq!(parse_enhanced(b"4.3.1 Insufficient"), [4, 3, 1]);
    assert_eq!(parse_enhanced(b"5.7.54"), [5, 7, 54]);
    assert_eq!(parse_enhanced(b"2.6.0 <id> Queued"), [2, 6, 0]);
    assert_eq!(parse_enhanced(b"Hello there"), [0; 3]);
    assert_eq!(parse_enhanced(b"3.1.1 x"), [0; 3]);
    assert_eq!(parse_enhanced(b"4.3 x"), [0; 3]);
    assert_eq!(ReplyCode { code: 421, enhanced: [0; 3] }.to_string(), "421");
}

#[test]
fn reset_reuses_the_client_for_a_new_connection() {
    let mut h = Harness::new(cfg());
    h.server("220 mx");
    h.flush();
    h.server(EHLO_FULL);
    h.c.quit();
    h.flush();
    assert_eq!(h.server("221 bye"), Step::Closed);
    let t = h.t;
    h.c.reset(t);
    assert_eq!(h.server("220 mx again"), Step::Wait);
    assert_eq!(h.flush(), "EHLO client.test\r\n");
}
