//! One exchange, from the request to the last byte of its answer, and the
//! access-log line written when it ends — not at the response head, when a
//! filtered list may still be withheld and an SSE stream has barely begun.
//! The line says how many bytes the client was sent and how the exchange
//! ended:
//!
//! | `outcome` | meaning |
//! |---|---|
//! | `complete` | the whole answer was sent |
//! | `client_gone` | the client went away before the end |
//! | `upstream_gone` | the upstream's answer broke off; the client's ended cleanly |
//! | `withheld` | toolgate withheld the rest of an SSE answer it could not read with certainty |

use super::ProxyBody;
use crate::telemetry::access_log;
use bytes::Bytes;
use http::{Method, Response};
use http_body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

/// How an exchange ended, as told by the body that saw it end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum End {
    Complete = 1,
    ClientGone = 2,
    UpstreamGone = 3,
    Withheld = 4,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::ClientGone => "client_gone",
            End::UpstreamGone => "upstream_gone",
            End::Withheld => "withheld",
        }
    }
}

/// Shared by the bodies of one answer: the first to see an abnormal end
/// notes it here.
#[derive(Debug, Clone, Default)]
pub struct Ending(Arc<AtomicU8>);

impl Ending {
    pub fn note(&self, end: End) {
        let _ = self.0.compare_exchange(0, end as u8, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn get(&self) -> Option<End> {
        match self.0.load(Ordering::Relaxed) {
            1 => Some(End::Complete),
            2 => Some(End::ClientGone),
            3 => Some(End::UpstreamGone),
            4 => Some(End::Withheld),
            _ => None,
        }
    }
}

/// What the access log says of one exchange.
#[derive(Debug)]
pub struct Exchange {
    pub started: Instant,
    pub peer: SocketAddr,
    pub method: Method,
    pub path: String,
    pub rpc_method: &'static str,
    pub refusal: Option<&'static str>,
    pub ending: Ending,
}

impl Exchange {
    pub fn new(peer: SocketAddr, method: Method, path: String) -> Self {
        Self {
            started: Instant::now(),
            peer,
            method,
            path,
            rpc_method: "",
            refusal: None,
            ending: Ending::default(),
        }
    }

    /// The answer, with the access-log line to be written when it ends.
    pub fn attach(self, response: Response<ProxyBody>) -> Response<ProxyBody> {
        let status = response.status().as_u16();
        response.map(|inner| {
            http_body_util::BodyExt::boxed_unsync(Logged { inner, exchange: Some((self, status)), sent: 0 })
        })
    }
}

fn log(exchange: &Exchange, status: u16, sent: u64, end: End) {
    access_log::write(&access_log::Entry {
        peer: exchange.peer,
        method: exchange.method.as_str(),
        path: &exchange.path,
        rpc: exchange.rpc_method,
        status,
        refusal: exchange.refusal.unwrap_or(""),
        bytes: sent,
        outcome: end.as_str(),
        duration: exchange.started.elapsed(),
    });
}

/// The answer's body, counting what is sent and logging at its end.
struct Logged {
    inner: ProxyBody,
    exchange: Option<(Exchange, u16)>,
    sent: u64,
}

impl Logged {
    fn finish(&mut self, end: End) {
        if let Some((exchange, status)) = self.exchange.take() {
            let end = exchange.ending.get().unwrap_or(end);
            log(&exchange, status, self.sent, end);
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.finish(End::Complete),
            _ => {}
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

impl Drop for Logged {
    fn drop(&mut self) {
        // A body hyper never polled to its end: an empty body it did not
        // need to poll, or a client that went away.
        let end = if self.inner.is_end_stream() { End::Complete } else { End::ClientGone };
        self.finish(end);
    }
}
