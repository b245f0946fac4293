//! toolgate in front of the servers users deploy: the official TypeScript
//! SDK on Express (with and without `compression()`) and the official
//! Python SDK, driven through toolgate by the Rust SDK's client. Each sees
//! exactly its policy's view, over SSE and JSON answers; and each bypass
//! that worked against these servers directly (UTF-7 bodies on Express,
//! compressed list answers, JSON the Python SDK reads leniently) is shown
//! to work directly and to be refused or neutralised through toolgate.

mod common;

use common::*;
use http::StatusCode;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, GetPromptRequestParams};
use rmcp::service::ServiceError;
use rmcp::transport::StreamableHttpClientTransport;
use std::net::SocketAddr;

const POLICY: &str = r#"virtual_servers:
  default:
    anonymous: true
    tools: { allow: ["*"], deny: [delete_database] }
    prompts: { allow: ["*"], deny: [admin_prompt] }
    resources: { allow: ["**"], deny: ["file:///etc/**"] }
"#;
const V0618: (&str, &str) = ("mcp-protocol-version", "2025-06-18");

fn rpc_error<T: std::fmt::Debug>(result: Result<T, ServiceError>) -> (i32, String) {
    match result {
        Err(ServiceError::McpError(error)) => (error.code.0, error.message.to_string()),
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

/// What the Rust SDK's client sees at `url`: tool names, prompt names, and
/// whether calling `delete_database` ran it.
async fn view(url: String) -> Result<(Vec<String>, Vec<String>), BoxError> {
    let client = ().serve(StreamableHttpClientTransport::from_uri(url)).await?;
    let tools = client.list_all_tools().await?.into_iter().map(|t| t.name.to_string()).collect();
    let prompts = client.list_all_prompts().await?.into_iter().map(|p| p.name).collect();
    let echoed = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(serde_json::json!({ "text": "hi" }).as_object().cloned().unwrap_or_default()),
        )
        .await?;
    assert_eq!(serde_json::to_value(&echoed.content)?[0]["text"], "echo: hi");
    client.cancel().await?;
    Ok((tools, prompts))
}

async fn through_toolgate(upstream: SocketAddr) -> Result<(), BoxError> {
    let (direct_tools, direct_prompts) = view(format!("http://{upstream}/mcp")).await?;
    assert!(direct_tools.iter().any(|t| t == "delete_database"), "{direct_tools:?}");
    assert!(direct_prompts.iter().any(|p| p == "admin_prompt"), "{direct_prompts:?}");

    let gate = start_gate(&policy(upstream, "", POLICY)).await;
    let (tools, prompts) = view(gate.url()).await?;
    let expected: Vec<&String> = direct_tools.iter().filter(|t| *t != "delete_database").collect();
    assert_eq!(tools.iter().collect::<Vec<_>>(), expected, "every tool but the denied one, in order");
    assert_eq!(prompts, ["greet"]);

    let client = ().serve(StreamableHttpClientTransport::from_uri(gate.url())).await?;
    let denied = client.call_tool(CallToolRequestParams::new("delete_database")).await;
    assert_eq!(rpc_error(denied), (-32602, "Unknown tool: delete_database".to_owned()));
    let denied = client.get_prompt(GetPromptRequestParams::new("admin_prompt")).await;
    assert_eq!(rpc_error(denied), (-32602, "Unknown prompt: admin_prompt".to_owned()));
    assert!(client.get_prompt(GetPromptRequestParams::new("greet")).await.is_ok());
    client.cancel().await?;
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn typescript_sdk_server_with_sse_answers() -> TestResult {
    // This server answers short SSE with a Content-Length.
    let upstream = start_typescript_upstream(&[])?;
    through_toolgate(upstream.addr).await
}

#[tokio::test]
async fn typescript_sdk_server_with_json_answers() -> TestResult {
    let upstream = start_typescript_upstream(&["--json"])?;
    through_toolgate(upstream.addr).await
}

#[tokio::test]
async fn python_sdk_server_with_sse_answers() -> TestResult {
    let upstream = start_python_upstream(&[])?;
    through_toolgate(upstream.addr).await
}

#[tokio::test]
async fn python_sdk_server_with_json_answers() -> TestResult {
    let upstream = start_python_upstream(&["--json"])?;
    through_toolgate(upstream.addr).await
}

/// `"},"name":"delete_database","x":{"y":"` in UTF-7, inside the text
/// argument of a call to `echo`.
const UTF7_CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"+ACIAfQAsACIAbgBhAG0AZQAiADoAIgBkAGUAbABlAHQAZQBfAGQAYQB0AGEAYgBhAHMAZQAiACwAIgB4ACIAOgB7ACIAeQAiADoAIg-"}}}"#;

