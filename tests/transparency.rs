//! A real MCP client (rmcp) talks to a real MCP server (rmcp) through
//! toolgate and directly; every result must be the same. Covers
//! initialize, tools, prompts, resources, progress notifications and
//! session DELETE, over JSON and SSE answers and across protocol versions.

mod common;

use common::*;
use http::StatusCode;
use rmcp::model::{
    CallToolRequestParams, ClientConfig, ClientRequest, GetPromptRequestParams, ProgressNotificationParam,
    ProtocolVersion, ReadResourceRequestParams, Request,
};
use rmcp::service::{NotificationContext, PeerRequestOptions};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, ClientLifecycleMode, ClientServiceExt, RoleClient, ServiceExt};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
struct Client {
    version: ProtocolVersion,
    progress: Arc<Mutex<Vec<f64>>>,
}

impl ClientHandler for Client {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::default().with_protocol_version(self.version.clone())
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _: NotificationContext<RoleClient>) {
        if let Ok(mut seen) = self.progress.lock() {
            seen.push(params.progress);
        }
    }
}

/// Everything a client sees in one session, as JSON for comparison.
async fn session_transcript(
    url: String,
    version: ProtocolVersion,
) -> Result<Value, Box<dyn std::error::Error>> {
    let progress = Arc::new(Mutex::new(Vec::new()));
    let handler = Client { version: version.clone(), progress: progress.clone() };
    let transport = StreamableHttpClientTransport::from_uri(url);
    let client = if version >= ProtocolVersion::V_2026_07_28 {
        // 2026-07-28 has no initialize: the client discovers the server and
        // sends self-contained requests with Mcp-Method/Mcp-Name headers.
        let lifecycle = ClientLifecycleMode::Discover { preferred_versions: vec![version] };
        handler.serve_with_lifecycle(transport, lifecycle).await?
    } else {
        handler.serve(transport).await?
    };
    let info = serde_json::to_value(client.peer_info())?;
    let tools = client.list_all_tools().await?;
    let echo = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(json!({ "text": "héllo ✓" }).as_object().cloned().unwrap_or_default()),
        )
        .await?;
    let unknown =
        client.call_tool(CallToolRequestParams::new("no_such_tool")).await.map_err(|e| e.to_string());
    let prompts = client.list_all_prompts().await?;
    let prompt = client.get_prompt(GetPromptRequestParams::new("greet")).await?;
    let resources = client.list_all_resources().await?;
    let templates = client.list_all_resource_templates().await?;
    let read = client.read_resource(ReadResourceRequestParams::new("mem://public/readme")).await?;

    let handle = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(Request::new(CallToolRequestParams::new("progress"))),
            PeerRequestOptions::no_options(),
        )
        .await?;
    let with_progress = handle.await_response().await?;
    // Notifications are handled on their own task: give them a moment.
    for _ in 0..100 {
        if progress.lock().map(|p| p.len()).unwrap_or(0) >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let progress_seen = progress.lock().map(|p| p.clone()).unwrap_or_default();
    client.cancel().await?;

    Ok(json!({
        "server": info.get("serverInfo"),
        "protocolVersion": info.get("protocolVersion"),
        "capabilities": info.get("capabilities"),
        "tools": tools,
        "echo": echo,
        "unknown": unknown,
        "prompts": prompts,
        "prompt": prompt,
        "resources": resources,
        "templates": templates,
        "read": read,
        "with_progress": serde_json::to_value(with_progress)?,
        "progress": progress_seen,
    }))
}

async fn same_through_gate(
    json_response: bool,
    version: ProtocolVersion,
) -> Result<(), Box<dyn std::error::Error>> {
    let (upstream, gate) = start_pair(json_response).await;
    let direct = session_transcript(format!("http://{upstream}/mcp"), version.clone()).await?;
    let proxied = session_transcript(gate.url(), version.clone()).await?;
    assert_eq!(proxied, direct, "through toolgate vs direct ({version:?}, json_response={json_response})");
    assert_eq!(proxied["protocolVersion"], json!(version.as_str()), "negotiated version");
    assert_eq!(proxied["progress"], json!([1.0, 2.0, 3.0]), "progress notifications arrive in order");
    assert_eq!(proxied["echo"]["content"][0]["text"], "héllo ✓");
    assert_eq!(proxied["tools"].as_array().map(Vec::len), Some(3));
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn sdk_client_sees_the_same_server_through_toolgate_over_sse() -> Result<(), Box<dyn std::error::Error>>
{
    for version in
        [ProtocolVersion::V_2025_03_26, ProtocolVersion::V_2025_06_18, ProtocolVersion::V_2025_11_25]
    {
        same_through_gate(false, version).await?;
    }
    Ok(())
}

#[tokio::test]
async fn sdk_client_sees_the_same_server_through_toolgate_over_json() -> Result<(), Box<dyn std::error::Error>>
{
    for version in [ProtocolVersion::V_2025_06_18, ProtocolVersion::V_2025_11_25] {
        same_through_gate(true, version).await?;
    }
    Ok(())
}

#[tokio::test]
async fn sdk_client_at_2026_07_28_works_through_toolgate() -> Result<(), Box<dyn std::error::Error>> {
    same_through_gate(false, ProtocolVersion::V_2026_07_28).await?;
    same_through_gate(true, ProtocolVersion::V_2026_07_28).await
}

#[tokio::test]
async fn session_delete_reaches_the_upstream() -> TestResult {
    let (_upstream, gate) = start_pair(false).await;
    let session = raw_session(gate.addr).await;
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let headers = [("mcp-session-id", session.as_str()), ("mcp-protocol-version", "2025-06-18")];
    assert_eq!(post(gate.addr, &headers, list).await.status, StatusCode::OK);

    let deleted = send(gate.addr, "DELETE", "/mcp", &headers, "").await;
    assert!(deleted.status.is_success(), "DELETE answered {}", deleted.status);
    // The upstream no longer knows the session: its 404 comes back through.
    let after = post(gate.addr, &headers, list).await;
    assert_eq!(after.status, StatusCode::NOT_FOUND, "{}", after.text());
    gate.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn h2c_clients_are_served() -> TestResult {
    let (_upstream, gate) = start_pair(true).await;
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
        .body(http_body_util::Full::new(bytes::Bytes::from_static(INITIALIZE.as_bytes())))?;
    let response = sender.send_request(request).await?;
    assert_eq!(response.status(), StatusCode::OK);
    let body = http_body_util::BodyExt::collect(response.into_body()).await?.to_bytes();
    let value: Value = serde_json::from_slice(&body)?;
    assert_eq!(value["result"]["serverInfo"]["name"], "rmcp");
    gate.shutdown().await;
    Ok(())
}
