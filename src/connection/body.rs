//! A request's body as the pipeline reads it, whichever server side read
//! the request.

use super::h1;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};

/// A request's body as the pipeline reads it.
#[derive(Debug)]
pub enum ClientBody {
    /// From toolgate's own HTTP/1.1 server side.
    Own(h1::request::RequestBody),
    /// From hyper's (HTTP/2, TLS).
    Hyper(Incoming),
}

/// Why a request's body could not be read.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Own(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Own(body) => body.is_end_stream(),
            Self::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Own(body) => body.size_hint(),
            Self::Hyper(body) => body.size_hint(),
        }
    }
}
