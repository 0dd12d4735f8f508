//! Delivery status notifications: whether one is wanted (RFC 3461), and the notification itself
//! as a complete RFC 5322 message (RFC 3464 `multipart/report; report-type=delivery-status`,
//! RFC 6522): a human-readable explanation, the machine-readable `message/delivery-status`, and
//! the original message or its headers. Pure: time comes in as Unix milliseconds, and the
//! result is bytes for the caller to queue with the null sender `<>` (RFC 5321 6.1), to the
//! original envelope sender.
//!
//! Choices where the RFCs leave room (all documented on the items below):
//! - The original content is returned in full only for failures, only with `RET=FULL`, only up
//!   to `return_full_max` octets (1 MiB by default) and only when no line exceeds 998 octets;
//!   otherwise (and by default, without RET) only the header section. Delay and success notices
//!   return headers only (RFC 3461 4.3).
//! - A success notice is `relayed` when the next hop did not offer DSN; when it did, NOTIFY was
//!   passed on and the success notice is that server's to send (RFC 3461 5.2.2), so none here.
//! - Messages that need SMTPUTF8 get RFC 6533 notices: `message/global-delivery-status` with
//!   `utf-8` address types, and the original as `message/global`(`-headers`); the caller must
//!   send such a notice with SMTPUTF8 (`Dsn::smtputf8`).
//! - Every header and report line stays within 998 octets: fields are folded at spaces (78
//!   columns where a space allows), and a single word longer than 900 octets is split.

use std::fmt::Write as _;

use memchr::memmem;

use super::client::needs_smtputf8;
use super::reply::{EnhancedCode, Response, Source};
use crate::clock;
use crate::smtp::envelope::{BodyType, Envelope, Notify, Recipient, Ret, xtext_decode};

/// Default `return_full_max`: RET=FULL returns the whole message only below this size.
pub const RETURN_FULL_MAX: usize = 1 << 20;
/// RFC 5322 2.1.1: a line is at most 998 octets without its CRLF.
const LINE_MAX: usize = 998;
/// Where fields and text are folded when a space allows.
const FOLD_AT: usize = 78;
/// A word longer than this is split so that no line can exceed `LINE_MAX`.
const WORD_MAX: usize = 900;

const _: () = assert!(WORD_MAX + 64 < LINE_MAX, "a split word plus a field name must fit a line");

/// RFC 3464 2.3.3 `Action:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Could not be delivered and will not be tried again.
    Failed,
    /// Not delivered yet; still being tried.
    Delayed,
    /// Delivered to the recipient's mailbox (final delivery: not something a relay does, but
    /// the notice can be built).
    Delivered,
    /// Handed to a server that does not send delivery notices.
    Relayed,
    /// Delivered to a list or alias that expanded it (not produced by ringrelay's decisions).
    Expanded,
}

impl Action {
    /// The field value, e.g. `failed`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }

    /// The status class this action goes with (RFC 3464 2.3.4: failed 5, delayed 4, else 2).
    fn class(self) -> u8 {
        match self {
            Action::Failed => 5,
            Action::Delayed => 4,
            Action::Delivered | Action::Relayed | Action::Expanded => 2,
        }
    }
}

/// What happened to one recipient, for the decision whether to notify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryEvent {
    /// Failed permanently (5xx, or expired after retries).
    Failed,
    /// Still being retried past the delay-warning time.
    Delayed,
    /// Handed on to the next hop, which did (`next_hop_dsn`) or did not offer DSN.
    Relayed {
        /// The next hop offered DSN, so NOTIFY and ORCPT were passed on.
        next_hop_dsn: bool,
    },
}

/// Whether a notice is wanted for a recipient of a message from `sender`, and which.
///
/// - Never for the null sender: a notice about a notice could loop (RFC 5321 6.1, RFC 3461 6.1).
/// - `NOTIFY=NEVER`: none. No NOTIFY: failures and delays (RFC 3461 4.1 leaves delay to the
///   MTA; ringrelay sends one delay notice, as Postfix and Exchange do).
/// - Success (`NOTIFY=SUCCESS`): `relayed` when the next hop did not offer DSN. When it did,
///   NOTIFY was passed on, so the final server will report delivery; a notice from us would be
///   a duplicate (RFC 3461 5.2.2).
pub fn notification(sender: &str, notify: Notify, event: DeliveryEvent) -> Option<Action> {
    if sender.is_empty() {
        return None;
    }
    match event {
        DeliveryEvent::Failed => notify.wants(Notify::FAILURE).then_some(Action::Failed),
        DeliveryEvent::Delayed => notify.wants(Notify::DELAY).then_some(Action::Delayed),
        DeliveryEvent::Relayed { next_hop_dsn: true } => None,
        DeliveryEvent::Relayed { next_hop_dsn: false } => notify.wants(Notify::SUCCESS).then_some(Action::Relayed),
    }
}

/// Recipients (indices into `envelope.recipients`), each with what goes with it.
pub type Indexed<T> = Vec<(u32, T)>;

