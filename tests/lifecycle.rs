//! The process around the proxy: admin endpoints, metrics, graceful drain
//! (in-process and as the real binary receiving SIGTERM), and logs.

mod common;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn health_readiness_and_metrics() -> TestResult {
    let (_upstream, gate) = start_pair(true).await;
    assert_eq!(
        send(gate.admin, "GET", "/healthz", &[], "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(gate.admin, "GET", "/readyz", &[], "").await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(gate.admin, "GET", "/nope", &[], "").await.status,
        StatusCode::NOT_FOUND
    );

    assert_eq!(post(gate.addr, &[], INITIALIZE).await.status, StatusCode::OK);
    assert_eq!(
        post(gate.addr, &[("origin", "http://evil.com")], INITIALIZE)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let metrics = send(gate.admin, "GET", "/metrics", &[], "").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let content_type = metrics
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let text = metrics.text();
    for expected in [
        r#"toolgate_requests_total{http_method="POST",rpc_method="initialize",status="200"} 1"#,
        r#"toolgate_requests_total{http_method="POST",rpc_method="",status="403"} 1"#,
        r#"toolgate_refusals_total{reason="origin"} 1"#,
        r#"toolgate_upstream_duration_seconds_count{outcome="ok"} 1"#,
        "toolgate_request_duration_seconds_count 2",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in\n{text}");
    }
    gate.shutdown().await;
    Ok(())
}

/// Opens a POST whose SSE answer the test controls; returns the upstream's
/// body sender and the client's response body after the first event.
async fn open_stream(
    gate: &Gate,
    streams: &mut tokio::sync::mpsc::Receiver<Sender>,
) -> Result<(Sender, hyper::body::Incoming), BoxError> {
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"slow"}}"#;
    let addr = gate.addr;
    let response = tokio::spawn(async move {
        open(
            addr,
            "POST",
            "/mcp",
            POST_0618,
            http_body_util::Full::new(Bytes::from_static(body)),
        )
        .await
    });
    let upstream = tokio::time::timeout(Duration::from_secs(10), streams.recv())
        .await?
        .ok_or("no request")?;
    upstream
        .send(Bytes::from_static(
            b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n",
        ))
        .await?;
    let mut body = response.await??.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await?
        .ok_or("no first event")??;
    assert!(first.data_ref().is_some());
    Ok((upstream, body))
}

const LAST_EVENT: &[u8] = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() -> TestResult {
    let (upstream_addr, mut streams) = start_scripted_sse_upstream().await;
    let gate = start_gate(&policy(upstream_addr, "", "")).await;
    let (proxy, admin) = (gate.addr, gate.admin);
    let (upstream, body) = open_stream(&gate, &mut streams).await?;

    let shutdown = tokio::spawn(gate.shutdown());
    // Draining: not ready, no new connections, but the open stream goes on.
    let mut drained = false;
    for _ in 0..100 {
        if send(admin, "GET", "/readyz", &[], "").await.status == StatusCode::SERVICE_UNAVAILABLE {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(drained, "/readyz turns 503 while draining");
    assert!(
        tokio::net::TcpStream::connect(proxy).await.is_err(),
        "the proxy port is closed"
    );
    assert!(!shutdown.is_finished(), "shutdown waits for the open request");

    upstream.send(Bytes::from_static(LAST_EVENT)).await?;
    drop(upstream);
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await??
        .to_bytes();
    assert_eq!(&rest[..], LAST_EVENT, "the in-flight answer completes");
    tokio::time::timeout(Duration::from_secs(10), shutdown).await??;
    Ok(())
}

#[tokio::test]
async fn the_drain_period_bounds_shutdown() -> TestResult {
    let (upstream_addr, mut streams) = start_scripted_sse_upstream().await;
    let text = policy(upstream_addr, "", "").replace("drain: 5s", "drain: 200ms");
    let gate = start_gate(&text).await;
    let (_upstream, body) = open_stream(&gate, &mut streams).await?;
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), gate.shutdown()).await?;
    println!(
        "shutdown with a stream that never ends took {:?} (drain: 200ms)",
        started.elapsed()
    );
    // The upstream never ends its stream; toolgate's drain period did.
    let ended = tokio::time::timeout(Duration::from_secs(5), body.collect()).await;
    assert!(
        ended.is_ok(),
        "the client's stream is closed once the drain period is over"
    );
    Ok(())
}

/// The binary, started with a policy; stderr lines are forwarded to a channel.
struct Process {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Process {
    fn start(policy_file: &std::path::Path) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_toolgate"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(policy_file)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// The next JSON log line with `message` == `wanted`.
    fn wait_for(&self, wanted: &str) -> Result<serde_json::Value, Box<dyn std::error::Error + Send + Sync>> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .map_err(|_| format!("no `{wanted}` log line"))?;
            let value: serde_json::Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
            if value["message"] == wanted {
                return Ok(value);
            }
        }
    }

    fn signal(&self, name: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err("kill failed".into())
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn the_binary_drains_on_sigterm_and_logs_each_request() -> TestResult {
    let (upstream_addr, mut streams) = start_scripted_sse_upstream().await;
    let dir = scratch_dir();
    let policy_file = dir.join("policy.yaml");
    std::fs::write(&policy_file, policy(upstream_addr, "", ""))?;
    let mut process = Process::start(&policy_file)?;
    let listening = process.wait_for("toolgate listening")?;
    let addr: std::net::SocketAddr = listening["proxy"].as_str().ok_or("no proxy field")?.parse()?;
    let admin: std::net::SocketAddr = listening["admin"].as_str().ok_or("no admin field")?.parse()?;

    // One refused request: its log line carries method, status and duration.
    assert_eq!(
        post(addr, &[("origin", "null")], "{}").await.status,
        StatusCode::FORBIDDEN
    );
    let line = process.wait_for("request")?;
    assert_eq!(line["method"], "POST");
    assert_eq!(line["status"], 403);
    assert_eq!(line["refusal"], "origin");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");

    let gate = Gate::external(addr, admin);
    let (upstream, body) = open_stream(&gate, &mut streams).await?;
    process.signal("TERM")?;
    process.wait_for("shutting down: no new connections, draining in-flight requests")?;
    upstream.send(Bytes::from_static(LAST_EVENT)).await?;
    drop(upstream);
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await??
        .to_bytes();
    assert_eq!(&rest[..], LAST_EVENT);
    process.wait_for("drained")?;
    let status = tokio::task::spawn_blocking(move || process.child.wait()).await??;
    assert!(status.success(), "exit status {status}");
    Ok(())
}
