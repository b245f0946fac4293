//! The request pipeline. Each request loads one policy snapshot and walks
//! these steps top to bottom; the first that refuses answers the client.
//!
//! | step                                   | refuses with |
//! |----------------------------------------|--------------|
//! | route `/mcp`, `/servers/{name}/mcp` to a virtual server | 404 |
//! | Host, then Origin allowlist            | 403 |
//! | HTTP method, `Accept`, `Content-Type`  | 405 / 406 / 415 |
//! | body up to the limit, JSON-RPC envelope| 413 / 400 (-32700, -32600) |
//! | `MCP-Protocol-Version`, batches, SEP-2243 headers | 400 (-32600, -32020) |
//! | authorize every message ([`authorize`]) | JSON-RPC error in a 200 |
//! | forward                                | 502 / 504 |
//! | inspect every 2xx answer, filter list results ([`inspect`]) | JSON-RPC error (fail closed) |

pub mod auth;
pub mod authorize;
pub mod exchange;
pub mod forward;
pub mod guard;
pub(crate) mod h1;
pub mod inspect;
pub mod list_memo;
mod live;
pub mod offload;
mod pool;
mod pooled_body;
pub mod refusal;
pub mod session;

pub use forward::UpstreamClient;
pub use refusal::Refusal;

use crate::connection::{ClientBody, ClientConnection};
use crate::identity;
use crate::mcp::envelope::{self, Kind, Payload};
use crate::mcp::headers::{self, SingleHeader};
use crate::policy::{DEFAULT_SERVER, Policy, Upstream, VirtualServer};
use crate::telemetry::{Metrics, Untrusted, rpc_method_label};
use bytes::Bytes;
use exchange::Exchange;
use http::{Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every response body toolgate sends: a refusal, or the upstream's stream.
pub type ProxyBody = UnsyncBoxBody<Bytes, Infallible>;

/// What the pipeline shares across requests.
pub struct Gateway {
    pub policy: crate::policy::PolicyStore,
    pub upstream: UpstreamClient,
    pub metrics: Arc<Metrics>,
    pub sessions: session::Sessions,
    /// Signature nonces and fetched JWKS, process-wide.
    pub caches: identity::Caches,
    /// List results remembered once filtered.
    pub list_memo: Arc<list_memo::ListMemo>,
}

/// Serves one request. Never fails: every error becomes a response.
pub async fn handle(
    gateway: Arc<Gateway>,
    request: Request<ClientBody>,
    client: Arc<ClientConnection>,
) -> Result<Response<ProxyBody>, Infallible> {
    let policy = gateway.policy.load();
    let peer = client.peer;
    let mut exchange = Exchange::new(peer, request.method().clone(), request.uri().path().to_owned());
    let response = match pipeline(&gateway, &policy, request, &client, &mut exchange).await {
        Ok(response) => response,
        Err(refusal) => {
            exchange.refusal = Some(refusal.reason);
            gateway.metrics.refused(refusal.reason);
            tracing::debug!(reason = refusal.reason, message = %Untrusted(&refusal.message), "refused");
            refusal.into_response()
        }
    };
    let status = response.status().as_u16();
    gateway.metrics.request(&exchange.method, exchange.rpc_method, status, exchange.started.elapsed());
    Ok(exchange.attach(response))
}

async fn pipeline(
    gateway: &Arc<Gateway>,
    policy: &Arc<Policy>,
    mut request: Request<ClientBody>,
    client: &ClientConnection,
    exchange: &mut Exchange,
) -> Result<Response<ProxyBody>, Refusal> {
    // Hop-by-hop headers, and those the client names in `Connection`, are
    // not forwarded (RFC 9110 §7.6.1): dropped before any step judges the
    // request, so every decision is made on what the upstream will read.
    forward::strip_hop_by_hop(request.headers_mut());
    let peer = client.peer;
    let transport = &policy.transport;
    if let Some(suffix) = request.uri().path().strip_prefix(auth::METADATA_PREFIX) {
        guard::host(request.uri(), request.headers(), transport)?;
        guard::origin(request.headers(), transport)?;
        return auth::metadata(policy, suffix, request.method(), request.headers(), request.uri());
    }
    let server = route(policy, request.uri().path())?;
    guard::host(request.uri(), request.headers(), transport)?;
    guard::origin(request.headers(), transport)?;
    if request.method() == Method::OPTIONS && request.headers().contains_key(header::ORIGIN) {
        // A CORS preflight from an allowed Origin: browsers send it without
        // credentials, and it carries no MCP message. The upstream's to answer.
        let (parts, _) = request.into_parts();
        let anonymous = identity::Principal::anonymous();
        let outbound = forward::upstream_request(
            &policy.upstream,
            parts,
            client,
            Bytes::new(),
            &policy.identity,
            &anonymous,
        )?;
        let timeout = server.timeouts.default.unwrap_or(policy.upstream.response_timeout);
        let response = gateway.upstream.send(&policy.upstream, outbound, timeout, &exchange.ending).await?;
        return Ok(response.map(|body| body.boxed_unsync()));
    }
    let signed = identity::signature::Request {
        method: request.method(),
        uri: request.uri(),
        headers: request.headers(),
    };
    identity::prepare(&policy.identity, &server.access, request.headers(), &gateway.caches).await;
    let authenticated = identity::authenticate(
        &policy.identity,
        &server.access,
        &signed,
        peer.ip(),
        client.certificate.as_ref(),
        &gateway.caches,
    )
    .map_err(|error| auth::refusal(error, policy, server, request.headers(), request.uri()))?;
    let principal = authenticated.principal;
    let view = server.view(&principal);

    let (parts, body) = request.into_parts();
    // The ids of the requests the answer is for, when it must be inspected
    // (every answer to a POST or a GET); `None` when it passes as bytes.
    let mut inspect_for: Option<Vec<Box<serde_json::value::RawValue>>> = None;
    // The id an error answer echoes: the request's, when it is one request.
    let mut reply_id: Option<Box<serde_json::value::RawValue>> = None;
    let mut response_timeout = server.timeouts.default.unwrap_or(policy.upstream.response_timeout);
    let mut opens_session = false;
    let body = match parts.method {
        Method::POST => {
            guard::post_accept(&parts.headers)?;
            guard::content_type(&parts.headers)?;
            let bytes = read_body(body, transport.max_body, transport.body_timeout).await?;
            if authenticated.check_digest {
                identity::signature::check_content_digest(&parts.headers, &bytes).map_err(|why| {
                    auth::refusal(
                        identity::AuthError::Invalid(why),
                        policy,
                        server,
                        &parts.headers,
                        &parts.uri,
                    )
                })?;
            }
            let payload = parse_payload(&bytes).await?;
            exchange.rpc_method = payload_label(&payload);
            let version = guard::protocol_version(&parts.headers, Some(&payload), transport)?;
            guard::payload_shape(&parts.headers, &payload, version)?;
            opens_session = matches!(&payload, Payload::Single(m) if m.kind == Kind::Request && m.method() == Some("initialize"));
            if let Some(answer) = authorize::authorize(&view, &payload, version, &gateway.metrics) {
                exchange.refusal = Some("policy");
                return Ok(answer);
            }
            if let Payload::Single(message) = &payload {
                reply_id = message.id().map(ToOwned::to_owned);
            }
            response_timeout = timeout_for(server, &policy.upstream, &payload);
            inspect_for = Some(
                payload
                    .messages()
                    .iter()
                    .filter(|m| m.kind == Kind::Request)
                    .filter_map(|m| m.id().map(ToOwned::to_owned))
                    .collect(),
            );
            bytes
        }
        Method::GET => {
            guard::get_accept(&parts.headers)?;
            guard::protocol_version(&parts.headers, None, transport)?;
            inspect_for = Some(Vec::new());
            Bytes::new()
        }
        Method::DELETE => {
            guard::protocol_version(&parts.headers, None, transport)?;
            Bytes::new()
        }
        ref other => return Err(Refusal::method_not_allowed(other)),
    };

    // Session binding (after the body: an initialize may open a session).
    let settings = &policy.sessions;
    let session_id = match headers::single(&parts.headers, &headers::MCP_SESSION_ID) {
        SingleHeader::Absent => None,
        SingleHeader::Value(id) => Some(id.to_owned()),
        SingleHeader::Repeated | SingleHeader::NotText => {
            return Err(Refusal::bad_request("session", "Mcp-Session-Id must be one visible-ASCII header"));
        }
    };
    if let Some(id) = &session_id
        && gateway.sessions.check(id, &principal.owner_key(), settings.idle) == session::Binding::Unknown
    {
        return Err(Refusal::new(StatusCode::NOT_FOUND, -32001, "session", "Session not found")
            .with_id(reply_id.as_deref()));
    }
    let method = parts.method.clone();
    let upstream = &policy.upstream;
    let outbound = forward::upstream_request(upstream, parts, client, body, &policy.identity, &principal)?;
    let started = Instant::now();
    // The whole answer of a JSON reply (head and body) is due within the
    // response timeout; a stream only its head.
    let answer_due = tokio::time::Instant::now()
        .checked_add(response_timeout)
        .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400));
    let result = gateway.upstream.send(upstream, outbound, response_timeout, &exchange.ending).await;
    gateway.metrics.upstream_answered(started.elapsed(), result.as_ref().map(|r| r.status().as_u16()).ok());
    let response = result.map_err(|refusal| refusal.with_id(reply_id.as_deref()))?;
    if response.status().is_success() {
        if opens_session
            && let Some(id) = response.headers().get(&headers::MCP_SESSION_ID).and_then(|v| v.to_str().ok())
        {
            // Anonymous callers share one principal: count them per address.
            let quota = match principal.kind {
                identity::CredentialKind::Anonymous => session::anonymous_quota(peer.ip()),
                _ => principal.owner_key(),
            };
            let limits = session::Limits {
                max: settings.max,
                max_per_principal: settings.max_per_principal,
                idle: settings.idle,
            };
            gateway.sessions.bind(id, principal.owner_key(), quota, limits);
        }
        if method == Method::DELETE
            && let Some(id) = &session_id
        {
            gateway.sessions.release(id);
        }
    } else if response.status() == StatusCode::NOT_FOUND
        && let Some(id) = &session_id
    {
        // The upstream no longer knows it either.
        gateway.sessions.release(id);
    }
    Ok(match inspect_for {
        None => response.map(|body| body.boxed_unsync()),
        Some(request_ids) => {
            let judge = inspect::Judge {
                policy: policy.clone(),
                live: (method == Method::GET).then(|| gateway.clone()),
                server: server.name.clone(),
                principal,
                metrics: gateway.metrics.clone(),
                memo: gateway.list_memo.clone(),
                request_ids,
                ending: exchange.ending.clone(),
                answer_due,
            };
            inspect::inspect(judge, response).await
        }
    })
}

