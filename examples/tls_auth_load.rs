//! The TLS and AUTH benchmark of tuning.md ("## TLS and AUTH"): a minimal concurrent SMTP
//! client (blocking std sockets + rustls, one thread per connection) that starts the release
//! relay itself on loopback, runs every scenario against it, and prints medians of several
//! runs with ratios against the plaintext baseline measured in the same run.
//!
//! It exists because the proper load generator (`ringload run --starttls --auth`) is written on
//! another branch; this one does only what the figures need.
//!
//! ```text
//! cargo build --release
//! cargo run --release --example tls_auth_load -- [--seconds 5] [--runs 3] [--connections 8] \
//!     [--fsync batch|never]
//! ```
//!
//! Scenarios (one SMTP core, `spool.fsync = "batch"`, 1 KiB messages, PIPELINING for
//! MAIL/RCPT/DATA, TLS client without session resumption so every TLS connection pays a full
//! handshake):
//! - `plain 1/conn`: connect, EHLO, one message, QUIT (the baseline for per-connection cost);
//! - `starttls+auth 1/conn`: connect, EHLO, STARTTLS, EHLO, AUTH PLAIN, one message, QUIT;
//! - `auth, argon2 every time`: as above but the password is wrong, so every AUTH runs a full
//!   argon2 verification (what every connection would cost without the credential cache);
//! - `plain 100/conn` and `starttls+auth 100/conn`: 100 messages per connection.
//!
//! Then the stall probe: one plaintext connection times NOOP round trips (one a millisecond),
//! alone, and while `--connections` clients run AUTH with a wrong password against a
//! default-cost argon2id hash (m=19456, t=2, p=1) on the same single SMTP core; once with the
//! default `limits.auth_verify_concurrency` and once with every AUTH verifying at once.
#![allow(clippy::disallowed_methods)] // a benchmark measures wall time itself

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

const USER: &str = "svc-mailer";
const PASSWORD: &str = "correct horse battery staple";
const BODY_BYTES: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Plain,
    StartTls,
}

#[derive(Clone, Copy, Debug)]
struct Scenario {
    name: &'static str,
    mode: Mode,
    auth: Option<&'static str>,
    per_connection: usize,
    /// Count AUTH replies (535 expected) instead of messages.
    auth_only: bool,
}

const SCENARIOS: &[Scenario] = &[
    Scenario { name: "plain 1/conn", mode: Mode::Plain, auth: None, per_connection: 1, auth_only: false },
    Scenario {
        name: "starttls+auth 1/conn",
        mode: Mode::StartTls,
        auth: Some(PASSWORD),
        per_connection: 1,
        auth_only: false,
    },
    Scenario {
        name: "starttls+auth, argon2 every time",
        mode: Mode::StartTls,
        auth: Some("wrong password"),
        per_connection: 0,
        auth_only: true,
    },
    Scenario { name: "plain 100/conn", mode: Mode::Plain, auth: None, per_connection: 100, auth_only: false },
    Scenario {
        name: "starttls+auth 100/conn",
        mode: Mode::StartTls,
        auth: Some(PASSWORD),
        per_connection: 100,
        auth_only: false,
    },
];

struct Args {
    seconds: u64,
    runs: usize,
    connections: usize,
    relay: PathBuf,
    fsync: String,
    /// Run only the scenarios whose name contains this, and no probe.
    only: Option<String>,
    /// Where the relay's spool goes (a fresh directory under it per relay).
    spool_parent: PathBuf,
}

fn parse_args() -> Args {
    let mut a = Args {
        seconds: 5,
        runs: 3,
        connections: 8,
        relay: PathBuf::from("target/release/ringrelay"),
        fsync: "batch".into(),
        only: None,
        spool_parent: PathBuf::from(if Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" }),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--seconds" => a.seconds = v().parse().unwrap(),
            "--runs" => a.runs = v().parse().unwrap(),
            "--connections" => a.connections = v().parse().unwrap(),
            "--relay" => a.relay = PathBuf::from(v()),
            "--fsync" => a.fsync = v(),
            "--only" => a.only = Some(v()),
            "--spool-parent" => a.spool_parent = PathBuf::from(v()),
            "--bench" => {} // cargo bench passes this
            other => panic!("unknown argument {other}; see the file's doc comment"),
        }
    }
    assert!(a.seconds <= 120 && a.runs <= 20 && a.connections <= 256, "bounded runs only");
    a
}

