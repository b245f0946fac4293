//! Calls are judged before they reach the upstream, and no encoding of a
//! message gets a refused call through: batches, duplicate or escaped keys,
//! case and Unicode look-alikes, completion references, notifications.

mod common;

use common::*;
use http::StatusCode;
use serde_json::{Value, json};

const SERVERS: &str = r#"virtual_servers:
  default:
    anonymous: true
    tools: { allow: ["*"], deny: ["*_admin", "delete_*"] }
    prompts: { allow: ["*"], deny: [admin_prompt] }
    resources: { allow: ["file:///public/**"] }
    resource_templates: { allow: ["file:///public/*"] }
  readonly:
    anonymous: true
    denial: explicit
    tools: { allow: [echo] }
"#;

const V0618: (&str, &str) = ("mcp-protocol-version", "2025-06-18");

async fn gate() -> Gate {
    let upstream = start_echo_upstream().await;
    start_gate(&policy(upstream, "", SERVERS)).await
}

fn call(name_json: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":{name_json}}}}}"#)
}

/// The echo upstream wraps what it received in `result.headers`: an answer
/// without it came from toolgate.
fn reached_upstream(reply: &Reply) -> bool {
    reply.json().pointer("/result/headers").is_some()
}

#[tokio::test]
async fn refused_calls_never_reach_the_upstream() -> TestResult {
    let gate = gate().await;
    for name in [
        r#""user_admin""#,
        r#""User_Admin""#,
        r#""USER_ADMIN""#,
        r#""Delete_Everything""#,
        r#""user\u005fadmin""#,
        r#""usеr_admin""#,
        r#""user_admin\u0000""#,
        r#"" user_admin""#,
        r#""status\n""#,
    ] {
        let reply = post(gate.addr, &[V0618], &call(name)).await;
        assert_eq!(reply.status, StatusCode::OK, "{name}");
        assert!(!reached_upstream(&reply), "{name} reached the upstream");
        assert_eq!(reply.json()["error"]["code"], -32602, "{name}: {}", reply.text());
        assert!(reply.json()["error"]["message"].as_str().is_some_and(|m| m.starts_with("Unknown tool: ")));
        assert_eq!(reply.json()["id"], 1);
    }
    // Allowed names pass, byte for byte.
    let allowed = call(r#""status""#);
    let reply = post(gate.addr, &[V0618], &allowed).await;
    assert!(reached_upstream(&reply));
    assert_eq!(reply.json()["result"]["body"], allowed.as_str());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_missing_or_non_string_name_is_invalid_params() -> TestResult {
    let gate = gate().await;
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":["user_admin"]}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":7}}"#,
    ] {
        let reply = post(gate.addr, &[V0618], body).await;
        assert!(!reached_upstream(&reply), "{body}");
        assert_eq!(reply.json()["error"]["code"], -32602, "{body}");
    }
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn duplicate_name_keys_cannot_pick_a_different_tool() -> TestResult {
    let gate = gate().await;
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"status","name":"user_admin"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"user_admin","n\u0061me":"status"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"status"},"params":{"name":"user_admin"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"user_admin"}}"#,
    ] {
        let reply = post(gate.addr, &[V0618], body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(!reached_upstream(&reply));
    }
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_batch_cannot_smuggle_a_refused_call() -> TestResult {
    let gate = gate().await;
    let batch = r#"[{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"status"}},
                    {"jsonrpc":"2.0","method":"notifications/progress","params":{}},
                    {"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"user_admin"}},
                    {"jsonrpc":"2.0","id":"c","method":"tools/list"}]"#;
    let reply = post(gate.addr, &[("mcp-protocol-version", "2025-03-26")], batch).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(!reached_upstream(&reply), "nothing of the batch is forwarded");
    let answers = reply.json();
    let by_id = |id: &str| answers.as_array().and_then(|a| a.iter().find(|m| m["id"] == id)).cloned();
    assert_eq!(answers.as_array().map(Vec::len), Some(3), "one answer per request: {answers}");
    assert_eq!(
        by_id("b").map(|m| m["error"].clone()),
        Some(json!({ "code": -32602, "message": "Unknown tool: user_admin" }))
    );
    for id in ["a", "c"] {
        assert_eq!(by_id(id).map(|m| m["error"]["code"].clone()), Some(json!(-32600)), "{id} was not run");
    }
    // A batch of allowed calls is forwarded as sent.
    let fine = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"status"}},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#;
    let reply = post(gate.addr, &[("mcp-protocol-version", "2025-03-26")], fine).await;
    assert_eq!(reply.json()["result"]["body"], fine);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn prompts_resources_and_completions_are_judged() -> TestResult {
    let gate = gate().await;
    let refused = [
        (r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"admin_prompt"}}"#, -32602),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///private/keys.pem"}}"#,
            -32002,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"file:///private/db.env"}}"#,
            -32002,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///public/../private/keys.pem"}}"#,
            -32002,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"admin_prompt"},"argument":{"name":"a","value":""}}}"#,
            -32602,
        ),
        (
            r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///private/{path}"},"argument":{"name":"path","value":""}}}"#,
            -32602,
        ),
    ];
    for (body, code) in refused {
        let reply = post(gate.addr, &[V0618], body).await;
        assert!(!reached_upstream(&reply), "{body}");
        assert_eq!(reply.json()["error"]["code"], code, "{body}: {}", reply.text());
    }
    // Under 2026-07-28 a hidden resource answers -32602, as servers must.
    let read =
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///private/keys.pem"}}"#;
    let headers = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "resources/read"),
        ("mcp-name", "file:///private/keys.pem"),
    ];
    assert_eq!(post(gate.addr, &headers, read).await.json()["error"]["code"], -32602);
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"greet"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"file:///public/readme.md"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/resource","uri":"file:///public/{path}"},"argument":{"name":"path","value":""}}}"#,
    ] {
        assert!(reached_upstream(&post(gate.addr, &[V0618], body).await), "{body}");
    }
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_refused_notification_is_swallowed() -> TestResult {
    let gate = gate().await;
    let reply = post(
        gate.addr,
        &[V0618],
        r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"user_admin"}}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    assert!(reply.body.is_empty());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn explicit_denials_say_not_allowed() -> TestResult {
    let gate = gate().await;
    let addr = gate.addr;
    let body = call(r#""status""#);
    let headers = [&[V0618], POST_HEADERS].concat();
    let reply = send(addr, "POST", "/servers/readonly/mcp", &headers, body).await;
    assert_eq!(
        reply.json()["error"],
        json!({ "code": -32001, "message": "Tool not allowed on this server: status", "data": { "kind": "tool", "name": "status" } })
    );
    let reply = send(addr, "POST", "/servers/readonly/mcp", &headers, call(r#""echo""#)).await;
    assert!(reached_upstream(&reply));
    assert_eq!(
        reply.json()["result"]["uri"],
        "/mcp",
        "the virtual server's path is rewritten to the upstream's"
    );
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn path_tricks_reach_no_other_virtual_server() -> TestResult {
    let gate = gate().await;
    for path in [
        "/servers/readonly/../default/mcp",
        "/servers/READONLY/mcp",
        "/servers/readonly/mcp/",
        "/servers//readonly/mcp",
        "/servers/readonly%2fmcp",
        "/servers/%72eadonly/mcp",
        "/servers/unknown/mcp",
        "/servers/readonly/mcp?x=/servers/default/mcp",
    ] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2025-06-18\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            call(r#""status""#).len(),
            call(r#""status""#)
        );
        let (status, text) = raw(gate.addr, request.as_bytes()).await;
        if path.contains('?') {
            // The query is not part of the route: readonly judges, and refuses.
            assert!(text.contains("not allowed"), "{path}: {text}");
        } else {
            assert_eq!(status, 404, "{path}: {text}");
        }
    }
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn refusals_are_audited_and_counted() -> TestResult {
    let upstream = start_echo_upstream().await;
    let dir = scratch_dir();
    let policy_file = dir.join("policy.yaml");
    std::fs::write(&policy_file, policy(upstream, "", SERVERS))?;
    let process = Process::start(&policy_file)?;
    let listening = process.wait_for("toolgate listening")?;
    let addr: std::net::SocketAddr = listening["proxy"].as_str().ok_or("no proxy")?.parse()?;
    let admin: std::net::SocketAddr = listening["admin"].as_str().ok_or("no admin")?.parse()?;

    post(addr, &[V0618], &call(r#""user_admin""#)).await;
    let audit = process.wait_for("call refused")?;
    assert_eq!(audit["target"], "toolgate::audit");
    assert_eq!(audit["virtual_server"], "default");
    assert_eq!(audit["principal"], "anonymous");
    assert_eq!(audit["kind"], "tool");
    assert_eq!(audit["name"], "user_admin");
    assert_eq!(audit["rule"], "denied by `*_admin` (base deny)");

    let metrics = send(admin, "GET", "/metrics", &[], "").await.text();
    assert!(
        metrics.contains(r#"toolgate_decisions_total{virtual_server="default",kind="tool",action="call",outcome="denied"} 1"#),
        "{metrics}"
    );
    let policy_info: Value = send(admin, "GET", "/policy", &[], "").await.json();
    assert_eq!(policy_info["generation"], 1);
    assert_eq!(policy_info["virtual_servers"], json!(["default", "readonly"]));
    assert_eq!(policy_info["sha256"].as_str().map(str::len), Some(64));
    Ok(())
}
