//! The admin listener, on its own port so it can stay private while the
//! proxy port is exposed: `/healthz` (the process is up), `/readyz` (a
//! policy is loaded and the process is not draining), `/metrics`, and
//! `/policy` (which policy runs: its SHA-256, generation and load time —
//! never its contents, which may one day hold secrets).

use crate::connection::ClientBody;
use crate::proxy::Gateway;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// OpenMetrics is what prometheus-client writes; Prometheus negotiates it.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether the process should receive traffic.
#[derive(Debug, Default)]
pub struct Readiness {
    draining: AtomicBool,
}

impl Readiness {
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

pub async fn handle(
    gateway: Arc<Gateway>,
    readiness: Arc<Readiness>,
    request: Request<ClientBody>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n"));
    }
    let response = match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if readiness.is_draining() => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        // The policy store is only ever built from a valid policy, so a
        // running gateway always has one loaded.
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(gateway.metrics.encode())));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            response
        }
        "/policy" => {
            let policy = gateway.policy.load();
            let mut servers: Vec<&str> = policy.virtual_servers.keys().map(String::as_str).collect();
            servers.sort_unstable();
            let loaded_at =
                policy.meta.loaded_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            let body = serde_json::json!({
                "sha256": policy.meta.sha256,
                "generation": policy.meta.generation,
                "loaded_at_unix": loaded_at,
                "virtual_servers": servers,
            });
            let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => text(StatusCode::NOT_FOUND, "not found: try /healthz, /readyz, /metrics or /policy\n"),
    };
    Ok(response)
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
