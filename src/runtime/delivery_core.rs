//! A delivery core: takes durable messages from the SMTP cores, keeps one ready queue per
//! destination (`policy::route::Destination`: a recipient domain for MX delivery, a connector
//! for smart hosts), opens pooled outbound connections (`outbound`) up to the connector's cap,
//! retries on schedule, sends DSNs (queued durably through the owning SMTP core), and reports
//! finished recipients back to that core's spool. Answers the admin endpoint's queue questions
//! (per recipient domain). All state is this thread's (`Rc`/`RefCell`, never borrowed across
//! `.await`); message bytes are read through io_uring (`content`), never with a blocking read.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::Notify;

use super::content::{self, Content, SegmentFiles};
use super::handoff::{
    AdminRequest, DeliveryJob, DomainSummary, Inbox, Mailbox, MessageSummary, RetryTarget, ToDelivery, ToSmtp,
};
use super::outbound;
use super::shared::Shared;
use crate::config::{SendConnector, SmartHostAuth};
use crate::delivery::client::{
    ClientConfig, Credentials, RecipientOutcome, RecipientStatus, TRANSACTION_RECIPIENTS_MAX,
};
use crate::delivery::dsn::{self, DeliveryEvent, DsnSettings, RecipientReport};
use crate::delivery::reply::{self as replies, Response};
use crate::policy::route::{self, Destination, Failure, Router, Verdict};
use crate::queue::{DeferredSet, DomainQueue, HostBackoff, Item, Kick, NextAttempt, RetrySchedule};
use crate::smtp::envelope::{Envelope, Notify as DsnNotify, QueueId, Recipient};
use crate::spool::SpoolRef;

/// Deferred entries a core keeps (beyond it, entries are retried at once rather than lost).
const DEFERRED_MAX: usize = 10_000_000;
/// Records at most this big are kept in memory between intake and delivery.
const CACHE_MESSAGE_MAX: usize = 64 * 1024;
/// Memory for cached messages, per delivery core.
const CACHE_BYTES_MAX: usize = 256 << 20;
/// Unreachable destinations remembered at once (expired ones are pruned past it).
const DOWN_DOMAINS_MAX: usize = 100_000;
/// A message whose record could not be read at intake is tried again this much later.
const INTAKE_RETRY: Duration = Duration::from_secs(60);

/// What a delivery core is given at start.
pub struct DeliveryStart {
    /// Delivery core number.
    pub index: usize,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Jobs and control.
    pub inbox: Inbox<ToDelivery>,
    /// Mailboxes of the SMTP cores, by core number (outcomes go to a message's owner).
    pub smtp: Vec<Mailbox<ToSmtp>>,
    /// This core's counters and tracking log buffer.
    pub obs: crate::obs::DeliveryObs,
}

/// A message this core holds recipients of.
pub(crate) struct Msg {
    pub(crate) spool_ref: SpoolRef,
    pub(crate) envelope: Rc<Envelope>,
    /// Its bytes: in memory for small messages until first deferred, else in the spool.
    content: Content,
    /// Its segment file, for io_uring reads once it is no longer in memory.
    file: Rc<tokio_uring::fs::File>,
    /// It needs SMTPUTF8 on the next hop.
    smtputf8: bool,
    /// Its content holds 8-bit octets (None: not known yet; see `content::Intake`).
    eight_bit: Option<bool>,
    /// Recipients of this message this core has not finished.
    open: u32,
    /// Recipients (by index) that were sent their DELAY notice, or have one being queued.
    /// Kept in memory only: after a restart a recipient may get a second one (at-least-once).
    delay_notified: Vec<bool>,
    last_reply: Option<String>,
    /// Its `Message-ID` and size, for tracking events.
    message_id: Option<Rc<str>>,
    size: u64,
}

/// What a connection needs to send one message.
pub(crate) struct Prepared {
    /// The envelope.
    pub(crate) envelope: Rc<Envelope>,
    /// Where the bytes are.
    pub(crate) content: Content,
    /// It needs SMTPUTF8.
    pub(crate) smtputf8: bool,
    /// Its content holds 8-bit octets (None: not looked at yet).
    pub(crate) eight_bit: Option<bool>,
}

struct State {
    messages: HashMap<QueueId, Msg>,
    queues: HashMap<Destination, DomainQueue>,
    work: HashMap<Destination, Rc<Notify>>,
    deferred: DeferredSet<(Destination, Item)>,
    backoff: HostBackoff,
    /// Destinations found unreachable, until when, and the reply that said so: mail for them
    /// is deferred without a connection attempt until then (one probe, not one per message).
    down: HashMap<Destination, (u64, Response)>,
    cache_bytes: usize,
    files: SegmentFiles,
}

/// What becomes of the recipients a DSN reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterNotice {
    /// They stay queued (a delay notice). If the notice cannot be queued, their next deferral
    /// tries again.
    StayQueued,
    /// Finished once the notice is durable (failed, or relayed). If it cannot be queued, they
    /// are deferred with `451 4.3.0` and tried again, notice and all: a repeated delivery
    /// attempt rather than a lost notice.
    FinishOrRetry,
    /// Finished once the notice is durable, or anyway if it cannot be queued (deleted by the
    /// administrator: never delivered again).
    Finish,
}

/// A DSN to build: the message it reports on, and how.
struct DsnJob<'a> {
    envelope: &'a Envelope,
    content: &'a Content,
    action: dsn::Action,
    reports: &'a [(u32, Response)],
    will_retry_until_ms: Option<u64>,
}

/// The delivery core's state.
pub(crate) struct Core {
    pub(crate) index: usize,
    pub(crate) shared: Arc<Shared>,
    smtp: Vec<Mailbox<ToSmtp>>,
    pub(crate) router: Router,
    pub(crate) resolver: Resolver<TokioRuntimeProvider>,
    clients: RefCell<HashMap<String, Rc<ClientConfig>>>,
    plain_clients: RefCell<HashMap<String, Rc<ClientConfig>>>,
    verified_tls: RefCell<HashMap<String, Arc<rustls::ClientConfig>>>,
    pub(crate) opportunistic_tls: Arc<rustls::ClientConfig>,
    state: RefCell<State>,
    timer: Notify,
    pub(crate) stopping: Cell<bool>,
    pub(crate) stop: Notify,
    smtp_unwoken: Cell<u64>,
    me: RefCell<Weak<Core>>,
    /// Counters (read by the admin thread) and the tracking log.
    obs: crate::obs::DeliveryObs,
}