fn main() {
    let args = parse_args();
    assert!(args.relay.exists(), "{} not found: run `cargo build --release` first", args.relay.display());
    let pki = Pki::new();
    let cheap = hash(PASSWORD, argon2::Params::new(8192, 1, 1, None).unwrap());
    let real = hash(PASSWORD, argon2::Params::default());
    println!("machine: {}", machine());
    println!("argon2id verify, default cost (m=19456,t=2,p=1): {:.1} ms", verify_ms(&real));
    println!("argon2id verify, test cost (m=8192,t=1,p=1): {:.1} ms", verify_ms(&cheap));
    println!(
        "{} s per run, {} runs (median shown), {} concurrent connections, 1 SMTP core, spool.fsync = {}, \
         spool under {}, a fresh relay per run\n",
        args.seconds,
        args.runs,
        args.connections,
        args.fsync,
        args.spool_parent.display()
    );
    let start_relay = |slots: usize| Relay::start(&args.relay, &pki, &real, &args.fsync, slots, &args.spool_parent);

    // Throughput, with the real-cost hash: the cache is what keeps it cheap.
    let tls = pki.client_config();
    let wanted = |s: &Scenario| args.only.as_deref().is_none_or(|o| s.name.contains(o));
    // Per scenario: rate per run, SMTP core CPU µs per unit per run, process CPU µs per unit.
    let mut results: Vec<ScenarioRuns> =
        SCENARIOS.iter().filter(|s| wanted(s)).map(|s| (*s, Vec::new(), Vec::new(), Vec::new())).collect();
    for _ in 0..args.runs {
        for (s, rates, core_cpu, all_cpu) in &mut results {
            let relay = start_relay(0);
            let port = if s.mode == Mode::Plain { relay.plain_port } else { relay.auth_port };
            let before = relay.cpu_us();
            let out = run(s, SocketAddr::from(([127, 0, 0, 1], port)), &tls, args.connections, args.seconds);
            let after = relay.cpu_us();
            if !out.errors.is_empty() {
                println!("  {}: unexpected replies {:?}", s.name, out.errors);
            }
            let units = out.count.max(1) as f64;
            rates.push(out.count as f64 / out.elapsed.as_secs_f64());
            core_cpu.push((after.0 - before.0) as f64 / units);
            all_cpu.push((after.1 - before.1) as f64 / units);
        }
    }
    println!(
        "| scenario | per second (median) | runs | ratio | SMTP core CPU per unit | ratio | process CPU per unit |"
    );
    println!("|---|---|---|---|---|---|---|");
    let base_of = |s: &Scenario| {
        let name = if s.per_connection >= 100 { "plain 100/conn" } else { "plain 1/conn" };
        results.iter().find(|r| r.0.name == name).map_or((f64::NAN, f64::NAN), |r| (median(&r.1), median(&r.2)))
    };
    for (s, rates, core_cpu, all_cpu) in &results {
        let (m, c, a) = (median(rates), median(core_cpu), median(all_cpu));
        let unit = if s.auth_only { "AUTH" } else { "msg" };
        let (base_rate, base_cpu) = base_of(s);
        let runs: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "| {} | {m:.0} {unit}/s | {} | {:.2} | {c:.0} µs | {:.1} | {a:.0} µs |",
            s.name,
            runs.join(", "),
            m / base_rate,
            c / base_cpu
        );
    }
    if args.only.is_some() {
        return;
    }

    // Stall probe.
    println!("\nNOOP round trip on a plaintext connection, same single SMTP core (µs):");
    println!("| load | auth_verify_concurrency | p50 | p90 | p99 | max | AUTH/s of the load |");
    println!("|---|---|---|---|---|---|---|");
    let n = args.connections;
    let default_slots = ringrelay::runtime::shared::auth_verify_concurrency(0);
    let mut rows: Vec<ProbeRow> = vec![
        ("none".into(), format!("{default_slots} (default)"), Vec::new(), Vec::new()),
        (
            format!("{n} clients STARTTLS + AUTH, right password (cache hits)"),
            format!("{default_slots} (default)"),
            Vec::new(),
            Vec::new(),
        ),
        (
            format!("{n} clients STARTTLS + AUTH, wrong password (argon2)"),
            format!("{default_slots} (default)"),
            Vec::new(),
            Vec::new(),
        ),
        (
            format!("{n} clients STARTTLS + AUTH, wrong password (argon2)"),
            format!("{n} (all at once)"),
            Vec::new(),
            Vec::new(),
        ),
    ];
    for _ in 0..args.runs {
        // (row, verification slots, load scenario)
        for (i, slots, load) in
            [(0usize, 0usize, None), (1, 0, Some(SCENARIOS[1])), (2, 0, Some(SCENARIOS[2])), (3, n, Some(SCENARIOS[2]))]
        {
            let relay = start_relay(slots);
            let plain = SocketAddr::from(([127, 0, 0, 1], relay.plain_port));
            let auth = SocketAddr::from(([127, 0, 0, 1], relay.auth_port));
            match probe(plain, auth, &tls, load.map(|s| (s, n)), args.seconds) {
                Ok((lat, rate)) => {
                    rows[i].2.push(lat);
                    rows[i].3.push(rate);
                }
                // Reported and left out of the medians (e.g. something else on a shared machine
                // stopped the relay: "421 4.3.2 ... shutting down").
                Err(e) => println!("  probe run of row {i} discarded: {e}"),
            }
        }
    }
    for (label, slots, lats, rates) in rows {
        // Median over runs of each percentile.
        let p = |q: f64| {
            let v: Vec<f64> = lats.iter().map(|l| pct(l, q) as f64).collect();
            median(&v) as u64
        };
        let max = median(&lats.iter().map(|l| l.last().copied().unwrap_or(0) as f64).collect::<Vec<_>>()) as u64;
        println!("| {label} | {slots} | {} | {} | {} | {max} | {:.0} |", p(0.50), p(0.90), p(0.99), median(&rates));
    }
}

