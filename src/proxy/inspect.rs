//! Response-side enforcement. Every 2xx answer to a POST or a GET is
//! inspected — not only answers to list requests, since a list result can
//! ride on any answer (a hostile upstream can answer `ping` with one, and a
//! resumed GET stream replays answers) — and list results are filtered
//! under the same policy snapshot as the request that asked for them.
//!
//! An answer is inspected as the client will read it, so it must be one
//! that every client reads the same way: exactly one `Content-Type`, whose
//! essence is exactly `application/json` or `text/event-stream` and whose
//! charset, if any, is UTF-8; no `Content-Encoding` (toolgate asks the
//! upstream for `identity`). Anything else is withheld: an answer that must
//! be inspected and cannot be read with certainty is never forwarded. SSE
//! events that clients could split differently are forwarded re-emitted
//! from toolgate's reading.
//!
//! What needs no change passes as the original bytes: a JSON body
//! untouched, an SSE event the moment its blank line arrives. A list result
//! that cannot be read, or is larger than `transport.max_list_result`, is
//! replaced by a JSON-RPC error for the requests the answer was for, and
//! an SSE stream ends there.

use super::exchange::{End, Ending};
use super::forward::{ReadError, UpstreamBody};
use super::list_memo::{Judged, Key, ListMemo};
use super::{Gateway, PARSE_INLINE, ProxyBody};
use super::{live, offload};
use crate::identity::{self, describe};
use crate::mcp::headers::{self, SingleHeader};
use crate::mcp::list_filter::{self, Outcome};
use crate::mcp::sse::{self, Splitter};
use crate::policy::{ListKind, Policy, Principal};
use crate::telemetry::audit::Removals;
use crate::telemetry::{self, Metrics};
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Everything needed to judge an answer after the request has gone: the
/// request's snapshot, virtual server and principal.
///
/// A GET stream lives on across reloads: its events are judged under the
/// policy running when each arrives (`live`), and the stream ends as soon
/// as that policy no longer has its virtual server or no longer admits its
/// caller. Every other answer is judged under its request's snapshot.
pub struct Judge {
    pub policy: Arc<Policy>,
    pub live: Option<Arc<Gateway>>,
    pub server: String,
    pub principal: Principal,
    pub metrics: Arc<Metrics>,
    pub memo: Arc<ListMemo>,
    /// Ids of the requests this answer is for, to address a refusal.
    pub request_ids: Vec<Box<RawValue>>,
    /// Told when a stream is withheld part-way, for the access log.
    pub ending: Ending,
    /// When a JSON answer's body (or the body of one toolgate cannot
    /// read, to see whether it is empty) must have arrived: the response
    /// timeout counts from the request, head and body together.
    pub answer_due: tokio::time::Instant,
}

enum Verdict {
    Forward(Bytes),
    /// The answer cannot be forwarded (fail closed).
    Refuse(String),
    /// The caller may no longer read this stream.
    Revoke(String),
}

impl Judge {
    fn limit(&self) -> usize {
        self.policy.transport.max_list_result
    }

    /// The policy an answer is judged under, and the caller as it admits
    /// them; an error when a reload has taken away the virtual server or
    /// the caller's access (a live stream then ends).
    fn current(&self) -> Result<(Arc<Policy>, Option<Principal>), String> {
        let Some(gateway) = &self.live else {
            return Ok((self.policy.clone(), None));
        };
        let policy = gateway.policy.load();
        let server =
            policy.virtual_server(&self.server).ok_or("a reload removed the stream's virtual server")?;
        let principal = describe::principal(&policy.identity, &describe::Described::of(&self.principal))
            .and_then(|principal| identity::admit(&server.access, &principal).map(|()| principal))
            .map_err(|error| {
                format!("the caller is no longer admitted ({})", super::auth::answer(&error).2)
            })?;
        Ok((policy, Some(principal)))
    }

    /// Filters one JSON text (a message or a batch of them): the text
    /// rewritten, or `None` when it goes as it came.
    fn judge(&self, text: &[u8]) -> Result<Option<Bytes>, String> {
        if !list_filter::may_hold_list(text) {
            return Ok(None);
        }
        match self.recall(text) {
            Some(rewritten) => Ok(rewritten),
            None => self.filter(text),
        }
    }

