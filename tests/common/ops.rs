//! Helpers for the operations tests: the admin endpoint over plain HTTP, the tracking log (as
//! `ringrelay track --json` prints it), the `ringrelay` CLI, and an SMTP client that can switch
//! to TLS and authenticate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Relay, Reply};

/// One HTTP request to the relay's admin endpoint: (status, body).
pub fn http(relay: &Relay, method: &str, target: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", relay.admin_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// Runs the `ringrelay` binary with `args`: (exit code, stdout, stderr).
pub fn ringrelay(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringrelay")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A configuration written from a template as `Relay::start` does (`{port}`, `{admin}`,
/// `{spool}`, `{dir}`, `{sink}`, `{nodns}`), for a `serve` started by hand.
pub struct ConfigFile {
    pub dir: tempfile::TempDir,
    pub path: std::path::PathBuf,
    pub port: u16,
}

impl ConfigFile {
    pub fn new(template: &str) -> ConfigFile {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let text = template
            .replace("{sink}", &super::free_port().to_string())
            .replace("{nodns}", &super::free_port().to_string())
            .replace("{port}", &port.to_string())
            .replace("{admin}", &super::free_port().to_string())
            .replace("{spool}", &dir.path().join("spool").display().to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let path = dir.path().join("ringrelay.toml");
        std::fs::write(&path, text).unwrap();
        ConfigFile { dir, path, port }
    }
}

/// A line the process wrote: on stderr (true) or stdout (false).
pub type Line = (bool, String);

/// `ringrelay serve --config FILE <args…>` with extra environment, its stdout and stderr lines
/// sent to the receiver as they come. The caller stops it (SIGTERM) or kills it.
pub fn serve(
    config: &Path,
    args: &[&str],
    env: &[(&str, &std::ffi::OsStr)],
) -> (std::process::Child, std::sync::mpsc::Receiver<Line>) {
    use std::io::BufRead;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ringrelay"));
    cmd.arg("serve").arg("--config").arg(config).args(args).env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    for (is_err, stream) in [(false, Box::new(out) as Box<dyn Read + Send>), (true, Box::new(err))] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send((is_err, line));
            }
        });
    }
    (child, rx)
}

/// Collects lines until one satisfies `pred` (returned last), or panics after `secs`.
pub fn lines_until(rx: &std::sync::mpsc::Receiver<Line>, secs: u64, pred: impl Fn(&Line) -> bool) -> Vec<Line> {
    let deadline = super::now() + Duration::from_secs(secs);
    let mut got = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(super::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = pred(&line);
                got.push(line);
                if done {
                    return got;
                }
            }
            Err(_) => panic!("no matching line within {secs}s; got:\n{got:#?}"),
        }
    }
}

