//! The envelope of one message: who sent it, to whom, with which ESMTP and DSN parameters
//! (RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 6531 SMTPUTF8, RFC 3461 DSN), and where it came
//! from. Owned by the session while a transaction is open (its buffers are reused from one
//! transaction to the next), encoded into the spool with the message, decoded by delivery.
//! Also owns `QueueId`, the message identity shared by the spool, delivery and tracking.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Identity of an accepted message, unique across cores and restarts.
///
/// Layout (most significant first): 42 bits of Unix time in milliseconds (good until 2109),
/// 8 bits of SMTP core number, 14 bits of sequence within that millisecond. Ids from one core
/// increase monotonically; the generator is seeded from the largest id found in the spool at
/// start, so a clock that steps back cannot repeat an id either.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct QueueId(pub u64);

const QUEUE_ID_SEQ_BITS: u32 = 14;
const QUEUE_ID_CORE_BITS: u32 = 8;
const QUEUE_ID_SEQ_MAX: u64 = (1 << QUEUE_ID_SEQ_BITS) - 1;

impl QueueId {
    /// Milliseconds since the Unix epoch at which the id was made.
    pub fn time_ms(self) -> u64 {
        self.0 >> (QUEUE_ID_SEQ_BITS + QUEUE_ID_CORE_BITS)
    }

    /// The SMTP core that accepted the message.
    pub fn core(self) -> u8 {
        (self.0 >> QUEUE_ID_SEQ_BITS) as u8
    }

    /// Parses the 16-hex-digit form printed by `Display`.
    pub fn parse(text: &str) -> Option<QueueId> {
        if text.len() != 16 {
            return None;
        }
        u64::from_str_radix(text, 16).ok().map(QueueId)
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({self})")
    }
}

/// Makes queue ids for one core. Pure: the caller passes the time.
#[derive(Debug, Clone)]
pub struct QueueIdGen {
    core: u8,
    last_ms: u64,
    seq: u64,
}

impl QueueIdGen {
    /// A generator for `core` that never returns an id at or below `floor`.
    pub fn new(core: u8, floor: QueueId) -> QueueIdGen {
        QueueIdGen { core, last_ms: floor.time_ms(), seq: QUEUE_ID_SEQ_MAX }
    }

    /// The next id, given the current Unix time in milliseconds.
    pub fn next(&mut self, now_ms: u64) -> QueueId {
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.seq = 0;
        } else if self.seq >= QUEUE_ID_SEQ_MAX {
            // 16,384 ids in one millisecond on one core, or a clock that went back: borrow
            // from the next millisecond rather than repeat an id.
            self.last_ms += 1;
            self.seq = 0;
        } else {
            self.seq += 1;
        }
        QueueId(
            (self.last_ms << (QUEUE_ID_SEQ_BITS + QUEUE_ID_CORE_BITS))
                | (u64::from(self.core) << QUEUE_ID_SEQ_BITS)
                | self.seq,
        )
    }
}

/// `BODY=` of MAIL FROM (RFC 6152). BINARYMIME is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyType {
    /// No BODY parameter, or `BODY=7BIT`.
    #[default]
    SevenBit,
    /// `BODY=8BITMIME`.
    EightBitMime,
}

/// `RET=` of MAIL FROM (RFC 3461 4.3): how much of the message a failure DSN returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// Return the whole message.
    Full,
    /// Return only the headers.
    Hdrs,
}

/// `NOTIFY=` of RCPT TO (RFC 3461 4.1) as a small bit set. Empty means "not given", which
/// RFC 3461 says to treat as `FAILURE` (and, at the implementation's discretion, `DELAY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify(pub u8);

impl Notify {
    /// `NOTIFY=NEVER`.
    pub const NEVER: u8 = 1;
    /// `SUCCESS`.
    pub const SUCCESS: u8 = 2;
    /// `FAILURE`.
    pub const FAILURE: u8 = 4;
    /// `DELAY`.
    pub const DELAY: u8 = 8;

    /// True when no NOTIFY parameter was given.
    pub fn is_default(self) -> bool {
        self.0 == 0
    }

    /// Whether a DSN of this kind is wanted, with the RFC 3461 default applied.
    pub fn wants(self, kind: u8) -> bool {
        if self.0 & Notify::NEVER != 0 {
            return false;
        }
        if self.0 == 0 {
            return kind == Notify::FAILURE || kind == Notify::DELAY;
        }
        self.0 & kind != 0
    }

    /// The parameter text, e.g. `SUCCESS,FAILURE`; empty when not given.
    pub fn to_param(self) -> String {
        let mut parts = Vec::new();
        if self.0 & Notify::NEVER != 0 {
            return "NEVER".into();
        }
        for (bit, name) in [(Notify::SUCCESS, "SUCCESS"), (Notify::FAILURE, "FAILURE"), (Notify::DELAY, "DELAY")] {
            if self.0 & bit != 0 {
                parts.push(name);
            }
        }
        parts.join(",")
    }
}

