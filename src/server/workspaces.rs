//! Helpers of a GUI around the server: saved workspaces (`/api/workspaces*`), VS Code status
//! (`/api/vscode/*` and the conversation-scoped copies), the workspace-session cookie
//! (`/api/auth/workspace-session`), the conversation workspace browser
//! (`/api/conversations/{id}/workspace[/{path}]`) and hook configurations (`/api/hooks`).

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::error::{ApiError, ValidJson, ValidObject, ValidPath, ValidQuery, ValidationIssue};
use crate::settings::workspaces::{validate_item, List};
use crate::settings::SettingsError;

/// Routes of the Workspaces, VSCode, Auth and Hooks groups and the workspace browser.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workspaces, add_workspaces, delete_workspace))
        .routes(routes!(add_workspace_parents, delete_workspace_parent))
        .routes(routes!(get_vscode_status))
        .routes(routes!(get_vscode_url))
        .routes(routes!(get_runtime_vscode_status))
        .routes(routes!(get_runtime_vscode_url))
        .routes(routes!(create_workspace_session, delete_workspace_session))
        .routes(routes!(serve_workspace_root))
        // The prefix the reference hands out (`conversation_workspace_url_path`) ends in `/`.
        .route(
            "/api/conversations/{conversation_id}/workspace/",
            axum::routing::get(serve_workspace_root),
        )
        // A wildcard: the path may have any depth (the reference's `{file_path:path}`).
        .route(
            "/api/conversations/{conversation_id}/workspace/{*file_path}",
            axum::routing::get(serve_workspace_file),
        )
        .routes(routes!(get_hooks))
}

fn items(list: List, body: &Value) -> Result<Vec<Value>, ApiError> {
    let field = match list {
        List::Workspaces => "workspaces",
        List::Parents => "parents",
    };
    let Some(given) = body.get(field) else {
        return Err(ApiError::Validation(vec![ValidationIssue::new(
            "missing",
            &["body", field],
            "Field required",
        )
        .with_input(body.clone())]));
    };
    let Some(array) = given.as_array() else {
        return Err(ApiError::Validation(vec![ValidationIssue::new(
            "list_type",
            &["body", field],
            "Input should be a valid list",
        )
        .with_input(given.clone())]));
    };
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in array.iter().enumerate() {
        match validate_item(list, i, item) {
            Ok(v) => out.push(v),
            Err(e) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(SettingsError::Fields(errors).into())
    }
}

/// Saved workspaces and workspace parents.
#[utoipa::path(get, path = "/api/workspaces", tag = "Workspaces")]
async fn list_workspaces(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.workspaces.list().await?))
}

/// Adds workspaces (those whose path is already saved are left as they are).
#[utoipa::path(post, path = "/api/workspaces", tag = "Workspaces")]
async fn add_workspaces(
    State(state): State<AppState>,
    ValidObject(body): ValidObject,
) -> Result<Json<Value>, ApiError> {
    let items = items(List::Workspaces, &body)?;
    Ok(Json(state.workspaces.add(List::Workspaces, items).await?))
}

#[derive(Debug, Deserialize)]
struct PathQuery {
    path: String,
}

/// Removes the saved workspace with `path`.
#[utoipa::path(delete, path = "/api/workspaces", tag = "Workspaces")]
async fn delete_workspace(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<PathQuery>,
) -> Result<Json<Value>, ApiError> {
    state.workspaces.remove(List::Workspaces, q.path).await?;
    Ok(Json(json!({"deleted": true})))
}

/// Adds workspace parents (directories a GUI offers to pick workspaces from).
#[utoipa::path(post, path = "/api/workspaces/parents", tag = "Workspaces")]
async fn add_workspace_parents(
    State(state): State<AppState>,
    ValidObject(body): ValidObject,
) -> Result<Json<Value>, ApiError> {
    let items = items(List::Parents, &body)?;
    Ok(Json(state.workspaces.add(List::Parents, items).await?))
}

/// Removes the workspace parent with `path`.
#[utoipa::path(delete, path = "/api/workspaces/parents", tag = "Workspaces")]
async fn delete_workspace_parent(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<PathQuery>,
) -> Result<Json<Value>, ApiError> {
    state.workspaces.remove(List::Parents, q.path).await?;
    Ok(Json(json!({"deleted": true})))
}

