//! `/api/conversations/{id}/events*` routes (search, count, get, batch get, send message,
//! respond to confirmation) and the `/sockets/events/{id}` WebSocket: a `full_state` snapshot
//! first, optional history replay, then every event live; inbound frames are user messages.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Local, NaiveDateTime};
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::conversations::{api_error, check_limit};
use super::{await_auth_frame, check_handshake, is_auth_frame, AppState, SocketAuth};
use crate::conversation::{events, Conversation, ConversationError};
use crate::error::{ApiError, ValidJson, ValidPath, ValidQuery, ValidationIssue};

fn not_found(id: &Uuid) -> ApiError {
    ApiError::NotFound(format!("Conversation not found: {id}"))
}

fn find(state: &AppState, id: &Uuid) -> Result<Arc<Conversation>, ApiError> {
    state.conversations.get(id).ok_or_else(|| not_found(id))
}

fn io_error(e: std::io::Error) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// Filters of `events/search` and `events/count`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub(super) struct EventQuery {
    page_id: Option<String>,
    limit: Option<i64>,
    kind: Option<String>,
    source: Option<String>,
    body: Option<String>,
    sort_order: Option<String>,
    #[serde(rename = "timestamp__gte")]
    timestamp_gte: Option<String>,
    #[serde(rename = "timestamp__lt")]
    timestamp_lt: Option<String>,
}

/// Converts a filter timestamp to the naive local form events use.
fn naive_local(s: &str, field: &str) -> Result<String, ApiError> {
    let fmt = "%Y-%m-%dT%H:%M:%S%.6f";
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Ok(dt
            .with_timezone(&Local)
            .naive_local()
            .format(fmt)
            .to_string());
    }
    let candidates = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
    ];
    for c in candidates {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, c) {
            return Ok(n.format(fmt).to_string());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(n) = d.and_hms_opt(0, 0, 0) {
            return Ok(n.format(fmt).to_string());
        }
    }
    Err(ApiError::Validation(vec![ValidationIssue::new(
        "datetime_from_date_parsing",
        &["query", field],
        "Input should be a valid datetime or date",
    )
    .with_input(s.to_string())]))
}

/// Normalizes an event timestamp for comparison (six fractional digits).
fn norm_ts(ts: &str) -> String {
    match NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.f") {
        Ok(n) => n.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
        Err(_) => ts.to_string(),
    }
}

struct Filter {
    kind: Option<String>,
    source: Option<String>,
    body: Option<String>,
    gte: Option<String>,
    lt: Option<String>,
}

impl Filter {
    fn from_query(q: &EventQuery) -> Result<Self, ApiError> {
        Ok(Filter {
            kind: q
                .kind
                .as_ref()
                .map(|k| k.rsplit('.').next().unwrap_or(k).to_string()),
            source: q.source.clone(),
            body: q.body.as_ref().map(|b| b.to_lowercase()),
            gte: q
                .timestamp_gte
                .as_deref()
                .map(|s| naive_local(s, "timestamp__gte"))
                .transpose()?,
            lt: q
                .timestamp_lt
                .as_deref()
                .map(|s| naive_local(s, "timestamp__lt"))
                .transpose()?,
        })
    }

    fn matches(&self, e: &Value) -> bool {
        if self.kind.as_deref().is_some_and(|k| events::kind(e) != k) {
            return false;
        }
        if self
            .source
            .as_deref()
            .is_some_and(|s| events::str_field(e, "source") != Some(s))
        {
            return false;
        }
        if let Some(b) = &self.body {
            if events::kind(e) != "MessageEvent" {
                return false;
            }
            let mut t = events::message_text(e);
            if let Some(r) = e
                .get("llm_message")
                .and_then(|m| m.get("reasoning_content"))
                .and_then(Value::as_str)
            {
                t.push('\n');
                t.push_str(r);
            }
            if !t.to_lowercase().contains(b.as_str()) {
                return false;
            }
        }
        if self.gte.is_some() || self.lt.is_some() {
            let ts = norm_ts(events::str_field(e, "timestamp").unwrap_or(""));
            if self.gte.as_ref().is_some_and(|g| ts < *g)
                || self.lt.as_ref().is_some_and(|l| ts >= *l)
            {
                return false;
            }
        }
        true
    }
}

/// Search events.
#[utoipa::path(get, path = "/api/conversations/{conversation_id}/events/search", tag = "Events",
    params(("conversation_id" = Uuid, Path), EventQuery),
    responses((status = 200, description = "A page of events")))]
