//! Message content on a delivery core: where a queued message's bytes are (in memory for a
//! small message, or a place in a spool segment), and reading them through io_uring with
//! owned, reused buffers, so that no read of a 25 MiB message ever blocks the core's event
//! loop, and no message is read whole just to learn its envelope.
//!
//! A `spool::SpoolRef` carries a shared handle on its segment file; tokio-uring closes any file
//! it owns, so each segment gets one duplicate descriptor per delivery core (`SegmentFiles`),
//! shared by every message of that segment held there, and closed with the last of them.
//!
//! What is read, and when:
//! - at intake, the record's head: the envelope and the start of the message (`HEAD_BYTES`),
//!   enough for the header facts (SMTPUTF8 need, Message-ID); a small record is read whole
//!   (checksum checked) and kept in memory until the message is first deferred;
//! - per transaction, the message in `CHUNK_BYTES` pieces straight into the connection's
//!   buffers (`outbound`), one buffer reused for every piece;
//! - for a DSN, at most `dsn::RETURN_FULL_MAX + 1` bytes (`prefix`): `dsn::build` returns
//!   the whole message only when it is not longer than that limit, so a longer prefix would
//!   never be used, and one byte more than the limit tells it the message is longer;
//! - for an 8-bit declared message going to a server without 8BITMIME, one scan for 8-bit
//!   octets (`has_eight_bit`), whose answer the delivery core keeps.

use std::collections::HashMap;
use std::io;
use std::ops::Deref;
use std::rc::{Rc, Weak};

use tokio_uring::buf::BoundedBuf;
use tokio_uring::fs::File;

use crate::delivery::client::{has_eight_bit, needs_smtputf8};
use crate::smtp::envelope::{BodyType, Envelope};
use crate::spool::SpoolRef;
use crate::spool::record::{self, Invalid, Record};

/// Read at intake for a record that is not kept whole: the envelope (a few hundred bytes,
/// more with many recipients: then more is read) and the start of the message (its header
/// section, in all but pathological messages).
pub(crate) const HEAD_BYTES: usize = 64 * 1024;
/// The message is read in pieces of this size for a transaction or a scan.
pub(crate) const CHUNK_BYTES: usize = 64 * 1024;

/// One io_uring file per spool segment with messages held on this core.
#[derive(Default)]
pub(crate) struct SegmentFiles {
    open: HashMap<(u16, u64), Weak<File>>,
}

impl SegmentFiles {
    /// The io_uring file of `r`'s segment: the one already open here, or a new duplicate of
    /// the spool's descriptor.
    pub(crate) fn get(&mut self, r: &SpoolRef) -> io::Result<Rc<File>> {
        let key = (r.core, r.segment);
        if let Some(f) = self.open.get(&key).and_then(Weak::upgrade) {
            return Ok(f);
        }
        if self.open.len() >= 64 {
            // Segments whose messages are all gone; their descriptors are already closed.
            self.open.retain(|_, f| f.strong_count() > 0);
        }
        let f = Rc::new(File::from_std(r.file.try_clone()?));
        self.open.insert(key, Rc::downgrade(&f));
        Ok(f)
    }
}

/// Where a message's bytes are.
#[derive(Clone)]
pub(crate) enum Content {
    /// The whole record is in memory; the message is `record[offset..]`.
    Cached {
        /// The record.
        record: Rc<Vec<u8>>,
        /// Where the message starts in it.
        offset: usize,
    },
    /// `len` bytes at `at` in a segment file.
    Spool {
        /// The segment.
        file: Rc<File>,
        /// Offset of the message in the file.
        at: u64,
        /// Its length.
        len: u64,
    },
}

impl Content {
    /// The message size in octets.
    pub(crate) fn len(&self) -> u64 {
        match self {
            Content::Cached { record, offset } => (record.len() - offset) as u64,
            Content::Spool { len, .. } => *len,
        }
    }

    /// The first `max` bytes (all of them for a shorter message).
    pub(crate) async fn prefix(&self, max: usize) -> io::Result<Bytes> {
        match self {
            Content::Cached { record, offset } => {
                let end = record.len().min(offset.saturating_add(max));
                Ok(Bytes::Shared(Rc::clone(record), *offset, end))
            }
            Content::Spool { file, at, len } => {
                let want = usize::try_from(*len).unwrap_or(usize::MAX).min(max);
                let (res, buf) = read_exact(file, Vec::new(), *at, want).await;
                res.map(|()| Bytes::Owned(buf))
            }
        }
    }

