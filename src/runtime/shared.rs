//! What every core reads and nobody writes after start: the configuration and what is built
//! from it once (connector table, accepted domains, users, TLS configs, session settings,
//! per-connector limits). One exception, on purpose: the AUTH lockout table
//! (`AuthLockouts`) is process-wide, behind a mutex that the common path never takes.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{AuthMechanism, BareLineFeed, Config};
use crate::policy::limits::{AuthFailures, ConnectorLimits};
use crate::policy::receive::ConnectorTable;
use crate::policy::relay::AcceptedDomains;
use crate::policy::users::Users;
use crate::smtp::SessionConfig;
use crate::smtp::auth::Mechanism;
use crate::smtp::scanner::BareLf;

/// Read-only state shared by all cores.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// Receive-connector choice.
    pub connectors: ConnectorTable,
    /// Accepted domains.
    pub accepted: AcceptedDomains,
    /// Accounts.
    pub users: Users,
    /// TLS server config per receive connector (None: no certificate).
    pub tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    /// The certificates behind `tls`, replaced on SIGHUP (`reload_certificates`).
    pub certificates: Vec<Option<Arc<crate::tls::ReloadableCert>>>,
    /// Session settings per receive connector.
    pub session_configs: Vec<SessionConfig>,
    /// Abuse limits per receive connector.
    pub limits: Vec<ConnectorLimits>,
    /// Failed AUTH attempts and lockouts, for the whole process.
    pub auth_lockouts: AuthLockouts,
    /// Permits for argon2 verifications running at once, process-wide
    /// (`limits.auth_verify_concurrency`).
    pub auth_verify_slots: tokio::sync::Semaphore,
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
    /// The longest `auth_lockout` of any connector (how long an entry can matter).
    lockout_max: Duration,
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
            lockout_max,
        }
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
            state.table.sweep(self.lockout_max, now);
            state.swept_at = Some(now);
        }
        self.tracked.store(state.table.len(), Ordering::Release);
        r
    }
}

impl Shared {
    /// Builds everything from a validated configuration. TLS files are loaded here; errors
    /// name the file.
    pub fn build(config: Config) -> Result<Shared, String> {
        let mut tls = Vec::new();
        let mut certificates = Vec::new();
        let mut session_configs = Vec::new();
        for (i, rc) in config.receive_connectors.iter().enumerate() {
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
                hostname: config.hostname.clone(),
                connector: rc.name.clone(),
                max_command_line: config.limits.max_command_line,
                max_message_size: config.limits.max_message_size.0,
                max_recipients: config.limits.max_recipients,
                max_bad_commands: config.limits.max_bad_commands,
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
        let limits: Vec<ConnectorLimits> = config.receive_connectors.iter().map(ConnectorLimits::from_config).collect();
        let lockout_max = limits.iter().map(|l| l.auth_lockout).max().unwrap_or(Duration::ZERO);
        Ok(Shared {
            auth_lockouts: AuthLockouts::new(lockout_max),
            auth_verify_slots: tokio::sync::Semaphore::new(auth_verify_concurrency(
                config.limits.auth_verify_concurrency,
            )),
            limits,
            connectors: ConnectorTable::from_config(&config),
            accepted: AcceptedDomains::from_config(&config),
            users: Users::from_config(&config),
            tls,
            certificates,
            session_configs,
            config,
        })
    }

    /// SIGHUP: reads every receive connector's certificate and key again. A connector whose
    /// files do not load keeps its current certificate; the errors are returned.
    pub fn reload_certificates(&self) -> (usize, Vec<String>) {
        let mut reloaded = 0;
        let mut errors = Vec::new();
        for (i, cert) in self.certificates.iter().enumerate() {
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
