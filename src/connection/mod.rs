//! One client connection, bounded in time.
//!
//! - On a TLS listener, the handshake (with the running policy's
//!   certificate, verifying a client certificate where asked) and then the
//!   protocol are settled within `listen.handshake_timeout`. ALPN `h2`
//!   means HTTP/2; otherwise the protocol is decided from the first bytes
//!   (read, then replayed to the protocol): a connection that sends
//!   nothing, or half an HTTP/2 preface, is closed.
//! - It is served as HTTP/1.1 or HTTP/2 (h2c by prior knowledge; at most
//!   [`H2_STREAMS`] streams at once), and HTTP/2 peers are pinged so that a
//!   vanished one is noticed. Plaintext HTTP/1.1 is toolgate's own
//!   ([`h1`]): it holds no buffer while idle or streaming; TLS and HTTP/2
//!   are hyper's.
//! - Idle — no request in flight — for `listen.idle_timeout`, it is closed;
//!   when the server is at its connection cap, after only [`SHED_IDLE`],
//!   so that idle connections cannot keep new clients waiting. HTTP/1.1
//!   request headers must arrive within the idle timeout too.
//! - A client that stops reading its answers (an HTTP/2 window left at
//!   zero, responses never read) is found out: an answer whose next bytes
//!   have waited `idle_timeout` for the client to take the last ones gets
//!   the connection closed outright.
//! - It is closed gracefully when the server drains; a graceful close that
//!   cannot finish (the client reads nothing) is cut after the idle timeout.

mod body;
pub mod h1;

pub use body::{BodyError, ClientBody};

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
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How a TLS listener accepts: the running policy's configuration when the
/// connection came, the SHA-256 of the client CA bundle it verifies
/// against, and where failed handshakes are counted.
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    pub client_ca: [u8; 32],
    pub metrics: Arc<crate::telemetry::Metrics>,
}

/// What is known of a client connection before its first request.
#[derive(Debug, Clone)]
pub struct ClientConnection {
    pub peer: std::net::SocketAddr,
    /// Whether it came over TLS.
    pub tls: bool,
    /// The client certificate the handshake verified, if any.
    pub certificate: Option<crate::identity::mtls::ClientCertificate>,
    /// The peer's address as `X-Forwarded-For` gives it upstream, written
    /// once for all the connection's requests.
    pub forwarded_for: http::HeaderValue,
}

impl ClientConnection {
    pub fn new(
        peer: std::net::SocketAddr,
        tls: bool,
        certificate: Option<crate::identity::mtls::ClientCertificate>,
    ) -> Self {
        let forwarded_for = http::HeaderValue::try_from(peer.ip().to_string())
            .unwrap_or_else(|_| http::HeaderValue::from_static("unknown"));
        Self { peer, tls, certificate, forwarded_for }
    }
}

/// How long a connection may take to say anything, and to stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub handshake: Duration,
    pub idle: Duration,
}

/// What the server tells its connections while they run.
#[derive(Clone)]
pub struct Signals {
    /// The server drains: close gracefully.
    pub drain: watch::Receiver<bool>,
    /// The server is at its connection cap: close when idle at all.
    pub pressure: watch::Receiver<bool>,
}

/// Concurrent HTTP/2 streams per connection: each may hold a body and an
/// answer in memory and an upstream connection.
pub const H2_STREAMS: u32 = 32;

/// How long a connection may be idle while clients wait for a slot.
pub const SHED_IDLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads as much of the stream as decides its protocol: the HTTP/2
/// connection preface, or anything else (`POST`, `GET` differ from `PRI`
/// at once). The bytes read are replayed to the protocol.
async fn detect<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<(Protocol, Vec<u8>)> {
    let mut start = Vec::with_capacity(PREFACE.len());
    loop {
        let mut chunk = [0u8; PREFACE.len()];
        let wanted = PREFACE.len() - start.len();
        let read = stream.read(&mut chunk[..wanted]).await?;
        if read == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        start.extend_from_slice(&chunk[..read]);
        if start[..] != PREFACE[..start.len()] {
            return Ok((Protocol::Http1, start));
        }
        if start.len() == PREFACE.len() {
            return Ok((Protocol::Http2, start));
        }
    }
}

