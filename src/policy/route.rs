//! Outbound routing, pure: which `[[send_connector]]` serves a destination domain, where its
//! mail goes (smart hosts in order, or the domain's MX hosts, or an address literal), the
//! ordered host list from an MX answer (RFC 5321 5.1, RFC 7505 null MX), and what a failure
//! means for the next attempt (next host now, retry later, or bounce). The runtime does the
//! DNS queries and the connecting, and asks here what the answers mean.
//!
//! A `Destination` is what a delivery core keeps one ready queue, one connection pool (capped
//! by `max_connections_per_domain`) and one "unreachable" mark for: a recipient domain for MX
//! and address-literal delivery, but the connector itself for smart hosts, so that every
//! domain routed to a smart host (`domains = ["*"]` to a provider relay) shares its pooled
//! connections, and one transaction per message carries every recipient routed there.
//!
//! Decisions where the RFCs leave room:
//! - Connector choice: the most specific matching pattern wins (exact, then the longest
//!   `*.suffix`, then `*`); a tie goes to the connector written first. No match: MX delivery
//!   with the default settings of a send connector (port 25, opportunistic TLS, default retry).
//! - MX records are ordered by preference, shuffled within equal preference by a seeded RNG
//!   (deterministic in tests, spread in production), de-duplicated (lowest preference kept),
//!   and capped at `MX_HOSTS_MAX` hosts.
//! - A null MX (RFC 7505: one record, exchange ".") fails permanently with `556 5.1.10`. A "."
//!   among other records is ignored (the domain is misconfigured, the other hosts still work).
//! - An MX exchange that is an IP address is invalid (RFC 5321 5.1 wants a domain name) but
//!   tolerated: the domain owner's intent is unambiguous and an A lookup of the literal would
//!   fail anyway. `Target::ip_literal_mx` lets the runtime log it.
//! - Our own host name in the MX list: it and every host of equal or higher preference are
//!   dropped (RFC 5321 5.1); nothing left means the mail would loop: `554 5.4.6`.
//! - NXDOMAIN for the domain fails permanently (`550 5.1.2`); no MX records falls back to the
//!   domain's own A/AAAA (the "implicit MX", RFC 5321 5.1); a DNS error defers (`451 4.4.3`).

use std::net::{IpAddr, Ipv6Addr};

use crate::config::{Config, HostPort, SendConnector};
use crate::delivery::client::{Cause, CloseReason, RecipientOutcome, RecipientStatus, Stage, Tls};
use crate::delivery::reply::EnhancedCode;
use crate::smtp::reply::Reply;

/// Most hosts taken from one MX answer.
pub const MX_HOSTS_MAX: usize = 20;

// ---- the routing replies: one table --------------------------------------------------------------

/// RFC 7505 3: the domain says it accepts no mail.
pub const NULL_MX: Reply =
    Reply { code: 556, status: "5.1.10", text: "Recipient domain does not accept mail (null MX)" };
/// NXDOMAIN for the recipient domain.
pub const NO_SUCH_DOMAIN: Reply = Reply { code: 550, status: "5.1.2", text: "Recipient domain does not exist" };
/// The MX list leads back to us.
pub const MX_LOOP: Reply =
    Reply { code: 554, status: "5.4.6", text: "Mail for the recipient domain loops back to this relay" };
/// The MX (or A/AAAA) lookup failed for now.
pub const DNS_TEMPORARY: Reply =
    Reply { code: 451, status: "4.4.3", text: "DNS lookup of the recipient domain failed temporarily" };
/// Every record of the MX answer was unusable.
pub const NO_USABLE_MX: Reply =
    Reply { code: 451, status: "4.4.4", text: "No usable MX host for the recipient domain" };

/// Every routing reply, for the table test and documentation.
pub const ALL: &[Reply] = &[NULL_MX, NO_SUCH_DOMAIN, MX_LOOP, DNS_TEMPORARY, NO_USABLE_MX];

// ---- connector choice ---------------------------------------------------------------------------

/// Where a recipient's mail is queued and pooled (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A recipient domain (lowercase, no trailing dot), delivered by MX lookup or to its
    /// address literal: its own queue and connection pool.
    Domain(String),
    /// The smart hosts of the send connector of this name: one queue and one pool for every
    /// domain the connector serves.
    SmartHosts(String),
}

impl Destination {
    /// The recipient domain, for a per-domain destination.
    pub fn domain(&self) -> Option<&str> {
        match self {
            Destination::Domain(d) => Some(d),
            Destination::SmartHosts(_) => None,
        }
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Domain(d) => f.write_str(d),
            Destination::SmartHosts(c) => write!(f, "smart hosts of connector {c:?}"),
        }
    }
}

