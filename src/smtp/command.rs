//! One command line (without its CRLF) → one `Command`, or the `CommandError` that names the
//! reply it gets. Pure and allocation-free: every string in a `Command` borrows from the line.
//! Grammar: RFC 5321 4.1 (verbs, paths), RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8,
//! RFC 3461 RET/ENVID/NOTIFY/ORCPT, RFC 4954 AUTH (verb and MAIL parameter), RFC 3030 BDAT.
//! Lenient where real clients are sloppy and harmless (`MAIL FROM: <a@b>` with a space, a
//! path without angle brackets), strict where it matters (parameters, lengths, UTF-8).

use super::envelope::{BodyType, Notify, Ret};
use super::reply::{self, Reply};

/// RFC 5321 4.5.3.1.3: a path is at most 256 octets, brackets included.
pub const PATH_MAX: usize = 256;
/// RFC 3461 4.4: ENVID is at most 100 characters.
const ENVID_MAX: usize = 100;
/// RFC 3461 4.2: ORCPT is at most 500 characters.
const ORCPT_MAX: usize = 500;

/// A parsed command. Strings borrow from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `EHLO domain`.
    Ehlo(&'a str),
    /// `HELO domain`.
    Helo(&'a str),
    /// `MAIL FROM:<path> params`.
    Mail {
        /// The reverse path without brackets; "" for `<>`.
        path: Path<'a>,
        /// ESMTP parameters.
        params: MailParams<'a>,
    },
    /// `RCPT TO:<path> params`.
    Rcpt {
        /// The forward path without brackets.
        path: Path<'a>,
        /// ESMTP parameters.
        params: RcptParams<'a>,
    },
    /// `DATA`.
    Data,
    /// `BDAT size [LAST]`.
    Bdat {
        /// Octets in this chunk.
        size: u64,
        /// This is the last chunk.
        last: bool,
    },
    /// `RSET`.
    Rset,
    /// `NOOP [string]`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `HELP [topic]`.
    Help,
    /// `VRFY string`.
    Vrfy,
    /// `EXPN string`.
    Expn,
    /// `STARTTLS`.
    StartTls,
    /// `AUTH mechanism [initial-response]`.
    Auth {
        /// The SASL mechanism as the client wrote it.
        mechanism: &'a str,
        /// The initial response (base64, or `=` for an empty one).
        initial: Option<&'a str>,
    },
}

/// A reverse or forward path, without angle brackets or source route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path<'a> {
    /// The mailbox, e.g. `user@example.test`; "" for the null reverse path.
    pub address: &'a str,
    /// The mailbox holds non-ASCII characters (needs SMTPUTF8).
    pub utf8: bool,
}

/// MAIL FROM parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailParams<'a> {
    /// `SIZE=`.
    pub size: Option<u64>,
    /// `BODY=`.
    pub body: Option<BodyType>,
    /// `SMTPUTF8`.
    pub smtputf8: bool,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `ENVID=` (xtext, as received).
    pub envid: Option<&'a str>,
    /// `AUTH=` (RFC 4954 5: the submitter's identity, xtext; accepted and not trusted).
    pub auth: Option<&'a str>,
}

/// RCPT TO parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RcptParams<'a> {
    /// `NOTIFY=`.
    pub notify: Notify,
    /// `ORCPT=` (as received: `addr-type;xtext`).
    pub orcpt: Option<&'a str>,
}

/// Why a command line was refused. Each case has exactly one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// Unknown verb, or a line that is not UTF-8.
    Unrecognized,
    /// Arguments where none are allowed, or malformed arguments.
    Syntax,
    /// EHLO/HELO without a domain.
    HeloSyntax,
    /// Malformed reverse path.
    BadSender,
    /// Malformed forward path.
    BadRecipient,
    /// A parameter we do not offer.
    UnknownParam,
    /// A known parameter with a bad value, or given twice.
    BadParam,
}

