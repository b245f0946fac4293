//! The upstream connection pool: kept-alive HTTP/1.1 connections lent to
//! one exchange at a time, or (over TLS, where the upstream offers `h2` by
//! ALPN) a few HTTP/2 connections that exchanges share.
//!
//! - An HTTP/1.1 connection is lent with the request and comes back when
//!   the answer's body has been read to its end. An answer dropped before
//!   its end (a client gone, a timeout) takes its connection with it.
//!   Over plain TCP the exchange is toolgate's own ([`h1`]); over TLS,
//!   hyper's.
//! - An HTTP/2 connection carries at most [`H2_STREAMS`] exchanges (the
//!   usual limit servers set); past that another is opened, up to
//!   [`H2_CONNECTIONS`], so one client's long streams cannot leave everyone
//!   else queued behind a full connection. One request at a time opens
//!   them. They are pinged while open, so a silently dropped one is found.
//! - A request that a kept-alive connection could not even start to send
//!   (the upstream closed it while idle) is sent again on the next one, as
//!   hyper's own pooled client does; a request the upstream may have read
//!   is never sent twice.
//! - Idle connections are bounded in number and in age.
//!
//! This replaces hyper-util's general client for the one upstream a policy
//! names: no pool key per request, no task spawned per request to wait for
//! the connection to come back.

use super::h1;
pub use super::h1::Error as OwnError;
use super::pooled_body::PooledBody;
use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

type HttpsConnector = hyper_rustls::HttpsConnector<HttpConnector>;
type Body = Full<Bytes>;

/// How long a connection may sit idle before it is closed (it is closed
/// within half as long again, by the reaper).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// At most this many idle HTTP/1.1 connections are kept; more are closed.
const MAX_IDLE: usize = 1024;
/// Exchanges in flight on one HTTP/2 connection, at most.
pub const H2_STREAMS: usize = 100;
/// HTTP/2 connections to the upstream, at most; past them, exchanges wait
/// on the least busy one.
pub const H2_CONNECTIONS: usize = 8;
/// Kept-alive connections a request that none of them could start to send
/// is tried on, before a new connection is made for it.
const MAX_RESENDS: usize = 2;
/// How long a kept-alive HTTP/1.1 connection may take to be ready for the
/// next request (still sending an earlier request's body, or closing)
/// before another is used.
const READY_WAIT: Duration = Duration::from_secs(1);

/// How connections to the upstream are made.
pub enum Connector {
    Plain(HttpConnector),
    Tls(HttpsConnector),
}

/// The pool for one upstream origin (`scheme://authority`).
pub struct Pool {
    origin: Uri,
    connector: Connector,
    /// Idle plain-TCP connections, for toolgate's own client.
    kept: Arc<h1::Kept>,
    /// Idle HTTP/1.1 connections over TLS, the most recently returned at
    /// the back.
    idle: Mutex<VecDeque<Idle>>,
    /// The HTTP/2 connections, once the upstream has offered HTTP/2.
    shared: Mutex<Vec<Arc<Shared>>>,
    /// Whether the upstream has spoken HTTP/2 (HTTP/1.1 upstreams never
    /// lock `shared`).
    speaks_h2: AtomicBool,
    /// Whether a TLS connection has told the upstream's protocol.
    learned: AtomicBool,
    connecting: tokio::sync::Mutex<()>,
}

struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

/// One HTTP/2 connection and the exchanges on it.
struct Shared {
    sender: http2::SendRequest<Body>,
    in_flight: AtomicUsize,
    /// When it last had no exchange in flight, in ms since `epoch`.
    idle_since: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn expired(&self) -> bool {
        self.sender.is_closed()
            || (self.in_flight.load(Ordering::Acquire) == 0
                && (self.epoch.elapsed().as_millis() as u64)
                    .saturating_sub(self.idle_since.load(Ordering::Relaxed))
                    >= IDLE_TIMEOUT.as_millis() as u64)
    }
}

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(Arc<Shared>),
}

