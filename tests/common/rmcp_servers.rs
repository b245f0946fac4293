//! The MCP servers the tests put behind toolgate, built with the official
//! Rust SDK (rmcp): a small sample server and a paginated catalog.

use super::serve_http;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, GetPromptRequestParams,
    GetPromptResponse, GetPromptResult, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, Prompt, PromptMessage,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource, ResourceContents,
    ResourceTemplate, Role, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The MCP server the tests put behind toolgate: tools (one of which
/// reports progress), prompts, resources and a resource template.
#[derive(Clone, Default)]
pub struct SampleServer;

fn object_schema() -> Arc<rmcp::model::JsonObject> {
    let schema = serde_json::json!({ "type": "object", "properties": { "text": { "type": "string" } } });
    Arc::new(schema.as_object().cloned().unwrap_or_default())
}

impl ServerHandler for SampleServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder().enable_tools().enable_prompts().enable_resources().build(),
        )
        .with_instructions("toolgate test server")
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("echo", "Repeat the text", object_schema()),
            Tool::new("progress", "Report progress three times, then answer", object_schema()),
            Tool::new("delete_everything", "An admin tool", object_schema()),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        match request.name.as_ref() {
            "echo" => {
                let text = request
                    .arguments
                    .as_ref()
                    .and_then(|a| a.get("text"))
                    .and_then(|t| t.as_str())
                    .unwrap_or_default()
                    .to_owned();
                Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
            }
            "progress" => {
                if let Some(token) = context.meta.get_progress_token() {
                    for step in 1..=3 {
                        let note =
                            ProgressNotificationParam::new(token.clone(), f64::from(step)).with_total(3.0);
                        let _ = context.peer.notify_progress(note).await;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                Ok(CallToolResult::success(vec![ContentBlock::text("done")]).into())
            }
            "delete_everything" => Ok(CallToolResult::success(vec![ContentBlock::text("deleted")]).into()),
            other => Err(ErrorData::invalid_params(format!("Unknown tool: {other}"), None)),
        }
    }

    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(vec![Prompt::new("greet", Some("Say hello"), None)]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != "greet" {
            return Err(ErrorData::invalid_params(format!("Unknown prompt: {}", request.name), None));
        }
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(Role::User, "Hello!")]).into())
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new("mem://public/readme", "readme"),
            Resource::new("mem://private/keys", "keys"),
        ]))
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(vec![ResourceTemplate::new(
            "mem://public/{name}",
            "public",
        )]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Ok(ReadResourceResult::new(vec![ResourceContents::text(
            format!("contents of {}", request.uri),
            request.uri,
        )])
        .into())
    }
}

/// Starts the SDK's Streamable HTTP server at `http://ADDR/mcp` with the
/// sample server. With `json_response` it is stateless and answers simple
/// requests with JSON; without, it keeps sessions and answers with SSE.
pub async fn start_sdk_upstream(json_response: bool) -> SocketAddr {
    start_rmcp_upstream(SampleServer, json_response).await
}

/// Starts the catalog server (see [`start_sdk_upstream`] for `json_response`).
pub async fn start_catalog_upstream(json_response: bool) -> SocketAddr {
    start_rmcp_upstream(CatalogServer, json_response).await
}

async fn start_rmcp_upstream<H: ServerHandler + Clone + Send + Sync + 'static>(
    handler: H,
    json_response: bool,
) -> SocketAddr {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(!json_response)
        .with_json_response(json_response);
    let service: StreamableHttpService<H, LocalSessionManager> =
        StreamableHttpService::new(move || Ok(handler.clone()), Default::default(), config);
    serve_http(move |request: Request<hyper::body::Incoming>| {
        let service = service.clone();
        async move {
            if request.uri().path() != "/mcp" {
                let mut response = http::Response::new(
                    http_body_util::Full::new(Bytes::new())
                        .map_err(|never: Infallible| match never {})
                        .boxed(),
                );
                *response.status_mut() = StatusCode::NOT_FOUND;
                return response;
            }
            service.handle(request).await
        }
    })
    .await
}

/// The catalog server's tools, served 8 to a page.
pub const CATALOG_TOOLS: &[&str] = &[
    "search_docs",
    "search_web",
    "read_file",
    "write_file",
    "delete_file",
    "restart_db",
    "restart_cache",
    "status",
    "get_metrics",
    "user_admin",
    "billing_admin",
    "list_users",
    "create_user",
    "echo",
    "translate",
    "summarize_text",
    "Delete_Everything",
    "export_secrets",
    "ping_host",
    "scale_service",
];
pub const CATALOG_PROMPTS: &[&str] = &["summarize", "review_code", "admin_prompt", "translate", "greet"];
pub const CATALOG_RESOURCES: &[&str] = &[
    "file:///public/readme.md",
    "file:///public/docs/guide.md",
    "file:///private/keys.pem",
    "file:///private/db.env",
    "mem://cache/stats",
    "file:///public/docs/api/v1.md",
];
pub const CATALOG_TEMPLATES: &[&str] =
    &["file:///public/{path}", "file:///private/{path}", "mem://cache/{key}"];
const PAGE: usize = 8;

/// An upstream with many tools (paginated), prompts, resources and
/// templates; every call says what was called, so tests can tell.
#[derive(Clone, Default)]
pub struct CatalogServer;

fn page<T: Clone>(items: &[T], request: Option<&PaginatedRequestParams>) -> (Vec<T>, Option<String>) {
    let start: usize = request.and_then(|r| r.cursor.as_deref()).and_then(|c| c.parse().ok()).unwrap_or(0);
    let end = (start + PAGE).min(items.len());
    let next = (end < items.len()).then(|| end.to_string());
    (items.get(start..end).map(<[T]>::to_vec).unwrap_or_default(), next)
}

impl ServerHandler for CatalogServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder().enable_tools().enable_prompts().enable_resources().build(),
        )
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let tools: Vec<Tool> = CATALOG_TOOLS
            .iter()
            .map(|name| Tool::new(*name, format!("The {name} tool"), object_schema()))
            .collect();
        let (items, next) = page(&tools, request.as_ref());
        let mut result = ListToolsResult::with_all_items(items);
        result.next_cursor = next;
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !CATALOG_TOOLS.contains(&request.name.as_ref()) {
            return Err(ErrorData::invalid_params(format!("Unknown tool: {}", request.name), None));
        }
        Ok(CallToolResult::success(vec![ContentBlock::text(format!("ran {}", request.name))]).into())
    }

    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(
            CATALOG_PROMPTS.iter().map(|name| Prompt::new(*name, Some("a prompt"), None)).collect(),
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if !CATALOG_PROMPTS.contains(&request.name.as_str()) {
            return Err(ErrorData::invalid_params(format!("Unknown prompt: {}", request.name), None));
        }
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!("prompt {}", request.name),
        )])
        .into())
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(
            CATALOG_RESOURCES.iter().map(|uri| Resource::new(*uri, "r")).collect(),
        ))
    }

    async fn list_resource_templates(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            CATALOG_TEMPLATES.iter().map(|t| ResourceTemplate::new(*t, "t")).collect(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        Ok(ReadResourceResult::new(vec![ResourceContents::text(
            format!("read {}", request.uri),
            request.uri,
        )])
        .into())
    }
}
