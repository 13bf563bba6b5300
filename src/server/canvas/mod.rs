//! `/api/canvas-extensions/*` (install, list, enable, uninstall, bundle, icon, app backend
//! lifecycle) and the Canvas App browser bridge under `/app-backends/{extension_name}`: the
//! session routes, and the cookie-authenticated HTTP and WebSocket proxy to a ready backend.
//! Thin wrappers over [`crate::canvas::Canvas`].

use std::time::SystemTime;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Json;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::canvas::bridge::{self, SESSION_COOKIE};
use crate::canvas::CanvasError;
use crate::error::{ApiError, ValidObject, ValidationIssue};

mod app_backends;

use app_backends::{proxy_path, proxy_root, proxy_session_path};

/// Routes of the Canvas Extensions and Canvas App Backends groups, and the proxy.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(install_extension))
        .routes(routes!(list_extensions))
        .routes(routes!(
            get_extension,
            set_extension_enabled,
            uninstall_extension
        ))
        .routes(routes!(backend_status))
        .routes(routes!(prepare_backend))
        .routes(routes!(start_backend))
        .routes(routes!(stop_backend))
        .routes(routes!(backend_logs))
        .routes(routes!(delete_backend_data))
        .routes(routes!(extension_bundle))
        .routes(routes!(extension_icon))
        // FastAPI answers HEAD on these GET-only file routes with 405.
        .route(
            "/api/canvas-extensions/installed/{extension_name}/bundle",
            axum::routing::head(get_only),
        )
        .route(
            "/api/canvas-extensions/installed/{extension_name}/icon",
            axum::routing::head(get_only),
        )
        .routes(routes!(
            app_backends::create_session,
            app_backends::delete_session
        ))
        // Every other method on `.../session` is proxied, as the reference routes it.
        .route(
            "/app-backends/{extension_name}/session",
            axum::routing::get(proxy_session_path)
                .head(proxy_session_path)
                .put(proxy_session_path)
                .patch(proxy_session_path)
                .options(proxy_session_path),
        )
        .route("/app-backends/{extension_name}", proxy_methods(proxy_root))
        .route("/app-backends/{extension_name}/", proxy_methods(proxy_root))
        .route(
            "/app-backends/{extension_name}/{*path}",
            proxy_methods(proxy_path),
        )
}

/// Every method the proxy forwards.
fn proxy_methods<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: axum::handler::Handler<T, AppState> + Clone,
    T: 'static,
{
    axum::routing::get(handler.clone())
        .head(handler.clone())
        .post(handler.clone())
        .put(handler.clone())
        .patch(handler.clone())
        .delete(handler.clone())
        .options(handler)
}

/// 405 for a method the route does not serve, as FastAPI answers it.
async fn get_only() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, "GET")],
        Json(json!({"detail": "Method Not Allowed"})),
    )
        .into_response()
}

const NAME_PATTERN: &str = "^[a-z0-9]+(?:-[a-z0-9]+)*$";

/// The path parameter `extension_name` checked as FastAPI does (length, then pattern).
fn name_issues(name: &str) -> Vec<ValidationIssue> {
    let loc = ["path", "extension_name"];
    let issue = if name.chars().count() > 255 {
        ValidationIssue::new(
            "string_too_long",
            &loc,
            "String should have at most 255 characters",
        )
    } else if name.is_empty() {
        ValidationIssue::new(
            "string_too_short",
            &loc,
            "String should have at least 1 character",
        )
    } else if !crate::canvas::manifest::valid_name(name) {
        ValidationIssue::new(
            "string_pattern_mismatch",
            &loc,
            format!("String should match pattern '{NAME_PATTERN}'"),
        )
    } else {
        return Vec::new();
    };
    vec![issue.with_input(name)]
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let issues = name_issues(name);
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(issues))
    }
}

