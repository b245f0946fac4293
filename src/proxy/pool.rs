//! The upstream connection pool: kept-alive HTTP/1.1 connections lent to
//! one exchange at a time, or one HTTP/2 connection (over TLS, where the
//! upstream offers `h2` by ALPN) that every exchange shares.
//!
//! - An HTTP/1.1 connection is lent with the request and comes back when
//!   the answer's body has been read to its end. An answer dropped before
//!   its end (a client gone, a timeout) takes its connection with it: hyper
//!   closes a connection whose exchange was cut off.
//! - A request that a kept-alive connection could not even start to send
//!   (the upstream closed it while idle) is sent again on the next one, as
//!   hyper's own pooled client does; a request already written is never
//!   sent twice.
//! - Idle connections are bounded in number and in age.
//!
//! This replaces hyper-util's general client for the one upstream a policy
//! names: no pool key per request, no task spawned per request to wait for
//! the connection to come back.

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::Body as _;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;
type Body = Full<Bytes>;

/// How long a connection may sit idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many idle connections are kept; more are closed.
const MAX_IDLE: usize = 1024;

/// How connections to the upstream are made.
pub enum Connector {
    Plain(HttpConnector),
    Tls(HttpsConnector),
}

/// The pool for one upstream origin (`scheme://authority`).
pub struct Pool {
    origin: Uri,
    connector: Connector,
    /// Idle HTTP/1.1 connections, the most recently returned at the back.
    idle: Mutex<VecDeque<Idle>>,
    /// The shared HTTP/2 connection, once the upstream has offered one.
    shared: Mutex<Option<http2::SendRequest<Body>>>,
    /// Whether `shared` was ever set: HTTP/1.1 upstreams never lock it.
    has_shared: AtomicBool,
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// An HTTP/1.1 connection lent to one exchange.
pub struct Lease {
    pool: Arc<Pool>,
    sender: http1::SendRequest<Body>,
}

impl Lease {
    /// The answer was read to its end: the connection may serve another.
    pub fn release(self) {
        self.pool.put(self.sender);
    }
}

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connecting took longer than {0} ms")]
    ConnectTimeout(u64),
    #[error("connecting failed")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the connection could not be set up")]
    Handshake(#[source] hyper::Error),
    #[error("the exchange failed")]
    Exchange(#[source] hyper::Error),
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing here panics while holding a lock; if something did, the
    // data (a list of handles) is still whole.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// A pool for `origin`, with a task that closes connections idle for
    /// longer than the idle timeout (it ends with the pool).
    pub fn new(origin: Uri, connector: Connector) -> Arc<Self> {
        let pool = Arc::new(Self {
            origin,
            connector,
            idle: Mutex::default(),
            shared: Mutex::default(),
            has_shared: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(reap(weak));
        pool
    }

    pub fn origin(&self) -> &Uri {
        &self.origin
    }

    /// Sends `request` (absolute-form URI, `Host` set) and returns the
    /// answer's head, with the lease to give back when its body has been
    /// read to the end (none for HTTP/2, whose connection is shared).
    pub async fn send(
        self: &Arc<Self>,
        mut request: Request<Body>,
        connect_timeout: Duration,
    ) -> Result<(Response<Incoming>, Option<Lease>), SendError> {
        let absolute = request.uri().clone();
        loop {
            let (sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                // Boxed: connecting (a TLS handshake) is rare, and would
                // otherwise make every exchange's future kilobytes larger.
                None => (Box::pin(self.connect(connect_timeout)).await?, false),
            };
            let failed = match sender {
                Sender::H1(mut sender) => {
                    if let Err(error) = sender.ready().await {
                        if reused {
                            continue;
                        }
                        return Err(SendError::Handshake(error));
                    }
                    *request.uri_mut() = origin_form(&absolute);
                    match sender.try_send_request(request).await {
                        Ok(response) => {
                            return Ok((response, Some(Lease { pool: self.clone(), sender })));
                        }
                        Err(failed) => failed,
                    }
                }
                Sender::H2(mut sender) => {
                    *request.uri_mut() = absolute.clone();
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok((response, None)),
                        Err(failed) => {
                            self.forget_shared(&sender);
                            failed
                        }
                    }
                }
            };
            let mut failed = failed;
            match failed.take_message() {
                Some(unsent) if reused => {
                    tracing::debug!(error = %failed.error(), "a kept-alive upstream connection closed before the request was sent; sending it on another");
                    request = unsent;
                }
                _ => return Err(SendError::Exchange(failed.into_error())),
            }
        }
    }

    /// The shared HTTP/2 connection if there is one, else the most recently
    /// returned idle connection that is still open.
    fn checkout(&self) -> Option<Sender> {
        if self.has_shared.load(Ordering::Relaxed)
            && let Some(shared) = lock(&self.shared).as_ref()
            && !shared.is_closed()
        {
            return Some(Sender::H2(shared.clone()));
        }
        let mut idle = lock(&self.idle);
        while let Some(entry) = idle.pop_back() {
            if !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(Sender::H1(entry.sender));
            }
        }
        None
    }

    fn put(&self, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = lock(&self.idle);
        if idle.len() >= MAX_IDLE {
            // The oldest goes: it is the likeliest to have been closed.
            idle.pop_front();
        }
        idle.push_back(Idle { sender, since: Instant::now() });
    }

    fn forget_shared(&self, failed: &http2::SendRequest<Body>) {
        let mut shared = lock(&self.shared);
        if shared.as_ref().is_some_and(|current| current.is_closed() || failed.is_closed()) {
            *shared = None;
        }
    }

    /// Closes connections idle for longer than the idle timeout, and forgets
    /// closed ones.
    fn expire(&self) {
        let mut idle = lock(&self.idle);
        idle.retain(|entry| !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT);
    }

    /// A new connection, set up within `timeout` (the TLS handshake
    /// included).
    async fn connect(&self, timeout: Duration) -> Result<Sender, SendError> {
        let millis = timeout.as_millis() as u64;
        let timed_out = |_| SendError::ConnectTimeout(millis);
        match &self.connector {
            Connector::Plain(connector) => {
                let connecting = tower_service::Service::call(&mut connector.clone(), self.origin.clone());
                let io = tokio::time::timeout(timeout, connecting)
                    .await
                    .map_err(timed_out)?
                    .map_err(|error| SendError::Connect(error.into()))?;
                http1_connection(io).await
            }
            Connector::Tls(connector) => {
                let connecting = tower_service::Service::call(&mut connector.clone(), self.origin.clone());
                let io = tokio::time::timeout(timeout, connecting)
                    .await
                    .map_err(timed_out)?
                    .map_err(SendError::Connect)?;
                if io.connected().is_negotiated_h2() {
                    let sender = http2_connection(io).await?;
                    *lock(&self.shared) = Some(sender.clone());
                    self.has_shared.store(true, Ordering::Relaxed);
                    Ok(Sender::H2(sender))
                } else {
                    http1_connection(io).await
                }
            }
        }
    }
}

async fn http1_connection<T>(io: T) -> Result<Sender, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(io).await.map_err(SendError::Handshake)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    Ok(Sender::H1(sender))
}

async fn http2_connection<T>(io: T) -> Result<http2::SendRequest<Body>, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        http2::handshake(TokioExecutor::new(), io).await.map_err(SendError::Handshake)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    sender.ready().await.map_err(SendError::Handshake)?;
    Ok(sender)
}

