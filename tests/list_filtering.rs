//! Each virtual server lists and can call exactly what its policy allows,
//! through a real MCP client (rmcp) and a real MCP server (rmcp) with a
//! paginated catalog, over JSON and SSE answers; and list results that
//! toolgate cannot vouch for are withheld, never forwarded unfiltered.

mod common;

use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, GetPromptRequestParams, ReadResourceRequestParams};
use rmcp::service::ServiceError;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};
use std::time::Duration;

const SERVERS: &str = r#"virtual_servers:
  default:
    anonymous: true
    tools: { allow: ["*"], deny: ["*_admin", "delete_*", "export_*"] }
    prompts: { allow: ["*"], deny: [admin_prompt] }
    resources: { allow: ["file:///public/**", "mem://**"] }
    resource_templates: { allow: ["file:///public/*"] }
  ops:
    anonymous: true
    tools: { allow: [status, get_metrics, "restart_*"] }
    rules:
      - when: { groups: [sre] }
        tools: { allow: ["scale_*"] }
  readonly:
    anonymous: true
    denial: explicit
    tools: { allow: ["search_*", read_file] }
    prompts: { allow: [summarize] }
  empty:
    anonymous: true
"#;

fn expected_tools(server: &str) -> Vec<&'static str> {
    let allowed = |name: &str| match server {
        "default" => {
            let lower = name.to_ascii_lowercase();
            !(lower.ends_with("_admin") || lower.starts_with("delete_") || lower.starts_with("export_"))
        }
        "ops" => ["status", "get_metrics", "restart_db", "restart_cache"].contains(&name),
        "readonly" => ["search_docs", "search_web", "read_file"].contains(&name),
        _ => false,
    };
    CATALOG_TOOLS.iter().copied().filter(|n| allowed(n)).collect()
}

fn url(gate: &Gate, server: &str) -> String {
    if server == "default" { gate.url() } else { format!("http://{}/servers/{server}/mcp", gate.addr) }
}

