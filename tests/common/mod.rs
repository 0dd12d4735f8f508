//! Test harness: the real `ringrelay` binary on loopback with a temporary spool, and a small
//! blocking SMTP client that can bind its source address (127.0.0.2, 127.0.0.3, ...).
#![allow(dead_code)]
// Tests measure their own deadlines; the clock rule is for the product.
#![allow(clippy::disallowed_methods)]

pub mod dns;
pub mod pki;
pub mod sink;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Now (tests keep their own deadlines).
pub fn now() -> Instant {
    Instant::now()
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running relay.
pub struct Relay {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    /// The port `{sink}` stands for (nothing listens there unless the test starts a sink).
    pub sink_port: u16,
    /// Lines the relay printed on stdout and stderr.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Relay {
    /// The spool directory.
    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Writes a configuration where `{port}`, `{admin}`, `{spool}` and `{dir}` are replaced,
    /// and starts the relay on it.
    pub fn start(template: &str) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let admin_port = free_port();
        let config_path = dir.path().join("ringrelay.toml");
        let sink_port = free_port();
        let text = template
            .replace("{sink}", &sink_port.to_string())
            .replace("{nodns}", &free_port().to_string())
            .replace("{port}", &port.to_string())
            .replace("{admin}", &admin_port.to_string())
            .replace("{spool}", &dir.path().join("spool").display().to_string())
            .replace("{dir}", &dir.path().display().to_string());
        std::fs::write(&config_path, text).unwrap();
        let mut relay = Relay { child: None, dir, port, admin_port, config_path, sink_port, log: Default::default() };
        relay.spawn();
        relay
    }

    /// The default test configuration: one anonymous connector for 127.0.0.1, relay = any.
    pub fn start_default() -> Relay {
        Relay::start(DEFAULT_CONFIG)
    }

    /// Starts (or restarts) the process and waits until it prints "ringrelay ready".
    pub fn spawn(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringrelay"))
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for (stream, tx) in [(Box::new(stdout) as Box<dyn Read + Send>, tx.clone()), (Box::new(stderr), tx)] {
            let log = std::sync::Arc::clone(&self.log);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let _ = tx.send(line.clone());
                    log.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("ringrelay ready") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!("relay did not start:\n{}", self.log.lock().unwrap().join("\n"));
                }
            }
        }
        self.child = Some(child);
    }

    /// SIGKILL: a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("relay running");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("relay did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Connects a client to the relay's port.
    pub fn client(&self) -> Client {
        Client::connect(SocketAddr::from(([127, 0, 0, 1], self.port)), None)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The default test configuration.
pub const DEFAULT_CONFIG: &str = r#"
hostname = "relay.test"
[spool]
dir = "{spool}"
[admin]
listen = "127.0.0.1:{admin}"
[limits]
max_message_size = "64KiB"
max_recipients = 5
max_command_line = 1000
[cores]
smtp = 2
[dns]
nameservers = ["127.0.0.1:{nodns}"]
[[receive_connector]]
name = "loopback"
bind = ["127.0.0.1:{port}"]
remote_ip_ranges = ["127.0.0.1/32"]
permission_groups = ["anonymous"]
relay = "any"
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = { first = "1h", max = "1h", expire = "2d" }
"#;

/// A blocking SMTP client.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A reply: code, and the lines' text (without code and separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The last line, e.g. "2.6.0 <ID> Queued mail for delivery".
    pub fn text(&self) -> &str {
        self.lines.last().map_or("", String::as_str)
    }
    /// "code text" of the last line.
    pub fn line(&self) -> String {
        format!("{} {}", self.code, self.text())
    }
    /// The queue id in a `250 2.6.0 <ID> Queued` reply.
    pub fn queue_id(&self) -> Option<String> {
        let t = self.text();
        let start = t.find('<')? + 1;
        let end = t.find('>')?;
        Some(t[start..end].to_string())
    }
}

impl Client {
    /// Connects to `addr`, from `source` when given; reads nothing.
    pub fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Client {
        let stream = match source {
            None => TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap(),
            Some(ip) => {
                let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None).unwrap();
                s.bind(&SocketAddr::new(ip, 0).into()).unwrap();
                s.connect_timeout(&addr.into(), Duration::from_secs(5)).unwrap();
                s.into()
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        stream.set_nodelay(true).unwrap();
        Client { stream, buf: Vec::new() }
    }

    /// Reads one (possibly multi-line) reply.
    pub fn reply(&mut self) -> Reply {
        self.try_reply().unwrap_or_else(|e| panic!("no reply: {e}"))
    }

    /// Reads one reply, or the I/O error (EOF is an error here).
    pub fn try_reply(&mut self) -> std::io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line()?;
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad reply line {line:?}"))
            })?;
            let sep = line.as_bytes().get(3).copied().unwrap_or(b' ');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if sep != b'-' {
                return Ok(Reply { code, lines });
            }
        }
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends a command line (CRLF added) and reads the reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Greeting + EHLO.
    pub fn hello(&mut self) -> Reply {
        let g = self.reply();
        assert_eq!(g.code, 220, "{g:?}");
        let e = self.cmd("EHLO client.test");
        assert_eq!(e.code, 250, "{e:?}");
        e
    }

    /// MAIL, RCPTs, DATA, body (dot-stuffed here), returns the final reply.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        if r.code != 250 {
            return r;
        }
        let mut accepted = 0;
        for t in to {
            if self.cmd(&format!("RCPT TO:<{t}>")).code == 250 {
                accepted += 1;
            }
        }
        if accepted == 0 {
            return self.cmd("RSET");
        }
        let r = self.cmd("DATA");
        assert_eq!(r.code, 354, "{r:?}");
        self.send(&dot_stuff(body.as_bytes()));
        self.send(b".\r\n");
        self.reply()
    }

    /// Is the connection closed by the server (EOF within the timeout)?
    pub fn is_closed(&mut self) -> bool {
        self.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 64];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }
}

/// Dot-stuffs a CRLF message body (which must end in CRLF).
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut line_start = true;
    for &b in body {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}

/// Reads every live message in the relay's spool: queue id → (envelope, stored message).
pub fn spool_messages(spool: &Path) -> std::collections::BTreeMap<String, (ringrelay::smtp::Envelope, Vec<u8>)> {
    let mut out = std::collections::BTreeMap::new();
    for (n, dir) in ringrelay::spool::list_core_dirs(spool).unwrap() {
        let rec = ringrelay::spool::recover(&dir, n).unwrap();
        for m in rec.messages {
            let raw = m.spool_ref.read().unwrap();
            match ringrelay::spool::record::decode(&raw).unwrap().0 {
                ringrelay::spool::record::Record::Message { envelope, message } => {
                    out.insert(envelope.queue_id.to_string(), (envelope, message.to_vec()));
                }
                other => panic!("{other:?}"),
            }
        }
    }
    out
}

/// The message after our Received: header (which is the first header, folded over 3 lines).
pub fn strip_received(stored: &[u8]) -> &[u8] {
    assert!(stored.starts_with(b"Received: "), "stored message starts with our trace header");
    let mut pos = 0;
    loop {
        let end = pos + stored[pos..].windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        pos = end;
        if !stored[pos..].starts_with(b"\t") && !stored[pos..].starts_with(b" ") {
            return &stored[pos..];
        }
    }
}