/// Runs a delivery core until told to stop.
pub async fn run(start: DeliveryStart) -> std::io::Result<()> {
    let DeliveryStart { index, shared, inbox, smtp, obs } = start;
    let resolver = build_resolver(&shared).map_err(std::io::Error::other)?;
    let core = Rc::new(Core {
        index,
        router: Router::from_config(&shared.config),
        shared,
        smtp,
        resolver,
        clients: RefCell::new(HashMap::new()),
        plain_clients: RefCell::new(HashMap::new()),
        verified_tls: RefCell::new(HashMap::new()),
        opportunistic_tls: crate::tls::opportunistic_client_config(),
        state: RefCell::new(State {
            messages: HashMap::new(),
            queues: HashMap::new(),
            work: HashMap::new(),
            deferred: DeferredSet::new(DEFERRED_MAX),
            backoff: HostBackoff::default(),
            down: HashMap::new(),
            cache_bytes: 0,
            files: SegmentFiles::default(),
        }),
        timer: Notify::new(),
        stopping: Cell::new(false),
        stop: Notify::new(),
        smtp_unwoken: Cell::new(0),
        me: RefCell::new(Weak::new()),
        obs,
    });
    *core.me.borrow_mut() = Rc::downgrade(&core);
    let timer = tokio_uring::spawn(timer_loop(Rc::clone(&core)));
    let obs_tick = tokio_uring::spawn(obs_tick(Rc::clone(&core)));
    let mut batch = Vec::with_capacity(256);
    'inbox: while inbox.recv_batch(&mut batch, 256).await {
        for m in batch.drain(..) {
            match m {
                // Awaited: intake reads the record's head through io_uring (the core runs on
                // meanwhile), and jobs are taken in the order they came.
                ToDelivery::Job(job) => core.take_job(job).await,
                ToDelivery::Admin(req) => core.admin(req),
                ToDelivery::Stop => break 'inbox,
            }
        }
    }
    core.stopping.set(true);
    core.stop.notify_waiters();
    core.timer.notify_one();
    // Transactions in flight finish (bounded by the shutdown grace); idle connections QUIT.
    let deadline = crate::clock::now() + core.shared.config.limits.shutdown_grace.get();
    while core.open_connections() > 0 && crate::clock::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    timer.abort();
    obs_tick.abort();
    core.wake_smtp();
    core.obs.tracking.flush();
    Ok(())
}

/// Every `obs::FLUSH_TICK`: hands tracking lines to the log writer.
async fn obs_tick(core: Rc<Core>) {
    loop {
        tokio::time::sleep(crate::obs::FLUSH_TICK).await;
        core.obs.tracking.flush();
    }
}

fn build_resolver(shared: &Shared) -> Result<Resolver<TokioRuntimeProvider>, String> {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
    let timeout = shared.config.dns.as_ref().map_or(Duration::from_secs(5), |d| d.timeout.get());
    match &shared.config.dns {
        Some(dns) => {
            let servers = dns
                .nameservers
                .iter()
                .map(|sa| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = sa.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = sa.port();
                    NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut opts = ResolverOpts::default();
            opts.timeout = timeout;
            opts.attempts = 2;
            opts.cache_size = 4096;
            Resolver::builder_with_config(ResolverConfig::from_name_servers(servers), TokioRuntimeProvider::default())
                .with_options(opts)
                .build()
                .map_err(|e| format!("DNS resolver: {e}"))
        }
        None => {
            let mut b = Resolver::builder_tokio()
                .map_err(|e| format!("cannot read /etc/resolv.conf: {e}; set [dns] nameservers"))?;
            b.options_mut().timeout = timeout;
            b.options_mut().cache_size = 4096;
            b.build().map_err(|e| format!("DNS resolver: {e}"))
        }
    }
}

async fn timer_loop(core: Rc<Core>) {
    loop {
        let next = core.state.borrow().deferred.next_due_ms();
        let notified = core.timer.notified();
        match next {
            None => notified.await,
            Some(due) => {
                let now = crate::clock::unix_ms();
                if due > now {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(due - now)) => {}
                        () = notified => {}
                    }
                }
            }
        }
        if core.stopping.get() {
            return;
        }
        core.release_due(crate::clock::unix_ms());
    }
}

impl Core {
    fn rc(&self) -> Option<Rc<Core>> {
        self.me.borrow().upgrade()
    }

    fn open_connections(&self) -> usize {
        self.state.borrow().queues.values().map(|q| q.connections).sum()
    }

    /// A new message (or some recipients of it): learn what delivery needs of it (`intake`),
    /// group its recipients by destination and queue them.
    async fn take_job(&self, job: DeliveryJob) {
        let queue_id = job.spool_ref.queue_id;
        let count = job.rcpts.len() as u32;
        let envelope = match self.with_msg(queue_id, |m| {
            m.open += count;
            Rc::clone(&m.envelope)
        }) {
            Some(e) => e,
            None => match self.intake(&job).await {
                Some(e) => e,
                None => return,
            },
        };
        let mut groups: Vec<(Destination, Vec<u32>)> = Vec::new();
        for &i in &job.rcpts {
            let Some(r) = envelope.recipients.get(i as usize) else { continue };
            let dest = self.router.destination(r.domain());
            match groups.iter_mut().find(|(d, v)| *d == dest && v.len() < TRANSACTION_RECIPIENTS_MAX) {
                Some((_, v)) => v.push(i),
                None => groups.push((dest, vec![i])),
            }
        }
        {
            let mut st = self.state.borrow_mut();
            for (dest, rcpts) in &groups {
                st.queues.entry(dest.clone()).or_default().ready.push_back(Item {
                    queue_id,
                    rcpts: rcpts.clone(),
                    failures: 0,
                });
            }
        }
        for (dest, _) in groups {
            self.kick(&dest);
        }
    }

