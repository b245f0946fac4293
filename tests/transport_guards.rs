//! Every transport guard, with hostile inputs, over raw HTTP. Each refusal
//! must carry the status the MCP specification asks for and a JSON-RPC
//! error body, and toolgate must keep serving afterwards.

mod common;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use serde_json::Value;

async fn echo_gate(transport: &str) -> Gate {
    let upstream = start_echo_upstream().await;
    start_gate(&policy(upstream, transport, "")).await
}

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
const V0618: (&str, &str) = ("mcp-protocol-version", "2025-06-18");

#[track_caller]
fn assert_refused(reply: &Reply, status: StatusCode, code: i64) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.rpc_code(), Some(code), "{}", reply.text());
    assert_eq!(reply.json()["jsonrpc"], "2.0", "{}", reply.text());
    assert!(reply.json()["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    let content_type = reply.headers.get("content-type").and_then(|v| v.to_str().ok());
    assert_eq!(content_type, Some("application/json"));
}

#[track_caller]
fn assert_forwarded(reply: &Reply) -> Value {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let seen = reply.json()["result"].clone();
    assert!(seen.get("headers").is_some(), "not the upstream's answer: {}", reply.text());
    seen
}

#[tokio::test]
async fn hostile_hosts_are_refused() -> TestResult {
    let gate = echo_gate("").await;
    for host in ["evil.example.com", "localhost.evil.com", "evil.com@localhost", "127.0.0.1.nip.io"] {
        let reply = send(gate.addr, "POST", "/mcp", &[&[("host", host)], POST_HEADERS].concat(), PING).await;
        assert_refused(&reply, StatusCode::FORBIDDEN, -32600);
        assert_eq!(reply.json()["id"], Value::Null, "no id on a transport refusal");
    }
    // Allowed names pass, on any port and in any case.
    for host in ["localhost:1234", "LOCALHOST", "127.0.0.1"] {
        let reply = send(gate.addr, "POST", "/mcp", &[&[("host", host)], POST_HEADERS].concat(), PING).await;
        assert_forwarded(&reply);
    }
    // Raw requests: mixed-case header name, and two Host headers.
    let (status, text) = raw(
        gate.addr,
        b"POST /mcp HTTP/1.1\r\nhOsT: evil.example.com\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: 40\r\nConnection: close\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
    )
    .await;
    assert_eq!(status, 403, "{text}");
    let (status, text) = raw(
        gate.addr,
        b"GET /mcp HTTP/1.1\r\nHost: localhost\r\nHost: evil.example.com\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400, "{text}");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn hostile_origins_are_refused() -> TestResult {
    let gate = echo_gate("  allowed_origins: [http://localhost:6274, https://app.example.com]").await;
    for origin in [
        "http://localhost.evil.com",
        "null",
        "http://localhost",
        "http://localhost:6275",
        "https://app.example.com.evil.com",
        "http://app.example.com",
        "https://app.example.com/",
        "https://evil.com#https://app.example.com",
    ] {
        let reply = post(gate.addr, &[V0618, ("origin", origin)], PING).await;
        assert_refused(&reply, StatusCode::FORBIDDEN, -32600);
    }
    for origin in ["http://localhost:6274", "HTTPS://APP.EXAMPLE.COM:443"] {
        assert_forwarded(&post(gate.addr, &[V0618, ("origin", origin)], PING).await);
    }
    // No Origin at all (a non-browser client) is allowed by default.
    assert_forwarded(&post(gate.addr, &[V0618], PING).await);
    // An allowed Origin cannot hide a second, hostile one.
    let reply =
        post(gate.addr, &[V0618, ("origin", "http://localhost:6274"), ("origin", "http://evil.com")], PING)
            .await;
    assert_refused(&reply, StatusCode::FORBIDDEN, -32600);
    // Header names are case-insensitive on the wire.
    let (status, text) = raw(
        gate.addr,
        b"GET /mcp HTTP/1.1\r\nHost: localhost\r\noRiGiN: http://localhost.evil.com\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403, "{text}");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn origin_can_be_required() -> TestResult {
    let gate = echo_gate("  allowed_origins: [https://app.example.com]\n  require_origin: true").await;
    assert_refused(&post(gate.addr, &[V0618], PING).await, StatusCode::FORBIDDEN, -32600);
    assert_forwarded(&post(gate.addr, &[V0618, ("origin", "https://app.example.com")], PING).await);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn protocol_versions_are_enforced() -> TestResult {
    let gate = echo_gate("  protocol_versions: [2025-06-18, 2025-11-25]").await;
    let reply = post(gate.addr, &[("mcp-protocol-version", "1999-01-01")], PING).await;
    assert_refused(&reply, StatusCode::BAD_REQUEST, -32600);
    assert!(reply.text().contains("2025-06-18, 2025-11-25"), "lists what is supported: {}", reply.text());
    // Absent means 2025-03-26, which this policy does not support...
    let reply = post(gate.addr, &[], PING).await;
    assert_refused(&reply, StatusCode::BAD_REQUEST, -32600);
    assert!(reply.text().contains("2025-03-26"), "{}", reply.text());
    // ...except on initialize, which negotiates the version in its body.
    assert_forwarded(&post(gate.addr, &[], INITIALIZE).await);
    // A header that contradicts the initialize body is refused, with the id.
    let reply = post(gate.addr, &[("mcp-protocol-version", "2025-11-25")], INITIALIZE).await;
    assert_refused(&reply, StatusCode::BAD_REQUEST, -32600);
    assert_eq!(reply.json()["id"], 1);
    // Two version headers are ambiguous.
    let reply = post(gate.addr, &[V0618, ("mcp-protocol-version", "2025-11-25")], PING).await;
    assert_refused(&reply, StatusCode::BAD_REQUEST, -32600);
    // GET and DELETE are checked too.
    let get = [("accept", "text/event-stream"), ("mcp-protocol-version", "2024-01-01")];
    assert_refused(&send(gate.addr, "GET", "/mcp", &get, "").await, StatusCode::BAD_REQUEST, -32600);
    assert_refused(&send(gate.addr, "DELETE", "/mcp", &[], "").await, StatusCode::BAD_REQUEST, -32600);
    assert_forwarded(&post(gate.addr, &[V0618], PING).await);
    // A header the client names in `Connection` is not forwarded, so it is
    // not judged either: the upstream would read no version, 2025-03-26.
    for connection in ["mcp-protocol-version", "keep-alive, MCP-Protocol-Version"] {
        let reply = post(gate.addr, &[V0618, ("connection", connection)], PING).await;
        assert_refused(&reply, StatusCode::BAD_REQUEST, -32600);
        assert!(reply.text().contains("without MCP-Protocol-Version"), "{}", reply.text());
    }
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn batches_only_under_2025_03_26() -> TestResult {
    let gate = echo_gate("").await;
    let batch =
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#;
    for version in ["2025-06-18", "2025-11-25", "2026-07-28"] {
        let reply = post(gate.addr, &[("mcp-protocol-version", version)], batch).await;
        assert_refused(&reply, StatusCode::BAD_REQUEST, -32600);
        assert!(reply.text().contains("batch"), "{}", reply.text());
    }
    // Explicit 2025-03-26, and no header at all (which means 2025-03-26).
    let seen = assert_forwarded(&post(gate.addr, &[("mcp-protocol-version", "2025-03-26")], batch).await);
    assert_eq!(seen["body"], batch, "forwarded byte for byte");
    assert_forwarded(&post(gate.addr, &[], batch).await);
    // A batch hiding a malformed member is refused whole.
    let smuggled = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/call","method":"ping"}]"#;
    assert_refused(&post(gate.addr, &[], smuggled).await, StatusCode::BAD_REQUEST, -32600);
    assert_refused(&post(gate.addr, &[], "[]").await, StatusCode::BAD_REQUEST, -32600);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn standard_headers_must_match_the_body_from_2026_07_28() -> TestResult {
    let gate = echo_gate("").await;
    let v = ("mcp-protocol-version", "2026-07-28");
    let call = r#"{"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"delete_everything"}}"#;

    let reply = post(gate.addr, &[v], call).await;
    assert_refused(&reply, StatusCode::BAD_REQUEST, -32020);
    assert_eq!(reply.json()["id"], "c1", "the refusal names the request");
    let reply = post(gate.addr, &[v, ("mcp-method", "tools/list")], call).await;
    assert_refused(&reply, StatusCode::BAD_REQUEST, -32020);
    let reply = post(gate.addr, &[v, ("mcp-method", "tools/call"), ("mcp-name", "echo")], call).await;
    assert_refused(&reply, StatusCode::BAD_REQUEST, -32020);
    assert!(reply.text().contains("echo"), "{}", reply.text());
    let reply =
        post(gate.addr, &[v, ("mcp-method", "tools/call"), ("mcp-name", "=?base64?!!!?=")], call).await;
    assert_refused(&reply, StatusCode::BAD_REQUEST, -32020);

    let seen = assert_forwarded(
        &post(gate.addr, &[v, ("mcp-method", "tools/call"), ("mcp-name", "delete_everything")], call).await,
    );
    assert_eq!(seen["headers"]["mcp-name"], "delete_everything");
    let encoded = "=?base64?ZGVsZXRlX2V2ZXJ5dGhpbmc=?=";
    assert_forwarded(&post(gate.addr, &[v, ("mcp-method", "tools/call"), ("mcp-name", encoded)], call).await);
    // Before 2026-07-28 the headers are not required.
    assert_forwarded(&post(gate.addr, &[V0618], call).await);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn methods_and_media_types() -> TestResult {
    let gate = echo_gate("").await;
    let reply = send(gate.addr, "PUT", "/mcp", &[V0618], PING).await;
    assert_refused(&reply, StatusCode::METHOD_NOT_ALLOWED, -32600);
    assert_eq!(reply.headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET, POST, DELETE"));

    let json_only = [("content-type", "application/json"), ("accept", "application/json"), V0618];
    assert_refused(
        &send(gate.addr, "POST", "/mcp", &json_only, PING).await,
        StatusCode::NOT_ACCEPTABLE,
        -32600,
    );
    let no_accept = [("content-type", "application/json"), V0618];
    assert_refused(
        &send(gate.addr, "POST", "/mcp", &no_accept, PING).await,
        StatusCode::NOT_ACCEPTABLE,
        -32600,
    );
    let text = [("content-type", "text/plain"), ("accept", "application/json, text/event-stream"), V0618];
    assert_refused(
        &send(gate.addr, "POST", "/mcp", &text, PING).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        -32600,
    );
    let get_json = [("accept", "application/json"), V0618];
    assert_refused(&send(gate.addr, "GET", "/mcp", &get_json, "").await, StatusCode::NOT_ACCEPTABLE, -32600);

    let charset = [("content-type", "application/json; charset=utf-8"), ("accept", "*/*"), V0618];
    assert_forwarded(&send(gate.addr, "POST", "/mcp", &charset, PING).await);
    let seen = assert_forwarded(
        &send(gate.addr, "GET", "/mcp", &[("accept", "text/event-stream"), V0618], "").await,
    );
    assert_eq!(seen["method"], "GET");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn only_the_mcp_endpoint_is_served() -> TestResult {
    let gate = echo_gate("").await;
    for path in ["/", "/mcp/", "/MCP", "//mcp", "/x/../mcp", "/%6dcp", "/metrics", "/mcp/../admin"] {
        let reply = send(gate.addr, "POST", path, &[&[V0618], POST_HEADERS].concat(), PING).await;
        assert_refused(&reply, StatusCode::NOT_FOUND, -32600);
    }
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn oversized_bodies_are_refused() -> TestResult {
    let gate = echo_gate("  max_body: 64KiB").await;
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(10 << 20)
    );
    assert_refused(&post(gate.addr, &[V0618], &big).await, StatusCode::PAYLOAD_TOO_LARGE, -32600);

    // Without a Content-Length (chunked), the limit still holds while reading.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        // Four times the limit: enough to cross it, little enough to sit in the
        // socket buffers, so the client reads the 413 rather than a reset.
        for _ in 0..4 {
            if tx.send(Bytes::from(vec![b' '; 64 << 10])).await.is_err() {
                break;
            }
        }
    });
    let body = http_body_util::StreamBody::new(ChannelStream(rx));
    let response = open(gate.addr, "POST", "/mcp", POST_0618, body).await?;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Just under the limit is fine.
    let fits = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"pad":"{}"}}}}"#,
        "x".repeat(60 << 10)
    );
    assert_forwarded(&post(gate.addr, &[V0618], &fits).await);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn malformed_messages_are_refused() -> TestResult {
    let gate = echo_gate("").await;
    let parse_errors: [&[u8]; 5] = [
        b"",
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/li"#,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}",
        b"\xef\xbb\xbf\x00\x01",
        br#"{"jsonrpc":"2.0","id":1,"method":"ping"} trailing"#,
    ];
    for body in parse_errors {
        let headers = [&[V0618], POST_HEADERS].concat();
        let reply = send(gate.addr, "POST", "/mcp", &headers, Bytes::from_static(body)).await;
        assert_refused(&reply, StatusCode::BAD_REQUEST, -32700);
    }
    for body in [
        r#"{"hello":"world"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_everything"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"a","ur\u0069":"b"}}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#,
        "42",
    ] {
        assert_refused(&post(gate.addr, &[V0618], body).await, StatusCode::BAD_REQUEST, -32600);
    }
    // Unknown methods and fields are not toolgate's business: they pass, byte for byte.
    let odd = r#"{"jsonrpc":"2.0","id":"x","method":"vendor/thing","params":{"z":1,"a":[true]},"extra":{}}"#;
    assert_eq!(assert_forwarded(&post(gate.addr, &[V0618], odd).await)["body"], odd);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn forwarded_requests_are_rewritten_for_the_upstream() -> TestResult {
    let gate = echo_gate("").await;
    let headers = [
        V0618,
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-for", "7.7.7.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-proto", "ftp"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-host", "evil2.example"),
        ("connection", "keep-alive, x-drop-me"),
        ("x-drop-me", "secret"),
        ("last-event-id", "42"),
        ("x-custom", "kept"),
        ("x-custom", "twice"),
        // CGI-style servers read these as the headers toolgate sets.
        ("x_forwarded_for", "8.8.8.8"),
        ("X_Forwarded_Host", "evil3.example"),
        ("accept_encoding", "gzip"),
        ("X.Forwarded.For", "9.9.9.9"),
        ("transfer_encoding", "chunked"),
        ("x_custom_too", "kept"),
        // Claims only a proxy makes.
        ("forwarded", "for=8.8.8.8;host=evil4.example;proto=https"),
        ("x-forwarded-port", "443"),
        ("x-real-ip", "8.8.8.8"),
    ];
    let seen = assert_forwarded(&post(gate.addr, &headers, PING).await);
    let h = &seen["headers"];
    // Every value the client sent under these names is replaced.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "the peer, not the client's claim");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gate.addr.to_string());
    assert_eq!(h["last-event-id"], "42");
    assert_eq!(h["x-custom"], "kept, twice", "every value, in order");
    assert_eq!(h["x_custom_too"], "kept");
    for spelled in [
        "x_forwarded_for",
        "x_forwarded_host",
        "accept_encoding",
        "x.forwarded.for",
        "transfer_encoding",
        "forwarded",
        "x-forwarded-port",
        "x-real-ip",
    ] {
        assert!(h.get(spelled).is_none(), "{spelled} was forwarded: {h}");
    }
    assert_eq!(h["accept-encoding"], "identity");
    assert!(h.get("x-drop-me").is_none(), "named in Connection: hop-by-hop");
    assert!(h.get("connection").is_none());
    assert_ne!(h["host"], gate.addr.to_string(), "Host names the upstream");
    assert_eq!(seen["uri"], "/mcp");
    assert_eq!(seen["body"], PING);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn the_proxy_keeps_serving_through_a_barrage_of_bad_requests() -> TestResult {
    let gate = echo_gate("  max_body: 1KiB").await;
    let mut bad = Vec::new();
    for i in 0..50 {
        let addr = gate.addr;
        bad.push(tokio::spawn(async move {
            match i % 5 {
                0 => post(addr, &[("origin", "null")], PING).await.status,
                1 => post(addr, &[V0618], "{").await.status,
                2 => post(addr, &[V0618], &"x".repeat(4096)).await.status,
                // Not HTTP at all: hyper answers 400 and closes.
                3 => StatusCode::from_u16(raw(addr, b"GARBAGE\r\n\r\n").await.0)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                _ => send(addr, "POST", "/mcp", &[("host", "evil.example.com")], PING).await.status,
            }
        }));
    }
    for task in bad {
        assert!(task.await?.is_client_error());
    }
    assert_forwarded(&post(gate.addr, &[V0618], PING).await);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_cors_preflight_reaches_the_upstream_without_credentials() -> TestResult {
    let upstream = start_echo_upstream().await;
    let top = "identity:\n  api_keys: [{ id: ci, sha256: '0000000000000000000000000000000000000000000000000000000000000001' }]\nvirtual_servers:\n  default:\n    tools: { allow: ['*'] }\n";
    let gate = start_gate(&policy(upstream, "  allowed_origins: [https://app.example.com]", top)).await;
    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "authorization, content-type, mcp-protocol-version"),
    ];
    // Browsers send a preflight without credentials: it is the upstream's
    // to answer, even where calls need a credential.
    let reply = send(gate.addr, "OPTIONS", "/mcp", &preflight, "").await;
    assert_eq!(reply.json()["result"]["method"], "OPTIONS", "{}", reply.text());
    let calls = post(gate.addr, &[V0618, ("origin", "https://app.example.com")], PING).await;
    assert_eq!(calls.status, StatusCode::UNAUTHORIZED);
    let other = [("origin", "https://evil.example.com"), ("access-control-request-method", "POST")];
    assert_eq!(send(gate.addr, "OPTIONS", "/mcp", &other, "").await.status, StatusCode::FORBIDDEN);
    // Without an Origin it is no preflight, and is judged as any request.
    assert_eq!(send(gate.addr, "OPTIONS", "/mcp", &[], "").await.status, StatusCode::UNAUTHORIZED);
    gate.shutdown().await;
    Ok(())
}