/// A stream whose first bytes were read already: they are read again first.
struct Replayed<S> {
    start: Vec<u8>,
    position: usize,
    inner: S,
    /// An error met while reading on past the replayed bytes.
    failed: Option<io::Error>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.position < self.start.len() {
            let left = &self.start[self.position..];
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            self.position += n;
            if self.position == self.start.len() {
                self.start = Vec::new();
                self.position = 0;
                // What has arrived since, in the same read: a request head
                // read in two parts grows hyper's buffer to twice its size.
                // An error waits for the next read, after these bytes.
                if buf.remaining() > 0
                    && let Poll::Ready(Err(error)) = Pin::new(&mut self.inner).poll_read(cx, buf)
                {
                    self.failed = Some(error);
                }
            }
            return Poll::Ready(Ok(()));
        }
        if let Some(error) = self.failed.take() {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replayed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Requests in flight on one connection, when it was last busy, and
/// whether its client is taking what it is sent.
struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `base` when a request last ended.
    last_done: AtomicU64,
    /// Answers that gave the connection bytes it has not yet come back for.
    owed: AtomicUsize,
    /// Milliseconds since `base` when the connection last came back for more.
    last_taken: AtomicU64,
    /// Close once no request is in flight (toolgate's own HTTP/1.1).
    closing: AtomicBool,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done: AtomicU64::new(0),
            owed: AtomicUsize::new(0),
            last_taken: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        })
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn since(&self, stamp: &AtomicU64) -> Duration {
        self.base.elapsed().saturating_sub(Duration::from_millis(stamp.load(Ordering::Relaxed)))
    }

    fn idle_for(&self) -> Option<Duration> {
        (self.in_flight.load(Ordering::Relaxed) == 0).then(|| self.since(&self.last_done))
    }

    /// Whether an answer has waited `timeout` for the client to take bytes.
    fn stalled(&self, timeout: Duration) -> bool {
        self.owed.load(Ordering::Relaxed) > 0 && self.since(&self.last_taken) >= timeout
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
        self.0.last_done.store(self.0.now(), Ordering::Relaxed);
    }
}

/// A response body that holds its request's [`InFlight`] and tells the
/// connection whether hyper keeps coming back for more.
struct Tracked {
    inner: ProxyBody,
    in_flight: InFlight,
    owed: bool,
}