    /// Reads a fresh message's head (or all of a small one, kept in memory) and holds it with
    /// the job's recipients open. None when the record cannot be read: the job is tried again
    /// after `INTAKE_RETRY` (an I/O error), or left for the next start (a record that does not
    /// decode).
    async fn intake(&self, job: &DeliveryJob) -> Option<Rc<Envelope>> {
        let r = &job.spool_ref;
        let queue_id = r.queue_id;
        let len = r.len as usize;
        let (file, keep) = {
            let mut st = self.state.borrow_mut();
            let keep = len <= CACHE_MESSAGE_MAX && st.cache_bytes + len <= CACHE_BYTES_MAX;
            if keep {
                st.cache_bytes += len; // reserved now: other intakes may run meanwhile
            }
            (st.files.get(r), keep)
        };
        let result = match &file {
            Ok(f) => content::intake(Rc::clone(f), r, keep, self.obs.tracking.enabled()).await,
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        let count = job.rcpts.len() as u32;
        let mut st = self.state.borrow_mut();
        let (intake, file) = match (result, file) {
            (Ok(i), Ok(f)) => (i, f),
            (Err(e), _) | (_, Err(e)) => {
                if keep {
                    st.cache_bytes -= len;
                }
                drop(st);
                if e.kind() == std::io::ErrorKind::InvalidData {
                    tracing::error!(%queue_id, error = %e, "a queued message does not decode; it stays in the spool");
                } else if let Some(core) = self.rc() {
                    tracing::error!(%queue_id, error = %e, "cannot read a queued message from the spool; trying again in {}s", INTAKE_RETRY.as_secs());
                    let job = job.clone();
                    tokio_uring::spawn(async move {
                        tokio::time::sleep(INTAKE_RETRY).await;
                        if !core.stopping.get() {
                            core.take_job(job).await;
                        }
                    });
                }
                return None;
            }
        };
        if keep && st.messages.contains_key(&queue_id) {
            st.cache_bytes -= len;
        }
        if let Some(m) = st.messages.get_mut(&queue_id) {
            // Taken meanwhile by another job for the same message.
            m.open += count;
            return Some(Rc::clone(&m.envelope));
        }
        let envelope = Rc::new(intake.envelope);
        let size = intake.content.len();
        st.messages.insert(
            queue_id,
            Msg {
                spool_ref: r.clone(),
                envelope: Rc::clone(&envelope),
                content: intake.content,
                file,
                smtputf8: intake.smtputf8,
                eight_bit: intake.eight_bit,
                open: count,
                delay_notified: Vec::new(),
                last_reply: None,
                message_id: intake.message_id.map(Rc::from),
                size,
            },
        );
        Some(envelope)
    }

    /// The connector settings for a destination.
    pub(crate) fn connector_for(&self, dest: &Destination) -> &SendConnector {
        self.router.connector(dest)
    }

    /// Starts or wakes connections for `dest` as its queue needs.
    pub(crate) fn kick(&self, dest: &Destination) {
        if self.stopping.get() {
            return;
        }
        if let Some(reply) = self.down_reply(dest) {
            // Known unreachable: queue for the retry schedule without a connection.
            for item in self.drain_ready(dest) {
                self.defer(dest, item, &reply, None);
            }
            return;
        }
        let max = self.connector_for(dest).max_connections_per_domain;
        let action = {
            let mut st = self.state.borrow_mut();
            let Some(q) = st.queues.get_mut(dest) else { return };
            let k = q.kick(max);
            if k == Kick::Open {
                q.connections += 1;
                q.connecting += 1;
                q.opened += 1;
                self.obs.metrics.connections_opened.inc();
            }
            k
        };
        match action {
            Kick::Nothing => {}
            Kick::WakeIdle => self.work(dest).notify_one(),
            Kick::Open => {
                let Some(core) = self.rc() else { return };
                let dest = dest.clone();
                tokio_uring::spawn(async move {
                    let established = outbound::connection(Rc::clone(&core), dest.clone()).await;
                    core.connection_closed(&dest, established);
                });
            }
        }
    }

    /// The notifier idle connections of `dest` wait on.
    pub(crate) fn work(&self, dest: &Destination) -> Rc<Notify> {
        let mut st = self.state.borrow_mut();
        Rc::clone(st.work.entry(dest.clone()).or_insert_with(|| Rc::new(Notify::new())))
    }

    /// A connection of `dest` is set up and ready for transactions: another may be opened.
    pub(crate) fn connection_established(&self, dest: &Destination) {
        if let Some(q) = self.state.borrow_mut().queues.get_mut(dest) {
            q.connecting -= 1;
        }
        self.kick(dest);
    }

    /// A connection task of `dest` ended (`established`: it had reported itself set up).
    fn connection_closed(&self, dest: &Destination, established: bool) {
        {
            let mut st = self.state.borrow_mut();
            let State { queues, work, .. } = &mut *st;
            if let Some(q) = queues.get_mut(dest) {
                q.connections -= 1;
                if !established {
                    q.connecting -= 1;
                }
                if q.connections == 0 && q.ready.is_empty() {
                    queues.remove(dest);
                    work.remove(dest);
                    return;
                }
            }
        }
        self.kick(dest);
    }

    /// Marks a connection of `dest` idle (true) or busy again (false).
    pub(crate) fn set_idle(&self, dest: &Destination, idle: bool) {
        let mut st = self.state.borrow_mut();
        if let Some(q) = st.queues.get_mut(dest) {
            if idle { q.idle += 1 } else { q.idle -= 1 }
        }
    }

    /// How many connections `dest` has open.
    pub(crate) fn connections(&self, dest: &Destination) -> usize {
        self.state.borrow().queues.get(dest).map_or(0, |q| q.connections)
    }

    /// Every item of `dest` that is ready now, taken off its queue.
    fn drain_ready(&self, dest: &Destination) -> Vec<Item> {
        let mut st = self.state.borrow_mut();
        st.queues.get_mut(dest).map(|q| q.ready.drain(..).collect()).unwrap_or_default()
    }

    /// The next item for a connection of `dest`.
    pub(crate) fn take_ready(&self, dest: &Destination) -> Option<Item> {
        let mut st = self.state.borrow_mut();
        loop {
            let item = st.queues.get_mut(dest)?.ready.pop_front()?;
            if st.messages.contains_key(&item.queue_id) {
                return Some(item);
            }
            // Deleted meanwhile (admin): skip it.
        }
    }

    /// Puts an item back at the head of its queue (its connection failed before trying it).
    pub(crate) fn requeue_front(&self, dest: &Destination, item: Item) {
        self.state.borrow_mut().queues.entry(dest.clone()).or_default().ready.push_front(item);
    }

    /// What a connection needs to send a message (None: no longer held here).
    pub(crate) fn prepared(&self, queue_id: QueueId) -> Option<Prepared> {
        self.with_msg(queue_id, |m| Prepared {
            envelope: Rc::clone(&m.envelope),
            content: m.content.clone(),
            smtputf8: m.smtputf8,
            eight_bit: m.eight_bit,
        })
    }

    /// Remembers whether a message's content holds 8-bit octets (scanned by a connection).
    pub(crate) fn set_eight_bit(&self, queue_id: QueueId, eight_bit: bool) {
        self.with_msg(queue_id, |m| m.eight_bit = Some(eight_bit));
    }

    /// The reply a destination was found unreachable with, while that finding holds.
    fn down_reply(&self, dest: &Destination) -> Option<Response> {
        let mut st = self.state.borrow_mut();
        let (until, reply) = st.down.get(dest)?;
        if *until > crate::clock::unix_ms() {
            return Some(reply.clone());
        }
        st.down.remove(dest);
        None
    }

    /// Host backoff.
    pub(crate) fn host_backed_off(&self, addr: std::net::SocketAddr) -> bool {
        self.state.borrow().backoff.is_backed_off(addr, crate::clock::unix_ms())
    }

    /// A host failed to take a connection.
    pub(crate) fn host_failed(&self, addr: std::net::SocketAddr, connector: &SendConnector) {
        let first = connector.retry.first.get().as_millis() as u64;
        let max = connector.retry.max.get().as_millis() as u64;
        self.state.borrow_mut().backoff.failed(addr, crate::clock::unix_ms(), first.min(60_000), max.min(600_000));
    }

    /// A host worked.
    pub(crate) fn host_succeeded(&self, addr: std::net::SocketAddr) {
        self.state.borrow_mut().backoff.succeeded(addr);
    }

    /// A transaction ended: decide each recipient's fate. Returns the recipients this host
    /// could not take (`Verdict::NextHostOrFail`), with the reply: the caller takes them to the
    /// destination's other hosts.
    pub(crate) fn transaction_done(
        &self,
        dest: &Destination,
        item: Item,
        outcomes: &[RecipientOutcome],
        next_hop_dsn: bool,
        remote: &str,
    ) -> Vec<(u32, Response)> {
        self.obs.metrics.transactions.inc();
        let progress = outcomes.iter().any(|o| o.status == RecipientStatus::Delivered);
        let mut delivered: Vec<(u32, Response)> = Vec::new();
        let mut failed: Vec<(u32, Response)> = Vec::new();
        let mut deferred: Vec<(u32, Response)> = Vec::new();
        let mut other_host: Vec<(u32, Response)> = Vec::new();
        let mut again = Vec::new();
        for (&rcpt, outcome) in item.rcpts.iter().zip(outcomes) {
            match route::classify(Failure::Recipient { outcome, progress }) {
                Verdict::Done => delivered.push((rcpt, outcome.reply.clone())),
                Verdict::Fail => failed.push((rcpt, outcome.reply.clone())),
                Verdict::Defer => deferred.push((rcpt, outcome.reply.clone())),
                Verdict::NextHostOrFail => other_host.push((rcpt, outcome.reply.clone())),
                Verdict::NextTransaction | Verdict::NextHost => again.push(rcpt),
            }
        }
        let queue_id = item.queue_id;
        if !delivered.is_empty() {
            self.obs.metrics.delivered.add(delivered.len() as u64);
            self.track_delivered(queue_id, &delivered, remote);
            self.delivered(queue_id, delivered, next_hop_dsn, remote);
        }
        if !failed.is_empty() {
            self.fail(queue_id, failed, Some(remote), "permanent");
        }
        if !again.is_empty() {
            self.requeue_front(dest, Item { queue_id, rcpts: again, failures: item.failures });
            self.kick(dest);
        }
        if !deferred.is_empty() {
            self.defer(
                dest,
                Item { queue_id, rcpts: deferred.iter().map(|d| d.0).collect(), failures: item.failures },
                &deferred[0].1,
                Some(remote),
            );
        }
        other_host
    }

    /// Every item of `dest` that is ready now gets `verdict` with `reply`: the destination
    /// cannot be reached (or does not exist).
    pub(crate) fn domain_unreachable(&self, dest: &Destination, reply: &Response, verdict: Verdict) {
        if verdict == Verdict::Defer {
            let hold = (self.connector_for(dest).retry.first.get().as_millis() as u64).min(60_000);
            let mut st = self.state.borrow_mut();
            let now = crate::clock::unix_ms();
            if st.down.len() >= DOWN_DOMAINS_MAX {
                st.down.retain(|_, (until, _)| *until > now);
            }
            st.down.insert(dest.clone(), (now + hold, reply.clone()));
        }
        for item in self.drain_ready(dest) {
            if verdict == Verdict::Fail {
                let rcpts = item.rcpts.iter().map(|&r| (r, reply.clone())).collect();
                self.fail(item.queue_id, rcpts, None, "permanent");
            } else {
                self.defer(dest, item, reply, None);
            }
        }
    }

    /// Schedules a retry for `item`, or fails it if it has been queued too long.
    pub(crate) fn defer(&self, dest: &Destination, mut item: Item, reply: &Response, remote: Option<&str>) {
        let now = crate::clock::unix_ms();
        let schedule = RetrySchedule::from_config(&self.connector_for(dest).retry);
        let Some((arrival, envelope)) =
            self.with_msg(item.queue_id, |m| (m.envelope.received_at_ms, Rc::clone(&m.envelope)))
        else {
            return;
        };
        item.failures += 1;
        match schedule.after_failure(arrival, now, item.failures) {
            NextAttempt::Expire => {
                let rcpts = item.rcpts.iter().map(|&r| (r, reply.clone())).collect();
                self.fail(item.queue_id, rcpts, remote, "expired");
            }
            NextAttempt::RetryAt { due_ms } => {
                self.delay_notice(&envelope, &item, reply, remote, schedule.expires_at_ms(arrival));
                self.schedule(dest, item, due_ms, reply, remote);
            }
        }
    }

    /// Defers `item` after a local problem (the spool could not be read, a DSN could not be
    /// queued): the usual back-off, but no expiry (the problem is ours; failing the message
    /// would need the same spool or the same DSN queue).
    pub(crate) fn defer_local(&self, dest: &Destination, mut item: Item, reply: &Response) {
        let schedule = RetrySchedule::from_config(&self.connector_for(dest).retry);
        item.failures += 1;
        let due_ms = crate::clock::unix_ms().saturating_add(schedule.delay_ms(item.failures));
        tracing::warn!(queue_id = %item.queue_id, %dest, reply = %reply.one_line(), "deferred after a local problem");
        self.schedule(dest, item, due_ms, reply, None);
    }

    /// Puts a deferred item in the deferred set, due at `due_ms`.
    fn schedule(&self, dest: &Destination, item: Item, due_ms: u64, reply: &Response, remote: Option<&str>) {
        let queue_id = item.queue_id;
        self.obs.metrics.deferred.add(item.rcpts.len() as u64);
        self.track(queue_id, "DEFER", &item.rcpts, Some(reply), remote, |e| {
            e.next_attempt = Some(crate::clock::rfc3339(due_ms));
        });
        let line = reply.one_line();
        tracing::debug!(%queue_id, %dest, failures = item.failures, reply = %line, "deferred");
        self.with_msg(queue_id, |m| m.last_reply = Some(line));
        let earlier = self.state.borrow().deferred.next_due_ms().is_none_or(|d| due_ms < d);
        let rejected = self.state.borrow_mut().deferred.push(due_ms, (dest.clone(), item));
        if let Err((dest, item)) = rejected {
            // The deferred set is full: retry at once rather than lose track.
            self.requeue_front(&dest, item);
        }
        // Drop the cached copy: long-queued messages are read from the spool when due (and a
        // part of it still ready for another destination reads it from there too).
        self.uncache(queue_id);
        if earlier {
            self.timer.notify_one();
        }
    }

    /// Recipients of `queue_id` back to their destinations' deferred entries after a local
    /// problem (`defer_local`).
    fn retry_later(&self, queue_id: QueueId, rcpts: &[u32], reply: &Response) {
        let Some(envelope) = self.with_msg(queue_id, |m| Rc::clone(&m.envelope)) else { return };
        let mut groups: Vec<(Destination, Vec<u32>)> = Vec::new();
        for &r in rcpts {
            let Some(rc) = envelope.recipients.get(r as usize) else { continue };
            let dest = self.router.destination(rc.domain());
            match groups.iter_mut().find(|(d, _)| *d == dest) {
                Some((_, v)) => v.push(r),
                None => groups.push((dest, vec![r])),
            }
        }
        for (dest, rcpts) in groups {
            self.defer_local(&dest, Item { queue_id, rcpts, failures: 0 }, reply);
        }
    }

    /// A DELAY notice for each recipient of `item` that wants one and has not had it, once the
    /// message has waited `delivery.delay_warning`.
    fn delay_notice(&self, envelope: &Envelope, item: &Item, reply: &Response, remote: Option<&str>, until_ms: u64) {
        let now = crate::clock::unix_ms();
        let warn = self.shared.config.delivery.delay_warning.get();
        if !crate::queue::retry::delay_notice_due(envelope.received_at_ms, now, warn, false) {
            return;
        }
        let wanted: Vec<(u32, Response)> = self
            .with_msg(envelope.queue_id, |m| {
                let mut wanted = Vec::new();
                for &r in &item.rcpts {
                    let Some(rc) = envelope.recipients.get(r as usize) else { continue };
                    if m.delay_notified.get(r as usize).copied().unwrap_or(false)
                        || dsn::notification(&envelope.sender, rc.notify, DeliveryEvent::Delayed).is_none()
                    {
                        continue;
                    }
                    if m.delay_notified.len() <= r as usize {
                        m.delay_notified.resize(envelope.recipients.len().max(r as usize + 1), false);
                    }
                    m.delay_notified[r as usize] = true;
                    wanted.push((r, reply.clone()));
                }
                wanted
            })
            .unwrap_or_default();
        if !wanted.is_empty() {
            self.send_dsn(
                envelope.queue_id,
                dsn::Action::Delayed,
                wanted,
                remote,
                Some(until_ms),
                AfterNotice::StayQueued,
            );
        }
    }

    /// Delivered recipients: finished now, or once their success notice (NOTIFY=SUCCESS to a
    /// next hop without DSN: "relayed") is durable.
    fn delivered(&self, queue_id: QueueId, delivered: Vec<(u32, Response)>, next_hop_dsn: bool, remote: &str) {
        let Some(envelope) = self.with_msg(queue_id, |m| Rc::clone(&m.envelope)) else { return };
        let (notify, silent) = dsn::split_by_notice(&envelope, delivered, DeliveryEvent::Relayed { next_hop_dsn });
        if !silent.is_empty() {
            let rcpts: Vec<u32> = silent.iter().map(|(r, _)| *r).collect();
            self.finish(queue_id, &rcpts);
        }
        if !notify.is_empty() {
            self.send_dsn(queue_id, dsn::Action::Relayed, notify, Some(remote), None, AfterNotice::FinishOrRetry);
        }
    }

    /// Permanent failure of recipients: a failure DSN where wanted, then finished.
    /// `reason` (tracking): permanent, expired or deleted.
    pub(crate) fn fail(
        &self,
        queue_id: QueueId,
        rcpts: Vec<(u32, Response)>,
        remote: Option<&str>,
        reason: &'static str,
    ) {
        let Some(envelope) = self.with_msg(queue_id, |m| Rc::clone(&m.envelope)) else { return };
        self.obs.metrics.failed.add(rcpts.len() as u64);
        self.track_failed(queue_id, &rcpts, remote, reason);
        for (r, reply) in &rcpts {
            tracing::info!(%queue_id, rcpt = envelope.recipients.get(*r as usize).map_or("", |x| x.address.as_str()), reply = %reply.one_line(), "failed");
        }
        let (notify, silent) = dsn::split_by_notice(&envelope, rcpts, DeliveryEvent::Failed);
        if !silent.is_empty() {
            let rcpts: Vec<u32> = silent.iter().map(|(r, _)| *r).collect();
            self.finish(queue_id, &rcpts);
        }
        if !notify.is_empty() {
            let after = if reason == "deleted" { AfterNotice::Finish } else { AfterNotice::FinishOrRetry };
            self.send_dsn(queue_id, dsn::Action::Failed, notify, remote, None, after);
        }
    }

    /// Builds a DSN and has the owning SMTP core queue it durably (reading what it needs of the
    /// message through io_uring); then does what `after` says with the recipients it reports.
    fn send_dsn(
        &self,
        queue_id: QueueId,
        action: dsn::Action,
        reports: Vec<(u32, Response)>,
        remote: Option<&str>,
        will_retry_until_ms: Option<u64>,
        after: AfterNotice,
    ) {
        let Some((envelope, content)) = self.with_msg(queue_id, |m| (Rc::clone(&m.envelope), m.content.clone())) else {
            return;
        };
        let rcpts: Vec<u32> = reports.iter().map(|(r, _)| *r).collect();
        if rcpts.is_empty() {
            return;
        }
        // Built now: by the time the DSN is stored, the original may be finished and gone.
        let event = self.tracking_event(queue_id, "DSN", &rcpts, reports.first().map(|(_, r)| r), remote);
        let remote = remote.map(str::to_string);
        let Some(core) = self.rc() else { return };
        tokio_uring::spawn(async move {
            let notice =
                DsnJob { envelope: &envelope, content: &content, action, reports: &reports, will_retry_until_ms };
            let queued = core.queue_dsn(notice, remote.as_deref(), event).await;
            core.after_dsn(queue_id, &rcpts, queued, after);
        });
    }

    /// Reads the message (at most what `dsn::build` can use), builds the notice and waits for
    /// the owning SMTP core to store it. True once it is durable.
    async fn queue_dsn(
        &self,
        job: DsnJob<'_>,
        remote: Option<&str>,
        mut event: Option<crate::obs::tracking::TrackedEvent>,
    ) -> bool {
        let DsnJob { envelope, content, action, reports, will_retry_until_ms } = job;
        let queue_id = envelope.queue_id;
        let message = match content.prefix(dsn::RETURN_FULL_MAX + 1).await {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(%queue_id, error = %e, "cannot read the message for its DSN");
                return false;
            }
        };
        let now = crate::clock::unix_ms();
        let config = &self.shared.config;
        let from = config.bounce_sender();
        let settings =
            DsnSettings { reporting_mta: &config.hostname, from_address: &from, return_full_max: dsn::RETURN_FULL_MAX };
        let built: Vec<RecipientReport<'_>> = reports
            .iter()
            .filter_map(|(r, reply)| {
                let rc = envelope.recipients.get(*r as usize)?;
                let mut rep = RecipientReport::new(rc, action, Some(reply));
                rep.remote_mta = remote;
                rep.last_attempt_ms = Some(now);
                rep.will_retry_until_ms = will_retry_until_ms;
                Some(rep)
            })
            .collect();
        if built.is_empty() {
            return true;
        }
        let notice = dsn::build(&settings, envelope, &message, &built, now);
        drop(message);
        let bounce = Envelope {
            sender: String::new(),
            body_type: notice.body,
            smtputf8: notice.smtputf8,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            connector: "dsn".into(),
            helo: config.hostname.clone(),
            recipients: vec![Recipient {
                address: envelope.sender.clone(),
                notify: DsnNotify(DsnNotify::NEVER),
                orcpt: None,
            }],
            ..Envelope::default()
        };
        self.obs.metrics.dsns.inc();
        let owner = usize::from(queue_id.core()).min(self.smtp.len().saturating_sub(1));
        let queued_at = crate::clock::unix_ms();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let request = ToSmtp::Inject { envelope: Box::new(bounce), message: notice.message, done: tx };
        if !self.smtp[owner].send(request) {
            return false;
        }
        match rx.await {
            Ok(Some(dsn_id)) => {
                tracing::info!(%queue_id, dsn = %dsn_id, action = action.name(), "DSN queued");
                if let Some(e) = event.as_mut() {
                    let now = crate::clock::unix_ms();
                    let arrival = e.latency_ms;
                    e.time = crate::clock::rfc3339(now);
                    e.latency_ms = arrival + now.saturating_sub(queued_at);
                    e.dsn_queue_id = Some(dsn_id.to_string());
                    e.dsn_action = Some(action.name().to_string());
                    self.obs.tracking.emit(e);
                }
                true
            }
            _ => false,
        }
    }

