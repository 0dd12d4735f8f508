//! `ringload sink`: a fast SMTP server that stands in for remote MX hosts. Thread-per-core
//! (one pinned tokio-uring runtime and one SO_REUSEPORT listener per thread), and the SMTP
//! conversation is the relay's own sans-IO `ringrelay::smtp::Session` (so framing, PIPELINING,
//! CHUNKING/BDAT, STARTTLS, AUTH PLAIN/LOGIN, SIZE, DSN, 8BITMIME and SMTPUTF8 behave as in
//! ringrelay), driven here by a `Host` that accepts everything except what the knobs say:
//! `--tempfail`/`--permfail` per message, `--disconnect` (421 and close at end of data),
//! recipients whose local part starts with `tempfail` (451 at RCPT) or `permfail` (550 at
//! RCPT), `--latency` before the reply to the end of data.
//!
//! It counts connections, transactions, messages, recipients and bytes per thread in
//! single-writer atomics (read by the main thread for SIGUSR1 and `--stats-file`, never
//! written by two cores), and measures the end-to-end delay of each message from the
//! `X-Ringload-Sent` header that `ringload run` stamps (same machine, same clock).
//!
//! Output on stdout, one JSON object per line: `{"event":"listening",...}` at start,
//! `{"event":"counts",...}` on SIGUSR1, `{"event":"final",...}` at exit (SIGINT/SIGTERM,
//! `--duration`, `--exit-after-messages`). Human messages go to stderr.

use std::cell::RefCell;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use ringrelay::runtime::net;
use ringrelay::runtime::stream::Stream;
use ringrelay::smtp::auth::Mechanism;
use ringrelay::smtp::scanner::BareLf;
use ringrelay::smtp::{Action, Envelope, Host, Output, QueueId, QueueIdGen, Reply, Session, SessionConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::clock;
use crate::hist::{self, Summary};
use crate::ptimer::Timers;
use crate::rng::Rng;

/// Read buffer per connection.
const READ_BUF_BYTES: usize = 64 * 1024;
/// Read buffers kept per thread for reuse.
const SPARE_BUFFERS_MAX: usize = 256;
/// Longest command line (CRLF included).
const COMMAND_LINE_MAX: usize = 2048;

const RCPT_TEMPFAIL: Reply =
    Reply { code: 451, status: "4.2.0", text: "Mailbox temporarily unavailable (ringload sink rule: tempfail*)" };
const RCPT_PERMFAIL: Reply =
    Reply { code: 550, status: "5.1.1", text: "Mailbox unavailable (ringload sink rule: permfail*)" };
const MESSAGE_TEMPFAIL: Reply =
    Reply { code: 451, status: "4.3.0", text: "Temporary failure, try again later (ringload sink --tempfail)" };
const MESSAGE_PERMFAIL: Reply =
    Reply { code: 554, status: "5.3.0", text: "Transaction failed (ringload sink --permfail)" };

/// How the sink behaves.
#[derive(Debug, Clone)]
pub struct SinkPlan {
    /// Listen address.
    pub listen: SocketAddr,
    /// Threads (one listener each).
    pub threads: usize,
    /// Pin threads to cores.
    pub pin: bool,
    /// Name in the greeting and EHLO.
    pub hostname: String,
    /// Delay before the reply to the end of data.
    pub latency: Duration,
    /// Probability of `451` at the end of data.
    pub tempfail: f64,
    /// Probability of `554` at the end of data.
    pub permfail: f64,
    /// Probability of `421` and close at the end of data.
    pub disconnect: f64,
    /// TLS server configuration (STARTTLS, or implicit TLS).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS from the first byte (port 465 style) instead of STARTTLS.
    pub implicit_tls: bool,
    /// Require AUTH with these credentials.
    pub auth: Option<(String, String)>,
    /// Connections open at once (beyond: `421 4.7.0` and close).
    pub max_connections: usize,
    /// Largest message (`SIZE`).
    pub max_size: u64,
    /// Most recipients per message.
    pub max_recipients: usize,
    /// Idle time before `421 4.4.2` and close.
    pub idle_timeout: Duration,
    /// Write each accepted message here.
    pub save: Option<PathBuf>,
    /// Seed for the failure knobs.
    pub seed: u64,
}

/// Per-thread counters: written by one thread only (load + store, no read-modify-write
/// contention), read by the main thread. Aligned so two threads never share a cache line.
#[derive(Default)]
#[repr(align(128))]
pub struct Counters {
    connections: AtomicU64,
    connections_refused: AtomicU64,
    transactions: AtomicU64,
    messages: AtomicU64,
    recipients: AtomicU64,
    rcpts_refused: AtomicU64,
    tempfailed: AtomicU64,
    permfailed: AtomicU64,
    disconnects: AtomicU64,
    bytes: AtomicU64,
    tls: AtomicU64,
    tls_failed: AtomicU64,
    auth_ok: AtomicU64,
    auth_failed: AtomicU64,
    timeouts: AtomicU64,
}

/// Adds `n` to a counter that only this thread writes.
#[inline]
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

/// The sink's counts, summed over threads.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SinkCounts {
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub connections_active: u64,
    /// Connections refused over `--max-connections`.
    pub connections_refused: u64,
    /// MAIL FROM accepted.
    pub transactions: u64,
    /// Messages accepted (`250` at end of data).
    pub messages: u64,
    /// Recipients of accepted messages.
    pub recipients: u64,
    /// Recipients refused by the `tempfail*`/`permfail*` rules.
    pub rcpts_refused: u64,
    /// Messages refused with `451` (`--tempfail`).
    pub tempfailed: u64,
    /// Messages refused with `554` (`--permfail`).
    pub permfailed: u64,
    /// Sessions closed with `421` (`--disconnect`).
    pub disconnects: u64,
    /// Bytes of accepted messages.
    pub bytes: u64,
    /// TLS handshakes completed.
    pub tls: u64,
    /// TLS handshakes failed.
    pub tls_failed: u64,
    /// AUTH accepted.
    pub auth_ok: u64,
    /// AUTH refused.
    pub auth_failed: u64,
    /// Sessions closed for idleness.
    pub timeouts: u64,
}

