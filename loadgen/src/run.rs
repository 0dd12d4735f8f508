//! `ringload run`: the plan of a run, the client threads that carry it out (`worker.rs`), and
//! the main thread's side: it adds up the threads' per-second snapshots, prints progress once
//! a second on stderr, and builds the result (throughput, percentiles per phase, failures by
//! stage and reply, a per-second time series, and every interval histogram as an HdrHistogram
//! interval log), printed as a table and written as JSON.
//!
//! Bounds: the run stops handing out messages at `--duration` or after `--messages`, then
//! gives the messages in flight `--drain` to finish and aborts what is left (counted as
//! failures, `aborted at end of run`). SIGINT stops handing out messages at once; a second
//! SIGINT exits immediately.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};

use crate::client::{ClientConfig, Phase};
use crate::clock;
use crate::hist::{self, Interval, Summary};
use crate::message::MessageSpec;
use crate::stats::{Counts, ErrorCount, ErrorTable};
use crate::units::{fmt_duration, fmt_micros, fmt_ms, fmt_rate};
use crate::worker::{self, WorkerMsg, WorkerSpec};

/// Closed loop (a fixed number of connections, each sending as fast as the server answers) or
/// open loop (messages on a fixed schedule, whatever the server does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// `--concurrency N`.
    Closed,
    /// `--rate N/s`.
    Open {
        /// Messages per second offered.
        rate: f64,
    },
}

/// TLS client settings.
#[derive(Debug, Clone)]
pub struct PlanTls {
    /// The rustls client configuration (ring provider).
    pub config: Arc<rustls::ClientConfig>,
    /// The name sent in SNI and checked against the certificate.
    pub name: ServerName<'static>,
}

/// Everything a run needs, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The server under test.
    pub target: SocketAddr,
    /// Closed or open loop.
    pub load: Load,
    /// Connections (closed loop), or the cap on connections in flight (open loop).
    pub concurrency: u32,
    /// How long to hand out messages, after the warm-up.
    pub duration: Duration,
    /// Messages sent in this first period are neither counted nor measured (connections
    /// opening, caches warming): the results describe the steady state.
    pub warmup: Duration,
    /// How long messages in flight may take to finish after that.
    pub drain: Duration,
    /// Stop after this many messages.
    pub messages: Option<u64>,
    /// Messages per connection (0: until the run ends).
    pub per_connection: u32,
    /// Client threads.
    pub threads: usize,
    /// Pin client threads to cores.
    pub pin: bool,
    /// What the messages look like.
    pub spec: Arc<MessageSpec>,
    /// How sessions behave.
    pub client: ClientConfig,
    /// TLS settings (STARTTLS or implicit TLS).
    pub tls: Option<PlanTls>,
    /// Source addresses, used round robin per connection.
    pub source_ips: Vec<IpAddr>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Timeout for each reply (and each write).
    pub command_timeout: Duration,
    /// Seed for message sizes.
    pub seed: u64,
    /// Print progress once a second on stderr.
    pub progress: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);
static SIGNALS: AtomicU32 = AtomicU32::new(0);

/// A SIGINT/SIGTERM asked the run to stop handing out messages.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

extern "C" fn on_stop_signal(_sig: libc::c_int) {
    // Async-signal-safe: atomics and _exit only.
    if SIGNALS.fetch_add(1, Ordering::Relaxed) >= 1 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
    STOP.store(true, Ordering::Relaxed);
}

/// Installs the SIGINT/SIGTERM handler of `run` and `sweep`: the first signal stops the run
/// gracefully (in-flight messages finish, the report is printed), the second exits at once.
pub fn install_stop_handler() {
    let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: installing a handler that only touches atomics and calls _exit.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// The run's configuration as reported in the JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunConfigReport {
    /// Target address.
    pub target: String,
    /// `open` or `closed`.
    pub mode: String,
    /// Offered rate (open loop), messages per second.
    pub rate_per_s: Option<f64>,
    /// Connections (cap, in open loop).
    pub concurrency: u32,
    /// Seconds of load (measured).
    pub duration_s: f64,
    /// Seconds of warm-up before (not measured).
    pub warmup_s: f64,
    /// Message limit.
    pub messages: Option<u64>,
    /// Messages per connection (0: unlimited).
    pub per_connection: u32,
    /// Client threads.
    pub threads: usize,
    /// `--size` as given.
    pub size: String,
    /// Mean message size, bytes.
    pub size_mean_bytes: f64,
    /// Recipients per message.
    pub rcpts: u32,
    /// Recipient domains.
    pub domains: u32,
    /// STARTTLS.
    pub starttls: bool,
    /// Implicit TLS.
    pub implicit_tls: bool,
    /// AUTH used.
    pub auth: bool,
    /// PIPELINING used when offered.
    pub pipelining: bool,
    /// BDAT used when offered.
    pub bdat: bool,
}

