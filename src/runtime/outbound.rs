//! One pooled outbound connection of a delivery core: finds the destination's hosts (smart
//! hosts, or MX then A/AAAA through hickory), connects (with the connector's source address and
//! timeout, skipping backed-off hosts), drives a `delivery::ClientSession` over the socket
//! (STARTTLS, AUTH), then takes message after message from the domain's ready queue until the
//! queue stays empty for `idle_timeout`, `max_messages_per_connection` is reached, or the core
//! stops. Knows nothing of SMTP grammar: the client session decides, this moves bytes.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use hickory_resolver::proto::rr::RData;
use tokio_uring::net::TcpStream;

use super::delivery_core::Core;
use super::net;
use super::stream::Stream;
use crate::config::{OutboundTls, SendConnector};
use crate::delivery::client::{ClientSession, CloseReason, Event, Output, TimeoutKind};
use crate::delivery::reply::{self, Response};
use crate::policy::route::{self, Failure, MxAnswer, MxRecord, NextHop, Target, Verdict};
use crate::spool::record::{self, Record};

/// Message content is written in pieces of this size (each one data block).
const BODY_CHUNK_BYTES: usize = 64 * 1024;
/// Read buffer of an outbound connection.
const READ_BUF_BYTES: usize = 16 * 1024;
/// Time allowed for a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one connection for `domain` until it has nothing left to do. Returns whether it got
/// as far as being set up (and said so with `connection_established`).
pub(crate) async fn connection(core: Rc<Core>, domain: String) -> bool {
    let connector = core.connector_for(&domain).clone();
    let targets = match targets(&core, &domain).await {
        Ok(t) => t,
        Err((reply, verdict)) => {
            tracing::info!(%domain, reply = %reply.one_line(), "destination cannot be routed");
            core.domain_unreachable(&domain, &reply, verdict);
            return false;
        }
    };
    let mut last = Response::local(reply::CONNECT_FAILED);
    let mut tried = 0;
    for target in &targets {
        let addrs = match addresses(&core, target).await {
            Ok(a) => a,
            Err(r) => {
                last = r;
                continue;
            }
        };
        for ip in addrs {
            let addr = SocketAddr::new(ip, target.port);
            if core.host_backed_off(addr) {
                if tried == 0 {
                    last = Response::local(reply::HOSTS_BACKED_OFF);
                }
                continue;
            }
            tried += 1;
            match open(&core, &connector, target, addr, false).await {
                Ok(conn) => {
                    core.host_succeeded(addr);
                    core.connection_established(&domain);
                    conn.deliver(&core, &domain, &connector).await;
                    return true;
                }
                Err(OpenError::Failed(r)) => {
                    tracing::debug!(%domain, %addr, reply = %r.one_line(), "host failed");
                    core.host_failed(addr, &connector);
                    last = r;
                }
                Err(OpenError::TlsFailed(r)) => {
                    // A broken TLS stack must not stop mail that may go in plaintext.
                    let creds = connector.auth.is_some();
                    if route::plaintext_retry_allowed(connector.tls.into(), creds)
                        && let Ok(conn) = open(&core, &connector, target, addr, true).await
                    {
                        core.host_succeeded(addr);
                        core.connection_established(&domain);
                        conn.deliver(&core, &domain, &connector).await;
                        return true;
                    }
                    core.host_failed(addr, &connector);
                    last = r;
                }
            }
        }
    }
    // No host took the connection. If other connections of this domain work, leave the queue
    // to them; otherwise the ready items wait for the retry schedule.
    if core.connections(&domain) <= 1 {
        tracing::info!(%domain, reply = %last.one_line(), "no host of the destination is reachable; deferring");
        core.domain_unreachable(&domain, &last, Verdict::Defer);
    }
    false
}

/// The hosts to try for `domain`, or the reply and verdict for its recipients.
async fn targets(core: &Core, domain: &str) -> Result<Vec<Target>, (Response, Verdict)> {
    let route = core.router.route(domain);
    let connector = route.connector;
    match route.next_hop {
        NextHop::SmartHosts(_) => Ok(route::smart_host_targets(connector)),
        NextHop::AddressLiteral(ip) => Ok(vec![route::literal_target(ip, connector.port)]),
        NextHop::Mx => {
            let fqdn = format!("{}.", domain.trim_end_matches('.'));
            let lookup = core.resolver.mx_lookup(fqdn.as_str()).await;
            let records: Vec<MxRecord>;
            let answer = match &lookup {
                Ok(l) => {
                    records = l
                        .answers()
                        .iter()
                        .filter_map(|r| match &r.data {
                            RData::MX(mx) => {
                                Some(MxRecord { preference: mx.preference, exchange: mx.exchange.to_ascii() })
                            }
                            _ => None,
                        })
                        .collect();
                    MxAnswer::Records(&records)
                }
                Err(e) if e.is_nx_domain() => MxAnswer::NxDomain,
                Err(e) if e.is_no_records_found() => MxAnswer::NoRecords,
                Err(e) => {
                    tracing::debug!(%domain, error = %e, "MX lookup failed");
                    MxAnswer::TempFail
                }
            };
            let hostname = core.shared.config.hostname.as_str();
            let seed = crate::clock::unix_ms() ^ (core.index as u64).rotate_left(32);
            route::mx_targets(domain, answer, connector.port, &[hostname], seed)
                .map_err(|e| (Response::local(e.reply), e.verdict()))
        }
    }
}

