//! Drives one `smtp::Session` over one connection: reads into a reused owned buffer, feeds the
//! session, writes its replies (one write per batch of pipelined commands), and carries out
//! its actions: persist (spool append, then hand-off to delivery), authenticate (a per-core
//! cache of verified credentials, else argon2 off the core with a bounded number running at
//! once, process-wide), STARTTLS (discarding anything
//! pipelined after it), close. Timeouts become `Session::timed_out`; after one the socket is
//! shut down and never read again (tokio-uring cannot cancel a read).
//!
//! Before the session starts, in order: the PROXY header where the listening address expects
//! one (only from `trusted_proxies`, bounded in size and time; the client address it carries
//! replaces the peer's for everything after), the receive connector, the per-source
//! connection limit, implicit TLS. The abuse limits are asked through `SessionHost`.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

use super::smtp_core::{CorePolicy, SmtpCore};
use super::stream::Stream;
use crate::policy::limits::Sender;
use crate::policy::proxy::{self, PROXY_HEADER_BYTES_MAX};
use crate::smtp::envelope::Envelope;
use crate::smtp::reply::{self, Reply};
use crate::smtp::{Action, Host, Output, QueueId, Session, TimeoutKind};

/// The read buffer: room for the longest command line, plus a read's worth.
const READ_BUF_MIN: usize = 16 * 1024;
/// Time allowed for a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Time allowed for the PROXY header, from accept (a proxy sends it at once).
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to send a last reply (`421`) before closing.
const CLOSING_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed to send pending replies once the shutdown grace period is over.
pub const ABORT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves one accepted connection to its end.
pub async fn serve(core: Rc<SmtpCore>, tcp: TcpStream, peer: SocketAddr, bind: SocketAddr) {
    let shared = Arc::clone(&core.shared);
    // The receive-side policy in force now decides this connection to its end (a SIGHUP that
    // replaces it applies to connections accepted after it).
    let policy = core.policy();
    // Bytes read with the PROXY header that belong to the client (SMTP or a TLS ClientHello).
    let mut early = Vec::new();
    let client_ip = match policy.connectors.proxy(bind) {
        None => peer.ip().to_canonical(),
        Some(policy) => {
            if !proxy::is_trusted(peer.ip(), &policy.trusted) {
                tracing::info!(%peer, %bind, "PROXY protocol connection from a peer that is not a trusted proxy");
                core.obs.refused_proxy(); // obs hook
                return refuse(tcp, reply::PROXY_REFUSED).await;
            }
            match read_proxy_header(&tcp).await {
                Ok((header, rest)) => {
                    early = rest;
                    match header {
                        proxy::Header::Client(client) => client.ip().to_canonical(),
                        proxy::Header::Local => peer.ip().to_canonical(),
                    }
                }
                Err(why) => {
                    tracing::info!(%peer, %bind, why, "PROXY header refused");
                    core.obs.refused_proxy(); // obs hook
                    return refuse(tcp, reply::PROXY_REFUSED).await;
                }
            }
        }
    };
    let Some(connector) = policy.connectors.select(bind, client_ip) else {
        core.obs.refused_no_connector(); // obs hook
        tracing::debug!(%peer, %client_ip, %bind, "client matches no receive connector");
        return refuse(tcp, reply::NO_CONNECTOR).await;
    };
    let _slot = match policy.limits[connector].connections_per_source_max {
        None => None,
        Some(max) => match SourceSlot::acquire(&core, connector, client_ip, max) {
            Some(slot) => Some(slot),
            None => {
                core.obs.refused_per_source(); // obs hook
                tracing::debug!(%client_ip, connector = %shared.config.receive_connectors[connector].name, max,
                    "max_connections_per_source reached");
                return refuse(tcp, reply::TOO_MANY_CONNECTIONS).await;
            }
        },
    };
    let rc = &policy.config.receive_connectors[connector];
    let obs = core.obs.connection(connector, peer, bind); // obs hook: counters, protocol log
    let mut stream = Stream::new(tcp);
    let tls = policy.tls[connector].clone();
    if rc.implicit_tls {
        let Some(cfg) = tls.clone() else { return stream.shutdown() };
        let handshake = stream.start_tls_server_after(cfg, &early);
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(())) => early.clear(),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "implicit TLS handshake failed");
                return stream.shutdown();
            }
            Err(_) => return stream.shutdown(),
        }
    }
    let session = Session::new(Rc::clone(&policy.session_configs[connector]), client_ip, stream.is_tls());
    let mut driver = Driver {
        core: Rc::clone(&core),
        policy,
        connector,
        session,
        stream,
        out: Output::default(),
        obs,
        rate_user: None,
    };
    driver.run(tls, early).await;
}