impl CommandError {
    /// The reply for this error.
    pub const fn reply(self) -> Reply {
        match self {
            CommandError::Unrecognized => reply::UNRECOGNIZED,
            CommandError::Syntax => reply::SYNTAX_PARAMS,
            CommandError::HeloSyntax => reply::HELO_SYNTAX,
            CommandError::BadSender => reply::BAD_SENDER,
            CommandError::BadRecipient => reply::BAD_RECIPIENT,
            CommandError::UnknownParam => reply::UNKNOWN_PARAM,
            CommandError::BadParam => reply::BAD_PARAM,
        }
    }
}

/// Parses one command line (without CRLF).
pub fn parse(line: &[u8]) -> Result<Command<'_>, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Unrecognized)?;
    let (verb, rest) = match line.find(' ') {
        Some(sp) => (&line[..sp], &line[sp + 1..]),
        None => (line, ""),
    };
    let no_args = |cmd: Command<'static>| {
        if rest.trim().is_empty() { Ok(cmd) } else { Err(CommandError::Syntax) }
    };
    match verb.len() {
        4 => {
            let v = verb.as_bytes();
            let upper = [
                v[0].to_ascii_uppercase(),
                v[1].to_ascii_uppercase(),
                v[2].to_ascii_uppercase(),
                v[3].to_ascii_uppercase(),
            ];
            match &upper {
                b"EHLO" => parse_helo(rest).map(Command::Ehlo),
                b"HELO" => parse_helo(rest).map(Command::Helo),
                b"MAIL" => parse_mail(rest),
                b"RCPT" => parse_rcpt(rest),
                b"DATA" => no_args(Command::Data),
                b"BDAT" => parse_bdat(rest),
                b"RSET" => no_args(Command::Rset),
                b"NOOP" => Ok(Command::Noop),
                b"QUIT" => no_args(Command::Quit),
                b"HELP" => Ok(Command::Help),
                // RFC 5321 4.1.1.6: VRFY takes a string; without one it is a syntax error.
                b"VRFY" if rest.trim().is_empty() => Err(CommandError::Syntax),
                b"VRFY" => Ok(Command::Vrfy),
                b"EXPN" => Ok(Command::Expn),
                b"AUTH" => parse_auth(rest),
                _ => Err(CommandError::Unrecognized),
            }
        }
        8 if verb.eq_ignore_ascii_case("STARTTLS") => no_args(Command::StartTls),
        _ => Err(CommandError::Unrecognized),
    }
}

fn parse_helo(rest: &str) -> Result<&str, CommandError> {
    let name = rest.split_ascii_whitespace().next().ok_or(CommandError::HeloSyntax)?;
    if name.bytes().any(|b| b.is_ascii_control()) {
        return Err(CommandError::HeloSyntax);
    }
    Ok(name)
}

/// Strips a case-insensitive `prefix` (e.g. `FROM:`) and the spaces some clients put after it.
fn strip_keyword<'a>(rest: &'a str, prefix: &str) -> Option<&'a str> {
    let head = rest.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    Some(rest[prefix.len()..].trim_start_matches(' '))
}