/// One recipient of the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recipient {
    /// The forward path without angle brackets, e.g. `user@example.test`.
    pub address: String,
    /// `NOTIFY=` (RFC 3461).
    pub notify: Notify,
    /// `ORCPT=` as received, still xtext-encoded, e.g. `rfc822;user@example.test`.
    pub orcpt: Option<String>,
}

impl Recipient {
    /// The domain part, as written (compare with `eq_ignore_ascii_case`).
    pub fn domain(&self) -> &str {
        domain_of(&self.address)
    }
}

/// The domain of an address: everything after the last `@` (empty when there is none, as for
/// `Postmaster`).
pub fn domain_of(address: &str) -> &str {
    match address.rfind('@') {
        Some(at) => &address[at + 1..],
        None => "",
    }
}

/// The envelope of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Assigned when the message data starts (it appears in the `Received:` header).
    pub queue_id: QueueId,
    /// Unix time in milliseconds at which the message was accepted.
    pub received_at_ms: u64,
    /// The reverse path without angle brackets; empty for the null sender `<>`.
    pub sender: String,
    /// `BODY=`.
    pub body_type: BodyType,
    /// `SMTPUTF8` was given on MAIL FROM.
    pub smtputf8: bool,
    /// `SIZE=` as declared by the client, if any.
    pub size_declared: Option<u64>,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `ENVID=` as received (xtext).
    pub envid: Option<String>,
    /// The authenticated user, if the session authenticated.
    pub auth_user: Option<String>,
    /// The client address (the real one when a PROXY header was accepted).
    pub client_ip: IpAddr,
    /// The receive connector that accepted the session.
    pub connector: String,
    /// The name the client gave in EHLO/HELO.
    pub helo: String,
    /// The session was under TLS when the message was sent.
    pub tls: bool,
    /// The recipients, in RCPT order.
    pub recipients: Vec<Recipient>,
}

impl Default for Envelope {
    fn default() -> Self {
        Envelope {
            queue_id: QueueId::default(),
            received_at_ms: 0,
            sender: String::new(),
            body_type: BodyType::default(),
            smtputf8: false,
            size_declared: None,
            ret: None,
            envid: None,
            auth_user: None,
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            connector: String::new(),
            helo: String::new(),
            tls: false,
            recipients: Vec::new(),
        }
    }
}

impl Envelope {
    /// Clears the per-transaction fields and keeps the allocations for the next one.
    pub fn reset_transaction(&mut self) {
        self.queue_id = QueueId::default();
        self.received_at_ms = 0;
        self.sender.clear();
        self.body_type = BodyType::SevenBit;
        self.smtputf8 = false;
        self.size_declared = None;
        self.ret = None;
        self.envid = None;
        self.recipients.clear();
    }
}

/// Decodes RFC 3461 xtext (`+XX` hex escapes). Returns `None` on a malformed escape.
pub fn xtext_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            if !hex.bytes().all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c)) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes text as RFC 3461 xtext: `+`, `=`, controls, space and non-ASCII become `+XX`.
pub fn xtext_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_ids_increase_and_carry_core_and_time() {
        let mut g = QueueIdGen::new(3, QueueId::default());
        let a = g.next(1_700_000_000_000);
        let b = g.next(1_700_000_000_000);
        let c = g.next(1_699_999_999_000); // clock stepped back
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a.core(), 3);
        assert_eq!(a.time_ms(), 1_700_000_000_000);
        assert_eq!(QueueId::parse(&a.to_string()), Some(a));
    }

    #[test]
    fn queue_id_sequence_overflow_borrows_next_millisecond() {
        let mut g = QueueIdGen::new(0, QueueId::default());
        let mut last = g.next(5);
        for _ in 0..40_000 {
            let id = g.next(5);
            assert!(id > last);
            last = id;
        }
        assert!(last.time_ms() > 5);
    }

    #[test]
    fn generator_respects_floor_from_recovery() {
        let mut g1 = QueueIdGen::new(1, QueueId::default());
        let old = g1.next(10_000);
        let mut g2 = QueueIdGen::new(1, old);
        assert!(g2.next(9_000) > old, "restart with an earlier clock must not repeat ids");
    }

    #[test]
    fn notify_defaults_follow_rfc3461() {
        assert!(Notify::default().wants(Notify::FAILURE));
        assert!(!Notify::default().wants(Notify::SUCCESS));
        assert!(!Notify(Notify::NEVER).wants(Notify::FAILURE));
        assert!(Notify(Notify::SUCCESS).wants(Notify::SUCCESS));
        assert!(!Notify(Notify::SUCCESS).wants(Notify::FAILURE));
        assert_eq!(Notify(Notify::SUCCESS | Notify::DELAY).to_param(), "SUCCESS,DELAY");
    }

    #[test]
    fn xtext_round_trip() {
        let s = "a+b=c d\u{e9}";
        assert_eq!(xtext_decode(&xtext_encode(s)).as_deref(), Some(s));
        assert_eq!(xtext_decode("abc+2Bd").as_deref(), Some("abc+d"));
        assert_eq!(xtext_decode("bad+2"), None);
        assert_eq!(xtext_decode("bad+zz"), None);
    }
}
