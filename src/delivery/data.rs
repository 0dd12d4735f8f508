//! The DATA encoder: stored message bytes → what goes on the wire after `354`. Owns the
//! outbound half of the SMTP-smuggling defence (spec section 5): every line ends in CRLF
//! (a bare LF and a bare CR each become CRLF), every line that starts with `.` gets a second
//! `.` (RFC 5321 4.5.2), and the only `<CRLF>.<CRLF>` on the wire is the one `finish` writes.
//! Whatever bytes a message holds, a receiver that splits lines at CRLF, or at LF, or at CR,
//! sees the same lines we meant, and sees the end of the data exactly once, at the end.
//!
//! The encoder keeps the state that spans chunk boundaries (at a line start? was the last byte
//! a CR whose LF may follow?), so a 25 MiB message can be encoded in pieces as the runtime
//! reads it from the spool, with the output buffer reused. Property tests check it against a
//! naive receiver for arbitrary chunkings.
//!
//! Lines longer than 998 octets are passed on as they are: rewrapping would change the message
//! (and its DKIM signature); a receiver that refuses them refuses with a reply we report.

use memchr::memchr2;

/// Encodes message bytes for DATA, in as many chunks as the caller likes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataEncoder {
    /// The next byte starts a line (true at the start: the DATA command ended a line).
    at_line_start: bool,
    /// The last byte seen was a CR (already written as CRLF): an LF right after it is the
    /// same line break, not another one.
    after_cr: bool,
    /// Message bytes taken so far.
    consumed: u64,
}

impl Default for DataEncoder {
    fn default() -> Self {
        DataEncoder::new()
    }
}

impl DataEncoder {
    /// An encoder at the start of a message.
    pub const fn new() -> DataEncoder {
        DataEncoder { at_line_start: true, after_cr: false, consumed: 0 }
    }

    /// The most bytes `encode` can append for `input_len` bytes of input, plus what `finish`
    /// appends: every byte can at worst double (a bare CR, or a `.` opening a line).
    pub const fn encoded_len_max(input_len: usize) -> usize {
        input_len.saturating_mul(2).saturating_add(5)
    }