/// A request body validated as the reference's model `model`, with the path's issues first.
fn checked_body(
    path_issues: Vec<ValidationIssue>,
    body: Result<ValidObject, ApiError>,
    model: &str,
) -> Result<Value, ApiError> {
    let mut issues = path_issues;
    let checked = match body {
        Ok(ValidObject(v)) => match crate::schema::validate(model, &v, &[json!("body")]) {
            Ok(v) => Some(v),
            Err(e) => {
                issues.extend(e);
                None
            }
        },
        Err(ApiError::Validation(e)) => {
            issues.extend(e);
            None
        }
        Err(other) => return Err(other),
    };
    match checked {
        Some(v) if issues.is_empty() => Ok(v),
        _ => Err(ApiError::Validation(issues)),
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn status_json(status: crate::canvas::Status) -> Json<Value> {
    Json(serde_json::to_value(status).unwrap_or_default())
}

/// Install a canvas extension from a git URL, GitHub shorthand, or local path; a fresh
/// install lands disabled.
#[utoipa::path(
    post,
    path = "/api/canvas-extensions/install",
    tag = "Canvas Extensions"
)]
async fn install_extension(
    State(state): State<AppState>,
    body: Result<ValidObject, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let body = checked_body(Vec::new(), body, "InstallCanvasExtensionRequest")?;
    let source = text(&body, "source").unwrap_or_default();
    let force = body.get("force").and_then(Value::as_bool).unwrap_or(false);
    let (git_ref, repo_path) = (text(&body, "ref"), text(&body, "repo_path"));
    let installed = state
        .canvas
        .detached(move |c| async move { c.install(source, git_ref, repo_path, force).await })
        .await?;
    Ok(Json(installed))
}

/// List all installed canvas extensions (enabled and disabled).
#[utoipa::path(
    get,
    path = "/api/canvas-extensions/installed",
    tag = "Canvas Extensions"
)]
async fn list_extensions(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let list = state.canvas.list().await?;
    Ok(Json(json!({ "canvas_extensions": list })))
}

/// Get information about a specific installed canvas extension.
#[utoipa::path(
    get,
    path = "/api/canvas-extensions/installed/{extension_name}",
    tag = "Canvas Extensions"
)]
async fn get_extension(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    Ok(Json(state.canvas.get(&name).await?))
}

/// Enable or disable an installed canvas extension (disabling stops its backend).
#[utoipa::path(
    patch,
    path = "/api/canvas-extensions/installed/{extension_name}",
    tag = "Canvas Extensions"
)]
async fn set_extension_enabled(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<ValidObject, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let body = checked_body(
        name_issues(&name),
        body,
        "UpdateCanvasExtensionStateRequest",
    )?;
    let enabled = body
        .get("enabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let owned = name.clone();
    state
        .canvas
        .detached(move |c| async move { c.set_enabled(&owned, enabled).await })
        .await?;
    Ok(Json(json!({"name": name, "enabled": enabled})))
}

/// Uninstall a canvas extension by name while retaining backend data.
#[utoipa::path(
    delete,
    path = "/api/canvas-extensions/installed/{extension_name}",
    tag = "Canvas Extensions"
)]
async fn uninstall_extension(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let owned = name.clone();
    state
        .canvas
        .detached(move |c| async move { c.uninstall(&owned).await })
        .await?;
    Ok(Json(
        json!({"message": format!("Canvas extension '{name}' uninstalled")}),
    ))
}

/// Probe the optional backend lifecycle state.
#[utoipa::path(
    get,
    path = "/api/canvas-extensions/installed/{extension_name}/backend",
    tag = "Canvas Extensions"
)]
async fn backend_status(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let status = state
        .canvas
        .detached(move |c| async move { c.backends.status(&name).await })
        .await?;
    Ok(status_json(status))
}

/// Verify and prepare the immutable artifact for an exact revision.
#[utoipa::path(
    post,
    path = "/api/canvas-extensions/installed/{extension_name}/backend/prepare",
    tag = "Canvas Extensions"
)]
async fn prepare_backend(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<ValidObject, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let body = checked_body(name_issues(&name), body, "BackendRevisionRequest")?;
    let revision = text(&body, "revision").unwrap_or_default();
    let status = state
        .canvas
        .detached(move |c| async move { c.backends.prepare(&name, &revision).await })
        .await?;
    Ok(status_json(status))
}

/// Start only a previously prepared exact backend revision.
#[utoipa::path(
    post,
    path = "/api/canvas-extensions/installed/{extension_name}/backend/start",
    tag = "Canvas Extensions"
)]
async fn start_backend(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<ValidObject, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let body = checked_body(name_issues(&name), body, "BackendRevisionRequest")?;
    let revision = text(&body, "revision").unwrap_or_default();
    let status = state
        .canvas
        .detached(move |c| async move { c.backends.start(&name, &revision).await })
        .await?;
    Ok(status_json(status))
}

/// Stop the backend's owned process group idempotently (its app sessions end too).
#[utoipa::path(
    post,
    path = "/api/canvas-extensions/installed/{extension_name}/backend/stop",
    tag = "Canvas Extensions"
)]
async fn stop_backend(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let status = state
        .canvas
        .detached(move |c| async move { c.revoke_and_stop(&name).await })
        .await?;
    Ok(status_json(status))
}

