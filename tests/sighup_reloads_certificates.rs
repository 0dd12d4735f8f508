//! SIGHUP replaces a receive connector's TLS certificate (with the rest of the receive-side
//! policy, `sighup_reloads_connector_policy.rs`) without dropping anything: a session
//! that went TLS before the reload goes on (and sends a message) after it; sessions started
//! after it get the new certificate; a reload with a broken key file keeps the current one.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::ops::{self, TlsClient};
use common::pki::Pki;
use common::sink::{Sink, SinkOptions};
use common::{DEFAULT_CONFIG, Relay};

fn hup(relay: &Relay) {
    let pid = relay.child.as_ref().unwrap().id() as i32;
    // SAFETY: a signal to our own child process.
    unsafe { libc::kill(pid, libc::SIGHUP) };
}

fn wait_log(relay: &Relay, needle: &str, count: usize) {
    let deadline = common::now() + Duration::from_secs(10);
    while relay.log_text().matches(needle).count() < count {
        assert!(common::now() < deadline, "no {needle:?} in the log:\n{}", relay.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sighup_swaps_the_certificate_for_new_sessions_only() {
    let sink = Sink::start("127.0.0.1:0", SinkOptions::default());
    let live = tempfile::tempdir().unwrap();
    let first = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let a = Pki::new(first.path(), &["relay.test"]);
    let b = Pki::new(second.path(), &["relay.test"]);
    let (cert, key) = (live.path().join("cert.pem"), live.path().join("key.pem"));
    std::fs::copy(&a.cert_file, &cert).unwrap();
    std::fs::copy(&a.key_file, &key).unwrap();
    let cfg = DEFAULT_CONFIG.replace("{sink}", &sink.addr.port().to_string())
        + &ops::auth_connector(&cert, &key, "pw", false);
    let relay = Relay::start(&cfg);
    let addr = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let src = IpAddr::from([127, 0, 0, 2]);

    let mut old = TlsClient::connect(addr, src, &a.ca_file, "relay.test");
    assert_eq!(old.peer_leaf(), a.leaf_der.to_vec());
    assert_eq!(old.auth_plain("svc", "pw").code, 235);

    // New files, then SIGHUP.
    std::fs::copy(&b.cert_file, &cert).unwrap();
    std::fs::copy(&b.key_file, &key).unwrap();
    hup(&relay);
    wait_log(&relay, "SIGHUP: configuration reloaded", 1);

    let fresh = TlsClient::connect(addr, src, &b.ca_file, "relay.test");
    assert_eq!(fresh.peer_leaf(), b.leaf_der.to_vec(), "new sessions present the new certificate");
    // The session from before the reload is untouched.
    let r = old.send_mail("svc@example.test", &["x@dest.test"], "From: svc@example.test\r\n\r\nafter reload\r\n");
    assert_eq!(r.code, 250, "{r:?}");
    sink.wait_for(1, 20);

    // A broken key: the reload fails loudly and the current certificate stays.
    std::fs::write(&key, "not a key").unwrap();
    hup(&relay);
    wait_log(&relay, "SIGHUP: TLS certificates reloaded", 1);
    assert!(relay.log_text().contains("the configuration was not reloaded"), "{}", relay.log_text());
    assert!(relay.log_text().contains("the previous certificate stays in use"), "{}", relay.log_text());
    let still = TlsClient::connect(addr, src, &b.ca_file, "relay.test");
    assert_eq!(still.peer_leaf(), b.leaf_der.to_vec());
}
