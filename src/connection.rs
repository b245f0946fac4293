//! One client connection, bounded in time: which protocol it speaks is
//! decided within `listen.handshake_timeout` (a connection that sends
//! nothing, or half an HTTP/2 preface, is closed); it is served as HTTP/1.1
//! or h2c (prior knowledge); it is closed once idle — no request in flight
//! — for `listen.idle_timeout`; and it is closed gracefully when the server
//! drains. HTTP/1.1 headers must also arrive within the idle timeout
//! (hyper's header read timeout), and HTTP/2 peers are pinged so that a
//! vanished one is noticed.

use crate::proxy::ProxyBody;
use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How long a connection may take to say anything, and to stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub handshake: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads (without consuming) as much of the stream as decides its
/// protocol: the HTTP/2 connection preface, or anything else. Decided on
/// the first bytes in practice (`POST`, `GET` differ from `PRI` at once).
async fn detect(stream: &TcpStream) -> std::io::Result<Protocol> {
    let mut start = [0u8; PREFACE.len()];
    loop {
        let read = stream.peek(&mut start).await?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if start[..read] != PREFACE[..read] {
            return Ok(Protocol::Http1);
        }
        if read == PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        // Part of a preface: the rest is on its way (or the deadline ends it).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Requests in flight on one connection, and when it was last busy.
struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    last_millis: AtomicU64,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_millis: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        self.last_millis.store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once nothing has been in flight for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let wait = if self.in_flight.load(Ordering::Relaxed) > 0 {
                timeout
            } else {
                let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
                (last + timeout).saturating_sub(self.base.elapsed())
            };
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// One request in flight, until dropped: with the request's future if it
/// never answers, else with its response body.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// A response body that holds its request's [`InFlight`].
struct Tracked {
    inner: ProxyBody,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one accepted connection with `handler` until it ends, goes idle,
/// or `drain` says the server is shutting down.
pub async fn serve<F, Fut>(stream: TcpStream, handler: F, timeouts: Timeouts, drain: watch::Receiver<bool>)
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let protocol = match tokio::time::timeout(timeouts.handshake, detect(&stream)).await {
        Ok(Ok(protocol)) => protocol,
        Ok(Err(_)) | Err(_) => return,
    };
    let activity = Activity::new();
    let tracker = activity.clone();
    let handler = Arc::new(handler);
    let service = service_fn(move |request| {
        let in_flight = InFlight::begin(&tracker);
        let answer = handler(request);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|inner| Tracked { inner, _in_flight: in_flight }.boxed_unsync()))
        }
    });
    let io = TokioIo::new(stream);
    match protocol {
        Protocol::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(timeouts.idle);
            let connection = builder.serve_connection(io, service);
            drive(connection, |c| c.graceful_shutdown(), &activity, timeouts.idle, drain).await;
        }
        Protocol::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(timeouts.idle.min(Duration::from_secs(30))))
                .keep_alive_timeout(Duration::from_secs(20));
            let connection = builder.serve_connection(io, service);
            drive(connection, |c| c.graceful_shutdown(), &activity, timeouts.idle, drain).await;
        }
    }
}

/// Runs a connection to its end, closing it gracefully when it has been
/// idle too long or the server drains.
async fn drive<C>(
    connection: C,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    idle: Duration,
    mut drain: watch::Receiver<bool>,
) where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    let mut closing = *drain.borrow();
    if closing {
        graceful(connection.as_mut());
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            changed = drain.changed(), if !closing => {
                if changed.is_err() || *drain.borrow() {
                    closing = true;
                    graceful(connection.as_mut());
                }
            }
            () = activity.idle(idle), if !closing => {
                closing = true;
                graceful(connection.as_mut());
            }
        }
    }
}
