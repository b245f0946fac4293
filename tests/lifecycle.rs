//! The process around the proxy: admin endpoints, metrics, graceful drain
//! (in-process and as the real binary receiving SIGTERM), and logs.

mod common;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::BodyExt;

use std::time::Duration;

#[tokio::test]
async fn health_readiness_and_metrics() -> TestResult {
    let (_upstream, gate) = start_pair(true).await;
    assert_eq!(send(gate.admin, "GET", "/healthz", &[], "").await.status, StatusCode::OK);
    assert_eq!(send(gate.admin, "GET", "/readyz", &[], "").await.status, StatusCode::OK);
    assert_eq!(send(gate.admin, "GET", "/nope", &[], "").await.status, StatusCode::NOT_FOUND);

    assert_eq!(post(gate.addr, &[], INITIALIZE).await.status, StatusCode::OK);
    assert_eq!(
        post(gate.addr, &[("origin", "http://evil.com")], INITIALIZE).await.status,
        StatusCode::FORBIDDEN
    );
    let metrics = send(gate.admin, "GET", "/metrics", &[], "").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let content_type = metrics.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
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
        open(addr, "POST", "/mcp", POST_0618, http_body_util::Full::new(Bytes::from_static(body))).await
    });
    let upstream =
        tokio::time::timeout(Duration::from_secs(10), streams.recv()).await?.ok_or("no request")?;
    upstream
        .send(Bytes::from_static(
            b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n",
        ))
        .await?;
    let mut body = response.await??.into_body();
    let first =
        tokio::time::timeout(Duration::from_secs(10), body.frame()).await?.ok_or("no first event")??;
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
    assert!(tokio::net::TcpStream::connect(proxy).await.is_err(), "the proxy port is closed");
    assert!(!shutdown.is_finished(), "shutdown waits for the open request");

    upstream.send(Bytes::from_static(LAST_EVENT)).await?;
    drop(upstream);
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect()).await??.to_bytes();
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
    println!("shutdown with a stream that never ends took {:?} (drain: 200ms)", started.elapsed());
    // The upstream never ends its stream; toolgate's drain period did.
    let ended = tokio::time::timeout(Duration::from_secs(5), body.collect()).await;
    assert!(ended.is_ok(), "the client's stream is closed once the drain period is over");
    Ok(())
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
    assert_eq!(post(addr, &[("origin", "null")], "{}").await.status, StatusCode::FORBIDDEN);
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
    let rest = tokio::time::timeout(Duration::from_secs(10), body.collect()).await??.to_bytes();
    assert_eq!(&rest[..], LAST_EVENT);
    process.wait_for("drained")?;
    let status = tokio::task::spawn_blocking(move || process.child.wait()).await??;
    assert!(status.success(), "exit status {status}");
    Ok(())
}
