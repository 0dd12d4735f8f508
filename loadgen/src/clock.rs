//! Time, in one place: the only module of ringload that reads the system clocks (the
//! workspace `clippy.toml` bans `Instant::now` and `SystemTime::now` elsewhere). Monotonic time
//! measures latency; wall-clock time only stamps messages (`X-Ringload-Sent`) and reports, so
//! that the sink, another process, can compute the end-to-end delay.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Monotonic time, for latency and schedules.
#[inline]
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Wall-clock time as microseconds since the Unix epoch.
#[inline]
#[allow(clippy::disallowed_methods)]
pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_micros() as u64
}

/// Wall-clock time as milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    unix_micros() / 1000
}

/// Whole microseconds of a duration, saturating (a histogram value).
#[inline]
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The wall-clock time of the monotonic instant `at` (which should be near now).
pub fn wall_time_of(at: Instant) -> SystemTime {
    let now_mono = now();
    let now_wall = UNIX_EPOCH + Duration::from_micros(unix_micros());
    if at >= now_mono { now_wall + (at - now_mono) } else { now_wall - (now_mono - at) }
}
