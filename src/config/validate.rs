//! What a configuration means, checked once: refusals (errors) and risky-but-allowed settings
//! (warnings), each naming the key, why, and how to fix it. The headline refusal is the open
//! relay: an anonymous `relay = "any"` connector reachable from everywhere.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use ipnet::IpNet;

use super::{Config, DomainPattern, OutboundTls, Problem};

/// Errors refuse the configuration; warnings are printed.
#[derive(Debug, Default)]
pub struct Report {
    /// Refusals.
    pub errors: Vec<Problem>,
    /// Warnings.
    pub warnings: Vec<Problem>,
}

impl Report {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem { key: key.into(), message: message.into() });
    }
    fn warn(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem { key: key.into(), message: message.into() });
    }
}

/// Checks a parsed configuration.
pub fn validate(c: &Config) -> Report {
    let mut r = Report::default();
    general(c, &mut r);
    users(c, &mut r);
    receive_connectors(c, &mut r);
    send_connectors(c, &mut r);
    r
}

fn general(c: &Config, r: &mut Report) {
    if c.hostname.is_empty() || c.hostname.contains(|ch: char| ch.is_whitespace() || ch.is_control()) {
        r.error(
            "hostname",
            "must be a host name (it is sent in the banner and EHLO); set hostname = \"relay.example.test\"",
        );
    }
    if c.cores.smtp > 255 {
        r.error("cores.smtp", "at most 255 SMTP cores (queue ids carry the core number in 8 bits)");
    }
    if c.cores.delivery == 0 {
        r.error("cores.delivery", "at least 1 delivery core is needed, or nothing is ever delivered");
    }
    if !(512..=65536).contains(&c.limits.max_command_line) {
        r.error(
            "limits.max_command_line",
            "must be between 512 (RFC 5321 4.5.3.1.4 requires command lines of 512 octets to fit) and 65536",
        );
    }
    if c.limits.max_recipients == 0 {
        r.error("limits.max_recipients", "must be at least 1");
    } else if c.limits.max_recipients < 100 {
        r.warn("limits.max_recipients", "RFC 5321 4.5.3.1.8 asks servers to accept at least 100 recipients");
    }
    if c.limits.max_message_size.0 < 1024 {
        r.error("limits.max_message_size", "must be at least 1KiB");
    }
    if c.limits.command_timeout.get().as_secs() < 300 {
        r.warn("limits.command_timeout", "RFC 5321 4.5.3.2.7 asks for at least 5m while waiting for a command");
    }
    if c.limits.max_connections_per_core == 0 {
        r.error("limits.max_connections_per_core", "must be at least 1");
    }
    if c.spool.segment_size.0 < (1 << 20) {
        r.error("spool.segment_size", "must be at least 1MiB");
    }
    if c.spool.fsync == super::FsyncMode::Never {
        r.warn(
            "spool.fsync",
            "\"never\" acknowledges messages that a crash or power loss can lose; use it for benchmarks only",
        );
    }
    if let Some(dns) = &c.dns
        && dns.nameservers.is_empty()
    {
        r.error("dns.nameservers", "is empty; remove the [dns] table to use /etc/resolv.conf");
    }
    if c.admin.enabled && !c.admin.listen.ip().is_loopback() {
        r.warn(
            "admin.listen",
            "is not a loopback address: the admin endpoint can delete queued mail and has no authentication; \
             keep it on 127.0.0.1 or firewall it",
        );
    }
    if c.receive_connectors.is_empty() {
        r.error("receive_connector", "no [[receive_connector]]: nothing would listen. Add one (see README)");
    }
    accepted_domains(c, r);
}

/// `accepted_domains` are the domains anyone allowed on a connector may send to: `*` there
/// would make every `relay = "accepted"` connector relay anywhere (an anonymous one reachable
/// from everywhere is then an open relay that the open-relay check cannot see).
fn accepted_domains(c: &Config, r: &mut Report) {
    for (i, pattern) in c.accepted_domains.iter().enumerate() {
        let key = format!("accepted_domains[{i}]");
        match pattern {
            DomainPattern::Any => r.error(
                key,
                "`*` accepts every domain as one of ours: every connector with relay = \"accepted\" would relay to \
                 any domain, and an anonymous one would be an open relay. List your own domains (e.g. \
                 [\"example.test\", \"*.example.test\"]); for clients that must send anywhere, use relay = \"any\" on \
                 a connector whose remote_ip_ranges hold only those clients",
            ),
            DomainPattern::Subdomains(parent) if is_public_suffix_like(parent) => r.warn(
                key,
                format!(
                    "`*.{parent}` accepts every domain under the public suffix `{parent}` (other people's \
                     domains), so relay = \"accepted\" connectors relay to all of them; list your own domains \
                     instead (e.g. \"*.example.{parent}\")"
                ),
            ),
            _ => {}
        }
    }
}

