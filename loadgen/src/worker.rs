//! One client thread of `ringload run`: a pinned tokio-uring runtime with its share of the
//! connections, its own message factory and recorder. The threads share the read-only plan, a
//! channel to the main thread (a snapshot of the measurements once a second and a last one at
//! the end) and one atomic counter: the next message number. Claiming message numbers from
//! one counter (one `fetch_add` per message; no lock) instead of a fixed split means a thread
//! whose core is busy with something else falls behind without holding the run back: the
//! other threads take its share. (A fixed split made a run on a shared machine last as long as
//! its most starved thread: 11 s instead of 1 s in one measurement.)
//!
//! The schedule hands out tickets (a message number and the time its latency counts from).
//! Closed loop (`--concurrency`): a ticket is due when a connection is free; its latency clock
//! starts then. Open loop (`--rate`): message `n` is due at `start + n / rate` whatever happens
//! to earlier ones: each thread's dispatcher claims the next number, waits for its time, and
//! hands it to a free connection task (an idle connection first); if none is free the ticket
//! waits, so a slow server shows up as latency measured from the intended time, not as a lower
//! send rate (no coordinated omission). `--concurrency` then caps the connections in flight.
//! The same holds at the end: messages that were due but never sent (the backlog when the run
//! ends) are recorded in the message latency as having waited from their intended time to the
//! end of the run, so a run that ends behind cannot report the latency of only the lucky ones.
//!
//! The glue that drives `client::Client` over a `Stream` is here too: one owned read buffer
//! and one owned write buffer per connection, recycled through a per-thread pool; every read
//! and write bounded by the command timeout and the run's hard deadline. A timed-out
//! operation is not cancelled by tokio-uring, so the socket is shut down and its buffers are
//! given up (crates.md, P3).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use ringrelay::runtime::net;
use ringrelay::runtime::stream::Stream;
use rustls::pki_types::ServerName;
use tokio::sync::Notify;

use crate::client::{Cause, Client, ClientConfig, Outcome, Phase, REPLY_LINE_MAX, Recorder, Stage, Step};
use crate::clock;
use crate::message::MessageFactory;
use crate::ptimer::Timers;
use crate::run::{Load, Plan, stop_requested};
use crate::stats::{Snapshot, ThreadRecorder};

/// Read buffer per connection: replies are short, but an EHLO reply can be long.
const READ_BUF_BYTES: usize = 16 * 1024;
const _: () = assert!(READ_BUF_BYTES > 2 * REPLY_LINE_MAX, "a whole reply line must fit with room to read");
/// Closed loop: a slot's pause after a failed connect.
const CONNECT_FAILURE_PAUSE: Duration = Duration::from_millis(10);
/// Spare connection states kept per thread for reuse.
const SPARE_CONNS_MAX: usize = 256;

/// What a thread is given.
pub struct WorkerSpec {
    /// This thread's index.
    pub index: u64,
    /// Connection tasks on this thread.
    pub concurrency: u32,
    /// The next message number, shared by all threads.
    pub tickets: Arc<AtomicU64>,
    /// Messages in the run (`u64::MAX`: until the time is up).
    pub limit: u64,
    /// Pin to this core.
    pub core: Option<core_affinity::CoreId>,
    /// When the run starts (the schedule's origin).
    pub start: Instant,
}

/// Messages from a client thread to the main thread.
pub enum WorkerMsg {
    /// The measurements of second `tick` (1-based).
    Tick {
        /// Thread index.
        thread: usize,
        /// Interval number.
        tick: u32,
        /// Measurements.
        snap: Snapshot,
        /// Tickets taken so far (cumulative).
        taken: u64,
    },
    /// The thread has finished: the measurements since its last tick.
    Done {
        /// Thread index.
        thread: usize,
        /// Measurements.
        snap: Snapshot,
        /// Tickets taken in all.
        taken: u64,
        /// Open loop: messages due but never sent that this thread recorded (each message
        /// number is claimed, and so recorded, by one thread only).
        unsent: u64,
        /// Why the thread could not run, if it could not.
        error: Option<String>,
    },
}

