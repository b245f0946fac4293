//! No client can exhaust toolgate: connections that say nothing, idle ones,
//! bodies trickled a byte at a time and more connections than it serves
//! are all bounded in time, and bodies built to be slow to parse are
//! answered promptly. These are behaviour tests with generous margins, not
//! benchmarks.

mod common;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// Toolgate with the given `listen` and `transport` settings in front of
/// the echo upstream.
async fn gate_with(listen: &str, transport: &str) -> Gate {
    let upstream = start_echo_upstream().await;
    let text = policy(upstream, transport, "")
        .replace("listen:\n  drain: 5s\n", &format!("listen:\n  drain: 5s\n{listen}"));
    start_gate(&text).await
}

/// How long until the server closes `stream` (reading and discarding
/// whatever it sends), or `None` if it is still open after `limit`.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_connection_that_says_nothing_is_closed() -> TestResult {
    let gate = gate_with("  handshake_timeout: 300ms\n", "").await;
    let mut silent = TcpStream::connect(gate.addr).await?;
    let closed = closed_after(&mut silent, Duration::from_secs(5)).await.ok_or("still open after 5 s")?;
    assert!(closed >= Duration::from_millis(250), "{closed:?}");
    // Half an HTTP/2 preface, then nothing.
    let mut half = TcpStream::connect(gate.addr).await?;
    half.write_all(b"PRI * HTTP/2.0\r\n").await?;
    closed_after(&mut half, Duration::from_secs(5)).await.ok_or("a half preface kept it open")?;
    assert_eq!(post(gate.addr, &[], PING).await.status, StatusCode::OK, "and everyone else is served");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn idle_connections_are_closed_http1_and_h2c() -> TestResult {
    let gate = gate_with("  idle_timeout: 500ms\n", "").await;
    // HTTP/1.1: one request, then silence.
    let mut http1 = TcpStream::connect(gate.addr).await?;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n{PING}",
        gate.addr,
        PING.len()
    );
    http1.write_all(request.as_bytes()).await?;
    let closed = closed_after(&mut http1, Duration::from_secs(5))
        .await
        .ok_or("an idle HTTP/1.1 connection stayed open")?;
    assert!(closed >= Duration::from_millis(400), "{closed:?}");

    // h2c: the preface and settings, then silence.
    let stream = TcpStream::connect(gate.addr).await?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await?;
    let ended = tokio::spawn(connection);
    let request = http::Request::post(format!("http://{}/mcp", gate.addr))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(http_body_util::Full::new(Bytes::from_static(PING.as_bytes())))?;
    assert_eq!(sender.send_request(request).await?.status(), StatusCode::OK);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), ended)
        .await
        .map_err(|_| "an idle h2c connection stayed open")??
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(400), "{:?}", started.elapsed());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_body_trickled_byte_by_byte_is_cut_off() -> TestResult {
    let gate = gate_with("", "  body_timeout: 400ms").await;
    let mut slow = TcpStream::connect(gate.addr).await?;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n",
        gate.addr,
        PING.len()
    );
    slow.write_all(head.as_bytes()).await?;
    let started = Instant::now();
    let trickle = async {
        for byte in PING.bytes() {
            if slow.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(800), trickle).await;
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut answer)).await??;
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 400 ms"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn past_the_connection_cap_new_clients_wait_for_a_free_slot() -> TestResult {
    let gate = gate_with("  max_connections: 3\n  handshake_timeout: 1s\n", "").await;
    // Three connections hold every slot, saying nothing.
    let mut holders = Vec::new();
    for _ in 0..3 {
        holders.push(TcpStream::connect(gate.addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A fourth client waits, then is served once the silent ones are closed.
    let started = Instant::now();
    let reply = post(gate.addr, &[], PING).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(500), "served before a slot was free: {waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // The process serves on.
    assert_eq!(post(gate.addr, &[], PING).await.status, StatusCode::OK);
    gate.shutdown().await;
    Ok(())
}

async fn timed(addr: SocketAddr, body: String) -> (Reply, Duration) {
    let started = Instant::now();
    let reply = post(addr, &[("mcp-protocol-version", "2025-06-18")], &body).await;
    (reply, started.elapsed())
}

#[tokio::test]
async fn bodies_built_to_be_slow_to_parse_are_answered_promptly() -> TestResult {
    let gate = gate_with("", "  max_body: 8MiB").await;
    let keys = |n: usize| (0..n).map(|i| format!(",\"k{i}\":0")).collect::<String>();
    // 80,000 distinct keys (1 MiB) in the envelope: refused.
    let (reply, took) =
        timed(gate.addr, format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping"{}}}"#, keys(80_000))).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text());
    assert!(took < Duration::from_secs(1), "80k keys took {took:?}");
    // The same in params: refused.
    let (reply, took) = timed(
        gate.addr,
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"a":0{}}}}}"#, keys(80_000)),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(took < Duration::from_secs(1), "{took:?}");
    // 320,000 keys (4 MiB) in a tool's arguments, which policy does not read: judged and forwarded.
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"echo","arguments":{{"a":0{}}}}}}}"#,
        keys(320_000)
    );
    let (reply, took) = timed(gate.addr, body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", &reply.text()[..200.min(reply.text().len())]);
    assert!(took < Duration::from_secs(3), "4 MiB took {took:?}");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn at_the_cap_idle_connections_make_way_for_new_clients() -> TestResult {
    let gate = gate_with("  max_connections: 3\n  idle_timeout: 60s\n", "").await;
    // Three keep-alive connections, each idle after one request.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(gate.addr).await?;
        let request = format!(
            "POST /mcp HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\ncontent-length: {}\r\n\r\n{PING}",
            gate.addr,
            PING.len()
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = [0u8; 2048];
        let _ = stream.read(&mut answer).await?;
        held.push(stream);
    }
    // A fourth client is served within seconds, not after the 60 s idle timeout.
    let started = Instant::now();
    let reply = post(gate.addr, &[], PING).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() -> TestResult {
    let (upstream, mut streams) = start_scripted_sse_upstream().await;
    let text = policy(upstream, "", "")
        .replace("listen:\n  drain: 5s\n", "listen:\n  drain: 5s\n  idle_timeout: 1s\n");
    let gate = start_gate(&text).await;
    // A GET stream whose client reads nothing while events keep coming.
    let mut client = TcpStream::connect(gate.addr).await?;
    let request = format!("GET /mcp HTTP/1.1\r\nhost: {}\r\naccept: text/event-stream\r\n\r\n", gate.addr);
    client.write_all(request.as_bytes()).await?;
    let sender = tokio::time::timeout(Duration::from_secs(10), streams.recv()).await?.ok_or("no request")?;
    let event = Bytes::from(format!(
        "data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"data\":\"{}\"}}}}\n\n",
        "x".repeat(64 << 10)
    ));
    let started = Instant::now();
    let mut sent = 0usize;
    let cut = loop {
        match tokio::time::timeout(Duration::from_secs(1), sender.send(event.clone())).await {
            Ok(Ok(())) => sent += event.len(),
            // The upstream stream's receiver is gone: toolgate let go of it.
            Ok(Err(_)) => break true,
            // Backpressure all the way: keep waiting for toolgate to act.
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(15) {
            break false;
        }
    };
    assert!(cut, "the stalled connection was never closed ({sent} bytes sent)");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    drop(client);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_upstream_that_never_finishes_its_answer_is_cut_off() -> TestResult {
    // A head promptly, then part of the body and silence: whether toolgate
    // reads the body to judge it (JSON) or only to see that it is empty
    // (a type it cannot read), the response timeout bounds the whole wait.
    for content_type in ["text/plain", "application/json"] {
        let head = format!("HTTP/1.1 200 OK\ncontent-type: {content_type}\ncontent-length: 1000");
        let upstream = start_raw_upstream(answer(&head, b"{\"jsonrpc\""), true).await;
        let text = policy(upstream, "", "").replace("response_timeout: 5s", "response_timeout: 400ms");
        let gate = start_gate(&text).await;
        let started = Instant::now();
        let reply = tokio::time::timeout(Duration::from_secs(5), post(gate.addr, &[], PING))
            .await
            .map_err(|_| format!("{content_type}: still waiting after 5 s"))?;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{content_type}: {}", reply.text());
        assert!(started.elapsed() >= Duration::from_millis(350), "{content_type}: {:?}", started.elapsed());
        gate.shutdown().await;
    }
    Ok(())
}

/// The threads a process runs now.
#[cfg(target_os = "linux")]
fn threads(pid: u32) -> Result<usize, BoxError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find_map(|line| line.strip_prefix("Threads:")).ok_or("no Threads line")?;
    Ok(line.trim().parse()?)
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_flood_of_large_lists_is_judged_a_few_at_a_time() -> TestResult {
    // Over 64 KiB, so judged off the runtime's workers; the memo is off,
    // so every answer is filtered afresh.
    let description = "a tool of a large catalogue ".repeat(40);
    let tools: Vec<serde_json::Value> = (0..120)
        .map(|n| serde_json::json!({ "name": format!("tool_{n:03}"), "description": description }))
        .collect();
    let answer = serde_json::json!({ "jsonrpc": "2.0", "id": 1, "result": { "tools": tools } }).to_string();
    assert!(answer.len() > 128 << 10);
    let answer = Bytes::from(answer);
    let upstream = serve_http(move |_request: http::Request<hyper::body::Incoming>| {
        let mut response = http::Response::new(http_body_util::Full::new(answer.clone()));
        response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
        std::future::ready(response)
    })
    .await;
    let servers = "virtual_servers:\n  default:\n    anonymous: true\n    tools: { allow: [\"tool_0*\"] }\n";
    let policy_file = scratch_dir().join("policy.yaml");
    std::fs::write(&policy_file, policy(upstream, "  list_memo: 0", servers))?;
    let process = Process::start(&policy_file)?;
    let listening = process.wait_for("toolgate listening")?;
    let addr: SocketAddr = listening["proxy"].as_str().ok_or("no proxy")?.parse()?;
    let before = threads(process.child.id())?;

    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let flood = (0..48).map(|_| tokio::spawn(async move { post(addr, &[], list).await }));
    for reply in flood.collect::<Vec<_>>() {
        let reply = reply.await?;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["result"]["tools"].as_array().map(Vec::len), Some(100));
    }
    // The blocking pool keeps the threads it started for a while after.
    let cores = std::thread::available_parallelism()?.get();
    let after = threads(process.child.id())?;
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", process.child.id()))?
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .collect();
    assert!(
        after <= before + cores,
        "{before} threads before 48 large lists at once, {after} after: {names:?}"
    );
    Ok(())
}
