//! ringload's command line: `run`, `sink`, `sweep`, `report`. Parses and validates the
//! options into plans (`run::Plan`, `sink::SinkPlan`, `sweep::SweepPlan`), runs them, prints
//! and writes the results. Nothing else lives here.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use ringload::client::{AuthMech, ClientConfig, Credentials, Phase};
use ringload::message::{MessageSpec, SizeDist, Template};
use ringload::rng::Rng;
use ringload::run::{self, Load, Plan, PlanTls};
use ringload::sink::{self, SinkControl, SinkPlan};
use ringload::sweep::{self, Growth, SweepPlan};
use ringload::units::{parse_duration, parse_probability, parse_rate, parse_size};
use ringload::{clock, report};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Threads are pinned to cores only on machines with at least this many CPUs, as ringrelay's
/// `cores.pin = "auto"`: on 2 CPUs shared with the server under test, pinned client threads
/// went 15-40 % slower than unpinned ones (tuning.md, "ringload").
const PIN_MIN_CPUS: usize = 4;
#[derive(Parser)]
#[command(
    name = "ringload",
    version,
    about = "SMTP load generator, sink, capacity sweep and HTML report (bundled with ringrelay)",
    long_about = "SMTP load generator, sink, capacity sweep and HTML report (bundled with ringrelay).\n\n\
                  Examples:\n  ringload sink --listen 127.0.0.1:2526\n  \
                  ringload run --target 127.0.0.1:2525 --concurrency 20 --messages 10000 --duration 60s\n  \
                  ringload run --target 127.0.0.1:2525 --rate 2000/s --duration 30s --json run.json\n  \
                  ringload sweep --target 127.0.0.1:2525 --start 500 --step 500 --p99-target 50ms --json sweep.json\n  \
                  ringload report run.json -o run.html"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive SMTP load at a server and measure it.
    Run(RunArgs),
    /// A fast SMTP sink standing in for remote MX hosts.
    Sink(SinkArgs),
    /// Step the offered rate up until a limit breaks: the capacity-planning figure.
    Sweep(SweepArgs),
    /// A self-contained HTML report from a run, sweep or sink JSON file.
    Report(ReportArgs),
}

/// Options shared by `run` and `sweep`: where, what and how to send.
#[derive(Args, Clone)]
struct LoadArgs {
    /// The SMTP server to load, HOST:PORT. Loopback only unless --allow-remote.
    #[arg(long, value_name = "HOST:PORT")]
    target: String,

    /// Allow a target outside 127.0.0.0/8 and ::1. ringload sends as fast as it can: aimed at a
    /// server you do not operate it is a denial-of-service attack, and even at your own it can
    /// hurt production mail. Only give this for test systems you are allowed to load.
    #[arg(long)]
    allow_remote: bool,

    /// Messages per connection before QUIT (0: keep each connection until the run ends).
    /// Default 1, a new connection per message, like smtp-source.
    #[arg(long, default_value_t = 1, value_name = "N")]
    per_connection: u32,

    /// Message size: bytes (`1024`, `10k`, `1M`) or a weighted list `SIZE:WEIGHT,...`, where a
    /// size may be a range `LO-HI` (e.g. `1k:80,10k:15,100k:5` or `1k-4k:9,1M:1`). The size
    /// counts the whole message as sent: headers, empty line and body.
    #[arg(long, default_value = "1k", value_name = "SIZE|DIST")]
    size: String,

    /// Send this message (an RFC 5322 file; LF line ends become CRLF) instead of generated
    /// ones; X-Ringload-Id and X-Ringload-Sent headers are put in front.
    #[arg(long, value_name = "FILE", conflicts_with = "size")]
    message_file: Option<PathBuf>,

    /// Recipients per message.
    #[arg(long, default_value_t = 1, value_name = "N")]
    rcpts: u32,

    /// Spread recipients over N domains (the placeholder d of --to).
    #[arg(long, default_value_t = 1, value_name = "N")]
    domains: u32,

    /// Sender pattern. Placeholders, each written in braces as in the default: n the message
    /// number, k the client thread.
    #[arg(long, default_value = "load{n}@ringload.test", value_name = "PATTERN")]
    from: String,

