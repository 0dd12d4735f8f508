//! The configuration: TOML (spec section 3) → `Config`. Owns the serde types exactly as the
//! spec writes its keys, the value syntaxes (durations `500ms`/`30s`/`5m`/`2h`/`2d`, sizes
//! `25MiB`, rates `600/m`, domain and send-as patterns, `host:port`), defaults, and printing
//! the effective configuration. Validation of meaning (open relay, files, relationships) is in
//! `validate`; the embedded default of spec section 4 is in `embedded`.
//!
//! Keys beyond the spec (documented in README.md, "Configuration beyond the spec") are marked
//! "extension" below. Unknown keys are errors, with the file, line and column.

pub mod embedded;
mod types;
pub mod validate;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub use types::{ByteSize, DomainPattern, Dur, HostPort, Rate, SendAs};

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Our name: banner, EHLO, `Received:`, DSN `Reporting-MTA`.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// Internal domains: anyone allowed on a connector may send to them.
    #[serde(default)]
    pub accepted_domains: Vec<DomainPattern>,
    /// `[spool]`.
    #[serde(default)]
    pub spool: Spool,
    /// `[cores]`.
    #[serde(default)]
    pub cores: Cores,
    /// `[limits]`.
    #[serde(default)]
    pub limits: Limits,
    /// `[admin]`.
    #[serde(default)]
    pub admin: Admin,
    /// `[dns]`; absent: the system resolver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    /// `[delivery]` (extension): DSN and bounce settings.
    #[serde(default)]
    pub delivery: Delivery,
    /// `[tracking]` (extension): the message tracking log.
    #[serde(default)]
    pub tracking: Tracking,
    /// `[policy]` (extension): the open-relay sanity bounds of check-config.
    #[serde(default)]
    pub policy: Policy,
    /// `[log]` (extension).
    #[serde(default)]
    pub log: Log,
    /// `[[users]]`: accounts for authenticated relay.
    #[serde(default)]
    pub users: Vec<User>,
    /// `[[receive_connector]]`.
    #[serde(default, rename = "receive_connector")]
    pub receive_connectors: Vec<ReceiveConnector>,
    /// `[[send_connector]]`.
    #[serde(default, rename = "send_connector")]
    pub send_connectors: Vec<SendConnector>,
}

/// `[spool]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Spool {
    /// Where the per-core logs, the tracking log and protocol logs live.
    #[serde(default = "default_spool_dir")]
    pub dir: PathBuf,
    /// `batch` (group commit, default) | `always` | `never` (benchmarks only).
    #[serde(default)]
    pub fsync: FsyncMode,
    /// Extension: segment file size before a new one is started.
    #[serde(default = "default_segment_size")]
    pub segment_size: ByteSize,
    /// Extension: backpressure (`452 4.3.1`) once the spool holds this much; 0 = no limit.
    #[serde(default)]
    pub max_bytes: ByteSize,
    /// Extension: backpressure once this many messages wait for delivery.
    #[serde(default = "default_max_messages")]
    pub max_messages: u64,
    /// Extension: backpressure when the spool's file system has less free space than this.
    #[serde(default = "default_min_free_disk")]
    pub min_free_disk: ByteSize,
}

impl Default for Spool {
    fn default() -> Self {
        Spool {
            dir: default_spool_dir(),
            fsync: FsyncMode::default(),
            segment_size: default_segment_size(),
            max_bytes: ByteSize(0),
            max_messages: default_max_messages(),
            min_free_disk: default_min_free_disk(),
        }
    }
}

/// When the spool syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Group commit: one fdatasync for every message appended meanwhile.
    #[default]
    Batch,
    /// One fdatasync per message.
    Always,
    /// Never sync (the page cache decides): benchmarks only; a crash loses messages.
    Never,
}

/// `[cores]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cores {
    /// SMTP worker threads; 0 = one per core not taken by delivery cores (at least one).
    #[serde(default)]
    pub smtp: usize,
    /// Delivery threads.
    #[serde(default = "one")]
    pub delivery: usize,
    /// Extension: pin each core thread to a CPU (the thread-per-core design): `true`, `false`,
    /// or `"auto"` (default: pin on machines with 4 CPUs or more). A pinned thread cannot move
    /// away from a CPU that another busy process uses (a load generator, agents, CPU quotas),
    /// which on small machines costs more than pinning brings. See tuning.md.
    #[serde(default)]
    pub pin: Pin,
}

