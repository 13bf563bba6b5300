//! `/api/bash/*` routes and the `/sockets/bash-events` WebSocket, thin wrappers over [`crate::exec`].

use axum::Router;
use utoipa_axum::router::OpenApiRouter;

use super::AppState;

/// REST routes of the bash group.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}

/// The bash-events WebSocket.
pub(super) fn socket_router() -> Router<AppState> {
    Router::new()
}
