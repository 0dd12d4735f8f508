//! SMTP protocol logs (`protocol_log = true` on a receive connector): the transcript of each
//! session to `<spool.dir>/protocol/smtp-<core>-<yyyymmdd>[.<n>].log`, one line per client line
//! and per server reply line, in Exchange's notation:
//!
//! ```text
//! 2026-11-25T15:47:55.123Z 0.17 127.0.0.1:51234 + connect to 127.0.0.1:2525, connector "relay"
//! 2026-11-25T15:47:55.124Z 0.17 127.0.0.1:51234 > 220 relay.test ESMTP ringrelay
//! 2026-11-25T15:47:55.125Z 0.17 127.0.0.1:51234 < EHLO printer.example.test
//! 2026-11-25T15:47:55.131Z 0.17 127.0.0.1:51234 < AUTH PLAIN <redacted>
//! 2026-11-25T15:47:55.140Z 0.17 127.0.0.1:51234 * 2113 bytes of message data
//! 2026-11-25T15:47:55.150Z 0.17 127.0.0.1:51234 - disconnect
//! ```
//!
//! `+` connect, `-` disconnect, `<` received from the client, `>` sent by the relay, `*` what
//! the relay noted. Secrets never reach the file: the initial response of an AUTH command and
//! every line the client sends while the session is in a SASL exchange are replaced by
//! `<redacted>`. Message content is not logged, only its size. Lines under TLS are logged as
//! the plaintext the session saw. Long lines are cut at `LINE_MAX` bytes; bytes outside
//! printable ASCII are written as `\xNN`, so a client cannot forge log lines.

use std::net::SocketAddr;

use memchr::memchr;

use super::writer::LogBuffer;
use crate::smtp::{Host, Output, Session, TimeoutKind};

/// Bytes of one logged line's text at most.
const LINE_MAX: usize = 512;

/// One session's protocol log state.
pub struct ProtoSession {
    id: String,
    peer: String,
    data_bytes: u64,
}

impl ProtoSession {
    /// A session numbered `id` with a client at `peer`.
    pub fn new(id: String, peer: SocketAddr) -> ProtoSession {
        ProtoSession { id, peer: peer.to_string(), data_bytes: 0 }
    }

    /// Writes one line: `time id peer dir text`.
    pub fn event(&self, log: &LogBuffer, dir: char, text: &[u8]) {
        let time = crate::clock::rfc3339(crate::clock::unix_ms());
        log.line(|buf| {
            buf.extend_from_slice(time.as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(self.id.as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(self.peer.as_bytes());
            buf.push(b' ');
            let mut d = [0u8; 4];
            buf.extend_from_slice(dir.encode_utf8(&mut d).as_bytes());
            buf.push(b' ');
            escape_into(buf, text);
        });
    }

    /// Logs the reply lines in `wire`.
    pub fn sent(&self, log: &LogBuffer, wire: &[u8]) {
        for line in wire.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                self.event(log, '>', line);
            }
        }
    }

    /// Feeds `session` like `Session::receive`, logging each client line. Command lines are
    /// fed one at a time so that each is logged with the state it is read in; message data is
    /// fed in bulk and logged as a byte count.
    pub fn receive(
        &mut self,
        log: &LogBuffer,
        session: &mut Session,
        input: &[u8],
        host: &mut dyn Host,
        out: &mut Output,
    ) -> usize {
        let mut pos = 0;
        while pos < input.len() && out.action.is_none() {
            if session.timeout_kind() == TimeoutKind::Data {
                let n = session.receive(&input[pos..], host, out);
                pos += n;
                self.data_bytes += n as u64;
                if session.timeout_kind() != TimeoutKind::Data {
                    self.event(log, '*', format!("{} bytes of message data", self.data_bytes).as_bytes());
                    self.data_bytes = 0;
                }
                if n == 0 {
                    break;
                }
                continue;
            }
            let rest = &input[pos..];
            let end = memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
            let secret = session.in_sasl_exchange();
            let n = session.receive(&rest[..end], host, out);
            if n == 0 {
                break;
            }
            let chunk = &rest[..n];
            if n == end && chunk.ends_with(b"\n") && n <= session.max_line() {
                let line = chunk.strip_suffix(b"\n").unwrap_or(chunk);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if secret {
                    self.event(log, '<', b"<redacted>");
                } else {
                    self.event(log, '<', &redact_auth(line));
                }
            } else {
                self.event(log, '*', format!("{n} bytes of an over-long line dropped").as_bytes());
            }
            pos += n;
        }
        pos
    }
}

/// `AUTH PLAIN dXNlcgBwYXNz` → `AUTH PLAIN <redacted>`; other lines unchanged.
pub fn redact_auth(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let is_auth = line.len() > 5 && line[..5].eq_ignore_ascii_case(b"AUTH ");
    if !is_auth {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let verb = words.next().unwrap_or(b"AUTH");
    let mechanism = words.next().unwrap_or(b"");
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(verb);
    out.push(b' ');
    out.extend_from_slice(mechanism);
    if words.next().is_some() {
        out.extend_from_slice(b" <redacted>");
    }
    std::borrow::Cow::Owned(out)
}

fn escape_into(buf: &mut Vec<u8>, text: &[u8]) {
    let cut = text.len() > LINE_MAX;
    for &b in &text[..text.len().min(LINE_MAX)] {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            buf.push(b);
        } else {
            buf.extend_from_slice(format!("\\x{b:02x}").as_bytes());
        }
    }
    if cut {
        buf.extend_from_slice(format!("... ({} bytes)", text.len()).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_initial_responses_are_redacted() {
        assert_eq!(&*redact_auth(b"AUTH PLAIN AHVzZXIAcGFzcw=="), b"AUTH PLAIN <redacted>");
        assert_eq!(&*redact_auth(b"auth login dXNlcg=="), b"auth login <redacted>");
        assert_eq!(&*redact_auth(b"AUTH LOGIN"), b"AUTH LOGIN");
        assert_eq!(&*redact_auth(b"MAIL FROM:<a@b>"), b"MAIL FROM:<a@b>");
    }

    #[test]
    fn control_bytes_cannot_forge_lines() {
        let mut buf = Vec::new();
        escape_into(&mut buf, b"EHLO x\n2026 fake > 250 ok\\");
        assert_eq!(buf, b"EHLO x\\x0a2026 fake > 250 ok\\x5c");
    }
}