/// VS Code is not bundled with this server: it is never running; `enabled` follows
/// `OH_ENABLE_VSCODE` as the reference reports it.
fn vscode_status(state: &AppState) -> Json<Value> {
    if state.config.enable_vscode {
        Json(json!({"running": false, "enabled": true}))
    } else {
        Json(json!({"running": false, "enabled": false,
                    "message": "VSCode is disabled in configuration"}))
    }
}

fn vscode_url(state: &AppState) -> Result<Json<Value>, ApiError> {
    if state.config.enable_vscode {
        Ok(Json(json!({"url": null})))
    } else {
        Err(ApiError::ServiceUnavailable(
            "VSCode is disabled in configuration. Set enable_vscode=true to enable.".into(),
        ))
    }
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct VscodeUrlQuery {
    base_url: Option<String>,
    workspace_dir: Option<String>,
}

/// Whether VS Code is running.
#[utoipa::path(get, path = "/api/vscode/status", tag = "VSCode")]
async fn get_vscode_status(State(state): State<AppState>) -> Json<Value> {
    vscode_status(&state)
}

/// The URL of the VS Code server (`null` while it is not running).
#[utoipa::path(get, path = "/api/vscode/url", tag = "VSCode")]
async fn get_vscode_url(
    State(state): State<AppState>,
    ValidQuery(_q): ValidQuery<VscodeUrlQuery>,
) -> Result<Json<Value>, ApiError> {
    vscode_url(&state)
}

/// The working directory of conversation `id` (hyphenated or not; `param` names the path
/// parameter in a 422): 404 when unknown, 422 when not a UUID.
fn conversation_dir(state: &AppState, id: &str, param: &str) -> Result<PathBuf, ApiError> {
    let uuid = Uuid::parse_str(id).map_err(|e| {
        ApiError::Validation(vec![ValidationIssue::new(
            "uuid_parsing",
            &["path", param],
            format!("Input should be a valid UUID, {e}"),
        )
        .with_input(id)])
    })?;
    let conv = state
        .conversations
        .get(&uuid)
        .ok_or_else(|| ApiError::NotFound(format!("Conversation not found: {uuid}")))?;
    Ok(PathBuf::from(conv.working_dir()))
}

/// VS Code status for a conversation's runtime.
#[utoipa::path(
    get,
    path = "/api/conversations/{runtime_conversation_id}/vscode/status"
)]
async fn get_runtime_vscode_status(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<String>,
) -> Result<Json<Value>, ApiError> {
    conversation_dir(&state, &id, "runtime_conversation_id")?;
    Ok(vscode_status(&state))
}

/// VS Code URL for a conversation's runtime; `workspace_dir` must be inside its workspace.
#[utoipa::path(get, path = "/api/conversations/{runtime_conversation_id}/vscode/url")]
async fn get_runtime_vscode_url(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<String>,
    ValidQuery(q): ValidQuery<VscodeUrlQuery>,
) -> Result<Json<Value>, ApiError> {
    let workspace = conversation_dir(&state, &id, "runtime_conversation_id")?;
    if let Some(dir) = &q.workspace_dir {
        if !inside(&workspace, Path::new(dir)).await {
            return Err(ApiError::Unprocessable(
                "workspace_dir must be inside the conversation workspace".into(),
            ));
        }
    }
    vscode_url(&state)
}

/// Whether `path` (absolute) resolves to `root` or below it.
async fn inside(root: &Path, path: &Path) -> bool {
    if !path.is_absolute() {
        return false;
    }
    let (root, path) = (root.to_path_buf(), path.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        let resolved = resolve_lexically(&path);
        let resolved = std::fs::canonicalize(&resolved).unwrap_or(resolved);
        resolved.starts_with(&root)
    })
    .await
    .unwrap_or(false)
}

/// `path` with `.` and `..` removed without touching the file system.
fn resolve_lexically(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Whether the request reached us over HTTPS or on a loopback host (cookies get `Secure;
/// Partitioned` there, as the reference sets them).
fn secure_context(headers: &HeaderMap) -> bool {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_ascii_lowercase())
    };
    if first("x-forwarded-proto").as_deref() == Some("https") {
        return true;
    }
    let host = first("x-forwarded-host")
        .or_else(|| first("host"))
        .unwrap_or_default();
    let host = if let Some(inner) = host.strip_prefix('[') {
        inner.split(']').next().unwrap_or("").to_string()
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or("").to_string()
    } else {
        host
    };
    matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1")
}