/// A scenario and, per run: its rate, SMTP-core CPU µs per unit, process CPU µs per unit.
type ScenarioRuns = (Scenario, Vec<f64>, Vec<f64>, Vec<f64>);

/// A probe table row: label, verification slots, sorted round trips per run, AUTH/s per run.
type ProbeRow = (String, String, Vec<Vec<u64>>, Vec<f64>);

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("nproc {nproc}, {cpu}, Linux {}", kernel.trim())
}

fn hash(password: &str, params: argon2::Params) -> String {
    use argon2::password_hash::PasswordHasher;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    a.hash_password(password.as_bytes()).unwrap().to_string()
}

fn verify_ms(phc: &str) -> f64 {
    let n = 10;
    let t = Instant::now();
    for _ in 0..n {
        assert!(ringrelay::policy::users::verify(PASSWORD.as_bytes(), phc));
    }
    t.elapsed().as_secs_f64() * 1000.0 / f64::from(n)
}

// ---- the relay under test ----------------------------------------------------------------------

struct Relay {
    child: Child,
    _dir: tempfile::TempDir,
    plain_port: u16,
    auth_port: u16,
}

impl Relay {
    fn start(
        bin: &Path,
        pki: &Pki,
        password_hash: &str,
        fsync: &str,
        verify_slots: usize,
        spool_parent: &Path,
    ) -> Relay {
        let dir = tempfile::tempdir_in(spool_parent).unwrap();
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let (plain_port, auth_port, admin, sink, dns) = (free(), free(), free(), free(), free());
        let config = format!(
            r#"
hostname = "relay.bench"
[spool]
dir = "{spool}"
fsync = "{fsync}"
[limits]
auth_verify_concurrency = {verify_slots}
[admin]
listen = "127.0.0.1:{admin}"
[cores]
smtp = 1
[log]
level = "warn"
[dns]
nameservers = ["127.0.0.1:{dns}"]
[[users]]
name = "{USER}"
password_hash = "{password_hash}"
send_as = ["*@corp.test"]
[[receive_connector]]
name = "plain"
bind = ["127.0.0.1:{plain_port}"]
remote_ip_ranges = ["127.0.0.0/8"]
relay = "any"
[[receive_connector]]
name = "submission"
bind = ["127.0.0.1:{auth_port}"]
remote_ip_ranges = ["127.0.0.0/8"]
permission_groups = ["users"]
relay = "any"
max_auth_failures = 1000000000
{tls}
[[send_connector]]
name = "nowhere"
domains = ["*"]
smart_hosts = ["127.0.0.1:{sink}"]
retry = {{ first = "1h", max = "1h", expire = "2d" }}
"#,
            spool = dir.path().join("spool").display(),
            tls = pki.tls_toml(),
        );
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, config).unwrap();
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("ringrelay ready") {
                    let _ = tx.send(());
                }
            }
        });
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ERROR") || line.contains("WARN") {
                    eprintln!("relay: {line}");
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30)).expect("relay did not start");
        Relay { child, _dir: dir, plain_port, auth_port }
    }

    /// CPU time (user + system) used so far, in µs: (the SMTP core threads, the whole process).
    /// The process figure also holds the delivery core (which here keeps failing to reach
    /// its smart host) and the blocking pool (argon2).
    fn cpu_us(&self) -> (u64, u64) {
        let pid = self.child.id();
        let smtp: u64 = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
                    .filter(|stat| stat.contains("(smtp-"))
                    .map(|stat| stat_cpu_us(&stat))
                    .sum()
            })
            .unwrap_or(0);
        let all = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(0, |s| stat_cpu_us(&s));
        (smtp, all)
    }
}