fn parse_mail(rest: &str) -> Result<Command<'_>, CommandError> {
    let rest = strip_keyword(rest, "FROM:").ok_or(CommandError::Syntax)?;
    let (path, params) = split_path(rest).ok_or(CommandError::BadSender)?;
    let path = check_path(path, true).ok_or(CommandError::BadSender)?;
    let mut p = MailParams::default();
    for param in params.split(' ').filter(|s| !s.is_empty()) {
        let (key, value) = split_param(param);
        if key.eq_ignore_ascii_case("SIZE") {
            let v = value.ok_or(CommandError::BadParam)?;
            if p.size.is_some() || v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(CommandError::BadParam);
            }
            // A size past u64 is a size over any limit (552), not a malformed one.
            p.size = Some(v.parse().unwrap_or(u64::MAX));
        } else if key.eq_ignore_ascii_case("BODY") {
            let v = value.ok_or(CommandError::BadParam)?;
            if p.body.is_some() {
                return Err(CommandError::BadParam);
            }
            p.body = Some(if v.eq_ignore_ascii_case("7BIT") {
                BodyType::SevenBit
            } else if v.eq_ignore_ascii_case("8BITMIME") {
                BodyType::EightBitMime
            } else if v.eq_ignore_ascii_case("BINARYMIME") {
                return Err(CommandError::UnknownParam); // not offered
            } else {
                return Err(CommandError::BadParam);
            });
        } else if key.eq_ignore_ascii_case("SMTPUTF8") {
            if value.is_some() || p.smtputf8 {
                return Err(CommandError::BadParam);
            }
            p.smtputf8 = true;
        } else if key.eq_ignore_ascii_case("RET") {
            let v = value.ok_or(CommandError::BadParam)?;
            if p.ret.is_some() {
                return Err(CommandError::BadParam);
            }
            p.ret = Some(if v.eq_ignore_ascii_case("FULL") {
                Ret::Full
            } else if v.eq_ignore_ascii_case("HDRS") {
                Ret::Hdrs
            } else {
                return Err(CommandError::BadParam);
            });
        } else if key.eq_ignore_ascii_case("ENVID") {
            let v = value.ok_or(CommandError::BadParam)?;
            if p.envid.is_some() || v.is_empty() || v.len() > ENVID_MAX || !is_xtext(v) {
                return Err(CommandError::BadParam);
            }
            p.envid = Some(v);
        } else if key.eq_ignore_ascii_case("AUTH") {
            let v = value.ok_or(CommandError::BadParam)?;
            if p.auth.is_some() || v.is_empty() || !is_xtext(v) && v != "<>" {
                return Err(CommandError::BadParam);
            }
            p.auth = Some(v);
        } else {
            return Err(CommandError::UnknownParam);
        }
    }
    Ok(Command::Mail { path, params: p })
}

fn parse_rcpt(rest: &str) -> Result<Command<'_>, CommandError> {
    let rest = strip_keyword(rest, "TO:").ok_or(CommandError::Syntax)?;
    let (path, params) = split_path(rest).ok_or(CommandError::BadRecipient)?;
    let path = if path.eq_ignore_ascii_case("postmaster") {
        Path { address: path, utf8: false }
    } else {
        check_path(path, false).ok_or(CommandError::BadRecipient)?
    };
    let mut p = RcptParams::default();
    let mut notify_seen = false;
    for param in params.split(' ').filter(|s| !s.is_empty()) {
        let (key, value) = split_param(param);
        if key.eq_ignore_ascii_case("NOTIFY") {
            let v = value.ok_or(CommandError::BadParam)?;
            if notify_seen {
                return Err(CommandError::BadParam);
            }
            notify_seen = true;
            p.notify = parse_notify(v).ok_or(CommandError::BadParam)?;
        } else if key.eq_ignore_ascii_case("ORCPT") {
            let v = value.ok_or(CommandError::BadParam)?;
            if p.orcpt.is_some() || v.len() > ORCPT_MAX {
                return Err(CommandError::BadParam);
            }
            let (addr_type, addr) = v.split_once(';').ok_or(CommandError::BadParam)?;
            let type_ok = !addr_type.is_empty() && addr_type.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !type_ok || addr.is_empty() || !is_xtext(addr) {
                return Err(CommandError::BadParam);
            }
            p.orcpt = Some(v);
        } else {
            return Err(CommandError::UnknownParam);
        }
    }
    Ok(Command::Rcpt { path, params: p })
}

fn parse_notify(v: &str) -> Option<Notify> {
    if v.eq_ignore_ascii_case("NEVER") {
        return Some(Notify(Notify::NEVER));
    }
    let mut bits = 0;
    for word in v.split(',') {
        let bit = if word.eq_ignore_ascii_case("SUCCESS") {
            Notify::SUCCESS
        } else if word.eq_ignore_ascii_case("FAILURE") {
            Notify::FAILURE
        } else if word.eq_ignore_ascii_case("DELAY") {
            Notify::DELAY
        } else {
            return None; // includes NEVER combined with others
        };
        if bits & bit != 0 {
            return None; // RFC 3461 4.1: each keyword at most once
        }
        bits |= bit;
    }
    Some(Notify(bits))
}

