//! Metrics without shared contended state: each core owns its counters and histograms (plain
//! relaxed `AtomicU64`s that only the owning thread writes, with a load and a store, never a
//! locked read-modify-write), and the admin thread reads them all when scraped, merges them
//! and writes the Prometheus text exposition format (version 0.0.4) itself.
//!
//! Why not `prometheus-client`: its counters are shared `Arc<AtomicU64>`s updated with atomic
//! adds from every core, and label families take a lock and a hash lookup; both contradict the
//! shared-nothing cores. The exposition format is a few lines of text per metric.
//!
//! Queue figures per destination domain are not counters: the admin endpoint asks the delivery
//! cores for them at scrape time (`AdminRequest::Domains`) and renders them with `render`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::writer::WriterStats;
use crate::runtime::handoff::DomainSummary;

/// A counter or gauge with one writer (its core) and any number of readers (the scraper).
/// `add` is a relaxed load and store: no `lock` prefix, no cache line bouncing between cores.
#[derive(Debug, Default)]
pub struct Cell64(AtomicU64);

impl Cell64 {
    /// Adds `n`. Only the owning thread may call this.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// Adds one. Only the owning thread may call this.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts `n` (gauges). Only the owning thread may call this.
    #[inline]
    pub fn sub(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.saturating_sub(n), Ordering::Relaxed);
    }

    /// Sets the value (gauges). Only the owning thread may call this.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// The current value (any thread).
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds (seconds) of the accept latency histogram: end of data → durable. Group commit
/// puts this around one synchronous write: sub-millisecond on NVMe, tens of ms on network disks.
pub const ACCEPT_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Upper bounds (seconds) of the delivery latency histogram: arrival → delivered. From
/// milliseconds (a pooled connection to a LAN smart host) to a day (retries).
pub const DELIVERY_BUCKETS: [f64; 14] =
    [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86400.0];

/// Histograms have at most this many finite buckets.
const BUCKETS_MAX: usize = 14;

/// A fixed-bucket histogram with one writer. Counts per bucket are not cumulative here; the
/// scraper sums them up (Prometheus buckets are cumulative).
#[derive(Debug)]
pub struct Histogram {
    bounds_us: [u64; BUCKETS_MAX],
    /// One per finite bound, plus +Inf.
    counts: [Cell64; BUCKETS_MAX + 1],
    sum_us: Cell64,
}

impl Histogram {
    /// A histogram over `bounds` (seconds, ascending).
    pub fn new(bounds: &'static [f64; BUCKETS_MAX]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        Histogram { bounds_us: bounds.map(|b| (b * 1e6) as u64), counts: Default::default(), sum_us: Cell64::default() }
    }

