//! Message generation for `ringload run`: the size distribution (`--size`), the address
//! patterns (`--from`, `--to`, `--domains`), and the bytes of each message, built into buffers
//! that the connection reuses (no per-message allocation once the buffers have grown).
//!
//! Every message is a valid RFC 5322 message with `Message-ID`, `Date`, `From`, `To`,
//! `Subject`, and two headers of ours: `X-Ringload-Id` (unique in the run) and
//! `X-Ringload-Sent` (Unix time in microseconds when the message was built, just before its
//! transaction starts), from which `ringload sink` computes the end-to-end delay.
//!
//! Size syntax (`--size`): one size (`1024`, `10k`), or a weighted list `SIZE:WEIGHT,...`
//! (`1k:80,10k:15,100k:5`: 80 % of messages are 1 KiB...), where a size may be a range
//! `LO-HI` drawn uniformly (`1k-4k:90,1M:10`). Sizes count the whole message as sent (header
//! section, empty line and body, CRLF line ends, before dot-stuffing). A size smaller than the
//! header section gives a message with just the headers and one empty body line.
//!
//! Address patterns: `{n}` the message number (unique in the run), `{r}` the recipient's index
//! in its message (0-based), `{d}` the domain number (0..`--domains`), `{k}` the client thread.

use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use crate::rng::Rng;
use crate::units::parse_size;

/// Largest message we generate: bounded so a typo cannot ask for terabytes.
pub const SIZE_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Length of a generated body line, CRLF excluded (RFC 5322 recommends at most 78).
const FILLER_LINE_CHARS: usize = 76;
/// Distinct filler lines; messages cycle through them from a per-message offset.
const FILLER_LINES: usize = 61;

/// One entry of a size distribution: sizes in `[lo, hi]`, drawn with weight `weight`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SizeChoice {
    lo: u64,
    hi: u64,
    /// Cumulative weight up to and including this entry.
    cumulative: u64,
}

/// A message size distribution (`--size`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeDist {
    choices: Vec<SizeChoice>,
    text: String,
}

impl SizeDist {
    /// A single fixed size.
    pub fn fixed(bytes: u64) -> SizeDist {
        SizeDist { choices: vec![SizeChoice { lo: bytes, hi: bytes, cumulative: 1 }], text: bytes.to_string() }
    }

    /// Draws one size.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let total = self.choices.last().map_or(1, |c| c.cumulative);
        let pick = if self.choices.len() == 1 { 0 } else { rng.below(total) };
        let c = self.choices.iter().find(|c| pick < c.cumulative).unwrap_or(&self.choices[0]);
        if c.lo == c.hi { c.lo } else { c.lo + rng.below(c.hi - c.lo + 1) }
    }

    /// The mean size in bytes (for reports and capacity arithmetic).
    pub fn mean(&self) -> f64 {
        let total = self.choices.last().map_or(1, |c| c.cumulative) as f64;
        let mut prev = 0;
        let mut sum = 0.0;
        for c in &self.choices {
            let w = (c.cumulative - prev) as f64;
            prev = c.cumulative;
            sum += w * (c.lo + c.hi) as f64 / 2.0;
        }
        sum / total
    }

    /// The distribution as the operator wrote it.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl FromStr for SizeDist {
    type Err = String;

    fn from_str(text: &str) -> Result<SizeDist, String> {
        let mut choices = Vec::new();
        let mut cumulative = 0u64;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (sizes, weight) = match part.rsplit_once(':') {
                Some((s, w)) => {
                    let w: u64 = w.trim().parse().map_err(|_| {
                        format!("--size `{part}`: the weight after `:` must be a whole number, e.g. 1k:80,10k:20")
                    })?;
                    (s, w)
                }
                None => (part, 1),
            };
            let (lo, hi) = match sizes.split_once('-') {
                Some((a, b)) => (parse_size(a)?, parse_size(b)?),
                None => {
                    let s = parse_size(sizes)?;
                    (s, s)
                }
            };
            if lo > hi {
                return Err(format!("--size `{part}`: the range must go from small to large"));
            }
            if hi > SIZE_MAX_BYTES {
                return Err(format!("--size `{part}`: at most {} MiB per message", SIZE_MAX_BYTES >> 20));
            }
            if weight == 0 {
                continue;
            }
            cumulative += weight;
            choices.push(SizeChoice { lo, hi, cumulative });
        }
        if choices.is_empty() {
            return Err(format!("--size `{text}`: give a size (1024, 10k) or a list like 1k:80,10k:15,100k:5"));
        }
        Ok(SizeDist { choices, text: text.trim().to_string() })
    }
}