#[tokio::test]
async fn express_decoding_utf7_cannot_run_what_toolgate_refused() -> TestResult {
    let upstream = start_typescript_upstream(&["--json"])?;
    let headers = |charset: &'static str| {
        [("content-type", charset), ("accept", "application/json, text/event-stream"), V0618]
    };
    // Directly, Express decodes the body as UTF-7 and runs the second name.
    let direct =
        send(upstream.addr, "POST", "/mcp", &headers("application/json; charset=utf-7"), UTF7_CALL).await;
    assert_eq!(direct.json()["result"]["content"][0]["text"], "database deleted", "{}", direct.text());

    let gate = start_gate(&policy(upstream.addr, "", POLICY)).await;
    let refused =
        send(gate.addr, "POST", "/mcp", &headers("application/json; charset=utf-7"), UTF7_CALL).await;
    assert_eq!(refused.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", refused.text());
    // Said to be UTF-8, it is forwarded as plain JSON and Express reads what
    // toolgate judged: a call to echo with an odd argument.
    let judged =
        send(gate.addr, "POST", "/mcp", &headers("application/json; charset=utf-8"), UTF7_CALL).await;
    let text = judged.json()["result"]["content"][0]["text"].as_str().unwrap_or_default().to_owned();
    assert!(text.starts_with("echo: +ACIAfQ"), "{}", judged.text());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_compressing_express_server_is_still_filtered() -> TestResult {
    let upstream = start_typescript_upstream(&["--json", "--compression"])?;
    let list = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let gzip = [("accept-encoding", "gzip, deflate, br"), V0618];
    // Directly, a client that accepts gzip gets the list compressed.
    let direct = post(upstream.addr, &gzip, list).await;
    assert_eq!(direct.headers.get("content-encoding").map(|v| v.as_bytes()), Some(&b"br"[..]));

    let gate = start_gate(&policy(upstream.addr, "", POLICY)).await;
    let reply = post(gate.addr, &gzip, list).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.headers.get("content-encoding").is_none());
    let names: Vec<String> = reply.json()["result"]["tools"]
        .as_array()
        .map(|tools| tools.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    assert!(names.contains(&"echo".to_owned()) && names.len() == 13, "{names:?}");
    assert!(!names.contains(&"delete_database".to_owned()));
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn json_the_python_sdk_reads_leniently_is_refused() -> TestResult {
    let upstream = start_python_upstream(&["--json"])?;
    // Python's json module reads `NaN` as a number, and the SDK takes a
    // request with a NaN id for a notification (202, never answered).
    let nan = r#"{"jsonrpc":"2.0","id":NaN,"method":"tools/call","params":{"name":"delete_database"}}"#;
    let direct = post(upstream.addr, &[V0618], nan).await;
    assert_eq!(direct.status, StatusCode::ACCEPTED, "{}", direct.text());
    // The SDK 1.x decodes a body by sniffing UTF-16 and UTF-32 too.
    let utf16: Vec<u8> = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_database"}}"#
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let direct = post_bytes(upstream.addr, &utf16).await;
    assert!(direct.text().contains("database deleted"), "{}", direct.text());

    let gate = start_gate(&policy(upstream.addr, "", POLICY)).await;
    let reply = post(gate.addr, &[V0618], nan).await;
    assert_eq!((reply.status, reply.rpc_code()), (StatusCode::BAD_REQUEST, Some(-32700)), "{}", reply.text());
    let reply = post_bytes(gate.addr, &utf16).await;
    assert_eq!((reply.status, reply.rpc_code()), (StatusCode::BAD_REQUEST, Some(-32700)), "{}", reply.text());
    gate.shutdown().await;
    Ok(())
}

async fn post_bytes(addr: SocketAddr, body: &[u8]) -> Reply {
    let headers = [POST_HEADERS, &[V0618]].concat();
    send(addr, "POST", "/mcp", &headers, body.to_vec()).await
}

/// Both SDKs look resources up by the URI as a WHATWG URL parser reads it,
/// so `file:/etc/passwd` is `file:///etc/passwd` to them.
async fn a_deny_holds_for_the_uri_as_the_upstream_parses_it(upstream: SocketAddr) -> TestResult {
    let read = |uri: &str| {
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{{"uri":"{uri}"}}}}"#)
    };
    let variants = ["file:/etc/passwd", "file://localhost/etc/passwd", "FILE:///etc/passwd"];
    let mut read_directly = 0;
    for uri in variants {
        let direct = post(upstream, &[V0618], &read(uri)).await;
        if direct.text().contains("root:x:0:0") {
            read_directly += 1;
        }
    }
    assert_eq!(read_directly, variants.len(), "the upstream reads each variant as /etc/passwd");

    let gate = start_gate(&policy(upstream, "", POLICY)).await;
    for uri in variants.into_iter().chain(["file:///etc/passwd"]) {
        let reply = post(gate.addr, &[V0618], &read(uri)).await;
        assert!(!reply.text().contains("root:x:0:0"), "{uri}: {}", reply.text());
        assert_eq!(reply.json()["error"]["message"], "Resource not found", "{uri}: {}", reply.text());
    }
    let reply = post(gate.addr, &[V0618], &read("file:///public/readme.md")).await;
    assert!(reply.text().contains("# readme"), "{}", reply.text());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn typescript_sdk_resource_uris_are_judged_as_it_parses_them() -> TestResult {
    let upstream = start_typescript_upstream(&["--json"])?;
    a_deny_holds_for_the_uri_as_the_upstream_parses_it(upstream.addr).await
}

#[tokio::test]
async fn python_sdk_resource_uris_are_judged_as_it_parses_them() -> TestResult {
    let upstream = start_python_upstream(&["--json"])?;
    a_deny_holds_for_the_uri_as_the_upstream_parses_it(upstream.addr).await
}
