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

/// Why a PLAIN message was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainError {
    /// Not `authzid NUL authcid NUL password` in UTF-8, or no user name: `501 5.5.2`.
    Malformed,
    /// An authorization identity other than the user itself (proxy authorization, RFC 4616
    /// 2), which ringrelay does not support: one account may not act for another. The
    /// answer is `535 5.7.8`, as for bad credentials.
    OtherIdentity,
}

/// Decodes a PLAIN message into (user, password). An empty authorization identity, or one
/// equal to the user, means the user itself.
pub fn decode_plain(message: &[u8]) -> Result<(String, String), PlainError> {
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(pass), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(PlainError::Malformed);
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| PlainError::Malformed);
    let (authzid, user, pass) = (text(authzid)?, text(user)?, text(pass)?);
    if user.is_empty() {
        return Err(PlainError::Malformed);
    }
    if !authzid.is_empty() && authzid != user {
        return Err(PlainError::OtherIdentity);
    }
    Ok((user, pass))
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
        assert_eq!(decode_plain(b"\0user\0pw"), Ok(("user".into(), "pw".into())));
        assert_eq!(decode_plain(b"user\0user\0pw"), Ok(("user".into(), "pw".into())), "authzid = authcid");
        assert_eq!(decode_plain(b"other\0user\0pw"), Err(PlainError::OtherIdentity));
        assert_eq!(decode_plain(b"User\0user\0pw"), Err(PlainError::OtherIdentity), "identities are exact");
        assert_eq!(decode_plain(b"\0user"), Err(PlainError::Malformed));
        assert_eq!(decode_plain(b"\0\0pw"), Err(PlainError::Malformed));
        assert_eq!(decode_plain(b"\0u\0p\0x"), Err(PlainError::Malformed));
        assert_eq!(decode_plain(b"\0u\0\xff"), Err(PlainError::Malformed));
        let b64 = encode(b"\0svc\0secret");
        assert_eq!(decode_plain(&decode_response(&b64).unwrap()), Ok(("svc".into(), "secret".into())));
        assert_eq!(decode_response("=").unwrap(), b"");
        assert_eq!(decode_response("!!!"), None);
    }
}
