//! What every core reads: the configuration and what is built from it (connector table,
//! accepted domains, users, TLS configs, session settings, per-connector limits).
//!
//! The receive-side policy (`Policy`: accepted domains, users, the receive connectors' ranges,
//! rights, limits and certificates) is replaced as a whole on SIGHUP (`Shared::reload_policy`);
//! every connection takes the policy in force when it is accepted and keeps it to its end, so
//! a reload never changes the rules under a session. The rest of the configuration (listeners,
//! cores, spool, delivery, logs) is read at start only. A core notices a new policy by one
//! atomic load per accepted connection (`policy_generation`). One more exception, on purpose:
//! the AUTH lockout table (`AuthLockouts`) is process-wide, behind a mutex that the common path
//! never takes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::config::{AuthMechanism, BareLineFeed, Config};
use crate::policy::limits::{AuthFailures, ConnectorLimits};
use crate::policy::receive::ConnectorTable;
use crate::policy::relay::AcceptedDomains;
use crate::policy::users::Users;
use crate::smtp::SessionConfig;
use crate::smtp::auth::Mechanism;
use crate::smtp::scanner::BareLf;

/// State shared by all cores.
pub struct Shared {
    /// The configuration the relay started with: listeners, cores, spool, limits, delivery,
    /// logs. The receive-side policy in force may come from a later file (`policy`).
    pub config: Config,
    /// The file the configuration came from, read again on SIGHUP (None: the embedded default).
    pub source: Option<PathBuf>,
    /// The receive-side policy in force, replaced whole on SIGHUP.
    policy: RwLock<Arc<Policy>>,
    /// Incremented after each replacement of `policy`.
    policy_generation: AtomicU64,
    /// Failed AUTH attempts and lockouts, for the whole process.
    pub auth_lockouts: AuthLockouts,
    /// Permits for argon2 verifications running at once, process-wide
    /// (`limits.auth_verify_concurrency`).
    pub auth_verify_slots: tokio::sync::Semaphore,
}

/// The receive-side policy, built from one configuration file: what decides who may connect,
/// authenticate, relay and send as whom.
pub struct Policy {
    /// The configuration this policy was built from (its `accepted_domains`, `[[users]]` and
    /// `[[receive_connector]]` are the ones in force).
    pub config: Config,
    /// Receive-connector choice.
    pub connectors: ConnectorTable,
    /// Accepted domains.
    pub accepted: AcceptedDomains,
    /// Accounts.
    pub users: Users,
    /// TLS server config per receive connector (None: no certificate).
    pub tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    /// The certificates behind `tls`, which a SIGHUP whose file does not load still reloads
    /// (`reload_certificates`).
    pub certificates: Vec<Option<Arc<crate::tls::ReloadableCert>>>,
    /// Session settings per receive connector.
    pub session_configs: Vec<SessionConfig>,
    /// Abuse limits per receive connector.
    pub limits: Vec<ConnectorLimits>,
}

/// What a SIGHUP with a loadable file did.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Top-level parts of the file that differ from the running configuration and are not
    /// reloaded (they need a restart), e.g. `spool`, `send_connector`.
    pub ignored: Vec<String>,
}

