//! `toolgate demo`: a small MCP server built in, so that one command shows
//! toolgate working without anything else installed.
//!
//! The server speaks the Streamable HTTP transport (protocol 2025-03-26 to
//! 2025-11-25) with sessions, JSON answers, and an SSE answer with progress
//! notifications for `countdown`. It is written here on hyper rather than
//! with an MCP SDK to keep the release binary's dependency tree small; the
//! integration tests use the official SDK as the upstream instead.

use crate::server::{Config, ServeError, Server};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::convert::Infallible;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// The sample policy the demo runs with (also `examples/demo.yaml`).
pub const SAMPLE_POLICY: &str = include_str!("../examples/demo.yaml");
/// The upstream URL written in [`SAMPLE_POLICY`], replaced by the demo
/// server's real address.
const SAMPLE_UPSTREAM: &str = "http://127.0.0.1:8080/mcp";

const SUPPORTED: &[&str] = &["2025-03-26", "2025-06-18", "2025-11-25"];
const LATEST: &str = "2025-11-25";

type DemoBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

#[derive(Default)]
struct Sessions {
    open: Mutex<HashSet<String>>,
    ids: RandomState,
}

impl Sessions {
    fn create(&self) -> String {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let id = format!(
            "{:016x}{:016x}",
            self.ids.hash_one(open.len()),
            self.ids.hash_one(std::time::Instant::now())
        );
        open.insert(id.clone());
        id
    }
    fn exists(&self, id: &str) -> bool {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).contains(id)
    }
    fn close(&self, id: &str) -> bool {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }
}

/// Starts the built-in MCP server on `addr` (port 0 for any) and returns
/// the address it listens on. It serves until the runtime stops.
pub async fn start_upstream(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let sessions = Arc::new(Sessions::default());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let sessions = sessions.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| handle(sessions.clone(), request));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

async fn handle(
    sessions: Arc<Sessions>,
    request: Request<Incoming>,
) -> Result<Response<DemoBody>, Infallible> {
    let session = request.headers().get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if let Some(id) = &session
        && !sessions.exists(id)
    {
        return Ok(plain(StatusCode::NOT_FOUND, "unknown session"));
    }
    match *request.method() {
        Method::POST => {}
        Method::DELETE => {
            let closed = session.as_deref().is_some_and(|id| sessions.close(id));
            return Ok(plain(if closed { StatusCode::OK } else { StatusCode::NOT_FOUND }, ""));
        }
        // No server-initiated stream: MCP lets a server answer GET with 405.
        _ => return Ok(plain(StatusCode::METHOD_NOT_ALLOWED, "")),
    }
    let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Ok(plain(StatusCode::BAD_REQUEST, "unreadable body"));
    };
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return Ok(json_response(StatusCode::BAD_REQUEST, error(Value::Null, -32700, "Parse error"), None));
    };
    if let Value::Array(batch) = &message {
        let answers: Vec<Value> = batch.iter().filter_map(|m| answer(m, &sessions).map(|(v, _)| v)).collect();
        return Ok(if answers.is_empty() {
            plain(StatusCode::ACCEPTED, "")
        } else {
            json_response(StatusCode::OK, Value::Array(answers), None)
        });
    }
    if message.get("method").and_then(Value::as_str) == Some("tools/call")
        && message.pointer("/params/name").and_then(Value::as_str) == Some("countdown")
    {
        return Ok(countdown(message));
    }
    Ok(match answer(&message, &sessions) {
        None => plain(StatusCode::ACCEPTED, ""),
        Some((value, new_session)) => json_response(StatusCode::OK, value, new_session),
    })
}

