//! Test harness: the real `ringload` binary (built by cargo) on loopback. A `Sink` is a
//! `ringload sink` child on 127.0.0.1:0 whose stdout JSON lines are collected by a thread; `run`
//! runs `ringload run` (or `sweep`) to completion with a time limit and reads its JSON result.
//! Every child has a deadline: a hung test kills it instead of waiting forever.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

use serde_json::Value;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ringload")
}

/// Monotonic now (tests are not bound by the crate's clock rule, but keep one place).
#[allow(clippy::disallowed_methods)]
pub fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// A running `ringload sink`.
pub struct Sink {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    lines: Receiver<String>,
}

impl Sink {
    /// Starts a sink on 127.0.0.1:0 with two threads and `extra` options; it exits by itself
    /// after two minutes whatever happens.
    pub fn start(extra: &[&str]) -> Sink {
        let mut cmd = Command::new(bin());
        cmd.args(["sink", "--listen", "127.0.0.1:0", "--threads", "2", "--no-pin", "--duration", "120s"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn ringload sink");
        let stdout = child.stdout.take().expect("sink stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(20)).expect("sink did not print its listening line");
        let v: Value = serde_json::from_str(&first).expect("listening line is JSON");
        assert_eq!(v["event"], "listening", "{first}");
        let addr = v["addr"].as_str().expect("addr").parse().expect("addr parses");
        Sink { child, addr, lines: rx }
    }

    /// `127.0.0.1:PORT` for --target.
    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    /// Waits for the next stdout line with this `event`.
    fn next_event(&self, event: &str, timeout: Duration) -> Value {
        let deadline = now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("sink line {line}: {e}"));
                    if v["event"] == event {
                        return v;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!("no `{event}` line from the sink within {timeout:?}"),
                Err(RecvTimeoutError::Disconnected) => panic!("the sink closed its stdout before `{event}`"),
            }
        }
    }

    /// The counts now (SIGUSR1).
    pub fn counts(&self) -> Value {
        self.signal(libc::SIGUSR1);
        self.next_event("counts", Duration::from_secs(10))
    }

    /// Waits until the sink has accepted `n` messages (polling SIGUSR1), or panics after 20 s.
    pub fn wait_messages(&self, n: u64) -> Value {
        let deadline = now() + Duration::from_secs(20);
        loop {
            let c = self.counts();
            if c["messages"].as_u64() >= Some(n) || now() > deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM: the final counts line; the sink must exit with status 0.
    pub fn stop(mut self) -> Value {
        self.signal(libc::SIGTERM);
        let fin = self.next_event("final", Duration::from_secs(20));
        let status = wait_with_deadline(&mut self.child, Duration::from_secs(20));
        assert!(status.success(), "sink exit status {status:?}");
        fin
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for a child, killing it past `limit`.
pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if now() > deadline {
            let _ = child.kill();
            panic!("child did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Output of a finished ringload command.
pub struct Output {
    /// Exit status.
    pub status: ExitStatus,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
    /// The --json result, when one was asked for.
    pub json: Option<Value>,
}

/// Runs `ringload <args>` to completion (killed after `limit`), capturing its output.
pub fn ringload(args: &[&str], limit: Duration) -> Output {
    let dir = tempfile::tempdir().expect("tempdir");
    ringload_in(dir.path(), args, limit)
}

/// As `ringload`, with `--json` written into `dir`.
pub fn ringload_in(dir: &Path, args: &[&str], limit: Duration) -> Output {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let json_path: PathBuf = dir.join(format!("result-{n}.json"));
    let wants_json = matches!(args.first(), Some(&"run" | &"sweep"));
    let mut cmd = Command::new(bin());
    cmd.args(args);
    if wants_json {
        cmd.arg("--json").arg(&json_path);
    }
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = wait_with_deadline(&mut child, limit);
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    let json = if wants_json && json_path.exists() {
        let text = std::fs::read_to_string(&json_path).expect("read json");
        Some(serde_json::from_str(&text).expect("result is JSON"))
    } else {
        None
    };
    Output { status, stdout, stderr, json }
}

/// `ringload run` with `args`, expecting success; returns the JSON result.
pub fn run_ok(args: &[&str]) -> Value {
    let mut full = vec!["run", "--quiet", "--no-pin"];
    full.extend_from_slice(args);
    let out = ringload(&full, Duration::from_secs(90));
    assert!(
        out.status.success(),
        "ringload run failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    out.json.expect("json result")
}

/// A counter from a run result.
pub fn count(run: &Value, name: &str) -> u64 {
    run["counts"][name].as_u64().unwrap_or_else(|| panic!("no counts.{name} in {run}"))
}

/// A phase percentile (µs) from a run result.
pub fn phase_us(run: &Value, phase: &str, key: &str) -> u64 {
    run["phases"][phase][key].as_u64().unwrap_or_else(|| panic!("no phases.{phase}.{key}"))
}

/// The failure count for `stage` and `cause` (0 when absent).
pub fn errors(run: &Value, stage: &str, cause: &str) -> u64 {
    run["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["stage"] == stage && e["cause"] == cause)
                .map(|e| e["count"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Sends one message over plain SMTP with a blocking client (not ringload: a message without
/// ringload's headers), expecting every reply to be positive.
pub fn send_raw(addr: SocketAddr, from: &str, to: &str, message: &str) {
    use std::io::Write;
    let stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut expect = |what: &str, code: char| {
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap_or_else(|e| panic!("reply to {what}: {e}"));
            assert!(line.starts_with(code), "{what}: {line:?}");
            if line.as_bytes().get(3) != Some(&b'-') {
                return;
            }
        }
    };
    expect("greeting", '2');
    for (cmd, code) in [
        ("EHLO raw.test".to_string(), '2'),
        (format!("MAIL FROM:<{from}>"), '2'),
        (format!("RCPT TO:<{to}>"), '2'),
        ("DATA".to_string(), '3'),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).unwrap();
        expect(&cmd, code);
    }
    w.write_all(message.as_bytes()).unwrap();
    w.write_all(b".\r\n").unwrap();
    expect("end of data", '2');
    w.write_all(b"QUIT\r\n").unwrap();
    expect("QUIT", '2');
}