    /// Recipient pattern. Placeholders, each written in braces as in the default: n the message
    /// number, r the recipient's index in the message, d the domain number (0..--domains), k the
    /// client thread. Local parts starting with `tempfail` or `permfail` are refused by
    /// `ringload sink`.
    #[arg(long, default_value = "rcpt{r}@dest{d}.test", value_name = "PATTERN")]
    to: String,

    /// Name sent in EHLO.
    #[arg(long, default_value = "ringload.test", value_name = "NAME")]
    helo: String,

    /// Require STARTTLS (sessions fail where it is not offered).
    #[arg(long, conflicts_with = "implicit_tls")]
    starttls: bool,

    /// TLS from the first byte (SMTPS, port 465 style).
    #[arg(long)]
    implicit_tls: bool,

    /// Do not verify the server's certificate (self-signed test servers).
    #[arg(long)]
    tls_insecure: bool,

    /// Trust this CA (PEM) in addition to the system's.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,

    /// Name for SNI and certificate checks (default: the host of --target).
    #[arg(long, value_name = "NAME")]
    tls_name: Option<String>,

    /// Authenticate: USER:PASS.
    #[arg(long, value_name = "USER:PASS")]
    auth: Option<String>,

    /// SASL mechanism for --auth (default: PLAIN if offered, else LOGIN).
    #[arg(long, value_enum, requires = "auth")]
    auth_mech: Option<MechArg>,

    /// Do not pipeline MAIL/RCPT/DATA even when the server offers PIPELINING.
    #[arg(long)]
    no_pipelining: bool,

    /// Send messages with BDAT (CHUNKING) when the server offers it.
    #[arg(long)]
    bdat: bool,

    /// Source addresses, used round robin per connection (comma-separated, or repeat the option).
    #[arg(long, value_delimiter = ',', value_name = "IP")]
    source_ip: Vec<IpAddr>,

    /// Client threads (default: one per core, at most one per connection). Sharing a small
    /// machine with the server, one thread (`--threads 1`) often goes faster.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Do not pin client threads to cores (they are pinned only on machines with 4 CPUs or
    /// more: on fewer, a pinned thread cannot move off a CPU the server needs).
    #[arg(long)]
    no_pin: bool,

    /// TCP connect timeout.
    #[arg(long, default_value = "5s", value_name = "DURATION")]
    connect_timeout: String,

    /// Timeout for each server reply (and each write).
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    timeout: String,

    /// After the run's time is up, how long messages in flight may take to finish.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    drain: String,

    /// Send for this long before measuring (connections open, caches warm); those messages
    /// are neither counted nor measured. Default 0 for run, 1s for each sweep step.
    #[arg(long, value_name = "DURATION")]
    warmup: Option<String>,

    /// Seed for message sizes (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,

    /// Write the result as JSON (with the histograms as an HdrHistogram interval log).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// No progress lines on stderr.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum MechArg {
    Plain,
    Login,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    load: LoadArgs,

    /// Closed loop: this many connections, each sending as soon as the last reply came.
    /// Open loop (--rate): the most connections in flight (default 100).
    #[arg(long, value_name = "N")]
    concurrency: Option<u32>,

    /// Open loop: messages per second on a fixed schedule (`500`, `500/s`, `30000/m`).
    /// Latency is measured from each message's intended send time.
    #[arg(long, value_name = "RATE")]
    rate: Option<String>,

    /// How long to send (default 1h when --messages is given).
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,

    /// How many messages to send.
    #[arg(long, value_name = "N")]
    messages: Option<u64>,

    /// Also write the interval log alone, as a .hlog file for HdrHistogram tools.
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<PathBuf>,
}

#[derive(Args)]
struct SweepArgs {
    #[command(flatten)]
    load: LoadArgs,

    /// Most connections in flight at each step.
    #[arg(long, default_value_t = 200, value_name = "N")]
    concurrency: u32,

    /// First offered rate.
    #[arg(long, value_name = "RATE")]
    start: String,

    /// Add this rate at each step (e.g. 500/s).
    #[arg(long, value_name = "RATE", conflicts_with = "factor")]
    step: Option<String>,

    /// Multiply the rate by this at each step (e.g. 1.5).
    #[arg(long, value_name = "F")]
    factor: Option<f64>,

