//! Forwarding to the upstream MCP server: a pooled client (HTTP/1.1, or
//! over TLS HTTP/2 where the upstream offers it by ALPN), header
//! rewriting, and a response body that streams frame by frame.
//!
//! As in hyper's own gateway example, this stays short: build the upstream
//! request, send it under a timeout, stream the answer back. Policy decisions
//! happen before this point, in the pipeline.

use super::exchange::{End, Ending};
use super::pool::{self, Connector, Pool, SendError};
use super::pooled_body::PooledBody;
use super::refusal::{Refusal, code};
use crate::connection::ClientConnection;
use crate::identity::{self, Identity, Principal};
use crate::policy::{Upstream, UpstreamTls};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The connection pool every request to the upstream goes through, for
/// the running policy's upstream origin and TLS configuration (replaced,
/// with its connections, when a reload changes either). The pool before
/// stays usable too: requests admitted under the policy before a reload
/// are still on their way, and must not make the two replace each other.
#[derive(Default)]
pub struct UpstreamClient {
    current: arc_swap::ArcSwapOption<Current>,
    previous: arc_swap::ArcSwapOption<Current>,
}

struct Current {
    /// The TLS configuration's fingerprint (empty for `http://`).
    fingerprint: String,
    pool: Arc<Pool>,
}

impl UpstreamClient {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pool for the running policy's upstream.
    fn pool(&self, upstream: &Upstream) -> Result<Arc<Pool>, Refusal> {
        let fingerprint = upstream.tls.as_ref().map_or("", |tls| tls.fingerprint.as_str());
        let serves = |slot: &Current| {
            slot.fingerprint == fingerprint
                && slot.pool.origin().authority() == Some(&upstream.authority)
                && slot.pool.origin().scheme_str() == Some(upstream.scheme())
        };
        for slot in [&self.current, &self.previous] {
            if let Some(found) = slot.load().as_ref()
                && serves(found)
            {
                return Ok(found.pool.clone());
            }
        }
        let origin = Uri::builder()
            .scheme(upstream.scheme())
            .authority(upstream.authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| {
                Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    code::INTERNAL_ERROR,
                    "upstream_unavailable",
                    "The upstream url cannot be connected to",
                )
            })?;
        let connector = match &upstream.tls {
            None => Connector::Plain(pool::tcp_connector(true)),
            Some(tls) => Connector::Tls(tls_connector(tls)),
        };
        let pool = Pool::new(origin, connector);
        let replaced = self
            .current
            .swap(Some(Arc::new(Current { fingerprint: fingerprint.to_owned(), pool: pool.clone() })));
        self.previous.store(replaced);
        Ok(pool)
    }

    /// Sends the request and returns the upstream's response head with a
    /// streaming body, or the refusal that tells the caller what failed:
    /// 502 when the upstream cannot be reached (within `connect_timeout`),
    /// 504 when its response head does not come within `response_timeout`.
    pub async fn send(
        &self,
        upstream: &Upstream,
        request: Request<Bytes>,
        response_timeout: Duration,
        ending: &Ending,
    ) -> Result<Response<UpstreamBody>, Refusal> {
        let pool = self.pool(upstream)?;
        let sending = pool.send(request, upstream.connect_timeout);
        let response = match tokio::time::timeout(response_timeout, sending).await {
            Err(_) => {
                tracing::warn!(upstream = %upstream.authority, timeout_ms = response_timeout.as_millis() as u64, "upstream did not answer in time");
                return Err(Refusal::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    code::INTERNAL_ERROR,
                    "upstream_timeout",
                    format!(
                        "The upstream MCP server did not answer within {} ms",
                        response_timeout.as_millis()
                    ),
                ));
            }
            Ok(Err(error)) => {
                tracing::warn!(upstream = %upstream.authority, error = %error_chain(&error), "upstream request failed");
                let message = if matches!(error, SendError::ConnectTimeout(_)) {
                    format!(
                        "The upstream MCP server could not be reached within {} ms",
                        upstream.connect_timeout.as_millis()
                    )
                } else if let SendError::Own(pool::OwnError::Framing(framing)) = &error {
                    format!("The upstream MCP server's answer was withheld: {framing}")
                } else if let Some(tls) = tls_failure(&error) {
                    format!("The upstream MCP server's TLS connection was refused: {tls}")
                } else {
                    "The upstream MCP server is unavailable".to_owned()
                };
                return Err(Refusal::new(
                    StatusCode::BAD_GATEWAY,
                    code::INTERNAL_ERROR,
                    "upstream_unavailable",
                    message,
                ));
            }
            Ok(Ok(answer)) => answer,
        };
        let (mut parts, inner) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, UpstreamBody { inner, done: false, ending: ending.clone() }))
    }
}

