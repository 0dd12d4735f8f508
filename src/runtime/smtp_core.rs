//! One SMTP core: its state (spool, queue-id generator, connection count, per-connector
//! session settings, per-source limit tables, verified-credential cache), its accept loops (one SO_REUSEPORT listener per bind address), the
//! task that takes outcomes and DSNs from delivery cores, and its part of shutdown.
//! Everything here is `!Send` and lives on the core's own thread.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::{Notify, watch};

use super::conn;
use super::handoff::{DeliveryJob, Inbox, Mailbox, ToDelivery, ToSmtp, delivery_core_for_domain};
use super::shared::{Policy, Shared};
use crate::clock::DateCache;
use crate::policy::auth_cache::{AUTH_CACHE_ENTRIES_MAX, AUTH_CACHE_TTL, AuthCache};
use crate::policy::limits::CoreLimits;
use crate::smtp::envelope::{Envelope, QueueIdGen};
use crate::smtp::{QueueId, SessionConfig};
use crate::spool::{RecoveredMessage, Spool, SpoolRef};

/// The state of one SMTP core.
pub struct SmtpCore {
    /// Core number (also the spool directory number).
    pub index: u16,
    /// Read-only state shared by all cores.
    pub shared: Arc<Shared>,
    /// This core's spool.
    pub spool: Spool,
    ids: RefCell<QueueIdGen>,
    dates: DateCache,
    /// Connections and message rates per source, for this core only (never borrowed across
    /// an await).
    pub limits: RefCell<CoreLimits>,
    /// Recently verified AUTH credentials, for this core only.
    pub auth_cache: RefCell<AuthCache>,
    /// The receive-side policy this core serves new connections with (renewed when a SIGHUP
    /// replaced it: `policy()`).
    policy: RefCell<Rc<CorePolicy>>,
    /// Open connections on this core.
    pub connections: Cell<usize>,
    delivery: Vec<Mailbox<ToDelivery>>,
    /// Delivery cores sent to since the last wake (bit i: core i; cores past 63 share bit 63).
    unwoken: Cell<u64>,
    /// Set once shutdown starts.
    pub stopping: Cell<bool>,
    /// Woken when shutdown starts.
    pub stop: Notify,
    /// Set once the shutdown grace period is over: every session still open is told
    /// `421 4.3.2` and its socket shut down.
    pub aborting: Cell<bool>,
    /// Woken when the grace period is over.
    pub abort: Notify,
    /// This core itself, for tasks it spawns.
    me: RefCell<std::rc::Weak<SmtpCore>>,
    /// This core's counters, tracking and protocol log buffers.
    pub obs: Rc<crate::obs::SmtpObs>,
}

/// A receive-side policy as one core holds it: the shared policy, and its session settings
/// as this core's sessions share them. Dereferences to the `Policy`.
pub struct CorePolicy {
    /// `Shared::policy_generation` when it was taken.
    generation: u64,
    policy: Arc<Policy>,
    /// Session settings per receive connector.
    pub session_configs: Vec<Rc<SessionConfig>>,
}

impl CorePolicy {
    fn new(generation: u64, policy: Arc<Policy>) -> CorePolicy {
        let session_configs = policy.session_configs.iter().map(|c| Rc::new(c.clone())).collect();
        CorePolicy { generation, policy, session_configs }
    }

    /// The shared policy, for work that leaves the core (argon2 on the blocking pool).
    pub fn shared(&self) -> &Arc<Policy> {
        &self.policy
    }
}

impl std::ops::Deref for CorePolicy {
    type Target = Policy;
    fn deref(&self) -> &Policy {
        &self.policy
    }
}

impl SmtpCore {
    /// The policy in force, for a new connection to keep to its end. One atomic load when
    /// nothing changed; after a reload, this core's first new connection takes the new one.
    pub fn policy(&self) -> Rc<CorePolicy> {
        let generation = self.shared.policy_generation();
        if self.policy.borrow().generation != generation {
            *self.policy.borrow_mut() = Rc::new(CorePolicy::new(generation, self.shared.policy()));
        }
        Rc::clone(&self.policy.borrow())
    }

    /// A fresh queue id.
    pub fn next_queue_id(&self) -> QueueId {
        self.ids.borrow_mut().next(crate::clock::unix_ms())
    }

    /// Appends the current RFC 5322 date (cached per second) to `out`.
    pub fn write_date(&self, out: &mut Vec<u8>) {
        self.dates.write_rfc5322(crate::clock::unix_ms(), out);
    }

    /// The current RFC 5322 date as a String.
    pub fn date(&self) -> String {
        self.dates.rfc5322(crate::clock::unix_ms())
    }