/// Reads a PROXY header: at most `PROXY_HEADER_BYTES_MAX` octets within
/// `PROXY_HEADER_TIMEOUT`. Returns what it says and the bytes read after it. On a timeout the
/// read is abandoned: the caller must not read the socket again.
async fn read_proxy_header(tcp: &TcpStream) -> Result<(proxy::Header, Vec<u8>), &'static str> {
    let deadline = tokio::time::Instant::from_std(crate::clock::now() + PROXY_HEADER_TIMEOUT);
    let mut buf: Vec<u8> = Vec::with_capacity(PROXY_HEADER_BYTES_MAX);
    loop {
        match proxy::parse(&buf) {
            proxy::Parse::Done { header, len } => {
                buf.drain(..len);
                return Ok((header, buf));
            }
            proxy::Parse::Invalid(why) => return Err(why),
            proxy::Parse::NeedMore => {}
        }
        let len = buf.len();
        if len >= buf.capacity() {
            return Err("PROXY header longer than the limit");
        }
        match tokio::time::timeout_at(deadline, tcp.read(buf.slice(len..))).await {
            Err(_) => return Err("no complete PROXY header in time"),
            Ok((Ok(0), _)) => return Err("connection closed before the PROXY header ended"),
            Ok((Ok(_), slice)) => buf = slice.into_inner(),
            Ok((Err(_), _)) => return Err("read error before the PROXY header ended"),
        }
    }
}

/// One of `max_connections_per_source` slots, given back when the connection ends.
struct SourceSlot {
    core: Rc<SmtpCore>,
    connector: usize,
    ip: IpAddr,
}

impl SourceSlot {
    fn acquire(core: &Rc<SmtpCore>, connector: usize, ip: IpAddr, max: u32) -> Option<SourceSlot> {
        let ok = core.limits.borrow_mut().connections.try_acquire(connector, ip, max);
        ok.then(|| SourceSlot { core: Rc::clone(core), connector, ip })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        self.core.limits.borrow_mut().connections.release(self.connector, self.ip);
    }
}

/// Answers a connection that will not be served with one reply, and closes it.
pub async fn refuse(tcp: TcpStream, r: Reply) {
    let mut line = Vec::with_capacity(128);
    r.write_to(&mut line);
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.write_all(line)).await;
    let _ = tcp.shutdown(std::net::Shutdown::Both);
}

struct Driver {
    core: Rc<SmtpCore>,
    /// The receive-side policy this connection was accepted under.
    policy: Rc<CorePolicy>,
    connector: usize,
    session: Session,
    stream: Stream,
    out: Output,
    /// Metrics, protocol log and tracking of this connection (`obs`).
    obs: crate::obs::ConnObs,
    /// The authenticated user's name as the message-rate table keys it, made once per AUTH so
    /// that every MAIL does not copy it.
    rate_user: Option<Rc<str>>,
}

/// How a wait for input ended.
enum Input {
    Data(Vec<u8>),
    Closed,
    /// Shutdown started while the session was idle, or the shutdown grace period ended:
    /// tell the client and close.
    Stop,
}

