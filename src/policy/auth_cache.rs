//! A small cache of recently verified AUTH credentials, so that clients which authenticate on
//! every connection (one message per connection is common for applications) do not pay an
//! argon2 verification (10-50 ms of CPU) each time.
//!
//! What is stored, per user: `HMAC-SHA256(key, user ‖ 0 ‖ password_hash ‖ 0 ‖ password)` and
//! when it was verified. The key is random, made when the cache is made (per SMTP core, per
//! process) and never leaves memory; the password itself is never stored. Binding the tag to
//! the configured PHC string means a changed password hash can never match an old entry.
//! Only successes are cached: a wrong password always costs a full argon2 verification, so the
//! cache gives a guesser nothing, and a hit answers only what `235` would have said anyway.
//!
//! Pure apart from drawing the key: the caller passes the time in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ring::hmac;

/// How long a verified credential is trusted without argon2.
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// Users remembered per cache (per SMTP core).
pub const AUTH_CACHE_ENTRIES_MAX: usize = 4096;

/// A keyed digest of one (user, password hash, password) triple.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CredentialTag([u8; 32]);

impl std::fmt::Debug for CredentialTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialTag(..)")
    }
}

impl CredentialTag {
    /// Compares without an early exit. (Timing would not leak much here: an attacker cannot
    /// steer the bytes of a keyed digest. It costs nothing to be careful.)
    fn matches(&self, other: &CredentialTag) -> bool {
        self.0.iter().zip(other.0.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// Verified credentials, per user.
pub struct AuthCache {
    key: hmac::Key,
    by_user: HashMap<String, Verified>,
    ttl: Duration,
    entries_max: usize,
}

struct Verified {
    tag: CredentialTag,
    at: Instant,
}

impl std::fmt::Debug for AuthCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthCache").field("users", &self.by_user.len()).field("ttl", &self.ttl).finish()
    }
}

impl AuthCache {
    /// A cache with a fresh random key.
    pub fn new(ttl: Duration, entries_max: usize) -> AuthCache {
        let rng = ring::rand::SystemRandom::new();
        let key = match hmac::Key::generate(hmac::HMAC_SHA256, &rng) {
            Ok(k) => k,
            // The OS random source failing is not something to run on without.
            Err(_) => panic!("the system random number generator failed"),
        };
        AuthCache { key, by_user: HashMap::new(), ttl, entries_max: entries_max.max(1) }
    }

    /// The tag of a credential as presented.
    pub fn tag(&self, user: &str, password_hash: &str, password: &str) -> CredentialTag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(user.as_bytes());
        ctx.update(&[0]);
        ctx.update(password_hash.as_bytes());
        ctx.update(&[0]);
        ctx.update(password.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        CredentialTag(out)
    }

    /// Was exactly this credential verified less than the TTL ago?
    pub fn is_fresh(&mut self, user: &str, tag: &CredentialTag, now: Instant) -> bool {
        let Some(v) = self.by_user.get(user) else { return false };
        if now.saturating_duration_since(v.at) >= self.ttl {
            self.by_user.remove(user);
            return false;
        }
        v.tag.matches(tag)
    }

    /// Remembers a credential that argon2 just verified.
    pub fn remember(&mut self, user: &str, tag: CredentialTag, now: Instant) {
        if !self.by_user.contains_key(user) && self.by_user.len() >= self.entries_max {
            let ttl = self.ttl;
            self.by_user.retain(|_, v| now.saturating_duration_since(v.at) < ttl);
            if self.by_user.len() >= self.entries_max {
                // Drop the oldest quarter (at least one): amortised O(1) per insert.
                let mut ages: Vec<Instant> = self.by_user.values().map(|v| v.at).collect();
                let cut = ages.len() / 4;
                let (_, threshold, _) = ages.select_nth_unstable(cut);
                let threshold = *threshold;
                self.by_user.retain(|_, v| v.at > threshold);
            }
        }
        self.by_user.insert(user.to_string(), Verified { tag, at: now });
    }

    /// Users remembered.
    pub fn len(&self) -> usize {
        self.by_user.len()
    }

    /// Nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHC: &str = "$argon2id$v=19$m=8192,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

    #[test]
    fn hit_only_for_the_same_credential_within_the_ttl() {
        let mut c = AuthCache::new(Duration::from_secs(60), 16);
        let t0 = crate::clock::now();
        let good = c.tag("svc", PHC, "secret");
        assert!(!c.is_fresh("svc", &good, t0), "empty cache");
        c.remember("svc", good, t0);
        assert!(c.is_fresh("svc", &c.tag("svc", PHC, "secret"), t0 + Duration::from_secs(59)));
        assert!(!c.is_fresh("svc", &c.tag("svc", PHC, "Secret"), t0), "another password");
        assert!(!c.is_fresh("other", &c.tag("other", PHC, "secret"), t0), "another user");
        assert!(!c.is_fresh("svc", &c.tag("svc", "$argon2id$changed", "secret"), t0), "a changed hash");
        assert!(!c.is_fresh("svc", &good, t0 + Duration::from_secs(60)), "expired");
        assert!(c.is_empty(), "an expired entry is dropped when seen");
    }

    #[test]
    fn tags_are_keyed_per_cache() {
        let a = AuthCache::new(AUTH_CACHE_TTL, 4);
        let b = AuthCache::new(AUTH_CACHE_TTL, 4);
        assert_ne!(a.tag("u", PHC, "p").0, b.tag("u", PHC, "p").0, "random key per cache");
        assert_eq!(a.tag("u", PHC, "p"), a.tag("u", PHC, "p"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(a.tag("ab", PHC, "c"), a.tag("a", PHC, "bc"));
        assert!(!format!("{:?}", a.tag("u", PHC, "p")).contains(|c: char| c.is_ascii_digit()));
    }

    #[test]
    fn bounded() {
        let mut c = AuthCache::new(Duration::from_secs(600), 8);
        let t0 = crate::clock::now();
        for i in 0..1000u64 {
            let user = format!("u{i}");
            let tag = c.tag(&user, PHC, "p");
            c.remember(&user, tag, t0 + Duration::from_millis(i));
            assert!(c.len() <= 8);
        }
        let last = c.tag("u999", PHC, "p");
        assert!(c.is_fresh("u999", &last, t0 + Duration::from_secs(1)), "the newest survives");
    }
}
