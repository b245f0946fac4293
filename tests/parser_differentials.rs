//! toolgate's decision must be the upstream's decision: every request it
//! judges must have one reading only. Each case here is a bypass that was
//! reproduced against a real upstream — Express decoding UTF-7, Go matching
//! keys case-insensitively, a URI resolved past its pattern, a target in
//! absolute form — and must now be refused, or normalised so that the
//! upstream reads what toolgate judged.

mod common;

use common::*;
use http::StatusCode;
use serde_json::Value;

const V0618: (&str, &str) = ("mcp-protocol-version", "2025-06-18");
const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");
const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

#[track_caller]
fn assert_refused(reply: &Reply, status: StatusCode, code: i64, says: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.rpc_code(), Some(code), "{}", reply.text());
    let message = reply.json()["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains(says), "`{message}` should say `{says}`");
}

/// What the echo upstream received.
fn seen(reply: &Reply) -> Value {
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()["result"].clone()
}

#[tokio::test]
async fn only_utf8_json_bodies_are_judged_and_forwarded() -> TestResult {
    let upstream = start_echo_upstream().await;
    let gate = start_gate(&policy(upstream, "", "")).await;
    // In UTF-7, `+ACI-` is `"`: Express would read a second "name" here.
    let smuggled = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"+ACIAfQAsACI-name+ACI-:+ACI-delete+AF8-database+ACI-"}}}"#;
    for content_type in [
        "application/json; charset=utf-7",
        "application/json; charset=\"UTF-7\"",
        "application/json; charset=utf-16le",
        "application/json; charset=iso-8859-1",
        "application/json; charset=utf-8; charset=utf-7",
        "application/json-rpc",
        "application/json; charset",
        "text/plain",
    ] {
        let headers = [("content-type", content_type), ACCEPT, V0618];
        let reply = send(gate.addr, "POST", "/mcp", &headers, smuggled).await;
        assert_refused(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, -32600, "Content-Type");
    }
    for encoding in ["gzip", "br", "deflate", "identity, gzip"] {
        let headers = [("content-type", "application/json"), ("content-encoding", encoding), ACCEPT, V0618];
        let reply = send(gate.addr, "POST", "/mcp", &headers, PING).await;
        assert_refused(&reply, StatusCode::UNSUPPORTED_MEDIA_TYPE, -32600, "uncompressed");
    }

    // UTF-8, said in any of the ways clients say it, is forwarded as plain
    // `application/json`, uncompressed, and the answer is asked for as such.
    for content_type in
        ["application/json", "application/json; charset=UTF-8", "Application/JSON;charset=\"utf-8\""]
    {
        let headers = [
            ("content-type", content_type),
            ("content-encoding", "identity"),
            ("accept-encoding", "gzip, br"),
            ACCEPT,
            V0618,
        ];
        let upstream_saw = seen(&send(gate.addr, "POST", "/mcp", &headers, smuggled).await);
        assert_eq!(upstream_saw["headers"]["content-type"], "application/json", "{content_type}");
        assert_eq!(upstream_saw["headers"]["accept-encoding"], "identity");
        assert!(upstream_saw["headers"].get("content-encoding").is_none());
        assert_eq!(upstream_saw["body"], smuggled, "the body itself is forwarded byte for byte");
    }
    gate.shutdown().await;
    Ok(())
}

const DENY_DELETE: &str = r#"virtual_servers:
  default:
    anonymous: true
    tools: { allow: ["*"], deny: ["delete_*"] }
    resources: { allow: ["file:///public/**"] }
"#;

#[tokio::test]
async fn keys_a_case_insensitive_upstream_would_read_are_refused() -> TestResult {
    let upstream = start_catalog_upstream(true).await;
    let gate = start_gate(&policy(upstream, "", DENY_DELETE)).await;
    // What a Go upstream (encoding/json: case-insensitive, last match wins)
    // ran for each of these: delete_file.
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","NAME":"delete_file"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"paramſ":{"name":"delete_file"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call","params":{"name":"delete_file"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","n\u0041me":"delete_file"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","ſ":1,"Name":"delete_file"}}"#,
    ] {
        let reply = post(gate.addr, &[V0618], body).await;
        assert_refused(&reply, StatusCode::BAD_REQUEST, -32600, "only in case");
    }
    // The honest call is still judged (and refused) the ordinary way.
    let honest = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_file"}}"#;
    let reply = post(gate.addr, &[V0618], honest).await;
    assert_eq!(reply.json()["error"]["message"], "Unknown tool: delete_file", "{}", reply.text());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn resource_uris_with_dot_segments_anywhere_are_refused() -> TestResult {
    let upstream = start_catalog_upstream(true).await;
    let gate = start_gate(&policy(upstream, "", DENY_DELETE)).await;
    let read = |uri: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#)
    };
    for uri in [
        "file:///public/x?/../../etc/passwd",
        "file:///public/x#/../../private/keys.pem",
        "file:///public/..;/private/keys.pem",
        "file:///public/x?path=../../etc/passwd",
        "file:///public/%252e%252e/private/keys.pem",
    ] {
        let reply = post(gate.addr, &[V0618], &read(uri)).await;
        assert_eq!(reply.json()["error"]["code"], -32002, "{uri}: {}", reply.text());
        assert_eq!(reply.json()["error"]["message"], "Resource not found", "{uri}");
    }
    let reply = post(gate.addr, &[V0618], &read("file:///public/docs/guide.md?v=1.2")).await;
    assert_eq!(reply.json()["result"]["contents"][0]["text"], "read file:///public/docs/guide.md?v=1.2");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_target_in_absolute_form_is_judged_by_its_authority() -> TestResult {
    let upstream = start_echo_upstream().await;
    let gate = start_gate(&policy(upstream, "", "")).await;
    let request = |target: &str, host: &str| {
        format!(
            "POST {target} HTTP/1.1\r\nHost: {host}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\nmcp-protocol-version: 2025-06-18\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{PING}",
            PING.len()
        )
    };
    // RFC 9112 §3.2.2: the target's authority is the one addressed, whatever Host says.
    let (status, text) = raw(gate.addr, request("http://evil.example/mcp", "localhost").as_bytes()).await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("evil.example"), "{text}");
    let (status, _) =
        raw(gate.addr, request("http://evil.example/servers/x/mcp", "127.0.0.1").as_bytes()).await;
    assert!(status == 403 || status == 404, "{status}");
    // And the other way round: an allowed target with a hostile Host is
    // served as the target, and the upstream is told that authority.
    let target = format!("http://localhost:{}/mcp", gate.addr.port());
    let (status, text) = raw(gate.addr, request(&target, "evil.example").as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let upstream_saw: Value = serde_json::from_str(body)?;
    assert_eq!(
        upstream_saw["result"]["headers"]["x-forwarded-host"],
        format!("localhost:{}", gate.addr.port())
    );
    gate.shutdown().await;
    Ok(())
}
