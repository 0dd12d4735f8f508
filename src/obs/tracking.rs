//! Message tracking (spec section 6), like Exchange's message tracking log: one JSON object per
//! line in `<spool.dir>/tracking/<core>-<yyyymmdd>[.<n>].jsonl`, each core writing its own file
//! through its `LogBuffer` (see `writer`), and the `ringrelay track` query over all of them.
//!
//! Events and what their fields mean:
//!
//! | event   | when | `reply` | `remote_host` | `latency_ms` |
//! |---------|------|---------|---------------|--------------|
//! | RECEIVE | the message is durable in the spool (just before `250 2.6.0`) | our 250 | the client's EHLO name | end of data → durable |
//! | DELIVER | a transaction delivered these recipients | the next hop's reply | next hop | arrival → delivered |
//! | DEFER   | these recipients will be retried (`next_attempt`) | the reply that deferred | next hop, if one answered | arrival → now |
//! | FAIL    | these recipients failed for good (`reason`: permanent, expired, deleted) | the deciding reply | next hop, if one answered | arrival → now |
//! | DSN     | a notice was queued (`dsn_queue_id`, `dsn_action`); `queue_id` is the original | the reply reported | next hop, if any | arrival → now |
//!
//! DSNs are queued by the relay itself; they have no RECEIVE event of their own (their DSN
//! event carries their queue id), and their deliveries are tracked like any message.

use std::io::BufRead;
use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::writer::{LogBuffer, LogKind, log_files};
use crate::smtp::envelope::{Envelope, QueueId};

/// Tracking event names.
pub const EVENTS: [&str; 5] = ["RECEIVE", "DELIVER", "DEFER", "FAIL", "DSN"];

/// One line of the tracking log.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct TrackedEvent {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    /// RECEIVE, DELIVER, DEFER, FAIL or DSN.
    pub event: String,
    /// The message's queue id (for DSN: the original message's).
    pub queue_id: String,
    /// The `Message-ID` header, when the message has one.
    pub message_id: Option<String>,
    /// Envelope sender (empty for bounces).
    pub sender: String,
    /// The recipients this event is about.
    pub recipients: Vec<String>,
    /// Receive connector the message came in on (`dsn` for notices the relay made).
    pub connector: String,
    /// `Anonymous` or `Authenticated`.
    pub auth_source: String,
    /// The authenticated user, if any.
    pub auth_user: Option<String>,
    /// The submitting client's address.
    pub client_ip: String,
    /// The other side: the client's EHLO name (RECEIVE) or the next hop (the others).
    pub remote_host: Option<String>,
    /// The SMTP reply that decided the event.
    pub reply: Option<String>,
    /// Message size in bytes, as stored (our `Received:` header included).
    pub size: u64,
    /// See the table in the module documentation.
    pub latency_ms: u64,
    /// DEFER: when the next attempt is due (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
    /// FAIL: permanent, expired or deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// DSN: the notice's own queue id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsn_queue_id: Option<String>,
    /// DSN: failed, delayed, delivered, relayed or expanded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dsn_action: Option<String>,
}

impl TrackedEvent {
    /// An event about `envelope` with the fields every event has; `recipients` are indices
    /// into the envelope's recipients.
    pub fn about(
        event: &str,
        envelope: &Envelope,
        message_id: Option<&str>,
        recipients: impl IntoIterator<Item = u32>,
        size: u64,
    ) -> TrackedEvent {
        let now = crate::clock::unix_ms();
        TrackedEvent {
            time: crate::clock::rfc3339(now),
            event: event.to_string(),
            queue_id: envelope.queue_id.to_string(),
            message_id: message_id.map(str::to_string),
            sender: envelope.sender.clone(),
            recipients: recipients
                .into_iter()
                .filter_map(|i| envelope.recipients.get(i as usize))
                .map(|r| r.address.clone())
                .collect(),
            connector: envelope.connector.clone(),
            auth_source: if envelope.auth_user.is_some() { "Authenticated" } else { "Anonymous" }.to_string(),
            auth_user: envelope.auth_user.clone(),
            client_ip: ip_text(envelope.client_ip),
            remote_host: None,
            reply: None,
            size,
            latency_ms: now.saturating_sub(envelope.received_at_ms),
            ..TrackedEvent::default()
        }
    }
}

