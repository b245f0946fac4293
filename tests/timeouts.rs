//! How long toolgate waits for the upstream: connecting is bounded by
//! `upstream.connect_timeout`, and the answer's head by a response timeout
//! that is long by default and may be set per virtual server and per tool —
//! so a JSON-mode upstream running a long tool is answered, not cut off.
//! Errors for a request carry its id.

mod common;

use common::*;
use http::StatusCode;
use std::time::{Duration, Instant};

/// An upstream that answers every call after `delay`, in JSON.
async fn slow_upstream(delay: Duration) -> std::net::SocketAddr {
    serve_http(move |request: http::Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let id =
            serde_json::from_slice::<serde_json::Value>(&body).map(|v| v["id"].clone()).unwrap_or_default();
        tokio::time::sleep(delay).await;
        let answer = serde_json::json!({ "jsonrpc": "2.0", "id": id, "result": { "content": [] } });
        let mut response =
            http::Response::new(http_body_util::Full::new(bytes::Bytes::from(answer.to_string())));
        response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
        response
    })
    .await
}

fn call(id: u32, tool: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}"}}}}"#)
}

const V0618: (&str, &str) = ("mcp-protocol-version", "2025-06-18");

#[tokio::test]
async fn a_long_tool_is_answered_within_its_own_timeout() -> TestResult {
    let upstream = slow_upstream(Duration::from_millis(1200)).await;
    let servers = r#"virtual_servers:
  default:
    anonymous: true
    tools: { allow: ["*"] }
    tool_timeouts:
      - { tools: ["slow_*"], response_timeout: 10s }
"#;
    // A short connect timeout and a short default: neither cuts the tool.
    let text = policy(upstream, "", servers)
        .replace("response_timeout: 5s", "connect_timeout: 200ms\n  response_timeout: 600ms");
    let gate = start_gate(&text).await;

    let started = Instant::now();
    let reply = post(gate.addr, &[V0618], &call(7, "slow_report")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json()["id"], 7);
    assert!(started.elapsed() >= Duration::from_millis(1200));

    // Any other tool is held to the default, and the 504 carries its id.
    let reply = post(gate.addr, &[V0618], &call(8, "report")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{}", reply.text());
    assert_eq!(reply.json()["id"], 8, "{}", reply.text());
    assert!(reply.text().contains("within 600 ms"), "{}", reply.text());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_virtual_server_may_wait_longer_than_the_upstream_default() -> TestResult {
    let upstream = slow_upstream(Duration::from_millis(800)).await;
    let servers = "virtual_servers:\n  default:\n    anonymous: true\n    tools: { allow: ['*'] }\n  batch:\n    anonymous: true\n    response_timeout: 5s\n    tools: { allow: ['*'] }\n";
    let text = policy(upstream, "", servers)
        .replace("response_timeout: 5s\ntransport", "response_timeout: 300ms\ntransport");
    let gate = start_gate(&text).await;
    let headers = [POST_HEADERS, &[V0618]].concat();
    let reply = send(gate.addr, "POST", "/servers/batch/mcp", &headers, call(1, "x")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let reply = post(gate.addr, &[V0618], &call(2, "x")).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn errors_for_a_request_carry_its_id() -> TestResult {
    // An upstream that is not there: 502 with the request's id.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let gate = start_gate(&policy(closed, "", "")).await;
    let reply = post(gate.addr, &[V0618], &call(41, "x")).await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    assert_eq!(reply.json()["id"], 41);
    // A session toolgate does not know: 404 with the request's id.
    let reply = post(gate.addr, &[V0618, ("mcp-session-id", "nope")], &call(42, "x")).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.json()["id"], 42, "{}", reply.text());
    // A string id is carried as a string.
    let reply = post(gate.addr, &[V0618], r#"{"jsonrpc":"2.0","id":"a-1","method":"ping"}"#).await;
    assert_eq!(reply.json()["id"], "a-1");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_old_single_timeout_is_refused_with_directions() -> TestResult {
    let dir = scratch_dir();
    let file = dir.join("policy.yaml");
    std::fs::write(
        &file,
        "version: 1\nupstream: { url: http://127.0.0.1:1/mcp, timeout: 30s }\nvirtual_servers:\n  default: { anonymous: true }\n",
    )?;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_toolgate")).arg("check").arg(&file).output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("connect_timeout") && err.contains("response_timeout"), "{err}");
    Ok(())
}
