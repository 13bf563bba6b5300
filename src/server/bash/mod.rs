//! `/api/bash/*` routes and the `/sockets/bash-events` WebSocket, thin wrappers over [`crate::exec`].
//! Inputs are validated here with the reference's 422 shapes (pydantic's error types and messages).
//!
//! This file holds the REST routes and handlers; `params.rs` validates bodies and query strings,
//! `socket.rs` serves the bash-events WebSocket.

mod params;
mod socket;

use axum::body::Body;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::params::{issue, parse_json_body, parse_search_query, parse_uuid, request_from_body};
use super::AppState;
use crate::error::{ApiError, ValidBytes};
use crate::exec::{
    BashCommand, BashEventPage, BashEventSortOrder, BashOutput, BashService, ExecuteBashRequest,
    JsonStream,
};

/// REST routes of the bash group.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_bash_command))
        .routes(routes!(execute_bash_command))
        .routes(routes!(search_bash_events))
        .routes(routes!(get_bash_event))
        .routes(routes!(batch_get_bash_events))
        .routes(routes!(clear_all_bash_events))
        .routes(routes!(stop_bash_command))
}

/// Marks a request as served by a conversation's own bash service (set by the
/// conversation-scoped copies of these routes).
#[derive(Clone)]
pub(super) struct ScopedBash(pub(super) Arc<BashService>);

/// The bash service a request is served by: the conversation's ([`ScopedBash`]) when set,
/// else the server's.
struct Bash(Arc<BashService>);

impl FromRequestParts<AppState> for Bash {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Bash(match parts.extensions.get::<ScopedBash>() {
            Some(scoped) => scoped.0.clone(),
            None => state.bash.clone(),
        }))
    }
}

/// The bash-events WebSocket.
pub(super) fn socket_router() -> Router<AppState> {
    Router::new().route("/sockets/bash-events", get(socket::bash_events_socket))
}

/// A streamed JSON body.
fn json_body(stream: JsonStream) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// Start a command in the background; returns its `BashCommand` at once.
#[utoipa::path(
    post,
    path = "/api/bash/start_bash_command",
    tag = "Bash",
    request_body = ExecuteBashRequest,
    responses((status = 200, body = BashCommand), (status = 422, description = "Invalid request"))
)]
async fn start_bash_command(
    State(state): State<AppState>,
    Bash(bash): Bash,
    ValidBytes(body): ValidBytes,
) -> Result<Json<BashCommand>, ApiError> {
    state.activity.touch();
    let request = request_from_body(&body)?;
    Ok(Json(bash.start(request).await.map_err(exec_error)?))
}

/// Run a command and wait for it; returns one `BashOutput` with all its output joined.
#[utoipa::path(
    post,
    path = "/api/bash/execute_bash_command",
    tag = "Bash",
    request_body = ExecuteBashRequest,
    responses((status = 200, body = BashOutput), (status = 422, description = "Invalid request"))
)]
async fn execute_bash_command(
    State(state): State<AppState>,
    Bash(bash): Bash,
    ValidBytes(body): ValidBytes,
) -> Result<Response, ApiError> {
    state.activity.touch();
    let request = request_from_body(&body)?;
    let stream = bash.execute(request).await.map_err(exec_error)?;
    state.activity.touch();
    Ok(json_body(stream))
}

fn exec_error(e: crate::exec::ExecError) -> ApiError {
    match e {
        crate::exec::ExecError::Closed => ApiError::ServiceUnavailable(e.to_string()),
        crate::exec::ExecError::Io(io) => ApiError::Internal(io.to_string()),
    }
}

