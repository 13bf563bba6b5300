//! `/api/git/*` routes, thin wrappers over [`crate::git`].

use utoipa_axum::router::OpenApiRouter;

use super::AppState;

/// Routes of the git group.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
