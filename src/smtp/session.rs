//! The SMTP server session as a sans-IO state machine: bytes and completions in, reply bytes
//! and actions out. It never blocks, never touches a socket, a clock or the disk; what it needs
//! from outside (time, queue ids, policy answers) it asks the `Host`, synchronously, and what
//! takes time (making a message durable, checking a password, a TLS handshake) it asks the
//! runtime for with an `Action` and waits for the matching completion call.
//!
//! Guarantees that the tests pin down:
//! - `250 2.6.0 <id> Queued` is written only by `persisted(Ok)`, i.e. after the spool says the
//!   message is durable;
//! - end of data is only `<CRLF>.<CRLF>`; bare CR/LF in data is refused (or normalised);
//! - input after an action is not looked at until the action completes, so pipelined commands
//!   are answered in order and nothing pipelined after STARTTLS is ever executed.

use std::io::Write;
use std::net::IpAddr;
use std::rc::Rc;

use super::auth::{self, Mechanism};
use super::command::{self, Command, MailParams, Path, RcptParams};
use super::envelope::{BodyType, Envelope, QueueId, Recipient};
use super::headers;
use super::reply::{self, Reply};
use super::scanner::{BareLf, BdatScanner, DataScanner, DataVerdict, Line, LineScanner};

/// What a session needs to know about its receive connector and limits.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Our name in the greeting, EHLO and `Received:`.
    pub hostname: String,
    /// The receive connector's name (stored with each message).
    pub connector: String,
    /// `max_command_line`, CRLF included.
    pub max_command_line: usize,
    /// `max_message_size`.
    pub max_message_size: u64,
    /// `max_recipients`.
    pub max_recipients: usize,
    /// Bad commands tolerated before `421` and close.
    pub max_bad_commands: u32,
    /// `bare_line_feed`.
    pub bare_lf: BareLf,
    /// STARTTLS can be offered (a certificate is configured).
    pub starttls: bool,
    /// MAIL and AUTH need TLS first.
    pub require_tls: bool,
    /// Mechanisms offered (empty: the connector has no `users` permission group).
    pub auth: Vec<Mechanism>,
    /// The `anonymous` permission group: MAIL without AUTH is allowed.
    pub anonymous: bool,
}

/// The questions the session asks its surroundings. Implemented by the runtime over the
/// per-core policy state; by plain structs in tests.
pub trait Host {
    /// Unix time in milliseconds.
    fn now_ms(&self) -> u64;
    /// The current date in RFC 5322 form, e.g. `Wed, 25 Nov 2026 15:47:55 +0000`.
    fn date_rfc5322(&self) -> String;
    /// Appends the current date in RFC 5322 form to `out`: what the session calls, once per
    /// message. The default goes through `date_rfc5322`; a host on the hot path overrides it
    /// to copy a cached date without allocating.
    fn write_date_rfc5322(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.date_rfc5322().as_bytes());
    }
    /// A fresh queue id.
    fn next_queue_id(&mut self) -> QueueId;
    /// May this session start a transaction now (backpressure, rate limits)?
    /// `envelope` has the session identity (client, connector, user) filled in.
    fn check_mail(&mut self, envelope: &Envelope) -> Result<(), Reply>;
    /// May this recipient be accepted (accepted domains, relay right)?
    fn check_rcpt(&mut self, envelope: &Envelope, address: &str) -> Result<(), Reply>;
    /// May this client try AUTH now (lockout after failures)?
    fn check_auth(&mut self, client_ip: IpAddr) -> Result<(), Reply>;
    /// May `user` send as `address` (envelope sender, or a header From address)?
    fn may_send_as(&self, user: &str, address: &str) -> bool;
}

/// What the runtime must do before the session can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Make `envelope()` + `message()` durable, then call `persisted`.
    Persist,
    /// Check `credentials()` (off the I/O core), then call `authenticated`.
    Authenticate,
    /// Send the pending output, discard any input left after the STARTTLS line, run the TLS
    /// handshake, then call `tls_started`.
    StartTls,
    /// Send the pending output and close the connection.
    Close,
}