/// A message to send: its number and the time its latency is measured from.
#[derive(Debug, Clone, Copy)]
struct Ticket {
    n: u64,
    at: Instant,
}

/// A connection task waiting for its next ticket (open loop). One per task, reused.
#[derive(Default)]
struct WaitSlot {
    ticket: Cell<Option<Ticket>>,
    waker: Cell<Option<Waker>>,
}

/// Hands out tickets; see the module comment.
struct Schedule {
    load: Load,
    start: Instant,
    deadline: Instant,
    hard_deadline: Instant,
    /// The next message number, shared by all threads.
    tickets: Arc<AtomicU64>,
    /// Messages in the run.
    limit: u64,
    /// Tickets handed out by this thread.
    taken: Cell<u64>,
    stopped_at: Cell<Option<Instant>>,
    /// Open loop: no more tickets will come.
    closed: Cell<bool>,
    /// Open loop: tasks with an idle connection, first come first served (spreads the load
    /// over the open connections so none idles into the server's timeout).
    waiting_connected: RefCell<VecDeque<Rc<WaitSlot>>>,
    /// Open loop: tasks without a connection (a ticket given here opens one).
    waiting_fresh: RefCell<Vec<Rc<WaitSlot>>>,
    /// Open loop: wakes the dispatcher when a task starts waiting.
    arrivals: Notify,
}

impl Schedule {
    fn new(
        load: Load,
        start: Instant,
        duration: Duration,
        drain: Duration,
        tickets: Arc<AtomicU64>,
        limit: u64,
    ) -> Schedule {
        Schedule {
            load,
            start,
            deadline: start + duration,
            hard_deadline: start + duration + drain,
            tickets,
            limit,
            taken: Cell::new(0),
            stopped_at: Cell::new(None),
            closed: Cell::new(false),
            waiting_connected: RefCell::new(VecDeque::new()),
            waiting_fresh: RefCell::new(Vec::new()),
            arrivals: Notify::new(),
        }
    }

    fn intended(&self, n: u64, rate: f64) -> Instant {
        self.start + Duration::from_secs_f64(n as f64 / rate)
    }

    /// Claims the next message number, if the run has one left.
    fn claim(&self) -> Option<u64> {
        if self.tickets.load(Ordering::Relaxed) >= self.limit {
            return None;
        }
        let n = self.tickets.fetch_add(1, Ordering::Relaxed);
        (n < self.limit).then_some(n)
    }

    /// No ticket will ever be handed out again (message limit reached).
    fn exhausted(&self) -> bool {
        self.tickets.load(Ordering::Relaxed) >= self.limit
    }

    /// SIGINT: remember when, and stop.
    fn stopping(&self, now: Instant) -> bool {
        if !stop_requested() {
            return false;
        }
        if self.stopped_at.get().is_none() {
            self.stopped_at.set(Some(now));
        }
        true
    }

    /// The next ticket for a task (`slot` is the task's own; `connected`: it has an idle
    /// connection to use). `None`: the run is over.
    async fn next(&self, slot: &Rc<WaitSlot>, connected: bool) -> Option<Ticket> {
        match self.load {
            Load::Closed => {
                let now = clock::now();
                if now >= self.deadline || self.stopping(now) {
                    return None;
                }
                let n = self.claim()?;
                self.taken.set(self.taken.get() + 1);
                Some(Ticket { n, at: now })
            }
            Load::Open { .. } => {
                if self.closed.get() {
                    return None;
                }
                slot.ticket.set(None);
                if connected {
                    self.waiting_connected.borrow_mut().push_back(Rc::clone(slot));
                } else {
                    self.waiting_fresh.borrow_mut().push(Rc::clone(slot));
                }
                self.arrivals.notify_one();
                std::future::poll_fn(|cx| {
                    if let Some(t) = slot.ticket.take() {
                        return Poll::Ready(Some(t));
                    }
                    if self.closed.get() {
                        return Poll::Ready(None);
                    }
                    slot.waker.set(Some(cx.waker().clone()));
                    Poll::Pending
                })
                .await
            }
        }
    }