    /// After a DSN was queued (or could not be): finish, retry or forget its recipients.
    fn after_dsn(&self, queue_id: QueueId, rcpts: &[u32], queued: bool, after: AfterNotice) {
        match (after, queued) {
            (AfterNotice::StayQueued, true) => {}
            (AfterNotice::StayQueued, false) => {
                tracing::error!(%queue_id, "a delay DSN could not be queued; it is tried again at the next deferral");
                self.with_msg(queue_id, |m| {
                    for &r in rcpts {
                        if let Some(sent) = m.delay_notified.get_mut(r as usize) {
                            *sent = false;
                        }
                    }
                });
            }
            (AfterNotice::FinishOrRetry, true) | (AfterNotice::Finish, true) => self.finish(queue_id, rcpts),
            (AfterNotice::Finish, false) => {
                tracing::error!(%queue_id, "a DSN could not be queued; the recipients it reports are dropped as asked");
                self.finish(queue_id, rcpts);
            }
            (AfterNotice::FinishOrRetry, false) => {
                tracing::error!(%queue_id, "a DSN could not be queued; its recipients stay queued and are tried again");
                self.retry_later(queue_id, rcpts, &Response::local(replies::DSN_NOT_QUEUED));
            }
        }
    }

    /// These recipients are finished: tell the owning SMTP core (batched, one wake per burst).
    pub(crate) fn finish(&self, queue_id: QueueId, rcpts: &[u32]) {
        let owner = {
            let mut st = self.state.borrow_mut();
            let Some(m) = st.messages.get_mut(&queue_id) else { return };
            m.open = m.open.saturating_sub(rcpts.len() as u32);
            let owner = m.spool_ref.core as usize;
            if m.open == 0
                && let Some(m) = st.messages.remove(&queue_id)
                && let Content::Cached { record, .. } = &m.content
            {
                st.cache_bytes -= record.len();
            }
            owner
        };
        let Some(mailbox) = self.smtp.get(owner) else { return };
        mailbox.send_quiet(ToSmtp::Finished { queue_id, rcpts: rcpts.to_vec() });
        let before = self.smtp_unwoken.get();
        self.smtp_unwoken.set(before | (1 << owner.min(63)));
        if before == 0
            && let Some(core) = self.rc()
        {
            tokio_uring::spawn(async move { core.wake_smtp() });
        }
    }

