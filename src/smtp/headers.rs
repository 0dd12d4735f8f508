//! Reading the header section of a stored message (RFC 5322 2.2): unfolded header lookup,
//! and the addresses of a `From:` field for the send-as check at end of DATA. Pure; it reads
//! only up to the first empty line.

/// Calls `f(name, value)` for each header field, values unfolded (CRLF + WSP removed) and
/// trimmed, until `f` returns false or the header section ends.
pub fn for_each_header(message: &[u8], mut f: impl FnMut(&[u8], &[u8]) -> bool) {
    let mut value = Vec::new();
    let mut name: &[u8] = &[];
    let mut lines = message.split_inclusive(|&b| b == b'\n');
    let mut have = false;
    loop {
        let line = lines.next();
        let text = line.map(trim_eol);
        let continuation = text.is_some_and(|t| t.first().is_some_and(|&c| c == b' ' || c == b'\t'));
        if continuation && have {
            value.push(b' ');
            value.extend_from_slice(trim(text.unwrap_or_default()));
            continue;
        }
        if have && !f(name, trim(&value)) {
            return;
        }
        have = false;
        let Some(text) = text else { return };
        if text.is_empty() {
            return; // end of the header section
        }
        if let Some(colon) = memchr::memchr(b':', text) {
            name = trim(&text[..colon]);
            value.clear();
            value.extend_from_slice(trim(&text[colon + 1..]));
            have = true;
        }
    }
}

/// The unfolded value of the first header called `wanted` (case-insensitive).
pub fn header_value(message: &[u8], wanted: &str) -> Option<String> {
    let mut found = None;
    for_each_header(message, |name, value| {
        if name.eq_ignore_ascii_case(wanted.as_bytes()) {
            found = Some(String::from_utf8_lossy(value).into_owned());
            return false;
        }
        true
    });
    found
}

/// The mailbox addresses of every `From:` field (RFC 5322 3.6.2 allows a list, and a message
/// with two From fields is malformed but must not slip through), for the send-as check.
/// Display names, comments and quoted strings are skipped; `Name <a@b>`, bare `a@b`, obsolete
/// routes (`<@relay:a@b>`) and group syntax (RFC 6854) are understood; empty groups
/// (`undisclosed-recipients:;`) contribute no mailbox.
///
/// `None` when some element of a From field is not one readable mailbox: no `@` (`From: boss`,
/// an encoded word), two addresses in one mailbox (`<a@b> <c@d>`, `a@b c@d`), text after the
/// `>`, an unquoted `@` in the display name, an empty `<>`. A mail client may display such a
/// field as anything, so the check must not pass it.
pub fn from_mailboxes(message: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut readable = true;
    for_each_header(message, |name, value| {
        if name.eq_ignore_ascii_case(b"From") {
            readable = parse_mailbox_list(&String::from_utf8_lossy(value), &mut out);
        }
        readable
    });
    readable.then_some(out)
}

/// Splits an address list at top-level commas (and group-ending semicolons) and pushes each
/// mailbox's address: the `<...>` part when there is one, else the whole (comment-free) text.
/// False as soon as an element is not exactly one mailbox.
fn parse_mailbox_list(value: &str, out: &mut Vec<String>) -> bool {
    for segment in split_top_level(value) {
        let segment = strip_comments(&segment);
        // `group-name: a@b, c@d;`: the group name ends at a top-level colon.
        let segment = match find_top_level(&segment, ':') {
            Some(i) => segment[i + 1..].to_string(),
            None => segment,
        };
        if segment.trim().is_empty() {
            continue; // an empty group, or an empty list element (RFC 5322 4.4 obs-mbox-list)
        }
        match mailbox_address(&segment) {
            Some(address) => out.push(address),
            None => return false,
        }
    }
    true
}

/// The address of one comment-free mailbox: `display name <addr>` or a bare `addr`.
fn mailbox_address(segment: &str) -> Option<String> {
    let opens = count_top_level(segment, |c| c == '<');
    let address = match (opens, find_top_level(segment, '<')) {
        (0, _) => segment.trim(),
        (1, Some(i)) => {
            let (phrase, rest) = (&segment[..i], &segment[i + 1..]);
            let close = rest.find('>')?;
            // Anything after the angle-addr, or a bare `@` in the display name, is not a
            // mailbox: `<smb1@corp.test> ceo@corp.test` must not pass as smb1.
            if !rest[close + 1..].trim().is_empty() || count_top_level(phrase, |c| c == '@' || c == '>') > 0 {
                return None;
            }
            let inner = rest[..close].trim();
            // Obsolete route (RFC 5322 4.4): `@relay1,@relay2:local@domain`.
            match inner.strip_prefix('@').and_then(|r| r.split_once(':')) {
                Some((_, addr)) => addr.trim(),
                None => inner,
            }
        }
        _ => return None,
    };
    // One addr-spec: an `@`, and no whitespace or angle brackets outside quoted strings.
    let malformed = count_top_level(address, |c| c.is_whitespace() || c == '<' || c == '>') > 0;
    if malformed || !address.contains('@') || address.starts_with('@') || address.ends_with('@') {
        return None;
    }
    Some(address.to_string())
}

