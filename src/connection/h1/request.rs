//! A client's HTTP/1.1 request as toolgate reads it: the head (RFC 9112
//! §2–5) and where the body ends (§6.3), strictly — a request two readers
//! could frame differently is refused, never guessed at — and the body,
//! read from the connection as the pipeline asks for it.

use super::Shared;
use crate::proxy::h1::framing::{self, BadField, Chunked, Framing, FramingError, Step};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, StatusCode, Uri, Version};
use http_body::{Frame, SizeHint};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use tokio::io::AsyncWrite;

/// The most a request's head may take (empty lines before it included).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most fields a request's head may have.
pub const MAX_FIELDS: usize = framing::MAX_FIELDS;

/// Why a request's head is refused; each maps to the status it is
/// answered with before the connection closes.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("the request head is longer than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("the request head has more than {MAX_FIELDS} fields")]
    TooManyFields,
    #[error("the request head is malformed: {0}")]
    Malformed(&'static str),
    #[error("a Transfer-Encoding other than chunked alone")]
    Coding,
}

impl HeadError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge | Self::TooManyFields => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Malformed(_) => StatusCode::BAD_REQUEST,
            Self::Coding => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

/// Where a request's body ends.
#[derive(Debug)]
pub enum Reading {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunked),
    /// Read to its end: what follows is the next request.
    Done,
    /// Unreadable (malformed, or the client left): the connection ends
    /// after this answer.
    Failed,
}

/// A parsed head: the request without its body, and how to read the body.
#[derive(Debug)]
pub struct Head {
    pub request: Request<()>,
    pub reading: Reading,
    /// Whether the client lets the connection carry another request.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expects_continue: bool,
}

/// Whether `buf` may hold a whole head: a blank line after `searched`
/// bytes, or a start never looked at (so that a malformed start is
/// refused at once). Each byte of a head sent in pieces is searched once.
pub fn worth_parsing(buf: &[u8], searched: usize, looked: bool) -> bool {
    framing::blank_line(buf, searched).is_some() || (!looked && !buf.is_empty())
}

/// Parses the head at the front of `buf` (after empty lines, which the
/// caller takes off), taking it off the buffer when whole.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Head>, HeadError> {
    // Left uninitialised: httparse writes the fields it finds (3 KiB a
    // head otherwise zeroed for nothing).
    let mut slots = [const { MaybeUninit::uninit() }; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut []);
    let length = match parsed.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyFields),
        Err(httparse::Error::Version) => return Err(HeadError::Malformed("an HTTP version other than 1.x")),
        Err(_) => return Err(HeadError::Malformed("not an HTTP/1.1 request head")),
    };
    if length > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("an invalid method"))?;
    let version = if parsed.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };
    // The target and the values are kept as slices of the head's bytes.
    let bad = |bad| match bad {
        BadField::Name => HeadError::Malformed("an invalid field name"),
        BadField::Value => HeadError::Malformed("an invalid field value"),
        BadField::Outside => HeadError::Malformed("a field outside the head"),
    };
    let target = framing::range_in(buf, length, parsed.path.unwrap_or_default().as_bytes()).map_err(bad)?;
    let fields = framing::owned_fields(buf, length, parsed.headers).map_err(bad)?;
    let bytes = buf.split_to(length).freeze();
    let uri = Uri::from_maybe_shared(bytes.slice(target))
        .map_err(|_| HeadError::Malformed("an invalid request target"))?;
    let headers = framing::header_map(&bytes, fields).map_err(bad)?;
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && version == Version::HTTP_11) {
        return Err(HeadError::Malformed("an HTTP/1.1 request needs exactly one Host"));
    }
    let reading = reading(version, &headers)?;
    let keep_alive = match version {
        Version::HTTP_10 => framing::has_token(&headers, header::CONNECTION, "keep-alive"),
        _ => !framing::has_token(&headers, header::CONNECTION, "close"),
    };
    let expects_continue = version == Version::HTTP_11
        && headers
            .get(header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head { request, reading, keep_alive, expects_continue }))
}

/// RFC 9112 §6.3 for requests, read as answers are ([`framing::declared`]):
/// a coding other than `chunked` alone is 501, any other ambiguity 400;
/// neither field means no body.
fn reading(version: Version, headers: &HeaderMap) -> Result<Reading, HeadError> {
    match framing::declared(version, headers) {
        Ok(Some(Framing::Chunked)) => Ok(Reading::Chunked(Chunked::default())),
        Ok(Some(Framing::Length(length))) if length > 0 => Ok(Reading::Length(length)),
        Ok(_) => Ok(Reading::Done),
        Err(FramingError::Coding) => Err(HeadError::Coding),
        Err(FramingError::CodedHttp10) => {
            Err(HeadError::Malformed("an HTTP/1.0 request with a Transfer-Encoding"))
        }
        Err(FramingError::CodedAndLength) => {
            Err(HeadError::Malformed("both Transfer-Encoding and Content-Length"))
        }
        Err(_) => Err(HeadError::Malformed("an invalid or conflicting Content-Length")),
    }
}