/// One second of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct TickPoint {
    /// End of the interval, seconds since the start.
    pub t_s: f64,
    /// Length of the interval, seconds.
    pub duration_s: f64,
    /// Messages accepted.
    pub ok: u64,
    /// Messages failed.
    pub failed: u64,
    /// Accepted per second.
    pub ok_per_s: f64,
    /// Message latency percentiles in this interval, µs.
    pub p50_us: u64,
    /// 90th.
    pub p90_us: u64,
    /// 99th.
    pub p99_us: u64,
    /// Max.
    pub max_us: u64,
    /// Submission (end of data → 250) p99 in this interval, µs.
    pub submission_p99_us: u64,
    /// Messages taken but not finished at the end of the interval.
    pub in_flight: u64,
}

/// The result of a run (the JSON written by `--json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunResult {
    /// Always `run`.
    pub kind: String,
    /// ringload's version.
    pub version: String,
    /// The configuration.
    pub config: RunConfigReport,
    /// Start, Unix seconds.
    pub started_unix_s: f64,
    /// Wall time from start to the last message, seconds.
    pub elapsed_s: f64,
    /// Counters.
    pub counts: Counts,
    /// Open loop: messages due that were never sent (the backlog when the run ended). Each is
    /// in the `message` latency, as having waited from its intended time to the end of the run.
    pub unsent: u64,
    /// Accepted messages per second over the run.
    pub throughput_per_s: f64,
    /// Failed / attempted.
    pub error_rate: f64,
    /// Latency summaries per phase (keys: `Phase::name`), µs.
    pub phases: BTreeMap<String, Summary>,
    /// Failures by stage and cause.
    pub errors: Vec<ErrorCount>,
    /// One point per second.
    pub timeseries: Vec<TickPoint>,
    /// Every phase's per-second histograms as an HdrHistogram interval log (V2 compressed,
    /// base64), tags = phase names, values in µs.
    pub hdr_interval_log: String,
    /// Why threads failed to run, if any did.
    pub thread_errors: Vec<String>,
}

impl RunResult {
    /// The summary of `phase`, if it has samples.
    pub fn phase(&self, phase: Phase) -> Option<&Summary> {
        self.phases.get(phase.name()).filter(|s| s.count > 0)
    }
}

/// The main thread's sum of one second across threads.
struct TickAgg {
    hists: Vec<Histogram<u64>>,
    counts: Counts,
    reporters: usize,
    taken: u64,
    /// End of the interval, seconds since the start (a final, partial tick ends early).
    end_s: f64,
}

impl TickAgg {
    fn new(end_s: f64) -> TickAgg {
        TickAgg {
            hists: (0..Phase::COUNT).map(|_| hist::new_histogram()).collect(),
            counts: Counts::default(),
            reporters: 0,
            taken: 0,
            end_s,
        }
    }
}

/// Splits `total` into `parts` near-equal shares.
fn share(total: u64, parts: u64, index: u64) -> u64 {
    total / parts + u64::from(index < total % parts)
}

