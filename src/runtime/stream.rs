//! A TCP connection over tokio-uring's owned buffers, plain or under TLS (either side), with no
//! AsyncRead/AsyncWrite in between. Owns the rustls plumbing: ciphertext moves through two
//! owned buffers handed to the kernel and back; plaintext is copied once, into the caller's
//! buffer. Knows nothing of SMTP.
//!
//! Rules inherited from tokio-uring (see ../shared/crates.md, pitfalls P2-P4):
//! - a read writes at index 0 of a `Vec`, so reads go into `vec.slice(len..)`;
//! - a dropped (timed-out) operation is not cancelled: after a timeout, call `shutdown` and
//!   drop the stream, never read again;
//! - rustls takes at most its own buffer's worth of ciphertext per call, and nothing after a
//!   close_notify: the feed loop stops on `Ok(0)`.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

/// One TLS record and its overhead: the ciphertext buffer size.
const CIPHER_BUF_BYTES: usize = 18 * 1024;

/// A connection, plain or TLS.
pub struct Stream {
    tcp: TcpStream,
    tls: Option<Box<Tls>>,
}

struct Tls {
    conn: rustls::Connection,
    /// Ciphertext read from the socket; `Option` because the kernel owns it during a read.
    cipher_in: Option<Vec<u8>>,
    /// Ciphertext to write.
    cipher_out: Option<Vec<u8>>,
    /// The peer closed the TCP connection.
    eof: bool,
    /// Decrypted bytes rustls holds for us (from its last `process_new_packets`).
    plaintext_ready: usize,
}

impl Stream {
    /// A plain connection.
    pub fn new(tcp: TcpStream) -> Stream {
        Stream { tcp, tls: None }
    }

    /// The socket.
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// TLS is on.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The negotiated protocol and cipher suite, e.g. `TLSv1_3 TLS13_AES_256_GCM_SHA384`.
    pub fn tls_description(&self) -> Option<String> {
        let t = self.tls.as_ref()?;
        let version = t.conn.protocol_version()?;
        let suite = t.conn.negotiated_cipher_suite()?;
        Some(format!("{version:?} {:?}", suite.suite()))
    }

    /// Reads more bytes into `buf` after its current length (up to its capacity, which must
    /// exceed the length). Returns the number of bytes added; 0 means end of stream.
    pub async fn read(&mut self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        debug_assert!(buf.capacity() > buf.len(), "read needs spare capacity");
        match self.tls.as_mut() {
            None => {
                let len = buf.len();
                let (res, slice) = self.tcp.read(buf.slice(len..)).await;
                (res, slice.into_inner())
            }
            Some(tls) => {
                let mut buf = buf;
                let res = tls.read_plain(&self.tcp, &mut buf).await;
                (res, buf)
            }
        }
    }

    /// Writes all of `buf` and hands it back (contents unchanged, for the caller to clear).
    pub async fn write_all(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self.tls.as_mut() {
            None => self.tcp.write_all(buf).await,
            Some(tls) => {
                let res = match tls.conn.writer().write_all(&buf) {
                    Ok(()) => tls.flush(&self.tcp).await,
                    Err(e) => Err(e),
                };
                (res, buf)
            }
        }
    }

    /// Runs the server side of a TLS handshake (STARTTLS after `220`, or implicit TLS).
    pub async fn start_tls_server(&mut self, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
        self.start_tls_server_after(config, &[]).await
    }

    /// Runs the server side of a TLS handshake whose first bytes, `early`, were already read
    /// from the socket (they came in the same read as a PROXY header).
    pub async fn start_tls_server_after(&mut self, config: Arc<rustls::ServerConfig>, early: &[u8]) -> io::Result<()> {
        let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        self.handshake(rustls::Connection::Server(conn), early).await
    }