    /// [`Self::judge`] for a text the memo was already asked about.
    fn judge_afresh(&self, text: &[u8]) -> Result<Option<Bytes>, String> {
        if !list_filter::may_hold_list(text) {
            return Ok(None);
        }
        self.filter(text)
    }

    /// [`Self::judge`]'s answer if the memo has it. Only list results are
    /// remembered, so a text that holds none is simply not found: no
    /// pre-scan is needed, and a lookup is cheap enough for a runtime
    /// worker whatever the size.
    fn recall(&self, text: &[u8]) -> Option<Option<Bytes>> {
        if text.len() < super::list_memo::MIN_TEXT {
            return None;
        }
        let (policy, readmitted) = self.current().ok()?;
        if policy.transport.list_memo == 0 {
            return None;
        }
        let server = policy.virtual_server(&self.server)?;
        let principal = readmitted.as_ref().unwrap_or(&self.principal);
        let view = server.view(principal);
        let judged = self.memo.recall(&Key::of(&policy, &self.server, &view)?, text)?;
        self.metrics.list_memo_hit();
        Some(self.account(principal, judged))
    }

    /// [`Self::judge`] done in full: the text read, each item decided.
    fn filter(&self, text: &[u8]) -> Result<Option<Bytes>, String> {
        let (policy, readmitted) = self.current()?;
        let Some(server) = policy.virtual_server(&self.server) else {
            return Err("the virtual server is gone from the policy".into());
        };
        let principal = readmitted.as_ref().unwrap_or(&self.principal);
        let view = server.view(principal);
        let mut removed = Removals::default();
        let mut kept = [0u64; 4];
        let outcome = list_filter::filter(text, &mut |kind, name| {
            let allowed = view.allows(kind, name);
            if allowed {
                kept[kind as usize] += 1;
            } else {
                removed.note(kind, name);
            }
            allowed
        })
        .map_err(|e| e.to_string())?;
        let rewritten = match outcome {
            Outcome::Unchanged => None,
            Outcome::Rewritten(bytes) => Some(Bytes::from(bytes)),
        };
        let decided = !removed.is_empty() || kept.iter().any(|&count| count > 0);
        let judged = Judged { rewritten, kept, removed: Arc::new(removed) };
        // Only what held list items: other answers are not worth a place.
        if decided && let Some(key) = Key::of(&policy, &self.server, &view) {
            let held = self.memo.remember(&key, text, &judged, policy.transport.list_memo);
            self.metrics.list_memo_held(held);
        }
        Ok(self.account(principal, judged))
    }

    /// Counts and audits what filtering an answer came to, as often as
    /// the answer is forwarded.
    fn account(&self, principal: &Principal, judged: Judged) -> Option<Bytes> {
        for kind in ListKind::ALL {
            let k = kind as usize;
            self.metrics.list_decisions(&self.server, kind, judged.kept[k], judged.removed.count(kind));
        }
        if !judged.removed.is_empty() {
            telemetry::audit_list_filtered(&self.server, principal, &judged.removed);
        }
        judged.rewritten
    }

    /// Judges one event. What is forwarded is what toolgate read: the event
    /// as received when every reader reads it alike, else re-emitted in the
    /// canonical form (see [`sse::Event`]), so no reader finds data toolgate
    /// did not judge.
    fn event(&self, event: sse::Event) -> Verdict {
        self.event_by(event, Self::judge)
    }

    /// [`Self::event`], its data judged by `judge`.
    fn event_by(
        &self,
        event: sse::Event,
        judge: fn(&Self, &[u8]) -> Result<Option<Bytes>, String>,
    ) -> Verdict {
        if self.live.is_some()
            && let Err(reason) = self.current()
        {
            return Verdict::Revoke(reason);
        }
        if !event.has_data {
            return Verdict::Forward(event.forwardable());
        }
        match judge(self, &event.data) {
            Ok(None) => Verdict::Forward(event.forwardable()),
            Ok(Some(data)) => Verdict::Forward(event.with_data(&data)),
            Err(reason) => Verdict::Refuse(reason),
        }
    }