/// Output of one call: reply bytes to send, in order, and at most one action.
#[derive(Debug, Default)]
pub struct Output {
    /// Reply bytes, ready for the socket. The caller sends and clears them.
    pub wire: Vec<u8>,
    /// The action the session waits for, if any.
    pub action: Option<Action>,
}

/// Which idle timeout applies now (RFC 5321 4.5.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// Waiting for a command (RFC 5321: at least 5 minutes).
    Command,
    /// Waiting for message data (DATA or a BDAT chunk).
    Data,
}

#[derive(Debug)]
enum Phase {
    Command,
    Data(DataScanner),
    /// Inside a BDAT chunk of an accepted transaction.
    BdatChunk {
        size: u64,
        last: bool,
    },
    /// Inside a BDAT chunk that was refused: its bytes are read and dropped (RFC 3030 2).
    BdatDiscard {
        remaining: u64,
    },
    /// After `AUTH PLAIN` without initial response.
    AuthPlain,
    /// After `AUTH LOGIN`: waiting for the user name, or for the password.
    AuthLogin {
        have_user: bool,
    },
    /// An action is outstanding.
    Waiting(Action),
    Closed,
}

/// One SMTP server session.
pub struct Session {
    cfg: Rc<SessionConfig>,
    phase: Phase,
    lines: LineScanner,
    /// EHLO (true) or HELO (false) was accepted.
    greeted: Option<bool>,
    in_transaction: bool,
    /// BDAT scanner of the current transaction, once its first chunk arrived.
    bdat: Option<BdatScanner>,
    envelope: Envelope,
    /// `Received:` header + the message, as it will be stored. Reused between messages.
    message: Vec<u8>,
    bad_commands: u32,
    auth_user: String,
    auth_pass: String,
    /// The relay is shutting down: no new transaction may start.
    draining: bool,
    /// Recipients of finished transactions, kept for their buffers: RCPT reuses one instead of
    /// allocating (at most `max_recipients` are ever held).
    spare_recipients: Vec<Recipient>,
    /// The buffer of the last `ENVID=`, reused likewise.
    spare_envid: String,
}

impl Session {
    /// A session for a client at `client_ip`; `tls` when the connection is already under TLS
    /// (implicit TLS).
    pub fn new(cfg: Rc<SessionConfig>, client_ip: IpAddr, tls: bool) -> Session {
        let envelope = Envelope { client_ip, tls, connector: cfg.connector.clone(), ..Envelope::default() };
        Session {
            lines: LineScanner::new(cfg.max_command_line),
            cfg,
            phase: Phase::Command,
            greeted: None,
            in_transaction: false,
            bdat: None,
            envelope,
            message: Vec::new(),
            bad_commands: 0,
            auth_user: String::new(),
            auth_pass: String::new(),
            draining: false,
            spare_recipients: Vec::new(),
            spare_envid: String::new(),
        }
    }

    /// The session's configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// Writes the `220` greeting.
    pub fn greet(&self, out: &mut Output) {
        reply::write_greeting(&mut out.wire, &self.cfg.hostname);
    }

    /// The envelope of the transaction (complete when `Action::Persist` is asked for).
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The message to store: our `Received:` header, then the data as received.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// The credentials to check for `Action::Authenticate`: (user, password).
    pub fn credentials(&self) -> (&str, &str) {
        (&self.auth_user, &self.auth_pass)
    }

    /// The authenticated user, once AUTH succeeded.
    pub fn auth_user(&self) -> Option<&str> {
        self.envelope.auth_user.as_deref()
    }

    /// The session is inside a SASL exchange: the next lines are secrets (for protocol logs).
    pub fn in_sasl_exchange(&self) -> bool {
        matches!(self.phase, Phase::AuthPlain | Phase::AuthLogin { .. })
    }

