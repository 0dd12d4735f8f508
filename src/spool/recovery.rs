//! Recovery at start: read a core's segments in order, cut a torn tail, and rebuild the set of
//! live messages (accepted, with recipients not yet finished). Plain blocking file I/O: it
//! runs before the core's event loop starts. The crash analysis is in `spool/mod.rs`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{self, Invalid, Record};
use super::{SEGMENT_HEADER_BYTES, SpoolRef, check_segment_header, parse_segment_name};
use crate::smtp::envelope::{Envelope, QueueId};

/// A live message found by recovery.
#[derive(Debug, Clone)]
pub struct RecoveredMessage {
    /// Where it is.
    pub spool_ref: SpoolRef,
    /// Its envelope.
    pub envelope: Envelope,
    /// Indices of the recipients still to deliver.
    pub pending: Vec<u32>,
    /// Indices of the recipients already finished.
    pub finished: Vec<u32>,
}

/// A segment found by recovery.
#[derive(Debug, Clone)]
pub struct RecoveredSegment {
    /// Sequence number.
    pub seq: u64,
    /// Path.
    pub path: PathBuf,
    /// Read-only handle, shared with delivery.
    pub file: Arc<File>,
    /// Valid bytes (after cutting a torn tail).
    pub bytes: u64,
    /// Creation time from the header.
    pub created_ms: u64,
}

/// What recovery found in one core directory.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Segments, oldest first.
    pub segments: Vec<RecoveredSegment>,
    /// Live messages.
    pub messages: Vec<RecoveredMessage>,
    /// The highest queue id seen (new ids start above it).
    pub max_queue_id: QueueId,
    /// The newest segment's creation time (a floor for new ids too).
    pub newest_created_ms: u64,
    /// Torn or corrupt places: (file, offset, what was wrong). A torn tail of the newest
    /// segment is normal after a crash; anything else is worth an operator's look.
    pub damage: Vec<(PathBuf, u64, String)>,
}

struct Found {
    spool_ref: SpoolRef,
    envelope: Envelope,
    finished: Vec<bool>,
}

/// Recovers the log in `dir` (which belongs, or belonged, to SMTP core `core`).
pub fn recover(dir: &Path, core: u16) -> io::Result<Recovered> {
    let mut seqs = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                if let Some(seq) = entry.file_name().to_str().and_then(parse_segment_name) {
                    seqs.push(seq);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recovered::default()),
        Err(e) => return Err(e),
    }
    seqs.sort_unstable();
    let mut out = Recovered::default();
    let mut found: HashMap<QueueId, Found> = HashMap::new();
    let mut dones: Vec<(QueueId, Vec<u32>)> = Vec::new();
    let last = seqs.last().copied();
    for seq in seqs {
        let path = super::segment_path(dir, seq);
        let is_last = Some(seq) == last;
        let mut bytes = Vec::new();
        File::open(&path)?.read_to_end(&mut bytes)?;
        let Some(created_ms) = check_segment_header(&bytes) else {
            if is_last && bytes.len() < SEGMENT_HEADER_BYTES {
                // Created, then the crash came before its header was synced: nothing in it.
                std::fs::remove_file(&path)?;
                continue;
            }
            out.damage.push((path.clone(), 0, "bad segment header; segment skipped".into()));
            continue;
        };
        let file = Arc::new(File::open(&path)?);
        let mut pos = SEGMENT_HEADER_BYTES;
        while pos < bytes.len() {
            match record::decode(&bytes[pos..]) {
                Ok((rec, len)) => {
                    match rec {
                        Record::Message { envelope, .. } => {
                            out.max_queue_id = out.max_queue_id.max(envelope.queue_id);
                            let spool_ref = SpoolRef {
                                file: Arc::clone(&file),
                                core,
                                segment: seq,
                                offset: pos as u64,
                                len: u32::try_from(len).unwrap_or(u32::MAX),
                                queue_id: envelope.queue_id,
                            };
                            // A later copy (moved forward by compaction) replaces the earlier one.
                            let finished = match found.remove(&envelope.queue_id) {
                                Some(prev) => prev.finished,
                                None => vec![false; envelope.recipients.len()],
                            };
                            found.insert(envelope.queue_id, Found { spool_ref, envelope, finished });
                        }
                        Record::Done { queue_id, rcpts } => dones.push((queue_id, rcpts)),
                    }
                    pos += len;
                }
                Err(why) => {
                    // Zeros written ahead of the data (the writer's `ZERO_AHEAD`): the end of
                    // the records, not damage.
                    let zero_tail = why == Invalid::Garbage && bytes[pos..].iter().all(|&b| b == 0);
                    if is_last {
                        if !zero_tail {
                            out.damage.push((path.clone(), pos as u64, format!("torn tail ({why:?}) cut")));
                        }
                        // Nothing from here on was acknowledged: cut it so appends never follow it.
                        OpenOptions::new().write(true).open(&path)?.set_len(pos as u64)?;
                    } else if !zero_tail {
                        out.damage.push((
                            path.clone(),
                            pos as u64,
                            format!("corrupt record ({why:?}); rest of segment skipped"),
                        ));
                    }
                    break;
                }
            }
        }
        out.newest_created_ms = out.newest_created_ms.max(created_ms);
        out.segments.push(RecoveredSegment { seq, path, file, bytes: pos.min(bytes.len()) as u64, created_ms });
    }
    for (queue_id, rcpts) in dones {
        if let Some(f) = found.get_mut(&queue_id) {
            for r in rcpts {
                if let Some(slot) = f.finished.get_mut(r as usize) {
                    *slot = true;
                }
            }
        }
    }
    let mut messages: Vec<RecoveredMessage> = found
        .into_values()
        .filter(|f| f.finished.iter().any(|done| !done))
        .map(|f| {
            let (mut pending, mut finished) = (Vec::new(), Vec::new());
            for (i, done) in f.finished.iter().enumerate() {
                if *done { finished.push(i as u32) } else { pending.push(i as u32) }
            }
            RecoveredMessage { spool_ref: f.spool_ref, envelope: f.envelope, pending, finished }
        })
        .collect();
    messages.sort_by_key(|m| m.envelope.queue_id);
    out.messages = messages;
    Ok(out)
}