/// A connection lent to one exchange: an HTTP/1.1 connection, or a stream
/// of an HTTP/2 one.
pub enum Lease {
    H1 {
        pool: Arc<Pool>,
        sender: http1::SendRequest<Body>,
    },
    /// Held only to be dropped: the stream is uncounted then.
    H2(#[allow(dead_code)] H2Stream),
}

/// A counted exchange on an HTTP/2 connection; uncounted when dropped.
pub struct H2Stream(Arc<Shared>);

impl Drop for H2Stream {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(self.0.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    }
}

impl Lease {
    /// The answer was read to its end: the connection may serve another.
    pub(super) fn release(self) {
        if let Lease::H1 { pool, sender } = self {
            pool.put(sender);
        }
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
    #[error("the exchange failed")]
    Own(#[source] h1::Error),
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
            kept: h1::Kept::new(MAX_IDLE, IDLE_TIMEOUT),
            idle: Mutex::default(),
            shared: Mutex::default(),
            speaks_h2: AtomicBool::new(false),
            learned: AtomicBool::new(false),
            connecting: tokio::sync::Mutex::new(()),
        });
        let weak = Arc::downgrade(&pool);
        tokio::spawn(reap(weak));
        pool
    }

    pub fn origin(&self) -> &Uri {
        &self.origin
    }

