//! Spool appends with group commit on a real file: many concurrent appenders share one
//! fdatasync. Reports messages per second for 1 KiB messages at several concurrencies, with
//! fsync = batch and, as the no-durability baseline, fsync = never.
#![allow(clippy::disallowed_methods)] // a benchmark times itself

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringrelay::config::FsyncMode;
use ringrelay::smtp::envelope::{Envelope, QueueId, Recipient};
use ringrelay::spool::{Spool, SpoolOptions, core_dir, recover};

fn append_many(fsync: FsyncMode, concurrency: usize, per_task: usize) -> Duration {
    let tmp = tempfile::tempdir().unwrap();
    let opts = SpoolOptions {
        dir: core_dir(tmp.path(), 0),
        core: 0,
        fsync,
        segment_bytes: 256 << 20,
        max_messages: 0,
        max_bytes: 0,
        min_free_disk: 0,
        gate: None,
    };
    tokio_uring::start(async move {
        let own = recover(&opts.dir, 0).unwrap();
        let (spool, _) = Spool::open(opts, own, Vec::new()).unwrap();
        let body = Arc::new(vec![b'x'; 1024]);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let spool = spool.clone();
            let body = Arc::clone(&body);
            tasks.push(tokio_uring::spawn(async move {
                let mut env = Envelope {
                    sender: "a@example.test".into(),
                    recipients: vec![Recipient { address: "b@dest.test".into(), ..Recipient::default() }],
                    ..Envelope::default()
                };
                for i in 0..per_task {
                    env.queue_id = QueueId(((t * per_task + i) as u64) << 8);
                    spool.append(&env, &body).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let took = start.elapsed();
        assert_eq!(spool.stats().live_messages as usize, concurrency * per_task);
        spool.close().await;
        took
    })
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("spool_append_1k");
    g.sample_size(10);
    for fsync in [FsyncMode::Batch, FsyncMode::Never] {
        for conc in [1usize, 16, 64] {
            let per_task = 2000 / conc;
            g.throughput(Throughput::Elements((conc * per_task) as u64));
            g.bench_with_input(BenchmarkId::new(format!("{fsync:?}").to_lowercase(), conc), &conc, |b, &conc| {
                b.iter_custom(|iters| (0..iters).map(|_| append_many(fsync, conc, per_task)).sum())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
