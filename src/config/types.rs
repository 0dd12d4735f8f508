//! Value syntaxes of the configuration: durations, sizes, rates, domain patterns, send-as
//! patterns and `host:port`. Each parses from the text a user writes and prints back the same.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Implements Serialize/Deserialize through Display/FromStr.
macro_rules! text_serde {
    ($t:ty, $expecting:literal) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(|e: String| serde::de::Error::custom(format!("{e}; expected {}", $expecting)))
            }
        }
    };
}

/// A duration written `500ms`, `30s`, `5m`, `2h` or `2d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Whole seconds.
    pub const fn from_secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    /// Milliseconds.
    pub const fn from_millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
    /// The std duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Dur, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| format!("`{s}` has no unit"))?;
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("`{s}` does not start with a number"))?;
        let ms = match unit.trim() {
            "ms" => Some(n),
            "s" => n.checked_mul(1000),
            "m" => n.checked_mul(60_000),
            "h" => n.checked_mul(3_600_000),
            "d" => n.checked_mul(86_400_000),
            other => return Err(format!("`{s}` has an unknown unit `{other}`")),
        };
        ms.map(Dur::from_millis).ok_or_else(|| format!("`{s}` is too long"))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis() as u64;
        for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
            if ms >= size && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

text_serde!(Dur, "a number and a unit: 500ms, 30s, 5m, 2h, 2d");

/// A size in bytes: an integer, or text like `25MiB`, `512KiB`, `1GiB` (`KB`/`MB`/`GB` are
/// read as the same binary units).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("`{s}` does not start with a number"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "KB" | "K" => 1 << 10,
            "MiB" | "MB" | "M" => 1 << 20,
            "GiB" | "GB" | "G" => 1 << 30,
            "TiB" | "TB" | "T" => 1 << 40,
            other => return Err(format!("`{s}` has an unknown unit `{other}`")),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [("TiB", 1u64 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t
                .parse()
                .map_err(|e: String| serde::de::Error::custom(format!("{e}; expected bytes or a size like 25MiB"))),
        }
    }
}

/// A rate written `600/m`: a count per second (`s`), minute (`m`), hour (`h`) or day (`d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per `per`.
    pub count: u32,
    /// The window.
    pub per: Dur,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let (count, unit) = s.trim().split_once('/').ok_or_else(|| format!("`{s}` has no `/`"))?;
        let count: u32 = count.trim().parse().map_err(|_| format!("`{s}` does not start with a count"))?;
        if count == 0 {
            return Err(format!("`{s}` allows nothing"));
        }
        let per = match unit.trim() {
            "s" => Dur::from_secs(1),
            "m" => Dur::from_secs(60),
            "h" => Dur::from_secs(3600),
            "d" => Dur::from_secs(86400),
            other => return Err(format!("`{s}` has an unknown unit `{other}`")),
        };
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.0.as_secs() {
            1 => "s",
            60 => "m",
            3600 => "h",
            _ => "d",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

text_serde!(Rate, "a count and a unit, like 600/m");

/// A domain pattern: `example.test` (exactly), `*.example.test` (every subdomain, not the
/// domain itself), or `*` (everything). Stored lowercased; matching ignores ASCII case and a
/// trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    /// Exactly this domain.
    Exact(String),
    /// Every subdomain of this domain.
    Subdomains(String),
    /// Every domain.
    Any,
}

impl DomainPattern {
    /// Does `domain` match?
    pub fn matches(&self, domain: &str) -> bool {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        match self {
            DomainPattern::Any => true,
            DomainPattern::Exact(d) => domain.eq_ignore_ascii_case(d),
            DomainPattern::Subdomains(d) => {
                domain.len() > d.len() + 1
                    && domain.as_bytes()[domain.len() - d.len() - 1] == b'.'
                    && domain[domain.len() - d.len()..].eq_ignore_ascii_case(d)
            }
        }
    }

    /// How specific the pattern is (for choosing among several that match): exact beats
    /// wildcard, longer wildcard beats shorter, `*` is last.
    pub fn specificity(&self) -> usize {
        match self {
            DomainPattern::Any => 0,
            DomainPattern::Subdomains(d) => 1 + d.len(),
            DomainPattern::Exact(d) => 1000 + d.len(),
        }
    }
}

impl FromStr for DomainPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<DomainPattern, String> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        if s == "*" {
            return Ok(DomainPattern::Any);
        }
        let (sub, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, s.clone()),
        };
        let ok = !name.is_empty()
            && name.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|c| c >= 0x80 || c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            });
        if !ok {
            return Err(format!("`{s}` is not a domain"));
        }
        Ok(if sub { DomainPattern::Subdomains(name) } else { DomainPattern::Exact(name) })
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Any => f.write_str("*"),
            DomainPattern::Exact(d) => f.write_str(d),
            DomainPattern::Subdomains(d) => write!(f, "*.{d}"),
        }
    }
}

text_serde!(DomainPattern, "a domain, `*.domain` or `*`");

/// A send-as entry: an address (case-insensitive) or `*@domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendAs {
    /// Exactly this address.
    Address(String),
    /// Any address at this domain.
    Domain(String),
}

impl SendAs {
    /// May an address be used under this entry?
    pub fn allows(&self, address: &str) -> bool {
        match self {
            SendAs::Address(a) => a.eq_ignore_ascii_case(address),
            SendAs::Domain(d) => {
                address.rsplit_once('@').is_some_and(|(local, dom)| !local.is_empty() && dom.eq_ignore_ascii_case(d))
            }
        }
    }
}