/// The destination of mail for `domain` under `connectors` (the pure form of
/// `Router::destination`, for the SMTP cores' hand-off, which has no router of its own).
pub fn destination(connectors: &[SendConnector], domain: &str) -> Destination {
    match select(connectors, domain) {
        Some(c) if !c.smart_hosts.is_empty() => Destination::SmartHosts(c.name.clone()),
        _ => Destination::Domain(domain.trim_end_matches('.').to_ascii_lowercase()),
    }
}

/// The send connectors, and the default used when none matches.
#[derive(Debug, Clone)]
pub struct Router {
    connectors: Vec<SendConnector>,
    default: SendConnector,
}

/// Where mail for a domain goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop<'a> {
    /// The connector's smart hosts, in order (failover).
    SmartHosts(&'a [HostPort]),
    /// The domain's MX hosts (`mx_targets` on the MX answer).
    Mx,
    /// The domain is an address literal (`user@[192.0.2.1]`): that address, no DNS.
    AddressLiteral(IpAddr),
}

/// The routing decision for one destination domain.
#[derive(Debug, Clone, Copy)]
pub struct Route<'a> {
    /// The connector whose settings apply (TLS, retry, connection limits, auth).
    pub connector: &'a SendConnector,
    /// False when no configured connector matched and the default applies.
    pub configured: bool,
    /// Where to connect.
    pub next_hop: NextHop<'a>,
}

impl Route<'_> {
    /// The STARTTLS policy for the client.
    pub fn tls(&self) -> Tls {
        self.connector.tls.into()
    }
}

impl Router {
    /// A router over `connectors` (in configuration order).
    pub fn new(connectors: &[SendConnector]) -> Router {
        Router { connectors: connectors.to_vec(), default: default_connector() }
    }

    /// The router of a configuration.
    pub fn from_config(config: &Config) -> Router {
        Router::new(&config.send_connectors)
    }

    /// The connector used when none matches.
    pub fn default_connector(&self) -> &SendConnector {
        &self.default
    }

    /// The destination (queue and pool) of mail for `domain`.
    pub fn destination(&self, domain: &str) -> Destination {
        destination(&self.connectors, domain)
    }

    /// The connector whose settings apply to a destination: the named one for smart hosts,
    /// the routed one for a domain.
    pub fn connector(&self, destination: &Destination) -> &SendConnector {
        match destination {
            Destination::Domain(d) => self.route(d).connector,
            Destination::SmartHosts(name) => self.connectors.iter().find(|c| c.name == *name).unwrap_or(&self.default),
        }
    }

    /// Routes mail for `domain` (the part after the last `@` of a recipient).
    pub fn route(&self, domain: &str) -> Route<'_> {
        let (connector, configured) = match select(&self.connectors, domain) {
            Some(c) => (c, true),
            None => (&self.default, false),
        };
        let next_hop = if !connector.smart_hosts.is_empty() {
            NextHop::SmartHosts(&connector.smart_hosts)
        } else if let Some(ip) = address_literal(domain) {
            NextHop::AddressLiteral(ip)
        } else {
            NextHop::Mx
        };
        Route { connector, configured, next_hop }
    }
}

/// The connector for `domain`: the one with the most specific matching pattern; the first
/// written wins a tie. None when nothing matches.
pub fn select<'a>(connectors: &'a [SendConnector], domain: &str) -> Option<&'a SendConnector> {
    let mut best: Option<(usize, &SendConnector)> = None;
    for c in connectors {
        let Some(spec) = c.domains.iter().filter(|p| p.matches(domain)).map(|p| p.specificity()).max() else {
            continue;
        };
        if best.is_none_or(|(b, _)| spec > b) {
            best = Some((spec, c));
        }
    }
    best.map(|(_, c)| c)
}

/// A send connector with every default (what a `[[send_connector]]` with only a name and
/// `domains = ["*"]` would be), so the defaults live in one place: `config`.
fn default_connector() -> SendConnector {
    toml::from_str("name = \"default\"\ndomains = [\"*\"]\n").expect("the default send connector parses")
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 4.1.3) → the address.
pub fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("IPv6:") => inner[5..].parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

// ---- host lists ---------------------------------------------------------------------------------

/// A host to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Host name to resolve (lowercase, no trailing dot), or the address as text.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// Known address (an IP literal host): no A/AAAA lookup needed.
    pub ip: Option<IpAddr>,
    /// The MX preference (None for smart hosts and the implicit MX).
    pub preference: Option<u16>,
    /// The domain itself, because it has no MX records (RFC 5321 5.1).
    pub implicit_mx: bool,
    /// An MX record named an IP address (invalid, tolerated).
    pub ip_literal_mx: bool,
}

impl Target {
    fn named(host: &str, port: u16) -> Target {
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        Target {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
            ip: bare.parse().ok(),
            preference: None,
            implicit_mx: false,
            ip_literal_mx: false,
        }
    }
}

