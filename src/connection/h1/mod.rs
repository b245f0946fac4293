//! toolgate's own HTTP/1.1 server side, for plaintext connections: a
//! request is read, answered and written by the connection's own task,
//! with no buffer held between requests or while an answer waits.
//!
//! - Bytes are read only once the socket says they are there, into a
//!   buffer sized to what arrived; a stream waiting for its next event, or
//!   a connection waiting for its next request, holds none.
//! - Heads and bodies are read strictly ([`request`]); a head that cannot
//!   be read with certainty is answered 400, 431 or 501 and the
//!   connection closes.
//! - While an answer is computed or streamed, the connection keeps
//!   reading (a bounded amount) so that a client that leaves is noticed
//!   at once and its exchange dropped.
//! - An answer's framing is toolgate's own: a known length, else chunked
//!   (close-delimited for HTTP/1.0); the connection is kept only when the
//!   request's body was read to its end and both sides allow it.

pub mod request;
mod scratch;

use crate::connection::ClientBody;
use crate::proxy::ProxyBody;
use crate::proxy::h1::framing;
use crate::proxy::refusal::{Refusal, code};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use request::{Head, HeadError, Reading, RequestBody};
use scratch::read_scratch;
use std::future::{Future, poll_fn};
use std::io::{self, IoSlice, Write as _};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

/// The most read at once.
const READ_SIZE: usize = 8 * 1024;
/// How long a closing connection reads on what its client still sends, so
/// that unread bytes do not turn the close into a reset that could destroy
/// the answer before the client reads it.
const LINGER: Duration = Duration::from_secs(2);

/// Why a connection ended other than cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("a request head was refused: {0}")]
    Head(#[from] HeadError),
    #[error("the connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("an answer's body did not match its length")]
    BodyLength,
}

/// The connection's state the request's body reads through too.
#[derive(Debug)]
pub struct Shared {
    io: TcpStream,
    /// Bytes read and not yet used; without an allocation when empty.
    buf: BytesMut,
    /// Where the current request's body is.
    reading: Reading,
    /// How many requests the connection has read.
    request: u64,
    /// How much of a `100 Continue` owed has been written.
    continue_sent: Option<usize>,
    /// The client has sent all it will (a half-close).
    ended: bool,
}

impl Shared {
    /// Reads up to `want` more bytes into the buffer once the socket has
    /// some; `Ok(0)` at the end of the stream.
    fn poll_read_more(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.io.poll_read_ready(cx))?;
            match read_scratch(&self.io, want, |read| self.buf.extend_from_slice(read)) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                read => return Poll::Ready(read),
            }
        }
    }

    /// Reads the next request's head; `None` when the client closed
    /// between requests, or the connection is closing and no whole head
    /// has arrived.
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        closing: &AtomicBool,
        progress: &mut HeadProgress,
    ) -> Poll<Result<Option<Head>, Error>> {
        loop {
            // Empty lines before a head are skipped (RFC 9112 §2.2), and
            // counted against the head's bound.
            let skipped = framing::leading_empty_lines(&mut self.buf);
            progress.skipped += skipped;
            progress.searched = progress.searched.saturating_sub(skipped);
            request::shrink(&mut self.buf);
            if request::worth_parsing(&self.buf, progress.searched, progress.looked) {
                progress.looked = true;
                let allocated = self.buf.capacity();
                if let Some(head) = request::parse(&mut self.buf)? {
                    // What follows the head (its body, a request sent
                    // ahead) shares the head's allocation, which the
                    // request holds anyway, unless that grew past one
                    // read while a long head arrived: then it gets its
                    // own, so as not to hold the large one after the
                    // request.
                    if allocated > READ_SIZE {
                        self.buf = BytesMut::from(&self.buf[..]);
                    }
                    return Poll::Ready(Ok(Some(head)));
                }
            }
            // Bytes past a whole head's end never count against its bound.
            if progress.skipped + self.buf.len() > request::MAX_HEAD {
                return Poll::Ready(Err(HeadError::TooLarge.into()));
            }
            progress.searched = self.buf.len();
            if closing.load(Ordering::Relaxed) {
                return Poll::Ready(Ok(None));
            }
            if ready!(self.poll_read_more(cx, READ_SIZE))? == 0 {
                return Poll::Ready(Ok(None));
            }
        }
    }

    /// Whether the client has left (closed, or the connection failed).
    /// While the request's body is being read, its reader watches instead;
    /// a body no one will read is read on only to see the end. Once the
    /// client has sent the start of its next request, it waits for its
    /// turn unwatched (so a client that sends it and half-closes is still
    /// answered), holding at most one read.
    fn poll_departed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.reading {
            Reading::Failed => {
                self.buf = BytesMut::new();
                loop {
                    if ready!(self.io.poll_read_ready(cx)).is_err() {
                        return Poll::Ready(());
                    }
                    match read_scratch(&self.io, READ_SIZE, |_| {}) {
                        Ok(0) => return Poll::Ready(()),
                        Ok(_) => {}
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => return Poll::Ready(()),
                    }
                }
            }
            Reading::Done => loop {
                // Empty lines before the next head are dropped first: they
                // are no request waiting its turn.
                framing::leading_empty_lines(&mut self.buf);
                request::shrink(&mut self.buf);
                if self.ended || self.buf.len() >= request::MAX_HEAD {
                    return Poll::Pending;
                }
                match ready!(self.poll_read_more(cx, READ_SIZE)) {
                    Ok(0) if !self.buf.is_empty() => {
                        // A half-close after a request sent ahead: both
                        // are answered.
                        self.ended = true;
                        return Poll::Pending;
                    }
                    Ok(0) | Err(_) => {
                        self.reading = Reading::Failed;
                        return Poll::Ready(());
                    }
                    Ok(_) => {}
                }
            },
            _ => Poll::Pending,
        }
    }

    /// Writes all of `slices`.
    fn poll_write_all(
        &mut self,
        cx: &mut Context<'_>,
        slices: &mut &mut [IoSlice<'_>],
    ) -> Poll<io::Result<()>> {
        while slices.iter().any(|slice| !slice.is_empty()) {
            let written = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, slices))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            IoSlice::advance_slices(slices, written);
        }
        Poll::Ready(Ok(()))
    }
}