fn tls_connector(
    tls: &UpstreamTls,
) -> hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector> {
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls.config).clone())
        .https_only()
        .enable_all_versions()
        .wrap_connector(pool::tcp_connector(false))
}

const ALERT: &str = "it sent a TLS alert (a client certificate it needs? upstream.tls.cert_file)";

/// What went wrong in the TLS handshake with the upstream, if that failed:
/// said to the client, since it is the deployment's to fix (a certificate
/// for another name, an unknown CA) and names nothing secret.
fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            use rustls::CertificateError as C;
            return Some(match tls {
                rustls::Error::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                    "its certificate is not valid for the upstream url's host"
                }
                rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                    "its certificate is not signed by a trusted CA (upstream.tls.ca_file)"
                }
                rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                    "its certificate has expired"
                }
                rustls::Error::InvalidCertificate(_) => "its certificate is not acceptable",
                rustls::Error::AlertReceived(_) => ALERT,
                _ => "the TLS handshake failed",
            });
        }
        // HTTP/2 passes an I/O error on as its text alone: an alert after
        // the handshake (TLS 1.3 refuses a client certificate that way)
        // is known by rustls's wording.
        if current.downcast_ref::<std::io::Error>().is_some()
            && current.to_string().starts_with("received fatal alert")
        {
            return Some(ALERT);
        }
        // An io::Error's `source` skips the error it wraps: look inside.
        cause = match current.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    None
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// RFC 9110 §7.6.1: connection-specific fields are not forwarded, nor any
/// field the `Connection` header names. `Proxy-Connection` is an old
/// spelling of `Connection` some clients still send.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// [`HOP_BY_HOP`] as names, to remove without parsing them again.
static HOP_BY_HOP_NAMES: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("proxy-connection"),
];

pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One look at each name, and nothing allocated in the usual cases: no
    // name is hop-by-hop, or only `Connection: keep-alive` is there. Names
    // of other lengths fail at the length compare.
    const LENGTHS: u32 = {
        let mut lengths = 0;
        let mut at = 0;
        while at < HOP_BY_HOP.len() {
            lengths |= 1 << HOP_BY_HOP[at].len();
            at += 1;
        }
        lengths
    };
    let mut present = 0u16;
    for name in headers.keys() {
        let name = name.as_str();
        // Most names are told apart by their length alone.
        if name.len() >= 32 || LENGTHS & (1 << name.len()) == 0 {
            continue;
        }
        if let Some(at) = HOP_BY_HOP.iter().position(|hop| *hop == name) {
            present |= 1 << at;
        }
    }
    if present == 0 {
        return;
    }
    // The usual case: `Connection: keep-alive` (or `close`) alone.
    if present == 1 {
        let mut values = headers.get_all(header::CONNECTION).iter();
        if let (Some(value), None) = (values.next(), values.next())
            && (value.as_bytes().eq_ignore_ascii_case(b"keep-alive")
                || value.as_bytes().eq_ignore_ascii_case(b"close"))
        {
            headers.remove(header::CONNECTION);
            return;
        }
    }
    // What `Connection` names besides those: only names present need going.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        // Read as bytes: a value with a byte outside ASCII still names
        // the fields beside it.
        .flat_map(|v| v.as_bytes().split(|byte| *byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|token| !HOP_BY_HOP.iter().any(|hop| hop.as_bytes().eq_ignore_ascii_case(token)))
        .filter_map(|token| HeaderName::from_bytes(token).ok())
        .filter(|name| headers.contains_key(name))
        .collect();
    for (at, name) in HOP_BY_HOP_NAMES.iter().enumerate() {
        if present & (1 << at) != 0 {
            headers.remove(name);
        }
    }
    for name in &named {
        headers.remove(name);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The headers toolgate sets (or removes) on every upstream request, in
/// place of whatever the client sent under their names.
static SET_HERE: [HeaderName; 9] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_TYPE,
    header::EXPECT,
    header::ACCEPT_ENCODING,
    header::HOST,
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
];

/// Headers only a proxy may send, about the path to the client: a
/// client's own are dropped (toolgate sets the X-Forwarded-* three).
static PROXY_CLAIMS: [HeaderName; 6] = [
    header::FORWARDED,
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-forwarded-scheme"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-real-ip"),
];

