//! `ringrelay queue …`: a client of the running relay's admin endpoint (std sockets, one
//! request per connection), and the tables it prints for people (`--json` prints the
//! endpoint's JSON as it is).

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// Answers larger than this are refused (a queue listing of a very large queue is still far
/// below it: the endpoint is not paginated, and this keeps the client bounded).
const ANSWER_MAX: usize = 256 << 20;

/// Where to reach the admin endpoint of a relay listening on `listen` (a wildcard address is
/// reached on loopback).
pub fn admin_target(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), listen.port()),
        _ => listen,
    }
}

/// Sends one request; returns status and body. Errors say what to check.
pub fn request(addr: SocketAddr, method: &str, target: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => {
            format!("is ringrelay running? admin endpoint {addr} refused the connection")
        }
        _ => format!("cannot reach the admin endpoint {addr}: {e} (is ringrelay running, with this [admin] listen?)"),
    })?;
    s.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let req = format!("{method} {target} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| format!("admin endpoint {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.take(ANSWER_MAX as u64 + 1).read_to_end(&mut raw).map_err(|e| format!("admin endpoint {addr}: {e}"))?;
    if raw.len() > ANSWER_MAX {
        return Err(format!("admin endpoint {addr}: answer over {} MiB", ANSWER_MAX >> 20));
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("admin endpoint {addr}: not HTTP"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("admin endpoint {addr}: bad status line"))?;
    Ok((status, body.to_string()))
}

fn json_ok(addr: SocketAddr, method: &str, target: &str) -> Result<Value, String> {
    let (status, body) = request(addr, method, target)?;
    let v: Value = serde_json::from_str(&body).map_err(|_| format!("admin endpoint {addr}: HTTP {status}: {body}"))?;
    if status != 200 {
        let why = v.get("error").and_then(Value::as_str).unwrap_or(body.trim());
        return Err(why.to_string());
    }
    Ok(v)
}

fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `queue list [--domain D] [--json]`.
pub fn list(addr: SocketAddr, domain: Option<&str>, json: bool) -> Result<String, String> {
    let target = match domain {
        Some(d) => format!("/queue?domain={}", encode(d)),
        None => "/queue".to_string(),
    };
    let v = json_ok(addr, "GET", &target)?;
    if json {
        return Ok(format!("{}\n", serde_json::to_string(&v).unwrap_or_default()));
    }
    let s = |v: &Value, k: &str| match v.get(k) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let age = |ms: u64| -> String {
        let secs = ms / 1000;
        if secs < 120 {
            format!("{secs}s")
        } else if secs < 7200 {
            format!("{}m", secs / 60)
        } else {
            format!("{}h", secs / 3600)
        }
    };
    if domain.is_some() {
        let mut rows = vec![
            ["QUEUE_ID", "ARRIVAL", "SENDER", "RECIPIENTS", "SIZE", "FAILURES", "NEXT_ATTEMPT", "LAST_REPLY"]
                .map(String::from),
        ];
        for m in v["messages"].as_array().into_iter().flatten() {
            let when = |k: &str| m.get(k).and_then(Value::as_u64).map(crate::clock::rfc3339);
            let rcpts: Vec<&str> = m["recipients"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let sender = s(m, "sender");
            rows.push([
                s(m, "queue_id"),
                when("arrival_ms").unwrap_or_default(),
                if sender.is_empty() { "<>".into() } else { sender },
                rcpts.join(","),
                s(m, "size"),
                s(m, "failures"),
                when("next_attempt_ms").unwrap_or_else(|| "now".into()),
                s(m, "last_reply"),
            ]);
        }
        let n = rows.len() - 1;
        return Ok(format!("{}{n} message(s) queued for {}\n", super::format_table(&rows), domain.unwrap_or("")));
    }
    let mut rows = vec![["DOMAIN", "MESSAGES", "RECIPIENTS", "DEFERRED", "OLDEST", "CONNECTIONS"].map(String::from)];
    for d in v["domains"].as_array().into_iter().flatten() {
        rows.push([
            s(d, "domain"),
            s(d, "messages"),
            s(d, "recipients"),
            s(d, "deferred"),
            age(d["oldest_age_ms"].as_u64().unwrap_or(0)),
            s(d, "connections"),
        ]);
    }
    let t = &v["totals"];
    Ok(format!(
        "{}total: {} message(s), {} recipient(s), {} deferred\n",
        super::format_table(&rows),
        t["messages"],
        t["recipients"],
        t["deferred"]
    ))
}

/// What `queue retry` retries.
#[derive(Debug, Clone)]
pub enum Retry {
    /// Everything deferred.
    All,
    /// One destination domain.
    Domain(String),
    /// One message.
    Message(String),
}

/// `queue retry …`.
pub fn retry(addr: SocketAddr, what: &Retry) -> Result<String, String> {
    let target = match what {
        Retry::All => "/queue/retry".to_string(),
        Retry::Domain(d) => format!("/queue/retry?domain={}", encode(d)),
        Retry::Message(id) => format!("/queue/retry?id={}", encode(id)),
    };
    let v = json_ok(addr, "POST", &target)?;
    Ok(format!("{} queue entr{} moved to ready: delivery is being tried now\n", v["retried"], plural(&v["retried"])))
}

fn plural(n: &Value) -> &'static str {
    if n.as_u64() == Some(1) { "y" } else { "ies" }
}

/// `queue delete ID [--no-bounce]`.
pub fn delete(addr: SocketAddr, id: &str, bounce: bool) -> Result<String, String> {
    let v = json_ok(addr, "POST", &format!("/queue/delete?id={}&bounce={bounce}", encode(id)))?;
    Ok(format!(
        "{id}: {} recipient(s) deleted{}\n",
        v["deleted_recipients"],
        if bounce { "; a non-delivery report goes to the sender" } else { "; no bounce" }
    ))
}