    /// Message bytes encoded so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Appends the encoding of `chunk` to `out`.
    pub fn encode(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if chunk.is_empty() {
            return;
        }
        self.consumed += chunk.len() as u64;
        // Typical text needs about 1% more; reserving that avoids most regrowth.
        out.reserve(chunk.len() + chunk.len() / 64 + 8);
        let mut i = 0;
        if self.after_cr {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                i = 1; // the LF of a CRLF split across chunks: already written
            }
        }
        while i < chunk.len() {
            if self.at_line_start && chunk[i] == b'.' {
                out.push(b'.');
            }
            self.at_line_start = false;
            let Some(off) = memchr2(b'\r', b'\n', &chunk[i..]) else {
                out.extend_from_slice(&chunk[i..]);
                return;
            };
            let brk = i + off;
            out.extend_from_slice(&chunk[i..brk]);
            out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
            i = brk + 1;
            if chunk[brk] == b'\r' {
                match chunk.get(i) {
                    Some(b'\n') => i += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
    }

    /// Appends the end of the data: `\r\n.\r\n`, or only `.\r\n` when the message already
    /// ended with a line break (an empty message is `.\r\n`: the DATA line's CRLF is the first
    /// CRLF of the end marker, RFC 5321 4.1.1.4). Resets the encoder for the next message.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = DataEncoder::new();
    }
}

/// Encodes a whole message and its end marker into `out` (appending).
pub fn encode_message(message: &[u8], out: &mut Vec<u8>) {
    let mut e = DataEncoder::new();
    e.encode(message, out);
    e.finish(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::scanner::{BareLf, DataScanner};
    use proptest::prelude::*;

    /// The lines a message means: split at CRLF, at a bare CR and at a bare LF; a break at the
    /// very end does not start another line.
    fn naive_lines(message: &[u8]) -> Vec<Vec<u8>> {
        let mut lines = Vec::new();
        let mut cur = Vec::new();
        let mut i = 0;
        while i < message.len() {
            match message[i] {
                b'\r' => {
                    lines.push(std::mem::take(&mut cur));
                    if message.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                }
                b'\n' => lines.push(std::mem::take(&mut cur)),
                b => cur.push(b),
            }
            i += 1;
        }
        if !cur.is_empty() {
            lines.push(cur);
        }
        lines
    }

    /// A naive receiver: splits the wire at CRLF, stops at the first `.` line, removes one
    /// leading dot. Returns the lines and the bytes left after the end marker, or None when
    /// the data never ends. `wire` follows the DATA command's CRLF.
    fn naive_receiver(wire: &[u8]) -> Option<(Vec<Vec<u8>>, Vec<u8>)> {
        let mut lines = Vec::new();
        let mut pos = 0;
        loop {
            let rel = wire[pos..].windows(2).position(|w| w == b"\r\n")?;
            let line = &wire[pos..pos + rel];
            pos += rel + 2;
            if line == b"." {
                return Some((lines, wire[pos..].to_vec()));
            }
            lines.push(line.strip_prefix(b".").unwrap_or(line).to_vec());
        }
    }

    /// A receiver that splits at LF alone (the other half of the smuggling gap).
    fn lf_receiver_ends_early(wire: &[u8]) -> bool {
        let lines: Vec<&[u8]> = wire.split(|&b| b == b'\n').collect();
        let last_real = lines.len().saturating_sub(2); // the end marker's line
        lines[..last_real].iter().any(|l| *l == b"." || *l == b".\r")
    }

    fn encode_chunked(message: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut e = DataEncoder::new();
        let mut out = Vec::new();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (message.len() + 1)).collect();
        bounds.sort_unstable();
        bounds.push(message.len());
        let mut pos = 0;
        for b in bounds {
            e.encode(&message[pos..b], &mut out);
            pos = b;
        }
        assert_eq!(e.consumed(), message.len() as u64);
        e.finish(&mut out);
        out
    }

    fn assert_canonical(wire: &[u8]) {
        for (i, &b) in wire.iter().enumerate() {
            if b == b'\r' {
                assert_eq!(wire.get(i + 1), Some(&b'\n'), "bare CR at {i} in {wire:?}");
            }
            if b == b'\n' {
                assert!(i > 0 && wire[i - 1] == b'\r', "bare LF at {i} in {wire:?}");
            }
        }
    }

    fn check(message: &[u8], cuts: &[usize]) -> Vec<u8> {
        let wire = encode_chunked(message, cuts);
        assert_canonical(&wire);
        assert!(wire.len() <= DataEncoder::encoded_len_max(message.len()));
        let (lines, rest) = naive_receiver(&wire).expect("the data must end");
        assert_eq!(lines, naive_lines(message), "message {message:?} wire {wire:?}");
        assert!(rest.is_empty(), "the end marker must be the last thing written: {wire:?}");
        assert!(!lf_receiver_ends_early(&wire), "an LF-splitting receiver would end early: {wire:?}");
        // Our own server's scanner accepts it as clean CRLF data and ends exactly at the end.
        let mut s = DataScanner::new(u64::MAX, BareLf::Reject);
        let mut body = Vec::new();
        let step = s.feed(&wire, &mut body);
        assert!(step.done && step.consumed == wire.len(), "{wire:?}");
        let v = s.verdict();
        assert!(!v.bare_cr && !v.bare_lf);
        let mut expected = Vec::new();
        for l in naive_lines(message) {
            expected.extend_from_slice(&l);
            expected.extend_from_slice(b"\r\n");
        }
        assert_eq!(body, expected);
        wire
    }

    #[test]
    fn dot_stuffing_and_end() {
        assert_eq!(check(b"a\r\n.b\r\n", &[]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(check(b".", &[]), b"..\r\n.\r\n");
        assert_eq!(check(b"a\r\n.\r\nb", &[]), b"a\r\n..\r\nb\r\n.\r\n");
        assert_eq!(check(b"no final break", &[]), b"no final break\r\n.\r\n");
        assert_eq!(check(b"", &[]), b".\r\n");
        assert_eq!(check(b"\r\n", &[]), b"\r\n.\r\n");
        assert_eq!(check(b"mid.dot\r\n", &[]), b"mid.dot\r\n.\r\n");
    }

    #[test]
    fn bare_line_ends_become_crlf() {
        assert_eq!(check(b"a\nb\rc\r\n", &[]), b"a\r\nb\r\nc\r\n.\r\n");
        assert_eq!(check(b"a\r\r\nb", &[]), b"a\r\n\r\nb\r\n.\r\n");
        assert_eq!(check(b"a\n\rb", &[]), b"a\r\n\r\nb\r\n.\r\n");
    }

    /// The smuggling vectors of the SMTP-smuggling research (and the scanner tests), each with
    /// a command after it: none may end the data early, on any receiver.
    #[test]
    fn smuggling_vectors_never_end_the_data() {
        let vectors: &[&[u8]] = &[
            b"\n.\n",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r",
            b"\r\n.\r",
            b"\r.\r\n",
            b"\n.\r",
            b"\r\n.\r\r\n",
            b"\r\n\x00.\r\n",
            b"\r\n.\r\n",
        ];
        for v in vectors {
            let mut message = b"Subject: x\r\n\r\nbody".to_vec();
            message.extend_from_slice(v);
            message.extend_from_slice(b"MAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\n");
            for cut in 0..=message.len() {
                let wire = check(&message, &[cut]);
                let (lines, _) = naive_receiver(&wire).unwrap();
                assert!(
                    lines.iter().any(|l| l.as_slice() == b"MAIL FROM:<evil@example.test>"),
                    "the smuggled command must stay message content: {v:?}"
                );
            }
        }
    }

    #[test]
    fn state_carries_across_chunks() {
        // CR at the end of one chunk, LF at the start of the next: one line break.
        let mut e = DataEncoder::new();
        let mut out = Vec::new();
        e.encode(b"a\r", &mut out);
        e.encode(b"\n.b", &mut out);
        e.encode(b"", &mut out);
        e.encode(b"\r", &mut out);
        e.encode(b"\r", &mut out);
        e.encode(b".", &mut out);
        e.finish(&mut out);
        assert_eq!(out, b"a\r\n..b\r\n\r\n..\r\n.\r\n");
        // `finish` resets for the next message.
        out.clear();
        e.encode(b".x", &mut out);
        e.finish(&mut out);
        assert_eq!(out, b"..x\r\n.\r\n");
    }

    /// Mostly the bytes that matter (CR, LF, dot), so the interesting sequences turn up often.
    /// Mapped from plain bytes: `prop_oneof!` per byte is ten times slower in debug builds.
    fn message_alphabet() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(|v| {
            v.into_iter()
                .map(|b| match b % 8 {
                    0 | 1 => b'\r',
                    2 | 3 => b'\n',
                    4 => b'.',
                    5 => b'a',
                    _ => b,
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn matches_naive_receiver_for_any_chunking(
            message in message_alphabet(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            check(&message, &cuts);
        }

        #[test]
        fn chunking_never_changes_the_output(
            message in message_alphabet(),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut whole = Vec::new();
            encode_message(&message, &mut whole);
            prop_assert_eq!(encode_chunked(&message, &cuts), whole);
        }
    }
}