/// `/path?query` of an absolute URI, for an HTTP/1.1 request line.
fn origin_form(absolute: &Uri) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = absolute.path_and_query().cloned();
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

async fn reap(pool: Weak<Pool>) {
    let mut interval = tokio::time::interval(IDLE_TIMEOUT / 2);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.expire(),
            None => return,
        }
    }
}

/// The plain connector, with `TCP_NODELAY` set.
pub fn tcp_connector(enforce_http: bool) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(enforce_http);
    connector
}

/// An answer's body, giving its connection back to the pool once it has
/// been read to the end — when it says it has ended, since hyper stops
/// polling a body whose length it knows to be reached.
pub struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl PooledBody {
    pub fn new(inner: Incoming, lease: Option<Lease>) -> Self {
        Self { inner, lease }
    }

    fn release_if_ended(&mut self) {
        if self.inner.is_end_stream()
            && let Some(lease) = self.lease.take()
        {
            lease.release();
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        use std::task::Poll;
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(lease) = self.lease.take() {
                    lease.release();
                }
            }
            Poll::Ready(Some(Ok(_))) => self.release_if_ended(),
            // A failed body leaves its connection unusable: it goes.
            Poll::Ready(Some(Err(_))) => self.lease = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // An answer with nothing (more) to read, that was never polled to
        // its end; anything else left unread closes the connection.
        self.release_if_ended();
    }
}
