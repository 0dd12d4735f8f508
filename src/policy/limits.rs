//! Abuse limits of receive connectors (spec section 5): concurrent connections per client IP
//! (`max_connections_per_source`), messages per client IP or per authenticated user
//! (`message_rate_limit`), and the AUTH lockout after `max_auth_failures`. Pure: every decision
//! takes the current monotonic time as an argument, so the tests run on a synthetic clock.
//!
//! Each table has a hard entry cap and forgets entries that no longer constrain anybody (a rate
//! entry whose debt is paid, a lockout that ended), so a flood of distinct source addresses
//! costs bounded memory. Which table is per SMTP core and which is process-wide is decided by
//! the runtime (`runtime::smtp_core`, `runtime::shared`); README.md says what that means for the
//! effective limits.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::config::{Rate, ReceiveConnector};

/// Entries per rate or lockout table before idle entries are swept and, if that is not
/// enough, the least constrained ones are dropped.
pub const TABLE_ENTRIES_MAX: usize = 64 * 1024;

/// The limits of one receive connector, from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectorLimits {
    /// Concurrent connections from one client IP; None: no limit.
    pub connections_per_source_max: Option<u32>,
    /// Messages (MAIL commands accepted) per client IP, or per user once authenticated.
    pub message_rate: Option<Rate>,
    /// Failed AUTH attempts from one source before the lockout.
    pub auth_failures_max: u32,
    /// How long the lockout lasts; also how long a failure is remembered.
    pub auth_lockout: Duration,
}

impl ConnectorLimits {
    /// From a receive connector's configuration.
    pub fn from_config(rc: &ReceiveConnector) -> ConnectorLimits {
        ConnectorLimits {
            connections_per_source_max: rc.max_connections_per_source,
            message_rate: rc.message_rate_limit,
            auth_failures_max: rc.max_auth_failures,
            auth_lockout: rc.auth_lockout.get(),
        }
    }
}

/// The address a lockout is keyed by: the IPv4 address, or the /64 of an IPv6 address (one
/// IPv6 host usually owns a whole /64 and could otherwise rotate through it to dodge the
/// lockout). IPv4-mapped IPv6 addresses count as IPv4.
pub fn lockout_source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// The tables one SMTP core keeps to itself (shared-nothing): open connections and message
/// rates per source. The AUTH lockout is process-wide (`runtime::shared::AuthLockouts`).
#[derive(Debug, Default)]
pub struct CoreLimits {
    /// Open connections per (connector, client IP).
    pub connections: SourceConnections,
    /// Message rate per (connector, client IP or user).
    pub rates: MessageRates,
}

// ---- concurrent connections --------------------------------------------------------------------

/// Open connections per (connector, client IP). An entry lives exactly as long as its client
/// has a connection open, so the table is bounded by the connection cap of the core.
#[derive(Debug, Default)]
pub struct SourceConnections {
    open: HashMap<(u32, IpAddr), u32>,
}

impl SourceConnections {
    /// Takes a connection slot for `ip` on `connector` if fewer than `max` are open. Every
    /// `true` must be matched by one `release`.
    pub fn try_acquire(&mut self, connector: usize, ip: IpAddr, max: u32) -> bool {
        let n = self.open.entry((connector as u32, ip.to_canonical())).or_insert(0);
        if *n >= max {
            if *n == 0 {
                // max == 0 and nothing open: do not leave an empty entry behind.
                self.open.remove(&(connector as u32, ip.to_canonical()));
            }
            return false;
        }
        *n += 1;
        true
    }

    /// Gives back a slot taken by `try_acquire`.
    pub fn release(&mut self, connector: usize, ip: IpAddr) {
        let key = (connector as u32, ip.to_canonical());
        match self.open.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.open.remove(&key);
            }
            None => debug_assert!(false, "release without acquire for {ip}"),
        }
    }

    /// Connections open from `ip` on `connector`.
    pub fn open(&self, connector: usize, ip: IpAddr) -> u32 {
        self.open.get(&(connector as u32, ip.to_canonical())).copied().unwrap_or(0)
    }

    /// Number of (connector, client) pairs with connections open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// No connection is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

// ---- message rate ------------------------------------------------------------------------------

/// Who a message is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sender {
    /// An anonymous session: its client IP.
    Ip(IpAddr),
    /// An authenticated session: its user, whatever address it comes from. Shared, so that
    /// counting a message does not copy the name (the tables are per core, never sent).
    User(Rc<str>),
}

/// Message rate per (connector, sender), as GCRA (the generic cell rate algorithm, a token
/// bucket kept as one timestamp): `count/per` allows a burst of `count` messages, then one
/// every `per / count`. An entry whose theoretical arrival time has passed constrains nothing
/// and may be forgotten, which is what keeps the table small.
#[derive(Debug)]
pub struct MessageRates {
    /// Theoretical arrival time of the next message, per (connector, sender).
    tat: HashMap<(u32, Sender), Instant>,
    entries_max: usize,
}