    /// The session has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The idle timeout that applies while waiting for input.
    pub fn timeout_kind(&self) -> TimeoutKind {
        match self.phase {
            Phase::Data(_) | Phase::BdatChunk { .. } | Phase::BdatDiscard { .. } => TimeoutKind::Data,
            _ => TimeoutKind::Command,
        }
    }

    /// The longest command line; the reader must be able to hold this many unconsumed bytes.
    pub fn max_line(&self) -> usize {
        self.lines.max_line()
    }

    /// Processes received bytes. Returns how many were used; the rest (a partial line) must be
    /// offered again with more bytes behind it. Stops early when an action is asked for.
    pub fn receive(&mut self, input: &[u8], host: &mut dyn Host, out: &mut Output) -> usize {
        let mut pos = 0;
        while pos < input.len() && out.action.is_none() {
            match &mut self.phase {
                Phase::Waiting(_) | Phase::Closed => break,
                Phase::Data(scanner) => {
                    let step = scanner.feed(&input[pos..], &mut self.message);
                    pos += step.consumed;
                    if step.done {
                        let verdict = scanner.verdict();
                        self.phase = Phase::Command;
                        self.end_of_message(verdict, host, out);
                    }
                }
                Phase::BdatChunk { size, last } => {
                    let (size, last) = (*size, *last);
                    let Some(scanner) = self.bdat.as_mut() else { unreachable!("BdatChunk without a scanner") };
                    let step = scanner.feed(&input[pos..], &mut self.message);
                    pos += step.consumed;
                    if step.done {
                        self.phase = Phase::Command;
                        if last {
                            let verdict = scanner.finish();
                            self.end_of_message(verdict, host, out);
                        } else {
                            reply::write_chunk_ok(&mut out.wire, size);
                        }
                    }
                }
                Phase::BdatDiscard { remaining } => {
                    let take = (*remaining).min((input.len() - pos) as u64);
                    *remaining -= take;
                    pos += take as usize;
                    if *remaining == 0 {
                        self.phase = Phase::Command;
                    }
                }
                Phase::Command | Phase::AuthPlain | Phase::AuthLogin { .. } => match self.lines.next(&input[pos..]) {
                    Line::NeedMore { consumed } => {
                        pos += consumed;
                        break;
                    }
                    Line::TooLong { consumed } => {
                        pos += consumed;
                        if self.in_sasl_exchange() {
                            // Never read the next line as a secret: the exchange is over.
                            self.end_sasl();
                            self.reject(reply::AUTH_LINE_TOO_LONG, out);
                        } else {
                            self.reject(reply::LINE_TOO_LONG, out);
                        }
                    }
                    Line::Complete { line, bare_lf, consumed } => {
                        pos += consumed;
                        if bare_lf && self.cfg.bare_lf == BareLf::Reject {
                            if self.in_sasl_exchange() {
                                self.end_sasl();
                            }
                            self.reject(reply::COMMAND_BARE_LF, out);
                        } else if self.in_sasl_exchange() {
                            self.sasl_response(line, out);
                        } else {
                            self.command(line, host, out);
                        }
                    }
                },
            }
        }
        if let Some(action) = out.action {
            self.phase = if action == Action::Close { Phase::Closed } else { Phase::Waiting(action) };
        }
        pos
    }

    /// Completion of `Action::Persist`: `Ok` once the message is durable, or the reply to send
    /// when it could not be stored.
    pub fn persisted(&mut self, result: Result<(), Reply>, out: &mut Output) {
        debug_assert!(matches!(self.phase, Phase::Waiting(Action::Persist)));
        match result {
            Ok(()) => reply::write_queued(&mut out.wire, self.envelope.queue_id),
            Err(r) => r.write_to(&mut out.wire),
        }
        self.reset_transaction();
        self.phase = Phase::Command;
    }

