//! The admin endpoint (`[admin] listen`, 127.0.0.1:9425 by default): a deliberately small
//! HTTP/1.1 server on its own thread with a current-thread tokio runtime. It is not on the mail
//! path, so it favours being obviously bounded over being fast: one request per connection
//! (`Connection: close`), request head ≤ 16 KiB, body ≤ 4 KiB (and ignored), 10 s to send the
//! request and 10 s to take the answer, 32 connections at once (more get 503), GET and POST
//! only. No authentication: it can delete mail, so keep it on loopback (check-config warns and
//! the startup print says so when it is not).
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text format (`metrics::render`) |
//! | `GET /queue` | JSON: per destination domain, and totals |
//! | `GET /queue?domain=D` | JSON: the messages queued for D |
//! | `POST /queue/retry` (`?domain=D`, `?id=ID`, or nothing for all) | JSON: entries moved to ready |
//! | `POST /queue/delete?id=ID&bounce=true\|false` | JSON: recipients dropped (FAIL, and a DSN unless bounce=false) |
//! | `GET /health` | `ok` |
//!
//! Why not a crate: hyper/axum would bring a second HTTP stack and dozens of crates for five
//! routes that a test client and `curl` drive; this file parses one request line and a few
//! headers, with every limit visible.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, oneshot, watch};

use super::metrics::{self, Registry};
use crate::runtime::handoff::{AdminRequest, DomainSummary, Mailbox, MessageSummary, RetryTarget, ToDelivery};
use crate::smtp::envelope::QueueId;

/// Request line and headers, at most.
pub const HEAD_MAX: usize = 16 * 1024;
/// Request body, at most (no route takes one; it is read and dropped).
const BODY_MAX: usize = 4 * 1024;
/// Time to receive a request, and to send an answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
const CONNECTIONS_MAX: usize = 32;
/// Time the delivery cores get to answer a queue question.
const CORE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin thread needs.
pub struct AdminStart {
    /// The bound listener.
    pub listener: std::net::TcpListener,
    /// Every core's counters.
    pub registry: Arc<Registry>,
    /// The delivery cores' mailboxes (queue questions and orders).
    pub delivery: Vec<Mailbox<ToDelivery>>,
    /// Flips to true on shutdown.
    pub shutdown: watch::Receiver<bool>,
}

/// Binds the admin listener (at start, so a taken port fails the start with its fix).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, String> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| {
        format!(
            "cannot listen on {addr} for the admin endpoint: {e}; change [admin] listen, or set [admin] enabled = false"
        )
    })?;
    l.set_nonblocking(true).map_err(|e| format!("admin listener: {e}"))?;
    Ok(l)
}

/// Starts the admin thread.
pub fn spawn(start: AdminStart) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the admin runtime; no admin endpoint");
                    return;
                }
            };
            rt.block_on(serve(start));
        })
        .map_err(|e| format!("cannot start the admin thread: {e}"))
}

struct Ctx {
    registry: Arc<Registry>,
    delivery: Vec<Mailbox<ToDelivery>>,
}

async fn serve(start: AdminStart) {
    let AdminStart { listener, registry, delivery, mut shutdown } = start;
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener unusable");
            return;
        }
    };
    let ctx = Arc::new(Ctx { registry, delivery });
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let ctx = Arc::clone(&ctx);
                match Arc::clone(&slots).try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            connection(stream, &ctx).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tokio::spawn(async move {
                            let r = Response::text(503, "too many admin connections\n");
                            let _ = tokio::time::timeout(IO_TIMEOUT, r.write(stream)).await;
                        });
                    }
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// GET or POST.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
    /// Content-Length.
    pub body_len: usize,
}