impl Default for Cores {
    fn default() -> Self {
        Cores { smtp: 0, delivery: 1, pin: Pin::Auto }
    }
}

/// `cores.pin`: `true`, `false` or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pin {
    /// Pin on machines with at least `PIN_AUTO_CPUS_MIN` CPUs.
    #[default]
    Auto,
    /// Always pin.
    Yes,
    /// Never pin.
    No,
}

/// With `pin = "auto"`, machines with at least this many CPUs pin their core threads.
pub const PIN_AUTO_CPUS_MIN: usize = 4;

/// SMTP cores at most: queue ids carry the core number in 8 bits (`smtp::QueueId`), and
/// check-config refuses a larger `cores.smtp`.
pub const SMTP_CORES_MAX: usize = 255;

/// `Config::smtp_cores` for `configured` (`cores.smtp`) on a machine with `cpus` CPUs.
pub fn smtp_cores_for(configured: usize, delivery: usize, cpus: usize) -> usize {
    if configured != 0 {
        return configured;
    }
    cpus.saturating_sub(delivery).clamp(1, SMTP_CORES_MAX)
}

impl Serialize for Pin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Pin::Auto => s.serialize_str("auto"),
            Pin::Yes => s.serialize_bool(true),
            Pin::No => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for Pin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(Pin::Yes),
            Raw::Bool(false) => Ok(Pin::No),
            Raw::Text(t) if t == "auto" => Ok(Pin::Auto),
            Raw::Text(t) => Err(serde::de::Error::custom(format!("`{t}`: expected true, false or \"auto\""))),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest message accepted (SIZE and actual).
    #[serde(default = "default_max_message_size")]
    pub max_message_size: ByteSize,
    /// Recipients per transaction.
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
    /// Octets per command line, CRLF included.
    #[serde(default = "default_max_command_line")]
    pub max_command_line: usize,
    /// Extension: bad commands tolerated before `421 4.7.0` and close.
    #[serde(default = "default_max_bad_commands")]
    pub max_bad_commands: u32,
    /// Extension: idle time allowed while waiting for a command (RFC 5321: ≥ 5 minutes).
    #[serde(default = "five_minutes")]
    pub command_timeout: Dur,
    /// Extension: idle time allowed while waiting for message data.
    #[serde(default = "five_minutes")]
    pub data_timeout: Dur,
    /// Extension: connections per SMTP core; past it new ones get `421 4.7.0` at once.
    #[serde(default = "default_max_connections_per_core")]
    pub max_connections_per_core: usize,
    /// Extension: on SIGTERM/SIGINT, how long sessions in flight may take to finish.
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Dur,
    /// Extension: argon2 verifications (AUTH) running at once in the process; 0 = half the
    /// CPUs, at least 1. More only takes CPU from the SMTP cores (README, "Authentication").
    #[serde(default)]
    pub auth_verify_concurrency: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_size: default_max_message_size(),
            max_recipients: default_max_recipients(),
            max_command_line: default_max_command_line(),
            max_bad_commands: default_max_bad_commands(),
            command_timeout: five_minutes(),
            data_timeout: five_minutes(),
            max_connections_per_core: default_max_connections_per_core(),
            shutdown_grace: default_shutdown_grace(),
            auth_verify_concurrency: 0,
        }
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// `GET /metrics`, `GET /queue`, queue control. Loopback by default.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Extension: set false to run without the admin listener.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for Admin {
    fn default() -> Self {
        Admin { listen: default_admin_listen(), enabled: true }
    }
}

/// `[dns]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    /// Name servers (UDP and TCP on these addresses).
    pub nameservers: Vec<SocketAddr>,
    /// Extension: per-query timeout.
    #[serde(default = "default_dns_timeout")]
    pub timeout: Dur,
}

/// `[delivery]` (extension).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Delivery {
    /// Send a DELAY DSN (where NOTIFY asks for one) once a message has waited this long.
    #[serde(default = "default_delay_warning")]
    pub delay_warning: Dur,
    /// Local part of the bounce sender, `<local>@<hostname>`.
    #[serde(default = "default_bounce_local")]
    pub bounce_from: String,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery { delay_warning: default_delay_warning(), bounce_from: default_bounce_local() }
    }
}