/// The smart hosts of a connector, in order; a host written without a port gets the
/// connector's `port`.
pub fn smart_host_targets(connector: &SendConnector) -> Vec<Target> {
    connector.smart_hosts.iter().map(|h| Target::named(&h.host, h.port.unwrap_or(connector.port))).collect()
}

/// The target for an address-literal domain.
pub fn literal_target(ip: IpAddr, port: u16) -> Target {
    Target { ip: Some(ip), ..Target::named(&ip.to_string(), port) }
}

/// One MX record, as DNS gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    /// Lower is tried first.
    pub preference: u16,
    /// The host name (a trailing dot is fine).
    pub exchange: String,
}

/// The answer to the MX query for a domain.
#[derive(Debug, Clone, Copy)]
pub enum MxAnswer<'a> {
    /// The records.
    Records(&'a [MxRecord]),
    /// The domain exists and has no MX records (NOERROR, no data).
    NoRecords,
    /// The domain does not exist (NXDOMAIN).
    NxDomain,
    /// SERVFAIL, timeout, or another temporary DNS error.
    TempFail,
}

/// Why a domain cannot be routed now: the reply for its recipients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteError {
    /// From the table above.
    pub reply: Reply,
}

impl RouteError {
    /// 5xx: bounce; 4xx: retry later.
    pub fn verdict(self) -> Verdict {
        if self.reply.code >= 500 { Verdict::Fail } else { Verdict::Defer }
    }
}

/// The hosts to try for `domain`, in order, from its MX answer. `local_names` are our own
/// host names (loop detection); `seed` drives the shuffle among equal preferences (pass
/// something that varies per attempt, e.g. the queue id mixed with the attempt number).
pub fn mx_targets(
    domain: &str,
    answer: MxAnswer<'_>,
    port: u16,
    local_names: &[&str],
    seed: u64,
) -> Result<Vec<Target>, RouteError> {
    let records = match answer {
        MxAnswer::Records(r) if !r.is_empty() => r,
        MxAnswer::Records(_) | MxAnswer::NoRecords => {
            return Ok(vec![Target { implicit_mx: true, ..Target::named(domain, port) }]);
        }
        MxAnswer::NxDomain => return Err(RouteError { reply: NO_SUCH_DOMAIN }),
        MxAnswer::TempFail => return Err(RouteError { reply: DNS_TEMPORARY }),
    };
    let is_null = |r: &MxRecord| r.exchange.trim_end_matches('.').is_empty();
    if records.len() == 1 && is_null(&records[0]) {
        return Err(RouteError { reply: NULL_MX });
    }
    let mut hosts: Vec<Target> = Vec::with_capacity(records.len().min(MX_HOSTS_MAX));
    let mut sorted: Vec<&MxRecord> = records.iter().filter(|r| !is_null(r)).collect();
    // A stable base order whatever order DNS answered in: the shuffle below is then a pure
    // function of the seed.
    sorted.sort_by(|a, b| (a.preference, &a.exchange).cmp(&(b.preference, &b.exchange)));
    for r in sorted {
        let mut t = Target::named(&r.exchange, port);
        if hosts.iter().any(|h| h.host == t.host) {
            continue; // listed twice: the lower preference (seen first) stays
        }
        t.preference = Some(r.preference);
        t.ip_literal_mx = t.ip.is_some();
        hosts.push(t);
    }
    let me = |h: &Target| local_names.iter().any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(&h.host));
    if let Some(own) = hosts.iter().find(|h| me(h)).and_then(|h| h.preference) {
        hosts.retain(|h| h.preference.is_some_and(|p| p < own));
        if hosts.is_empty() {
            return Err(RouteError { reply: MX_LOOP });
        }
    }
    if hosts.is_empty() {
        return Err(RouteError { reply: NO_USABLE_MX });
    }
    shuffle_equal_preferences(&mut hosts, seed);
    hosts.truncate(MX_HOSTS_MAX);
    Ok(hosts)
}

/// Fisher-Yates within each run of equal preference (the list is sorted by preference).
fn shuffle_equal_preferences(hosts: &mut [Target], seed: u64) {
    let mut rng = SplitMix64(seed);
    let mut start = 0;
    while start < hosts.len() {
        let pref = hosts[start].preference;
        let end = start + hosts[start..].iter().take_while(|h| h.preference == pref).count();
        for i in (start + 1..end).rev() {
            let j = start + (rng.next() % (i - start + 1) as u64) as usize;
            hosts.swap(i, j);
        }
        start = end;
    }
}

/// A tiny, well-known generator (Steele, Lea, Flood 2014): enough to spread load, and
/// reproducible from the seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

// ---- what a failure means -----------------------------------------------------------------------

