//! Resource URIs as upstreams read them. A URI is judged as text, but an
//! upstream may read other text:
//!
//! - as parsed: the TypeScript SDK's `McpServer` looks a resource up by
//!   `new URL(uri).toString()` and the Python SDK validates it as a pydantic
//!   `AnyUrl` (both WHATWG URL parsers), so `file:/etc/passwd`,
//!   `file://localhost/etc/passwd` and `FILE:///etc/passwd` are all
//!   `file:///etc/passwd` to them;
//! - as a path: a server that maps URIs to files decodes percent-escapes
//!   (sometimes twice), takes `\` for `/`, and resolves `.` and `..` —
//!   wherever they are, query and fragment included, since a path has
//!   none (`file:///public/x?/../../etc/passwd` is `/etc/passwd`).
//!
//! A URI is allowed only if it is allowed in every reading, so a `deny`
//! holds for every spelling and an allowed prefix cannot be walked out of;
//! and `**` still allows every URI, `%2F` and all.

use std::borrow::Cow;

/// How many rounds of percent-decoding a reading follows before giving up
/// on vouching for a URI.
const DECODE_ROUNDS: usize = 4;

/// A URI is still encoded after [`DECODE_ROUNDS`] rounds of decoding: no
/// reading of it can be vouched for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// The URI as upstreams may read it: each reading that differs from the
/// text itself, with the name of the reading. Readings compose (a file
/// server may decode the path of a URL it parsed), so they are followed
/// until nothing new appears, a few steps deep.
pub fn readings(uri: &str) -> Result<Vec<(&'static str, String)>, Unreadable> {
    let mut found: Vec<(&'static str, String)> = Vec::new();
    let mut frontier = vec![uri.to_owned()];
    for _ in 0..3 {
        let mut next = Vec::new();
        for text in &frontier {
            let steps = [
                ("as a URL (as the TypeScript and Python SDKs do)", as_parsed(text)),
                ("as a file path (escapes decoded, dot segments resolved)", Some(as_path(text)?)),
                ("as the address it names (no user, port or trailing dot)", as_address(text)),
            ];
            for (label, reading) in steps {
                if let Some(reading) = reading
                    && reading != uri
                    && !found.iter().any(|(_, r)| *r == reading)
                {
                    found.push((label, reading.clone()));
                    next.push(reading);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    Ok(found)
}

/// The URL without what does not change the resource an upstream fetches:
/// user information, a default port (the parser drops it), a trailing dot
/// on the host, and empty path segments. `None` when it does not parse or
/// nothing changes.
pub fn as_address(uri: &str) -> Option<String> {
    let mut url = url::Url::parse(uri).ok()?;
    let _ = url.set_username("");
    let _ = url.set_password(None);
    if let Some(host) = url.host_str().and_then(|h| h.strip_suffix('.')).map(str::to_owned) {
        let _ = url.set_host(Some(&host));
    }
    if url.path().contains("//") {
        let path: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty()).collect();
        let trailing = if url.path().ends_with('/') && !path.is_empty() { "/" } else { "" };
        let joined = format!("/{}{trailing}", path.join("/"));
        url.set_path(&joined);
    }
    (url.as_str() != uri).then(|| url.as_str().to_owned())
}

/// Whether `.` or `..` is a segment anywhere in the URI, once decoded:
/// between `/`, `\`, `?`, `#`, `;`, `=` or `&`. An upstream that takes a
/// query parameter as a path (`?path=../../etc/passwd`) resolves it
/// relative to a base of its own, which no reading of the URI can model;
/// so where an allow pattern names a prefix, or a deny list applies, such a
/// URI is refused.
pub fn has_dot_segment(uri: &str) -> Result<bool, Unreadable> {
    let mut text = Cow::Borrowed(uri);
    for _ in 0..=DECODE_ROUNDS {
        let dots =
            text.split(['/', '\\', '?', '#', ';', '=', '&']).any(|segment| segment == "." || segment == "..");
        if dots {
            return Ok(true);
        }
        match percent_decode(&text) {
            Some(decoded) => text = Cow::Owned(decoded),
            None => return Ok(false),
        }
    }
    Err(Unreadable)
}

/// The URI as a WHATWG URL parser serialises it, when that is other text;
/// `None` when it does not parse (such upstreams refuse it) or reads as
/// written.
pub fn as_parsed(uri: &str) -> Option<String> {
    let parsed = url::Url::parse(uri).ok()?;
    (parsed.as_str() != uri).then(|| parsed.as_str().to_owned())
}

/// The URI as a server mapping it to a file reads it: scheme and authority
/// as written, the rest percent-decoded until nothing changes, `\` taken
/// for `/`, and dot segments (with `;` parameters, as in `..;x`) resolved.
pub fn as_path(uri: &str) -> Result<String, Unreadable> {
    let (prefix, rest) = split_authority(uri);
    let mut text = Cow::Borrowed(rest);
    let mut rounds = 0;
    while let Some(decoded) = percent_decode(&text) {
        rounds += 1;
        if rounds > DECODE_ROUNDS {
            return Err(Unreadable);
        }
        text = Cow::Owned(decoded);
    }
    let text = text.replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = text.split('/').peekable();
    let absolute = text.starts_with('/');
    if absolute {
        parts.next();
    }
    while let Some(segment) = parts.next() {
        let name = segment.split(';').next().unwrap_or(segment);
        match name {
            "." => {}
            ".." => {
                segments.pop();
            }
            // `a//b` is `a/b` to a file system; a trailing `/` stays.
            "" if parts.peek().is_some() => {}
            _ => segments.push(segment),
        }
        // A trailing dot segment leaves a directory: `/a/..` is `/`.
        if parts.peek().is_none() && matches!(name, "." | "..") {
            segments.push("");
        }
    }
    let joined = segments.join("/");
    Ok(format!("{prefix}{}{joined}", if absolute { "/" } else { "" }))
}

/// `scheme://authority` (or `scheme:`) and the rest of a URI.
fn split_authority(uri: &str) -> (&str, &str) {
    if let Some(scheme_end) = uri.find("://") {
        let after = scheme_end + 3;
        let authority_end = uri[after..].find(['/', '\\', '?', '#']).map_or(uri.len(), |i| after + i);
        return uri.split_at(authority_end);
    }
    match uri.find(':') {
        Some(colon) if uri[..colon].bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) => {
            uri.split_at(colon + 1)
        }
        _ => ("", uri),
    }
}

/// One round of percent-decoding, or `None` when there is no escape.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut decoded = false;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push((hi * 16 + lo) as u8);
            decoded = true;
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    decoded.then(|| String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_url_parsers_make_of_a_uri() {
        for (uri, read) in [
            ("file:/etc/passwd", Some("file:///etc/passwd")),
            ("file://localhost/etc/passwd", Some("file:///etc/passwd")),
            ("https://internal.ex%61mple.com/secret", Some("https://internal.example.com/secret")),
            ("https://internal.example.com:443/secret", Some("https://internal.example.com/secret")),
            ("https:internal.example.com/secret", Some("https://internal.example.com/secret")),
            ("HTTPS://INTERNAL.example.com/secret", Some("https://internal.example.com/secret")),
            ("file:///public/readme.md", None),
            ("mem://public/readme", None),
            ("not a url", None),
        ] {
            assert_eq!(as_parsed(uri).as_deref(), read, "{uri}");
        }
    }

    #[test]
    fn what_a_file_server_makes_of_a_uri() -> Result<(), Unreadable> {
        for (uri, read) in [
            ("file:///public/../private/key", "file:///private/key"),
            ("file:///public/./a", "file:///public/a"),
            ("file:///public/..", "file:///"),
            ("file:///public/%2e%2e/private", "file:///private"),
            ("file:///public/..%2fprivate", "file:///private"),
            ("file:///public/a\\..\\..\\private", "file:///private"),
            ("file:///public/x?/../../etc/passwd", "file:///etc/passwd"),
            ("file:///public/x#/../../etc/passwd", "file:///etc/passwd"),
            ("file:///public/..;x/private", "file:///private"),
            ("file:///public/%252e%252e/private", "file:///private"),
            ("file:///public/a%2Fb", "file:///public/a/b"),
            ("file:///public/100%25.md", "file:///public/100%.md"),
            ("mem://cache/../stats", "mem://cache/stats"),
            ("urn:a/../b", "urn:b"),
            ("file:///public/readme.md", "file:///public/readme.md"),
        ] {
            assert_eq!(as_path(uri)?, read, "{uri}");
        }
        assert_eq!(as_path("file:///%2525252525252e"), Err(Unreadable));
        assert_eq!(as_path("file:/\\etc/passwd")?, "file:/etc/passwd");
        Ok(())
    }

    #[test]
    fn readings_compose() -> Result<(), Unreadable> {
        let read = |uri: &str| -> Result<Vec<String>, Unreadable> {
            Ok(readings(uri)?.into_iter().map(|(_, r)| r).collect())
        };
        for (uri, expected) in [
            ("file:/%65tc/passwd", "file:///etc/passwd"),
            ("file://localhost/%65tc/passwd", "file:///etc/passwd"),
            ("https://internal.ex%61mple.com/%73ecret", "https://internal.example.com/secret"),
            ("https://user@internal.example.com/secret", "https://internal.example.com/secret"),
            ("https://internal.example.com./secret", "https://internal.example.com/secret"),
            ("file:/\\etc/passwd", "file:///etc/passwd"),
            ("https://internal.example.com//secret", "https://internal.example.com/secret"),
        ] {
            let found = read(uri)?;
            assert!(found.iter().any(|r| r == expected), "{uri}: {found:?}");
        }
        assert!(read("file:///public/readme.md")?.is_empty());
        Ok(())
    }
}
