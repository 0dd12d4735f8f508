//! The SMTP client session of `ringload run`, as a sans-IO state machine: reply lines and the
//! current time in; command bytes, latency samples and outcomes out. It never touches a
//! socket or a clock, so every conversation (pipelined or not, STARTTLS, AUTH PLAIN/LOGIN,
//! BDAT, refusals at each stage, a `421` in the middle) is a unit test with scripted replies.
//! `worker.rs` drives it over io_uring.
//!
//! The driver's loop: write `take_output()` (after `sent(now)`), read, feed each complete
//! reply line to `handle_line`, and act on the returned `Step`: `StartTls` (run the handshake,
//! then `tls_started`), `Ready` (start the next message with `start_message`, or `quit`),
//! `Closed` (the session is over), `Wait` (read more).
//!
//! What is measured (`Phase`): greeting (connected → 220), EHLO (sent → final 250), STARTTLS
//! (sent → handshake done), AUTH (sent → 235), MAIL/RCPT (MAIL sent → reply to the last RCPT;
//! one round trip with PIPELINING), submission (end of data sent → the reply to it), and the
//! message as a whole (its ticket time → the reply to the end of data). Latencies are recorded
//! for successes; failures are counted by stage and reply.

use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::message::Envelope;

/// Longest reply line we accept (RFC 5321 4.5.3.1.5 says 512 octets; servers add text).
pub const REPLY_LINE_MAX: usize = 4096;

/// Latency phases, each with its own histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// TCP connect.
    Connect,
    /// Connected → `220` greeting.
    Greeting,
    /// `EHLO` sent → its final `250` line.
    Ehlo,
    /// `STARTTLS` sent → TLS handshake done (or, with implicit TLS, the handshake alone).
    StartTls,
    /// `AUTH` sent → `235`.
    Auth,
    /// `MAIL FROM` sent → the reply to the last `RCPT TO`.
    MailRcpt,
    /// End of data sent → the server's reply to it (`250`).
    Submission,
    /// The message's ticket time (intended send time in open loop) → the reply to its data.
    Message,
}

impl Phase {
    /// Every phase, in conversation order.
    pub const ALL: [Phase; 8] = [
        Phase::Connect,
        Phase::Greeting,
        Phase::Ehlo,
        Phase::StartTls,
        Phase::Auth,
        Phase::MailRcpt,
        Phase::Submission,
        Phase::Message,
    ];
    /// Number of phases.
    pub const COUNT: usize = Phase::ALL.len();

    /// Index into per-phase arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short name, used as the JSON key and the interval-log tag.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Greeting => "greeting",
            Phase::Ehlo => "ehlo",
            Phase::StartTls => "starttls",
            Phase::Auth => "auth",
            Phase::MailRcpt => "mail_rcpt",
            Phase::Submission => "submission",
            Phase::Message => "message",
        }
    }

    /// What the phase measures, for tables and the report.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::Connect => "TCP connect",
            Phase::Greeting => "connected → 220 greeting",
            Phase::Ehlo => "EHLO → 250",
            Phase::StartTls => "STARTTLS → TLS handshake done",
            Phase::Auth => "AUTH → 235",
            Phase::MailRcpt => "MAIL FROM → last RCPT reply",
            Phase::Submission => "end of data → 250",
            Phase::Message => "intended send time → 250 (whole message; unsent: → end of run)",
        }
    }

    /// The phase named `name`.
    pub fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// Where in the conversation something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// TCP connect.
    Connect,
    /// The greeting.
    Greeting,
    /// EHLO (or HELO).
    Ehlo,
    /// STARTTLS or the TLS handshake.
    StartTls,
    /// AUTH.
    Auth,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// The DATA command (or a BDAT chunk before the last).
    Data,
    /// The end of data (or BDAT LAST).
    Submission,
    /// RSET after a failed transaction.
    Rset,
    /// QUIT.
    Quit,
}

impl Stage {
    /// Short name for tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "ehlo",
            Stage::StartTls => "starttls",
            Stage::Auth => "auth",
            Stage::Mail => "mail",
            Stage::Rcpt => "rcpt",
            Stage::Data => "data",
            Stage::Submission => "end-of-data",
            Stage::Rset => "rset",
            Stage::Quit => "quit",
        }
    }
}

