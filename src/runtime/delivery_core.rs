//! A delivery core: takes durable messages from the SMTP cores, keeps one ready queue per
//! destination domain, opens pooled outbound connections (`outbound`) up to the connector's
//! cap, retries on schedule, sends DSNs (queued durably through the owning SMTP core), and
//! reports finished recipients back to that core's spool. Answers the admin endpoint's queue
//! questions. All state is this thread's (`Rc`/`RefCell`, never borrowed across `.await`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::Notify;

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
use crate::delivery::reply::Response;
use crate::policy::route::{self, Failure, Router, Verdict};
use crate::queue::{DeferredSet, DomainQueue, HostBackoff, Item, Kick, NextAttempt, RetrySchedule};
use crate::smtp::envelope::{Envelope, Notify as DsnNotify, QueueId, Recipient};
use crate::spool::SpoolRef;
use crate::spool::record::{self, Record};

/// Deferred entries a core keeps (beyond it, entries are retried at once rather than lost).
const DEFERRED_MAX: usize = 10_000_000;
/// Messages at most this big are kept in memory between intake and delivery.
const CACHE_MESSAGE_MAX: usize = 64 * 1024;
/// Memory for cached messages, per delivery core.
const CACHE_BYTES_MAX: usize = 256 << 20;
/// Unreachable destinations remembered at once (expired ones are pruned past it).
const DOWN_DOMAINS_MAX: usize = 100_000;

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
    /// The stored record, kept for small messages (None: read it from the spool).
    raw: Option<Rc<Vec<u8>>>,
    /// Recipients of this message this core has not finished.
    open: u32,
    delay_notice_sent: bool,
    last_reply: Option<String>,
    /// Its `Message-ID` and size, for tracking events.
    message_id: Option<Rc<str>>,
    size: u64,
}

