//! toolgate's own HTTP/1.1 client for a plain-TCP upstream: one exchange
//! at a time on a kept-alive connection, with no task and no channel per
//! connection — the exchange writes the request and reads the answer's
//! head itself, and the answer's body reads its bytes straight from the
//! socket as the client is sent them.
//!
//! - The request goes out in one write (its body with it, up to
//!   [`INLINE_BODY`]); the answer is read per [`framing`]: strictly, and a
//!   connection is used again only when its answer ended exactly where
//!   its framing said, in HTTP/1.1 without `Connection: close`.
//! - An idle connection holds no buffer; a long stream holds one only
//!   while bytes are arriving.
//! - An idle connection is checked before it is lent, without a system
//!   call unless the socket has signalled something: one the upstream
//!   closed, or that has bytes nobody asked for, is dropped.
//!
//! Over TLS, hyper's client still serves (HTTP/2 where offered).

pub(crate) mod framing;

use bytes::{Bytes, BytesMut};
use framing::{Chunked, Framing, FramingError, Parsed, Step};
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request body up to this long goes out in the same write as the head.
pub const INLINE_BODY: usize = 16 * 1024;
/// The first read of an answer, and of each burst of a streamed body.
const READ_SIZE: usize = 8 * 1024;
/// Reads grow, while they fill what they were given, up to this.
const READ_MAX: usize = 256 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the request failed")]
    Write(#[source] io::Error),
    #[error("reading the answer failed")]
    Read(#[source] io::Error),
    #[error("the upstream closed the connection before its answer's head")]
    ClosedBeforeHead,
    #[error("the upstream closed the connection before its answer's end")]
    ClosedBeforeEnd,
    #[error(transparent)]
    Framing(#[from] FramingError),
}

/// How an exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// Not one byte of the request reached the connection: it may be sent
    /// on another.
    Unsent(Box<Request<Bytes>>, Error),
    Failed(Error),
}

/// A connection to the upstream.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed; empty, without an allocation,
    /// between exchanges and while a stream waits.
    buf: BytesMut,
}

impl Conn {
    pub fn new(io: TcpStream) -> Self {
        Self { io, buf: BytesMut::new() }
    }

