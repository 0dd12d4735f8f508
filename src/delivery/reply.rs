//! Replies from a remote SMTP server, as the outbound client reads them: framing of single- and
//! multi-line replies (RFC 5321 4.2), RFC 3463 enhanced status codes where the server sends
//! them (RFC 2034), the EHLO capability list, and the table of replies the client makes up
//! itself when it decides something without asking the server (SIZE too small, SMTPUTF8 not
//! offered, connection lost...). Owns nothing of the conversation: `client` decides what a
//! reply means.
//!
//! Everything is bounded: a reply line is at most `line_max` octets (CRLF included) and a reply
//! at most `lines_max` lines; past either the server is broken or hostile and the connection is
//! dropped. The reader consumes complete lines only, so the runtime never needs to buffer more
//! than one line of a reply.

use std::fmt;

use memchr::memchr;

use crate::smtp::reply::Reply;

/// Default longest reply line, CRLF included. RFC 5321 4.5.3.1.5 says 512; real servers send
/// longer EHLO and rejection lines, so we allow four times that.
pub const REPLY_LINE_MAX: usize = 2048;
/// Default most lines in one reply (an EHLO reply has about 15).
pub const REPLY_LINES_MAX: usize = 128;

const _: () = assert!(REPLY_LINE_MAX >= 512, "RFC 5321 4.5.3.1.5: 512-octet reply lines must fit");

/// An RFC 3463 enhanced status code, `class.subject.detail`, e.g. `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// 0 to 999.
    pub subject: u16,
    /// 0 to 999.
    pub detail: u16,
}

impl EnhancedCode {
    /// A code from its three parts.
    pub const fn new(class: u8, subject: u16, detail: u16) -> EnhancedCode {
        EnhancedCode { class, subject, detail }
    }

    /// Parses `class.subject.detail` (RFC 3463 2: class 2, 4 or 5; subject and detail of one to
    /// three digits). Nothing may follow.
    pub fn parse(text: &str) -> Option<EnhancedCode> {
        let mut parts = text.split('.');
        let class = parts.next()?;
        let subject = parts.next()?;
        let detail = parts.next()?;
        if parts.next().is_some() || class.len() != 1 {
            return None;
        }
        let class = match class.as_bytes()[0] {
            b'2' => 2,
            b'4' => 4,
            b'5' => 5,
            _ => return None,
        };
        let number = |s: &str| -> Option<u16> {
            if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            s.parse().ok()
        };
        Some(EnhancedCode { class, subject: number(subject)?, detail: number(detail)? })
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// Where a reply came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Source {
    /// The remote server sent it.
    #[default]
    Remote,
    /// The client made it up (see `local` below); DSNs give no `Diagnostic-Code` for these.
    Local,
}

/// One complete reply: code, enhanced status code when the server gave one, and the text of
/// every line with the code (and enhanced code) removed, lines joined by `\n`.
///
/// Reused: the reader fills a `Response` in place, and `copy_from` keeps the text buffer, so a
/// busy connection does not allocate per reply once warm.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    code: u16,
    enhanced: Option<EnhancedCode>,
    text: String,
    source: Source,
}

impl Response {
    /// A reply the client makes up, from the local table (or any fixed `Reply`).
    pub fn local(reply: Reply) -> Response {
        Response {
            code: reply.code,
            enhanced: EnhancedCode::parse(reply.status),
            text: reply.text.to_string(),
            source: Source::Local,
        }
    }

    /// A local reply with text that carries a value (e.g. the server's SIZE limit).
    pub fn local_with_text(reply: Reply, text: String) -> Response {
        Response { text, ..Response::local(reply) }
    }

    /// Parses one reply written on one line, e.g. `550 5.1.1 No such user` (for tests, logs
    /// and the admin queue). Multi-line replies come through `ReplyReader`.
    pub fn parse_line(line: &str) -> Option<Response> {
        let mut reader = ReplyReader::new(REPLY_LINE_MAX, 1);
        let mut out = Response::default();
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        match reader.read(&bytes, &mut out) {
            Read::Complete { .. } => Some(out),
            _ => None,
        }
    }

    /// The three-digit reply code (200 to 599).
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The enhanced status code, when the server sent one.
    pub fn enhanced(&self) -> Option<EnhancedCode> {
        self.enhanced
    }