async fn search(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidQuery(q): ValidQuery<EventQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = check_limit(q.limit)?;
    let desc = match q.sort_order.as_deref() {
        None | Some("TIMESTAMP") => false,
        Some("TIMESTAMP_DESC") => true,
        Some(other) => {
            return Err(ApiError::Validation(vec![ValidationIssue::new(
                "enum",
                &["query", "sort_order"],
                "Input should be 'TIMESTAMP' or 'TIMESTAMP_DESC'",
            )
            .with_input(other.to_string())]))
        }
    };
    let filter = Filter::from_query(&q)?;
    let conv = find(&state, &id)?;
    let page_id = q.page_id.clone();
    let (items, next) = conv
        .with_events(|evs| {
            let matching: Vec<&Value> = if desc {
                evs.iter().rev().filter(|e| filter.matches(e)).collect()
            } else {
                evs.iter().filter(|e| filter.matches(e)).collect()
            };
            let start = page_id
                .as_deref()
                .and_then(|p| matching.iter().position(|e| events::id(e) == p))
                .unwrap_or(0);
            let items: Vec<Value> = matching
                .iter()
                .skip(start)
                .take(limit)
                .map(|e| (*e).clone())
                .collect();
            let next = matching
                .get(start + limit)
                .map(|e| json!(events::id(e)))
                .unwrap_or(Value::Null);
            (items, next)
        })
        .await
        .map_err(io_error)?;
    Ok(Json(json!({"items": items, "next_page_id": next})))
}

/// Count events.
#[utoipa::path(get, path = "/api/conversations/{conversation_id}/events/count", tag = "Events",
    params(("conversation_id" = Uuid, Path), EventQuery),
    responses((status = 200, description = "Number of matching events")))]
async fn count(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidQuery(q): ValidQuery<EventQuery>,
) -> Result<Json<Value>, ApiError> {
    let filter = Filter::from_query(&q)?;
    let conv = find(&state, &id)?;
    let n = conv
        .with_events(|evs| evs.iter().filter(|e| filter.matches(e)).count())
        .await
        .map_err(io_error)?;
    Ok(Json(json!(n)))
}

/// Optional fields of each event model that default to `null` (from the reference's models).
/// Stored events leave them out, as the reference's search does (`exclude_none`); its single and
/// batch GETs return the whole model, with these as `null`.
const NULLABLE_FIELDS: &[(&str, &[&str])] = &[
    (
        "ActionEvent",
        &[
            "reasoning_content",
            "responses_reasoning_item",
            "action",
            "critic_result",
            "summary",
        ],
    ),
    ("AgentErrorEvent", &["classification"]),
    ("Condensation", &["summary", "summary_offset"]),
    ("ConversationErrorEvent", &["classification"]),
    (
        "HookExecutionEvent",
        &[
            "tool_name",
            "reason",
            "additional_context",
            "error",
            "action_id",
            "message_id",
            "hook_input",
        ],
    ),
    (
        "MessageEvent",
        &["llm_response_id", "sender", "critic_result"],
    ),
    ("StreamingDeltaEvent", &["content", "reasoning_content"]),
    ("SystemPromptEvent", &["dynamic_context"]),
];

/// An event as the reference's single and batch GETs give it: every optional field of its model
/// present, `null` when unset (`parent_id` on every kind).
fn as_full_model(mut e: Value) -> Value {
    if let Some(o) = e.as_object_mut() {
        let kind = o.get("kind").and_then(Value::as_str).unwrap_or_default();
        let fields = NULLABLE_FIELDS
            .iter()
            .find(|(k, _)| *k == kind)
            .map_or(&[][..], |(_, f)| *f);
        for field in std::iter::once(&"parent_id").chain(fields) {
            if !o.contains_key(*field) {
                o.insert((*field).into(), Value::Null);
            }
        }
    }
    e
}

/// Get one event.
#[utoipa::path(get, path = "/api/conversations/{conversation_id}/events/{event_id}", tag = "Events",
    params(("conversation_id" = Uuid, Path), ("event_id" = String, Path)),
    responses((status = 200, description = "The event"), (status = 404, description = "Unknown")))]
async fn get_event(
    State(state): State<AppState>,
    ValidPath((id, event_id)): ValidPath<(Uuid, String)>,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    let ev = conv
        .with_events(|evs| evs.iter().find(|e| events::id(e) == event_id).cloned())
        .await
        .map_err(io_error)?;
    ev.map(|e| Json(as_full_model(e)))
        .ok_or_else(ApiError::not_found)
}

