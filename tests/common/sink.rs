//! A test SMTP server standing in for remote MX hosts and smart hosts: threads on std
//! sockets, deliberately naive (it splits on CRLF and unstuffs dots by the book, which is what
//! makes it a fair check of the relay's outbound encoding). It records every connection,
//! transaction and message, QUIT, and commands a client pipelined, and can be told to refuse,
//! defer, require TLS and AUTH (PLAIN or LOGIN), or leave out extensions (PIPELINING, DSN,
//! 8BITMIME, SMTPUTF8, a small SIZE).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the sink received in one transaction.
#[derive(Debug, Clone)]
pub struct Received {
    /// MAIL FROM address.
    pub from: String,
    /// MAIL FROM parameters, as written.
    pub mail_params: String,
    /// RCPT TO addresses accepted.
    pub rcpts: Vec<String>,
    /// RCPT TO parameters, per accepted recipient.
    pub rcpt_params: Vec<String>,
    /// The message, unstuffed, CRLF line ends.
    pub data: Vec<u8>,
    /// Which connection (1-based) carried it.
    pub connection: usize,
    /// The session was under TLS.
    pub tls: bool,
    /// The user that authenticated, if any.
    pub auth: Option<String>,
}

/// Behaviour knobs.
#[derive(Clone, Default)]
pub struct SinkOptions {
    /// Offer STARTTLS with this config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Require AUTH PLAIN/LOGIN with these credentials before MAIL.
    pub auth: Option<(String, String)>,
    /// Do not advertise PIPELINING.
    pub no_pipelining: bool,
    /// Do not advertise DSN.
    pub no_dsn: bool,
    /// Do not advertise 8BITMIME.
    pub no_8bitmime: bool,
    /// Do not advertise SMTPUTF8.
    pub no_smtputf8: bool,
    /// Advertise this SIZE (default 50000000).
    pub size: Option<u64>,
    /// The AUTH mechanisms advertised (default "PLAIN LOGIN"); both are always understood.
    pub auth_mechanisms: Option<&'static str>,
    /// Defer every recipient whose local part starts with "tempfail" this many times (per
    /// address) before accepting it. `u32::MAX`: always.
    pub tempfail_times: u32,
    /// Delay before the reply to the end of data.
    pub data_latency: Option<Duration>,
    /// Answer this many MAIL commands (in total) with 421 and close the connection.
    pub mail_421_times: u32,
}

/// Shared record of what happened.
#[derive(Default)]
pub struct SinkState {
    /// Connections accepted.
    pub connections: usize,
    /// Transactions that reached the end of data with a 250.
    pub messages: Vec<Received>,
    /// RCPT attempts per address.
    pub attempts: std::collections::HashMap<String, u32>,
    /// MAIL commands answered with 421.
    pub mail_421: u32,
    /// QUIT commands received.
    pub quits: usize,
    /// Commands that arrived while an earlier one was still unanswered (pipelining; seen
    /// on plaintext connections only).
    pub pipelined: usize,
    /// AUTH mechanisms used, one per successful AUTH.
    pub auth_mechanisms: Vec<String>,
}