/// The addresses of a target: its literal, or its A/AAAA records.
async fn addresses(core: &Core, target: &Target) -> Result<Vec<IpAddr>, Response> {
    if let Some(ip) = target.ip {
        return Ok(vec![ip]);
    }
    let name = format!("{}.", target.host.trim_end_matches('.'));
    match core.resolver.lookup_ip(name.as_str()).await {
        Ok(ips) => {
            let v: Vec<IpAddr> = ips.iter().collect();
            if v.is_empty() { Err(Response::local(reply::HOST_LOOKUP_FAILED)) } else { Ok(v) }
        }
        Err(e) => {
            tracing::debug!(host = %target.host, error = %e, "host lookup failed");
            let _ = route::classify(Failure::HostLookup);
            Err(Response::local(reply::HOST_LOOKUP_FAILED))
        }
    }
}

enum OpenError {
    /// Connect, greeting, EHLO, STARTTLS or AUTH failed: try the next host.
    Failed(Response),
    /// The TLS handshake failed (a plaintext retry may be allowed).
    TlsFailed(Response),
}

/// An established session, ready for transactions.
struct Conn {
    stream: Stream,
    session: ClientSession,
    out: Output,
    rbuf: Vec<u8>,
    /// Host name (or address) for logs, DSN `Remote-MTA` and tracking.
    remote: String,
    /// The address connected to (for host backoff).
    addr: SocketAddr,
    command_timeout: Duration,
}

/// Connects and talks up to the first `Event::Ready`.
async fn open(
    core: &Core,
    connector: &SendConnector,
    target: &Target,
    addr: SocketAddr,
    plaintext: bool,
) -> Result<Conn, OpenError> {
    let std = net::connect(addr, connector.source_ip, connector.connect_timeout.get())
        .await
        .map_err(|_| OpenError::Failed(Response::local(reply::CONNECT_FAILED)))?;
    let stream = Stream::new(TcpStream::from_std(std));
    let cfg = core.client_config(connector, plaintext);
    let mut conn = Conn {
        stream,
        session: ClientSession::new(cfg),
        out: Output::default(),
        rbuf: Vec::with_capacity(READ_BUF_BYTES),
        remote: if target.ip.is_some() && target.host.parse::<IpAddr>().is_ok() {
            addr.ip().to_string()
        } else {
            target.host.clone()
        },
        command_timeout: connector.command_timeout.get(),
        addr,
    };
    loop {
        for event in conn.next_events().await {
            match event {
                Event::Ready => return Ok(conn),
                Event::NeedTls => {
                    let tls_config = match (connector.tls, connector.smart_hosts.is_empty()) {
                        // Opportunistic MX delivery takes what it gets (RFC 7435).
                        (OutboundTls::Opportunistic, true) => Some(std::sync::Arc::clone(&core.opportunistic_tls)),
                        _ => core.verified_tls(connector),
                    };
                    let name = crate::tls::server_name(&target.host)
                        .or_else(|_| crate::tls::server_name(&addr.ip().to_string()));
                    let ok = match (tls_config, name) {
                        (Some(cfg), Ok(name)) => {
                            matches!(
                                tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, conn.stream.start_tls_client(cfg, name))
                                    .await,
                                Ok(Ok(()))
                            )
                        }
                        _ => false,
                    };
                    if ok {
                        conn.session.tls_established(&mut conn.out);
                    } else {
                        conn.session.tls_failed(&mut conn.out);
                        conn.stream.shutdown();
                        return Err(OpenError::TlsFailed(Response::local(reply::TLS_HANDSHAKE_FAILED)));
                    }
                }
                Event::Closed(reason) => {
                    conn.stream.shutdown();
                    let reply = match reason {
                        CloseReason::Failed { reply, .. } => reply,
                        CloseReason::Quit => Response::local(reply::CONNECTION_LOST),
                    };
                    return Err(OpenError::Failed(reply));
                }
                Event::SendBody | Event::TransactionDone => {}
            }
        }
        if conn.session.is_closed() {
            conn.stream.shutdown();
            return Err(OpenError::Failed(Response::local(reply::CONNECTION_LOST)));
        }
    }
}

