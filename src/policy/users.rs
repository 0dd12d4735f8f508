//! Accounts for authenticated relay: argon2id PHC hashes (made by `ringrelay hash-password`,
//! checked here) and each user's send-as rights. Verifying a hash costs 10-50 ms of CPU, so
//! `verify` must run off the io_uring cores (the runtime calls it through spawn_blocking).

use std::collections::HashMap;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, PasswordHash};

use crate::config::{Config, SendAs};

/// Checks that `phc` is an argon2id PHC string with usable parameters; the error says what is
/// wrong. argon2i and argon2d are refused: argon2id is the variant RFC 9106 recommends (it
/// resists both side-channel and GPU attacks), and the one `ringrelay hash-password` makes.
pub fn check_hash(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| format!("not a PHC password hash ({e})"))?;
    let alg = parsed.algorithm.as_str();
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!(
            "algorithm `{alg}` is not accepted, only argon2id (a `$argon2id$...` string; argon2i and argon2d \
             are weaker variants)"
        ));
    }
    Params::try_from(&parsed).map_err(|e| format!("argon2id parameters are not usable ({e})"))?;
    Ok(())
}

/// Hashes a password with argon2id and a random salt (default parameters: m=19456, t=2, p=1).
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    Argon2::default().hash_password(password).map(|h| h.to_string()).map_err(|e| format!("hashing failed: {e}"))
}

/// Checks a password against a PHC string. Slow by design: call it off the I/O cores. Only
/// argon2id hashes ever match (check-config refuses the others; this holds without it too).
pub fn verify(password: &[u8], phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) if parsed.algorithm == Algorithm::Argon2id.ident() => {
            Argon2::default().verify_password(password, &parsed).is_ok()
        }
        _ => false,
    }
}

/// The user table: shared read-only by every core.
#[derive(Debug, Default)]
pub struct Users {
    by_name: HashMap<String, UserEntry>,
}

#[derive(Debug)]
struct UserEntry {
    password_hash: String,
    send_as: Vec<SendAs>,
}

/// A password hash that never matches, verified when the user does not exist so that an
/// unknown user costs the same time as a wrong password (no user enumeration by timing).
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$4X3kMpYv0xV1lH6n3j0lGmCkq8YQ1r3u0bN2x3oWq7Y";

impl Users {
    /// Builds the table from the configuration.
    pub fn from_config(config: &Config) -> Users {
        let by_name = config
            .users
            .iter()
            .map(|u| (u.name.clone(), UserEntry { password_hash: u.password_hash.clone(), send_as: u.send_as.clone() }))
            .collect();
        Users { by_name }
    }

    /// Checks credentials (slow: off the I/O cores).
    pub fn verify(&self, user: &str, password: &str) -> bool {
        match self.by_name.get(user) {
            Some(entry) => verify(password.as_bytes(), &entry.password_hash),
            None => {
                let _ = verify(password.as_bytes(), DUMMY_HASH);
                false
            }
        }
    }

    /// The configured PHC string of `user` (for the credential cache, which binds its entries
    /// to it).
    pub fn password_hash(&self, user: &str) -> Option<&str> {
        self.by_name.get(user).map(|e| e.password_hash.as_str())
    }

    /// May `user` send as `address`?
    pub fn may_send_as(&self, user: &str, address: &str) -> bool {
        self.by_name.get(user).is_some_and(|e| e.send_as.iter().any(|s| s.allows(address)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let phc = hash_password(b"secret").unwrap();
        assert!(phc.starts_with("$argon2id$"));
        check_hash(&phc).unwrap();
        assert!(verify(b"secret", &phc));
        assert!(!verify(b"wrong", &phc));
        assert!(check_hash("plaintext").is_err());
        assert!(check_hash(DUMMY_HASH).is_ok());
    }

    /// The same password hashed with another argon2 variant (cheap parameters).
    fn hash_with(alg: Algorithm, password: &[u8]) -> String {
        let params = Params::new(8192, 1, 1, None).unwrap();
        Argon2::new(alg, argon2::Version::V0x13, params).hash_password(password).unwrap().to_string()
    }

    #[test]
    fn only_argon2id_is_accepted() {
        for (alg, name) in [(Algorithm::Argon2i, "argon2i"), (Algorithm::Argon2d, "argon2d")] {
            let phc = hash_with(alg, b"secret");
            assert!(phc.starts_with(&format!("${name}$")), "{phc}");
            let e = check_hash(&phc).unwrap_err();
            assert!(e.contains(&format!("`{name}`")) && e.contains("only argon2id"), "{e}");
            assert!(!verify(b"secret", &phc), "{name} never matches, even with the right password");
        }
        let id = hash_with(Algorithm::Argon2id, b"secret");
        check_hash(&id).unwrap();
        assert!(verify(b"secret", &id));
        let e =
            check_hash("$argon2id$v=19$m=1,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$4X3kMpYv0xV1lH6n3j0lGmCkq8YQ1r3u0bN2x3oWq7Y")
                .unwrap_err();
        assert!(e.contains("parameters"), "{e}");
    }
}
