//! Response-side enforcement: list results are filtered wherever they can
//! appear — a JSON answer, an event of a POST's SSE answer, an event of a
//! GET stream (where a resumed stream replays answers) — and judged under
//! the same policy snapshot as the request that asked for them.
//!
//! Everything else passes as the original bytes: a JSON body untouched, an
//! SSE event forwarded the moment its blank line arrives. Fail closed: a
//! list result that cannot be read, or is larger than
//! `transport.max_list_result`, is replaced by a JSON-RPC error (for the
//! list requests this answer was for) and the stream ends; it is never
//! forwarded unfiltered.

use super::ProxyBody;
use super::forward::UpstreamBody;
use crate::mcp::list_filter::{self, Outcome, Removed};
use crate::mcp::sse::{self, Splitter};
use crate::policy::{ListKind, Policy, Principal};
use crate::telemetry::{self, Metrics};
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Everything needed to judge an answer after the request has gone: the
/// request's snapshot, virtual server and principal.
pub struct Judge {
    pub policy: Arc<Policy>,
    pub server: String,
    pub principal: Principal,
    pub metrics: Arc<Metrics>,
    /// Ids of the list requests this answer is for, to address a refusal.
    pub list_ids: Vec<Box<RawValue>>,
}

enum Verdict {
    Forward(Bytes),
    Refuse(String),
}

impl Judge {
    fn limit(&self) -> usize {
        self.policy.transport.max_list_result
    }

    /// Filters one JSON text (a message or a batch of them).
    fn judge(&self, text: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if !list_filter::may_hold_list(text) {
            return Ok(None);
        }
        let Some(server) = self.policy.virtual_server(&self.server) else {
            return Err("the virtual server is gone from the policy".into());
        };
        let view = server.view(&self.principal);
        let mut removed: Vec<Removed> = Vec::new();
        let mut kept = [0u64; 4];
        let outcome = list_filter::filter(
            text,
            &mut |kind, name| {
                let allowed = view.decide(kind, name).is_allowed();
                if allowed {
                    kept[kind as usize] += 1;
                }
                allowed
            },
            &mut removed,
        )
        .map_err(|e| e.to_string())?;
        for kind in ListKind::ALL {
            let denied = removed.iter().filter(|r| r.kind == kind).count() as u64;
            self.metrics.list_decisions(&self.server, kind, kept[kind as usize], denied);
        }
        if !removed.is_empty() {
            telemetry::audit_list_filtered(&self.server, &self.principal, &removed);
        }
        Ok(match outcome {
            Outcome::Unchanged => None,
            Outcome::Rewritten(bytes) => Some(bytes),
        })
    }

    fn event(&self, event: sse::Event) -> Verdict {
        if !event.has_data {
            return Verdict::Forward(event.raw);
        }
        match self.judge(&event.data) {
            Ok(None) => Verdict::Forward(event.raw),
            Ok(Some(data)) => Verdict::Forward(event.with_data(&data)),
            Err(reason) => Verdict::Refuse(reason),
        }
    }

    /// The JSON-RPC errors that stand in for a list result toolgate would
    /// not forward.
    fn refusals(&self, reason: &str) -> Vec<Value> {
        tracing::warn!(server = %self.server, %reason, "list result refused (fail closed)");
        self.metrics.list_refused();
        let error = json!({
            "code": -32603,
            "message": "The upstream's list result could not be checked against the policy and was withheld",
        });
        self.list_ids
            .iter()
            .map(|id| {
                let id = serde_json::from_str::<Value>(id.get()).unwrap_or(Value::Null);
                json!({ "jsonrpc": "2.0", "id": id, "error": error })
            })
            .collect()
    }
}

enum Media {
    Json,
    EventStream,
    Other,
}

fn media(headers: &HeaderMap) -> Media {
    let value = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Media::Json
    } else if essence.eq_ignore_ascii_case("text/event-stream") {
        Media::EventStream
    } else {
        Media::Other
    }
}

/// Applies the judge to an upstream answer.
pub async fn inspect(judge: Judge, response: Response<UpstreamBody>) -> Response<ProxyBody> {
    match media(response.headers()) {
        Media::Other => response.map(|body| body.boxed_unsync()),
        Media::EventStream => response.map(|body| FilteredEvents::new(Arc::new(judge), body).boxed_unsync()),
        Media::Json => {
            let (mut parts, body) = response.into_parts();
            let limit = judge.limit();
            let collected = http_body_util::Limited::new(body, limit).collect().await;
            let verdict = match collected {
                Ok(collected) => {
                    let bytes = collected.to_bytes();
                    match judge.judge(&bytes) {
                        Ok(None) => Ok(bytes),
                        Ok(Some(rewritten)) => Ok(Bytes::from(rewritten)),
                        Err(reason) => Err(reason),
                    }
                }
                Err(_) => Err(format!("the answer exceeds transport.max_list_result ({limit} bytes)")),
            };
            parts.headers.remove(header::CONTENT_LENGTH);
            match verdict {
                Ok(bytes) => Response::from_parts(parts, Full::new(bytes).boxed_unsync()),
                Err(reason) => {
                    let errors = judge.refusals(&reason);
                    let body = match errors.as_slice() {
                        [one] => one.to_string(),
                        [] => json!({ "jsonrpc": "2.0", "id": null, "error": { "code": -32603, "message": "list result withheld" } }).to_string(),
                        many => Value::Array(many.to_vec()).to_string(),
                    };
                    parts.status = StatusCode::BAD_GATEWAY;
                    Response::from_parts(parts, Full::new(Bytes::from(body)).boxed_unsync())
                }
            }
        }
    }
}

/// An SSE answer forwarded event by event, list results filtered.
struct FilteredEvents {
    judge: Arc<Judge>,
    inner: UpstreamBody,
    splitter: Splitter,
    ready: VecDeque<Bytes>,
    ended: bool,
}

impl FilteredEvents {
    fn new(judge: Arc<Judge>, inner: UpstreamBody) -> Self {
        let limit = judge.limit();
        Self { judge, inner, splitter: Splitter::new(limit), ready: VecDeque::new(), ended: false }
    }

    fn refuse(&mut self, reason: &str) {
        for error in self.judge.refusals(reason) {
            self.ready.push_back(sse::message_event(error.to_string().as_bytes()));
        }
        self.ended = true;
    }

    fn take_events(&mut self) {
        loop {
            match self.splitter.next_event() {
                Ok(Some(event)) => match self.judge.event(event) {
                    Verdict::Forward(bytes) => self.ready.push_back(bytes),
                    Verdict::Refuse(reason) => return self.refuse(&reason),
                },
                Ok(None) => return,
                Err(too_large) => return self.refuse(&too_large.to_string()),
            }
        }
    }
}

impl Body for FilteredEvents {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        loop {
            if let Some(bytes) = self.ready.pop_front() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                // An unfinished last event is dropped, as SSE parsers do.
                Poll::Ready(None) => self.ended = true,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        self.splitter.push(&data);
                        self.take_events();
                    }
                }
                Poll::Ready(Some(Err(never))) => match never {},
            }
        }
    }
}
