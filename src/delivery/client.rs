//! The outbound SMTP client as a sans-IO state machine, the mirror of `smtp::session`: bytes
//! from the server in, bytes to send and events out. One `ClientSession` per connection; it
//! never blocks and never touches a socket, a clock or the disk. The runtime connects, feeds
//! what it reads to `receive`, writes `Output::wire`, runs the TLS handshake when asked, and
//! reacts to the events.
//!
//! A connection goes: greeting (220) → EHLO (HELO when EHLO gets 5xx) → STARTTLS when offered
//! and the policy says so → EHLO again under TLS → AUTH PLAIN or LOGIN when credentials are
//! configured (never without TLS) → `Event::Ready`. Then any number of transactions, one at a
//! time: `start_transaction` writes MAIL, every RCPT and DATA in one write when the server
//! offers PIPELINING (RFC 2920; replies are matched in order), or one command per reply when it
//! does not; on 354 the client asks for the body (`Event::SendBody`), which the runtime feeds
//! in chunks through the `DataEncoder`; the reply to the end of data decides the outcome of the
//! recipients the server accepted. `Event::TransactionDone` then `Event::Ready` again. `quit`
//! ends the connection. Timeouts are the runtime's; `timeout()` says which RFC 5321 4.5.3.2
//! timeout applies to the reply awaited now.
//!
//! Guarantees the tests pin down:
//! - credentials are written only once TLS is active, and `Output::secret` marks those writes;
//! - no message content is written unless MAIL and at least one RCPT were accepted and DATA got
//!   354; when pipelined DATA gets 354 although no recipient was accepted, only the end marker
//!   `.` is written (an empty message to nobody) and the transaction counts as not sent;
//! - a message larger than the server's SIZE, needing SMTPUTF8 the server lacks, or with 8-bit
//!   content declared `BODY=8BITMIME` to a server without 8BITMIME (RFC 6152 3: we do not
//!   convert), is failed without a command being sent, with `Cause::Capability`: this host
//!   cannot take it, another host of the destination may (`policy::route`);
//! - every recipient handed to `start_transaction` gets exactly one outcome;
//! - a 421 at any point closes the connection and defers every recipient not yet decided;
//! - bytes that arrive after the 220 to STARTTLS (before the handshake) are refused: they would
//!   be plaintext injected into the TLS session (the client side of CVE-2011-0411);
//! - RSET is sent only before reusing a connection whose last transaction stopped midway.
//!
//! # Driving a session
//!
//! The runtime's loop, with the server's side scripted:
//!
//! ```
//! use std::rc::Rc;
//! use ringrelay::delivery::client::{
//!     ClientConfig, ClientSession, Event, Output, RecipientStatus, Tls, Transaction,
//! };
//! use ringrelay::smtp::envelope::{BodyType, Recipient};
//!
//! let config = Rc::new(ClientConfig::new("relay.example.test", Tls::Off));
//! let mut session = ClientSession::new(config);
//! let mut out = Output::default();
//!
//! // Bytes read from the socket go in; `out.wire` goes to the socket; then `out.clear()`.
//! session.receive(b"220 mx.example.test ESMTP\r\n", &mut out);
//! assert_eq!(out.wire, b"EHLO relay.example.test\r\n");
//! out.clear();
//! session.receive(b"250-mx.example.test\r\n250-PIPELINING\r\n250 SIZE 10485760\r\n", &mut out);
//! assert_eq!(out.events, [Event::Ready]);
//! out.clear();
//!
//! // A pooled connection takes one message at a time.
//! let message = b"Subject: hi\r\n\r\nHello\r\n";
//! let rcpts = [Recipient { address: "a@example.test".into(), ..Default::default() }];
//! let tx = Transaction {
//!     sender: "app@example.org",
//!     size: message.len() as u64,
//!     body: BodyType::SevenBit,
//!     eight_bit: false,
//!     smtputf8: false,
//!     ret: None,
//!     envid: None,
//! };
//! session.start_transaction(&tx, &rcpts, &mut out).unwrap();
//! assert_eq!(out.wire, b"MAIL FROM:<app@example.org> SIZE=22\r\nRCPT TO:<a@example.test>\r\nDATA\r\n");
//! out.clear();
//! session.receive(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n", &mut out);
//! assert_eq!(out.events, [Event::SendBody]);
//! out.clear();
//!
//! // The body goes in pieces as it is read from the spool; each write is one data block.
//! for piece in message.chunks(8) {
//!     session.write_body(piece, &mut out);
//! }
//! session.finish_body(&mut out);
//! assert!(out.wire.ends_with(b"Hello\r\n.\r\n"));
//! out.clear();
//!
//! session.receive(b"250 2.0.0 queued as 1234\r\n", &mut out);
//! assert_eq!(out.events, [Event::TransactionDone, Event::Ready]);
//! let outcome = &session.result().recipients()[0];
//! assert_eq!(outcome.status, RecipientStatus::Delivered);
//! assert_eq!(outcome.reply.one_line(), "250 2.0.0 queued as 1234");
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;

use super::data::DataEncoder;
use super::reply::{self, Capabilities, REPLY_LINE_MAX, REPLY_LINES_MAX, Read, ReplyReader, Response};
use crate::config::OutboundTls;
use crate::smtp::auth;
use crate::smtp::envelope::{BodyType, Envelope, Notify, Recipient, Ret};
use crate::smtp::reply::Reply as FixedReply;

/// Most recipients in one transaction. RFC 5321 4.5.3.1.8 makes servers take at least 100;
/// the runtime batches at most its `max_recipients`, and past the server's own limit the extra
/// recipients come back deferred with 452 (RFC 5321 4.5.3.1.10) for the next transaction.
pub const TRANSACTION_RECIPIENTS_MAX: usize = 1000;

/// RFC 5321 4.5.3.1.3: a path is at most 256 octets with its brackets.
const ADDRESS_MAX: usize = 254;

/// STARTTLS policy for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// STARTTLS when the server offers it; plaintext when it does not or refuses it.
    Opportunistic,
    /// STARTTLS or no delivery: a server that does not offer it (or refuses it) is a temporary
    /// failure of the connection.
    Required,
    /// Never STARTTLS.
    Off,
}

impl From<OutboundTls> for Tls {
    fn from(t: OutboundTls) -> Tls {
        match t {
            OutboundTls::Opportunistic => Tls::Opportunistic,
            OutboundTls::Required => Tls::Required,
            OutboundTls::Off => Tls::Off,
        }
    }
}

/// Smart-host credentials. `Debug` does not print the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The SASL user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).field("password", &"<redacted>").finish()
    }
}

