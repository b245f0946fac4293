//! The upstream connection pool: a connection serves exchange after
//! exchange whatever the kind of answer (it comes back when the answer has
//! been read to its end), one the upstream closed while idle is not used,
//! and a request the upstream has read is never sent a second time.

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
