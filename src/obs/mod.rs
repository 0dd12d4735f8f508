//! Observability and operations: metrics (`metrics`), the admin endpoint (`admin`), the message
//! tracking log (`tracking`), SMTP protocol logs (`protocol_log`), the log file writer
//! (`writer`), the `ringrelay queue` client (`queue_cli`) and systemd readiness (`sd_notify`).
//!
//! Shape: `Hub` is built once at start; it hands each core its own `SmtpObs` or `DeliveryObs`
//! (its counters, its tracking buffer, its protocol-log buffer). Cores write only to their own;
//! the admin thread reads every core's counters when scraped, and the log writer thread owns
//! the files. Nothing here is shared and written by two cores.

pub mod admin;
pub mod metrics;
pub mod protocol_log;
pub mod queue_cli;
pub mod sd_notify;
pub mod tracking;
pub mod writer;

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use metrics::{DeliveryCoreMetrics, Registry, SmtpCoreMetrics};
use tracking::{TrackedEvent, TrackingLog};
use writer::{LogBuffer, LogKind, LogSender, WriterOptions};

use crate::config::Config;
use crate::smtp::envelope::Envelope;

/// How often cores hand their log buffers to the writer and refresh their gauges.
pub const FLUSH_TICK: std::time::Duration = std::time::Duration::from_millis(100);

/// The smallest tracking/protocol log file before rotation: a smaller `max_file_size` would
/// rotate at almost every flush (a file per 100 ms), so it is raised to this.
pub const LOG_FILE_SIZE_MIN: u64 = 4096;

/// Settings observability adjusts at start, for the startup summary's `WARNING:` lines.
pub fn startup_warnings(config: &Config) -> Vec<crate::config::Problem> {
    let mut out = Vec::new();
    let size = config.tracking.max_file_size.0;
    if size < LOG_FILE_SIZE_MIN {
        out.push(crate::config::Problem {
            key: "tracking.max_file_size".into(),
            message: format!(
                "{size} bytes is below the {LOG_FILE_SIZE_MIN}-byte minimum; log files rotate at {LOG_FILE_SIZE_MIN} bytes"
            ),
        });
    }
    out
}

/// Everything observability owns for the life of the process.
pub struct Hub {
    /// Every core's counters.
    pub registry: Arc<Registry>,
    sender: Option<LogSender>,
    writer: Option<JoinHandle<()>>,
    tracking: bool,
    protocol_connectors: Vec<bool>,
}

impl Hub {
    /// Builds the registry and, when a log is enabled, starts the log writer thread.
    pub fn start(config: &Config, smtp_cores: usize, delivery_cores: usize) -> Result<Hub, String> {
        let connectors: Vec<String> = config.receive_connectors.iter().map(|rc| rc.name.clone()).collect();
        let registry = Arc::new(Registry::new(connectors, smtp_cores, delivery_cores));
        let protocol_connectors: Vec<bool> = config.receive_connectors.iter().map(|rc| rc.protocol_log).collect();
        let tracking = config.tracking.enabled;
        let (sender, writer) = if tracking || protocol_connectors.contains(&true) {
            let opts = WriterOptions {
                spool_dir: config.spool.dir.clone(),
                retention: config.tracking.retention.get(),
                // Raised to the minimum (and said so at start: `startup_warnings`).
                max_file_size: config.tracking.max_file_size.0.max(LOG_FILE_SIZE_MIN),
            };
            let (s, w) = writer::start(opts, Arc::clone(&registry.writer))?;
            (Some(s), Some(w))
        } else {
            (None, None)
        };
        Ok(Hub { registry, sender, writer, tracking, protocol_connectors })
    }

