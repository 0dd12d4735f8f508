//! The three scanners against their oracle-level invariants, on raw bytes and on bytes folded
//! into the alphabet that matters (CR, LF, '.'), so the fuzzer reaches the deep states: the
//! DATA scanner (one true end of data, split-independence), the command-line scanner (the same
//! lines however the input is split, never more than the limit held) and BDAT chunks (the same
//! body however chunks and reads are cut).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringrelay::smtp::scanner::{BareLf, BdatScanner, DataScanner, Line, LineScanner};

const MAX_LINE: usize = 512;

/// Lines (`Some(line, bare_lf)`) and over-long lines (`None`), fed as the runtime does: what a
/// step does not consume stays buffered in front of the next read.
fn lines(input: &[u8], cut: usize) -> Vec<Option<(Vec<u8>, bool)>> {
    let mut s = LineScanner::new(MAX_LINE);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for part in [&input[..cut], &input[cut..]] {
        buf.extend_from_slice(part);
        loop {
            match s.next(&buf) {
                Line::Complete { line, bare_lf, consumed } => {
                    assert!(consumed <= MAX_LINE);
                    out.push(Some((line.to_vec(), bare_lf)));
                    buf.drain(..consumed);
                }
                Line::TooLong { consumed } => {
                    out.push(None);
                    buf.drain(..consumed);
                }
                Line::NeedMore { consumed } => {
                    buf.drain(..consumed);
                    assert!(buf.len() < MAX_LINE, "holds {} bytes of one line", buf.len());
                    break;
                }
            }
        }
    }
    out
}

/// BDAT: `input` as two chunks meeting at `cut`, each read in two parts split in its middle.
fn bdat(input: &[u8], cut: usize, mode: BareLf) -> (Vec<u8>, bool, bool) {
    let mut s = BdatScanner::new(u64::MAX, mode);
    let mut body = Vec::new();
    for chunk in [&input[..cut], &input[cut..]] {
        s.start_chunk(chunk.len() as u64);
        let mid = chunk.len() / 2;
        assert_eq!(s.feed(&chunk[..mid], &mut body).consumed, mid);
        let mut rest = chunk[mid..].to_vec();
        rest.extend_from_slice(b"BDAT 1\r\n");
        let step = s.feed(&rest, &mut body);
        assert_eq!((step.consumed, step.done), (chunk.len() - mid, true));
    }
    let v = s.finish();
    (body, v.bare_lf, v.bare_cr)
}

fn check_lines_and_bdat(input: &[u8], split: usize) {
    let cut = split % (input.len() + 1);
    assert_eq!(lines(input, cut), lines(input, input.len()));
    for mode in [BareLf::Reject, BareLf::Normalize] {
        assert_eq!(bdat(input, cut, mode), bdat(input, input.len(), mode));
    }
}

fn check(input: &[u8], split: usize) {
    for mode in [BareLf::Reject, BareLf::Normalize] {
        let mut whole = DataScanner::new(u64::MAX, mode);
        let mut body_whole = Vec::new();
        let w = whole.feed(input, &mut body_whole);
        let mut parts = DataScanner::new(u64::MAX, mode);
        let mut body_parts = Vec::new();
        let cut = split % (input.len() + 1);
        let a = parts.feed(&input[..cut], &mut body_parts);
        let (done, consumed) = if a.done {
            (true, a.consumed)
        } else {
            let b = parts.feed(&input[cut..], &mut body_parts);
            (b.done, cut + b.consumed)
        };
        assert_eq!((w.done, w.consumed), (done, consumed));
        assert_eq!(body_whole, body_parts);
        if w.done {
            // The only end of data is the literal CRLF.CRLF (or .CRLF at the very start).
            let mut full = b"\r\n".to_vec();
            full.extend_from_slice(&input[..w.consumed]);
            assert!(full.ends_with(b"\r\n.\r\n"));
            assert_eq!(full.windows(5).position(|x| x == b"\r\n.\r\n"), Some(full.len() - 5));
        }
        let v = whole.verdict();
        if mode == BareLf::Reject && !v.bare_lf && !v.bare_cr {
            // A clean body has only CRLF line ends.
            for (i, &b) in body_whole.iter().enumerate() {
                if b == b'\n' {
                    assert!(i > 0 && body_whole[i - 1] == b'\r');
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(0) as usize;
    check(data, split);
    check_lines_and_bdat(data, split);
    let folded: Vec<u8> = data.iter().map(|b| match b % 5 { 0 => b'\r', 1 => b'\n', 2 => b'.', 3 => b'a', _ => *b }).collect();
    check(&folded, split);
    check_lines_and_bdat(&folded, split);
});