    /// Records one observation. Only the owning thread may call this.
    #[inline]
    pub fn observe_us(&self, us: u64) {
        let i = self.bounds_us.iter().position(|&b| us <= b).unwrap_or(BUCKETS_MAX);
        self.counts[i].inc();
        self.sum_us.add(us);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot { counts: [0; BUCKETS_MAX + 1], sum_us: self.sum_us.get() };
        for (c, cell) in s.counts.iter_mut().zip(&self.counts) {
            *c = cell.get();
        }
        s
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct HistogramSnapshot {
    counts: [u64; BUCKETS_MAX + 1],
    sum_us: u64,
}

impl HistogramSnapshot {
    fn merge(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }
}

/// Per receive connector, on one SMTP core.
#[derive(Debug, Default)]
pub struct ConnectorMetrics {
    /// Connections assigned to this connector.
    pub connections_total: Cell64,
    /// Connections open now.
    pub connections_open: Cell64,
    /// SMTP sessions started (greeting sent; after the handshake with implicit TLS).
    pub sessions_total: Cell64,
    /// Sessions that authenticated (a `235` reply).
    pub sessions_authenticated: Cell64,
    /// Messages made durable and answered `250 2.6.0`.
    pub messages_accepted: Cell64,
    /// Their bytes (as stored: our `Received:` header included).
    pub bytes_accepted: Cell64,
}

/// Distinct (connector, code, enhanced code) rejection keys a core keeps; beyond it they are
/// counted under code "other".
const REJECT_KEYS_MAX: usize = 128;

/// Negative replies by (connector, reply code, enhanced code): an append-only open table with
/// one writer. A slot's count is written before its key is published (release), so a reader
/// that sees a key (acquire) sees a count that belongs to it.
#[derive(Debug)]
pub struct RejectTable {
    keys: Vec<AtomicU64>,
    counts: Vec<Cell64>,
    /// Rejections that found no free slot, by connector.
    overflow: Cell64,
}

impl Default for RejectTable {
    fn default() -> Self {
        RejectTable {
            keys: (0..REJECT_KEYS_MAX).map(|_| AtomicU64::new(0)).collect(),
            counts: (0..REJECT_KEYS_MAX).map(|_| Cell64::default()).collect(),
            overflow: Cell64::default(),
        }
    }
}

/// A reply identity packed in 64 bits (0 is the empty slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RejectKey {
    /// Receive connector index.
    pub connector: u16,
    /// Reply code, e.g. 550.
    pub code: u16,
    /// Enhanced status code (class, subject, detail); (0, 0, 0) when the reply has none.
    pub enhanced: (u8, u16, u16),
}

impl RejectKey {
    fn pack(self) -> u64 {
        1 + ((u64::from(self.connector) << 48)
            | (u64::from(self.code) << 36)
            | (u64::from(self.enhanced.0) << 28)
            | (u64::from(self.enhanced.1 & 0x3fff) << 14)
            | u64::from(self.enhanced.2 & 0x3fff))
    }

    fn unpack(v: u64) -> RejectKey {
        let v = v - 1;
        RejectKey {
            connector: (v >> 48) as u16,
            code: ((v >> 36) & 0xfff) as u16,
            enhanced: (((v >> 28) & 0xff) as u8, ((v >> 14) & 0x3fff) as u16, (v & 0x3fff) as u16),
        }
    }

    /// `5.7.54`, or "" without an enhanced code.
    pub fn enhanced_text(&self) -> String {
        match self.enhanced {
            (0, _, _) => String::new(),
            (c, s, d) => format!("{c}.{s}.{d}"),
        }
    }
}

impl RejectTable {
    /// Counts one rejection. Only the owning thread may call this.
    pub fn count(&self, key: RejectKey) {
        let packed = key.pack();
        for (k, c) in self.keys.iter().zip(&self.counts) {
            let cur = k.load(Ordering::Relaxed);
            if cur == packed {
                c.inc();
                return;
            }
            if cur == 0 {
                c.set(1);
                k.store(packed, Ordering::Release);
                return;
            }
        }
        self.overflow.inc();
    }

    fn for_each(&self, mut f: impl FnMut(RejectKey, u64)) {
        for (k, c) in self.keys.iter().zip(&self.counts) {
            let key = k.load(Ordering::Acquire);
            if key == 0 {
                break;
            }
            f(RejectKey::unpack(key), c.get());
        }
    }
}

/// Parses the reply lines in `wire` and calls `f(code, enhanced)` once per complete reply
/// (its last line): what the session answered, for reject counting and the protocol log.
pub fn replies_in(wire: &[u8], mut f: impl FnMut(u16, (u8, u16, u16))) {
    for line in wire.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() < 3 || line.get(3).is_some_and(|&b| b == b'-') {
            continue;
        }
        let Some(code) = std::str::from_utf8(&line[..3]).ok().and_then(|s| s.parse::<u16>().ok()) else {
            continue;
        };
        let enhanced = line.get(4..).map_or((0, 0, 0), parse_enhanced);
        f(code, enhanced);
    }
}

