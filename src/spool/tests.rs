//! Spool tests: group commit on real files, recovery after a simulated crash at every byte of
//! the tail, outcomes and segment deletion, compaction, adoption of orphan core directories.

use std::collections::BTreeSet;
use std::path::Path;

use super::*;
use crate::config::FsyncMode;
use crate::smtp::envelope::{Envelope, Recipient};

fn options(dir: &Path, core: u16, segment_bytes: u64) -> SpoolOptions {
    SpoolOptions {
        dir: core_dir(dir, core),
        core,
        fsync: FsyncMode::Batch,
        segment_bytes,
        max_messages: 0,
        max_bytes: 0,
        min_free_disk: 0,
        gate: None,
    }
}

fn envelope(id: u64, rcpts: usize) -> Envelope {
    Envelope {
        queue_id: QueueId(id),
        sender: format!("s{id}@example.test"),
        recipients: (0..rcpts).map(|i| Recipient { address: format!("r{i}@d.test"), ..Recipient::default() }).collect(),
        ..Envelope::default()
    }
}

fn body(id: u64, size: usize) -> Vec<u8> {
    let mut b = format!("Subject: message {id}\r\n\r\n").into_bytes();
    while b.len() < size {
        b.extend_from_slice(format!("line of message {id}\r\n").as_bytes());
    }
    b
}

fn open(dir: &Path, core: u16, segment_bytes: u64) -> (Spool, Vec<RecoveredMessage>) {
    let opts = options(dir, core, segment_bytes);
    let own = recover(&opts.dir, core).unwrap();
    Spool::open(opts, own, Vec::new()).unwrap()
}

fn live_ids(dir: &Path, core: u16) -> BTreeSet<u64> {
    recover(&core_dir(dir, core), core).unwrap().messages.iter().map(|m| m.envelope.queue_id.0).collect()
}

#[test]
fn concurrent_appends_share_syncs_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let (spool, recovered) = open(tmp.path(), 0, 64 << 20);
        assert!(recovered.is_empty());
        let mut tasks = Vec::new();
        for id in 1..=200u64 {
            let spool = spool.clone();
            tasks.push(tokio_uring::spawn(async move {
                let r = spool.append(&envelope(id, 2), &body(id, 500)).await.unwrap();
                let raw = r.read().unwrap();
                match record::decode(&raw).unwrap().0 {
                    record::Record::Message { envelope: e, message } => {
                        assert_eq!(e.queue_id, QueueId(id));
                        assert_eq!(message, body(id, 500));
                    }
                    other => panic!("{other:?}"),
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let st = spool.stats();
        assert_eq!(st.live_messages, 200);
        assert!(st.syncs < 200, "group commit: 200 messages took {} syncs", st.syncs);
        spool.close().await;
    });
    assert_eq!(live_ids(tmp.path(), 0), (1..=200).collect());
}

#[test]
fn nothing_is_acknowledged_while_the_commit_is_held() {
    let tmp = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        let mut opts = options(tmp.path(), 0, 64 << 20);
        opts.gate = Some(std::sync::Arc::clone(&gate));
        let own = recover(&opts.dir, 0).unwrap();
        let (spool, _) = Spool::open(opts, own, Vec::new()).unwrap();
        let s2 = spool.clone();
        let task = tokio_uring::spawn(async move { s2.append(&envelope(1, 1), b"x\r\n").await.is_ok() });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!task.is_finished(), "append returned before its batch was written");
        gate.add_permits(1);
        assert!(task.await.unwrap());
    });
}

/// A power loss may zero any range that was written without a sync, and an O_DSYNC write
/// makes only its own range durable. So a message batch that follows a DONE-only write (never
/// synced) must sync the whole file, or a crash could leave a torn record *before* an
/// acknowledged message, and recovery, which stops at the first torn record, would lose it.
#[test]
fn a_durable_batch_after_an_unsynced_one_syncs_the_whole_file() {
    let tmp = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let (spool, _) = open(tmp.path(), 0, 64 << 20);
        spool.append(&envelope(1, 2), b"x\r\n").await.unwrap();
        spool.append(&envelope(2, 1), b"y\r\n").await.unwrap();
        assert_eq!(spool.stats().file_syncs, 0, "nothing unsynced yet: range syncs suffice");
        spool.record_finished(QueueId(1), &[0]);
        // Let the writer write the DONE-only batch on its own, without a sync.
        for _ in 0..100 {
            if spool.stats().batches == 3 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let st = spool.stats();
        assert_eq!((st.batches, st.syncs), (3, 2), "the DONE-only batch is written unsynced: {st:?}");
        spool.append(&envelope(3, 1), b"z\r\n").await.unwrap();
        let st = spool.stats();
        assert_eq!((st.syncs, st.file_syncs), (3, 1), "the next durable batch syncs the file: {st:?}");
        spool.append(&envelope(4, 1), b"w\r\n").await.unwrap();
        assert_eq!(spool.stats().file_syncs, 1, "then range syncs again");
        spool.close().await;
    });
    assert_eq!(live_ids(tmp.path(), 0), [1, 2, 3, 4].into_iter().collect());
}

