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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let loaded = match load(config.as_deref()) {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("ringrelay: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(&loaded.config, cli.log_json);
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

fn init_logging(config: &Config, json_flag: bool) {
    use tracing_subscriber::EnvFilter;
    // RUST_LOG overrides the configured level; an empty RUST_LOG counts as unset.
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(&config.log.level),
    };
    let json = json_flag || config.log.format == LogFormat::Json;
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
