//! The spool of one SMTP core at run time: appends, group commit, outcomes, segment rotation,
//! deletion and compaction. `Spool` is `!Send` (per-core `Rc` state, no locks); the writer is a
//! task on the core's tokio-uring runtime. Format and crash analysis: `spool/mod.rs`.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::recovery::{Recovered, RecoveredMessage};
use super::{COMPACT_AFTER, SEGMENT_HEADER_BYTES, SpoolRef, record, segment_header, segment_path};
use crate::config::FsyncMode;
use crate::smtp::envelope::{Envelope, QueueId};

/// How a spool runs.
#[derive(Clone)]
pub struct SpoolOptions {
    /// This core's directory, `<spool.dir>/core-<n>`.
    pub dir: PathBuf,
    /// The SMTP core number.
    pub core: u16,
    /// When to sync.
    pub fsync: FsyncMode,
    /// Segment size before rotation.
    pub segment_bytes: u64,
    /// Backpressure: live messages (0 = no limit).
    pub max_messages: u64,
    /// Backpressure: bytes on disk (0 = no limit).
    pub max_bytes: u64,
    /// Backpressure: free space on the file system.
    pub min_free_disk: u64,
    /// Tests only: the writer takes a permit before writing each batch, so a test can hold
    /// commits back and show that nothing is acknowledged meanwhile.
    #[doc(hidden)]
    pub gate: Option<Arc<tokio::sync::Semaphore>>,
}

/// Why an append was not made durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolError {
    /// Writing or syncing failed; the message is not stored.
    Io(String),
    /// The spool is shutting down.
    Closed,
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::Io(e) => write!(f, "spool write failed: {e}"),
            SpoolError::Closed => f.write_str("spool is shutting down"),
        }
    }
}

/// Figures for metrics and backpressure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Messages with recipients not finished.
    pub live_messages: u64,
    /// Bytes in segment files.
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Batches written (each one write, and one sync unless fsync = never or DONE-only).
    pub batches: u64,
    /// Syncs done.
    pub syncs: u64,
    /// Of those, whole-file syncs (`fdatasync` after unsynced DONE-only writes) rather than
    /// O_DSYNC range writes.
    pub file_syncs: u64,
    /// Synced writes that grew the file (and so wrote zeros ahead, `ZERO_AHEAD`).
    pub grows: u64,
}

/// One core's spool. Cheap to clone (shared per-core state).
#[derive(Clone)]
pub struct Spool {
    inner: Rc<Inner>,
}

struct Inner {
    opts: SpoolOptions,
    state: RefCell<State>,
    /// Wakes the writer task when a batch is waiting.
    wake_writer: Notify,
    /// Wakes appenders when a batch completed.
    durable: Notify,
}

struct Segment {
    path: PathBuf,
    /// Read-only handle shared with delivery.
    file: Arc<File>,
    live: u32,
    bytes: u64,
}

struct Live {
    segment: u64,
    offset: u64,
    len: u32,
    pending: u32,
    /// Finished recipients of a partly finished message (for compaction's DONE record).
    finished: Vec<u32>,
}

struct PendingMessage {
    queue_id: QueueId,
    offset_in_batch: u64,
    len: u32,
    recipients: u32,
    /// A copy made by compaction (the message is already live in an older segment).
    relocated: bool,
}

struct Batch {
    no: u64,
    bytes: Vec<u8>,
    messages: Vec<PendingMessage>,
    /// No more records go into this batch (fsync = always: one message per batch).
    sealed: bool,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    current: u64,
    /// Current segment, for io_uring writes that need no sync (DONE-only batches, or
    /// `fsync = never`).
    writer: Rc<tokio_uring::fs::File>,
    /// Current segment opened with O_DSYNC: a write through it completes only once durable,
    /// so a message batch costs one operation instead of a write and an fdatasync.
    writer_dsync: Option<Rc<tokio_uring::fs::File>>,
    /// Current segment, for truncation after a failed write.
    writer_std: File,
    offset: u64,
    /// Bytes of the current segment were written without a sync (a DONE-only batch). An
    /// O_DSYNC write makes only its own range durable, so the next batch that must be durable
    /// syncs the whole file instead: an acknowledged record never follows bytes that a crash
    /// could turn into a torn record, which would make recovery stop before it.
    unsynced: bool,
    /// Size of the current segment file: `offset` plus zeros written ahead of it. Overwriting
    /// those zeros leaves the file size alone, so a synced write need not also write the inode
    /// (an O_DSYNC append that grows the file costs a second device write for its new size).
    allocated: u64,
    live: HashMap<QueueId, Live>,
    batches: VecDeque<Batch>,
    spare_buffers: Vec<Vec<u8>>,
    next_batch: u64,
    done_batch: u64,
    failed: VecDeque<(u64, String)>,
    bytes_total: u64,
    disk_low: bool,
    disk_checked: Option<Instant>,
    closing: bool,
    /// The batch holding the latest compaction copies.
    compaction_batch: u64,
    stats: SpoolStats,
}

