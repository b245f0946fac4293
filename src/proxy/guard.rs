//! The transport guards of the MCP Streamable HTTP specification, each a
//! small function over the request and the policy snapshot that passes or
//! returns the [`Refusal`] the specification asks for.

use super::refusal::{Refusal, code};
use crate::mcp::envelope::{Field, Kind, Payload};
use crate::mcp::headers::{self, SingleHeader};
use crate::mcp::version::{self, ProtocolVersion};
use crate::policy::Transport;
use http::{HeaderMap, StatusCode, Uri};

/// The authority a request addresses. RFC 9112 §3.2.2: when the target is
/// in absolute form (`POST http://evil/servers/x/mcp`) its authority is
/// the one addressed and `Host` is ignored; HTTP/2 carries it as
/// `:authority`, which hyper also puts in the URI. Otherwise `Host`.
pub fn authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Result<Option<&'a str>, Refusal> {
    let host = headers::single(headers, &http::header::HOST);
    if host == SingleHeader::Repeated {
        return Err(Refusal::bad_request("host", "More than one Host header"));
    }
    if let Some(authority) = uri.authority() {
        return Ok(Some(authority.as_str()));
    }
    Ok(match host {
        SingleHeader::Value(v) => Some(v),
        _ => None,
    })
}

/// The DNS-rebinding guard: the addressed authority must be allowed.
pub fn host(uri: &Uri, headers: &HeaderMap, transport: &Transport) -> Result<(), Refusal> {
    match authority(uri, headers)? {
        Some(host) if transport.allowed_hosts.allows(host) => Ok(()),
        Some(host) => Err(Refusal::forbidden(
            "host",
            format!(
                "Host `{}` is not allowed (DNS rebinding protection): add it to transport.allowed_hosts",
                printable(host)
            ),
        )),
        None => Err(Refusal::forbidden("host", "The request names no valid Host")),
    }
}

/// MCP transports: "If the Origin header is present and invalid, servers MUST
/// respond with HTTP 403 Forbidden."
pub fn origin(headers: &HeaderMap, transport: &Transport) -> Result<(), Refusal> {
    match headers::single(headers, &http::header::ORIGIN) {
        SingleHeader::Absent if transport.require_origin => {
            Err(Refusal::forbidden("origin", "An Origin header is required"))
        }
        SingleHeader::Absent => Ok(()),
        SingleHeader::Value(origin) if transport.allowed_origins.allows(origin) => Ok(()),
        SingleHeader::Value(origin) => {
            Err(Refusal::forbidden("origin", format!("Origin `{}` is not allowed", printable(origin))))
        }
        SingleHeader::Repeated => Err(Refusal::forbidden("origin", "More than one Origin header")),
        SingleHeader::NotText => Err(Refusal::forbidden("origin", "Origin header is not valid text")),
    }
}

/// MCP transports: a POST's `Accept` must list both `application/json` and
/// `text/event-stream`.
pub fn post_accept(headers: &HeaderMap) -> Result<(), Refusal> {
    if headers::accepts_json_and_sse(headers) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "accept",
            "Accept must list both application/json and text/event-stream",
        ))
    }
}

/// MCP transports: a GET opens an SSE stream, so `Accept` must admit
/// `text/event-stream`.
pub fn get_accept(headers: &HeaderMap) -> Result<(), Refusal> {
    if headers::accepts(headers, headers::EVENT_STREAM) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "accept",
            "Accept must list text/event-stream",
        ))
    }
}