    /// The enhanced status code, or `class.0.0` derived from the reply code when there is none
    /// (RFC 3463 3.1: X.0.0 is "other undefined status"). For DSN `Status:` fields.
    pub fn status(&self) -> EnhancedCode {
        self.enhanced.unwrap_or(EnhancedCode::new(
            match self.code / 100 {
                2 => 2,
                4 => 4,
                _ => 5,
            },
            0,
            0,
        ))
    }

    /// The text, lines joined by `\n`, codes removed.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text lines (one per reply line).
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.text.split('\n')
    }

    /// Remote or local.
    pub fn source(&self) -> Source {
        self.source
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        self.code / 100 == 2
    }

    /// 3xx (354 to DATA, 334 in AUTH).
    pub fn is_intermediate(&self) -> bool {
        self.code / 100 == 3
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        self.code / 100 == 4
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        self.code / 100 == 5
    }

    /// The reply on one line, e.g. `550 5.1.1 No such user; second line`: for the tracking
    /// log, DSN `Diagnostic-Code` and logs.
    pub fn one_line(&self) -> String {
        let mut s = String::with_capacity(self.text.len() + 12);
        self.write_one_line(&mut s);
        s
    }

    /// Appends `one_line()` to `out`.
    pub fn write_one_line(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = write!(out, "{}", self.code);
        if let Some(e) = self.enhanced {
            let _ = write!(out, " {e}");
        }
        for (i, line) in self.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            out.push_str(if i == 0 { " " } else { "; " });
            out.push_str(line);
        }
    }

    /// Makes `self` a copy of `other`, reusing `self`'s text buffer.
    pub fn copy_from(&mut self, other: &Response) {
        self.code = other.code;
        self.enhanced = other.enhanced;
        self.text.clone_from(&other.text);
        self.source = other.source;
    }

    fn clear(&mut self) {
        self.code = 0;
        self.enhanced = None;
        self.text.clear();
        self.source = Source::Remote;
    }
}

impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.write_one_line(&mut s);
        f.write_str(&s)
    }
}

/// Why a reply could not be read. The connection cannot go on after any of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyError {
    /// A line longer than the limit.
    LineTooLong,
    /// More lines than the limit in one reply.
    TooManyLines,
    /// A line that does not start with a three-digit code and ` `, `-` or the line end.
    Malformed,
    /// A continuation line with a different code from the first line.
    CodeMismatch,
}

impl ReplyError {
    /// A short explanation, for logs and the close reason.
    pub fn reason(self) -> &'static str {
        match self {
            ReplyError::LineTooLong => "reply line too long",
            ReplyError::TooManyLines => "reply has too many lines",
            ReplyError::Malformed => "malformed reply line",
            ReplyError::CodeMismatch => "reply lines with different codes",
        }
    }
}

/// One step of reply framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// A reply is complete (in the `Response` passed in). `consumed` bytes were used.
    Complete {
        /// Bytes of input used, line endings included.
        consumed: usize,
    },
    /// No complete reply yet. `consumed` bytes (complete lines of a multi-line reply) were
    /// taken; the rest (a partial line) must be offered again with more bytes behind it.
    NeedMore {
        /// Bytes of input used.
        consumed: usize,
    },
    /// The input is not a valid reply; close the connection.
    Error {
        /// What was wrong.
        error: ReplyError,
        /// Bytes of input used.
        consumed: usize,
    },
}

/// Frames replies from a byte stream: `ddd-text` lines up to a `ddd text` (or bare `ddd`)
/// line. Keeps the state of a multi-line reply across reads.
#[derive(Debug, Clone)]
pub struct ReplyReader {
    line_max: usize,
    lines_max: usize,
    /// Lines of the reply in progress (0: none yet).
    lines: usize,
}

impl ReplyReader {
    /// A reader allowing lines of `line_max` octets (CRLF included) and `lines_max` lines.
    pub fn new(line_max: usize, lines_max: usize) -> ReplyReader {
        assert!(line_max >= 512, "RFC 5321 4.5.3.1.5: 512-octet reply lines must fit");
        assert!(lines_max >= 1);
        ReplyReader { line_max, lines_max, lines: 0 }
    }

    /// The longest line; the runtime must be able to hold this many unconsumed bytes.
    pub fn line_max(&self) -> usize {
        self.line_max
    }