fn parse_bdat(rest: &str) -> Result<Command<'_>, CommandError> {
    let mut words = rest.split(' ').filter(|s| !s.is_empty());
    let size = words.next().ok_or(CommandError::Syntax)?;
    if size.is_empty() || size.len() > 20 || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::Syntax);
    }
    let size = size.parse().map_err(|_| CommandError::Syntax)?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::Syntax),
    };
    if words.next().is_some() {
        return Err(CommandError::Syntax);
    }
    Ok(Command::Bdat { size, last })
}

fn parse_auth(rest: &str) -> Result<Command<'_>, CommandError> {
    let mut words = rest.split(' ').filter(|s| !s.is_empty());
    let mechanism = words.next().ok_or(CommandError::Syntax)?;
    let initial = words.next();
    if words.next().is_some() {
        return Err(CommandError::Syntax);
    }
    Ok(Command::Auth { mechanism, initial })
}

/// `KEY=VALUE` or `KEY`.
fn split_param(param: &str) -> (&str, Option<&str>) {
    match param.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (param, None),
    }
}

/// Splits `<path> params` (or a bare `path params`), honouring quoted local parts.
/// Returns the path without brackets or source route, and the parameter text.
fn split_path(s: &str) -> Option<(&str, &str)> {
    let (inner, rest) = if let Some(after) = s.strip_prefix('<') {
        let close = find_unquoted(after, b'>')?;
        (&after[..close], &after[close + 1..])
    } else {
        // Lenient: `MAIL FROM:user@example.test` (printers, scripts). No params glued on.
        let end = find_unquoted(s, b' ').unwrap_or(s.len());
        (&s[..end], &s[end..])
    };
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None; // `<a@b>x`
    }
    if inner.len() + 2 > PATH_MAX {
        return None;
    }
    // RFC 5321 4.1.2 source route `@a,@b:user@d`: accepted and ignored (C.1 says so).
    let inner = match inner.strip_prefix('@') {
        Some(route) => &route[find_unquoted(route, b':')? + 1..],
        None => inner,
    };
    Some((inner, rest))
}

/// Index of the first `needle` outside a quoted string.
fn find_unquoted(s: &str, needle: u8) -> Option<usize> {
    let b = s.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            c if c == needle && !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Validates `local@domain` (or "" where the null path is allowed).
fn check_path(address: &str, allow_null: bool) -> Option<Path<'_>> {
    if address.is_empty() {
        return allow_null.then_some(Path { address, utf8: false });
    }
    let at = address.rfind('@')?;
    let (local, domain) = (&address[..at], &address[at + 1..]);
    if local.is_empty() || domain.is_empty() || !valid_local(local) || !valid_domain(domain) {
        return None;
    }
    Some(Path { address, utf8: !address.is_ascii() })
}

fn valid_local(local: &str) -> bool {
    if let Some(q) = local.strip_prefix('"') {
        // quoted-string: qtextSMTP or quoted-pairSMTP, then the closing quote.
        let b = q.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' => {
                    if i + 1 >= b.len() || !(32..=126).contains(&b[i + 1]) {
                        return false;
                    }
                    i += 2;
                    continue;
                }
                b'"' => return i == b.len() - 1,
                c if c < 32 || c == 127 => return false,
                _ => {}
            }
            i += 1;
        }
        return false;
    }
    // dot-string of atext; UTF-8 allowed (RFC 6531 extends atext). Empty atoms tolerated:
    // `first..last@` and `trailing.@` occur in the wild and harm nothing downstream.
    local.bytes().all(|c| c >= 0x80 || c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&c))
}

fn valid_domain(domain: &str) -> bool {
    if let Some(lit) = domain.strip_prefix('[') {
        let Some(lit) = lit.strip_suffix(']') else { return false };
        if let Some(v6) = lit.strip_prefix("IPv6:") {
            return v6.parse::<std::net::Ipv6Addr>().is_ok();
        }
        return lit.parse::<std::net::Ipv4Addr>().is_ok();
    }
    if domain.len() > 255 {
        return false;
    }
    domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|c| c >= 0x80 || c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    })
}