/// Splits recipients by whether `event` gets them a notice: (notified, silent). A delivery
/// core finishes the silent ones at once, and the notified ones only once their notice is
/// durable, so that a crash in between sends the notice again rather than never: failures and
/// "relayed" successes alike.
pub fn split_by_notice<T>(envelope: &Envelope, rcpts: Indexed<T>, event: DeliveryEvent) -> (Indexed<T>, Indexed<T>) {
    rcpts.into_iter().partition(|(r, _)| {
        envelope
            .recipients
            .get(*r as usize)
            .is_some_and(|rc| notification(&envelope.sender, rc.notify, event).is_some())
    })
}

/// The reporting side of a notice.
#[derive(Debug, Clone, Copy)]
pub struct DsnSettings<'a> {
    /// Our host name: `Reporting-MTA`, `Message-ID` domain, the text.
    pub reporting_mta: &'a str,
    /// The address notices come from, e.g. `MAILER-DAEMON@relay.example.test`
    /// (`Config::bounce_sender`). The envelope sender is `<>` regardless.
    pub from_address: &'a str,
    /// The largest original returned whole for `RET=FULL`; larger ones return headers.
    pub return_full_max: usize,
}

/// One recipient's part of a notice.
#[derive(Debug, Clone, Copy)]
pub struct RecipientReport<'a> {
    /// The recipient address (`Final-Recipient`).
    pub address: &'a str,
    /// `ORCPT` as received (`type;xtext`), for `Original-Recipient`.
    pub orcpt: Option<&'a str>,
    /// What happened.
    pub action: Action,
    /// `Status:`. Its class is made to match the action (see `build`).
    pub status: EnhancedCode,
    /// The server that answered, for `Remote-MTA` (a host name or address).
    pub remote_mta: Option<&'a str>,
    /// The reply that decided it. A remote reply becomes `Diagnostic-Code: smtp; ...`; a
    /// local one is only explained in the text.
    pub reply: Option<&'a Response>,
    /// `Last-Attempt-Date`, Unix ms.
    pub last_attempt_ms: Option<u64>,
    /// `Will-Retry-Until` (delayed only), Unix ms.
    pub will_retry_until_ms: Option<u64>,
}

impl<'a> RecipientReport<'a> {
    /// A report for `recipient` with the status taken from `reply` (or `class.0.0`).
    pub fn new(recipient: &'a Recipient, action: Action, reply: Option<&'a Response>) -> RecipientReport<'a> {
        RecipientReport {
            address: &recipient.address,
            orcpt: recipient.orcpt.as_deref(),
            action,
            status: reply.map_or(EnhancedCode::new(action.class(), 0, 0), Response::status),
            remote_mta: None,
            reply,
            last_attempt_ms: None,
            will_retry_until_ms: None,
        }
    }
}

/// What part of the original a notice carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// The whole message (`message/rfc822` or `message/global`).
    Full,
    /// The header section (`text/rfc822-headers` or `message/global-headers`).
    Headers,
}

/// A notice, ready to queue: envelope sender `<>`, recipient the original envelope sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dsn {
    /// The RFC 5322 message, CRLF line ends.
    pub message: Vec<u8>,
    /// It needs SMTPUTF8 (RFC 6533 notice, or a non-ASCII address).
    pub smtputf8: bool,
    /// `BODY=8BITMIME` when any part holds 8-bit octets.
    pub body: BodyType,
    /// What of the original it carries.
    pub returned: Returned,
}