impl Tracked {
    fn settle(&mut self) {
        if self.owed {
            self.owed = false;
            let activity = &self.in_flight.0;
            activity.owed.fetch_sub(1, Ordering::Relaxed);
            activity.last_taken.store(activity.now(), Ordering::Relaxed);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.settle();
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.settle();
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(_)) = &polled {
            self.owed = true;
            let activity = &self.in_flight.0;
            if activity.owed.fetch_add(1, Ordering::Relaxed) == 0 {
                activity.last_taken.store(activity.now(), Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one accepted connection until it ends, goes idle or stalls, or
/// the server drains: over TLS with `tls`, each request answered by the
/// handler `make` returns for the connection.
pub async fn serve<M, F, Fut>(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    tls: Option<Tls>,
    make: M,
    timeouts: Timeouts,
    signals: Signals,
) where
    M: FnOnce(ClientConnection) -> F,
    F: Fn(Request<ClientBody>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + timeouts.handshake;
    let Some(tls) = tls else {
        let Ok(Ok((protocol, start))) = tokio::time::timeout_at(deadline, detect(&mut stream)).await else {
            return;
        };
        let handler = make(ClientConnection::new(peer, false, None));
        if protocol == Protocol::Http1 {
            return run_own(stream, &start, handler, timeouts, signals).await;
        }
        let io = Replayed { start, position: 0, inner: stream, failed: None };
        return run(io, protocol, handler, timeouts, signals).await;
    };
    // A TLS connection's handshake and state live in a box of their own, so
    // that every plaintext connection's task is not sized for them.
    Box::pin(serve_tls(stream, peer, tls, deadline, make, timeouts, signals)).await;
}

async fn serve_tls<M, F, Fut>(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    Tls { config, client_ca, metrics }: Tls,
    deadline: tokio::time::Instant,
    make: M,
    timeouts: Timeouts,
    signals: Signals,
) where
    M: FnOnce(ClientConnection) -> F,
    F: Fn(Request<ClientBody>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let accepting = Box::pin(tokio_rustls::TlsAcceptor::from(config).accept(stream));
    let mut stream = match tokio::time::timeout_at(deadline, accepting).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            metrics.tls_refused(&error);
            tracing::debug!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let (_, session) = stream.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let certificate = session
        .peer_certificates()
        .filter(|chain| !chain.is_empty())
        .map(|chain| crate::identity::mtls::ClientCertificate::read(chain, client_ca));
    // The protocol the bytes show must be the one ALPN chose, if it chose.
    let (protocol, start) = match tokio::time::timeout_at(deadline, detect(&mut stream)).await {
        Ok(Ok(detected)) => detected,
        Ok(Err(_)) | Err(_) => return,
    };
    let agreed = match alpn.as_deref() {
        Some(b"h2") => protocol == Protocol::Http2,
        Some(b"http/1.1") => protocol == Protocol::Http1,
        _ => true,
    };
    if !agreed {
        tracing::debug!(%peer, "closing a connection that speaks another protocol than ALPN chose");
        return;
    }
    let handler = make(ClientConnection::new(peer, true, certificate));
    let io = Replayed { start, position: 0, inner: stream, failed: None };
    run(io, protocol, handler, timeouts, signals).await;
}

/// One request begun: counted in flight until its answer's body is
/// dropped, which tells the connection whether the client takes it.
fn begin<F, Fut>(
    handler: &F,
    activity: &Arc<Activity>,
    request: Request<ClientBody>,
) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + use<F, Fut>
where
    F: Fn(Request<ClientBody>) -> Fut,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let in_flight = InFlight::begin(activity);
    // Boxed: hyper keeps a box sized for this service's future for the
    // connection's whole life, and toolgate's own connection would hold
    // it in its task. The pipeline's future is several KiB: boxed, it is
    // allocated per request and freed when the answer's head is out.
    let answer = Box::pin(handler(request));
    async move {
        let response = answer.await?;
        Ok(response.map(|inner| Tracked { inner, in_flight, owed: false }.boxed_unsync()))
    }
}

/// Serves a plaintext HTTP/1.1 connection with toolgate's own server side.
async fn run_own<F, Fut>(stream: TcpStream, start: &[u8], handler: F, timeouts: Timeouts, signals: Signals)
where
    F: Fn(Request<ClientBody>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let activity = Activity::new();
    let handle = |request| {
        let answer = begin(&handler, &activity, request);
        async move {
            match answer.await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    };
    let connection = std::pin::pin!(h1::serve(stream, start, handle, &activity.closing, timeouts.idle));
    drive(connection, |_| activity.closing.store(true, Ordering::Relaxed), &activity, timeouts.idle, signals)
        .await;
}

async fn run<S, F, Fut>(io: S, protocol: Protocol, handler: F, timeouts: Timeouts, signals: Signals)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<ClientBody>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static,
{
    let activity = Activity::new();
    let tracker = activity.clone();
    let handler = Arc::new(handler);
    let service = service_fn(move |request: Request<Incoming>| {
        begin(&*handler, &tracker, request.map(ClientBody::Hyper))
    });
    let io = TokioIo::new(io);
    match protocol {
        Protocol::Http1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(timeouts.idle);
            let connection = std::pin::pin!(builder.serve_connection(io, service));
            drive(connection, |c| c.graceful_shutdown(), &activity, timeouts.idle, signals).await;
        }
        Protocol::Http2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_concurrent_streams(H2_STREAMS)
                .keep_alive_interval(Some(timeouts.idle.min(Duration::from_secs(30))))
                .keep_alive_timeout(Duration::from_secs(20));
            // Boxed: an HTTP/2 connection's state is several times an
            // HTTP/1.1 one's, and each HTTP/1.1 task would be sized for it.
            let connection = std::pin::pin!(Box::pin(builder.serve_connection(io, service)));
            drive(
                connection,
                |c| c.get_mut().as_mut().graceful_shutdown(),
                &activity,
                timeouts.idle,
                signals,
            )
            .await;
        }
    }
}

/// How often a connection looks at its own activity.
fn tick(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(50), SHED_IDLE)
}

/// Runs a connection to its end: closed gracefully when idle (sooner under
/// pressure) or when the server drains, and outright when its client has
/// stalled or a graceful close cannot finish.
///
/// The connection is pinned by the caller: an `async fn` holds a parameter
/// it pins apart from the pinned copy, and this one is most of the task.
async fn drive<C, E>(
    mut connection: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    idle: Duration,
    mut signals: Signals,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut closing: Option<Instant> = None;
    // A signal whose sender is gone has nothing more to say.
    let (mut drain_open, mut pressure_open) = (true, true);
    let mut ticks = tokio::time::interval(tick(idle));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if closing.is_none() {
            let under_pressure = *signals.pressure.borrow();
            let limit = if under_pressure { SHED_IDLE.min(idle) } else { idle };
            if *signals.drain.borrow() || activity.idle_for().is_some_and(|quiet| quiet >= limit) {
                closing = Some(Instant::now());
                graceful(connection.as_mut());
            }
        }
        if activity.stalled(idle) || closing.is_some_and(|since| since.elapsed() >= idle) {
            tracing::debug!("closing a connection whose client takes nothing");
            return;
        }
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            changed = signals.drain.changed(), if closing.is_none() && drain_open => drain_open = changed.is_ok(),
            changed = signals.pressure.changed(), if closing.is_none() && pressure_open => {
                pressure_open = changed.is_ok();
            }
            _ = ticks.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn replayed_bytes_and_what_followed_come_in_one_read() -> io::Result<()> {
        let head = b"POST /mcp HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n";
        let mut io = Replayed { start: head[..24].to_vec(), position: 0, inner: &head[24..], failed: None };
        let mut buffer = [0u8; 8192];
        let read = io.read(&mut buffer).await?;
        assert_eq!(&buffer[..read], head, "one read, so hyper parses the head without growing its buffer");
        assert_eq!(io.read(&mut buffer).await?, 0);
        Ok(())
    }

    #[tokio::test]
    async fn replayed_bytes_keep_their_order_through_small_reads() -> io::Result<()> {
        let text = b"GET /mcp HTTP/1.1\r\nhost: a\r\n\r\n";
        let mut io = Replayed { start: text[..24].to_vec(), position: 0, inner: &text[24..], failed: None };
        let mut all = Vec::new();
        let mut buffer = [0u8; 5];
        loop {
            let read = io.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            all.extend_from_slice(&buffer[..read]);
        }
        assert_eq!(all, text);
        Ok(())
    }

    /// A stream that fails once, then says nothing more (ends), as a TLS
    /// stream may after a bad record.
    struct FailsOnce(bool);

    impl AsyncRead for FailsOnce {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if std::mem::replace(&mut self.0, true) {
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "bad record")))
        }
    }

    #[tokio::test]
    async fn an_error_after_the_replayed_bytes_is_not_lost() {
        let mut io = Replayed {
            start: b"GET / HTTP/1.1\r\n".to_vec(),
            position: 0,
            inner: FailsOnce(false),
            failed: None,
        };
        let mut buffer = [0u8; 64];
        assert_eq!(io.read(&mut buffer).await.ok(), Some(16), "the replayed bytes first");
        let error = io.read(&mut buffer).await.err().map(|e| e.kind());
        assert_eq!(error, Some(io::ErrorKind::InvalidData), "then the stream's error");
    }
}
