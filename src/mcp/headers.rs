//! The HTTP headers of the Streamable HTTP transport, and the checks that
//! read them: media types (`Accept`, `Content-Type`) and the SEP-2243
//! `Mcp-Method`/`Mcp-Name` headers of protocol 2026-07-28.

use super::envelope::{Field, Message};
use base64::Engine;
use http::HeaderMap;
use http::header::HeaderName;

pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");

pub const JSON: &str = "application/json";
pub const EVENT_STREAM: &str = "text/event-stream";

/// A header that must appear at most once, as visible ASCII.
#[derive(Debug, PartialEq, Eq)]
pub enum SingleHeader<'a> {
    Absent,
    Value(&'a str),
    Repeated,
    NotText,
}

pub fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> SingleHeader<'a> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return SingleHeader::Absent;
    };
    if values.next().is_some() {
        return SingleHeader::Repeated;
    }
    match first.to_str() {
        Ok(text) => SingleHeader::Value(text.trim()),
        Err(_) => SingleHeader::NotText,
    }
}

/// Whether the `Accept` headers admit `media` (`type/subtype`), honouring
/// wildcards and `q=0`. A missing `Accept` admits nothing: MCP requires
/// clients to list what they accept.
pub fn accepts(headers: &HeaderMap, media: &str) -> bool {
    accepts_each(headers, [media]) == [true]
}

/// Whether the `Accept` headers admit both JSON and SSE, as a POST's must.
/// The one value the MCP SDKs send is answered without a parse.
pub fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
    const USUAL: &[u8] = b"application/json, text/event-stream";
    let mut values = headers.get_all(http::header::ACCEPT).iter();
    if let (Some(value), None) = (values.next(), values.next())
        && value.as_bytes() == USUAL
    {
        return true;
    }
    accepts_each(headers, [JSON, EVENT_STREAM]) == [true, true]
}

/// [`accepts`] for several media types, reading the headers once.
pub fn accepts_each<const N: usize>(headers: &HeaderMap, media: [&str; N]) -> [bool; N] {
    // Per media type: decided by a range naming it exactly, else the best
    // of the wildcard ranges that match it.
    let mut exact: [Option<bool>; N] = [None; N];
    let mut best: [Option<bool>; N] = [None; N];
    for value in headers.get_all(http::header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let range_media = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| {
                let p = p.trim();
                p.len() >= 2
                    && p[..2].eq_ignore_ascii_case("q=")
                    && p[2..].trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            });
            for (i, media) in media.iter().enumerate() {
                if exact[i].is_some() {
                    continue;
                }
                // An exact range decides over a wildcard, e.g. `*/*, text/event-stream;q=0`.
                if range_media.eq_ignore_ascii_case(media) {
                    exact[i] = Some(!refused);
                    continue;
                }
                let want_type = media.split_once('/').map_or("", |(t, _)| t);
                let matches = range_media == "*/*"
                    || range_media.strip_suffix("/*").is_some_and(|t| t.eq_ignore_ascii_case(want_type));
                if matches {
                    best[i] = Some(best[i].unwrap_or(false) || !refused);
                }
            }
        }
    }
    std::array::from_fn(|i| media[i].contains('/') && exact[i].or(best[i]).unwrap_or(false))
}

/// Why a `Content-Type` cannot be read with certainty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaTypeError {
    Absent,
    Repeated,
    /// Not `type/subtype *( OWS ";" OWS [ parameter ] )` (RFC 9110 §8.3.1).
    Malformed,
    /// A charset other than UTF-8, or more than one.
    Charset(String),
}

impl std::fmt::Display for MediaTypeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaTypeError::Absent => f.write_str("no Content-Type"),
            MediaTypeError::Repeated => f.write_str("more than one Content-Type"),
            MediaTypeError::Malformed => f.write_str("a Content-Type that is not a media type"),
            MediaTypeError::Charset(charset) => write!(f, "charset `{charset}` (only UTF-8 is accepted)"),
        }
    }
}