fn ip_text(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// The `Message-ID` of a message (angle brackets kept, surrounding space trimmed).
pub fn message_id(message: &[u8]) -> Option<String> {
    let v = crate::smtp::headers::header_value(message, "Message-ID")?;
    let v = v.trim();
    if v.is_empty() { None } else { Some(v.chars().take(998).collect()) }
}

/// One core's tracking log (None when `[tracking] enabled = false`).
#[derive(Default)]
pub struct TrackingLog {
    buffer: Option<LogBuffer>,
}

impl TrackingLog {
    /// A log writing through `buffer`.
    pub fn new(buffer: Option<LogBuffer>) -> TrackingLog {
        TrackingLog { buffer }
    }

    /// Whether events are written at all (to skip building them).
    pub fn enabled(&self) -> bool {
        self.buffer.is_some()
    }

    /// Appends one event.
    pub fn emit(&self, event: &TrackedEvent) {
        if let Some(b) = &self.buffer {
            b.line(|buf| {
                if serde_json::to_writer(&mut *buf, event).is_err() {
                    buf.extend_from_slice(b"{}");
                }
            });
        }
    }

    /// Hands buffered lines to the writer.
    pub fn flush(&self) {
        if let Some(b) = &self.buffer {
            b.flush();
        }
    }
}

/// What `ringrelay track` looks for. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only events at or after this Unix time (ms).
    pub since_ms: Option<u64>,
    /// Envelope sender: an address (case-insensitive), or `@domain`.
    pub sender: Option<String>,
    /// A recipient: an address (case-insensitive), or `@domain`.
    pub recipient: Option<String>,
    /// Queue id (also matches a DSN event's `dsn_queue_id`).
    pub queue_id: Option<String>,
    /// Event name (case-insensitive).
    pub event: Option<String>,
}

fn address_matches(pattern: &str, address: &str) -> bool {
    if let Some(domain) = pattern.strip_prefix('@') {
        address.rsplit_once('@').is_some_and(|(_, d)| d.eq_ignore_ascii_case(domain))
    } else {
        address.eq_ignore_ascii_case(pattern)
    }
}

impl Filter {
    /// Does `e` (at Unix time `time_ms`) pass?
    pub fn matches(&self, e: &TrackedEvent, time_ms: u64) -> bool {
        self.since_ms.is_none_or(|s| time_ms >= s)
            && self.sender.as_deref().is_none_or(|p| address_matches(p, &e.sender))
            && self.recipient.as_deref().is_none_or(|p| e.recipients.iter().any(|r| address_matches(p, r)))
            && self.queue_id.as_deref().is_none_or(|q| {
                e.queue_id.eq_ignore_ascii_case(q)
                    || e.dsn_queue_id.as_deref().is_some_and(|d| d.eq_ignore_ascii_case(q))
            })
            && self.event.as_deref().is_none_or(|ev| e.event.eq_ignore_ascii_case(ev))
    }
}

/// A matching event and its line as stored.
#[derive(Debug, Clone)]
pub struct Found {
    /// Unix ms of `event.time`.
    pub time_ms: u64,
    /// The parsed event.
    pub event: TrackedEvent,
    /// The JSON line as written.
    pub line: String,
}