/// Why a request's body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the client closed the connection before the body's end")]
    Closed,
    #[error("the body is not framed as its head says: {0}")]
    Framing(#[from] FramingError),
    #[error("reading the body failed: {0}")]
    Read(#[from] io::Error),
    #[error("the body belongs to a request already answered")]
    Stale,
}

/// A request's body, read from the connection as it is polled (after a
/// `100 Continue` when the client asked for one).
#[derive(Debug)]
pub struct RequestBody {
    shared: Arc<Mutex<Shared>>,
    /// Which of the connection's requests this body belongs to.
    request: u64,
    /// What is still to come, known at the head (exact for a length).
    hint: SizeHint,
    ended: bool,
}

impl RequestBody {
    pub(super) fn new(shared: Arc<Mutex<Shared>>, request: u64, reading: &Reading) -> Self {
        let (hint, ended) = match reading {
            Reading::Length(length) => (SizeHint::with_exact(*length), false),
            Reading::Chunked(_) => (SizeHint::default(), false),
            Reading::Done | Reading::Failed => (SizeHint::with_exact(0), true),
        };
        Self { shared, request, hint, ended }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if shared.request == self.request {
            shared.abandon_body();
        }
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let polled = {
            let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            if shared.request != self.request {
                Poll::Ready(Some(Err(BodyError::Stale)))
            } else {
                shared.poll_body(cx)
            }
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let read = frame.data_ref().map_or(0, |data| data.len() as u64);
                let left = self.hint.lower().saturating_sub(read);
                if self.hint.exact().is_some() {
                    self.hint = SizeHint::with_exact(left);
                }
            }
            Poll::Ready(_) => {
                self.ended = true;
                self.hint = SizeHint::with_exact(0);
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

impl Shared {
    /// Reads the current request's body on: its next data, its end, or
    /// an error (after which the connection is not used again).
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        // The body is read once the client has been told to send it.
        if let Err(error) = ready!(self.poll_continue(cx)) {
            self.reading = Reading::Failed;
            return Poll::Ready(Some(Err(error.into())));
        }
        loop {
            let taken = self.take();
            shrink(&mut self.buf);
            match taken {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) if matches!(self.reading, Reading::Done) => return Poll::Ready(None),
                Ok(None) => {}
                Err(error) => {
                    self.reading = Reading::Failed;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
            if matches!(self.reading, Reading::Failed) {
                return Poll::Ready(Some(Err(BodyError::Closed)));
            }
            let want = match self.reading {
                Reading::Length(left) => usize::try_from(left).unwrap_or(usize::MAX).min(super::READ_SIZE),
                _ => super::READ_SIZE,
            };
            match self.poll_read_more(cx, want) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.reading = Reading::Failed;
                    return Poll::Ready(Some(Err(BodyError::Closed)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => {
                    self.reading = Reading::Failed;
                    return Poll::Ready(Some(Err(error.into())));
                }
            }
        }
    }

    /// Takes what the buffer holds of the body.
    fn take(&mut self) -> Result<Option<Bytes>, FramingError> {
        match &mut self.reading {
            Reading::Done | Reading::Failed => Ok(None),
            Reading::Length(_) if self.buf.is_empty() => Ok(None),
            Reading::Length(left) => {
                let take = usize::try_from(*left).unwrap_or(usize::MAX).min(self.buf.len());
                *left -= take as u64;
                if *left == 0 {
                    self.reading = Reading::Done;
                }
                Ok(Some(self.buf.split_to(take).freeze()))
            }
            Reading::Chunked(decoder) => match decoder.decode(&mut self.buf)? {
                Step::Data(data) => Ok(Some(data)),
                Step::More => Ok(None),
                Step::Done => {
                    self.reading = Reading::Done;
                    Ok(None)
                }
            },
        }
    }

    /// What the buffer holds of a body no one will read is dropped: the
    /// connection may carry another request if that was all of it, and is
    /// closed after this answer otherwise.
    pub(super) fn abandon_body(&mut self) {
        loop {
            match self.take() {
                Ok(Some(_)) => {}
                Ok(None) if matches!(self.reading, Reading::Done | Reading::Failed) => break,
                Ok(None) | Err(_) => {
                    self.reading = Reading::Failed;
                    break;
                }
            }
        }
        shrink(&mut self.buf);
    }

    /// Sends the `100 Continue` the client waits for, once, before the
    /// body is first read.
    pub(super) fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        while let Some(sent) = self.continue_sent {
            if sent == CONTINUE.len() {
                self.continue_sent = None;
                break;
            }
            let written = std::task::ready!(Pin::new(&mut self.io).poll_write(cx, &CONTINUE[sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.continue_sent = Some(sent + written);
        }
        Poll::Ready(Ok(()))
    }
}

/// An empty buffer lets go of its allocation (which a slice taken from
/// it may share): a connection that waits holds none.
pub fn shrink(buf: &mut BytesMut) {
    if buf.is_empty() {
        *buf = BytesMut::new();
    }
}
