//! The retry schedule of a send connector (`retry = { first, max, expire }`) as pure functions
//! of times passed in, and the deferred set: messages (or recipients) waiting for their next
//! attempt, ordered by due time, with `due(now)` handing out what is ready.
//!
//! Schedule: after the n-th failed attempt the next one is `first * 2^(n-1)` later, capped at
//! `max`; a message queued for `expire` or longer is given up (bounced). The last retry is
//! pulled in to the expiry instant, so a message is always tried once more at the end of its
//! lifetime instead of expiring in the middle of a long back-off.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::time::Duration;

use crate::config::Retry;

/// A connector's retry schedule, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySchedule {
    first_ms: u64,
    max_ms: u64,
    expire_ms: u64,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextAttempt {
    /// Try again at this Unix time (ms).
    RetryAt {
        /// When.
        due_ms: u64,
    },
    /// The message has been queued for `expire`: fail it (bounce).
    Expire,
}

impl RetrySchedule {
    /// A schedule. `config::validate` guarantees `0 < first <= max <= expire` for configured
    /// connectors; here a zero `first` is raised to 1 ms and `max` to at least `first`, so the
    /// arithmetic below cannot stall or go backwards.
    pub fn new(first: Duration, max: Duration, expire: Duration) -> RetrySchedule {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let first_ms = ms(first).max(1);
        RetrySchedule { first_ms, max_ms: ms(max).max(first_ms), expire_ms: ms(expire) }
    }

    /// The schedule of a `[[send_connector]]`.
    pub fn from_config(retry: &Retry) -> RetrySchedule {
        RetrySchedule::new(retry.first.get(), retry.max.get(), retry.expire.get())
    }

    /// The delay after `failures` failed attempts: 0 before any, then `first`, doubling, capped
    /// at `max`. Never overflows.
    pub fn delay_ms(&self, failures: u32) -> u64 {
        if failures == 0 {
            return 0;
        }
        let doublings = failures - 1;
        if doublings >= 64 {
            return self.max_ms;
        }
        self.first_ms.checked_mul(1u64 << doublings).map_or(self.max_ms, |d| d.min(self.max_ms))
    }

    /// When a message that arrived at `arrival_ms` expires.
    pub fn expires_at_ms(&self, arrival_ms: u64) -> u64 {
        arrival_ms.saturating_add(self.expire_ms)
    }

    /// Has a message that arrived at `arrival_ms` been queued for `expire` or longer?
    pub fn is_expired(&self, arrival_ms: u64, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms(arrival_ms)
    }

    /// After the `failures`-th failed attempt (counting this one) at `now_ms`: when to try
    /// again, or to give up. The retry is never later than the expiry instant.
    pub fn after_failure(&self, arrival_ms: u64, now_ms: u64, failures: u32) -> NextAttempt {
        if self.is_expired(arrival_ms, now_ms) {
            return NextAttempt::Expire;
        }
        let due_ms = now_ms.saturating_add(self.delay_ms(failures)).min(self.expires_at_ms(arrival_ms));
        NextAttempt::RetryAt { due_ms }
    }
}

/// Is a delay notice due? Once (the caller remembers `already_sent`), when a message has
/// waited `warn_after` (`[delivery] delay_warning`) and is still not delivered.
pub fn delay_notice_due(arrival_ms: u64, now_ms: u64, warn_after: Duration, already_sent: bool) -> bool {
    let warn_ms = u64::try_from(warn_after.as_millis()).unwrap_or(u64::MAX);
    !already_sent && now_ms >= arrival_ms.saturating_add(warn_ms)
}

struct Entry<T> {
    due_ms: u64,
    /// Insertion order: items due at the same instant come out first-in, first-out.
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.due_ms, self.seq) == (other.due_ms, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    /// Reversed: `BinaryHeap` is a max-heap and we want the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due_ms, other.seq).cmp(&(self.due_ms, self.seq))
    }
}

/// Items waiting for a time, earliest first (ties in insertion order), bounded to `len_max`.
pub struct DeferredSet<T> {
    heap: BinaryHeap<Entry<T>>,
    next_seq: u64,
    len_max: usize,
}

