//! Every reply the SMTP server sends, in one table (spec section 5), and the few replies whose
//! text carries a value (greeting, EHLO, queue id). Enhanced status codes (RFC 3463) are on
//! every reply except the greeting, the EHLO/HELO reply (RFC 2034) and the 3xx intermediate
//! replies (354, 334), for which RFC 3463 defines no class.

use std::io::Write;
use std::net::IpAddr;

use super::auth::Mechanism;

/// One fixed reply: code, enhanced status code and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The RFC 3463 enhanced status code, or "" for replies that carry none.
    pub status: &'static str,
    /// Human-readable text.
    pub text: &'static str,
}

impl Reply {
    const fn new(code: u16, status: &'static str, text: &'static str) -> Reply {
        Reply { code, status, text }
    }

    /// Appends the reply line, CRLF included, to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        write_line(out, self.code, ' ', self.status, self.text);
    }

    /// The reply as a line without CRLF, e.g. for logs and the tracking log.
    pub fn line(&self) -> String {
        if self.status.is_empty() {
            format!("{} {}", self.code, self.text)
        } else {
            format!("{} {} {}", self.code, self.status, self.text)
        }
    }

    /// True for 4xx replies.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
}

/// Writes `code<sep>status text\r\n`. `sep` is ' ' for the last line, '-' for the others.
pub fn write_line(out: &mut Vec<u8>, code: u16, sep: char, status: &str, text: &str) {
    // Writing to a Vec cannot fail.
    let _ = if status.is_empty() {
        write!(out, "{code}{sep}{text}\r\n")
    } else {
        write!(out, "{code}{sep}{status} {text}\r\n")
    };
}

// ---- success -----------------------------------------------------------------------------------

/// MAIL FROM accepted.
pub const SENDER_OK: Reply = Reply::new(250, "2.1.0", "Sender OK");
/// RCPT TO accepted.
pub const RECIPIENT_OK: Reply = Reply::new(250, "2.1.5", "Recipient OK");
/// RSET.
pub const RESET_OK: Reply = Reply::new(250, "2.0.0", "Resetting");
/// NOOP.
pub const NOOP_OK: Reply = Reply::new(250, "2.0.0", "OK");
/// DATA accepted, send the message.
pub const START_DATA: Reply = Reply::new(354, "", "Start mail input; end with <CRLF>.<CRLF>");
/// STARTTLS accepted.
pub const READY_TLS: Reply = Reply::new(220, "2.0.0", "Ready to start TLS");
/// AUTH succeeded.
pub const AUTH_OK: Reply = Reply::new(235, "2.7.0", "Authentication successful");
/// VRFY: we relay, we do not verify.
pub const VRFY_CANNOT: Reply =
    Reply::new(252, "2.1.5", "Cannot VRFY user, but will accept message and attempt delivery");