/// A reply code with its RFC 3463 enhanced status code, when the server sent one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplyCode {
    /// The three-digit code.
    pub code: u16,
    /// `class.subject.detail`; class 0 = none.
    pub enhanced: [u16; 3],
}

impl ReplyCode {
    /// True for 2xx.
    pub fn is_positive(self) -> bool {
        (200..300).contains(&self.code)
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [c, s, d] = self.enhanced;
        if c == 0 { write!(f, "{}", self.code) } else { write!(f, "{} {c}.{s}.{d}", self.code) }
    }
}

/// Why a message or a session failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    /// The server refused with this reply.
    Reply(ReplyCode),
    /// Connection refused.
    Refused,
    /// Connection reset or broken pipe.
    Reset,
    /// No reply (or no connection) within the timeout.
    Timeout,
    /// The server closed the connection.
    Closed,
    /// The TLS handshake failed.
    Tls,
    /// The server sent something that is not an SMTP reply, or a reply nobody asked for.
    Protocol,
    /// STARTTLS or AUTH was required but not offered.
    NotOffered,
    /// The run ended (past its drain time) while this was in flight.
    Aborted,
    /// Another local error (e.g. out of file descriptors, no source address).
    Local,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Reply(r) => write!(f, "{r}"),
            Cause::Refused => f.write_str("connection refused"),
            Cause::Reset => f.write_str("connection reset"),
            Cause::Timeout => f.write_str("timeout"),
            Cause::Closed => f.write_str("connection closed by server"),
            Cause::Tls => f.write_str("TLS handshake failed"),
            Cause::Protocol => f.write_str("protocol error"),
            Cause::NotOffered => f.write_str("not offered by server"),
            Cause::Aborted => f.write_str("aborted at end of run"),
            Cause::Local => f.write_str("local error"),
        }
    }
}

/// The result of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The server accepted the message (2xx after the data).
    pub ok: bool,
    /// Recipients accepted.
    pub rcpts_ok: u32,
    /// Recipients refused.
    pub rcpts_refused: u32,
    /// Message bytes sent (0 when the data was never sent).
    pub bytes: u64,
}

/// Where measurements go. Implemented by the per-thread recorder; by a plain struct in tests.
pub trait Recorder {
    /// A latency sample.
    fn latency(&mut self, phase: Phase, elapsed: Duration);
    /// A refusal or failure (each refused recipient, each failed message, each failed session).
    fn refused(&mut self, stage: Stage, cause: Cause);
    /// A message finished, well or not.
    fn message_done(&mut self, outcome: &Outcome);
}

/// SASL mechanism for `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMech {
    /// RFC 4616.
    Plain,
    /// The LOGIN mechanism (two base64 prompts).
    Login,
}

/// Credentials for AUTH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub pass: String,
    /// Mechanism; `None` picks PLAIN when offered, else LOGIN.
    pub mechanism: Option<AuthMech>,
}

/// How sessions behave; shared by all connections of a thread.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The name sent in EHLO/HELO.
    pub helo_name: String,
    /// Require STARTTLS (fail the session if it is not offered).
    pub starttls: bool,
    /// The connection is TLS from the start (no STARTTLS).
    pub implicit_tls: bool,
    /// AUTH after EHLO (after STARTTLS when both).
    pub auth: Option<Credentials>,
    /// Pipeline MAIL/RCPT/DATA when the server offers PIPELINING.
    pub pipelining: bool,
    /// Send the message with BDAT when the server offers CHUNKING.
    pub bdat: bool,
}

/// What the server said it can do (EHLO keywords).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    /// PIPELINING.
    pub pipelining: bool,
    /// STARTTLS.
    pub starttls: bool,
    /// CHUNKING (BDAT).
    pub chunking: bool,
    /// SIZE, with its limit if given.
    pub size: Option<u64>,
    /// AUTH PLAIN.
    pub auth_plain: bool,
    /// AUTH LOGIN.
    pub auth_login: bool,
    /// 8BITMIME.
    pub eight_bit_mime: bool,
    /// SMTPUTF8.
    pub smtputf8: bool,
    /// DSN.
    pub dsn: bool,
}

