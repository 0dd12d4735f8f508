//! The DATA scanner (memchr) against a naive byte-at-a-time scanner, by input shape: typical
//! text lines, long lines, lines that need unstuffing. Each bench first checks that both
//! engines agree (a benchmark that computes the wrong thing fast proves nothing).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringrelay::smtp::scanner::{BareLf, DataScanner};
use std::hint::black_box;

/// Byte-at-a-time reference: unstuffs, stops at CRLF.CRLF. Returns the body length.
fn naive(input: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut line_start = true;
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if line_start && b == b'.' {
            if input[i..].starts_with(b".\r\n") {
                return out.len();
            }
            i += 1;
            line_start = false;
            continue;
        }
        out.push(b);
        line_start = b == b'\n';
        i += 1;
    }
    out.len()
}

fn memchr_scan(input: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut s = DataScanner::new(u64::MAX, BareLf::Reject);
    let step = s.feed(input, out);
    assert!(step.done);
    out.len()
}

fn shapes() -> Vec<(&'static str, Vec<u8>)> {
    let mut text = Vec::new();
    for i in 0..20_000 {
        text.extend_from_slice(format!("line {i} of a typical notification message body, with text\r\n").as_bytes());
    }
    let mut long = Vec::new();
    for _ in 0..64 {
        long.extend_from_slice(&[b'x'; 16_000]);
        long.extend_from_slice(b"\r\n");
    }
    let mut dots = Vec::new();
    for i in 0..20_000 {
        dots.extend_from_slice(format!("..stuffed line {i}\r\n").as_bytes());
    }
    for v in [&mut text, &mut long, &mut dots] {
        v.extend_from_slice(b".\r\n");
    }
    vec![("text_lines_1mib", text), ("long_lines_1mib", long), ("dot_lines", dots)]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("data_scanner");
    let mut a = Vec::new();
    let mut b = Vec::new();
    for (shape, input) in shapes() {
        assert_eq!(memchr_scan(&input, &mut a), naive(&input, &mut b), "{shape}");
        assert_eq!(a, b, "{shape}: both engines must produce the same body");
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_with_input(BenchmarkId::new("memchr", shape), &input, |bench, i| {
            bench.iter(|| memchr_scan(black_box(i), &mut a))
        });
        g.bench_with_input(BenchmarkId::new("naive", shape), &input, |bench, i| {
            bench.iter(|| naive(black_box(i), &mut b))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