impl Conn {
    /// Writes what the session produced, then reads until the session has events to report.
    async fn next_events(&mut self) -> Vec<Event> {
        loop {
            if !self.out.wire.is_empty() {
                let wire = std::mem::take(&mut self.out.wire);
                let (res, mut wire) =
                    match tokio::time::timeout(self.command_timeout, self.stream.write_all(wire)).await {
                        Ok(r) => r,
                        Err(_) => {
                            self.session.timed_out(&mut self.out);
                            self.stream.shutdown();
                            return std::mem::take(&mut self.out.events);
                        }
                    };
                wire.clear();
                self.out.wire = wire;
                if res.is_err() {
                    self.session.connection_lost(&mut self.out);
                    return std::mem::take(&mut self.out.events);
                }
            }
            if !self.out.events.is_empty() {
                return std::mem::take(&mut self.out.events);
            }
            if self.session.is_closed() {
                return Vec::new();
            }
            let timeout = self.timeout();
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(READ_BUF_BYTES);
            }
            let buf = std::mem::take(&mut self.rbuf);
            match tokio::time::timeout(timeout, self.stream.read(buf)).await {
                Err(_) => {
                    // Never read again after an abandoned read: the session is over.
                    self.session.timed_out(&mut self.out);
                    self.stream.shutdown();
                }
                Ok((Ok(n), buf)) if n > 0 => {
                    self.rbuf = buf;
                    let used = self.session.receive(&self.rbuf, &mut self.out);
                    self.rbuf.drain(..used);
                }
                Ok((_, buf)) => {
                    self.rbuf = buf;
                    self.session.connection_lost(&mut self.out);
                }
            }
        }
    }

    /// The timeout for the reply awaited now: RFC 5321 4.5.3.2, or the connector's
    /// `command_timeout` where that is shorter than 5 minutes (it then applies to every reply).
    fn timeout(&self) -> Duration {
        let kind = self.session.timeout().unwrap_or(TimeoutKind::Command);
        if self.command_timeout < Duration::from_secs(300) { self.command_timeout } else { kind.rfc5321() }
    }

    /// Takes items from the domain's queue and delivers them over this connection.
    async fn deliver(mut self, core: &Rc<Core>, domain: &str, connector: &SendConnector) {
        let idle_timeout = connector.idle_timeout.get();
        let work = core.work(domain);
        loop {
            if core.stopping.get() || self.session.transactions() >= connector.max_messages_per_connection as u64 {
                break;
            }
            let item = match core.take_ready(domain) {
                Some(i) => i,
                None => {
                    // Idle: wait for work, the idle timeout, or shutdown.
                    core.set_idle(domain, true);
                    let woke = tokio::select! {
                        () = work.notified() => true,
                        () = tokio::time::sleep(idle_timeout) => false,
                        () = core.stop.notified() => false,
                    };
                    core.set_idle(domain, false);
                    if woke {
                        continue;
                    }
                    break;
                }
            };
            let Some((envelope, raw)) = core.message(item.queue_id) else { continue };
            let Ok((Record::Message { message, .. }, _)) = record::decode(&raw) else { continue };
            let tx = crate::delivery::client::Transaction::from_envelope(&envelope, message);
            let rcpts: Vec<_> = item.rcpts.iter().filter_map(|&i| envelope.recipients.get(i as usize)).collect();
            if self.session.start_transaction(&tx, rcpts.iter().copied(), &mut self.out).is_err() {
                core.requeue_front(domain, item);
                break;
            }
            let mut done = false;
            while !done {
                let events = self.next_events().await;
                if events.is_empty() && self.session.is_closed() {
                    break;
                }
                for event in events {
                    match event {
                        Event::SendBody => {
                            for chunk in message.chunks(BODY_CHUNK_BYTES) {
                                if !self.session.write_body(chunk, &mut self.out) {
                                    break;
                                }
                                if self.out.wire.len() >= BODY_CHUNK_BYTES && !self.flush().await {
                                    break;
                                }
                            }
                            self.session.finish_body(&mut self.out);
                        }
                        Event::TransactionDone => {
                            let result = self.session.result();
                            core.transaction_done(
                                domain,
                                item.clone(),
                                result.recipients(),
                                result.next_hop_dsn(),
                                &self.remote,
                            );
                            done = true;
                        }
                        Event::Closed(_) | Event::Ready | Event::NeedTls => {}
                    }
                }
            }
            if !done {
                // The connection died without deciding the recipients: give them back.
                core.requeue_front(domain, item);
                core.kick(domain);
            }
            if self.session.is_closed() {
                // The server ended the connection mid-way (421, a drop, a timeout): leave the
                // host alone for a while, or the requeued recipients would bring us straight back.
                core.host_failed(self.addr, connector);
                return;
            }
        }
        if self.session.quit(&mut self.out) {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.next_events()).await;
        }
        self.stream.close().await;
    }

    /// Writes pending output (during a long body). False when the connection failed.
    async fn flush(&mut self) -> bool {
        let wire = std::mem::take(&mut self.out.wire);
        match tokio::time::timeout(self.timeout(), self.stream.write_all(wire)).await {
            Ok((Ok(()), mut wire)) => {
                wire.clear();
                self.out.wire = wire;
                true
            }
            Ok((Err(_), _)) => {
                self.session.connection_lost(&mut self.out);
                false
            }
            Err(_) => {
                self.session.timed_out(&mut self.out);
                self.stream.shutdown();
                false
            }
        }
    }
}
