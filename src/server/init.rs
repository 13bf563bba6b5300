//! Deferred initialisation (`OH_DEFERRED_INIT=true`, warm pools): the server starts dormant,
//! answering every `/api/*` route (but `/api/init`), `/v1/*` and the sockets with 503, until
//! `POST /api/init` (authenticated with `X-Init-API-Key`, the server's secret key) delivers the
//! runtime configuration. The server then builds its state from the merged configuration and
//! switches every later request to the application built on it. Nothing about init is stored:
//! a restarted server is dormant again.

use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::config::Config;
use crate::error::{ApiError, ValidObject, ValidationIssue};

/// `dormant` → `initializing` → `ready`; a failed attempt returns to `dormant` with its error.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Status {
    state: &'static str,
    error: Option<String>,
}

/// The deferred-init state shared by the dormant and the ready application.
pub struct InitHandle {
    base: Config,
    status: Mutex<Status>,
    /// One attempt at a time.
    attempt: tokio::sync::Mutex<()>,
    /// The application built by a successful init, and its state.
    ready: RwLock<Option<(AppState, Router)>>,
}

impl std::fmt::Debug for InitHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitHandle")
            .field("status", &self.status())
            .finish()
    }
}

impl InitHandle {
    /// A dormant handle over the configuration the server started with.
    pub fn new(base: Config) -> Arc<Self> {
        Arc::new(InitHandle {
            base,
            status: Mutex::new(Status {
                state: "dormant",
                error: None,
            }),
            attempt: tokio::sync::Mutex::new(()),
            ready: RwLock::new(None),
        })
    }

    fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, state: &'static str, error: Option<String>) {
        *self.status.lock().unwrap_or_else(|e| e.into_inner()) = Status { state, error };
    }

    /// Whether init has completed.
    pub fn is_ready(&self) -> bool {
        self.status().state == "ready"
    }

    /// The application and state built by init, once ready.
    pub fn ready_app(&self) -> Option<(AppState, Router)> {
        self.ready.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The `/api/init` routes (outside the session-key check; see `auth::is_exempt`).
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_init_status, initialize_server))
}

fn not_deferred() -> ApiError {
    ApiError::NotFound(
        "server is not running with deferred_init=True; the /api/init endpoint is not available"
            .into(),
    )
}

fn answer(status: &Status) -> Json<Value> {
    Json(json!({"state": status.state, "error": status.error}))
}

/// The init state (no authentication, as the orchestrator polls it).
#[utoipa::path(get, path = "/api/init", tag = "Init")]
async fn get_init_status(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let handle = state.init.as_ref().ok_or_else(not_deferred)?;
    Ok(answer(&handle.status()))
}

/// Fields `InitRequest` accepts, with the JSON type each must have.
const FIELDS: [(&str, &str); 12] = [
    ("session_api_keys", "list"),
    ("secret_key", "string"),
    ("previous_secret_keys", "list"),
    ("conversations_path", "string"),
    ("bash_events_dir", "string"),
    ("conversation_worktree_root", "string"),
    ("webhooks", "list"),
    ("web_url", "string"),
    ("allow_cors_origins", "list"),
    ("max_concurrent_runs", "integer"),
    ("env", "object"),
    ("telemetry", "object"),
];

fn validate(body: &Value) -> Result<(), ApiError> {
    let Some(obj) = body.as_object() else {
        return Ok(());
    };
    let mut issues = Vec::new();
    for (k, v) in obj {
        let Some((_, kind)) = FIELDS.iter().find(|(f, _)| f == k) else {
            issues.push(
                ValidationIssue::new(
                    "extra_forbidden",
                    &["body", k],
                    "Extra inputs are not permitted",
                )
                .with_input(v.clone()),
            );
            continue;
        };
        let ok = v.is_null()
            || match *kind {
                "list" => v
                    .as_array()
                    .is_some_and(|a| a.iter().all(|x| x.is_string() || *k == "webhooks")),
                "string" => v.is_string(),
                "integer" => v.is_u64() || v.is_i64(),
                _ => v
                    .as_object()
                    .is_some_and(|m| *k != "env" || m.values().all(Value::is_string)),
            };
        if !ok {
            issues.push(
                ValidationIssue::new(
                    "type_error",
                    &["body", k],
                    format!("Input should be a valid {kind}"),
                )
                .with_input(v.clone()),
            );
        }
    }
    if let Some(n) = obj.get("max_concurrent_runs").and_then(Value::as_i64) {
        if n < 1 {
            issues.push(
                ValidationIssue::new(
                    "greater_than_equal",
                    &["body", "max_concurrent_runs"],
                    "Input should be greater than or equal to 1",
                )
                .with_input(n),
            );
        }
    }
    if issues.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Validation(issues))
    }
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array().map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}