    /// The JSON-RPC errors that stand in for an answer toolgate would not
    /// forward: one per request the answer was for (one with a null id if
    /// there were none).
    fn refusals(&self, reason: &str) -> Vec<Value> {
        tracing::warn!(
            server = %self.server,
            reason = %telemetry::Untrusted(reason),
            "upstream answer withheld (fail closed)"
        );
        self.metrics.list_refused();
        let error = json!({
            "code": -32603,
            "message": "The upstream's answer could not be checked against the policy and was withheld",
        });
        let ids: Vec<Value> = match self.request_ids.as_slice() {
            [] => vec![Value::Null],
            ids => ids.iter().map(|id| serde_json::from_str(id.get()).unwrap_or(Value::Null)).collect(),
        };
        ids.into_iter().map(|id| json!({ "jsonrpc": "2.0", "id": id, "error": error })).collect()
    }

    /// A whole answer in place of one toolgate withholds: 502 with the
    /// JSON-RPC errors.
    fn withheld(&self, reason: &str) -> Response<ProxyBody> {
        let body = match self.refusals(reason).as_slice() {
            [one] => one.to_string(),
            many => Value::Array(many.to_vec()).to_string(),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        response.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static(headers::JSON));
        response
    }
}

enum Media {
    Json,
    EventStream,
}

/// How an answer is framed, or why it cannot be read with certainty.
fn media(headers: &HeaderMap) -> Result<Media, String> {
    match headers::single(headers, &header::CONTENT_ENCODING) {
        SingleHeader::Absent => {}
        SingleHeader::Value(v) if v.eq_ignore_ascii_case("identity") => {}
        SingleHeader::Value(v) => {
            return Err(format!("the answer is encoded (`{}`)", v.chars().take(40).collect::<String>()));
        }
        SingleHeader::Repeated | SingleHeader::NotText => {
            return Err("the answer's encoding is unclear".into());
        }
    }
    match headers::content_type(headers) {
        Ok(essence) if essence.eq_ignore_ascii_case(headers::JSON) => Ok(Media::Json),
        Ok(essence) if essence.eq_ignore_ascii_case(headers::EVENT_STREAM) => Ok(Media::EventStream),
        Ok(essence) => Err(format!(
            "the answer is `{}`, neither application/json nor text/event-stream",
            essence.chars().take(60).collect::<String>()
        )),
        Err(why) => Err(format!("the answer has {why}")),
    }
}

/// Applies the judge to a 2xx upstream answer.
pub async fn inspect(judge: Judge, response: Response<UpstreamBody>) -> Response<ProxyBody> {
    let judge = Arc::new(judge);
    if !response.status().is_success() || response.body().is_end_stream() {
        return response.map(|body| body.boxed_unsync());
    }
    let (mut parts, body) = response.into_parts();
    let limit = judge.limit();
    match media(&parts.headers) {
        Ok(Media::EventStream) => {
            // Events may be rewritten or withheld: the upstream's length
            // no longer describes the body (a client would read an empty
            // reply, or an h2 PROTOCOL_ERROR).
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, FilteredEvents::new(judge, body).boxed_unsync())
        }
        Ok(Media::Json) => {
            let read = tokio::time::timeout_at(judge.answer_due, body.read_whole(limit));
            let bytes = match read.await.unwrap_or_else(|_| {
                Err(ReadError::Aborted("it was not complete within the response timeout".into()))
            }) {
                Ok(bytes) => bytes,
                Err(ReadError::TooLarge) => {
                    return judge
                        .withheld(&format!("the answer exceeds transport.max_list_result ({limit} bytes)"));
                }
                Err(ReadError::Aborted(error)) => {
                    return judge.withheld(&format!("the upstream's answer ended early: {error}"));
                }
            };
            let verdict = if bytes.len() <= PARSE_INLINE {
                judge.judge(&bytes)
            } else if let Some(rewritten) = judge.recall(&bytes) {
                Ok(rewritten)
            } else {
                // Off the runtime's workers, as large request bodies are.
                let (judge, bytes) = (judge.clone(), bytes.clone());
                offload::run(move || judge.judge_afresh(&bytes))
                    .await
                    .unwrap_or_else(|_| Err("the answer could not be judged".into()))
            };
            let bytes = match verdict {
                Ok(None) => bytes,
                Ok(Some(rewritten)) => rewritten,
                Err(reason) => return judge.withheld(&reason),
            };
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Full::new(bytes).boxed_unsync())
        }
        Err(reason) => {
            // An empty body needs no reading (a 202 without Content-Length).
            match tokio::time::timeout_at(judge.answer_due, body.read_whole(limit)).await {
                Ok(Ok(bytes)) if bytes.is_empty() => {
                    parts.headers.remove(header::CONTENT_LENGTH);
                    Response::from_parts(parts, Full::new(Bytes::new()).boxed_unsync())
                }
                _ => judge.withheld(&reason),
            }
        }
    }
}