impl Request {
    fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses a request head (up to and without the blank line). Err: status and reason.
pub fn parse_head(head: &[u8]) -> Result<Request, (u16, &'static str)> {
    let text = std::str::from_utf8(head).map_err(|_| (400, "request head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or("");
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((400, "bad request line"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err((505, "HTTP/1.x only"));
    }
    if method != "GET" && method != "POST" {
        return Err((405, "GET and POST only"));
    }
    let mut body_len = 0;
    for h in lines {
        let Some((name, value)) = h.split_once(':') else {
            return Err((400, "bad header line"));
        };
        if name.eq_ignore_ascii_case("content-length") {
            body_len = value.trim().parse().map_err(|_| (400, "bad Content-Length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err((411, "send a Content-Length, not chunked"));
        }
    }
    if body_len > BODY_MAX {
        return Err((413, "no endpoint takes a body"));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Ok(Request { method: method.to_string(), path: path.to_string(), query, body_len })
}

/// Decodes `%XX` and `+` (query strings).
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Reads the head (and any small body) of one request.
async fn read_request(stream: &mut TcpStream) -> Result<Request, (u16, &'static str)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > HEAD_MAX {
            return Err((431, "request head over 16 KiB"));
        }
        let n = stream.read(&mut chunk).await.map_err(|_| (400, "read failed"))?;
        if n == 0 {
            return Err((400, "connection closed mid-request"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if head_end > HEAD_MAX {
        return Err((431, "request head over 16 KiB"));
    }
    let req = parse_head(&buf[..head_end])?;
    let mut have = buf.len() - head_end - 4;
    while have < req.body_len {
        let n = stream.read(&mut chunk).await.map_err(|_| (400, "read failed"))?;
        if n == 0 {
            break;
        }
        have += n;
    }
    Ok(req)
}

async fn connection(mut stream: TcpStream, ctx: &Ctx) {
    let response = match tokio::time::timeout(IO_TIMEOUT, read_request(&mut stream)).await {
        Err(_) => Response::text(408, "request timeout\n"),
        Ok(Err((status, why))) => Response::text(status, &format!("{why}\n")),
        Ok(Ok(req)) => route(&req, ctx).await,
    };
    let _ = tokio::time::timeout(IO_TIMEOUT, response.write(stream)).await;
}

struct Response {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.to_string() }
    }

    fn json(status: u16, value: &serde_json::Value) -> Response {
        let mut body = serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into());
        body.push('\n');
        Response { status, content_type: "application/json", body }
    }

    async fn write(self, mut stream: TcpStream) {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            411 => "Length Required",
            413 => "Content Too Large",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Error",
        };
        let allow = if self.status == 405 { "Allow: GET, POST\r\n" } else { "" };
        let head = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if stream.write_all(head.as_bytes()).await.is_ok() && stream.write_all(self.body.as_bytes()).await.is_ok() {
            let _ = stream.shutdown().await;
        }
    }
}

async fn route(req: &Request, ctx: &Ctx) -> Response {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/metrics") => {
            let domains: Vec<DomainSummary> = ask(ctx, AdminRequest::Domains).await.into_iter().flatten().collect();
            let mut r = Response::text(200, &metrics::render(&ctx.registry, &domains));
            r.content_type = "text/plain; version=0.0.4; charset=utf-8";
            r
        }
        ("GET", "/queue") => match req.param("domain") {
            None => queue_summary(ctx).await,
            Some(d) => {
                let domain = Some(d.to_ascii_lowercase());
                let mut msgs: Vec<MessageSummary> =
                    ask(ctx, |reply| AdminRequest::Messages { domain: domain.clone(), reply })
                        .await
                        .into_iter()
                        .flatten()
                        .collect();
                msgs.sort_by(|a, b| a.arrival_ms.cmp(&b.arrival_ms).then(a.queue_id.cmp(&b.queue_id)));
                Response::json(200, &serde_json::json!({ "domain": d, "messages": msgs }))
            }
        },
        ("POST", "/queue/retry") => {
            let target = match (req.param("id"), req.param("domain")) {
                (Some(id), None) => match QueueId::parse(id) {
                    Some(q) => RetryTarget::Message(q),
                    None => return bad_id(id),
                },
                (None, Some(d)) => RetryTarget::Domain(d.to_ascii_lowercase()),
                (None, None) => RetryTarget::All,
                (Some(_), Some(_)) => {
                    return Response::json(400, &serde_json::json!({ "error": "give id or domain, not both" }));
                }
            };
            let n: usize =
                ask(ctx, |reply| AdminRequest::Retry { target: target.clone(), reply }).await.into_iter().sum();
            Response::json(200, &serde_json::json!({ "retried": n }))
        }
        ("POST", "/queue/delete") => {
            let Some(id) = req.param("id") else {
                return Response::json(400, &serde_json::json!({ "error": "id is required" }));
            };
            let Some(queue_id) = QueueId::parse(id) else { return bad_id(id) };
            let bounce = !matches!(req.param("bounce"), Some("false" | "0" | "no"));
            let n: usize = ask(ctx, |reply| AdminRequest::Delete { queue_id, bounce, reply }).await.into_iter().sum();
            if n == 0 {
                return Response::json(
                    404,
                    &serde_json::json!({ "error": format!("{id} is not queued for delivery (delivered, deleted, or in a transaction right now)") }),
                );
            }
            Response::json(200, &serde_json::json!({ "deleted_recipients": n, "bounce": bounce }))
        }
        ("GET", "/health") => Response::text(200, "ok\n"),
        ("GET", "/") => Response::text(
            200,
            "ringrelay admin endpoint\n\nGET  /metrics\nGET  /queue[?domain=D]\nPOST /queue/retry[?domain=D|?id=ID]\nPOST /queue/delete?id=ID[&bounce=false]\nGET  /health\n",
        ),
        (_, "/metrics" | "/queue" | "/queue/retry" | "/queue/delete" | "/health" | "/") => {
            Response::text(405, "wrong method for this path\n")
        }
        _ => Response::text(404, "no such endpoint; GET / lists them\n"),
    }
}

fn bad_id(id: &str) -> Response {
    Response::json(400, &serde_json::json!({ "error": format!("{id:?} is not a queue id") }))
}

async fn queue_summary(ctx: &Ctx) -> Response {
    let mut domains: Vec<DomainSummary> = ask(ctx, AdminRequest::Domains).await.into_iter().flatten().collect();
    domains.sort_by(|a, b| a.domain.cmp(&b.domain));
    let messages: usize = domains.iter().map(|d| d.messages).sum();
    let recipients: usize = domains.iter().map(|d| d.recipients).sum();
    let deferred: usize = domains.iter().map(|d| d.deferred).sum();
    let oldest = domains.iter().map(|d| d.oldest_age_ms).max().unwrap_or(0);
    Response::json(
        200,
        &serde_json::json!({
            "domains": domains,
            "totals": { "messages": messages, "recipients": recipients, "deferred": deferred, "oldest_age_ms": oldest },
        }),
    )
}

/// Asks every delivery core and collects the answers that come within `CORE_TIMEOUT`.
async fn ask<T>(ctx: &Ctx, make: impl Fn(oneshot::Sender<T>) -> AdminRequest) -> Vec<T> {
    let mut waiting = Vec::with_capacity(ctx.delivery.len());
    for m in &ctx.delivery {
        let (tx, rx) = oneshot::channel();
        if m.send(ToDelivery::Admin(make(tx))) {
            waiting.push(rx);
        }
    }
    let deadline = tokio::time::Instant::now() + CORE_TIMEOUT;
    let mut out = Vec::with_capacity(waiting.len());
    for rx in waiting {
        if let Ok(Ok(v)) = tokio::time::timeout_at(deadline, rx).await {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_requests_and_refuses_what_it_does_not_serve() {
        let r =
            parse_head(b"POST /queue/delete?id=AB%43&bounce=false HTTP/1.1\r\nHost: x\r\nContent-Length: 0").unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/queue/delete");
        assert_eq!(r.param("id"), Some("ABC"));
        assert_eq!(r.param("bounce"), Some("false"));
        assert_eq!(parse_head(b"DELETE /queue HTTP/1.1").unwrap_err().0, 405);
        assert_eq!(parse_head(b"GET /queue HTTP/2").unwrap_err().0, 505);
        assert_eq!(parse_head(b"GET /queue").unwrap_err().0, 400);
        assert_eq!(parse_head(b"POST /x HTTP/1.1\r\nContent-Length: 99999").unwrap_err().0, 413);
        assert_eq!(percent_decode("a+b%2Fc%zz%4"), "a b/c%zz%4");
    }
}