/// `5.7.54 text` → (5, 7, 54); anything else → (0, 0, 0).
fn parse_enhanced(text: &[u8]) -> (u8, u16, u16) {
    let word = text.split(|&b| b == b' ').next().unwrap_or(b"");
    let mut parts = word.split(|&b| b == b'.');
    let num = |p: Option<&[u8]>| -> Option<u16> {
        let p = p?;
        if p.is_empty() || p.len() > 3 || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(p).ok()?.parse().ok()
    };
    match (num(parts.next()), num(parts.next()), num(parts.next()), parts.next()) {
        (Some(c @ 2..=5), Some(s), Some(d), None) => (c as u8, s, d),
        _ => (0, 0, 0),
    }
}

/// The metrics of one SMTP core.
#[derive(Debug)]
pub struct SmtpCoreMetrics {
    /// By receive connector index.
    pub connectors: Vec<ConnectorMetrics>,
    /// Connections refused because the client matched no receive connector (`554 5.7.1`).
    pub refused_no_connector: Cell64,
    /// Connections refused because the core was at `max_connections_per_core` (`421 4.7.0`).
    pub refused_core_full: Cell64,
    /// Refused: `max_connections_per_source` reached.
    pub refused_per_source: Cell64,
    /// Refused: PROXY header untrusted or malformed.
    pub refused_proxy: Cell64,
    /// Negative replies.
    pub rejects: RejectTable,
    /// End of data → durable.
    pub accept_latency: Histogram,
    /// This core's spool: bytes in segment files (refreshed every flush tick).
    pub spool_bytes: Cell64,
    /// This core's spool: messages with recipients not finished.
    pub spool_messages: Cell64,
    /// This core's spool: batches written (group commits).
    pub spool_batches: Cell64,
    /// This core's spool: batches made durable (one O_DSYNC write or fdatasync each).
    pub spool_syncs: Cell64,
}

impl SmtpCoreMetrics {
    /// Metrics for a core serving `connectors` receive connectors.
    pub fn new(connectors: usize) -> SmtpCoreMetrics {
        SmtpCoreMetrics {
            connectors: (0..connectors).map(|_| ConnectorMetrics::default()).collect(),
            refused_no_connector: Cell64::default(),
            refused_core_full: Cell64::default(),
            refused_per_source: Cell64::default(),
            refused_proxy: Cell64::default(),
            rejects: RejectTable::default(),
            accept_latency: Histogram::new(&ACCEPT_BUCKETS),
            spool_bytes: Cell64::default(),
            spool_messages: Cell64::default(),
            spool_batches: Cell64::default(),
            spool_syncs: Cell64::default(),
        }
    }
}

/// The metrics of one delivery core. Recipient counts: a message to three recipients that is
/// delivered counts three.
#[derive(Debug)]
pub struct DeliveryCoreMetrics {
    /// Recipients delivered (the next hop answered 2xx).
    pub delivered: Cell64,
    /// Recipient attempts deferred (4xx, unreachable; each retry counts again).
    pub deferred: Cell64,
    /// Recipients failed for good (5xx, expired, deleted by the administrator).
    pub failed: Cell64,
    /// DSNs (bounces, delay and success notices) queued.
    pub dsns: Cell64,
    /// Outbound connections opened.
    pub connections_opened: Cell64,
    /// SMTP transactions run (MAIL … end of data).
    pub transactions: Cell64,
    /// Arrival → delivered, per recipient batch.
    pub delivery_latency: Histogram,
}

impl Default for DeliveryCoreMetrics {
    fn default() -> Self {
        DeliveryCoreMetrics {
            delivered: Cell64::default(),
            deferred: Cell64::default(),
            failed: Cell64::default(),
            dsns: Cell64::default(),
            connections_opened: Cell64::default(),
            transactions: Cell64::default(),
            delivery_latency: Histogram::new(&DELIVERY_BUCKETS),
        }
    }
}

/// Everything the scraper reads: one entry per core, created at start.
#[derive(Debug)]
pub struct Registry {
    /// Receive connector names, by index.
    pub connectors: Vec<String>,
    /// SMTP cores, by index.
    pub smtp: Vec<Arc<SmtpCoreMetrics>>,
    /// Delivery cores, by index.
    pub delivery: Vec<Arc<DeliveryCoreMetrics>>,
    /// The log writer thread.
    pub writer: Arc<WriterStats>,
    /// Process start, Unix milliseconds.
    pub start_ms: u64,
}