/// What a client session needs to know; shared by the connections to one destination.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Our name in EHLO/HELO (the `hostname` of the configuration).
    pub helo_name: String,
    /// STARTTLS policy.
    pub tls: Tls,
    /// AUTH credentials (smart hosts only).
    pub credentials: Option<Credentials>,
    /// Longest reply line accepted, CRLF included.
    pub reply_line_max: usize,
    /// Most lines in one reply.
    pub reply_lines_max: usize,
}

impl ClientConfig {
    /// A configuration with the default reply limits and no credentials.
    pub fn new(helo_name: impl Into<String>, tls: Tls) -> ClientConfig {
        ClientConfig {
            helo_name: helo_name.into(),
            tls,
            credentials: None,
            reply_line_max: REPLY_LINE_MAX,
            reply_lines_max: REPLY_LINES_MAX,
        }
    }
}

/// Where in the conversation something happened. Also used by the runtime for the steps
/// before the client has a say (`Connect`, `TlsHandshake`) and by `policy::route` to decide
/// what a failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// DNS lookup of the host and TCP connect (runtime).
    Connect,
    /// The TLS handshake after STARTTLS (runtime).
    TlsHandshake,
    /// Waiting for the 220 greeting.
    Greeting,
    /// EHLO.
    Ehlo,
    /// HELO (after EHLO got 5xx).
    Helo,
    /// STARTTLS.
    StartTls,
    /// AUTH.
    Auth,
    /// Between transactions.
    Idle,
    /// RSET before reusing the connection.
    Rset,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// DATA (the command, up to 354).
    Data,
    /// Sending the message content.
    Body,
    /// After the end of data, waiting for the final reply.
    DataEnd,
    /// QUIT.
    Quit,
}

impl Stage {
    /// How the stage reads in a sentence ("... while sending MAIL FROM").
    pub fn name(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::TlsHandshake => "TLS handshake",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::Helo => "HELO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Idle => "idle",
            Stage::Rset => "RSET",
            Stage::Mail => "MAIL FROM",
            Stage::Rcpt => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Body => "message content",
            Stage::DataEnd => "end of data",
            Stage::Quit => "QUIT",
        }
    }

    /// The timeout that applies while waiting in this stage (None: the pool's idle timeout).
    pub fn timeout(self) -> Option<TimeoutKind> {
        Some(match self {
            Stage::Greeting => TimeoutKind::Greeting,
            Stage::Mail | Stage::Rset => TimeoutKind::Mail,
            Stage::Rcpt => TimeoutKind::Rcpt,
            Stage::Data => TimeoutKind::DataInit,
            Stage::Body => TimeoutKind::DataBlock,
            Stage::DataEnd => TimeoutKind::DataTermination,
            Stage::Idle => return None,
            Stage::Connect
            | Stage::TlsHandshake
            | Stage::Ehlo
            | Stage::Helo
            | Stage::StartTls
            | Stage::Auth
            | Stage::Quit => TimeoutKind::Command,
        })
    }
}

/// The client timeouts of RFC 5321 4.5.3.2, as a value the runtime can look up (or map to its
/// own configured durations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// Initial 220 message: 5 minutes.
    Greeting,
    /// Other commands (EHLO, STARTTLS, AUTH, QUIT; RFC 5321 has no figure): 5 minutes, as MAIL.
    Command,
    /// MAIL command (and RSET before it): 5 minutes.
    Mail,
    /// RCPT command: 5 minutes.
    Rcpt,
    /// DATA initiation, up to 354: 2 minutes.
    DataInit,
    /// Each write of message content: 3 minutes.
    DataBlock,
    /// From the end of data to the final reply: 10 minutes.
    DataTermination,
}

impl TimeoutKind {
    /// The RFC 5321 4.5.3.2 minimum.
    pub const fn rfc5321(self) -> Duration {
        Duration::from_secs(match self {
            TimeoutKind::Greeting | TimeoutKind::Command | TimeoutKind::Mail | TimeoutKind::Rcpt => 5 * 60,
            TimeoutKind::DataInit => 2 * 60,
            TimeoutKind::DataBlock => 3 * 60,
            TimeoutKind::DataTermination => 10 * 60,
        })
    }
}

/// What decided an outcome or a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// The server's reply (in `reply`).
    Reply,
    /// The client decided before sending anything: an address that cannot be written in a
    /// command (wrong on every host).
    Local,
    /// The client decided before sending anything that this server cannot take the message:
    /// it is over the server's SIZE, or needs SMTPUTF8 or (8-bit content) 8BITMIME the server
    /// does not offer. Another host may.
    Capability,
    /// `Tls::Required` and the server does not offer STARTTLS.
    TlsNotOffered,
    /// Credentials configured and TLS is not active.
    AuthNeedsTls,
    /// Credentials configured and the server offers no usable AUTH mechanism.
    NoAuthMechanism,
    /// The server broke the protocol (malformed reply, reply when none was due, plaintext
    /// after the STARTTLS reply).
    Protocol,
    /// The connection dropped (the runtime called `connection_lost`).
    ConnectionLost,
    /// The TLS handshake failed (the runtime called `tls_failed`).
    TlsFailed,
    /// A reply did not come in time (the runtime called `timed_out`).
    Timeout,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// We sent QUIT: a normal end.
    Quit,
    /// Something failed; `reply` says what (the server's reply, or a local one for the other
    /// causes).
    Failed {
        /// Where.
        stage: Stage,
        /// What decided it.
        cause: Cause,
        /// The reply to report (tracking log, DSN, route classification).
        reply: Response,
    },
}

/// What the runtime must know or do after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The session is idle: `start_transaction` (or `quit`) may be called.
    Ready,
    /// Run the TLS handshake on the connection (the STARTTLS reply was the last plaintext the
    /// client accepts: bytes after it close the session), then call `tls_established`, or
    /// `tls_failed` and close.
    NeedTls,
    /// 354 came: feed the message through `write_body`, then `finish_body`.
    SendBody,
    /// The transaction is over: `result()` holds an outcome for every recipient.
    TransactionDone,
    /// Send the pending output (it may hold a QUIT) and close the connection.
    Closed(CloseReason),
}

/// The output of one call: bytes to send, in order, and what happened. Reused by the caller,
/// which sends `wire` and clears everything between calls.
#[derive(Debug, Default)]
pub struct Output {
    /// Bytes for the socket.
    pub wire: Vec<u8>,
    /// Events, in order (e.g. `TransactionDone` then `Ready`).
    pub events: Vec<Event>,
    /// `wire` holds credentials: protocol logs must redact it.
    pub secret: bool,
}