    /// Load per step.
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    step_duration: String,

    /// Pause between steps.
    #[arg(long, default_value = "1s", value_name = "DURATION")]
    pause: String,

    /// The p99 latency a step must stay under.
    #[arg(long, value_name = "DURATION")]
    p99_target: String,

    /// Which latency --p99-target applies to: `message` (intended send time → 250: includes
    /// queueing in the client when the server falls behind) or `submission` (end of data → 250).
    #[arg(long, value_enum, default_value = "message")]
    metric: MetricArg,

    /// Largest failed/attempted a step may have (`0.01` or `1%`).
    #[arg(long, default_value = "1%", value_name = "P")]
    max_errors: String,

    /// Smallest accepted/offered a step must reach.
    #[arg(long, default_value = "95%", value_name = "P")]
    min_achieved: String,

    /// Never offer more than this.
    #[arg(long, default_value = "1000000/s", value_name = "RATE")]
    max_rate: String,

    /// Never run more steps than this.
    #[arg(long, default_value_t = 20, value_name = "N")]
    max_steps: u32,

    /// After the first failing step, bisect between the last good and the first bad rate this
    /// many times.
    #[arg(long, default_value_t = 0, value_name = "N")]
    refine: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum MetricArg {
    Message,
    Submission,
}

#[derive(Args)]
struct SinkArgs {
    /// Listen address, HOST:PORT (port 0: any free port; the `listening` line says which).
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,

    /// Threads, each with its own SO_REUSEPORT listener (default: one per core).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,

    /// Do not pin threads to cores (they are pinned only on machines with 4 CPUs or more).
    #[arg(long)]
    no_pin: bool,

    /// Name in the greeting and EHLO reply.
    #[arg(long, default_value = "sink.ringload.test", value_name = "NAME")]
    hostname: String,

    /// Delay before the reply to the end of data (e.g. 5ms).
    #[arg(long, default_value = "0", value_name = "DURATION")]
    latency: String,

    /// Probability of `451 4.3.0` at the end of data (`0.1` or `10%`).
    #[arg(long, default_value = "0", value_name = "P")]
    tempfail: String,

    /// Probability of `554 5.3.0` at the end of data.
    #[arg(long, default_value = "0", value_name = "P")]
    permfail: String,

    /// Probability of `421` and close at the end of data.
    #[arg(long, default_value = "0", value_name = "P")]
    disconnect: String,

    /// TLS certificate chain (PEM, leaf first): offer STARTTLS (or implicit TLS).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Offer TLS with a self-signed certificate made at start (clients: --tls-insecure).
    #[arg(long, conflicts_with = "tls_cert")]
    tls_self_signed: bool,

    /// TLS from the first byte instead of STARTTLS.
    #[arg(long)]
    implicit_tls: bool,

    /// Require AUTH (PLAIN or LOGIN) with these credentials.
    #[arg(long, value_name = "USER:PASS")]
    auth: Option<String>,

    /// Connections open at once; beyond, `421 4.7.0` and close.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_connections: usize,

    /// Largest message accepted (advertised with SIZE).
    #[arg(long, default_value = "64M", value_name = "SIZE")]
    max_size: String,

    /// Most recipients per message.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    max_rcpts: usize,

    /// Idle time before `421 4.4.2` and close.
    #[arg(long, default_value = "300s", value_name = "DURATION")]
    idle_timeout: String,

    /// Write each accepted message to DIR: `<id>.eml` (bytes as sent, dot-unstuffed) and
    /// `<id>.json` (envelope). Slow: for tests.
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,

    /// Write the final stats as JSON at exit.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Keep FILE rewritten (atomically, 5 times a second) with the counts as JSON.
    #[arg(long, value_name = "FILE")]
    stats_file: Option<PathBuf>,

    /// Exit after this long.
    #[arg(long, value_name = "DURATION")]
    duration: Option<String>,

    /// Exit once this many messages were accepted.
    #[arg(long, value_name = "N")]
    exit_after_messages: Option<u64>,

    /// Seed for the failure knobs.
    #[arg(long)]
    seed: Option<u64>,
}

#[derive(Args)]
struct ReportArgs {
    /// A JSON file written by `run`, `sweep` or `sink` with --json.
    input: PathBuf,