    /// The best waiting task: one with an idle connection, else one without.
    fn pop_waiter(&self) -> Option<Rc<WaitSlot>> {
        let c = self.waiting_connected.borrow_mut().pop_front();
        c.or_else(|| self.waiting_fresh.borrow_mut().pop())
    }

    /// Open loop: releases ticket `k` at its intended time to the best waiting task; when none
    /// is free the ticket waits (and its latency grows) until one is. At the end, `unsent` is
    /// called with the wait of every message due but not sent (`record_backlog`); the count of
    /// them is returned.
    async fn dispatch(&self, rate: f64, timers: &Timers, unsent: &mut dyn FnMut(Duration)) -> u64 {
        // A ticket claimed and due, for which no connection became free before the end.
        let mut held = None;
        loop {
            let now = clock::now();
            if now >= self.hard_deadline || self.stopping(now) {
                break;
            }
            let Some(n) = self.claim() else { break };
            let at = self.intended(n, rate);
            if at >= self.deadline {
                break;
            }
            if at > now {
                timers.sleep_until(at).await;
            }
            let waiter = loop {
                if let Some(w) = self.pop_waiter() {
                    break Some(w);
                }
                let hard = tokio::time::sleep_until(self.hard_deadline.into());
                tokio::select! {
                    _ = self.arrivals.notified() => {}
                    _ = hard => break None,
                }
                if self.stopping(clock::now()) {
                    break None;
                }
            };
            let Some(w) = waiter else {
                held = Some(Ticket { n, at });
                break;
            };
            self.taken.set(self.taken.get() + 1);
            w.ticket.set(Some(Ticket { n, at }));
            if let Some(waker) = w.waker.take() {
                waker.wake();
            }
        }
        self.closed.set(true);
        let waiting: Vec<_> = {
            let mut v: Vec<_> = self.waiting_connected.borrow_mut().drain(..).collect();
            v.append(&mut self.waiting_fresh.borrow_mut());
            v
        };
        for w in waiting {
            if let Some(waker) = w.waker.take() {
                waker.wake();
            }
        }
        self.record_backlog(held, rate, clock::now(), unsent)
    }

    /// Open loop, once the dispatcher has stopped (at the hard deadline, or on SIGINT): the
    /// messages that were due but will never be sent are `held` (claimed, no connection came)
    /// and every number not yet claimed whose intended time is before the end of the schedule
    /// (`--duration`, or the stop). Each is passed to `unsent` with its wait, `end` minus its
    /// intended time; they are claimed like tickets, so no two threads report the same one.
    fn record_backlog(&self, held: Option<Ticket>, rate: f64, end: Instant, unsent: &mut dyn FnMut(Duration)) -> u64 {
        let horizon = match self.stopped_at.get() {
            Some(s) => s.min(self.deadline),
            None => self.deadline,
        };
        let mut count = 0;
        let mut record = |at: Instant| {
            unsent(end.saturating_duration_since(at));
            count += 1;
        };
        if let Some(t) = held
            && t.at < horizon
        {
            record(t.at);
        }
        while let Some(n) = self.claim() {
            let at = self.intended(n, rate);
            if at >= horizon {
                break;
            }
            record(at);
        }
        count
    }
}

