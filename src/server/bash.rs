//! `/api/bash/*` routes and the `/sockets/bash-events` WebSocket, thin wrappers over [`crate::exec`].
//! Inputs are validated here with the reference's 422 shapes (pydantic's error types and messages).

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{await_auth_frame, check_handshake, AppState, SocketAuth};
use crate::error::{ApiError, ValidBytes, ValidationIssue};
use crate::exec::{
    BashCommand, BashError, BashEventKind, BashEventPage, BashEventSortOrder, BashOutput,
    BashService, ExecuteBashRequest, JsonStream, Received, SearchQuery, DEFAULT_TIMEOUT_SECS,
};

/// Default and largest `limit` of a search page.
const MAX_PAGE: i64 = 100;

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
    Router::new().route("/sockets/bash-events", get(bash_events_socket))
}

/// A streamed JSON body.
fn json_body(stream: JsonStream) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

fn issue(kind: &str, loc: Vec<Value>, msg: &str, input: Value) -> ValidationIssue {
    ValidationIssue {
        kind: kind.into(),
        loc,
        msg: msg.into(),
        input,
    }
}

/// Parses a JSON body the way FastAPI does before validation: empty → `missing`, bad JSON →
/// `json_invalid` at the byte offset of the error.
fn parse_json_body(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::Validation(vec![issue(
            "missing",
            vec![json!("body")],
            "Field required",
            Value::Null,
        )]));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        // serde reports line/column (1-based); the reference reports the character offset.
        let offset: usize = bytes
            .split(|b| *b == b'\n')
            .take(e.line().saturating_sub(1))
            .map(|l| l.len() + 1)
            .sum::<usize>()
            + e.column().saturating_sub(1);
        ApiError::Validation(vec![issue(
            "json_invalid",
            vec![json!("body"), json!(offset)],
            "JSON decode error",
            json!({}),
        )])
    })
}

/// Integer parsing as pydantic's lax mode: integers, integral floats, numeric strings, bools.
fn lax_int(value: &Value) -> Result<i64, (&'static str, &'static str)> {
    const NOT_INT: (&str, &str) = ("int_type", "Input should be a valid integer");
    const FRACTION: (&str, &str) = (
        "int_from_float",
        "Input should be a valid integer, got a number with a fractional part",
    );
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if n.as_u64().is_some() {
                Ok(i64::MAX)
            } else {
                let f = n.as_f64().ok_or(NOT_INT)?;
                if f.is_finite() && f.fract() == 0.0 {
                    Ok(f as i64)
                } else {
                    Err(FRACTION)
                }
            }
        }
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::String(s) => lax_int_str(s).ok_or((
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
        )),
        _ => Err(NOT_INT),
    }
}

fn lax_int_str(s: &str) -> Option<i64> {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Some(i);
    }
    // "5.0" is an integer for pydantic; "1.5" and "1e3" are not.
    let (whole, frac) = t.split_once('.')?;
    if !frac.is_empty() && frac.bytes().all(|b| b == b'0') {
        whole.parse().ok()
    } else {
        None
    }
}

/// Validates an `ExecuteBashRequest` body, collecting every problem like pydantic.
fn parse_execute_request(value: Value) -> Result<ExecuteBashRequest, Vec<ValidationIssue>> {
    let Value::Object(map) = &value else {
        return Err(vec![issue(
            "model_attributes_type",
            vec![json!("body")],
            "Input should be a valid dictionary or object to extract fields from",
            value,
        )]);
    };
    let mut issues = Vec::new();
    let command = match map.get("command") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            issues.push(issue(
                "string_type",
                vec![json!("body"), json!("command")],
                "Input should be a valid string",
                other.clone(),
            ));
            None
        }
        None => {
            issues.push(issue(
                "missing",
                vec![json!("body"), json!("command")],
                "Field required",
                value.clone(),
            ));
            None
        }
    };
    let cwd = match map.get("cwd") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            issues.push(issue(
                "string_type",
                vec![json!("body"), json!("cwd")],
                "Input should be a valid string",
                other.clone(),
            ));
            None
        }
    };
    let timeout = match map.get("timeout") {
        None => DEFAULT_TIMEOUT_SECS,
        Some(v) => match lax_int(v) {
            Ok(t) => t,
            Err((kind, msg)) => {
                issues.push(issue(
                    kind,
                    vec![json!("body"), json!("timeout")],
                    msg,
                    v.clone(),
                ));
                DEFAULT_TIMEOUT_SECS
            }
        },
    };
    match command {
        Some(command) if issues.is_empty() => Ok(ExecuteBashRequest {
            command,
            cwd,
            timeout,
        }),
        _ => Err(issues),
    }
}

