//! Request-side enforcement: every message of a POST is judged against the
//! caller's view of the virtual server before anything reaches the
//! upstream.
//!
//! A refused call is answered here with a JSON-RPC error in a 200 response,
//! as the upstream would answer a call to something that does not exist
//! (or, with `denial: explicit`, says it is not allowed). A batch in which
//! any message is refused is not forwarded at all: each refused message
//! gets its error and every other request an error saying it was not run,
//! so a batch cannot smuggle a refused call past the check.

use super::ProxyBody;
use crate::mcp::envelope::{Field, Kind, Message, Payload};
use crate::mcp::version;
use crate::policy::{DenialStyle, ListKind, View};
use crate::telemetry::{self, Metrics};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// What a method acts on, if policy governs it.
fn target<'m>(message: &'m Message<'_>) -> Option<(ListKind, &'static str, Option<&'m Field<'m>>)> {
    let p = &message.params;
    Some(match message.method()? {
        "tools/call" => (ListKind::Tool, "name", p.name.as_ref()),
        "prompts/get" => (ListKind::Prompt, "name", p.name.as_ref()),
        "resources/read" | "resources/subscribe" => (ListKind::Resource, "uri", p.uri.as_ref()),
        "completion/complete" => {
            let reference = p.reference.as_ref()?;
            match reference.kind.as_ref().and_then(Field::as_str) {
                Some("ref/prompt") => (ListKind::Prompt, "ref.name", reference.name.as_ref()),
                Some("ref/resource") => (ListKind::ResourceTemplate, "ref.uri", reference.uri.as_ref()),
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// Judges every message; `None` when all may pass, else the response that
/// answers the request instead of the upstream.
pub fn authorize(
    view: &View<'_>,
    payload: &Payload<'_>,
    protocol: &str,
    metrics: &Metrics,
) -> Option<Response<ProxyBody>> {
    let server = view.server();
    let mut refusals: Vec<(usize, Value)> = Vec::new();
    for (index, message) in payload.messages().iter().enumerate() {
        if message.kind == Kind::Response {
            continue;
        }
        let Some((kind, member, field)) = target(message) else {
            continue;
        };
        let error = match field.and_then(Field::as_str) {
            None => json!({
                "code": -32602,
                "message": format!("Invalid params: {} needs a string `{member}`", message.method().unwrap_or("")),
            }),
            Some(name) => {
                let decision = view.decide(kind, name);
                metrics.decision(&server.name, kind, decision.is_allowed());
                if decision.is_allowed() {
                    continue;
                }
                telemetry::audit_call_refused(&server.name, view.principal(), kind, name, &decision);
                denial_error(server.denial, kind, name, protocol)
            }
        };
        refusals.push((index, error));
    }
    let (_, first_error) = refusals.first()?;
    Some(match payload {
        // A refused notification has no one to answer: swallow it.
        Payload::Single(message) if message.kind == Kind::Notification => accepted(),
        Payload::Single(message) => json_response(&answer(message.id(), first_error)),
        Payload::Batch(messages) => {
            let not_run = json!({
                "code": -32600,
                "message": "Not run: this batch also held a refused message; send the others again without it",
            });
            let answers: Vec<Value> = messages
                .iter()
                .enumerate()
                .filter(|(_, m)| m.kind == Kind::Request)
                .map(|(i, m)| {
                    let error = refusals.iter().find(|(r, _)| *r == i).map(|(_, e)| e).unwrap_or(&not_run);
                    answer(m.id(), error)
                })
                .collect();
            if answers.is_empty() { accepted() } else { json_response(&Value::Array(answers)) }
        }
    })
}

/// The error a refused call gets. Hidden style mimics what an MCP server
/// answers for a name it does not have: `Unknown tool: NAME` (-32602) for
/// tools and prompts, and for resources "Resource not found" with the
/// specification's -32002 (-32602 from 2026-07-28, SEP-2164).
pub fn denial_error(style: DenialStyle, kind: ListKind, name: &str, protocol: &str) -> Value {
    let shown: String = name.chars().take(200).collect();
    match style {
        DenialStyle::Hidden => match kind {
            ListKind::Tool => json!({ "code": -32602, "message": format!("Unknown tool: {shown}") }),
            ListKind::Prompt => json!({ "code": -32602, "message": format!("Unknown prompt: {shown}") }),
            ListKind::Resource => {
                let code = if version::requires_standard_headers(protocol) { -32602 } else { -32002 };
                json!({ "code": code, "message": "Resource not found", "data": { "uri": shown } })
            }
            ListKind::ResourceTemplate => {
                json!({ "code": -32602, "message": format!("Unknown resource template: {shown}") })
            }
        },
        DenialStyle::Explicit => {
            let word = match kind {
                ListKind::Tool => "Tool",
                ListKind::Prompt => "Prompt",
                ListKind::Resource => "Resource",
                ListKind::ResourceTemplate => "Resource template",
            };
            json!({
                "code": -32001,
                "message": format!("{word} not allowed on this server: {shown}"),
                "data": { "kind": kind.as_str(), "name": shown },
            })
        }
    }
}

fn answer(id: Option<&RawValue>, error: &Value) -> Value {
    let id = id.and_then(|raw| serde_json::from_str::<Value>(raw.get()).ok()).unwrap_or(Value::Null);
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

fn json_response(body: &Value) -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())).boxed_unsync());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn accepted() -> Response<ProxyBody> {
    let mut response = Response::new(Full::new(Bytes::new()).boxed_unsync());
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_denials_look_like_absence() {
        let e = denial_error(DenialStyle::Hidden, ListKind::Tool, "delete_all", "2025-06-18");
        assert_eq!(e, json!({ "code": -32602, "message": "Unknown tool: delete_all" }));
        let e = denial_error(DenialStyle::Hidden, ListKind::Resource, "file:///x", "2025-06-18");
        assert_eq!(e["code"], -32002);
        let e = denial_error(DenialStyle::Hidden, ListKind::Resource, "file:///x", "2026-07-28");
        assert_eq!(e["code"], -32602);
        let e = denial_error(DenialStyle::Explicit, ListKind::Prompt, "p", "2025-06-18");
        assert_eq!(e["code"], -32001);
        assert_eq!(e["message"], "Prompt not allowed on this server: p");
    }
}
