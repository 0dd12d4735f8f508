//! A real `kill -9` while clients submit: after it, every message that got `250` is in the
//! spool with identical bytes, and nothing is there that no client sent. Then the relay
//! restarts on that spool and stops cleanly.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, Relay, spool_messages, strip_received};

#[test]
fn kill9_during_submission_loses_no_acknowledged_message() {
    let mut relay = Relay::start_default();
    let port = relay.port;
    // (test id) -> body sent; (queue id) -> test id for the acknowledged ones.
    let sent: Arc<Mutex<HashMap<String, Vec<u8>>>> = Default::default();
    let acked: Arc<Mutex<Vec<(String, String)>>> = Default::default();
    let mut threads = Vec::new();
    for t in 0..8 {
        let (sent, acked) = (Arc::clone(&sent), Arc::clone(&acked));
        threads.push(std::thread::spawn(move || {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let started = common::now();
            // Bounded in count and time; the kill comes long before either bound.
            'outer: for round in 0..2000 {
                if started.elapsed() > Duration::from_secs(20) {
                    break;
                }
                let Ok(stream) = std::net::TcpStream::connect(addr) else { break };
                drop(stream);
                let mut c = Client::connect(addr, None);
                if c.try_reply().is_err() {
                    break;
                }
                use std::io::Write;
                if c.stream.write_all(b"EHLO t\r\n").is_err() || c.try_reply().is_err() {
                    break;
                }
                for n in 0..10 {
                    let id = format!("t{t}-{round}-{n}");
                    let filler = "x".repeat((t * 997 + round * 131 + n * 17) % 6000);
                    let body = format!("X-Test-Id: {id}\r\nSubject: kill test\r\n\r\n{filler}\r\n.dot line\r\n");
                    sent.lock().unwrap().insert(id.clone(), body.clone().into_bytes());
                    let wire = "MAIL FROM:<k@example.test>\r\nRCPT TO:<r@dest.test>\r\nDATA\r\n";
                    if c.stream.write_all(wire.as_bytes()).is_err() {
                        break 'outer;
                    }
                    for _ in 0..3 {
                        match c.try_reply() {
                            Ok(r) if r.code == 250 || r.code == 354 => {}
                            _ => break 'outer,
                        }
                    }
                    let stuffed = common::dot_stuff(body.as_bytes());
                    if c.stream.write_all(&stuffed).is_err() || c.stream.write_all(b".\r\n").is_err() {
                        break 'outer;
                    }
                    match c.try_reply() {
                        Ok(r) if r.code == 250 => acked.lock().unwrap().push((r.queue_id().unwrap(), id)),
                        _ => break 'outer,
                    }
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(800));
    relay.kill9();
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let sent = sent.lock().unwrap().clone();
    assert!(acked.len() > 20, "the test must kill the relay while it works (acked {})", acked.len());
    assert!(acked.len() < 8 * 2000 * 10, "the kill came after the load finished: it proves nothing");
    let stored = spool_messages(&relay.spool());
    for (qid, id) in &acked {
        let (_, msg) = stored.get(qid).unwrap_or_else(|| panic!("acknowledged {qid} ({id}) lost by kill -9"));
        assert_eq!(strip_received(msg), &sent[id][..], "bytes of {qid} ({id})");
    }
    for (qid, (_, msg)) in &stored {
        let body = strip_received(msg);
        let id =
            std::str::from_utf8(body).unwrap().lines().next().unwrap().trim_start_matches("X-Test-Id: ").to_string();
        assert_eq!(sent.get(&id).map(Vec::as_slice), Some(body), "{qid} holds bytes no client sent");
    }
    eprintln!(
        "acked {}, stored {} (the difference: written, crash before the 250 went out)",
        acked.len(),
        stored.len()
    );
    // The relay starts again on this spool, recovers, and stops cleanly.
    relay.spawn();
    std::thread::sleep(Duration::from_millis(300));
    assert!(relay.stop().success());
    assert!(relay.log_text().contains("recovered queued messages"), "{}", relay.log_text());
}