/// `[tracking]` (extension).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tracking {
    /// Write the tracking log.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Files older than this are deleted.
    #[serde(default = "default_tracking_retention")]
    pub retention: Dur,
    /// A file is rotated when it reaches this size (and daily).
    #[serde(default = "default_tracking_file_size")]
    pub max_file_size: ByteSize,
}

impl Default for Tracking {
    fn default() -> Self {
        Tracking { enabled: true, retention: default_tracking_retention(), max_file_size: default_tracking_file_size() }
    }
}

/// `[policy]` (extension).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// An anonymous `relay = "any"` connector may not allow an IPv4 range wider than this
    /// prefix (without `open_relay = true`).
    #[serde(default = "default_min_prefix_v4")]
    pub anonymous_relay_min_prefix_v4: u8,
    /// The same for IPv6.
    #[serde(default = "default_min_prefix_v6")]
    pub anonymous_relay_min_prefix_v6: u8,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            anonymous_relay_min_prefix_v4: default_min_prefix_v4(),
            anonymous_relay_min_prefix_v6: default_min_prefix_v6(),
        }
    }
}

/// `[log]` (extension).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `ringrelay=debug`. `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

// Not derived: a derived Default would leave `level` empty when the [log] table is absent,
// and an empty filter shows errors only.
impl Default for Log {
    fn default() -> Self {
        Log { format: LogFormat::default(), level: default_log_level() }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[[users]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The AUTH user name.
    pub name: String,
    /// argon2id PHC string (`ringrelay hash-password`).
    pub password_hash: String,
    /// Addresses (or `*@domain`) this user may send as, in MAIL FROM and header From.
    #[serde(default)]
    pub send_as: Vec<SendAs>,
}

/// A receive connector's permission groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PermissionGroup {
    /// Unauthenticated clients from the connector's ranges.
    Anonymous,
    /// Clients that authenticate as one of `[[users]]`.
    Users,
}

/// Where a connector's clients may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Relay {
    /// Any domain.
    Any,
    /// Only `accepted_domains`.
    #[default]
    Accepted,
}

/// SASL mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMechanism {
    /// PLAIN.
    Plain,
    /// LOGIN.
    Login,
}

/// Bare LF handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BareLineFeed {
    /// Refuse messages with bare LF (default).
    #[default]
    Reject,
    /// Turn bare LF into CRLF.
    Normalize,
}

/// A certificate and its key (PEM files).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[[receive_connector]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveConnector {
    /// Name, in logs, tracking and `Received:`-adjacent metadata.
    pub name: String,
    /// Addresses to listen on.
    pub bind: Vec<SocketAddr>,
    /// Client ranges this connector serves (most specific prefix wins).
    pub remote_ip_ranges: Vec<IpNet>,
    /// `anonymous` and/or `users`.
    #[serde(default = "default_permission_groups")]
    pub permission_groups: Vec<PermissionGroup>,
    /// `any` or `accepted` (default: accepted).
    #[serde(default)]
    pub relay: Relay,
    /// Mechanisms offered where `users` is a permission group.
    #[serde(default = "default_auth_mechanisms")]
    pub auth: Vec<AuthMechanism>,
    /// STARTTLS before AUTH and MAIL. Default: true on connectors with the `users` group,
    /// false on anonymous-only ones (printers rarely speak TLS). Filled in after parsing.
    #[serde(default)]
    pub require_tls: Option<bool>,
    /// Certificate for STARTTLS / implicit TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// TLS from the first byte (port 465 style).
    #[serde(default)]
    pub implicit_tls: bool,
    /// Like Exchange MaxInboundConnectionPerSource (per core; see README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_source: Option<u32>,
    /// Messages per client IP, or per user once authenticated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_rate_limit: Option<Rate>,
    /// Failed AUTH attempts from one IP before lockout.
    #[serde(default = "default_max_auth_failures")]
    pub max_auth_failures: u32,
    /// How long the lockout lasts.
    #[serde(default = "five_minutes")]
    pub auth_lockout: Dur,
    /// Expect a PROXY v1/v2 header.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// Peers allowed to send PROXY headers.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// SMTP transcripts to `<spool.dir>/protocol/`.
    #[serde(default)]
    pub protocol_log: bool,
    /// `reject` or `normalize`.
    #[serde(default)]
    pub bare_line_feed: BareLineFeed,
    /// Allow an anonymous `relay = "any"` connector with very wide ranges. Dangerous.
    #[serde(default)]
    pub open_relay: bool,
}