/// How far a head arriving in pieces has been looked at.
#[derive(Debug, Default)]
struct HeadProgress {
    /// Empty lines taken off before it.
    skipped: usize,
    /// How far the buffer has been searched for its end.
    searched: usize,
    /// Whether httparse has seen its start.
    looked: bool,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serves a plaintext HTTP/1.1 connection whose first bytes, `start`,
/// were read already, until it ends or `closing` is set and it is between
/// requests. `handle` answers each request; a write the client has not
/// taken for `stall` ends the connection.
pub async fn serve<H, Fut>(
    io: TcpStream,
    start: &[u8],
    handle: H,
    closing: &AtomicBool,
    stall: Duration,
) -> Result<(), Error>
where
    H: Fn(Request<ClientBody>) -> Fut,
    Fut: Future<Output = Response<ProxyBody>>,
{
    let shared = Arc::new(Mutex::new(Shared {
        io,
        buf: BytesMut::from(start),
        reading: Reading::Done,
        request: 0,
        continue_sent: None,
        ended: false,
    }));
    loop {
        let mut progress = HeadProgress::default();
        let head = match poll_fn(|cx| lock(&shared).poll_head(cx, closing, &mut progress)).await {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(()),
            Err(Error::Head(error)) => {
                // Answered as the pipeline answers what it refuses.
                let refusal =
                    Refusal::new(error.status(), code::INVALID_REQUEST, "malformed_head", error.to_string());
                let (parts, body) = refusal.into_response().into_parts();
                let outgoing = outgoing(&Method::GET, Version::HTTP_11, parts.status, &body);
                let head = encode_head(parts.status, &parts.headers, Version::HTTP_11, outgoing, false, None);
                let _ = write_answer(&shared, head, body, outgoing, stall).await;
                lock(&shared).reading = Reading::Failed;
                close(&shared).await;
                return Err(error.into());
            }
            Err(error) => return Err(error),
        };
        let Head { request, reading, keep_alive, expects_continue } = head;
        let (method, version) = (request.method().clone(), request.version());
        let body = {
            let mut state = lock(&shared);
            state.request += 1;
            state.continue_sent = (expects_continue && !matches!(reading, Reading::Done)).then_some(0);
            let body = RequestBody::new(shared.clone(), state.request, &reading);
            state.reading = reading;
            body
        };
        let mut answer = pin!(handle(request.map(|()| ClientBody::Own(body))));
        let answered = poll_fn(|cx| {
            if let Poll::Ready(response) = answer.as_mut().poll(cx) {
                return Poll::Ready(Some(response));
            }
            lock(&shared).poll_departed(cx).map(|()| None)
        })
        .await;
        let Some(mut response) = answered else { return Ok(()) };
        if response.status().is_informational() {
            // Not a final answer: it cannot be carried (an upstream's 101).
            response = Response::new(ProxyBody::default());
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        }
        let (parts, body) = response.into_parts();
        let outgoing = outgoing(&method, version, parts.status, &body);
        // A `100 Continue` begun is finished first; one not begun is not sent.
        let continued = {
            let mut state = lock(&shared);
            if state.continue_sent == Some(0) {
                state.continue_sent = None;
            }
            state.continue_sent.is_none()
        };
        if !continued {
            let finishing = poll_fn(|cx| lock(&shared).poll_continue(cx));
            tokio::time::timeout(stall, finishing)
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        }
        let keep = keep_alive
            && outgoing != Outgoing::Close
            && !framing::has_token(&parts.headers, header::CONNECTION, "close")
            && !closing.load(Ordering::Relaxed)
            && matches!(lock(&shared).reading, Reading::Done);
        let length = (method == Method::HEAD).then(|| body.size_hint().exact()).flatten();
        let head = encode_head(parts.status, &parts.headers, version, outgoing, keep, length);
        drop(parts);
        if !write_answer(&shared, head, body, outgoing, stall).await? || !keep {
            close(&shared).await;
            return Ok(());
        }
    }
}

/// Closes the connection: the client is told nothing more is coming, and
/// what it may still send is read and dropped for up to [`LINGER`].
async fn close(shared: &Mutex<Shared>) {
    let _ = poll_fn(|cx| Pin::new(&mut lock(shared).io).poll_shutdown(cx)).await;
    let unread = {
        let mut state = lock(shared);
        // After a request read whole, only bytes already here say the
        // client is still sending; otherwise it may well be.
        let pending = !matches!(state.reading, Reading::Done) || scratch::has_unread(&state.io);
        state.reading = Reading::Failed;
        pending
    };
    if unread {
        let _ = tokio::time::timeout(LINGER, poll_fn(|cx| lock(shared).poll_departed(cx))).await;
    }
}

/// How an answer's body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outgoing {
    /// No body (a `HEAD`'s answer, a 1xx, 204 or 304).
    None,
    Length(u64),
    Chunked,
    /// Ended by closing the connection (HTTP/1.0, length unknown).
    Close,
}