    /// Hands a durable message to the delivery cores of its recipients' domains: `rcpts` are
    /// indices into `envelope.recipients`. Each delivery core that gets recipients gets one job
    /// with its own list (with one delivery core, the one allocation a hand-off needs: the list
    /// crosses threads).
    pub fn hand_off(
        &self,
        spool_ref: &SpoolRef,
        envelope: &Envelope,
        rcpts: impl Iterator<Item = u32>,
        recovered: bool,
    ) {
        let cores = self.delivery.len();
        let rcpts = rcpts.filter(|&i| (i as usize) < envelope.recipients.len());
        if cores == 1 {
            // One delivery core (the default) takes everything: no route lookup.
            return self.send_job(0, spool_ref, envelope, rcpts.collect(), recovered);
        }
        // Each recipient's delivery core, found once (a route lookup for its domain).
        let connectors = &self.shared.config.send_connectors;
        let mut per_core: Vec<Vec<u32>> = vec![Vec::new(); cores];
        for i in rcpts {
            per_core[delivery_core_for_domain(connectors, envelope.recipients[i as usize].domain(), cores)].push(i);
        }
        for (core, rcpts) in per_core.into_iter().enumerate() {
            if !rcpts.is_empty() {
                self.send_job(core, spool_ref, envelope, rcpts, recovered);
            }
        }
    }

    /// Sends delivery core `core` the job for `rcpts` of the message, and schedules its wake.
    fn send_job(&self, core: usize, spool_ref: &SpoolRef, envelope: &Envelope, rcpts: Vec<u32>, recovered: bool) {
        let job = DeliveryJob { spool_ref: spool_ref.clone(), rcpts, recovered };
        if !self.delivery[core].send_quiet(ToDelivery::Job(job)) {
            tracing::error!(queue_id = %envelope.queue_id, "delivery core {core} is gone; the message stays queued");
        }
        self.schedule_wake(core);
    }

    /// Wakes the delivery cores sent to, once, after every task woken by the same spool batch
    /// has handed off its message: a task queued now runs after them.
    fn schedule_wake(&self, core: usize) {
        let before = self.unwoken.get();
        self.unwoken.set(before | (1u64 << core.min(63)));
        if before != 0 {
            return; // a wake is already scheduled
        }
        let Some(me) = self.me.borrow().upgrade() else { return self.wake_delivery() };
        tokio_uring::spawn(async move { me.wake_delivery() });
    }

    fn wake_delivery(&self) {
        let bits = self.unwoken.replace(0);
        for (i, mailbox) in self.delivery.iter().enumerate() {
            if bits & (1u64 << i.min(63)) != 0 {
                mailbox.wake();
            }
        }
    }

    /// Messages waiting in delivery inboxes (a cheap backpressure signal).
    pub fn delivery_backlog(&self) -> usize {
        self.delivery.iter().map(Mailbox::len).sum()
    }
}

/// What a core thread is given at start.
pub struct CoreStart {
    /// Core number.
    pub index: u16,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The listeners of this core: (configured address, socket).
    pub listeners: Vec<(SocketAddr, std::net::TcpListener)>,
    /// What recovery found for this core, and orphan directories it adopts.
    pub recovered: crate::spool::Recovered,
    /// Orphans.
    pub adopted: Vec<(std::path::PathBuf, crate::spool::Recovered)>,
    /// Delivery mailboxes, one per delivery core.
    pub delivery: Vec<Mailbox<ToDelivery>>,
    /// This core's inbox from delivery.
    pub inbox: Inbox<ToSmtp>,
    /// Shutdown phase: `RUNNING`, then `DRAIN` (stop accepting, finish sessions, say so on
    /// `drained`), then `FINAL` (delivery cores have stopped: record their last outcomes, close
    /// the spool, return).
    pub shutdown: watch::Receiver<u8>,
    /// Told this core's number once its sessions are done.
    pub drained: crossbeam_channel::Sender<u16>,
    /// Tests only: hold spool commits until permits are added (see `SpoolOptions::gate`).
    #[doc(hidden)]
    pub spool_gate: Option<Arc<tokio::sync::Semaphore>>,
    /// This core's counters and log buffers.
    pub obs: crate::obs::SmtpObs,
}

/// Shutdown phases (see `CoreStart::shutdown`).
pub const RUNNING: u8 = 0;
/// Stop accepting and finish the sessions in flight.
pub const DRAIN: u8 = 1;
/// Delivery has stopped: record its outcomes, close the spool.
pub const FINAL: u8 = 2;

