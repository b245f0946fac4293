//! An answer that must be inspected and cannot be read with certainty is
//! never forwarded. A hostile upstream answers with crafted bytes — encoded,
//! mislabelled, framed so that clients split it differently, with list
//! results where none was asked for — and the client must never receive
//! the hidden tool: either the list arrives filtered, or a JSON-RPC error
//! says the answer was withheld.

mod common;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;

const V0618: (&str, &str) = ("mcp-protocol-version", "2025-06-18");
const LIST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
/// A list answer with one allowed tool and one the policy hides.
const TOOLS: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","inputSchema":{"type":"object"}},{"name":"delete_database","inputSchema":{"type":"object"}}]}}"#;
const HIDDEN: &str = "delete_database";

const ECHO_ONLY: &str = r#"virtual_servers:
  default:
    anonymous: true
    tools: { allow: [echo] }
"#;

/// Toolgate in front of an upstream that answers every request with `head`
/// and `body`; returns what a client gets for `request`.
async fn through(head: &str, body: &[u8], request: &str) -> Reply {
    let upstream = start_raw_upstream(answer(head, body), false).await;
    let gate = start_gate(&policy(upstream, "", ECHO_ONLY)).await;
    let reply = post(gate.addr, &[V0618], request).await;
    gate.shutdown().await;
    reply
}

#[track_caller]
fn assert_withheld(reply: &Reply, case: &str) {
    assert!(!reply.text().contains(HIDDEN), "{case}: the hidden tool reached the client: {}", reply.text());
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{case}: {}", reply.text());
    assert_eq!(reply.json()["id"], 1, "{case}: {}", reply.text());
    assert_eq!(reply.json()["error"]["code"], -32603, "{case}");
    let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("withheld"), "{case}: {message}");
}

#[track_caller]
fn assert_filtered(reply: &Reply, case: &str) -> Value {
    assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.text());
    assert!(!reply.text().contains(HIDDEN), "{case}: the hidden tool reached the client: {}", reply.text());
    assert!(reply.text().contains("\"echo\""), "{case}: the allowed tool is gone: {}", reply.text());
    reply.json()
}

#[tokio::test]
async fn encoded_answers_are_withheld() -> TestResult {
    for encoding in ["gzip", "br", "deflate", "zstd", "x-gzip", "gzip, identity"] {
        let head = format!("HTTP/1.1 200 OK\ncontent-type: application/json\ncontent-encoding: {encoding}");
        assert_withheld(&through(&head, TOOLS.as_bytes(), LIST).await, encoding);
        let head = format!("HTTP/1.1 200 OK\ncontent-type: text/event-stream\ncontent-encoding: {encoding}");
        let event = format!("data: {TOOLS}\n\n");
        assert_withheld(&through(&head, event.as_bytes(), LIST).await, encoding);
    }
    // `identity` is no encoding at all.
    let head = "HTTP/1.1 200 OK\ncontent-type: application/json\ncontent-encoding: identity";
    assert_filtered(&through(head, TOOLS.as_bytes(), LIST).await, "identity");
    Ok(())
}

#[tokio::test]
async fn answers_labelled_as_anything_but_json_or_sse_are_withheld() -> TestResult {
    for head in [
        "HTTP/1.1 200 OK\ncontent-type: application/json-rpc",
        "HTTP/1.1 200 OK\ncontent-type: application/jsonl",
        "HTTP/1.1 200 OK\ncontent-type: application/json5",
        "HTTP/1.1 200 OK\ncontent-type: text/plain",
        "HTTP/1.1 200 OK\ncontent-type: text/event-streamx",
        "HTTP/1.1 200 OK",
        "HTTP/1.1 200 OK\ncontent-type: application/json\ncontent-type: application/json",
        "HTTP/1.1 200 OK\ncontent-type: application/json; charset=utf-7",
        "HTTP/1.1 200 OK\ncontent-type: text/event-stream; charset=utf-16",
        "HTTP/1.1 200 OK\ncontent-type: application/json;;charset=utf-8;charset=cp037",
    ] {
        assert_withheld(&through(head, TOOLS.as_bytes(), LIST).await, head);
    }
    // Media types are case-insensitive, and UTF-8 may be said.
    let head = "HTTP/1.1 200 OK\ncontent-type: Application/JSON; charset=\"UTF-8\"";
    assert_filtered(&through(head, TOOLS.as_bytes(), LIST).await, head);
    Ok(())
}