/// Sends `sig` to the child and waits for it to exit (killing it past `secs`).
pub fn signal_and_wait(child: &mut std::process::Child, sig: i32, secs: u64) -> std::process::ExitStatus {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, sig) };
    let deadline = super::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if super::now() > deadline {
            let _ = child.kill();
            panic!("the relay did not exit within {secs}s of signal {sig}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `ringrelay track --config <relay's> --json <extra…>`, parsed.
pub fn track(relay: &Relay, extra: &[&str]) -> Vec<serde_json::Value> {
    let config = relay.config_path.display().to_string();
    let mut args = vec!["track", "--config", &config, "--json"];
    args.extend_from_slice(extra);
    let (code, out, err) = ringrelay(&args);
    assert_eq!(code, 0, "track failed: {err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Polls `track` until `pred` holds for its answer (the tracking log is flushed every 100 ms).
pub fn track_until(
    relay: &Relay,
    extra: &[&str],
    secs: u64,
    pred: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = super::now() + Duration::from_secs(secs);
    loop {
        let got = track(relay, extra);
        if pred(&got) {
            return got;
        }
        assert!(super::now() < deadline, "tracking never matched; {extra:?} gave:\n{got:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Events of one kind.
pub fn events<'a>(all: &'a [serde_json::Value], event: &str) -> Vec<&'a serde_json::Value> {
    all.iter().filter(|e| e["event"] == event).collect()
}

/// An argon2id PHC string with cheap parameters (tests only).
pub fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::PasswordHasher;
    let params = argon2::Params::new(8192, 1, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    a.hash_password(password.as_bytes()).unwrap().to_string()
}

/// An SMTP client over TLS (after STARTTLS).
pub struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: Vec<u8>,
}

impl TlsClient {
    /// Connects from `source`, greets, STARTTLS, greets again. `ca` is the relay's CA file.
    pub fn connect(addr: SocketAddr, source: std::net::IpAddr, ca: &Path, name: &str) -> TlsClient {
        let mut plain = super::Client::connect(addr, Some(source));
        plain.hello();
        let r = plain.cmd("STARTTLS");
        assert_eq!(r.code, 220, "{r:?}");
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let server_name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(cfg), server_name).unwrap();
        let mut c = TlsClient { stream: rustls::StreamOwned::new(conn, plain.stream), buf: Vec::new() };
        let e = c.cmd("EHLO client.test");
        assert_eq!(e.code, 250, "{e:?}");
        c
    }

    /// The certificate the server presented (DER of the leaf).
    pub fn peer_leaf(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// Sends a line and reads the reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.stream.flush().unwrap();
        self.reply()
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Reads one reply.
    pub fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let line = loop {
                if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                    let l = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                    self.buf.drain(..i + 2);
                    break l;
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).unwrap();
                assert!(n > 0, "connection closed");
                self.buf.extend_from_slice(&chunk[..n]);
            };
            let code: u16 = line[..3].parse().unwrap();
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Reply { code, lines };
            }
        }
    }

    /// AUTH PLAIN with an initial response.
    pub fn auth_plain(&mut self, user: &str, pass: &str) -> Reply {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        self.cmd(&format!("AUTH PLAIN {token}"))
    }

    /// MAIL, RCPTs, DATA, body (must not need dot-stuffing); the final reply.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        assert_eq!(r.code, 250, "{r:?}");
        for t in to {
            let r = self.cmd(&format!("RCPT TO:<{t}>"));
            assert_eq!(r.code, 250, "{r:?}");
        }
        assert_eq!(self.cmd("DATA").code, 354);
        self.send(body.as_bytes());
        self.send(b".\r\n");
        self.reply()
    }
}

/// A receive connector for authenticated clients from 127.0.0.2 on the same address as the
/// default test connector, with a user `svc` whose password is `pass`.
pub fn auth_connector(cert: &Path, key: &Path, pass: &str, protocol_log: bool) -> String {
    format!(
        r#"
[[users]]
name = "svc"
password_hash = "{}"
send_as = ["*@example.test"]
[[receive_connector]]
name = "auth"
bind = ["127.0.0.1:{{port}}"]
remote_ip_ranges = ["127.0.0.2/32"]
permission_groups = ["users"]
relay = "any"
auth = ["plain", "login"]
tls = {{ cert = "{}", key = "{}" }}
protocol_log = {protocol_log}
"#,
        cheap_hash(pass),
        cert.display(),
        key.display()
    )
}

/// A strictly parsed Prometheus text exposition (format 0.0.4): family types, and every
/// sample as `name{labels}` (labels in the order written) → value. Panics on anything the
/// format does not allow: samples before their `# TYPE`, a family typed twice, duplicate
/// series, bad names, bad escapes, unparsable values, counters not named `_total`, histogram
/// buckets that are not cumulative or disagree with `_count`.
pub struct Exposition {
    pub types: std::collections::BTreeMap<String, String>,
    pub samples: std::collections::BTreeMap<String, f64>,
}

