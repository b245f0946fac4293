//! JWKS fetched from a URL: cached per URL and shared by every request and
//! issuer that names it, refreshed on an interval (in the background, the
//! cached keys serving meanwhile) and when a token names an unknown `kid`
//! (at most once per `min_refetch`), and kept when a fetch fails.
//!
//! Fetches are single-flight: concurrent requests that miss the cache wait
//! for one fetch rather than each starting their own, so a burst of tokens
//! with a new `kid` costs the identity provider one request. A token whose
//! `kid` is known never waits: not for a refresh, and not for a fetch that
//! an unknown `kid` started while the identity provider is slow.
//!
//! The TLS client, and with it the system's trust store (a few hundred
//! certificates, milliseconds to read), is built at the first fetch, off
//! the runtime's workers: a deployment whose keys are in files never pays
//! for it, at startup or in memory.

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

pub type KeyMap = HashMap<String, DecodingKey>;
pub type Keys = Arc<KeyMap>;
/// The keys a token was verified with, and the URL's key set they are from.
pub type VerifiedWith = (Arc<KeySet>, Keys);

/// One URL's keys, and when they were last fetched, readable without
/// waiting on a fetch. Never removed from [`RemoteKeys`], so a handle to
/// it (as a remembered token holds) stays the URL's for good.
pub struct KeySet {
    keys: ArcSwap<HashMap<String, DecodingKey>>,
    /// Held while a fetch runs: the single flight.
    fetch: tokio::sync::Mutex<()>,
    base: Instant,
    /// Milliseconds since `base` plus one of the last attempt and the last
    /// success; 0 for never.
    last_attempt: AtomicU64,
    last_success: AtomicU64,
}

impl KeySet {
    fn stamp(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    /// How long ago `stamp` was, or `None` for never.
    fn since(&self, stamp: &AtomicU64) -> Option<Duration> {
        match stamp.load(Ordering::Relaxed) {
            0 => None,
            at => Some(self.base.elapsed().saturating_sub(Duration::from_millis(at - 1))),
        }
    }

    fn knows(&self, kid: Option<&str>) -> bool {
        kid.is_none_or(|kid| self.keys.load().contains_key(kid))
    }

    /// The keys in use (empty before the first fetch).
    pub fn keys(&self) -> Keys {
        self.keys.load_full()
    }

    /// Whether `keys` is the key set still in use, not one a fetch replaced.
    pub fn in_use(&self, keys: &std::sync::Weak<KeyMap>) -> bool {
        std::ptr::eq(keys.as_ptr(), Arc::as_ptr(&*self.keys.load()))
    }

    /// Puts fetched keys in use.
    pub(super) fn install(&self, keys: HashMap<String, DecodingKey>) {
        self.keys.store(Arc::new(keys));
        self.last_success.store(self.stamp(), Ordering::Relaxed);
    }
}

/// The process-wide cache of remote key sets.
pub struct RemoteKeys {
    sets: Mutex<HashMap<String, Arc<KeySet>>>,
    /// Built at the first fetch; `None` when it could not be (logged).
    client: tokio::sync::OnceCell<Option<HttpsClient>>,
    fetches: AtomicU64,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

impl Default for RemoteKeys {
    fn default() -> Self {
        Self::new()
    }
}

impl RemoteKeys {
    pub fn new() -> Self {
        Self {
            sets: Mutex::new(HashMap::new()),
            client: tokio::sync::OnceCell::new(),
            fetches: AtomicU64::new(0),
        }
    }

    /// The client fetches go through, built once (reading the system's
    /// trust store is blocking file I/O, so it runs on the blocking pool).
    async fn client(&self) -> Option<&HttpsClient> {
        let built = self
            .client
            .get_or_init(|| async {
                let built = tokio::task::spawn_blocking(tls_config).await;
                let config = match built.map_err(|e| e.to_string()).and_then(|c| c.map_err(|e| e.to_string()))
                {
                    Ok(config) => config,
                    Err(error) => {
                        tracing::error!(%error, "no TLS client: JWKS URLs cannot be fetched");
                        return None;
                    }
                };
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(config)
                    .https_or_http()
                    .enable_http1()
                    .build();
                Some(Client::builder(TokioExecutor::new()).build(connector))
            })
            .await;
        built.as_ref()
    }