impl Output {
    /// Empties the output, keeping the buffers.
    pub fn clear(&mut self) {
        self.wire.clear();
        self.events.clear();
        self.secret = false;
    }
}

/// Why `start_transaction` refused to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// The session is not idle (wait for `Event::Ready`).
    NotReady,
    /// No recipients.
    NoRecipients,
    /// More than `TRANSACTION_RECIPIENTS_MAX` recipients.
    TooManyRecipients,
}

/// The envelope of one transaction. Recipients are passed to `start_transaction` separately,
/// so a delivery core can send a subset of an envelope's recipients without copying them.
#[derive(Debug, Clone, Copy)]
pub struct Transaction<'a> {
    /// The reverse path without brackets; "" for the null sender (DSNs).
    pub sender: &'a str,
    /// The message size in octets (as stored), for `SIZE=` and the server's limit.
    pub size: u64,
    /// `BODY=8BITMIME` is passed when the message is 8-bit and the server offers 8BITMIME.
    pub body: BodyType,
    /// The content holds octets over 127 (`has_eight_bit`). Looked at only for a message
    /// declared `BODY=8BITMIME` going to a server without 8BITMIME: such a message is not sent
    /// there (RFC 6152 3), while one declared 8BITMIME whose content is all 7-bit goes as is.
    /// A caller that has not looked may pass true (the safe answer).
    pub eight_bit: bool,
    /// The message needs SMTPUTF8 (see `needs_smtputf8`). Non-ASCII addresses imply it.
    pub smtputf8: bool,
    /// `RET=`, passed when the server offers DSN.
    pub ret: Option<Ret>,
    /// `ENVID=` (xtext, as received), passed when the server offers DSN.
    pub envid: Option<&'a str>,
}

impl<'a> Transaction<'a> {
    /// The transaction for a stored message: `message` is the stored bytes (for its size,
    /// `needs_smtputf8` and `has_eight_bit`).
    pub fn from_envelope(envelope: &'a Envelope, message: &[u8]) -> Transaction<'a> {
        Transaction {
            sender: &envelope.sender,
            size: message.len() as u64,
            body: envelope.body_type,
            eight_bit: envelope.body_type == BodyType::EightBitMime && has_eight_bit(message),
            smtputf8: needs_smtputf8(envelope, message),
            ret: envelope.ret,
            envid: envelope.envid.as_deref(),
        }
    }
}

/// Does the message need SMTPUTF8 on the next hop (RFC 6531)? Yes when an address is not
/// ASCII, or when the submitter used SMTPUTF8 and the header section holds non-ASCII (RFC
/// 6532 headers). A submitter that said SMTPUTF8 for a plain ASCII message can be relayed to a
/// server without it: nothing in the message needs it.
pub fn needs_smtputf8(envelope: &Envelope, message: &[u8]) -> bool {
    if !envelope.sender.is_ascii() || envelope.recipients.iter().any(|r| !r.address.is_ascii()) {
        return true;
    }
    envelope.smtputf8 && !header_section(message).is_ascii()
}

/// Does `content` hold an octet over 127 (8-bit data, RFC 6152)? Feed a message piece by
/// piece and or the answers together.
pub fn has_eight_bit(content: &[u8]) -> bool {
    // Eight bytes at a time: one test of the high bits instead of eight.
    let (words, rest) = content.as_chunks::<8>();
    words.iter().any(|w| u64::from_ne_bytes(*w) & 0x8080_8080_8080_8080 != 0) || rest.iter().any(|&b| b > 127)
}

/// The header section of a message: up to the first empty line.
fn header_section(message: &[u8]) -> &[u8] {
    let mut start = 0;
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            return &message[..start];
        }
        start += line.len();
    }
    message
}

/// How one recipient ended in a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecipientStatus {
    /// The server took responsibility (2xx after the data).
    Delivered,
    /// Temporary failure: try again (later, or on the next host; see `policy::route`).
    Deferred,
    /// Permanent failure: bounce.
    Failed,
}

/// The outcome of one recipient: status, where it was decided, by what, and the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientOutcome {
    /// Delivered, deferred or failed.
    pub status: RecipientStatus,
    /// Where it was decided.
    pub stage: Stage,
    /// What decided it.
    pub cause: Cause,
    /// The reply that decided it (the final reply for delivered recipients).
    pub reply: Response,
    /// RCPT got 2xx; the data verdict is still to come.
    accepted: bool,
    /// The outcome is final.
    resolved: bool,
}

impl RecipientOutcome {
    fn fresh() -> RecipientOutcome {
        RecipientOutcome {
            status: RecipientStatus::Deferred,
            stage: Stage::Rcpt,
            cause: Cause::Local,
            reply: Response::default(),
            accepted: false,
            resolved: false,
        }
    }
}

/// What became of the message content in a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageOutcome {
    /// The content was not sent (refused before DATA, at DATA, or decided locally).
    NotSent,
    /// The final reply was 2xx: the accepted recipients are delivered.
    Delivered,
    /// The content was sent (or started) and the server refused it (4xx/5xx, or 421).
    Refused,
    /// The content was sent and no final reply came (connection lost, timeout): it may have
    /// been delivered; the recipients are deferred and will be sent again (RFC 1047).
    Unknown,
}

/// The result of the last transaction: one outcome per recipient, in the order they were
/// passed to `start_transaction`. Valid from `Event::TransactionDone` until the next
/// `start_transaction`; its buffers are reused from one transaction to the next.
#[derive(Debug, Clone)]
pub struct TransactionResult {
    outcomes: Vec<RecipientOutcome>,
    count: usize,
    message: MessageOutcome,
    next_hop_dsn: bool,
}

impl TransactionResult {
    /// One outcome per recipient, in `start_transaction` order.
    pub fn recipients(&self) -> &[RecipientOutcome] {
        &self.outcomes[..self.count]
    }

    /// What became of the content.
    pub fn message(&self) -> MessageOutcome {
        self.message
    }

    /// The server offered DSN, so NOTIFY was passed on and success notices are its job
    /// (RFC 3461 5.2.2; see `dsn::notification`).
    pub fn next_hop_dsn(&self) -> bool {
        self.next_hop_dsn
    }

    /// How many recipients ended with `status`.
    pub fn count(&self, status: RecipientStatus) -> usize {
        self.recipients().iter().filter(|o| o.status == status).count()
    }

    fn all_resolved(&self) -> bool {
        self.recipients().iter().all(|o| o.resolved)
    }
}