/// How many argon2 verifications may run at once in the whole process: `configured`, or when
/// it is 0, half the CPUs (at least one). Each takes a CPU for 10-50 ms; running more at once
/// than there are spare CPUs does not verify faster, it only takes CPU time from the SMTP
/// cores, so that an AUTH flood (wrong passwords are never cached) would slow every session on
/// the machine. Beyond this, AUTHs wait their turn (first come, first served) while every
/// other session goes on.
pub fn auth_verify_concurrency(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// The AUTH lockout, process-wide. SO_REUSEPORT spreads one client's connections over every
/// SMTP core, so per-core counting would give a guesser `max_auth_failures` tries per core;
/// here the figure is exact. Cheap where it matters: while no source has a failure on record
/// (the normal state) `is_locked` is one atomic load; the mutex is taken only when failures
/// exist, and then next to an argon2 verification that costs 10-50 ms anyway.
#[derive(Debug)]
pub struct AuthLockouts {
    state: Mutex<LockoutState>,
    /// Sources in the table; 0 lets `is_locked` answer without the mutex.
    tracked: AtomicUsize,
    /// The longest `auth_lockout` of any connector, in ms (how long an entry can matter); a
    /// policy reload can change it.
    lockout_max_ms: AtomicU64,
}

#[derive(Debug)]
struct LockoutState {
    table: AuthFailures,
    swept_at: Option<Instant>,
}

/// How often the lockout table drops expired entries of sources that never came back.
const LOCKOUT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

impl AuthLockouts {
    /// An empty table for connectors whose longest lockout is `lockout_max`.
    pub fn new(lockout_max: Duration) -> AuthLockouts {
        AuthLockouts {
            state: Mutex::new(LockoutState { table: AuthFailures::default(), swept_at: None }),
            tracked: AtomicUsize::new(0),
            lockout_max_ms: AtomicU64::new(lockout_max.as_millis() as u64),
        }
    }

    /// A reloaded policy's longest lockout.
    pub fn set_lockout_max(&self, lockout_max: Duration) {
        self.lockout_max_ms.store(lockout_max.as_millis() as u64, Ordering::Relaxed);
    }

    /// Is `ip` locked out of AUTH on `connector`?
    pub fn is_locked(&self, connector: usize, ip: IpAddr, limits: &ConnectorLimits, now: Instant) -> bool {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.with_table(now, |t| t.is_locked(connector, ip, limits, now))
    }

    /// Records a failed AUTH; true when it started a lockout.
    pub fn record_failure(&self, connector: usize, ip: IpAddr, limits: &ConnectorLimits, now: Instant) -> bool {
        self.with_table(now, |t| t.record_failure(connector, ip, limits, now))
    }

    fn with_table<R>(&self, now: Instant, f: impl FnOnce(&mut AuthFailures) -> R) -> R {
        // A panic while holding the lock leaves a consistent table (every method finishes
        // its own updates before returning): keep using it.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let r = f(&mut state.table);
        if state.swept_at.is_none_or(|t| now.saturating_duration_since(t) >= LOCKOUT_SWEEP_INTERVAL) {
            state.table.sweep(Duration::from_millis(self.lockout_max_ms.load(Ordering::Relaxed)), now);
            state.swept_at = Some(now);
        }
        self.tracked.store(state.table.len(), Ordering::Release);
        r
    }
}

impl Policy {
    /// Builds the policy of `file`, with the session settings (`hostname`, `[limits]`) of the
    /// running configuration `base`. TLS files are loaded here; errors name the file.
    pub fn build(file: Config, base: &Config) -> Result<Policy, String> {
        let mut tls = Vec::new();
        let mut certificates = Vec::new();
        let mut session_configs = Vec::new();
        for (i, rc) in file.receive_connectors.iter().enumerate() {
            let (server, cert) = match &rc.tls {
                Some(files) => {
                    let (server, cert) = crate::tls::reloadable_server_config(files)
                        .map_err(|e| format!("receive_connector[{i}].tls: {e}"))?;
                    (Some(server), Some(cert))
                }
                None => (None, None),
            };
            certificates.push(cert);
            let auth = if rc.users() {
                rc.auth
                    .iter()
                    .map(|m| match m {
                        AuthMechanism::Plain => Mechanism::Plain,
                        AuthMechanism::Login => Mechanism::Login,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            session_configs.push(SessionConfig {
                hostname: base.hostname.clone(),
                connector: rc.name.clone(),
                max_command_line: base.limits.max_command_line,
                max_message_size: base.limits.max_message_size.0,
                max_recipients: base.limits.max_recipients,
                max_bad_commands: base.limits.max_bad_commands,
                bare_lf: match rc.bare_line_feed {
                    BareLineFeed::Reject => BareLf::Reject,
                    BareLineFeed::Normalize => BareLf::Normalize,
                },
                starttls: server.is_some() && !rc.implicit_tls,
                require_tls: rc.require_tls() && server.is_some(),
                auth,
                anonymous: rc.anonymous(),
            });
            tls.push(server);
        }
        Ok(Policy {
            limits: file.receive_connectors.iter().map(ConnectorLimits::from_config).collect(),
            connectors: ConnectorTable::from_config(&file),
            accepted: AcceptedDomains::from_config(&file),
            users: Users::from_config(&file),
            tls,
            certificates,
            session_configs,
            config: file,
        })
    }

    /// The longest `auth_lockout` of its connectors.
    fn lockout_max(&self) -> Duration {
        self.limits.iter().map(|l| l.auth_lockout).max().unwrap_or(Duration::ZERO)
    }
}

impl Shared {
    /// Builds everything from a validated configuration. TLS files are loaded here; errors
    /// name the file.
    pub fn build(config: Config) -> Result<Shared, String> {
        let policy = Policy::build(config.clone(), &config)?;
        Ok(Shared {
            auth_lockouts: AuthLockouts::new(policy.lockout_max()),
            auth_verify_slots: tokio::sync::Semaphore::new(auth_verify_concurrency(
                config.limits.auth_verify_concurrency,
            )),
            policy: RwLock::new(Arc::new(policy)),
            policy_generation: AtomicU64::new(0),
            source: None,
            config,
        })
    }

    /// Records where the configuration came from, for SIGHUP.
    pub fn with_source(mut self, source: Option<PathBuf>) -> Shared {
        self.source = source;
        self
    }

    /// The receive-side policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Changes whenever the policy is replaced: a core compares it with the generation of the
    /// policy it holds (one atomic load) before it serves a new connection.
    pub fn policy_generation(&self) -> u64 {
        self.policy_generation.load(Ordering::Acquire)
    }

    /// SIGHUP with a file that loads and validates: replaces the receive-side policy with the
    /// one `file` describes. Refused, leaving the policy in force, when the file changes what
    /// only a restart can change about the receive connectors (their names, order, `bind`,
    /// `implicit_tls`, `proxy_protocol`, `trusted_proxies`, `protocol_log`), or when its TLS
    /// files do not load. Other top-level parts that differ are reported as ignored.
    pub fn reload_policy(&self, file: Config) -> Result<Reloaded, String> {
        let running = &self.config;
        if file.receive_connectors.len() != running.receive_connectors.len() {
            return Err(format!(
                "the file has {} receive connectors where {} are running: adding or removing a connector needs a restart",
                file.receive_connectors.len(),
                running.receive_connectors.len()
            ));
        }
        for (i, (new, old)) in file.receive_connectors.iter().zip(&running.receive_connectors).enumerate() {
            let fixed = [
                ("name", new.name == old.name),
                ("bind", new.bind == old.bind),
                ("implicit_tls", new.implicit_tls == old.implicit_tls),
                ("proxy_protocol", new.proxy_protocol == old.proxy_protocol),
                ("trusted_proxies", new.trusted_proxies == old.trusted_proxies),
                ("protocol_log", new.protocol_log == old.protocol_log),
            ];
            if let Some((key, _)) = fixed.iter().find(|(_, same)| !same) {
                return Err(format!(
                    "receive_connector[{i}].{key} changed: that needs a restart (a reload may change a connector's \
                     ranges, permission groups, relay right, AUTH, TLS and limits, not its listener or logging)"
                ));
            }
        }
        let policy = Policy::build(file, running)?;
        let ignored = ignored_parts(running, &policy.config);
        self.auth_lockouts.set_lockout_max(policy.lockout_max().max(self.policy().lockout_max()));
        *self.policy.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(policy);
        self.policy_generation.fetch_add(1, Ordering::Release);
        Ok(Reloaded { ignored })
    }

    /// SIGHUP when the file does not load: reads every receive connector's certificate and key
    /// again, in the policy in force. A connector whose files do not load keeps its current
    /// certificate; the errors are returned.
    pub fn reload_certificates(&self) -> (usize, Vec<String>) {
        let mut reloaded = 0;
        let mut errors = Vec::new();
        for (i, cert) in self.policy().certificates.iter().enumerate() {
            let Some(cert) = cert else { continue };
            match cert.reload() {
                Ok(()) => reloaded += 1,
                Err(e) => {
                    errors.push(format!("receive_connector[{i}].tls: {e}; the previous certificate stays in use"))
                }
            }
        }
        (reloaded, errors)
    }
}

/// The top-level parts of `file` that differ from `running` and that a reload does not apply.
fn ignored_parts(running: &Config, file: &Config) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(running), serde_json::to_value(file))
    else {
        return Vec::new();
    };
    // `policy` holds check-config's bounds, which validated the new file: applied too.
    let reloaded = ["accepted_domains", "users", "receive_connector", "policy"];
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).filter(|k| !reloaded.contains(&k.as_str())).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter().filter(|k| old.get(*k) != new.get(*k)).cloned().collect()
}