/// The essence (`type/subtype`, as written) of a message's one
/// `Content-Type`, which may name no charset but UTF-8.
///
/// Readers decode a body by its charset (Express's body-parser decodes
/// UTF-7; Python's httpx decodes text answers by it), while toolgate reads
/// UTF-8: a body in any other charset would be judged as one text and read
/// as another. Parameters other than `charset` change no reader's decoding.
pub fn content_type(headers: &HeaderMap) -> Result<&str, MediaTypeError> {
    let value = match single(headers, &http::header::CONTENT_TYPE) {
        SingleHeader::Value(value) => value,
        SingleHeader::Absent => return Err(MediaTypeError::Absent),
        SingleHeader::Repeated => return Err(MediaTypeError::Repeated),
        SingleHeader::NotText => return Err(MediaTypeError::Malformed),
    };
    let (essence, charset) = parse_media_type(value).ok_or(MediaTypeError::Malformed)?;
    match charset {
        Some(Charset::Utf8) | None => Ok(essence),
        Some(Charset::Other(other)) => Err(MediaTypeError::Charset(other.chars().take(40).collect())),
    }
}

enum Charset<'a> {
    Utf8,
    Other(&'a str),
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn token(text: &str) -> (&str, &str) {
    let end = text.bytes().position(|b| !is_tchar(b)).unwrap_or(text.len());
    text.split_at(end)
}

/// `type/subtype` and its charset, if the value is a well-formed media type
/// naming at most one charset.
fn parse_media_type(value: &str) -> Option<(&str, Option<Charset<'_>>)> {
    const OWS: [char; 2] = [' ', '\t'];
    // The two types MCP messages carry, as nearly every sender spells them.
    if value == JSON || value == EVENT_STREAM {
        return Some((value, None));
    }
    let (kind, rest) = token(value);
    let rest = rest.strip_prefix('/')?;
    let (subtype, mut rest) = token(rest);
    if kind.is_empty() || subtype.is_empty() {
        return None;
    }
    let essence = &value[..kind.len() + 1 + subtype.len()];
    let mut charset = None;
    loop {
        rest = rest.trim_start_matches(OWS);
        if rest.is_empty() {
            return Some((essence, charset));
        }
        rest = rest.strip_prefix(';')?.trim_start_matches(OWS);
        if rest.is_empty() || rest.starts_with(';') {
            continue;
        }
        let (name, after) = token(rest);
        let after = after.strip_prefix('=')?;
        if name.is_empty() {
            return None;
        }
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted_end(quoted)?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let (value, after) = token(after);
            if value.is_empty() {
                return None;
            }
            (value, after)
        };
        rest = after;
        if name.eq_ignore_ascii_case("charset") {
            if charset.is_some() {
                return Some((essence, Some(Charset::Other("given twice"))));
            }
            charset =
                Some(if value.eq_ignore_ascii_case("utf-8") { Charset::Utf8 } else { Charset::Other(value) });
        }
    }
}

/// The index of the closing quote of a quoted-string whose opening quote
/// was just consumed.
fn quoted_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => return Some(i),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// Whether a request's `Content-Type` is `application/json` in UTF-8.
pub fn is_json_content(headers: &HeaderMap) -> bool {
    content_type(headers).is_ok_and(|essence| essence.eq_ignore_ascii_case(JSON))
}

/// Methods whose `Mcp-Name` header carries a params member, and which one
/// (SEP-2243).
fn name_source<'m, 'a>(message: &'m Message<'a>) -> Option<(&'static str, Option<&'m Field<'a>>)> {
    let p = &message.params;
    match message.method()? {
        "tools/call" | "prompts/get" => Some(("name", p.name.as_ref())),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some(("uri", p.uri.as_ref())),
        "tasks/get" | "tasks/update" | "tasks/cancel" => Some(("taskId", p.task_id.as_ref())),
        _ => None,
    }
}

