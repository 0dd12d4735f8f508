//! The log files: one writer thread for the whole process owns every tracking and protocol
//! log file (opening, daily and size rotation, retention), and each core owns a `LogBuffer`
//! that it appends lines to and hands over, whole, every flush tick (100 ms) or once it holds
//! `FLUSH_BYTES`.
//!
//! Why a thread and plain `write(2)`, not io_uring writes on each core: the cores never wait
//! for the log disk at all (a hand-off is a channel send of a filled `Vec`), a slow or full log
//! disk costs log lines (counted in `ringrelay_log_dropped_bytes_total`), never SMTP latency,
//! and rotation, `readdir` and `unlink` for retention happen in one place. Buffered regular-file
//! writes through io_uring are mostly executed by io-wq kernel workers anyway; the hand-off
//! keeps the same property without an owned-buffer dance per core. The log is not fsynced:
//! it is an operator's record, not the durability mechanism (the spool is).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

/// A core hands its buffer over once it holds this much, without waiting for the tick.
pub const FLUSH_BYTES: usize = 64 * 1024;
/// Buffers in flight to the writer thread at most (× up to `FLUSH_BYTES` and a bit each):
/// past it a core drops its buffer rather than grow memory without bound.
const CHUNKS_IN_FLIGHT_MAX: usize = 1024;
/// How often old files are looked for.
const RETENTION_SWEEP_EVERY_MS: u64 = 10 * 60 * 1000;

/// Which log a line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// `<spool.dir>/tracking/*.jsonl`.
    Tracking,
    /// `<spool.dir>/protocol/*.log`.
    Protocol,
}

impl LogKind {
    /// The directory under the spool directory.
    pub fn dir_name(self) -> &'static str {
        match self {
            LogKind::Tracking => "tracking",
            LogKind::Protocol => "protocol",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            LogKind::Tracking => "jsonl",
            LogKind::Protocol => "log",
        }
    }
}

/// Counters of the writer (the dropped count is written by any core, on the failure path only).
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Bytes lost: the writer was behind, or a write failed.
    pub dropped_bytes: AtomicU64,
    /// Write, open or rotation errors.
    pub errors: AtomicU64,
}

struct Chunk {
    kind: LogKind,
    source: Arc<str>,
    bytes: Vec<u8>,
}

/// The sending side, cloned into every core's buffers.
#[derive(Clone)]
pub struct LogSender {
    tx: Sender<Chunk>,
    stats: Arc<WriterStats>,
}

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// `spool.dir`.
    pub spool_dir: PathBuf,
    /// Files not written for this long are deleted.
    pub retention: Duration,
    /// A file is rotated once it reaches this size.
    pub max_file_size: u64,
}

/// Starts the writer thread. It ends once every `LogSender` is dropped and it has written what
/// it was sent.
pub fn start(opts: WriterOptions, stats: Arc<WriterStats>) -> Result<(LogSender, JoinHandle<()>), String> {
    for kind in [LogKind::Tracking, LogKind::Protocol] {
        let dir = opts.spool_dir.join(kind.dir_name());
        std::fs::create_dir_all(&dir).map_err(|e| {
            format!("cannot create {}: {e}; make spool.dir writable by ringrelay's user", dir.display())
        })?;
    }
    let (tx, rx) = crossbeam_channel::bounded(CHUNKS_IN_FLIGHT_MAX);
    let thread_stats = Arc::clone(&stats);
    let handle = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || run(opts, rx, &thread_stats))
        .map_err(|e| format!("cannot start the log writer thread: {e}"))?;
    Ok((LogSender { tx, stats }, handle))
}

struct OpenFile {
    day: String,
    seq: u32,
    size: u64,
    path: PathBuf,
    file: File,
}