/// What went wrong, as the runtime sees it.
#[derive(Debug, Clone, Copy)]
pub enum Failure<'a> {
    /// The host's A/AAAA lookup failed or found nothing.
    HostLookup,
    /// TCP connect refused, unreachable, reset or timed out.
    Connect,
    /// The TLS handshake after STARTTLS failed.
    TlsHandshake,
    /// The client session closed before the recipients could be tried (`Event::Closed` before
    /// `Event::Ready`, or a pooled connection that closed while idle).
    Closed(&'a CloseReason),
    /// One recipient's outcome in a transaction.
    Recipient {
        /// The outcome.
        outcome: &'a RecipientOutcome,
        /// Some recipient of the same transaction was delivered: the transaction made progress,
        /// so a "too many recipients" refusal can be answered with a new transaction at once.
        progress: bool,
    },
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing: delivered, or a normal end.
    Done,
    /// Try the next host of the destination now (RFC 5321 5.1). When no host is left, defer
    /// (`Verdict::hosts_exhausted`).
    NextHost,
    /// This host cannot take the message (it lacks SMTPUTF8 or 8BITMIME, or its SIZE is too
    /// small; decided before any command was sent): try the other hosts of the destination
    /// now; when none is left, fail with the same reply (`Verdict::hosts_exhausted`).
    NextHostOrFail,
    /// Send this recipient again in a new transaction now: the server took part of the
    /// recipients and refused the rest as too many (452, RFC 5321 4.5.3.1.10).
    NextTransaction,
    /// Keep it for the retry schedule.
    Defer,
    /// Permanent failure: bounce (DSN) and forget.
    Fail,
}

impl Verdict {
    /// What `NextHost` and `NextHostOrFail` become once every host was tried.
    pub fn hosts_exhausted(self) -> Verdict {
        match self {
            Verdict::NextHost => Verdict::Defer,
            Verdict::NextHostOrFail => Verdict::Fail,
            other => other,
        }
    }
}

/// The meaning of a failure for the next attempt.
///
/// - Connection-level trouble (DNS of the host, connect, TLS handshake, a greeting, EHLO,
///   STARTTLS or AUTH refusal with 4xx or 5xx, TLS required but not offered, protocol errors,
///   drops and timeouts before any recipient was decided) tries the next host: RFC 5321 5.1
///   for connection failures; a 5xx greeting is skipped too, as Postfix does by default, so
///   one broken MX cannot bounce mail another MX would take.
/// - 421 before the message content was sent: next host. After it: defer.
/// - A recipient's 5xx (or a local permanent decision about an address) is final: fail.
/// - A local decision that this host cannot take the message (`Cause::Capability`: no
///   SMTPUTF8, no 8BITMIME for 8-bit content, SIZE too small) tries the other hosts, and fails
///   only when none is left (RFC 6152 3, RFC 6531 3.4, RFC 1870 6: another MX or smart host
///   of the destination may well take it).
/// - A 4xx at MAIL, RCPT, DATA or the final reply: defer (greylisting and full mailboxes are
///   the same on every MX of a domain).
/// - 452 (4.5.3, or no enhanced code) at RCPT with progress: a new transaction now.
/// - A drop, timeout or protocol error after the whole content was sent: defer (the message
///   may have been delivered; RFC 1047). Before that: next host.
pub fn classify(failure: Failure<'_>) -> Verdict {
    match failure {
        Failure::HostLookup | Failure::Connect | Failure::TlsHandshake => Verdict::NextHost,
        Failure::Closed(CloseReason::Quit) => Verdict::Done,
        Failure::Closed(CloseReason::Failed { .. }) => Verdict::NextHost,
        Failure::Recipient { outcome, progress } => classify_recipient(outcome, progress),
    }
}

fn classify_recipient(o: &RecipientOutcome, progress: bool) -> Verdict {
    match o.status {
        RecipientStatus::Delivered => return Verdict::Done,
        RecipientStatus::Failed if o.cause == Cause::Capability => return Verdict::NextHostOrFail,
        RecipientStatus::Failed => return Verdict::Fail,
        RecipientStatus::Deferred => {}
    }
    let content_sent = o.stage == Stage::DataEnd;
    match o.cause {
        Cause::Reply => {
            if o.reply.code() == 421 {
                return if content_sent || o.stage == Stage::Body { Verdict::Defer } else { Verdict::NextHost };
            }
            let too_many = o.reply.code() == 452 && o.reply.enhanced().is_none_or(|e| e == EnhancedCode::new(4, 5, 3));
            match o.stage {
                Stage::Rcpt if too_many && progress => Verdict::NextTransaction,
                Stage::Mail | Stage::Rcpt | Stage::Data | Stage::Body | Stage::DataEnd => Verdict::Defer,
                // RSET refused, or a set-up refusal reported per recipient: the host is the problem.
                _ => Verdict::NextHost,
            }
        }
        Cause::ConnectionLost | Cause::Timeout | Cause::Protocol => {
            if content_sent {
                Verdict::Defer
            } else {
                Verdict::NextHost
            }
        }
        Cause::Local | Cause::Capability => Verdict::Defer,
        Cause::TlsNotOffered | Cause::TlsFailed | Cause::AuthNeedsTls | Cause::NoAuthMechanism => Verdict::NextHost,
    }
}