    /// Completion of `Action::Authenticate`.
    pub fn authenticated(&mut self, ok: bool, out: &mut Output) {
        debug_assert!(matches!(self.phase, Phase::Waiting(Action::Authenticate)));
        if ok {
            self.envelope.auth_user = Some(std::mem::take(&mut self.auth_user));
            reply::AUTH_OK.write_to(&mut out.wire);
        } else {
            reply::AUTH_INVALID.write_to(&mut out.wire);
            self.auth_user.clear();
        }
        self.auth_pass.clear();
        self.phase = Phase::Command;
    }

    /// Completion of `Action::StartTls`: the session starts afresh (RFC 3207 4.2): the client
    /// must greet again, and nothing learnt before the handshake is kept.
    pub fn tls_started(&mut self) {
        debug_assert!(matches!(self.phase, Phase::Waiting(Action::StartTls)));
        self.reset_transaction();
        self.greeted = None;
        self.envelope.helo.clear();
        self.envelope.auth_user = None;
        self.envelope.tls = true;
        self.lines = LineScanner::new(self.cfg.max_command_line);
        self.phase = Phase::Command;
    }

    /// The idle timeout expired: `421 4.4.2` and close.
    pub fn timed_out(&mut self, out: &mut Output) {
        reply::TIMEOUT.write_to(&mut out.wire);
        out.action = Some(Action::Close);
        self.phase = Phase::Closed;
    }

    /// The relay is shutting down: `421 4.3.2` and close. The runtime calls it between
    /// transactions, and for every session still open when the shutdown grace period ends.
    pub fn shutting_down(&mut self, out: &mut Output) {
        reply::SHUTTING_DOWN.write_to(&mut out.wire);
        out.action = Some(Action::Close);
        self.phase = Phase::Closed;
    }