/// A running sink.
pub struct Sink {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub state: Arc<Mutex<SinkState>>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    /// Starts a sink on `addr` (port 0: any free port).
    pub fn start(addr: &str, options: SinkOptions) -> Sink {
        let listener = TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<SinkState>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let n = {
                    let mut s = st.lock().unwrap();
                    s.connections += 1;
                    s.connections
                };
                let (st, opts) = (Arc::clone(&st), options.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, n, &st, &opts);
                });
            }
        });
        Sink { addr, state, stop }
    }

    /// Messages received so far.
    pub fn count(&self) -> usize {
        self.state.lock().unwrap().messages.len()
    }

    /// Waits until `n` messages arrived (or panics after `secs`).
    pub fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        let deadline = super::now() + Duration::from_secs(secs);
        loop {
            {
                let s = self.state.lock().unwrap();
                if s.messages.len() >= n {
                    return s.messages.clone();
                }
            }
            assert!(super::now() < deadline, "sink got {} of {n} messages in {secs}s", self.count());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// QUITs received so far.
    pub fn quits(&self) -> usize {
        self.state.lock().unwrap().quits
    }

    /// Waits until `pred` holds for the sink's state (or panics after `secs`).
    pub fn wait_until(&self, secs: u64, what: &str, pred: impl Fn(&SinkState) -> bool) {
        let deadline = super::now() + Duration::from_secs(secs);
        loop {
            if pred(&self.state.lock().unwrap()) {
                return;
            }
            assert!(super::now() < deadline, "sink: {what} did not happen in {secs}s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Two sinks on 127.0.0.2 and 127.0.0.3 with the same port: MX delivery uses one port (the
/// connector's) for every host, so two MX hosts of a test zone must share it.
pub fn pair(first: SinkOptions, second: SinkOptions) -> (Sink, Sink) {
    loop {
        let port = super::free_port();
        let Ok(a) = TcpListener::bind(("127.0.0.2", port)) else { continue };
        let Ok(b) = TcpListener::bind(("127.0.0.3", port)) else { continue };
        drop((a, b));
        return (Sink::start(&format!("127.0.0.2:{port}"), first), Sink::start(&format!("127.0.0.3:{port}"), second));
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Either side of the connection, plain or TLS.
trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

fn serve(tcp: TcpStream, n: usize, state: &Mutex<SinkState>, o: &SinkOptions) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(30)))?;
    tcp.set_nodelay(true)?;
    let mut io: Box<dyn Io> = Box::new(tcp.try_clone()?);
    io.write_all(b"220 sink.test ESMTP test sink\r\n")?;
    let mut reader = BufReader::new(tcp.try_clone()?);
    let mut tls = false;
    let mut auth: Option<String> = None;
    let mut tx: Option<Received> = None;
    // Reads one line (CRLF kept) as bytes; empty at EOF. TLS is read byte by byte (fine for
    // tests); plaintext through the buffered reader, whose leftovers show pipelining.
    let next_line = |io: &mut Box<dyn Io>, reader: &mut BufReader<TcpStream>, tls: bool| -> std::io::Result<Vec<u8>> {
        let mut line = Vec::new();
        if tls {
            read_line(io, &mut line)?;
        } else {
            reader.read_until(b'\n', &mut line)?;
        }
        Ok(line)
    };
    loop {
        let line = next_line(&mut io, &mut reader, tls)?;
        if line.is_empty() {
            return Ok(());
        }
        if !tls && !reader.buffer().is_empty() {
            state.lock().unwrap().pipelined += 1;
        }
        let cmd = String::from_utf8_lossy(&line).trim_end_matches(['\r', '\n']).to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply = |io: &mut Box<dyn Io>, s: &str| io.write_all(s.as_bytes());
        if upper.starts_with("EHLO") {
            let size = format!("250-SIZE {}", o.size.unwrap_or(50_000_000));
            let mut caps = vec!["250-sink.test".to_string(), size];
            if !o.no_8bitmime {
                caps.push("250-8BITMIME".into());
            }
            if !o.no_smtputf8 {
                caps.push("250-SMTPUTF8".into());
            }
            if !o.no_pipelining {
                caps.push("250-PIPELINING".into());
            }
            if !o.no_dsn {
                caps.push("250-DSN".into());
            }
            if o.tls.is_some() && !tls {
                caps.push("250-STARTTLS".into());
            }
            if o.auth.is_some() && tls {
                caps.push(format!("250-AUTH {}", o.auth_mechanisms.unwrap_or("PLAIN LOGIN")));
            }
            caps.push("250 ENHANCEDSTATUSCODES".into());
            reply(&mut io, &(caps.join("\r\n") + "\r\n"))?;
        } else if upper.starts_with("HELO") {
            reply(&mut io, "250 sink.test\r\n")?;
        } else if let (true, Some(cfg), false) = (upper == "STARTTLS", o.tls.as_ref(), tls) {
            reply(&mut io, "220 2.0.0 go\r\n")?;
            let conn = rustls::ServerConnection::new(Arc::clone(cfg)).unwrap();
            let mut s = rustls::StreamOwned::new(conn, tcp.try_clone()?);
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock)?;
            }
            io = Box::new(s);
            tls = true;
        } else if upper.starts_with("AUTH PLAIN ") {
            let b64 = &cmd[11..];
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap_or_default();
            let parts: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
            let ok = o
                .auth
                .as_ref()
                .is_some_and(|(u, p)| parts.len() == 3 && parts[1] == u.as_bytes() && parts[2] == p.as_bytes());
            if ok && tls {
                auth = o.auth.as_ref().map(|(u, _)| u.clone());
                state.lock().unwrap().auth_mechanisms.push("PLAIN".into());
                reply(&mut io, "235 2.7.0 ok\r\n")?;
            } else {
                reply(&mut io, "535 5.7.8 bad credentials\r\n")?;
            }
        } else if upper == "AUTH LOGIN" || upper.starts_with("AUTH LOGIN ") {
            // RFC-less but universal: 334 "Username:", 334 "Password:", each answered in base64;
            // the user name may come as an initial response.
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD;
            let decode = |l: &[u8]| {
                let text = String::from_utf8_lossy(l).trim_end_matches(['\r', '\n']).to_string();
                b64.decode(text.trim()).unwrap_or_default()
            };
            let user = match cmd.get(11..).filter(|r| !r.trim().is_empty()) {
                Some(initial) => decode(initial.as_bytes()),
                None => {
                    reply(&mut io, "334 VXNlcm5hbWU6\r\n")?;
                    decode(&next_line(&mut io, &mut reader, tls)?)
                }
            };
            reply(&mut io, "334 UGFzc3dvcmQ6\r\n")?;
            let pass = decode(&next_line(&mut io, &mut reader, tls)?);
            let ok = o.auth.as_ref().is_some_and(|(u, p)| user == u.as_bytes() && pass == p.as_bytes());
            if ok && tls {
                auth = o.auth.as_ref().map(|(u, _)| u.clone());
                state.lock().unwrap().auth_mechanisms.push("LOGIN".into());
                reply(&mut io, "235 2.7.0 ok\r\n")?;
            } else {
                reply(&mut io, "535 5.7.8 bad credentials\r\n")?;
            }
        } else if upper.starts_with("MAIL FROM:") {
            if o.auth.is_some() && auth.is_none() {
                reply(&mut io, "530 5.7.0 auth first\r\n")?;
                continue;
            }
            {
                let mut s = state.lock().unwrap();
                if s.mail_421 < o.mail_421_times {
                    s.mail_421 += 1;
                    drop(s);
                    reply(&mut io, "421 4.3.2 sink going away\r\n")?;
                    return Ok(());
                }
            }
            let (addr, params) = split_path(&cmd[10..]);
            tx = Some(Received {
                from: addr,
                mail_params: params,
                rcpts: vec![],
                rcpt_params: vec![],
                data: vec![],
                connection: n,
                tls,
                auth: auth.clone(),
            });
            reply(&mut io, "250 2.1.0 ok\r\n")?;
        } else if upper.starts_with("RCPT TO:") {
            let (addr, params) = split_path(&cmd[8..]);
            let Some(t) = tx.as_mut() else {
                reply(&mut io, "503 5.5.1 no MAIL\r\n")?;
                continue;
            };
            let local = addr.split('@').next().unwrap_or("").to_ascii_lowercase();
            let attempts = {
                let mut s = state.lock().unwrap();
                let a = s.attempts.entry(addr.clone()).or_insert(0);
                *a += 1;
                *a
            };
            if local.starts_with("permfail") {
                reply(&mut io, "550 5.1.1 <permfail> no such user here\r\n")?;
            } else if local.starts_with("tempfail") && attempts <= o.tempfail_times {
                reply(&mut io, "451 4.2.0 mailbox busy, try later\r\n")?;
            } else {
                t.rcpts.push(addr);
                t.rcpt_params.push(params);
                reply(&mut io, "250 2.1.5 ok\r\n")?;
            }
        } else if upper == "DATA" {
            let ok = tx.as_ref().is_some_and(|t| !t.rcpts.is_empty());
            if !ok {
                reply(&mut io, "554 5.5.1 no valid recipients\r\n")?;
                continue;
            }
            reply(&mut io, "354 go\r\n")?;
            let mut data = Vec::new();
            loop {
                let l = next_line(&mut io, &mut reader, tls)?;
                if l.is_empty() {
                    return Ok(());
                }
                if l == b".\r\n" {
                    break;
                }
                data.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
            }
            if let Some(d) = o.data_latency {
                std::thread::sleep(d);
            }
            let mut t = tx.take().unwrap();
            t.data = data;
            state.lock().unwrap().messages.push(t);
            reply(&mut io, "250 2.0.0 queued by sink\r\n")?;
        } else if upper == "RSET" {
            tx = None;
            reply(&mut io, "250 2.0.0 ok\r\n")?;
        } else if upper == "NOOP" {
            reply(&mut io, "250 2.0.0 ok\r\n")?;
        } else if upper == "QUIT" {
            state.lock().unwrap().quits += 1;
            reply(&mut io, "221 2.0.0 bye\r\n")?;
            return Ok(());
        } else {
            reply(&mut io, "500 5.5.2 what\r\n")?;
        }
    }
}

fn read_line(io: &mut Box<dyn Io>, bytes: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut b = [0u8; 1];
    loop {
        match io.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                bytes.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
    }
    Ok(bytes.len())
}

fn split_path(s: &str) -> (String, String) {
    let s = s.trim_start();
    match s.strip_prefix('<').and_then(|rest| rest.split_once('>')) {
        Some((addr, params)) => (addr.to_string(), params.trim().to_string()),
        None => {
            let (addr, params) = s.split_once(' ').unwrap_or((s, ""));
            (addr.to_string(), params.trim().to_string())
        }
    }
}