/// A reply the client waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Greeting,
    Ehlo,
    Helo,
    StartTls,
    /// `AUTH PLAIN <initial response>` was sent.
    AuthPlain,
    /// `AUTH LOGIN` was sent; a 334 asks for the user name.
    AuthLoginUser,
    /// The user name was sent; a 334 asks for the password.
    AuthLoginPass,
    /// The last SASL response was sent; 235 or a refusal.
    AuthDone,
    Rset,
    Mail,
    /// RCPT for recipient `n` (index into the outcomes).
    Rcpt(u32),
    Data,
    /// After the end of data. `discard`: only the end marker was sent (no recipient was
    /// accepted but DATA got 354), so the reply decides nothing.
    DataEnd {
        discard: bool,
    },
    Quit,
}

impl Expect {
    fn stage(self) -> Stage {
        match self {
            Expect::Greeting => Stage::Greeting,
            Expect::Ehlo => Stage::Ehlo,
            Expect::Helo => Stage::Helo,
            Expect::StartTls => Stage::StartTls,
            Expect::AuthPlain | Expect::AuthLoginUser | Expect::AuthLoginPass | Expect::AuthDone => Stage::Auth,
            Expect::Rset => Stage::Rset,
            Expect::Mail => Stage::Mail,
            Expect::Rcpt(_) => Stage::Rcpt,
            Expect::Data => Stage::Data,
            Expect::DataEnd { .. } => Stage::DataEnd,
            Expect::Quit => Stage::Quit,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Commands are in flight; replies are matched against `expects`.
    Talking,
    /// STARTTLS got 220; waiting for `tls_established`.
    TlsHandshake,
    /// Between transactions.
    Ready,
    /// 354 came; the runtime writes the content.
    Body,
    Closed,
}

/// The commands of the transaction in progress, rendered once into a reused buffer; sent all
/// at once (PIPELINING) or one per reply.
#[derive(Debug, Default)]
struct Plan {
    active: bool,
    pipelined: bool,
    /// MAIL got 2xx (the server has a transaction open).
    mail_ok: bool,
    /// RCPTs that got 2xx.
    accepted: usize,
    /// The reply to the end of data came (the server's transaction is closed).
    final_reply: bool,
    commands: Vec<u8>,
    /// (what the command's reply is, start, end) into `commands`.
    spans: Vec<(Expect, usize, usize)>,
    /// The next span to send (one-at-a-time mode).
    next: usize,
}

/// One outbound SMTP connection's conversation.
pub struct ClientSession {
    cfg: Rc<ClientConfig>,
    phase: Phase,
    /// Replies awaited, oldest first (several while pipelining).
    expects: VecDeque<Expect>,
    reader: ReplyReader,
    /// The reply being read; reused.
    reply: Response,
    caps: Capabilities,
    tls_active: bool,
    /// The last transaction stopped midway with MAIL accepted: RSET before the next one.
    reset_needed: bool,
    transactions: u64,
    encoder: DataEncoder,
    plan: Plan,
    result: TransactionResult,
}

impl fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSession")
            .field("phase", &self.phase)
            .field("expects", &self.expects)
            .field("tls_active", &self.tls_active)
            .field("caps", &self.caps)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// A session for a connection that was just opened (plain TCP): it waits for the greeting.
    ///
    /// Panics when `helo_name` is not a plausible domain or address literal (it is written in
    /// a command line, so it must not contain spaces or control characters), or when
    /// `reply_line_max` is under 512 or `reply_lines_max` is 0: configuration bugs.
    pub fn new(cfg: Rc<ClientConfig>) -> ClientSession {
        assert!(
            !cfg.helo_name.is_empty() && cfg.helo_name.bytes().all(|b| b > b' ' && b != 0x7f),
            "helo_name {:?} cannot be written in EHLO",
            cfg.helo_name
        );
        let reader = ReplyReader::new(cfg.reply_line_max, cfg.reply_lines_max);
        let mut expects = VecDeque::with_capacity(8);
        expects.push_back(Expect::Greeting);
        ClientSession {
            cfg,
            phase: Phase::Talking,
            expects,
            reader,
            reply: Response::default(),
            caps: Capabilities::default(),
            tls_active: false,
            reset_needed: false,
            transactions: 0,
            encoder: DataEncoder::new(),
            plan: Plan::default(),
            result: TransactionResult {
                outcomes: Vec::new(),
                count: 0,
                message: MessageOutcome::NotSent,
                next_hop_dsn: false,
            },
        }
    }

    /// What the server offers (after the last EHLO; empty after HELO).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// TLS is on (after `tls_established`).
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Idle: `start_transaction` may be called.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// The connection is over (an `Event::Closed` was given).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Waiting for the message content (`write_body`/`finish_body`).
    pub fn wants_body(&self) -> bool {
        self.phase == Phase::Body
    }

    /// Transactions finished on this connection (for `max_messages_per_connection`).
    pub fn transactions(&self) -> u64 {
        self.transactions
    }

    /// The last transaction's result (see `TransactionResult`).
    pub fn result(&self) -> &TransactionResult {
        &self.result
    }

    /// The longest reply line; the runtime must be able to hold this many unconsumed bytes.
    pub fn reply_line_max(&self) -> usize {
        self.reader.line_max()
    }

    /// Where the conversation is now.
    pub fn stage(&self) -> Stage {
        match self.phase {
            Phase::Talking => self.expects.front().map_or(Stage::Idle, |e| e.stage()),
            Phase::TlsHandshake => Stage::TlsHandshake,
            Phase::Body => Stage::Body,
            Phase::Ready | Phase::Closed => Stage::Idle,
        }
    }

    /// The timeout that applies now: for the reply awaited, or for each write of content.
    /// None when idle (the pool's idle timeout applies) or closed.
    pub fn timeout(&self) -> Option<TimeoutKind> {
        if self.phase == Phase::Closed {
            return None;
        }
        self.stage().timeout()
    }

    /// Processes bytes from the server. Returns how many were used; the rest (a partial reply
    /// line) must be offered again with more bytes behind it.
    pub fn receive(&mut self, input: &[u8], out: &mut Output) -> usize {
        let mut pos = 0;
        while pos < input.len() {
            if matches!(self.phase, Phase::Closed | Phase::TlsHandshake) {
                break;
            }
            match self.reader.read(&input[pos..], &mut self.reply) {
                Read::NeedMore { consumed } => {
                    pos += consumed;
                    break;
                }
                Read::Error { error, consumed } => {
                    pos += consumed;
                    self.protocol_error(error.reason(), out);
                    break;
                }
                Read::Complete { consumed } => {
                    pos += consumed;
                    self.on_reply(out);
                }
            }
        }
        if self.phase == Phase::TlsHandshake && pos < input.len() {
            self.protocol_error("data after the STARTTLS reply (possible plaintext injection)", out);
            pos = input.len();
        }
        if self.phase == Phase::Closed {
            pos = input.len();
        }
        pos
    }

    /// The TLS handshake asked for by `Event::NeedTls` succeeded: EHLO again (RFC 3207 4.2:
    /// nothing learnt before TLS is kept).
    pub fn tls_established(&mut self, out: &mut Output) {
        assert_eq!(self.phase, Phase::TlsHandshake, "tls_established without Event::NeedTls");
        self.tls_active = true;
        self.caps = Capabilities::default();
        self.phase = Phase::Talking;
        self.send_hello(true, out);
    }

    /// Starts a transaction on an idle session. Outcomes are reported per recipient, in the
    /// order of `recipients`, by `Event::TransactionDone` (which may come from this very call
    /// when the client decides alone, e.g. a message over the server's SIZE). On
    /// `Err(TooManyRecipients)` nothing was sent, the session stays ready, and the previous
    /// transaction's `result()` is no longer valid.
    pub fn start_transaction<'r>(
        &mut self,
        tx: &Transaction<'_>,
        recipients: impl IntoIterator<Item = &'r Recipient>,
        out: &mut Output,
    ) -> Result<(), StartError> {
        if self.phase != Phase::Ready {
            return Err(StartError::NotReady);
        }
        let mut count = 0;
        let mut utf8 = tx.smtputf8 || !tx.sender.is_ascii();
        self.plan.commands.clear();
        self.plan.spans.clear();
        for r in recipients {
            if count == TRANSACTION_RECIPIENTS_MAX {
                return Err(StartError::TooManyRecipients);
            }
            utf8 |= !r.address.is_ascii();
            if self.result.outcomes.len() == count {
                self.result.outcomes.push(RecipientOutcome::fresh());
            }
            let o = &mut self.result.outcomes[count];
            o.status = RecipientStatus::Deferred;
            o.stage = Stage::Rcpt;
            o.cause = Cause::Local;
            o.accepted = false;
            o.resolved = false;
            if usable_address(&r.address) && !r.address.is_empty() {
                let start = self.plan.commands.len();
                write_rcpt(&mut self.plan.commands, r, &self.caps);
                self.plan.spans.push((Expect::Rcpt(count as u32), start, self.plan.commands.len()));
            } else {
                o.status = RecipientStatus::Failed;
                o.reply.copy_from(&Response::local(reply::BAD_RECIPIENT_ADDRESS));
                o.resolved = true;
            }
            count += 1;
        }
        if count == 0 {
            return Err(StartError::NoRecipients);
        }
        self.result.count = count;
        self.result.message = MessageOutcome::NotSent;
        self.result.next_hop_dsn = self.caps.dsn;
        self.plan.active = true;
        self.plan.pipelined = self.caps.pipelining;
        self.plan.mail_ok = false;
        self.plan.accepted = 0;
        self.plan.final_reply = false;
        self.plan.next = 0;
        self.phase = Phase::Talking;

        // Decisions that need no server: they fail every recipient still open.
        let local = if !usable_address(tx.sender) {
            Some((Cause::Local, Response::local(reply::BAD_SENDER_ADDRESS)))
        } else if utf8 && !self.caps.smtputf8 {
            Some((Cause::Capability, Response::local(reply::NO_SMTPUTF8)))
        } else if tx.body == BodyType::EightBitMime && tx.eight_bit && !self.caps.eight_bit_mime {
            Some((Cause::Capability, Response::local(reply::NO_8BITMIME)))
        } else if let Some(limit) = self.caps.size_limit().filter(|&l| tx.size > l) {
            let text =
                format!("{} ({} octets; the server takes at most {limit})", reply::TOO_BIG_FOR_SERVER.text, tx.size);
            Some((Cause::Capability, Response::local_with_text(reply::TOO_BIG_FOR_SERVER, text)))
        } else {
            None
        };
        if let Some((cause, r)) = &local {
            self.resolve_open(RecipientStatus::Failed, Stage::Mail, *cause, r);
        }
        if self.plan.spans.is_empty() || local.is_some() {
            self.finish_transaction(out);
            self.become_ready(out);
            return Ok(());
        }

        // MAIL goes first: render it and move it in front of the RCPTs.
        let rcpt_bytes = self.plan.commands.len();
        write_mail(&mut self.plan.commands, tx, utf8, &self.caps);
        let mail_len = self.plan.commands.len() - rcpt_bytes;
        self.plan.commands.rotate_right(mail_len);
        for span in &mut self.plan.spans {
            span.1 += mail_len;
            span.2 += mail_len;
        }
        self.plan.spans.insert(0, (Expect::Mail, 0, mail_len));
        let start = self.plan.commands.len();
        self.plan.commands.extend_from_slice(b"DATA\r\n");
        self.plan.spans.push((Expect::Data, start, self.plan.commands.len()));

        if self.reset_needed {
            // Alone, not pipelined: if the server refuses RSET its state is unknown, and a MAIL
            // already in flight could be answered "nested MAIL" and bounce the recipients.
            out.wire.extend_from_slice(b"RSET\r\n");
            self.expects.push_back(Expect::Rset);
        } else {
            self.send_commands(out);
        }
        Ok(())
    }