/// Whether a gateway that maps every byte of a name but letters and
/// digits to one separator reads `spelled` (lowercase, as every
/// `HeaderName`) as a name stripped, set here, claimed by proxies, or
/// hop-by-hop.
fn read_as_one_of(spelled: &str, strip_inbound: &[HeaderName]) -> bool {
    let same = |listed: &str| {
        listed.len() == spelled.len()
            && listed
                .bytes()
                .zip(spelled.bytes())
                .all(|(listed, byte)| listed == byte || (listed == b'-' && !byte.is_ascii_alphanumeric()))
    };
    strip_inbound.iter().chain(&SET_HERE).chain(&PROXY_CLAIMS).any(|listed| same(listed.as_str()))
        || HOP_BY_HOP.iter().any(|listed| same(listed))
}

/// Builds the upstream request from the client's: the upstream's path with
/// the client's query, the client's headers (the pipeline dropped the
/// hop-by-hop ones first), `Host` naming the upstream, and
/// `X-Forwarded-*` describing the client. Inbound
/// `X-Forwarded-*` values are replaced, not appended to: toolgate is the
/// edge that saw the peer, and a client's own claims are not evidence.
pub fn upstream_request(
    upstream: &Upstream,
    parts: http::request::Parts,
    client: &ClientConnection,
    body: Bytes,
    identity: &Identity,
    principal: &Principal,
) -> Result<Request<Bytes>, Refusal> {
    let http::request::Parts { method, uri, mut headers, .. } = parts;
    let uri = &uri;
    let target = match uri.query() {
        None => upstream.target.clone(),
        Some(query) => Uri::builder()
            .scheme(upstream.scheme())
            .authority(upstream.authority.clone())
            .path_and_query(format!("{}?{query}", upstream.path))
            .build()
            .map_err(|_| Refusal::bad_request("invalid_uri", "The request's query cannot be forwarded"))?,
    };

    let client_host = super::guard::authority(uri, &headers)
        .ok()
        .flatten()
        .and_then(|authority| HeaderValue::from_str(authority).ok());
    // Hop-by-hop headers went when the request arrived (`pipeline`).
    // MCP forbids token passthrough: the client's credentials stay here.
    for name in &identity.strip_inbound {
        headers.remove(name);
    }
    // A client's claims about the path to it are not evidence: those only
    // a proxy may make go. And gateways read other spellings of a name as
    // the name itself: WSGI and Rack `X_Forwarded_For` as
    // `X-Forwarded-For`, CGI gateways that map every byte outside letters
    // and digits to `_` `X.Forwarded.For` too. Such spellings of a header
    // stripped, set here, claimed by proxies or hop-by-hop go as well.
    let underscored: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            PROXY_CLAIMS.contains(name) || {
                let spelled = name.as_str();
                spelled.bytes().any(|byte| !byte.is_ascii_alphanumeric() && byte != b'-')
                    && read_as_one_of(spelled, &identity.strip_inbound)
            }
        })
        .cloned()
        .collect();
    for name in &underscored {
        headers.remove(name);
    }
    for (name, value) in identity::upstream_identity(identity, principal) {
        headers.insert(name, value);
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::CONTENT_ENCODING);
    // The body is here whole: nothing for the upstream to wait to be asked
    // for, and one way less for the two ends to disagree on what was sent.
    headers.remove(header::EXPECT);
    if method == http::Method::POST {
        // The body was judged as UTF-8 JSON; no upstream may decode it as
        // anything else (a charset parameter would make Express transcode).
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    // Answers are inspected as the upstream sends them: ask for them
    // uncompressed (an encoded answer that must be inspected is refused).
    headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    // `insert` drops every value the client sent under the name.
    headers.insert(header::HOST, upstream.host.clone());
    headers.insert(X_FORWARDED_FOR, client.forwarded_for.clone());
    let proto = if client.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match client_host {
        Some(host) => headers.insert(X_FORWARDED_HOST, host),
        None => headers.remove(X_FORWARDED_HOST),
    };

    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = target;
    *request.headers_mut() = headers;
    Ok(request)
}

/// The upstream's response body, forwarded frame by frame as it arrives.
///
/// If the upstream dies mid-body, the stream ends here instead of failing:
/// for a chunked SSE answer the client sees a clean end of stream (and may
/// resume with `Last-Event-ID`), and the partial event is discarded by its
/// SSE parser as the SSE specification requires. A body with a declared
/// `Content-Length` that ends short is still detected by the client, because
/// hyper will not terminate a length-delimited response early.
pub struct UpstreamBody {
    inner: PooledBody,
    done: bool,
    ending: Ending,
}

/// Why an upstream answer could not be read whole.
#[derive(Debug)]
pub enum ReadError {
    /// Longer than the limit.
    TooLarge,
    /// The upstream closed or failed before the end of the body.
    Aborted(String),
}