impl Driver {
    /// Runs the session; `early` is input already read (after a PROXY header).
    async fn run(&mut self, tls: Option<Arc<rustls::ServerConfig>>, early: Vec<u8>) {
        let limits = &self.core.shared.config.limits;
        let command_timeout = limits.command_timeout.get();
        let data_timeout = limits.data_timeout.get();
        let cap = READ_BUF_MIN.max(2 * self.session.max_line());
        let mut rbuf: Vec<u8> = early;
        rbuf.reserve(cap);
        self.session.greet(&mut self.out);
        loop {
            if !self.flush(command_timeout).await {
                return self.stream.shutdown();
            }
            match self.out.action.take() {
                Some(Action::Close) => return self.stream.close().await,
                Some(Action::Persist) => {
                    self.persist().await;
                    continue;
                }
                Some(Action::Authenticate) => {
                    self.authenticate().await;
                    continue;
                }
                Some(Action::StartTls) => {
                    // RFC 3207 5 / CVE-2011-0411: whatever the client sent after STARTTLS, before
                    // the handshake, is discarded, never executed.
                    if !rbuf.is_empty() {
                        tracing::debug!(bytes = rbuf.len(), "discarding plaintext pipelined after STARTTLS");
                        rbuf.clear();
                    }
                    let Some(cfg) = tls.clone() else { return self.stream.shutdown() };
                    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, self.stream.start_tls_server(cfg));
                    match unless_aborted(&self.core, handshake).await {
                        Some(Ok(Ok(()))) => self.session.tls_started(),
                        _ => return self.stream.shutdown(),
                    }
                    continue;
                }
                None => {}
            }
            if self.core.stopping.get() {
                // No new transaction from here on, not even one pipelined in `rbuf`.
                self.session.drain();
            }
            if !rbuf.is_empty() {
                let mut host = SessionHost {
                    core: &self.core,
                    policy: &self.policy,
                    connector: self.connector,
                    rate_user: self.rate_user.as_ref(),
                };
                let used = self.obs.receive(&mut self.session, &rbuf, &mut host, &mut self.out);
                rbuf.drain(..used);
                if self.out.action.is_some() || !self.out.wire.is_empty() {
                    continue;
                }
            }
            if self.core.stopping.get() && self.session.is_idle() && rbuf.is_empty() {
                self.session.shutting_down(&mut self.out);
                continue;
            }
            let timeout = match self.session.timeout_kind() {
                TimeoutKind::Command => command_timeout,
                TimeoutKind::Data => data_timeout,
            };
            if rbuf.capacity() - rbuf.len() < 1024 {
                rbuf.reserve(cap);
            }
            match self.read(rbuf, timeout).await {
                Some(Input::Data(buf)) => rbuf = buf,
                Some(Input::Closed) => return self.stream.shutdown(),
                Some(Input::Stop) => {
                    self.session.shutting_down(&mut self.out);
                    let _ = self.flush(CLOSING_WRITE_TIMEOUT).await;
                    return self.stream.shutdown();
                }
                None => {
                    self.session.timed_out(&mut self.out);
                    let _ = self.flush(CLOSING_WRITE_TIMEOUT).await;
                    return self.stream.shutdown();
                }
            }
        }
    }

    /// Reads more input. None: the idle timeout expired (the socket must not be read again).
    /// While shutting down, an idle session is told so instead of waiting for its timeout, and
    /// once the shutdown grace period is over every session is (`Input::Stop`).
    async fn read(&mut self, buf: Vec<u8>, timeout: Duration) -> Option<Input> {
        if self.core.aborting.get() {
            return Some(Input::Stop);
        }
        let before = buf.len();
        let read = self.stream.read(buf);
        tokio::pin!(read);
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        let mut stop_seen = self.core.stopping.get();
        loop {
            tokio::select! {
                (res, buf) = &mut read => {
                    return Some(match res {
                        Ok(n) if n > 0 => {
                            debug_assert_eq!(buf.len(), before + n);
                            Input::Data(buf)
                        }
                        _ => Input::Closed,
                    });
                }
                () = &mut sleep => return None,
                // The read stays abandoned; the caller never reads again.
                () = self.core.abort.notified() => return Some(Input::Stop),
                () = self.core.stop.notified(), if !stop_seen => {
                    stop_seen = true;
                    if self.session.is_idle() && before == 0 {
                        // Idle between transactions: close now rather than wait. The read stays
                        // abandoned; the caller never reads again.
                        return Some(Input::Stop);
                    }
                }
            }
        }
    }

    /// Sends pending reply bytes. False if the client would not take them in time, or the
    /// shutdown grace period ended while it was not taking them. Once the grace period is
    /// over, a client gets `ABORT_WRITE_TIMEOUT` to take what is pending (its `250`, its `421`).
    async fn flush(&mut self, timeout: Duration) -> bool {
        if self.out.wire.is_empty() {
            return true;
        }
        self.obs.sent(&self.out.wire); // obs hook: reject counters, protocol log
        let wire = std::mem::take(&mut self.out.wire);
        let written = if self.core.aborting.get() {
            tokio::time::timeout(timeout.min(ABORT_WRITE_TIMEOUT), self.stream.write_all(wire)).await.ok()
        } else {
            unless_aborted(&self.core, tokio::time::timeout(timeout, self.stream.write_all(wire)))
                .await
                .and_then(Result::ok)
        };
        match written {
            Some((Ok(()), mut wire)) => {
                wire.clear();
                self.out.wire = wire;
                true
            }
            _ => false,
        }
    }

    /// Makes the message durable, hands it to delivery, and completes the session's wait.
    async fn persist(&mut self) {
        let core = Rc::clone(&self.core);
        let end_of_data = crate::clock::now(); // obs hook: accept latency
        let result = if core.spool.over_limits() {
            Err(reply::NO_STORAGE)
        } else {
            match core.spool.append(self.session.envelope(), self.session.message()).await {
                Ok(spool_ref) => {
                    let env = self.session.envelope();
                    core.hand_off(&spool_ref, env, 0..env.recipients.len() as u32, false);
                    self.obs.received(env, self.session.message(), end_of_data); // obs hook: RECEIVE
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(queue_id = %self.session.envelope().queue_id, error = %e, "message not stored");
                    Err(reply::SPOOL_FAILED)
                }
            }
        };
        self.session.persisted(result, &mut self.out);
    }

    /// Checks credentials: a hit in this core's cache of recently verified credentials, else
    /// argon2 on the blocking pool (10-50 ms: never on this core). A failure counts towards
    /// the AUTH lockout of the client's address.
    async fn authenticate(&mut self) {
        let core = Rc::clone(&self.core);
        let shared = Arc::clone(&core.shared);
        let policy = Rc::clone(&self.policy);
        let (user, pass) = self.session.credentials();
        let (user, pass) = (user.to_string(), pass.to_string());
        let tag = policy.users.password_hash(&user).map(|phc| core.auth_cache.borrow().tag(&user, phc, &pass));
        let cached = tag.as_ref().is_some_and(|t| core.auth_cache.borrow_mut().is_fresh(&user, t, crate::clock::now()));
        let ok = if cached {
            true
        } else {
            // Wait for a verification slot (bounded CPU for argon2, process-wide), then verify on
            // the blocking pool. The permit is held until the verification returns.
            let ok = match shared.auth_verify_slots.acquire().await {
                Ok(_permit) => {
                    let (u, verifier) = (user.clone(), Arc::clone(policy.shared()));
                    tokio::task::spawn_blocking(move || verifier.users.verify(&u, &pass)).await.unwrap_or(false)
                }
                Err(_) => false, // the semaphore is never closed
            };
            if ok && let Some(tag) = tag {
                core.auth_cache.borrow_mut().remember(&user, tag, crate::clock::now());
            }
            ok
        };
        if ok {
            self.rate_user = Some(Rc::from(user.as_str()));
        }
        if !ok {
            let ip = self.session.envelope().client_ip;
            let limits = &policy.limits[self.connector];
            if shared.auth_lockouts.record_failure(self.connector, ip, limits, crate::clock::now()) {
                tracing::info!(client_ip = %ip, connector = %shared.config.receive_connectors[self.connector].name,
                    failures = limits.auth_failures_max, lockout = ?limits.auth_lockout, "AUTH locked out");
            }
        }
        self.session.authenticated(ok, &mut self.out);
    }
}

