//! `/api/mcp/*`: testing an MCP server before saving it (connect, list tools, optionally call
//! one), and the OAuth sign-in routes (not offered by this server: no job ever exists).

use std::time::Duration;

use axum::extract::Path;
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::error::{ApiError, ValidJson, ValidationIssue};
use crate::mcp::McpClient;

/// Routes of the MCP group.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(test_mcp_server))
        .routes(routes!(start_mcp_oauth))
        .routes(routes!(get_mcp_oauth_status))
        .routes(routes!(complete_mcp_oauth))
}

fn missing(loc: &[&str], input: &Value) -> ApiError {
    ApiError::Validation(vec![
        ValidationIssue::new("missing", loc, "Field required").with_input(input.clone())
    ])
}

/// The server spec of a test request, normalised to an `MCPServer` entry.
fn server_spec(body: &Value) -> Result<Value, ApiError> {
    let Some(server) = body.get("server").filter(|s| s.is_object()) else {
        return Err(missing(&["body", "server"], body));
    };
    let kind = server
        .get("type")
        .or_else(|| server.get("transport"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            if server.get("command").is_some() {
                "stdio"
            } else {
                "http"
            }
            .into()
        });
    let field = |k: &str| {
        server
            .get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    match kind.as_str() {
        "stdio" if field("command").is_none() => {
            Err(missing(&["body", "server", "stdio", "command"], server))
        }
        "stdio" => Ok(server.clone()),
        "http" | "shttp" | "streamable-http" | "sse" if field("url").is_none() => {
            Err(missing(&["body", "server", kind.as_str(), "url"], server))
        }
        "http" | "shttp" | "streamable-http" | "sse" => Ok(server.clone()),
        other => Err(ApiError::Validation(vec![ValidationIssue::new(
            "union_tag_invalid",
            &["body", "server"],
            format!("Input tag '{other}' found using 'type' does not match any of the expected tags: 'stdio', 'http', 'shttp', 'streamable-http', 'sse'"),
        )
        .with_input(server.clone())])),
    }
}

/// Connects to a server, lists its tools and, if asked, calls one; failures are reported in
/// the answer (`ok: false`, `error_kind`), not as HTTP errors.
#[utoipa::path(post, path = "/api/mcp/test", tag = "MCP")]
async fn test_mcp_server(ValidJson(body): ValidJson<Value>) -> Result<Json<Value>, ApiError> {
    let server = server_spec(&body)?;
    let timeout = body.get("timeout").and_then(Value::as_f64).unwrap_or(15.0);
    if !(timeout > 0.0 && timeout <= 120.0) {
        return Err(ApiError::Validation(vec![ValidationIssue::new(
            "less_than_equal",
            &["body", "timeout"],
            "Input should be less than or equal to 120",
        )
        .with_input(timeout)]));
    }
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or("test-server")
        .to_string();
    let failure =
        |e: crate::mcp::McpError| json!({"ok": false, "error": e.message, "error_kind": e.kind});
    let limit = crate::util::duration_from_secs(timeout);
    let client = match McpClient::connect(&name, &server, limit).await {
        Ok(c) => c,
        Err(e) => return Ok(Json(failure(e))),
    };
    let listed = tokio::time::timeout(limit, client.tools()).await;
    let tools = match listed {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            client.close().await;
            return Ok(Json(failure(e)));
        }
        Err(_) => {
            client.close().await;
            return Ok(Json(
                json!({"ok": false, "error": format!("tools/list timed out after {timeout} seconds"), "error_kind": "timeout"}),
            ));
        }
    };
    let names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
    let mut answer = json!({"ok": true, "tools": names});
    if let Some(call) = body.get("tool_call").filter(|c| c.is_object()) {
        let tool = call["name"].as_str().unwrap_or_default();
        let args = call["arguments"].as_object().cloned().unwrap_or_default();
        let result =
            tokio::time::timeout(Duration::from_secs_f64(timeout), client.call(tool, args)).await;
        answer["tool_result"] = match result {
            Ok(Ok(r)) => crate::mcp::test_tool_result(&r),
            Ok(Err(e)) => json!({"is_error": true, "text": e.message}),
            Err(_) => json!({"is_error": true, "text": "tool call timed out"}),
        };
    }
    client.close().await;
    Ok(Json(answer))
}

/// OAuth sign-in for an MCP server: a server without `auth.strategy` `oauth2` is a 400, as
/// there; the sign-in itself is not offered by this server (the answer says so).
#[utoipa::path(post, path = "/api/mcp/oauth/start", tag = "MCP")]
async fn start_mcp_oauth(ValidJson(body): ValidJson<Value>) -> Result<Json<Value>, ApiError> {
    let server = server_spec(&body)?;
    if server["auth"]["strategy"] != "oauth2" {
        return Err(ApiError::BadRequest(
            "MCP OAuth start requires auth.strategy='oauth2'".into(),
        ));
    }
    Ok(Json(json!({
        "ok": false,
        "error": "MCP OAuth sign-in is not supported by this server; give the server a token \
                  (auth.strategy 'bearer', 'api_key' or 'header')",
        "error_kind": "unknown",
    })))
}

/// The state of an OAuth sign-in job (none can exist here).
#[utoipa::path(get, path = "/api/mcp/oauth/status/{job_id}", tag = "MCP")]
async fn get_mcp_oauth_status(Path(_job): Path<String>) -> Result<Json<Value>, ApiError> {
    Err(ApiError::NotFound("MCP OAuth job not found".into()))
}

/// Completes an OAuth sign-in job (none can exist here).
#[utoipa::path(post, path = "/api/mcp/oauth/callback/{job_id}", tag = "MCP")]
async fn complete_mcp_oauth(Path(_job): Path<String>) -> Result<Json<Value>, ApiError> {
    Err(ApiError::NotFound("MCP OAuth job not found".into()))
}