/// Return bounded combined stdout and stderr from the owned process.
#[utoipa::path(
    get,
    path = "/api/canvas-extensions/installed/{extension_name}/backend/logs",
    tag = "Canvas Extensions"
)]
async fn backend_logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let mut issues = name_issues(&name);
    let raw = query.ok().and_then(|Query(q)| {
        q.into_iter()
            .rev()
            .find(|(k, _)| k == "limit_bytes")
            .map(|(_, v)| v)
    });
    let mut limit = 64 * 1024;
    if let Some(raw) = raw {
        let loc = ["query", "limit_bytes"];
        let parsed = raw.trim().parse::<i64>().ok().or_else(|| {
            raw.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && f.fract() == 0.0)
                .map(|f| f as i64)
        });
        match parsed {
            None => issues.push(
                ValidationIssue::new(
                    "int_parsing",
                    &loc,
                    "Input should be a valid integer, unable to parse string as an integer",
                )
                .with_input(raw),
            ),
            Some(n) if n < 1 => issues.push(
                ValidationIssue::new(
                    "greater_than_equal",
                    &loc,
                    "Input should be greater than or equal to 1",
                )
                .with_input(raw),
            ),
            Some(n) if n > 256 * 1024 => issues.push(
                ValidationIssue::new(
                    "less_than_equal",
                    &loc,
                    "Input should be less than or equal to 262144",
                )
                .with_input(raw),
            ),
            Some(n) => limit = n as usize,
        }
    }
    if !issues.is_empty() {
        return Err(ApiError::Validation(issues));
    }
    let logs = state.canvas.backends.logs(&name, limit).await;
    Ok(Json(serde_json::to_value(logs).unwrap_or_default()))
}

/// Delete mutable backend data separately from app uninstall.
#[utoipa::path(
    delete,
    path = "/api/canvas-extensions/installed/{extension_name}/backend/data",
    tag = "Canvas Extensions"
)]
async fn delete_backend_data(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name)?;
    let status = state
        .canvas
        .detached(move |c| async move { c.backends.delete_data(&name).await })
        .await?;
    Ok(status_json(status))
}

/// The media type Python's `mimetypes` gives a file name (text types in UTF-8).
fn media_type(path: &std::path::Path) -> String {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let known = match ext.as_str() {
        "js" | "mjs" => Some("text/javascript"),
        "css" => Some("text/css"),
        "html" | "htm" => Some("text/html"),
        "json" => Some("application/json"),
        "svg" => Some("image/svg+xml"),
        "wasm" => Some("application/wasm"),
        "txt" => Some("text/plain"),
        "png" => Some("image/png"),
        "jpg" | "jpeg" => Some("image/jpeg"),
        "gif" => Some("image/gif"),
        "ico" => Some("image/vnd.microsoft.icon"),
        "woff" => Some("font/woff"),
        "woff2" => Some("font/woff2"),
        "map" | "cjs" | "jsx" | "tsx" | "" => None,
        _ => mime_guess::from_ext(&ext).first_raw(),
    };
    let mime = known.unwrap_or("application/octet-stream");
    if mime.starts_with("text/") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

async fn serve_file(
    path: std::path::PathBuf,
    media: String,
    extra: &[(&'static str, String)],
    request: &HeaderMap,
) -> Result<Response, ApiError> {
    let file = tokio::fs::File::open(&path).await?;
    let meta = file.metadata().await?;
    Ok(super::files::file_response(
        file, &meta, None, &media, extra, request,
    ))
}

/// Serve an installed canvas extension's entry-point bundle (containment re-checked on every
/// request; `Cache-Control: no-cache`).
#[utoipa::path(
    get,
    path = "/api/canvas-extensions/installed/{extension_name}/bundle",
    tag = "Canvas Extensions"
)]
async fn extension_bundle(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let path = state.canvas.bundle(&name).await?;
    let media = media_type(&path);
    serve_file(
        path,
        media,
        &[("cache-control", "no-cache".into())],
        &headers,
    )
    .await
}

/// Serve the SVG icon an installed canvas extension's manifest declares (sandboxed by CSP).
#[utoipa::path(
    get,
    path = "/api/canvas-extensions/installed/{extension_name}/icon",
    tag = "Canvas Extensions"
)]
async fn extension_icon(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let path = state.canvas.icon(&name).await?;
    serve_file(
        path,
        "image/svg+xml".into(),
        &[
            ("cache-control", "no-cache".into()),
            (
                "content-security-policy",
                "default-src 'none'; style-src 'unsafe-inline'; sandbox".into(),
            ),
            ("x-content-type-options", "nosniff".into()),
        ],
        &headers,
    )
    .await
}