    /// Where to write the HTML (default: the input with .html).
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => cmd_run(a),
        Command::Sink(a) => cmd_sink(a),
        Command::Sweep(a) => cmd_sweep(a),
        Command::Report(a) => cmd_report(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringload: {e}");
            ExitCode::from(1)
        }
    }
}

/// Resolves `--target` and refuses non-loopback addresses unless allowed.
fn resolve_target(target: &str, allow_remote: bool) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = target
        .to_socket_addrs()
        .map_err(|e| format!("--target {target}: {e}; write HOST:PORT, e.g. 127.0.0.1:2525"))?
        .collect();
    let addr = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("--target {target} resolves to no address"))?;
    check_loopback(addr.ip(), allow_remote).map_err(|e| format!("--target {target}: {e}"))?;
    Ok(addr)
}

/// Loopback unless allowed.
fn check_loopback(ip: IpAddr, allow_remote: bool) -> Result<(), String> {
    if allow_remote || ip.to_canonical().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "{ip} is not a loopback address. ringload sends load as fast as it can; aimed at a server you do \
         not operate that is an attack, and at your own production it can hurt real mail. If this is a test \
         system you may load, add --allow-remote"
    ))
}

fn host_of(target: &str) -> &str {
    let host = target.rsplit_once(':').map_or(target, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn parse_credentials(text: &str, what: &str) -> Result<(String, String), String> {
    let (u, p) = text.split_once(':').ok_or_else(|| format!("{what} `{text}`: write USER:PASS"))?;
    if u.is_empty() {
        return Err(format!("{what}: the user name is empty"));
    }
    Ok((u.to_string(), p.to_string()))
}

/// Builds a run plan from the shared options.
fn build_plan(
    a: &LoadArgs,
    load: Load,
    concurrency: u32,
    duration: Duration,
    messages: Option<u64>,
    default_warmup: &str,
) -> Result<Plan, String> {
    let target = resolve_target(&a.target, a.allow_remote)?;
    if concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    if a.rcpts == 0 || a.rcpts > 100_000 {
        return Err("--rcpts must be between 1 and 100000".into());
    }
    if a.domains == 0 {
        return Err("--domains must be at least 1".into());
    }
    let seed = a.seed.unwrap_or_else(clock::unix_micros);
    let mut rng = Rng::new(seed);
    let to: Template = a.to.parse()?;
    if a.domains > 1 && !to.uses_domain() {
        return Err(format!("--domains {} has no effect: --to `{}` has no {{d}}", a.domains, a.to));
    }
    let fixed = match &a.message_file {
        Some(p) => Some(MessageSpec::load_fixed(p)?),
        None => None,
    };
    let size: SizeDist = match &fixed {
        Some(f) => SizeDist::fixed(f.len() as u64),
        None => a.size.parse()?,
    };
    let spec = MessageSpec {
        size,
        from: a.from.parse()?,
        to,
        rcpts: a.rcpts,
        domains: a.domains,
        fixed,
        run_id: format!("{:08x}", rng.next_u64() as u32),
    };
    let auth = match &a.auth {
        Some(text) => {
            let (user, pass) = parse_credentials(text, "--auth")?;
            let mechanism = a.auth_mech.map(|m| match m {
                MechArg::Plain => AuthMech::Plain,
                MechArg::Login => AuthMech::Login,
            });
            Some(Credentials { user, pass, mechanism })
        }
        None => None,
    };
    let tls = if a.starttls || a.implicit_tls {
        let config = if a.tls_insecure {
            ringrelay::tls::opportunistic_client_config()
        } else {
            ringrelay::tls::verified_client_config(a.ca.as_deref())?
        };
        let name = a.tls_name.clone().unwrap_or_else(|| host_of(&a.target).to_string());
        Some(PlanTls { config, name: ringrelay::tls::server_name(&name)? })
    } else {
        if a.tls_insecure || a.ca.is_some() || a.tls_name.is_some() {
            return Err("--tls-insecure, --ca and --tls-name need --starttls or --implicit-tls".into());
        }
        None
    };
    for ip in &a.source_ip {
        if ip.is_ipv4() != target.is_ipv4() {
            return Err(format!("--source-ip {ip} is not of the same family as the target {}", target.ip()));
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Plan {
        target,
        load,
        concurrency,
        duration,
        warmup: parse_duration(a.warmup.as_deref().unwrap_or(default_warmup))?,
        drain: parse_duration(&a.drain)?,
        messages,
        per_connection: a.per_connection,
        threads: a.threads.unwrap_or(cores).max(1),
        pin: !a.no_pin && cores >= PIN_MIN_CPUS,
        spec: Arc::new(spec),
        client: ClientConfig {
            helo_name: a.helo.clone(),
            starttls: a.starttls,
            implicit_tls: a.implicit_tls,
            auth,
            pipelining: !a.no_pipelining,
            bdat: a.bdat,
        },
        tls,
        source_ips: a.source_ip.clone(),
        connect_timeout: parse_duration(&a.connect_timeout)?,
        command_timeout: parse_duration(&a.timeout)?,
        seed,
        progress: !a.quiet,
    })
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("cannot encode the result: {e}"))?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn cmd_run(a: RunArgs) -> Result<ExitCode, String> {
    let load = match &a.rate {
        Some(r) => Load::Open { rate: parse_rate(r)? },
        None => Load::Closed,
    };
    let concurrency = a.concurrency.unwrap_or(match load {
        Load::Open { .. } => 100,
        Load::Closed => 10,
    });
    let duration = match (&a.duration, a.messages) {
        (Some(d), _) => parse_duration(d)?,
        (None, Some(_)) => Duration::from_secs(3600),
        (None, None) => return Err("give --duration and/or --messages: every run is bounded".into()),
    };
    if duration.is_zero() {
        return Err("--duration must be above 0".into());
    }
    let plan = build_plan(&a.load, load, concurrency, duration, a.messages, "0")?;
    if a.messages.is_some() && !plan.warmup.is_zero() {
        return Err("--warmup with --messages: the warm-up messages would not be counted; give one or the other".into());
    }
    run::install_stop_handler();
    let result = run::run(plan)?;
    run::print_report(&result);
    if let Some(path) = &a.load.json {
        write_json(path, &result)?;
    }
    if let Some(path) = &a.hdr_log {
        std::fs::write(path, &result.hdr_interval_log).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if !result.thread_errors.is_empty() {
        return Ok(ExitCode::from(1));
    }
    // Nothing got through at all: say so in the exit status too.
    Ok(if result.counts.attempted > 0 && result.counts.ok == 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

fn cmd_sweep(a: SweepArgs) -> Result<ExitCode, String> {
    let start = parse_rate(&a.start)?;
    let growth = match (&a.step, a.factor) {
        (Some(s), None) => Growth::Add(parse_rate(s)?),
        (None, Some(f)) if f > 1.0 && f <= 100.0 => Growth::Factor(f),
        (None, Some(f)) => return Err(format!("--factor {f}: give a factor above 1 (e.g. 1.5)")),
        (None, None) => return Err("give --step RATE or --factor F".into()),
        (Some(_), Some(_)) => return Err("give --step or --factor, not both".into()),
    };
    let step_duration = parse_duration(&a.step_duration)?;
    if step_duration < Duration::from_secs(1) {
        return Err("--step-duration must be at least 1s".into());
    }
    let metric = match a.metric {
        MetricArg::Message => Phase::Message,
        MetricArg::Submission => Phase::Submission,
    };
    let base = build_plan(&a.load, Load::Open { rate: start }, a.concurrency, step_duration, None, "1s")?;
    let plan = SweepPlan {
        base,
        start,
        growth,
        step_duration,
        pause: parse_duration(&a.pause)?,
        p99_target: parse_duration(&a.p99_target)?,
        metric,
        max_errors: parse_probability(&a.max_errors)?,
        min_achieved: parse_probability(&a.min_achieved)?,
        max_rate: parse_rate(&a.max_rate)?,
        max_steps: a.max_steps.clamp(1, 1000),
        refine: a.refine,
    };
    run::install_stop_handler();
    let result = sweep::sweep(plan)?;
    sweep::print_report(&result);
    if let Some(path) = &a.load.json {
        write_json(path, &result)?;
    }
    Ok(if result.capacity.is_some() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

fn cmd_sink(a: SinkArgs) -> Result<ExitCode, String> {
    let tls = match (&a.tls_cert, &a.tls_key, a.tls_self_signed) {
        (Some(cert), Some(key), _) => Some(ringrelay::tls::load_server_config(&ringrelay::config::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        })?),
        (_, _, true) => Some(sink::self_signed_config(&a.hostname)?),
        _ => None,
    };
    if a.implicit_tls && tls.is_none() {
        return Err("--implicit-tls needs --tls-cert/--tls-key or --tls-self-signed".into());
    }
    let auth = match &a.auth {
        Some(t) => Some(parse_credentials(t, "--auth")?),
        None => None,
    };
    let listen = a
        .listen
        .to_socket_addrs()
        .map_err(|e| format!("--listen {}: {e}; write HOST:PORT, e.g. 127.0.0.1:2526", a.listen))?
        .next()
        .ok_or_else(|| format!("--listen {} resolves to no address", a.listen))?;
    let plan = SinkPlan {
        listen,
        threads: a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1),
        pin: !a.no_pin && std::thread::available_parallelism().map_or(1, |n| n.get()) >= PIN_MIN_CPUS,
        hostname: a.hostname.clone(),
        latency: parse_duration(&a.latency)?,
        tempfail: parse_probability(&a.tempfail)?,
        permfail: parse_probability(&a.permfail)?,
        disconnect: parse_probability(&a.disconnect)?,
        tls,
        implicit_tls: a.implicit_tls,
        auth,
        max_connections: a.max_connections.max(1),
        max_size: parse_size(&a.max_size)?,
        max_recipients: a.max_rcpts.max(1),
        idle_timeout: parse_duration(&a.idle_timeout)?,
        save: a.save.clone(),
        seed: a.seed.unwrap_or_else(clock::unix_micros),
    };
    if let Some(dir) = &plan.save {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create --save {}: {e}", dir.display()))?;
    }
    let control = SinkControl {
        duration: a.duration.as_deref().map(parse_duration).transpose()?,
        exit_after_messages: a.exit_after_messages,
        stats_file: a.stats_file.clone(),
    };
    let result = sink::run(plan, &control)?;
    println!("{}", sink::counts_line("final", &result.counts, result.elapsed_s));
    let c = &result.counts;
    eprintln!(
        "ringload sink: {} messages ({} recipients, {} bytes) in {} transactions over {} connections; \
         {} tempfailed, {} permfailed, {} disconnects; end-to-end p50 {} p99 {} max {}",
        c.messages,
        c.recipients,
        c.bytes,
        c.transactions,
        c.connections,
        c.tempfailed,
        c.permfailed,
        c.disconnects,
        ringload::units::fmt_micros(result.e2e.p50_us),
        ringload::units::fmt_micros(result.e2e.p99_us),
        ringload::units::fmt_micros(result.e2e.max_us),
    );
    if let Some(path) = &a.json {
        write_json(path, &result)?;
    }
    // The io_uring threads are parked in accept; the process ends here, with exit status 0.
    std::process::exit(0);
}

fn cmd_report(a: ReportArgs) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(&a.input).map_err(|e| format!("cannot read {}: {e}", a.input.display()))?;
    let html = report::render(&text).map_err(|e| format!("{}: {e}", a.input.display()))?;
    let out = a.output.unwrap_or_else(|| a.input.with_extension("html"));
    std::fs::write(&out, html).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    eprintln!("ringload report: wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_rule() {
        assert!(check_loopback("127.0.0.1".parse().unwrap(), false).is_ok());
        assert!(check_loopback("127.9.8.7".parse().unwrap(), false).is_ok());
        assert!(check_loopback("::1".parse().unwrap(), false).is_ok());
        assert!(check_loopback("::ffff:127.0.0.1".parse().unwrap(), false).is_ok());
        let e = check_loopback("192.0.2.1".parse().unwrap(), false).unwrap_err();
        assert!(e.contains("--allow-remote"), "{e}");
        assert!(check_loopback("0.0.0.0".parse().unwrap(), false).is_err());
        assert!(check_loopback("192.0.2.1".parse().unwrap(), true).is_ok());
        assert_eq!(host_of("[::1]:25"), "::1");
        assert_eq!(host_of("localhost:25"), "localhost");
    }
}