/// Failed batch numbers kept for appenders to find (they look right after waking).
const FAILED_KEEP: usize = 1024;
/// Largest buffer kept for reuse.
const SPARE_BUFFER_MAX: usize = 16 << 20;
/// Zeros written ahead of the data when a synced write grows the file (see `State::allocated`):
/// one size change (inode write) per MiB of spool instead of one per batch.
pub(super) const ZERO_AHEAD: usize = 1 << 20;

impl Spool {
    /// Opens core `opts.core`'s spool from what recovery found in its own directory, adopts the
    /// live messages of `adopted` directories (cores that no longer exist) by copying them into
    /// a fresh segment, and starts the writer task. Must run on a tokio-uring runtime.
    /// Returns the spool and every live message, for delivery.
    pub fn open(
        opts: SpoolOptions,
        own: Recovered,
        adopted: Vec<(PathBuf, Recovered)>,
    ) -> io::Result<(Spool, Vec<RecoveredMessage>)> {
        std::fs::create_dir_all(&opts.dir)?;
        let mut segments = BTreeMap::new();
        let mut bytes_total = 0;
        for s in &own.segments {
            bytes_total += s.bytes;
            segments
                .insert(s.seq, Segment { path: s.path.clone(), file: Arc::clone(&s.file), live: 0, bytes: s.bytes });
        }
        let mut live = HashMap::new();
        for m in &own.messages {
            if let Some(seg) = segments.get_mut(&m.spool_ref.segment) {
                seg.live += 1;
            }
            live.insert(
                m.envelope.queue_id,
                Live {
                    segment: m.spool_ref.segment,
                    offset: m.spool_ref.offset,
                    len: m.spool_ref.len,
                    pending: m.pending.len() as u32,
                    finished: m.finished.clone(),
                },
            );
        }
        // Always start a fresh segment: never append after bytes a crash may have left.
        let current = own.segments.last().map_or(1, |s| s.seq + 1);
        let (writer_std, file) = create_segment_sync(&opts.dir, opts.core, current)?;
        let mut offset = SEGMENT_HEADER_BYTES as u64;
        bytes_total += offset;
        // Adoption: copy the orphans' live messages here, synced, before their files go.
        let mut recovered = own.messages;
        if !adopted.is_empty() {
            let mut buf = Vec::new();
            let mut placed = Vec::new();
            for (_, rec) in &adopted {
                for m in &rec.messages {
                    let raw = m.spool_ref.read()?;
                    let at = offset + buf.len() as u64;
                    buf.extend_from_slice(&raw);
                    if !m.finished.is_empty() {
                        record::encode_done(&mut buf, m.envelope.queue_id, &m.finished);
                    }
                    placed.push((m, at, raw.len() as u32));
                }
            }
            let mut w = &writer_std;
            w.write_all(&buf)?;
            writer_std.sync_data()?;
            offset += buf.len() as u64;
            bytes_total += buf.len() as u64;
            for (m, at, len) in placed {
                live.insert(
                    m.envelope.queue_id,
                    Live {
                        segment: current,
                        offset: at,
                        len,
                        pending: m.pending.len() as u32,
                        finished: m.finished.clone(),
                    },
                );
                let mut m = m.clone();
                m.spool_ref = SpoolRef {
                    file: Arc::clone(&file),
                    core: opts.core,
                    segment: current,
                    offset: at,
                    len,
                    queue_id: m.envelope.queue_id,
                };
                recovered.push(m);
            }
            for (dir, _) in &adopted {
                std::fs::remove_dir_all(dir)?;
            }
            sync_dir(opts.dir.parent().unwrap_or(Path::new(".")))?;
        }
        let current_live = recovered.iter().filter(|m| m.spool_ref.segment == current).count() as u32;
        segments.insert(
            current,
            Segment { path: segment_path(&opts.dir, current), file, live: current_live, bytes: offset },
        );
        let writer = Rc::new(tokio_uring::fs::File::from_std(writer_std.try_clone()?));
        let writer_dsync = match opts.fsync {
            FsyncMode::Never => None,
            _ => Some(Rc::new(open_dsync(&segment_path(&opts.dir, current))?)),
        };
        let stats = SpoolStats { live_messages: live.len() as u64, bytes: bytes_total, ..SpoolStats::default() };
        let state = State {
            segments,
            current,
            writer,
            writer_dsync,
            writer_std,
            unsynced: false,
            allocated: offset,
            offset,
            live,
            batches: VecDeque::new(),
            spare_buffers: Vec::new(),
            next_batch: 1,
            done_batch: 0,
            failed: VecDeque::new(),
            bytes_total,
            disk_low: false,
            disk_checked: None,
            closing: false,
            compaction_batch: 0,
            stats,
        };
        let spool = Spool {
            inner: Rc::new(Inner {
                opts,
                state: RefCell::new(state),
                wake_writer: Notify::new(),
                durable: Notify::new(),
            }),
        };
        let task = spool.clone();
        tokio_uring::spawn(async move { task.writer_loop().await });
        Ok((spool, recovered))
    }

