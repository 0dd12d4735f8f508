//! One pooled outbound connection of a delivery core: finds the destination's hosts (smart
//! hosts, or MX then A/AAAA through hickory), connects (with the connector's source address and
//! timeout, skipping backed-off hosts), drives a `delivery::ClientSession` over the socket
//! (STARTTLS, AUTH), then takes message after message from the destination's ready queue until
//! the queue stays empty for `idle_timeout`, `max_messages_per_connection` is reached, or the
//! core stops. Message content goes from the spool to the socket in pieces, read through
//! io_uring into one buffer the connection reuses. Knows nothing of SMTP grammar: the client
//! session decides, this moves bytes.
//!
//! A message the host cannot take (it lacks SMTPUTF8, or 8BITMIME for 8-bit content, or its
//! SIZE is too small: `Verdict::NextHostOrFail`) moves the connection: it ends this session and
//! opens one to the next host of the destination that has not refused that message, sends it
//! there first, and goes on from there. With no host left that could take it, it fails; with
//! hosts left that cannot be reached now, it is deferred.
//!
//! TLS: opportunistic MX delivery takes any certificate (RFC 7435) and, when the handshake
//! itself fails, tries the same host once more in plaintext (without credentials only). Smart
//! hosts are verified under every policy, and a failed handshake (an unknown CA, say) never
//! leads to plaintext: the host is backed off, the next smart host tried, and the mail deferred
//! with the handshake's error in the reply when none is left.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use hickory_resolver::proto::rr::RData;
use tokio_uring::net::TcpStream;

use super::content::{self, CHUNK_BYTES, Content};
use super::delivery_core::Core;
use super::net;
use super::stream::Stream;
use crate::config::{OutboundTls, SendConnector};
use crate::delivery::client::{ClientSession, CloseReason, Event, Output, TimeoutKind, Transaction};
use crate::delivery::reply::{self, Response};
use crate::policy::route::{self, Destination, Failure, MxAnswer, MxRecord, NextHop, Target, Verdict};
use crate::queue::Item;
use crate::smtp::envelope::BodyType;

/// Read buffer of an outbound connection.
const READ_BUF_BYTES: usize = 16 * 1024;
/// Time allowed for a TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Recipients of a message that a host could not take, on their way to the destination's
/// other hosts.
struct Moving {
    item: Item,
    /// Why the last host could not take them (the failure reply once no host is left).
    reply: Response,
    /// The host that said so last.
    remote: String,
    /// Indices (into the target list) of the hosts that could not take them.
    refused_by: Vec<usize>,
}

/// Runs one connection for `dest` until it has nothing left to do. Returns whether it got as
/// far as being set up (and said so with `connection_established`).
pub(crate) async fn connection(core: Rc<Core>, dest: Destination) -> bool {
    let connector = core.connector_for(&dest).clone();
    let smart_host = matches!(dest, Destination::SmartHosts(_));
    let targets = match targets(&core, &dest).await {
        Ok(t) => t,
        Err((reply, verdict)) => {
            tracing::info!(%dest, reply = %reply.one_line(), "destination cannot be routed");
            core.domain_unreachable(&dest, &reply, verdict);
            return false;
        }
    };
    let mut established = false;
    let mut moving: Option<Moving> = None;
    loop {
        let refused: &[usize] = moving.as_ref().map_or(&[], |m| &m.refused_by);
        match open_any(&core, &connector, &targets, refused, smart_host).await {
            Ok((conn, index)) => {
                if !established {
                    established = true;
                    core.connection_established(&dest);
                }
                let first = moving.as_ref().map(|m| m.item.clone());
                let Some((item, reply, was_first)) = conn.deliver(&core, &dest, &connector, first).await else {
                    return true;
                };
                let refused_by = match moving.take() {
                    Some(m) if was_first => [m.refused_by, vec![index]].concat(),
                    _ => vec![index],
                };
                tracing::info!(queue_id = %item.queue_id, %dest, host = %targets[index].host, reply = %reply.one_line(), "the host cannot take this message; trying the other hosts");
                moving = Some(Moving { item, reply, remote: targets[index].host.clone(), refused_by });
            }
            Err(last) => {
                if let Some(m) = moving {
                    if (0..targets.len()).all(|i| m.refused_by.contains(&i)) {
                        // Every host of the destination lacks what the message needs.
                        let rcpts = m.item.rcpts.iter().map(|&r| (r, m.reply.clone())).collect();
                        core.fail(m.item.queue_id, rcpts, Some(&m.remote), "permanent");
                    } else {
                        core.defer(&dest, m.item, &last, None);
                    }
                    return established;
                }
                // No host took the connection. If other connections of this destination work,
                // leave the queue to them; otherwise the ready items wait for the retry schedule.
                if core.connections(&dest) <= 1 {
                    tracing::info!(%dest, reply = %last.one_line(), "no host of the destination is reachable; deferring");
                    core.domain_unreachable(&dest, &last, Verdict::Defer);
                }
                return established;
            }
        }
    }
}

