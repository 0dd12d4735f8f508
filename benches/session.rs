//! Whole transactions through the sans-IO session, as the runtime drives it, with the spool's
//! durable acknowledgement faked: the protocol cost per message without I/O.

use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringrelay::smtp::reply::Reply;
use ringrelay::smtp::scanner::BareLf;
use ringrelay::smtp::{Action, Envelope, Host, Output, QueueId, QueueIdGen, Session, SessionConfig};

struct BenchHost(QueueIdGen, String);

impl Host for BenchHost {
    fn now_ms(&self) -> u64 {
        1_764_000_000_000
    }
    fn date_rfc5322(&self) -> String {
        self.1.clone()
    }
    fn write_date_rfc5322(&self, out: &mut Vec<u8>) {
        // As the runtime's host does: copy a cached date, allocate nothing.
        out.extend_from_slice(self.1.as_bytes());
    }
    fn next_queue_id(&mut self) -> QueueId {
        self.0.next(1_764_000_000_000)
    }
    fn check_mail(&mut self, _: &Envelope) -> Result<(), Reply> {
        Ok(())
    }
    fn check_rcpt(&mut self, _: &Envelope, _: &str) -> Result<(), Reply> {
        Ok(())
    }
    fn check_auth(&mut self, _: IpAddr) -> Result<(), Reply> {
        Ok(())
    }
    fn may_send_as(&self, _: &str, _: &str) -> bool {
        true
    }
}

fn message(size: usize) -> Vec<u8> {
    let mut m = b"MAIL FROM:<app@example.test>\r\nRCPT TO:<ops@dest.test>\r\nDATA\r\nSubject: bench\r\n\r\n".to_vec();
    while m.len() < size {
        m.extend_from_slice(b"a line of notification text that is about as long as usual ..\r\n");
    }
    m.extend_from_slice(b".\r\n");
    m
}

/// Runs `n` transactions on one session; returns the number of 2.6.0 replies.
fn run(session: &mut Session, host: &mut BenchHost, input: &[u8], n: usize, out: &mut Output) -> usize {
    let mut queued = 0;
    for _ in 0..n {
        let mut pos = 0;
        while pos < input.len() {
            pos += session.receive(&input[pos..], host, out);
            if out.action == Some(Action::Persist) {
                out.action = None;
                session.persisted(Ok(()), out);
                queued += 1;
            }
        }
        out.wire.clear();
    }
    queued
}

fn bench(c: &mut Criterion) {
    let cfg = Rc::new(SessionConfig {
        hostname: "relay.test".into(),
        connector: "bench".into(),
        max_command_line: 2048,
        max_message_size: 25 << 20,
        max_recipients: 100,
        max_bad_commands: 20,
        bare_lf: BareLf::Reject,
        starttls: false,
        require_tls: false,
        auth: Vec::new(),
        anonymous: true,
    });
    let mut g = c.benchmark_group("session");
    for size in [1024usize, 10 * 1024] {
        let input = message(size);
        let mut host = BenchHost(QueueIdGen::new(0, QueueId(0)), "Tue, 25 Nov 2025 10:00:00 +0000".into());
        let mut s = Session::new(Rc::clone(&cfg), IpAddr::V4(Ipv4Addr::LOCALHOST), false);
        let mut out = Output::default();
        s.receive(b"EHLO bench\r\n", &mut host, &mut out);
        assert_eq!(run(&mut s, &mut host, &input, 10, &mut out), 10, "every transaction is queued");
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("transaction_{}k", size / 1024), |b| {
            b.iter(|| run(&mut s, &mut host, &input, 1, &mut out))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
