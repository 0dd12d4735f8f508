//! Command parsing: the lines a relay sees most, and worst cases (long paths, many params).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringrelay::smtp::command::{Command, parse};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let lines: Vec<(&str, Vec<u8>)> = vec![
        ("ehlo", b"EHLO client.example.test".to_vec()),
        ("mail", b"MAIL FROM:<notifications@app.example.test> SIZE=10240 BODY=8BITMIME".to_vec()),
        ("rcpt", b"RCPT TO:<user.name@dest.example.test>".to_vec()),
        ("rcpt_dsn", b"RCPT TO:<u@d.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;u+40d.test".to_vec()),
        ("data", b"DATA".to_vec()),
        (
            "long_path",
            format!("MAIL FROM:<{}@{}.{}.{}.test>", "a".repeat(60), "b".repeat(60), "c".repeat(60), "d".repeat(50))
                .into_bytes(),
        ),
    ];
    let mut g = c.benchmark_group("command_parse");
    for (name, line) in &lines {
        // The bench checks its own answer.
        let parsed = parse(line).unwrap();
        assert!(!matches!(parsed, Command::Noop));
        g.throughput(Throughput::Bytes(line.len() as u64));
        g.bench_function(*name, |b| b.iter(|| parse(black_box(line)).is_ok()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