/// HELP.
pub const HELP: Reply =
    Reply::new(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS AUTH");

// ---- permanent: syntax and sequence ------------------------------------------------------------

/// Unknown verb.
pub const UNRECOGNIZED: Reply = Reply::new(500, "5.5.2", "Syntax error, command unrecognized");
/// Command line over `max_command_line`.
pub const LINE_TOO_LONG: Reply = Reply::new(500, "5.5.2", "Line too long");
/// Command line ended in a bare LF while `bare_line_feed = "reject"`.
pub const COMMAND_BARE_LF: Reply = Reply::new(500, "5.5.2", "Command lines must end with CRLF, not a bare LF");
/// A command that takes no argument got one, or a malformed argument.
pub const SYNTAX_PARAMS: Reply = Reply::new(501, "5.5.4", "Syntax error in parameters or arguments");
/// EHLO/HELO without a domain.
pub const HELO_SYNTAX: Reply = Reply::new(501, "5.5.4", "Syntax: EHLO hostname");
/// Malformed reverse path.
pub const BAD_SENDER: Reply = Reply::new(501, "5.1.7", "Bad sender address syntax");
/// Malformed forward path.
pub const BAD_RECIPIENT: Reply = Reply::new(501, "5.1.3", "Bad recipient address syntax");
/// A parameter we do not offer (or, RFC 4954 5, `AUTH=` where AUTH is not advertised).
pub const UNKNOWN_PARAM: Reply = Reply::new(555, "5.5.4", "Unsupported MAIL or RCPT parameter");
/// MAIL or RCPT parameters in a session that began with HELO (RFC 5321 4.1.1.11, RFC 1869):
/// the service extensions exist only after EHLO.
pub const PARAMS_NEED_EHLO: Reply = Reply::new(555, "5.5.4", "MAIL and RCPT parameters need EHLO, not HELO");
/// A known parameter with a bad value, or given twice.
pub const BAD_PARAM: Reply = Reply::new(501, "5.5.4", "Invalid MAIL or RCPT parameter value");
/// Non-ASCII address without SMTPUTF8 on MAIL FROM (RFC 6531 3.4).
pub const NEEDS_SMTPUTF8: Reply = Reply::new(553, "5.6.7", "Non-ASCII address requires the SMTPUTF8 parameter");
/// Command not implemented (EXPN, TURN...).
pub const NOT_IMPLEMENTED: Reply = Reply::new(502, "5.5.1", "Command not implemented");
/// MAIL before EHLO/HELO.
pub const NEED_HELO: Reply = Reply::new(503, "5.5.1", "Send EHLO or HELO first");
/// AUTH before EHLO, or after HELO: AUTH is a service extension, offered only after EHLO.
pub const NEED_EHLO: Reply = Reply::new(503, "5.5.1", "Send EHLO first");
/// MAIL inside a transaction.
pub const NESTED_MAIL: Reply = Reply::new(503, "5.5.1", "Sender already specified");
/// RCPT before MAIL.
pub const NEED_MAIL: Reply = Reply::new(503, "5.5.1", "Need MAIL before RCPT");
/// DATA/BDAT before MAIL.
pub const NEED_MAIL_DATA: Reply = Reply::new(503, "5.5.1", "Need MAIL and RCPT before DATA");
/// DATA/BDAT when every RCPT was refused (RFC 2920 3.1).
pub const NO_VALID_RECIPIENTS: Reply = Reply::new(554, "5.5.1", "No valid recipients");
/// DATA while a BDAT transfer is in progress.
pub const DATA_AFTER_BDAT: Reply = Reply::new(503, "5.5.1", "DATA not allowed after BDAT");
/// STARTTLS when TLS is already on.
pub const TLS_ALREADY: Reply = Reply::new(503, "5.5.1", "TLS already active");
/// STARTTLS or AUTH in the middle of a mail transaction.
pub const NOT_IN_TRANSACTION: Reply = Reply::new(503, "5.5.1", "Command not allowed during a mail transaction");
/// STARTTLS where no certificate is configured.
pub const TLS_NOT_AVAILABLE: Reply = Reply::new(502, "5.5.1", "STARTTLS not available");
/// AUTH where the connector has no `users` permission group.
pub const AUTH_NOT_AVAILABLE: Reply = Reply::new(502, "5.5.1", "AUTH not available");
/// AUTH after a successful AUTH.
pub const AUTH_ALREADY: Reply = Reply::new(503, "5.5.1", "Already authenticated");
/// AUTH with a mechanism we do not offer.
pub const AUTH_MECHANISM: Reply = Reply::new(504, "5.5.4", "Unrecognized authentication type");
/// AUTH response that is not base64 or not a valid SASL message.
pub const AUTH_DECODE: Reply = Reply::new(501, "5.5.2", "Cannot decode authentication response");
/// A SASL response line over `max_command_line` (RFC 4954 4): the exchange is over.
pub const AUTH_LINE_TOO_LONG: Reply = Reply::new(500, "5.5.6", "Authentication Exchange line is too long");
/// The client cancelled AUTH with `*`.
pub const AUTH_CANCELLED: Reply = Reply::new(501, "5.7.0", "Authentication cancelled");

// ---- permanent: policy -------------------------------------------------------------------------

/// RCPT outside accepted domains without relay right.
pub const RELAY_DENIED: Reply = Reply::new(550, "5.7.54", "Unable to relay recipient in non-accepted domain");
/// MAIL without AUTH where the connector requires it.
pub const AUTH_REQUIRED: Reply =
    Reply::new(530, "5.7.57", "Client was not authenticated to send anonymous mail during MAIL FROM");
/// MAIL or AUTH before STARTTLS where `require_tls`.
pub const TLS_REQUIRED: Reply = Reply::new(530, "5.7.0", "Must issue a STARTTLS command first");
/// AUTH with bad credentials.
pub const AUTH_INVALID: Reply = Reply::new(535, "5.7.8", "Authentication credentials invalid");
/// MAIL FROM or header From outside the user's `send_as`.
pub const SEND_AS_DENIED: Reply = Reply::new(550, "5.7.60", "Client does not have permissions to send as this sender");
/// SIZE over the limit, or the data over it.
pub const TOO_BIG: Reply = Reply::new(552, "5.3.4", "Message size exceeds fixed maximum message size");
/// Bare CR or LF in message data while `bare_line_feed = "reject"` (SMTP smuggling defence).
pub const BARE_LINE_ENDING: Reply =
    Reply::new(550, "5.6.0", "Message contains a bare CR or LF; lines must end with CRLF (message not accepted)");
/// A client that matches no receive connector on this address.
pub const NO_CONNECTOR: Reply = Reply::new(554, "5.7.1", "Access denied: this client is not allowed to use this relay");
/// A PROXY header from a peer that is not a trusted proxy, or a malformed one.
pub const PROXY_REFUSED: Reply = Reply::new(554, "5.7.1", "Access denied: PROXY protocol header refused");

// ---- transient ---------------------------------------------------------------------------------

/// Too many recipients in one transaction.
pub const TOO_MANY_RECIPIENTS: Reply = Reply::new(452, "4.5.3", "Too many recipients");
/// Backpressure: spool or queue over its limits.
pub const NO_STORAGE: Reply = Reply::new(452, "4.3.1", "Insufficient system storage");
/// The spool failed to write or sync the message.
pub const SPOOL_FAILED: Reply =
    Reply::new(451, "4.3.0", "Local error in processing: message not stored, try again later");
/// Over `message_rate_limit`.
pub const RATE_LIMITED: Reply = Reply::new(452, "4.7.0", "Message rate limit exceeded, try again later");
/// AUTH while locked out after `max_auth_failures`.
pub const AUTH_LOCKED: Reply = Reply::new(454, "4.7.0", "Temporary authentication failure");
/// The TLS handshake could not start (the connector's certificate could not be used).
pub const TLS_TEMP_FAILURE: Reply = Reply::new(454, "4.7.0", "TLS not available due to temporary reason");
/// Too many bad commands: the session is closed.
pub const TOO_MANY_ERRORS: Reply = Reply::new(421, "4.7.0", "Too many errors, closing connection");
/// Idle past the timeout: the session is closed.
pub const TIMEOUT: Reply = Reply::new(421, "4.4.2", "Timeout exceeded, closing connection");
/// Over `max_connections_per_source` (or the per-core connection cap).
pub const TOO_MANY_CONNECTIONS: Reply = Reply::new(421, "4.7.0", "Too many connections");
/// The relay is shutting down.
pub const SHUTTING_DOWN: Reply = Reply::new(421, "4.3.2", "Service shutting down, try again later");

/// Every fixed reply, for the table test and for documentation.
pub const ALL: &[Reply] = &[
    SENDER_OK,
    RECIPIENT_OK,
    RESET_OK,
    NOOP_OK,
    START_DATA,
    READY_TLS,
    AUTH_OK,
    VRFY_CANNOT,
    HELP,
    UNRECOGNIZED,
    LINE_TOO_LONG,
    COMMAND_BARE_LF,
    SYNTAX_PARAMS,
    HELO_SYNTAX,
    BAD_SENDER,
    BAD_RECIPIENT,
    UNKNOWN_PARAM,
    PARAMS_NEED_EHLO,
    BAD_PARAM,
    NEEDS_SMTPUTF8,
    NOT_IMPLEMENTED,
    NEED_HELO,
    NEED_EHLO,
    NESTED_MAIL,
    NEED_MAIL,
    NEED_MAIL_DATA,
    NO_VALID_RECIPIENTS,
    DATA_AFTER_BDAT,
    TLS_ALREADY,
    NOT_IN_TRANSACTION,
    TLS_NOT_AVAILABLE,
    AUTH_NOT_AVAILABLE,
    AUTH_ALREADY,
    AUTH_MECHANISM,
    AUTH_DECODE,
    AUTH_LINE_TOO_LONG,
    AUTH_CANCELLED,
    RELAY_DENIED,
    AUTH_REQUIRED,
    TLS_REQUIRED,
    AUTH_INVALID,
    SEND_AS_DENIED,
    TOO_BIG,
    BARE_LINE_ENDING,
    NO_CONNECTOR,
    PROXY_REFUSED,
    TOO_MANY_RECIPIENTS,
    NO_STORAGE,
    SPOOL_FAILED,
    RATE_LIMITED,
    AUTH_LOCKED,
    TLS_TEMP_FAILURE,
    TOO_MANY_ERRORS,
    TIMEOUT,
    TOO_MANY_CONNECTIONS,
    SHUTTING_DOWN,
];

/// `220 <hostname> ESMTP ringrelay`: no enhanced code on the greeting (RFC 2034).
pub fn write_greeting(out: &mut Vec<u8>, hostname: &str) {
    let _ = write!(out, "220 {hostname} ESMTP ringrelay\r\n");
}

/// `250 <hostname> Hello [<client>]`: the HELO reply (no enhanced code, RFC 2034).
pub fn write_helo(out: &mut Vec<u8>, hostname: &str, client_ip: IpAddr) {
    let _ = write!(out, "250 {hostname} Hello [{client_ip}]\r\n");
}

/// What an EHLO reply lists besides the fixed extensions.
#[derive(Debug, Clone, Copy)]
pub struct Extensions<'a> {
    /// `SIZE <max_message_size>` (RFC 1870).
    pub size_max: u64,
    /// `STARTTLS` (RFC 3207): TLS is configured and not on yet.
    pub starttls: bool,
    /// `AUTH <mechanisms>` (RFC 4954); empty: not offered.
    pub auth: &'a [Mechanism],
}