impl UpstreamBody {
    /// Reads the whole body, up to `limit` bytes. A body cut short (the
    /// connection closed before its `Content-Length` or last chunk) is an
    /// error here, never a shorter body.
    ///
    /// A body that comes in one piece is kept as it came. A longer one is
    /// copied piece by piece into one buffer, sized from its
    /// `Content-Length` (up to [`PRESIZE_MAX`]), and each piece is let go
    /// at once: the connection's read buffer is then free to be reused for
    /// the next read instead of a new one being allocated.
    pub async fn read_whole(self, limit: usize) -> Result<Bytes, ReadError> {
        use http_body_util::BodyExt;
        let mut inner = self.inner;
        let declared = inner.size_hint().exact();
        if declared.is_some_and(|length| length > limit as u64) {
            return Err(ReadError::TooLarge);
        }
        let (mut first, mut rest): (Option<Bytes>, Option<Vec<u8>>) = (None, None);
        let mut length = 0usize;
        while let Some(frame) = inner.frame().await {
            let frame = frame.map_err(|error| ReadError::Aborted(error_chain(&*error)))?;
            let Ok(data) = frame.into_data() else { continue };
            length += data.len();
            if length > limit {
                return Err(ReadError::TooLarge);
            }
            match (&mut rest, first.take()) {
                (Some(whole), _) => whole.extend_from_slice(&data),
                (None, None) => first = Some(data),
                (None, Some(earlier)) => {
                    let presize = declared.map_or(0, |declared| declared.min(PRESIZE_MAX as u64) as usize);
                    let mut whole = Vec::with_capacity(presize.max(length));
                    whole.extend_from_slice(&earlier);
                    whole.extend_from_slice(&data);
                    rest = Some(whole);
                }
            }
        }
        Ok(match (rest, first) {
            (Some(whole), _) => Bytes::from(whole),
            (None, first) => first.unwrap_or_default(),
        })
    }
}

/// The most a body's `Content-Length` may reserve before its bytes arrive.
const PRESIZE_MAX: usize = 1 << 20;

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(error))) => {
                tracing::warn!(error = %error_chain(&*error), "upstream response ended abruptly; closing the client's stream");
                self.ending.note(End::UpstreamGone);
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert("mcp-session-id", HeaderValue::from_static("abc"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("mcp-session-id"));
    }

    #[test]
    fn a_connection_value_outside_ascii_still_names_its_fields() -> Result<(), http::Error> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_bytes(b"x-secret, \x80, \tX-Other ")?);
        headers.append(header::CONNECTION, HeaderValue::from_bytes(b"\xff")?);
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("2"));
        headers.insert("mcp-session-id", HeaderValue::from_static("abc"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), ["mcp-session-id"]);
        Ok(())
    }

    #[test]
    fn each_hop_by_hop_header_goes_even_alone() {
        for name in HOP_BY_HOP.map(HeaderName::from_static) {
            let mut headers = HeaderMap::new();
            headers.insert("mcp-session-id", HeaderValue::from_static("abc"));
            headers.insert(name.clone(), HeaderValue::from_static("x"));
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            strip_hop_by_hop(&mut headers);
            assert!(!headers.contains_key(&name), "{name} was forwarded");
            assert_eq!(headers.len(), 2, "{name}");
        }
    }

    #[test]
    fn forwarded_headers_replace_client_claims() -> Result<(), Box<dyn std::error::Error>> {
        let second = Duration::from_secs(1);
        let upstream = Upstream::new(None, "10.0.0.1:8080".parse()?, "/mcp".into(), second, second)?;
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("gw.example.com"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        headers.insert("last-event-id", HeaderValue::from_static("7"));
        headers.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = http::Method::GET;
        parts.uri = "/mcp?x=1".parse()?;
        parts.headers = headers;
        let request = upstream_request(
            &upstream,
            parts,
            &ClientConnection::new("192.0.2.9:5000".parse()?, false, None),
            Bytes::new(),
            &Identity::default(),
            &Principal::anonymous(),
        )
        .map_err(|r| r.message)?;
        assert_eq!(request.uri(), "http://10.0.0.1:8080/mcp?x=1");
        let h = request.headers();
        assert_eq!(h[header::HOST], "10.0.0.1:8080");
        assert_eq!(h["x-forwarded-for"], "192.0.2.9");
        assert_eq!(h["x-forwarded-host"], "gw.example.com");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["last-event-id"], "7");
        assert!(!h.contains_key(header::EXPECT), "the body is read whole: nothing to expect");
        Ok(())
    }
}
