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
        .routes(routes!(create_session, delete_session))
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

// ---- the browser bridge -------------------------------------------------------------------

/// The origin a request was made to: its scheme and `Host` (or, when trusted, the forwarded
/// ones).
fn request_origin(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let mut scheme = "http".to_string();
    let mut host = get("host");
    if state.config.trust_forwarded_headers {
        let proto = get("x-forwarded-proto");
        let proto = proto.split(',').next().unwrap_or("").trim();
        if !proto.is_empty() {
            scheme = proto.to_string();
        }
        let fwd = get("x-forwarded-host");
        let fwd = fwd.split(',').next().unwrap_or("").trim();
        if !fwd.is_empty() {
            host = fwd.to_string();
        }
    }
    let scheme = match scheme.as_str() {
        "ws" => "http".to_string(),
        "wss" => "https".to_string(),
        _ => scheme,
    };
    bridge::origin(&format!("{scheme}://{host}"))
}

fn public_url(state: &AppState) -> Result<String, CanvasError> {
    bridge::public_url(state.config.app_backend_public_url.as_deref()).map_err(|e| match e {
        bridge::Ingress::NotConfigured => CanvasError::IngressNotConfigured,
        bridge::Ingress::Misconfigured => CanvasError::IngressMisconfigured,
    })
}

fn require_ingress_host(
    state: &AppState,
    headers: &HeaderMap,
    public: &str,
) -> Result<(), CanvasError> {
    if request_origin(state, headers) != bridge::origin(public) {
        return Err(CanvasError::WrongIngress);
    }
    Ok(())
}

fn origin_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// The checks before a session is created or deleted: ingress host, a control-plane origin
/// that is not the ingress origin itself.
fn require_bootstrap_origin(
    state: &AppState,
    headers: &HeaderMap,
    public: &str,
) -> Result<(), CanvasError> {
    require_ingress_host(state, headers, public)?;
    let origin = origin_header(headers).unwrap_or("");
    let cfg = &state.config;
    if !bridge::allowed_control_origin(
        origin,
        &cfg.allow_cors_origins,
        cfg.allow_cors_origin_regex.as_deref(),
        cfg.docker_host_addr.as_deref(),
    ) {
        return Err(CanvasError::OriginNotAllowed);
    }
    if bridge::origin(origin) == bridge::origin(public) {
        return Err(CanvasError::SameOrigin);
    }
    Ok(())
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(name, _)| name.trim() == SESSION_COOKIE)
        .map(|(_, value)| value.trim().trim_matches('"').to_string())
        .next_back()
}

/// The session cookie (`Partitioned`, scoped to the app's path), if the request is a secure
/// context.
fn session_cookie(
    state: &AppState,
    headers: &HeaderMap,
    name: &str,
    token: &str,
    max_age: u64,
) -> Result<HeaderValue, CanvasError> {
    if !bridge::secure_context(request_origin(state, headers).as_deref()) {
        return Err(CanvasError::InsecureContext);
    }
    let value = if token.is_empty() {
        "\"\"".to_string()
    } else {
        token.to_string()
    };
    let cookie = format!(
        "{SESSION_COOKIE}={value}; HttpOnly; Max-Age={max_age}; Path=/app-backends/{name}; \
         SameSite=none; Secure; Partitioned"
    );
    HeaderValue::from_str(&cookie).map_err(|e| CanvasError::Io(e.to_string()))
}