impl Default for MessageRates {
    fn default() -> Self {
        MessageRates::with_capacity(TABLE_ENTRIES_MAX)
    }
}

impl MessageRates {
    /// A table that holds at most `entries_max` senders.
    pub fn with_capacity(entries_max: usize) -> MessageRates {
        assert!(entries_max >= 8, "a rate table needs room to work");
        MessageRates { tat: HashMap::new(), entries_max }
    }

    /// Counts one message for `sender` at `now`. `Err(wait)`: over the rate; nothing is
    /// counted, and a message would be allowed again after `wait`.
    pub fn check(&mut self, connector: usize, sender: Sender, rate: Rate, now: Instant) -> Result<(), Duration> {
        let period = rate.per.get();
        let interval = period / rate.count.max(1);
        // Burst tolerance: `count` messages at once from an idle sender.
        let tolerance = period.saturating_sub(interval);
        let key = (connector as u32, sender);
        let tat = self.tat.get(&key).copied().unwrap_or(now).max(now);
        let debt = tat - now;
        if debt > tolerance {
            return Err(debt - tolerance);
        }
        if !self.tat.contains_key(&key) && self.tat.len() >= self.entries_max {
            self.make_room(now);
        }
        self.tat.insert(key, tat + interval);
        Ok(())
    }

    /// Senders currently tracked.
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    /// No sender is tracked.
    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }

    /// Forgets idle senders; if the table is still too full, forgets the least constrained
    /// quarter as well (they lose at most their own debt, a few messages' worth). Each call
    /// frees at least a quarter of the table, so the O(n) pass is amortised over as many
    /// inserts.
    fn make_room(&mut self, now: Instant) {
        self.tat.retain(|_, tat| *tat > now);
        if self.tat.len() < self.entries_max * 3 / 4 {
            return;
        }
        let mut tats: Vec<Instant> = self.tat.values().copied().collect();
        let cut = tats.len() / 4;
        let (_, threshold, _) = tats.select_nth_unstable(cut);
        let threshold = *threshold;
        self.tat.retain(|_, tat| *tat > threshold);
    }
}

// ---- AUTH lockout ------------------------------------------------------------------------------

/// Failed AUTH attempts per (connector, source) and the lockouts they caused. A failure is
/// remembered for `auth_lockout`; the `max_auth_failures`-th failure within that time locks
/// the source out for `auth_lockout`. A successful AUTH does not clear the count: otherwise an
/// attacker holding one valid account could interleave it with guesses at others.
#[derive(Debug)]
pub struct AuthFailures {
    by_source: HashMap<(u32, IpAddr), Failures>,
    entries_max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// When the first failure counted in `count` happened.
    since: Instant,
    /// Set while locked out.
    locked_until: Option<Instant>,
}

impl Failures {
    /// Nothing about this entry matters any more at `now`.
    fn expired(&self, now: Instant, lockout: Duration) -> bool {
        let unlocked = self.locked_until.is_none_or(|t| t <= now);
        unlocked && self.since + lockout <= now
    }
}

impl Default for AuthFailures {
    fn default() -> Self {
        AuthFailures::with_capacity(TABLE_ENTRIES_MAX)
    }
}

impl AuthFailures {
    /// A table that holds at most `entries_max` sources.
    pub fn with_capacity(entries_max: usize) -> AuthFailures {
        AuthFailures { by_source: HashMap::new(), entries_max }
    }

    /// Is `ip` locked out of AUTH on `connector` at `now`? Forgets the entry once it expired.
    pub fn is_locked(&mut self, connector: usize, ip: IpAddr, limits: &ConnectorLimits, now: Instant) -> bool {
        let key = (connector as u32, lockout_source(ip));
        let Some(f) = self.by_source.get(&key) else { return false };
        if f.expired(now, limits.auth_lockout) {
            self.by_source.remove(&key);
            return false;
        }
        f.locked_until.is_some_and(|t| t > now)
    }

    /// Records a failed AUTH. Returns true when this failure started a lockout.
    pub fn record_failure(&mut self, connector: usize, ip: IpAddr, limits: &ConnectorLimits, now: Instant) -> bool {
        let key = (connector as u32, lockout_source(ip));
        if !self.by_source.contains_key(&key) && self.by_source.len() >= self.entries_max {
            self.make_room(limits.auth_lockout, now);
            if self.by_source.len() >= self.entries_max {
                // Every entry is a live lockout: keep them rather than let one out. This
                // source's failure goes uncounted; argon2 still makes each guess cost.
                return false;
            }
        }
        let f = self.by_source.entry(key).or_insert(Failures { count: 0, since: now, locked_until: None });
        if f.locked_until.is_some_and(|t| t > now) {
            // An attempt that was in flight when the lockout began: the lockout stands.
            return false;
        }
        if f.locked_until.is_some() || f.since + limits.auth_lockout <= now {
            *f = Failures { count: 0, since: now, locked_until: None };
        }
        f.count += 1;
        if f.count >= limits.auth_failures_max.max(1) {
            f.locked_until = Some(now + limits.auth_lockout);
            f.count = 0;
            return true;
        }
        false
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.by_source.len()
    }