    /// Reads from `input` into `reply`: complete lines are consumed and added; returns when
    /// the reply is complete, more bytes are needed, or the input is not a reply.
    /// `reply` must be the same value across the calls that make up one reply.
    pub fn read(&mut self, input: &[u8], reply: &mut Response) -> Read {
        let mut pos = 0;
        loop {
            let window = &input[pos..input.len().min(pos + self.line_max)];
            let Some(lf) = memchr(b'\n', window) else {
                if window.len() >= self.line_max {
                    return Read::Error { error: ReplyError::LineTooLong, consumed: pos };
                }
                return Read::NeedMore { consumed: pos };
            };
            // A bare LF ends a line too: replies are not message data, and being lenient here
            // cannot smuggle anything.
            let mut line = &window[..lf];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line_len = lf + 1;
            if self.lines == 0 {
                reply.clear();
            }
            if self.lines >= self.lines_max {
                self.lines = 0;
                return Read::Error { error: ReplyError::TooManyLines, consumed: pos + line_len };
            }
            let Some((code, last, text)) = split_line(line) else {
                self.lines = 0;
                return Read::Error { error: ReplyError::Malformed, consumed: pos + line_len };
            };
            if self.lines > 0 && code != reply.code {
                self.lines = 0;
                return Read::Error { error: ReplyError::CodeMismatch, consumed: pos + line_len };
            }
            let text = add_line(reply, code, self.lines == 0, text);
            if self.lines > 0 {
                reply.text.push('\n');
            }
            push_sanitized(&mut reply.text, text);
            self.lines += 1;
            pos += line_len;
            if last {
                self.lines = 0;
                return Read::Complete { consumed: pos };
            }
        }
    }
}

/// `ddd`, `ddd text`, `ddd-text` → (code, is last line, text).
fn split_line(line: &[u8]) -> Option<(u16, bool, &[u8])> {
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&line[0]) {
        return None;
    }
    let code = u16::from(line[0] - b'0') * 100 + u16::from(line[1] - b'0') * 10 + u16::from(line[2] - b'0');
    match line.get(3) {
        None => Some((code, true, &[])),
        Some(b' ') => Some((code, true, &line[4..])),
        Some(b'-') => Some((code, false, &line[4..])),
        Some(_) => None,
    }
}

/// Records the code (first line) and strips an enhanced status code from the line's text.
/// RFC 2034 puts the enhanced code on every line; the first line's is the reply's. A code
/// whose class does not match the reply code is not an enhanced code (it stays in the text).
fn add_line<'a>(reply: &mut Response, code: u16, first: bool, text: &'a [u8]) -> &'a [u8] {
    if first {
        reply.code = code;
        reply.source = Source::Remote;
    }
    let class = (code / 100) as u8;
    if class == 3 {
        return text;
    }
    let word_end = text.iter().position(|&b| b == b' ').unwrap_or(text.len());
    let parsed = std::str::from_utf8(&text[..word_end]).ok().and_then(EnhancedCode::parse);
    match parsed {
        Some(e) if e.class == class => {
            if first {
                reply.enhanced = Some(e);
            }
            let rest = &text[word_end..];
            rest.strip_prefix(b" ").unwrap_or(rest)
        }
        _ => text,
    }
}

/// Appends reply text; control characters become spaces and invalid UTF-8 is replaced, so
/// the text is safe in logs, JSON and DSN header fields.
fn push_sanitized(out: &mut String, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    out.extend(text.chars().map(|c| if c.is_control() { ' ' } else { c }));
}

// ---- replies the client makes up ----------------------------------------------------------------
//
// One table, as on the server side (`smtp::reply`): every decision the client takes without a
// server reply gets exactly one of these. They are `Source::Local` once turned into a
// `Response`, so DSNs do not present them as the remote server's words.