/// RFC 3461 4: xtext is printable ASCII except `+` and `=`, plus `+XX` escapes.
fn is_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
                if !(b.get(i + 1).is_some_and(|&c| hex(c)) && b.get(i + 2).is_some_and(|&c| hex(c))) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            c if (b'!'..=b'~').contains(&c) => i += 1,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(line: &str) -> Result<(String, MailParams<'_>), CommandError> {
        match parse(line.as_bytes())? {
            Command::Mail { path, params } => Ok((path.address.to_string(), params)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verbs_are_case_insensitive() {
        assert_eq!(parse(b"ehlo client.test"), Ok(Command::Ehlo("client.test")));
        assert_eq!(parse(b"QuIt"), Ok(Command::Quit));
        assert_eq!(parse(b"starttls"), Ok(Command::StartTls));
        assert_eq!(parse(b"DATA"), Ok(Command::Data));
        assert_eq!(parse(b"DATA now"), Err(CommandError::Syntax));
        assert_eq!(parse(b"XYZZ"), Err(CommandError::Unrecognized));
        assert_eq!(parse(b""), Err(CommandError::Unrecognized));
        assert_eq!(parse(b"EHLO"), Err(CommandError::HeloSyntax));
        assert_eq!(parse(b"VRFY"), Err(CommandError::Syntax));
        assert_eq!(parse(b"VRFY  "), Err(CommandError::Syntax));
        assert_eq!(CommandError::Syntax.reply().line(), "501 5.5.4 Syntax error in parameters or arguments");
        assert_eq!(parse(b"VRFY postmaster"), Ok(Command::Vrfy));
        assert_eq!(parse(b"\xff\xfe"), Err(CommandError::Unrecognized));
    }

    #[test]
    fn mail_paths_and_params() {
        let (p, params) = mail("MAIL FROM:<a@example.test> SIZE=1000 BODY=8BITMIME RET=HDRS ENVID=abc+2B").unwrap();
        assert_eq!(p, "a@example.test");
        assert_eq!(params.size, Some(1000));
        assert_eq!(params.body, Some(BodyType::EightBitMime));
        assert_eq!(params.ret, Some(Ret::Hdrs));
        assert_eq!(params.envid, Some("abc+2B"));
        assert_eq!(mail("MAIL FROM:<>").unwrap().0, "");
        assert_eq!(mail("mail from: <a@b.test>").unwrap().0, "a@b.test");
        assert_eq!(mail("MAIL FROM:a@b.test").unwrap().0, "a@b.test");
        assert_eq!(mail("MAIL FROM:<@relay.test,@r2.test:a@b.test>").unwrap().0, "a@b.test");
        assert_eq!(mail("MAIL FROM:<\"a b>c\"@b.test>").unwrap().0, "\"a b>c\"@b.test");
        assert_eq!(mail("MAIL FROM:<a@[192.0.2.1]>").unwrap().0, "a@[192.0.2.1]");
        assert_eq!(mail("MAIL FROM:<a@[IPv6:2001:db8::1]>").unwrap().0, "a@[IPv6:2001:db8::1]");
        assert_eq!(mail("MAIL FROM:<a@b.test> FOO=1").unwrap_err(), CommandError::UnknownParam);
        assert_eq!(mail("MAIL FROM:<a@b.test> SIZE=x").unwrap_err(), CommandError::BadParam);
        assert_eq!(mail("MAIL FROM:<a@b.test> SIZE=1 SIZE=2").unwrap_err(), CommandError::BadParam);
        assert_eq!(mail("MAIL FROM:<a@b.test> SIZE=").unwrap_err(), CommandError::BadParam);
        assert_eq!(mail("MAIL FROM:<a@b.test> SIZE=-1").unwrap_err(), CommandError::BadParam);
        // Past u64: over any limit, which the session answers 552.
        assert_eq!(mail("MAIL FROM:<a@b.test> SIZE=18446744073709551615").unwrap().1.size, Some(u64::MAX));
        assert_eq!(mail("MAIL FROM:<a@b.test> SIZE=18446744073709551616").unwrap().1.size, Some(u64::MAX));
        assert_eq!(mail("MAIL FROM:<a@b.test> SIZE=99999999999999999999999999").unwrap().1.size, Some(u64::MAX));
        assert_eq!(mail("MAIL FROM:<a@b.test> SIZE=18446744073709551614").unwrap().1.size, Some(u64::MAX - 1));
        assert_eq!(mail("MAIL FROM:<a@b.test> BODY=BINARYMIME").unwrap_err(), CommandError::UnknownParam);
        assert_eq!(mail("MAIL FROM:<a@b.test> ENVID=a=b").unwrap_err(), CommandError::BadParam);
        assert_eq!(mail("MAIL FROM:<a@b.test> ENVID=a+2").unwrap_err(), CommandError::BadParam);
        assert_eq!(mail("MAIL FROM:<ab.test>").unwrap_err(), CommandError::BadSender);
        assert_eq!(mail("MAIL FROM:<a@b..test>").unwrap_err(), CommandError::BadSender);
        assert_eq!(mail("MAIL FROM:<a@b.test").unwrap_err(), CommandError::BadSender);
        assert_eq!(mail("MAIL FROM:<a@b.test>x").unwrap_err(), CommandError::BadSender);
        assert_eq!(mail("MAIL TO:<a@b.test>").unwrap_err(), CommandError::Syntax);
        let long = format!("MAIL FROM:<{}@b.test>", "a".repeat(300));
        assert_eq!(mail(&long).unwrap_err(), CommandError::BadSender);
    }

    #[test]
    fn utf8_addresses_are_flagged() {
        match parse("MAIL FROM:<j\u{f6}rg@b\u{fc}ro.test> SMTPUTF8".as_bytes()).unwrap() {
            Command::Mail { path, params } => {
                assert!(path.utf8);
                assert!(params.smtputf8);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rcpt_params() {
        match parse(b"RCPT TO:<b@c.test> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;b+40c.test").unwrap() {
            Command::Rcpt { path, params } => {
                assert_eq!(path.address, "b@c.test");
                assert_eq!(params.notify, Notify(Notify::SUCCESS | Notify::DELAY));
                assert_eq!(params.orcpt, Some("rfc822;b+40c.test"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(b"RCPT TO:<Postmaster>"), Ok(Command::Rcpt { .. })));
        assert_eq!(parse(b"RCPT TO:<b@c.test> NOTIFY=NEVER,SUCCESS"), Err(CommandError::BadParam));
        assert_eq!(parse(b"RCPT TO:<b@c.test> NOTIFY=SUCCESS,SUCCESS"), Err(CommandError::BadParam));
        assert_eq!(parse(b"RCPT TO:<b@c.test> NOTIFY=delay,FAILURE,Delay"), Err(CommandError::BadParam));
        assert_eq!(parse(b"RCPT TO:<b@c.test> NOTIFY=NEVER,NEVER"), Err(CommandError::BadParam));
        assert_eq!(parse(b"RCPT TO:<b@c.test> NOTIFY="), Err(CommandError::BadParam));
        assert_eq!(parse(b"RCPT TO:<b@c.test> ORCPT=b@c.test"), Err(CommandError::BadParam));
        assert_eq!(parse(b"RCPT TO:<>"), Err(CommandError::BadRecipient));
        assert_eq!(parse(b"RCPT TO:<b@c.test> SIZE=1"), Err(CommandError::UnknownParam));
    }

    #[test]
    fn bdat_and_auth() {
        assert_eq!(parse(b"BDAT 100"), Ok(Command::Bdat { size: 100, last: false }));
        assert_eq!(parse(b"BDAT 0 LAST"), Ok(Command::Bdat { size: 0, last: true }));
        assert_eq!(parse(b"BDAT x"), Err(CommandError::Syntax));
        assert_eq!(parse(b"BDAT 1 LAST x"), Err(CommandError::Syntax));
        assert_eq!(parse(b"BDAT 99999999999999999999999"), Err(CommandError::Syntax));
        assert_eq!(parse(b"AUTH PLAIN AGEAYg=="), Ok(Command::Auth { mechanism: "PLAIN", initial: Some("AGEAYg==") }));
        assert_eq!(parse(b"AUTH LOGIN"), Ok(Command::Auth { mechanism: "LOGIN", initial: None }));
        assert_eq!(parse(b"AUTH"), Err(CommandError::Syntax));
    }
}
