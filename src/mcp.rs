//! MCP servers (Model Context Protocol) as the agent's tools, through the `rmcp` client:
//! `stdio` servers run as children in their own process group (killed as a group when the
//! connection closes); `http`/`streamable-http` servers are reached over streamable HTTP.
//! A server entry is the SDK's `MCPServer` JSON (`command`/`args`/`env`/`cwd`, or
//! `url`/`headers`/`auth`), as stored in the settings' `mcp_config`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{json, Map, Value};

/// Why an MCP operation failed, classed like the reference (`timeout`, `connection`, `unknown`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct McpError {
    pub kind: &'static str,
    pub message: String,
}

impl McpError {
    fn connection(message: impl Into<String>) -> Self {
        McpError {
            kind: "connection",
            message: message.into(),
        }
    }

    fn timeout(what: &str, secs: f64) -> Self {
        McpError {
            kind: "timeout",
            message: format!("{what} timed out after {secs} seconds"),
        }
    }
}

/// A connected MCP server.
pub struct McpClient {
    name: String,
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, ()>>>,
    peer: rmcp::Peer<RoleClient>,
}

impl std::fmt::Debug for McpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpClient")
            .field("name", &self.name)
            .finish()
    }
}

fn string_map(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
        .collect()
}

/// Headers an `auth` credential adds (`bearer`, `api_key`, `header`, `basic`).
fn auth_headers(auth: &Value) -> Vec<(String, String)> {
    let text = |k: &str| {
        auth.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match auth.get("strategy").and_then(Value::as_str) {
        Some("bearer") => vec![("Authorization".into(), format!("Bearer {}", text("token")))],
        Some("api_key") => {
            let header = auth
                .get("header_name")
                .and_then(Value::as_str)
                .unwrap_or("X-API-Key");
            vec![(header.into(), text("api_key"))]
        }
        Some("header") => vec![(text("header_name"), text("value"))],
        Some("basic") => {
            use base64::Engine;
            let pair = format!("{}:{}", text("username"), text("password"));
            let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
            vec![("Authorization".into(), format!("Basic {b64}"))]
        }
        _ => Vec::new(),
    }
}

impl McpClient {
    /// Connects to the server `name` described by `server` within `timeout`.
    pub async fn connect(
        name: &str,
        server: &Value,
        timeout: Duration,
    ) -> Result<Arc<Self>, McpError> {
        let secs = timeout.as_secs_f64();
        match tokio::time::timeout(timeout, Self::connect_inner(name, server)).await {
            Ok(r) => r,
            Err(_) => Err(McpError::timeout(
                &format!("Connecting to MCP server '{name}'"),
                secs,
            )),
        }
    }

    async fn connect_inner(name: &str, server: &Value) -> Result<Arc<Self>, McpError> {
        let service = if let Some(command) = server.get("command").and_then(Value::as_str) {
            let mut cmd = tokio::process::Command::new(command);
            if let Some(args) = server.get("args").and_then(Value::as_array) {
                cmd.args(args.iter().filter_map(Value::as_str));
            }
            cmd.env_clear()
                .envs(crate::util::child_env().iter().map(|(k, v)| (k, v)))
                .envs(string_map(server.get("env").unwrap_or(&Value::Null)));
            if let Some(cwd) = server.get("cwd").and_then(Value::as_str) {
                cmd.current_dir(cwd);
            }
            let mut wrapped = process_wrap::tokio::CommandWrap::from(cmd);
            wrapped.wrap(process_wrap::tokio::ProcessGroup::leader());
            let (transport, _stderr) = rmcp::transport::TokioChildProcess::builder(wrapped)
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| McpError::connection(format!("cannot start '{command}': {e}")))?;
            ().serve(transport)
                .await
                .map_err(|e| McpError::connection(format!("MCP server '{name}': {e}")))?
        } else if let Some(url) = server.get("url").and_then(Value::as_str) {
            use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
            let mut headers = HashMap::new();
            let all = string_map(server.get("headers").unwrap_or(&Value::Null))
                .into_iter()
                .chain(server.get("auth").map(auth_headers).unwrap_or_default());
            for (k, v) in all {
                if let (Ok(k), Ok(v)) = (
                    reqwest::header::HeaderName::from_bytes(k.as_bytes()),
                    reqwest::header::HeaderValue::from_str(&v),
                ) {
                    headers.insert(k, v);
                }
            }
            let config = StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers);
            let transport = rmcp::transport::StreamableHttpClientTransport::from_config(config);
            ().serve(transport)
                .await
                .map_err(|e| McpError::connection(format!("MCP server '{name}' at {url}: {e}")))?
        } else {
            return Err(McpError {
                kind: "unknown",
                message: format!("MCP server '{name}' has neither 'command' nor 'url'"),
            });
        };
        let peer = service.peer().clone();
        Ok(Arc::new(McpClient {
            name: name.to_string(),
            service: tokio::sync::Mutex::new(Some(service)),
            peer,
        }))
    }

    /// The server's name in the configuration.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server's tools as MCP JSON (`name`, `description`, `inputSchema`, `annotations`).
    pub async fn tools(&self) -> Result<Vec<Value>, McpError> {
        let tools = self
            .peer
            .list_all_tools()
            .await
            .map_err(|e| McpError::connection(format!("tools/list failed: {e}")))?;
        Ok(tools
            .into_iter()
            .filter_map(|t| serde_json::to_value(t).ok())
            .collect())
    }

    /// Calls `tool` with `arguments`; the result as MCP JSON (`content`, `isError`).
    pub async fn call(&self, tool: &str, arguments: Map<String, Value>) -> Result<Value, McpError> {
        let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments);
        let result = self
            .peer
            .call_tool(params)
            .await
            .map_err(|e| McpError::connection(format!("tools/call '{tool}' failed: {e}")))?;
        serde_json::to_value(result).map_err(|e| McpError {
            kind: "unknown",
            message: e.to_string(),
        })
    }

    /// Closes the connection (a stdio server's process group is killed).
    pub async fn close(&self) {
        if let Some(service) = self.service.lock().await.take() {
            let _ = service.cancel().await;
        }
    }
}

/// The text parts of a call result joined (what `/api/mcp/test` reports).
pub fn result_text(result: &Value) -> String {
    result["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The enabled servers of an agent's or the settings' `mcp_config` (a map of servers, or the
/// FastMCP form `{"mcpServers": {...}}`).
pub fn enabled_servers(config: &Value) -> Vec<(String, Value)> {
    let map = config
        .get("mcpServers")
        .filter(|m| m.is_object())
        .unwrap_or(config);
    map.as_object()
        .into_iter()
        .flatten()
        .filter(|(_, s)| s.get("enabled").and_then(Value::as_bool) != Some(false))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `MCPToolCallResult` of a test call.
pub fn test_tool_result(result: &Value) -> Value {
    json!({"is_error": result["isError"].as_bool().unwrap_or(false), "text": result_text(result)})
}