/// Sums the threads' counters.
pub fn sum_counts(counters: &[Counters], active: &AtomicUsize) -> SinkCounts {
    let mut s = SinkCounts { connections_active: active.load(Ordering::Relaxed) as u64, ..SinkCounts::default() };
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for c in counters {
        s.connections += get(&c.connections);
        s.connections_refused += get(&c.connections_refused);
        s.transactions += get(&c.transactions);
        s.messages += get(&c.messages);
        s.recipients += get(&c.recipients);
        s.rcpts_refused += get(&c.rcpts_refused);
        s.tempfailed += get(&c.tempfailed);
        s.permfailed += get(&c.permfailed);
        s.disconnects += get(&c.disconnects);
        s.bytes += get(&c.bytes);
        s.tls += get(&c.tls);
        s.tls_failed += get(&c.tls_failed);
        s.auth_ok += get(&c.auth_ok);
        s.auth_failed += get(&c.auth_failed);
        s.timeouts += get(&c.timeouts);
    }
    s
}

/// The sink's result (the `--json` file and the `final` line).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SinkResult {
    /// Always `sink`.
    pub kind: String,
    /// ringload's version.
    pub version: String,
    /// Listen address.
    pub listen: String,
    /// Start, Unix seconds.
    pub started_unix_s: f64,
    /// Seconds the sink ran.
    pub elapsed_s: f64,
    /// Counts.
    pub counts: SinkCounts,
    /// Accepted messages per second over the sink's life.
    pub messages_per_s: f64,
    /// End-to-end delay (X-Ringload-Sent → end of data received), µs.
    pub e2e: Summary,
    /// Messages without a usable X-Ringload-Sent header.
    pub e2e_missing: u64,
}