impl Caps {
    fn parse_line(&mut self, text: &[u8]) {
        let text = String::from_utf8_lossy(text);
        let mut words = text.split_ascii_whitespace();
        let Some(first) = words.next() else { return };
        let keyword = first.to_ascii_uppercase();
        match keyword.as_str() {
            "PIPELINING" => self.pipelining = true,
            "STARTTLS" => self.starttls = true,
            "CHUNKING" => self.chunking = true,
            "8BITMIME" => self.eight_bit_mime = true,
            "SMTPUTF8" => self.smtputf8 = true,
            "DSN" => self.dsn = true,
            "SIZE" => self.size = Some(words.next().and_then(|w| w.parse().ok()).unwrap_or(0)),
            _ if keyword == "AUTH" || keyword.starts_with("AUTH=") => {
                let mechs = keyword.strip_prefix("AUTH=").map(str::to_string).into_iter();
                for m in mechs.chain(words.map(str::to_ascii_uppercase)) {
                    match m.as_str() {
                        "PLAIN" => self.auth_plain = true,
                        "LOGIN" => self.auth_login = true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
}

/// One reply line, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    /// The code.
    pub code: u16,
    /// The last line of the reply (`250 ` rather than `250-`).
    pub last: bool,
    /// The text after the code and separator.
    pub text: &'a [u8],
}

/// Splits a reply line (without its line end). `None` if it is not one.
pub fn parse_reply_line(line: &[u8]) -> Option<ReplyLine<'_>> {
    if line.len() < 3 || line.len() > REPLY_LINE_MAX {
        return None;
    }
    let (d0, d1, d2) = (line[0], line[1], line[2]);
    if !(b'2'..=b'5').contains(&d0) || !(b'0'..=b'5').contains(&d1) || !d2.is_ascii_digit() {
        return None;
    }
    let code = u16::from(d0 - b'0') * 100 + u16::from(d1 - b'0') * 10 + u16::from(d2 - b'0');
    match line.get(3) {
        None => Some(ReplyLine { code, last: true, text: b"" }),
        Some(b' ') => Some(ReplyLine { code, last: true, text: &line[4..] }),
        Some(b'-') => Some(ReplyLine { code, last: false, text: &line[4..] }),
        Some(_) => None,
    }
}

/// The enhanced status code at the start of a reply text (`4.3.0 text`), if any.
pub fn parse_enhanced(text: &[u8]) -> [u16; 3] {
    let mut out = [0u16; 3];
    let mut i = 0;
    for (k, slot) in out.iter_mut().enumerate() {
        let start = i;
        while i < text.len() && text[i].is_ascii_digit() && i - start < 3 {
            *slot = *slot * 10 + u16::from(text[i] - b'0');
            i += 1;
        }
        if i == start {
            return [0; 3];
        }
        let want = if k < 2 { Some(&b'.') } else { None };
        match (want, text.get(i)) {
            (Some(_), Some(b'.')) => i += 1,
            (None, None | Some(b' ')) => {}
            _ => return [0; 3],
        }
    }
    if !matches!(out[0], 2 | 4 | 5) {
        return [0; 3];
    }
    out
}

/// What the driver must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Write pending output (if any) and read more replies.
    Wait,
    /// Write pending output, run the TLS handshake, then call `tls_started`.
    StartTls,
    /// The session is idle: `start_message` or `quit`.
    Ready,
    /// The session is over; close the connection.
    Closed,
}

/// Replies we wait for, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass,
    AuthLoginDone,
    Mail,
    Rcpt,
    Data,
    BdatLast,
    EndOfData,
    Rset,
    Quit,
}

impl Expect {
    fn stage(self) -> Stage {
        match self {
            Expect::Greeting => Stage::Greeting,
            Expect::Ehlo | Expect::Helo => Stage::Ehlo,
            Expect::StartTls => Stage::StartTls,
            Expect::AuthPlain | Expect::AuthLoginUser | Expect::AuthLoginPass | Expect::AuthLoginDone => Stage::Auth,
            Expect::Mail => Stage::Mail,
            Expect::Rcpt => Stage::Rcpt,
            Expect::Data => Stage::Data,
            Expect::BdatLast | Expect::EndOfData => Stage::Submission,
            Expect::Rset => Stage::Rset,
            Expect::Quit => Stage::Quit,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    what: Expect,
    /// When the command went out (set by `sent`).
    sent: Option<Instant>,
}

/// The message in flight.
#[derive(Debug, Clone, Copy)]
struct Txn {
    ticket: Instant,
    mail_sent: Option<Instant>,
    eod_sent: Option<Instant>,
    /// The end of data is in the output buffer and waits for `sent`.
    eod_queued: bool,
    mail_ok: bool,
    rcpts_ok: u32,
    rcpts_refused: u32,
    /// Recipients whose RCPT has been written (non-pipelined mode sends them one by one).
    rcpts_written: usize,
    last_rcpt_refusal: Option<ReplyCode>,
    failure: Option<(Stage, Cause)>,
    /// QUIT follows this message.
    last: bool,
    bytes: u64,
}

/// One client session.
pub struct Client {
    cfg: Rc<ClientConfig>,
    caps: Caps,
    pending: VecDeque<Pending>,
    wire: Vec<u8>,
    tls: bool,
    authed: bool,
    /// Lines seen so far of the multi-line reply being read.
    reply_lines: u32,
    /// Waiting for the driver to run the TLS handshake; when STARTTLS was sent.
    tls_pending: Option<Instant>,
    auth_sent: Option<Instant>,
    txn: Option<Txn>,
    env: Envelope,
    msg: Vec<u8>,
    closed: bool,
    failure: Option<(Stage, Cause)>,
    quit_queued: bool,
}

impl Client {
    /// A session on a connection that was established at `now` (and TLS is already on with
    /// implicit TLS). It waits for the greeting.
    pub fn new(cfg: Rc<ClientConfig>, now: Instant) -> Client {
        let tls = cfg.implicit_tls;
        let mut pending = VecDeque::with_capacity(16);
        pending.push_back(Pending { what: Expect::Greeting, sent: Some(now) });
        Client {
            cfg,
            caps: Caps::default(),
            pending,
            wire: Vec::with_capacity(1024),
            tls,
            authed: false,
            reply_lines: 0,
            tls_pending: None,
            auth_sent: None,
            txn: None,
            env: Envelope::default(),
            msg: Vec::new(),
            closed: false,
            failure: None,
            quit_queued: false,
        }
    }

    /// Re-arms a finished session for a new connection, keeping its buffers.
    pub fn reset(&mut self, now: Instant) {
        self.caps = Caps::default();
        self.pending.clear();
        self.pending.push_back(Pending { what: Expect::Greeting, sent: Some(now) });
        self.wire.clear();
        self.tls = self.cfg.implicit_tls;
        self.authed = false;
        self.reply_lines = 0;
        self.tls_pending = None;
        self.auth_sent = None;
        self.txn = None;
        self.closed = false;
        self.failure = None;
        self.quit_queued = false;
    }

    /// What the server offered in its last EHLO reply.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// The session is under TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The fatal failure that ended the session, if any.
    pub fn failure(&self) -> Option<(Stage, Cause)> {
        self.failure
    }

    /// A message is in flight.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// The stage whose reply is awaited (for naming a timeout).
    pub fn waiting_stage(&self) -> Stage {
        match self.pending.front() {
            Some(p) => p.what.stage(),
            None if self.tls_pending.is_some() => Stage::StartTls,
            None => Stage::Quit,
        }
    }

    /// Only the reply to QUIT is outstanding: the server closing now is no failure.
    pub fn only_quit_pending(&self) -> bool {
        self.pending.iter().all(|p| p.what == Expect::Quit)
    }

    /// There are bytes to write.
    pub fn has_output(&self) -> bool {
        !self.wire.is_empty()
    }

    /// Marks the pending output as sent at `now` (call just before writing it).
    pub fn sent(&mut self, now: Instant) {
        for p in self.pending.iter_mut().filter(|p| p.sent.is_none()) {
            p.sent = Some(now);
            if p.what == Expect::Mail
                && let Some(t) = self.txn.as_mut()
            {
                t.mail_sent = Some(now);
            }
        }
        if let Some(t) = self.txn.as_mut()
            && t.eod_queued
        {
            t.eod_queued = false;
            t.eod_sent = Some(now);
        }
    }

    /// Swaps the pending output into `buf` (which must be empty); the driver writes it and
    /// keeps `buf`'s allocation for the next swap.
    pub fn take_output(&mut self, buf: &mut Vec<u8>) {
        debug_assert!(buf.is_empty());
        std::mem::swap(&mut self.wire, buf);
    }

    /// The buffers the next message is built into.
    pub fn message_slots(&mut self) -> (&mut Envelope, &mut Vec<u8>) {
        (&mut self.env, &mut self.msg)
    }

    /// Starts the message in `message_slots` (its envelope must have a recipient). `ticket` is
    /// the time latency is measured from; `last` sends QUIT after it.
    pub fn start_message(&mut self, ticket: Instant, last: bool) {
        debug_assert!(self.txn.is_none() && self.pending.is_empty() && !self.closed);
        debug_assert!(!self.env.recipients().is_empty());
        self.txn = Some(Txn {
            ticket,
            mail_sent: None,
            eod_sent: None,
            eod_queued: false,
            mail_ok: false,
            rcpts_ok: 0,
            rcpts_refused: 0,
            rcpts_written: 0,
            last_rcpt_refusal: None,
            failure: None,
            last,
            bytes: self.msg.len() as u64,
        });
        self.wire.extend_from_slice(b"MAIL FROM:<");
        self.wire.extend_from_slice(self.env.from.as_bytes());
        self.wire.push(b'>');
        if self.caps.size.is_some() {
            let _ = std::io::Write::write_fmt(&mut self.wire, format_args!(" SIZE={}", self.env.size));
        }
        self.wire.extend_from_slice(b"\r\n");
        self.expect(Expect::Mail);
        if self.pipelining() {
            while self.write_next_rcpt() {}
            self.write_content_command();
        }
    }

    /// Sends QUIT (the session is idle).
    pub fn quit(&mut self) {
        if !self.quit_queued && !self.closed {
            self.wire.extend_from_slice(b"QUIT\r\n");
            self.expect(Expect::Quit);
            self.quit_queued = true;
        }
    }

    /// The TLS handshake after STARTTLS succeeded: the session starts afresh with EHLO.
    pub fn tls_started(&mut self, now: Instant, rec: &mut dyn Recorder) {
        if let Some(sent) = self.tls_pending.take() {
            rec.latency(Phase::StartTls, now.saturating_duration_since(sent));
        }
        self.tls = true;
        self.caps = Caps::default();
        self.send_ehlo();
    }

    /// The connection failed (`cause`) while replies were awaited: fails the message in flight.
    pub fn io_failed(&mut self, cause: Cause, rec: &mut dyn Recorder) {
        if self.closed {
            return;
        }
        if self.only_quit_pending() && self.txn.is_none() && self.tls_pending.is_none() {
            // The server hung up instead of answering QUIT: the session's work was done.
            self.closed = true;
            return;
        }
        let stage = self.waiting_stage();
        self.fatal(stage, cause, rec);
    }

    /// Feeds one reply line (without its line end) received at `now`.
    pub fn handle_line(&mut self, line: &[u8], now: Instant, rec: &mut dyn Recorder) -> Step {
        if self.closed {
            return Step::Closed;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(front) = self.pending.front().copied() else {
            // A reply nobody asked for.
            let stage = if self.txn.is_some() { Stage::Submission } else { Stage::Quit };
            self.fatal(stage, Cause::Protocol, rec);
            return Step::Closed;
        };
        let Some(reply) = parse_reply_line(line) else {
            self.fatal(front.what.stage(), Cause::Protocol, rec);
            return Step::Closed;
        };
        let is_ehlo = matches!(front.what, Expect::Ehlo);
        if is_ehlo && self.reply_lines > 0 {
            // The first EHLO line is the server's name; keywords follow.
            self.caps.parse_line(reply.text);
        }
        if !reply.last {
            self.reply_lines += 1;
            return Step::Wait;
        }
        self.reply_lines = 0;
        self.pending.pop_front();
        let code = ReplyCode { code: reply.code, enhanced: parse_enhanced(reply.text) };
        if code.code == 421 && front.what != Expect::Quit {
            self.fatal(front.what.stage(), Cause::Reply(code), rec);
            return Step::Closed;
        }
        let sent = front.sent.unwrap_or(now);
        match front.what {
            Expect::Greeting => {
                if code.code == 220 {
                    rec.latency(Phase::Greeting, now.saturating_duration_since(sent));
                    self.send_ehlo();
                } else {
                    self.fatal(Stage::Greeting, Cause::Reply(code), rec);
                }
            }
            Expect::Ehlo | Expect::Helo => {
                if code.is_positive() {
                    rec.latency(Phase::Ehlo, now.saturating_duration_since(sent));
                    self.after_ehlo(rec);
                } else if front.what == Expect::Ehlo && code.code >= 500 {
                    // RFC 5321 3.2: fall back to HELO (no extensions then).
                    self.caps = Caps::default();
                    let name = self.cfg.helo_name.clone();
                    self.line(&["HELO ", &name]);
                    self.expect(Expect::Helo);
                } else {
                    self.fatal(Stage::Ehlo, Cause::Reply(code), rec);
                }
            }
            Expect::StartTls => {
                if code.code == 220 {
                    self.tls_pending = Some(sent);
                    return Step::StartTls;
                }
                self.fatal(Stage::StartTls, Cause::Reply(code), rec);
            }
            Expect::AuthPlain | Expect::AuthLoginDone => {
                if code.code == 235 {
                    let start = if front.what == Expect::AuthPlain { Some(sent) } else { self.auth_sent.take() };
                    if let Some(t) = start {
                        rec.latency(Phase::Auth, now.saturating_duration_since(t));
                    }
                    self.authed = true;
                } else {
                    self.fatal(Stage::Auth, Cause::Reply(code), rec);
                }
            }
            Expect::AuthLoginUser | Expect::AuthLoginPass => {
                if front.what == Expect::AuthLoginUser {
                    self.auth_sent = Some(sent);
                }
                if code.code == 334 {
                    let (next, secret) = match (front.what, &self.cfg.auth) {
                        (Expect::AuthLoginUser, Some(c)) => (Expect::AuthLoginPass, c.user.clone()),
                        (_, Some(c)) => (Expect::AuthLoginDone, c.pass.clone()),
                        (_, None) => unreachable!("AUTH without credentials"),
                    };
                    let encoded = BASE64.encode(secret.as_bytes());
                    self.line(&[&encoded]);
                    self.expect(next);
                } else {
                    self.fatal(Stage::Auth, Cause::Reply(code), rec);
                }
            }
            Expect::Mail => self.on_mail(code, now, rec),
            Expect::Rcpt => self.on_rcpt(code, now, rec),
            Expect::Data => self.on_data(code, now, rec),
            Expect::BdatLast => self.on_end_of_data(code, true, now, rec),
            Expect::EndOfData => self.on_end_of_data(code, false, now, rec),
            Expect::Rset => {
                if !code.is_positive() {
                    self.fatal(Stage::Rset, Cause::Reply(code), rec);
                }
            }
            Expect::Quit => {
                self.closed = true;
                return Step::Closed;
            }
        }
        self.next_step()
    }

    fn next_step(&self) -> Step {
        if self.closed {
            Step::Closed
        } else if !self.pending.is_empty() {
            Step::Wait
        } else if self.tls_pending.is_some() {
            Step::StartTls
        } else if self.txn.is_none() {
            Step::Ready
        } else {
            Step::Wait
        }
    }

    fn pipelining(&self) -> bool {
        self.cfg.pipelining && self.caps.pipelining
    }

    fn use_bdat(&self) -> bool {
        self.cfg.bdat && self.caps.chunking
    }

    fn expect(&mut self, what: Expect) {
        self.pending.push_back(Pending { what, sent: None });
    }

    fn line(&mut self, parts: &[&str]) {
        for p in parts {
            self.wire.extend_from_slice(p.as_bytes());
        }
        self.wire.extend_from_slice(b"\r\n");
    }

    fn send_ehlo(&mut self) {
        let name = self.cfg.helo_name.clone();
        self.line(&["EHLO ", &name]);
        self.expect(Expect::Ehlo);
    }

    /// EHLO (or HELO) done: STARTTLS, AUTH, or ready.
    fn after_ehlo(&mut self, rec: &mut dyn Recorder) {
        if self.cfg.starttls && !self.tls {
            if self.caps.starttls {
                self.line(&["STARTTLS"]);
                self.expect(Expect::StartTls);
            } else {
                self.fatal(Stage::StartTls, Cause::NotOffered, rec);
            }
            return;
        }
        let Some(creds) = self.cfg.auth.clone() else { return };
        if self.authed {
            return;
        }
        let mech = match creds.mechanism {
            Some(AuthMech::Plain) if self.caps.auth_plain => AuthMech::Plain,
            Some(AuthMech::Login) if self.caps.auth_login => AuthMech::Login,
            None if self.caps.auth_plain => AuthMech::Plain,
            None if self.caps.auth_login => AuthMech::Login,
            _ => return self.fatal(Stage::Auth, Cause::NotOffered, rec),
        };
        match mech {
            AuthMech::Plain => {
                let mut raw = Vec::with_capacity(creds.user.len() + creds.pass.len() + 2);
                raw.push(0);
                raw.extend_from_slice(creds.user.as_bytes());
                raw.push(0);
                raw.extend_from_slice(creds.pass.as_bytes());
                let encoded = BASE64.encode(&raw);
                self.line(&["AUTH PLAIN ", &encoded]);
                self.expect(Expect::AuthPlain);
            }
            AuthMech::Login => {
                self.line(&["AUTH LOGIN"]);
                self.expect(Expect::AuthLoginUser);
            }
        }
    }

    /// Writes the next RCPT; false when all are written.
    fn write_next_rcpt(&mut self) -> bool {
        let Some(t) = self.txn.as_mut() else { return false };
        let i = t.rcpts_written;
        let Some(r) = self.env.recipients().get(i) else { return false };
        t.rcpts_written += 1;
        self.wire.extend_from_slice(b"RCPT TO:<");
        self.wire.extend_from_slice(r.as_bytes());
        self.wire.extend_from_slice(b">\r\n");
        self.expect(Expect::Rcpt);
        true
    }

    /// After the recipients: `DATA`, or `BDAT n LAST` and the message.
    fn write_content_command(&mut self) {
        if self.use_bdat() {
            let _ = std::io::Write::write_fmt(&mut self.wire, format_args!("BDAT {} LAST\r\n", self.msg.len()));
            self.wire.extend_from_slice(&self.msg);
            self.expect(Expect::BdatLast);
            if let Some(t) = self.txn.as_mut() {
                t.eod_queued = true;
                if t.last && self.cfg.pipelining && self.caps.pipelining {
                    self.wire.extend_from_slice(b"QUIT\r\n");
                    self.pending.push_back(Pending { what: Expect::Quit, sent: None });
                    self.quit_queued = true;
                }
            }
        } else {
            self.wire.extend_from_slice(b"DATA\r\n");
            self.expect(Expect::Data);
        }
    }

    fn on_mail(&mut self, code: ReplyCode, now: Instant, rec: &mut dyn Recorder) {
        let pipelining = self.pipelining();
        let Some(t) = self.txn.as_mut() else { return };
        if code.is_positive() {
            t.mail_ok = true;
            if !pipelining {
                self.write_next_rcpt();
            }
        } else {
            rec.refused(Stage::Mail, Cause::Reply(code));
            t.failure = Some((Stage::Mail, Cause::Reply(code)));
            if !pipelining {
                // No transaction was opened: nothing to reset.
                self.finish(None, now, rec, false);
            }
        }
    }

    fn on_rcpt(&mut self, code: ReplyCode, now: Instant, rec: &mut dyn Recorder) {
        let pipelining = self.pipelining();
        let Some(t) = self.txn.as_mut() else { return };
        if code.is_positive() {
            t.rcpts_ok += 1;
        } else {
            t.rcpts_refused += 1;
            t.last_rcpt_refusal = Some(code);
            if t.mail_ok {
                rec.refused(Stage::Rcpt, Cause::Reply(code));
            }
        }
        let more_replies = self.pending.iter().any(|p| p.what == Expect::Rcpt);
        let all_written = t.rcpts_written >= self.env.recipients().len();
        if more_replies || !all_written {
            if !pipelining {
                self.write_next_rcpt();
            }
            return;
        }
        // The last recipient's reply.
        let mail_ok = t.mail_ok;
        if mail_ok && t.rcpts_ok > 0 {
            if let Some(sent) = t.mail_sent {
                rec.latency(Phase::MailRcpt, now.saturating_duration_since(sent));
            }
            if !pipelining {
                self.write_content_command();
            }
            return;
        }
        if t.failure.is_none() {
            let cause = t.last_rcpt_refusal.map_or(Cause::Protocol, Cause::Reply);
            t.failure = Some((Stage::Rcpt, cause));
        }
        if !pipelining {
            // With MAIL accepted, the transaction is open and needs a reset.
            self.finish(None, now, rec, mail_ok);
        }
        // Pipelined: the reply to DATA (or BDAT) is still to come, and ends the transaction.
    }

    fn on_data(&mut self, code: ReplyCode, now: Instant, rec: &mut dyn Recorder) {
        let Some(t) = self.txn.as_mut() else { return };
        if code.code == 354 {
            let doomed = t.failure.is_some() || t.rcpts_ok == 0;
            let last = t.last;
            t.eod_queued = true;
            if doomed {
                // The server wants data for a transaction that failed: end it empty.
                t.bytes = 0;
                self.wire.extend_from_slice(b".\r\n");
            } else {
                self.write_body();
            }
            self.expect(Expect::EndOfData);
            if last && self.pipelining() {
                self.wire.extend_from_slice(b"QUIT\r\n");
                self.expect(Expect::Quit);
                self.quit_queued = true;
            }
            return;
        }
        if t.failure.is_none() {
            rec.refused(Stage::Data, Cause::Reply(code));
            t.failure = Some((Stage::Data, Cause::Reply(code)));
        }
        let open = t.mail_ok;
        self.finish(None, now, rec, open);
    }

    fn on_end_of_data(&mut self, code: ReplyCode, bdat: bool, now: Instant, rec: &mut dyn Recorder) {
        let Some(t) = self.txn.as_mut() else { return };
        if code.is_positive() && t.failure.is_none() {
            self.finish(Some(code), now, rec, false);
            return;
        }
        if t.failure.is_none() {
            rec.refused(Stage::Submission, Cause::Reply(code));
            t.failure = Some((Stage::Submission, Cause::Reply(code)));
        }
        // A reply to the end of DATA always ends the transaction (RFC 5321 4.1.1.4). A refused
        // BDAT may leave it open (RFC 3030 2): reset to be sure.
        let open = bdat && t.mail_ok;
        self.finish(None, now, rec, open);
    }

    /// Ends the transaction. `ok` carries the success reply; `needs_rset` when a transaction
    /// may still be open on the server.
    fn finish(&mut self, ok: Option<ReplyCode>, now: Instant, rec: &mut dyn Recorder, needs_rset: bool) {
        let Some(t) = self.txn.take() else { return };
        let success = ok.is_some() && t.failure.is_none();
        if success {
            if let Some(eod) = t.eod_sent {
                rec.latency(Phase::Submission, now.saturating_duration_since(eod));
            }
            rec.latency(Phase::Message, now.saturating_duration_since(t.ticket));
        }
        rec.message_done(&Outcome {
            ok: success,
            rcpts_ok: t.rcpts_ok,
            rcpts_refused: t.rcpts_refused,
            bytes: if t.eod_sent.is_some() { t.bytes } else { 0 },
        });
        if needs_rset && !self.quit_queued {
            self.line(&["RSET"]);
            self.expect(Expect::Rset);
        }
    }

    /// The session cannot go on: records the failure (and the message in flight) and closes.
    fn fatal(&mut self, stage: Stage, cause: Cause, rec: &mut dyn Recorder) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.failure = Some((stage, cause));
        self.pending.clear();
        self.tls_pending = None;
        match self.txn.take() {
            Some(t) => {
                if t.failure.is_none() {
                    rec.refused(stage, cause);
                }
                rec.message_done(&Outcome {
                    ok: false,
                    rcpts_ok: t.rcpts_ok,
                    rcpts_refused: t.rcpts_refused,
                    bytes: 0,
                });
            }
            None => rec.refused(stage, cause),
        }
    }

    /// Appends the message, dot-stuffed (RFC 5321 4.5.2), and the end-of-data line.
    fn write_body(&mut self) {
        let (msg, wire) = (&self.msg, &mut self.wire);
        wire.reserve(msg.len() + 8);
        let mut start = 0;
        if msg.first() == Some(&b'.') {
            wire.push(b'.');
        }
        for i in memchr::memmem::find_iter(msg, b"\n.") {
            wire.extend_from_slice(&msg[start..=i]);
            wire.push(b'.');
            start = i + 1;
        }
        wire.extend_from_slice(&msg[start..]);
        if !msg.is_empty() && !msg.ends_with(b"\r\n") {
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
