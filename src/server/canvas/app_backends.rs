//! The Canvas App browser bridge under `/app-backends/{extension_name}`: ingress and origin
//! checks, the session routes, and the cookie-authenticated HTTP and WebSocket proxy to a ready
//! backend.

use super::*;

// ---- the browser bridge -------------------------------------------------------------------

/// The origin a request was made to: its scheme and `Host` (or, when trusted, the forwarded
/// ones).
pub(super) fn request_origin(state: &AppState, headers: &HeaderMap) -> Option<String> {
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

pub(super) fn public_url(state: &AppState) -> Result<String, CanvasError> {
    bridge::public_url(state.config.app_backend_public_url.as_deref()).map_err(|e| match e {
        bridge::Ingress::NotConfigured => CanvasError::IngressNotConfigured,
        bridge::Ingress::Misconfigured => CanvasError::IngressMisconfigured,
    })
}

pub(super) fn require_ingress_host(
    state: &AppState,
    headers: &HeaderMap,
    public: &str,
) -> Result<(), CanvasError> {
    if request_origin(state, headers) != bridge::origin(public) {
        return Err(CanvasError::WrongIngress);
    }
    Ok(())
}

pub(super) fn origin_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
}

/// The checks before a session is created or deleted: ingress host, a control-plane origin
/// that is not the ingress origin itself.
pub(super) fn require_bootstrap_origin(
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

pub(super) fn cookie_token(headers: &HeaderMap) -> Option<String> {
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
pub(super) fn session_cookie(
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

pub(super) fn require_api_key(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let keys = &state.config.session_api_keys;
    if keys.is_empty() {
        return Ok(());
    }
    let given = headers
        .get(crate::server::SESSION_KEY_HEADER)
        .and_then(|v| v.to_str().ok());
    if given.is_some_and(|k| crate::server::key_matches(keys, k)) {
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
pub(super) async fn create_session(
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
pub(super) async fn delete_session(
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

pub(super) async fn proxy_root(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    proxy(state, name, String::new(), req).await
}

pub(super) async fn proxy_session_path(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    proxy(state, name, "session".into(), req).await
}

pub(super) async fn proxy_path(
    State(state): State<AppState>,
    Path((name, path)): Path<(String, String)>,
    req: Request,
) -> Response {
    proxy(state, name, path, req).await
}

/// Headers never forwarded in either direction.
pub(super) const HOP_BY_HOP: [&str; 14] = [
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

pub(super) fn is_websocket(req: &Request) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// What a request to the ingress is allowed to reach: the backend's port and the session.
pub(super) struct Target {
    port: u16,
    session: bridge::Authorized,
    upstream_path: String,
}

/// The ingress checks, in the reference's order.
pub(super) fn admit(
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

pub(super) async fn proxy(state: AppState, name: String, path: String, req: Request) -> Response {
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

pub(super) async fn proxy_http(
    state: AppState,
    name: String,
    path: String,
    req: Request,
) -> Response {
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
pub(super) async fn forward(
    state: &AppState,
    target: Target,
    req: Request,
) -> Result<Response, CanvasError> {
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
pub(super) async fn bridge_socket(mut socket: WebSocket, target: Target) {
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
