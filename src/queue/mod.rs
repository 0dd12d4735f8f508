//! Delivery-side scheduling, pure with the clock injected (Unix milliseconds in, decisions
//! out): per-domain ready queues and host backoff (`domain`); when a deferred message is tried
//! again, when it has been queued too long, and the set of deferred messages ordered by the
//! time they are due (`retry`). No threads, no timers: the delivery core asks
//! `DeferredSet::next_due_ms` to arm its one timer and `due(now)` when it fires.

pub mod domain;
pub mod retry;

pub use domain::{DomainQueue, HostBackoff, Item, Kick};
pub use retry::{DeferredSet, NextAttempt, RetrySchedule};