    /// The TLS handshake asked for by `Event::NeedTls` failed: `Event::Closed` with
    /// `Cause::TlsFailed`. The connection cannot be used any more (see
    /// `policy::route::plaintext_retry_allowed` for trying the host again without TLS).
    pub fn tls_failed(&mut self, out: &mut Output) {
        assert_eq!(self.phase, Phase::TlsHandshake, "tls_failed without Event::NeedTls");
        self.abort_with(Cause::TlsFailed, Response::local(reply::TLS_HANDSHAKE_FAILED), out);
    }

    /// Writes the encoding of the next piece of the message content into `out.wire`. Returns
    /// false when the session no longer takes content (the server replied mid-content, or the
    /// connection closed): stop writing.
    pub fn write_body(&mut self, chunk: &[u8], out: &mut Output) -> bool {
        if self.phase != Phase::Body {
            return false;
        }
        self.encoder.encode(chunk, &mut out.wire);
        true
    }

    /// Writes the end of data; the final reply comes through `receive`. Returns false when the
    /// session no longer takes content.
    pub fn finish_body(&mut self, out: &mut Output) -> bool {
        if self.phase != Phase::Body {
            return false;
        }
        self.encoder.finish(&mut out.wire);
        self.phase = Phase::Talking;
        self.expects.push_back(Expect::DataEnd { discard: false });
        true
    }

