//! One spool record, encoded and decoded: the byte layout documented in `spool/mod.rs`.
//! Pure: no files here. All integers are little-endian with explicit widths.

use std::net::{IpAddr, Ipv6Addr};

use crate::smtp::envelope::{BodyType, Envelope, Notify, QueueId, Recipient, Ret};

/// Bytes of a record header: `len u32 | kind u8 | flags u8 | reserved u16 | crc u32`.
pub const HEADER_BYTES: usize = 12;
/// Largest payload accepted when reading (a 25 MiB message and its envelope fit many times).
pub const PAYLOAD_MAX: u32 = 1 << 30;

/// Record kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// An accepted message: envelope and message bytes.
    Message = 1,
    /// Recipients of a message that are finished (delivered, or failed and reported).
    Done = 2,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Message),
            2 => Some(Kind::Done),
            _ => None,
        }
    }
}

/// Why bytes are not a valid record. At the tail of the newest segment this is a torn write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes than the header or the payload it announces.
    Short,
    /// Unknown kind, or an absurd length: garbage or zero-filled space.
    Garbage,
    /// The checksum does not match.
    Checksum,
    /// The checksum matches but the payload does not decode.
    Malformed,
}

/// Appends a record header + payload. `payload` is written by `fill` into `out`.
fn append_record(out: &mut Vec<u8>, kind: Kind, fill: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    fill(out);
    let payload_len = u32::try_from(out.len() - start - HEADER_BYTES).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4] = kind as u8;
    let mut h = crc32fast::Hasher::new();
    h.update(&out[start..start + 8]);
    h.update(&out[start + HEADER_BYTES..]);
    let crc = h.finalize();
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    out.len() - start
}

/// Encodes a MESSAGE record for `env` and `message` at the end of `out`; returns its length.
pub fn encode_message(out: &mut Vec<u8>, env: &Envelope, message: &[u8]) -> usize {
    append_record(out, Kind::Message, |p| {
        p.extend_from_slice(&env.queue_id.0.to_le_bytes());
        p.extend_from_slice(&env.received_at_ms.to_le_bytes());
        let mut flags = 0u8;
        if env.smtputf8 {
            flags |= 1;
        }
        if env.tls {
            flags |= 2;
        }
        if env.body_type == BodyType::EightBitMime {
            flags |= 4;
        }
        flags |= match env.ret {
            None => 0,
            Some(Ret::Full) => 8,
            Some(Ret::Hdrs) => 16,
        };
        p.push(flags);
        p.extend_from_slice(&env.size_declared.unwrap_or(u64::MAX).to_le_bytes());
        let ip = match env.client_ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        p.extend_from_slice(&ip.octets());
        p.push(u8::from(env.client_ip.is_ipv4()));
        put_str(p, Some(&env.sender));
        put_str(p, env.envid.as_deref());
        put_str(p, env.auth_user.as_deref());
        put_str(p, Some(&env.connector));
        put_str(p, Some(&env.helo));
        p.extend_from_slice(&u32::try_from(env.recipients.len()).unwrap_or(u32::MAX).to_le_bytes());
        for r in &env.recipients {
            put_str(p, Some(&r.address));
            p.push(r.notify.0);
            put_str(p, r.orcpt.as_deref());
        }
        p.extend_from_slice(&(message.len() as u64).to_le_bytes());
        p.extend_from_slice(message);
    })
}

/// Encodes a DONE record: these recipient indices of `queue_id` are finished.
pub fn encode_done(out: &mut Vec<u8>, queue_id: QueueId, rcpts: &[u32]) -> usize {
    append_record(out, Kind::Done, |p| {
        p.extend_from_slice(&queue_id.0.to_le_bytes());
        p.extend_from_slice(&u32::try_from(rcpts.len()).unwrap_or(u32::MAX).to_le_bytes());
        for r in rcpts {
            p.extend_from_slice(&r.to_le_bytes());
        }
    })
}

fn put_str(p: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => p.extend_from_slice(&u32::MAX.to_le_bytes()),
        Some(s) => {
            p.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX - 1).to_le_bytes());
            p.extend_from_slice(s.as_bytes());
        }
    }
}

/// A record read back.
#[derive(Debug)]
pub enum Record<'a> {
    /// An accepted message; `message` borrows from the input.
    Message {
        /// The envelope.
        envelope: Envelope,
        /// The message bytes as stored (Received: header first).
        message: &'a [u8],
    },
    /// Finished recipients.
    Done {
        /// The message.
        queue_id: QueueId,
        /// Recipient indices.
        rcpts: Vec<u32>,
    },
}

