//! Time, in one place: the only module that reads the system clocks (`clippy.toml` bans
//! `Instant::now` and `SystemTime::now` elsewhere). Also owns the formatting of dates for
//! `Received:` headers (RFC 5322) and logs (RFC 3339), cached per second because every message
//! needs one.

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::{Rfc2822, Rfc3339};

/// Monotonic time, for timeouts and latency.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock time as milliseconds since the Unix epoch.
#[allow(clippy::disallowed_methods)]
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}

/// `Tue, 25 Nov 2026 15:47:55 +0000` for a Unix time in milliseconds.
pub fn rfc5322(unix_ms: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp((unix_ms / 1000) as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(&Rfc2822).unwrap_or_default()
}

/// `2026-11-25T15:47:55.123Z` for a Unix time in milliseconds.
pub fn rfc3339(unix_ms: u64) -> String {
    let nanos = i128::from(unix_ms) * 1_000_000;
    let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(&Rfc3339).unwrap_or_default()
}

/// Parses an RFC 3339 time into Unix milliseconds.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A per-thread cache of the RFC 5322 date of the current second, kept as the bytes that go
/// into `Received:` headers: formatted into the same buffer once a second, copied out for
/// every message, never allocated again after the first.
#[derive(Default)]
pub struct DateCache {
    cached: RefCell<(u64, Vec<u8>)>,
}

impl DateCache {
    /// Appends the RFC 5322 date for `unix_ms` to `out`, formatting it at most once per second.
    pub fn write_rfc5322(&self, unix_ms: u64, out: &mut Vec<u8>) {
        let second = unix_ms / 1000;
        let mut c = self.cached.borrow_mut();
        if c.0 != second || c.1.is_empty() {
            c.0 = second;
            c.1.clear();
            let t = OffsetDateTime::from_unix_timestamp(second as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            // Formatting a valid date into a Vec cannot fail.
            let _ = t.format_into(&mut c.1, &Rfc2822);
        }
        out.extend_from_slice(&c.1);
    }

    /// The RFC 5322 date for `unix_ms` as a String (cached likewise; the String is new).
    pub fn rfc5322(&self, unix_ms: u64) -> String {
        let mut out = Vec::with_capacity(32);
        self.write_rfc5322(unix_ms, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc5322(1_764_064_075_000), "Tue, 25 Nov 2025 09:47:55 +0000");
        assert_eq!(rfc3339(1_764_064_075_123), "2025-11-25T09:47:55.123Z");
        assert_eq!(parse_rfc3339("2025-11-25T09:47:55.123Z"), Some(1_764_064_075_123));
        let c = DateCache::default();
        assert_eq!(c.rfc5322(1_764_064_075_999), "Tue, 25 Nov 2025 09:47:55 +0000");
        // The next second is formatted afresh, into the same buffer.
        let mut out = b"; ".to_vec();
        c.write_rfc5322(1_764_064_076_000, &mut out);
        assert_eq!(out, b"; Tue, 25 Nov 2025 09:47:56 +0000");
        assert_eq!(c.rfc5322(1_764_064_076_500), rfc5322(1_764_064_076_500));
    }
}