/// Batch get (`GET` with a JSON array of ids as body) → `[Event|null]`.
#[utoipa::path(get, path = "/api/conversations/{conversation_id}/events", tag = "Events",
    params(("conversation_id" = Uuid, Path)), request_body = Vec<String>,
    responses((status = 200, description = "Events or null, in request order")))]
async fn batch_get(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidJson(ids): ValidJson<Vec<String>>,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    let out = conv
        .with_events(|evs| {
            ids.iter()
                .map(|want| {
                    evs.iter()
                        .find(|e| events::id(e) == want)
                        .cloned()
                        .map_or(Value::Null, as_full_model)
                })
                .collect::<Vec<_>>()
        })
        .await
        .map_err(io_error)?;
    Ok(Json(Value::Array(out)))
}

/// `SendMessageRequest`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct SendMessageRequest {
    #[serde(default = "default_role")]
    role: String,
    #[serde(default)]
    content: Vec<Value>,
    #[serde(default)]
    run: bool,
}

fn default_role() -> String {
    "user".into()
}

/// Validates and normalizes message content (`TextContent` / `ImageContent`).
fn normalize_content(content: &[Value]) -> Result<Value, String> {
    let mut out = Vec::new();
    for (i, item) in content.iter().enumerate() {
        let cache = item
            .get("cache_prompt")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        match item.get("type").and_then(Value::as_str) {
            Some("text") | None if item.get("text").is_some() => {
                let t = item
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or(format!("content.{i}.text: Input should be a valid string"))?;
                out.push(json!({"cache_prompt": cache, "type": "text", "text": t}));
            }
            Some("image") => {
                let urls = item
                    .get("image_urls")
                    .and_then(Value::as_array)
                    .ok_or(format!("content.{i}.image_urls: Field required"))?;
                out.push(json!({"cache_prompt": cache, "type": "image", "image_urls": urls}));
            }
            _ => {
                return Err(format!(
                    "content.{i}: Input should be a TextContent or ImageContent"
                ))
            }
        }
    }
    Ok(Value::Array(out))
}

/// Send a message (optionally starting a run).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/events", tag = "Events",
    params(("conversation_id" = Uuid, Path)), request_body = SendMessageRequest,
    responses((status = 200, description = "Success")))]
async fn send_message(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidJson(body): ValidJson<SendMessageRequest>,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    if !matches!(body.role.as_str(), "user" | "system" | "assistant" | "tool") {
        return Err(ApiError::invalid(
            "literal_error",
            &["body", "role"],
            "Input should be 'user', 'system', 'assistant' or 'tool'",
        ));
    }
    let content = normalize_content(&body.content)
        .map_err(|m| ApiError::invalid("value_error", &["body", "content"], m))?;
    match conv.send_message(content, body.run).await {
        Ok(()) => Ok(Json(json!({"success": true}))),
        Err(ConversationError::TooManyRuns(_)) => Err(ApiError::TooManyRequests(format!(
            "Message saved, but the conversation run limit was reached. Retry POST /api/conversations/{id}/run without resending the message."
        ))),
        Err(e) => Err(api_error(e)),
    }
}

/// `ConfirmationResponseRequest`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct ConfirmationResponseRequest {
    accept: bool,
    #[serde(default = "default_reason")]
    reason: String,
}

fn default_reason() -> String {
    "User rejected the action.".into()
}

/// Accept (run) or reject the pending actions.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/events/respond_to_confirmation", tag = "Events",
    params(("conversation_id" = Uuid, Path)), request_body = ConfirmationResponseRequest,
    responses((status = 200, description = "Success")))]
async fn respond_to_confirmation(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidJson(body): ValidJson<ConfirmationResponseRequest>,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    if body.accept {
        match conv.start_run() {
            Ok(()) | Err(ConversationError::Conflict(_)) => {}
            Err(e) => return Err(api_error(e)),
        }
    } else {
        conv.reject_pending(&body.reason).await.map_err(io_error)?;
    }
    Ok(Json(json!({"success": true})))
}

/// Event routes.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search))
        .routes(routes!(count))
        .routes(routes!(respond_to_confirmation))
        .routes(routes!(get_event))
        .routes(routes!(batch_get, send_message))
}

/// Query of the events WebSocket.
#[derive(Debug, Default, Deserialize)]
pub(super) struct SocketQuery {
    session_api_key: Option<String>,
    resend_mode: Option<String>,
    after_timestamp: Option<String>,
    resend_all: Option<String>,
}

/// The events WebSocket route.
pub(super) fn socket_router() -> Router<AppState> {
    Router::new().route("/sockets/events/{conversation_id}", get(socket))
}