/// Synced writes overwrite zeros written ahead of them, so most of them do not change the file
/// size (which would cost a second device write, for the inode). The zeros are the end of the
/// records for recovery, in the newest segment and in sealed ones, never damage.
#[test]
fn zeros_written_ahead_spare_size_changes_and_are_not_damage() {
    let tmp = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let (spool, _) = open(tmp.path(), 0, 1 << 20);
        for id in 1..=300u64 {
            spool.append(&envelope(id, 1), &body(id, 10_000)).await.unwrap();
        }
        let st = spool.stats();
        assert!(st.segments >= 3, "rotated: {st:?}");
        // About 3 MB in 1 MiB segments: a grow at the start of each segment and once per MiB.
        assert!(st.syncs >= 300 && st.grows <= 2 * st.segments, "{st:?}");
        spool.close().await;
    });
    let dir = core_dir(tmp.path(), 0);
    let segs: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    let padded = segs.iter().filter(|p| std::fs::read(p).unwrap().ends_with(&[0u8; 4096])).count();
    assert!(padded >= 2, "sealed segments end in zeros: {padded} of {}", segs.len());
    let rec = recover(&dir, 0).unwrap();
    assert!(rec.damage.is_empty(), "zeros ahead are not damage: {:?}", rec.damage);
    assert_eq!(rec.messages.len(), 300);
}

#[test]
fn outcomes_delete_finished_segments_and_survive_restart() {
    let tmp = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let (spool, _) = open(tmp.path(), 0, 1 << 20);
        for id in 1..=100u64 {
            spool.append(&envelope(id, 2), &body(id, 40_000)).await.unwrap();
        }
        assert!(spool.stats().segments >= 3, "small segments rotate: {:?}", spool.stats());
        for id in 1..=100u64 {
            spool.record_finished(QueueId(id), &[0]);
            if id != 77 {
                spool.record_finished(QueueId(id), &[1]);
            }
        }
        // One more message, so the DONE records are written with a (whole-file) sync behind them.
        spool.append(&envelope(101, 1), b"x\r\n").await.unwrap();
        assert_eq!(spool.stats().live_messages, 2);
        spool.close().await;
    });
    let rec = recover(&core_dir(tmp.path(), 0), 0).unwrap();
    let live: Vec<_> = rec.messages.iter().map(|m| (m.envelope.queue_id.0, m.pending.clone())).collect();
    assert_eq!(live, vec![(77, vec![1]), (101, vec![0])]);
    assert!(rec.segments.len() <= COMPACT_AFTER + 2, "finished segments deleted: {}", rec.segments.len());
}

