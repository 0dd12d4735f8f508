//! What crosses between cores, and how: crossbeam channels (never a blocking `recv` on an
//! io_uring core) paired with a `Notify` that wakes the receiving core's event loop. These
//! message types are the only shared data between cores; each owns its bytes.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use tokio::sync::Notify;

use crate::config::SendConnector;
use crate::policy::route::{self, Destination};
use crate::smtp::envelope::{Envelope, QueueId};
use crate::spool::SpoolRef;

/// A durable message (or some of its recipients) for a delivery core.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    /// Where the message is; delivery reads envelope and message through it.
    pub spool_ref: SpoolRef,
    /// Indices of the recipients this delivery core is to deliver (all in its destinations).
    pub rcpts: Vec<u32>,
    /// Found by recovery at start: try at once.
    pub recovered: bool,
}

/// From an SMTP core (or the admin endpoint) to a delivery core.
#[derive(Debug)]
pub enum ToDelivery {
    /// Deliver this.
    Job(DeliveryJob),
    /// A question or order from the admin endpoint.
    Admin(AdminRequest),
    /// Finish what is in flight and stop.
    Stop,
}

/// Queue inspection and control, answered by each delivery core for its own domains.
#[derive(Debug)]
pub enum AdminRequest {
    /// One line per destination domain.
    Domains(tokio::sync::oneshot::Sender<Vec<DomainSummary>>),
    /// The messages queued here, optionally only those for one domain.
    Messages {
        /// Only this domain (lowercase).
        domain: Option<String>,
        /// The answer.
        reply: tokio::sync::oneshot::Sender<Vec<MessageSummary>>,
    },
    /// Try now: one message, one domain, or everything deferred.
    Retry {
        /// What to retry.
        target: RetryTarget,
        /// How many queue entries were moved to ready.
        reply: tokio::sync::oneshot::Sender<usize>,
    },
    /// Drop a message's recipients held by this core: FAIL, and a DSN to the sender unless
    /// `bounce` is false.
    Delete {
        /// The message.
        queue_id: QueueId,
        /// Send a DSN.
        bounce: bool,
        /// Recipients dropped here (0: not queued on this core).
        reply: tokio::sync::oneshot::Sender<usize>,
    },
}

/// What `AdminRequest::Retry` applies to.
#[derive(Debug, Clone)]
pub enum RetryTarget {
    /// Every deferred entry.
    All,
    /// The entries of one domain.
    Domain(String),
    /// The entries of one message.
    Message(QueueId),
}

/// Queue state of one destination domain on one delivery core. For a domain routed to smart
/// hosts, the figures are still this domain's own (its recipients, its messages), except
/// `connections`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DomainSummary {
    /// The domain.
    pub domain: String,
    /// Messages with recipients in this domain, ready or deferred.
    pub messages: usize,
    /// Recipients in this domain waiting.
    pub recipients: usize,
    /// Of the messages, those waiting for a retry.
    pub deferred: usize,
    /// Age of the oldest message, milliseconds.
    pub oldest_age_ms: u64,
    /// Open connections of the pool this domain's mail goes through: its own (MX delivery), or
    /// the smart-host connector's, which every domain of that connector shares (and reports).
    pub connections: usize,
}

/// One queued message (its part on one delivery core).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MessageSummary {
    /// Queue id.
    pub queue_id: String,
    /// Envelope sender.
    pub sender: String,
    /// Recipients still to deliver, from this core.
    pub recipients: Vec<String>,
    /// Destination domain of those recipients.
    pub domain: String,
    /// Message size in bytes.
    pub size: u64,
    /// Arrival, Unix milliseconds.
    pub arrival_ms: u64,
    /// Failed attempts.
    pub failures: u32,
    /// Next attempt, Unix milliseconds (None: ready now).
    pub next_attempt_ms: Option<u64>,
    /// The last reply that deferred it.
    pub last_reply: Option<String>,
}

/// From a delivery core to the SMTP core that owns a message's spool.
#[derive(Debug)]
pub enum ToSmtp {
    /// These recipients are finished (delivered, or failed and reported).
    Finished {
        /// The message.
        queue_id: QueueId,
        /// Recipient indices.
        rcpts: Vec<u32>,
    },
    /// Queue a message made by the relay itself (a DSN) durably, then deliver it like any
    /// other; `done` gets its queue id once durable, or None if it could not be stored.
    Inject {
        /// Its envelope; the SMTP core assigns the queue id and arrival time.
        envelope: Box<Envelope>,
        /// The message.
        message: Vec<u8>,
        /// The outcome.
        done: tokio::sync::oneshot::Sender<Option<QueueId>>,
    },
}