struct State {
    messages: HashMap<QueueId, Msg>,
    domains: HashMap<String, DomainQueue>,
    work: HashMap<String, Rc<Notify>>,
    deferred: DeferredSet<(String, Item)>,
    backoff: HostBackoff,
    /// Destinations found unreachable, until when, and the reply that said so: mail for them
    /// is deferred without a connection attempt until then (one probe, not one per message).
    down: HashMap<String, (u64, Response)>,
    cache_bytes: usize,
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
            domains: HashMap::new(),
            work: HashMap::new(),
            deferred: DeferredSet::new(DEFERRED_MAX),
            backoff: HostBackoff::default(),
            down: HashMap::new(),
            cache_bytes: 0,
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
                ToDelivery::Job(job) => core.take_job(job),
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
        self.state.borrow().domains.values().map(|d| d.connections).sum()
    }

    /// A new message (or some recipients of it): group its recipients by domain and queue them.
    fn take_job(&self, job: DeliveryJob) {
        let raw = match job.spool_ref.read() {
            Ok(raw) => raw,
            Err(e) => {
                tracing::error!(queue_id = %job.spool_ref.queue_id, error = %e, "cannot read a queued message from the spool; it stays queued for the next start");
                return;
            }
        };
        let (envelope, message_id, size) = match record::decode(&raw) {
            Ok((Record::Message { envelope, message }, _)) => {
                let id = if self.obs.tracking.enabled() { crate::obs::tracking::message_id(message) } else { None };
                (envelope, id.map(Rc::from), message.len() as u64)
            }
            other => {
                tracing::error!(queue_id = %job.spool_ref.queue_id, record = ?other.map(|_| ()), "spool record is not a message");
                return;
            }
        };
        let queue_id = envelope.queue_id;
        let mut by_domain: Vec<(String, Vec<u32>)> = Vec::new();
        for &i in &job.rcpts {
            let Some(r) = envelope.recipients.get(i as usize) else { continue };
            let domain = r.domain().to_ascii_lowercase();
            match by_domain.iter_mut().find(|(d, v)| *d == domain && v.len() < TRANSACTION_RECIPIENTS_MAX) {
                Some((_, v)) => v.push(i),
                None => by_domain.push((domain, vec![i])),
            }
        }
        {
            let mut st = self.state.borrow_mut();
            let keep = raw.len() <= CACHE_MESSAGE_MAX && st.cache_bytes + raw.len() <= CACHE_BYTES_MAX;
            let count = job.rcpts.len() as u32;
            if let Some(m) = st.messages.get_mut(&queue_id) {
                m.open += count;
            } else {
                let raw = keep.then(|| Rc::new(raw));
                if let Some(r) = &raw {
                    st.cache_bytes += r.len();
                }
                st.messages.insert(
                    queue_id,
                    Msg {
                        spool_ref: job.spool_ref,
                        envelope: Rc::new(envelope),
                        raw,
                        open: count,
                        delay_notice_sent: false,
                        last_reply: None,
                        message_id,
                        size,
                    },
                );
            }
            for (domain, rcpts) in &by_domain {
                st.domains.entry(domain.clone()).or_default().ready.push_back(Item {
                    queue_id,
                    rcpts: rcpts.clone(),
                    failures: 0,
                });
            }
        }
        for (domain, _) in by_domain {
            self.kick(&domain);
        }
    }

    /// The connector settings for a domain.
    pub(crate) fn connector_for(&self, domain: &str) -> &SendConnector {
        self.router.route(domain).connector
    }

    /// Starts or wakes connections for `domain` as its queue needs.
    pub(crate) fn kick(&self, domain: &str) {
        if self.stopping.get() {
            return;
        }
        if let Some(reply) = self.down_reply(domain) {
            // Known unreachable: queue for the retry schedule without a connection.
            let items: Vec<Item> = {
                let mut st = self.state.borrow_mut();
                st.domains.get_mut(domain).map(|q| q.ready.drain(..).collect()).unwrap_or_default()
            };
            for item in items {
                self.defer(domain, item, &reply, None);
            }
            return;
        }
        let max = self.connector_for(domain).max_connections_per_domain;
        let action = {
            let mut st = self.state.borrow_mut();
            let Some(q) = st.domains.get_mut(domain) else { return };
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
            Kick::WakeIdle => self.work(domain).notify_one(),
            Kick::Open => {
                let Some(core) = self.rc() else { return };
                let domain = domain.to_string();
                tokio_uring::spawn(async move {
                    let established = outbound::connection(Rc::clone(&core), domain.clone()).await;
                    core.connection_closed(&domain, established);
                });
            }
        }
    }

    /// The notifier idle connections of `domain` wait on.
    pub(crate) fn work(&self, domain: &str) -> Rc<Notify> {
        let mut st = self.state.borrow_mut();
        Rc::clone(st.work.entry(domain.to_string()).or_insert_with(|| Rc::new(Notify::new())))
    }

    /// A connection of `domain` is set up and ready for transactions: another may be opened.
    pub(crate) fn connection_established(&self, domain: &str) {
        if let Some(q) = self.state.borrow_mut().domains.get_mut(domain) {
            q.connecting -= 1;
        }
        self.kick(domain);
    }

    /// A connection task of `domain` ended (`established`: it had reported itself set up).
    fn connection_closed(&self, domain: &str, established: bool) {
        {
            let mut st = self.state.borrow_mut();
            let State { domains, work, .. } = &mut *st;
            if let Some(q) = domains.get_mut(domain) {
                q.connections -= 1;
                if !established {
                    q.connecting -= 1;
                }
                if q.connections == 0 && q.ready.is_empty() {
                    domains.remove(domain);
                    work.remove(domain);
                    return;
                }
            }
        }
        self.kick(domain);
    }

    /// Marks a connection of `domain` idle (true) or busy again (false).
    pub(crate) fn set_idle(&self, domain: &str, idle: bool) {
        let mut st = self.state.borrow_mut();
        if let Some(q) = st.domains.get_mut(domain) {
            if idle { q.idle += 1 } else { q.idle -= 1 }
        }
    }

    /// How many connections `domain` has open.
    pub(crate) fn connections(&self, domain: &str) -> usize {
        self.state.borrow().domains.get(domain).map_or(0, |q| q.connections)
    }

    /// The next item for a connection of `domain`.
    pub(crate) fn take_ready(&self, domain: &str) -> Option<Item> {
        let mut st = self.state.borrow_mut();
        loop {
            let item = st.domains.get_mut(domain)?.ready.pop_front()?;
            if st.messages.contains_key(&item.queue_id) {
                return Some(item);
            }
            // Deleted meanwhile (admin): skip it.
        }
    }

    /// Puts an item back at the head of its queue (its connection failed before trying it).
    pub(crate) fn requeue_front(&self, domain: &str, item: Item) {
        self.state.borrow_mut().domains.entry(domain.to_string()).or_default().ready.push_front(item);
    }

    /// Envelope and stored record of a message (the record read from the spool when it is not
    /// cached: a pread that the page cache usually answers).
    pub(crate) fn message(&self, queue_id: QueueId) -> Option<(Rc<Envelope>, Rc<Vec<u8>>)> {
        let (envelope, raw, spool_ref) = {
            let st = self.state.borrow();
            let m = st.messages.get(&queue_id)?;
            (Rc::clone(&m.envelope), m.raw.clone(), m.spool_ref.clone())
        };
        let raw = match raw {
            Some(r) => r,
            None => Rc::new(
                spool_ref
                    .read()
                    .map_err(|e| tracing::error!(%queue_id, error = %e, "cannot read a queued message"))
                    .ok()?,
            ),
        };
        Some((envelope, raw))
    }

    /// The reply a destination was found unreachable with, while that finding holds.
    fn down_reply(&self, domain: &str) -> Option<Response> {
        let mut st = self.state.borrow_mut();
        let (until, reply) = st.down.get(domain)?;
        if *until > crate::clock::unix_ms() {
            return Some(reply.clone());
        }
        st.down.remove(domain);
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

    /// A transaction ended: decide each recipient's fate.
    pub(crate) fn transaction_done(
        &self,
        domain: &str,
        item: Item,
        outcomes: &[RecipientOutcome],
        next_hop_dsn: bool,
        remote: &str,
    ) {
        self.obs.metrics.transactions.inc();
        let progress = outcomes.iter().any(|o| o.status == RecipientStatus::Delivered);
        let mut delivered: Vec<(u32, Response)> = Vec::new();
        let mut failed: Vec<(u32, Response)> = Vec::new();
        let mut deferred: Vec<(u32, Response)> = Vec::new();
        let mut again = Vec::new();
        for (&rcpt, outcome) in item.rcpts.iter().zip(outcomes) {
            match route::classify(Failure::Recipient { outcome, progress }) {
                Verdict::Done => delivered.push((rcpt, outcome.reply.clone())),
                Verdict::Fail => failed.push((rcpt, outcome.reply.clone())),
                Verdict::Defer => deferred.push((rcpt, outcome.reply.clone())),
                Verdict::NextTransaction | Verdict::NextHost => again.push(rcpt),
            }
        }
        let queue_id = item.queue_id;
        if !delivered.is_empty() {
            self.obs.metrics.delivered.add(delivered.len() as u64);
            let rcpts: Vec<u32> = delivered.iter().map(|d| d.0).collect();
            self.track_delivered(queue_id, &delivered, remote);
            self.notify_success(queue_id, delivered, next_hop_dsn, remote);
            self.finish(queue_id, &rcpts);
        }
        if !failed.is_empty() {
            self.fail(queue_id, failed, Some(remote), "permanent");
        }
        if !again.is_empty() {
            self.requeue_front(domain, Item { queue_id, rcpts: again, failures: item.failures });
            self.kick(domain);
        }
        if !deferred.is_empty() {
            self.defer(
                domain,
                Item { queue_id, rcpts: deferred.iter().map(|d| d.0).collect(), failures: item.failures },
                &deferred[0].1,
                Some(remote),
            );
        }
    }

    /// Every item of `domain` that is ready now gets `verdict` with `reply`: the destination
    /// cannot be reached (or does not exist).
    pub(crate) fn domain_unreachable(&self, domain: &str, reply: &Response, verdict: Verdict) {
        if verdict == Verdict::Defer {
            let hold = (self.connector_for(domain).retry.first.get().as_millis() as u64).min(60_000);
            let mut st = self.state.borrow_mut();
            let now = crate::clock::unix_ms();
            if st.down.len() >= DOWN_DOMAINS_MAX {
                st.down.retain(|_, (until, _)| *until > now);
            }
            st.down.insert(domain.to_string(), (now + hold, reply.clone()));
        }
        let items: Vec<Item> = {
            let mut st = self.state.borrow_mut();
            st.domains.get_mut(domain).map(|q| q.ready.drain(..).collect()).unwrap_or_default()
        };
        for item in items {
            if verdict == Verdict::Fail {
                let rcpts = item.rcpts.iter().map(|&r| (r, reply.clone())).collect();
                self.fail(item.queue_id, rcpts, None, "permanent");
            } else {
                self.defer(domain, item, reply, None);
            }
        }
    }

    /// Schedules a retry for `item`, or fails it if it has been queued too long.
    fn defer(&self, domain: &str, mut item: Item, reply: &Response, remote: Option<&str>) {
        let now = crate::clock::unix_ms();
        let connector = self.connector_for(domain);
        let schedule = RetrySchedule::from_config(&connector.retry);
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
                self.obs.metrics.deferred.add(item.rcpts.len() as u64);
                self.track(item.queue_id, "DEFER", &item.rcpts, Some(reply), remote, |e| {
                    e.next_attempt = Some(crate::clock::rfc3339(due_ms));
                });
                let line = reply.one_line();
                tracing::debug!(queue_id = %item.queue_id, %domain, failures = item.failures, reply = %line, "deferred");
                self.with_msg(item.queue_id, |m| m.last_reply = Some(line));
                self.delay_notice(&envelope, &item, reply, remote, schedule.expires_at_ms(arrival));
                let earlier = self.state.borrow().deferred.next_due_ms().is_none_or(|d| due_ms < d);
                let rejected = self.state.borrow_mut().deferred.push(due_ms, (domain.to_string(), item));
                if let Err((domain, item)) = rejected {
                    // The deferred set is full: retry at once rather than lose track.
                    self.requeue_front(&domain, item);
                }
                // Drop the cached copy: long-queued messages are read from the spool when due
                // (and a part of it still ready for another domain reads it from there too).
                self.uncache(envelope.queue_id);
                if earlier {
                    self.timer.notify_one();
                }
            }
        }
    }

    /// Sends one DELAY notice per message once it has waited `delivery.delay_warning`.
    fn delay_notice(&self, envelope: &Envelope, item: &Item, reply: &Response, remote: Option<&str>, until_ms: u64) {
        let now = crate::clock::unix_ms();
        let warn = self.shared.config.delivery.delay_warning.get();
        let sent = self.with_msg(envelope.queue_id, |m| m.delay_notice_sent).unwrap_or(true);
        if !crate::queue::retry::delay_notice_due(envelope.received_at_ms, now, warn, sent) {
            return;
        }
        let wanted: Vec<u32> =
            item.rcpts
                .iter()
                .copied()
                .filter(|&r| {
                    envelope.recipients.get(r as usize).is_some_and(|rc| {
                        dsn::notification(&envelope.sender, rc.notify, DeliveryEvent::Delayed).is_some()
                    })
                })
                .collect();
        if wanted.is_empty() {
            return;
        }
        self.with_msg(envelope.queue_id, |m| m.delay_notice_sent = true);
        let reports: Vec<(u32, Response)> = wanted.iter().map(|&r| (r, reply.clone())).collect();
        self.send_dsn(envelope.queue_id, dsn::Action::Delayed, reports, remote, Some(until_ms), Vec::new());
    }

    /// Success notices (NOTIFY=SUCCESS, relayed to a next hop without DSN).
    fn notify_success(&self, queue_id: QueueId, delivered: Vec<(u32, Response)>, next_hop_dsn: bool, remote: &str) {
        let Some(envelope) = self.with_msg(queue_id, |m| Rc::clone(&m.envelope)) else { return };
        let mut by_action: Vec<(dsn::Action, Vec<(u32, Response)>)> = Vec::new();
        for (r, reply) in delivered {
            let Some(rc) = envelope.recipients.get(r as usize) else { continue };
            if let Some(action) =
                dsn::notification(&envelope.sender, rc.notify, DeliveryEvent::Relayed { next_hop_dsn })
            {
                match by_action.iter_mut().find(|(a, _)| *a == action) {
                    Some((_, v)) => v.push((r, reply)),
                    None => by_action.push((action, vec![(r, reply)])),
                }
            }
        }
        for (action, reports) in by_action {
            self.send_dsn(queue_id, action, reports, Some(remote), None, Vec::new());
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
        let (notify, silent): (Vec<(u32, Response)>, Vec<u32>) = {
            let mut notify = Vec::new();
            let mut silent = Vec::new();
            for (r, reply) in rcpts {
                let wanted = envelope
                    .recipients
                    .get(r as usize)
                    .is_some_and(|rc| dsn::notification(&envelope.sender, rc.notify, DeliveryEvent::Failed).is_some());
                if wanted { notify.push((r, reply)) } else { silent.push(r) }
            }
            (notify, silent)
        };
        if !silent.is_empty() {
            self.finish(queue_id, &silent);
        }
        if !notify.is_empty() {
            let finish_after: Vec<u32> = notify.iter().map(|(r, _)| *r).collect();
            self.send_dsn(queue_id, dsn::Action::Failed, notify, remote, None, finish_after);
        }
    }

    /// Builds a DSN and has the owning SMTP core queue it durably; then finishes
    /// `finish_after` (the failed recipients it reports), so a crash before the DSN is stored
    /// fails them again (at-least-once) rather than never telling the sender.
    fn send_dsn(
        &self,
        queue_id: QueueId,
        action: dsn::Action,
        reports: Vec<(u32, Response)>,
        remote: Option<&str>,
        will_retry_until_ms: Option<u64>,
        finish_after: Vec<u32>,
    ) {
        let Some((envelope, raw)) = self.message(queue_id) else { return };
        let Ok((Record::Message { message, .. }, _)) = record::decode(&raw) else { return };
        let now = crate::clock::unix_ms();
        let config = &self.shared.config;
        let from = config.bounce_sender();
        let settings =
            DsnSettings { reporting_mta: &config.hostname, from_address: &from, return_full_max: dsn::RETURN_FULL_MAX };
        let recipients: Vec<&Recipient> =
            reports.iter().filter_map(|(r, _)| envelope.recipients.get(*r as usize)).collect();
        let built: Vec<RecipientReport<'_>> = recipients
            .iter()
            .zip(&reports)
            .map(|(rc, (_, reply))| {
                let mut rep = RecipientReport::new(rc, action, Some(reply));
                rep.remote_mta = remote;
                rep.last_attempt_ms = Some(now);
                rep.will_retry_until_ms = will_retry_until_ms;
                rep
            })
            .collect();
        if built.is_empty() {
            return;
        }
        let notice = dsn::build(&settings, &envelope, message, &built, now);
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
        // Built now: by the time the DSN is stored, the original may be finished and gone.
        let dsn_rcpts: Vec<u32> = reports.iter().map(|(r, _)| *r).collect();
        let mut event = self.tracking_event(queue_id, "DSN", &dsn_rcpts, reports.first().map(|(_, r)| r), remote);
        let owner = usize::from(envelope.queue_id.core()).min(self.smtp.len().saturating_sub(1));
        let queued_at = crate::clock::unix_ms();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let request = ToSmtp::Inject { envelope: Box::new(bounce), message: notice.message, done: tx };
        if !self.smtp[owner].send(request) {
            return;
        }
        let Some(core) = self.rc() else { return };
        tokio_uring::spawn(async move {
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
                        core.obs.tracking.emit(e);
                    }
                    if !finish_after.is_empty() {
                        core.finish(queue_id, &finish_after);
                    }
                }
                _ => {
                    // Not stored: keep the recipients open; they are failed again at restart.
                    tracing::error!(%queue_id, "DSN could not be queued; the failure will be reported after a restart");
                }
            }
        });
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
                && let Some(raw) = m.raw
            {
                st.cache_bytes -= raw.len();
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

    /// Drops the cached copy of a message.
    fn uncache(&self, queue_id: QueueId) {
        let mut st = self.state.borrow_mut();
        if let Some(raw) = st.messages.get_mut(&queue_id).and_then(|m| m.raw.take()) {
            st.cache_bytes -= raw.len();
        }
    }

    /// Moves deferred entries that are due to their ready queues.
    fn release_due(&self, now_ms: u64) {
        let due: Vec<(String, Item)> = self.state.borrow_mut().deferred.due(now_ms).collect();
        self.requeue(due);
    }

    fn requeue(&self, items: Vec<(String, Item)>) {
        let mut domains: Vec<String> = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            for (domain, item) in items {
                st.domains.entry(domain.clone()).or_default().ready.push_back(item);
                if !domains.contains(&domain) {
                    domains.push(domain);
                }
            }
        }
        for d in domains {
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
                let picked: Vec<(String, Item)> = {
                    let mut st = self.state.borrow_mut();
                    let mut picked = Vec::new();
                    let now = crate::clock::unix_ms();
                    let matches = |d: &str, i: &Item| match &target {
                        RetryTarget::All => true,
                        RetryTarget::Domain(x) => d.eq_ignore_ascii_case(x),
                        RetryTarget::Message(q) => i.queue_id == *q,
                    };
                    st.deferred.reschedule(|(d, i)| matches(d, i), 0);
                    // "Try now" means now: forget which hosts failed, or the retried entries
                    // would be deferred again at once by the host backoff.
                    st.backoff = HostBackoff::default();
                    st.down.clear();
                    picked.extend(st.deferred.due(now));
                    picked
                };
                let n = picked.len();
                self.requeue(picked);
                let _ = reply.send(n);
            }
            AdminRequest::Delete { queue_id, bounce, reply } => {
                let mut rcpts: Vec<u32> = Vec::new();
                {
                    let mut st = self.state.borrow_mut();
                    for q in st.domains.values_mut() {
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
                    let why = Response::local(crate::delivery::reply::DELETED_BY_ADMIN);
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

    fn domain_summaries(&self) -> Vec<DomainSummary> {
        let st = self.state.borrow();
        let now = crate::clock::unix_ms();
        let mut map: HashMap<String, DomainSummary> = HashMap::new();
        let entries = st
            .domains
            .iter()
            .flat_map(|(d, q)| q.ready.iter().map(move |i| (d.as_str(), i, false)))
            .chain(st.deferred.iter().map(|(_, (d, i))| (d.as_str(), i, true)));
        for (domain, item, deferred) in entries {
            let s = map.entry(domain.to_string()).or_insert_with(|| DomainSummary {
                domain: domain.to_string(),
                messages: 0,
                recipients: 0,
                deferred: 0,
                oldest_age_ms: 0,
                connections: st.domains.get(domain).map_or(0, |q| q.connections),
            });
            s.messages += 1;
            s.recipients += item.rcpts.len();
            s.deferred += usize::from(deferred);
            if let Some(m) = st.messages.get(&item.queue_id) {
                s.oldest_age_ms = s.oldest_age_ms.max(now.saturating_sub(m.envelope.received_at_ms));
            }
        }
        let mut out: Vec<DomainSummary> = map.into_values().collect();
        out.sort_by(|a, b| a.domain.cmp(&b.domain));
        out
    }

    fn message_summaries(&self, domain: Option<&str>) -> Vec<MessageSummary> {
        let st = self.state.borrow();
        let mut out = Vec::new();
        let mut add = |d: &str, i: &Item, next: Option<u64>| {
            if domain.is_some_and(|want| !want.eq_ignore_ascii_case(d)) {
                return;
            }
            let Some(m) = st.messages.get(&i.queue_id) else { return };
            out.push(MessageSummary {
                queue_id: i.queue_id.to_string(),
                sender: m.envelope.sender.clone(),
                recipients: i
                    .rcpts
                    .iter()
                    .filter_map(|&r| m.envelope.recipients.get(r as usize))
                    .map(|r| r.address.clone())
                    .collect(),
                domain: d.to_string(),
                size: u64::from(m.spool_ref.len),
                arrival_ms: m.envelope.received_at_ms,
                failures: i.failures,
                next_attempt_ms: next,
                last_reply: m.last_reply.clone(),
            });
        };
        for (d, q) in &st.domains {
            for i in &q.ready {
                add(d, i, None);
            }
        }
        for (due, (d, i)) in st.deferred.iter() {
            add(d, i, Some(due));
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
