//! Shared by the integration tests: a real MCP server from the official Rust
//! SDK (rmcp) as the upstream, toolgate started in-process on ephemeral
//! ports in front of it, and raw HTTP helpers for the adversarial cases.

#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, Prompt, PromptMessage,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource, ResourceContents,
    ResourceTemplate, Role, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// The MCP server the tests put behind toolgate: tools (one of which
/// reports progress), prompts, resources and a resource template.
#[derive(Clone, Default)]
pub struct SampleServer;

fn object_schema() -> Arc<rmcp::model::JsonObject> {
    let schema = serde_json::json!({ "type": "object", "properties": { "text": { "type": "string" } } });
    Arc::new(schema.as_object().cloned().unwrap_or_default())
}

impl ServerHandler for SampleServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_instructions("toolgate test server")
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("echo", "Repeat the text", object_schema()),
            Tool::new(
                "progress",
                "Report progress three times, then answer",
                object_schema(),
            ),
            Tool::new("delete_everything", "An admin tool", object_schema()),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        match request.name.as_ref() {
            "echo" => {
                let text = request
                    .arguments
                    .as_ref()
                    .and_then(|a| a.get("text"))
                    .and_then(|t| t.as_str())
                    .unwrap_or_default()
                    .to_owned();
                Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
            }
            "progress" => {
                if let Some(token) = context.meta.get_progress_token() {
                    for step in 1..=3 {
                        let note =
                            ProgressNotificationParam::new(token.clone(), f64::from(step)).with_total(3.0);
                        let _ = context.peer.notify_progress(note).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Ok(CallToolResult::success(vec![ContentBlock::text("done")]).into())
            }
            "delete_everything" => Ok(CallToolResult::success(vec![ContentBlock::text("deleted")]).into()),
            other => Err(ErrorData::invalid_params(format!("Unknown tool: {other}"), None)),
        }
    }

    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new(
            "greet",
            Some("Say hello"),
            None,
        )]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != "greet" {
            return Err(ErrorData::invalid_params(
                format!("Unknown prompt: {}", request.name),
                None,
            ));
        }
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(Role::User, "Hello!")]).into())
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new("mem://public/readme", "readme"),
            Resource::new("mem://private/keys", "keys"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![
            ResourceTemplate::new("mem://public/{name}", "public"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Ok(ReadResourceResult::new(vec![ResourceContents::text(
            format!("contents of {}", request.uri),
            request.uri,
        )])
        .into())
    }
}

/// Starts the SDK's Streamable HTTP server at `http://ADDR/mcp`. With
/// `json_response` it is stateless and answers simple requests with JSON;
/// without, it keeps sessions and answers with SSE streams.
pub async fn start_sdk_upstream(json_response: bool) -> SocketAddr {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(!json_response)
        .with_json_response(json_response);
    let service: StreamableHttpService<SampleServer, LocalSessionManager> =
        StreamableHttpService::new(|| Ok(SampleServer), Default::default(), config);
    serve_http(move |request: Request<hyper::body::Incoming>| {
        let service = service.clone();
        async move {
            if request.uri().path() != "/mcp" {
                let mut response = http::Response::new(
                    http_body_util::Full::new(Bytes::new())
                        .map_err(|never: Infallible| match never {})
                        .boxed(),
                );
                *response.status_mut() = StatusCode::NOT_FOUND;
                return response;
            }
            service.handle(request).await
        }
    })
    .await
}

/// Serves `handler` on a fresh loopback port (HTTP/1.1 and h2c) and returns it.
pub async fn serve_http<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A toolgate running in this test process.
pub struct Gate {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub policy_file: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Gate {
    /// A toolgate running elsewhere (the binary), for helpers that take a Gate.
    pub fn external(addr: SocketAddr, admin: SocketAddr) -> Self {
        Self {
            addr,
            admin,
            policy_file: PathBuf::new(),
            stop: None,
            task: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Triggers shutdown and waits for the drain to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.policy_file);
    }
}

/// A unique scratch directory for this test process.
pub fn scratch_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "toolgate-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// A default virtual server that lets everything through.
pub const ALLOW_ALL: &str = "virtual_servers:\n  default:\n    tools: { allow: ['*'] }\n    prompts: { allow: ['*'] }\n    resources: { allow: ['**'] }\n    resource_templates: { allow: ['**'] }\n";

/// A policy in front of `upstream`, with extra YAML for the `transport:`
/// section (indented by two spaces) and for the top level. Without
/// `virtual_servers` in `top`, the default one allows everything.
pub fn policy(upstream: SocketAddr, transport: &str, top: &str) -> String {
    let servers = if top.contains("virtual_servers:") {
        ""
    } else {
        ALLOW_ALL
    };
    format!(
        "version: 1\nlisten:\n  drain: 5s\nupstream:\n  url: http://{upstream}/mcp\n  timeout: 5s\ntransport:\n  allowed_hosts: [localhost, 127.0.0.1]\n{transport}\n{top}\n{servers}"
    )
}

/// Starts toolgate with `policy_text` on ephemeral ports.
pub async fn start_gate(policy_text: &str) -> Gate {
    let dir = scratch_dir();
    let policy_file = dir.join("policy.yaml");
    std::fs::write(&policy_file, policy_text).expect("write the policy");
    let config = toolgate::Config {
        policy_file: policy_file.clone(),
        proxy_listen: Some("127.0.0.1:0".parse().expect("address")),
        admin_listen: Some("127.0.0.1:0".parse().expect("address")),
    };
    let server = toolgate::Server::bind(&config).await.expect("toolgate starts");
    let addr = server.proxy_addr().expect("proxy address");
    let admin = server.admin_addr().expect("admin address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = server
            .run(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Gate {
        addr,
        admin,
        policy_file,
        stop: Some(stop),
        task: Some(task),
    }
}

/// Starts the SDK upstream and toolgate in front of it with default rules.
pub async fn start_pair(json_response: bool) -> (SocketAddr, Gate) {
    let upstream = start_sdk_upstream(json_response).await;
    let gate = start_gate(&policy(upstream, "", "")).await;
    (upstream, gate)
}

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The JSON-RPC error code of a refusal body.
    pub fn rpc_code(&self) -> Option<i64> {
        self.json().pointer("/error/code").and_then(|c| c.as_i64())
    }
}

/// The headers a compliant client sends with a POST.
pub const POST_HEADERS: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("accept", "application/json, text/event-stream"),
];

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Sends one request on a fresh HTTP/1.1 connection and returns the
/// response with its body still streaming. Headers are appended, so a name
/// may repeat; `Host` is the gate's address unless given.
pub async fn open<B>(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: B,
) -> Result<http::Response<hyper::body::Incoming>, BoxError>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request = request.header("host", addr.to_string());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    Ok(sender.send_request(request.body(body)?).await?)
}

/// Like [`open`], with the body read whole.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let response = open(addr, method, path, headers, Full::new(body.into()))
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// The headers of a compliant 2025-06-18 client's POST.
pub const POST_0618: &[(&str, &str)] = &[
    ("content-type", "application/json"),
    ("accept", "application/json, text/event-stream"),
    ("mcp-protocol-version", "2025-06-18"),
];

/// POSTs a JSON-RPC body with the headers of a compliant client plus `extra`.
pub async fn post(addr: SocketAddr, extra: &[(&str, &str)], body: &str) -> Reply {
    let mut headers = POST_HEADERS.to_vec();
    headers.extend_from_slice(extra);
    send(addr, "POST", "/mcp", &headers, body.to_owned()).await
}

/// Writes raw bytes and reads until the server closes: for requests no
/// well-behaved client library would send.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;

/// Runs `initialize` + `notifications/initialized` over raw HTTP through
/// `addr` and returns the session id.
pub async fn raw_session(addr: SocketAddr) -> String {
    let reply = post(addr, &[], INITIALIZE).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let session = reply
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("the upstream opens a session")
        .to_owned();
    let ack = post(
        addr,
        &[
            ("mcp-session-id", &session),
            ("mcp-protocol-version", "2025-06-18"),
        ],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!(ack.status, StatusCode::ACCEPTED, "{}", ack.text());
    session
}

pub type Sender = tokio::sync::mpsc::Sender<Bytes>;

/// An upstream whose SSE answers are written by the test: each request hands
/// the test a sender for its response body.
pub async fn start_scripted_sse_upstream() -> (SocketAddr, tokio::sync::mpsc::Receiver<Sender>) {
    let (handoff, streams) = tokio::sync::mpsc::channel::<Sender>(8);
    let handoff = Arc::new(handoff);
    let addr = serve_http(move |_request: http::Request<hyper::body::Incoming>| {
        let handoff = handoff.clone();
        async move {
            let (sender, receiver) = tokio::sync::mpsc::channel::<Bytes>(8);
            let _ = handoff.send(sender).await;
            let body = http_body_util::StreamBody::new(ChannelStream(receiver));
            let mut response = http::Response::new(body);
            response.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("text/event-stream"),
            );
            response
        }
    })
    .await;
    (addr, streams)
}

pub struct ChannelStream(pub tokio::sync::mpsc::Receiver<Bytes>);

impl futures_core::Stream for ChannelStream {
    type Item = Result<http_body::Frame<Bytes>, std::convert::Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}
