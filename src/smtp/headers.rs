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
/// with two From fields is malformed but must not slip through), lowercased domain intact.
/// Display names, comments and quoted strings are skipped; `Name <a@b>` and bare `a@b` and
/// group syntax are understood.
pub fn from_addresses(message: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    for_each_header(message, |name, value| {
        if name.eq_ignore_ascii_case(b"From") {
            parse_mailbox_list(&String::from_utf8_lossy(value), &mut out);
        }
        true
    });
    out
}

/// Splits an address list at top-level commas (and group-ending semicolons) and takes each
/// mailbox's address: the `<...>` part when there is one, else the whole (comment-free) text.
fn parse_mailbox_list(value: &str, out: &mut Vec<String>) {
    for segment in split_top_level(value) {
        let segment = strip_comments(&segment);
        // `group-name: a@b, c@d;`: the group name ends at a top-level colon.
        let segment = match find_top_level(&segment, ':') {
            Some(i) => segment[i + 1..].to_string(),
            None => segment,
        };
        let address = match find_top_level(&segment, '<') {
            Some(i) => {
                let rest = &segment[i + 1..];
                rest[..rest.find('>').unwrap_or(rest.len())].trim().to_string()
            }
            None => segment.trim().to_string(),
        };
        if address.contains('@') {
            out.push(address);
        }
    }
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
    fn from_addresses_in_their_many_forms() {
        let cases: &[(&str, &[&str])] = &[
            ("From: a@example.test\r\n\r\n", &["a@example.test"]),
            ("From: Alice <a@example.test>\r\n\r\n", &["a@example.test"]),
            ("From: \"Smith, Bob <x@evil.test>\" <b@example.test>\r\n\r\n", &["b@example.test"]),
            ("From: a@example.test (Alice <x@evil.test>)\r\n\r\n", &["a@example.test"]),
            ("From: A <a@x.test>, B <b@y.test>\r\n\r\n", &["a@x.test", "b@y.test"]),
            ("From: team: a@x.test, b@y.test;\r\n\r\n", &["a@x.test", "b@y.test"]),
            ("From: Alice\r\n <a@example.test>\r\n\r\n", &["a@example.test"]),
            ("From: a@x.test\r\nFrom: evil@y.test\r\n\r\n", &["a@x.test", "evil@y.test"]),
            ("From: <a@x.test> trailing words\r\n\r\n", &["a@x.test"]),
            ("Subject: none\r\n\r\n", &[]),
        ];
        for (msg, want) in cases {
            assert_eq!(from_addresses(msg.as_bytes()), *want, "{msg:?}");
        }
    }
}