fn rpc_error(result: Result<impl std::fmt::Debug, ServiceError>) -> (i32, String) {
    match result {
        Err(ServiceError::McpError(error)) => (error.code.0, error.message.to_string()),
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

async fn each_server_sees_exactly_its_allowlist(json_response: bool) -> TestResult {
    let upstream = start_catalog_upstream(json_response).await;
    let gate = start_gate(&policy(upstream, "", SERVERS)).await;
    for server in ["default", "ops", "readonly", "empty"] {
        let client = ().serve(StreamableHttpClientTransport::from_uri(url(&gate, server))).await?;
        let listed: Vec<String> =
            client.list_all_tools().await?.into_iter().map(|t| t.name.to_string()).collect();
        assert_eq!(
            listed,
            expected_tools(server),
            "tools listed on {server} (json_response={json_response})"
        );

        for tool in CATALOG_TOOLS {
            let result = client.call_tool(CallToolRequestParams::new(*tool)).await;
            if expected_tools(server).contains(tool) {
                let text = result.map_err(|e| format!("{server}/{tool}: {e}"))?;
                assert_eq!(serde_json::to_value(&text.content)?[0]["text"], format!("ran {tool}"));
            } else if server == "readonly" {
                assert_eq!(rpc_error(result), (-32001, format!("Tool not allowed on this server: {tool}")));
            } else {
                assert_eq!(rpc_error(result), (-32602, format!("Unknown tool: {tool}")), "{server}");
            }
        }
        client.cancel().await?;
    }
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn virtual_servers_over_sse_answers() -> TestResult {
    each_server_sees_exactly_its_allowlist(false).await
}

#[tokio::test]
async fn virtual_servers_over_json_answers() -> TestResult {
    each_server_sees_exactly_its_allowlist(true).await
}

#[tokio::test]
async fn prompts_resources_and_templates_are_filtered_and_enforced() -> TestResult {
    let upstream = start_catalog_upstream(false).await;
    let gate = start_gate(&policy(upstream, "", SERVERS)).await;
    let client = ().serve(StreamableHttpClientTransport::from_uri(gate.url())).await?;

    let prompts: Vec<String> = client.list_all_prompts().await?.into_iter().map(|p| p.name).collect();
    assert_eq!(prompts, ["summarize", "review_code", "translate", "greet"]);
    assert!(client.get_prompt(GetPromptRequestParams::new("greet")).await.is_ok());
    assert_eq!(
        rpc_error(client.get_prompt(GetPromptRequestParams::new("admin_prompt")).await),
        (-32602, "Unknown prompt: admin_prompt".into())
    );

    let resources: Vec<String> =
        client.list_all_resources().await?.into_iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        resources,
        [
            "file:///public/readme.md",
            "file:///public/docs/guide.md",
            "mem://cache/stats",
            "file:///public/docs/api/v1.md"
        ]
    );
    assert!(
        client.read_resource(ReadResourceRequestParams::new("file:///public/docs/api/v1.md")).await.is_ok()
    );
    let (code, message) =
        rpc_error(client.read_resource(ReadResourceRequestParams::new("file:///private/keys.pem")).await);
    assert_eq!((code, message.as_str()), (-32002, "Resource not found"));

    let templates: Vec<String> =
        client.list_all_resource_templates().await?.into_iter().map(|t| t.uri_template.clone()).collect();
    assert_eq!(templates, ["file:///public/{path}"]);
    client.cancel().await?;
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn pagination_and_every_other_field_survive_filtering() -> TestResult {
    let upstream = start_catalog_upstream(true).await;
    let gate = start_gate(&policy(upstream, "", SERVERS)).await;
    let first_page = r#"{"jsonrpc":"2.0","id":"p1","method":"tools/list"}"#;
    let direct = post(upstream, &[("mcp-protocol-version", "2025-06-18")], first_page).await.json();
    let through = post(gate.addr, &[("mcp-protocol-version", "2025-06-18")], first_page).await.json();

    assert_eq!(through["result"]["nextCursor"], "8", "the cursor is the upstream's");
    let mut expected = direct.clone();
    if let Some(tools) = expected["result"]["tools"].as_array_mut() {
        tools.retain(|t| expected_tools("default").contains(&t["name"].as_str().unwrap_or("")));
    }
    assert_eq!(through, expected, "only denied items are gone; every field and item is the upstream's");
    assert_eq!(direct["result"]["tools"].as_array().map(Vec::len), Some(8));

    let second = r#"{"jsonrpc":"2.0","id":"p2","method":"tools/list","params":{"cursor":"8"}}"#;
    let through = post(gate.addr, &[("mcp-protocol-version", "2025-06-18")], second).await.json();
    assert_eq!(through["result"]["nextCursor"], "16");
    gate.shutdown().await;
    Ok(())
}

/// Opens a request through `gate` whose SSE answer the test writes.
async fn scripted(
    method: &str,
    body: &'static str,
    transport: &str,
) -> Result<(Gate, Sender, hyper::body::Incoming), BoxError> {
    let (upstream, mut streams) = start_scripted_sse_upstream().await;
    let gate = start_gate(&policy(upstream, transport, SERVERS)).await;
    let (addr, method) = (gate.addr, method.to_owned());
    let response = tokio::spawn(async move {
        let headers = [&[("accept", "application/json, text/event-stream")], POST_0618].concat();
        open(addr, &method, "/mcp", &headers, http_body_util::Full::new(Bytes::from_static(body.as_bytes())))
            .await
    });
    let sender = tokio::time::timeout(Duration::from_secs(10), streams.recv()).await?.ok_or("no request")?;
    sender.send(Bytes::from_static(b": stream opened\n\n")).await?;
    let response = response.await??;
    assert_eq!(response.status(), StatusCode::OK);
    Ok((gate, sender, response.into_body()))
}

async fn read_all(sender: Sender, body: hyper::body::Incoming) -> Result<String, BoxError> {
    drop(sender);
    let bytes = tokio::time::timeout(Duration::from_secs(10), body.collect()).await??.to_bytes();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn data_messages(stream: &str) -> Vec<Value> {
    stream
        .split("\n\n")
        .filter_map(|event| {
            let data: Vec<&str> =
                event.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim_start).collect();
            (!data.is_empty()).then(|| serde_json::from_str(&data.join("\n")).unwrap_or(Value::Null))
        })
        .collect()
}

const TOOLS_LIST_RESULT: &str = r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"search_docs"},{"name":"user_admin"},{"name":"status"}],"nextCursor":"c2"}}"#;