/// TLS settings of the thread's connections.
struct TlsClient {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

/// The state of one client thread.
struct Thread {
    plan: Arc<Plan>,
    schedule: Schedule,
    rec: RefCell<ThreadRecorder>,
    factory: RefCell<MessageFactory>,
    client_cfg: Rc<ClientConfig>,
    tls: Option<TlsClient>,
    spare: RefCell<Vec<Conn>>,
    source_next: Cell<usize>,
    timers: Option<Timers>,
    per_connection: u32,
}

/// A connection's reusable state: the session and its two buffers.
struct Conn {
    client: Client,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

impl Thread {
    fn take_conn(&self) -> Conn {
        let now = clock::now();
        match self.spare.borrow_mut().pop() {
            Some(mut c) => {
                c.client.reset(now);
                c.rbuf.clear();
                c.wbuf.clear();
                c
            }
            None => Conn {
                client: Client::new(Rc::clone(&self.client_cfg), now),
                rbuf: Vec::with_capacity(READ_BUF_BYTES),
                wbuf: Vec::with_capacity(4096),
            },
        }
    }

    fn give_conn(&self, c: Conn) {
        let mut spare = self.spare.borrow_mut();
        if spare.len() < SPARE_CONNS_MAX && c.rbuf.capacity() >= READ_BUF_BYTES {
            spare.push(c);
        }
    }

    fn source_ip(&self) -> Option<IpAddr> {
        let list = &self.plan.source_ips;
        if list.is_empty() {
            return None;
        }
        let i = self.source_next.get();
        self.source_next.set(i.wrapping_add(1));
        Some(list[i % list.len()])
    }

    /// The deadline of a read or write that starts now, and whether it is the run's end.
    fn io_deadline(&self) -> (Instant, bool) {
        let normal = clock::now() + self.plan.command_timeout;
        if self.schedule.hard_deadline < normal { (self.schedule.hard_deadline, true) } else { (normal, false) }
    }
}

/// Runs a client thread to completion; its last act is a `WorkerMsg::Done`.
pub fn run_thread(plan: Arc<Plan>, spec: WorkerSpec, tx: Sender<WorkerMsg>) {
    if let Some(core) = spec.core {
        core_affinity::set_for_current(core);
    }
    let thread = spec.index as usize;
    let tx_done = tx.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        ringrelay::runtime::probe::ring_builder(1024).start(thread_main(plan, spec, tx))
    }));
    let error = match result {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(_) => "the client thread panicked (see the message above)".to_string(),
    };
    let _ = tx_done.send(WorkerMsg::Done {
        thread,
        snap: ThreadRecorder::new().take(),
        taken: 0,
        unsent: 0,
        error: Some(error),
    });
}