/// utime + stime of a `/proc/.../stat` line, in µs.
fn stat_cpu_us(stat: &str) -> u64 {
    // Fields after the command name (in parentheses): state is field 3, utime and stime are
    // fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    f.iter().sum::<u64>() * 1_000_000 / ticks
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- certificates ------------------------------------------------------------------------------

struct Pki {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(DnType::CommonName, "bench CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut leaf_params = CertificateParams::new(vec!["relay.bench".to_string()]).unwrap();
        leaf_params.distinguished_name.push(DnType::CommonName, "relay.bench");
        let key = KeyPair::generate().unwrap();
        let leaf = leaf_params.signed_by(&key, &ca).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cert.pem"), format!("{}{}", leaf.pem(), ca.pem())).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Pki { dir, ca_pem: ca.pem() }
    }

    fn tls_toml(&self) -> String {
        let d = self.dir.path();
        format!("tls = {{ cert = \"{}\", key = \"{}\" }}", d.join("cert.pem").display(), d.join("key.pem").display())
    }

    fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        // Every connection pays a full handshake: the worst case, and what a client that
        // makes a new SMTP client per message does.
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

// ---- the client ----------------------------------------------------------------------------------

enum Conn {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// Only while the plain stream moves into TLS.
    Moving,
}

impl Read for Conn {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(b),
            Conn::Tls(s) => s.read(b),
            Conn::Moving => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(b),
            Conn::Tls(s) => s.write(b),
            Conn::Moving => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
            Conn::Moving => Ok(()),
        }
    }
}

struct Smtp {
    conn: Conn,
    buf: Vec<u8>,
    /// The last reply line read, for error reports.
    last: String,
}

impl Smtp {
    fn connect(addr: SocketAddr) -> std::io::Result<Smtp> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Smtp { conn: Conn::Plain(s), buf: Vec::with_capacity(4096), last: String::new() })
    }

    /// One reply's code (multi-line replies read to their end).
    fn code(&mut self) -> std::io::Result<u16> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                if line.len() < 4 {
                    return Err(std::io::Error::other("short reply"));
                }
                if line[3] == b'-' {
                    continue;
                }
                self.last = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
                let code = std::str::from_utf8(&line[..3]).ok().and_then(|c| c.parse().ok());
                return code.ok_or_else(|| std::io::Error::other("bad reply"));
            }
            let mut chunk = [0u8; 4096];
            let n = self.conn.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.conn.write_all(b)?;
        self.conn.flush()
    }

    fn expect(&mut self, want: u16, what: &str) -> Result<(), String> {
        match self.code() {
            Ok(c) if c == want => Ok(()),
            Ok(_) => Err(format!("{what}: {}", self.last)),
            Err(e) => Err(format!("{what}: {}", e.kind())),
        }
    }

    fn starttls(&mut self, tls: &Arc<ClientConfig>) -> Result<(), String> {
        self.send(b"STARTTLS\r\n").map_err(|e| e.to_string())?;
        self.expect(220, "STARTTLS")?;
        let Conn::Plain(tcp) = std::mem::replace(&mut self.conn, Conn::Moving) else {
            return Err("TLS twice".into());
        };
        let conn = ClientConnection::new(Arc::clone(tls), ServerName::try_from("relay.bench").unwrap())
            .map_err(|e| e.to_string())?;
        let mut s = StreamOwned::new(conn, tcp);
        while s.conn.is_handshaking() {
            s.conn.complete_io(&mut s.sock).map_err(|e| format!("handshake: {e}"))?;
        }
        self.conn = Conn::Tls(Box::new(s));
        Ok(())
    }
}