/// Search bash events (filters apply before `limit`; `next_page_id` is the next event's file name).
#[utoipa::path(
    get,
    path = "/api/bash/bash_events/search",
    tag = "Bash",
    params(
        ("kind__eq" = Option<String>, Query, description = "BashCommand or BashOutput"),
        ("command_id__eq" = Option<String>, Query, description = "Only outputs of this command"),
        ("timestamp__gte" = Option<String>, Query, description = "ISO 8601 lower bound"),
        ("timestamp__lt" = Option<String>, Query, description = "ISO 8601 upper bound"),
        ("order__gt" = Option<i64>, Query, description = "Only outputs with a greater order"),
        ("sort_order" = Option<BashEventSortOrder>, Query, description = "TIMESTAMP (default) or TIMESTAMP_DESC"),
        ("page_id" = Option<String>, Query, description = "next_page_id of the previous page"),
        ("limit" = Option<i64>, Query, description = "1..100, default 100"),
    ),
    responses((status = 200, body = BashEventPage), (status = 422, description = "Invalid query"))
)]
async fn search_bash_events(
    State(state): State<AppState>,
    Bash(bash): Bash,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    state.activity.touch();
    let query = parse_search_query(raw.as_deref())?;
    Ok(json_body(bash.search(query).await))
}

/// One bash event by its hex id.
#[utoipa::path(
    get,
    path = "/api/bash/bash_events/{event_id}",
    tag = "Bash",
    params(("event_id" = String, Path, description = "Hex id of the event")),
    responses((status = 200, body = crate::exec::BashEvent), (status = 404, description = "Item not found"))
)]
async fn get_bash_event(
    State(state): State<AppState>,
    Bash(bash): Bash,
    Path(event_id): Path<String>,
) -> Result<Response, ApiError> {
    state.activity.touch();
    match bash.get(&event_id).await {
        Some(json) => Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response()),
        None => Err(ApiError::not_found()),
    }
}

/// Several bash events by id (a JSON array body); `null` for each unknown id.
#[utoipa::path(
    get,
    path = "/api/bash/bash_events/",
    tag = "Bash",
    request_body = Vec<String>,
    responses((status = 200, body = Vec<Option<crate::exec::BashEvent>>), (status = 422, description = "Invalid body"))
)]
async fn batch_get_bash_events(
    State(state): State<AppState>,
    Bash(bash): Bash,
    ValidBytes(body): ValidBytes,
) -> Result<Response, ApiError> {
    state.activity.touch();
    let value = parse_json_body(&body)?;
    let Value::Array(items) = &value else {
        return Err(ApiError::Validation(vec![issue(
            "list_type",
            vec![json!("body")],
            "Input should be a valid list",
            value,
        )]));
    };
    let mut ids = Vec::with_capacity(items.len());
    let mut issues = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) => ids.push(s.clone()),
            other => issues.push(issue(
                "string_type",
                vec![json!("body"), json!(i)],
                "Input should be a valid string",
                other.clone(),
            )),
        }
    }
    if !issues.is_empty() {
        return Err(ApiError::Validation(issues));
    }
    Ok(json_body(bash.batch_get(ids)))
}

/// Delete every stored bash event.
#[utoipa::path(
    delete,
    path = "/api/bash/bash_events",
    tag = "Bash",
    responses((status = 200, description = "`{\"cleared_count\": N}`"))
)]
async fn clear_all_bash_events(
    State(state): State<AppState>,
    Bash(bash): Bash,
) -> Result<Json<Value>, ApiError> {
    state.activity.touch();
    let count = bash.clear().await.map_err(exec_error)?;
    Ok(Json(json!({ "cleared_count": count })))
}

/// Stop a running command's process group (SIGTERM, then SIGKILL after 1 s). Idempotent.
#[utoipa::path(
    post,
    path = "/api/bash/bash_commands/{command_id}/stop",
    tag = "Bash",
    params(("command_id" = String, Path, description = "Command id (hex or dashed UUID)")),
    responses(
        (status = 200, description = "`{\"success\": true}`"),
        (status = 404, description = "Item not found"),
        (status = 422, description = "Malformed UUID")
    )
)]
async fn stop_bash_command(
    State(state): State<AppState>,
    Bash(bash): Bash,
    Path(command_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.activity.touch();
    let id = parse_uuid(&command_id, vec![json!("path"), json!("command_id")])
        .map_err(|i| ApiError::Validation(vec![*i]))?;
    if bash.stop(&id).await {
        Ok(Json(json!({ "success": true })))
    } else {
        Err(ApiError::not_found())
    }
}
