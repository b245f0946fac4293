//! Resource URIs as upstreams read them. A URI is judged as text, but an
//! upstream may read other text: the TypeScript SDK's `McpServer` looks a
//! resource up by `new URL(uri).toString()`, the Python SDK validates it as
//! a pydantic `AnyUrl` (both WHATWG URL parsers), and a server that maps
//! URIs to files resolves dot segments and percent-escapes. A URI is
//! allowed only if it is allowed as every upstream reads it.

/// Whether a resource URI could name something other than what its text
/// matches: `file:///public/../private/key` matches `file:///public/**`
/// but an upstream that resolves dot segments (RFC 3986 §5.2.4) reads
/// `/private/key`. Dot segments are refused anywhere, not only in the path:
/// an upstream that takes the URI as a file path, or splits it at another
/// character, resolves `file:///public/x?/../../etc/passwd` and
/// `file:///public/..;x` as well. Encoded dots and separators (also
/// encoded twice, `%252e`) hide the same trick.
pub fn ambiguous(uri: &str) -> bool {
    let mut text = std::borrow::Cow::Borrowed(uri);
    for _ in 0..4 {
        let lower = text.to_ascii_lowercase();
        if ["%2e", "%2f", "%5c", "\\"].iter().any(|needle| lower.contains(needle)) {
            return true;
        }
        if text.split(['/', '?', '#', ';', '=', '&']).any(|segment| segment == "." || segment == "..") {
            return true;
        }
        match percent_decode(&text) {
            Some(decoded) => text = std::borrow::Cow::Owned(decoded),
            None => return false,
        }
    }
    // Still encoded after four rounds: no reading can be vouched for.
    true
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

/// The URI as a WHATWG URL parser serialises it, when that is other text:
/// `file:/etc/passwd` and `file://localhost/etc/passwd` are
/// `file:///etc/passwd`, `https://Internal.ex%61mple.com:443/x` is
/// `https://internal.example.com/x`. `None` when it does not parse (such
/// upstreams refuse it) or reads as written.
pub fn as_parsed(uri: &str) -> Option<String> {
    let parsed = url::Url::parse(uri).ok()?;
    (parsed.as_str() != uri).then(|| parsed.as_str().to_owned())
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
}
