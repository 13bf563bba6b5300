//! The axum application: shared state, the router of every domain, middleware layers, and the
//! `serve` entry point. This is the only module that knows about HTTP; handlers extract, call one
//! service method and convert the result.

mod acp;
mod auth;
mod bash;
mod canvas;
mod conversations;
mod details;
mod events;
mod files;
mod git;
pub mod init;
mod keepalive;
mod listener;
mod llm;
mod mcp;
mod openai;
mod openapi;
mod plugins;
mod profiles;
mod settings;
mod skills;
mod subagents;
mod workspaces;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Method};
use axum::response::IntoResponse;
use axum::Router;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::conversation::ConversationService;
use crate::error::ApiError;
use crate::exec::BashService;

pub use auth::{
    await_auth_frame, check_handshake, is_auth_frame, key_matches, SocketAuth, SESSION_KEY_HEADER,
    WS_AUTH_DEADLINE, WS_AUTH_FAILED,
};

/// State shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// The global bash command runner (`/api/bash/*`).
    pub bash: Arc<BashService>,
    /// Uptime and idle-time bookkeeping for `/server_info`.
    pub activity: Arc<Activity>,
    /// Server-side conversations (`/api/conversations/*`, `/sockets/events/*`).
    pub conversations: Arc<ConversationService>,
    /// Settings, secrets and LLM profiles (`/api/settings*`, `/api/profiles*`).
    pub settings: Arc<crate::settings::SettingsService>,
    /// Saved workspaces of a GUI (`/api/workspaces*`).
    pub workspaces: Arc<crate::settings::workspaces::WorkspacesStore>,
    /// Canvas extensions and their app backends (`/api/canvas-extensions/*`, `/app-backends/*`).
    pub canvas: Arc<crate::canvas::Canvas>,
    /// ACP model discoveries, running and answered (`/api/acp/models`).
    pub acp_discoveries: Arc<crate::acp::discovery::Discoveries>,
    /// Deferred init (`OH_DEFERRED_INIT`): the shared init state; `None` otherwise.
    pub init: Option<Arc<init::InitHandle>>,
    /// Set once start-up work is done; `/ready` answers 503 before.
    ready: Arc<AtomicBool>,
}

impl AppState {
    /// Builds the state and its services from the configuration.
    pub fn new(config: Config) -> Result<Self, std::io::Error> {
        Self::build(config, true)
    }

    /// `new`, with or without the orphan sweep and child marker (a dormant state starts no
    /// children: the state built at init marks them, from the delivered paths).
    fn build(config: Config, mark_children: bool) -> Result<Self, std::io::Error> {
        // Children of an earlier server on this state that was killed are killed now, and ours
        // are marked so that the next server can do the same.
        if mark_children {
            let marker = crate::exec::orphans::marker_value(&[
                &config.conversations_path,
                &config.bash_events_dir,
            ]);
            let leftovers = crate::exec::orphans::sweep(&marker);
            if leftovers > 0 {
                tracing::warn!(
                    processes = leftovers,
                    "killed processes left running by an earlier server on this state"
                );
            }
            crate::util::set_child_marker(crate::exec::orphans::MARKER, &marker);
        }
        let canvas = Arc::new(crate::canvas::Canvas::new(&config.persistence_dir));
        if mark_children {
            canvas.reap_orphans();
        }
        crate::exec::set_max_events(config.bash_events_max);
        crate::tools::set_runtime_idle_timeout(config.runtime_idle_timeout_secs);
        crate::plugins::set_persistence_dir(&config.persistence_dir);
        let bash = Arc::new(BashService::new(config.bash_events_dir.clone())?);
        let conversations = Arc::new(ConversationService::open(
            config.conversations_path.clone(),
            config.secret_key.as_deref(),
            config.max_concurrent_runs,
        )?);
        let settings = Arc::new(crate::settings::SettingsService::new(
            config.persistence_dir.clone(),
            config.secret_key.as_deref(),
        ));
        conversations.set_self_ref(Arc::downgrade(&conversations));
        conversations.set_persistence_dir(config.persistence_dir.clone());
        conversations.set_local_secrets(crate::settings::lookup::LocalSecrets {
            service: settings.clone(),
            port: config.port,
        });
        let workspaces = Arc::new(crate::settings::workspaces::WorkspacesStore::new(
            config.workspaces_dir.clone(),
        ));
        let acp_discoveries =
            crate::acp::discovery::Discoveries::new(config.conversations_path.clone());
        Ok(AppState {
            canvas,
            acp_discoveries,
            init: None,
            workspaces,
            settings,
            config: Arc::new(config),
            bash,
            activity: Arc::new(Activity::new()),
            conversations,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The state of a dormant server (deferred init): `config` with its conversation and bash
    /// event stores in a private scratch directory (nothing is served from them, and the
    /// configured paths may not exist or be writable until init delivers them).
    pub fn dormant(config: &Config) -> Result<Self, std::io::Error> {
        let scratch =
            std::env::temp_dir().join(format!("agent-server-dormant-{}", crate::util::hex_id()));
        let mut config = config.clone();
        config.conversations_path = scratch.join("conversations");
        config.bash_events_dir = scratch.join("bash_events");
        Self::build(config, false)
    }

    /// Marks the server ready (`/ready` answers 200).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Names of the agent tools this server really provides.
    pub fn usable_tools(&self) -> Vec<&'static str> {
        crate::tools::ToolSet::registered_names()
    }
}

/// Uptime and time since the last bash, file or git call.
#[derive(Debug)]
pub struct Activity {
    started: Instant,
    /// Milliseconds after `started` of the last workspace call.
    last_execution_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            started: Instant::now(),
            last_execution_ms: AtomicU64::new(0),
        }
    }