    /// Appends a message and waits until it is durable (per `fsync`). The returned reference
    /// is what delivery reads the message through.
    pub async fn append(&self, envelope: &Envelope, message: &[u8]) -> Result<SpoolRef, SpoolError> {
        let no = {
            let mut st = self.inner.state.borrow_mut();
            if st.closing {
                return Err(SpoolError::Closed);
            }
            let always = self.inner.opts.fsync == FsyncMode::Always;
            let batch = st.open_batch();
            let offset_in_batch = batch.bytes.len() as u64;
            let len = record::encode_message(&mut batch.bytes, envelope, message);
            batch.messages.push(PendingMessage {
                queue_id: envelope.queue_id,
                offset_in_batch,
                len: u32::try_from(len).unwrap_or(u32::MAX),
                recipients: envelope.recipients.len() as u32,
                relocated: false,
            });
            batch.sealed = always;
            batch.no
        };
        self.inner.wake_writer.notify_one();
        loop {
            let notified = self.inner.durable.notified();
            {
                let st = self.inner.state.borrow();
                if st.done_batch >= no {
                    if let Some((_, why)) = st.failed.iter().find(|(b, _)| *b == no) {
                        return Err(SpoolError::Io(why.clone()));
                    }
                    let live = st.live.get(&envelope.queue_id).ok_or(SpoolError::Closed)?;
                    let seg = st.segments.get(&live.segment).ok_or(SpoolError::Closed)?;
                    return Ok(SpoolRef {
                        file: Arc::clone(&seg.file),
                        core: self.inner.opts.core,
                        segment: live.segment,
                        offset: live.offset,
                        len: live.len,
                        queue_id: envelope.queue_id,
                    });
                }
            }
            notified.await;
        }
    }

    /// Records that these recipients of `queue_id` are finished (delivered, or failed and
    /// reported). The DONE record rides with the next batch; no sync is forced for it.
    pub fn record_finished(&self, queue_id: QueueId, rcpts: &[u32]) {
        if rcpts.is_empty() {
            return;
        }
        {
            let mut st = self.inner.state.borrow_mut();
            let State { live, segments, .. } = &mut *st;
            let Some(l) = live.get_mut(&queue_id) else { return };
            l.pending = l.pending.saturating_sub(rcpts.len() as u32);
            let gone = l.pending == 0;
            if gone {
                if let Some(seg) = segments.get_mut(&l.segment) {
                    seg.live = seg.live.saturating_sub(1);
                }
                live.remove(&queue_id);
            } else {
                l.finished.extend_from_slice(rcpts);
            }
            st.stats.live_messages = st.live.len() as u64;
            let batch = st.open_batch();
            record::encode_done(&mut batch.bytes, queue_id, rcpts);
        }
        self.inner.wake_writer.notify_one();
    }

