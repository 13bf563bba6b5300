//! The conversation-scoped copies of the file, git and bash routes: workspace checks, then the
//! request is forwarded to the group's router (built once).

use super::*;

/// The workspace route groups a conversation-scoped request can be forwarded to.
#[derive(Clone, Copy, PartialEq)]
enum Group {
    File,
    Git,
    Bash,
}

impl Group {
    fn name(self) -> &'static str {
        match self {
            Group::File => "file",
            Group::Git => "git",
            Group::Bash => "bash",
        }
    }
}

/// The workspace-checked copies of the file, git and bash routes under
/// `/api/conversations/{id}/file|git|bash/...`: the conversation must exist, every `path` /
/// `workspace_dir` must be absolute and inside its working directory; the request is then
/// served by the global route of its group (built once here, with `state`), bash by the
/// conversation's own bash service.
pub(in crate::server) fn scoped_router(state: &AppState) -> axum::Router<AppState> {
    let limit = axum::extract::DefaultBodyLimit::max(state.config.max_request_body_bytes);
    let built = |routes: OpenApiRouter<AppState>| {
        routes
            .split_for_parts()
            .0
            .layer(limit)
            .with_state(state.clone())
    };
    let group_route = |group: Group, inner: axum::Router| {
        axum::routing::any(
            move |State(state): State<AppState>,
                  axum::extract::Path(params): axum::extract::Path<(String, String)>,
                  req: axum::extract::Request| {
                scoped(state, params, req, group, inner.clone())
            },
        )
    };
    axum::Router::new()
        .route(
            "/api/conversations/{conversation_id}/file/{*rest}",
            group_route(Group::File, built(crate::server::files::router())),
        )
        .route(
            "/api/conversations/{conversation_id}/git/{*rest}",
            group_route(Group::Git, built(crate::server::git::router())),
        )
        .route(
            "/api/conversations/{conversation_id}/bash/{*rest}",
            group_route(Group::Bash, built(crate::server::bash::router())),
        )
}

fn unprocessable(msg: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"detail": msg})),
    )
        .into_response()
}

/// Lexically normalizes an absolute path (`.`/`..` resolved).
fn normalize(p: &std::path::Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

async fn inside(root: &str, candidate: &str) -> bool {
    let cand = std::path::Path::new(candidate);
    if !cand.is_absolute() {
        return false;
    }
    let root_c = tokio::fs::canonicalize(root)
        .await
        .unwrap_or_else(|_| normalize(std::path::Path::new(root)));
    let mut probe = normalize(cand);
    // Resolve symlinks of the longest existing prefix.
    let mut tail = Vec::new();
    let resolved = loop {
        match tokio::fs::canonicalize(&probe).await {
            Ok(p) => break p,
            Err(_) => match (probe.file_name().map(|n| n.to_os_string()), probe.parent()) {
                (Some(name), Some(parent)) => {
                    tail.push(name);
                    probe = parent.to_path_buf();
                }
                _ => break probe,
            },
        }
    };
    let mut full = resolved;
    for t in tail.into_iter().rev() {
        full.push(t);
    }
    full.starts_with(&root_c)
}

async fn scoped(
    state: AppState,
    (raw_id, rest): (String, String),
    req: axum::extract::Request,
    group: Group,
    inner: axum::Router,
) -> Response {
    let Ok(id) = Uuid::parse_str(&raw_id) else {
        return ApiError::invalid(
            "uuid_parsing",
            &["path", "runtime_conversation_id"],
            "Input should be a valid UUID",
        )
        .into_response();
    };
    let Some(conv) = state.conversations.get(&id) else {
        return ApiError::NotFound(format!("Conversation not found: {id}")).into_response();
    };
    let root = conv.working_dir();
    let query = req.uri().query().unwrap_or("").to_string();
    for (k, v) in crate::urlcode::query_pairs(&query) {
        if (k == "path" || k == "workspace_dir") && !inside(&root, &v).await {
            return unprocessable("path must be inside the conversation workspace");
        }
    }
    if let Some(tid) = rest.strip_prefix("download-trajectory/") {
        if Uuid::parse_str(tid).ok() != Some(id) {
            return unprocessable("conversation_id must match the runtime conversation");
        }
    }
    // Bash commands: `cwd` must be inside the workspace and defaults to it.
    let req = if group == Group::Bash
        && req.method() == axum::http::Method::POST
        && rest.ends_with("_bash_command")
    {
        let (mut parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
            return ApiError::BadRequest("request body too large".into()).into_response();
        };
        let body = match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut v) => {
                match v.get("cwd").and_then(Value::as_str) {
                    Some(cwd) => {
                        if !inside(&root, cwd).await {
                            return unprocessable("cwd must be inside the conversation workspace");
                        }
                    }
                    None => {
                        if let Some(o) = v.as_object_mut() {
                            o.insert("cwd".into(), json!(root));
                        }
                    }
                }
                serde_json::to_vec(&v).unwrap_or_default()
            }
            Err(_) => bytes.to_vec(),
        };
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        axum::extract::Request::from_parts(parts, axum::body::Body::from(body))
    } else {
        req
    };
    let group_name = group.name();
    let target = if query.is_empty() {
        format!("/api/{group_name}/{rest}")
    } else {
        format!("/api/{group_name}/{rest}?{query}")
    };
    let (mut parts, body) = req.into_parts();
    match target.parse() {
        Ok(uri) => parts.uri = uri,
        Err(_) => return ApiError::BadRequest("malformed path".into()).into_response(),
    }
    // The outer route's path parameters must not reach the inner handlers (they would see
    // three parameters where they expect one): the request goes in with fresh extensions.
    parts.extensions = axum::http::Extensions::new();
    if group == Group::Bash {
        match conv.bash_service().await {
            Ok(b) => {
                parts.extensions.insert(crate::server::bash::ScopedBash(b));
            }
            Err(e) => return ApiError::Internal(e.to_string()).into_response(),
        }
    }
    match tower::ServiceExt::oneshot(inner, axum::extract::Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}