fn run(opts: WriterOptions, rx: Receiver<Chunk>, stats: &WriterStats) {
    let mut files: HashMap<(LogKind, Arc<str>), OpenFile> = HashMap::new();
    let mut last_sweep = 0u64;
    loop {
        let now = crate::clock::unix_ms();
        if now.saturating_sub(last_sweep) >= RETENTION_SWEEP_EVERY_MS {
            last_sweep = now;
            let open: Vec<PathBuf> = files.values().map(|f| f.path.clone()).collect();
            sweep(&opts, now, &open);
        }
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(chunk) => write_chunk(&opts, &mut files, chunk, stats, crate::clock::unix_ms()),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
}

/// Appends `c` to its source's file for the day of `now_ms` (Unix ms, UTC), opening a new
/// file when the day has changed or the current one is full.
fn write_chunk(
    opts: &WriterOptions,
    files: &mut HashMap<(LogKind, Arc<str>), OpenFile>,
    c: Chunk,
    stats: &WriterStats,
    now_ms: u64,
) {
    let day = day_of(now_ms);
    let key = (c.kind, Arc::clone(&c.source));
    let rotate = files.get(&key).is_some_and(|f| f.day != day || f.size >= opts.max_file_size);
    if rotate && let Some(old) = files.remove(&key) {
        let seq = if old.day == day { old.seq + 1 } else { 0 };
        match open_file(opts, c.kind, &c.source, &day, seq) {
            Ok(f) => {
                files.insert(key.clone(), f);
            }
            Err(e) => failed(stats, &c, &e),
        }
    } else if !files.contains_key(&key) {
        match open_file(opts, c.kind, &c.source, &day, 0) {
            Ok(f) => {
                files.insert(key.clone(), f);
            }
            Err(e) => failed(stats, &c, &e),
        }
    }
    let Some(f) = files.get_mut(&key) else { return };
    match f.file.write_all(&c.bytes) {
        Ok(()) => f.size += c.bytes.len() as u64,
        Err(e) => {
            failed(stats, &c, &format!("cannot write {}: {e}", f.path.display()));
            files.remove(&key);
        }
    }
}

fn failed(stats: &WriterStats, c: &Chunk, why: &str) {
    let before = stats.errors.fetch_add(1, Ordering::Relaxed);
    stats.dropped_bytes.fetch_add(c.bytes.len() as u64, Ordering::Relaxed);
    // The first error and then one in a thousand: a full disk must not flood the log.
    if before.is_multiple_of(1000) {
        tracing::error!("{} log: {why}; lines are being dropped", c.kind.dir_name());
    }
}

/// Opens (appending) the file for `source` on `day`, starting at `seq` and skipping full ones
/// (after a restart the day's file may exist already).
fn open_file(opts: &WriterOptions, kind: LogKind, source: &str, day: &str, mut seq: u32) -> Result<OpenFile, String> {
    let dir = opts.spool_dir.join(kind.dir_name());
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    loop {
        let name = if seq == 0 {
            format!("{source}-{day}.{}", kind.extension())
        } else {
            format!("{source}-{day}.{seq}.{}", kind.extension())
        };
        let path = dir.join(name);
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if size >= opts.max_file_size && seq < 100_000 {
            seq += 1;
            continue;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        return Ok(OpenFile { day: day.to_string(), seq, size, path, file });
    }
}

/// Deletes log files last written (mtime) longer ago than the retention before `now_ms`,
/// except the files open now.
fn sweep(opts: &WriterOptions, now_ms: u64, open: &[PathBuf]) {
    let cutoff = std::time::UNIX_EPOCH + Duration::from_millis(now_ms) - opts.retention;
    for kind in [LogKind::Tracking, LogKind::Protocol] {
        let dir = opts.spool_dir.join(kind.dir_name());
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().and_then(|x| x.to_str()) != Some(kind.extension()) || open.contains(&path) {
                continue;
            }
            let old = e.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < cutoff);
            if old {
                match std::fs::remove_file(&path) {
                    Ok(()) => tracing::info!(file = %path.display(), "deleted a log file past its retention"),
                    Err(e) => tracing::warn!(file = %path.display(), error = %e, "cannot delete an old log file"),
                }
            }
        }
    }
}

/// `20261125` (UTC) for a Unix time in milliseconds.
pub fn day_of(unix_ms: u64) -> String {
    let t =
        time::OffsetDateTime::from_unix_timestamp((unix_ms / 1000) as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day())
}