    /// Is the spool over a backpressure limit (messages, bytes, free disk)?
    pub fn over_limits(&self) -> bool {
        let st = self.inner.state.borrow();
        let o = &self.inner.opts;
        (o.max_messages > 0 && st.live.len() as u64 >= o.max_messages)
            || (o.max_bytes > 0 && st.bytes_total >= o.max_bytes)
            || st.disk_low
    }

    /// Current figures.
    pub fn stats(&self) -> SpoolStats {
        let st = self.inner.state.borrow();
        SpoolStats {
            live_messages: st.live.len() as u64,
            bytes: st.bytes_total,
            segments: st.segments.len() as u64,
            ..st.stats
        }
    }

    /// Is this message still live here?
    pub fn is_live(&self, queue_id: QueueId) -> bool {
        self.inner.state.borrow().live.contains_key(&queue_id)
    }

    /// Writes what is pending, syncs, and stops the writer. Later appends fail with `Closed`.
    pub async fn close(&self) {
        self.inner.state.borrow_mut().closing = true;
        self.inner.wake_writer.notify_one();
        loop {
            let notified = self.inner.durable.notified();
            {
                let st = self.inner.state.borrow();
                if st.batches.is_empty() && st.done_batch + 1 >= st.next_batch {
                    break;
                }
            }
            notified.await;
        }
        let writer = Rc::clone(&self.inner.state.borrow().writer);
        let _ = writer.sync_data().await;
    }

    async fn writer_loop(&self) {
        loop {
            let batch = self.inner.state.borrow_mut().batches.pop_front();
            let Some(batch) = batch else {
                if self.inner.state.borrow().closing {
                    self.inner.durable.notify_waiters();
                    return;
                }
                self.inner.wake_writer.notified().await;
                continue;
            };
            self.write_batch(batch).await;
            self.after_batch().await;
        }
    }

    async fn write_batch(&self, batch: Batch) {
        if let Some(gate) = &self.inner.opts.gate
            && let Ok(permit) = gate.acquire().await
        {
            permit.forget();
        }
        let Batch { no, mut bytes, messages, .. } = batch;
        let needs_sync = self.inner.opts.fsync != FsyncMode::Never && !messages.is_empty();
        let len = bytes.len() as u64;
        let (writer, base, sync_file, grows) = {
            let st = self.inner.state.borrow();
            // A synced write that would grow the file also writes zeros ahead (`ZERO_AHEAD`), in
            // the same operation: the next batches then overwrite zeros within the file's size.
            let grows = needs_sync && st.offset + len > st.allocated;
            // After unsynced bytes, a range sync is not enough: write plainly, then sync the file.
            let sync_file = needs_sync && st.unsynced;
            let w = match (&st.writer_dsync, needs_sync && !sync_file) {
                (Some(d), true) => Rc::clone(d),
                _ => Rc::clone(&st.writer),
            };
            (w, st.offset, sync_file, grows)
        };
        if grows {
            bytes.resize(bytes.len() + ZERO_AHEAD, 0);
        }
        let written = bytes.len() as u64;
        // Through the O_DSYNC descriptor, the write returns once the data is durable.
        let (mut result, bytes) = writer.write_all_at(bytes, base).await;
        if sync_file && result.is_ok() {
            result = writer.sync_data().await;
        }
        let mut st = self.inner.state.borrow_mut();
        st.stats.batches += 1;
        if needs_sync {
            st.stats.syncs += 1;
        }
        if sync_file {
            st.stats.file_syncs += 1;
        }
        if grows {
            st.stats.grows += 1;
        }
        match result {
            Ok(()) => {
                if needs_sync {
                    st.unsynced = false;
                } else if self.inner.opts.fsync != FsyncMode::Never {
                    st.unsynced = true;
                }
                st.offset = base + len;
                st.allocated = st.allocated.max(base + written);
                st.bytes_total += len;
                let current = st.current;
                if let Some(seg) = st.segments.get_mut(&current) {
                    seg.bytes += len;
                }
                for m in messages {
                    st.place(m, current, base);
                }
            }
            Err(e) => {
                tracing::error!(core = self.inner.opts.core, error = %e, "spool write failed; the batch's messages are refused with 451");
                // Cut what may have been written, so the next batch starts at a record boundary.
                let _ = st.writer_std.set_len(base);
                st.allocated = base;
                st.unsynced = self.inner.opts.fsync != FsyncMode::Never;
                st.failed.push_back((no, e.to_string()));
                if st.failed.len() > FAILED_KEEP {
                    st.failed.pop_front();
                }
            }
        }
        st.done_batch = no;
        st.stats.live_messages = st.live.len() as u64;
        let mut bytes = bytes;
        if bytes.capacity() <= SPARE_BUFFER_MAX {
            bytes.clear();
            st.spare_buffers.push(bytes);
        }
        drop(st);
        self.inner.durable.notify_waiters();
    }