/// After a failed TLS handshake, may the same host be tried again without TLS? Only an MX
/// host (or address literal) under `opportunistic`, and never with credentials (they must not
/// cross in clear). Postfix's "may" level does the same for MX delivery: a broken TLS stack
/// should not stop mail that would go in plaintext. Never a smart host: its certificate is
/// verified even under `opportunistic`, and a plaintext retry would let whoever can break the
/// handshake (an attacker presenting their own certificate) read the mail; the host is backed
/// off and the mail deferred instead.
pub fn plaintext_retry_allowed(tls: Tls, has_credentials: bool, smart_host: bool) -> bool {
    tls == Tls::Opportunistic && !has_credentials && !smart_host
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutboundTls;
    use crate::delivery::client::{ClientConfig, ClientSession, Event, Output, Transaction};
    use crate::delivery::reply::Response;
    use crate::smtp::envelope::{BodyType, Recipient};
    use std::rc::Rc;

    fn connector(toml_text: &str) -> SendConnector {
        toml::from_str(toml_text).unwrap()
    }

    fn connectors() -> Vec<SendConnector> {
        vec![
            connector("name = \"any\"\ndomains = [\"*\"]\ntls = \"required\""),
            connector("name = \"sub\"\ndomains = [\"*.example.test\"]"),
            connector("name = \"deep\"\ndomains = [\"*.eu.example.test\"]"),
            connector(
                "name = \"exact\"\ndomains = [\"eu.example.test\", \"other.test\"]\nsmart_hosts = [\"10.0.0.5:587\", \"smart.test\"]\nport = 2525",
            ),
            connector("name = \"exact-again\"\ndomains = [\"other.test\"]"),
        ]
    }

    #[test]
    fn most_specific_connector_wins() {
        let c = connectors();
        let pick = |d: &str| select(&c, d).map(|c| c.name.as_str());
        assert_eq!(pick("eu.example.test"), Some("exact"), "exact beats every wildcard");
        assert_eq!(pick("EU.Example.TEST."), Some("exact"), "case and trailing dot do not matter");
        assert_eq!(pick("a.eu.example.test"), Some("deep"), "the longer suffix wins");
        assert_eq!(pick("a.example.test"), Some("sub"));
        assert_eq!(pick("example.test"), Some("any"), "*.example.test does not match the domain itself");
        assert_eq!(pick("elsewhere.test"), Some("any"));
        assert_eq!(pick("other.test"), Some("exact"), "a tie goes to the first written");
        assert!(select(&c[1..3], "elsewhere.test").is_none());
    }

    #[test]
    fn routes_smart_hosts_mx_literals_and_the_default() {
        let r = Router::new(&connectors());
        let route = r.route("eu.example.test");
        assert!(route.configured);
        let NextHop::SmartHosts(hosts) = route.next_hop else { panic!("{route:?}") };
        assert_eq!(hosts.len(), 2);
        let targets = smart_host_targets(route.connector);
        assert_eq!(
            (targets[0].host.as_str(), targets[0].port, targets[0].ip),
            ("10.0.0.5", 587, "10.0.0.5".parse().ok())
        );
        assert_eq!((targets[1].host.as_str(), targets[1].port, targets[1].ip), ("smart.test", 2525, None));
        let route = r.route("x.test");
        assert_eq!((route.next_hop, route.tls()), (NextHop::Mx, Tls::Required));
        assert_eq!(r.route("[192.0.2.7]").next_hop, NextHop::AddressLiteral("192.0.2.7".parse().unwrap()));
        assert_eq!(r.route("[IPv6:2001:db8::1]").next_hop, NextHop::AddressLiteral("2001:db8::1".parse().unwrap()));

        let none = Router::new(&[]);
        let route = none.route("x.test");
        assert!(!route.configured);
        assert_eq!(route.next_hop, NextHop::Mx);
        let d = none.default_connector();
        assert_eq!((d.port, d.tls, d.max_connections_per_domain), (25, OutboundTls::Opportunistic, 20));
        assert_eq!(d.retry.first.get().as_secs(), 60);
        assert_eq!(literal_target("192.0.2.7".parse().unwrap(), 25).host, "192.0.2.7");
    }

    #[test]
    fn smart_host_routes_share_one_destination_per_connector() {
        let c = connectors();
        let r = Router::new(&c);
        // Every domain of a smart-host connector: one destination, named after the connector.
        assert_eq!(r.destination("eu.example.test"), Destination::SmartHosts("exact".into()));
        assert_eq!(r.destination("Other.Test."), Destination::SmartHosts("exact".into()));
        // MX routes: one destination per domain, lowercase, no trailing dot.
        assert_eq!(r.destination("A.Example.TEST."), Destination::Domain("a.example.test".into()));
        assert_eq!(r.destination("x.test"), Destination::Domain("x.test".into()));
        assert_eq!(destination(&c, "other.test"), r.destination("other.test"), "the pure form agrees");
        assert_eq!(destination(&[], "x.test"), Destination::Domain("x.test".into()));
        // The connector of a destination.
        assert_eq!(r.connector(&Destination::SmartHosts("exact".into())).name, "exact");
        assert_eq!(r.connector(&Destination::Domain("a.eu.example.test".into())).name, "deep");
        assert_eq!(r.connector(&Destination::SmartHosts("gone".into())).name, "default");
        assert_eq!(Destination::SmartHosts("exact".into()).domain(), None);
        assert_eq!(Destination::Domain("x.test".into()).domain(), Some("x.test"));
        assert_eq!(Destination::SmartHosts("m365".into()).to_string(), "smart hosts of connector \"m365\"");
    }

    #[test]
    fn address_literals() {
        assert_eq!(address_literal("[10.1.2.3]"), "10.1.2.3".parse().ok());
        assert_eq!(address_literal("[ipv6:::1]"), "::1".parse().ok());
        assert_eq!(address_literal("10.1.2.3"), None);
        assert_eq!(address_literal("[::1]"), None, "IPv6 needs its tag");
        assert_eq!(address_literal("[example.test]"), None);
    }

    fn mx(list: &[(u16, &str)]) -> Vec<MxRecord> {
        list.iter().map(|&(preference, e)| MxRecord { preference, exchange: e.into() }).collect()
    }

    fn hosts(t: &[Target]) -> Vec<&str> {
        t.iter().map(|t| t.host.as_str()).collect()
    }

    #[test]
    fn mx_order_by_preference_with_seeded_shuffle() {
        let records =
            mx(&[(20, "c.mx.test."), (10, "A.mx.test."), (10, "b.mx.test"), (30, "d.mx.test"), (10, "e.mx.test")]);
        let t = mx_targets("x.test", MxAnswer::Records(&records), 25, &[], 1).unwrap();
        assert_eq!(t.iter().map(|t| t.preference.unwrap()).collect::<Vec<_>>(), [10, 10, 10, 20, 30]);
        assert_eq!(&hosts(&t)[3..], ["c.mx.test", "d.mx.test"]);
        let mut first_three = hosts(&t)[..3].to_vec();
        first_three.sort();
        assert_eq!(first_three, ["a.mx.test", "b.mx.test", "e.mx.test"]);
        // Deterministic for a seed, whatever order DNS answered in.
        let mut reversed = records.clone();
        reversed.reverse();
        assert_eq!(mx_targets("x.test", MxAnswer::Records(&reversed), 25, &[], 1).unwrap(), t);
        // Every order of the equal-preference hosts turns up across seeds (3! = 6).
        let mut orders = std::collections::HashSet::new();
        for seed in 0..200 {
            let t = mx_targets("x.test", MxAnswer::Records(&records), 25, &[], seed).unwrap();
            orders.insert(hosts(&t)[..3].join(","));
        }
        assert_eq!(orders.len(), 6, "{orders:?}");
    }

    #[test]
    fn no_mx_null_mx_nxdomain_and_dns_errors() {
        let t = mx_targets("x.test", MxAnswer::NoRecords, 25, &[], 0).unwrap();
        assert_eq!(t, [Target { implicit_mx: true, ..Target::named("x.test", 25) }]);
        assert!(t[0].implicit_mx && t[0].preference.is_none());
        let null = mx(&[(0, ".")]);
        let e = mx_targets("x.test", MxAnswer::Records(&null), 25, &[], 0).unwrap_err();
        assert_eq!((e.reply.code, e.reply.status, e.verdict()), (556, "5.1.10", Verdict::Fail));
        let mixed = mx(&[(0, "."), (10, "mx.x.test")]);
        assert_eq!(hosts(&mx_targets("x.test", MxAnswer::Records(&mixed), 25, &[], 0).unwrap()), ["mx.x.test"]);
        let e = mx_targets("x.test", MxAnswer::NxDomain, 25, &[], 0).unwrap_err();
        assert_eq!((e.reply.status, e.verdict()), ("5.1.2", Verdict::Fail));
        let e = mx_targets("x.test", MxAnswer::TempFail, 25, &[], 0).unwrap_err();
        assert_eq!((e.reply.status, e.verdict()), ("4.4.3", Verdict::Defer));
    }

    #[test]
    fn ip_literal_mx_is_tolerated_and_marked() {
        let records = mx(&[(10, "192.0.2.25"), (20, "[2001:db8::25]")]);
        let t = mx_targets("x.test", MxAnswer::Records(&records), 25, &[], 0).unwrap();
        assert_eq!(t[0].ip, "192.0.2.25".parse().ok());
        assert_eq!(t[1].ip, "2001:db8::25".parse().ok());
        assert!(t.iter().all(|t| t.ip_literal_mx));
    }

    #[test]
    fn duplicates_cap_and_loops() {
        let records = mx(&[(20, "mx.test"), (10, "MX.test."), (30, "other.test")]);
        let t = mx_targets("x.test", MxAnswer::Records(&records), 25, &[], 0).unwrap();
        assert_eq!(hosts(&t), ["mx.test", "other.test"]);
        assert_eq!(t[0].preference, Some(10));
        let many: Vec<MxRecord> = (0..50).map(|i| MxRecord { preference: i, exchange: format!("h{i}.test") }).collect();
        assert_eq!(mx_targets("x.test", MxAnswer::Records(&many), 25, &[], 0).unwrap().len(), MX_HOSTS_MAX);
        // We are MX 20: only the hosts better than us remain.
        let records = mx(&[(10, "primary.test"), (20, "relay.test"), (20, "peer.test"), (30, "backup.test")]);
        let t = mx_targets("x.test", MxAnswer::Records(&records), 25, &["Relay.Test."], 0).unwrap();
        assert_eq!(hosts(&t), ["primary.test"]);
        let e = mx_targets("x.test", MxAnswer::Records(&records[1..]), 25, &["relay.test"], 0).unwrap_err();
        assert_eq!(e.reply, MX_LOOP);
    }

    #[test]
    fn route_reply_table_is_well_formed() {
        for r in ALL {
            let resp = Response::local(*r);
            let e = resp.enhanced().unwrap_or_else(|| panic!("{r:?}"));
            assert_eq!(u16::from(e.class), r.code / 100, "{r:?}");
        }
    }

    /// A 7-bit transaction of `size` octets from s@y.test.
    fn plain_tx(size: u64) -> Transaction<'static> {
        Transaction {
            sender: "s@y.test",
            size,
            body: BodyType::SevenBit,
            eight_bit: false,
            smtputf8: false,
            ret: None,
            envid: None,
        }
    }

    /// Outcomes made by a real client session, so classification is tested on what the
    /// runtime will actually get.
    fn outcomes_after(server: &[&str]) -> (Vec<RecipientOutcome>, Vec<Event>) {
        let mut c = ClientSession::new(Rc::new(ClientConfig::new("relay.test", Tls::Off)));
        let mut out = Output::default();
        c.receive(b"220 mx\r\n", &mut out);
        c.receive(b"250-mx\r\n250 PIPELINING\r\n", &mut out);
        let rcpts: Vec<Recipient> =
            (0..3).map(|i| Recipient { address: format!("r{i}@x.test"), ..Default::default() }).collect();
        let tx = plain_tx(1);
        c.start_transaction(&tx, &rcpts, &mut out).unwrap();
        out.clear();
        let mut events = Vec::new();
        for s in server {
            if *s == "<body>" {
                c.write_body(b"x", &mut out);
                c.finish_body(&mut out);
            } else if *s == "<lost>" {
                c.connection_lost(&mut out);
            } else {
                c.receive(s.as_bytes(), &mut out);
            }
            events.append(&mut out.events);
        }
        (c.result().recipients().to_vec(), events)
    }

    fn verdicts(server: &[&str]) -> Vec<Verdict> {
        let (o, _) = outcomes_after(server);
        let progress = o.iter().any(|o| o.status == RecipientStatus::Delivered);
        o.iter().map(|outcome| classify(Failure::Recipient { outcome, progress })).collect()
    }

    #[test]
    fn classification_of_recipient_outcomes() {
        use Verdict::*;
        // 5xx at RCPT is final for that recipient; 4xx defers; delivered is done.
        assert_eq!(
            verdicts(&["250 ok\r\n550 5.1.1 no\r\n451 4.2.0 later\r\n250 ok\r\n354 go\r\n", "<body>", "250 ok\r\n"]),
            [Fail, Defer, Done]
        );
        // Too many recipients after progress: a new transaction at once.
        assert_eq!(
            verdicts(&["250 ok\r\n250 ok\r\n452 4.5.3 too many\r\n452 too many\r\n354 go\r\n", "<body>", "250 ok\r\n"]),
            [Done, NextTransaction, NextTransaction]
        );
        // ...but not without progress (it would loop), and not for 4.3.1 (storage).
        assert_eq!(
            verdicts(&["250 ok\r\n452 4.5.3 a\r\n452 4.3.1 b\r\n452 c\r\n554 no valid recipients\r\n"]),
            [Defer, Defer, Defer]
        );
        // MAIL greylisted: defer everyone; MAIL 5xx: fail everyone.
        assert_eq!(verdicts(&["451 4.7.1 greylisted\r\n"]), [Defer, Defer, Defer]);
        assert_eq!(verdicts(&["553 5.7.1 sender refused\r\n"]), [Fail, Fail, Fail]);
        // 421 before the content: next host; after it: defer.
        assert_eq!(verdicts(&["250 ok\r\n550 no\r\n421 4.7.0 closing\r\n"]), [Fail, NextHost, NextHost]);
        assert_eq!(
            verdicts(&["250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n", "<body>", "421 4.3.2 bye\r\n"]),
            [Defer; 3]
        );
        // Dropped before the content: next host; after it: defer (may be delivered).
        assert_eq!(verdicts(&["250 ok\r\n250 ok\r\n", "<lost>"]), [NextHost; 3]);
        assert_eq!(verdicts(&["250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n", "<body>", "<lost>"]), [Defer; 3]);
        // Final 4xx/5xx.
        assert_eq!(
            verdicts(&["250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n", "<body>", "554 5.7.1 spam\r\n"]),
            [Fail; 3]
        );
        assert_eq!(verdicts(&["250 ok\r\n250 ok\r\n250 ok\r\n250 ok\r\n451 4.3.0 later\r\n"]), [Defer; 3]);
    }

    /// A host that cannot take the message (SIZE, SMTPUTF8, 8BITMIME), decided before any
    /// command: the other hosts are tried, and only when none is left does it fail.
    #[test]
    fn host_capability_failures_try_the_other_hosts() {
        use Verdict::*;
        for (ehlo, size, utf8, eight_bit) in [
            ("250-mx\r\n250 SIZE 10\r\n", 11, false, false),
            ("250-mx\r\n250 8BITMIME\r\n", 1, true, false),
            ("250-mx\r\n250 SMTPUTF8\r\n", 1, false, true),
        ] {
            let mut c = ClientSession::new(Rc::new(ClientConfig::new("relay.test", Tls::Off)));
            let mut out = Output::default();
            c.receive(b"220 mx\r\n", &mut out);
            c.receive(ehlo.as_bytes(), &mut out);
            let tx = Transaction { body: BodyType::EightBitMime, eight_bit, smtputf8: utf8, ..plain_tx(size) };
            let rcpts = [Recipient { address: "a@x.test".into(), ..Default::default() }];
            c.start_transaction(&tx, &rcpts, &mut out).unwrap();
            let outcome = &c.result().recipients()[0];
            let verdict = classify(Failure::Recipient { outcome, progress: false });
            assert_eq!(verdict, NextHostOrFail, "{ehlo:?}: {outcome:?}");
            assert_eq!(verdict.hosts_exhausted(), Fail);
        }
        // An address that cannot be written is wrong on every host: fail at once.
        let mut c = ClientSession::new(Rc::new(ClientConfig::new("relay.test", Tls::Off)));
        let mut out = Output::default();
        c.receive(b"220 mx\r\n250 mx\r\n", &mut out);
        let tx = plain_tx(1);
        let rcpts = [Recipient { address: "a@x.test>\r\nDATA".into(), ..Default::default() }];
        c.start_transaction(&tx, &rcpts, &mut out).unwrap();
        let outcome = &c.result().recipients()[0];
        assert_eq!(classify(Failure::Recipient { outcome, progress: false }), Fail);
    }

    #[test]
    fn classification_of_connection_failures() {
        use Verdict::*;
        assert_eq!(classify(Failure::Connect), NextHost);
        assert_eq!(classify(Failure::HostLookup), NextHost);
        assert_eq!(classify(Failure::TlsHandshake), NextHost);
        assert_eq!(classify(Failure::Closed(&CloseReason::Quit)), Done);
        for greeting in ["421 4.3.2 busy\r\n", "451 busy\r\n", "554 5.7.1 go away\r\n"] {
            let mut c = ClientSession::new(Rc::new(ClientConfig::new("relay.test", Tls::Off)));
            let mut out = Output::default();
            c.receive(greeting.as_bytes(), &mut out);
            let Some(Event::Closed(reason)) = out.events.last() else { panic!() };
            assert_eq!(classify(Failure::Closed(reason)), NextHost, "{greeting}");
        }
        assert_eq!(NextHost.hosts_exhausted(), Defer);
        assert_eq!(Fail.hosts_exhausted(), Fail);
        assert!(plaintext_retry_allowed(Tls::Opportunistic, false, false));
        assert!(!plaintext_retry_allowed(Tls::Opportunistic, true, false));
        assert!(!plaintext_retry_allowed(Tls::Required, false, false));
        assert!(!plaintext_retry_allowed(Tls::Opportunistic, false, true), "never for a smart host");
        assert_eq!(NextHostOrFail.hosts_exhausted(), Fail);
    }
}