fn request_from_body(bytes: &[u8]) -> Result<ExecuteBashRequest, ApiError> {
    parse_execute_request(parse_json_body(bytes)?).map_err(ApiError::Validation)
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

/// A query datetime as pydantic reads it: ISO 8601 with or without zone (naive = UTC here, as
/// the file names are UTC), a date, or a Unix time in seconds (milliseconds when large).
fn parse_datetime(raw: &str) -> Result<DateTime<Utc>, String> {
    let s = raw.trim();
    if let Ok(n) = s.parse::<f64>() {
        if n.is_finite() {
            let secs = if n.abs() > 2e10 { n / 1000.0 } else { n };
            let micros = (secs * 1e6).round() as i64;
            if let Some(t) = DateTime::from_timestamp_micros(micros) {
                return Ok(t);
            }
        }
        return Err("invalid datetime".into());
    }
    let zoned = if let Some(rest) = s.strip_suffix(['Z', 'z']) {
        format!("{rest}+00:00")
    } else {
        s.to_owned()
    };
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(&zoned, fmt) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    Err(if s.len() < 10 {
        "input is too short".into()
    } else {
        "invalid datetime format".into()
    })
}

/// A UUID (dashed, hex, braced or URN) as 32 hex digits, or the reference's 422 issue.
fn parse_uuid(raw: &str, loc: Vec<Value>) -> Result<String, Box<ValidationIssue>> {
    uuid::Uuid::parse_str(raw.trim())
        .map(|u| u.simple().to_string())
        .map_err(|e| {
            Box::new(issue(
                "uuid_parsing",
                loc,
                &format!("Input should be a valid UUID, {e}"),
                json!(raw),
            ))
        })
}

/// The decoded `key=value` pairs of a raw query string.
fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    crate::urlcode::query_pairs(raw.unwrap_or(""))
}