    /// Ends an idle connection politely: QUIT, then `Event::Closed(Quit)` at the reply (or at
    /// `connection_lost`, if the runtime closes without waiting for it). Returns false when the
    /// session is not idle.
    pub fn quit(&mut self, out: &mut Output) -> bool {
        if self.phase != Phase::Ready {
            return false;
        }
        out.wire.extend_from_slice(b"QUIT\r\n");
        self.expects.push_back(Expect::Quit);
        self.phase = Phase::Talking;
        true
    }

    /// The connection dropped (EOF or a socket error). Recipients not yet decided are deferred.
    pub fn connection_lost(&mut self, out: &mut Output) {
        self.abort(Cause::ConnectionLost, reply::CONNECTION_LOST, reply::CONNECTION_LOST_AFTER_DATA, out);
    }

    /// The timeout from `timeout()` expired. Recipients not yet decided are deferred; the
    /// runtime closes the socket (nothing is written: the server is not listening).
    pub fn timed_out(&mut self, out: &mut Output) {
        self.abort(Cause::Timeout, reply::TIMEOUT, reply::TIMEOUT_AFTER_DATA, out);
    }

    // ---- replies ---------------------------------------------------------------------------

    fn on_reply(&mut self, out: &mut Output) {
        if self.reply.code() == 421 {
            // RFC 5321 3.8: the server is closing, whatever it was asked.
            if self.expects.front() == Some(&Expect::Quit) {
                return self.close(CloseReason::Quit, out);
            }
            let stage = self.stage();
            return self.server_closed(stage, out);
        }
        let Some(expect) = self.expects.pop_front() else {
            return self.unexpected_reply(out);
        };
        match expect {
            Expect::Greeting => {
                if self.reply.code() == 220 {
                    self.send_hello(true, out);
                } else {
                    self.fail_connection(Stage::Greeting, true, out);
                }
            }
            Expect::Ehlo => {
                if self.reply.is_positive() {
                    self.caps = Capabilities::from_ehlo(&self.reply);
                    self.after_hello(out);
                } else if self.reply.is_permanent() {
                    self.send_hello(false, out);
                } else {
                    self.fail_connection(Stage::Ehlo, true, out);
                }
            }
            Expect::Helo => {
                if self.reply.is_positive() {
                    self.caps = Capabilities::default();
                    self.after_hello(out);
                } else {
                    self.fail_connection(Stage::Helo, true, out);
                }
            }
            Expect::StartTls => {
                if self.reply.code() == 220 {
                    self.phase = Phase::TlsHandshake;
                    out.events.push(Event::NeedTls);
                } else if self.cfg.tls == Tls::Required {
                    self.fail_connection(Stage::StartTls, true, out);
                } else {
                    // Opportunistic: a refused STARTTLS leaves a usable plaintext session.
                    self.after_tls(out);
                }
            }
            Expect::AuthPlain | Expect::AuthLoginUser | Expect::AuthLoginPass | Expect::AuthDone => {
                self.auth_reply(expect, out);
            }
            Expect::Rset => {
                if self.reply.is_positive() {
                    self.reset_needed = false;
                    self.send_commands(out);
                } else {
                    let r = Response::local_with_text(
                        reply::RESET_FAILED,
                        format!("{} ({})", reply::RESET_FAILED.text, self.reply.one_line()),
                    );
                    self.resolve_open(RecipientStatus::Deferred, Stage::Rset, Cause::Reply, &r);
                    self.finish_transaction(out);
                    out.wire.extend_from_slice(b"QUIT\r\n");
                    self.close(CloseReason::Failed { stage: Stage::Rset, cause: Cause::Reply, reply: r }, out);
                }
            }
            Expect::Mail => self.mail_reply(out),
            Expect::Rcpt(n) => self.rcpt_reply(n as usize, out),
            Expect::Data => self.data_reply(out),
            Expect::DataEnd { discard } => self.data_end_reply(discard, out),
            Expect::Quit => self.close(CloseReason::Quit, out),
        }
    }

    fn mail_reply(&mut self, out: &mut Output) {
        if self.reply.is_positive() {
            self.plan.mail_ok = true;
        } else {
            let status = status_of(&self.reply);
            resolve_open(&mut self.result, status, Stage::Mail, Cause::Reply, &self.reply);
            // Pipelined RCPT and DATA replies still come (503s); they decide nothing now.
        }
        self.continue_transaction(out);
    }

    fn rcpt_reply(&mut self, n: usize, out: &mut Output) {
        let o = &mut self.result.outcomes[n];
        if !o.resolved {
            if self.reply.is_positive() {
                o.accepted = true;
                o.stage = Stage::Rcpt;
                o.cause = Cause::Reply;
                o.reply.copy_from(&self.reply);
                self.plan.accepted += 1;
            } else {
                set_outcome(o, status_of(&self.reply), Stage::Rcpt, Cause::Reply, &self.reply);
            }
        }
        self.continue_transaction(out);
    }

    fn data_reply(&mut self, out: &mut Output) {
        if self.reply.code() == 354 {
            if self.plan.mail_ok && self.plan.accepted > 0 {
                self.phase = Phase::Body;
                self.encoder = DataEncoder::new();
                out.events.push(Event::SendBody);
            } else {
                // RFC 2920 3.1 says the server should have refused DATA. It did not: end an
                // empty message at once. With no recipient it goes nowhere; we count nothing on it.
                self.encoder.finish(&mut out.wire);
                self.expects.push_back(Expect::DataEnd { discard: true });
            }
            return;
        }
        let status = status_of(&self.reply);
        resolve_open(&mut self.result, status, Stage::Data, Cause::Reply, &self.reply);
        self.continue_transaction(out);
    }

    fn data_end_reply(&mut self, discard: bool, out: &mut Output) {
        self.plan.final_reply = true;
        if !discard {
            let status = if self.reply.is_positive() { RecipientStatus::Delivered } else { status_of(&self.reply) };
            self.result.message =
                if status == RecipientStatus::Delivered { MessageOutcome::Delivered } else { MessageOutcome::Refused };
            resolve_open(&mut self.result, status, Stage::DataEnd, Cause::Reply, &self.reply);
        }
        self.continue_transaction(out);
    }

    /// A reply nobody asked for. Mid-content it is the server refusing the message early
    /// (e.g. 552 when too much arrived); otherwise a protocol error.
    fn unexpected_reply(&mut self, out: &mut Output) {
        if self.phase == Phase::Body {
            let status = status_of(&self.reply);
            self.result.message = MessageOutcome::Refused;
            resolve_open(&mut self.result, status, Stage::Body, Cause::Reply, &self.reply);
            self.finish_transaction(out);
            let r = self.reply.clone();
            return self.close(CloseReason::Failed { stage: Stage::Body, cause: Cause::Reply, reply: r }, out);
        }
        self.protocol_error("a reply when none was expected", out);
    }

