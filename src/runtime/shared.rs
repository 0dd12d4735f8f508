//! What every core reads and nobody writes after start: the configuration and what is built
//! from it once (connector table, accepted domains, users, TLS configs, session settings).

use std::sync::Arc;

use crate::config::{AuthMechanism, BareLineFeed, Config};
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
        Ok(Shared {
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