impl ReceiveConnector {
    /// The connector serves anonymous clients.
    pub fn anonymous(&self) -> bool {
        self.permission_groups.contains(&PermissionGroup::Anonymous)
    }

    /// The connector serves authenticated users.
    pub fn users(&self) -> bool {
        self.permission_groups.contains(&PermissionGroup::Users)
    }

    /// Whether STARTTLS is required before MAIL and AUTH (with its default applied).
    pub fn require_tls(&self) -> bool {
        self.require_tls.unwrap_or_else(|| self.users())
    }
}

/// Outbound TLS policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboundTls {
    /// STARTTLS when offered; MX delivery accepts any certificate, smart hosts must verify.
    #[default]
    Opportunistic,
    /// STARTTLS or no delivery (temporary failure); the certificate must verify.
    Required,
    /// Never STARTTLS.
    Off,
}

/// Smart host credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmartHostAuth {
    /// User name.
    pub user: String,
    /// File holding the password (first line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Extension: the password inline (prefer `password_file`). Never printed.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
}

/// `retry = { first, max, expire }`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// First retry delay; doubles each time.
    #[serde(default = "default_retry_first")]
    pub first: Dur,
    /// Cap of the retry delay.
    #[serde(default = "default_retry_max")]
    pub max: Dur,
    /// Give up (bounce) after this long in the queue.
    #[serde(default = "default_retry_expire")]
    pub expire: Dur,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { first: default_retry_first(), max: default_retry_max(), expire: default_retry_expire() }
    }
}

/// `[[send_connector]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SendConnector {
    /// Name.
    pub name: String,
    /// Domains routed here: exact, `*.example.test`, or `*`.
    pub domains: Vec<DomainPattern>,
    /// Smart hosts, tried in order; empty: MX lookup.
    #[serde(default)]
    pub smart_hosts: Vec<HostPort>,
    /// Credentials for the smart hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<SmartHostAuth>,
    /// Connections at once: per destination domain for MX delivery; for a connector with
    /// smart hosts, for the whole connector (every domain it serves shares that pool).
    #[serde(default = "default_max_connections_per_domain")]
    pub max_connections_per_domain: usize,
    /// `opportunistic` | `required` | `off`.
    #[serde(default)]
    pub tls: OutboundTls,
    /// Retry schedule.
    #[serde(default)]
    pub retry: Retry,
    /// Extension: port for MX delivery (and smart hosts given without a port).
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// Extension: messages sent over one connection before it is closed.
    #[serde(default = "default_messages_per_connection")]
    pub max_messages_per_connection: usize,
    /// Extension: an unused pooled connection is closed after this long.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// Extension: TCP connect timeout.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Extension: timeout for each reply from the remote server.
    #[serde(default = "five_minutes")]
    pub command_timeout: Dur,
    /// Extension: extra CA certificates (PEM) trusted for smart hosts, besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Extension: source address for outbound connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<IpAddr>,
}

/// A configuration error or warning: where, what, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, e.g. `receive_connector[1].remote_ip_ranges`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Why a configuration could not be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// TOML syntax, an unknown key or a bad value (with line and column).
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, position included.
        message: String,
    },
    /// The configuration parses but is refused.
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every refusal.
        problems: Vec<Problem>,
    },
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Read { path, error } => write!(f, "{}: cannot read: {error}", path.display()),
            ConfigError::Parse { path, message } => write!(f, "{}: {message}", path.display()),
            ConfigError::Invalid { path, problems } => {
                for (i, p) in problems.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{}: {}: {}", path.display(), p.key, p.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// A validated configuration and the warnings it deserves.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// Risky but allowed settings, to print at start and in check-config.
    pub warnings: Vec<Problem>,
    /// Where it came from ("<embedded default>" for the embedded one).
    pub source: PathBuf,
}