    /// Runs the client side of a TLS handshake, presenting and checking `name`.
    pub async fn start_tls_client(
        &mut self,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> io::Result<()> {
        let conn = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
        self.handshake(rustls::Connection::Client(conn), &[]).await
    }

    async fn handshake(&mut self, conn: rustls::Connection, early: &[u8]) -> io::Result<()> {
        assert!(self.tls.is_none(), "TLS is already on");
        let mut tls = Box::new(Tls {
            conn,
            cipher_in: Some(Vec::with_capacity(CIPHER_BUF_BYTES)),
            cipher_out: Some(Vec::with_capacity(CIPHER_BUF_BYTES)),
            eof: false,
            plaintext_ready: 0,
        });
        if let Err(e) = tls.feed(early) {
            let _ = tls.flush(&self.tcp).await; // the alert rustls queued
            return Err(e);
        }
        while tls.conn.is_handshaking() {
            if tls.conn.wants_write() {
                tls.flush(&self.tcp).await?;
                continue;
            }
            if tls.conn.wants_read() && !tls.read_tls(&self.tcp).await? {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed during the TLS handshake"));
            }
        }
        tls.flush(&self.tcp).await?; // TLS 1.3 session tickets
        self.tls = Some(tls);
        Ok(())
    }

    /// Shuts the socket down both ways, so that the peer sees EOF at once even while an
    /// abandoned (timed-out) operation still holds the descriptor.
    pub fn shutdown(&self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }

    /// Closes cleanly: TLS close_notify when under TLS. The descriptor is closed when the
    /// stream is dropped; no `shutdown` is needed when no operation was abandoned.
    pub async fn close(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.conn.send_close_notify();
            let _ = tls.flush(&self.tcp).await;
        }
    }
}

impl Tls {
    /// Writes everything rustls has queued.
    async fn flush(&mut self, tcp: &TcpStream) -> io::Result<()> {
        while self.conn.wants_write() {
            let Some(mut out) = self.cipher_out.take() else {
                return Err(io::Error::other("TLS write already in progress"));
            };
            out.clear();
            while self.conn.wants_write() && out.len() < CIPHER_BUF_BYTES {
                if let Err(e) = self.conn.write_tls(&mut out) {
                    self.cipher_out = Some(out);
                    return Err(e);
                }
            }
            let (res, out) = tcp.write_all(out).await;
            self.cipher_out = Some(out);
            res?;
        }
        Ok(())
    }

    /// One read of ciphertext, fed to rustls. `false` on EOF.
    async fn read_tls(&mut self, tcp: &TcpStream) -> io::Result<bool> {
        let Some(mut input) = self.cipher_in.take() else {
            return Err(io::Error::other("TLS read already in progress"));
        };
        input.clear();
        let (res, input) = tcp.read(input).await;
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                self.cipher_in = Some(input);
                return Err(e);
            }
        };
        if n == 0 {
            self.cipher_in = Some(input);
            self.eof = true;
            return Ok(false);
        }
        let result = self.feed(&input[..n]).map(|()| true);
        self.cipher_in = Some(input);
        if result.is_err() {
            let _ = self.flush(tcp).await; // the alert rustls queued
        }
        result
    }

    /// Gives ciphertext to rustls and processes it. On error the caller sends the alert.
    fn feed(&mut self, mut rest: &[u8]) -> io::Result<()> {
        while !rest.is_empty() {
            match self.conn.read_tls(&mut rest) {
                Ok(0) => break, // close_notify seen: rustls takes nothing more
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            match self.conn.process_new_packets() {
                Ok(state) => self.plaintext_ready = state.plaintext_bytes_to_read(),
                Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
            }
        }
        Ok(())
    }

    /// Reads plaintext into the spare capacity of `buf`. 0 = end of stream.
    async fn read_plain(&mut self, tcp: &TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            let len = buf.len();
            // Initialise only as much of the spare capacity as there is plaintext to copy (at
            // least one byte, so that a close_notify still reads as 0).
            let want = self.plaintext_ready.clamp(1, buf.capacity() - len);
            buf.resize(len + want, 0);
            let got = self.conn.reader().read(&mut buf[len..]);
            match got {
                Ok(n) => {
                    buf.truncate(len + n);
                    self.plaintext_ready = self.plaintext_ready.saturating_sub(n);
                    return Ok(n); // 0: close_notify received
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => buf.truncate(len),
                Err(e) => {
                    buf.truncate(len);
                    return Err(e);
                }
            }
            if self.eof {
                return Ok(0);
            }
            self.read_tls(tcp).await?;
            self.flush(tcp).await?; // key updates and the like
        }
    }
}