/// The sending half: cloneable, `Send`.
pub struct Mailbox<T> {
    tx: Sender<T>,
    wake: Arc<Notify>,
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Self {
        Mailbox { tx: self.tx.clone(), wake: Arc::clone(&self.wake) }
    }
}

impl<T> Mailbox<T> {
    /// Sends and wakes the receiver. False when the receiver is gone.
    pub fn send(&self, message: T) -> bool {
        let ok = self.send_quiet(message);
        self.wake();
        ok
    }

    /// Sends without waking the receiver: for a burst of messages, followed by one `wake`
    /// (waking another core is a syscall and a context switch; one per burst is enough).
    pub fn send_quiet(&self, message: T) -> bool {
        self.tx.send(message).is_ok()
    }

    /// Wakes the receiver.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// No message waiting.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
}

/// The receiving half, owned by one core.
pub struct Inbox<T> {
    rx: Receiver<T>,
    wake: Arc<Notify>,
}

impl<T> Inbox<T> {
    /// Waits for messages and moves up to `max` of them into `out`. Returns false once every
    /// sender is gone and nothing is left.
    pub async fn recv_batch(&self, out: &mut Vec<T>, max: usize) -> bool {
        loop {
            let notified = self.wake.notified();
            loop {
                match self.rx.try_recv() {
                    Ok(m) => {
                        out.push(m);
                        if out.len() >= max {
                            return true;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return !out.is_empty(),
                }
            }
            if !out.is_empty() {
                return true;
            }
            notified.await;
        }
    }

    /// No message waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Takes one message if there is one, without waiting.
    pub fn try_recv(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

/// An unbounded mailbox pair. Backpressure is by queue limits (`452 4.3.1`), not by
/// blocking a sender, which must never happen on an io_uring core.
pub fn mailbox<T>() -> (Mailbox<T>, Inbox<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let wake = Arc::new(Notify::new());
    (Mailbox { tx, wake: Arc::clone(&wake) }, Inbox { rx, wake })
}

/// The delivery core for a destination (`policy::route::Destination`): the same destination
/// always goes to the same core, so that its queue, its connections (and their cap) and its
/// batching live in one place. Every domain routed to a connector's smart hosts is one
/// destination, so all of that connector's mail is delivered by one core.
pub fn delivery_core_for(destination: &Destination, cores: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match destination {
        Destination::Domain(d) => {
            0u8.hash(&mut h);
            for b in d.bytes() {
                b.to_ascii_lowercase().hash(&mut h);
            }
        }
        Destination::SmartHosts(name) => {
            1u8.hash(&mut h);
            name.hash(&mut h);
        }
    }
    (h.finish() % cores.max(1) as u64) as usize
}

/// The delivery core for a recipient domain under `connectors` (what an SMTP core asks when
/// it hands a message off).
pub fn delivery_core_for_domain(connectors: &[SendConnector], domain: &str, cores: usize) -> usize {
    if cores <= 1 {
        return 0;
    }
    delivery_core_for(&route::destination(connectors, domain), cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(d: &str) -> Destination {
        Destination::Domain(d.into())
    }

    #[test]
    fn domains_map_to_cores_stably_and_case_blind() {
        assert_eq!(delivery_core_for(&domain("Example.TEST"), 4), delivery_core_for(&domain("example.test"), 4));
        let spread: std::collections::HashSet<usize> =
            (0..100).map(|i| delivery_core_for(&domain(&format!("d{i}.test")), 4)).collect();
        assert_eq!(spread.len(), 4);
        assert_eq!(delivery_core_for(&domain("x"), 1), 0);
    }

    #[test]
    fn every_domain_of_a_smart_host_connector_goes_to_one_core() {
        let connectors: Vec<SendConnector> = [
            "name = \"m365\"\ndomains = [\"*\"]\nsmart_hosts = [\"smtp.test:587\"]",
            "name = \"mx\"\ndomains = [\"*.mx.test\"]",
        ]
        .iter()
        .map(|t| toml::from_str(t).unwrap())
        .collect();
        let cores: std::collections::HashSet<usize> =
            (0..100).map(|i| delivery_core_for_domain(&connectors, &format!("d{i}.test"), 4)).collect();
        assert_eq!(cores.len(), 1, "one pool, one core: {cores:?}");
        let spread: std::collections::HashSet<usize> =
            (0..100).map(|i| delivery_core_for_domain(&connectors, &format!("d{i}.mx.test"), 4)).collect();
        assert_eq!(spread.len(), 4, "MX domains still spread");
        assert_eq!(
            delivery_core_for_domain(&connectors, "A.MX.test", 4),
            delivery_core_for(&domain("a.mx.test"), 4),
            "the SMTP core and the delivery core agree"
        );
    }
}