/// A cheap public-suffix test, without the Public Suffix List: a single label (`com`, `test`),
/// or a two-letter country code under one of the usual second-level labels (`co.uk`,
/// `com.au`, `ac.jp`, `gov.br`...). Misses some, never flags a registrable domain of two
/// labels except such `co.uk`-shaped ones.
fn is_public_suffix_like(domain: &str) -> bool {
    const SECOND_LEVEL: &[&str] = &[
        "ac", "co", "com", "edu", "go", "gob", "gov", "gv", "ltd", "me", "mil", "ne", "net", "nic", "or", "org", "plc",
    ];
    match domain.split('.').collect::<Vec<_>>().as_slice() {
        [_] => true,
        [second, cc] => cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_alphabetic()) && SECOND_LEVEL.contains(second),
        _ => false,
    }
}

fn users(c: &Config, r: &mut Report) {
    let mut names = HashSet::new();
    for (i, u) in c.users.iter().enumerate() {
        let key = format!("users[{i}]");
        if u.name.is_empty() {
            r.error(format!("{key}.name"), "must not be empty");
        }
        if !names.insert(u.name.as_str()) {
            r.error(format!("{key}.name"), format!("`{}` is defined twice", u.name));
        }
        if let Err(why) = crate::policy::users::check_hash(&u.password_hash) {
            r.error(
                format!("{key}.password_hash"),
                format!("{why}; make one with `ringrelay hash-password` (it reads the password on stdin)"),
            );
        }
        if u.send_as.is_empty() {
            r.warn(format!("{key}.send_as"), "is empty: this user can authenticate but not send as anyone");
        }
    }
}