fn outgoing(method: &Method, version: Version, status: StatusCode, body: &ProxyBody) -> Outgoing {
    if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Outgoing::None;
    }
    match body.size_hint().exact() {
        Some(length) => Outgoing::Length(length),
        None if version == Version::HTTP_11 => Outgoing::Chunked,
        None => Outgoing::Close,
    }
}

/// An answer's head: the status line, the handler's fields but those that
/// frame the body or the connection, then toolgate's own.
fn encode_head(
    status: StatusCode,
    headers: &HeaderMap,
    version: Version,
    outgoing: Outgoing,
    keep: bool,
    head_length: Option<u64>,
) -> Vec<u8> {
    let fields: usize = headers.iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    let mut head = Vec::with_capacity(fields + 128);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        let framed = name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || (name == header::CONTENT_LENGTH
                && (outgoing != Outgoing::None || status == StatusCode::NO_CONTENT));
        if !framed {
            field(&mut head, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    if !headers.contains_key(header::DATE) {
        field(&mut head, b"date", &date());
    }
    match outgoing {
        Outgoing::Length(length) => {
            field(&mut head, b"content-length", itoa::Buffer::new().format(length).as_bytes());
        }
        Outgoing::Chunked => field(&mut head, b"transfer-encoding", b"chunked"),
        // A `HEAD`'s answer says the length a `GET`'s would have.
        Outgoing::None if !headers.contains_key(header::CONTENT_LENGTH) && status == StatusCode::OK => {
            if let Some(length) = head_length {
                field(&mut head, b"content-length", itoa::Buffer::new().format(length).as_bytes());
            }
        }
        Outgoing::None | Outgoing::Close => {}
    }
    if !keep {
        field(&mut head, b"connection", b"close");
    } else if version == Version::HTTP_10 {
        field(&mut head, b"connection", b"keep-alive");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The time as a `Date` field gives it, formatted once a second per thread.
fn date() -> [u8; 29] {
    thread_local! {
        static FORMATTED: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((u64::MAX, [0; 29])) };
    }
    let now = std::time::SystemTime::now();
    let second = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    FORMATTED.with(|formatted| {
        let (at, text) = formatted.get();
        if at == second {
            return text;
        }
        let mut text = [0u8; 29];
        let _ = write!(&mut text[..], "{}", httpdate::HttpDate::from(now));
        formatted.set((second, text));
        text
    })
}

fn field(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// What the answer's writer does next.
enum Next {
    Frame(Option<Result<http_body::Frame<Bytes>, std::convert::Infallible>>),
    /// The body has nothing yet: the head goes out alone.
    HeadNow,
    Departed,
}

/// Writes an answer: its head with the first of its body when that is
/// ready at once, then the rest as it comes, watching for the client's
/// departure meanwhile. Whether it was written whole, so that the
/// connection may carry another request.
async fn write_answer(
    shared: &Mutex<Shared>,
    head: Vec<u8>,
    mut body: ProxyBody,
    outgoing: Outgoing,
    stall: Duration,
) -> Result<bool, Error> {
    if outgoing == Outgoing::None {
        drop(body);
        write_all(shared, &mut [IoSlice::new(&head)], stall).await?;
        return Ok(true);
    }
    let mut head = Some(head);
    let mut left = match outgoing {
        Outgoing::Length(length) => length,
        _ => 0,
    };
    // A frame polled early, to learn whether the one before it was the last.
    let mut ahead: Option<Next> = None;
    loop {
        let next = if let Some(next) = ahead.take() {
            next
        } else {
            poll_fn(|cx| {
                if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                    return Poll::Ready(Next::Frame(frame));
                }
                if head.is_some() {
                    // An event stream's next bytes may be long in coming.
                    return Poll::Ready(Next::HeadNow);
                }
                lock(shared).poll_departed(cx).map(|()| Next::Departed)
            })
            .await
        };
        let length = matches!(outgoing, Outgoing::Length(_));
        let (data, ended) = match next {
            Next::Departed => return Ok(false),
            Next::HeadNow => (Bytes::new(), false),
            Next::Frame(None) => (Bytes::new(), true),
            Next::Frame(Some(Err(never))) => match never {},
            Next::Frame(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if length || body.is_end_stream() => (data, body.is_end_stream()),
                Ok(data) => {
                    // A body that does not know it has ended (a stream
                    // whose source just ended) is polled once more, so
                    // that its last bytes and the chunked terminator go
                    // out in one write rather than two.
                    let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await;
                    match polled {
                        Poll::Ready(None) => (data, true),
                        Poll::Ready(frame) => {
                            ahead = Some(Next::Frame(frame));
                            (data, false)
                        }
                        Poll::Pending => (data, false),
                    }
                }
                // Trailers are not carried.
                Err(_) => continue,
            },
        };
        if length {
            left = left.checked_sub(data.len() as u64).ok_or(Error::BodyLength)?;
        }
        let ended = ended || (length && left == 0);
        if ended && left != 0 {
            return Err(Error::BodyLength);
        }
        let chunked = outgoing == Outgoing::Chunked;
        let mut size = [0u8; 20];
        let size_line = if chunked && !data.is_empty() {
            let mut cursor = &mut size[..];
            let _ = write!(cursor, "{:x}\r\n", data.len());
            let written = 20 - cursor.len();
            &size[..written]
        } else {
            &[]
        };
        let after: &[u8] = match (chunked, !data.is_empty(), ended) {
            (true, true, true) => b"\r\n0\r\n\r\n",
            (true, true, false) => b"\r\n",
            (true, false, true) => b"0\r\n\r\n",
            _ => b"",
        };
        let head = head.take().unwrap_or_default();
        let mut slices =
            [IoSlice::new(&head), IoSlice::new(size_line), IoSlice::new(&data), IoSlice::new(after)];
        write_all(shared, &mut slices, stall).await?;
        if ended {
            return Ok(outgoing != Outgoing::Close);
        }
    }
}

/// Writes all of `slices`, failing once the client has taken nothing for
/// `stall` (a timer is set only when a write has to wait).
async fn write_all(shared: &Mutex<Shared>, slices: &mut [IoSlice<'_>], stall: Duration) -> io::Result<()> {
    let mut rest = slices;
    // The bytes left when the timer was last set, and the timer.
    let mut waiting: Option<(usize, Pin<Box<tokio::time::Sleep>>)> = None;
    poll_fn(|cx| {
        if let Poll::Ready(written) = lock(shared).poll_write_all(cx, &mut rest) {
            return Poll::Ready(written);
        }
        let left: usize = rest.iter().map(|slice| slice.len()).sum();
        let timer = match &mut waiting {
            None => &mut waiting.insert((left, Box::pin(tokio::time::sleep(stall)))).1,
            Some((before, timer)) => {
                if *before != left {
                    *before = left;
                    timer.as_mut().reset(tokio::time::Instant::now() + stall);
                }
                timer
            }
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::ErrorKind::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests;
