//! systemd readiness (`Type=notify`): a datagram to `$NOTIFY_SOCKET` saying `READY=1` once
//! every listener is bound and every core runs, `RELOADING=1`/`READY=1` around a SIGHUP reload,
//! and `STOPPING=1` when shutdown starts. Without `$NOTIFY_SOCKET` (not under systemd) it does
//! nothing. The protocol is one `sendto` of `KEY=VALUE` lines; no libsystemd needed.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (e.g. `READY=1`) to systemd, if the process runs under it. Failures are
/// logged, never fatal: readiness reporting must not stop mail.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let result = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot notify systemd ({state})");
    }
}
