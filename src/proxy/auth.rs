//! The authentication step's answers: 401/403 with the `WWW-Authenticate`
//! challenge MCP clients follow to find the authorization server (MCP
//! authorization; RFC 6750 §3; RFC 9728 §5.1), and the RFC 9728 protected
//! resource metadata documents at `/.well-known/oauth-protected-resource`.

use super::ProxyBody;
use super::refusal::Refusal;
use crate::identity::AuthError;
use crate::policy::{DEFAULT_SERVER, Policy, VirtualServer};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// The MCP endpoint path of a virtual server.
pub fn resource_path(server: &str) -> String {
    if server == DEFAULT_SERVER { "/mcp".into() } else { format!("/servers/{server}/mcp") }
}

fn base_url(policy: &Policy, headers: &HeaderMap, uri: &http::Uri) -> String {
    if let Some(base) = &policy.identity.metadata.base_url {
        return base.clone();
    }
    // The authority was checked against the allowlist before this point.
    let host = super::guard::authority(uri, headers).ok().flatten().unwrap_or("localhost");
    let scheme = if policy.listener_tls.is_some() { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// RFC 6750 quoted-string content: no quotes, backslashes or controls.
fn quoted(text: &str) -> String {
    text.chars().filter(|c| !c.is_control() && *c != '"' && *c != '\\').take(200).collect()
}

/// What a failed authentication is answered with: the HTTP status, the
/// short reason for logs and metrics, and the message for the caller.
/// `toolgate explain` reports the same.
pub fn answer(error: &AuthError) -> (StatusCode, &'static str, String) {
    match error {
        AuthError::Missing => {
            (StatusCode::UNAUTHORIZED, "unauthenticated", "Authentication required".to_owned())
        }
        AuthError::Invalid(why) => {
            (StatusCode::UNAUTHORIZED, "invalid_credential", format!("Invalid credential: {why}"))
        }
        AuthError::Ambiguous(why) => {
            (StatusCode::BAD_REQUEST, "ambiguous_credential", format!("Invalid request: {why}"))
        }
        AuthError::WrongKind { kind, accepted } => {
            let accepted: Vec<&str> = accepted.iter().map(|k| k.as_str()).collect();
            (
                StatusCode::FORBIDDEN,
                "credential_kind",
                format!(
                    "This server does not accept {kind} credentials; use one of: {}",
                    accepted.join(", ")
                ),
            )
        }
        AuthError::InsufficientScope(missing) => (
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("Insufficient scope: the token lacks {}", missing.join(" ")),
        ),
    }
}

/// The refusal for a failed authentication.
pub fn refusal(
    error: AuthError,
    policy: &Policy,
    server: &VirtualServer,
    headers: &HeaderMap,
    uri: &http::Uri,
) -> Refusal {
    let metadata =
        format!("{}{METADATA_PREFIX}{}", base_url(policy, headers, uri), resource_path(&server.name));
    let scope = if server.access.required_scopes.is_empty() {
        String::new()
    } else {
        format!(", scope=\"{}\"", quoted(&server.access.required_scopes.join(" ")))
    };
    let (status, reason, message) = answer(&error);
    let challenge = match &error {
        AuthError::Missing => format!("Bearer resource_metadata=\"{metadata}\"{scope}"),
        AuthError::Invalid(why) => format!(
            "Bearer resource_metadata=\"{metadata}\"{scope}, error=\"invalid_token\", error_description=\"{}\"",
            quoted(why)
        ),
        AuthError::Ambiguous(why) => format!(
            "Bearer resource_metadata=\"{metadata}\", error=\"invalid_request\", error_description=\"{}\"",
            quoted(why)
        ),
        AuthError::WrongKind { .. } => format!(
            "Bearer resource_metadata=\"{metadata}\", error=\"invalid_token\", error_description=\"credential kind not accepted here\""
        ),
        AuthError::InsufficientScope(_) => format!(
            "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{metadata}\"",
            quoted(&server.access.required_scopes.join(" "))
        ),
    };
    tracing::info!(
        target: "toolgate::audit",
        event = "auth_refused",
        virtual_server = %server.name,
        reason,
        detail = %crate::telemetry::Untrusted(&message),
        "authentication refused"
    );
    Refusal::new(status, -32001, reason, message).with_challenge(challenge)
}

/// Serves `/.well-known/oauth-protected-resource{/mcp,/servers/NAME/mcp}`.
pub fn metadata(
    policy: &Policy,
    suffix: &str,
    method: &http::Method,
    headers: &HeaderMap,
    uri: &http::Uri,
) -> Result<Response<ProxyBody>, Refusal> {
    if method != http::Method::GET {
        return Err(Refusal::method_not_allowed(method));
    }
    let server = match suffix {
        "" | "/mcp" => DEFAULT_SERVER,
        other => other
            .strip_prefix("/servers/")
            .and_then(|rest| rest.strip_suffix("/mcp"))
            .filter(|name| !name.contains('/'))
            .ok_or_else(|| Refusal::not_found(uri.path()))?,
    };
    let server = policy.virtual_server(server).ok_or_else(|| Refusal::not_found(uri.path()))?;
    let identity = &policy.identity;
    let scopes = if identity.metadata.scopes_supported.is_empty() {
        server.access.required_scopes.clone()
    } else {
        identity.metadata.scopes_supported.clone()
    };
    // A client asks for a token for this resource (RFC 8707), so it must be
    // an audience the server accepts.
    let resource = match server.access.audiences.first() {
        Some(audience) => audience.clone(),
        None => format!("{}{}", base_url(policy, headers, uri), resource_path(&server.name)),
    };
    let document = serde_json::json!({
        "resource": resource,
        "authorization_servers": identity.metadata.authorization_servers,
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
        "resource_name": format!("toolgate virtual server {}", server.name),
    });
    let mut response = Response::new(Full::new(Bytes::from(document.to_string())).boxed_unsync());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