impl Registry {
    /// A registry for the given topology.
    pub fn new(connectors: Vec<String>, smtp_cores: usize, delivery_cores: usize) -> Registry {
        let n = connectors.len();
        Registry {
            connectors,
            smtp: (0..smtp_cores).map(|_| Arc::new(SmtpCoreMetrics::new(n))).collect(),
            delivery: (0..delivery_cores).map(|_| Arc::new(DeliveryCoreMetrics::default())).collect(),
            writer: Arc::new(WriterStats::default()),
            start_ms: crate::clock::unix_ms(),
        }
    }
}

/// Per-domain queue figures rendered at most for this many domains (the largest queues); the
/// totals always cover every domain. Keeps a relay that talks to 50,000 domains from
/// producing a 10 MB scrape.
pub const QUEUE_DOMAINS_MAX: usize = 200;

/// Writes the text exposition of everything: counters merged over cores, then the queue.
pub fn render(reg: &Registry, queue: &[DomainSummary]) -> String {
    let mut w = Writer { out: String::with_capacity(16 * 1024) };
    let conn = |f: fn(&ConnectorMetrics) -> &Cell64| -> Vec<(String, u64)> {
        reg.connectors
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let v = reg.smtp.iter().map(|c| c.connectors.get(i).map_or(0, |m| f(m).get())).sum();
                (format!("connector=\"{}\"", escape(name)), v)
            })
            .collect()
    };
    w.family("ringrelay_connections_open", "gauge", "Inbound connections open now, by receive connector.");
    w.samples("ringrelay_connections_open", &conn(|m| &m.connections_open));
    w.family("ringrelay_connections_total", "counter", "Inbound connections assigned to a receive connector.");
    w.samples("ringrelay_connections_total", &conn(|m| &m.connections_total));
    w.family(
        "ringrelay_connections_refused_total",
        "counter",
        "Inbound connections refused before a session: no_connector (554 5.7.1), core_full and per_source \
         (421 4.7.0), proxy (554 5.7.1: PROXY header untrusted or malformed).",
    );
    let no_conn: u64 = reg.smtp.iter().map(|c| c.refused_no_connector.get()).sum();
    let full: u64 = reg.smtp.iter().map(|c| c.refused_core_full.get()).sum();
    let per_source: u64 = reg.smtp.iter().map(|c| c.refused_per_source.get()).sum();
    let proxy: u64 = reg.smtp.iter().map(|c| c.refused_proxy.get()).sum();
    w.samples(
        "ringrelay_connections_refused_total",
        &[
            ("reason=\"no_connector\"".into(), no_conn),
            ("reason=\"core_full\"".into(), full),
            ("reason=\"per_source\"".into(), per_source),
            ("reason=\"proxy\"".into(), proxy),
        ],
    );
    w.family("ringrelay_sessions_total", "counter", "SMTP sessions started (greeting sent), by receive connector.");
    w.samples("ringrelay_sessions_total", &conn(|m| &m.sessions_total));
    w.family(
        "ringrelay_sessions_authenticated_total",
        "counter",
        "SMTP sessions that authenticated (AUTH answered 235), by receive connector.",
    );
    w.samples("ringrelay_sessions_authenticated_total", &conn(|m| &m.sessions_authenticated));
    w.family(
        "ringrelay_messages_accepted_total",
        "counter",
        "Messages made durable and acknowledged with 250 2.6.0, by receive connector.",
    );
    w.samples("ringrelay_messages_accepted_total", &conn(|m| &m.messages_accepted));
    w.family("ringrelay_messages_accepted_bytes_total", "counter", "Bytes of accepted messages, as stored.");
    w.samples("ringrelay_messages_accepted_bytes_total", &conn(|m| &m.bytes_accepted));
    render_rejects(&mut w, reg);
    let mut accept = HistogramSnapshot::default();
    for c in &reg.smtp {
        accept.merge(&c.accept_latency.snapshot());
    }
    w.histogram(
        "ringrelay_accept_latency_seconds",
        "End of message data to durable in the spool (the wait before 250 2.6.0).",
        &ACCEPT_BUCKETS,
        &accept,
    );
    let per_core = |f: fn(&SmtpCoreMetrics) -> &Cell64| -> Vec<(String, u64)> {
        reg.smtp.iter().enumerate().map(|(i, c)| (format!("core=\"{i}\""), f(c).get())).collect()
    };
    w.family("ringrelay_spool_bytes", "gauge", "Bytes in spool segment files, by SMTP core.");
    w.samples("ringrelay_spool_bytes", &per_core(|c| &c.spool_bytes));
    w.family("ringrelay_spool_messages", "gauge", "Messages in the spool not yet finished, by SMTP core.");
    w.samples("ringrelay_spool_messages", &per_core(|c| &c.spool_messages));
    w.family(
        "ringrelay_spool_batches_total",
        "counter",
        "Spool batches written (delivery-outcome-only batches included), by SMTP core.",
    );
    w.samples("ringrelay_spool_batches_total", &per_core(|c| &c.spool_batches));
    w.family(
        "ringrelay_spool_syncs_total",
        "counter",
        "Spool batches of messages made durable (one sync each), by SMTP core: messages accepted / syncs = group-commit size.",
    );
    w.samples("ringrelay_spool_syncs_total", &per_core(|c| &c.spool_syncs));
    render_delivery(&mut w, reg);
    render_queue(&mut w, queue);
    w.family(
        "ringrelay_log_dropped_bytes_total",
        "counter",
        "Tracking/protocol log bytes lost (writer behind or failing).",
    );
    w.samples(
        "ringrelay_log_dropped_bytes_total",
        &[(String::new(), reg.writer.dropped_bytes.load(Ordering::Relaxed))],
    );
    w.family("ringrelay_log_errors_total", "counter", "Tracking/protocol log write or rotation errors.");
    w.samples("ringrelay_log_errors_total", &[(String::new(), reg.writer.errors.load(Ordering::Relaxed))]);
    w.family("ringrelay_start_time_seconds", "gauge", "Process start time, Unix seconds.");
    w.samples_f("ringrelay_start_time_seconds", &[(String::new(), reg.start_ms as f64 / 1000.0)]);
    w.family("ringrelay_build_info", "gauge", "Always 1; the version is a label.");
    w.samples("ringrelay_build_info", &[(format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1)]);
    w.out
}