/// An SSE answer forwarded event by event, list results filtered. An event
/// large enough to take a while to judge is judged on the blocking pool,
/// the events after it waiting their turn.
struct FilteredEvents {
    judge: Arc<Judge>,
    inner: UpstreamBody,
    splitter: Splitter,
    ready: VecDeque<Bytes>,
    judging: Option<offload::Pending<Verdict>>,
    /// A live stream's wait for a reload or its credential's expiry.
    waiting: Option<live::Waiting>,
    ended: bool,
}

impl FilteredEvents {
    fn new(judge: Arc<Judge>, inner: UpstreamBody) -> Self {
        let limit = judge.limit();
        let splitter = Splitter::new(limit);
        let waiting = judge.live.as_ref().map(|gateway| {
            let mut reloads = gateway.policy.reloads();
            // A reload may have come since the request's snapshot.
            reloads.mark_changed();
            live::wait(reloads, judge.principal.expires)
        });
        Self { judge, inner, splitter, ready: VecDeque::new(), judging: None, waiting, ended: false }
    }

    /// Ends a stream its caller may no longer read, with an error event.
    fn revoke(&mut self, reason: &str) {
        tracing::info!(server = %self.judge.server, reason = %telemetry::Untrusted(reason), "GET stream ended");
        self.judge.ending.note(End::Withheld);
        let error = json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": -32001, "message": format!("The stream ended: {reason}") },
        });
        self.ready.push_back(sse::message_event(error.to_string().as_bytes()));
        self.ended = true;
    }

    fn refuse(&mut self, reason: &str) {
        self.judge.ending.note(End::Withheld);
        for error in self.judge.refusals(reason) {
            self.ready.push_back(sse::message_event(error.to_string().as_bytes()));
        }
        self.ended = true;
    }

    fn apply(&mut self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Forward(bytes) if bytes.is_empty() => true,
            Verdict::Forward(bytes) => {
                self.ready.push_back(bytes);
                true
            }
            Verdict::Refuse(reason) => {
                self.refuse(&reason);
                false
            }
            Verdict::Revoke(reason) => {
                self.revoke(&reason);
                false
            }
        }
    }

    fn take_events(&mut self) {
        while self.judging.is_none() && !self.ended {
            match self.splitter.next_event() {
                Ok(Some(event)) if event.data.len() > PARSE_INLINE => {
                    // A list met before is answered here (a comparison);
                    // anything else is judged off the runtime's workers.
                    if let Some(rewritten) = self.judge.recall(&event.data) {
                        let verdict = Verdict::Forward(match rewritten {
                            None => event.forwardable(),
                            Some(data) => event.with_data(&data),
                        });
                        if !self.apply(verdict) {
                            return;
                        }
                        continue;
                    }
                    let judge = self.judge.clone();
                    self.judging =
                        Some(Box::pin(offload::run(move || judge.event_by(event, Judge::judge_afresh))));
                }
                Ok(Some(event)) => {
                    let verdict = self.judge.event(event);
                    if !self.apply(verdict) {
                        return;
                    }
                }
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
            if let Some(judging) = self.judging.as_mut() {
                let verdict = match Pin::new(judging).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(verdict)) => verdict,
                    Poll::Ready(Err(_)) => Verdict::Refuse("the event could not be judged".into()),
                };
                self.judging = None;
                if self.apply(verdict) {
                    self.take_events();
                }
                continue;
            }
            if self.ended {
                return Poll::Ready(None);
            }
            if let Some(waiting) = self.waiting.as_mut()
                && let Poll::Ready(wake) = waiting.as_mut().poll(cx)
            {
                self.waiting = None;
                match wake {
                    live::Wake::Reload(next) => {
                        self.waiting = Some(next);
                        if let Err(reason) = self.judge.current() {
                            self.revoke(&reason);
                        }
                    }
                    live::Wake::Expired => self.revoke("the caller's credential has expired"),
                }
                continue;
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

    /// Nothing is waiting to go and the upstream's body has ended (an
    /// unfinished last event is dropped then anyway).
    fn is_end_stream(&self) -> bool {
        self.ready.is_empty() && self.judging.is_none() && (self.ended || self.inner.is_end_stream())
    }
}