    /// Rotation, deletion, compaction and the free-disk check, between batches.
    async fn after_batch(&self) {
        let rotate = self.inner.state.borrow().offset >= self.inner.opts.segment_bytes;
        if rotate && let Err(e) = self.rotate().await {
            tracing::error!(core = self.inner.opts.core, error = %e, "cannot start a new spool segment; continuing in the current one");
        }
        self.delete_finished();
        self.compact();
        self.check_disk();
    }

    async fn rotate(&self) -> io::Result<()> {
        let (dir, core, seq) = {
            let st = self.inner.state.borrow();
            (self.inner.opts.dir.clone(), self.inner.opts.core, st.current + 1)
        };
        let path = segment_path(&dir, seq);
        let std = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
        let uring = tokio_uring::fs::File::from_std(std.try_clone()?);
        let header = segment_header(core, seq, crate::clock::unix_ms()).to_vec();
        let (res, _) = uring.write_all_at(header, 0).await;
        res?;
        uring.sync_all().await?;
        let dir_file = tokio_uring::fs::File::from_std(File::open(&dir)?);
        dir_file.sync_all().await?;
        let reader = Arc::new(File::open(&path)?);
        let dsync = match self.inner.opts.fsync {
            FsyncMode::Never => None,
            _ => Some(Rc::new(open_dsync(&path)?)),
        };
        let mut st = self.inner.state.borrow_mut();
        st.segments.insert(seq, Segment { path, file: reader, live: 0, bytes: SEGMENT_HEADER_BYTES as u64 });
        st.current = seq;
        st.writer = Rc::new(uring);
        st.writer_dsync = dsync;
        st.writer_std = std;
        st.unsynced = false;
        st.allocated = SEGMENT_HEADER_BYTES as u64;
        st.offset = SEGMENT_HEADER_BYTES as u64;
        st.bytes_total += SEGMENT_HEADER_BYTES as u64;
        Ok(())
    }

    /// Deletes finished segments, oldest first, stopping at the first with live messages.
    fn delete_finished(&self) {
        let mut st = self.inner.state.borrow_mut();
        while let Some((&seq, seg)) = st.segments.iter().next() {
            if seq == st.current || seg.live > 0 {
                break;
            }
            if let Err(e) = std::fs::remove_file(&seg.path) {
                tracing::warn!(path = %seg.path.display(), error = %e, "cannot delete finished spool segment");
                break;
            }
            let bytes = seg.bytes;
            st.segments.remove(&seq);
            st.bytes_total = st.bytes_total.saturating_sub(bytes);
        }
    }