fn render_rejects(w: &mut Writer, reg: &Registry) {
    let mut merged: std::collections::BTreeMap<RejectKey, u64> = std::collections::BTreeMap::new();
    let mut overflow = 0;
    for c in &reg.smtp {
        c.rejects.for_each(|k, v| *merged.entry(k).or_default() += v);
        overflow += c.rejects.overflow.get();
    }
    w.family(
        "ringrelay_smtp_rejects_total",
        "counter",
        "Negative (4xx/5xx) replies sent to SMTP clients, by receive connector, reply code and enhanced status \
         code: refused commands, recipients and messages, and why.",
    );
    let mut samples: Vec<(String, u64)> = merged
        .into_iter()
        .map(|(k, v)| {
            let name = reg.connectors.get(usize::from(k.connector)).map_or("?", String::as_str);
            (format!("connector=\"{}\",code=\"{}\",enhanced=\"{}\"", escape(name), k.code, k.enhanced_text()), v)
        })
        .collect();
    if overflow > 0 {
        samples.push(("connector=\"\",code=\"other\",enhanced=\"\"".into(), overflow));
    }
    w.samples("ringrelay_smtp_rejects_total", &samples);
}

fn render_delivery(w: &mut Writer, reg: &Registry) {
    let sum = |f: fn(&DeliveryCoreMetrics) -> &Cell64| -> u64 { reg.delivery.iter().map(|c| f(c).get()).sum() };
    w.family(
        "ringrelay_deliveries_total",
        "counter",
        "Recipient outcomes: delivered, deferred (each deferral), failed (for good), and dsn (notices queued).",
    );
    w.samples(
        "ringrelay_deliveries_total",
        &[
            ("outcome=\"delivered\"".into(), sum(|c| &c.delivered)),
            ("outcome=\"deferred\"".into(), sum(|c| &c.deferred)),
            ("outcome=\"failed\"".into(), sum(|c| &c.failed)),
            ("outcome=\"dsn\"".into(), sum(|c| &c.dsns)),
        ],
    );
    w.family("ringrelay_delivery_transactions_total", "counter", "Outbound SMTP transactions run.");
    w.samples("ringrelay_delivery_transactions_total", &[(String::new(), sum(|c| &c.transactions))]);
    w.family("ringrelay_outbound_connections_total", "counter", "Outbound SMTP connections opened.");
    w.samples("ringrelay_outbound_connections_total", &[(String::new(), sum(|c| &c.connections_opened))]);
    let mut lat = HistogramSnapshot::default();
    for c in &reg.delivery {
        lat.merge(&c.delivery_latency.snapshot());
    }
    w.histogram(
        "ringrelay_delivery_latency_seconds",
        "Arrival in the spool to delivered (retries included), per delivered recipient batch.",
        &DELIVERY_BUCKETS,
        &lat,
    );
}