    /// Does the message hold an octet over 127? Reads it in pieces through `buf` (reused).
    pub(crate) async fn has_eight_bit(&self, buf: &mut Vec<u8>) -> io::Result<bool> {
        let (file, at, len) = match self {
            Content::Cached { record, offset } => return Ok(has_eight_bit(&record[*offset..])),
            Content::Spool { file, at, len } => (file, *at, *len),
        };
        let mut pos = 0;
        while pos < len {
            let want = (len - pos).min(CHUNK_BYTES as u64) as usize;
            let (res, b) = read_exact(file, std::mem::take(buf), at + pos, want).await;
            *buf = b;
            res?;
            if has_eight_bit(buf) {
                return Ok(true);
            }
            pos += want as u64;
        }
        Ok(false)
    }
}

/// Bytes read from a message: a view into a cached record, or a buffer of their own.
pub(crate) enum Bytes {
    /// `record[start..end]`.
    Shared(Rc<Vec<u8>>, usize, usize),
    /// Read for the occasion.
    Owned(Vec<u8>),
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Shared(r, start, end) => &r[*start..*end],
            Bytes::Owned(v) => v,
        }
    }
}

/// Reads exactly `len` bytes at `at` into `buf` (cleared first: tokio-uring reads to the start
/// of a `Vec`, and its allocation is reused). On success `buf.len() == len`.
pub(crate) async fn read_exact(file: &File, mut buf: Vec<u8>, at: u64, len: usize) -> (io::Result<()>, Vec<u8>) {
    buf.clear();
    if len == 0 {
        return (Ok(()), buf);
    }
    buf.reserve(len);
    let (res, slice) = file.read_exact_at(buf.slice(..len), at).await;
    let buf = slice.into_inner();
    debug_assert!(res.is_err() || buf.len() == len);
    (res, buf)
}

/// What a delivery core learns about a fresh message at intake.
pub(crate) struct Intake {
    /// Its envelope.
    pub(crate) envelope: Envelope,
    /// Where its bytes are.
    pub(crate) content: Content,
    /// It needs SMTPUTF8 on the next hop (`client::needs_smtputf8`, on the header section
    /// as far as `HEAD_BYTES` reaches).
    pub(crate) smtputf8: bool,
    /// Its content holds 8-bit octets: known for a message not declared 8BITMIME (not looked
    /// at: false), for one read whole, and for one whose start already holds some; None
    /// otherwise (scanned when a server without 8BITMIME is met).
    pub(crate) eight_bit: Option<bool>,
    /// Its Message-ID (when asked for: tracking).
    pub(crate) message_id: Option<String>,
}

/// Reads what a delivery core needs of a MESSAGE record: the whole record when `keep` (it is
/// then kept in memory, checksum checked), otherwise its head.
pub(crate) async fn intake(file: Rc<File>, r: &SpoolRef, keep: bool, message_id: bool) -> io::Result<Intake> {
    let len = r.len as usize;
    let mut want = if keep { len } else { len.min(HEAD_BYTES) };
    let mut buf = Vec::new();
    loop {
        let (res, b) = read_exact(&file, buf, r.offset, want).await;
        buf = b;
        res?;
        let (envelope, message_offset, whole) = if want == len {
            match record::decode(&buf).map_err(invalid)? {
                (Record::Message { envelope, message }, _) => (envelope, len - message.len(), true),
                _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "spool record is not a message")),
            }
        } else {
            match record::decode_message_head(&buf) {
                Ok(head) => (head.envelope, head.message_offset, false),
                Err(Invalid::Short) => {
                    want = want.saturating_mul(4).min(len);
                    continue;
                }
                Err(e) => return Err(invalid(e)),
            }
        };
        let start = &buf[message_offset..];
        let eight_bit = if envelope.body_type != BodyType::EightBitMime {
            Some(false)
        } else if has_eight_bit(start) {
            Some(true)
        } else if whole {
            Some(false)
        } else {
            None
        };
        let smtputf8 = needs_smtputf8(&envelope, start);
        let message_id = if message_id { crate::obs::tracking::message_id(start) } else { None };
        let content = if keep {
            Content::Cached { record: Rc::new(buf), offset: message_offset }
        } else {
            Content::Spool { file, at: r.offset + message_offset as u64, len: (len - message_offset) as u64 }
        };
        return Ok(Intake { envelope, content, smtputf8, eight_bit, message_id });
    }
}

fn invalid(e: Invalid) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("spool record does not decode ({e:?})"))
}