/// Reads every tracking file under `spool_dir`, keeps what `filter` matches, merged by time.
/// Unparsable lines (a torn last line after a crash) are skipped and counted.
pub fn query(spool_dir: &Path, filter: &Filter) -> Result<(Vec<Found>, usize), String> {
    let files = match log_files(spool_dir, LogKind::Tracking) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "no tracking log in {}: is spool.dir right (see --config), and [tracking] enabled?",
                spool_dir.join("tracking").display()
            ));
        }
        Err(e) => return Err(format!("cannot read {}: {e}", spool_dir.join("tracking").display())),
    };
    let mut found = Vec::new();
    let mut bad = 0;
    for path in files {
        let file = std::fs::File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        for line in std::io::BufReader::new(file).lines() {
            let Ok(line) = line else {
                bad += 1;
                continue;
            };
            if line.trim().is_empty() {
                continue;
            }
            let Ok(event) = serde_json::from_str::<TrackedEvent>(&line) else {
                bad += 1;
                continue;
            };
            let time_ms = crate::clock::parse_rfc3339(&event.time).unwrap_or(0);
            if filter.matches(&event, time_ms) {
                found.push(Found { time_ms, event, line });
            }
        }
    }
    // Stable: events of one core keep their order within a millisecond.
    found.sort_by_key(|f| f.time_ms);
    Ok((found, bad))
}

/// The table `ringrelay track` prints for people.
pub fn table(found: &[Found]) -> String {
    let mut rows: Vec<[String; 8]> = vec![[
        "TIME".into(),
        "EVENT".into(),
        "QUEUE_ID".into(),
        "SENDER".into(),
        "RECIPIENTS".into(),
        "CONNECTOR/AUTH".into(),
        "REMOTE".into(),
        "REPLY".into(),
    ]];
    for f in found {
        let e = &f.event;
        let id = match &e.dsn_queue_id {
            Some(d) => format!("{} -> {d}", e.queue_id),
            None => e.queue_id.clone(),
        };
        let who = match &e.auth_user {
            Some(u) => format!("{} ({u})", e.connector),
            None => format!("{} ({})", e.connector, e.client_ip),
        };
        let sender = if e.sender.is_empty() { "<>".to_string() } else { e.sender.clone() };
        rows.push([
            e.time.clone(),
            e.event.clone(),
            id,
            sender,
            e.recipients.join(","),
            who,
            e.remote_host.clone().unwrap_or_default(),
            e.reply.clone().unwrap_or_default(),
        ]);
    }
    super::format_table(&rows)
}

/// Parses a queue id as written in events, for validation of `--queue-id`.
pub fn valid_queue_id(text: &str) -> bool {
    QueueId::parse(text).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_addresses_domains_ids_and_events() {
        let e = TrackedEvent {
            event: "DSN".into(),
            queue_id: "AAA".into(),
            dsn_queue_id: Some("BBB".into()),
            sender: "App@Example.test".into(),
            recipients: vec!["x@dest.test".into()],
            ..Default::default()
        };
        let f = |f: Filter| f.matches(&e, 1000);
        assert!(f(Filter { sender: Some("app@example.test".into()), ..Default::default() }));
        assert!(f(Filter { sender: Some("@EXAMPLE.test".into()), ..Default::default() }));
        assert!(!f(Filter { sender: Some("pp@example.test".into()), ..Default::default() }));
        assert!(f(Filter { recipient: Some("@dest.test".into()), ..Default::default() }));
        assert!(f(Filter { queue_id: Some("bbb".into()), ..Default::default() }));
        assert!(f(Filter { event: Some("dsn".into()), since_ms: Some(1000), ..Default::default() }));
        assert!(!f(Filter { since_ms: Some(1001), ..Default::default() }));
    }

    #[test]
    fn events_round_trip_through_json() {
        let e = TrackedEvent { event: "DEFER".into(), next_attempt: Some("x".into()), ..Default::default() };
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains("dsn_queue_id"), "absent extras are left out: {line}");
        assert!(line.contains("\"message_id\":null"), "spec fields are always present: {line}");
        assert_eq!(serde_json::from_str::<TrackedEvent>(&line).unwrap(), e);
    }
}