    /// Records a workspace call (bash, file or git) now.
    pub fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_execution_ms.store(ms, Ordering::Relaxed);
    }

    /// Whole seconds since start, as a float like the reference.
    pub fn uptime_secs(&self) -> f64 {
        self.started.elapsed().as_secs() as f64
    }

    /// Whole seconds since the last workspace call (or since start).
    pub fn idle_secs(&self) -> f64 {
        let now = self.started.elapsed().as_millis() as u64;
        ((now.saturating_sub(self.last_execution_ms.load(Ordering::Relaxed))) / 1000) as f64
    }
}

/// The routes of every domain with their OpenAPI descriptions.
fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .merge(bash::router())
        .merge(files::router())
        .merge(git::router())
        .merge(conversations::router())
        .merge(events::router())
        .merge(settings::router())
        .merge(profiles::router())
        .merge(subagents::router())
        .merge(acp::router())
        .merge(llm::router())
        .merge(workspaces::router())
        .merge(skills::router())
        .merge(plugins::router())
        .merge(init::router())
        .merge(openai::router())
        .merge(mcp::router())
        .merge(canvas::router())
}

/// WebSocket upgrade with small per-connection buffers: hundreds of subscribers idle in
/// kilobytes each (larger messages still go through; the buffers grow for them).
fn small_socket(ws: axum::extract::ws::WebSocketUpgrade) -> axum::extract::ws::WebSocketUpgrade {
    ws.read_buffer_size(8 * 1024).write_buffer_size(8 * 1024)
}

/// Most messages a socket writes with one flush.
const SEND_BATCH: usize = 64;

/// Sends `first` and the messages `ready` hands out without waiting (at most [`SEND_BATCH`] in
/// all) with one flush: under load, fewer writes for us and fewer wake-ups for the client.
async fn send_ready(
    socket: &mut axum::extract::ws::WebSocket,
    first: axum::extract::ws::Message,
    mut ready: impl FnMut() -> Option<axum::extract::ws::Message>,
) -> Result<(), axum::Error> {
    use futures::SinkExt;
    socket.feed(first).await?;
    for _ in 1..SEND_BATCH {
        let Some(message) = ready() else { break };
        socket.feed(message).await?;
    }
    socket.flush().await
}