    /// Whether an idle connection may carry a request: the upstream has
    /// neither closed it nor sent anything. The readiness the runtime
    /// already has says "nothing happened" without a system call; only a
    /// socket that signalled something is read. The task's I/O budget is
    /// not drawn on: spent, it would answer "nothing happened" unlooked.
    fn fit(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let ready = std::future::poll_fn(|cx| Poll::Ready(self.io.poll_read_ready(cx)));
        let Poll::Ready(readiness) = std::pin::pin!(tokio::task::coop::unconstrained(ready)).poll(&mut cx)
        else {
            return false;
        };
        match readiness {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads more into the buffer; `Ok(0)` at the end of the stream.
    async fn read_more(&mut self, want: usize) -> io::Result<usize> {
        self.buf.reserve(want);
        self.io.read_buf(&mut self.buf).await
    }
}

/// Idle connections, the most recently returned at the back.
#[derive(Debug)]
pub struct Kept {
    idle: Mutex<VecDeque<(Conn, Instant)>>,
    max: usize,
    timeout: Duration,
}

impl Kept {
    pub fn new(max: usize, timeout: Duration) -> Arc<Self> {
        Arc::new(Self { idle: Mutex::default(), max, timeout })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Conn, Instant)>> {
        // Nothing panics while holding it; the list is whole regardless.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The most recently returned idle connection that is still fit.
    pub fn checkout(&self) -> Option<Conn> {
        loop {
            let (conn, since) = self.lock().pop_back()?;
            if since.elapsed() < self.timeout && conn.fit() {
                return Some(conn);
            }
        }
    }

    fn put(&self, conn: Conn) {
        if self.max == 0 {
            return;
        }
        let mut idle = self.lock();
        // The oldest goes: it is the likeliest to have been closed. It is
        // closed once the lock is let go.
        let evicted = if idle.len() >= self.max { idle.pop_front() } else { None };
        idle.push_back((conn, Instant::now()));
        drop(idle);
        drop(evicted);
    }

    /// Closes connections idle too long, closed by the upstream, or sent
    /// bytes unasked.
    pub fn expire(&self) {
        // Checked under the lock (no system call unless a socket
        // signalled), so that requests meanwhile still find them; closed
        // once it is let go.
        let mut idle = self.lock();
        let mut gone = Vec::new();
        let mut kept = VecDeque::with_capacity(idle.len());
        for (conn, since) in idle.drain(..) {
            if since.elapsed() < self.timeout && conn.fit() {
                kept.push_back((conn, since));
            } else {
                gone.push(conn);
            }
        }
        *idle = kept;
        drop(idle);
        drop(gone);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Sends `request` (its path and query as the target, `Host` set, no
/// framing fields) on `conn` and reads the answer's head; the answer's body gives the
/// connection back to `kept` when it has been read to its end.
pub async fn exchange(
    mut conn: Conn,
    request: Request<Bytes>,
    kept: &Arc<Kept>,
) -> Result<Response<Body>, Failure> {
    let head = encode(&request);
    let inline = request.body().len() <= INLINE_BODY;
    match conn.io.write(&head).await {
        Ok(0) => {
            return Err(Failure::Unsent(Box::new(request), Error::Write(io::ErrorKind::WriteZero.into())));
        }
        Err(error) => return Err(Failure::Unsent(Box::new(request), Error::Write(error))),
        Ok(written) => {
            let rest = head.get(written..).unwrap_or_default();
            conn.io.write_all(rest).await.map_err(|error| Failure::Failed(Error::Write(error)))?;
        }
    }
    drop(head);
    let method = request.method();
    let (head, whole) = if inline {
        (read_head(&mut conn.io, &mut conn.buf, method).await, true)
    } else {
        // A long body is written while the answer is awaited: an upstream
        // may answer (a 413, a 401) before reading it all, or at all. Its
        // answer is read then, and the connection not kept.
        let (mut reader, mut writer) = conn.io.split();
        let writing = writer.write_all(request.body());
        let reading = read_head(&mut reader, &mut conn.buf, method);
        tokio::pin!(writing, reading);
        tokio::select! {
            biased;
            written = &mut writing => match written {
                Ok(()) => (reading.await, true),
                // No answer: what failed first is what is told.
                Err(error) => (reading.await.map_err(|_| Error::Write(error)), false),
            },
            head = &mut reading => match head {
                // A refusal: the rest of the body is not wanted.
                Ok(head) if head.status.as_u16() >= 400 || !head.keep_alive => (Ok(head), false),
                // An answer begun early (SSE headers sent at once) may
                // still be reading the body: it gets all of it first.
                Ok(head) => {
                    let _ = writing.await;
                    (Ok(head), false)
                }
                Err(error) => (Err(error), false),
            },
        }
    };
    let head = head.map_err(Failure::Failed)?;
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    let progress = match head.framing {
        Framing::Empty | Framing::Length(0) => Progress::Ended,
        Framing::Length(length) => Progress::Length(length),
        Framing::Chunked => Progress::Chunked(Chunked::default()),
        Framing::Close => Progress::Close,
    };
    let reuse = (head.keep_alive && whole).then(|| kept.clone());
    let mut body = Body { conn: Some(conn), progress, reuse, read_size: READ_SIZE };
    if matches!(body.progress, Progress::Ended) {
        body.finish();
    }
    Ok(response.map(|()| body))
}

/// Reads the final answer's head, skipping interim ones; each byte is
/// looked at a bounded number of times, however the head arrives.
async fn read_head<R>(io: &mut R, buf: &mut BytesMut, method: &http::Method) -> Result<framing::Head, Error>
where
    R: tokio::io::AsyncRead + Unpin,
{
    // `taken`: bytes of interim heads and empty lines, counted against the
    // bound. `searched`: how far the buffer has been searched for a blank
    // line. `looked`: whether httparse has seen the start of this head
    // (once, so that a malformed start fails at once).
    let (mut interim, mut taken, mut searched, mut looked) = (0, 0usize, 0usize, false);
    loop {
        // Empty lines before a head are skipped, as httparse would,
        // without searching them again on every read.
        let skipped = framing::leading_empty_lines(buf);
        taken += skipped;
        searched = searched.saturating_sub(skipped);
        // httparse reads from the start: it is called once the buffer holds
        // a blank line (and once at the head's start), never once per
        // piece of a head sent in pieces.
        let whole = framing::blank_line(buf, searched).is_some();
        if whole || (!looked && !buf.is_empty()) {
            looked = true;
            match framing::parse_head(buf, method, framing::MAX_HEAD.saturating_sub(taken))? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Interim(length) => {
                    interim += 1;
                    taken += length;
                    (searched, looked) = (0, false);
                    if interim > framing::MAX_INTERIM {
                        return Err(FramingError::TooManyInterim.into());
                    }
                    continue;
                }
                Parsed::Partial => {}
            }
        }
        searched = buf.len();
        if taken + buf.len() >= framing::MAX_HEAD {
            return Err(FramingError::HeadTooLarge.into());
        }
        buf.reserve(READ_SIZE);
        match io.read_buf(buf).await {
            Ok(0) => return Err(Error::ClosedBeforeHead),
            Ok(_) => {}
            Err(error) => return Err(Error::Read(error)),
        }
    }
}

/// The request's head, and its body too when short.
fn encode(request: &Request<Bytes>) -> Vec<u8> {
    let target = request.uri().path_and_query().map_or("/", |target| target.as_str());
    let method = request.method().as_str();
    let body = request.body();
    let inline = if body.len() <= INLINE_BODY { body.len() } else { 0 };
    let fields: usize =
        request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    let mut head = Vec::with_capacity(method.len() + target.len() + fields + inline + 64);
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in request.headers() {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    // As hyper's client: a length only for a body there is.
    if !body.is_empty() {
        head.extend_from_slice(b"content-length: ");
        head.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head.extend_from_slice(&body[..inline]);
    head
}

/// Where an answer's body is.
#[derive(Debug)]
enum Progress {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunked),
    /// Until the connection closes.
    Close,
    Ended,
}

/// An answer's body, read from its connection as it is polled; the
/// connection goes back to the idle list the moment the body's end is
/// read, and closes if the body is dropped before.
#[derive(Debug)]
pub struct Body {
    conn: Option<Conn>,
    progress: Progress,
    /// Where the connection goes when the body has ended, if it may be
    /// used again.
    reuse: Option<Arc<Kept>>,
    read_size: usize,
}

impl Body {
    /// The body cannot be read further: its connection is closed.
    fn abandon(&mut self) {
        self.conn = None;
        self.progress = Progress::Ended;
    }

    /// The body has ended: its connection is returned if it may be used
    /// again and holds nothing unread.
    fn finish(&mut self) {
        self.progress = Progress::Ended;
        if let (Some(mut conn), Some(kept)) = (self.conn.take(), self.reuse.take())
            && conn.buf.is_empty()
        {
            conn.buf = BytesMut::new();
            kept.put(conn);
        }
    }

    /// Takes what the buffer holds of the body: data, the end, or nothing.
    fn take(&mut self) -> Result<Option<Frame<Bytes>>, Error> {
        let Some(conn) = self.conn.as_mut() else { return Ok(None) };
        match &mut self.progress {
            Progress::Ended => Ok(None),
            Progress::Length(_) | Progress::Close if conn.buf.is_empty() => Ok(None),
            Progress::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(conn.buf.len());
                let data = conn.buf.split_to(take).freeze();
                *left -= take as u64;
                if *left == 0 {
                    self.finish();
                }
                Ok(Some(Frame::data(data)))
            }
            Progress::Close => Ok(Some(Frame::data(conn.buf.split().freeze()))),
            Progress::Chunked(decoder) => match decoder.decode(&mut conn.buf)? {
                Step::Data(data) => Ok(Some(Frame::data(data))),
                Step::More => Ok(None),
                Step::Done => {
                    self.finish();
                    Ok(None)
                }
            },
        }
    }

    /// How much room to make for the next read: more while reads fill
    /// what they are given, no more than a known length needs (a read may
    /// still fill room the buffer had; bytes past the length close the
    /// connection).
    fn want(&self) -> usize {
        match self.progress {
            Progress::Length(left) => usize::try_from(left).unwrap_or(usize::MAX).min(self.read_size),
            _ => self.read_size,
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            match self.take() {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) if matches!(self.progress, Progress::Ended) => return Poll::Ready(None),
                Ok(None) => {}
                Err(error) => {
                    self.abandon();
                    return Poll::Ready(Some(Err(error)));
                }
            }
            let want = self.want();
            let Some(conn) = self.conn.as_mut() else { return Poll::Ready(None) };
            // A buffer is made only once the socket says bytes are there.
            let polled = match conn.io.poll_read_ready(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(_) => std::pin::pin!(conn.read_more(want)).poll(cx),
            };
            let Poll::Ready(read) = polled else {
                // Waiting holds no buffer (a stream may wait for hours).
                if conn.buf.is_empty() {
                    conn.buf = BytesMut::new();
                }
                return Poll::Pending;
            };
            match read {
                Ok(0) => {
                    // The close ends only a body framed by it.
                    let closed = !matches!(self.progress, Progress::Close);
                    self.abandon();
                    return Poll::Ready(closed.then_some(Err(Error::ClosedBeforeEnd)));
                }
                Ok(read) if read >= want => self.read_size = (self.read_size * 2).min(READ_MAX),
                Ok(_) => {}
                Err(error) => {
                    self.abandon();
                    return Poll::Ready(Some(Err(Error::Read(error))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.progress, Progress::Ended)
    }

    fn size_hint(&self) -> SizeHint {
        match self.progress {
            Progress::Ended => SizeHint::with_exact(0),
            Progress::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