fn render_queue(w: &mut Writer, queue: &[DomainSummary]) {
    let total_msgs: usize = queue.iter().map(|d| d.messages).sum();
    let total_rcpts: usize = queue.iter().map(|d| d.recipients).sum();
    let total_deferred: usize = queue.iter().map(|d| d.deferred).sum();
    let oldest = queue.iter().map(|d| d.oldest_age_ms).max().unwrap_or(0);
    w.family("ringrelay_queue_messages_all", "gauge", "Messages queued for delivery (all domains).");
    w.samples("ringrelay_queue_messages_all", &[(String::new(), total_msgs as u64)]);
    w.family("ringrelay_queue_recipients_all", "gauge", "Recipients queued for delivery (all domains).");
    w.samples("ringrelay_queue_recipients_all", &[(String::new(), total_rcpts as u64)]);
    w.family("ringrelay_queue_deferred_all", "gauge", "Queued messages waiting for a retry (all domains).");
    w.samples("ringrelay_queue_deferred_all", &[(String::new(), total_deferred as u64)]);
    w.family("ringrelay_queue_oldest_age_seconds_all", "gauge", "Age of the oldest queued message (all domains).");
    w.samples_f("ringrelay_queue_oldest_age_seconds_all", &[(String::new(), oldest as f64 / 1000.0)]);
    w.family("ringrelay_queue_domains", "gauge", "Destination domains with queued messages.");
    w.samples("ringrelay_queue_domains", &[(String::new(), queue.len() as u64)]);
    let mut top: Vec<&DomainSummary> = queue.iter().collect();
    top.sort_by(|a, b| b.messages.cmp(&a.messages).then_with(|| a.domain.cmp(&b.domain)));
    top.truncate(QUEUE_DOMAINS_MAX);
    top.sort_by(|a, b| a.domain.cmp(&b.domain));
    let label = |d: &DomainSummary| format!("domain=\"{}\"", escape(&d.domain));
    type Figure = (&'static str, &'static str, fn(&DomainSummary) -> u64);
    let figures: [Figure; 4] = [
        ("ringrelay_queue_messages", "Messages queued, by destination domain (largest queues).", |d| d.messages as u64),
        ("ringrelay_queue_recipients", "Recipients queued, by destination domain.", |d| d.recipients as u64),
        ("ringrelay_queue_deferred", "Messages waiting for a retry, by destination domain.", |d| d.deferred as u64),
        ("ringrelay_queue_connections", "Outbound connections open, by destination domain.", |d| d.connections as u64),
    ];
    for (name, help, f) in figures {
        w.family(name, "gauge", help);
        let s: Vec<(String, u64)> = top.iter().map(|d| (label(d), f(d))).collect();
        w.samples(name, &s);
    }
    w.family("ringrelay_queue_oldest_age_seconds", "gauge", "Age of the oldest queued message, by destination domain.");
    let s: Vec<(String, f64)> = top.iter().map(|d| (label(d), d.oldest_age_ms as f64 / 1000.0)).collect();
    w.samples_f("ringrelay_queue_oldest_age_seconds", &s);
}