/// A variable of an address pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    /// `{n}`: the message number.
    Message,
    /// `{r}`: the recipient's index in its message.
    Recipient,
    /// `{d}`: the domain number.
    Domain,
    /// `{k}`: the client thread.
    Thread,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

/// An address pattern such as `rcpt{n}@dest{d}.test`, compiled once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// The values substituted into a pattern.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars {
    /// `{n}`.
    pub message: u64,
    /// `{r}`.
    pub recipient: u64,
    /// `{d}`.
    pub domain: u64,
    /// `{k}`.
    pub thread: u64,
}

impl FromStr for Template {
    type Err = String;

    fn from_str(text: &str) -> Result<Template, String> {
        if text.is_empty() || text.len() > 200 {
            return Err(format!("address pattern `{text}` must have 1 to 200 characters"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>') {
            return Err(format!("address pattern `{text}` must not contain spaces, controls or angle brackets"));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_string()));
            }
            let close =
                rest[open..].find('}').ok_or_else(|| format!("address pattern `{text}`: `{{` without `}}`"))? + open;
            let var = match &rest[open + 1..close] {
                "n" => Var::Message,
                "r" => Var::Recipient,
                "d" => Var::Domain,
                "k" => Var::Thread,
                other => {
                    return Err(format!(
                        "address pattern `{text}`: unknown variable `{{{other}}}`; use {{n}} (message number), \
                         {{r}} (recipient index), {{d}} (domain number) or {{k}} (thread)"
                    ));
                }
            };
            parts.push(Part::Var(var));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("address pattern `{text}`: `}}` without `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Ok(Template { parts })
    }
}

impl Template {
    /// Renders into `out` (cleared first).
    pub fn render(&self, vars: &Vars, out: &mut String) {
        use std::fmt::Write as _;
        out.clear();
        for p in &self.parts {
            // Writing to a String cannot fail.
            let _ = match p {
                Part::Literal(s) => out.write_str(s),
                Part::Var(Var::Message) => write!(out, "{}", vars.message),
                Part::Var(Var::Recipient) => write!(out, "{}", vars.recipient),
                Part::Var(Var::Domain) => write!(out, "{}", vars.domain),
                Part::Var(Var::Thread) => write!(out, "{}", vars.thread),
            };
        }
    }

    /// Does the pattern use `{d}`? (`--domains` has no effect otherwise.)
    pub fn uses_domain(&self) -> bool {
        self.parts.contains(&Part::Var(Var::Domain))
    }
}

/// The envelope of one message, reused from message to message.
#[derive(Debug, Default, Clone)]
pub struct Envelope {
    /// The reverse path, without angle brackets.
    pub from: String,
    /// Recipient buffers; the first `count` are this message's.
    rcpts: Vec<String>,
    count: usize,
    /// `SIZE=` to declare: the message size in bytes.
    pub size: u64,
}

impl Envelope {
    /// This message's recipients.
    pub fn recipients(&self) -> &[String] {
        &self.rcpts[..self.count]
    }

    /// Sets the recipients (tests and callers that build envelopes by hand).
    pub fn set_recipients<S: AsRef<str>>(&mut self, list: &[S]) {
        self.count = 0;
        for r in list {
            let slot = self.next_slot();
            slot.push_str(r.as_ref());
        }
    }

