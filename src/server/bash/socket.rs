//! `WS /sockets/bash-events`: the handshake and its parameters, replay, every new event sent,
//! and inbound `ExecuteBashRequest` frames started as commands (errors sent back as frames).

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::params::{parse_execute_request, query_pairs};
use crate::error::ValidationIssue;
use crate::exec::{BashError, ExecuteBashRequest, Received};
use crate::server::{await_auth_frame, check_handshake, AppState, SocketAuth};

/// Query parameters of the bash-events socket.
struct SocketParams {
    session_api_key: Option<String>,
    resend_all: bool,
}

fn socket_params(raw: Option<&str>) -> Result<SocketParams, ()> {
    let pairs = query_pairs(raw);
    let get = |key: &str| crate::urlcode::last_value(&pairs, key);
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
pub(super) async fn bash_events_socket(
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
    crate::server::small_socket(ws)
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
                    if crate::server::send_ready(&mut socket, first, ready).await.is_err() {
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
    if crate::server::is_auth_frame(&value) {
        return Ok(None);
    }
    parse_execute_request(value)
        .map(Some)
        .map_err(|issues| ("ValidationError", validation_text(&issues)))
}