    /// Sends `request` (absolute-form URI, `Host` set) and returns the
    /// answer, whose body gives its connection back once read to its end.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<Bytes>,
        connect_timeout: Duration,
    ) -> Result<Response<PooledBody>, SendError> {
        match &self.connector {
            Connector::Plain(connector) => self.send_plain(connector, request, connect_timeout).await,
            Connector::Tls(connector) => {
                let (response, lease) =
                    self.send_hyper(connector, request.map(Full::new), connect_timeout).await?;
                let (parts, body) = response.into_parts();
                Ok(Response::from_parts(parts, PooledBody::hyper(body, lease)))
            }
        }
    }

    /// Over plain TCP: toolgate's own HTTP/1.1 client ([`h1`]).
    async fn send_plain(
        &self,
        connector: &HttpConnector,
        mut request: Request<Bytes>,
        connect_timeout: Duration,
    ) -> Result<Response<PooledBody>, SendError> {
        let mut resent = 0;
        loop {
            let kept = if resent < MAX_RESENDS { self.kept.checkout() } else { None };
            let (conn, reused) = match kept {
                Some(conn) => (conn, true),
                None => (Box::pin(connect_plain(connector, &self.origin, connect_timeout)).await?, false),
            };
            match h1::exchange(conn, request, &self.kept).await {
                Ok(response) => return Ok(response.map(PooledBody::Own)),
                Err(h1::Failure::Unsent(unsent, error)) if reused => {
                    resent += 1;
                    tracing::debug!(%error, "a kept-alive upstream connection closed before the request was sent; sending it on another");
                    request = *unsent;
                }
                Err(h1::Failure::Unsent(_, error) | h1::Failure::Failed(error)) => {
                    return Err(SendError::Own(error));
                }
            }
        }
    }

    /// Over TLS: hyper's client, HTTP/2 where the upstream offers it.
    async fn send_hyper(
        self: &Arc<Self>,
        connector: &HttpsConnector,
        mut request: Request<Body>,
        connect_timeout: Duration,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let absolute = request.uri().clone();
        let mut resent = 0;
        loop {
            // Boxed: connecting (a TLS handshake) is rare, and would
            // otherwise make every exchange's future kilobytes larger.
            let (sender, reused) = if resent >= MAX_RESENDS {
                // Kept-alive connections failed to take it twice: a new
                // one, whose failure ends the loop.
                (Box::pin(self.connect_now(connector, connect_timeout)).await?, false)
            } else {
                match self.checkout() {
                    Some(sender) => (sender, true),
                    None => Box::pin(self.connect(connector, connect_timeout)).await?,
                }
            };
            let failed = match sender {
                Sender::H1(mut sender) => {
                    // Usually ready already: no timer then.
                    if reused && !sender.is_ready() {
                        match tokio::time::timeout(READY_WAIT, sender.ready()).await {
                            Ok(Ok(())) => {}
                            // Closed, or busy too long: it goes, another serves.
                            Ok(Err(_)) | Err(_) => continue,
                        }
                    }
                    *request.uri_mut() = origin_form(&absolute);
                    match sender.try_send_request(request).await {
                        Ok(response) => return Ok((response, Lease::H1 { pool: self.clone(), sender })),
                        Err(failed) => failed,
                    }
                }
                Sender::H2(shared) => {
                    *request.uri_mut() = absolute.clone();
                    let stream = H2Stream(shared);
                    match stream.0.sender.clone().try_send_request(request).await {
                        Ok(response) => return Ok((response, Lease::H2(stream))),
                        Err(failed) => failed,
                    }
                }
            };
            let mut failed = failed;
            match failed.take_message() {
                Some(unsent) if reused => {
                    resent += 1;
                    tracing::debug!(error = %failed.error(), "a kept-alive upstream connection closed before the request was sent; sending it on another");
                    request = unsent;
                }
                _ => return Err(SendError::Exchange(failed.into_error())),
            }
        }
    }

    /// An HTTP/2 connection with room for another exchange, else the most
    /// recently returned idle HTTP/1.1 connection that is still open (a
    /// ready one among the last few first).
    fn checkout(&self) -> Option<Sender> {
        if self.speaks_h2.load(Ordering::Relaxed)
            && let Some(shared) = self.h2_checkout()
        {
            return Some(Sender::H2(shared));
        }
        let mut idle = lock(&self.idle);
        loop {
            let len = idle.len();
            let pick = (len.saturating_sub(4)..len).rev().find(|&at| idle[at].sender.is_ready());
            let entry = idle.remove(pick.or(len.checked_sub(1))?)?;
            if !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(Sender::H1(entry.sender));
            }
        }
    }

    /// An HTTP/2 connection with room for one more exchange (or, when no
    /// more may be opened, the least busy one), counted in.
    fn h2_checkout(&self) -> Option<Arc<Shared>> {
        let mut shared = lock(&self.shared);
        shared.retain(|connection| !connection.expired());
        let chosen = match shared.iter().find(|c| c.in_flight.load(Ordering::Acquire) < H2_STREAMS) {
            Some(open) => open.clone(),
            None if shared.len() >= H2_CONNECTIONS => {
                shared.iter().min_by_key(|c| c.in_flight.load(Ordering::Acquire))?.clone()
            }
            None => return None,
        };
        chosen.in_flight.fetch_add(1, Ordering::AcqRel);
        Some(chosen)
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

    /// Closes connections idle for longer than the idle timeout, and forgets
    /// closed ones.
    fn expire(&self) {
        self.kept.expire();
        lock(&self.idle).retain(|entry| !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT);
        lock(&self.shared).retain(|connection| !connection.expired());
    }

    /// A new connection, set up within `timeout` (the TLS handshake
    /// included); or, when another request connected meanwhile, what it
    /// made (then `true`: a connection already in use). Over TLS, one
    /// request at a time connects until the upstream's protocol is known,
    /// and always if it is HTTP/2, so that a burst of requests makes one
    /// connection rather than a handshake each.
    async fn connect(
        &self,
        connector: &HttpsConnector,
        timeout: Duration,
    ) -> Result<(Sender, bool), SendError> {
        if self.learned.load(Ordering::Relaxed) && !self.speaks_h2.load(Ordering::Relaxed) {
            return Ok((self.connect_now(connector, timeout).await?, false));
        }
        let _turn = self.connecting.lock().await;
        if let Some(sender) = self.checkout() {
            return Ok((sender, true));
        }
        Ok((self.connect_now(connector, timeout).await?, false))
    }

    async fn connect_now(&self, connector: &HttpsConnector, timeout: Duration) -> Result<Sender, SendError> {
        let millis = timeout.as_millis() as u64;
        let timed_out = |_| SendError::ConnectTimeout(millis);
        let connecting = tower_service::Service::call(&mut connector.clone(), self.origin.clone());
        let io = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(timed_out)?
            .map_err(SendError::Connect)?;
        if !io.connected().is_negotiated_h2() {
            // The upstream speaks HTTP/1.1: its connections are made in
            // parallel from here on.
            self.learned.store(true, Ordering::Relaxed);
            return http1_connection(io).await;
        }
        let sender = http2_connection(io).await?;
        let epoch = Instant::now();
        let shared =
            Arc::new(Shared { sender, in_flight: AtomicUsize::new(1), idle_since: AtomicU64::new(0), epoch });
        let mut list = lock(&self.shared);
        if list.len() >= H2_CONNECTIONS {
            // Opened past the bound (the upstream went from
            // HTTP/1.1 to HTTP/2 meanwhile): it serves this one
            // exchange and closes.
            return Ok(Sender::H2(shared));
        }
        list.push(shared.clone());
        self.speaks_h2.store(true, Ordering::Relaxed);
        Ok(Sender::H2(shared))
    }
}

