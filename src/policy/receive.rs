//! Receive-connector choice, as Exchange does it: several connectors may share an
//! address:port; a connection belongs to the connector whose `remote_ip_ranges` holds the
//! client with the most specific prefix. No match: `554 5.7.1` and close. Also what holds for
//! a listening address before any connector is chosen: whether a PROXY header comes first,
//! and from whom (check-config makes the connectors sharing an address agree on it).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::config::Config;

/// For each listening address, the connectors' ranges, most specific first.
#[derive(Debug, Clone, Default)]
pub struct ConnectorTable {
    by_bind: BTreeMap<SocketAddr, Vec<(IpNet, usize)>>,
    proxy_by_bind: BTreeMap<SocketAddr, ProxyPolicy>,
}

/// The PROXY protocol settings of a listening address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyPolicy {
    /// A PROXY header is expected before anything else.
    pub required: bool,
    /// TCP peers allowed to send it.
    pub trusted: Vec<IpNet>,
}

impl ConnectorTable {
    /// Builds the table from the configuration's receive connectors.
    pub fn from_config(config: &Config) -> ConnectorTable {
        let mut by_bind: BTreeMap<SocketAddr, Vec<(IpNet, usize)>> = BTreeMap::new();
        let mut proxy_by_bind: BTreeMap<SocketAddr, ProxyPolicy> = BTreeMap::new();
        for (i, rc) in config.receive_connectors.iter().enumerate() {
            for bind in &rc.bind {
                let ranges = by_bind.entry(*bind).or_default();
                ranges.extend(rc.remote_ip_ranges.iter().map(|n| (n.trunc(), i)));
                // Connectors sharing an address agree (check-config); should they not, the
                // stricter reading wins: a header is required if any of them requires one,
                // and only proxies every one of them trusts are trusted.
                let p = proxy_by_bind.entry(*bind).or_insert_with(|| ProxyPolicy {
                    required: rc.proxy_protocol,
                    trusted: rc.trusted_proxies.clone(),
                });
                p.required |= rc.proxy_protocol;
                p.trusted.retain(|n| rc.trusted_proxies.contains(n));
            }
        }
        for ranges in by_bind.values_mut() {
            // Longest prefix first; IPv4 and IPv6 never compete for the same client.
            ranges.sort_by_key(|r| std::cmp::Reverse(r.0.prefix_len()));
        }
        ConnectorTable { by_bind, proxy_by_bind }
    }

    /// The PROXY protocol settings of a listening address.
    pub fn proxy(&self, bind: SocketAddr) -> Option<&ProxyPolicy> {
        self.proxy_by_bind.get(&bind).filter(|p| p.required)
    }

    /// The distinct addresses to listen on.
    pub fn binds(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.by_bind.keys().copied()
    }

    /// The connector (index into `config.receive_connectors`) for a client that connected to
    /// `bind`. IPv4-mapped IPv6 clients (`::ffff:a.b.c.d`) are matched as IPv4.
    pub fn select(&self, bind: SocketAddr, client: IpAddr) -> Option<usize> {
        let client = client.to_canonical();
        self.by_bind.get(&bind)?.iter().find(|(net, _)| net.contains(&client)).map(|&(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn most_specific_prefix_wins() {
        let text = r#"
[[receive_connector]]
name = "wide"
bind = ["127.0.0.1:2526"]
remote_ip_ranges = ["127.0.0.0/8", "::/0"]
relay = "accepted"
[[receive_connector]]
name = "narrow"
bind = ["127.0.0.1:2526", "127.0.0.1:2527"]
remote_ip_ranges = ["127.0.0.2/32", "::1/128"]
relay = "any"
"#;
        let c = Config::parse(text, Path::new("t")).unwrap();
        let t = ConnectorTable::from_config(&c);
        let b: SocketAddr = "127.0.0.1:2526".parse().unwrap();
        let b2: SocketAddr = "127.0.0.1:2527".parse().unwrap();
        assert_eq!(t.select(b, "127.0.0.1".parse().unwrap()), Some(0));
        assert_eq!(t.select(b, "127.0.0.2".parse().unwrap()), Some(1));
        assert_eq!(t.select(b, "::ffff:127.0.0.2".parse().unwrap()), Some(1), "mapped IPv4");
        assert_eq!(t.select(b, "::1".parse().unwrap()), Some(1));
        assert_eq!(t.select(b, "2001:db8::1".parse().unwrap()), Some(0));
        assert_eq!(t.select(b2, "127.0.0.1".parse().unwrap()), None);
        assert_eq!(t.select(b2, "127.0.0.2".parse().unwrap()), Some(1));
        assert_eq!(t.binds().count(), 2);
        assert_eq!(t.proxy(b), None);
    }

    #[test]
    fn proxy_settings_per_listening_address() {
        let text = r#"
[[receive_connector]]
name = "behind-lb"
bind = ["127.0.0.1:2526"]
remote_ip_ranges = ["192.0.2.0/24"]
proxy_protocol = true
trusted_proxies = ["127.0.0.1/32"]
[[receive_connector]]
name = "direct"
bind = ["127.0.0.1:2527"]
remote_ip_ranges = ["127.0.0.0/8"]
"#;
        let c = Config::parse(text, Path::new("t")).unwrap();
        let t = ConnectorTable::from_config(&c);
        let p = t.proxy("127.0.0.1:2526".parse().unwrap()).unwrap();
        assert_eq!(p.trusted, vec!["127.0.0.1/32".parse::<IpNet>().unwrap()]);
        assert_eq!(t.proxy("127.0.0.1:2527".parse().unwrap()), None);
    }
}
