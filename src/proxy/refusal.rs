//! What a caller sees when toolgate says no: the HTTP status the MCP
//! specification asks for and, in the body, a JSON-RPC error a person can act
//! on. Every step of the pipeline refuses through this one type.

use super::ProxyBody;
use crate::mcp::envelope::EnvelopeError;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::value::RawValue;

/// JSON-RPC 2.0 error codes used in refusals.
pub mod code {
    pub const PARSE_ERROR: i32 = -32700;
    pub const INVALID_REQUEST: i32 = -32600;
    pub const INTERNAL_ERROR: i32 = -32603;
    /// MCP 2026-07-28: a routing header disagrees with the body.
    pub const HEADER_MISMATCH: i32 = -32020;
}

#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: i32,
    pub message: String,
    /// Short, fixed name of the rule that refused, for metrics and logs.
    pub reason: &'static str,
    id: Option<Box<RawValue>>,
    allow: Option<&'static str>,
    challenge: Option<String>,
}

impl Refusal {
    pub fn new(status: StatusCode, code: i32, reason: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), reason, id: None, allow: None, challenge: None }
    }

    /// Echo the id of the message being refused, when it is known.
    pub fn with_id(mut self, id: Option<&RawValue>) -> Self {
        self.id = id.map(ToOwned::to_owned);
        self
    }

    /// Adds a `WWW-Authenticate` challenge (RFC 6750 §3, RFC 9728 §5.1).
    pub fn with_challenge(mut self, challenge: String) -> Self {
        self.challenge = Some(challenge);
        self
    }

    pub fn not_found(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "not_found",
            format!(
                "No MCP endpoint at {path}: use /mcp or /servers/NAME/mcp for a virtual server the policy defines"
            ),
        )
    }

    pub fn method_not_allowed(method: &http::Method) -> Self {
        let mut refusal = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            code::INVALID_REQUEST,
            "method_not_allowed",
            format!(
                "HTTP method {method} is not part of the MCP Streamable HTTP transport: use POST, GET or DELETE"
            ),
        );
        refusal.allow = Some("GET, POST, DELETE");
        refusal
    }

    pub fn forbidden(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code::INVALID_REQUEST, reason, message)
    }

    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code::INVALID_REQUEST, reason, message)
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        #[derive(serde::Serialize)]
        struct Error<'a> {
            code: i32,
            message: &'a str,
        }
        #[derive(serde::Serialize)]
        struct Body<'a> {
            jsonrpc: &'static str,
            id: Option<&'a RawValue>,
            error: Error<'a>,
        }
        let body = Body {
            jsonrpc: "2.0",
            id: self.id.as_deref(),
            error: Error { code: self.code, message: &self.message },
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = Response::new(Full::new(Bytes::from(bytes)).boxed_unsync());
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(challenge) = self.challenge.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

impl From<EnvelopeError> for Refusal {
    fn from(error: EnvelopeError) -> Self {
        match error {
            EnvelopeError::Parse(_) => {
                Self::new(StatusCode::BAD_REQUEST, code::PARSE_ERROR, "parse_error", error.to_string())
            }
            EnvelopeError::Invalid(_) => Self::bad_request("invalid_request", error.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn body_is_a_json_rpc_error() {
        let id = RawValue::from_string("\"abc\"".into()).ok();
        let response = Refusal::bad_request("x", "nope").with_id(id.as_deref()).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        assert_eq!(&body[..], br#"{"jsonrpc":"2.0","id":"abc","error":{"code":-32600,"message":"nope"}}"#);
    }

    #[tokio::test]
    async fn unknown_id_is_null() {
        let response = Refusal::forbidden("x", "no").into_response();
        let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        assert_eq!(&body[..], br#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"no"}}"#);
    }
}