/// The message is larger than the SIZE the server announced (RFC 1870 6.1).
pub const TOO_BIG_FOR_SERVER: Reply = Reply {
    code: 552,
    status: "5.3.4",
    text: "Message size exceeds the receiving server's fixed maximum message size",
};
/// The message needs SMTPUTF8 and the server does not offer it (RFC 6531 3.2).
pub const NO_SMTPUTF8: Reply = Reply {
    code: 553,
    status: "5.6.7",
    text: "The message needs SMTPUTF8 (non-ASCII addresses or headers), which the receiving server does not support",
};
/// The message is declared 8BITMIME, its content is 8-bit, and the server does not offer
/// 8BITMIME: RFC 6152 3 says convert or do not send, and we do not convert (it would break
/// signatures and change the message).
pub const NO_8BITMIME: Reply = Reply {
    code: 554,
    status: "5.6.3",
    text: "Conversion required but not supported: the message has 8-bit content and the receiving server does not offer 8BITMIME",
};
/// The stored message could not be read from the spool; it stays queued and is tried again.
pub const SPOOL_READ_FAILED: Reply =
    Reply { code: 451, status: "4.3.0", text: "The queued message could not be read from the spool; will retry" };
/// A delivery status notification could not be queued, so the recipients it reports stay
/// queued and are tried again (the notice is then sent again too).
pub const DSN_NOT_QUEUED: Reply =
    Reply { code: 451, status: "4.3.0", text: "The delivery status notification could not be queued; will retry" };
/// A sender address that cannot be written in a MAIL command (control characters, brackets).
pub const BAD_SENDER_ADDRESS: Reply =
    Reply { code: 553, status: "5.1.7", text: "Sender address cannot be used in an SMTP command" };
/// A recipient address that cannot be written in a RCPT command.
pub const BAD_RECIPIENT_ADDRESS: Reply =
    Reply { code: 553, status: "5.1.3", text: "Recipient address cannot be used in an SMTP command" };
/// The connection dropped before the reply came.
pub const CONNECTION_LOST: Reply =
    Reply { code: 451, status: "4.4.2", text: "Connection lost before the remote server replied" };
/// The connection dropped after the whole message was sent and before the final reply: the
/// message may have been delivered (RFC 1047); it will be sent again.
pub const CONNECTION_LOST_AFTER_DATA: Reply = Reply {
    code: 451,
    status: "4.4.2",
    text: "Connection lost after the message was sent, before the final reply; it may be delivered twice",
};
/// No reply within the RFC 5321 4.5.3.2 timeout.
pub const TIMEOUT: Reply = Reply { code: 451, status: "4.4.2", text: "Timeout waiting for the remote server" };
/// No final reply within the 10-minute timeout after the whole message was sent: the message
/// may have been delivered (RFC 1047); it will be sent again.
pub const TIMEOUT_AFTER_DATA: Reply = Reply {
    code: 451,
    status: "4.4.2",
    text: "Timeout waiting for the final reply after the message was sent; it may be delivered twice",
};
/// The server's reply could not be parsed, or came when none was expected.
pub const PROTOCOL_ERROR: Reply =
    Reply { code: 451, status: "4.5.0", text: "SMTP protocol error from the remote server" };
/// The policy requires TLS and the server does not offer STARTTLS.
pub const TLS_NOT_OFFERED: Reply = Reply {
    code: 451,
    status: "4.7.5",
    text: "TLS is required for this destination but the server does not offer STARTTLS",
};
/// The TLS handshake after STARTTLS failed.
pub const TLS_HANDSHAKE_FAILED: Reply =
    Reply { code: 451, status: "4.7.5", text: "TLS handshake with the remote server failed" };
/// Smart-host credentials are configured but TLS is not active: they are never sent in clear.
pub const AUTH_NEEDS_TLS: Reply = Reply {
    code: 451,
    status: "4.7.5",
    text: "Refusing to send credentials without TLS (the server did not offer STARTTLS)",
};
/// Credentials are configured and the server offers neither AUTH PLAIN nor AUTH LOGIN.
pub const NO_AUTH_MECHANISM: Reply =
    Reply { code: 451, status: "4.7.0", text: "The server offers no AUTH mechanism we support (PLAIN, LOGIN)" };
/// A previous transaction could not be reset (RSET refused): the connection is dropped.
pub const RESET_FAILED: Reply =
    Reply { code: 451, status: "4.5.0", text: "The remote server refused RSET; connection dropped" };

/// No host of the destination accepted a TCP connection.
pub const CONNECT_FAILED: Reply =
    Reply { code: 451, status: "4.4.1", text: "No answer from the remote host (connection failed)" };