#[tokio::test]
async fn list_results_are_filtered_in_answers_to_any_request() -> TestResult {
    // A hostile upstream answers `ping` (or a call) with a list result.
    let head = "HTTP/1.1 200 OK\ncontent-type: application/json";
    assert_filtered(&through(head, TOOLS.as_bytes(), PING).await, "json answer to ping");
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#;
    assert_filtered(&through(head, TOOLS.as_bytes(), call).await, "json answer to a call");
    let sse = "HTTP/1.1 200 OK\ncontent-type: text/event-stream";
    let event = format!("event: message\ndata: {TOOLS}\n\n");
    assert_filtered(&through(sse, event.as_bytes(), PING).await, "sse answer to ping");
    // Keys spelled in another case are read by Go clients all the same.
    let upper = TOOLS.replace("\"tools\"", "\"TOOLS\"");
    assert_withheld(&through(head, upper.as_bytes(), PING).await, "TOOLS");
    let long_s = TOOLS.replace("\"tools\"", "\"toolſ\"");
    assert_withheld(&through(head, long_s.as_bytes(), PING).await, "toolſ");
    let second = TOOLS.replace(r#"{"name":"echo","#, r#"{"name":"echo","NAME":"delete_database","#);
    assert_withheld(&through(head, second.as_bytes(), LIST).await, "NAME");
    Ok(())
}

#[tokio::test]
async fn a_leading_byte_order_mark_does_not_hide_an_event() -> TestResult {
    let head = "HTTP/1.1 200 OK\ncontent-type: text/event-stream";
    let stream = format!("\u{feff}event: message\ndata: {TOOLS}\n\n");
    let reply = through(head, stream.as_bytes(), LIST).await;
    assert_filtered(&reply, "BOM");
    assert!(reply.text().starts_with("event: message\n"), "{:?}", reply.text());
    Ok(())
}

#[tokio::test]
async fn events_clients_could_split_differently_reach_them_as_toolgate_read_them() -> TestResult {
    let head = "HTTP/1.1 200 OK\ncontent-type: text/event-stream";
    let list = TOOLS;
    let cases = [
        // A bare CR ends a line for toolgate but not for Go's bufio readers,
        // which then read the "comment" as JSON with a second, last-wins result.
        ("bare CR in an event", "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]},\"zz\"\r:1,\"result\":{\"tools\":[{\"name\":\"delete_database\"}]},\"yy\"\ndata: :0}\n\n".to_owned()),
        // Bare CRs joining two of toolgate's events into one for Go readers.
        ("bare CRs across events", "data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\r\r{\"tools\":[{\"name\":\"delete_database\"}]}}\n\n".to_owned()),
        // Python's httpx (before httpx-sse 0.4.2) ends lines at FF and U+2028 too.
        ("form feed", format!(": keep-alive\x0cdata: {list}\n\n")),
        ("U+2028", format!("event: message\u{2028}data: {list}\ndata: {{}}\n\n")),
        // Readers that strip one BOM would read the data behind a second.
        ("two BOMs", format!("\u{feff}\u{feff}data: {list}\n\n")),
        // eventsource-parser strips these three characters at the start.
        ("ï»¿", format!("ï»¿data: {list}\n\n")),
    ];
    for (case, stream) in cases {
        let reply = through(head, stream.as_bytes(), LIST).await;
        assert_eq!(reply.status, StatusCode::OK, "{case}");
        let text = reply.text();
        assert!(!text.contains(HIDDEN), "{case}: {text:?}");
        assert!(
            !text.contains('\r') && !text.contains('\u{c}') && !text.contains('\u{feff}'),
            "{case}: {text:?}"
        );
        assert!(!text.contains("ï»¿") && !text.contains("data: {\"jsonrpc\"\u{2028}"), "{case}: {text:?}");
    }
    // Line separators inside JSON strings of a data line are read alike.
    let description = TOOLS.replace(r#""inputSchema""#, "\"description\":\"a\u{2028}b\",\"inputSchema\"");
    let reply = through(head, format!("data: {description}\n\n").as_bytes(), LIST).await;
    assert_filtered(&reply, "U+2028 in a string");
    Ok(())
}

#[tokio::test]
async fn a_rewritten_sse_answer_drops_the_upstreams_content_length() -> TestResult {
    // The TypeScript SDK's server (through @hono/node-server) answers short
    // SSE with a Content-Length; a filtered body is shorter.
    let event = format!("event: message\ndata: {TOOLS}\n\n");
    let head = "HTTP/1.1 200 OK\ncontent-type: text/event-stream\ncache-control: no-cache";
    let upstream = start_raw_upstream(answer(head, event.as_bytes()), false).await;
    let gate = start_gate(&policy(upstream, "", ECHO_ONLY)).await;
    let reply = post(gate.addr, &[V0618], LIST).await;
    let body = assert_filtered(&reply, "HTTP/1.1");
    assert!(body.is_null(), "an SSE body");
    assert!(reply.headers.get("content-length").is_none_or(|l| l == reply.body.len().to_string().as_str()));

    // Over HTTP/2 a wrong length is a stream error.
    let stream = tokio::net::TcpStream::connect(gate.addr).await?;
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(connection);
    let request = http::Request::post(format!("http://{}/mcp", gate.addr))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18")
        .body(http_body_util::Full::new(Bytes::from_static(LIST.as_bytes())))?;
    let response = sender.send_request(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("\"echo\"") && !text.contains(HIDDEN), "{text}");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn what_needs_no_reading_passes_untouched() -> TestResult {
    // Error statuses are the upstream's to say, in its own words.
    let reply = through("HTTP/1.1 400 Bad Request\ncontent-type: text/plain", b"no such session", PING).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.text(), "no such session");
    // An accepted notification has no body to read, labelled or not.
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    let reply = through("HTTP/1.1 202 Accepted", b"", note).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let reply = through("HTTP/1.1 202 Accepted\ntransfer-encoding: chunked", b"0\r\n\r\n", note).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    Ok(())
}

#[tokio::test]
async fn answers_framed_so_that_readers_could_end_them_differently_are_withheld() -> TestResult {
    let chunked = format!("{:x}\r\n{TOOLS}\r\n0\r\n\r\n", TOOLS.len());
    for (head, body) in [
        (
            "HTTP/1.1 200 OK\ncontent-type: application/json\ntransfer-encoding: chunked\ncontent-length: 20",
            chunked.clone(),
        ),
        (
            "HTTP/1.1 200 OK\ncontent-type: application/json\ntransfer-encoding: gzip, chunked",
            chunked.clone(),
        ),
        (
            "HTTP/1.1 200 OK\ncontent-type: application/json\ntransfer-encoding: chunked\ntransfer-encoding: chunked",
            chunked.clone(),
        ),
        (
            &*format!(
                "HTTP/1.1 200 OK\ncontent-type: application/json\ncontent-length: {}\ncontent-length: 20",
                TOOLS.len()
            ),
            TOOLS.to_owned(),
        ),
        ("HTTP/1.0 200 OK\ncontent-type: application/json\ntransfer-encoding: chunked", chunked.clone()),
        (
            "HTTP/1.1 200 OK\ncontent-type: application/json\ntransfer-encoding: chunked",
            chunked.replace("\r\n0\r\n", "\n0\r\n"),
        ),
        (
            "HTTP/1.1 200 OK\ncontent-type: application/json\ntransfer-encoding: chunked",
            format!("0x{chunked}"),
        ),
    ] {
        let reply = through(head, body.as_bytes(), LIST).await;
        assert_withheld(&reply, head);
    }
    Ok(())
}