impl<T> std::fmt::Debug for DeferredSet<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredSet")
            .field("len", &self.heap.len())
            .field("len_max", &self.len_max)
            .field("next_due_ms", &self.next_due_ms())
            .finish()
    }
}

impl<T> DeferredSet<T> {
    /// An empty set that holds at most `len_max` items (the spool's `max_messages` is the
    /// natural bound).
    pub fn new(len_max: usize) -> DeferredSet<T> {
        DeferredSet { heap: BinaryHeap::new(), next_seq: 0, len_max }
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The bound.
    pub fn len_max(&self) -> usize {
        self.len_max
    }

    /// Adds `item`, due at `due_ms`. When the set is full the item is handed back.
    pub fn push(&mut self, due_ms: u64, item: T) -> Result<(), T> {
        if self.heap.len() >= self.len_max {
            return Err(item);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { due_ms, seq, item });
        Ok(())
    }

    /// When the earliest item is due: arm the timer for this.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.heap.peek().map(|e| e.due_ms)
    }

    /// Takes the earliest item if it is due at `now_ms`.
    pub fn pop_due(&mut self, now_ms: u64) -> Option<T> {
        if self.heap.peek()?.due_ms > now_ms {
            return None;
        }
        self.heap.pop().map(|e| e.item)
    }