/// Builds the notice for `recipients` of the message `message` with envelope `envelope`, at
/// `now_ms`. Call it only when `notification` said a notice is wanted (the null sender is never
/// notified; a debug build asserts it).
///
/// A status whose class does not match the action is corrected (RFC 3464 2.3.4): a failure
/// after temporary errors (queue lifetime expired) becomes `5.4.7` "delivery time expired"
/// (RFC 3463), a delay `4.x.x`, a success `2.0.0`.
pub fn build(
    settings: &DsnSettings<'_>,
    envelope: &Envelope,
    message: &[u8],
    recipients: &[RecipientReport<'_>],
    now_ms: u64,
) -> Dsn {
    debug_assert!(!envelope.sender.is_empty(), "no notices to the null sender");
    debug_assert!(!recipients.is_empty());
    let global = needs_smtputf8(envelope, message) || !settings.from_address.is_ascii();
    let any = |a: Action| recipients.iter().any(|r| r.action == a);
    let headline = if any(Action::Failed) {
        Action::Failed
    } else if any(Action::Delayed) {
        Action::Delayed
    } else {
        Action::Relayed
    };
    let returned = if headline == Action::Failed
        && envelope.ret == Some(Ret::Full)
        && message.len() <= settings.return_full_max
        && longest_line(message) <= LINE_MAX
    {
        Returned::Full
    } else {
        Returned::Headers
    };

    let text = human_text(settings, envelope, recipients, headline);
    let status = delivery_status(settings, envelope, recipients, global);
    let original = match returned {
        Returned::Full => with_final_crlf(message),
        Returned::Headers => headers_only(message, settings.return_full_max),
    };
    let boundary = boundary_for(envelope, now_ms, &[text.as_bytes(), &status, &original]);

    let eight_bit = global || !text.is_ascii() || !original.is_ascii() || !status.is_ascii();
    let mut out = Vec::with_capacity(text.len() + status.len() + original.len() + 1024);
    let subject = match headline {
        Action::Failed => "Undelivered Mail Returned to Sender",
        Action::Delayed => "Delayed Mail (still being retried)",
        _ => "Successful Mail Delivery Report",
    };
    write_field(&mut out, "From", &format!("Mail Delivery System <{}>", settings.from_address));
    write_field(&mut out, "To", &format!("<{}>", envelope.sender));
    write_field(&mut out, "Subject", subject);
    write_field(&mut out, "Date", &clock::rfc5322(now_ms));
    write_field(
        &mut out,
        "Message-ID",
        &format!("<{}.{now_ms}.{}@{}>", envelope.queue_id, headline.name(), settings.reporting_mta),
    );
    write_field(&mut out, "Auto-Submitted", "auto-replied");
    write_field(&mut out, "MIME-Version", "1.0");
    write_field(
        &mut out,
        "Content-Type",
        &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
    );
    out.extend_from_slice(b"\r\nThis is a MIME-encapsulated message.\r\n");

    let cte = |bytes: &[u8]| if bytes.is_ascii() { "7bit" } else { "8bit" };
    let charset = if text.is_ascii() { "us-ascii" } else { "utf-8" };
    start_part(&mut out, &boundary);
    write_field(&mut out, "Content-Description", "Notification");
    write_field(&mut out, "Content-Type", &format!("text/plain; charset={charset}"));
    write_field(&mut out, "Content-Transfer-Encoding", cte(text.as_bytes()));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(text.as_bytes());

    start_part(&mut out, &boundary);
    write_field(&mut out, "Content-Description", "Delivery report");
    let status_type = if global { "message/global-delivery-status" } else { "message/delivery-status" };
    write_field(&mut out, "Content-Type", status_type);
    if !status.is_ascii() {
        write_field(&mut out, "Content-Transfer-Encoding", "8bit");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&status);

    start_part(&mut out, &boundary);
    let (description, content_type) = match (returned, global) {
        (Returned::Full, false) => ("Undelivered Message", "message/rfc822"),
        (Returned::Full, true) => ("Undelivered Message", "message/global"),
        (Returned::Headers, false) => ("Message Headers", "text/rfc822-headers"),
        (Returned::Headers, true) => ("Message Headers", "message/global-headers"),
    };
    write_field(&mut out, "Content-Description", description);
    write_field(&mut out, "Content-Type", content_type);
    write_field(&mut out, "Content-Transfer-Encoding", cte(&original));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&original);
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"--\r\n");

    Dsn {
        message: out,
        smtputf8: global,
        body: if eight_bit { BodyType::EightBitMime } else { BodyType::SevenBit },
        returned,
    }
}

/// The status with its class matching the action (see `build`).
fn status_for(action: Action, status: EnhancedCode) -> EnhancedCode {
    let class = action.class();
    if status.class == class {
        return status;
    }
    match action {
        Action::Failed => EnhancedCode::new(5, 4, 7),
        Action::Delayed => EnhancedCode::new(4, status.subject, status.detail),
        _ => EnhancedCode::new(2, 0, 0),
    }
}