/// How many top-level characters of `text` satisfy `f` (outside quotes, comments, brackets).
fn count_top_level(text: &str, f: impl Fn(char) -> bool) -> usize {
    let mut n = 0;
    walk(text, |_, c, top| {
        if top && f(c) {
            n += 1;
        }
    });
    n
}

/// Walks `text` and calls `f(index, char, top_level)`, where top-level means outside quoted
/// strings, comments and angle brackets.
fn walk(text: &str, mut f: impl FnMut(usize, char, bool)) {
    let (mut quoted, mut escaped, mut comment, mut angle) = (false, false, 0u32, false);
    for (i, c) in text.char_indices() {
        let top = !quoted && comment == 0 && !angle && !escaped;
        f(i, c, top);
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted || comment > 0 => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '(' if !quoted => comment += 1,
            ')' if !quoted && comment > 0 => comment -= 1,
            '<' if !quoted && comment == 0 => angle = true,
            '>' if !quoted && comment == 0 => angle = false,
            _ => {}
        }
    }
}

fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    walk(text, |_, c, top| {
        if top && (c == ',' || c == ';') {
            parts.push(String::new());
        } else if let Some(last) = parts.last_mut() {
            last.push(c);
        }
    });
    parts
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0u32;
    walk(text, |_, c, top| {
        // `walk` reports the opening paren as top-level; track depth from what it reports.
        if top && c == '(' {
            depth = 1;
            return;
        }
        if depth > 0 {
            if c == '(' {
                depth += 1;
            } else if c == ')' {
                depth -= 1;
            }
            return;
        }
        out.push(c);
    });
    out
}

fn find_top_level(text: &str, wanted: char) -> Option<usize> {
    let mut found = None;
    walk(text, |i, c, top| {
        if found.is_none() && top && c == wanted {
            found = Some(i);
        }
    });
    found
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_unfolds() {
        let msg = b"Received: x\r\nSubject: a\r\n  folded\r\nMessage-ID: <id@x>\r\n\r\nFrom: body@x\r\n";
        assert_eq!(header_value(msg, "subject").as_deref(), Some("a folded"));
        assert_eq!(header_value(msg, "Message-Id").as_deref(), Some("<id@x>"));
        assert_eq!(header_value(msg, "From"), None, "the body is not headers");
    }

    #[test]
    fn from_mailboxes_in_their_many_forms() {
        let cases: &[(&str, &[&str])] = &[
            ("From: a@example.test\r\n\r\n", &["a@example.test"]),
            ("From: Alice <a@example.test>\r\n\r\n", &["a@example.test"]),
            ("From: \"Smith, Bob <x@evil.test>\" <b@example.test>\r\n\r\n", &["b@example.test"]),
            ("From: a@example.test (Alice <x@evil.test>)\r\n\r\n", &["a@example.test"]),
            ("From: A <a@x.test>, B <b@y.test>\r\n\r\n", &["a@x.test", "b@y.test"]),
            ("From: team: a@x.test, b@y.test;\r\n\r\n", &["a@x.test", "b@y.test"]),
            ("From: Alice\r\n <a@example.test>\r\n\r\n", &["a@example.test"]),
            ("FROM:\r\n\ta@x.test,\r\n b@y.test\r\n\r\n", &["a@x.test", "b@y.test"]),
            ("From: a@x.test\r\nFrom: evil@y.test\r\n\r\n", &["a@x.test", "evil@y.test"]),
            ("From: <@relay.test:a@x.test>\r\n\r\n", &["a@x.test"]),
            ("From: =?utf-8?q?Caf=C3=A9?= <a@x.test>\r\n\r\n", &["a@x.test"]),
            ("From: a@x.test,, b@y.test\r\n\r\n", &["a@x.test", "b@y.test"]),
            // No From mailbox at all: nothing to check against, so the caller refuses.
            ("Subject: none\r\n\r\n", &[]),
            ("From: undisclosed-recipients:;\r\n\r\n", &[]),
            ("From:\r\n\r\n", &[]),
        ];
        for (msg, want) in cases {
            let want: Vec<String> = want.iter().map(|a| a.to_string()).collect();
            assert_eq!(from_mailboxes(msg.as_bytes()), Some(want), "{msg:?}");
        }
    }

    #[test]
    fn from_fields_that_are_not_mailboxes_are_unreadable() {
        for msg in [
            "From: boss\r\n\r\n",
            "From: =?utf-8?q?ceo=40corp.test?=\r\n\r\n",
            "From: <smb1@corp.test> <ceo@corp.test>\r\n\r\n",
            "From: Boss <smb1@corp.test> <ceo@corp.test>\r\n\r\n",
            "From: <smb1@corp.test> ceo@corp.test\r\n\r\n",
            "From: <a@x.test> trailing words\r\n\r\n",
            "From: smb1@corp.test ceo@corp.test\r\n\r\n",
            "From: ceo@corp.test <smb1@corp.test>\r\n\r\n",
            "From: <smb1@corp.test\r\n\r\n",
            "From: <>\r\n\r\n",
            "From: @corp.test\r\n\r\n",
            "From: a@x.test, boss\r\n\r\n",
            "From: a@x.test\r\nFrom: boss\r\n\r\n",
            "From: <smb1@corp.test\r\n <ceo@corp.test>>\r\n\r\n",
        ] {
            assert_eq!(from_mailboxes(msg.as_bytes()), None, "{msg:?}");
        }
    }
}