    /// The handle of SMTP core `index`.
    pub fn smtp_core(&self, index: u16) -> SmtpObs {
        let source = format!("smtp-{index}");
        let buffer = |kind| self.sender.as_ref().map(|s| LogBuffer::new(kind, &source, s.clone()));
        SmtpObs {
            index,
            metrics: Arc::clone(&self.registry.smtp[usize::from(index)]),
            tracking: TrackingLog::new(if self.tracking { buffer(LogKind::Tracking) } else { None }),
            protocol: if self.protocol_connectors.contains(&true) { buffer(LogKind::Protocol) } else { None },
            protocol_connectors: self.protocol_connectors.clone(),
            connector_names: self.registry.connectors.clone(),
            sessions: Cell::new(0),
        }
    }

    /// The handle of delivery core `index`.
    pub fn delivery_core(&self, index: usize) -> DeliveryObs {
        let tracking = match (&self.sender, self.tracking) {
            (Some(s), true) => Some(LogBuffer::new(LogKind::Tracking, &format!("delivery-{index}"), s.clone())),
            _ => None,
        };
        DeliveryObs { metrics: Arc::clone(&self.registry.delivery[index]), tracking: TrackingLog::new(tracking) }
    }

    /// Waits for the log writer to write what the (stopped) cores handed it.
    pub fn finish(mut self) {
        self.sender = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// What one SMTP core owns: its counters and log buffers.
pub struct SmtpObs {
    /// Core number.
    pub index: u16,
    /// Counters (read by the admin thread).
    pub metrics: Arc<SmtpCoreMetrics>,
    /// RECEIVE events.
    pub tracking: TrackingLog,
    protocol: Option<LogBuffer>,
    protocol_connectors: Vec<bool>,
    connector_names: Vec<String>,
    sessions: Cell<u64>,
}

impl SmtpObs {
    /// Counters only, no logs (tests that run a core by hand).
    pub fn metrics_only(index: u16, connectors: usize) -> SmtpObs {
        SmtpObs {
            index,
            metrics: Arc::new(SmtpCoreMetrics::new(connectors)),
            tracking: TrackingLog::default(),
            protocol: None,
            protocol_connectors: vec![false; connectors],
            connector_names: vec![String::new(); connectors],
            sessions: Cell::new(0),
        }
    }

    /// Hands buffered log lines to the writer (every `FLUSH_TICK`, and at shutdown).
    pub fn flush(&self) {
        self.tracking.flush();
        if let Some(p) = &self.protocol {
            p.flush();
        }
    }

    /// A connection was refused before any session: it matched no receive connector.
    pub fn refused_no_connector(&self) {
        self.metrics.refused_no_connector.inc();
    }

    /// A connection was refused: the core is at `max_connections_per_core`.
    pub fn refused_core_full(&self) {
        self.metrics.refused_core_full.inc();
    }

    /// A connection was refused: its source is at `max_connections_per_source`.
    pub fn refused_per_source(&self) {
        self.metrics.refused_per_source.inc();
    }

    /// A connection was refused: PROXY header from an untrusted peer, or a bad one.
    pub fn refused_proxy(&self) {
        self.metrics.refused_proxy.inc();
    }

    /// A connection was assigned to `connector`: count it, and start its protocol log.
    pub fn connection(self: &Rc<Self>, connector: usize, peer: SocketAddr, local: SocketAddr) -> ConnObs {
        if let Some(m) = self.metrics.connectors.get(connector) {
            m.connections_total.inc();
            m.connections_open.inc();
        }
        let proto = match (&self.protocol, self.protocol_connectors.get(connector)) {
            (Some(_), Some(true)) => {
                let seq = self.sessions.get() + 1;
                self.sessions.set(seq);
                let p = protocol_log::ProtoSession::new(format!("{}.{seq}", self.index), peer);
                Some(p)
            }
            _ => None,
        };
        let obs = ConnObs { core: Rc::clone(self), connector, greeted: false, proto };
        if let (Some(p), Some(log)) = (&obs.proto, &self.protocol) {
            p.event(
                log,
                '+',
                format!(
                    "connect to {local}, connector {:?}",
                    self.connector_names.get(connector).map_or("", String::as_str)
                )
                .as_bytes(),
            );
        }
        obs
    }
}

/// What one delivery core owns.
pub struct DeliveryObs {
    /// Counters (read by the admin thread).
    pub metrics: Arc<DeliveryCoreMetrics>,
    /// DELIVER, DEFER, FAIL and DSN events.
    pub tracking: TrackingLog,
}

impl DeliveryObs {
    /// Counters only, no log.
    pub fn metrics_only() -> DeliveryObs {
        DeliveryObs { metrics: Arc::new(DeliveryCoreMetrics::default()), tracking: TrackingLog::default() }
    }
}

/// One inbound connection's observer, kept by the session driver: counts what the session
/// answers, writes the protocol log, and emits RECEIVE. Dropping it closes the connection's
/// books (open gauge, `-` line in the protocol log).
pub struct ConnObs {
    core: Rc<SmtpObs>,
    connector: usize,
    greeted: bool,
    proto: Option<protocol_log::ProtoSession>,
}

impl ConnObs {
    /// Feeds the session as `Session::receive` would; with a protocol log, one line at a time,
    /// so each line is logged with the session state it was read in (SASL secrets redacted).
    pub fn receive(
        &mut self,
        session: &mut crate::smtp::Session,
        input: &[u8],
        host: &mut dyn crate::smtp::Host,
        out: &mut crate::smtp::Output,
    ) -> usize {
        match (&mut self.proto, &self.core.protocol) {
            (Some(p), Some(log)) => p.receive(log, session, input, host, out),
            _ => session.receive(input, host, out),
        }
    }

    /// The session is about to send `wire`: count negative replies, sessions, AUTH successes,
    /// and log the replies.
    pub fn sent(&mut self, wire: &[u8]) {
        let Some(m) = self.core.metrics.connectors.get(self.connector) else { return };
        let connector = self.connector as u16;
        let rejects = &self.core.metrics.rejects;
        let greeted = &mut self.greeted;
        metrics::replies_in(wire, |code, enhanced| {
            if code >= 400 {
                rejects.count(metrics::RejectKey { connector, code, enhanced });
            } else if code == 220 && !*greeted {
                *greeted = true;
                m.sessions_total.inc();
            } else if code == 235 {
                m.sessions_authenticated.inc();
            }
        });
        if let (Some(p), Some(log)) = (&self.proto, &self.core.protocol) {
            p.sent(log, wire);
        }
    }

    /// The message of `envelope` is durable (`started`: end of data): count it, time it, and
    /// write its RECEIVE event.
    pub fn received(&self, envelope: &Envelope, message: &[u8], started: Instant) {
        let us = crate::clock::now().saturating_duration_since(started).as_micros() as u64;
        let m = &self.core.metrics;
        m.accept_latency.observe_us(us);
        if let Some(c) = m.connectors.get(self.connector) {
            c.messages_accepted.inc();
            c.bytes_accepted.add(message.len() as u64);
        }
        if !self.core.tracking.enabled() {
            return;
        }
        let id = tracking::message_id(message);
        let all = 0..envelope.recipients.len() as u32;
        let mut e = TrackedEvent::about("RECEIVE", envelope, id.as_deref(), all, message.len() as u64);
        let mut reply = Vec::with_capacity(64);
        crate::smtp::reply::write_queued(&mut reply, envelope.queue_id);
        e.reply = Some(String::from_utf8_lossy(reply.trim_ascii_end()).into_owned());
        e.remote_host = (!envelope.helo.is_empty()).then(|| envelope.helo.clone());
        e.latency_ms = us / 1000;
        self.core.tracking.emit(&e);
    }
}

impl Drop for ConnObs {
    fn drop(&mut self) {
        if let Some(m) = self.core.metrics.connectors.get(self.connector) {
            m.connections_open.sub(1);
        }
        if let (Some(p), Some(log)) = (&self.proto, &self.core.protocol) {
            p.event(log, '-', b"disconnect");
        }
    }
}

/// Left-aligned columns separated by two spaces (CLI tables).
pub fn format_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < N {
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