async fn socket(
    ws: WebSocketUpgrade,
    State(state): State<AppState>,
    Path(raw_id): Path<String>,
    Query(q): Query<SocketQuery>,
    headers: HeaderMap,
) -> Response {
    let Ok(id) = Uuid::parse_str(&raw_id) else {
        return StatusCode::FORBIDDEN.into_response();
    };
    let auth = check_handshake(
        &state.config.session_api_keys,
        &headers,
        q.session_api_key.as_deref(),
    );
    if auth == SocketAuth::Refused {
        return StatusCode::FORBIDDEN.into_response();
    }
    super::small_socket(ws).on_upgrade(move |socket| serve_socket(socket, state, id, q, auth))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(WsMessage::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
}

async fn serve_socket(
    mut socket: WebSocket,
    state: AppState,
    id: Uuid,
    q: SocketQuery,
    auth: SocketAuth,
) {
    if auth == SocketAuth::AwaitFrame
        && !await_auth_frame(&mut socket, &state.config.session_api_keys).await
    {
        return;
    }
    let Some(conv) = state.conversations.get(&id) else {
        close(&mut socket, 4004, "Conversation not found").await;
        return;
    };
    if conv.ensure_events().await.is_err() {
        close(&mut socket, 1011, "Could not load the conversation").await;
        return;
    }
    let mut sub = match conv.subscribe() {
        Ok(s) => s,
        Err(_) => {
            close(
                &mut socket,
                1013,
                "Too many connections for this conversation",
            )
            .await;
            return;
        }
    };
    // The snapshot first.
    if let Some(first) = sub.rx.recv().await {
        if socket
            .send(WsMessage::Text(first.as_ref().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    // Optional history replay.
    let mode = q.resend_mode.clone().or_else(|| {
        q.resend_all
            .as_deref()
            .filter(|v| matches!(*v, "true" | "True" | "1"))
            .map(|_| "all".to_string())
    });
    let since = match (mode.as_deref(), q.after_timestamp.as_deref()) {
        (Some("all"), _) => Some(None),
        (Some("since"), Some(ts)) => naive_local(ts, "after_timestamp").ok().map(Some),
        _ => None,
    };
    if let Some(after) = since {
        let history = conv
            .with_events(|evs| {
                evs.iter()
                    .filter(|e| {
                        after.as_ref().is_none_or(|a| {
                            norm_ts(events::str_field(e, "timestamp").unwrap_or("")) >= *a
                        })
                    })
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
        for text in history {
            if socket.send(WsMessage::Text(text.into())).await.is_err() {
                return;
            }
        }
    }
    loop {
        tokio::select! {
            out = sub.rx.recv() => match out {
                Some(text) => {
                    let first = WsMessage::Text(text.as_ref().into());
                    let text_of = |t: Arc<str>| WsMessage::Text(t.as_ref().into());
                    let ready = || sub.rx.try_recv().ok().map(text_of);
                    if super::send_ready(&mut socket, first, ready).await.is_err() {
                        return;
                    }
                }
                None => {
                    if sub.overflowed.load(Ordering::Acquire) {
                        close(&mut socket, 1013, "Subscriber too slow; reconnect and resync").await;
                    } else {
                        close(&mut socket, 1000, "Conversation closed").await;
                    }
                    return;
                }
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(text))) => handle_frame(&mut socket, &conv, text.as_str()).await,
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn handle_frame(socket: &mut WebSocket, conv: &Arc<Conversation>, text: &str) {
    let parsed: Result<Value, String> = serde_json::from_str(text).map_err(|e| e.to_string());
    let result = match parsed {
        Ok(v) if is_auth_frame(&v) => return,
        Ok(v) => {
            let role = v.get("role").and_then(Value::as_str).unwrap_or("user");
            match v.get("content").and_then(Value::as_array) {
                Some(items) if matches!(role, "user" | "system" | "assistant" | "tool") => {
                    match normalize_content(items) {
                        Ok(content) => conv
                            .send_message(content, true)
                            .await
                            .map_err(|e| ("ConversationError", e.to_string())),
                        Err(m) => Err((
                            "ValidationError",
                            format!("1 validation error for Message: {m}"),
                        )),
                    }
                }
                _ => Err((
                    "ValidationError",
                    "1 validation error for Message: content: Field required".to_string(),
                )),
            }
        }
        Err(e) => Err(("ValidationError", format!("Invalid JSON: {e}"))),
    };
    if let Err((code, detail)) = result {
        let ev = conv.transient_event(json!({
            "source": "environment", "code": code, "detail": detail, "kind": "ServerErrorEvent",
        }));
        let _ = socket.send(WsMessage::Text(ev.to_string().into())).await;
    }
}
