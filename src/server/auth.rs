//! Session-key authentication, as the reference does it: the `X-Session-API-Key` header on every
//! `/api/*` route (exempt routes excepted), and on WebSockets the query/header forms or a first
//! `{"type":"auth","session_api_key":...}` frame within 10 s (close 4001 otherwise).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::error::ApiError;

/// Header carrying the session key.
pub const SESSION_KEY_HEADER: &str = "x-session-api-key";
/// How long a WebSocket may stay silent before its auth frame.
pub const WS_AUTH_DEADLINE: Duration = Duration::from_secs(10);
/// Close code for a failed WebSocket authentication (fatal for the Python client).
pub const WS_AUTH_FAILED: u16 = 4001;

/// True when `candidate` equals one of `keys`, compared in constant time.
pub fn key_matches(keys: &[String], candidate: &str) -> bool {
    // Fold over every key so the time does not depend on which one matched.
    keys.iter().fold(false, |found, k| {
        found | bool::from(k.as_bytes().ct_eq(candidate.as_bytes()))
    })
}

/// Routes under `/api` that need no key (they have their own checks in the reference).
fn is_exempt(path: &str) -> bool {
    path == "/api/init"
}

/// Middleware: rejects `/api/*` requests without a valid `X-Session-API-Key` with 401.
pub async fn require_session_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let keys = &state.config.session_api_keys;
    let path = req.uri().path();
    if keys.is_empty() || is_exempt(path) {
        return next.run(req).await;
    }
    // The OpenAI-compatible gateway also takes the key as a bearer token (OpenAI clients).
    if path.starts_with("/v1/") {
        let bearer = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let header = req
            .headers()
            .get(SESSION_KEY_HEADER)
            .and_then(|v| v.to_str().ok());
        return if [bearer, header]
            .into_iter()
            .flatten()
            .any(|k| key_matches(keys, k))
        {
            next.run(req).await
        } else {
            ApiError::Unauthorized.into_response()
        };
    }
    if !path.starts_with("/api") {
        return next.run(req).await;
    }
    let ok = req
        .headers()
        .get(SESSION_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|k| key_matches(keys, k))
        || (is_workspace_browser(path)
            && session_cookie(req.headers()).is_some_and(|k| key_matches(keys, &k)));
    if ok {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// The cookie `POST /api/auth/workspace-session` sets (browsers cannot send the header from an
/// `<iframe src>`); it is honoured by the conversation workspace browser only.
pub const WORKSPACE_SESSION_COOKIE: &str = "oh_workspace_session_key";

/// `/api/conversations/{id}/workspace` and everything below it.
fn is_workspace_browser(path: &str) -> bool {
    let mut parts = path.trim_start_matches('/').splitn(5, '/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (
            Some("api"),
            Some("conversations"),
            Some(_),
            Some("workspace")
        )
    )
}

/// The value of the workspace-session cookie, if sent.
fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == WORKSPACE_SESSION_COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_string())
}

/// What the handshake of a WebSocket says about its credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketAuth {
    /// No keys configured, or a valid key in the query or header: accept at once.
    Granted,
    /// A key was offered in the query or header and it is wrong: refuse the handshake.
    Refused,
    /// No credentials yet: accept, then wait for the first-message auth frame.
    AwaitFrame,
}

/// Checks the handshake credentials (query `session_api_key`, then the header).
pub fn check_handshake(
    keys: &[String],
    headers: &HeaderMap,
    query_key: Option<&str>,
) -> SocketAuth {
    if keys.is_empty() {
        return SocketAuth::Granted;
    }
    let header_key = headers
        .get(SESSION_KEY_HEADER)
        .and_then(|v| v.to_str().ok());
    match query_key.or(header_key) {
        Some(k) if key_matches(keys, k) => SocketAuth::Granted,
        Some(_) => SocketAuth::Refused,
        None => SocketAuth::AwaitFrame,
    }
}

/// Waits for the first-message auth frame; closes the socket with 4001 and returns false when it
/// is missing, malformed, wrong, or late.
pub async fn await_auth_frame(socket: &mut WebSocket, keys: &[String]) -> bool {
    let frame = tokio::time::timeout(WS_AUTH_DEADLINE, socket.recv()).await;
    let ok = match frame {
        Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .filter(|v| v.get("type").and_then(|t| t.as_str()) == Some("auth"))
            .and_then(|v| {
                v.get("session_api_key")
                    .and_then(|k| k.as_str())
                    .map(str::to_owned)
            })
            .is_some_and(|k| key_matches(keys, &k)),
        _ => false,
    };
    if !ok {
        let close = CloseFrame {
            code: WS_AUTH_FAILED,
            reason: "Authentication failed".into(),
        };
        let _ = socket.send(Message::Close(Some(close))).await;
    }
    ok
}

/// True for a later frame shaped like an auth frame, which sockets ignore.
pub fn is_auth_frame(value: &serde_json::Value) -> bool {
    value.get("type").and_then(|t| t.as_str()) == Some("auth")
        && value
            .as_object()
            .is_some_and(|o| o.keys().all(|k| k == "type" || k == "session_api_key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_membership() {
        let keys = vec!["alpha".to_string(), "beta".to_string()];
        assert!(key_matches(&keys, "beta"));
        assert!(!key_matches(&keys, "bet"));
        assert!(!key_matches(&[], "x"));
    }

    #[test]
    fn handshake_modes() {
        let keys = vec!["k".to_string()];
        let mut h = HeaderMap::new();
        assert_eq!(check_handshake(&keys, &h, None), SocketAuth::AwaitFrame);
        assert_eq!(check_handshake(&keys, &h, Some("k")), SocketAuth::Granted);
        h.insert(SESSION_KEY_HEADER, "bad".parse().expect("header"));
        assert_eq!(check_handshake(&keys, &h, None), SocketAuth::Refused);
        assert_eq!(check_handshake(&[], &h, None), SocketAuth::Granted);
    }
}