/// Validates the search query string, collecting every problem like FastAPI.
fn parse_search_query(raw: Option<&str>) -> Result<SearchQuery, ApiError> {
    let pairs = query_pairs(raw);
    // Starlette: the last value of a repeated parameter wins.
    let get = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let loc = |name: &str| vec![json!("query"), json!(name)];
    let mut issues = Vec::new();
    let mut query = SearchQuery {
        limit: MAX_PAGE as usize,
        ..SearchQuery::default()
    };
    if let Some(v) = get("kind__eq") {
        match BashEventKind::parse(v) {
            Some(k) => query.kind = Some(k),
            None => issues.push(issue(
                "literal_error",
                loc("kind__eq"),
                "Input should be 'BashCommand' or 'BashOutput'",
                json!(v),
            )),
        }
    }
    if let Some(v) = get("command_id__eq") {
        match parse_uuid(v, loc("command_id__eq")) {
            Ok(id) => query.command_id = Some(id),
            Err(i) => issues.push(*i),
        }
    }
    for (name, slot) in [
        ("timestamp__gte", &mut query.timestamp_gte),
        ("timestamp__lt", &mut query.timestamp_lt),
    ] {
        if let Some(v) = get(name) {
            match parse_datetime(v) {
                Ok(t) => *slot = Some(t),
                Err(why) => issues.push(issue(
                    "datetime_from_date_parsing",
                    loc(name),
                    &format!("Input should be a valid datetime or date, {why}"),
                    json!(v),
                )),
            }
        }
    }
    const INT_PARSING: &str =
        "Input should be a valid integer, unable to parse string as an integer";
    if let Some(v) = get("order__gt") {
        match lax_int_str(v) {
            Some(o) => query.order_gt = Some(o),
            None => issues.push(issue(
                "int_parsing",
                loc("order__gt"),
                INT_PARSING,
                json!(v),
            )),
        }
    }
    if let Some(v) = get("sort_order") {
        match v {
            "TIMESTAMP" => query.sort_order = BashEventSortOrder::Timestamp,
            "TIMESTAMP_DESC" => query.sort_order = BashEventSortOrder::TimestampDesc,
            _ => issues.push(issue(
                "enum",
                loc("sort_order"),
                "Input should be 'TIMESTAMP' or 'TIMESTAMP_DESC'",
                json!(v),
            )),
        }
    }
    if let Some(v) = get("page_id") {
        query.page_id = Some(v.to_owned());
    }
    if let Some(v) = get("limit") {
        match lax_int_str(v) {
            Some(l) if l <= 0 => issues.push(issue(
                "greater_than",
                loc("limit"),
                "Input should be greater than 0",
                json!(v),
            )),
            Some(l) if l > MAX_PAGE => issues.push(issue(
                "less_than_equal",
                loc("limit"),
                "Input should be less than or equal to 100",
                json!(v),
            )),
            Some(l) => query.limit = l as usize,
            None => issues.push(issue("int_parsing", loc("limit"), INT_PARSING, json!(v))),
        }
    }
    if issues.is_empty() {
        Ok(query)
    } else {
        Err(ApiError::Validation(issues))
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

/// Query parameters of the bash-events socket.
struct SocketParams {
    session_api_key: Option<String>,
    resend_all: bool,
}

fn socket_params(raw: Option<&str>) -> Result<SocketParams, ()> {
    let pairs = query_pairs(raw);
    let get = |key: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let resend_mode = match get("resend_mode") {
        None => None,
        Some("all") => Some(true),
        Some(_) => return Err(()),
    };
    let legacy = match get("resend_all").map(str::to_ascii_lowercase).as_deref() {
        None => false,
        Some("true" | "1" | "yes" | "on" | "t" | "y") => true,
        Some("false" | "0" | "no" | "off" | "f" | "n") => false,
        Some(_) => return Err(()),
    };
    Ok(SocketParams {
        session_api_key: get("session_api_key").map(str::to_owned),
        resend_all: resend_mode.unwrap_or(legacy),
    })
}

/// `WS /sockets/bash-events`: auth as the events socket, optional replay (`resend_mode=all`),
/// then every new `BashCommand`/`BashOutput`; inbound `ExecuteBashRequest` frames start commands.
async fn bash_events_socket(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Ok(params) = socket_params(raw.as_deref()) else {
        // The reference closes before accepting on invalid parameters: a 403 handshake.
        return StatusCode::FORBIDDEN.into_response();
    };
    let auth = check_handshake(
        &state.config.session_api_keys,
        &headers,
        params.session_api_key.as_deref(),
    );
    if auth == SocketAuth::Refused {
        return StatusCode::FORBIDDEN.into_response();
    }
    super::small_socket(ws)
        .on_upgrade(move |socket| serve_socket(socket, state, auth, params.resend_all))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn send_error(socket: &mut WebSocket, code: &str, detail: String) -> bool {
    let error = BashError::new(code, detail);
    let text = serde_json::to_string(&error).unwrap_or_default();
    socket.send(Message::Text(text.into())).await.is_ok()
}

/// The pydantic-style text of a failed `ExecuteBashRequest` validation.
fn validation_text(issues: &[ValidationIssue]) -> String {
    let mut text = format!(
        "{} validation error{} for ExecuteBashRequest",
        issues.len(),
        if issues.len() == 1 { "" } else { "s" }
    );
    for i in issues {
        let field: Vec<String> = i
            .loc
            .iter()
            .skip(1)
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        text.push_str(&format!(
            "\n{}\n  {} [type={}, input_value={}]",
            field.join("."),
            i.msg,
            i.kind,
            i.input
        ));
    }
    text
}

async fn serve_socket(mut socket: WebSocket, state: AppState, auth: SocketAuth, resend: bool) {
    if auth == SocketAuth::AwaitFrame
        && !await_auth_frame(&mut socket, &state.config.session_api_keys).await
    {
        return;
    }
    let Some(mut subscription) = state.bash.subscribe() else {
        close(&mut socket, 1013, "Too many bash event connections").await;
        return;
    };
    // Commands from frames start on their own tasks (at most STARTS_IN_FLIGHT at once), so a
    // client with many commands in flight is not served one spawn at a time; failures to start
    // come back here to be reported on the socket.
    let starts = std::sync::Arc::new(tokio::sync::Semaphore::new(STARTS_IN_FLIGHT));
    let (failed_tx, mut failed) = tokio::sync::mpsc::channel::<String>(STARTS_IN_FLIGHT);
    if resend {
        subscription.replay_stored();
    }
    loop {
        tokio::select! {
            received = subscription.next() => match received {
                Received::Event(json) => {
                    let first = Message::Text(json.into());
                    let ready = || subscription.try_next().map(|j| Message::Text(j.into()));
                    if super::send_ready(&mut socket, first, ready).await.is_err() {
                        return;
                    }
                }
                Received::Closed => {
                    close(&mut socket, 1001, "Server shutting down").await;
                    return;
                }
                Received::Missed => {
                    close(&mut socket, 1013, "Subscriber too slow; reconnect and resync").await;
                    return;
                }
            },
            Some(error) = failed.recv() => {
                if !send_error(&mut socket, "RuntimeError", error).await {
                    return;
                }
            }
            frame = socket.recv() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let request = match parse_frame(text.as_str()) {
                        Ok(Some(r)) => r,
                        Ok(None) => continue,
                        Err((kind, detail)) => {
                            if !send_error(&mut socket, kind, detail).await {
                                return;
                            }
                            continue;
                        }
                    };
                    state.activity.touch();
                    let Ok(permit) = starts.clone().acquire_owned().await else {
                        return;
                    };
                    let (bash, failed_tx) = (state.bash.clone(), failed_tx.clone());
                    tokio::spawn(async move {
                        if let Err(e) = bash.start(request).await {
                            let _ = failed_tx.send(e.to_string()).await;
                        }
                        drop(permit);
                    });
                }
                Some(Ok(Message::Binary(_))) => {
                    if !send_error(&mut socket, "KeyError", "'text'".into()).await {
                        return;
                    }
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
            },
        }
    }
}

/// Most commands one socket may be starting at once.
const STARTS_IN_FLIGHT: usize = 32;

/// Parses one inbound text frame: a command to start, `None` for an auth frame, or the error
/// (kind, detail) to send back.
fn parse_frame(text: &str) -> Result<Option<ExecuteBashRequest>, (&'static str, String)> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| ("JSONDecodeError", e.to_string()))?;
    if super::is_auth_frame(&value) {
        return Ok(None);
    }
    parse_execute_request(value)
        .map(Some)
        .map_err(|issues| ("ValidationError", validation_text(&issues)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lax_integers() {
        assert_eq!(lax_int_str("5"), Some(5));
        assert_eq!(lax_int_str("5.0"), Some(5));
        assert_eq!(lax_int_str("1.5"), None);
        assert_eq!(lax_int_str("x"), None);
        assert_eq!(lax_int(&json!(2.0)), Ok(2));
        assert!(lax_int(&json!(1.5)).is_err());
        assert!(lax_int(&Value::Null).is_err());
    }

    #[test]
    fn datetimes() {
        let t = parse_datetime("2026-11-25T10:00:00+02:00").expect("zoned");
        assert_eq!(t.to_rfc3339(), "2026-11-25T08:00:00+00:00");
        assert!(parse_datetime("2026-11-25T10:00:00Z").is_ok());
        assert!(parse_datetime("2026-11-25T10:00:00.123456").is_ok());
        assert!(parse_datetime("2026-11-25").is_ok());
        assert!(parse_datetime("1700000000").is_ok());
        assert!(parse_datetime("bad").is_err());
    }

    #[test]
    fn request_validation_collects_issues() {
        let issues = parse_execute_request(json!({"timeout": 1.5})).expect_err("invalid");
        let kinds: Vec<&str> = issues.iter().map(|i| i.kind.as_str()).collect();
        assert_eq!(kinds, ["missing", "int_from_float"]);
        let ok = parse_execute_request(json!({"command": "x", "timeout": "2"})).expect("valid");
        assert_eq!(ok.timeout, 2);
        assert_eq!(ok.cwd, None);
    }
}