/// Label value escaping of the text format: backslash, double quote, line feed.
pub fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

struct Writer {
    out: String,
}

impl Writer {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn samples(&mut self, name: &str, samples: &[(String, u64)]) {
        for (labels, v) in samples {
            self.sample(name, labels, &v.to_string());
        }
    }

    fn samples_f(&mut self, name: &str, samples: &[(String, f64)]) {
        for (labels, v) in samples {
            self.sample(name, labels, &fmt_f64(*v));
        }
    }

    fn sample(&mut self, name: &str, labels: &str, value: &str) {
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{labels}}} {value}");
        }
    }

    fn histogram(&mut self, name: &str, help: &str, bounds: &[f64; BUCKETS_MAX], h: &HistogramSnapshot) {
        self.family(name, "histogram", help);
        let mut cumulative = 0u64;
        for (i, b) in bounds.iter().enumerate() {
            cumulative += h.counts[i];
            self.sample(&format!("{name}_bucket"), &format!("le=\"{}\"", fmt_f64(*b)), &cumulative.to_string());
        }
        cumulative += h.counts[BUCKETS_MAX];
        self.sample(&format!("{name}_bucket"), "le=\"+Inf\"", &cumulative.to_string());
        self.sample(&format!("{name}_sum"), "", &fmt_f64(h.sum_us as f64 / 1e6));
        self.sample(&format!("{name}_count"), "", &cumulative.to_string());
    }
}

fn fmt_f64(v: f64) -> String {
    if v.is_finite() && v == v.trunc() && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reject_keys_round_trip_and_count() {
        let t = RejectTable::default();
        let k = RejectKey { connector: 3, code: 550, enhanced: (5, 7, 54) };
        assert_eq!(RejectKey::unpack(k.pack()), k);
        t.count(k);
        t.count(k);
        t.count(RejectKey { connector: 0, code: 421, enhanced: (4, 4, 2) });
        let mut seen = Vec::new();
        t.for_each(|k, v| seen.push((k.code, k.enhanced_text(), v)));
        assert_eq!(seen, vec![(550, "5.7.54".to_string(), 2), (421, "4.4.2".to_string(), 1)]);
    }

    #[test]
    fn replies_are_found_once_each_with_their_enhanced_code() {
        let wire = b"250-relay.test\r\n250-PIPELINING\r\n250 SIZE 10\r\n550 5.7.54 Unable to relay\r\n354 go\r\n452 4.5.3 Too many\r\n";
        let mut got = Vec::new();
        replies_in(wire, |c, e| got.push((c, e)));
        assert_eq!(got, vec![(250, (0, 0, 0)), (550, (5, 7, 54)), (354, (0, 0, 0)), (452, (4, 5, 3))]);
    }

    #[test]
    fn histogram_buckets_are_cumulative_in_the_exposition() {
        let reg = Registry::new(vec!["a\"b".into()], 2, 1);
        reg.smtp[0].accept_latency.observe_us(400);
        reg.smtp[1].accept_latency.observe_us(3_000);
        reg.smtp[1].accept_latency.observe_us(60_000_000);
        reg.smtp[0].connectors[0].messages_accepted.add(2);
        reg.smtp[1].connectors[0].messages_accepted.add(3);
        let text = render(&reg, &[]);
        assert!(text.contains("ringrelay_accept_latency_seconds_bucket{le=\"0.0005\"} 1\n"), "{text}");
        assert!(text.contains("ringrelay_accept_latency_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("ringrelay_accept_latency_seconds_bucket{le=\"10\"} 2\n"));
        assert!(text.contains("ringrelay_accept_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("ringrelay_accept_latency_seconds_count 3\n"));
        assert!(text.contains("ringrelay_messages_accepted_total{connector=\"a\\\"b\"} 5\n"));
    }
}