/// Connects to the first host, in order, that gets as far as `Event::Ready`, skipping the
/// targets in `refused` and backed-off addresses. Returns the connection and its target's
/// index, or the reply of the last failure.
async fn open_any(
    core: &Core,
    connector: &SendConnector,
    targets: &[Target],
    refused: &[usize],
    smart_host: bool,
) -> Result<(Conn, usize), Response> {
    let mut last = Response::local(reply::CONNECT_FAILED);
    let mut tried = 0;
    for (index, target) in targets.iter().enumerate() {
        if refused.contains(&index) {
            continue;
        }
        let addrs = match addresses(core, target).await {
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
            match open(core, connector, target, addr, false, smart_host).await {
                Ok(conn) => {
                    core.host_succeeded(addr);
                    return Ok((conn, index));
                }
                Err(OpenError::Failed(r)) => {
                    tracing::debug!(host = %target.host, %addr, reply = %r.one_line(), "host failed");
                    core.host_failed(addr, connector);
                    last = r;
                }
                Err(OpenError::TlsFailed(r)) => {
                    // A broken TLS stack must not stop MX mail that may go in plaintext; a smart
                    // host is never tried without TLS (`route::plaintext_retry_allowed`).
                    let creds = connector.auth.is_some();
                    if route::plaintext_retry_allowed(connector.tls.into(), creds, smart_host) {
                        if let Ok(conn) = open(core, connector, target, addr, true, smart_host).await {
                            core.host_succeeded(addr);
                            return Ok((conn, index));
                        }
                    } else {
                        tracing::warn!(host = %target.host, %addr, reply = %r.one_line(), "TLS handshake failed; the host is backed off and the mail deferred, never sent without TLS");
                    }
                    core.host_failed(addr, connector);
                    last = r;
                }
            }
        }
    }
    Err(last)
}

/// The hosts to try for `dest`, or the reply and verdict for its recipients.
async fn targets(core: &Core, dest: &Destination) -> Result<Vec<Target>, (Response, Verdict)> {
    let domain = match dest {
        Destination::SmartHosts(_) => return Ok(route::smart_host_targets(core.connector_for(dest))),
        Destination::Domain(d) => d.as_str(),
    };
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
    /// Message content read from the spool, one piece at a time (allocated when first needed).
    fbuf: Vec<u8>,
    /// Host name (or address) for logs, DSN `Remote-MTA` and tracking.
    remote: String,
    /// The address connected to (for host backoff).
    addr: SocketAddr,
    command_timeout: Duration,
}

/// Why the content of a message could not be sent.
enum BodyError {
    /// The connection failed (the session knows, and reports it).
    Connection,
    /// The spool could not be read: the connection was dropped mid-content.
    Spool(std::io::Error),
}