/// Reads the record at the start of `input`: the record and its total length.
pub fn decode(input: &[u8]) -> Result<(Record<'_>, usize), Invalid> {
    let header = input.get(..HEADER_BYTES).ok_or(Invalid::Short)?;
    let len = u32::from_le_bytes(header[0..4].try_into().map_err(|_| Invalid::Short)?);
    let kind = Kind::from_u8(header[4]).ok_or(Invalid::Garbage)?;
    if len > PAYLOAD_MAX || header[5] != 0 || header[6] != 0 || header[7] != 0 {
        return Err(Invalid::Garbage);
    }
    let total = HEADER_BYTES + len as usize;
    let payload = input.get(HEADER_BYTES..total).ok_or(Invalid::Short)?;
    let crc = u32::from_le_bytes(header[8..12].try_into().map_err(|_| Invalid::Short)?);
    let mut h = crc32fast::Hasher::new();
    h.update(&header[0..8]);
    h.update(payload);
    if h.finalize() != crc {
        return Err(Invalid::Checksum);
    }
    let mut r = Reader { p: payload };
    let record = match kind {
        Kind::Message => decode_message(&mut r)?,
        Kind::Done => {
            let queue_id = QueueId(r.u64()?);
            let n = r.u32()? as usize;
            if n > r.p.len() / 4 {
                return Err(Invalid::Malformed);
            }
            let rcpts = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Record::Done { queue_id, rcpts }
        }
    };
    if !r.p.is_empty() {
        return Err(Invalid::Malformed);
    }
    Ok((record, total))
}

/// The envelope of a MESSAGE record and where its message bytes are, read from the start of
/// the record without the rest: what a delivery core needs at intake, so that a 25 MiB message
/// is not read whole just to learn its recipients.
#[derive(Debug)]
pub struct MessageHead {
    /// The envelope.
    pub envelope: Envelope,
    /// Offset of the message bytes from the start of the record (header included).
    pub message_offset: usize,
    /// Length of the message bytes.
    pub message_len: u64,
}

/// Reads the envelope of the MESSAGE record that `prefix` starts (the whole record, or any
/// prefix of it that holds the envelope: `Invalid::Short` asks for more). The checksum covers
/// the whole payload, so it is not checked here: use this on records that `decode` (recovery)
/// or this process (the writer) already vouched for.
pub fn decode_message_head(prefix: &[u8]) -> Result<MessageHead, Invalid> {
    let header = prefix.get(..HEADER_BYTES).ok_or(Invalid::Short)?;
    let len = u32::from_le_bytes(header[0..4].try_into().map_err(|_| Invalid::Short)?);
    if Kind::from_u8(header[4]) != Some(Kind::Message) || len > PAYLOAD_MAX || header[5..8] != [0, 0, 0] {
        return Err(Invalid::Garbage);
    }
    let total = HEADER_BYTES + len as usize;
    let available = &prefix[HEADER_BYTES..prefix.len().min(total)];
    let mut r = Reader { p: available };
    // A field cut off by the end of the prefix reads as Malformed; within the record it is
    // only Short.
    let short = |e: Invalid| if available.len() < len as usize { Invalid::Short } else { e };
    let envelope = decode_envelope(&mut r).map_err(short)?;
    let message_len = r.u64().map_err(short)?;
    let message_offset = HEADER_BYTES + (available.len() - r.p.len());
    if (message_offset as u64).checked_add(message_len) != Some(total as u64) {
        return Err(Invalid::Malformed);
    }
    Ok(MessageHead { envelope, message_offset, message_len })
}

fn decode_message<'a>(r: &mut Reader<'a>) -> Result<Record<'a>, Invalid> {
    let envelope = decode_envelope(r)?;
    let body_len = r.u64()?;
    let message = r.take(usize::try_from(body_len).map_err(|_| Invalid::Malformed)?)?;
    Ok(Record::Message { envelope, message })
}

/// The envelope fields of a MESSAGE payload, up to (not including) `message_len`.
fn decode_envelope(r: &mut Reader<'_>) -> Result<Envelope, Invalid> {
    let queue_id = QueueId(r.u64()?);
    let received_at_ms = r.u64()?;
    let flags = r.u8()?;
    let size = r.u64()?;
    let octets: [u8; 16] = r.take(16)?.try_into().map_err(|_| Invalid::Malformed)?;
    let v6 = Ipv6Addr::from(octets);
    let client_ip =
        if r.u8()? == 1 { IpAddr::V4(v6.to_ipv4_mapped().ok_or(Invalid::Malformed)?) } else { IpAddr::V6(v6) };
    let sender = r.string()?.ok_or(Invalid::Malformed)?;
    let envid = r.string()?;
    let auth_user = r.string()?;
    let connector = r.string()?.ok_or(Invalid::Malformed)?;
    let helo = r.string()?.ok_or(Invalid::Malformed)?;
    let n = r.u32()? as usize;
    if n > r.p.len() / 9 {
        return Err(Invalid::Malformed);
    }
    let mut recipients = Vec::with_capacity(n);
    for _ in 0..n {
        let address = r.string()?.ok_or(Invalid::Malformed)?;
        let notify = Notify(r.u8()?);
        let orcpt = r.string()?;
        recipients.push(Recipient { address, notify, orcpt });
    }
    Ok(Envelope {
        queue_id,
        received_at_ms,
        sender,
        body_type: if flags & 4 != 0 { BodyType::EightBitMime } else { BodyType::SevenBit },
        smtputf8: flags & 1 != 0,
        size_declared: (size != u64::MAX).then_some(size),
        ret: match flags & 24 {
            8 => Some(Ret::Full),
            16 => Some(Ret::Hdrs),
            _ => None,
        },
        envid,
        auth_user,
        client_ip,
        connector,
        helo,
        tls: flags & 2 != 0,
        recipients,
    })
}