/// Every host of the destination failed recently and is left alone for a while.
pub const HOSTS_BACKED_OFF: Reply = Reply {
    code: 451,
    status: "4.4.1",
    text: "The remote hosts failed recently and are not retried yet (host backoff)",
};
/// A host name of the destination does not resolve.
pub const HOST_LOOKUP_FAILED: Reply =
    Reply { code: 451, status: "4.4.3", text: "The remote host name could not be resolved" };
/// An administrator deleted the message from the queue.
pub const DELETED_BY_ADMIN: Reply =
    Reply { code: 550, status: "5.7.1", text: "Deleted from the queue by the administrator" };

/// Every local reply, for the table test and documentation.
pub const LOCAL: &[Reply] = &[
    CONNECT_FAILED,
    HOSTS_BACKED_OFF,
    HOST_LOOKUP_FAILED,
    DELETED_BY_ADMIN,
    TOO_BIG_FOR_SERVER,
    NO_SMTPUTF8,
    NO_8BITMIME,
    SPOOL_READ_FAILED,
    DSN_NOT_QUEUED,
    BAD_SENDER_ADDRESS,
    BAD_RECIPIENT_ADDRESS,
    CONNECTION_LOST,
    CONNECTION_LOST_AFTER_DATA,
    TIMEOUT,
    TIMEOUT_AFTER_DATA,
    PROTOCOL_ERROR,
    TLS_NOT_OFFERED,
    TLS_HANDSHAKE_FAILED,
    AUTH_NEEDS_TLS,
    NO_AUTH_MECHANISM,
    RESET_FAILED,
];

// ---- EHLO capabilities ----------------------------------------------------------------------------

/// SASL mechanisms the server offers that the client can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuthMechanisms {
    /// `PLAIN` (RFC 4616).
    pub plain: bool,
    /// `LOGIN`.
    pub login: bool,
}

/// What the server said it supports in its EHLO reply. All false after HELO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// The server answered EHLO (false after a HELO fallback).
    pub esmtp: bool,
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 1870: `Some(0)` when SIZE is offered without a limit (or with an unreadable one),
    /// `Some(n)` for a fixed maximum of `n` octets.
    pub size: Option<u64>,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 3461.
    pub dsn: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 3030 (parsed, not used: the client always sends DATA).
    pub chunking: bool,
    /// RFC 2034.
    pub enhanced_status_codes: bool,
    /// RFC 4954.
    pub auth: AuthMechanisms,
}

