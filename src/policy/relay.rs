//! Relay rights: may this session send to this recipient? `relay = "any"` connectors may send
//! anywhere; `relay = "accepted"` ones only to `accepted_domains` (exact or `*.` wildcard).
//! Everything else gets `550 5.7.54`: the rule that keeps ringrelay from being an open relay.

use crate::config::{Config, DomainPattern, Relay};
use crate::smtp::envelope::domain_of;
use crate::smtp::reply::{self, Reply};

/// The accepted domains, shared by all connectors.
#[derive(Debug, Clone, Default)]
pub struct AcceptedDomains {
    patterns: Vec<DomainPattern>,
}

impl AcceptedDomains {
    /// From the configuration.
    pub fn from_config(config: &Config) -> AcceptedDomains {
        AcceptedDomains { patterns: config.accepted_domains.clone() }
    }

    /// Is `domain` one of ours?
    pub fn contains(&self, domain: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(domain))
    }

    /// The RCPT decision for a connector with relay right `relay`.
    pub fn check_rcpt(&self, relay: Relay, address: &str) -> Result<(), Reply> {
        match relay {
            Relay::Any => Ok(()),
            Relay::Accepted if self.contains(domain_of(address)) => Ok(()),
            Relay::Accepted => Err(reply::RELAY_DENIED),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_only_unless_relay_any() {
        let a = AcceptedDomains { patterns: vec!["example.test".parse().unwrap(), "*.corp.test".parse().unwrap()] };
        assert!(a.check_rcpt(Relay::Accepted, "x@Example.Test").is_ok());
        assert!(a.check_rcpt(Relay::Accepted, "x@mail.corp.test").is_ok());
        assert_eq!(a.check_rcpt(Relay::Accepted, "x@corp.test"), Err(reply::RELAY_DENIED));
        assert_eq!(a.check_rcpt(Relay::Accepted, "x@gmail.test"), Err(reply::RELAY_DENIED));
        assert!(a.check_rcpt(Relay::Any, "x@gmail.test").is_ok());
    }
}