/// The JSON answer to one message, and a new session id for `initialize`.
fn answer(message: &Value, sessions: &Sessions) -> Option<(Value, Option<String>)> {
    let id = message.get("id")?.clone();
    let Some(method) = message.get("method").and_then(Value::as_str) else {
        return None; // a client's response to us: nothing to answer
    };
    let params = message.get("params").cloned().unwrap_or(Value::Null);
    let name = params.get("name").and_then(Value::as_str).unwrap_or("");
    let result = match method {
        "initialize" => {
            let asked = params.get("protocolVersion").and_then(Value::as_str).unwrap_or(LATEST);
            let version = if SUPPORTED.contains(&asked) { asked } else { LATEST };
            let result = json!({
                "protocolVersion": version,
                "capabilities": { "tools": {}, "prompts": {}, "resources": {} },
                "serverInfo": { "name": "toolgate-demo", "version": env!("CARGO_PKG_VERSION") },
                "instructions": "A demo MCP server behind toolgate."
            });
            return Some((json!({"jsonrpc": "2.0", "id": id, "result": result}), Some(sessions.create())));
        }
        "ping" => json!({}),
        "tools/list" => json!({ "tools": tools() }),
        "tools/call" => match call_tool(name, params.get("arguments").unwrap_or(&Value::Null)) {
            Some(text) => json!({ "content": [{ "type": "text", "text": text }], "isError": false }),
            None => return Some((error(id, -32602, &format!("Unknown tool: {name}")), None)),
        },
        "prompts/list" => json!({ "prompts": [
            { "name": "summarize", "description": "Summarise a text", "arguments": [{ "name": "text", "required": true }] },
            { "name": "code_review", "description": "Review a change" }
        ]}),
        "prompts/get" if name == "summarize" || name == "code_review" => json!({
            "messages": [{ "role": "user", "content": { "type": "text", "text": format!("Please {name} this.") } }]
        }),
        "prompts/get" => return Some((error(id, -32602, &format!("Unknown prompt: {name}")), None)),
        "resources/list" => json!({ "resources": [
            { "uri": "file:///public/readme.md", "name": "readme", "mimeType": "text/markdown" },
            { "uri": "file:///private/secrets.txt", "name": "secrets", "mimeType": "text/plain" }
        ]}),
        "resources/templates/list" => json!({ "resourceTemplates": [
            { "uriTemplate": "file:///public/{name}", "name": "public files" }
        ]}),
        "resources/read" => {
            let uri = params.get("uri").and_then(Value::as_str).unwrap_or("");
            match uri {
                "file:///public/readme.md" => {
                    json!({ "contents": [{ "uri": uri, "mimeType": "text/markdown", "text": "# Demo\nServed through toolgate." }] })
                }
                "file:///private/secrets.txt" => {
                    json!({ "contents": [{ "uri": uri, "mimeType": "text/plain", "text": "hunter2" }] })
                }
                _ => return Some((error(id, -32002, &format!("Resource not found: {uri}")), None)),
            }
        }
        _ => return Some((error(id, -32601, &format!("Method not found: {method}")), None)),
    };
    Some((json!({"jsonrpc": "2.0", "id": id, "result": result}), None))
}

fn tools() -> Value {
    let text_arg = |name: &str| json!({ "type": "object", "properties": { name: { "type": "string" } }, "required": [name] });
    json!([
        { "name": "echo", "description": "Repeat the text back", "inputSchema": text_arg("text") },
        { "name": "add", "description": "Add two numbers", "inputSchema": { "type": "object", "properties": { "a": { "type": "number" }, "b": { "type": "number" } }, "required": ["a", "b"] } },
        { "name": "search_docs", "description": "Search the documentation", "inputSchema": text_arg("query") },
        { "name": "read_file", "description": "Read a file", "inputSchema": text_arg("path") },
        { "name": "countdown", "description": "Count down, reporting progress", "inputSchema": { "type": "object", "properties": { "from": { "type": "integer" } } } },
        { "name": "delete_database", "description": "Delete everything (an admin tool)", "inputSchema": { "type": "object" } }
    ])
}

fn call_tool(name: &str, arguments: &Value) -> Option<String> {
    let text = |key: &str| arguments.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
    Some(match name {
        "echo" => text("text"),
        "add" => {
            let number = |key: &str| arguments.get(key).and_then(Value::as_f64).unwrap_or(0.0);
            (number("a") + number("b")).to_string()
        }
        "search_docs" => format!("3 results for `{}`", text("query")),
        "read_file" => format!("contents of {}", text("path")),
        "delete_database" => "the database is gone (not really: this is a demo)".to_owned(),
        _ => return None,
    })
}

