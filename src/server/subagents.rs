//! `POST /api/sub-agents`: the sub-agent definitions a workspace can delegate to (project,
//! user and built-in, first of each name), over [`crate::subagents`].

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::error::{ApiError, ValidObject};

/// Routes of the Sub Agents group.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(get_sub_agents))
}

/// Lists the definitions (read-only: nothing is registered).
#[utoipa::path(post, path = "/api/sub-agents", tag = "Sub Agents")]
async fn get_sub_agents(
    State(state): State<AppState>,
    ValidObject(body): ValidObject,
) -> Result<Json<Value>, ApiError> {
    let req = crate::schema::validate("SubAgentsRequest", &body, &[json!("body")])
        .map_err(ApiError::Validation)?;
    let req = crate::subagents::CatalogRequest {
        load_user: req["load_user"] != false,
        load_project: req["load_project"] != false,
        load_builtin: req["load_builtin"] != false,
        project_dir: req["project_dir"].as_str().map(Into::into),
    };
    let home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    let persistence = state.config.persistence_dir.clone();
    let agents =
        tokio::task::spawn_blocking(move || crate::subagents::catalog(&req, &home, &persistence))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!({ "agents": agents })))
}