/// `/mcp` is the default virtual server, `/servers/{name}/mcp` a named one.
/// Paths are matched exactly as sent: names are limited to characters no
/// normalisation changes, so `..`, percent-encoding, doubled or trailing
/// slashes and case variants match nothing.
fn route<'p>(policy: &'p Policy, path: &str) -> Result<&'p VirtualServer, Refusal> {
    let name = if path == "/mcp" {
        DEFAULT_SERVER
    } else {
        match path.strip_prefix("/servers/").and_then(|rest| rest.strip_suffix("/mcp")) {
            Some(name) if !name.is_empty() && !name.contains('/') => name,
            _ => return Err(Refusal::not_found(path)),
        }
    };
    policy.virtual_server(name).ok_or_else(|| Refusal::not_found(path))
}

/// Reads a POST body up to `limit` bytes, within `timeout` (a body trickled
/// byte by byte must not hold its connection for ever). A declared
/// `Content-Length` over the limit is refused before a byte is read.
async fn read_body(body: ClientBody, limit: usize, timeout: std::time::Duration) -> Result<Bytes, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            refusal::code::INVALID_REQUEST,
            "body_too_large",
            format!("The request body exceeds the {limit}-byte limit"),
        )
    };
    if body.size_hint().lower() > limit as u64 {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(Refusal::bad_request("body_read", "The request body could not be read")),
        Err(_) => Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            refusal::code::INVALID_REQUEST,
            "body_timeout",
            format!("The request body did not arrive within {} ms", timeout.as_millis()),
        )),
    }
}