/// Carries out a run.
pub fn run(plan: Plan) -> Result<RunResult, String> {
    let threads = plan.threads.clamp(1, plan.concurrency.max(1) as usize) as u64;
    let plan = Arc::new(plan);
    let cores = if plan.pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let (tx, rx) = mpsc::channel();
    // A short delay lets every thread set up before the schedule's origin.
    let start = clock::now() + Duration::from_millis(50);
    // Measurements (and the report's time axis) begin after the warm-up.
    let measured_from = start + plan.warmup;
    let started_wall = clock::wall_time_of(measured_from);
    let mut handles = Vec::new();
    let tickets = Arc::new(AtomicU64::new(0));
    for i in 0..threads {
        let spec = WorkerSpec {
            index: i,
            concurrency: share(u64::from(plan.concurrency), threads, i) as u32,
            tickets: Arc::clone(&tickets),
            limit: plan.messages.unwrap_or(u64::MAX),
            core: if cores.is_empty() { None } else { Some(cores[i as usize % cores.len()]) },
            start,
        };
        let plan = Arc::clone(&plan);
        let tx = tx.clone();
        let h = std::thread::Builder::new()
            .name(format!("ringload-{i}"))
            .spawn(move || worker::run_thread(plan, spec, tx))
            .map_err(|e| format!("cannot start client thread {i}: {e}"))?;
        handles.push(h);
    }
    drop(tx);
    let mut agg = Aggregator::new(&plan, threads as usize, started_wall, measured_from);
    while agg.running() {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(msg) => agg.add(msg),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let elapsed = clock::now().saturating_duration_since(measured_from);
    Ok(agg.finish(&plan, elapsed))
}

/// Adds up the threads' snapshots, tick by tick.
struct Aggregator {
    threads: usize,
    /// Last tick reported by each thread; `None` until its first.
    last_tick: Vec<u32>,
    done: Vec<bool>,
    ticks: BTreeMap<u32, TickAgg>,
    next_tick: u32,
    totals: Vec<Histogram<u64>>,
    counts: Counts,
    errors: ErrorTable,
    timeseries: Vec<TickPoint>,
    intervals: Vec<Interval>,
    /// Open loop: messages due but never sent, summed over the threads.
    unsent: u64,
    taken_total: Vec<u64>,
    thread_errors: Vec<String>,
    started_wall: SystemTime,
    start: std::time::Instant,
    progress: bool,
    offered: Option<f64>,
    warmup_s: f64,
    final_end_s: f64,
}

impl Aggregator {
    fn new(plan: &Plan, threads: usize, started_wall: SystemTime, start: std::time::Instant) -> Aggregator {
        Aggregator {
            threads,
            last_tick: vec![0; threads],
            done: vec![false; threads],
            ticks: BTreeMap::new(),
            next_tick: 1,
            totals: (0..Phase::COUNT).map(|_| hist::new_histogram()).collect(),
            counts: Counts::default(),
            errors: ErrorTable::default(),
            timeseries: Vec::new(),
            intervals: Vec::new(),
            unsent: 0,
            taken_total: vec![0; threads],
            thread_errors: Vec::new(),
            started_wall,
            start,
            progress: plan.progress,
            offered: match plan.load {
                Load::Open { rate } => Some(rate),
                Load::Closed => None,
            },
            warmup_s: plan.warmup.as_secs_f64(),
            final_end_s: 0.0,
        }
    }

    fn running(&self) -> bool {
        self.done.iter().any(|d| !d)
    }

    fn add(&mut self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Tick { thread, tick, snap, taken } => {
                self.last_tick[thread] = tick;
                self.taken_total[thread] = taken;
                self.merge_into_tick(tick, f64::from(tick), snap, taken);
            }
            WorkerMsg::Done { thread, snap, taken, unsent, error } => {
                let tick = self.last_tick[thread] + 1;
                self.done[thread] = true;
                self.taken_total[thread] = taken;
                self.unsent += unsent;
                if let Some(e) = error {
                    self.thread_errors.push(format!("client thread {thread}: {e}"));
                }
                let end_s = clock::now().saturating_duration_since(self.start).as_secs_f64();
                self.final_end_s = self.final_end_s.max(end_s);
                self.merge_into_tick(tick, end_s.min(f64::from(tick)), snap, taken);
            }
        }
        self.flush_complete_ticks();
    }

    fn merge_into_tick(&mut self, tick: u32, end_s: f64, snap: crate::stats::Snapshot, taken: u64) {
        let t = self.ticks.entry(tick).or_insert_with(|| TickAgg::new(f64::from(tick) - 1.0));
        // A full tick ends at `tick`; a thread's last, partial one earlier: the longest counts.
        t.end_s = t.end_s.max(end_s);
        for (into, from) in t.hists.iter_mut().zip(&snap.hists) {
            hist::merge(into, from);
        }
        t.counts.add(&snap.counts);
        t.reporters += 1;
        t.taken += taken;
        self.errors.add(&snap.errors);
    }

    /// A tick is complete when every thread has reported it or finished before it.
    fn tick_complete(&self, tick: u32) -> bool {
        (0..self.threads).all(|j| self.last_tick[j] >= tick || (self.done[j] && self.last_tick[j] + 1 >= tick))
    }

    fn flush_complete_ticks(&mut self) {
        while let Some(first) = self.ticks.keys().next().copied() {
            if self.running() && !self.tick_complete(first) {
                break;
            }
            let Some(t) = self.ticks.remove(&first) else { break };
            self.next_tick = first + 1;
            self.close_tick(first, t);
        }
    }

    fn close_tick(&mut self, tick: u32, t: TickAgg) {
        let start_s = f64::from(tick - 1);
        let duration_s = (t.end_s - start_s).clamp(0.001, 1.0);
        for (i, h) in t.hists.iter().enumerate() {
            hist::merge(&mut self.totals[i], h);
            if !h.is_empty() {
                self.intervals.push(Interval {
                    tag: Phase::ALL[i].name().to_string(),
                    start: Duration::from_secs_f64(start_s),
                    duration: Duration::from_secs_f64(duration_s),
                    hist: h.clone(),
                });
            }
        }
        self.counts.add(&t.counts);
        let msg = &t.hists[Phase::Message.index()];
        let quantile = |h: &Histogram<u64>, q: f64| if h.is_empty() { 0 } else { h.value_at_quantile(q) };
        let taken_now: u64 = self.taken_total.iter().sum();
        let point = TickPoint {
            t_s: start_s + duration_s,
            duration_s,
            ok: t.counts.ok,
            failed: t.counts.failed,
            ok_per_s: t.counts.ok as f64 / duration_s,
            p50_us: quantile(msg, 0.5),
            p90_us: quantile(msg, 0.9),
            p99_us: quantile(msg, 0.99),
            max_us: if msg.is_empty() { 0 } else { msg.max() },
            submission_p99_us: quantile(&t.hists[Phase::Submission.index()], 0.99),
            in_flight: taken_now.saturating_sub(self.counts.attempted),
        };
        if self.progress {
            self.print_progress(&point);
        }
        self.timeseries.push(point);
    }

    fn print_progress(&self, p: &TickPoint) {
        let total = &self.totals[Phase::Message.index()];
        let so_far = if total.is_empty() { 0 } else { total.value_at_quantile(0.99) };
        let offered = match self.offered {
            Some(r) => {
                let due = ((self.warmup_s + p.t_s) * r).floor() as u64;
                let taken: u64 = self.taken_total.iter().sum();
                format!("  offered {}  backlog {}", fmt_rate(r), due.saturating_sub(taken))
            }
            None => String::new(),
        };
        eprintln!(
            "[{:>5.1}s] {:>9}  ok {:>9}  failed {:>6}  in flight {:>5}{offered}  p50 {:>8}  p99 {:>8}  max {:>8}  p99 so far {}",
            p.t_s,
            fmt_rate(p.ok_per_s),
            self.counts.ok,
            self.counts.failed,
            p.in_flight,
            fmt_micros(p.p50_us),
            fmt_micros(p.p99_us),
            fmt_micros(p.max_us),
            fmt_micros(so_far),
        );
    }

    fn finish(mut self, plan: &Plan, elapsed: Duration) -> RunResult {
        // Whatever is left (threads that never reported) is closed in order.
        let rest: Vec<u32> = self.ticks.keys().copied().collect();
        for k in rest {
            if let Some(t) = self.ticks.remove(&k) {
                self.close_tick(k, t);
            }
        }
        let elapsed_s = elapsed.as_secs_f64().max(1e-6);
        let phases = Phase::ALL.iter().map(|p| (p.name().to_string(), Summary::of(&self.totals[p.index()]))).collect();
        let counts = self.counts;
        RunResult {
            kind: "run".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config: RunConfigReport {
                target: plan.target.to_string(),
                mode: match plan.load {
                    Load::Open { .. } => "open".into(),
                    Load::Closed => "closed".into(),
                },
                rate_per_s: self.offered,
                concurrency: plan.concurrency,
                duration_s: plan.duration.as_secs_f64(),
                warmup_s: plan.warmup.as_secs_f64(),
                messages: plan.messages,
                per_connection: plan.per_connection,
                threads: self.threads,
                size: if plan.spec.fixed.is_some() { "file".into() } else { plan.spec.size.text().to_string() },
                size_mean_bytes: plan.spec.size.mean(),
                rcpts: plan.spec.rcpts,
                domains: plan.spec.domains,
                starttls: plan.client.starttls,
                implicit_tls: plan.client.implicit_tls,
                auth: plan.client.auth.is_some(),
                pipelining: plan.client.pipelining,
                bdat: plan.client.bdat,
            },
            started_unix_s: hist::unix_seconds(self.started_wall),
            elapsed_s,
            counts,
            unsent: self.unsent,
            throughput_per_s: counts.ok as f64 / elapsed_s,
            error_rate: if counts.attempted == 0 { 0.0 } else { counts.failed as f64 / counts.attempted as f64 },
            phases,
            errors: self.errors.rows(),
            timeseries: self.timeseries,
            hdr_interval_log: hist::write_interval_log(self.started_wall, &self.intervals),
            thread_errors: self.thread_errors,
        }
    }
}

