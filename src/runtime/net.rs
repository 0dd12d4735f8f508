//! Sockets: per-core SO_REUSEPORT listeners (chosen flags, never tokio-uring's implicit ones)
//! and outbound connects with a source address and a timeout (tokio-uring's own connect has
//! neither). File descriptors handed to io_uring stay blocking (see crates.md, O_NONBLOCK).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// A listener on `addr` that other cores can share with SO_REUSEPORT. The first listener of
/// an address fails with `AddrInUse` if another process already has it (we set SO_REUSEPORT
/// only on our own sockets, and the kernel only shares a port between sockets of one user
/// that all set it), so a second relay instance cannot bind silently beside us.
pub fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.set_tcp_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// Is something else (another process) already listening on `addr`? Checked once before the
/// per-core listeners are made, with a socket that does not set SO_REUSEPORT.
pub fn check_port_free(addr: SocketAddr) -> io::Result<()> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(false)?;
    }
    s.bind(&addr.into())
}

/// Connects to `target` from `source` (if given) within `timeout`, and returns a blocking
/// std socket ready for `tokio_uring::net::TcpStream::from_std`.
pub async fn connect(target: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> io::Result<std::net::TcpStream> {
    let sock = if target.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.set_nodelay(true)?;
    if let Some(ip) = source {
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = match tokio::time::timeout(timeout, sock.connect(target)).await {
        Ok(r) => r?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, format!("connect to {target} timed out"))),
    };
    let std = stream.into_std()?;
    std.set_nonblocking(false)?;
    Ok(std)
}

/// The local and peer addresses of a tokio-uring socket (it has no accessors of its own).
pub fn addresses(fd: &impl AsRawFd) -> io::Result<(SocketAddr, SocketAddr)> {
    // SAFETY: the descriptor stays open for the duration of this call: `fd` borrows its owner.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) };
    let r = SockRef::from(&borrowed);
    let local = r.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?;
    let peer = r.peer_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?;
    Ok((local, peer))
}
