//! Test support for relay policy: a test PKI made at run time with rcgen (a CA and a leaf with
//! distinct names, so OpenSSL accepts the chain too), cheap argon2 hashes (the verifier reads
//! the cost from the PHC string), and a blocking SMTP client that can bind its source address,
//! upgrade with STARTTLS or start in TLS, and speak AUTH PLAIN/LOGIN. The client is a real
//! rustls client that verifies the relay's certificate against the test CA.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ringrelay::smtp::auth::encode;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// The name on the relay's test certificate (and what the client verifies).
pub const SERVER_NAME: &str = "relay.test";

/// A CA and a server certificate signed by it, written as PEM files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub ca_path: PathBuf,
}

impl Pki {
    /// Makes the CA and the leaf (for relay.test, localhost and 127.0.0.1, ::1).
    pub fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(DnType::CommonName, "ringrelay test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let names = vec![SERVER_NAME.to_string(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
        let mut leaf_params = CertificateParams::new(names).unwrap();
        leaf_params.distinguished_name.push(DnType::CommonName, SERVER_NAME);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        let ca_path = dir.path().join("ca.pem");
        // The chain: leaf first, then the CA.
        std::fs::write(&cert_path, format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
        std::fs::write(&ca_path, ca.pem()).unwrap();
        Pki { ca_pem: ca.pem(), dir, cert_path, key_path, ca_path }
    }

    /// `tls = { cert = "...", key = "..." }` for a receive connector.
    pub fn tls_toml(&self) -> String {
        format!("tls = {{ cert = \"{}\", key = \"{}\" }}", self.cert_path.display(), self.key_path.display())
    }

    /// A rustls client configuration that trusts only this CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

use rustls::pki_types::pem::PemObject;

/// An argon2id PHC string with cheap parameters (8 MiB, 1 pass): tests stay fast, and the
/// relay verifies with the parameters written in the string.
pub fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::PasswordHasher;
    let params = argon2::Params::new(8192, 1, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    a.hash_password(password.as_bytes()).unwrap().to_string()
}

/// A configuration template for `common::Relay::start` with `{tls}` (the test certificate)
/// and the `extra` placeholders replaced.
pub fn template(text: &str, pki: Option<&Pki>, extra: &[(&str, String)]) -> String {
    let mut t = text.to_string();
    if let Some(pki) = pki {
        t = t.replace("{tls}", &pki.tls_toml());
    }
    for (k, v) in extra {
        t = t.replace(k, v);
    }
    t
}

/// A free TCP port on `ip`.
pub fn free_port_on(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0)).unwrap().local_addr().unwrap().port()
}

/// Is there an IPv6 loopback to test with?
pub fn have_ipv6_loopback() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    Gone,
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(t) => &t.sock,
            Conn::Gone => panic!("connection is gone"),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(t) => t.read(buf),
            Conn::Gone => Ok(0),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(t) => t.write(buf),
            Conn::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(t) => t.flush(),
            Conn::Gone => Ok(()),
        }
    }
}

/// A reply: code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The last line's text, e.g. "5.7.54 Unable to relay ...".
    pub fn text(&self) -> &str {
        self.lines.last().map_or("", String::as_str)
    }
    /// "code text" of the last line.
    pub fn line(&self) -> String {
        format!("{} {}", self.code, self.text())
    }
    /// The queue id in `250 2.6.0 <ID> Queued mail for delivery`.
    pub fn queue_id_text(&self) -> String {
        let t = self.text();
        let start = t.find('<').map_or(0, |i| i + 1);
        let end = t.find('>').unwrap_or(t.len());
        t[start..end].to_string()
    }

    /// Has an EHLO keyword line starting with `word`.
    pub fn offers(&self, word: &str) -> bool {
        self.lines.iter().any(|l| l == word || l.starts_with(&format!("{word} ")))
    }
}

/// A blocking SMTP client, plain or TLS.
pub struct SmtpClient {
    conn: Conn,
    buf: Vec<u8>,
}

