//! The DATA scanner against its oracle-level invariants, on raw bytes and on bytes folded
//! into the alphabet that matters (CR, LF, '.'), so the fuzzer reaches the deep states.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ringrelay::smtp::scanner::{BareLf, DataScanner};

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
    let folded: Vec<u8> = data.iter().map(|b| match b % 5 { 0 => b'\r', 1 => b'\n', 2 => b'.', 3 => b'a', _ => *b }).collect();
    check(&folded, split);
});