/// Decodes a SEP-2243 header value: plain text, or `=?base64?…?=` for values
/// that are not plain visible ASCII.
fn decode_value(value: &str) -> Option<String> {
    match value.strip_prefix("=?base64?").and_then(|v| v.strip_suffix("?=")) {
        Some(inner) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(inner).ok()?;
            String::from_utf8(bytes).ok()
        }
        None => Some(value.to_owned()),
    }
}

/// Checks the `Mcp-Method`/`Mcp-Name` headers against the one message of a
/// request under protocol 2026-07-28 or later. Intermediaries route on these
/// headers, so a header that disagrees with the body would let one message
/// be routed as another. `initialize` may omit them, but what it supplies
/// must agree. Responses carry no method and are exempt.
pub fn check_standard_headers(headers: &HeaderMap, message: &Message<'_>) -> Result<(), String> {
    let Some(method) = message.method() else {
        return Ok(());
    };
    match single(headers, &MCP_METHOD) {
        SingleHeader::Absent if method == "initialize" => return Ok(()),
        SingleHeader::Absent => return Err("missing required Mcp-Method header".into()),
        SingleHeader::Repeated => return Err("duplicate Mcp-Method header".into()),
        SingleHeader::NotText => return Err("Mcp-Method header is not valid text".into()),
        SingleHeader::Value(v) if v != method => {
            return Err(format!("Mcp-Method header `{v}` does not match body method `{method}`"));
        }
        SingleHeader::Value(_) => {}
    }
    let Some((member, field)) = name_source(message) else {
        return Ok(());
    };
    let Some(expected) = field.and_then(Field::as_str) else {
        return Ok(());
    };
    match single(headers, &MCP_NAME) {
        SingleHeader::Absent => Err(format!("missing required Mcp-Name header for `{method}`")),
        SingleHeader::Repeated => Err("duplicate Mcp-Name header".into()),
        SingleHeader::NotText => Err("Mcp-Name header is not valid text".into()),
        SingleHeader::Value(raw) => match decode_value(raw) {
            None => Err("Mcp-Name header is not valid Base64".into()),
            Some(decoded) if decoded != expected => {
                Err(format!("Mcp-Name header `{decoded}` does not match body params.{member} `{expected}`"))
            }
            Some(_) => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::envelope::{Payload, parse};
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) {
                map.append(k, v);
            }
        }
        map
    }

    #[test]
    fn accept_ranges_judged_together_stay_apart() {
        let both = [JSON, EVENT_STREAM];
        let h = headers(&[("accept", "*/*, text/event-stream;q=0")]);
        assert_eq!(accepts_each(&h, both), [true, false]);
        let h = headers(&[("accept", "application/json;q=0, */*")]);
        assert_eq!(accepts_each(&h, both), [false, true]);
        let h = headers(&[("accept", "text/*"), ("accept", "application/json")]);
        assert_eq!(accepts_each(&h, both), [true, true]);
        let h = headers(&[("accept", "application/*;q=0, text/event-stream")]);
        assert_eq!(accepts_each(&h, both), [false, true]);
        assert_eq!(accepts_each(&headers(&[]), both), [false, false]);
    }

    #[test]
    fn the_usual_accept_is_answered_as_the_parse_answers_it() {
        let usual = "application/json, text/event-stream";
        for pairs in [
            vec![("accept", usual)],
            vec![("accept", usual), ("accept", "text/event-stream;q=0")],
            vec![("accept", usual), ("accept", "application/*;q=0")],
            vec![("accept", "application/json, text/event-stream;q=0")],
            vec![("accept", "application/json,text/event-stream")],
            vec![("accept", "application/json")],
            vec![],
        ] {
            let h = headers(&pairs);
            let parsed = accepts_each(&h, [JSON, EVENT_STREAM]) == [true, true];
            assert_eq!(accepts_json_and_sse(&h), parsed, "{pairs:?}");
        }
        assert!(accepts_json_and_sse(&headers(&[("accept", usual)])));
        assert!(!accepts_json_and_sse(&headers(&[("accept", "application/json, text/event-stream;q=0")])));
    }

    #[test]
    fn accept_ranges() {
        let h = headers(&[("accept", "application/json, text/event-stream")]);
        assert!(accepts(&h, JSON) && accepts(&h, EVENT_STREAM));
        let h = headers(&[("accept", "application/json"), ("accept", "text/event-stream;q=0.5")]);
        assert!(accepts(&h, JSON) && accepts(&h, EVENT_STREAM));
        let h = headers(&[("accept", "*/*")]);
        assert!(accepts(&h, JSON) && accepts(&h, EVENT_STREAM));
        let h = headers(&[("accept", "*/*, text/event-stream;q=0")]);
        assert!(accepts(&h, JSON) && !accepts(&h, EVENT_STREAM));
        let h = headers(&[("accept", "Application/JSON")]);
        assert!(accepts(&h, JSON) && !accepts(&h, EVENT_STREAM));
        assert!(!accepts(&headers(&[]), JSON));
        assert!(!accepts(&headers(&[("accept", "text/html")]), JSON));
    }

    #[test]
    fn content_type() {
        for good in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON;charset=UTF-8",
            "application/json; charset=\"utf-8\"",
            "application/json ; charset=utf-8 ; profile=x",
            "application/json;;",
        ] {
            assert_eq!(super::content_type(&headers(&[("content-type", good)])).ok(), Some(&good[..16]));
            assert!(is_json_content(&headers(&[("content-type", good)])), "{good}");
        }
        for bad in [
            "application/json; charset=utf-7",
            "application/json; charset=\"utf-7\"",
            "application/json; charset=utf-16",
            "application/json; charset=utf8",
            "application/json; charset=utf-8; charset=utf-7",
            "application/json; charset=utf-8; CHARSET=utf-8",
            "application/json-rpc",
            "application/jsonx",
            "application/json,text/plain",
            "application/json; charset",
            "application/json; charset=\"utf-8",
            "application /json",
            "application/json x",
            "/json",
        ] {
            assert!(!is_json_content(&headers(&[("content-type", bad)])), "{bad}");
        }
        assert!(!is_json_content(&headers(&[("content-type", "text/plain")])));
        assert!(!is_json_content(&headers(&[
            ("content-type", "application/json"),
            ("content-type", "text/plain")
        ])));
        assert!(!is_json_content(&headers(&[])));
    }

    fn check(pairs: &[(&str, &str)], body: &str) -> Result<(), String> {
        let payload = parse(body.as_bytes()).map_err(|e| e.to_string())?;
        let Payload::Single(message) = payload else {
            return Err("batch".into());
        };
        check_standard_headers(&headers(pairs), &message)
    }

    #[test]
    fn standard_headers() {
        let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"héllo"}}"#;
        assert!(check(&[("mcp-method", "tools/call"), ("mcp-name", "=?base64?aMOpbGxv?=")], call).is_ok());
        assert!(
            check(&[("mcp-method", "tools/call"), ("mcp-name", "other")], call)
                .unwrap_err()
                .contains("does not match")
        );
        assert!(
            check(&[("mcp-method", "tools/call")], call).unwrap_err().contains("missing required Mcp-Name")
        );
        assert!(check(&[("mcp-method", "tools/list"), ("mcp-name", "héllo")], call).is_err());
        assert!(
            check(&[("mcp-method", "tools/call"), ("mcp-method", "tools/call")], call)
                .unwrap_err()
                .contains("duplicate")
        );
        assert!(check(&[], r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).is_err());
        assert!(check(&[], r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#).is_ok());
        assert!(
            check(&[("mcp-method", "ping")], r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#).is_err()
        );
        assert!(check(&[], r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).is_ok());
        let read = r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///a"}}"#;
        assert!(check(&[("mcp-method", "resources/read"), ("mcp-name", "file:///a")], read).is_ok());
    }
}