    /// Moves the live messages of the oldest segment forward once too many sealed segments
    /// are kept alive by a few stragglers.
    fn compact(&self) {
        let mut st = self.inner.state.borrow_mut();
        if st.segments.len() <= COMPACT_AFTER + 1 || st.done_batch < st.compaction_batch {
            return; // few segments, or the previous move is not written yet
        }
        let Some((&oldest, seg)) = st.segments.iter().next() else { return };
        if oldest == st.current || seg.live == 0 {
            return;
        }
        let file = Arc::clone(&seg.file);
        let movers: Vec<(QueueId, u64, u32, Vec<u32>)> = st
            .live
            .iter()
            .filter(|(_, l)| l.segment == oldest)
            .map(|(id, l)| (*id, l.offset, l.len, l.finished.clone()))
            .collect();
        let mut moved = 0;
        for (queue_id, offset, len, finished) in movers {
            let mut raw = vec![0u8; len as usize];
            if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(&*file, &mut raw, offset) {
                tracing::error!(%queue_id, error = %e, "cannot read a spool record to move it forward");
                continue;
            }
            let batch = st.open_batch();
            let offset_in_batch = batch.bytes.len() as u64;
            batch.bytes.extend_from_slice(&raw);
            if !finished.is_empty() {
                record::encode_done(&mut batch.bytes, queue_id, &finished);
            }
            batch.messages.push(PendingMessage { queue_id, offset_in_batch, len, recipients: 0, relocated: true });
            moved += 1;
        }
        if moved > 0 {
            st.compaction_batch = st.next_batch - 1;
        }
        drop(st);
        if moved > 0 {
            tracing::info!(core = self.inner.opts.core, segment = oldest, moved, "moving long-queued messages forward");
            self.inner.wake_writer.notify_one();
        }
    }

    fn check_disk(&self) {
        let mut st = self.inner.state.borrow_mut();
        let now = crate::clock::now();
        if st.disk_checked.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        st.disk_checked = Some(now);
        let min = self.inner.opts.min_free_disk;
        if min == 0 {
            return;
        }
        if let Some(free) = free_bytes(&self.inner.opts.dir) {
            let low = free < min;
            if low != st.disk_low {
                if low {
                    tracing::warn!(free, min, "spool disk space low: refusing new mail with 452 4.3.1");
                } else {
                    tracing::info!(free, "spool disk space recovered");
                }
            }
            st.disk_low = low;
        }
    }
}

impl State {
    /// The batch new records go into.
    fn open_batch(&mut self) -> &mut Batch {
        let needs_new = self.batches.back().is_none_or(|b| b.sealed);
        if needs_new {
            let no = self.next_batch;
            self.next_batch += 1;
            let bytes = self.spare_buffers.pop().unwrap_or_default();
            self.batches.push_back(Batch { no, bytes, messages: Vec::new(), sealed: false });
        }
        match self.batches.back_mut() {
            Some(b) => b,
            None => unreachable!("a batch was just pushed"),
        }
    }

    /// A message of a written batch is now durable at `base + offset_in_batch` of `segment`.
    fn place(&mut self, m: PendingMessage, segment: u64, base: u64) {
        let offset = base + m.offset_in_batch;
        match m.relocated {
            false => {
                self.live.insert(
                    m.queue_id,
                    Live { segment, offset, len: m.len, pending: m.recipients, finished: Vec::new() },
                );
                if let Some(seg) = self.segments.get_mut(&segment) {
                    seg.live += 1;
                }
            }
            true => {
                // Moved forward: only if it is still live (it may have finished meanwhile).
                let Some(l) = self.live.get_mut(&m.queue_id) else { return };
                let old = l.segment;
                l.segment = segment;
                l.offset = offset;
                if let Some(seg) = self.segments.get_mut(&old) {
                    seg.live = seg.live.saturating_sub(1);
                }
                if let Some(seg) = self.segments.get_mut(&segment) {
                    seg.live += 1;
                }
            }
        }
    }
}

/// Creates a segment with its header, synced, and its directory entry synced.
/// Returns (read-write handle, shared read-only handle).
fn create_segment_sync(dir: &Path, core: u16, seq: u64) -> io::Result<(File, Arc<File>)> {
    let path = segment_path(dir, seq);
    let mut f = OpenOptions::new().read(true).write(true).create_new(true).open(&path)?;
    f.write_all(&segment_header(core, seq, crate::clock::unix_ms()))?;
    f.sync_all()?;
    sync_dir(dir)?;
    Ok((f, Arc::new(File::open(&path)?)))
}

/// Opens a segment for O_DSYNC writes (a second open, not a dup: O_DSYNC is a property of the
/// open file description, and the plain descriptor must stay without it).
fn open_dsync(path: &Path) -> io::Result<tokio_uring::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new().write(true).custom_flags(libc::O_DSYNC).open(path)?;
    Ok(tokio_uring::fs::File::from_std(f))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Free bytes for unprivileged users on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is a plain C struct of integers, for which all-zero bytes are valid.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}
