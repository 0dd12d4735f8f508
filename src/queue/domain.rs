//! Per-destination queues and per-host backoff, pure (times are passed in). A delivery core
//! keeps one `DomainQueue` per destination it is responsible for (`policy::route::Destination`:
//! a recipient domain for MX delivery, a connector for smart hosts): the messages ready to go
//! there (each with the recipients routed there, so one transaction carries all of them), and
//! how many connections are working on it. `HostBackoff` keeps dead or refusing hosts from
//! being hammered.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use crate::smtp::envelope::QueueId;

/// A message, or the part of it (its recipients routed to one destination: one domain, or
/// for smart hosts possibly several), waiting for a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The message.
    pub queue_id: QueueId,
    /// Recipient indices (into the envelope), all routed to this destination.
    pub rcpts: Vec<u32>,
    /// Failed attempts so far (drives the retry schedule).
    pub failures: u32,
}

/// The queue of one destination.
#[derive(Debug, Default)]
pub struct DomainQueue {
    /// Ready to send, oldest first.
    pub ready: VecDeque<Item>,
    /// Connection tasks open for this destination (connecting, busy or idle).
    pub connections: usize,
    /// Of those, the ones waiting idle for work.
    pub idle: usize,
    /// Of those, the ones still connecting (not yet ready for a transaction).
    pub connecting: usize,
    /// Connections opened so far (metrics: pooling at work).
    pub opened: u64,
}

/// What the scheduler should do for a destination after its queue changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Nothing to do (no work, or every allowed connection is busy).
    Nothing,
    /// Wake an idle connection: it takes the next item.
    WakeIdle,
    /// Open one more connection.
    Open,
}

impl DomainQueue {
    /// Decides whether to wake an idle connection or open a new one, given the connector's
    /// cap. A new connection is opened only while the ready work outnumbers the busy
    /// connections, so a trickle of mail reuses one connection and a burst fans out to the cap;
    /// and only one at a time is being set up, so a dead destination costs one probe, not a
    /// burst of failing connects.
    pub fn kick(&self, connections_max: usize) -> Kick {
        if self.ready.is_empty() {
            return Kick::Nothing;
        }
        if self.idle > 0 {
            return Kick::WakeIdle;
        }
        let busy = self.connections - self.idle;
        if self.connections < connections_max && self.ready.len() > busy && self.connecting == 0 {
            return Kick::Open;
        }
        Kick::Nothing
    }
}

/// Hosts that failed recently, and until when they are left alone.
#[derive(Debug, Default)]
pub struct HostBackoff {
    hosts: HashMap<SocketAddr, (u64, u32)>,
}

impl HostBackoff {
    /// Is `addr` to be skipped at `now_ms`?
    pub fn is_backed_off(&self, addr: SocketAddr, now_ms: u64) -> bool {
        self.hosts.get(&addr).is_some_and(|&(until, _)| now_ms < until)
    }

    /// Records a failure: the host is left alone for `first_ms` doubling with each
    /// consecutive failure, up to `max_ms`. Returns the time it may be tried again.
    pub fn failed(&mut self, addr: SocketAddr, now_ms: u64, first_ms: u64, max_ms: u64) -> u64 {
        let entry = self.hosts.entry(addr).or_insert((0, 0));
        let shift = entry.1.min(20);
        let delay = first_ms.saturating_mul(1 << shift).min(max_ms.max(first_ms));
        entry.1 = entry.1.saturating_add(1);
        entry.0 = now_ms + delay;
        // Bounded: forget hosts whose backoff ended long ago.
        if self.hosts.len() > 10_000 {
            self.hosts.retain(|_, (until, _)| *until + max_ms > now_ms);
        }
        now_ms + delay
    }

    /// A host worked: forget its failures.
    pub fn succeeded(&mut self, addr: SocketAddr) {
        self.hosts.remove(&addr);
    }

    /// Hosts currently backed off.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// No host is backed off.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u64) -> Item {
        Item { queue_id: QueueId(n), rcpts: vec![0], failures: 0 }
    }

    #[test]
    fn trickle_reuses_burst_fans_out_to_the_cap() {
        let mut q = DomainQueue::default();
        assert_eq!(q.kick(3), Kick::Nothing);
        q.ready.push_back(item(1));
        assert_eq!(q.kick(3), Kick::Open);
        q.connections = 1; // busy with nothing idle, one item ready: one connection suffices
        assert_eq!(q.kick(3), Kick::Nothing);
        q.ready.push_back(item(2));
        q.connecting = 1;
        assert_eq!(q.kick(3), Kick::Nothing, "one connection set up at a time");
        q.connecting = 0;
        assert_eq!(q.kick(3), Kick::Open);
        q.connections = 3;
        for n in 3..100 {
            q.ready.push_back(item(n));
        }
        assert_eq!(q.kick(3), Kick::Nothing, "never past the cap");
        q.idle = 1;
        assert_eq!(q.kick(3), Kick::WakeIdle);
    }

    #[test]
    fn backoff_doubles_caps_and_clears() {
        let mut b = HostBackoff::default();
        let a: SocketAddr = "127.0.0.1:25".parse().unwrap();
        assert!(!b.is_backed_off(a, 0));
        assert_eq!(b.failed(a, 1000, 100, 350), 1100);
        assert!(b.is_backed_off(a, 1099) && !b.is_backed_off(a, 1100));
        assert_eq!(b.failed(a, 2000, 100, 350), 2200);
        assert_eq!(b.failed(a, 3000, 100, 350), 3350, "capped");
        b.succeeded(a);
        assert!(!b.is_backed_off(a, 3001));
        assert!(b.is_empty());
    }
}