async fn thread_main(plan: Arc<Plan>, spec: WorkerSpec, tx: Sender<WorkerMsg>) -> Result<(), String> {
    let timers = match plan.load {
        Load::Open { .. } => Some(Timers::start().map_err(|e| format!("cannot create a timerfd: {e}"))?),
        Load::Closed => None,
    };
    let tls = match &plan.tls {
        Some(t) => {
            // One resumption cache per thread: no lock shared between cores on the handshake.
            let mut cfg = (*t.config).clone();
            cfg.resumption = rustls::client::Resumption::in_memory_sessions(256);
            Some(TlsClient { config: Arc::new(cfg), name: t.name.clone() })
        }
        None => None,
    };
    let th = Rc::new(Thread {
        schedule: Schedule::new(
            plan.load,
            spec.start,
            plan.warmup + plan.duration,
            plan.drain,
            Arc::clone(&spec.tickets),
            spec.limit,
        ),
        rec: RefCell::new(ThreadRecorder::new()),
        factory: RefCell::new(MessageFactory::new(Arc::clone(&plan.spec), spec.index, plan.seed)),
        client_cfg: Rc::new(plan.client.clone()),
        tls,
        spare: RefCell::new(Vec::new()),
        source_next: Cell::new(spec.index as usize),
        timers,
        per_connection: if plan.per_connection == 0 { u32::MAX } else { plan.per_connection },
        plan,
    });
    let thread = spec.index as usize;
    let ticker = {
        let th = Rc::clone(&th);
        let tx = tx.clone();
        let warmup = th.plan.warmup;
        let start = spec.start + warmup;
        tokio_uring::spawn(async move {
            if !warmup.is_zero() {
                // Measurements start after the warm-up: what happened before is dropped.
                tokio::time::sleep_until(start.into()).await;
                drop(th.rec.borrow_mut().take());
            }
            let mut tick = 1u32;
            loop {
                tokio::time::sleep_until((start + Duration::from_secs(u64::from(tick))).into()).await;
                let snap = th.rec.borrow_mut().take();
                let taken = th.schedule.taken.get();
                if tx.send(WorkerMsg::Tick { thread, tick, snap, taken }).is_err() {
                    return;
                }
                tick += 1;
            }
        })
    };
    // Wait for the common start, so that every thread's schedule begins together.
    tokio::time::sleep_until(spec.start.into()).await;
    let dispatcher = match (th.plan.load, th.timers.clone()) {
        (Load::Open { rate }, Some(timers)) => {
            let th = Rc::clone(&th);
            Some(tokio_uring::spawn(async move {
                let rec = &th.rec;
                th.schedule.dispatch(rate, &timers, &mut |waited| rec.borrow_mut().unsent(waited)).await
            }))
        }
        _ => None,
    };
    let tasks: Vec<_> = (0..spec.concurrency)
        .map(|_| {
            let th = Rc::clone(&th);
            tokio_uring::spawn(async move { connection_loop(th).await })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let unsent = match dispatcher {
        Some(d) => d.await.unwrap_or(0),
        None => 0,
    };
    ticker.abort();
    let snap = th.rec.borrow_mut().take();
    let _ = tx.send(WorkerMsg::Done { thread, snap, taken: th.schedule.taken.get(), unsent, error: None });
    Ok(())
}

async fn connection_loop(th: Rc<Thread>) {
    let slot = Rc::new(WaitSlot::default());
    while let Some(ticket) = th.schedule.next(&slot, false).await {
        let connected = session(&th, ticket, &slot).await;
        if !connected && th.plan.load == Load::Closed {
            // A server that refuses connections is not hammered in a tight loop: the slot
            // pauses before its next message (which, like this one, counts as failed if the
            // connect fails again). Open loop keeps to its schedule.
            tokio::time::sleep(CONNECT_FAILURE_PAUSE).await;
        }
    }
}

/// Classifies an I/O error for the error table.
fn classify(e: &io::Error) -> Cause {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Cause::Refused,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => Cause::Reset,
        io::ErrorKind::TimedOut => Cause::Timeout,
        io::ErrorKind::UnexpectedEof => Cause::Closed,
        io::ErrorKind::InvalidData => Cause::Tls,
        _ => Cause::Local,
    }
}

/// One connection: connect, (TLS), then messages until the session ends. False when the
/// connection could not be established.
async fn session(th: &Thread, ticket: Ticket, slot: &Rc<WaitSlot>) -> bool {
    let plan = &th.plan;
    let t0 = clock::now();
    let std = match net::connect(plan.target, th.source_ip(), plan.connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            let mut rec = th.rec.borrow_mut();
            rec.connect_failed();
            rec.refused(Stage::Connect, classify(&e));
            rec.message_done(&Outcome::default());
            return false;
        }
    };
    {
        let mut rec = th.rec.borrow_mut();
        rec.connected();
        rec.latency(Phase::Connect, clock::now().saturating_duration_since(t0));
    }
    let mut stream = Stream::new(tokio_uring::net::TcpStream::from_std(std));
    if plan.client.implicit_tls
        && let Some(tls) = &th.tls
    {
        let t = clock::now();
        let (deadline, _) = th.io_deadline();
        let res = tokio::time::timeout_at(
            deadline.into(),
            stream.start_tls_client(Arc::clone(&tls.config), tls.name.clone()),
        )
        .await;
        let cause = match res {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some(Cause::Tls),
            Err(_) => Some(Cause::Timeout),
        };
        let mut rec = th.rec.borrow_mut();
        match cause {
            None => rec.latency(Phase::StartTls, clock::now().saturating_duration_since(t)),
            Some(c) => {
                rec.refused(Stage::StartTls, c);
                rec.message_done(&Outcome::default());
                drop(rec);
                stream.shutdown();
                return true;
            }
        }
    }
    let mut conn = th.take_conn();
    let mut held = Some(ticket);
    let outcome = drive(th, &mut stream, &mut conn, &mut held, slot).await;
    if held.is_some() {
        // The session ended before this message could start; the client recorded why.
        th.rec.borrow_mut().message_done(&Outcome::default());
    }
    match outcome {
        End::Clean => {
            stream.close().await;
            th.give_conn(conn);
        }
        End::Failed => {
            stream.shutdown();
            th.give_conn(conn);
        }
        End::BuffersLost => stream.shutdown(),
    }
    true
}