    fn auth_reply(&mut self, expect: Expect, out: &mut Output) {
        if self.reply.code() == 235 || (self.reply.is_positive() && expect == Expect::AuthDone) {
            return self.become_ready(out);
        }
        if self.reply.code() != 334 || expect == Expect::AuthDone {
            return self.fail_connection(Stage::Auth, true, out);
        }
        let Some(creds) = self.cfg.credentials.as_ref() else { unreachable!("AUTH without credentials") };
        let next = match expect {
            // The server ignored the initial response: send it again as the response.
            Expect::AuthPlain => {
                write_plain_response(&mut out.wire, creds);
                Expect::AuthDone
            }
            Expect::AuthLoginUser => {
                out.wire.extend_from_slice(auth::encode(creds.user.as_bytes()).as_bytes());
                out.wire.extend_from_slice(b"\r\n");
                Expect::AuthLoginPass
            }
            _ => {
                out.wire.extend_from_slice(auth::encode(creds.password.as_bytes()).as_bytes());
                out.wire.extend_from_slice(b"\r\n");
                Expect::AuthDone
            }
        };
        out.secret = true;
        self.expects.push_back(next);
    }

    // ---- connection set-up -----------------------------------------------------------------

    fn send_hello(&mut self, extended: bool, out: &mut Output) {
        let verb: &[u8] = if extended { b"EHLO " } else { b"HELO " };
        out.wire.extend_from_slice(verb);
        out.wire.extend_from_slice(self.cfg.helo_name.as_bytes());
        out.wire.extend_from_slice(b"\r\n");
        self.expects.push_back(if extended { Expect::Ehlo } else { Expect::Helo });
    }

    /// EHLO/HELO succeeded: STARTTLS if due, else go on.
    fn after_hello(&mut self, out: &mut Output) {
        if !self.tls_active && self.cfg.tls != Tls::Off {
            if self.caps.starttls {
                out.wire.extend_from_slice(b"STARTTLS\r\n");
                self.expects.push_back(Expect::StartTls);
                return;
            }
            if self.cfg.tls == Tls::Required {
                let r = Response::local(reply::TLS_NOT_OFFERED);
                out.wire.extend_from_slice(b"QUIT\r\n");
                return self
                    .close(CloseReason::Failed { stage: Stage::StartTls, cause: Cause::TlsNotOffered, reply: r }, out);
            }
        }
        self.after_tls(out);
    }

    /// TLS is settled (on, or not to be): AUTH if configured, else ready.
    fn after_tls(&mut self, out: &mut Output) {
        let cfg = Rc::clone(&self.cfg);
        let Some(creds) = cfg.credentials.as_ref() else { return self.become_ready(out) };
        let failure = if !self.tls_active {
            Some((Cause::AuthNeedsTls, reply::AUTH_NEEDS_TLS))
        } else if !self.caps.auth.plain && !self.caps.auth.login {
            Some((Cause::NoAuthMechanism, reply::NO_AUTH_MECHANISM))
        } else {
            None
        };
        if let Some((cause, r)) = failure {
            out.wire.extend_from_slice(b"QUIT\r\n");
            let reply = Response::local(r);
            return self.close(CloseReason::Failed { stage: Stage::Auth, cause, reply }, out);
        }
        if self.caps.auth.plain {
            out.wire.extend_from_slice(b"AUTH PLAIN ");
            write_plain_response(&mut out.wire, creds);
            out.secret = true;
            self.expects.push_back(Expect::AuthPlain);
        } else {
            out.wire.extend_from_slice(b"AUTH LOGIN\r\n");
            self.expects.push_back(Expect::AuthLoginUser);
        }
    }

    fn become_ready(&mut self, out: &mut Output) {
        self.phase = Phase::Ready;
        out.events.push(Event::Ready);
    }

    // ---- transactions ----------------------------------------------------------------------

    /// Sends the transaction's commands: all of them when pipelining, else the next one.
    fn send_commands(&mut self, out: &mut Output) {
        if self.plan.pipelined {
            out.wire.extend_from_slice(&self.plan.commands);
            self.expects.extend(self.plan.spans.iter().map(|s| s.0));
            self.plan.next = self.plan.spans.len();
        } else {
            self.continue_transaction(out);
        }
    }

    /// After a transaction reply: send the next command (one-at-a-time mode), or finish when
    /// nothing more is awaited.
    fn continue_transaction(&mut self, out: &mut Output) {
        if !self.plan.pipelined && self.plan.next < self.plan.spans.len() {
            let (expect, start, end) = self.plan.spans[self.plan.next];
            let mail_refused = self.plan.next > 0 && !self.plan.mail_ok;
            let nobody = expect == Expect::Data && self.plan.accepted == 0;
            if !mail_refused && !nobody {
                out.wire.extend_from_slice(&self.plan.commands[start..end]);
                self.expects.push_back(expect);
                self.plan.next += 1;
                return;
            }
            self.plan.next = self.plan.spans.len();
        }
        if self.expects.is_empty() && self.phase == Phase::Talking && self.plan.active {
            self.finish_transaction(out);
            self.become_ready(out);
        }
    }

    /// Reports the transaction (the caller then becomes ready or closes). The server keeps a
    /// transaction open after MAIL succeeded until the final reply; if that reply never came,
    /// RSET before the next MAIL.
    fn finish_transaction(&mut self, out: &mut Output) {
        debug_assert!(self.plan.active);
        debug_assert!(self.result.all_resolved(), "{:?}", self.result.recipients());
        self.plan.active = false;
        self.reset_needed |= self.plan.mail_ok && !self.plan.final_reply;
        self.transactions += 1;
        out.events.push(Event::TransactionDone);
    }

    fn resolve_open(&mut self, status: RecipientStatus, stage: Stage, cause: Cause, r: &Response) {
        resolve_open(&mut self.result, status, stage, cause, r);
    }

    // ---- endings ---------------------------------------------------------------------------

    /// A refusal during set-up (greeting, EHLO/HELO, STARTTLS under `Required`, AUTH).
    fn fail_connection(&mut self, stage: Stage, quit: bool, out: &mut Output) {
        if quit {
            out.wire.extend_from_slice(b"QUIT\r\n");
        }
        let reply = self.reply.clone();
        self.close(CloseReason::Failed { stage, cause: Cause::Reply, reply }, out);
    }