#[tokio::test]
async fn list_results_on_a_get_stream_are_filtered_too() -> TestResult {
    let (gate, sender, body) = scripted("GET", "", "").await?;
    // A resumed GET stream replays an answer; it is judged like any other.
    sender.send(Bytes::from(format!("id: 1\nevent: message\ndata: {TOOLS_LIST_RESULT}\n\n"))).await?;
    sender
        .send(Bytes::from_static(b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n"))
        .await?;
    let stream = read_all(sender, body).await?;
    let messages = data_messages(&stream);
    assert_eq!(messages[0]["result"]["tools"], json!([{ "name": "search_docs" }, { "name": "status" }]));
    assert_eq!(messages[0]["result"]["nextCursor"], "c2");
    assert_eq!(messages[1]["method"], "notifications/message", "other events pass");
    assert!(stream.contains("id: 1\n") && stream.contains("event: message\n"), "event fields kept: {stream}");
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_list_result_split_into_chunks_and_padded_with_comments_is_filtered() -> TestResult {
    let (gate, sender, body) =
        scripted("POST", r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#, "").await?;
    // Two data lines, split between JSON tokens (SSE joins them with \n).
    let split = TOOLS_LIST_RESULT.find('[').map(|i| i + 1).unwrap_or(0);
    let (head, tail) = TOOLS_LIST_RESULT.split_at(split);
    let event = format!(": pad\nevent: message\n: more padding\ndata: {head}\ndata: {tail}\n\n");
    for chunk in event.as_bytes().chunks(7) {
        sender.send(Bytes::copy_from_slice(chunk)).await?;
    }
    let stream = read_all(sender, body).await?;
    let messages = data_messages(&stream);
    assert_eq!(messages.len(), 1, "{stream}");
    let names: Vec<&str> = messages[0]["result"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["search_docs", "status"]);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn a_list_result_split_across_events_is_withheld() -> TestResult {
    let (gate, sender, body) =
        scripted("POST", r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#, "").await?;
    sender.send(Bytes::from(format!("data: {}\n\n", &TOOLS_LIST_RESULT[..60]))).await?;
    sender.send(Bytes::from(format!("data: {}\n\n", &TOOLS_LIST_RESULT[60..]))).await?;
    let stream = read_all(sender, body).await?;
    assert!(!stream.contains("user_admin"), "{stream}");
    let messages = data_messages(&stream);
    assert_eq!(messages.len(), 1, "{stream}");
    assert_eq!(messages[0]["id"], 7);
    assert_eq!(messages[0]["error"]["code"], -32603);
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn an_oversized_list_result_is_withheld() -> TestResult {
    let (gate, sender, body) =
        scripted("POST", r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#, "  max_list_result: 4KiB")
            .await?;
    let tools: Vec<Value> = (0..200).map(|i| json!({ "name": format!("user_admin_{i}") })).collect();
    let big = json!({ "jsonrpc": "2.0", "id": 7, "result": { "tools": tools } });
    sender.send(Bytes::from(format!("data: {big}\n\n"))).await?;
    let stream = read_all(sender, body).await?;
    assert!(!stream.contains("user_admin"), "nothing of it leaks");
    assert_eq!(data_messages(&stream)[0]["error"]["code"], -32603);
    gate.shutdown().await;

    // The same over a JSON answer: a 502 with the request's id.
    let upstream = serve_http(|_request: http::Request<hyper::body::Incoming>| async move {
        let tools: Vec<Value> = (0..200).map(|i| json!({ "name": format!("user_admin_{i}") })).collect();
        let body = json!({ "jsonrpc": "2.0", "id": 7, "result": { "tools": tools } }).to_string();
        let mut response = http::Response::new(http_body_util::Full::new(Bytes::from(body)));
        response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
        response
    })
    .await;
    let gate = start_gate(&policy(upstream, "  max_list_result: 4KiB", SERVERS)).await;
    let reply = post(
        gate.addr,
        &[("mcp-protocol-version", "2025-06-18")],
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#,
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert_eq!(reply.json()["id"], 7);
    assert!(!reply.text().contains("user_admin"));
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn unreadable_list_shapes_are_withheld() -> TestResult {
    for bad in [
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"status"}],"tools":[{"name":"user_admin"}]}}"#,
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"name":"status","name":"user_admin"}]}}"#,
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":{"user_admin":{}}}}"#,
        r#"{"jsonrpc":"2.0","id":7,"result":{"tools":[{"title":"user_admin"}]}}"#,
    ] {
        let (gate, sender, body) =
            scripted("POST", r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#, "").await?;
        sender.send(Bytes::from(format!("data: {bad}\n\n"))).await?;
        let stream = read_all(sender, body).await?;
        assert!(!stream.contains("user_admin"), "{bad} leaked: {stream}");
        assert_eq!(data_messages(&stream)[0]["error"]["code"], -32603, "{stream}");
        gate.shutdown().await;
    }
    Ok(())
}

/// A body written in pieces with a pause between them, so that each
/// arrives as a read of its own; with `length`, a `Content-Length` too.
struct Pieces {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    length: Option<u64>,
}

impl http_body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|piece| piece.map(|bytes| Ok(http_body::Frame::data(bytes))))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.length.map_or_else(http_body::SizeHint::default, http_body::SizeHint::with_exact)
    }
}

