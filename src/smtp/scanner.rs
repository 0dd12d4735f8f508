//! Framing of the inbound byte stream, with memchr: command lines (bounded by
//! `max_command_line`), DATA bodies (dot-unstuffing and the one true end of data,
//! `<CRLF>.<CRLF>`), and BDAT chunks (exact byte counts). Owns the SMTP-smuggling defence:
//! bare CR and bare LF are detected everywhere in message data and never end it.
//! Knows nothing of commands or replies; the session decides what a line means.
//!
//! All three scanners keep the state that spans reads inside themselves, so the way the input
//! is split into reads is a non-event (checked against a naive oracle by property tests).

use memchr::{memchr, memchr2};

/// What to do with a bare LF in message data (`bare_line_feed` in the connector).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BareLf {
    /// Detect it and have the message refused at end of data.
    #[default]
    Reject,
    /// Turn it into CRLF (legacy devices). End of data still needs the literal `<CRLF>.<CRLF>`.
    Normalize,
}

/// One step of command-line framing.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line, without its line ending. `bare_lf` when it ended in LF alone.
    Complete {
        /// The line without CRLF (or LF).
        line: &'a [u8],
        /// The line ended in a bare LF.
        bare_lf: bool,
        /// Bytes of input used, line ending included.
        consumed: usize,
    },
    /// An over-long line ended; its bytes were dropped. The session replies `500 5.5.2`.
    TooLong {
        /// Bytes of input used.
        consumed: usize,
    },
    /// No complete line yet. `consumed` bytes (of an over-long line) may be dropped; the rest
    /// must be kept and offered again with more input behind them.
    NeedMore {
        /// Bytes of input used.
        consumed: usize,
    },
}

/// Splits command lines, refusing lines longer than `max_line` octets (CRLF included)
/// without ever buffering more than that.
#[derive(Debug, Clone)]
pub struct LineScanner {
    max_line: usize,
    /// Inside an over-long line: drop bytes up to and including the next LF.
    discarding: bool,
}

impl LineScanner {
    /// A scanner for lines of at most `max_line` octets, line ending included.
    pub fn new(max_line: usize) -> LineScanner {
        assert!(max_line >= 512, "RFC 5321 4.5.3.1.4: command lines of 512 octets must fit");
        LineScanner { max_line, discarding: false }
    }

    /// The longest line, CRLF included. A reader must be able to offer this many bytes.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Frames the next line at the start of `input`.
    pub fn next<'a>(&mut self, input: &'a [u8]) -> Line<'a> {
        if self.discarding {
            return match memchr(b'\n', input) {
                Some(i) => {
                    self.discarding = false;
                    Line::TooLong { consumed: i + 1 }
                }
                None => Line::NeedMore { consumed: input.len() },
            };
        }
        let window = &input[..input.len().min(self.max_line)];
        match memchr(b'\n', window) {
            Some(i) => {
                let bare_lf = i == 0 || input[i - 1] != b'\r';
                let end = if bare_lf { i } else { i - 1 };
                Line::Complete { line: &input[..end], bare_lf, consumed: i + 1 }
            }
            None if input.len() >= self.max_line => {
                // No line ending within the limit: the line is too long whatever follows.
                self.discarding = true;
                match self.next(&input[self.max_line..]) {
                    Line::TooLong { consumed } => Line::TooLong { consumed: self.max_line + consumed },
                    Line::NeedMore { consumed } => Line::NeedMore { consumed: self.max_line + consumed },
                    Line::Complete { .. } => unreachable!("discarding never yields a line"),
                }
            }
            None => Line::NeedMore { consumed: 0 },
        }
    }
}

/// Where message bytes go: the body buffer, up to a size limit. Past the limit the bytes are
/// counted but not kept, so an over-size message costs no memory while it is drained.
#[derive(Debug, Clone)]
struct BodySink {
    size: u64,
    size_max: u64,
    overflow: bool,
}

impl BodySink {
    fn emit(&mut self, body: &mut Vec<u8>, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.size += bytes.len() as u64;
        if self.overflow {
            return;
        }
        if self.size > self.size_max {
            self.overflow = true;
            body.clear();
            return;
        }
        body.extend_from_slice(bytes);
    }
}