/// The EHLO reply (RFC 5321 4.1.1.1): the hello line, then one line per extension (spec
/// section 5), written straight into `out`. No enhanced codes (RFC 2034).
pub fn write_ehlo(out: &mut Vec<u8>, hostname: &str, client_ip: IpAddr, ext: Extensions<'_>) {
    let _ = write!(
        out,
        "250-{hostname} Hello [{client_ip}]\r\n250-PIPELINING\r\n250-SIZE {}\r\n250-8BITMIME\r\n\
         250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n",
        ext.size_max
    );
    if ext.starttls {
        out.extend_from_slice(b"250-STARTTLS\r\n");
    }
    if !ext.auth.is_empty() {
        out.extend_from_slice(b"250-AUTH");
        for m in ext.auth {
            out.push(b' ');
            out.extend_from_slice(m.name().as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"250 HELP\r\n");
}

/// `250 2.6.0 <QUEUEID> Queued mail for delivery`: angle brackets literal, as Exchange.
pub fn write_queued(out: &mut Vec<u8>, queue_id: super::QueueId) {
    let _ = write!(out, "250 2.6.0 <{queue_id}> Queued mail for delivery\r\n");
}

/// `250 2.0.0 <n> octets received` for a BDAT chunk that is not the last.
pub fn write_chunk_ok(out: &mut Vec<u8>, octets: u64) {
    let _ = write!(out, "250 2.0.0 {octets} octets received\r\n");
}

/// `221 2.0.0 <hostname> closing connection`.
pub fn write_bye(out: &mut Vec<u8>, hostname: &str) {
    let _ = write!(out, "221 2.0.0 {hostname} Service closing transmission channel\r\n");
}

/// `334 <challenge>` for SASL (no enhanced code on 3xx).
pub fn write_challenge(out: &mut Vec<u8>, base64_challenge: &str) {
    let _ = write!(out, "334 {base64_challenge}\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(r: Reply) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// Spec section 5, each row copied from the spec, against the bytes the reply puts on the
    /// wire (`write_to` is what the session and the connection refusals send).
    #[test]
    fn spec_section_5_table_on_the_wire() {
        let rows: &[(&str, Reply)] = &[
            ("550 5.7.54 Unable to relay recipient in non-accepted domain", RELAY_DENIED),
            ("530 5.7.57 Client was not authenticated to send anonymous mail during MAIL FROM", AUTH_REQUIRED),
            ("530 5.7.0 Must issue a STARTTLS command first", TLS_REQUIRED),
            ("535 5.7.8 Authentication credentials invalid", AUTH_INVALID),
            ("550 5.7.60 Client does not have permissions to send as this sender", SEND_AS_DENIED),
            ("552 5.3.4 Message size exceeds fixed maximum message size", TOO_BIG),
            ("452 4.5.3 Too many recipients", TOO_MANY_RECIPIENTS),
            ("500 5.5.2 Line too long", LINE_TOO_LONG),
            ("452 4.3.1 Insufficient system storage", NO_STORAGE),
            ("421 4.7.0 Too many connections", TOO_MANY_CONNECTIONS),
            ("454 4.7.0 Temporary authentication failure", AUTH_LOCKED),
        ];
        for (line, reply) in rows {
            assert_eq!(wire(*reply), format!("{line}\r\n"), "{reply:?}");
        }
        // Rows where the spec fixes only the codes: the line starts with them.
        let prefixes: &[(&str, Reply)] = &[
            ("554 5.7.1 ", NO_CONNECTOR),
            ("554 5.7.1 ", PROXY_REFUSED),
            ("421 4.7.0 ", TOO_MANY_ERRORS),
            ("421 4.4.2 ", TIMEOUT),
            ("452 4.7.0 ", RATE_LIMITED),
            ("550 5.6.", BARE_LINE_ENDING),
        ];
        for (start, reply) in prefixes {
            assert!(wire(*reply).starts_with(start), "{reply:?}");
        }
        let mut out = Vec::new();
        write_queued(&mut out, crate::smtp::QueueId(0xABC));
        assert_eq!(out, b"250 2.6.0 <0000000000000ABC> Queued mail for delivery\r\n");
        let mut out = Vec::new();
        write_greeting(&mut out, "relay.test");
        assert_eq!(out, b"220 relay.test ESMTP ringrelay\r\n");
    }

    /// RFC 3463: the class digit of the enhanced code matches the reply code's first digit, and
    /// only 3xx replies carry none.
    #[test]
    fn every_reply_is_well_formed() {
        for r in ALL {
            assert!((200..600).contains(&r.code), "{r:?}");
            if r.code / 100 == 3 {
                assert!(r.status.is_empty(), "{r:?}");
                continue;
            }
            let class = r.status.split('.').next().unwrap();
            assert_eq!(class, (r.code / 100).to_string(), "{r:?}");
            assert_eq!(r.status.split('.').count(), 3, "{r:?}");
            assert!(!r.text.contains('\r') && !r.text.contains('\n'));
        }
    }
}