/// One core's buffer for one log. Lines are appended by the core's own thread; `flush` hands
/// the buffer to the writer thread without waiting.
pub struct LogBuffer {
    kind: LogKind,
    source: Arc<str>,
    buf: RefCell<Vec<u8>>,
    sender: LogSender,
}

impl LogBuffer {
    /// A buffer for `source` (e.g. `smtp-0`, `delivery-1`: the file name prefix).
    pub fn new(kind: LogKind, source: &str, sender: LogSender) -> LogBuffer {
        LogBuffer { kind, source: Arc::from(source), buf: RefCell::new(Vec::with_capacity(FLUSH_BYTES)), sender }
    }

    /// Appends one line (written by `f`, which must not write a line feed; one is added).
    pub fn line(&self, f: impl FnOnce(&mut Vec<u8>)) {
        let full = {
            let mut buf = self.buf.borrow_mut();
            f(&mut buf);
            buf.push(b'\n');
            buf.len() >= FLUSH_BYTES
        };
        if full {
            self.flush();
        }
    }

    /// Hands what is buffered to the writer thread.
    pub fn flush(&self) {
        let bytes = {
            let mut buf = self.buf.borrow_mut();
            if buf.is_empty() {
                return;
            }
            std::mem::replace(&mut *buf, Vec::with_capacity(FLUSH_BYTES))
        };
        let len = bytes.len() as u64;
        let chunk = Chunk { kind: self.kind, source: Arc::clone(&self.source), bytes };
        match self.sender.tx.try_send(chunk) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                let before = self.sender.stats.dropped_bytes.fetch_add(len, Ordering::Relaxed);
                if before == 0 {
                    tracing::error!(
                        "{} log writer is behind (slow or full disk?); dropping log lines",
                        self.kind.dir_name()
                    );
                }
            }
        }
    }
}

impl Drop for LogBuffer {
    /// Lines written after the last tick (a session closing at shutdown) are not lost.
    fn drop(&mut self) {
        self.flush();
    }
}