impl Exposition {
    pub fn parse(text: &str) -> Exposition {
        use std::collections::BTreeMap;
        assert!(text.ends_with('\n'), "exposition must end with a line feed");
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut samples: BTreeMap<String, f64> = BTreeMap::new();
        let valid_name = |n: &str, colon: bool| {
            let mut chars = n.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
        };
        for (no, line) in text.lines().enumerate() {
            let at = format!("line {}: {line:?}", no + 1);
            assert!(!line.is_empty(), "{at}: empty line");
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("{at}"));
                assert!(valid_name(name, true), "{at}: bad name");
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{at}");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{at}: counters are named *_total");
                }
                assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "{at}: typed twice");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').unwrap_or_else(|| panic!("{at}"));
                assert!(valid_name(name, true), "{at}");
                continue;
            }
            assert!(!line.starts_with('#'), "{at}: only HELP and TYPE comments are written");
            // name{labels} value
            let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("{at}"));
            let name = &line[..name_end];
            assert!(valid_name(name, true), "{at}: bad metric name");
            let mut rest = &line[name_end..];
            let mut labels = String::new();
            if let Some(r) = rest.strip_prefix('{') {
                let mut chars = r.char_indices().peekable();
                let end: usize;
                loop {
                    // label name
                    let start = chars.peek().map(|(i, _)| *i).unwrap_or_else(|| panic!("{at}"));
                    if r[start..].starts_with('}') {
                        end = start + 1;
                        break;
                    }
                    let eq = r[start..].find('=').unwrap_or_else(|| panic!("{at}")) + start;
                    assert!(valid_name(&r[start..eq], false), "{at}: bad label name");
                    while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                        chars.next();
                    }
                    assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{at}: label value must be quoted");
                    loop {
                        match chars.next() {
                            Some((_, '\\')) => {
                                let e = chars.next().map(|(_, c)| c);
                                assert!(matches!(e, Some('\\' | '"' | 'n')), "{at}: bad escape");
                            }
                            Some((_, '"')) => break,
                            Some((_, '\n')) | None => panic!("{at}: unterminated label value"),
                            Some(_) => {}
                        }
                    }
                    match chars.next() {
                        Some((_, ',')) => continue,
                        Some((i, '}')) => {
                            end = i + 1;
                            break;
                        }
                        _ => panic!("{at}: expected , or }}"),
                    }
                }
                labels = r[..end - 1].to_string();
                rest = &r[end..];
            }
            let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("{at}: one space before the value"));
            assert!(!value.contains(' '), "{at}: no timestamps are written");
            let v: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                v => v.parse().unwrap_or_else(|_| panic!("{at}: bad value")),
            };
            let family = [
                name,
                name.trim_end_matches("_bucket"),
                name.trim_end_matches("_sum"),
                name.trim_end_matches("_count"),
            ]
            .into_iter()
            .find(|f| types.contains_key(*f))
            .unwrap_or_else(|| panic!("{at}: sample before its # TYPE"));
            if family != name {
                assert_eq!(types[family], "histogram", "{at}: suffixed sample of a non-histogram");
            }
            let series = if labels.is_empty() { name.to_string() } else { format!("{name}{{{labels}}}") };
            assert!(samples.insert(series, v).is_none(), "{at}: duplicate series");
        }
        for (family, kind) in &types {
            if kind != "histogram" {
                continue;
            }
            let mut last = -1.0;
            let prefix = format!("{family}_bucket{{");
            let mut inf = None;
            for (series, v) in samples.range(prefix.clone()..) {
                if !series.starts_with(&prefix) {
                    break;
                }
                if series.contains("le=\"+Inf\"") {
                    inf = Some(*v);
                }
            }
            // Buckets in ascending le order.
            let mut buckets: Vec<(f64, f64)> = samples
                .iter()
                .filter(|(s, _)| s.starts_with(&prefix))
                .map(|(s, v)| {
                    let le = s.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
                    (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, *v)
                })
                .collect();
            buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
            for (_, v) in &buckets {
                assert!(*v >= last, "{family}: buckets are not cumulative");
                last = *v;
            }
            let count = samples.get(&format!("{family}_count")).copied();
            assert_eq!(inf, count, "{family}: +Inf bucket and _count differ");
            assert!(samples.contains_key(&format!("{family}_sum")), "{family}: no _sum");
        }
        Exposition { types, samples }
    }

    /// A sample's value (0 when absent: a counter not yet created reads as 0).
    pub fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// Every name a sample may carry: families, and histogram `_bucket`/`_sum`/`_count`.
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        for (f, kind) in &self.types {
            out.insert(f.clone());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{f}{s}"));
                }
            }
        }
        out
    }
}

/// Scrapes and parses `/metrics`.
pub fn scrape(relay: &Relay) -> Exposition {
    let (status, body) = http(relay, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    Exposition::parse(&body)
}