async fn piecewise_upstream(body: String, declared: bool) -> std::net::SocketAddr {
    serve_http(move |_request: http::Request<hyper::body::Incoming>| {
        let body = body.clone();
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let length = declared.then_some(body.len() as u64);
            tokio::spawn(async move {
                for piece in body.as_bytes().chunks(700) {
                    if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
            let mut response = http::Response::new(Pieces { rx, length });
            response.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
            response
        }
    })
    .await
}

#[tokio::test]
async fn a_json_list_arriving_in_pieces_is_filtered_whole() -> TestResult {
    let tools: Vec<Value> = (0..120)
        .map(|i| {
            let name = if i % 3 == 0 { format!("user_{i}_admin") } else { format!("search_{i}") };
            json!({ "name": name, "description": "a tool ".repeat(8) })
        })
        .collect();
    let list =
        json!({ "jsonrpc": "2.0", "id": 7, "result": { "tools": tools, "nextCursor": "n" } }).to_string();
    let request = r#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
    for declared in [true, false] {
        let gate = start_gate(&policy(piecewise_upstream(list.clone(), declared).await, "", SERVERS)).await;
        let reply = post(gate.addr, &[("mcp-protocol-version", "2025-06-18")], request).await;
        assert_eq!(reply.status, StatusCode::OK, "Content-Length {declared}: {}", reply.text());
        let names: Vec<String> = reply.json()["result"]["tools"]
            .as_array()
            .map(|tools| tools.iter().filter_map(|t| t["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let expected: Vec<String> = (0..120).filter(|i| i % 3 != 0).map(|i| format!("search_{i}")).collect();
        assert_eq!(names, expected, "Content-Length {declared}");
        assert_eq!(reply.json()["result"]["nextCursor"], "n");
        gate.shutdown().await;

        // The same list over a 4 KiB limit: withheld, whether its length
        // was declared up front or only found as it arrived.
        let upstream = piecewise_upstream(list.clone(), declared).await;
        let gate = start_gate(&policy(upstream, "  max_list_result: 4KiB", SERVERS)).await;
        let reply = post(gate.addr, &[("mcp-protocol-version", "2025-06-18")], request).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "Content-Length {declared}");
        assert_eq!(reply.json()["id"], 7);
        assert!(!reply.text().contains("_admin"));
        gate.shutdown().await;
    }
    Ok(())
}