/// A POST body must be JSON in UTF-8, uncompressed: what toolgate judges
/// is then the only reading an upstream can make of it. Any other charset
/// is refused rather than transcoded (Express's body-parser decodes UTF-7,
/// in which `+ACI-` is a quote toolgate would not see), and so is any
/// `Content-Encoding` but `identity`.
pub fn content_type(headers: &HeaderMap) -> Result<(), Refusal> {
    let unsupported = |reason, message: String| {
        Refusal::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, code::INVALID_REQUEST, reason, message)
    };
    match headers::content_type(headers) {
        Ok(essence) if essence.eq_ignore_ascii_case(headers::JSON) => {}
        Ok(essence) => {
            return Err(unsupported(
                "content_type",
                format!("Content-Type must be application/json, not `{}`", printable(essence)),
            ));
        }
        Err(why) => {
            return Err(unsupported(
                "content_type",
                format!("Content-Type must be application/json in UTF-8; the request has {why}"),
            ));
        }
    }
    match headers::single(headers, &http::header::CONTENT_ENCODING) {
        SingleHeader::Absent => Ok(()),
        SingleHeader::Value(v) if v.eq_ignore_ascii_case("identity") => Ok(()),
        _ => Err(unsupported(
            "content_encoding",
            "Content-Encoding is not accepted: send the body uncompressed".into(),
        )),
    }
}

/// Settles which protocol version a request speaks and that the policy
/// supports it. `payload` is the parsed POST body (`None` for GET/DELETE).
///
/// An absent header means 2025-03-26 (MCP 2025-06-18 transports), except on
/// `initialize`, which negotiates the version in its body; there a supplied
/// header must agree with `params.protocolVersion`.
pub fn protocol_version<'a>(
    headers: &'a HeaderMap,
    payload: Option<&'a Payload<'_>>,
    transport: &Transport,
) -> Result<&'a str, Refusal> {
    let initialize = payload.and_then(|p| match p {
        Payload::Single(m) if m.kind == Kind::Request && m.method() == Some("initialize") => Some(m),
        _ => None,
    });
    let version = match headers::single(headers, &headers::MCP_PROTOCOL_VERSION) {
        SingleHeader::Value(v) => v,
        SingleHeader::Absent if initialize.is_some() => return Ok(ProtocolVersion::ASSUMED_WHEN_ABSENT),
        SingleHeader::Absent => ProtocolVersion::ASSUMED_WHEN_ABSENT,
        SingleHeader::Repeated => {
            return Err(Refusal::bad_request(
                "protocol_version",
                "More than one MCP-Protocol-Version header",
            ));
        }
        SingleHeader::NotText => {
            return Err(Refusal::bad_request("protocol_version", "MCP-Protocol-Version is not valid text"));
        }
    };
    if !transport.supports(version) {
        let supported: Vec<&str> = transport.protocol_versions.iter().map(|v| v.as_str()).collect();
        let said = if headers.contains_key(headers::MCP_PROTOCOL_VERSION) {
            format!("Unsupported MCP-Protocol-Version `{}`", printable(version))
        } else {
            format!("A request without MCP-Protocol-Version is taken as {version}, which is not supported")
        };
        return Err(Refusal::bad_request(
            "protocol_version",
            format!("{said}; supported: {}", supported.join(", ")),
        ));
    }
    if let Some(init) = initialize
        && let Some(Field::Str(body_version)) = &init.params.protocol_version
        && body_version != version
    {
        return Err(Refusal::bad_request(
            "protocol_version",
            format!("MCP-Protocol-Version header ({version}) does not match initialize params.protocolVersion ({body_version})"),
        )
        .with_id(init.id()));
    }
    Ok(version)
}

/// Batches only under 2025-03-26; SEP-2243 headers from 2026-07-28 on.
pub fn payload_shape(headers: &HeaderMap, payload: &Payload<'_>, version: &str) -> Result<(), Refusal> {
    match payload {
        Payload::Batch(_) if !version::allows_batches(version) => Err(Refusal::bad_request(
            "batch",
            format!(
                "JSON-RPC batches are not allowed under protocol {version}: send one message per request"
            ),
        )),
        Payload::Single(message) if version::requires_standard_headers(version) => {
            headers::check_standard_headers(headers, message).map_err(|m| {
                Refusal::new(StatusCode::BAD_REQUEST, code::HEADER_MISMATCH, "header_mismatch", m)
                    .with_id(message.id())
            })
        }
        _ => Ok(()),
    }
}

/// Caller-supplied text quoted in a message: at most 100 characters, with
/// control characters replaced.
fn printable(text: &str) -> String {
    text.chars().take(100).map(|c| if c.is_control() { '?' } else { c }).collect()
}