    fn wake_smtp(&self) {
        let bits = self.smtp_unwoken.replace(0);
        for (i, m) in self.smtp.iter().enumerate() {
            if bits & (1 << i.min(63)) != 0 {
                m.wake();
            }
        }
    }

    fn with_msg<T>(&self, queue_id: QueueId, f: impl FnOnce(&mut Msg) -> T) -> Option<T> {
        self.state.borrow_mut().messages.get_mut(&queue_id).map(f)
    }

    /// Drops the cached copy of a message: its content is read from the spool from now on.
    fn uncache(&self, queue_id: QueueId) {
        let mut st = self.state.borrow_mut();
        let Some(m) = st.messages.get_mut(&queue_id) else { return };
        let Content::Cached { record, offset } = &m.content else { return };
        let freed = record.len();
        m.content = Content::Spool {
            file: Rc::clone(&m.file),
            at: m.spool_ref.offset + *offset as u64,
            len: (record.len() - offset) as u64,
        };
        st.cache_bytes -= freed;
    }

    /// Moves deferred entries that are due to their ready queues.
    fn release_due(&self, now_ms: u64) {
        let due: Vec<(Destination, Item)> = self.state.borrow_mut().deferred.due(now_ms).collect();
        self.requeue(due);
    }

    fn requeue(&self, items: Vec<(Destination, Item)>) {
        let mut dests: Vec<Destination> = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            for (dest, item) in items {
                if !dests.contains(&dest) {
                    dests.push(dest.clone());
                }
                st.queues.entry(dest).or_default().ready.push_back(item);
            }
        }
        for d in dests {
            self.kick(&d);
        }
    }

    fn admin(&self, req: AdminRequest) {
        match req {
            AdminRequest::Domains(reply) => {
                let _ = reply.send(self.domain_summaries());
            }
            AdminRequest::Messages { domain, reply } => {
                let _ = reply.send(self.message_summaries(domain.as_deref()));
            }
            AdminRequest::Retry { target, reply } => {
                let picked: Vec<(Destination, Item)> = {
                    let mut st = self.state.borrow_mut();
                    let State { deferred, messages, backoff, down, .. } = &mut *st;
                    let now = crate::clock::unix_ms();
                    let matches = |d: &Destination, i: &Item| match &target {
                        RetryTarget::All => true,
                        RetryTarget::Domain(x) => covers_domain(messages, d, i, x),
                        RetryTarget::Message(q) => i.queue_id == *q,
                    };
                    deferred.reschedule(|(d, i)| matches(d, i), 0);
                    // "Try now" means now: forget which hosts failed, or the retried entries
                    // would be deferred again at once by the host backoff.
                    *backoff = HostBackoff::default();
                    down.clear();
                    deferred.due(now).collect()
                };
                let n = picked.len();
                self.requeue(picked);
                let _ = reply.send(n);
            }
            AdminRequest::Delete { queue_id, bounce, reply } => {
                let mut rcpts: Vec<u32> = Vec::new();
                {
                    let mut st = self.state.borrow_mut();
                    for q in st.queues.values_mut() {
                        q.ready.retain(|i| {
                            if i.queue_id == queue_id {
                                rcpts.extend(&i.rcpts);
                                false
                            } else {
                                true
                            }
                        });
                    }
                    st.deferred.retain(|(_, i)| {
                        if i.queue_id == queue_id {
                            rcpts.extend(&i.rcpts);
                            false
                        } else {
                            true
                        }
                    });
                }
                let n = rcpts.len();
                if n > 0 {
                    let why = Response::local(replies::DELETED_BY_ADMIN);
                    let rcpts: Vec<(u32, Response)> = rcpts.into_iter().map(|r| (r, why.clone())).collect();
                    if bounce {
                        self.fail(queue_id, rcpts, None, "deleted");
                    } else {
                        self.obs.metrics.failed.add(n as u64);
                        self.track_failed(queue_id, &rcpts, None, "deleted");
                        let rcpts: Vec<u32> = rcpts.into_iter().map(|(r, _)| r).collect();
                        self.finish(queue_id, &rcpts);
                    }
                }
                let _ = reply.send(n);
            }
        }
    }

    /// One line per recipient domain (not per destination: the domains behind one smart-host
    /// connector each get their own figures).
    fn domain_summaries(&self) -> Vec<DomainSummary> {
        let st = self.state.borrow();
        let now = crate::clock::unix_ms();
        let mut map: HashMap<String, DomainSummary> = HashMap::new();
        let entries = st
            .queues
            .iter()
            .flat_map(|(d, q)| q.ready.iter().map(move |i| (d, i, false)))
            .chain(st.deferred.iter().map(|(_, (d, i))| (d, i, true)));
        for (dest, item, deferred) in entries {
            let Some(m) = st.messages.get(&item.queue_id) else { continue };
            let connections = st.queues.get(dest).map_or(0, |q| q.connections);
            let age = now.saturating_sub(m.envelope.received_at_ms);
            for (domain, rcpts) in by_domain(&m.envelope, &item.rcpts) {
                let s = map.entry(domain.clone()).or_insert_with(|| DomainSummary {
                    domain,
                    messages: 0,
                    recipients: 0,
                    deferred: 0,
                    oldest_age_ms: 0,
                    connections,
                });
                s.messages += 1;
                s.recipients += rcpts.len();
                s.deferred += usize::from(deferred);
                s.oldest_age_ms = s.oldest_age_ms.max(age);
            }
        }
        let mut out: Vec<DomainSummary> = map.into_values().collect();
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        out
    }

    /// One entry per queued message and recipient domain (optionally only `domain`).
    fn message_summaries(&self, domain: Option<&str>) -> Vec<MessageSummary> {
        let st = self.state.borrow();
        let mut out = Vec::new();
        let mut add = |i: &Item, next: Option<u64>| {
            let Some(m) = st.messages.get(&i.queue_id) else { return };
            for (d, rcpts) in by_domain(&m.envelope, &i.rcpts) {
                if domain.is_some_and(|want| !want.eq_ignore_ascii_case(&d)) {
                    continue;
                }
                out.push(MessageSummary {
                    queue_id: i.queue_id.to_string(),
                    sender: m.envelope.sender.clone(),
                    recipients: rcpts
                        .iter()
                        .filter_map(|&r| m.envelope.recipients.get(r as usize))
                        .map(|r| r.address.clone())
                        .collect(),
                    domain: d,
                    size: u64::from(m.spool_ref.len),
                    arrival_ms: m.envelope.received_at_ms,
                    failures: i.failures,
                    next_attempt_ms: next,
                    last_reply: m.last_reply.clone(),
                });
            }
        };
        for q in st.queues.values() {
            for i in &q.ready {
                add(i, None);
            }
        }
        for (due, (_, i)) in st.deferred.iter() {
            add(i, Some(due));
        }
        out.sort_by(|a, b| a.arrival_ms.cmp(&b.arrival_ms).then(a.queue_id.cmp(&b.queue_id)));
        out
    }

    /// Writes a tracking event about recipients `rcpts` of `queue_id`; `fill` sets the
    /// event's own fields.
    fn track(
        &self,
        queue_id: QueueId,
        event: &str,
        rcpts: &[u32],
        reply: Option<&Response>,
        remote: Option<&str>,
        fill: impl FnOnce(&mut crate::obs::tracking::TrackedEvent),
    ) {
        if let Some(mut e) = self.tracking_event(queue_id, event, rcpts, reply, remote) {
            fill(&mut e);
            self.obs.tracking.emit(&e);
        }
    }

    /// A tracking event about recipients `rcpts` of `queue_id` (None: tracking is off, or the
    /// message is not held here).
    fn tracking_event(
        &self,
        queue_id: QueueId,
        event: &str,
        rcpts: &[u32],
        reply: Option<&Response>,
        remote: Option<&str>,
    ) -> Option<crate::obs::tracking::TrackedEvent> {
        if !self.obs.tracking.enabled() {
            return None;
        }
        let (envelope, message_id, size) =
            self.with_msg(queue_id, |m| (Rc::clone(&m.envelope), m.message_id.clone(), m.size))?;
        let mut e = crate::obs::tracking::TrackedEvent::about(
            event,
            &envelope,
            message_id.as_deref(),
            rcpts.iter().copied(),
            size,
        );
        e.reply = reply.map(Response::one_line);
        e.remote_host = remote.map(str::to_string);
        Some(e)
    }

    /// DELIVER events (one per distinct reply: usually one per transaction) and the delivery
    /// latency.
    fn track_delivered(&self, queue_id: QueueId, delivered: &[(u32, Response)], remote: &str) {
        if let Some(arrival) = self.with_msg(queue_id, |m| m.envelope.received_at_ms) {
            let ms = crate::clock::unix_ms().saturating_sub(arrival);
            self.obs.metrics.delivery_latency.observe_us(ms.saturating_mul(1000));
        }
        self.track_grouped(queue_id, "DELIVER", delivered, Some(remote), None);
    }

    /// FAIL events with their reason.
    fn track_failed(&self, queue_id: QueueId, failed: &[(u32, Response)], remote: Option<&str>, reason: &str) {
        self.track_grouped(queue_id, "FAIL", failed, remote, Some(reason));
    }

    fn track_grouped(
        &self,
        queue_id: QueueId,
        event: &str,
        list: &[(u32, Response)],
        remote: Option<&str>,
        reason: Option<&str>,
    ) {
        if !self.obs.tracking.enabled() {
            return;
        }
        let mut groups: Vec<(String, Vec<u32>, &Response)> = Vec::new();
        for (r, reply) in list {
            let line = reply.one_line();
            match groups.iter_mut().find(|(l, _, _)| *l == line) {
                Some((_, v, _)) => v.push(*r),
                None => groups.push((line, vec![*r], reply)),
            }
        }
        for (_, rcpts, reply) in groups {
            self.track(queue_id, event, &rcpts, Some(reply), remote, |e| {
                e.reason = reason.map(str::to_string);
            });
        }
    }

    /// The client configuration for a connector (TLS mode, credentials), cached.
    pub(crate) fn client_config(&self, connector: &SendConnector, plaintext: bool) -> Rc<ClientConfig> {
        let cache = if plaintext { &self.plain_clients } else { &self.clients };
        if let Some(c) = cache.borrow().get(&connector.name) {
            return Rc::clone(c);
        }
        let tls = if plaintext { crate::delivery::client::Tls::Off } else { connector.tls.into() };
        let mut cfg = ClientConfig::new(self.shared.config.hostname.clone(), tls);
        cfg.credentials = connector.auth.as_ref().and_then(credentials);
        let cfg = Rc::new(cfg);
        cache.borrow_mut().insert(connector.name.clone(), Rc::clone(&cfg));
        cfg
    }

    /// The verifying TLS client config of a connector (system roots + its `tls_ca_file`).
    pub(crate) fn verified_tls(&self, connector: &SendConnector) -> Option<Arc<rustls::ClientConfig>> {
        if let Some(c) = self.verified_tls.borrow().get(&connector.name) {
            return Some(Arc::clone(c));
        }
        match crate::tls::verified_client_config(connector.tls_ca_file.as_deref()) {
            Ok(c) => {
                self.verified_tls.borrow_mut().insert(connector.name.clone(), Arc::clone(&c));
                Some(c)
            }
            Err(e) => {
                tracing::error!(connector = %connector.name, error = %e, "cannot build the TLS client configuration");
                None
            }
        }
    }
}

