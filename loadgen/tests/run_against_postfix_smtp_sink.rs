//! `ringload run` against Postfix's `smtp-sink` (an independent SMTP implementation): the
//! message count smtp-sink reports (`-c`: `sess=N quit=N mesg=N` counters) equals the run's
//! successes equals the requested messages, with and without pipelining, one message per
//! connection and many. Skipped, with a message, where smtp-sink is not installed.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{count, now, run_ok};

const SMTP_SINK: &str = "/usr/sbin/smtp-sink";

struct PostfixSink {
    child: std::process::Child,
    port: u16,
    out: Arc<Mutex<Vec<u8>>>,
}

impl PostfixSink {
    fn start() -> Option<PostfixSink> {
        if !std::path::Path::new(SMTP_SINK).exists() {
            eprintln!("SKIPPED: {SMTP_SINK} is not installed (apt-get install postfix)");
            return None;
        }
        // A free port: bind, read it, release it; smtp-sink binds it next.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(SMTP_SINK)
            .args(["-u", "nobody", "-c", &format!("127.0.0.1:{port}"), "1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn smtp-sink");
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = Arc::clone(&out);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                o.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        let deadline = now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(now() < deadline, "smtp-sink did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(PostfixSink { child, port, out })
    }

    /// The last `mesg=N` counter smtp-sink printed.
    fn messages(&self) -> u64 {
        let out = self.out.lock().unwrap();
        let text = String::from_utf8_lossy(&out);
        text.rsplit("mesg=")
            .next()
            .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or(0)
    }

    fn wait_messages(&self, n: u64) -> u64 {
        let deadline = now() + Duration::from_secs(10);
        loop {
            let m = self.messages();
            if m >= n || now() > deadline {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PostfixSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn counts_match_against_postfix_smtp_sink() {
    let Some(sink) = PostfixSink::start() else { return };
    let target = format!("127.0.0.1:{}", sink.port);
    // The connection counter line is written at the end of each session; the first run's
    // messages are counted first, then each next run's on top.
    let mut expected = 0;
    for (messages, extra) in [
        (500u64, vec!["--concurrency", "8"]),
        (400, vec!["--concurrency", "4", "--per-connection", "100"]),
        (200, vec!["--concurrency", "4", "--per-connection", "50", "--no-pipelining", "--rcpts", "2"]),
    ] {
        let mut args = vec!["--target", &target, "--messages", "", "--duration", "60s"];
        let m = messages.to_string();
        args[3] = &m;
        args.extend(extra.iter().copied());
        let run = run_ok(&args);
        assert_eq!(count(&run, "ok"), messages, "run {extra:?}");
        assert_eq!(count(&run, "failed"), 0, "run {extra:?}");
        expected += messages;
        assert_eq!(sink.wait_messages(expected), expected, "smtp-sink count after run {extra:?}");
    }
}