impl Config {
    /// Parses TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        // Fill in defaults that depend on other keys, so the effective configuration shows them.
        for rc in &mut config.receive_connectors {
            rc.require_tls = Some(rc.require_tls());
        }
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        Config::from_text(&text, path)
    }

    /// Parses and validates text.
    pub fn from_text(text: &str, path: &Path) -> Result<Loaded, ConfigError> {
        let config = Config::parse(text, path)?;
        let report = validate::validate(&config);
        if !report.errors.is_empty() {
            return Err(ConfigError::Invalid { path: path.to_path_buf(), problems: report.errors });
        }
        Ok(Loaded { config, warnings: report.warnings, source: path.to_path_buf() })
    }

    /// The effective configuration as TOML, defaults filled in, secrets left out.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot print configuration: {e}\n"))
    }

    /// Number of SMTP cores to run. `cores.smtp = 0` means one per CPU that is not a delivery
    /// core's (at least one, at most `SMTP_CORES_MAX`): every thread then has a CPU of its own,
    /// which is what pinning assumes. On 2 CPUs with 1 delivery core that is 1 SMTP core;
    /// measured there, it accepts more than 2 SMTP cores sharing with delivery (tuning.md,
    /// "Cores and pinning").
    pub fn smtp_cores(&self) -> usize {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        smtp_cores_for(self.cores.smtp, self.cores.delivery, cpus)
    }

    /// Whether core threads are pinned to CPUs (`cores.pin`, with `"auto"` resolved).
    pub fn pin_cores(&self) -> bool {
        match self.cores.pin {
            Pin::Yes => true,
            Pin::No => false,
            Pin::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()) >= PIN_AUTO_CPUS_MIN,
        }
    }

    /// The address bounces come from.
    pub fn bounce_sender(&self) -> String {
        format!("{}@{}", self.delivery.bounce_from, self.hostname)
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

fn default_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    if name.is_empty() { "localhost".into() } else { name }
}
fn default_spool_dir() -> PathBuf {
    PathBuf::from("/var/spool/ringrelay")
}
fn default_segment_size() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_max_messages() -> u64 {
    1_000_000
}
fn default_min_free_disk() -> ByteSize {
    ByteSize(512 << 20)
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_max_message_size() -> ByteSize {
    ByteSize(25 << 20)
}
fn default_max_recipients() -> usize {
    100
}
fn default_max_command_line() -> usize {
    2048
}
fn default_max_bad_commands() -> u32 {
    20
}
fn five_minutes() -> Dur {
    Dur::from_secs(300)
}
fn default_max_connections_per_core() -> usize {
    4096
}
fn default_shutdown_grace() -> Dur {
    Dur::from_secs(30)
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9425))
}
fn default_dns_timeout() -> Dur {
    Dur::from_secs(5)
}
fn default_delay_warning() -> Dur {
    Dur::from_secs(4 * 3600)
}
fn default_bounce_local() -> String {
    "MAILER-DAEMON".into()
}
fn default_tracking_retention() -> Dur {
    Dur::from_secs(30 * 86400)
}
fn default_tracking_file_size() -> ByteSize {
    ByteSize(100 << 20)
}
fn default_min_prefix_v4() -> u8 {
    8
}
fn default_min_prefix_v6() -> u8 {
    32
}
fn default_log_level() -> String {
    "info".into()
}
fn default_permission_groups() -> Vec<PermissionGroup> {
    vec![PermissionGroup::Anonymous]
}
fn default_auth_mechanisms() -> Vec<AuthMechanism> {
    vec![AuthMechanism::Plain, AuthMechanism::Login]
}
fn default_max_auth_failures() -> u32 {
    5
}
fn default_retry_first() -> Dur {
    Dur::from_secs(60)
}
fn default_retry_max() -> Dur {
    Dur::from_secs(3600)
}
fn default_retry_expire() -> Dur {
    Dur::from_secs(2 * 86400)
}
fn default_max_connections_per_domain() -> usize {
    20
}
fn default_smtp_port() -> u16 {
    25
}
fn default_messages_per_connection() -> usize {
    10_000
}
fn default_idle_timeout() -> Dur {
    Dur::from_secs(30)
}
fn default_connect_timeout() -> Dur {
    Dur::from_secs(30)
}

#[cfg(test)]
mod tests;