#[test]
fn crash_at_every_byte_of_the_tail_loses_only_the_unsynced_record() {
    let tmp = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let (spool, _) = open(tmp.path(), 0, 64 << 20);
        for id in 1..=3u64 {
            spool.append(&envelope(id, 1), &body(id, 300)).await.unwrap();
        }
        spool.close().await;
    });
    let dir = core_dir(tmp.path(), 0);
    let rec = recover(&dir, 0).unwrap();
    let seg = rec.segments.last().unwrap().path.clone();
    let full = std::fs::read(&seg).unwrap();
    let last = &rec.messages[2].spool_ref;
    let start = last.offset as usize;
    for cut in start..full.len() {
        let crash = tempfile::tempdir().unwrap();
        let cdir = core_dir(crash.path(), 0);
        std::fs::create_dir_all(&cdir).unwrap();
        std::fs::write(cdir.join(seg.file_name().unwrap()), &full[..cut]).unwrap();
        let got = live_ids(crash.path(), 0);
        assert_eq!(got, BTreeSet::from([1, 2]), "cut at {cut}");
        // The torn tail was cut off, so the file ends at a record boundary.
        assert_eq!(std::fs::metadata(cdir.join(seg.file_name().unwrap())).unwrap().len() as usize, start);
    }
    // Zero-filled garbage after the last record (a preallocated or half-written block).
    let crash = tempfile::tempdir().unwrap();
    let cdir = core_dir(crash.path(), 0);
    std::fs::create_dir_all(&cdir).unwrap();
    let mut zeroed = full.clone();
    zeroed.extend_from_slice(&[0u8; 4096]);
    std::fs::write(cdir.join(seg.file_name().unwrap()), &zeroed).unwrap();
    let rec = recover(&cdir, 0).unwrap();
    assert_eq!(rec.messages.len(), 3);
    assert!(rec.damage.is_empty(), "zeros after the last record are not damage: {:?}", rec.damage);
}

#[test]
fn restart_continues_in_a_new_segment_with_higher_ids() {
    let tmp = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let (spool, _) = open(tmp.path(), 0, 64 << 20);
        spool.append(&envelope(5, 1), b"a\r\n").await.unwrap();
        // no close: a crash
    });
    let rec = recover(&core_dir(tmp.path(), 0), 0).unwrap();
    assert_eq!(rec.max_queue_id, QueueId(5));
    tokio_uring::start(async {
        let (spool, recovered) = open(tmp.path(), 0, 64 << 20);
        assert_eq!(recovered.len(), 1);
        assert_eq!(recovered[0].spool_ref.read().unwrap().len(), recovered[0].spool_ref.len as usize);
        spool.append(&envelope(6, 1), b"b\r\n").await.unwrap();
        spool.close().await;
    });
    assert_eq!(live_ids(tmp.path(), 0), BTreeSet::from([5, 6]));
    assert_eq!(recover(&core_dir(tmp.path(), 0), 0).unwrap().segments.len(), 2);
}

#[test]
fn stragglers_are_moved_forward_so_old_segments_go() {
    let tmp = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let (spool, _) = open(tmp.path(), 0, 1 << 20);
        // Message 1 never finishes; everything after it does.
        spool.append(&envelope(1, 1), &body(1, 1000)).await.unwrap();
        for id in 2..=400u64 {
            spool.append(&envelope(id, 1), &body(id, 30_000)).await.unwrap();
            spool.record_finished(QueueId(id), &[0]);
        }
        let st = spool.stats();
        assert!(st.segments <= (COMPACT_AFTER + 3) as u64, "segments pinned by one straggler: {st:?}");
        spool.close().await;
    });
    assert_eq!(live_ids(tmp.path(), 0), BTreeSet::from([1]));
}

#[test]
fn orphan_core_directories_are_adopted() {
    let tmp = tempfile::tempdir().unwrap();
    tokio_uring::start(async {
        let (spool, _) = open(tmp.path(), 3, 64 << 20);
        spool.append(&envelope(31, 2), b"orphan\r\n").await.unwrap();
        spool.record_finished(QueueId(31), &[1]);
        spool.append(&envelope(32, 1), b"orphan2\r\n").await.unwrap();
        spool.close().await;
    });
    tokio_uring::start(async {
        let opts = options(tmp.path(), 0, 64 << 20);
        let own = recover(&opts.dir, 0).unwrap();
        let orphan_dir = core_dir(tmp.path(), 3);
        let orphan = recover(&orphan_dir, 3).unwrap();
        let (spool, recovered) = Spool::open(opts, own, vec![(orphan_dir.clone(), orphan)]).unwrap();
        assert!(!orphan_dir.exists());
        let got: Vec<_> = recovered.iter().map(|m| (m.envelope.queue_id.0, m.pending.clone())).collect();
        assert_eq!(got, vec![(31, vec![0]), (32, vec![0])]);
        assert_eq!(recovered[1].spool_ref.core, 0);
        spool.close().await;
    });
    let rec = recover(&core_dir(tmp.path(), 0), 0).unwrap();
    let got: Vec<_> = rec.messages.iter().map(|m| (m.envelope.queue_id.0, m.pending.clone())).collect();
    assert_eq!(got, vec![(31, vec![0]), (32, vec![0])]);
}