    /// No source is tracked.
    pub fn is_empty(&self) -> bool {
        self.by_source.is_empty()
    }

    /// Forgets expired entries, then entries that are not locked out (they only lose a few
    /// counted failures); live lockouts are kept.
    fn make_room(&mut self, lockout: Duration, now: Instant) {
        self.by_source.retain(|_, f| !f.expired(now, lockout));
        if self.by_source.len() >= self.entries_max {
            self.by_source.retain(|_, f| f.locked_until.is_some_and(|t| t > now));
        }
    }

    /// Drops every expired entry (called now and then, so that a quiet relay lets go of old
    /// failures). `lockout_max` is the longest `auth_lockout` of any connector.
    pub fn sweep(&mut self, lockout_max: Duration, now: Instant) {
        self.by_source.retain(|_, f| !f.expired(now, lockout_max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dur;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(auth_failures_max: u32, lockout_s: u64) -> ConnectorLimits {
        ConnectorLimits {
            connections_per_source_max: Some(2),
            message_rate: None,
            auth_failures_max,
            auth_lockout: Duration::from_secs(lockout_s),
        }
    }

    #[test]
    fn connection_slots_per_source_and_connector() {
        let mut c = SourceConnections::default();
        assert!(c.try_acquire(0, ip("10.0.0.1"), 2));
        assert!(c.try_acquire(0, ip("::ffff:10.0.0.1"), 2), "mapped IPv4 is the same client");
        assert!(!c.try_acquire(0, ip("10.0.0.1"), 2), "third is refused");
        assert!(c.try_acquire(1, ip("10.0.0.1"), 2), "another connector counts apart");
        assert!(c.try_acquire(0, ip("10.0.0.2"), 2), "another client counts apart");
        assert_eq!(c.open(0, ip("10.0.0.1")), 2);
        c.release(0, ip("10.0.0.1"));
        assert!(c.try_acquire(0, ip("10.0.0.1"), 2), "a released slot is free again");
        for _ in 0..2 {
            c.release(0, ip("10.0.0.1"));
        }
        c.release(1, ip("10.0.0.1"));
        c.release(0, ip("10.0.0.2"));
        assert!(c.is_empty(), "no entry outlives its connections");
        assert!(!c.try_acquire(0, ip("10.0.0.1"), 0));
        assert!(c.is_empty());
    }

    #[test]
    fn rate_allows_a_burst_then_the_steady_rate() {
        let mut r = MessageRates::default();
        let rate = Rate { count: 3, per: Dur::from_secs(60) };
        let t0 = crate::clock::now();
        let s = Sender::Ip(ip("10.0.0.1"));
        for _ in 0..3 {
            r.check(0, s.clone(), rate, t0).unwrap();
        }
        let wait = r.check(0, s.clone(), rate, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(20), "one message every 20 s");
        assert!(r.check(0, s.clone(), rate, t0 + Duration::from_secs(19)).is_err());
        r.check(0, s.clone(), rate, t0 + Duration::from_secs(20)).unwrap();
        assert!(r.check(0, s.clone(), rate, t0 + Duration::from_secs(20)).is_err());
        // Others are not affected.
        r.check(0, Sender::Ip(ip("10.0.0.2")), rate, t0).unwrap();
        r.check(1, s.clone(), rate, t0).unwrap();
        r.check(0, Sender::User("svc".into()), rate, t0).unwrap();
        // After a full idle period the burst is back.
        let later = t0 + Duration::from_secs(200);
        for _ in 0..3 {
            r.check(0, s.clone(), rate, later).unwrap();
        }
        assert!(r.check(0, s.clone(), rate, later).is_err());
    }

    #[test]
    fn rate_is_exact_against_a_naive_sliding_log_at_full_speed() {
        // A sender that tries every second for ten minutes, under 600/m... scaled to 6/m:
        // GCRA must allow exactly what a naive "count in the last 60 s, burst 6" log allows
        // once in steady state: one per 10 s.
        let mut r = MessageRates::default();
        let rate = Rate { count: 6, per: Dur::from_secs(60) };
        let t0 = crate::clock::now();
        let s = Sender::User("u".into());
        let allowed: Vec<u64> =
            (0..600).filter(|&sec| r.check(0, s.clone(), rate, t0 + Duration::from_secs(sec)).is_ok()).collect();
        assert_eq!(&allowed[..6], &[0, 1, 2, 3, 4, 5], "the burst");
        assert!(allowed[6..].windows(2).all(|w| w[1] - w[0] == 10), "then one per 10 s: {allowed:?}");
        // In any 60 s window no more than count + burst allowance (12) pass, and in steady
        // state exactly 6.
        let in_window = |from: u64| allowed.iter().filter(|&&t| t >= from && t < from + 60).count();
        assert!((0..540).all(|from| in_window(from) <= 12));
        assert_eq!(in_window(300), 6);
    }

    #[test]
    fn rate_table_stays_bounded_under_a_flood_of_sources() {
        let mut r = MessageRates::with_capacity(64);
        let rate = Rate { count: 1, per: Dur::from_secs(3600) };
        let t0 = crate::clock::now();
        for i in 0..10_000u32 {
            let s = Sender::Ip(IpAddr::V4(i.into()));
            r.check(0, s.clone(), rate, t0 + Duration::from_millis(u64::from(i))).unwrap();
            assert!(r.len() <= 64);
        }
        // Idle entries are swept first: after their period every sender is forgotten.
        let mut r = MessageRates::with_capacity(64);
        for i in 0..64u32 {
            r.check(0, Sender::Ip(IpAddr::V4(i.into())), rate, t0).unwrap();
        }
        r.check(0, Sender::Ip(ip("10.9.9.9")), rate, t0 + Duration::from_secs(3601)).unwrap();
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn lockout_after_failures_then_expiry() {
        let mut a = AuthFailures::default();
        let l = limits(3, 300);
        let t0 = crate::clock::now();
        let x = ip("192.0.2.7");
        assert!(!a.record_failure(0, x, &l, t0));
        assert!(!a.record_failure(0, x, &l, t0));
        assert!(!a.is_locked(0, x, &l, t0));
        assert!(a.record_failure(0, x, &l, t0 + Duration::from_secs(1)), "third failure locks");
        assert!(a.is_locked(0, x, &l, t0 + Duration::from_secs(2)));
        assert!(!a.is_locked(1, x, &l, t0 + Duration::from_secs(2)), "per connector");
        assert!(!a.is_locked(0, ip("192.0.2.8"), &l, t0 + Duration::from_secs(2)), "per source");
        // In-flight failures during the lockout do not extend it.
        assert!(!a.record_failure(0, x, &l, t0 + Duration::from_secs(100)));
        assert!(a.is_locked(0, x, &l, t0 + Duration::from_secs(300)));
        assert!(!a.is_locked(0, x, &l, t0 + Duration::from_secs(301)), "lockout ends");
        assert!(a.is_empty(), "and is forgotten");
        // Failures older than the lockout period do not count.
        let t1 = t0 + Duration::from_secs(1000);
        a.record_failure(0, x, &l, t1);
        a.record_failure(0, x, &l, t1);
        assert!(!a.record_failure(0, x, &l, t1 + Duration::from_secs(301)), "the window restarted");
        assert!(!a.is_locked(0, x, &l, t1 + Duration::from_secs(302)));
    }

    #[test]
    fn ipv6_lockout_covers_the_whole_64() {
        let mut a = AuthFailures::default();
        let l = limits(1, 60);
        let t0 = crate::clock::now();
        assert!(a.record_failure(0, ip("2001:db8:1:2::1"), &l, t0));
        assert!(a.is_locked(0, ip("2001:db8:1:2:ffff::9"), &l, t0));
        assert!(!a.is_locked(0, ip("2001:db8:1:3::1"), &l, t0));
        assert!(a.record_failure(0, ip("::ffff:192.0.2.1"), &l, t0));
        assert!(a.is_locked(0, ip("192.0.2.1"), &l, t0), "mapped IPv4 is IPv4");
    }

    #[test]
    fn lockout_table_is_bounded_and_keeps_live_lockouts() {
        let mut a = AuthFailures::with_capacity(16);
        let l = limits(1, 60);
        let t0 = crate::clock::now();
        for i in 0..16u32 {
            assert!(a.record_failure(0, IpAddr::V4(i.into()), &l, t0));
        }
        assert!(!a.record_failure(0, ip("10.0.0.1"), &l, t0), "full of live lockouts: not counted");
        assert_eq!(a.len(), 16);
        assert!(a.is_locked(0, IpAddr::V4(3u32.into()), &l, t0), "and none was let out");
        // Once they expire, room is made.
        assert!(a.record_failure(0, ip("10.0.0.1"), &l, t0 + Duration::from_secs(61)));
        assert_eq!(a.len(), 1);
        a.sweep(Duration::from_secs(60), t0 + Duration::from_secs(200));
        assert!(a.is_empty());
    }
}
