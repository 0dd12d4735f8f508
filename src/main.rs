//! `ringrelay`: the command line (spec section 2). Parses arguments, loads the configuration,
//! sets up logging and calls into the library; nothing else lives here.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringrelay::config::{Config, Loaded, LogFormat, embedded};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ringrelay", version, about = "High-throughput SMTP relay on io_uring")]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay. With no --config, runs the embedded default (loopback only).
    Serve {
        /// Configuration file (TOML).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration and print the effective one (exit 1 with the reasons if invalid).
    CheckConfig {
        /// Configuration file; omit it with --embedded to print the embedded default.
        file: Option<PathBuf>,
        /// Check and print the embedded default.
        #[arg(long)]
        embedded: bool,
    },
    /// Read a password on stdin and print its argon2id hash for [[users]].password_hash.
    HashPassword,
    /// Message tracking: query the tracking log (<spool.dir>/tracking), oldest event first.
    Track {
        /// Configuration file (for spool.dir); default: the embedded default.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Only events of the last DURATION (e.g. 30s, 10m, 2h, 7d).
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Envelope sender: an address, or @domain.
        #[arg(long)]
        sender: Option<String>,
        /// A recipient: an address, or @domain.
        #[arg(long)]
        recipient: Option<String>,
        /// Queue id (also finds the DSN events that name it as the notice's id).
        #[arg(long)]
        queue_id: Option<String>,
        /// RECEIVE, DELIVER, DEFER, FAIL or DSN.
        #[arg(long)]
        event: Option<String>,
        /// One JSON object per line (as stored), for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and control the queue of the running relay (through its admin endpoint).
    Queue {
        /// Configuration file (for [admin] listen); default: the embedded default.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: QueueAction,
    },
}

#[derive(Subcommand)]
enum QueueAction {
    /// Messages per destination domain; with --domain, the messages of that domain.
    List {
        /// One destination domain: list its messages.
        #[arg(long)]
        domain: Option<String>,
        /// Print the endpoint's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Try delivery now: one message (ID), one domain (--domain), or everything (--all).
    Retry {
        /// Queue id.
        id: Option<String>,
        /// Every message for this destination domain.
        #[arg(long, conflicts_with = "id")]
        domain: Option<String>,
        /// Everything deferred.
        #[arg(long, conflicts_with_all = ["id", "domain"])]
        all: bool,
    },
    /// Remove a message from the queue: FAIL in the tracking log and, unless --no-bounce, a
    /// non-delivery report to its sender.
    Delete {
        /// Queue id.
        id: String,
        /// Do not send a bounce.
        #[arg(long)]
        no_bounce: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let mut loaded = match load(config.as_deref()) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("ringrelay: {e}");
                    return ExitCode::FAILURE;
                }
            };
            // The flag wins over the file, for the log and for the startup summary alike.
            if cli.log_json {
                loaded.config.log.format = LogFormat::Json;
            }
            init_logging(&loaded.config);
            match ringrelay::runtime::cores::serve(loaded) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("ringrelay: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { file, embedded } => check_config(file, embedded),
        Command::HashPassword => hash_password(),
        Command::Track { config, since, sender, recipient, queue_id, event, json } => {
            track(config, since, sender, recipient, queue_id, event, json)
        }
        Command::Queue { config, action } => queue(config, action),
    }
}

#[allow(clippy::too_many_arguments)]
fn track(
    config: Option<PathBuf>,
    since: Option<String>,
    sender: Option<String>,
    recipient: Option<String>,
    queue_id: Option<String>,
    event: Option<String>,
    json: bool,
) -> ExitCode {
    use ringrelay::obs::tracking::{self, Filter};
    let loaded = match load(config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ringrelay track: {e}");
            return ExitCode::FAILURE;
        }
    };
    let since_ms = match since.as_deref().map(str::parse::<ringrelay::config::Dur>) {
        None => None,
        Some(Ok(d)) => Some(ringrelay::clock::unix_ms().saturating_sub(d.get().as_millis() as u64)),
        Some(Err(e)) => {
            eprintln!("ringrelay track: --since: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(ev) = &event
        && !tracking::EVENTS.iter().any(|e| e.eq_ignore_ascii_case(ev))
    {
        eprintln!("ringrelay track: --event must be one of {}", tracking::EVENTS.join(", "));
        return ExitCode::from(2);
    }
    let filter = Filter { since_ms, sender, recipient, queue_id, event };
    match tracking::query(&loaded.config.spool.dir, &filter) {
        Ok((found, bad)) => {
            if json {
                for f in &found {
                    println!("{}", f.line);
                }
            } else {
                print!("{}", tracking::table(&found));
                eprintln!("{} event(s)", found.len());
            }
            if bad > 0 {
                eprintln!("ringrelay track: skipped {bad} unreadable line(s) (a crash can leave a torn last line)");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringrelay track: {e}");
            ExitCode::FAILURE
        }
    }
}

fn queue(config: Option<PathBuf>, action: QueueAction) -> ExitCode {
    use ringrelay::obs::queue_cli;
    let loaded = match load(config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ringrelay queue: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !loaded.config.admin.enabled {
        eprintln!("ringrelay queue: the admin endpoint is disabled in this configuration ([admin] enabled = false)");
        return ExitCode::FAILURE;
    }
    let addr = queue_cli::admin_target(loaded.config.admin.listen);
    let result = match action {
        QueueAction::List { domain, json } => queue_cli::list(addr, domain.as_deref(), json),
        QueueAction::Retry { id, domain, all } => {
            let what = match (id, domain, all) {
                (Some(id), None, false) => queue_cli::Retry::Message(id),
                (None, Some(d), false) => queue_cli::Retry::Domain(d),
                (None, None, true) => queue_cli::Retry::All,
                _ => {
                    eprintln!("ringrelay queue retry: give a queue ID, --domain D, or --all");
                    return ExitCode::from(2);
                }
            };
            queue_cli::retry(addr, &what)
        }
        QueueAction::Delete { id, no_bounce } => queue_cli::delete(addr, &id, !no_bounce),
    };
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringrelay queue: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<&std::path::Path>) -> Result<Loaded, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(embedded::load()),
    }
}

fn check_config(file: Option<PathBuf>, embedded: bool) -> ExitCode {
    let loaded = match (file, embedded) {
        (Some(p), false) => Config::load(&p),
        (None, true) => Ok(embedded::load()),
        _ => {
            eprintln!("ringrelay check-config: give a FILE, or --embedded");
            return ExitCode::from(2);
        }
    };
    match loaded {
        Ok(l) => {
            for w in &l.warnings {
                eprintln!("warning: {}: {}: {}", l.source.display(), w.key, w.message);
            }
            print!("{}", l.config.to_toml());
            eprintln!("{}: configuration is valid", l.source.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn hash_password() -> ExitCode {
    let password = if std::io::stdin().is_terminal() {
        eprint!("password: ");
        let p = read_password_no_echo();
        eprintln!();
        p
    } else {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map(|_| s).map_err(|e| e.to_string())
    };
    let password = match password {
        Ok(p) => p.trim_end_matches(['\r', '\n']).to_string(),
        Err(e) => {
            eprintln!("ringrelay hash-password: cannot read the password: {e}");
            return ExitCode::FAILURE;
        }
    };
    if password.is_empty() {
        eprintln!("ringrelay hash-password: empty password refused");
        return ExitCode::FAILURE;
    }
    match ringrelay::policy::users::hash_password(password.as_bytes()) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ringrelay hash-password: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads one line from the terminal with echo off (termios), restoring it afterwards.
fn read_password_no_echo() -> Result<String, String> {
    use std::os::fd::AsRawFd;
    let fd = std::io::stdin().as_raw_fd();
    // SAFETY: termios is a plain C struct; tcgetattr fills it for a valid descriptor.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is stdin, a terminal (checked by the caller); `saved` is a valid out-pointer.
    if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    let mut quiet = saved;
    quiet.c_lflag &= !libc::ECHO;
    // SAFETY: same descriptor, a termios derived from the one the kernel gave us.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    let mut line = String::new();
    let result = std::io::stdin().read_line(&mut line).map(|_| line).map_err(|e| e.to_string());
    // SAFETY: restores the settings read above.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    result
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG overrides the configured level; an empty RUST_LOG counts as unset.
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(&config.log.level),
    };
    let json = config.log.format == LogFormat::Json;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_thread_names(true)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