/// The base configuration with the request's fields applied.
fn merged(base: &Config, body: &Value) -> Result<Config, ApiError> {
    let mut config = base.clone();
    config.deferred_init = false;
    if let Some(keys) = strings(&body["session_api_keys"]) {
        if keys.iter().any(|k| k.trim().is_empty()) {
            return Err(ApiError::Unprocessable(
                "session_api_keys cannot contain empty keys".into(),
            ));
        }
        if config.secret_key.is_none() {
            config.secret_key = keys.first().cloned();
        }
        config.session_api_keys = keys;
    }
    if let Some(k) = body["secret_key"].as_str().filter(|k| !k.trim().is_empty()) {
        config.secret_key = Some(k.to_string());
    }
    if let Some(p) = body["conversations_path"].as_str() {
        config.conversations_path = p.into();
    }
    if let Some(p) = body["bash_events_dir"].as_str() {
        config.bash_events_dir = p.into();
    }
    if let Some(origins) = strings(&body["allow_cors_origins"]) {
        config.allow_cors_origins = origins;
    }
    if let Some(n) = body["max_concurrent_runs"].as_u64() {
        config.max_concurrent_runs = n as usize;
    }
    Ok(config)
}

/// Delivers the runtime configuration and makes the server ready.
#[utoipa::path(post, path = "/api/init", tag = "Init")]
async fn initialize_server(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<ValidObject, ApiError>,
) -> Result<Json<Value>, ApiError> {
    if let Some(key) = &state.config.secret_key {
        let given = headers.get("x-init-api-key").and_then(|v| v.to_str().ok());
        if !given.is_some_and(|g| super::key_matches(std::slice::from_ref(key), g)) {
            return Err(ApiError::Unauthorized);
        }
    }
    let handle = state.init.clone().ok_or_else(not_deferred)?;
    let ValidObject(body) = body?;
    validate(&body)?;
    let _attempt = handle.attempt.lock().await;
    let current = handle.status();
    if current.state != "dormant" {
        return Err(ApiError::BadRequest(format!(
            "server already in state: {}",
            current.state
        )));
    }
    let config = merged(&handle.base, &body)?;
    handle.set("initializing", None);
    let env: Vec<(String, String)> = body["env"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let built = tokio::task::spawn_blocking(move || AppState::new(config)).await;
    let mut ready = match built {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let msg = format!("{e}");
            handle.set("dormant", Some(msg.clone()));
            return Err(ApiError::Internal(msg));
        }
        Err(e) => {
            handle.set("dormant", Some(e.to_string()));
            return Err(ApiError::Internal(e.to_string()));
        }
    };
    crate::util::extend_child_env(&env);
    ready.init = Some(handle.clone());
    ready.set_ready();
    ready
        .conversations
        .start_idle_release(ready.config.conversation_idle_ttl);
    let app = super::app(ready.clone());
    *handle.ready.write().unwrap_or_else(|e| e.into_inner()) = Some((ready, app));
    handle.set("ready", None);
    tracing::info!("deferred init done; serving the delivered configuration");
    Ok(answer(&handle.status()))
}

/// While dormant: 503 for `/api/*` (but `/api/init`), `/v1/*` and `/sockets/*`.
pub(super) async fn dormant_gate(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(handle) = &state.init else {
        return next.run(req).await;
    };
    let path = req.uri().path();
    let gated = (path.starts_with("/api/") && path != "/api/init")
        || path.starts_with("/v1/")
        || path.starts_with("/sockets/");
    let status = handle.status();
    if gated && status.state != "ready" {
        return ApiError::ServiceUnavailable(format!(
            "server is in deferred-init state '{}'; call POST /api/init first",
            status.state
        ))
        .into_response();
    }
    next.run(req).await
}