/// The OpenAPI document generated from the routes.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// Builds the full application for `state`.
pub fn app(state: AppState) -> Router {
    let (api, doc) = api_router().split_for_parts();
    let cors = cors_layer(&state.config);
    Router::new()
        .merge(details::router())
        .merge(api)
        .merge(bash::socket_router())
        .merge(events::socket_router())
        .merge(conversations::scoped_router(&state))
        .merge(openapi::router(doc))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            (
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(serde_json::json!({"detail": "Method Not Allowed"})),
            )
                .into_response()
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_session_key,
        ))
        // Before authentication, as the reference: a dormant server answers 503 first.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            init::dormant_gate,
        ))
        // Every body extractor honours this (file uploads lift it on their own routes: they
        // stream to disk).
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_request_body_bytes,
        ))
        .layer(cors)
        .layer(axum::middleware::from_fn(keepalive::close_if_body_unread))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            // Never the query string: it may hold a session key.
            let route = req
                .extensions()
                .get::<MatchedPath>()
                .map(|p| p.as_str().to_owned());
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), route)
        }))
        .with_state(state)
}

/// CORS as the reference: localhost and 127.0.0.1 always, plus configured origins and regex.
fn cors_layer(config: &Config) -> CorsLayer {
    let extra: Vec<String> = config.allow_cors_origins.clone();
    let regex = config
        .allow_cors_origin_regex
        .as_deref()
        .and_then(|r| crate::config::cors_regex(r).ok());
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
            let Ok(origin) = origin.to_str() else {
                return false;
            };
            is_local_origin(origin)
                || extra.iter().any(|o| o == origin)
                || regex.as_ref().is_some_and(|r| r.is_match(origin))
        }))
        .allow_credentials(true)
        .allow_methods(tower_http::cors::AllowMethods::mirror_request())
        .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
        .expose_headers([axum::http::header::CONTENT_DISPOSITION])
        .max_age(std::time::Duration::from_secs(600))
        .vary([axum::http::header::ORIGIN])
        .allow_private_network(false)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
}

fn is_local_origin(origin: &str) -> bool {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let host = rest.map(|r| r.split(':').next().unwrap_or_default());
    matches!(host, Some("localhost") | Some("127.0.0.1"))
}

/// Serves a dormant server (`OH_DEFERRED_INIT`) on `listener`: requests go to the application of
/// `state` until `POST /api/init` succeeds, then to the one built from the delivered
/// configuration. At shutdown the running commands of both are stopped.
pub async fn serve_deferred(
    listener: TcpListener,
    mut state: AppState,
    base: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = init::InitHandle::new(base);
    state.init = Some(handle.clone());
    state.set_ready();
    let dormant = app(state.clone());
    let switch_handle = handle.clone();
    let switch = Router::new().fallback_service(tower::service_fn(move |req: Request| {
        let router = switch_handle
            .ready_app()
            .map(|(_, app)| app)
            .unwrap_or_else(|| dormant.clone());
        async move { tower::ServiceExt::oneshot(router, req).await }
    }));
    let limits = listener::ConnectionLimits {
        header_read_timeout: state.config.header_read_timeout,
        max_connections: state.config.max_connections,
    };
    state
        .conversations
        .start_idle_release(state.config.conversation_idle_ttl);
    let shutdown = async move {
        shutdown.await;
        if let Some((ready, _)) = handle.ready_app() {
            ready.conversations.shutdown().await;
            ready.bash.shutdown().await;
            ready.canvas.shutdown().await;
        }
        state.conversations.shutdown().await;
        state.bash.shutdown().await;
        state.canvas.shutdown().await;
    };
    listener::serve(listener, switch, limits, shutdown).await;
    Ok(())
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops running commands.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    state.set_ready();
    let bash = state.bash.clone();
    let conversations = state.conversations.clone();
    let canvas = state.canvas.clone();
    conversations.start_idle_release(state.config.conversation_idle_ttl);
    // Commands, runs and app backends are stopped before connections drain, so waiting
    // requests finish promptly.
    let shutdown = async move {
        shutdown.await;
        conversations.shutdown().await;
        bash.shutdown().await;
        canvas.shutdown().await;
    };
    let limits = listener::ConnectionLimits {
        header_read_timeout: state.config.header_read_timeout,
        max_connections: state.config.max_connections,
    };
    // Connections share the router (its clone is one `Arc`). Nagle is off for every connection:
    // with delayed ACKs it would add ~40 ms to each streamed answer on a kept-alive connection.
    listener::serve(listener, app(state), limits, shutdown).await;
    Ok(())
}
