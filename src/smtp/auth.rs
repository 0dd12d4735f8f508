//! SASL PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) message decoding for SMTP AUTH
//! (RFC 4954). Only decoding: checking a password is the policy's job, off the io_uring core.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The mechanisms ringrelay offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// PLAIN: one message, `authzid NUL authcid NUL password`.
    Plain,
    /// LOGIN: user name and password in two base64 responses.
    Login,
}

impl Mechanism {
    /// The name as in the EHLO AUTH line.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

/// `334` challenge for the LOGIN user name: base64 of "Username:".
pub const LOGIN_USER_CHALLENGE: &str = "VXNlcm5hbWU6";
/// `334` challenge for the LOGIN password: base64 of "Password:".
pub const LOGIN_PASS_CHALLENGE: &str = "UGFzc3dvcmQ6";

/// Decodes one base64 SASL response. `=` is the empty response (RFC 4954 4).
pub fn decode_response(text: &str) -> Option<Vec<u8>> {
    if text == "=" {
        return Some(Vec::new());
    }
    STANDARD.decode(text.trim_end()).ok()
}

/// Decodes a PLAIN message into (user, password). An authorization identity other than the
/// user itself is refused: ringrelay does not let one account act for another.
pub fn decode_plain(message: &[u8]) -> Option<(String, String)> {
    let mut parts = message.split(|&b| b == 0);
    let authzid = parts.next()?;
    let user = parts.next()?;
    let pass = parts.next()?;
    if parts.next().is_some() || user.is_empty() {
        return None;
    }
    if !authzid.is_empty() && authzid != user {
        return None;
    }
    Some((String::from_utf8(user.to_vec()).ok()?, String::from_utf8(pass.to_vec()).ok()?))
}

/// Encodes text as base64 (test clients, the outbound client).
pub fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages() {
        assert_eq!(decode_plain(b"\0user\0pw"), Some(("user".into(), "pw".into())));
        assert_eq!(decode_plain(b"user\0user\0pw"), Some(("user".into(), "pw".into())));
        assert_eq!(decode_plain(b"other\0user\0pw"), None);
        assert_eq!(decode_plain(b"\0user"), None);
        assert_eq!(decode_plain(b"\0\0pw"), None);
        assert_eq!(decode_plain(b"\0u\0p\0x"), None);
        let b64 = encode(b"\0svc\0secret");
        assert_eq!(decode_plain(&decode_response(&b64).unwrap()), Some(("svc".into(), "secret".into())));
        assert_eq!(decode_response("=").unwrap(), b"");
        assert_eq!(decode_response("!!!"), None);
    }
}
