//! The embedded default of spec section 4: what `ringrelay serve` runs with no `--config`.
//! Safe to run anywhere: it listens on loopback and relays for the local machine only.

use std::path::Path;

use super::{Config, Loaded};

/// The embedded configuration, as TOML (so `ringrelay check-config --embedded` can print it
/// and a user can start a file from it).
pub const TOML: &str = r#"# ringrelay embedded default: relay for this machine only.
accepted_domains = []

[spool]
dir = "./ringrelay-spool"
fsync = "batch"

[cores]
smtp = 0
delivery = 1

[admin]
listen = "127.0.0.1:9425"

[[receive_connector]]
name = "default"
bind = ["127.0.0.1:2525"]
remote_ip_ranges = ["127.0.0.0/8", "::1/128"]
permission_groups = ["anonymous"]
relay = "any"

[[send_connector]]
name = "internet"
domains = ["*"]
tls = "opportunistic"
"#;

/// The embedded default, parsed and validated.
/// What `Loaded::source` says for the embedded default.
pub const SOURCE: &str = "<embedded default>";

pub fn load() -> Loaded {
    match Config::from_text(TOML, Path::new(SOURCE)) {
        Ok(loaded) => loaded,
        Err(e) => panic!("the embedded default configuration is invalid: {e}"),
    }
}