/// The recipients of `rcpts` grouped by their (lowercase) domain, in first-seen order.
fn by_domain(envelope: &Envelope, rcpts: &[u32]) -> Vec<(String, Vec<u32>)> {
    let mut out: Vec<(String, Vec<u32>)> = Vec::new();
    for &r in rcpts {
        let Some(rc) = envelope.recipients.get(r as usize) else { continue };
        let domain = rc.domain();
        match out.iter_mut().find(|(d, _)| d.eq_ignore_ascii_case(domain)) {
            Some((_, v)) => v.push(r),
            None => out.push((domain.to_ascii_lowercase(), vec![r])),
        }
    }
    out
}

/// Does a queue entry hold recipients in `domain`? (A smart-host destination's entries may
/// hold several domains.)
fn covers_domain(messages: &HashMap<QueueId, Msg>, dest: &Destination, item: &Item, domain: &str) -> bool {
    match dest {
        Destination::Domain(d) => d.eq_ignore_ascii_case(domain),
        Destination::SmartHosts(_) => messages.get(&item.queue_id).is_some_and(|m| {
            item.rcpts
                .iter()
                .filter_map(|&r| m.envelope.recipients.get(r as usize))
                .any(|rc| rc.domain().eq_ignore_ascii_case(domain))
        }),
    }
}

/// Smart-host credentials: the password from its file (first line) or inline.
fn credentials(auth: &SmartHostAuth) -> Option<Credentials> {
    let password = match (&auth.password_file, &auth.password) {
        (Some(path), _) => match std::fs::read_to_string(path) {
            Ok(s) => s.lines().next().unwrap_or("").to_string(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read the smart host password");
                return None;
            }
        },
        (None, Some(p)) => p.clone(),
        (None, None) => return None,
    };
    Some(Credentials { user: auth.user.clone(), password })
}