    fn next_slot(&mut self) -> &mut String {
        if self.count == self.rcpts.len() {
            self.rcpts.push(String::new());
        }
        let slot = &mut self.rcpts[self.count];
        slot.clear();
        self.count += 1;
        slot
    }
}

/// What a factory needs to know; shared by all client threads.
#[derive(Debug, Clone)]
pub struct MessageSpec {
    /// Message sizes.
    pub size: SizeDist,
    /// `--from`.
    pub from: Template,
    /// `--to`.
    pub to: Template,
    /// Recipients per message.
    pub rcpts: u32,
    /// Domains the recipients are spread over.
    pub domains: u32,
    /// A fixed message (from `--message-file`), CRLF-normalised; replaces the generated one.
    pub fixed: Option<Vec<u8>>,
    /// Identifies the run in `X-Ringload-Id` and `Message-ID`.
    pub run_id: String,
}

impl MessageSpec {
    /// Reads a message file for `--message-file`, turning bare LF line ends into CRLF and
    /// making sure it ends with a line end.
    pub fn load_fixed(path: &Path) -> Result<Vec<u8>, String> {
        let raw = std::fs::read(path).map_err(|e| format!("cannot read --message-file {}: {e}", path.display()))?;
        if raw.len() as u64 > SIZE_MAX_BYTES {
            return Err(format!("--message-file {} is larger than {} MiB", path.display(), SIZE_MAX_BYTES >> 20));
        }
        let mut out = Vec::with_capacity(raw.len() + raw.len() / 32 + 2);
        let mut prev = 0u8;
        for &b in &raw {
            if b == b'\n' && prev != b'\r' {
                out.push(b'\r');
            }
            out.push(b);
            prev = b;
        }
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        Ok(out)
    }
}

/// Builds messages for one client thread.
pub struct MessageFactory {
    spec: std::sync::Arc<MessageSpec>,
    thread: u64,
    rng: Rng,
    filler: Vec<u8>,
    date_second: u64,
    date: String,
}

impl MessageFactory {
    /// A factory for client thread `thread`, seeded for reproducible sizes.
    pub fn new(spec: std::sync::Arc<MessageSpec>, thread: u64, seed: u64) -> MessageFactory {
        MessageFactory {
            spec,
            thread,
            rng: Rng::new(seed ^ thread.wrapping_mul(0x9E37_79B9)),
            filler: filler(),
            date_second: u64::MAX,
            date: String::new(),
        }
    }

    /// Builds message number `n` into `env` and `msg` (both cleared first), stamped with
    /// `sent_unix_us`.
    pub fn build(&mut self, n: u64, sent_unix_us: u64, env: &mut Envelope, msg: &mut Vec<u8>) {
        let spec = std::sync::Arc::clone(&self.spec);
        let mut vars = Vars { message: n, recipient: 0, domain: 0, thread: self.thread };
        spec.from.render(&vars, &mut env.from);
        env.count = 0;
        for r in 0..u64::from(spec.rcpts) {
            vars.recipient = r;
            vars.domain = (n.wrapping_mul(u64::from(spec.rcpts)) + r) % u64::from(spec.domains.max(1));
            spec.to.render(&vars, env.next_slot());
        }
        msg.clear();
        // Writing to a Vec cannot fail.
        let _ = write!(msg, "X-Ringload-Id: {}.{n}\r\nX-Ringload-Sent: {sent_unix_us}\r\n", spec.run_id);
        if let Some(fixed) = &spec.fixed {
            msg.extend_from_slice(fixed);
            env.size = msg.len() as u64;
            return;
        }
        let target = spec.size.sample(&mut self.rng);
        self.refresh_date(sent_unix_us);
        let _ = write!(
            msg,
            "Message-ID: <{}.{n}@ringload.invalid>\r\nDate: {}\r\nFrom: <{}>\r\nTo: ",
            spec.run_id, self.date, env.from
        );
        for (i, r) in env.recipients().iter().enumerate() {
            if i > 0 {
                msg.extend_from_slice(b",\r\n ");
            }
            let _ = write!(msg, "<{r}>");
        }
        let _ = write!(
            msg,
            "\r\nSubject: ringload {} message {n}\r\nMIME-Version: 1.0\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\r\n",
            spec.run_id
        );
        let body = target.saturating_sub(msg.len() as u64).max(2) as usize;
        self.fill_body(body, msg);
        env.size = msg.len() as u64;
    }