fn session_cookie(value: &str, max_age: u64, headers: &HeaderMap) -> Response {
    let value = if value.is_empty() { "\"\"" } else { value };
    let mut cookie = format!(
        "{}={value}; HttpOnly; Max-Age={max_age}; Path=/api/conversations; SameSite=none",
        super::auth::WORKSPACE_SESSION_COOKIE
    );
    if secure_context(headers) {
        cookie.push_str("; Secure; Partitioned");
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

/// Exchanges the session-key header for an HttpOnly cookie the workspace browser accepts.
#[utoipa::path(post, path = "/api/auth/workspace-session", tag = "Auth")]
async fn create_workspace_session(headers: HeaderMap) -> Response {
    let key = headers
        .get(super::SESSION_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    session_cookie(&key, 315_360_000, &headers)
}

/// Clears the workspace-session cookie.
#[utoipa::path(delete, path = "/api/auth/workspace-session", tag = "Auth")]
async fn delete_workspace_session(headers: HeaderMap) -> Response {
    session_cookie("", 0, &headers)
}

/// Serves `file_path` of the conversation's workspace like a static web server: a directory
/// answers its `index.html`; paths leaving the workspace are refused.
async fn serve(state: &AppState, id: &str, file_path: &str) -> Result<Response, ApiError> {
    let root = conversation_dir(state, id, "conversation_id")?;
    let file_path = file_path.to_string();
    let target = tokio::task::spawn_blocking(move || -> Result<PathBuf, ApiError> {
        let root = std::fs::canonicalize(&root)
            .ok()
            .filter(|r| r.is_dir())
            .ok_or_else(|| ApiError::NotFound("Workspace directory does not exist".into()))?;
        let joined = root.join(file_path.trim_start_matches('/'));
        let lexical = resolve_lexically(&joined);
        let candidate = std::fs::canonicalize(&lexical).unwrap_or(lexical);
        if !candidate.starts_with(&root) {
            return Err(ApiError::BadRequest("Path is outside the workspace".into()));
        }
        if candidate.is_dir() {
            let index = candidate.join("index.html");
            return if index.is_file() {
                Ok(index)
            } else {
                Err(ApiError::NotFound("No index.html in directory".into()))
            };
        }
        if candidate.is_file() {
            Ok(candidate)
        } else {
            Err(ApiError::NotFound("File not found".into()))
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    let file = tokio::fs::File::open(&target).await?;
    let len = file.metadata().await?.len();
    let mime = mime_guess::from_path(&target).first_or_octet_stream();
    let media = if mime.type_() == "text" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    Ok((
        [
            (header::CONTENT_TYPE, media),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        body,
    )
        .into_response())
}

/// The workspace root's `index.html`.
#[utoipa::path(
    get,
    path = "/api/conversations/{conversation_id}/workspace",
    tag = "Workspace"
)]
async fn serve_workspace_root(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<String>,
) -> Result<Response, ApiError> {
    serve(&state, &id, "").await
}

/// A file of the conversation's workspace (a directory: its `index.html`).
async fn serve_workspace_file(
    State(state): State<AppState>,
    ValidPath((id, file_path)): ValidPath<(String, String)>,
) -> Result<Response, ApiError> {
    serve(&state, &id, &file_path).await
}

#[derive(Debug, Deserialize)]
struct HooksRequest {
    #[serde(default)]
    project_dir: Option<String>,
}

/// The hook configuration of a project (`<project_dir>/.openhands/hooks.json`), normalised;
/// `null` when there is none or it cannot be used.
#[utoipa::path(post, path = "/api/hooks", tag = "Hooks")]
async fn get_hooks(ValidJson(body): ValidJson<HooksRequest>) -> Json<Value> {
    let config = match body.project_dir.filter(|d| !d.is_empty()) {
        Some(dir) => crate::hook_config::load_project_config(PathBuf::from(dir)).await,
        None => None,
    };
    Json(json!({ "hook_config": config }))
}