/// How a session ended.
enum End {
    /// QUIT answered.
    Clean,
    /// The session failed; the buffers are back.
    Failed,
    /// An operation timed out and still owns a buffer: shut down, do not reuse.
    BuffersLost,
}

/// Feeds the complete reply lines in `rbuf[*pos..]` to the client.
fn consume(client: &mut Client, rbuf: &[u8], pos: &mut usize, rec: &mut dyn Recorder) -> Step {
    let now = clock::now();
    while let Some(i) = memchr::memchr(b'\n', &rbuf[*pos..]) {
        let line = &rbuf[*pos..*pos + i];
        *pos += i + 1;
        let step = client.handle_line(line, now, rec);
        if step != Step::Wait {
            return step;
        }
    }
    if rbuf.len() - *pos > REPLY_LINE_MAX {
        client.io_failed(Cause::Protocol, rec);
        return Step::Closed;
    }
    Step::Wait
}

async fn drive(
    th: &Thread,
    stream: &mut Stream,
    conn: &mut Conn,
    held: &mut Option<Ticket>,
    slot: &Rc<WaitSlot>,
) -> End {
    let mut sent_here = 0u32;
    let mut pos = 0usize;
    loop {
        let step = consume(&mut conn.client, &conn.rbuf, &mut pos, &mut *th.rec.borrow_mut());
        match step {
            Step::Closed => {
                return if conn.client.failure().is_none() { End::Clean } else { End::Failed };
            }
            Step::StartTls => {
                let Some(tls) = &th.tls else {
                    conn.client.io_failed(Cause::Local, &mut *th.rec.borrow_mut());
                    return End::Failed;
                };
                // Bytes after the 220 would be plaintext injected before the handshake: drop them.
                conn.rbuf.clear();
                pos = 0;
                let (deadline, _) = th.io_deadline();
                let hs = stream.start_tls_client(Arc::clone(&tls.config), tls.name.clone());
                match tokio::time::timeout_at(deadline.into(), hs).await {
                    Ok(Ok(())) => conn.client.tls_started(clock::now(), &mut *th.rec.borrow_mut()),
                    Ok(Err(_)) => {
                        conn.client.io_failed(Cause::Tls, &mut *th.rec.borrow_mut());
                        return End::Failed;
                    }
                    Err(_) => {
                        conn.client.io_failed(Cause::Timeout, &mut *th.rec.borrow_mut());
                        return End::BuffersLost;
                    }
                }
                continue;
            }
            Step::Ready => {
                let next = match held.take() {
                    Some(t) => Some(t),
                    None if sent_here < th.per_connection => th.schedule.next(slot, true).await,
                    None => None,
                };
                match next {
                    Some(t) => {
                        let last = sent_here + 1 >= th.per_connection || th.schedule.exhausted();
                        let (env, msg) = conn.client.message_slots();
                        th.factory.borrow_mut().build(t.n, clock::unix_micros(), env, msg);
                        conn.client.start_message(t.at, last);
                        sent_here += 1;
                    }
                    None => conn.client.quit(),
                }
                continue;
            }
            Step::Wait => {}
        }
        if conn.client.has_output() {
            conn.client.sent(clock::now());
            conn.client.take_output(&mut conn.wbuf);
            let buf = std::mem::take(&mut conn.wbuf);
            let (deadline, at_end) = th.io_deadline();
            match tokio::time::timeout_at(deadline.into(), stream.write_all(buf)).await {
                Ok((res, mut buf)) => {
                    buf.clear();
                    conn.wbuf = buf;
                    if let Err(e) = res {
                        conn.client.io_failed(classify(&e), &mut *th.rec.borrow_mut());
                        return End::Failed;
                    }
                }
                Err(_) => {
                    let cause = if at_end { Cause::Aborted } else { Cause::Timeout };
                    conn.client.io_failed(cause, &mut *th.rec.borrow_mut());
                    conn.wbuf = Vec::with_capacity(4096);
                    return End::BuffersLost;
                }
            }
        }
        if pos > 0 {
            conn.rbuf.drain(..pos);
            pos = 0;
        }
        if conn.rbuf.capacity() - conn.rbuf.len() < REPLY_LINE_MAX {
            conn.rbuf.reserve(READ_BUF_BYTES);
        }
        let buf = std::mem::take(&mut conn.rbuf);
        let (deadline, at_end) = th.io_deadline();
        match tokio::time::timeout_at(deadline.into(), stream.read(buf)).await {
            Ok((Ok(0), buf)) => {
                conn.rbuf = buf;
                conn.client.io_failed(Cause::Closed, &mut *th.rec.borrow_mut());
                return if conn.client.failure().is_none() { End::Clean } else { End::Failed };
            }
            Ok((Ok(_), buf)) => conn.rbuf = buf,
            Ok((Err(e), buf)) => {
                conn.rbuf = buf;
                conn.client.io_failed(classify(&e), &mut *th.rec.borrow_mut());
                return End::Failed;
            }
            Err(_) => {
                let cause = if at_end { Cause::Aborted } else { Cause::Timeout };
                conn.client.io_failed(cause, &mut *th.rec.borrow_mut());
                conn.rbuf = Vec::with_capacity(READ_BUF_BYTES);
                return End::BuffersLost;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(load: Load, tickets: &Arc<AtomicU64>, limit: u64) -> Schedule {
        Schedule::new(load, clock::now(), Duration::from_secs(10), Duration::from_secs(1), Arc::clone(tickets), limit)
    }

    #[test]
    fn the_backlog_is_every_due_message_not_sent_with_its_wait() {
        let secs = Duration::from_secs_f64;
        // 250 tickets handed out of 1000 due in 10 s at 100/s, ticket 250 held with no
        // connection free; the run ends at 11 s (the drain).
        let tickets = Arc::new(AtomicU64::new(251));
        let s = schedule(Load::Open { rate: 100.0 }, &tickets, u64::MAX);
        assert_eq!(s.intended(3, 100.0) - s.start, Duration::from_millis(30));
        let held = Ticket { n: 250, at: s.intended(250, 100.0) };
        let mut waits = Vec::new();
        let n = s.record_backlog(Some(held), 100.0, s.start + secs(11.0), &mut |w| waits.push(w));
        assert_eq!(n, 750);
        assert_eq!(waits.len(), 750);
        assert_eq!(waits[0], secs(11.0 - 2.5), "the held ticket waited from 2.5 s to the end");
        assert!(waits.iter().all(|w| *w >= secs(1.0)), "the last was due at 9.99 s");
        assert!((waits[749].as_secs_f64() - 1.01).abs() < 1e-6, "{:?}", waits[749]);
        // Another thread finishing later finds nothing left to report: none is counted twice.
        let other = schedule(Load::Open { rate: 100.0 }, &tickets, u64::MAX);
        assert_eq!(other.record_backlog(None, 100.0, other.start + secs(11.0), &mut |_| panic!("twice")), 0);
        // --messages caps the backlog too.
        let capped_tickets = Arc::new(AtomicU64::new(3));
        let capped = schedule(Load::Open { rate: 100.0 }, &capped_tickets, 7);
        assert_eq!(capped.record_backlog(None, 100.0, capped.start + secs(11.0), &mut |_| {}), 4);
        // After SIGINT only what was due before the stop counts.
        let stopped_tickets = Arc::new(AtomicU64::new(50));
        let stopped = schedule(Load::Open { rate: 100.0 }, &stopped_tickets, u64::MAX);
        stopped.stopped_at.set(Some(stopped.start + secs(1.0)));
        let mut waits = Vec::new();
        let n = stopped.record_backlog(None, 100.0, stopped.start + secs(1.5), &mut |w| waits.push(w));
        assert_eq!(n, 50, "messages 50..99 were due in the first second");
        assert_eq!(waits[0], secs(1.0));
    }

    #[test]
    fn closed_loop_threads_share_the_message_numbers_up_to_the_limit() {
        tokio_uring::start(async {
            let tickets = Arc::new(AtomicU64::new(0));
            let s0 = schedule(Load::Closed, &tickets, 3);
            let s1 = schedule(Load::Closed, &tickets, 3);
            let slot = Rc::new(WaitSlot::default());
            let a = s0.next(&slot, false).await.unwrap();
            let b = s1.next(&slot, true).await.unwrap();
            let c = s0.next(&slot, false).await.unwrap();
            assert_eq!((a.n, b.n, c.n), (0, 1, 2));
            assert!(s0.exhausted() && s1.exhausted());
            assert!(s1.next(&slot, false).await.is_none());
            assert_eq!((s0.taken.get(), s1.taken.get()), (2, 1));
        });
    }

    #[test]
    fn open_loop_dispatch_prefers_idle_connections_and_closes_at_the_end() {
        tokio_uring::start(async {
            let timers = Timers::start().unwrap();
            let s = Rc::new(Schedule::new(
                Load::Open { rate: 1000.0 },
                clock::now(),
                Duration::from_millis(5),
                Duration::from_millis(100),
                Arc::new(AtomicU64::new(0)),
                u64::MAX,
            ));
            let fresh = Rc::new(WaitSlot::default());
            let warm = Rc::new(WaitSlot::default());
            let (s1, f1) = (Rc::clone(&s), Rc::clone(&fresh));
            let a = tokio_uring::spawn(async move { s1.next(&f1, false).await });
            let (s2, w2) = (Rc::clone(&s), Rc::clone(&warm));
            let b = tokio_uring::spawn(async move { s2.next(&w2, true).await });
            tokio::task::yield_now().await;
            let d = {
                let s = Rc::clone(&s);
                tokio_uring::spawn(async move {
                    let mut waits = Vec::new();
                    let n = s.dispatch(1000.0, &timers, &mut |w| waits.push(w)).await;
                    (n, waits)
                })
            };
            // Ticket 0 goes to the task with a connection, ticket 1 to the other.
            assert_eq!(b.await.unwrap().unwrap().n, 0);
            assert_eq!(a.await.unwrap().unwrap().n, 1);
            // Nobody asks for tickets 2..4 (due within the 5 ms): at the hard deadline (105 ms)
            // the dispatcher closes and reports them, each as waiting until then.
            let (unsent, waits) = d.await.unwrap();
            assert!(s.next(&fresh, false).await.is_none());
            assert_eq!(unsent, 3);
            assert_eq!(s.taken.get(), 2);
            assert!(waits.iter().all(|w| *w >= Duration::from_millis(100)), "{waits:?}");
        });
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(classify(&io::Error::from(io::ErrorKind::ConnectionRefused)), Cause::Refused);
        assert_eq!(classify(&io::Error::from(io::ErrorKind::BrokenPipe)), Cause::Reset);
        assert_eq!(classify(&io::Error::from(io::ErrorKind::TimedOut)), Cause::Timeout);
        assert_eq!(classify(&io::Error::other("x")), Cause::Local);
    }
}