    fn refresh_date(&mut self, unix_us: u64) {
        let second = unix_us / 1_000_000;
        if second != self.date_second {
            self.date_second = second;
            self.date = ringrelay::clock::rfc5322(unix_us / 1000);
        }
    }

    /// Appends exactly `len` (≥ 2) bytes of CRLF-terminated text lines.
    fn fill_body(&mut self, len: usize, msg: &mut Vec<u8>) {
        debug_assert!(len >= 2);
        let line = FILLER_LINE_CHARS + 2;
        let mut start = (self.rng.below(FILLER_LINES as u64) as usize) * line;
        let mut left = len;
        msg.reserve(len);
        while left > 0 {
            if left >= line + 2 || left == line {
                msg.extend_from_slice(&self.filler[start..start + line]);
                left -= line;
                start = (start + line) % self.filler.len();
            } else if left > line {
                // Leave at least 2 bytes (an empty line) for the end.
                let take = left - 2;
                msg.extend_from_slice(&self.filler[start..start + take - 2]);
                msg.extend_from_slice(b"\r\n");
                left -= take;
            } else {
                // The last line: `left - 2` characters and CRLF.
                msg.extend_from_slice(&self.filler[start..start + left - 2]);
                msg.extend_from_slice(b"\r\n");
                left = 0;
            }
        }
    }
}

/// Filler text: `FILLER_LINES` distinct lines of printable ASCII, none starting with a dot.
fn filler() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "relay",
        "queue",
        "mail",
        "latency",
        "throughput",
        "capacity",
        "spool",
        "domain",
        "message",
        "sender",
        "recipient",
        "batch",
        "pipeline",
        "commit",
        "delivery",
        "ringload",
        "sink",
        "percentile",
        "core",
        "load",
    ];
    let mut out = Vec::with_capacity(FILLER_LINES * (FILLER_LINE_CHARS + 2));
    for i in 0..FILLER_LINES {
        let mut line = String::with_capacity(FILLER_LINE_CHARS + 16);
        let mut w = i * 7;
        while line.len() < FILLER_LINE_CHARS {
            line.push_str(WORDS[w % WORDS.len()]);
            line.push(' ');
            w += 3 + i % 5;
        }
        line.truncate(FILLER_LINE_CHARS);
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn spec(size: &str, rcpts: u32, domains: u32) -> Arc<MessageSpec> {
        Arc::new(MessageSpec {
            size: size.parse().unwrap(),
            from: "load{n}@example.test".parse().unwrap(),
            to: "rcpt{r}.{n}@dest{d}.test".parse().unwrap(),
            rcpts,
            domains,
            fixed: None,
            run_id: "abc123".into(),
        })
    }

    #[test]
    fn size_distributions() {
        let d: SizeDist = "1k:80,10k:15,100k:5".parse().unwrap();
        let mut rng = Rng::new(3);
        let mut counts = [0u32; 3];
        for _ in 0..10_000 {
            match d.sample(&mut rng) {
                1024 => counts[0] += 1,
                10240 => counts[1] += 1,
                102_400 => counts[2] += 1,
                other => panic!("unexpected size {other}"),
            }
        }
        assert!((7600..8400).contains(&counts[0]), "{counts:?}");
        assert!((1200..1800).contains(&counts[1]), "{counts:?}");
        assert!((300..700).contains(&counts[2]), "{counts:?}");
        let r: SizeDist = "1k-2k".parse().unwrap();
        for _ in 0..1000 {
            assert!((1024..=2048).contains(&r.sample(&mut rng)));
        }
        assert_eq!(SizeDist::fixed(500).mean(), 500.0);
        assert!("1k:x".parse::<SizeDist>().is_err());
        assert!("2k-1k".parse::<SizeDist>().is_err());
        assert!("".parse::<SizeDist>().is_err());
        assert!("1G".parse::<SizeDist>().is_err());
    }

    #[test]
    fn templates() {
        let t: Template = "rcpt{n}-{r}@dest{d}.k{k}.test".parse().unwrap();
        let mut s = String::new();
        t.render(&Vars { message: 7, recipient: 2, domain: 3, thread: 1 }, &mut s);
        assert_eq!(s, "rcpt7-2@dest3.k1.test");
        assert!(t.uses_domain());
        assert!("a{x}@b".parse::<Template>().is_err());
        assert!("a{n@b".parse::<Template>().is_err());
        assert!("a b@c".parse::<Template>().is_err());
        assert!("<a@b>".parse::<Template>().is_err());
    }

    #[test]
    fn messages_have_exact_sizes_and_valid_lines() {
        for size in [0u64, 10, 300, 400, 401, 402, 1024, 1025, 4096, 10_000, 100_000] {
            let mut f = MessageFactory::new(spec(&size.to_string(), 2, 3), 1, 42);
            let mut env = Envelope::default();
            let mut msg = Vec::new();
            f.build(5, 1_700_000_000_000_000, &mut env, &mut msg);
            let header_end = memchr::memmem::find(&msg, b"\r\n\r\n").unwrap() + 4;
            if size as usize >= header_end + 2 {
                assert_eq!(msg.len() as u64, size, "size {size}");
            } else {
                assert_eq!(msg.len(), header_end + 2, "size {size}");
            }
            assert_eq!(env.size, msg.len() as u64);
            assert!(msg.ends_with(b"\r\n"));
            for line in msg.split(|&b| b == b'\n') {
                assert!(line.len() <= 998, "line too long");
                assert!(!line.starts_with(b"."), "no dot-stuffing needed for generated text");
                assert!(!line.contains(&b'\r') || line.ends_with(b"\r"), "bare CR");
            }
            let text = String::from_utf8(msg.clone()).unwrap();
            assert!(text.starts_with("X-Ringload-Id: abc123.5\r\nX-Ringload-Sent: 1700000000000000\r\n"));
            assert!(text.contains("\r\nFrom: <load5@example.test>\r\n"));
            assert!(text.contains("\r\nTo: <rcpt0.5@dest1.test>,\r\n <rcpt1.5@dest2.test>\r\n"));
            assert!(text.contains("\r\nDate: "));
            assert!(text.contains("\r\nMessage-ID: <abc123.5@ringload.invalid>\r\n"));
            assert_eq!(env.from, "load5@example.test");
            assert_eq!(env.recipients(), ["rcpt0.5@dest1.test", "rcpt1.5@dest2.test"]);
        }
    }

    #[test]
    fn buffers_are_reused_and_recipient_count_shrinks() {
        let mut f = MessageFactory::new(spec("2k", 3, 1), 0, 1);
        let mut env = Envelope::default();
        let mut msg = Vec::new();
        f.build(1, 1, &mut env, &mut msg);
        let cap = msg.capacity();
        f.build(2, 2, &mut env, &mut msg);
        assert_eq!(msg.capacity(), cap);
        assert_eq!(env.recipients().len(), 3);
        env.set_recipients(&["a@b"]);
        assert_eq!(env.recipients(), ["a@b"]);
    }

    #[test]
    fn fixed_message_files_are_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.eml");
        std::fs::write(&p, b"Subject: x\n\n.leading dot\nlast").unwrap();
        let fixed = MessageSpec::load_fixed(&p).unwrap();
        assert_eq!(fixed, b"Subject: x\r\n\r\n.leading dot\r\nlast\r\n");
    }
}
