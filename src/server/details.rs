//! Server details: `/`, `/alive`, `/health`, `/ready`, `/server_info` (no auth).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::AppState;

/// Routes of the server-details group.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(server_info))
        .route("/alive", get(alive))
        .route("/health", get(alive))
        .route("/ready", get(ready))
        .route("/server_info", get(server_info))
}

async fn alive() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    if state.is_ready() {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "initializing", "message": "Server is still initializing"})),
        )
    }
}

/// Capabilities we advertise; only those whose routes we serve.
const CAPABILITIES: &[&str] = &[
    "idempotent_conversation_create_v1",
    "conversation_runtime_routes_v1",
    "tool_catalog_v1",
    "skill_catalog_v1",
];

/// The reference release whose wire contract this server implements. The version fields of
/// `/server_info` report it (clients compare them with their own SDK version); our own version
/// is in `implementation`.
pub const COMPATIBLE_REFERENCE_VERSION: &str = "1.58.2";

async fn server_info(State(state): State<AppState>) -> Json<Value> {
    let ours = env!("CARGO_PKG_VERSION");
    let version = COMPATIBLE_REFERENCE_VERSION;
    let cfg = &state.config;
    let mut capabilities: Vec<&str> = CAPABILITIES.to_vec();
    if cfg.app_backend_public_url.is_some() {
        capabilities.push("canvas_app_backend_bridge_v1");
    }
    Json(json!({
        "uptime": state.activity.uptime_secs(),
        "idle_time": state.activity.idle_secs(),
        "title": "OpenHands Agent Server",
        "version": version,
        "sdk_version": version,
        "tools_version": version,
        "workspace_version": version,
        "build_git_sha": cfg.build_git_sha,
        "build_git_ref": cfg.build_git_ref,
        "python_version": format!("none (agent-server {ours}, Rust)"),
        "implementation": {
            "name": "agent-server",
            "language": "rust",
            "version": ours,
            "compatible_with": format!("openhands-agent-server {version}"),
        },
        "usable_tools": state.usable_tools(),
        "runtime_idle_timeout_seconds": null,
        "conversation_runtime": "local",
        "available_conversation_runtimes": [],
        "capabilities": capabilities,
        "app_backend_ingress_url": cfg.app_backend_public_url,
        "max_foreground_terminal_timeout_seconds": null,
        "docs": "/docs",
        "redoc": "/redoc",
    }))
}