/// `countdown` answers as an SSE stream: one progress notification per
/// step, 100 ms apart, then the result.
fn countdown(message: Value) -> Response<DemoBody> {
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let from = message.pointer("/params/arguments/from").and_then(Value::as_u64).unwrap_or(3).min(20);
    let token = message.pointer("/params/_meta/progressToken").cloned();
    let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        for step in 1..=from {
            if let Some(token) = &token {
                let note = json!({ "jsonrpc": "2.0", "method": "notifications/progress",
                    "params": { "progressToken": token, "progress": step, "total": from } });
                if sender.send(sse_event(&note)).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let done = json!({ "jsonrpc": "2.0", "id": id,
            "result": { "content": [{ "type": "text", "text": "liftoff" }], "isError": false } });
        let _ = sender.send(sse_event(&done)).await;
    });
    let mut response = Response::new(ChannelBody(receiver).boxed_unsync());
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A response body fed by a channel: each message is one frame, sent as
/// soon as it is produced.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn sse_event(message: &Value) -> Bytes {
    Bytes::from(format!("event: message\ndata: {message}\n\n"))
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

fn json_response(status: StatusCode, value: Value, session: Option<String>) -> Response<DemoBody> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed_unsync());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(id) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
        response.headers_mut().insert("mcp-session-id", id);
    }
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response<DemoBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed_unsync());
    *response.status_mut() = status;
    response
}

/// Writes the sample policy, pointing at `upstream`, into `dir`.
pub fn write_sample_policy(dir: &Path, upstream: SocketAddr) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("policy.yaml");
    let text = SAMPLE_POLICY.replace(SAMPLE_UPSTREAM, &format!("http://{upstream}/mcp"));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Runs the whole demo: the built-in server, toolgate in front of it with
/// the sample policy, and a banner telling the user what to try.
pub async fn run(proxy_listen: SocketAddr, admin_listen: SocketAddr) -> Result<(), DemoError> {
    let upstream =
        start_upstream(SocketAddr::from(([127, 0, 0, 1], 0))).await.map_err(DemoError::Upstream)?;
    let dir = std::env::temp_dir().join(format!("toolgate-demo-{}", std::process::id()));
    let policy_file = write_sample_policy(&dir, upstream).map_err(DemoError::Policy)?;
    let config = Config {
        policy_file: policy_file.clone(),
        proxy_listen: Some(proxy_listen),
        admin_listen: Some(admin_listen),
    };
    let signals = crate::server::shutdown_signals()?;
    let server = Server::bind(&config).await?;
    let (Some(proxy), Some(admin)) = (server.proxy_addr(), server.admin_addr()) else {
        return Err(DemoError::Upstream(std::io::Error::other("listener has no address")));
    };
    println!(
        "toolgate demo\n\
         \x20 MCP endpoint:   http://{proxy}/mcp   (built-in MCP server at http://{upstream}/mcp)\n\
         \x20 narrow view:    http://{proxy}/servers/readonly/mcp\n\
         \x20 policy:         {policy}   (edit and save: reloaded within a second)\n\
         \x20 metrics:        http://{admin}/metrics\n\n\
         Try it:\n\
         \x20 curl -s http://{proxy}/mcp -H 'Content-Type: application/json' \\\n\
         \x20   -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2025-06-18' \\\n\
         \x20   -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}}'\n\n\
         The admin tool is hidden from the list, and calling it is refused:\n\
         \x20 curl -s http://{proxy}/mcp -H 'Content-Type: application/json' \\\n\
         \x20   -H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2025-06-18' \\\n\
         \x20   -d '{{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"tools/call\",\"params\":{{\"name\":\"delete_database\"}}}}'\n\n\
         And a forged Origin is refused (403):\n\
         \x20 curl -si http://{proxy}/mcp -H 'Origin: http://localhost.evil.com' -H 'Content-Type: application/json' \\\n\
         \x20   -H 'Accept: application/json, text/event-stream' -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}}'\n\n\
         Ctrl-C stops it.",
        policy = policy_file.display()
    );
    server.run(signals).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the built-in MCP server: {0}")]
    Upstream(#[source] std::io::Error),
    #[error("cannot write the sample policy: {0}")]
    Policy(#[source] std::io::Error),
    #[error(transparent)]
    Serve(#[from] ServeError),
}