/// How long the upstream may take to answer a POST's head: the longest its
/// messages are allowed (a `tools/call` by the virtual server's tool
/// pattern, else the virtual server's, else the upstream's timeout).
fn timeout_for(server: &VirtualServer, upstream: &Upstream, payload: &Payload<'_>) -> Duration {
    let default = server.timeouts.default.unwrap_or(upstream.response_timeout);
    payload
        .messages()
        .iter()
        .map(|message| {
            let tool = match message.method() {
                Some("tools/call") => message.params.name.as_ref().and_then(envelope::Field::as_str),
                _ => None,
            };
            server.timeouts.for_call(tool).unwrap_or(default)
        })
        .max()
        .unwrap_or(default)
}

/// Bodies larger than this are parsed off the runtime's workers
/// ([`offload`]), so that no request waits on a worker behind another's
/// parse (serde_json reads 64 KiB in well under a millisecond).
pub const PARSE_INLINE: usize = 64 << 10;

/// Parses a POST body as a JSON-RPC payload.
async fn parse_payload(bytes: &Bytes) -> Result<Payload<'_>, Refusal> {
    if bytes.len() <= PARSE_INLINE {
        return Ok(envelope::parse(bytes)?);
    }
    let body = bytes.clone();
    match offload::run(move || envelope::parse(&body).map(Payload::into_owned)).await {
        Ok(parsed) => Ok(parsed?),
        Err(_) => Err(Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            refusal::code::INTERNAL_ERROR,
            "parse_failed",
            "The request body could not be parsed",
        )),
    }
}