/// Runs `op` unless the shutdown grace period ends first: None then, and the caller shuts the
/// socket down, which ends the abandoned operation (tokio-uring cannot cancel it).
async fn unless_aborted<F: std::future::Future>(core: &SmtpCore, op: F) -> Option<F::Output> {
    if core.aborting.get() {
        return None;
    }
    tokio::select! {
        out = op => Some(out),
        () = core.abort.notified() => None,
    }
}

/// The `Host` a session asks: this core's clock cache, queue ids and policy.
struct SessionHost<'a> {
    core: &'a SmtpCore,
    /// `Driver::policy`.
    policy: &'a CorePolicy,
    connector: usize,
    /// `Driver::rate_user`.
    rate_user: Option<&'a Rc<str>>,
}

impl Host for SessionHost<'_> {
    fn now_ms(&self) -> u64 {
        crate::clock::unix_ms()
    }

    fn date_rfc5322(&self) -> String {
        self.core.date()
    }

    fn write_date_rfc5322(&self, out: &mut Vec<u8>) {
        self.core.write_date(out);
    }

    fn next_queue_id(&mut self) -> QueueId {
        self.core.next_queue_id()
    }

    fn check_mail(&mut self, envelope: &Envelope) -> Result<(), Reply> {
        if self.core.spool.over_limits() {
            return Err(reply::NO_STORAGE);
        }
        if let Some(rate) = self.policy.limits[self.connector].message_rate {
            let sender = match (envelope.auth_user.as_deref(), self.rate_user) {
                (None, _) => Sender::Ip(envelope.client_ip),
                (Some(user), Some(name)) if **name == *user => Sender::User(Rc::clone(name)),
                (Some(user), _) => Sender::User(Rc::from(user)),
            };
            let now = crate::clock::now();
            if self.core.limits.borrow_mut().rates.check(self.connector, sender, rate, now).is_err() {
                return Err(reply::RATE_LIMITED);
            }
        }
        Ok(())
    }

    fn check_rcpt(&mut self, _envelope: &Envelope, address: &str) -> Result<(), Reply> {
        let rc = &self.policy.config.receive_connectors[self.connector];
        self.policy.accepted.check_rcpt(rc.relay, address)
    }

    fn check_auth(&mut self, client_ip: IpAddr) -> Result<(), Reply> {
        let limits = &self.policy.limits[self.connector];
        if self.core.shared.auth_lockouts.is_locked(self.connector, client_ip, limits, crate::clock::now()) {
            return Err(reply::AUTH_LOCKED);
        }
        Ok(())
    }

    fn may_send_as(&self, user: &str, address: &str) -> bool {
        self.policy.users.may_send_as(user, address)
    }
}
