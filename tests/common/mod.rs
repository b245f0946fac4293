//! Shared by the integration tests: a real MCP server from the official Rust
//! SDK (rmcp) as the upstream, toolgate started in-process on ephemeral
//! ports in front of it, and raw HTTP helpers for the adversarial cases.

#![allow(dead_code, unused_imports)]

mod hostile;
mod rmcp_servers;
mod sdk_upstreams;
pub mod tls;

pub use hostile::*;
pub use rmcp_servers::*;
pub use sdk_upstreams::*;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub type TestResult = Result<(), BoxError>;

/// Serves `handler` on a fresh loopback port (HTTP/1.1 and h2c) and returns it.
pub async fn serve_http<F, Fut, B>(handler: F) -> SocketAddr
where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = http::Response<B>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
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
        Self { addr, admin, policy_file: PathBuf::new(), stop: None, task: None }
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

/// A unique, empty scratch directory for this test process. One left by an
/// earlier process that had the same id is stale (no two live processes
/// share an id) and is emptied first, or a test would find its files.
pub fn scratch_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "toolgate-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// The hex SHA-256 of `text`, as API keys are configured.
pub fn sha256_hex(text: &str) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A default virtual server that lets everything through.
pub const ALLOW_ALL: &str = "virtual_servers:\n  default:\n    anonymous: true\n    tools: { allow: ['*'] }\n    prompts: { allow: ['*'] }\n    resources: { allow: ['**'] }\n    resource_templates: { allow: ['**'] }\n";

/// A policy in front of `upstream`, with extra YAML for the `transport:`
/// section (indented by two spaces) and for the top level. Without
/// `virtual_servers` in `top`, the default one allows everything.
pub fn policy(upstream: SocketAddr, transport: &str, top: &str) -> String {
    let servers = if top.contains("virtual_servers:") { "" } else { ALLOW_ALL };
    format!(
        "version: 1\nlisten:\n  drain: 5s\nupstream:\n  url: http://{upstream}/mcp\n  response_timeout: 5s\ntransport:\n  allowed_hosts: [localhost, 127.0.0.1]\n{transport}\n{top}\n{servers}"
    )
}

/// Starts toolgate with `policy_text` on ephemeral ports.
pub async fn start_gate(policy_text: &str) -> Gate {
    let dir = scratch_dir();
    let policy_file = dir.join("policy.yaml");
    std::fs::write(&policy_file, policy_text).expect("write the policy");
    start_gate_with_file(&policy_file).await
}

/// Starts toolgate with the policy file at `policy_file`.
pub async fn start_gate_with_file(policy_file: &std::path::Path) -> Gate {
    let policy_file = policy_file.to_path_buf();
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
    Gate { addr, admin, policy_file, stop: Some(stop), task: Some(task) }
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
pub const POST_HEADERS: &[(&str, &str)] =
    &[("content-type", "application/json"), ("accept", "application/json, text/event-stream")];

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
    let response = open(addr, method, path, headers, Full::new(body.into())).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Reply { status: parts.status, headers: parts.headers, body }
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
        &[("mcp-session-id", &session), ("mcp-protocol-version", "2025-06-18")],
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
            response
                .headers_mut()
                .insert("content-type", http::HeaderValue::from_static("text/event-stream"));
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
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(http_body::Frame::data(b))))
    }
}

/// An upstream that answers every request with what it received, so tests
/// can see exactly what toolgate forwarded.
pub async fn start_echo_upstream() -> SocketAddr {
    serve_http(|request: http::Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let mut headers = serde_json::Map::new();
        for name in parts.headers.keys() {
            let values: Vec<&str> =
                parts.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
            headers.insert(name.as_str().to_owned(), serde_json::json!(values.join(", ")));
        }
        let seen = serde_json::json!({
            "jsonrpc": "2.0", "id": 1,
            "result": {
                "method": parts.method.as_str(),
                "uri": parts.uri.to_string(),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            }
        });
        let mut response = http::Response::new(http_body_util::Full::new(Bytes::from(seen.to_string())));
        response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
        response
    })
    .await
}

/// The binary, started with a policy; stderr lines are forwarded to a channel.
pub struct Process {
    pub child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Process {
    pub fn start(policy_file: &std::path::Path) -> Result<Self, BoxError> {
        Self::start_with_format(policy_file, "json")
    }

    /// The binary with `--log-format FORMAT` (`plain` or `json`).
    pub fn start_with_format(policy_file: &std::path::Path, format: &str) -> Result<Self, BoxError> {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate"))
            .args(["--log-format", format, "run", "--config"])
            .arg(policy_file)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// Every stderr line up to and including the first that contains
    /// `wanted`.
    pub fn lines_until(&self, wanted: &str) -> Result<Vec<String>, BoxError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line =
                self.lines.recv_timeout(left).map_err(|_| format!("no line with `{wanted}`: {lines:#?}"))?;
            let done = line.contains(wanted);
            lines.push(line);
            if done {
                return Ok(lines);
            }
        }
    }

    /// The next JSON log line with `message` == `wanted`.
    pub fn wait_for(&self, wanted: &str) -> Result<serde_json::Value, BoxError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).map_err(|_| format!("no `{wanted}` log line"))?;
            let value: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
            if value["message"] == wanted {
                return Ok(value);
            }
        }
    }

    pub fn signal(&self, name: &str) -> Result<(), BoxError> {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()?;
        if status.success() { Ok(()) } else { Err("kill failed".into()) }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The running policy's generation, as the admin listener reports it.
pub async fn generation(admin: SocketAddr) -> u64 {
    send(admin, "GET", "/policy", &[], "").await.json()["generation"].as_u64().unwrap_or(0)
}

/// Waits (up to 10 s) until the policy generation reaches `wanted`.
pub async fn until_generation(admin: SocketAddr, wanted: u64) -> TestResult {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while generation(admin).await < wanted {
        assert!(std::time::Instant::now() < deadline, "the reload never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Writes `files` into `dir` as the kubelet updates a ConfigMap or Secret
/// volume: a new hidden directory, the `..data` symlink swapped to it by a
/// rename, each file a symlink through `..data`, the old directory removed.
pub fn kubelet_swap(dir: &std::path::Path, files: &[(&str, &str)]) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let version = format!("..2026_11_21_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    std::fs::create_dir_all(dir.join(&version)).expect("create the volume's version directory");
    for (name, text) in files {
        std::fs::write(dir.join(&version).join(name), text).expect("write a volume file");
    }
    let previous = std::fs::read_link(dir.join("..data")).ok();
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    std::os::unix::fs::symlink(&version, dir.join("..data_tmp")).expect("link ..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("swap ..data");
    for (name, _) in files {
        if std::fs::symlink_metadata(dir.join(name)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), dir.join(name)).expect("link a volume file");
        }
    }
    if let Some(previous) = previous {
        let _ = std::fs::remove_dir_all(dir.join(previous));
    }
}

/// Reads the next data event from a stream body, as text.
pub async fn next_data(body: &mut hyper::body::Incoming) -> Result<String, BoxError> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), http_body_util::BodyExt::frame(body))
            .await?
            .ok_or("the stream ended")??;
        if let Some(data) = frame.data_ref() {
            let text = String::from_utf8_lossy(data).into_owned();
            if text.contains("data:") {
                return Ok(text);
            }
        }
    }
}