/// One connection's work; returns how many units (messages, or AUTH replies) it completed.
fn session(s: &Scenario, addr: SocketAddr, tls: &Arc<ClientConfig>, body: &[u8]) -> Result<u64, String> {
    let mut c = Smtp::connect(addr).map_err(|e| format!("connect: {}", e.kind()))?;
    c.expect(220, "greeting")?;
    c.send(b"EHLO bench.test\r\n").map_err(|e| e.to_string())?;
    c.expect(250, "EHLO")?;
    if s.mode == Mode::StartTls {
        c.starttls(tls)?;
        c.send(b"EHLO bench.test\r\n").map_err(|e| e.to_string())?;
        c.expect(250, "EHLO after TLS")?;
    }
    let mut done = 0;
    if let Some(password) = s.auth {
        let token = ringrelay::smtp::auth::encode(format!("\0{USER}\0{password}").as_bytes());
        c.send(format!("AUTH PLAIN {token}\r\n").as_bytes()).map_err(|e| e.to_string())?;
        c.expect(if s.auth_only { 535 } else { 235 }, "AUTH")?;
        if s.auth_only {
            done += 1;
        }
    }
    for _ in 0..s.per_connection {
        c.send(b"MAIL FROM:<app@corp.test>\r\nRCPT TO:<ops@external.test>\r\nDATA\r\n").map_err(|e| e.to_string())?;
        c.expect(250, "MAIL")?;
        c.expect(250, "RCPT")?;
        c.expect(354, "DATA")?;
        c.send(body).map_err(|e| e.to_string())?;
        c.expect(250, "end of data")?;
        done += 1;
    }
    let _ = c.send(b"QUIT\r\n");
    let _ = c.code();
    Ok(done)
}

struct Outcome {
    count: u64,
    elapsed: Duration,
    errors: BTreeMap<String, u64>,
}

fn message_body() -> Vec<u8> {
    let mut body = b"From: app@corp.test\r\nTo: ops@external.test\r\nSubject: bench\r\n\r\n".to_vec();
    while body.len() < BODY_BYTES {
        body.extend_from_slice(b"0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n");
    }
    body.extend_from_slice(b".\r\n");
    body
}

/// Runs `connections` threads doing `s` for `seconds`.
fn run(s: &Scenario, addr: SocketAddr, tls: &Arc<ClientConfig>, connections: usize, seconds: u64) -> Outcome {
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(BTreeMap::new()));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let body = Arc::new(message_body());
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let (s, tls, count, errors, body) =
                (*s, Arc::clone(tls), Arc::clone(&count), Arc::clone(&errors), Arc::clone(&body));
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    match session(&s, addr, &tls, &body) {
                        Ok(n) => {
                            count.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            *errors.lock().unwrap().entry(e).or_insert(0) += 1;
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let errors = errors.lock().unwrap().clone();
    Outcome { count: count.load(Ordering::Relaxed), elapsed: start.elapsed(), errors }
}

/// NOOP round trips (µs, sorted) on one plaintext connection for `seconds`, while `load`
/// (a scenario and a number of clients) runs against the AUTH port; and the load's AUTH rate.
fn probe(
    plain: SocketAddr,
    auth: SocketAddr,
    tls: &Arc<ClientConfig>,
    load: Option<(Scenario, usize)>,
    seconds: u64,
) -> Result<(Vec<u64>, f64), String> {
    let stop = Arc::new(AtomicBool::new(false));
    let auths = Arc::new(AtomicU64::new(0));
    let body = Arc::new(message_body());
    let (scenario, clients) = load.unwrap_or((SCENARIOS[0], 0));
    let load: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, auths, tls, body) = (Arc::clone(&stop), Arc::clone(&auths), Arc::clone(tls), Arc::clone(&body));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // One AUTH per session, whichever way it ends.
                    if session(&scenario, auth, &tls, &body).is_ok() {
                        auths.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Let the load reach its steady state before measuring.
    std::thread::sleep(Duration::from_millis(if clients > 0 { 500 } else { 0 }));
    let mut rtts = Vec::new();
    let a0 = auths.load(Ordering::Relaxed);
    let start = Instant::now();
    let measured = (|| -> Result<(), String> {
        let mut c = Smtp::connect(plain).map_err(|e| e.to_string())?;
        c.expect(220, "greeting")?;
        c.send(b"EHLO probe.test\r\n").map_err(|e| e.to_string())?;
        c.expect(250, "EHLO")?;
        while start.elapsed() < Duration::from_secs(seconds) && rtts.len() < 1_000_000 {
            let t = Instant::now();
            c.send(b"NOOP\r\n").map_err(|e| e.to_string())?;
            c.expect(250, "NOOP")?;
            rtts.push(t.elapsed().as_micros() as u64);
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    })();
    let rate = (auths.load(Ordering::Relaxed) - a0) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    measured?;
    rtts.sort_unstable();
    Ok((rtts, rate))
}