/// Result of feeding message data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataStep {
    /// Bytes of input used. After `done`, bytes beyond this belong to the next command.
    pub consumed: usize,
    /// The end of the data was reached.
    pub done: bool,
}

/// What the data looked like, once it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataVerdict {
    /// Message size as stored (after unstuffing and normalisation).
    pub size: u64,
    /// The size went over the limit; the body buffer holds nothing usable.
    pub too_big: bool,
    /// A bare LF was seen (normalised to CRLF when `BareLf::Normalize`).
    pub bare_lf: bool,
    /// A bare CR was seen. Never normalised: always refused.
    pub bare_cr: bool,
}

impl DataVerdict {
    /// The message must be refused for its line endings.
    pub fn refuse_line_endings(&self, mode: BareLf) -> bool {
        self.bare_cr || (self.bare_lf && mode == BareLf::Reject)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// Inside a line.
    InLine,
    /// The previous input ended with a CR inside a line (already emitted).
    Cr,
    /// At a line start. `genuine`: the line start follows a literal CRLF (or the DATA
    /// command), so a `.CRLF` line here ends the data. After a bare LF it does not.
    LineStart { genuine: bool },
    /// A dot at a line start was seen and dropped.
    Dot { genuine: bool },
    /// A dot then a CR at a line start; the CR is held, not emitted.
    DotCr { genuine: bool },
}

/// DATA body framing (RFC 5321 4.1.1.4 and 4.5.2): unstuffs leading dots and stops at the
/// literal `<CRLF>.<CRLF>`, which is the only end of data (the DATA command's own CRLF counts
/// as the first CRLF). `\n.\n`, `\n.\r\n`, `\r\n.\n`, `\r.\r` and friends are message content.
#[derive(Debug, Clone)]
pub struct DataScanner {
    state: DataState,
    sink: BodySink,
    mode: BareLf,
    bare_lf: bool,
    bare_cr: bool,
}

impl DataScanner {
    /// A scanner at the start of a message body of at most `size_max` bytes.
    pub fn new(size_max: u64, mode: BareLf) -> DataScanner {
        DataScanner {
            state: DataState::LineStart { genuine: true },
            sink: BodySink { size: 0, size_max, overflow: false },
            mode,
            bare_lf: false,
            bare_cr: false,
        }
    }

    /// What the data looked like so far (complete once `feed` returned `done`).
    pub fn verdict(&self) -> DataVerdict {
        DataVerdict { size: self.sink.size, too_big: self.sink.overflow, bare_lf: self.bare_lf, bare_cr: self.bare_cr }
    }