/// Runs an SMTP core until shutdown completes. Call on the core's thread, inside tokio-uring.
pub async fn run(start: CoreStart) -> std::io::Result<()> {
    let CoreStart {
        index,
        shared,
        listeners,
        recovered,
        adopted,
        delivery,
        inbox,
        mut shutdown,
        drained,
        spool_gate,
        obs,
    } = start;
    let config = &shared.config;
    let floor = recovered.max_queue_id.max(QueueId(recovered.newest_created_ms << 22));
    let floor = adopted.iter().map(|(_, r)| r.max_queue_id).fold(floor, QueueId::max);
    let opts = crate::spool::SpoolOptions {
        dir: crate::spool::core_dir(&config.spool.dir, index),
        core: index,
        fsync: config.spool.fsync,
        segment_bytes: config.spool.segment_size.0,
        max_messages: config.spool.max_messages,
        max_bytes: config.spool.max_bytes.0,
        min_free_disk: config.spool.min_free_disk.0,
        gate: spool_gate,
    };
    let (spool, live) = Spool::open(opts, recovered, adopted)?;
    let core = Rc::new(SmtpCore {
        index,
        policy: RefCell::new(Rc::new(CorePolicy::new(shared.policy_generation(), shared.policy()))),
        shared: Arc::clone(&shared),
        spool,
        ids: RefCell::new(QueueIdGen::new(queue_id_core(index), floor)),
        dates: DateCache::default(),
        limits: RefCell::new(CoreLimits::default()),
        auth_cache: RefCell::new(AuthCache::new(AUTH_CACHE_TTL, AUTH_CACHE_ENTRIES_MAX)),
        connections: Cell::new(0),
        delivery,
        unwoken: Cell::new(0),
        stopping: Cell::new(false),
        stop: Notify::new(),
        aborting: Cell::new(false),
        abort: Notify::new(),
        me: RefCell::new(std::rc::Weak::new()),
        obs: Rc::new(obs),
    });
    *core.me.borrow_mut() = Rc::downgrade(&core);
    let obs_task = tokio_uring::spawn(obs_tick(Rc::clone(&core)));
    if !live.is_empty() {
        tracing::info!(core = index, messages = live.len(), "recovered queued messages; delivering them now");
    }
    for m in live {
        let RecoveredMessage { spool_ref, envelope, pending, .. } = m;
        core.hand_off(&spool_ref, &envelope, pending.iter().copied(), true);
    }
    let inbox = Rc::new(inbox);
    let inbox_task = tokio_uring::spawn(inbox_loop(Rc::clone(&core), Rc::clone(&inbox)));
    let mut accepts = Vec::new();
    let mut listener_fds = Vec::new();
    for (bind, std_listener) in listeners {
        let listener = tokio_uring::net::TcpListener::from_std(std_listener);
        listener_fds.push(listener.as_raw_fd());
        accepts.push(tokio_uring::spawn(accept_loop(Rc::clone(&core), listener, bind)));
    }
    wait_phase(&mut shutdown, DRAIN).await;
    core.stopping.set(true);
    core.stop.notify_waiters();
    // Wake the pending accepts: shutdown(2) on a listening socket makes accept fail.
    for fd in listener_fds {
        // SAFETY: the listeners are alive (their accept tasks hold them); shutdown only
        // changes socket state and does not close the descriptor.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
    for a in accepts {
        let _ = a.await;
    }
    // Sessions in flight finish, within the grace period.
    let grace = config.limits.shutdown_grace.get();
    let deadline = crate::clock::now() + grace;
    while core.connections.get() > 0 && crate::clock::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if core.connections.get() > 0 {
        tracing::warn!(
            core = index,
            sessions = core.connections.get(),
            grace = ?grace,
            "shutdown grace over; telling the remaining sessions 421 4.3.2 and closing them"
        );
        core.aborting.set(true);
        core.abort.notify_waiters();
        // Each session sends its 421 (bounded by ABORT_WRITE_TIMEOUT) and shuts its socket
        // down; a spool append in progress finishes first (it is never abandoned).
        let deadline = crate::clock::now() + 2 * conn::ABORT_WRITE_TIMEOUT + std::time::Duration::from_secs(1);
        while core.connections.get() > 0 && crate::clock::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if core.connections.get() > 0 {
            tracing::warn!(core = index, sessions = core.connections.get(), "sessions still closing at exit");
        }
    }
    let _ = drained.send(index);
    // Delivery cores finish their transactions and report; their outcomes go to this spool.
    wait_phase(&mut shutdown, FINAL).await;
    while !inbox.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    core.spool.close().await;
    inbox_task.abort();
    obs_task.abort();
    core.obs.flush();
    Ok(())
}

/// The core number queue ids carry. `Config::smtp_cores` never runs more than
/// `SMTP_CORES_MAX` cores, so every core has its own; anything else would let ids collide.
fn queue_id_core(index: u16) -> u8 {
    assert!(usize::from(index) < crate::config::SMTP_CORES_MAX, "SMTP core {index} past SMTP_CORES_MAX");
    u8::try_from(index).expect("below SMTP_CORES_MAX")
}

/// Every `obs::FLUSH_TICK`: hands log lines to the writer and refreshes the spool gauges.
async fn obs_tick(core: Rc<SmtpCore>) {
    loop {
        tokio::time::sleep(crate::obs::FLUSH_TICK).await;
        core.obs.flush();
        let stats = core.spool.stats();
        core.obs.metrics.spool_bytes.set(stats.bytes);
        core.obs.metrics.spool_messages.set(stats.live_messages);
        core.obs.metrics.spool_batches.set(stats.batches);
        core.obs.metrics.spool_syncs.set(stats.syncs);
    }
}

async fn wait_phase(shutdown: &mut watch::Receiver<u8>, phase: u8) {
    while *shutdown.borrow() < phase {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

async fn accept_loop(core: Rc<SmtpCore>, listener: tokio_uring::net::TcpListener, bind: SocketAddr) {
    let cap = core.shared.config.limits.max_connections_per_core;
    loop {
        let accepted = listener.accept().await;
        if core.stopping.get() {
            return;
        }
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(core = core.index, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if core.connections.get() >= cap {
            core.obs.refused_core_full();
            tokio_uring::spawn(conn::refuse(tcp, crate::smtp::reply::TOO_MANY_CONNECTIONS));
            continue;
        }
        core.connections.set(core.connections.get() + 1);
        let c = Rc::clone(&core);
        tokio_uring::spawn(async move {
            conn::serve(Rc::clone(&c), tcp, peer, bind).await;
            c.connections.set(c.connections.get() - 1);
        });
    }
}

/// Takes outcomes and DSNs from delivery cores.
async fn inbox_loop(core: Rc<SmtpCore>, inbox: Rc<Inbox<ToSmtp>>) {
    let mut batch = Vec::with_capacity(256);
    while inbox.recv_batch(&mut batch, 256).await {
        for m in batch.drain(..) {
            match m {
                ToSmtp::Finished { queue_id, rcpts } => core.spool.record_finished(queue_id, &rcpts),
                ToSmtp::Inject { mut envelope, message, done } => {
                    let c = Rc::clone(&core);
                    envelope.queue_id = c.next_queue_id();
                    envelope.received_at_ms = crate::clock::unix_ms();
                    tokio_uring::spawn(async move {
                        let result = c.spool.append(&envelope, &message).await;
                        let queued = match result {
                            Ok(r) => {
                                c.hand_off(&r, &envelope, 0..envelope.recipients.len() as u32, false);
                                Some(envelope.queue_id)
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "cannot queue a DSN");
                                None
                            }
                        };
                        let _ = done.send(queued);
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SMTP_CORES_MAX, smtp_cores_for};

    /// `cores.smtp = 0` on a host with more CPUs than queue ids have core numbers: capped, so
    /// every core's ids carry a core number of their own.
    #[test]
    fn smtp_cores_are_capped_so_queue_ids_never_collide() {
        assert_eq!(smtp_cores_for(0, 1, 2), 1);
        assert_eq!(smtp_cores_for(0, 1, 1), 1, "at least one");
        assert_eq!(smtp_cores_for(0, 4, 300), SMTP_CORES_MAX);
        assert_eq!(smtp_cores_for(0, 1, 1024), SMTP_CORES_MAX);
        assert_eq!(smtp_cores_for(0, 1, 256), SMTP_CORES_MAX);
        assert_eq!(smtp_cores_for(0, 1, 255), 254);
        assert_eq!(smtp_cores_for(7, 1, 1024), 7, "an explicit figure is kept (check-config bounds it)");
        let cores = smtp_cores_for(0, 1, 4096);
        let ids: std::collections::HashSet<QueueId> = (0..cores as u16)
            .map(|i| QueueIdGen::new(queue_id_core(i), QueueId::default()).next(1_764_000_000_000))
            .collect();
        assert_eq!(ids.len(), cores, "the first id of every core is distinct");
        for i in 0..cores as u16 {
            assert_eq!(usize::from(queue_id_core(i)), usize::from(i));
        }
    }
}
