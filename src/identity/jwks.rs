//! JWKS fetched from a URL: cached per URL and shared by every request and
//! issuer that names it, refreshed on an interval (in the background, the
//! cached keys serving meanwhile) and when a token names an unknown `kid`
//! (at most once per `min_refetch`), and kept when a fetch fails.
//!
//! Fetches are single-flight: concurrent requests that miss the cache wait
//! for one fetch rather than each starting their own, so a burst of tokens
//! with a new `kid` costs the identity provider one request.

use super::jwt;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::DecodingKey;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where an issuer's keys come from when they are not in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    pub url: Uri,
    /// Refetch in the background once the keys are this old.
    pub refresh: Duration,
    /// At most one fetch per this long for unknown `kid`s.
    pub min_refetch: Duration,
}

const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_JWKS: usize = 1 << 20;

pub type Keys = Arc<HashMap<String, DecodingKey>>;

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_success: Option<Instant>,
}

struct KeySet {
    keys: ArcSwap<HashMap<String, DecodingKey>>,
    fetch: tokio::sync::Mutex<FetchState>,
}

/// The process-wide cache of remote key sets.
pub struct RemoteKeys {
    sets: Mutex<HashMap<String, Arc<KeySet>>>,
    client: Option<Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>>,
    fetches: AtomicU64,
}

impl Default for RemoteKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl RemoteKeys {
    pub fn new() -> Self {
        let client = match tls_config() {
            Ok(config) => {
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_or_http()
                    .enable_http1()
                    .build();
                Some(Client::builder(TokioExecutor::new()).build(connector))
            }
            Err(error) => {
                tracing::error!(%error, "no TLS client: JWKS URLs cannot be fetched");
                None
            }
        };
        Self { sets: Mutex::new(HashMap::new()), client, fetches: AtomicU64::new(0) }
    }

    /// How many fetches have been started (for metrics and tests).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn set(&self, url: &Uri) -> Arc<KeySet> {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.entry(url.to_string())
            .or_insert_with(|| {
                Arc::new(KeySet {
                    keys: ArcSwap::from_pointee(HashMap::new()),
                    fetch: tokio::sync::Mutex::new(FetchState::default()),
                })
            })
            .clone()
    }

    /// The keys currently cached for `url` (empty before the first fetch).
    pub fn keys(&self, url: &Uri) -> Keys {
        self.set(url).keys.load_full()
    }

    /// Makes sure the cache can answer for `kid`: fetches when nothing was
    /// ever fetched or `kid` is unknown (rate-limited), and refreshes stale
    /// keys in the background.
    pub async fn prepare(self: &Arc<Self>, source: &RemoteJwks, kid: Option<&str>) {
        let set = self.set(&source.url);
        let known = kid.is_none_or(|kid| set.keys.load().contains_key(kid));
        let mut state = set.fetch.lock().await;
        // Another request may have fetched while this one waited.
        let known = known || kid.is_none_or(|kid| set.keys.load().contains_key(kid));
        let now = Instant::now();
        let never = state.last_success.is_none();
        let may_refetch = state.last_attempt.is_none_or(|at| now.duration_since(at) >= source.min_refetch);
        if (never || !known) && may_refetch {
            self.fetch_into(&set, &mut state, source).await;
            return;
        }
        let stale = state.last_success.is_some_and(|at| now.duration_since(at) >= source.refresh);
        if stale && may_refetch {
            drop(state);
            let (this, source) = (self.clone(), source.clone());
            tokio::spawn(async move {
                let set = this.set(&source.url);
                let mut state = set.fetch.lock().await;
                if state.last_success.is_some_and(|at| at.elapsed() >= source.refresh) {
                    this.fetch_into(&set, &mut state, &source).await;
                }
            });
        }
    }

    async fn fetch_into(&self, set: &KeySet, state: &mut FetchState, source: &RemoteJwks) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        state.last_attempt = Some(Instant::now());
        match self.fetch(&source.url).await {
            Ok(keys) => {
                tracing::info!(url = %source.url, keys = keys.len(), "JWKS fetched");
                set.keys.store(Arc::new(keys));
                state.last_success = Some(Instant::now());
            }
            Err(error) => {
                tracing::warn!(url = %source.url, %error, "JWKS fetch failed; keeping the last good keys");
            }
        }
    }

    async fn fetch(&self, url: &Uri) -> Result<HashMap<String, DecodingKey>, String> {
        let request = http::Request::get(url.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let client = self.client.as_ref().ok_or("no TLS client could be built")?;
        let response = tokio::time::timeout(FETCH_TIMEOUT, client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("answered {}", response.status()));
        }
        let body =
            tokio::time::timeout(FETCH_TIMEOUT, Limited::new(response.into_body(), MAX_JWKS).collect())
                .await
                .map_err(|_| "timed out reading".to_owned())?
                .map_err(|e| e.to_string())?
                .to_bytes();
        let text = std::str::from_utf8(&body).map_err(|_| "not UTF-8".to_owned())?;
        jwt::keys_from_jwks(text)
    }
}

/// A TLS client configuration on aws-lc-rs (named explicitly, so a second
/// provider in the tree could never make the choice ambiguous) trusting the
/// system's certificate store, where a private CA for an internal identity
/// provider would be installed.
fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "while loading the system trust store");
    }
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        tracing::warn!("no trusted certificates found: https:// JWKS URLs cannot be verified");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