fn receive_connectors(c: &Config, r: &mut Report) {
    let mut names = HashSet::new();
    // Connectors by listening address, to check the ones that share one.
    let mut by_bind: HashMap<SocketAddr, Vec<usize>> = HashMap::new();
    let v4_min = c.policy.anonymous_relay_min_prefix_v4;
    let v6_min = c.policy.anonymous_relay_min_prefix_v6;
    for (i, rc) in c.receive_connectors.iter().enumerate() {
        let key = format!("receive_connector[{i}]");
        if rc.name.is_empty() {
            r.error(format!("{key}.name"), "must not be empty");
        }
        if !names.insert(rc.name.as_str()) {
            r.error(format!("{key}.name"), format!("`{}` is used by two connectors; names must be unique", rc.name));
        }
        if rc.bind.is_empty() {
            r.error(format!("{key}.bind"), "is empty: give at least one address:port to listen on");
        }
        for b in &rc.bind {
            by_bind.entry(*b).or_default().push(i);
        }
        if rc.remote_ip_ranges.is_empty() {
            r.error(
                format!("{key}.remote_ip_ranges"),
                "is empty: no client could ever use this connector; list the clients, e.g. [\"192.168.1.13/32\"]",
            );
        }
        for (field, nets) in [("remote_ip_ranges", &rc.remote_ip_ranges), ("trusted_proxies", &rc.trusted_proxies)] {
            for net in nets.iter().filter(|n| is_ipv4_mapped(n)) {
                r.error(
                    format!("{key}.{field}"),
                    format!(
                        "{net} is an IPv4-mapped IPv6 range, which never matches: IPv4 clients (also those that \
                         reach an IPv6 socket as ::ffff:a.b.c.d) are matched as IPv4. Write it as an IPv4 range"
                    ),
                );
            }
        }
        if rc.max_connections_per_source == Some(0) {
            r.error(
                format!("{key}.max_connections_per_source"),
                "is 0: every connection would be refused; use at least 1, or remove the key for no limit",
            );
        }
        if rc.permission_groups.is_empty() {
            r.error(format!("{key}.permission_groups"), "is empty: use [\"anonymous\"], [\"users\"] or both");
        }
        if rc.implicit_tls && rc.tls.is_none() {
            r.error(format!("{key}.implicit_tls"), "needs tls = { cert = \"...\", key = \"...\" }");
        }
        // With the "users" group, the missing tls is refused below (require_tls defaults to
        // true there); an anonymous connector asking for TLS without a certificate would
        // otherwise run without TLS and without requiring it.
        if rc.require_tls() && rc.tls.is_none() && !rc.users() {
            r.error(
                format!("{key}.require_tls"),
                "is true but the connector has no tls: without a certificate STARTTLS cannot be offered, and mail \
                 would be taken in clear after all. Add tls = { cert = \"/etc/ringrelay/cert.pem\", key = \"/etc/ringrelay/key.pem\" }, or remove \
                 require_tls",
            );
        }
        if let Some(files) = &rc.tls
            && let Err(why) = crate::tls::load_server_config(files)
        {
            r.error(format!("{key}.tls"), why);
        }
        if rc.users() {
            if c.users.is_empty() {
                r.warn(format!("{key}.permission_groups"), "includes \"users\" but no [[users]] are defined");
            }
            if rc.auth.is_empty() {
                r.error(
                    format!("{key}.auth"),
                    "is empty on a connector with the \"users\" group: offer [\"plain\", \"login\"]",
                );
            }
            if rc.tls.is_none() {
                r.error(
                    format!("{key}.tls"),
                    "is missing on a connector with the \"users\" group: AUTH would send passwords in clear. \
                     Add tls = { cert = \"/etc/ringrelay/cert.pem\", key = \"/etc/ringrelay/key.pem\" }",
                );
            } else if !rc.require_tls() && !rc.implicit_tls {
                r.warn(
                    format!("{key}.require_tls"),
                    "is false: AUTH is offered before STARTTLS and passwords can cross the network in clear",
                );
            }
        }
        if rc.max_auth_failures == 0 && rc.users() {
            r.error(
                format!("{key}.max_auth_failures"),
                "must be at least 1 (failed AUTH attempts from one address before its lockout), e.g. 5",
            );
        }
        if rc.auth_lockout.get().is_zero() && rc.users() {
            r.error(
                format!("{key}.auth_lockout"),
                "is 0: password guessing would never be slowed down; use a duration such as \"5m\"",
            );
        }
        if rc.proxy_protocol && rc.trusted_proxies.is_empty() {
            let risk = if rc.anonymous() {
                "anonymous relay behind a load balancer must name the load balancer: with no trusted_proxies every \
                 connection is refused; with a wrong one the relay would trust forged client addresses"
            } else {
                "no trusted_proxies: every connection will be refused"
            };
            r.warn(format!("{key}.trusted_proxies"), risk);
        }
        if !rc.proxy_protocol && !rc.trusted_proxies.is_empty() {
            r.warn(format!("{key}.trusted_proxies"), "is set but proxy_protocol is false: it has no effect");
        }
        // Behind a PROXY header, the client address is whatever a trusted proxy says: a wide
        // trusted_proxies range lets anyone in it claim to be one of the relay's devices.
        if rc.anonymous() && rc.relay == super::Relay::Any && rc.proxy_protocol && !rc.open_relay {
            for net in &rc.trusted_proxies {
                let wide = match net {
                    IpNet::V4(n) => n.prefix_len() < v4_min,
                    IpNet::V6(n) => n.prefix_len() < v6_min,
                };
                if wide {
                    r.error(
                        format!("{key}.trusted_proxies"),
                        format!(
                            "{net} is wider than the sanity bound on an anonymous relay = \"any\" connector with \
                             proxy_protocol = true: any host in it could send a PROXY header claiming to be one of \
                             the addresses in remote_ip_ranges, and relay anywhere (an open relay). List only your \
                             load balancers' addresses (e.g. [\"10.0.0.1/32\"]), or set open_relay = true on this \
                             connector if you really mean it."
                        ),
                    );
                }
            }
        }
        // The open-relay check.
        if rc.anonymous() && rc.relay == super::Relay::Any {
            for net in &rc.remote_ip_ranges {
                let (min, wide) = match net {
                    IpNet::V4(n) => (v4_min, n.prefix_len() < v4_min),
                    IpNet::V6(n) => {
                        // ::ffff:0:0/96 and wider cover all of IPv4 as mapped addresses.
                        (v6_min, n.prefix_len() < v6_min)
                    }
                };
                if wide && !rc.open_relay {
                    let every = net.prefix_len() == 0;
                    r.error(
                        format!("{key}.remote_ip_ranges"),
                        format!(
                            "{net} {} with permission_groups = [\"anonymous\"] and relay = \"any\": this is an open \
                             relay, which spammers find within hours. Narrow remote_ip_ranges to your devices' \
                             addresses (at most /{min} wide), or use relay = \"accepted\", or require AUTH with \
                             permission_groups = [\"users\"]. If you really mean it, set open_relay = true on this \
                             connector.",
                            if every { "is the whole Internet" } else { "is wider than the sanity bound" }
                        ),
                    );
                } else if wide {
                    r.warn(
                        format!("{key}.open_relay"),
                        format!("is true: anonymous clients from {net} may relay to any domain"),
                    );
                }
            }
        }
    }
    // Connectors sharing an address.
    for (addr, list) in by_bind {
        if list.len() < 2 {
            continue;
        }
        let first = &c.receive_connectors[list[0]];
        for &j in &list[1..] {
            let other = &c.receive_connectors[j];
            if other.proxy_protocol != first.proxy_protocol || other.trusted_proxies != first.trusted_proxies {
                r.error(
                    format!("receive_connector[{j}].proxy_protocol"),
                    format!(
                        "connectors `{}` and `{}` share {addr} but differ in proxy_protocol/trusted_proxies; the PROXY \
                         header is read before the connector is chosen, so they must agree",
                        first.name, other.name
                    ),
                );
            }
            if other.implicit_tls != first.implicit_tls {
                r.error(
                    format!("receive_connector[{j}].implicit_tls"),
                    format!("connectors `{}` and `{}` share {addr} but differ in implicit_tls", first.name, other.name),
                );
            }
        }
        // The same range on two connectors of one address: which one wins would be arbitrary.
        let mut seen: HashMap<IpNet, &str> = HashMap::new();
        for &j in &list {
            let rc = &c.receive_connectors[j];
            for net in &rc.remote_ip_ranges {
                let net = net.trunc();
                if let Some(prev) = seen.insert(net, &rc.name)
                    && prev != rc.name
                {
                    r.error(
                        format!("receive_connector[{j}].remote_ip_ranges"),
                        format!(
                            "{net} is also a range of connector `{prev}` on {addr}; the most specific range picks the \
                             connector, so two connectors cannot have the same one"
                        ),
                    );
                }
            }
        }
    }
}