fn require_api_key(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let keys = &state.config.session_api_keys;
    if keys.is_empty() {
        return Ok(());
    }
    let given = headers
        .get(super::SESSION_KEY_HEADER)
        .and_then(|v| v.to_str().ok());
    if given.is_some_and(|k| super::key_matches(keys, k)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Issue a short-lived HttpOnly session for one ready app backend (called on the ingress
/// origin with the control key and the Canvas page's `Origin`).
#[utoipa::path(
    post,
    path = "/app-backends/{extension_name}/session",
    tag = "Canvas App Backends"
)]
async fn create_session(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_api_key(&state, &headers)?;
    check_name(&name)?;
    let public = public_url(&state)?;
    require_bootstrap_origin(&state, &headers, &public)?;
    let port = state
        .canvas
        .backends
        .ready_port(&name)
        .ok_or(CanvasError::NotReady)?;
    let (token, expires_at) = state.canvas.sessions.create(&name, port);
    let cookie = session_cookie(
        &state,
        &headers,
        &name,
        &token,
        bridge::SESSION_TTL.as_secs(),
    )?;
    let body = json!({
        "ingress_url": format!("{public}/app-backends/{name}/"),
        "expires_at": bridge::iso_utc(expires_at),
        "iframe_sandbox": bridge::IFRAME_SANDBOX,
    });
    Ok(([(header::SET_COOKIE, cookie)], Json(body)).into_response())
}

/// Revoke the current app-scoped browser session and clear its cookie.
#[utoipa::path(
    delete,
    path = "/app-backends/{extension_name}/session",
    tag = "Canvas App Backends"
)]
async fn delete_session(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require_api_key(&state, &headers)?;
    check_name(&name)?;
    let public = public_url(&state)?;
    require_bootstrap_origin(&state, &headers, &public)?;
    state
        .canvas
        .sessions
        .revoke_token(cookie_token(&headers).as_deref());
    let cookie = session_cookie(&state, &headers, &name, "", 0)?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

async fn proxy_root(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    proxy(state, name, String::new(), req).await
}

async fn proxy_session_path(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    proxy(state, name, "session".into(), req).await
}

async fn proxy_path(
    State(state): State<AppState>,
    Path((name, path)): Path<(String, String)>,
    req: Request,
) -> Response {
    proxy(state, name, path, req).await
}

/// Headers never forwarded in either direction.
const HOP_BY_HOP: [&str; 14] = [
    "authorization",
    "x-session-api-key",
    "cookie",
    "set-cookie",
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

fn is_websocket(req: &Request) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// What a request to the ingress is allowed to reach: the backend's port and the session.
struct Target {
    port: u16,
    session: bridge::Authorized,
    upstream_path: String,
}

/// The ingress checks, in the reference's order.
fn admit(
    state: &AppState,
    name: &str,
    path: &str,
    headers: &HeaderMap,
    query: Option<&str>,
    unsafe_method: bool,
    websocket: bool,
) -> Result<Target, ApiError> {
    check_name(name)?;
    if !bridge::valid_proxy_path(path) {
        return Err(CanvasError::InvalidPath.into());
    }
    let public = public_url(state)?;
    require_ingress_host(state, headers, &public)?;
    if websocket || unsafe_method {
        let origin = origin_header(headers).filter(|o| !o.is_empty());
        if origin.is_none() || origin.and_then(bridge::origin) != bridge::origin(&public) {
            return Err(CanvasError::OriginNotAllowed.into());
        }
    }
    let port = state
        .canvas
        .backends
        .ready_port(name)
        .ok_or(CanvasError::NotReady)?;
    let session = state
        .canvas
        .sessions
        .authorize(cookie_token(headers).as_deref(), name, port)
        .ok_or(CanvasError::Unauthorized)?;
    let query = bridge::strip_auth_query(query.unwrap_or(""));
    let mut upstream_path = format!("/{}", bridge::encode_path(path));
    if !query.is_empty() {
        upstream_path.push('?');
        upstream_path.push_str(&query);
    }
    Ok(Target {
        port,
        session,
        upstream_path,
    })
}

async fn proxy(state: AppState, name: String, path: String, req: Request) -> Response {
    if is_websocket(&req) {
        let (mut parts, _) = req.into_parts();
        let headers = parts.headers.clone();
        let query = parts.uri.query().map(str::to_string);
        if let Ok(ws) = WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            return match admit(
                &state,
                &name,
                &path,
                &headers,
                query.as_deref(),
                false,
                true,
            ) {
                Ok(target) => ws.on_upgrade(move |socket| bridge_socket(socket, target)),
                // Closing before the handshake completes: the client sees a 403.
                Err(_) => StatusCode::FORBIDDEN.into_response(),
            };
        }
        return proxy_http(state, name, path, Request::from_parts(parts, Body::empty())).await;
    }
    proxy_http(state, name, path, req).await
}

async fn proxy_http(state: AppState, name: String, path: String, req: Request) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let target = match admit(
        &state,
        &name,
        &path,
        req.headers(),
        req.uri().query(),
        !safe,
        false,
    ) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    match forward(&state, target, req).await {
        Ok(r) => r,
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Sends the request to the backend and streams its answer back (redirects refused).
async fn forward(state: &AppState, target: Target, req: Request) -> Result<Response, CanvasError> {
    let expose = req
        .headers()
        .get("x-expose-secrets")
        .is_some_and(|v| !v.is_empty());
    if expose {
        return Err(CanvasError::ExposeSecrets);
    }
    let url = format!("http://127.0.0.1:{}{}", target.port, target.upstream_path);
    let (parts, body) = req.into_parts();
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &parts.headers {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            headers.append(k.clone(), v.clone());
        }
    }
    let mut request = state
        .canvas
        .http
        .request(parts.method.clone(), &url)
        .headers(headers);
    if parts.headers.contains_key(header::TRANSFER_ENCODING) {
        request = request.body(reqwest::Body::wrap_stream(body.into_data_stream()));
    } else if let Some(len) = parts.headers.get(header::CONTENT_LENGTH) {
        request = request
            .header(header::CONTENT_LENGTH, len.clone())
            .body(reqwest::Body::wrap_stream(body.into_data_stream()));
    }
    let upstream = request.send().await.map_err(|e| {
        tracing::warn!(error = %e, "canvas app backend unreachable");
        CanvasError::Unreachable
    })?;
    let status = upstream.status();
    if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
        && upstream.headers().contains_key(header::LOCATION)
    {
        return Err(CanvasError::Redirect);
    }
    let mut response = Response::builder().status(status.as_u16());
    if let Some(h) = response.headers_mut() {
        for (k, v) in upstream.headers() {
            let name = k.as_str();
            if !HOP_BY_HOP.contains(&name) && name != "date" && name != "server" {
                if let Ok(k) = HeaderName::from_bytes(k.as_ref()) {
                    h.append(k, v.clone());
                }
            }
        }
    }
    let body = Body::from_stream(upstream.bytes_stream());
    response
        .body(body)
        .map_err(|e| CanvasError::Io(e.to_string()))
}

/// Bridges an accepted browser WebSocket to the backend until either side closes, the session
/// is revoked or it expires.
async fn bridge_socket(mut socket: WebSocket, target: Target) {
    use tokio_tungstenite::tungstenite::Message as Up;
    let url = format!("ws://127.0.0.1:{}{}", target.port, target.upstream_path);
    let upstream = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok((ws, _)) => ws,
        Err(e) => {
            tracing::warn!(error = %e, "canvas app backend WebSocket refused");
            let frame = CloseFrame {
                code: 1011,
                reason: "".into(),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
            return;
        }
    };
    let (mut up_tx, mut up_rx) = upstream.split();
    let (mut tx, mut rx) = socket.split();
    let remaining = target
        .session
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let expiry = tokio::time::sleep(remaining);
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            msg = rx.next() => {
                let sent = match msg {
                    Some(Ok(Message::Text(t))) => up_tx.send(Up::text(t.as_str())).await,
                    Some(Ok(Message::Binary(b))) => up_tx.send(Up::binary(b)).await,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                    _ => break,
                };
                if sent.is_err() {
                    break;
                }
            }
            msg = up_rx.next() => {
                let sent = match msg {
                    Some(Ok(Up::Text(t))) => tx.send(Message::Text(t.as_str().into())).await,
                    Some(Ok(Up::Binary(b))) => tx.send(Message::Binary(b)).await,
                    Some(Ok(Up::Ping(_) | Up::Pong(_) | Up::Frame(_))) => Ok(()),
                    _ => break,
                };
                if sent.is_err() {
                    break;
                }
            }
            _ = target.session.revoked.cancelled() => break,
            _ = &mut expiry => break,
        }
    }
    let _ = up_tx.close().await;
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "".into(),
        })))
        .await;
}