fn payload_label(payload: &Payload<'_>) -> &'static str {
    match payload {
        Payload::Batch(_) => "batch",
        Payload::Single(message) => match message.method() {
            Some(method) => rpc_method_label(method),
            None => "response",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Arc<Policy> {
        let text = "version: 1\nupstream: { url: http://x/mcp }\nvirtual_servers:\n  default: {}\n  ops: {}\n  a-b: {}\n";
        let loaded = crate::config::load_str(text, std::path::Path::new("p.yaml"));
        Arc::new(loaded.map(|l| l.policy).unwrap_or_else(|e| panic!("{e}")))
    }

    #[test]
    fn paths_route_exactly() {
        let policy = policy();
        let name = |path: &str| route(&policy, path).map(|s| s.name.clone()).map_err(|r| r.status);
        assert_eq!(name("/mcp"), Ok("default".into()));
        assert_eq!(name("/servers/ops/mcp"), Ok("ops".into()));
        assert_eq!(name("/servers/a-b/mcp"), Ok("a-b".into()));
        for path in [
            "/mcp/",
            "/MCP",
            "//mcp",
            "/mcp/../mcp",
            "/x/../mcp",
            "/%6dcp",
            "/",
            "/mcp;x",
            "/servers/OPS/mcp",
            "/servers/ops/mcp/",
            "/servers//ops/mcp",
            "/servers/ops//mcp",
            "/servers/x/../ops/mcp",
            "/servers/ops%2fx/mcp",
            "/servers/%6fps/mcp",
            "/servers/nope/mcp",
            "/servers/default/../ops/mcp",
            "/servers/mcp",
            "/servers//mcp",
            "/servers/ops/x/mcp",
        ] {
            assert_eq!(name(path), Err(StatusCode::NOT_FOUND), "{path}");
        }
    }
}