/// `::ffff:a.b.c.d/n` with n >= 96: a range of IPv4 addresses written as IPv6.
fn is_ipv4_mapped(net: &IpNet) -> bool {
    match net {
        IpNet::V6(n) => n.prefix_len() >= 96 && n.network().to_ipv4_mapped().is_some(),
        IpNet::V4(_) => false,
    }
}

fn send_connectors(c: &Config, r: &mut Report) {
    let mut names = HashSet::new();
    for (i, sc) in c.send_connectors.iter().enumerate() {
        let key = format!("send_connector[{i}]");
        if !names.insert(sc.name.as_str()) {
            r.error(format!("{key}.name"), format!("`{}` is used by two send connectors", sc.name));
        }
        if sc.domains.is_empty() {
            r.error(format!("{key}.domains"), "is empty: use [\"example.test\"], [\"*.example.test\"] or [\"*\"]");
        }
        if sc.max_connections_per_domain == 0 {
            r.error(format!("{key}.max_connections_per_domain"), "must be at least 1");
        }
        if sc.max_messages_per_connection == 0 {
            r.error(format!("{key}.max_messages_per_connection"), "must be at least 1");
        }
        let retry = sc.retry;
        if retry.first > retry.max || retry.max > retry.expire {
            r.error(format!("{key}.retry"), "must satisfy first <= max <= expire");
        }
        if retry.first.get().as_millis() == 0 {
            r.error(format!("{key}.retry.first"), "must be more than 0");
        }
        if let Some(auth) = &sc.auth {
            if sc.smart_hosts.is_empty() {
                r.error(format!("{key}.auth"), "credentials are only sent to smart hosts; add smart_hosts");
            }
            if sc.tls == OutboundTls::Off {
                r.error(
                    format!("{key}.tls"),
                    "is \"off\" but auth is set: the password would cross the network in clear. Use \"required\"",
                );
            }
            match (&auth.password_file, &auth.password) {
                (None, None) => {
                    r.error(format!("{key}.auth"), "needs password_file = \"/etc/ringrelay/smarthost.pass\"")
                }
                (Some(p), _) => {
                    if let Err(e) = std::fs::read_to_string(p) {
                        r.error(format!("{key}.auth.password_file"), format!("{}: {e}", p.display()));
                    }
                }
                (None, Some(_)) => r.warn(
                    format!("{key}.auth.password"),
                    "a password in the configuration file: prefer password_file with mode 0600",
                ),
            }
        }
        if let Some(ca) = &sc.tls_ca_file
            && let Err(why) = crate::tls::load_ca_file(ca)
        {
            r.error(format!("{key}.tls_ca_file"), why);
        }
    }
}