/// Opens a TCP connection to `addr` from `source` (if given).
pub fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> TcpStream {
    let stream: TcpStream = match source {
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
    stream
}

impl SmtpClient {
    /// A plain connection from `source` (None: the kernel's choice, 127.0.0.1 on loopback).
    pub fn connect(addr: SocketAddr, source: Option<IpAddr>) -> SmtpClient {
        SmtpClient { conn: Conn::Plain(tcp_connect(addr, source)), buf: Vec::new() }
    }

    /// Wraps an already connected socket.
    pub fn from_stream(stream: TcpStream) -> SmtpClient {
        SmtpClient { conn: Conn::Plain(stream), buf: Vec::new() }
    }

    /// An implicit-TLS connection (TLS from the first byte), handshake done.
    pub fn connect_tls(addr: SocketAddr, source: Option<IpAddr>, pki: &Pki) -> SmtpClient {
        let mut c = SmtpClient::connect(addr, source);
        c.handshake(pki).unwrap();
        c
    }

    /// Implicit TLS where the first write carries `prefix` (a PROXY header) and the
    /// ClientHello together, as a load balancer that coalesces them would send it.
    pub fn connect_tls_after(addr: SocketAddr, source: Option<IpAddr>, pki: &Pki, prefix: &[u8]) -> SmtpClient {
        let tcp = tcp_connect(addr, source);
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let mut conn = ClientConnection::new(pki.client_config(), name).unwrap();
        let mut first = prefix.to_vec();
        while conn.wants_write() {
            conn.write_tls(&mut first).unwrap();
        }
        (&tcp).write_all(&first).unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock).unwrap();
        }
        SmtpClient { conn: Conn::Tls(Box::new(tls)), buf: Vec::new() }
    }

    /// Runs the TLS handshake now (after `220 Ready to start TLS`, or for implicit TLS).
    pub fn handshake(&mut self, pki: &Pki) -> std::io::Result<()> {
        let Conn::Plain(tcp) = std::mem::replace(&mut self.conn, Conn::Gone) else { panic!("already TLS") };
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let conn = ClientConnection::new(pki.client_config(), name).unwrap();
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        self.conn = Conn::Tls(Box::new(tls));
        Ok(())
    }

    /// The negotiated TLS version, e.g. "TLSv1_3".
    pub fn tls_version(&self) -> Option<String> {
        match &self.conn {
            Conn::Tls(t) => t.conn.protocol_version().map(|v| format!("{v:?}")),
            _ => None,
        }
    }

    /// Bytes received but not yet read as replies.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }

    /// STARTTLS, then the handshake. Panics unless the server says 220.
    pub fn starttls(&mut self, pki: &Pki) {
        let r = self.cmd("STARTTLS");
        assert_eq!(r.code, 220, "{r:?}");
        assert!(self.buf.is_empty(), "the server sent something after 220 before the handshake: {:?}", self.buf);
        self.handshake(pki).unwrap();
    }

    /// Reads one reply (panics on EOF).
    pub fn reply(&mut self) -> Reply {
        self.try_reply().unwrap_or_else(|e| panic!("no reply: {e}"))
    }

    /// Reads one reply, or the I/O error (EOF is an error).
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
            let n = self.conn.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends raw bytes (under TLS when TLS is on).
    pub fn send(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).unwrap();
        self.conn.flush().unwrap();
    }

    /// Sends a command line and reads the reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Reads the greeting and says EHLO; returns the EHLO reply.
    pub fn hello(&mut self) -> Reply {
        let g = self.reply();
        assert_eq!(g.code, 220, "{g:?}");
        self.ehlo()
    }

    /// EHLO; returns the reply (asserting 250).
    pub fn ehlo(&mut self) -> Reply {
        let e = self.cmd("EHLO client.test");
        assert_eq!(e.code, 250, "{e:?}");
        e
    }

    /// AUTH PLAIN with an initial response.
    pub fn auth_plain(&mut self, user: &str, password: &str) -> Reply {
        self.cmd(&format!("AUTH PLAIN {}", encode(format!("\0{user}\0{password}").as_bytes())))
    }

    /// AUTH PLAIN without an initial response (334, then the response).
    pub fn auth_plain_challenge(&mut self, user: &str, password: &str) -> Reply {
        let r = self.cmd("AUTH PLAIN");
        if r.code != 334 {
            return r;
        }
        self.cmd(&encode(format!("\0{user}\0{password}").as_bytes()))
    }

    /// AUTH LOGIN, user name and password each after its 334.
    pub fn auth_login(&mut self, user: &str, password: &str) -> Reply {
        let r = self.cmd("AUTH LOGIN");
        if r.code != 334 {
            return r;
        }
        assert_eq!(r.text(), "VXNlcm5hbWU6", "334 Username:");
        let r = self.cmd(&encode(user.as_bytes()));
        if r.code != 334 {
            return r;
        }
        assert_eq!(r.text(), "UGFzc3dvcmQ6", "334 Password:");
        self.cmd(&encode(password.as_bytes()))
    }

    /// MAIL, RCPTs, DATA and `body` (CRLF lines, no dot at line starts); the final reply, or
    /// the first refusal.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        if r.code != 250 {
            return r;
        }
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>"));
            if r.code != 250 {
                self.cmd("RSET");
                return r;
            }
        }
        let r = self.cmd("DATA");
        if r.code != 354 {
            return r;
        }
        self.send(body.as_bytes());
        self.send(b".\r\n");
        self.reply()
    }

    /// Did the server close the connection (EOF or reset within 5 s)?
    pub fn is_closed(&mut self) -> bool {
        self.conn.tcp().set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 64];
        matches!(self.conn.read(&mut b), Ok(0) | Err(_))
    }
}