/// The files of one log kind under `spool_dir`, oldest name first.
pub fn log_files(spool_dir: &Path, kind: LogKind) -> std::io::Result<Vec<PathBuf>> {
    let dir = spool_dir.join(kind.dir_name());
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir)? {
        let path = e?.path();
        if path.extension().and_then(|x| x.to_str()) == Some(kind.extension()) {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_appends_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriterOptions {
            spool_dir: dir.path().to_path_buf(),
            retention: Duration::from_secs(3600),
            max_file_size: 100,
        };
        let stats = Arc::new(WriterStats::default());
        let (tx, handle) = start(opts.clone(), Arc::clone(&stats)).unwrap();
        let buf = LogBuffer::new(LogKind::Tracking, "smtp-0", tx);
        for i in 0..5 {
            buf.line(|b| b.extend_from_slice(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(60)).as_bytes()));
            buf.flush();
        }
        drop(buf);
        handle.join().unwrap();
        let files = log_files(dir.path(), LogKind::Tracking).unwrap();
        assert_eq!(files.len(), 3, "two lines of 76 bytes per 100-byte file: {files:?}");
        let all: String = files.iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
        assert_eq!(all.lines().count(), 5);
        assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
        assert_eq!(day_of(1_764_064_075_000), "20251125");
    }

    fn chunk(source: &str, line: &str) -> Chunk {
        Chunk { kind: LogKind::Tracking, source: Arc::from(source), bytes: format!("{line}\n").into_bytes() }
    }

    /// 2025-11-25T23:59:59.500Z.
    const LAST_HALF_SECOND: u64 = 1_764_115_199_500;

    #[test]
    fn a_new_day_starts_a_new_file_and_numbering_starts_again() {
        let dir = tempfile::tempdir().unwrap();
        let opts = WriterOptions {
            spool_dir: dir.path().to_path_buf(),
            retention: Duration::from_secs(3600),
            max_file_size: 40,
        };
        let stats = WriterStats::default();
        let mut files = HashMap::new();
        let line = |n: u32| format!("{{\"n\":{n},\"pad\":\"{}\"}}", "x".repeat(30));
        // Two lines of 48 bytes on the 25th: the first fills the 40-byte file, so the second
        // goes to .1; then midnight.
        write_chunk(&opts, &mut files, chunk("smtp-0", &line(1)), &stats, LAST_HALF_SECOND - 1000);
        write_chunk(&opts, &mut files, chunk("smtp-0", &line(2)), &stats, LAST_HALF_SECOND);
        write_chunk(&opts, &mut files, chunk("smtp-0", &line(3)), &stats, LAST_HALF_SECOND + 600);
        write_chunk(&opts, &mut files, chunk("delivery-0", &line(4)), &stats, LAST_HALF_SECOND + 700);
        drop(files);
        let names: Vec<String> = log_files(dir.path(), LogKind::Tracking)
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["delivery-0-20251126.jsonl", "smtp-0-20251125.1.jsonl", "smtp-0-20251125.jsonl", "smtp-0-20251126.jsonl"]
        );
        let read = |name: &str| std::fs::read_to_string(dir.path().join("tracking").join(name)).unwrap();
        assert_eq!(read("smtp-0-20251125.jsonl"), format!("{}\n", line(1)));
        assert_eq!(read("smtp-0-20251125.1.jsonl"), format!("{}\n", line(2)));
        assert_eq!(read("smtp-0-20251126.jsonl"), format!("{}\n", line(3)), "the new day starts at seq 0");
        assert_eq!(read("delivery-0-20251126.jsonl"), format!("{}\n", line(4)));
        assert_eq!(stats.errors.load(Ordering::Relaxed), 0);
    }

    /// Sets a file's modification time to `unix_ms`.
    fn set_mtime(path: &Path, unix_ms: u64) {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let t = libc::timespec { tv_sec: (unix_ms / 1000) as libc::time_t, tv_nsec: 0 };
        let times = [t, t];
        // SAFETY: a NUL-terminated path and two valid timespecs, as utimensat(2) takes them.
        let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
        assert_eq!(rc, 0, "utimensat {}: {}", path.display(), std::io::Error::last_os_error());
    }

    #[test]
    fn the_sweep_deletes_log_files_not_written_within_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let day_ms = 24 * 3600 * 1000;
        let opts = WriterOptions {
            spool_dir: dir.path().to_path_buf(),
            retention: Duration::from_millis(30 * day_ms),
            max_file_size: 1 << 20,
        };
        let now = LAST_HALF_SECOND;
        let tracking = dir.path().join("tracking");
        let protocol = dir.path().join("protocol");
        std::fs::create_dir_all(&tracking).unwrap();
        std::fs::create_dir_all(&protocol).unwrap();
        let file = |p: PathBuf, age_ms: u64| {
            std::fs::write(&p, b"{}\n").unwrap();
            set_mtime(&p, now - age_ms);
            p
        };
        let old_tracking = file(tracking.join("smtp-0-20251020.jsonl"), 31 * day_ms);
        let old_protocol = file(protocol.join("smtp-1-20251020.log"), 40 * day_ms);
        let recent = file(tracking.join("smtp-0-20251027.jsonl"), 29 * day_ms);
        // Retention goes by the last write, not by the date in the name.
        let old_name_recent_write = file(tracking.join("smtp-0-20240101.jsonl"), day_ms);
        let not_a_log = file(tracking.join("notes.txt"), 400 * day_ms);
        let open_now = file(tracking.join("delivery-0-20251001.jsonl"), 60 * day_ms);
        sweep(&opts, now, std::slice::from_ref(&open_now));
        assert!(!old_tracking.exists() && !old_protocol.exists(), "files past the retention are deleted");
        for kept in [&recent, &old_name_recent_write, &not_a_log, &open_now] {
            assert!(kept.exists(), "{} was deleted", kept.display());
        }
        // A later sweep, once the open file is closed, takes it too.
        sweep(&opts, now, &[]);
        assert!(!open_now.exists());
        assert!(recent.exists());
        // And 2 days later the 29-day-old file is past 30 days.
        sweep(&opts, now + 2 * day_ms, &[]);
        assert!(!recent.exists());
    }
}