/// A new plain TCP connection to `origin`, within `timeout`.
async fn connect_plain(
    connector: &HttpConnector,
    origin: &Uri,
    timeout: Duration,
) -> Result<h1::Conn, SendError> {
    let connecting = tower_service::Service::call(&mut connector.clone(), origin.clone());
    let io = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| SendError::ConnectTimeout(timeout.as_millis() as u64))?
        .map_err(|error| SendError::Connect(error.into()))?;
    Ok(h1::Conn::new(io.into_inner()))
}

/// Spawns a connection's task; a failure before its first exchange is
/// reported by what the task ended with, which says why (a TLS alert, a
/// reset), where the request handle knows only that it closed.
async fn http1_connection<T>(io: T) -> Result<Sender, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = http1::handshake(io).await.map_err(SendError::Handshake)?;
    let (ended, ended_with) = tokio::sync::oneshot::channel();
    drive(connection, ended);
    if let Err(closed) = sender.ready().await {
        return Err(SendError::Handshake(why_closed(ended_with, closed).await));
    }
    Ok(Sender::H1(sender))
}

async fn http2_connection<T>(io: T) -> Result<http2::SendRequest<Body>, SendError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(IDLE_TIMEOUT / 2)
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .handshake(io)
        .await
        .map_err(SendError::Handshake)?;
    let (ended, ended_with) = tokio::sync::oneshot::channel();
    drive(connection, ended);
    if let Err(closed) = sender.ready().await {
        return Err(SendError::Handshake(why_closed(ended_with, closed).await));
    }
    Ok(sender)
}

/// Spawns the task that drives a connection, telling `ended` what it ended
/// with if that was an error.
fn drive<F>(connection: F, ended: tokio::sync::oneshot::Sender<hyper::Error>)
where
    F: Future<Output = hyper::Result<()>> + Unpin + Send + 'static,
{
    tokio::spawn(Driven { connection, ended: Some(ended) });
}

/// A connection's task. A future of its own, not an `async` block: a block
/// would hold the connection twice (as captured, and as awaited), and this
/// task lives as long as the connection.
struct Driven<F> {
    connection: F,
    ended: Option<tokio::sync::oneshot::Sender<hyper::Error>>,
}

impl<F: Future<Output = hyper::Result<()>> + Unpin> Future for Driven<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Poll::Ready(result) = Pin::new(&mut self.connection).poll(cx) else {
            return Poll::Pending;
        };
        if let Err(error) = result {
            tracing::debug!(%error, "upstream connection ended with an error");
            if let Some(ended) = self.ended.take() {
                let _ = ended.send(error);
            }
        }
        Poll::Ready(())
    }
}

/// What a connection's task ended with, if it ended with an error soon;
/// else the request handle's own error.
async fn why_closed(
    ended: tokio::sync::oneshot::Receiver<hyper::Error>,
    closed: hyper::Error,
) -> hyper::Error {
    match tokio::time::timeout(Duration::from_secs(1), ended).await {
        Ok(Ok(error)) => error,
        _ => closed,
    }
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

/// The plain connector: `TCP_NODELAY`, and TCP keep-alive so that a peer
/// gone silently under a long stream is found.
pub fn tcp_connector(enforce_http: bool) -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_keepalive(Some(IDLE_TIMEOUT));
    connector.enforce_http(enforce_http);
    connector
}