    /// Feeds body bytes; appends the unstuffed message to `body`.
    pub fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> DataStep {
        let len = input.len();
        let mut i = 0;
        // input[run..i] is content not yet appended: appended in one copy when the stream
        // needs a change (a dropped dot, a normalised LF) or the input ends.
        let mut run = 0;
        while i < len {
            match self.state {
                DataState::InLine => match memchr2(b'\r', b'\n', &input[i..]) {
                    None => i = len,
                    Some(off) => {
                        let p = i + off;
                        if input[p] == b'\r' {
                            match input.get(p + 1) {
                                Some(b'\n') => {
                                    i = p + 2;
                                    self.state = DataState::LineStart { genuine: true };
                                }
                                Some(_) => {
                                    self.bare_cr = true;
                                    i = p + 1;
                                }
                                None => {
                                    i = p + 1;
                                    self.state = DataState::Cr;
                                }
                            }
                        } else {
                            self.bare_lf = true;
                            if self.mode == BareLf::Normalize {
                                self.sink.emit(body, &input[run..p]);
                                self.sink.emit(body, b"\r\n");
                                run = p + 1;
                            }
                            i = p + 1;
                            self.state = DataState::LineStart { genuine: false };
                        }
                    }
                },
                DataState::Cr => {
                    if input[i] == b'\n' {
                        i += 1;
                        self.state = DataState::LineStart { genuine: true };
                    } else {
                        self.bare_cr = true;
                        self.state = DataState::InLine;
                    }
                }
                DataState::LineStart { genuine } => {
                    if input[i] == b'.' {
                        self.sink.emit(body, &input[run..i]);
                        i += 1;
                        run = i;
                        self.state = DataState::Dot { genuine };
                    } else {
                        self.state = DataState::InLine;
                    }
                }
                DataState::Dot { genuine } => {
                    if input[i] == b'\r' {
                        i += 1;
                        run = i; // the CR is held until we know what follows it
                        self.state = DataState::DotCr { genuine };
                    } else {
                        self.state = DataState::InLine;
                    }
                }
                DataState::DotCr { genuine } => {
                    if input[i] == b'\n' {
                        i += 1;
                        if genuine {
                            // The held CR, the LF and the dot are the end marker, not content.
                            self.state = DataState::LineStart { genuine: true };
                            return DataStep { consumed: i, done: true };
                        }
                        // `.CRLF` after a bare LF: an (unstuffed) empty line, not the end.
                        self.sink.emit(body, b"\r\n");
                        run = i;
                        self.state = DataState::LineStart { genuine: true };
                    } else {
                        self.bare_cr = true;
                        self.sink.emit(body, b"\r");
                        self.state = DataState::InLine;
                    }
                }
            }
        }
        self.sink.emit(body, &input[run..len]);
        DataStep { consumed: len, done: false }
    }
}

/// BDAT chunk framing (RFC 3030): exactly `size` octets, no dot-stuffing. The content is still
/// checked for bare CR and bare LF (normalised or refused as for DATA): we do not offer
/// BINARYMIME, so a message must be CRLF-canonical, and it may leave by DATA.
#[derive(Debug, Clone)]
pub struct BdatScanner {
    remaining: u64,
    sink: BodySink,
    mode: BareLf,
    /// The last byte fed was a CR whose LF has not been seen yet.
    pending_cr: bool,
    bare_lf: bool,
    bare_cr: bool,
}

impl BdatScanner {
    /// A scanner for a message of at most `size_max` bytes, before its first chunk.
    pub fn new(size_max: u64, mode: BareLf) -> BdatScanner {
        BdatScanner {
            remaining: 0,
            sink: BodySink { size: 0, size_max, overflow: false },
            mode,
            pending_cr: false,
            bare_lf: false,
            bare_cr: false,
        }
    }

    /// Starts a chunk of `size` octets.
    pub fn start_chunk(&mut self, size: u64) {
        debug_assert_eq!(self.remaining, 0);
        self.remaining = size;
    }

    /// Octets of the current chunk still to come.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// Ends the message: a CR left at the very end is a bare CR.
    pub fn finish(&mut self) -> DataVerdict {
        if self.pending_cr {
            self.pending_cr = false;
            self.bare_cr = true;
        }
        DataVerdict { size: self.sink.size, too_big: self.sink.overflow, bare_lf: self.bare_lf, bare_cr: self.bare_cr }
    }