impl FromStr for SendAs {
    type Err = String;
    fn from_str(s: &str) -> Result<SendAs, String> {
        let s = s.trim();
        let (local, domain) = s.rsplit_once('@').ok_or_else(|| format!("`{s}` is not an address or *@domain"))?;
        if domain.is_empty() || local.is_empty() || domain.contains('*') {
            return Err(format!("`{s}` is not an address or *@domain"));
        }
        if local == "*" {
            return Ok(SendAs::Domain(domain.to_ascii_lowercase()));
        }
        if local.contains('*') {
            return Err(format!("`{s}`: only `*@domain` wildcards are supported"));
        }
        Ok(SendAs::Address(s.to_string()))
    }
}

impl fmt::Display for SendAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendAs::Address(a) => f.write_str(a),
            SendAs::Domain(d) => write!(f, "*@{d}"),
        }
    }
}

text_serde!(SendAs, "an address or *@domain");

/// A host and port: `10.0.0.5:25`, `[2001:db8::5]:25`, `smtp.example.test:587`, or a host
/// alone (the connector's port is used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Name or IP literal (without brackets).
    pub host: String,
    /// Port, if written.
    pub port: Option<u16>,
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<HostPort, String> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| format!("`{s}`: missing `]`"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p.parse().map_err(|_| format!("`{s}`: bad port"))?),
                None if after.is_empty() => None,
                None => return Err(format!("`{s}`: junk after `]`")),
            };
            return Ok(HostPort { host: host.to_string(), port });
        }
        if s.parse::<std::net::Ipv6Addr>().is_ok() {
            return Ok(HostPort { host: s.to_string(), port: None });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse().map_err(|_| format!("`{s}`: bad port"))?)),
            None => (s, None),
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(format!("`{s}` is not host:port"));
        }
        Ok(HostPort { host: host.to_string(), port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match self.port {
            Some(p) => write!(f, "{host}:{p}"),
            None => f.write_str(&host),
        }
    }
}

text_serde!(HostPort, "host:port");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, ms) in [("500ms", 500), ("30s", 30_000), ("5m", 300_000), ("2h", 7_200_000), ("2d", 172_800_000)] {
            let d: Dur = text.parse().unwrap();
            assert_eq!(d.0.as_millis() as u64, ms);
            assert_eq!(d.to_string(), text);
        }
        assert!("5".parse::<Dur>().is_err());
        assert!("5 weeks".parse::<Dur>().is_err());
        assert!("m".parse::<Dur>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!("25MiB".parse::<ByteSize>().unwrap().0, 25 << 20);
        assert_eq!("25MB".parse::<ByteSize>().unwrap().0, 25 << 20);
        assert_eq!("512KiB".parse::<ByteSize>().unwrap().0, 512 << 10);
        assert_eq!("1000".parse::<ByteSize>().unwrap().0, 1000);
        assert_eq!(ByteSize(25 << 20).to_string(), "25MiB");
        assert!("12 parsecs".parse::<ByteSize>().is_err());
    }

    #[test]
    fn rates() {
        let r: Rate = "600/m".parse().unwrap();
        assert_eq!((r.count, r.per), (600, Dur::from_secs(60)));
        assert_eq!(r.to_string(), "600/m");
        assert!("0/m".parse::<Rate>().is_err());
        assert!("10/week".parse::<Rate>().is_err());
    }

    #[test]
    fn domain_patterns() {
        let exact: DomainPattern = "Example.TEST".parse().unwrap();
        assert!(exact.matches("example.test") && exact.matches("EXAMPLE.test.") && !exact.matches("a.example.test"));
        let sub: DomainPattern = "*.example.test".parse().unwrap();
        assert!(sub.matches("a.example.test") && sub.matches("b.a.EXAMPLE.test"));
        assert!(!sub.matches("example.test") && !sub.matches("badexample.test"));
        assert!("*".parse::<DomainPattern>().unwrap().matches("anything.test"));
        assert!("a..b".parse::<DomainPattern>().is_err());
        assert!(exact.specificity() > sub.specificity());
    }

    #[test]
    fn send_as() {
        let a: SendAs = "Smb1@example.test".parse().unwrap();
        assert!(a.allows("smb1@EXAMPLE.test") && !a.allows("smb2@example.test"));
        let d: SendAs = "*@example.test".parse().unwrap();
        assert!(d.allows("x@example.test") && !d.allows("x@other.test") && !d.allows("x@sub.example.test"));
        assert!("x*@example.test".parse::<SendAs>().is_err());
        assert!("nobody".parse::<SendAs>().is_err());
    }

    #[test]
    fn host_ports() {
        assert_eq!("10.0.0.5:25".parse::<HostPort>().unwrap(), HostPort { host: "10.0.0.5".into(), port: Some(25) });
        assert_eq!("[::1]:2525".parse::<HostPort>().unwrap(), HostPort { host: "::1".into(), port: Some(2525) });
        assert_eq!("smtp.test".parse::<HostPort>().unwrap(), HostPort { host: "smtp.test".into(), port: None });
        assert_eq!("::1".parse::<HostPort>().unwrap().host, "::1");
        assert!("host:port".parse::<HostPort>().is_err());
    }
}