/// A request from the main thread for a thread's end-to-end histogram.
pub type HistRequest = oneshot::Sender<(Histogram<u64>, u64)>;

/// A running sink: what the main thread holds.
pub struct Running {
    /// The bound address (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// Per-thread counters.
    pub counters: Arc<Vec<Counters>>,
    /// Connections open now.
    pub active: Arc<AtomicUsize>,
    /// Per-thread histogram request channels.
    pub requests: Vec<mpsc::UnboundedSender<HistRequest>>,
}

/// Binds the listeners and starts the threads.
pub fn start(plan: SinkPlan) -> Result<Running, String> {
    let threads = plan.threads.max(1);
    let mut addr = plan.listen;
    if addr.port() != 0 {
        net::check_port_free(addr).map_err(|e| {
            format!("cannot listen on {addr}: {e}; is another server (or another sink) already listening there?")
        })?;
    }
    let mut listeners = Vec::new();
    for _ in 0..threads {
        let l = net::reuseport_listener(addr, 1024).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        if addr.port() == 0 {
            addr = l.local_addr().map_err(|e| format!("cannot read the bound address: {e}"))?;
        }
        listeners.push(l);
    }
    let counters: Arc<Vec<Counters>> = Arc::new((0..threads).map(|_| Counters::default()).collect());
    let active = Arc::new(AtomicUsize::new(0));
    let cores = if plan.pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let plan = Arc::new(plan);
    let mut requests = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        requests.push(req_tx);
        let plan = Arc::clone(&plan);
        let counters = Arc::clone(&counters);
        let active = Arc::clone(&active);
        let core = if cores.is_empty() { None } else { Some(cores[i % cores.len()]) };
        std::thread::Builder::new()
            .name(format!("sink-{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                let r = ringrelay::runtime::probe::ring_builder(1024)
                    .start(sink_thread(plan, i, listener, counters, active, req_rx));
                if let Err(e) = r {
                    eprintln!("ringload sink: thread {i} stopped: {e}");
                }
            })
            .map_err(|e| format!("cannot start sink thread {i}: {e}"))?;
    }
    Ok(Running { addr, counters, active, requests })
}