impl Capabilities {
    /// Reads the capability lines of an EHLO reply (every line after the first, which is the
    /// server's name and greeting). Keywords are case-insensitive; unknown ones are ignored.
    /// The pre-RFC 4954 `AUTH=LOGIN PLAIN` form is understood too.
    pub fn from_ehlo(reply: &Response) -> Capabilities {
        let mut caps = Capabilities { esmtp: true, ..Capabilities::default() };
        for line in reply.lines().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else { continue };
            let (keyword, inline_arg) = match keyword.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (keyword, None),
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "STARTTLS" => caps.starttls = true,
                "CHUNKING" => caps.chunking = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "AUTH" => {
                    for mech in inline_arg.into_iter().chain(words) {
                        if mech.eq_ignore_ascii_case("PLAIN") {
                            caps.auth.plain = true;
                        } else if mech.eq_ignore_ascii_case("LOGIN") {
                            caps.auth.login = true;
                        }
                    }
                }
                _ => {}
            }
        }
        caps
    }

    /// The server's fixed maximum message size, if it announced one.
    pub fn size_limit(&self) -> Option<u64> {
        self.size.filter(|&n| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all(input: &[u8]) -> (Vec<Response>, Option<ReplyError>) {
        let mut r = ReplyReader::new(512, 8);
        let mut out = Vec::new();
        let mut reply = Response::default();
        let mut pos = 0;
        loop {
            match r.read(&input[pos..], &mut reply) {
                Read::Complete { consumed } => {
                    pos += consumed;
                    out.push(reply.clone());
                }
                Read::NeedMore { .. } => return (out, None),
                Read::Error { error, .. } => return (out, Some(error)),
            }
        }
    }

    #[test]
    fn single_and_multi_line_replies() {
        let (replies, err) = read_all(b"220 mx.test ESMTP\r\n250-mx.test\r\n250-PIPELINING\r\n250 SIZE 1000\r\n");
        assert_eq!(err, None);
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0].code(), 220);
        assert_eq!(replies[0].text(), "mx.test ESMTP");
        assert_eq!(replies[1].code(), 250);
        assert_eq!(replies[1].lines().collect::<Vec<_>>(), ["mx.test", "PIPELINING", "SIZE 1000"]);
    }

    #[test]
    fn enhanced_codes_are_parsed_and_stripped_from_every_line() {
        let (r, _) = read_all(b"550-5.1.1 The email account does not exist.\r\n550 5.1.1 Try again.\r\n");
        assert_eq!(r[0].enhanced(), Some(EnhancedCode::new(5, 1, 1)));
        assert_eq!(r[0].text(), "The email account does not exist.\nTry again.");
        assert_eq!(r[0].one_line(), "550 5.1.1 The email account does not exist.; Try again.");
        assert_eq!(r[0].status().to_string(), "5.1.1");
    }

    #[test]
    fn enhanced_code_class_must_match_reply_class() {
        let r = Response::parse_line("550 4.1.1 odd").unwrap();
        assert_eq!(r.enhanced(), None);
        assert_eq!(r.text(), "4.1.1 odd");
        assert_eq!(r.status(), EnhancedCode::new(5, 0, 0));
        let r = Response::parse_line("451 4.3.0").unwrap();
        assert_eq!(r.enhanced(), Some(EnhancedCode::new(4, 3, 0)));
        assert_eq!(r.text(), "");
        let r = Response::parse_line("354 2.0.0 go ahead").unwrap();
        assert_eq!(r.enhanced(), None, "3xx replies carry no enhanced code");
        assert_eq!(Response::parse_line("250 1.2.3.4 x").unwrap().enhanced(), None);
        assert_eq!(Response::parse_line("250 2.1234.0 x").unwrap().enhanced(), None);
    }

    #[test]
    fn bare_code_and_bare_lf_lines() {
        let (r, err) = read_all(b"250\n221 bye\n");
        assert_eq!(err, None);
        assert_eq!((r[0].code(), r[0].text()), (250, ""));
        assert_eq!((r[1].code(), r[1].text()), (221, "bye"));
    }

    #[test]
    fn malformed_and_oversized_replies_are_errors() {
        assert_eq!(read_all(b"hello\r\n").1, Some(ReplyError::Malformed));
        assert_eq!(read_all(b"25\r\n").1, Some(ReplyError::Malformed));
        assert_eq!(read_all(b"250x\r\n").1, Some(ReplyError::Malformed));
        assert_eq!(read_all(b"150 nope\r\n").1, Some(ReplyError::Malformed));
        assert_eq!(read_all(b"250-a\r\n251 b\r\n").1, Some(ReplyError::CodeMismatch));
        let mut long = b"250 ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 600));
        long.extend_from_slice(b"\r\n");
        assert_eq!(read_all(&long).1, Some(ReplyError::LineTooLong));
        // A line of exactly the limit fits.
        let mut exact = b"250 ".to_vec();
        exact.extend(std::iter::repeat_n(b'a', 512 - 6));
        exact.extend_from_slice(b"\r\n");
        assert_eq!(exact.len(), 512);
        assert_eq!(read_all(&exact).0.len(), 1);
        let many = b"250-a\r\n".repeat(9);
        assert_eq!(read_all(&many).1, Some(ReplyError::TooManyLines));
        let mut eight = b"250-a\r\n".repeat(7);
        eight.extend_from_slice(b"250 a\r\n");
        assert_eq!(read_all(&eight).0.len(), 1);
    }

    #[test]
    fn control_characters_are_neutralised() {
        let r = Response::parse_line("550 5.7.1 bad\u{1b}[31m \u{7f}text").unwrap();
        assert!(!r.text().chars().any(char::is_control), "{:?}", r.text());
        let (r, _) = read_all(b"550 \xff\xfe bytes\r\n");
        assert!(r[0].text().ends_with(" bytes"));
    }

    #[test]
    fn partial_lines_are_not_consumed() {
        let mut r = ReplyReader::new(512, 8);
        let mut reply = Response::default();
        assert_eq!(r.read(b"250-first\r\n250 sec", &mut reply), Read::NeedMore { consumed: 11 });
        assert_eq!(r.read(b"250 second\r\n", &mut reply), Read::Complete { consumed: 12 });
        assert_eq!(reply.text(), "first\nsecond");
    }

    #[test]
    fn ehlo_capabilities() {
        let mut r = ReplyReader::new(512, 32);
        let mut reply = Response::default();
        let input = b"250-mx.test Hello [192.0.2.1]\r\n250-pipelining\r\n250-SIZE 35882577\r\n250-8BITMIME\r\n\
250-AUTH LOGIN PLAIN XOAUTH2\r\n250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-DSN\r\n250-CHUNKING\r\n250 STARTTLS\r\n";
        assert!(matches!(r.read(input, &mut reply), Read::Complete { .. }));
        let caps = Capabilities::from_ehlo(&reply);
        assert_eq!(
            caps,
            Capabilities {
                esmtp: true,
                pipelining: true,
                size: Some(35_882_577),
                eight_bit_mime: true,
                smtputf8: true,
                dsn: true,
                starttls: true,
                chunking: true,
                enhanced_status_codes: true,
                auth: AuthMechanisms { plain: true, login: true },
            }
        );
        assert_eq!(caps.size_limit(), Some(35_882_577));

        // The first line is the greeting, never a capability; SIZE without a number; old AUTH=.
        let reply = Response::parse_line("250 STARTTLS").unwrap();
        assert!(!Capabilities::from_ehlo(&reply).starttls);
        let mut reply = Response::default();
        let mut r = ReplyReader::new(512, 32);
        r.read(b"250-x\r\n250-SIZE\r\n250 AUTH=LOGIN\r\n", &mut reply);
        let caps = Capabilities::from_ehlo(&reply);
        assert_eq!((caps.size, caps.size_limit()), (Some(0), None));
        assert_eq!(caps.auth, AuthMechanisms { plain: false, login: true });
        assert!(!caps.pipelining && !caps.starttls && !caps.dsn);
    }

    #[test]
    fn local_reply_table_is_well_formed() {
        for r in LOCAL {
            let resp = Response::local(*r);
            assert_eq!(resp.source(), Source::Local);
            let e = resp.enhanced().unwrap_or_else(|| panic!("{r:?} has no valid enhanced code"));
            assert_eq!(u16::from(e.class), r.code / 100, "{r:?}");
            assert!(resp.is_transient() || resp.is_permanent(), "{r:?}");
        }
    }

    #[test]
    fn copy_from_reuses_the_buffer() {
        let a = Response::parse_line("550 5.1.1 short").unwrap();
        let mut b = Response::parse_line(&format!("250 {}", "x".repeat(300))).unwrap();
        let cap = b.text.capacity();
        b.copy_from(&a);
        assert_eq!(b, a);
        assert_eq!(b.text.capacity(), cap);
    }

    proptest! {
        /// Any split of a stream of replies gives the same replies as reading it whole.
        #[test]
        fn chunking_does_not_matter(
            replies in proptest::collection::vec((200u16..600, 1usize..5, "[ -~]{0,40}"), 1..6),
            cut in any::<usize>(),
        ) {
            let mut wire = Vec::new();
            for (code, lines, text) in &replies {
                for i in 0..*lines {
                    let sep = if i + 1 == *lines { ' ' } else { '-' };
                    wire.extend_from_slice(format!("{code}{sep}{text}\r\n").as_bytes());
                }
            }
            let whole = read_all(&wire).0;
            prop_assert_eq!(whole.len(), replies.len());
            // Feed in two reads, keeping unconsumed bytes as the runtime does.
            let cut = cut % (wire.len() + 1);
            let mut r = ReplyReader::new(512, 8);
            let mut reply = Response::default();
            let mut got = Vec::new();
            let mut buf = wire[..cut].to_vec();
            for more in [&wire[cut..], &[][..]] {
                buf.extend_from_slice(more);
                loop {
                    match r.read(&buf, &mut reply) {
                        Read::Complete { consumed } => { buf.drain(..consumed); got.push(reply.clone()); }
                        Read::NeedMore { consumed } => { buf.drain(..consumed); break; }
                        Read::Error { error, .. } => panic!("{error:?}"),
                    }
                }
            }
            prop_assert_eq!(got, whole);
        }
    }
}