    /// Whether the TLS client (and the system's trust store) was built.
    pub fn client_built(&self) -> bool {
        self.client.initialized()
    }

    /// How many fetches have been started (for metrics and tests).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The key set of `url`, made (empty, never fetched) on first asking.
    pub fn set(&self, url: &Uri) -> Arc<KeySet> {
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        sets.entry(url.to_string())
            .or_insert_with(|| {
                Arc::new(KeySet {
                    keys: ArcSwap::from_pointee(HashMap::new()),
                    fetch: tokio::sync::Mutex::new(()),
                    base: Instant::now(),
                    last_attempt: AtomicU64::new(0),
                    last_success: AtomicU64::new(0),
                })
            })
            .clone()
    }

    /// Makes sure the cache can answer for `kid`: fetches when nothing was
    /// ever fetched or `kid` is unknown (rate-limited, single-flight), and
    /// refreshes stale keys in the background. A known `kid` returns at once.
    pub async fn prepare(self: &Arc<Self>, source: &RemoteJwks, kid: Option<&str>) {
        let set = self.set(&source.url);
        let may_refetch =
            |set: &KeySet| set.since(&set.last_attempt).is_none_or(|ago| ago >= source.min_refetch);
        if set.since(&set.last_success).is_some() && set.knows(kid) {
            self.refresh_stale(&set, source);
            return;
        }
        // Join the fetch in flight, if any; else this request may start one.
        let _flight = match set.fetch.try_lock() {
            Ok(flight) => flight,
            Err(_) => set.fetch.lock().await,
        };
        if (set.since(&set.last_success).is_some() && set.knows(kid)) || !may_refetch(&set) {
            return;
        }
        self.fetch_into(&set, source).await;
    }

    /// Refreshes `set`, the key set of `source`'s URL, in the background
    /// when it is older than `source.refresh` (and a fetch may start);
    /// returns at once. Asked on every request that uses it, so that a key
    /// the identity provider withdrew stops working within `refresh`.
    pub fn refresh_stale(self: &Arc<Self>, set: &KeySet, source: &RemoteJwks) {
        let stale = set.since(&set.last_success).is_some_and(|ago| ago >= source.refresh);
        let may_refetch = set.since(&set.last_attempt).is_none_or(|ago| ago >= source.min_refetch);
        if !(stale && may_refetch) {
            return;
        }
        let (this, source) = (self.clone(), source.clone());
        tokio::spawn(async move {
            let set = this.set(&source.url);
            // Someone else is fetching already: nothing to add.
            let Ok(_flight) = set.fetch.try_lock() else { return };
            if set.since(&set.last_success).is_none_or(|ago| ago >= source.refresh) {
                this.fetch_into(&set, &source).await;
            }
        });
    }

    async fn fetch_into(&self, set: &KeySet, source: &RemoteJwks) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        set.last_attempt.store(set.stamp(), Ordering::Relaxed);
        match self.fetch(&source.url).await {
            Ok(keys) => {
                tracing::info!(url = %source.url, keys = keys.len(), "JWKS fetched");
                set.install(keys);
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
        let client = self.client().await.ok_or("no TLS client could be built")?;
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

/// A TLS client configuration trusting the system's certificate store,
/// where a private CA for an internal identity provider would be installed.
fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(crate::tls::system_roots())
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_tls_client_is_built_at_the_first_fetch_and_not_before() -> Result<(), http::uri::InvalidUri>
    {
        let remote = Arc::new(RemoteKeys::new());
        let source = RemoteJwks {
            // Nothing listens there: the fetch fails, after building the client.
            url: "http://127.0.0.1:9/jwks.json".parse()?,
            refresh: Duration::from_secs(600),
            min_refetch: Duration::from_secs(1),
        };
        remote.set(&source.url);
        assert!(!remote.client_built(), "built before any fetch");
        remote.prepare(&source, Some("a-kid")).await;
        assert_eq!(remote.fetches(), 1);
        assert!(remote.client_built(), "a fetch went out without a client");
        assert!(!remote.set(&source.url).knows(Some("a-kid")));
        Ok(())
    }
}