    /// Takes every item due at `now_ms`, earliest first.
    pub fn due(&mut self, now_ms: u64) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(move || self.pop_due(now_ms))
    }

    /// Keeps only the items for which `keep` is true (`queue delete`); returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> usize {
        let before = self.heap.len();
        self.heap.retain(|e| keep(&e.item));
        before - self.heap.len()
    }

    /// Makes the items for which `pick` is true due at `due_ms` (`queue retry`, or a recovered
    /// destination); returns how many. Items keep their relative order.
    pub fn reschedule(&mut self, mut pick: impl FnMut(&T) -> bool, due_ms: u64) -> usize {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        let mut n = 0;
        for e in entries.iter_mut().filter(|e| pick(&e.item)) {
            e.due_ms = due_ms;
            n += 1;
        }
        self.heap = BinaryHeap::from(entries);
        n
    }

    /// Every item with its due time, in no particular order (`GET /queue`).
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.heap.iter().map(|e| (e.due_ms, &e.item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn schedule() -> RetrySchedule {
        // 1m, 1h, 2d: the spec's example.
        RetrySchedule::new(Duration::from_secs(60), Duration::from_secs(3600), Duration::from_secs(2 * 86400))
    }

    #[test]
    fn delay_doubles_up_to_max() {
        let s = schedule();
        let minutes: Vec<u64> = (0..10).map(|n| s.delay_ms(n) / 60_000).collect();
        assert_eq!(minutes, [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(s.delay_ms(64), 3_600_000);
        assert_eq!(s.delay_ms(u32::MAX), 3_600_000, "no overflow");
        let huge = RetrySchedule::new(Duration::from_secs(u64::MAX / 1000), Duration::MAX, Duration::MAX);
        assert_eq!(huge.delay_ms(3), huge.max_ms, "a multiplication that overflows caps at max");
    }

    #[test]
    fn degenerate_settings_are_made_safe() {
        let s = RetrySchedule::new(Duration::ZERO, Duration::ZERO, Duration::from_secs(10));
        assert_eq!((s.delay_ms(1), s.delay_ms(5)), (1, 1));
    }

    #[test]
    fn expiry_and_the_last_attempt_at_the_deadline() {
        let s = schedule();
        let arrival = 1_000_000;
        let expires = arrival + 2 * 86_400_000;
        assert_eq!(s.expires_at_ms(arrival), expires);
        assert!(!s.is_expired(arrival, expires - 1));
        assert!(s.is_expired(arrival, expires));
        assert_eq!(s.after_failure(arrival, arrival + 5, 1), NextAttempt::RetryAt { due_ms: arrival + 5 + 60_000 });
        // A back-off that would pass the deadline is pulled in to it...
        assert_eq!(s.after_failure(arrival, expires - 1000, 30), NextAttempt::RetryAt { due_ms: expires });
        // ...and the attempt at the deadline that fails expires the message.
        assert_eq!(s.after_failure(arrival, expires, 31), NextAttempt::Expire);
        assert_eq!(
            RetrySchedule::new(Duration::from_secs(1), Duration::from_secs(1), Duration::MAX).expires_at_ms(5),
            u64::MAX
        );
    }

    #[test]
    fn from_config_uses_the_connector_values() {
        let r = Retry { first: "30s".parse().unwrap(), max: "10m".parse().unwrap(), expire: "1d".parse().unwrap() };
        let s = RetrySchedule::from_config(&r);
        assert_eq!((s.delay_ms(1), s.delay_ms(10)), (30_000, 600_000));
        assert_eq!(s.expires_at_ms(0), 86_400_000);
    }

    #[test]
    fn delay_notice_once_after_the_warning_time() {
        let four_hours = Duration::from_secs(4 * 3600);
        assert!(!delay_notice_due(0, 4 * 3_600_000 - 1, four_hours, false));
        assert!(delay_notice_due(0, 4 * 3_600_000, four_hours, false));
        assert!(!delay_notice_due(0, 5 * 3_600_000, four_hours, true));
    }

    #[test]
    fn deferred_set_orders_by_due_then_insertion() {
        let mut d = DeferredSet::new(10);
        d.push(30, "c").unwrap();
        d.push(10, "a").unwrap();
        d.push(20, "b1").unwrap();
        d.push(20, "b2").unwrap();
        assert_eq!(d.next_due_ms(), Some(10));
        assert_eq!(d.pop_due(9), None);
        assert_eq!(d.due(20).collect::<Vec<_>>(), ["a", "b1", "b2"]);
        assert_eq!(d.next_due_ms(), Some(30));
        assert_eq!(d.len(), 1);
        assert_eq!(d.due(1000).collect::<Vec<_>>(), ["c"]);
        assert!(d.is_empty() && d.next_due_ms().is_none());
    }

    #[test]
    fn deferred_set_is_bounded() {
        let mut d = DeferredSet::new(2);
        d.push(1, 1).unwrap();
        d.push(1, 2).unwrap();
        assert_eq!(d.push(1, 3), Err(3));
        assert_eq!(d.len_max(), 2);
    }

    #[test]
    fn retain_and_reschedule_for_queue_control() {
        let mut d = DeferredSet::new(10);
        for (due, id) in [(100, 1), (200, 2), (300, 3), (400, 4)] {
            d.push(due, id).unwrap();
        }
        assert_eq!(d.retain(|&id| id != 2), 1);
        assert_eq!(d.reschedule(|&id| id >= 3, 50), 2);
        assert_eq!(d.due(50).collect::<Vec<_>>(), [3, 4], "rescheduled items keep their order");
        let mut left: Vec<_> = d.iter().map(|(due, &id)| (due, id)).collect();
        left.sort();
        assert_eq!(left, [(100, 1)]);
    }

    proptest! {
        /// Against a naive oracle: a Vec scanned for the smallest (due, seq) each time.
        #[test]
        fn deferred_set_matches_naive(
            ops in proptest::collection::vec((any::<bool>(), 0u64..50), 0..200),
        ) {
            let mut d = DeferredSet::new(usize::MAX);
            let mut naive: Vec<(u64, u64)> = Vec::new(); // (due, id) in insertion order
            let mut now = 0;
            let mut id = 0;
            for (push, t) in ops {
                if push {
                    d.push(now + t, id).unwrap();
                    naive.push((now + t, id));
                    id += 1;
                } else {
                    now += t;
                    let got: Vec<u64> = d.due(now).collect();
                    let mut want = Vec::new();
                    loop {
                        let best = naive.iter().enumerate().filter(|(_, e)| e.0 <= now).min_by_key(|(i, e)| (e.0, *i));
                        let Some((i, _)) = best else { break };
                        want.push(naive.remove(i).1);
                    }
                    prop_assert_eq!(got, want);
                }
                prop_assert_eq!(d.len(), naive.len());
                prop_assert_eq!(d.next_due_ms(), naive.iter().map(|e| e.0).min());
            }
        }
    }
}