    /// The relay started shutting down: the transaction in progress may finish, but a MAIL
    /// that would start another one (pipelined, say, behind the end of data) is answered
    /// `421 4.3.2` and the session closes.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// The session is between transactions (no message half received or being stored).
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Command) && !self.in_transaction
    }

    fn reset_transaction(&mut self) {
        self.in_transaction = false;
        self.bdat = None;
        // Keep the recipients' and ENVID's buffers for the next transaction, in reverse so
        // that `pop` hands the first RCPT the first recipient's buffers again (a client that
        // sends the same shape of envelope every time then allocates nothing).
        self.spare_recipients.extend(self.envelope.recipients.drain(..).rev());
        if let Some(envid) = self.envelope.envid.take() {
            self.spare_envid = envid;
        }
        self.envelope.reset_transaction();
        self.message.clear();
        // A 25 MiB message should not pin 25 MiB per idle connection.
        if self.message.capacity() > 1 << 20 {
            self.message = Vec::new();
        }
    }

    /// A refused command: the reply, and `421` + close past `max_bad_commands`.
    fn reject(&mut self, r: Reply, out: &mut Output) {
        r.write_to(&mut out.wire);
        self.bad_commands += 1;
        if self.bad_commands > self.cfg.max_bad_commands {
            reply::TOO_MANY_ERRORS.write_to(&mut out.wire);
            out.action = Some(Action::Close);
        }
    }

    fn command(&mut self, line: &[u8], host: &mut dyn Host, out: &mut Output) {
        let cmd = match command::parse(line) {
            Ok(cmd) => cmd,
            Err(e) => return self.reject(e.reply(), out),
        };
        match cmd {
            Command::Ehlo(name) => self.helo(name, true, out),
            Command::Helo(name) => self.helo(name, false, out),
            Command::Mail { path, params } => self.mail(path, params, host, out),
            Command::Rcpt { path, params } => self.rcpt(path, params, host, out),
            Command::Data => self.data(host, out),
            Command::Bdat { size, last } => self.bdat(size, last, host, out),
            Command::Rset => {
                self.reset_transaction();
                reply::RESET_OK.write_to(&mut out.wire);
            }
            Command::Noop => reply::NOOP_OK.write_to(&mut out.wire),
            Command::Help => reply::HELP.write_to(&mut out.wire),
            Command::Vrfy => reply::VRFY_CANNOT.write_to(&mut out.wire),
            Command::Expn => reply::NOT_IMPLEMENTED.write_to(&mut out.wire),
            Command::Quit => {
                reply::write_bye(&mut out.wire, &self.cfg.hostname);
                out.action = Some(Action::Close);
            }
            Command::StartTls => self.starttls(out),
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial, host, out),
        }
    }

    fn helo(&mut self, name: &str, extended: bool, out: &mut Output) {
        // RFC 5321 4.1.4: EHLO/HELO in the middle of a transaction resets it.
        self.reset_transaction();
        self.greeted = Some(extended);
        self.envelope.helo.clear();
        self.envelope.helo.push_str(name);
        let (host, ip) = (&self.cfg.hostname, self.envelope.client_ip);
        if !extended {
            return reply::write_helo(&mut out.wire, host, ip);
        }
        let ext = reply::Extensions {
            size_max: self.cfg.max_message_size,
            starttls: self.cfg.starttls && !self.envelope.tls,
            auth: if self.auth_offered() { &self.cfg.auth } else { &[] },
        };
        reply::write_ehlo(&mut out.wire, host, ip, ext);
    }

    /// AUTH is offered on connectors with users, and where TLS is required only under TLS.
    fn auth_offered(&self) -> bool {
        !self.cfg.auth.is_empty() && (self.envelope.tls || !self.cfg.require_tls)
    }

    fn mail(&mut self, path: Path<'_>, params: MailParams<'_>, host: &mut dyn Host, out: &mut Output) {
        if self.draining {
            return self.shutting_down(out);
        }
        if self.greeted.is_none() {
            return self.reject(reply::NEED_HELO, out);
        }
        if self.greeted == Some(false) && params != MailParams::default() {
            return self.reject(reply::PARAMS_NEED_EHLO, out);
        }
        if params.auth.is_some() && !self.auth_offered() {
            // RFC 4954 5: AUTH= is a parameter of the AUTH extension, not offered here.
            return self.reject(reply::UNKNOWN_PARAM, out);
        }
        if self.in_transaction {
            return self.reject(reply::NESTED_MAIL, out);
        }
        if self.cfg.require_tls && !self.envelope.tls {
            return reply::TLS_REQUIRED.write_to(&mut out.wire);
        }
        if !self.cfg.anonymous && self.envelope.auth_user.is_none() {
            return reply::AUTH_REQUIRED.write_to(&mut out.wire);
        }
        if path.utf8 && !params.smtputf8 {
            return reply::NEEDS_SMTPUTF8.write_to(&mut out.wire);
        }
        if params.size.is_some_and(|s| s > self.cfg.max_message_size) {
            return reply::TOO_BIG.write_to(&mut out.wire);
        }
        if let Some(user) = self.envelope.auth_user.as_deref()
            && !host.may_send_as(user, path.address)
        {
            return reply::SEND_AS_DENIED.write_to(&mut out.wire);
        }
        if let Err(r) = host.check_mail(&self.envelope) {
            return r.write_to(&mut out.wire);
        }
        let e = &mut self.envelope;
        e.sender.push_str(path.address);
        e.body_type = params.body.unwrap_or(BodyType::SevenBit);
        e.smtputf8 = params.smtputf8;
        e.size_declared = params.size;
        e.ret = params.ret;
        e.envid = params.envid.map(|envid| {
            let mut buf = std::mem::take(&mut self.spare_envid);
            buf.clear();
            buf.push_str(envid);
            buf
        });
        self.in_transaction = true;
        reply::SENDER_OK.write_to(&mut out.wire);
    }

    fn rcpt(&mut self, path: Path<'_>, params: RcptParams<'_>, host: &mut dyn Host, out: &mut Output) {
        if !self.in_transaction {
            return self.reject(reply::NEED_MAIL, out);
        }
        if self.bdat.is_some() {
            return self.reject(reply::NOT_IN_TRANSACTION, out);
        }
        if self.greeted == Some(false) && params != RcptParams::default() {
            return self.reject(reply::PARAMS_NEED_EHLO, out);
        }
        if path.utf8 && !self.envelope.smtputf8 {
            return reply::NEEDS_SMTPUTF8.write_to(&mut out.wire);
        }
        if self.envelope.recipients.len() >= self.cfg.max_recipients {
            return reply::TOO_MANY_RECIPIENTS.write_to(&mut out.wire);
        }
        if let Err(r) = host.check_rcpt(&self.envelope, path.address) {
            return r.write_to(&mut out.wire);
        }
        let mut r = self.spare_recipients.pop().unwrap_or_default();
        r.address.clear();
        r.address.push_str(path.address);
        r.notify = params.notify;
        match params.orcpt {
            Some(orcpt) => {
                let buf = r.orcpt.get_or_insert_with(String::new);
                buf.clear();
                buf.push_str(orcpt);
            }
            None => r.orcpt = None,
        }
        self.envelope.recipients.push(r);
        reply::RECIPIENT_OK.write_to(&mut out.wire);
    }

    /// Checks that a transaction can take data; `Err` is the reply.
    fn ready_for_data(&self) -> Result<(), Reply> {
        if !self.in_transaction {
            return Err(reply::NEED_MAIL_DATA);
        }
        if self.envelope.recipients.is_empty() {
            return Err(reply::NO_VALID_RECIPIENTS);
        }
        Ok(())
    }

    /// Starts the stored message with our trace header (RFC 5321 4.4), written straight into
    /// the message buffer.
    fn begin_message(&mut self, host: &mut dyn Host) {
        self.envelope.queue_id = host.next_queue_id();
        self.envelope.received_at_ms = host.now_ms();
        let e = &self.envelope;
        let with = received_protocol(self.greeted == Some(true), e.smtputf8, e.tls, e.auth_user.is_some());
        let m = &mut self.message;
        m.clear();
        m.extend_from_slice(b"Received: from ");
        // The client's name, without what would break the header or open a comment.
        for c in e.helo.chars().filter(|c| !c.is_control() && *c != '(' && *c != ')') {
            m.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
        }
        let _ =
            write!(m, " ([{}])\r\n\tby {} (ringrelay) with {with} id {}", e.client_ip, self.cfg.hostname, e.queue_id);
        if let [only] = e.recipients.as_slice() {
            let _ = write!(m, "\r\n\tfor <{}>", only.address);
        }
        m.extend_from_slice(b"; ");
        host.write_date_rfc5322(m);
        m.extend_from_slice(b"\r\n");
    }

    fn data(&mut self, host: &mut dyn Host, out: &mut Output) {
        if self.bdat.is_some() {
            return self.reject(reply::DATA_AFTER_BDAT, out);
        }
        if let Err(r) = self.ready_for_data() {
            return self.reject(r, out);
        }
        self.begin_message(host);
        self.phase = Phase::Data(DataScanner::new(self.cfg.max_message_size, self.cfg.bare_lf));
        reply::START_DATA.write_to(&mut out.wire);
    }

    fn bdat(&mut self, size: u64, last: bool, host: &mut dyn Host, out: &mut Output) {
        if let Err(r) = self.ready_for_data() {
            // The chunk follows the command whatever we answer: read it and drop it.
            self.phase = Phase::BdatDiscard { remaining: size };
            return self.reject(r, out);
        }
        if self.bdat.is_none() {
            self.begin_message(host);
            self.bdat = Some(BdatScanner::new(self.cfg.max_message_size, self.cfg.bare_lf));
        }
        let Some(scanner) = self.bdat.as_mut() else { unreachable!() };
        scanner.start_chunk(size);
        if size == 0 {
            // Nothing to read: answer at once.
            if last {
                let verdict = scanner.finish();
                self.end_of_message(verdict, host, out);
            } else {
                reply::write_chunk_ok(&mut out.wire, 0);
            }
            return;
        }
        self.phase = Phase::BdatChunk { size, last };
    }

    /// The data is complete: refuse it, or ask for it to be made durable.
    fn end_of_message(&mut self, verdict: DataVerdict, host: &mut dyn Host, out: &mut Output) {
        let refusal = if verdict.too_big {
            Some(reply::TOO_BIG)
        } else if verdict.refuse_line_endings(self.cfg.bare_lf) {
            Some(reply::BARE_LINE_ENDING)
        } else if !self.header_from_allowed(host) {
            Some(reply::SEND_AS_DENIED)
        } else {
            None
        };
        if let Some(r) = refusal {
            r.write_to(&mut out.wire);
            self.reset_transaction();
            return;
        }
        out.action = Some(Action::Persist);
    }

    /// Authenticated senders may only use their `send_as` addresses in the header From too:
    /// at least one From mailbox, and every mailbox of every From field allowed. A message
    /// without one, or whose From is not plain mailboxes (no address, an encoded word, two
    /// addresses in one mailbox), is refused: a mail client could show it as anyone. `Sender:`
    /// is not checked (README, "Authentication"). Anonymous relay is not checked: it has no
    /// identity to check against; its control is the connector's IP ranges.
    fn header_from_allowed(&self, host: &dyn Host) -> bool {
        let Some(user) = self.envelope.auth_user.as_deref() else { return true };
        headers::from_mailboxes(&self.message)
            .is_some_and(|from| !from.is_empty() && from.iter().all(|a| host.may_send_as(user, a)))
    }

    fn starttls(&mut self, out: &mut Output) {
        if self.envelope.tls {
            return self.reject(reply::TLS_ALREADY, out);
        }
        if !self.cfg.starttls {
            return self.reject(reply::TLS_NOT_AVAILABLE, out);
        }
        if self.in_transaction {
            // RFC 3207 4.2 resets the session: a half-given envelope would be lost silently.
            return self.reject(reply::NOT_IN_TRANSACTION, out);
        }
        reply::READY_TLS.write_to(&mut out.wire);
        out.action = Some(Action::StartTls);
    }

    fn auth(&mut self, mechanism: &str, initial: Option<&str>, host: &mut dyn Host, out: &mut Output) {
        if self.cfg.auth.is_empty() {
            return self.reject(reply::AUTH_NOT_AVAILABLE, out);
        }
        if self.cfg.require_tls && !self.envelope.tls {
            return reply::TLS_REQUIRED.write_to(&mut out.wire);
        }
        if self.greeted != Some(true) {
            return self.reject(reply::NEED_EHLO, out);
        }
        if self.envelope.auth_user.is_some() {
            return self.reject(reply::AUTH_ALREADY, out);
        }
        if self.in_transaction {
            return self.reject(reply::NOT_IN_TRANSACTION, out);
        }
        let mech = if mechanism.eq_ignore_ascii_case("PLAIN") {
            Mechanism::Plain
        } else if mechanism.eq_ignore_ascii_case("LOGIN") {
            Mechanism::Login
        } else {
            return self.reject(reply::AUTH_MECHANISM, out);
        };
        if !self.cfg.auth.contains(&mech) {
            return self.reject(reply::AUTH_MECHANISM, out);
        }
        if let Err(r) = host.check_auth(self.envelope.client_ip) {
            return r.write_to(&mut out.wire);
        }
        self.auth_user.clear();
        self.auth_pass.clear();
        match (mech, initial) {
            (Mechanism::Plain, None) => {
                reply::write_challenge(&mut out.wire, "");
                self.phase = Phase::AuthPlain;
            }
            (Mechanism::Plain, Some(text)) => self.plain_response(text.as_bytes(), out),
            (Mechanism::Login, None) => {
                reply::write_challenge(&mut out.wire, auth::LOGIN_USER_CHALLENGE);
                self.phase = Phase::AuthLogin { have_user: false };
            }
            (Mechanism::Login, Some(text)) => {
                self.phase = Phase::AuthLogin { have_user: false };
                self.sasl_response(text.as_bytes(), out);
            }
        }
    }

    fn plain_response(&mut self, line: &[u8], out: &mut Output) {
        self.phase = Phase::Command;
        let decoded = std::str::from_utf8(line).ok().and_then(auth::decode_response);
        match decoded.as_deref().map(auth::decode_plain) {
            Some(Ok((user, pass))) => {
                self.auth_user = user;
                self.auth_pass = pass;
                out.action = Some(Action::Authenticate);
            }
            // Acting for another identity (RFC 4616 authzid) is not supported: the credentials
            // do not authorise it, whatever the password. Nothing was checked, so nothing
            // counts towards the lockout.
            Some(Err(auth::PlainError::OtherIdentity)) => reply::AUTH_INVALID.write_to(&mut out.wire),
            Some(Err(auth::PlainError::Malformed)) | None => self.reject(reply::AUTH_DECODE, out),
        }
    }

    /// Leaves a SASL exchange without an outcome: back to commands, nothing half-read kept.
    fn end_sasl(&mut self) {
        self.phase = Phase::Command;
        self.auth_user.clear();
        self.auth_pass.clear();
    }

    fn sasl_response(&mut self, line: &[u8], out: &mut Output) {
        if line == b"*" {
            self.end_sasl();
            return reply::AUTH_CANCELLED.write_to(&mut out.wire);
        }
        match self.phase {
            Phase::AuthPlain => self.plain_response(line, out),
            Phase::AuthLogin { have_user } => {
                let decoded = std::str::from_utf8(line)
                    .ok()
                    .and_then(auth::decode_response)
                    .and_then(|b| String::from_utf8(b).ok());
                let Some(text) = decoded else {
                    self.phase = Phase::Command;
                    return self.reject(reply::AUTH_DECODE, out);
                };
                if have_user {
                    self.auth_pass = text;
                    self.phase = Phase::Command;
                    out.action = Some(Action::Authenticate);
                } else {
                    self.auth_user = text;
                    reply::write_challenge(&mut out.wire, auth::LOGIN_PASS_CHALLENGE);
                    self.phase = Phase::AuthLogin { have_user: true };
                }
            }
            _ => unreachable!("sasl_response outside a SASL exchange"),
        }
    }
}

/// The `with` protocol of the `Received:` header: RFC 3848 (`ESMTP`, `ESMTPA`, `ESMTPS`,
/// `ESMTPSA`) and RFC 6531 4.3 (`UTF8SMTP`, `UTF8SMTPA`, `UTF8SMTPS`, `UTF8SMTPSA`). After HELO
/// it is plain `SMTP`: no extension was in use, and no `SMTPS` type is registered.
fn received_protocol(extended: bool, utf8: bool, tls: bool, auth: bool) -> &'static str {
    match (extended, utf8, tls, auth) {
        (false, ..) => "SMTP",
        (true, false, false, false) => "ESMTP",
        (true, false, false, true) => "ESMTPA",
        (true, false, true, false) => "ESMTPS",
        (true, false, true, true) => "ESMTPSA",
        (true, true, false, false) => "UTF8SMTP",
        (true, true, false, true) => "UTF8SMTPA",
        (true, true, true, false) => "UTF8SMTPS",
        (true, true, true, true) => "UTF8SMTPSA",
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