fn human_text(
    settings: &DsnSettings<'_>,
    envelope: &Envelope,
    recipients: &[RecipientReport<'_>],
    headline: Action,
) -> String {
    let mut t = String::new();
    let _ = write!(t, "This is the mail delivery system at {}.\r\n\r\n", settings.reporting_mta);
    let intro = match headline {
        Action::Failed => {
            "Your message could not be delivered to one or more recipients. The reasons are given below. \
             This notice was produced automatically; please do not reply to it."
        }
        Action::Delayed => {
            "Your message has not been delivered yet to one or more recipients. It is still being retried: \
             you do not need to send it again. You will be told if delivery fails for good."
        }
        _ => "Your message was handed on for delivery to the recipients below, as you asked.",
    };
    wrap(&mut t, intro, "");
    let _ = write!(t, "\r\nQueue ID: {}\r\n", envelope.queue_id);
    if envelope.received_at_ms > 0 {
        let _ = write!(t, "Received: {}\r\n", clock::rfc5322(envelope.received_at_ms));
    }
    for r in recipients {
        t.push_str("\r\n");
        let what = match r.action {
            Action::Failed => "delivery failed permanently.",
            Action::Delayed => "delivery delayed; still trying.",
            Action::Delivered => "delivered.",
            Action::Relayed => {
                "handed to the next server, which does not send delivery reports; no further notice will follow."
            }
            Action::Expanded => "delivered to a list, which sent it on.",
        };
        wrap(&mut t, &format!("<{}>: {what}", clean(r.address)), "");
        if let Some(reply) = r.reply {
            let who = match (reply.source(), r.remote_mta) {
                (Source::Remote, Some(host)) => format!("The server {} said:", clean(host)),
                (Source::Remote, None) => "The remote server said:".to_string(),
                (Source::Local, _) => format!("{} reports:", settings.reporting_mta),
            };
            wrap(&mut t, &format!("{who} {}", reply.one_line()), "    ");
        }
        if let Some(until) = r.will_retry_until_ms.filter(|_| r.action == Action::Delayed) {
            wrap(&mut t, &format!("Delivery will be tried until {}.", clock::rfc5322(until)), "    ");
        }
    }
    t
}

fn delivery_status(
    settings: &DsnSettings<'_>,
    envelope: &Envelope,
    recipients: &[RecipientReport<'_>],
    global: bool,
) -> Vec<u8> {
    let mut s = Vec::new();
    if let Some(envid) = envelope.envid.as_deref() {
        write_field(&mut s, "Original-Envelope-Id", &decoded_or_raw(envid, global));
    }
    write_field(&mut s, "Reporting-MTA", &format!("dns; {}", settings.reporting_mta));
    write_field(&mut s, "X-Ringrelay-Queue-ID", &envelope.queue_id.to_string());
    let helo = clean(&envelope.helo);
    if !helo.is_empty() && !helo.contains(' ') {
        write_field(&mut s, "Received-From-MTA", &format!("dns; {helo} ([{}])", envelope.client_ip));
    }
    if envelope.received_at_ms > 0 {
        write_field(&mut s, "Arrival-Date", &clock::rfc5322(envelope.received_at_ms));
    }
    for r in recipients {
        s.extend_from_slice(b"\r\n");
        if let Some(orcpt) = r.orcpt
            && let Some((kind, value)) = orcpt.split_once(';')
        {
            write_field(&mut s, "Original-Recipient", &format!("{}; {}", clean(kind), decoded_or_raw(value, global)));
        }
        let kind = if r.address.is_ascii() { "rfc822" } else { "utf-8" };
        write_field(&mut s, "Final-Recipient", &format!("{kind}; {}", clean(r.address)));
        write_field(&mut s, "Action", r.action.name());
        write_field(&mut s, "Status", &status_for(r.action, r.status).to_string());
        if let Some(host) = r.remote_mta {
            write_field(&mut s, "Remote-MTA", &format!("dns; {}", clean(host)));
        }
        if let Some(reply) = r.reply.filter(|r| r.source() == Source::Remote) {
            write_field(&mut s, "Diagnostic-Code", &format!("smtp; {}", reply.one_line()));
        }
        if let Some(ms) = r.last_attempt_ms {
            write_field(&mut s, "Last-Attempt-Date", &clock::rfc5322(ms));
        }
        if let Some(ms) = r.will_retry_until_ms.filter(|_| r.action == Action::Delayed) {
            write_field(&mut s, "Will-Retry-Until", &clock::rfc5322(ms));
        }
    }
    s
}

/// xtext-decoded (RFC 3461 4.2, 4.4), unless that fails or would put non-ASCII into an ASCII
/// report, or control characters anywhere: then the xtext as received, which is always clean.
fn decoded_or_raw(xtext: &str, global: bool) -> String {
    match xtext_decode(xtext) {
        Some(d) if (global || d.is_ascii()) && !d.chars().any(char::is_control) => d,
        _ => clean(xtext),
    }
}

/// Control characters out (they could end a header line).
fn clean(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

fn start_part(out: &mut Vec<u8>, boundary: &str) {
    out.extend_from_slice(b"\r\n--");
    out.extend_from_slice(boundary.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A boundary that occurs in none of the parts (RFC 2046 5.1.1), tried with a counter until
/// it does not.
fn boundary_for(envelope: &Envelope, now_ms: u64, parts: &[&[u8]]) -> String {
    for n in 0u32.. {
        let b = format!("=_ringrelay_{}_{now_ms:x}_{n}", envelope.queue_id);
        let finder = memmem::Finder::new(b.as_bytes());
        if parts.iter().all(|p| finder.find(p).is_none()) {
            return b;
        }
    }
    unreachable!("a u32 worth of boundaries all occur in the content")
}

/// Writes `Name: value` CRLF, folded at spaces (at 78 columns where a space allows; words
/// longer than `WORD_MAX` are split), so no line exceeds 998 octets. Runs of spaces collapse.
fn write_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b":");
    let mut col = name.len() + 1;
    for piece in value.split(' ').filter(|w| !w.is_empty()).flat_map(split_word) {
        if col + 1 + piece.len() > FOLD_AT && col > name.len() + 1 {
            out.extend_from_slice(b"\r\n");
            col = 0;
        }
        out.push(b' ');
        out.extend_from_slice(piece.as_bytes());
        col += 1 + piece.len();
    }
    out.extend_from_slice(b"\r\n");
}

/// Wraps a paragraph at 76 columns; continuation lines start with `indent`.
fn wrap(out: &mut String, text: &str, indent: &str) {
    let mut col = 0;
    out.push_str(indent);
    col += indent.len();
    let mut first = true;
    for piece in text.split(' ').filter(|w| !w.is_empty()).flat_map(split_word) {
        if !first && col + 1 + piece.len() > FOLD_AT - 2 {
            out.push_str("\r\n");
            out.push_str(indent);
            col = indent.len();
        } else if !first {
            out.push(' ');
            col += 1;
        }
        out.push_str(piece);
        col += piece.len();
        first = false;
    }
    out.push_str("\r\n");
}

/// Splits a word into pieces of at most `WORD_MAX` octets, at character boundaries.
fn split_word(word: &str) -> impl Iterator<Item = &str> {
    let mut rest = word;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(WORD_MAX);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

fn longest_line(message: &[u8]) -> usize {
    message.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l).len()).max().unwrap_or(0)
}

fn with_final_crlf(message: &[u8]) -> Vec<u8> {
    let mut m = message.to_vec();
    if !m.ends_with(b"\r\n") && !m.is_empty() {
        m.extend_from_slice(b"\r\n");
    }
    m
}

/// The header section (up to the empty line), at most `max` octets cut at a line end, with
/// lines over 998 octets cut short: these are shown to the sender, not re-sent.
fn headers_only(message: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.is_empty() {
            break;
        }
        let body = &body[..body.len().min(LINE_MAX)];
        if out.len() + body.len() + 2 > max {
            break;
        }
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::envelope::QueueId;
    use crate::smtp::headers::header_value;
    use proptest::prelude::*;

    const NOW: u64 = 1_764_064_075_000;

    fn settings() -> DsnSettings<'static> {
        DsnSettings {
            reporting_mta: "relay.example.test",
            from_address: "MAILER-DAEMON@relay.example.test",
            return_full_max: RETURN_FULL_MAX,
        }
    }

    fn envelope() -> Envelope {
        Envelope {
            queue_id: QueueId(0xABC),
            received_at_ms: NOW - 3_600_000,
            sender: "app@example.test".into(),
            helo: "client.example.test".into(),
            recipients: vec![
                Recipient {
                    address: "gone@remote.test".into(),
                    notify: Notify::default(),
                    orcpt: Some("rfc822;Gone+2BTag@remote.test".into()),
                },
                Recipient { address: "slow@remote.test".into(), notify: Notify::default(), orcpt: None },
            ],
            ..Envelope::default()
        }
    }

    const MESSAGE: &[u8] = b"Received: from x\r\nFrom: app@example.test\r\nSubject: Invoice\r\n\r\nBody line\r\n";

    /// Splits a multipart message into (header section, [(part headers, part body)]).
    fn parts(message: &[u8]) -> (String, Vec<(String, Vec<u8>)>) {
        let text = message;
        let head_end = memmem::find(text, b"\r\n\r\n").unwrap();
        let head = String::from_utf8(text[..head_end + 2].to_vec()).unwrap();
        let ct = header_value(message, "Content-Type").unwrap();
        let boundary = ct.split("boundary=\"").nth(1).unwrap().trim_end_matches('"').to_string();
        let delim = format!("\r\n--{boundary}");
        let body = &text[head_end + 2..];
        let mut out = Vec::new();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut rest = body;
        while let Some(i) = memmem::find(rest, delim.as_bytes()) {
            chunks.push(&rest[..i]);
            rest = &rest[i + delim.len()..];
        }
        assert_eq!(rest, b"--\r\n", "closing delimiter last");
        for c in &chunks[1..] {
            let c = c.strip_prefix(b"\r\n").unwrap();
            let split = memmem::find(c, b"\r\n\r\n").unwrap();
            out.push((String::from_utf8(c[..split + 2].to_vec()).unwrap(), c[split + 4..].to_vec()));
        }
        (head, out)
    }

    fn field(block: &str, name: &str) -> Option<String> {
        header_value(block.as_bytes(), name)
    }

    fn check_lines(message: &[u8]) {
        for line in message.split(|&b| b == b'\n') {
            assert!(line.len() <= LINE_MAX + 1, "line of {} octets", line.len());
        }
        for (i, &b) in message.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(message[i - 1], b'\r', "bare LF");
            }
        }
    }

    #[test]
    fn failure_notice_is_a_complete_multipart_report() {
        let env = envelope();
        let reply = Response::parse_line("550 5.1.1 <gone@remote.test>: Recipient address rejected").unwrap();
        let mut r0 = RecipientReport::new(&env.recipients[0], Action::Failed, Some(&reply));
        r0.remote_mta = Some("mx.remote.test");
        r0.last_attempt_ms = Some(NOW - 1000);
        let dsn = build(&settings(), &env, MESSAGE, &[r0], NOW);
        check_lines(&dsn.message);
        assert_eq!((dsn.smtputf8, dsn.body, dsn.returned), (false, BodyType::SevenBit, Returned::Headers));
        let (head, parts) = parts(&dsn.message);
        assert_eq!(field(&head, "From").unwrap(), "Mail Delivery System <MAILER-DAEMON@relay.example.test>");
        assert_eq!(field(&head, "To").unwrap(), "<app@example.test>");
        assert_eq!(field(&head, "Subject").unwrap(), "Undelivered Mail Returned to Sender");
        assert_eq!(field(&head, "Date").unwrap(), "Tue, 25 Nov 2025 09:47:55 +0000");
        assert_eq!(field(&head, "Auto-Submitted").unwrap(), "auto-replied");
        assert_eq!(field(&head, "MIME-Version").unwrap(), "1.0");
        assert!(field(&head, "Message-ID").unwrap().ends_with("@relay.example.test>"));
        assert!(field(&head, "Content-Type").unwrap().starts_with("multipart/report; report-type=delivery-status;"));
        assert_eq!(parts.len(), 3);

        let (h, text) = &parts[0];
        assert!(h.contains("text/plain; charset=us-ascii"));
        let text = String::from_utf8(text.clone()).unwrap();
        assert!(text.contains("<gone@remote.test>: delivery failed permanently."), "{text}");
        assert!(text.contains("The server mx.remote.test said: 550 5.1.1"), "{text}");

        let (h, status) = &parts[1];
        assert!(h.contains("Content-Type: message/delivery-status\r\n"));
        let status = String::from_utf8(status.clone()).unwrap();
        let blocks: Vec<&str> = status.split("\r\n\r\n").collect();
        assert_eq!(blocks.len(), 2, "{status}");
        assert_eq!(field(blocks[0], "Reporting-MTA").unwrap(), "dns; relay.example.test");
        assert_eq!(field(blocks[0], "Arrival-Date").unwrap(), clock::rfc5322(NOW - 3_600_000));
        assert_eq!(field(blocks[0], "Received-From-MTA").unwrap(), "dns; client.example.test ([0.0.0.0])");
        assert_eq!(field(blocks[0], "Original-Envelope-Id"), None);
        let rcpt = format!("{}\r\n", blocks[1]);
        assert_eq!(field(&rcpt, "Original-Recipient").unwrap(), "rfc822; Gone+Tag@remote.test");
        assert_eq!(field(&rcpt, "Final-Recipient").unwrap(), "rfc822; gone@remote.test");
        assert_eq!(field(&rcpt, "Action").unwrap(), "failed");
        assert_eq!(field(&rcpt, "Status").unwrap(), "5.1.1");
        assert_eq!(field(&rcpt, "Remote-MTA").unwrap(), "dns; mx.remote.test");
        assert_eq!(
            field(&rcpt, "Diagnostic-Code").unwrap(),
            "smtp; 550 5.1.1 <gone@remote.test>: Recipient address rejected"
        );
        assert_eq!(field(&rcpt, "Last-Attempt-Date").unwrap(), clock::rfc5322(NOW - 1000));
        assert_eq!(field(&rcpt, "Will-Retry-Until"), None);
        let order: Vec<&str> =
            blocks[1].lines().filter(|l| !l.starts_with(' ')).map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(
            order,
            [
                "Original-Recipient",
                "Final-Recipient",
                "Action",
                "Status",
                "Remote-MTA",
                "Diagnostic-Code",
                "Last-Attempt-Date"
            ],
            "RFC 3464 2.3 order"
        );

        let (h, original) = &parts[2];
        assert!(h.contains("Content-Type: text/rfc822-headers"));
        assert_eq!(original, b"Received: from x\r\nFrom: app@example.test\r\nSubject: Invoice\r\n");
    }

    #[test]
    fn returned_content_follows_ret_and_the_cap() {
        let mut env = envelope();
        let reply = Response::parse_line("550 5.7.1 no").unwrap();
        let r = [RecipientReport::new(&env.recipients[0], Action::Failed, Some(&reply))];
        env.ret = Some(Ret::Full);
        let dsn = build(&settings(), &env, MESSAGE, &r, NOW);
        assert_eq!(dsn.returned, Returned::Full);
        let (_, p) = parts(&dsn.message);
        assert!(p[2].0.contains("Content-Type: message/rfc822"));
        assert_eq!(p[2].1, MESSAGE);
        // Over the cap: headers only.
        let small = DsnSettings { return_full_max: MESSAGE.len() - 1, ..settings() };
        assert_eq!(build(&small, &env, MESSAGE, &r, NOW).returned, Returned::Headers);
        // A line over 998 octets would make the notice invalid: headers only.
        let mut long = MESSAGE.to_vec();
        long.extend(std::iter::repeat_n(b'x', 1200));
        assert_eq!(build(&settings(), &env, &long, &r, NOW).returned, Returned::Headers);
        // RET=HDRS, and no RET: headers.
        env.ret = Some(Ret::Hdrs);
        assert_eq!(build(&settings(), &env, MESSAGE, &r, NOW).returned, Returned::Headers);
        env.ret = None;
        assert_eq!(build(&settings(), &env, MESSAGE, &r, NOW).returned, Returned::Headers);
        // Delays never return the content (RFC 3461 4.3).
        env.ret = Some(Ret::Full);
        let d = [RecipientReport::new(&env.recipients[1], Action::Delayed, None)];
        assert_eq!(build(&settings(), &env, MESSAGE, &d, NOW).returned, Returned::Headers);
    }

    #[test]
    fn delay_notice_with_retry_until_and_envid() {
        let mut env = envelope();
        env.envid = Some("order+2B42".into());
        let reply = Response::parse_line("451 4.7.1 greylisted").unwrap();
        let mut r = RecipientReport::new(&env.recipients[1], Action::Delayed, Some(&reply));
        r.will_retry_until_ms = Some(NOW + 86_400_000);
        let dsn = build(&settings(), &env, MESSAGE, &[r], NOW);
        let (head, p) = parts(&dsn.message);
        assert_eq!(field(&head, "Subject").unwrap(), "Delayed Mail (still being retried)");
        let status = String::from_utf8(p[1].1.clone()).unwrap();
        assert_eq!(field(&status, "Original-Envelope-Id").unwrap(), "order+42");
        let rcpt = format!("{}\r\n", status.split("\r\n\r\n").nth(1).unwrap());
        assert_eq!(field(&rcpt, "Action").unwrap(), "delayed");
        assert_eq!(field(&rcpt, "Status").unwrap(), "4.7.1");
        assert_eq!(field(&rcpt, "Will-Retry-Until").unwrap(), clock::rfc5322(NOW + 86_400_000));
        let text = String::from_utf8(p[0].1.clone()).unwrap();
        assert!(text.contains("still being retried") || text.contains("still trying"), "{text}");
        assert!(text.contains(&clock::rfc5322(NOW + 86_400_000)));
    }

    #[test]
    fn status_class_is_made_to_match_the_action() {
        let env = envelope();
        let temp = Response::parse_line("451 4.4.1 no answer").unwrap();
        let r = RecipientReport::new(&env.recipients[0], Action::Failed, Some(&temp));
        let dsn = build(&settings(), &env, MESSAGE, &[r], NOW);
        let status = String::from_utf8(parts(&dsn.message).1[1].1.clone()).unwrap();
        assert!(status.contains("Status: 5.4.7\r\n"), "expired after temporary errors: {status}");
        assert_eq!(status_for(Action::Delayed, EnhancedCode::new(5, 1, 1)), EnhancedCode::new(4, 1, 1));
        assert_eq!(status_for(Action::Relayed, EnhancedCode::new(5, 1, 1)), EnhancedCode::new(2, 0, 0));
        assert_eq!(status_for(Action::Failed, EnhancedCode::new(5, 1, 2)), EnhancedCode::new(5, 1, 2));
    }

    #[test]
    fn local_replies_have_no_diagnostic_code() {
        let env = envelope();
        let local = Response::local(crate::delivery::reply::TOO_BIG_FOR_SERVER);
        let r = RecipientReport::new(&env.recipients[0], Action::Failed, Some(&local));
        let dsn = build(&settings(), &env, MESSAGE, &[r], NOW);
        let (_, p) = parts(&dsn.message);
        let status = String::from_utf8(p[1].1.clone()).unwrap();
        assert!(!status.contains("Diagnostic-Code"));
        assert!(status.contains("Status: 5.3.4"));
        let text = String::from_utf8(p[0].1.clone()).unwrap();
        assert!(text.contains("relay.example.test reports: 552 5.3.4"), "{text}");
    }

    #[test]
    fn split_by_notice_keeps_notified_recipients_for_after_the_notice() {
        let mut env = envelope();
        env.recipients[0].notify = Notify(Notify::SUCCESS);
        env.recipients.push(Recipient {
            address: "never@remote.test".into(),
            notify: Notify(Notify::NEVER),
            orcpt: None,
        });
        let all = || vec![(0, 'a'), (1, 'b'), (2, 'c'), (9, 'x')];
        // NOTIFY=SUCCESS to a next hop without DSN: a "relayed" notice, so finished after it.
        let (notified, silent) = split_by_notice(&env, all(), DeliveryEvent::Relayed { next_hop_dsn: false });
        assert_eq!((notified, silent), (vec![(0, 'a')], vec![(1, 'b'), (2, 'c'), (9, 'x')]));
        // The next hop reports itself: nobody waits for a notice from us.
        let (notified, _) = split_by_notice(&env, all(), DeliveryEvent::Relayed { next_hop_dsn: true });
        assert!(notified.is_empty());
        // Failure: the default NOTIFY wants it, SUCCESS-only and NEVER do not.
        let (notified, silent) = split_by_notice(&env, all(), DeliveryEvent::Failed);
        assert_eq!((notified, silent), (vec![(1, 'b')], vec![(0, 'a'), (2, 'c'), (9, 'x')]));
        // No notice of any kind to the null sender.
        env.sender.clear();
        let (notified, _) = split_by_notice(&env, all(), DeliveryEvent::Failed);
        assert!(notified.is_empty());
    }

    #[test]
    fn relayed_notice() {
        let env = envelope();
        let ok = Response::parse_line("250 2.0.0 queued").unwrap();
        let r = RecipientReport::new(&env.recipients[0], Action::Relayed, Some(&ok));
        let dsn = build(&settings(), &env, MESSAGE, &[r], NOW);
        let (head, p) = parts(&dsn.message);
        assert_eq!(field(&head, "Subject").unwrap(), "Successful Mail Delivery Report");
        assert!(String::from_utf8_lossy(&p[1].1).contains("Action: relayed\r\nStatus: 2.0.0"));
    }

    #[test]
    fn boundary_never_occurs_in_the_content() {
        let env = envelope();
        let naive = format!("=_ringrelay_{}_{NOW:x}_0", env.queue_id);
        let mut msg = format!("Subject: {naive}\r\nX: --{naive}\r\n\r\n").into_bytes();
        msg.extend_from_slice(format!("--{naive}--\r\n").as_bytes());
        let r = [RecipientReport::new(&env.recipients[0], Action::Failed, None)];
        let dsn = build(&settings(), &env, &msg, &r, NOW);
        let ct = header_value(&dsn.message, "Content-Type").unwrap();
        assert!(!ct.contains(&format!("\"{naive}\"")), "the colliding boundary was avoided: {ct}");
        let (_, p) = parts(&dsn.message);
        assert_eq!(p.len(), 3, "exactly three parts even with a look-alike in the content");
    }

    #[test]
    fn utf8_notices_use_rfc6533_types() {
        let mut env = envelope();
        env.smtputf8 = true;
        env.recipients[0].address = "jürgen@bücher.test".into();
        let r = [RecipientReport::new(&env.recipients[0], Action::Failed, None)];
        let dsn = build(&settings(), &env, "Subject: Grüße\r\n\r\nx\r\n".as_bytes(), &r, NOW);
        assert!(dsn.smtputf8);
        assert_eq!(dsn.body, BodyType::EightBitMime);
        let (_, p) = parts(&dsn.message);
        assert!(p[1].0.contains("message/global-delivery-status"));
        assert!(String::from_utf8(p[1].1.clone()).unwrap().contains("Final-Recipient: utf-8; jürgen@bücher.test"));
        assert!(p[2].0.contains("message/global-headers"));
        assert!(p[0].0.contains("charset=utf-8") && p[0].0.contains("8bit"));
    }

    #[test]
    fn hostile_values_cannot_break_out_of_a_field() {
        let mut env = envelope();
        env.envid = Some("a+0D+0ABcc:+20evil@x".into()); // decodes to CR LF
        env.recipients[0].orcpt = Some("rfc822;x+0D+0ASubject:+20pwned".into());
        env.helo = "bad\r\nname".into();
        let reply = Response::parse_line("550 5.0.0 fine").unwrap();
        let r = [RecipientReport::new(&env.recipients[0], Action::Failed, Some(&reply))];
        let dsn = build(&settings(), &env, MESSAGE, &r, NOW);
        check_lines(&dsn.message);
        let status = String::from_utf8(parts(&dsn.message).1[1].1.clone()).unwrap();
        assert!(!status.lines().any(|l| l.starts_with("Subject:") || l.starts_with("Bcc:")), "{status}");
        assert!(status.contains("Original-Envelope-Id: a+0D+0ABcc:+20evil@x"), "kept as xtext: {status}");
    }

    #[test]
    fn notification_decisions() {
        use DeliveryEvent::*;
        let none = Notify::default();
        let never = Notify(Notify::NEVER);
        let success = Notify(Notify::SUCCESS);
        let all = Notify(Notify::SUCCESS | Notify::FAILURE | Notify::DELAY);
        let table: &[(&str, Notify, DeliveryEvent, Option<Action>)] = &[
            ("a@x", none, Failed, Some(Action::Failed)),
            ("a@x", none, Delayed, Some(Action::Delayed)),
            ("a@x", none, Relayed { next_hop_dsn: false }, None),
            ("", none, Failed, None),
            ("", all, Delayed, None),
            ("a@x", never, Failed, None),
            ("a@x", never, Delayed, None),
            ("a@x", success, Failed, None),
            ("a@x", success, Relayed { next_hop_dsn: false }, Some(Action::Relayed)),
            ("a@x", success, Relayed { next_hop_dsn: true }, None),
            ("a@x", all, Relayed { next_hop_dsn: false }, Some(Action::Relayed)),
            ("a@x", all, Delayed, Some(Action::Delayed)),
            ("a@x", Notify(Notify::FAILURE), Delayed, None),
        ];
        for (sender, notify, event, want) in table {
            assert_eq!(notification(sender, *notify, *event), *want, "{sender:?} {notify:?} {event:?}");
        }
    }

    #[test]
    fn long_fields_fold_and_stay_under_998() {
        let mut out = Vec::new();
        let words: Vec<String> = (0..100).map(|i| format!("word{i}")).collect();
        write_field(&mut out, "Diagnostic-Code", &format!("smtp; 550 {}", words.join(" ")));
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.lines().count() > 5 && text.lines().all(|l| l.len() <= FOLD_AT), "{text}");
        // One word of 3000 octets: split so that every line fits.
        let mut long = Vec::new();
        write_field(&mut long, "X", &"y".repeat(3000));
        check_lines(&long);
        assert_eq!(String::from_utf8(long).unwrap().matches('y').count(), 3000);
        // Unfolding gives the words back.
        let unfolded = header_value(&out, "Diagnostic-Code").unwrap();
        assert_eq!(unfolded, format!("smtp; 550 {}", words.join(" ")));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whatever the reply text, addresses and message, the notice is CRLF-clean, its lines
        /// fit, and it has exactly three parts.
        #[test]
        fn any_input_gives_a_well_formed_notice(
            text in "\\PC{0,500}",
            address in "[a-z0-9.+-]{1,64}@[a-z0-9.-]{1,60}",
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            full in any::<bool>(),
        ) {
            let mut env = envelope();
            env.ret = if full { Some(Ret::Full) } else { None };
            env.recipients[0].address = address;
            let reply = Response::parse_line(&format!("550 5.1.1 {text}")).unwrap();
            let r = [RecipientReport::new(&env.recipients[0], Action::Failed, Some(&reply))];
            let mut message = b"Subject: x\r\n\r\n".to_vec();
            message.extend_from_slice(&body);
            let dsn = build(&settings(), &env, &message, &r, NOW);
            if dsn.returned == Returned::Headers {
                check_lines(&dsn.message);
            }
            let (_, p) = parts(&dsn.message);
            prop_assert_eq!(p.len(), 3);
        }
    }
}