/// Connects and talks up to the first `Event::Ready`.
async fn open(
    core: &Core,
    connector: &SendConnector,
    target: &Target,
    addr: SocketAddr,
    plaintext: bool,
    smart_host: bool,
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
        fbuf: Vec::new(),
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
                    let tls_config = match (connector.tls, smart_host) {
                        // Opportunistic MX delivery takes what it gets (RFC 7435).
                        (OutboundTls::Opportunistic, false) => Some(std::sync::Arc::clone(&core.opportunistic_tls)),
                        _ => core.verified_tls(connector),
                    };
                    let name = crate::tls::server_name(&target.host)
                        .or_else(|_| crate::tls::server_name(&addr.ip().to_string()));
                    let handshake = match (tls_config, name) {
                        (Some(cfg), Ok(name)) => {
                            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, conn.stream.start_tls_client(cfg, name))
                                .await
                            {
                                Ok(Ok(())) => Ok(()),
                                Ok(Err(e)) => Err(e.to_string()),
                                Err(_) => Err(format!("no answer within {}s", TLS_HANDSHAKE_TIMEOUT.as_secs())),
                            }
                        }
                        (None, _) => Err("no TLS client configuration (see the log)".to_string()),
                        (_, Err(e)) => Err(e),
                    };
                    match handshake {
                        Ok(()) => conn.session.tls_established(&mut conn.out),
                        Err(why) => {
                            conn.session.tls_failed(&mut conn.out);
                            conn.stream.shutdown();
                            let text = if smart_host {
                                format!(
                                    "TLS handshake with smart host {} failed: {why}; not sent without TLS",
                                    target.host
                                )
                            } else {
                                format!("TLS handshake with {} failed: {why}", target.host)
                            };
                            return Err(OpenError::TlsFailed(Response::local_with_text(
                                reply::TLS_HANDSHAKE_FAILED,
                                text,
                            )));
                        }
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

    /// Takes items from the destination's queue (`first` before them) and delivers them over
    /// this connection. Returns the recipients of an item this host could not take (with the
    /// reply, and whether the item was `first`): the caller moves them to another host. This
    /// connection is then closed.
    async fn deliver(
        mut self,
        core: &Rc<Core>,
        dest: &Destination,
        connector: &SendConnector,
        mut first: Option<Item>,
    ) -> Option<(Item, Response, bool)> {
        let idle_timeout = connector.idle_timeout.get();
        let work = core.work(dest);
        let mut moving = None;
        loop {
            if core.stopping.get() || self.session.transactions() >= connector.max_messages_per_connection as u64 {
                if let Some(item) = first.take() {
                    core.requeue_front(dest, item);
                    core.kick(dest);
                }
                break;
            }
            let was_first = first.is_some();
            let item = match first.take().or_else(|| core.take_ready(dest)) {
                Some(i) => i,
                None => {
                    // Idle: wait for work, the idle timeout, or shutdown.
                    core.set_idle(dest, true);
                    let woke = tokio::select! {
                        () = work.notified() => true,
                        () = tokio::time::sleep(idle_timeout) => false,
                        () = core.stop.notified() => false,
                    };
                    core.set_idle(dest, false);
                    if woke {
                        continue;
                    }
                    break;
                }
            };
            let Some(p) = core.prepared(item.queue_id) else { continue };
            let eight_bit = match p.eight_bit {
                Some(known) => known,
                // Only a server without 8BITMIME needs the answer; read the message for it once.
                None if p.envelope.body_type == BodyType::EightBitMime
                    && !self.session.capabilities().eight_bit_mime =>
                {
                    match p.content.has_eight_bit(&mut self.fbuf).await {
                        Ok(found) => {
                            core.set_eight_bit(item.queue_id, found);
                            found
                        }
                        Err(e) => {
                            tracing::error!(queue_id = %item.queue_id, error = %e, "cannot read a queued message from the spool");
                            core.defer_local(dest, item, &Response::local(reply::SPOOL_READ_FAILED));
                            continue;
                        }
                    }
                }
                None => true,
            };
            let envelope = &p.envelope;
            let tx = Transaction {
                sender: &envelope.sender,
                size: p.content.len(),
                body: envelope.body_type,
                eight_bit,
                smtputf8: p.smtputf8,
                ret: envelope.ret,
                envid: envelope.envid.as_deref(),
            };
            let rcpts: Vec<_> = item.rcpts.iter().filter_map(|&i| envelope.recipients.get(i as usize)).collect();
            if self.session.start_transaction(&tx, rcpts.iter().copied(), &mut self.out).is_err() {
                core.requeue_front(dest, item);
                break;
            }
            let mut done = false;
            let mut spool_failed = false;
            'transaction: while !done {
                let events = self.next_events().await;
                if events.is_empty() && self.session.is_closed() {
                    break;
                }
                for event in events {
                    match event {
                        Event::SendBody => match self.send_body(&p.content).await {
                            Ok(()) => {
                                self.session.finish_body(&mut self.out);
                            }
                            Err(BodyError::Connection) => {}
                            Err(BodyError::Spool(e)) => {
                                // Part of the content is out; the end of data must never
                                // follow it. Drop the connection and what the session says.
                                tracing::error!(queue_id = %item.queue_id, error = %e, "cannot read a queued message from the spool; connection dropped mid-content");
                                self.stream.shutdown();
                                self.session.connection_lost(&mut self.out);
                                self.out.clear();
                                spool_failed = true;
                                break 'transaction;
                            }
                        },
                        Event::TransactionDone => {
                            let result = self.session.result();
                            let refused = core.transaction_done(
                                dest,
                                item.clone(),
                                result.recipients(),
                                result.next_hop_dsn(),
                                &self.remote,
                            );
                            if !refused.is_empty() {
                                let rcpts = refused.iter().map(|(r, _)| *r).collect();
                                let reply = refused[0].1.clone();
                                moving = Some((
                                    Item { queue_id: item.queue_id, rcpts, failures: item.failures },
                                    reply,
                                    was_first,
                                ));
                            }
                            done = true;
                        }
                        Event::Closed(_) | Event::Ready | Event::NeedTls => {}
                    }
                }
            }
            if spool_failed {
                // Our problem, not the host's: no backoff for it.
                core.defer_local(dest, item, &Response::local(reply::SPOOL_READ_FAILED));
                return None;
            }
            if !done {
                // The connection died without deciding the recipients: give them back.
                core.requeue_front(dest, item);
                core.kick(dest);
            }
            if self.session.is_closed() {
                // The server ended the connection mid-way (421, a drop, a timeout): leave the
                // host alone for a while, or the requeued recipients would bring us straight back.
                core.host_failed(self.addr, connector);
                if let Some((item, _, _)) = moving.take() {
                    core.requeue_front(dest, item);
                    core.kick(dest);
                }
                return None;
            }
            if moving.is_some() {
                break;
            }
        }
        if self.session.quit(&mut self.out) {
            let _ = tokio::time::timeout(Duration::from_secs(5), self.next_events()).await;
        }
        self.stream.close().await;
        moving
    }

    /// Writes the message content: from memory, or from the spool in pieces through the
    /// connection's reused buffer. Leaves the end of data to the caller.
    async fn send_body(&mut self, content: &Content) -> Result<(), BodyError> {
        match content {
            Content::Cached { record, offset } => {
                for chunk in record[*offset..].chunks(CHUNK_BYTES) {
                    if !self.session.write_body(chunk, &mut self.out) {
                        return Err(BodyError::Connection);
                    }
                    if self.out.wire.len() >= CHUNK_BYTES && !self.flush().await {
                        return Err(BodyError::Connection);
                    }
                }
            }
            Content::Spool { file, at, len } => {
                let mut pos = 0;
                while pos < *len {
                    let want = (*len - pos).min(CHUNK_BYTES as u64) as usize;
                    let (res, buf) = content::read_exact(file, std::mem::take(&mut self.fbuf), at + pos, want).await;
                    self.fbuf = buf;
                    res.map_err(BodyError::Spool)?;
                    if !self.session.write_body(&self.fbuf, &mut self.out) {
                        return Err(BodyError::Connection);
                    }
                    if self.out.wire.len() >= CHUNK_BYTES && !self.flush().await {
                        return Err(BodyError::Connection);
                    }
                    pos += want as u64;
                }
            }
        }
        Ok(())
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
