//! An upstream answer's body, as the pool hands it out: from toolgate's
//! own HTTP/1.1 client (plain TCP), or from hyper's (TLS). Either gives its
//! connection back once the body has been read to its end, and closes it
//! if the body is dropped before.

use super::h1;
use super::pool::Lease;
use bytes::Bytes;
use http_body::Body as _;
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Why an answer's body could not be read to its end.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// An answer's body, giving its connection back to the pool once it has
/// been read to its end.
pub enum PooledBody {
    /// From toolgate's own client, which gives the connection back itself.
    Own(h1::Body),
    /// From hyper's client (over TLS).
    Hyper(HyperBody),
}

impl PooledBody {
    pub(super) fn hyper(inner: Incoming, lease: Lease) -> Self {
        let mut body = HyperBody { inner, lease: Some(lease) };
        // No body at all (a 202, a 204): the connection is free now.
        body.release_if_ended();
        Self::Hyper(body)
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            PooledBody::Own(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            PooledBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PooledBody::Own(body) => body.is_end_stream(),
            PooledBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            PooledBody::Own(body) => body.size_hint(),
            PooledBody::Hyper(body) => body.size_hint(),
        }
    }
}

/// An answer's body from hyper's client, giving its connection back to the
/// pool once it has
/// been read to the end — when it says it has ended, since hyper stops
/// polling a body whose length it knows to be reached, or after trailers.
pub struct HyperBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl HyperBody {
    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release();
        }
    }

    fn release_if_ended(&mut self) {
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

impl http_body::Body for HyperBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        use std::task::Poll;
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            // Trailers are the last frame.
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => self.release(),
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

impl Drop for HyperBody {
    fn drop(&mut self) {
        // An answer with nothing (more) to read, that was never polled to
        // its end; anything else left unread closes the connection.
        self.release_if_ended();
    }
}