/// State of one sink thread.
struct SinkThread {
    plan: Arc<SinkPlan>,
    index: usize,
    counters: Arc<Vec<Counters>>,
    active: Arc<AtomicUsize>,
    session_cfg: Rc<SessionConfig>,
    timers: Timers,
    rng: RefCell<Rng>,
    ids: RefCell<QueueIdGen>,
    dates: ringrelay::clock::DateCache,
    e2e: RefCell<Histogram<u64>>,
    e2e_missing: std::cell::Cell<u64>,
    /// Read buffers of finished connections, for the next ones.
    spare: RefCell<Vec<Vec<u8>>>,
    /// This thread's TLS configuration: the plan's, with a session cache of its own (rustls'
    /// cache is a mutex; one per thread keeps handshakes from contending across cores).
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl SinkThread {
    fn c(&self) -> &Counters {
        &self.counters[self.index]
    }
}

async fn sink_thread(
    plan: Arc<SinkPlan>,
    index: usize,
    listener: StdListener,
    counters: Arc<Vec<Counters>>,
    active: Arc<AtomicUsize>,
    mut requests: mpsc::UnboundedReceiver<HistRequest>,
) -> Result<(), String> {
    let timers = Timers::start().map_err(|e| format!("cannot create a timerfd: {e}"))?;
    let auth = if plan.auth.is_some() { vec![Mechanism::Plain, Mechanism::Login] } else { Vec::new() };
    let session_cfg = Rc::new(SessionConfig {
        hostname: plan.hostname.clone(),
        connector: "ringload-sink".into(),
        max_command_line: COMMAND_LINE_MAX,
        max_message_size: plan.max_size,
        max_recipients: plan.max_recipients,
        max_bad_commands: 20,
        bare_lf: BareLf::Reject,
        starttls: plan.tls.is_some() && !plan.implicit_tls,
        require_tls: false,
        anonymous: plan.auth.is_none(),
        auth,
    });
    let th = Rc::new(SinkThread {
        rng: RefCell::new(Rng::new(plan.seed ^ (index as u64).wrapping_mul(0x2545_F491_4F6C_DD1D))),
        ids: RefCell::new(QueueIdGen::new(index as u8, QueueId(0))),
        dates: ringrelay::clock::DateCache::default(),
        e2e: RefCell::new(hist::new_histogram()),
        e2e_missing: std::cell::Cell::new(0),
        spare: RefCell::new(Vec::new()),
        tls: plan.tls.as_ref().map(|c| {
            let mut own = (**c).clone();
            own.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
            Arc::new(own)
        }),
        plan,
        index,
        counters,
        active,
        session_cfg,
        timers,
    });
    {
        let th = Rc::clone(&th);
        tokio_uring::spawn(async move {
            while let Some(reply) = requests.recv().await {
                let h = th.e2e.borrow().clone();
                let _ = reply.send((h, th.e2e_missing.get()));
            }
        });
    }
    let listener = tokio_uring::net::TcpListener::from_std(listener);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off briefly rather than spin.
                eprintln!("ringload sink: accept failed: {e}");
                th.timers.sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        bump(&th.c().connections, 1);
        let th = Rc::clone(&th);
        if th.active.fetch_add(1, Ordering::Relaxed) >= th.plan.max_connections {
            th.active.fetch_sub(1, Ordering::Relaxed);
            bump(&th.c().connections_refused, 1);
            tokio_uring::spawn(async move {
                let line = format!("421 4.7.0 {} Too many connections\r\n", th.plan.hostname);
                let _ = tokio::time::timeout(Duration::from_secs(2), tcp.write_all(line.into_bytes())).await;
                let _ = tcp.shutdown(std::net::Shutdown::Both);
            });
            continue;
        }
        tokio_uring::spawn(async move {
            let mut rbuf = th.spare.borrow_mut().pop().unwrap_or_else(|| Vec::with_capacity(READ_BUF_BYTES));
            serve(&th, tcp, peer, &mut rbuf).await;
            // A buffer lost to a timed-out read comes back empty: only whole ones are kept.
            rbuf.clear();
            if rbuf.capacity() >= READ_BUF_BYTES && rbuf.capacity() <= 4 * READ_BUF_BYTES {
                let mut spare = th.spare.borrow_mut();
                if spare.len() < SPARE_BUFFERS_MAX {
                    spare.push(rbuf);
                }
            }
            th.active.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// The policy side of the session: accept everything but what the knobs say.
struct SinkHost<'a> {
    th: &'a SinkThread,
}

impl Host for SinkHost<'_> {
    fn now_ms(&self) -> u64 {
        clock::unix_ms()
    }

    fn date_rfc5322(&self) -> String {
        self.th.dates.rfc5322(clock::unix_ms())
    }

    fn next_queue_id(&mut self) -> QueueId {
        self.th.ids.borrow_mut().next(clock::unix_ms())
    }

    fn check_mail(&mut self, _envelope: &Envelope) -> Result<(), Reply> {
        bump(&self.th.c().transactions, 1);
        Ok(())
    }

    fn check_rcpt(&mut self, _envelope: &Envelope, address: &str) -> Result<(), Reply> {
        let local = address.rsplit_once('@').map_or(address, |(l, _)| l).as_bytes();
        let starts = |prefix: &[u8]| local.len() >= prefix.len() && local[..prefix.len()].eq_ignore_ascii_case(prefix);
        if starts(b"tempfail") {
            bump(&self.th.c().rcpts_refused, 1);
            return Err(RCPT_TEMPFAIL);
        }
        if starts(b"permfail") {
            bump(&self.th.c().rcpts_refused, 1);
            return Err(RCPT_PERMFAIL);
        }
        Ok(())
    }

    fn check_auth(&mut self, _client_ip: std::net::IpAddr) -> Result<(), Reply> {
        Ok(())
    }

    fn may_send_as(&self, _user: &str, _address: &str) -> bool {
        true
    }
}

/// What happens at the end of a message.
enum Verdict {
    Accept,
    Refuse(Reply),
    Disconnect,
}

/// One connection.
async fn serve(th: &SinkThread, tcp: tokio_uring::net::TcpStream, peer: SocketAddr, rbuf: &mut Vec<u8>) {
    let mut stream = Stream::new(tcp);
    let plan = &th.plan;
    if plan.implicit_tls {
        let Some(cfg) = th.tls.clone() else { return };
        match tokio::time::timeout(plan.idle_timeout, stream.start_tls_server(cfg)).await {
            Ok(Ok(())) => bump(&th.c().tls, 1),
            _ => {
                bump(&th.c().tls_failed, 1);
                stream.shutdown();
                return;
            }
        }
    }
    let mut session = Session::new(Rc::clone(&th.session_cfg), peer.ip(), plan.implicit_tls);
    let mut out = Output::default();
    session.greet(&mut out);
    loop {
        let consumed = session.receive(rbuf, &mut SinkHost { th }, &mut out);
        if consumed > 0 {
            rbuf.drain(..consumed);
        }
        match out.action.take() {
            None => {}
            Some(Action::Persist) => {
                if !flush(&mut stream, &mut out, plan.idle_timeout).await {
                    return stream.shutdown();
                }
                match end_of_message(th, &session).await {
                    Verdict::Accept => session.persisted(Ok(()), &mut out),
                    Verdict::Refuse(r) => session.persisted(Err(r), &mut out),
                    Verdict::Disconnect => {
                        bump(&th.c().disconnects, 1);
                        let line =
                            format!("421 4.3.0 {} Closing connection (ringload sink --disconnect)\r\n", plan.hostname);
                        out.wire.extend_from_slice(line.as_bytes());
                        flush(&mut stream, &mut out, plan.idle_timeout).await;
                        return stream.shutdown();
                    }
                }
                continue;
            }
            Some(Action::Authenticate) => {
                let (user, pass) = session.credentials();
                let ok = plan.auth.as_ref().is_some_and(|(u, p)| u == user && p == pass);
                bump(if ok { &th.c().auth_ok } else { &th.c().auth_failed }, 1);
                session.authenticated(ok, &mut out);
                continue;
            }
            Some(Action::StartTls) => {
                if !flush(&mut stream, &mut out, plan.idle_timeout).await {
                    return stream.shutdown();
                }
                // Anything pipelined after STARTTLS is discarded (RFC 3207 5, CVE-2011-0411).
                rbuf.clear();
                let Some(cfg) = th.tls.clone() else { return stream.shutdown() };
                match tokio::time::timeout(plan.idle_timeout, stream.start_tls_server(cfg)).await {
                    Ok(Ok(())) => {
                        bump(&th.c().tls, 1);
                        session.tls_started();
                    }
                    _ => {
                        bump(&th.c().tls_failed, 1);
                        return stream.shutdown();
                    }
                }
                continue;
            }
            Some(Action::Close) => {
                flush(&mut stream, &mut out, plan.idle_timeout).await;
                return stream.close().await;
            }
        }
        if !flush(&mut stream, &mut out, plan.idle_timeout).await {
            return stream.shutdown();
        }
        if rbuf.capacity() - rbuf.len() < COMMAND_LINE_MAX {
            rbuf.reserve(READ_BUF_BYTES);
        }
        let buf = std::mem::take(rbuf);
        match tokio::time::timeout(plan.idle_timeout, stream.read(buf)).await {
            Ok((Ok(n), buf)) if n > 0 => *rbuf = buf,
            Ok((_, buf)) => {
                // End of stream or a read error: the session is over, the buffer is reusable.
                *rbuf = buf;
                return stream.shutdown();
            }
            Err(_) => {
                bump(&th.c().timeouts, 1);
                session.timed_out(&mut out);
                flush(&mut stream, &mut out, Duration::from_secs(1)).await;
                return stream.shutdown();
            }
        }
    }
}

/// Writes the pending replies. False when the connection is unusable.
async fn flush(stream: &mut Stream, out: &mut Output, timeout: Duration) -> bool {
    if out.wire.is_empty() {
        return true;
    }
    let buf = std::mem::take(&mut out.wire);
    match tokio::time::timeout(timeout, stream.write_all(buf)).await {
        Ok((res, mut buf)) => {
            buf.clear();
            out.wire = buf;
            res.is_ok()
        }
        Err(_) => false,
    }
}

/// Decides, measures, saves and counts a complete message.
async fn end_of_message(th: &SinkThread, session: &Session) -> Verdict {
    let received_us = clock::unix_micros();
    let message = session.message();
    match sent_stamp(message) {
        Some(sent) if received_us >= sent => hist::record(&mut th.e2e.borrow_mut(), received_us - sent),
        Some(_) => hist::record(&mut th.e2e.borrow_mut(), 0),
        None => th.e2e_missing.set(th.e2e_missing.get() + 1),
    }
    let plan = &th.plan;
    let verdict = {
        let mut rng = th.rng.borrow_mut();
        if rng.chance(plan.disconnect) {
            Verdict::Disconnect
        } else if rng.chance(plan.tempfail) {
            Verdict::Refuse(MESSAGE_TEMPFAIL)
        } else if rng.chance(plan.permfail) {
            Verdict::Refuse(MESSAGE_PERMFAIL)
        } else {
            Verdict::Accept
        }
    };
    if !plan.latency.is_zero() {
        th.timers.sleep(plan.latency).await;
    }
    let c = th.c();
    match &verdict {
        Verdict::Accept => {
            let body = strip_own_received(message);
            if let Some(dir) = &plan.save
                && let Err(e) = save(dir, session.envelope(), body)
            {
                eprintln!("ringload sink: cannot save a message in {}: {e}", dir.display());
            }
            bump(&c.bytes, body.len() as u64);
            bump(&c.recipients, session.envelope().recipients.len() as u64);
            bump(&c.messages, 1);
        }
        Verdict::Refuse(r) if r.code >= 500 => bump(&c.permfailed, 1),
        Verdict::Refuse(_) => bump(&c.tempfailed, 1),
        Verdict::Disconnect => {}
    }
    verdict
}

/// The `X-Ringload-Sent` value (Unix µs) in the header section, if present.
pub fn sent_stamp(message: &[u8]) -> Option<u64> {
    const NAME: &[u8] = b"\nX-Ringload-Sent:";
    let header_end = memchr::memmem::find(message, b"\r\n\r\n").unwrap_or(message.len());
    let head = &message[..header_end];
    let at = memchr::memmem::find(head, NAME)? + NAME.len();
    let rest = &head[at..];
    let digits: &[u8] = {
        let start = rest.iter().position(|b| !b.is_ascii_whitespace())?;
        let rest = &rest[start..];
        let end = rest.iter().position(|b| !b.is_ascii_digit()).unwrap_or(rest.len());
        &rest[..end]
    };
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The message without the `Received:` header our session put in front (first field and its
/// continuation lines), i.e. the bytes as the client sent them, dot-unstuffed.
pub fn strip_own_received(message: &[u8]) -> &[u8] {
    let mut i = 0;
    loop {
        let Some(nl) = memchr::memchr(b'\n', &message[i..]) else { return &message[message.len()..] };
        i += nl + 1;
        if !matches!(message.get(i), Some(b' ' | b'\t')) {
            return &message[i..];
        }
    }
}

/// Writes `<queue id>.eml` (the message) and `<queue id>.json` (the envelope) into `dir`.
fn save(dir: &std::path::Path, env: &Envelope, body: &[u8]) -> std::io::Result<()> {
    let name = env.queue_id.to_string();
    let meta = serde_json::json!({
        "queue_id": name,
        "from": env.sender,
        "rcpts": env.recipients.iter().map(|r| r.address.as_str()).collect::<Vec<_>>(),
        "helo": env.helo,
        "client_ip": env.client_ip.to_string(),
        "tls": env.tls,
        "auth_user": env.auth_user,
        "size": body.len(),
    });
    std::fs::write(dir.join(format!("{name}.json")), meta.to_string())?;
    let tmp = dir.join(format!(".{name}.eml.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    drop(f);
    std::fs::rename(&tmp, dir.join(format!("{name}.eml")))
}

/// Asks every thread for its end-to-end histogram and merges them (1 s per thread at most).
pub async fn collect_e2e(requests: &[mpsc::UnboundedSender<HistRequest>]) -> (Histogram<u64>, u64) {
    let mut merged = hist::new_histogram();
    let mut missing = 0;
    for r in requests {
        let (tx, rx) = oneshot::channel();
        if r.send(tx).is_err() {
            continue;
        }
        if let Ok(Ok((h, m))) = tokio::time::timeout(Duration::from_secs(1), rx).await {
            hist::merge(&mut merged, &h);
            missing += m;
        }
    }
    (merged, missing)
}

/// A self-signed certificate for `--tls-self-signed`: names `hostname`, `localhost`,
/// 127.0.0.1 and ::1. Clients must not verify it (`run --tls-insecure`).
pub fn self_signed_config(hostname: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut names = vec![hostname.to_string(), "localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    names.dedup();
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot generate a TLS key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| format!("cannot make a certificate for {hostname}: {e}"))?;
    params.distinguished_name.push(rcgen::DnType::CommonName, hostname);
    let cert = params.self_signed(&key).map_err(|e| format!("cannot sign the certificate: {e}"))?;
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| format!("cannot use the generated key: {e}"))?;
    let config = rustls::ServerConfig::builder_with_provider(ringrelay::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    Ok(Arc::new(config))
}

/// Writes `counts` to `path` atomically (temporary file, then rename).
pub fn write_stats_file(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, line)?;
    std::fs::rename(&tmp, path)
}

/// Builds the final result.
pub fn result(
    running: &Running,
    started_unix_s: f64,
    elapsed: Duration,
    e2e: &Histogram<u64>,
    missing: u64,
) -> SinkResult {
    let counts = sum_counts(&running.counters, &running.active);
    let secs = elapsed.as_secs_f64().max(1e-6);
    SinkResult {
        kind: "sink".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        listen: running.addr.to_string(),
        started_unix_s,
        elapsed_s: secs,
        counts,
        messages_per_s: counts.messages as f64 / secs,
        e2e: Summary::of(e2e),
        e2e_missing: missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_and_received_header() {
        let msg = b"Received: from x ([127.0.0.1])\r\n\tby sink (ringrelay) with ESMTP id 1;\r\n\tDate\r\n\
                    X-Ringload-Id: a.1\r\nX-Ringload-Sent: 1700000000123456\r\nSubject: s\r\n\r\nX-Ringload-Sent: 5\r\n";
        assert_eq!(sent_stamp(msg), Some(1_700_000_000_123_456));
        assert!(strip_own_received(msg).starts_with(b"X-Ringload-Id: a.1\r\n"));
        assert_eq!(sent_stamp(b"Subject: s\r\n\r\n\r\nX-Ringload-Sent: 5\r\n"), None);
        assert_eq!(strip_own_received(b"Received: x\r\n"), b"");
    }

    #[test]
    fn counters_sum() {
        let counters = vec![Counters::default(), Counters::default()];
        bump(&counters[0].messages, 2);
        bump(&counters[1].messages, 3);
        bump(&counters[1].recipients, 7);
        let active = AtomicUsize::new(4);
        let s = sum_counts(&counters, &active);
        assert_eq!((s.messages, s.recipients, s.connections_active), (5, 7, 4));
    }

    #[test]
    fn self_signed_certificates_build() {
        assert!(self_signed_config("mx.sink.test").is_ok());
    }
}

/// When the sink stops by itself, and where it publishes its counts.
#[derive(Debug, Clone, Default)]
pub struct SinkControl {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop once this many messages were accepted.
    pub exit_after_messages: Option<u64>,
    /// Rewrite this file with the counts (JSON) five times a second.
    pub stats_file: Option<PathBuf>,
}

/// One JSON line of counts: `{"event": ..., "elapsed_s": ..., <SinkCounts>}`.
pub fn counts_line(event: &str, counts: &SinkCounts, elapsed_s: f64) -> String {
    let mut v = serde_json::to_value(counts).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("event".into(), event.into());
        o.insert("elapsed_s".into(), serde_json::json!((elapsed_s * 1000.0).round() / 1000.0));
    }
    v.to_string()
}

/// Runs the sink until SIGINT/SIGTERM or a `SinkControl` limit: prints the `listening` line
/// once the signal handlers are in place (so a SIGUSR1 right after it is safe), answers
/// SIGUSR1 with a `counts` line, keeps the stats file fresh, and returns the final result.
pub fn run(plan: SinkPlan, control: &SinkControl) -> Result<SinkResult, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the control runtime: {e}"))?;
    rt.block_on(async move {
        let sig = |k: SignalKind, name: &str| signal(k).map_err(|e| format!("cannot handle {name}: {e}"));
        let mut usr1 = sig(SignalKind::user_defined1(), "SIGUSR1")?;
        let mut int = sig(SignalKind::interrupt(), "SIGINT")?;
        let mut term = sig(SignalKind::terminate(), "SIGTERM")?;
        let threads = plan.threads.max(1);
        let latency = plan.latency;
        let running = start(plan)?;
        let started = clock::now();
        let started_unix_s = clock::unix_micros() as f64 / 1e6;
        println!("{}", serde_json::json!({"event": "listening", "addr": running.addr.to_string(), "threads": threads}));
        eprintln!(
            "ringload sink listening on {} ({threads} threads, latency {:?}); SIGUSR1 prints counts, SIGINT/SIGTERM stops",
            running.addr, latency
        );
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut stats_error_shown = false;
        let reason = loop {
            tokio::select! {
                _ = usr1.recv() => {
                    let c = sum_counts(&running.counters, &running.active);
                    println!("{}", counts_line("counts", &c, started.elapsed().as_secs_f64()));
                }
                _ = int.recv() => break "SIGINT",
                _ = term.recv() => break "SIGTERM",
                _ = tick.tick() => {
                    let c = sum_counts(&running.counters, &running.active);
                    if let Some(path) = &control.stats_file
                        && let Err(e) = write_stats_file(path, &counts_line("counts", &c, started.elapsed().as_secs_f64()))
                        && !stats_error_shown
                    {
                        eprintln!("ringload sink: cannot write --stats-file {}: {e}", path.display());
                        stats_error_shown = true;
                    }
                    if control.duration.is_some_and(|d| started.elapsed() >= d) {
                        break "--duration reached";
                    }
                    if control.exit_after_messages.is_some_and(|n| c.messages >= n) {
                        break "--exit-after-messages reached";
                    }
                }
            }
        };
        eprintln!("ringload sink: stopping ({reason})");
        let (e2e, missing) = collect_e2e(&running.requests).await;
        let r = result(&running, started_unix_s, started.elapsed(), &e2e, missing);
        if let Some(path) = &control.stats_file {
            let _ = write_stats_file(path, &counts_line("final", &r.counts, r.elapsed_s));
        }
        Ok(r)
    })
}