    /// 421: everything not decided is deferred with it; the server closes, so no QUIT.
    fn server_closed(&mut self, stage: Stage, out: &mut Output) {
        if self.plan.active {
            if matches!(stage, Stage::Body | Stage::DataEnd) {
                self.result.message = MessageOutcome::Refused;
            }
            resolve_open(&mut self.result, RecipientStatus::Deferred, stage, Cause::Reply, &self.reply);
            self.finish_transaction(out);
        }
        let reply = self.reply.clone();
        self.close(CloseReason::Failed { stage, cause: Cause::Reply, reply }, out);
    }

    fn protocol_error(&mut self, why: &str, out: &mut Output) {
        let r = Response::local_with_text(reply::PROTOCOL_ERROR, format!("{}: {why}", reply::PROTOCOL_ERROR.text));
        self.abort_with(Cause::Protocol, r, out);
    }

    /// Connection lost or timed out: `r`, or `after_data` when the whole message was sent and
    /// only the final reply is missing (the message may have been delivered).
    fn abort(&mut self, cause: Cause, r: FixedReply, after_data: FixedReply, out: &mut Output) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.expects.front() == Some(&Expect::Quit) {
            return self.close(CloseReason::Quit, out);
        }
        let r = if self.awaiting_final_reply() { after_data } else { r };
        self.abort_with(cause, Response::local(r), out);
    }

    /// The end of data was sent and its reply is the one awaited.
    fn awaiting_final_reply(&self) -> bool {
        self.expects.front() == Some(&Expect::DataEnd { discard: false })
    }

    /// Ends the connection on our side: open recipients are deferred with `r`. A message whose
    /// final reply never came has an unknown fate; one cut off mid-content was not delivered.
    fn abort_with(&mut self, cause: Cause, r: Response, out: &mut Output) {
        if self.phase == Phase::Closed {
            return;
        }
        let stage = self.stage();
        if self.plan.active {
            if self.awaiting_final_reply() {
                self.result.message = MessageOutcome::Unknown;
            }
            resolve_open(&mut self.result, RecipientStatus::Deferred, stage, cause, &r);
            self.finish_transaction(out);
        }
        self.close(CloseReason::Failed { stage, cause, reply: r }, out);
    }

    fn close(&mut self, reason: CloseReason, out: &mut Output) {
        self.phase = Phase::Closed;
        self.expects.clear();
        out.events.push(Event::Closed(reason));
    }
}

/// 2xx → delivered is only for the final reply; elsewhere a non-2xx reply maps to deferred
/// (4xx, and anything odd) or failed (5xx).
fn status_of(r: &Response) -> RecipientStatus {
    if r.is_permanent() { RecipientStatus::Failed } else { RecipientStatus::Deferred }
}

fn set_outcome(o: &mut RecipientOutcome, status: RecipientStatus, stage: Stage, cause: Cause, r: &Response) {
    o.status = status;
    o.stage = stage;
    o.cause = cause;
    o.reply.copy_from(r);
    o.resolved = true;
}

/// Decides every recipient not decided yet.
fn resolve_open(result: &mut TransactionResult, status: RecipientStatus, stage: Stage, cause: Cause, r: &Response) {
    let count = result.count;
    for o in result.outcomes[..count].iter_mut().filter(|o| !o.resolved) {
        set_outcome(o, status, stage, cause, r);
    }
}

/// An address that can be written between `<` and `>` on a command line: no control
/// characters (CR and LF above all: they would start a command of their own), no brackets,
/// within the RFC 5321 length.
fn usable_address(address: &str) -> bool {
    address.len() <= ADDRESS_MAX && !address.bytes().any(|b| b < b' ' || b == 0x7f || b == b'<' || b == b'>')
}

/// An xtext parameter value (ENVID, ORCPT) that can be passed on as is (RFC 3461 4).
fn usable_xtext(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max && value.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'=')
}

fn write_mail(buf: &mut Vec<u8>, tx: &Transaction<'_>, utf8: bool, caps: &Capabilities) {
    buf.extend_from_slice(b"MAIL FROM:<");
    buf.extend_from_slice(tx.sender.as_bytes());
    buf.push(b'>');
    if caps.size.is_some() {
        let _ = write!(buf, " SIZE={}", tx.size);
    }
    if tx.body == BodyType::EightBitMime && caps.eight_bit_mime {
        buf.extend_from_slice(b" BODY=8BITMIME");
    }
    if utf8 {
        buf.extend_from_slice(b" SMTPUTF8");
    }
    if caps.dsn {
        match tx.ret {
            Some(Ret::Full) => buf.extend_from_slice(b" RET=FULL"),
            Some(Ret::Hdrs) => buf.extend_from_slice(b" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = tx.envid.filter(|e| usable_xtext(e, 100)) {
            buf.extend_from_slice(b" ENVID=");
            buf.extend_from_slice(envid.as_bytes());
        }
    }
    buf.extend_from_slice(b"\r\n");
}

fn write_rcpt(buf: &mut Vec<u8>, r: &Recipient, caps: &Capabilities) {
    buf.extend_from_slice(b"RCPT TO:<");
    buf.extend_from_slice(r.address.as_bytes());
    buf.push(b'>');
    if caps.dsn {
        if !r.notify.is_default() {
            buf.extend_from_slice(b" NOTIFY=");
            if r.notify.0 & Notify::NEVER != 0 {
                buf.extend_from_slice(b"NEVER");
            } else {
                let mut first = true;
                for (bit, name) in
                    [(Notify::SUCCESS, "SUCCESS"), (Notify::FAILURE, "FAILURE"), (Notify::DELAY, "DELAY")]
                {
                    if r.notify.0 & bit != 0 {
                        if !first {
                            buf.push(b',');
                        }
                        buf.extend_from_slice(name.as_bytes());
                        first = false;
                    }
                }
            }
        }
        if let Some(orcpt) = r.orcpt.as_deref().filter(|o| usable_xtext(o, 500) && o.contains(';')) {
            buf.extend_from_slice(b" ORCPT=");
            buf.extend_from_slice(orcpt.as_bytes());
        }
    }
    buf.extend_from_slice(b"\r\n");
}

/// `base64(\0user\0password)\r\n` (RFC 4616; no authorization identity).
fn write_plain_response(buf: &mut Vec<u8>, creds: &Credentials) {
    let mut message = Vec::with_capacity(creds.user.len() + creds.password.len() + 2);
    message.push(0);
    message.extend_from_slice(creds.user.as_bytes());
    message.push(0);
    message.extend_from_slice(creds.password.as_bytes());
    buf.extend_from_slice(auth::encode(&message).as_bytes());
    buf.extend_from_slice(b"\r\n");
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
