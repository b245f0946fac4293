//! The upstream connection pool: a connection serves exchange after
//! exchange whatever the kind of answer (it comes back when the answer has
//! been read to its end), one the upstream closed while idle is not used,
//! a request the upstream has read is never sent a second time, and over
//! HTTP/2 one client's many slow exchanges leave room for everyone else's.

mod common;

use common::*;
use http::StatusCode;

const V0618: (&str, &str) = ("mcp-protocol-version", "2025-06-18");
const CALL: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const NOTIFICATION: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
const RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}"#;
const TOOLS: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"delete_database","inputSchema":{"type":"object"}}]}}"#;

const ECHO_ONLY: &str = r#"virtual_servers:
  default:
    anonymous: true
    tools: { allow: [echo] }
"#;

fn chunked(body: &str) -> Vec<u8> {
    format!("{:x}\r\n{body}\r\n0\r\n\r\n", body.len()).into_bytes()
}

fn with_trailer(body: &str) -> Vec<u8> {
    format!("{:x}\r\n{body}\r\n0\r\nx-checksum: 1\r\n\r\n", body.len()).into_bytes()
}

#[tokio::test]
async fn one_connection_serves_every_kind_of_answer_in_turn() -> TestResult {
    let sse = format!("event: message\ndata: {RESULT}\n\n");
    let sse_list = format!("event: message\ndata: {TOOLS}\n\n");
    let json = "HTTP/1.1 200 OK\ncontent-type: application/json";
    let stream = "HTTP/1.1 200 OK\ncontent-type: text/event-stream";
    let chunked_stream = "HTTP/1.1 200 OK\ncontent-type: text/event-stream\ntransfer-encoding: chunked";
    let cases: Vec<(&str, Vec<u8>, &str, StatusCode)> = vec![
        ("a JSON answer", kept_alive_answer(json, RESULT.as_bytes()), CALL, StatusCode::OK),
        ("SSE with a length", kept_alive_answer(stream, sse.as_bytes()), CALL, StatusCode::OK),
        ("chunked SSE", kept_alive_answer(chunked_stream, &chunked(&sse)), CALL, StatusCode::OK),
        (
            "chunked SSE with trailers",
            kept_alive_answer(&format!("{chunked_stream}\ntrailer: x-checksum"), &with_trailer(&sse)),
            CALL,
            StatusCode::OK,
        ),
        ("a JSON list, filtered", kept_alive_answer(json, TOOLS.as_bytes()), LIST, StatusCode::OK),
        (
            "a chunked SSE list, filtered",
            kept_alive_answer(chunked_stream, &chunked(&sse_list)),
            LIST,
            StatusCode::OK,
        ),
        ("202, no body", kept_alive_answer("HTTP/1.1 202 Accepted", b""), NOTIFICATION, StatusCode::ACCEPTED),
        (
            "a 500",
            kept_alive_answer("HTTP/1.1 500 Internal Server Error\ncontent-type: text/plain", b"oops"),
            CALL,
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ];
    for (case, reply, request, status) in cases {
        let upstream = start_kept_alive_upstream(reply, usize::MAX, Then::Serve).await;
        let gate = start_gate(&policy(upstream.addr, "", ECHO_ONLY)).await;
        for round in 0..4 {
            let reply = post(gate.addr, &[V0618], request).await;
            assert_eq!(reply.status, status, "{case}, round {round}: {}", reply.text());
            assert!(!reply.text().contains("delete_database"), "{case}: {}", reply.text());
        }
        assert_eq!(upstream.requests(), 4, "{case}");
        assert_eq!(upstream.connections(), 1, "{case}: the connection was not reused");
        gate.shutdown().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() -> TestResult {
    let reply = kept_alive_answer("HTTP/1.1 200 OK\ncontent-type: application/json", RESULT.as_bytes());
    let upstream = start_kept_alive_upstream(reply, 1, Then::Close).await;
    let gate = start_gate(&policy(upstream.addr, "", ECHO_ONLY)).await;
    for round in 0..5 {
        let reply = post(gate.addr, &[V0618], CALL).await;
        assert_eq!(reply.status, StatusCode::OK, "round {round}: {}", reply.text());
        // The upstream closes its end while the connection sits idle.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(upstream.requests(), 5);
    assert_eq!(upstream.connections(), 5);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_request_the_upstream_read_is_never_sent_twice() -> TestResult {
    // The second request on a kept-alive connection is read, then the
    // upstream closes without answering: resending it could run a tool
    // twice, so the client is told the upstream failed.
    let reply = kept_alive_answer("HTTP/1.1 200 OK\ncontent-type: application/json", RESULT.as_bytes());
    let upstream = start_kept_alive_upstream(reply, 1, Then::ReadAndClose).await;
    let gate = start_gate(&policy(upstream.addr, "", ECHO_ONLY)).await;
    assert_eq!(post(gate.addr, &[V0618], CALL).await.status, StatusCode::OK);
    let failed = post(gate.addr, &[V0618], CALL).await;
    assert_eq!(failed.status, StatusCode::BAD_GATEWAY, "{}", failed.text());
    assert_eq!(failed.rpc_code(), Some(-32603), "{}", failed.text());
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(upstream.requests(), 2, "the request was sent again");
    assert_eq!(upstream.connections(), 1);
    // The proxy goes on serving: the next request gets a new connection.
    assert_eq!(post(gate.addr, &[V0618], CALL).await.status, StatusCode::OK);
    assert_eq!(upstream.connections(), 2);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_exchanges_that_fill_an_http2_connection_do_not_hold_up_others() -> TestResult {
    use common::tls::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // An HTTP/2 upstream (hyper: 200 streams per connection) that holds
    // `slow` calls until released and answers the others at once.
    let ca = Ca::new("upstream CA");
    let seen = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let counted = seen.clone();
    let upstream = serve_https(
        &ca.server(&["localhost"]),
        None,
        move |request: http::Request<hyper::body::Incoming>| {
            let (seen, mut released) = (counted.clone(), released.clone());
            async move {
                use http_body_util::BodyExt;
                let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                seen.fetch_add(1, Ordering::SeqCst);
                if String::from_utf8_lossy(&body).contains("slow") {
                    let _ = released.wait_for(|go| *go).await;
                }
                let mut answer = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(RESULT)));
                answer
                    .headers_mut()
                    .insert("content-type", http::HeaderValue::from_static("application/json"));
                answer
            }
        },
    )
    .await;
    let dir = scratch_dir();
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    let text = format!(
        "version: 1\nupstream:\n  url: https://localhost:{}/mcp\n  response_timeout: 30s\n  tls:\n    ca_file: ca.pem\ntransport:\n  allowed_hosts: [localhost, 127.0.0.1]\n{ECHO_ONLY}",
        upstream.port()
    );
    std::fs::write(dir.join("policy.yaml"), text)?;
    let gate = start_gate_with_file(&dir.join("policy.yaml")).await;

    // 210 slow calls: more than one upstream connection can carry.
    let slow = CALL.replace("\"arguments\":{}", "\"arguments\":{\"mode\":\"slow\"}");
    let calls: Vec<_> = (0..210)
        .map(|_| {
            let slow = slow.clone();
            tokio::spawn(async move { post(gate.addr, &[V0618], &slow).await.status })
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while seen.load(Ordering::SeqCst) < 210 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        210,
        "slow calls queued inside toolgate instead of reaching the upstream"
    );
    // Another client's call is answered while they are all still held.
    let quick =
        tokio::time::timeout(std::time::Duration::from_secs(10), post(gate.addr, &[V0618], CALL)).await?;
    assert_eq!(quick.status, StatusCode::OK, "{}", quick.text());
    let _ = release.send(true);
    for call in calls {
        assert_eq!(call.await?, StatusCode::OK);
    }
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_reload_to_another_upstream_sends_there_and_keeps_both_pools_warm() -> TestResult {
    let reply = kept_alive_answer("HTTP/1.1 200 OK\ncontent-type: application/json", RESULT.as_bytes());
    let (a, b) = (
        start_kept_alive_upstream(reply.clone(), usize::MAX, Then::Serve).await,
        start_kept_alive_upstream(reply, usize::MAX, Then::Serve).await,
    );
    let gate = start_gate(&policy(a.addr, "", ECHO_ONLY)).await;
    let mut wanted = generation(gate.admin).await;
    for (round, upstream) in [&a, &b, &a, &b].into_iter().enumerate() {
        if round > 0 {
            std::fs::write(&gate.policy_file, policy(upstream.addr, "", ECHO_ONLY))?;
            wanted += 1;
            until_generation(gate.admin, wanted).await?;
        }
        let before = upstream.requests();
        assert_eq!(post(gate.addr, &[V0618], CALL).await.status, StatusCode::OK, "round {round}");
        assert_eq!(upstream.requests(), before + 1, "round {round}: the call went elsewhere");
    }
    // Going back and forth (requests admitted before a reload still on
    // their way) does not throw either pool's connections away.
    assert_eq!((a.connections(), b.connections()), (1, 1));
    gate.shutdown().await;
    Ok(())
}