    /// Feeds chunk bytes; `done` when the chunk is complete.
    pub fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> DataStep {
        let take = (self.remaining.min(input.len() as u64)) as usize;
        let chunk = &input[..take];
        self.remaining -= take as u64;
        let mut run = 0;
        let mut i = 0;
        if self.pending_cr && !chunk.is_empty() {
            self.pending_cr = false;
            if chunk[0] == b'\n' {
                i = 1;
            } else {
                self.bare_cr = true;
            }
        }
        while let Some(off) = memchr2(b'\r', b'\n', &chunk[i..]) {
            let p = i + off;
            if chunk[p] == b'\r' {
                match chunk.get(p + 1) {
                    Some(b'\n') => i = p + 2,
                    Some(_) => {
                        self.bare_cr = true;
                        i = p + 1;
                    }
                    None => {
                        self.pending_cr = true;
                        i = p + 1;
                    }
                }
            } else {
                self.bare_lf = true;
                if self.mode == BareLf::Normalize {
                    self.sink.emit(body, &chunk[run..p]);
                    self.sink.emit(body, b"\r\n");
                    run = p + 1;
                }
                i = p + 1;
            }
        }
        self.sink.emit(body, &chunk[run..]);
        DataStep { consumed: take, done: self.remaining == 0 }
    }
}

/// The named SMTP-smuggling vectors (bare CR or LF around a dot), for the scanner's and the
/// session's tests: put between message text and a forged command, none may end the data.
#[cfg(test)]
pub(crate) const SMUGGLING_VECTORS: &[&[u8]] = &[
    b"\n.\r\n",
    b"\r\n.\n",
    b"\n.\n",
    b"\n..\n",
    b"\r.\r",
    b"\r\n.\r",
    b"\r.\r\n",
    b"\n.\r",
    b"\r\n.\r\r\n",
    b"\n\n.\n\n",
    b"\r\n.\n.\r\n",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The oracle: obviously correct, byte at a time, whole input at once.
    /// Returns (body, consumed, bare_lf, bare_cr) or None when the data does not end.
    fn naive_data(input: &[u8], mode: BareLf) -> Option<(Vec<u8>, usize, bool, bool)> {
        let mut full = b"\r\n".to_vec();
        full.extend_from_slice(input);
        let end = full.windows(5).position(|w| w == b"\r\n.\r\n")?;
        let data = &full[2..end + 2];
        let consumed = end + 5 - 2;
        let mut body = Vec::new();
        let (mut bare_lf, mut bare_cr) = (false, false);
        for (k, &b) in data.iter().enumerate() {
            let line_start = k == 0 || data[k - 1] == b'\n';
            if line_start && b == b'.' {
                continue;
            }
            if b == b'\n' && (k == 0 || data[k - 1] != b'\r') {
                bare_lf = true;
                if mode == BareLf::Normalize {
                    body.extend_from_slice(b"\r\n");
                    continue;
                }
            }
            // A CR is bare unless an LF follows; the end marker's CRLF follows the data.
            if b == b'\r' && data.get(k + 1).copied().unwrap_or(b'\n') != b'\n' {
                bare_cr = true;
            }
            body.push(b);
        }
        Some((body, consumed, bare_lf, bare_cr))
    }

    fn feed_chunked(input: &[u8], cuts: &[usize], mode: BareLf) -> Option<(Vec<u8>, usize, bool, bool)> {
        let mut s = DataScanner::new(u64::MAX, mode);
        let mut body = Vec::new();
        let mut pos = 0;
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.sort_unstable();
        bounds.push(input.len());
        for b in bounds {
            if b < pos {
                continue;
            }
            let step = s.feed(&input[pos..b], &mut body);
            pos += step.consumed;
            if step.done {
                let v = s.verdict();
                assert_eq!(v.size, body.len() as u64);
                return Some((body, pos, v.bare_lf, v.bare_cr));
            }
            assert_eq!(pos, b, "data scanner must consume all input until the end");
        }
        None
    }

    fn data_alphabet() -> impl Strategy<Value = Vec<u8>> {
        // Mostly the bytes that matter, so the interesting sequences turn up often.
        proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), any::<u8>()], 0..200)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn data_scanner_matches_oracle_for_any_split(
            input in data_alphabet(),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            normalize in any::<bool>(),
        ) {
            let mode = if normalize { BareLf::Normalize } else { BareLf::Reject };
            prop_assert_eq!(feed_chunked(&input, &cuts, mode), naive_data(&input, mode));
        }

        #[test]
        fn line_scanner_matches_oracle(
            density in 3u16..700,
            input in proptest::collection::vec(any::<u16>(), 0..1600),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            // Line endings one byte in `density`: short lines and over-long (> 512) ones.
            let input: Vec<u8> = input
                .iter()
                .map(|&b| match b % density { 0 => b'\n', 1 => b'\r', _ => b'a' })
                .collect();
            prop_assert_eq!(lines_chunked(&input, &cuts), naive_lines(&input, 512));
        }

        #[test]
        fn bdat_matches_oracle(
            input in data_alphabet(),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
            normalize in any::<bool>(),
        ) {
            let mode = if normalize { BareLf::Normalize } else { BareLf::Reject };
            prop_assert_eq!(bdat_chunked(&input, &cuts, mode), naive_bdat(&input, mode));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn data_scanner_every_single_split(input in data_alphabet()) {
            let whole = naive_data(&input, BareLf::Reject);
            for cut in 0..=input.len() {
                prop_assert_eq!(&feed_chunked(&input, &[cut], BareLf::Reject), &whole);
            }
        }

        #[test]
        fn data_scanner_every_single_split_normalize(input in data_alphabet()) {
            let whole = naive_data(&input, BareLf::Normalize);
            for cut in 0..=input.len() {
                prop_assert_eq!(&feed_chunked(&input, &[cut], BareLf::Normalize), &whole);
            }
        }

        #[test]
        fn bdat_every_single_split(input in data_alphabet(), normalize in any::<bool>()) {
            let mode = if normalize { BareLf::Normalize } else { BareLf::Reject };
            let whole = naive_bdat(&input, mode);
            for cut in 0..=input.len() {
                // Two chunks meeting at the cut, and one chunk read in two parts split there.
                prop_assert_eq!(&bdat_chunked(&input, &[cut], mode), &whole, "two chunks at {}", cut);
                prop_assert_eq!(&bdat_one_chunk_split(&input, cut, mode), &whole, "one chunk read at {}", cut);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]
        #[test]
        fn line_scanner_every_single_split(
            density in 3u16..700,
            input in proptest::collection::vec(any::<u16>(), 0..700),
        ) {
            let input: Vec<u8> = input
                .iter()
                .map(|&b| match b % density { 0 => b'\n', 1 => b'\r', _ => b'a' })
                .collect();
            let whole = naive_lines(&input, 512);
            for cut in 0..=input.len() {
                prop_assert_eq!(&lines_chunked(&input, &[cut]), &whole, "cut at {}", cut);
            }
        }
    }

    /// Lines of every length around the limit, each at every split: the edge a random input
    /// rarely hits exactly (509..=514 octets with CRLF, or the same with a bare LF).
    #[test]
    fn line_scanner_limit_edges_at_every_split() {
        for len in 509..=514 {
            for ending in [&b"\r\n"[..], b"\n"] {
                let mut input = vec![b'a'; len - ending.len()];
                input.extend_from_slice(ending);
                input.extend_from_slice(b"NOOP\r\n");
                let whole = naive_lines(&input, 512);
                assert_eq!(whole.len(), 2);
                for cut in 0..=input.len() {
                    assert_eq!(lines_chunked(&input, &[cut]), whole, "len {len} cut at {cut}");
                }
            }
        }
    }

    #[derive(Debug, PartialEq)]
    enum L {
        Ok(Vec<u8>, bool),
        Long,
    }

    /// Oracle for command lines: split after every LF; too long when over `max` with its ending.
    fn naive_lines(input: &[u8], max: usize) -> Vec<L> {
        let mut out = Vec::new();
        let mut start = 0;
        for (i, &b) in input.iter().enumerate() {
            if b == b'\n' {
                let line = &input[start..=i];
                if line.len() > max {
                    out.push(L::Long);
                } else if line.len() >= 2 && line[line.len() - 2] == b'\r' {
                    out.push(L::Ok(line[..line.len() - 2].to_vec(), false));
                } else {
                    out.push(L::Ok(line[..line.len() - 1].to_vec(), true));
                }
                start = i + 1;
            }
        }
        out
    }

    /// Feeds lines the way the runtime does: unconsumed bytes stay in a buffer.
    fn lines_chunked(input: &[u8], cuts: &[usize]) -> Vec<L> {
        let mut s = LineScanner::new(512);
        let mut out = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.sort_unstable();
        bounds.push(input.len());
        let mut pos = 0;
        for b in bounds {
            if b < pos {
                continue;
            }
            buf.extend_from_slice(&input[pos..b]);
            pos = b;
            loop {
                match s.next(&buf) {
                    Line::Complete { line, bare_lf, consumed } => {
                        out.push(L::Ok(line.to_vec(), bare_lf));
                        buf.drain(..consumed);
                    }
                    Line::TooLong { consumed } => {
                        out.push(L::Long);
                        buf.drain(..consumed);
                    }
                    Line::NeedMore { consumed } => {
                        buf.drain(..consumed);
                        assert!(buf.len() < 512, "never buffers a whole over-long line");
                        break;
                    }
                }
            }
        }
        out
    }

    fn naive_bdat(input: &[u8], mode: BareLf) -> (Vec<u8>, bool, bool) {
        let mut body = Vec::new();
        let (mut bare_lf, mut bare_cr) = (false, false);
        for (k, &b) in input.iter().enumerate() {
            if b == b'\n' && (k == 0 || input[k - 1] != b'\r') {
                bare_lf = true;
                if mode == BareLf::Normalize {
                    body.extend_from_slice(b"\r\n");
                    continue;
                }
            }
            if b == b'\r' && input.get(k + 1) != Some(&b'\n') {
                bare_cr = true;
            }
            body.push(b);
        }
        (body, bare_lf, bare_cr)
    }

    /// BDAT: the input is sent as several chunks (cut points), each fed in two reads.
    fn bdat_chunked(input: &[u8], cuts: &[usize], mode: BareLf) -> (Vec<u8>, bool, bool) {
        let mut s = BdatScanner::new(u64::MAX, mode);
        let mut body = Vec::new();
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        bounds.sort_unstable();
        bounds.push(input.len());
        let mut pos = 0;
        for b in bounds {
            if b < pos {
                continue;
            }
            s.start_chunk((b - pos) as u64);
            let mid = pos + (b - pos) / 2;
            let first = s.feed(&input[pos..mid], &mut body);
            assert_eq!(first.consumed, mid - pos);
            let mut rest = input[mid..b].to_vec();
            rest.extend_from_slice(b"NEXT COMMAND"); // must not be taken
            let second = s.feed(&rest, &mut body);
            assert_eq!(second.consumed, b - mid);
            assert!(second.done);
            pos = b;
        }
        let v = s.finish();
        (body, v.bare_lf, v.bare_cr)
    }

    /// BDAT: the whole input as one chunk, read in two parts split at `cut`, with the next
    /// command's bytes behind it (which the scanner must not take).
    fn bdat_one_chunk_split(input: &[u8], cut: usize, mode: BareLf) -> (Vec<u8>, bool, bool) {
        let mut s = BdatScanner::new(u64::MAX, mode);
        let mut body = Vec::new();
        s.start_chunk(input.len() as u64);
        let first = s.feed(&input[..cut], &mut body);
        assert_eq!(first.consumed, cut);
        assert_eq!(first.done, cut == input.len());
        let mut rest = input[cut..].to_vec();
        rest.extend_from_slice(b"BDAT 0 LAST\r\n");
        let second = s.feed(&rest, &mut body);
        assert_eq!((second.consumed, second.done), (input.len() - cut, true));
        let v = s.finish();
        assert_eq!(v.size, body.len() as u64);
        (body, v.bare_lf, v.bare_cr)
    }

    /// The named smuggling vectors in `normalize` mode, at every split: the data ends at the
    /// literal `<CRLF>.<CRLF>` placed after them and nowhere else, and what the vector and the
    /// "commands" behind it hold is kept as content, bare LFs turned into CRLF.
    #[test]
    fn smuggling_vectors_in_normalize_mode_end_only_at_crlf_dot_crlf() {
        for v in SMUGGLING_VECTORS {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(v);
            input.extend_from_slice(b"MAIL FROM:<evil@example.test>\r\n");
            let end = input.len() + 3; // after the `.CRLF` that follows this CRLF
            input.extend_from_slice(b".\r\nQUIT\r\n");
            let name = String::from_utf8_lossy(v);
            let whole = naive_data(&input, BareLf::Normalize).expect("the literal end is there");
            assert_eq!(whole.1, end, "{name:?}: the oracle ends at the literal CRLF.CRLF");
            assert!(whole.0.ends_with(b"MAIL FROM:<evil@example.test>\r\n"), "{name:?}");
            assert!(whole.2 || whole.3, "{name:?} is flagged");
            for cut in 0..=input.len() {
                let got = feed_chunked(&input, &[cut], BareLf::Normalize);
                assert_eq!(got.as_ref(), Some(&whole), "{name:?} cut at {cut}");
            }
            let mut s = DataScanner::new(1 << 20, BareLf::Normalize);
            let mut body = Vec::new();
            s.feed(&input[..end], &mut body);
            let lf_only = !whole.3;
            assert_eq!(!s.verdict().refuse_line_endings(BareLf::Normalize), lf_only, "{name:?}");
            if lf_only {
                assert!(body.windows(2).all(|w| w[1] != b'\n' || w[0] == b'\r'), "{name:?}: LF stored as CRLF");
            }
        }
    }

    /// Named SMTP-smuggling vectors: none of them may end the data early.
    #[test]
    fn smuggling_vectors_never_end_data() {
        for v in SMUGGLING_VECTORS {
            for mode in [BareLf::Reject, BareLf::Normalize] {
                let mut input = b"Subject: x\r\n\r\nbody".to_vec();
                input.extend_from_slice(v);
                input.extend_from_slice(b"MAIL FROM:<evil@example.test>\r\n");
                let mut s = DataScanner::new(1 << 20, mode);
                let mut body = Vec::new();
                let step = s.feed(&input, &mut body);
                assert!(!step.done, "vector {:?} ended the data in {mode:?}", String::from_utf8_lossy(v));
                let v2 = s.verdict();
                assert!(v2.bare_cr || v2.bare_lf, "vector {:?} not flagged", String::from_utf8_lossy(v));
                // Only the literal sequence ends it.
                let step = s.feed(b"\r\n.\r\n", &mut body);
                assert!(step.done);
            }
        }
    }

    #[test]
    fn unstuffing_and_end() {
        let mut s = DataScanner::new(1 << 20, BareLf::Reject);
        let mut body = Vec::new();
        let step = s.feed(b"a\r\n..b\r\n.\r\nQUIT\r\n", &mut body);
        assert_eq!(step, DataStep { consumed: 11, done: true });
        assert_eq!(body, b"a\r\n.b\r\n");
        let v = s.verdict();
        assert!(!v.bare_lf && !v.bare_cr && !v.too_big);
    }

    #[test]
    fn empty_message_ends_at_once() {
        let mut s = DataScanner::new(1 << 20, BareLf::Reject);
        let mut body = Vec::new();
        assert_eq!(s.feed(b".\r\n", &mut body), DataStep { consumed: 3, done: true });
        assert!(body.is_empty());
    }

    #[test]
    fn normalize_turns_bare_lf_into_crlf_but_not_into_an_end() {
        let mut s = DataScanner::new(1 << 20, BareLf::Normalize);
        let mut body = Vec::new();
        let step = s.feed(b"a\nb\n.\nc\r\n.\r\n", &mut body);
        assert!(step.done);
        assert_eq!(body, b"a\r\nb\r\n\r\nc\r\n");
        assert!(!s.verdict().refuse_line_endings(BareLf::Normalize));
        assert!(s.verdict().refuse_line_endings(BareLf::Reject));
    }

    #[test]
    fn oversize_is_counted_not_kept() {
        let mut s = DataScanner::new(10, BareLf::Reject);
        let mut body = Vec::new();
        let step = s.feed(b"0123456789\r\nabcdef\r\n.\r\n", &mut body);
        assert!(step.done);
        assert!(s.verdict().too_big);
        assert!(body.is_empty());
        assert_eq!(s.verdict().size, 20);
    }

    #[test]
    fn line_of_exactly_the_limit_fits_and_one_more_does_not() {
        let mut s = LineScanner::new(512);
        let mut ok = vec![b'a'; 510];
        ok.extend_from_slice(b"\r\n");
        assert!(matches!(s.next(&ok), Line::Complete { consumed: 512, .. }));
        let mut long = vec![b'a'; 511];
        long.extend_from_slice(b"\r\nNOOP\r\n");
        assert_eq!(s.next(&long), Line::TooLong { consumed: 513 });
        assert!(matches!(s.next(&long[513..]), Line::Complete { line: b"NOOP", .. }));
    }
}
