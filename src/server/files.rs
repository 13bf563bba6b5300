//! `/api/file/*` routes, thin wrappers over [`crate::files`].

use utoipa_axum::router::OpenApiRouter;

use super::AppState;

/// Routes of the file group.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