/// The human-readable report of a run (stdout).
pub fn print_report(r: &RunResult) {
    let c = &r.config;
    let mode = match c.rate_per_s {
        Some(rate) => format!("open loop at {} (up to {} connections)", fmt_rate(rate), c.concurrency),
        None => format!("closed loop, {} connections", c.concurrency),
    };
    println!(
        "ringload run: {} — {mode}, {} threads, messages per connection: {}, size {}, {} rcpt(s) over {} domain(s)",
        c.target,
        c.threads,
        if c.per_connection == 0 { "unlimited".to_string() } else { c.per_connection.to_string() },
        c.size,
        c.rcpts,
        c.domains
    );
    let n = &r.counts;
    if c.warmup_s > 0.0 {
        println!(
            "(measured after a {} warm-up; its messages are not counted below)",
            fmt_duration(Duration::from_secs_f64(c.warmup_s))
        );
    }
    println!(
        "messages: {} ok, {} failed, {} attempted{}{}; recipients: {} ok, {} refused",
        n.ok,
        n.failed,
        n.attempted,
        c.messages.map(|m| format!(" of {m} requested")).unwrap_or_default(),
        if r.unsent > 0 { format!(", {} due but unsent (backlog)", r.unsent) } else { String::new() },
        n.rcpts_ok,
        n.rcpts_refused
    );
    println!(
        "throughput: {:.1} msg/s accepted over {} ({:.2} MB/s of message data); connections: {} opened, {} failed",
        r.throughput_per_s,
        fmt_duration(Duration::from_secs_f64(r.elapsed_s)),
        n.bytes as f64 / r.elapsed_s / 1e6,
        n.connections,
        n.connections_failed
    );
    println!();
    println!(
        "{:<11} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}   (ms)",
        "latency", "count", "p50", "p90", "p99", "p99.9", "max"
    );
    for p in Phase::ALL {
        let Some(s) = r.phase(p) else { continue };
        println!(
            "{:<11} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10}   {}",
            p.name(),
            s.count,
            fmt_ms(s.p50_us),
            fmt_ms(s.p90_us),
            fmt_ms(s.p99_us),
            fmt_ms(s.p999_us),
            fmt_ms(s.max_us),
            p.describe()
        );
    }
    if r.unsent > 0 {
        println!(
            "(open loop: the message latency includes the {} messages due but never sent, each as waiting from its \
             intended send time to the end of the run)",
            r.unsent
        );
    }
    if !r.errors.is_empty() {
        println!();
        println!("failures:");
        for e in &r.errors {
            println!("  {:>9}  {:<12} {}", e.count, e.stage, e.cause);
        }
    }
    for e in &r.thread_errors {
        println!("error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for total in [0u64, 1, 7, 100, 1001] {
            for parts in 1..5 {
                let sum: u64 = (0..parts).map(|i| share(total, parts, i)).sum();
                assert_eq!(sum, total);
            }
        }
    }
}
