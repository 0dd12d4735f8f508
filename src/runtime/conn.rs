//! Drives one `smtp::Session` over one connection: reads into a reused owned buffer, feeds the
//! session, writes its replies (one write per batch of pipelined commands), and carries out
//! its actions: persist (spool append, then hand-off to delivery), authenticate (argon2 off
//! the core), STARTTLS (discarding anything pipelined after it), close. Timeouts become
//! `Session::timed_out`; after one the socket is shut down and never read again (tokio-uring
//! cannot cancel a read).

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use tokio_uring::net::TcpStream;

use super::smtp_core::SmtpCore;
use super::stream::Stream;
use crate::smtp::envelope::Envelope;
use crate::smtp::reply::{self, Reply};
use crate::smtp::{Action, Host, Output, QueueId, Session, TimeoutKind};

/// The read buffer: room for the longest command line, plus a read's worth.
const READ_BUF_MIN: usize = 16 * 1024;
/// Time allowed for a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves one accepted connection to its end.
pub async fn serve(core: Rc<SmtpCore>, tcp: TcpStream, peer: SocketAddr, bind: SocketAddr) {
    let shared = &core.shared;
    let client_ip = peer.ip().to_canonical();
    let Some(connector) = shared.connectors.select(bind, client_ip) else {
        core.obs.refused_no_connector(); // obs hook
        tracing::debug!(%peer, %bind, "client matches no receive connector");
        refuse(tcp, reply::NO_CONNECTOR, shared.config.hostname.clone()).await;
        return;
    };
    let rc = &shared.config.receive_connectors[connector];
    let obs = core.obs.connection(connector, peer, bind); // obs hook: counters, protocol log
    let mut stream = Stream::new(tcp);
    let tls = shared.tls[connector].clone();
    if rc.implicit_tls {
        let Some(cfg) = tls.clone() else { return stream.shutdown() };
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, stream.start_tls_server(cfg)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "implicit TLS handshake failed");
                return stream.shutdown();
            }
            Err(_) => return stream.shutdown(),
        }
    }
    let session = Session::new(Rc::clone(&core.session_configs[connector]), client_ip, stream.is_tls());
    let mut driver = Driver { core: Rc::clone(&core), connector, session, stream, out: Output::default(), obs };
    driver.run(tls).await;
}

/// Answers a connection that will not be served with one reply, and closes it.
pub async fn refuse(tcp: TcpStream, r: Reply, hostname: String) {
    let mut line = Vec::with_capacity(128);
    if r.code == 421 {
        reply::write_closing(&mut line, &hostname, r);
    } else {
        r.write_to(&mut line);
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), tcp.write_all(line)).await;
    let _ = tcp.shutdown(std::net::Shutdown::Both);
}

struct Driver {
    core: Rc<SmtpCore>,
    connector: usize,
    session: Session,
    stream: Stream,
    out: Output,
    /// Metrics, protocol log and tracking of this connection (`obs`).
    obs: crate::obs::ConnObs,
}

/// How a wait for input ended.
enum Input {
    Data(Vec<u8>),
    Closed,
    /// Shutdown started while the session was idle: tell the client and close.
    Stop,
}

impl Driver {
    async fn run(&mut self, tls: Option<std::sync::Arc<rustls::ServerConfig>>) {
        let limits = &self.core.shared.config.limits;
        let command_timeout = limits.command_timeout.get();
        let data_timeout = limits.data_timeout.get();
        let cap = READ_BUF_MIN.max(2 * self.session.max_line());
        let mut rbuf: Vec<u8> = Vec::with_capacity(cap);
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
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, self.stream.start_tls_server(cfg)).await {
                        Ok(Ok(())) => self.session.tls_started(),
                        _ => return self.stream.shutdown(),
                    }
                    continue;
                }
                None => {}
            }
            if !rbuf.is_empty() {
                let mut host = SessionHost { core: &self.core, connector: self.connector };
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
                    let _ = self.flush(Duration::from_secs(5)).await;
                    return self.stream.shutdown();
                }
                None => {
                    self.session.timed_out(&mut self.out);
                    let _ = self.flush(Duration::from_secs(5)).await;
                    return self.stream.shutdown();
                }
            }
        }
    }

    /// Reads more input. None: the idle timeout expired (the socket must not be read again).
    /// While shutting down, an idle session is told so instead of waiting for its timeout.
    async fn read(&mut self, buf: Vec<u8>, timeout: Duration) -> Option<Input> {
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

    /// Sends pending reply bytes. False if the client would not take them in time.
    async fn flush(&mut self, timeout: Duration) -> bool {
        if self.out.wire.is_empty() {
            return true;
        }
        self.obs.sent(&self.out.wire); // obs hook: reject counters, protocol log
        let wire = std::mem::take(&mut self.out.wire);
        match tokio::time::timeout(timeout, self.stream.write_all(wire)).await {
            Ok((Ok(()), mut wire)) => {
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
                    let all: Vec<u32> = (0..env.recipients.len() as u32).collect();
                    core.hand_off(&spool_ref, env, &all, false);
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

    /// Checks credentials on the blocking pool (argon2 takes 10-50 ms: never on this core).
    async fn authenticate(&mut self) {
        let (user, pass) = self.session.credentials();
        let (user, pass) = (user.to_string(), pass.to_string());
        let shared = std::sync::Arc::clone(&self.core.shared);
        let ok = tokio::task::spawn_blocking(move || shared.users.verify(&user, &pass)).await.unwrap_or(false);
        self.session.authenticated(ok, &mut self.out);
    }
}

/// The `Host` a session asks: this core's clock cache, queue ids and policy.
struct SessionHost<'a> {
    core: &'a SmtpCore,
    connector: usize,
}

impl Host for SessionHost<'_> {
    fn now_ms(&self) -> u64 {
        crate::clock::unix_ms()
    }

    fn date_rfc5322(&self) -> String {
        self.core.date()
    }

    fn next_queue_id(&mut self) -> QueueId {
        self.core.next_queue_id()
    }

    fn check_mail(&mut self, _envelope: &Envelope) -> Result<(), Reply> {
        if self.core.spool.over_limits() {
            return Err(reply::NO_STORAGE);
        }
        Ok(())
    }

    fn check_rcpt(&mut self, _envelope: &Envelope, address: &str) -> Result<(), Reply> {
        let rc = &self.core.shared.config.receive_connectors[self.connector];
        self.core.shared.accepted.check_rcpt(rc.relay, address)
    }

    fn check_auth(&mut self, _client_ip: IpAddr) -> Result<(), Reply> {
        Ok(())
    }

    fn may_send_as(&self, user: &str, address: &str) -> bool {
        self.core.shared.users.may_send_as(user, address)
    }
}