struct Reader<'a> {
    p: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Invalid> {
        if self.p.len() < n {
            return Err(Invalid::Malformed);
        }
        let (head, rest) = self.p.split_at(n);
        self.p = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, Invalid> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Invalid> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| Invalid::Malformed)?))
    }
    fn u64(&mut self) -> Result<u64, Invalid> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| Invalid::Malformed)?))
    }
    fn string(&mut self) -> Result<Option<String>, Invalid> {
        let n = self.u32()?;
        if n == u32::MAX {
            return Ok(None);
        }
        let bytes = self.take(n as usize)?;
        String::from_utf8(bytes.to_vec()).map(Some).map_err(|_| Invalid::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(id: u64, rcpts: usize) -> Envelope {
        Envelope {
            queue_id: QueueId(id),
            received_at_ms: 1_764_000_000_000 + id,
            sender: "s@example.test".into(),
            body_type: BodyType::EightBitMime,
            smtputf8: id.is_multiple_of(2),
            size_declared: Some(1234),
            ret: Some(Ret::Hdrs),
            envid: Some("env+2Bid".into()),
            auth_user: id.is_multiple_of(3).then(|| "svc".into()),
            client_ip: if id.is_multiple_of(2) { "192.0.2.7".parse().unwrap() } else { "2001:db8::7".parse().unwrap() },
            connector: "default".into(),
            helo: "client.test".into(),
            tls: true,
            recipients: (0..rcpts)
                .map(|i| Recipient {
                    address: format!("r{i}@d{i}.test"),
                    notify: Notify(Notify::SUCCESS | Notify::FAILURE),
                    orcpt: (i == 0).then(|| "rfc822;r0@d0.test".into()),
                })
                .collect(),
        }
    }

    #[test]
    fn message_round_trip() {
        for id in 0..4u64 {
            let env = sample(id, 3);
            let mut out = b"prefix".to_vec();
            let n = encode_message(&mut out, &env, b"Subject: x\r\n\r\nbody\r\n");
            assert_eq!(n, out.len() - 6);
            match decode(&out[6..]).unwrap() {
                (Record::Message { envelope, message }, len) => {
                    assert_eq!(envelope, env);
                    assert_eq!(message, b"Subject: x\r\n\r\nbody\r\n");
                    assert_eq!(len, n);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn message_head_from_any_prefix_that_holds_the_envelope() {
        let env = sample(5, 4);
        let message = b"Subject: head\r\n\r\nthe body, which the head does not need\r\n";
        let mut out = Vec::new();
        let n = encode_message(&mut out, &env, message);
        let head = decode_message_head(&out).unwrap();
        assert_eq!(head.envelope, env);
        assert_eq!(&out[head.message_offset..], message);
        assert_eq!(head.message_len, message.len() as u64);
        let needed = head.message_offset;
        for cut in 0..n {
            match decode_message_head(&out[..cut]) {
                Ok(h) => {
                    assert!(cut >= needed, "a head from {cut} bytes, {needed} needed");
                    assert_eq!((h.envelope, h.message_offset), (env.clone(), needed));
                }
                Err(e) => {
                    assert!(cut < needed, "prefix of {cut} bytes (head needs {needed}) gave {e:?}");
                    assert_eq!(e, Invalid::Short, "a prefix is never anything but short (cut {cut})");
                }
            }
        }
        let mut done = Vec::new();
        encode_done(&mut done, QueueId(5), &[1]);
        assert_eq!(decode_message_head(&done).unwrap_err(), Invalid::Garbage, "not a MESSAGE record");
    }

    #[test]
    fn done_round_trip() {
        let mut out = Vec::new();
        encode_done(&mut out, QueueId(7), &[0, 2]);
        match decode(&out).unwrap().0 {
            Record::Done { queue_id, rcpts } => assert_eq!((queue_id, rcpts), (QueueId(7), vec![0, 2])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_corruption_is_detected() {
        let mut out = Vec::new();
        encode_message(&mut out, &sample(1, 2), b"hello\r\n");
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_err(), "a record cut at {cut} must not decode");
        }
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "a flipped bit at byte {i} must not decode");
        }
        assert_eq!(decode(&[0u8; 64]).unwrap_err(), Invalid::Garbage, "zero-filled space");
    }
}
