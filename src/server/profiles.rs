//! `/api/agent-profiles*` (agent launch specs), `/api/meta-profiles*` (model routing) and
//! `/api/llm/provider-connections*` (credentials shared by LLM profiles):
//! thin wrappers over [`crate::settings::SettingsService`]. Their schemas in `/openapi.json`
//! are the reference's (see `openapi.rs`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::settings::profile_name;
use super::AppState;
use crate::error::{ApiError, ValidBytes, ValidJson, ValidObject, ValidationIssue};
use crate::settings::{connections, meta_profiles};

/// Routes of the Agent Profiles and Meta-profiles groups.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_agent_profiles))
        .routes(routes!(
            get_agent_profile,
            save_agent_profile,
            delete_agent_profile
        ))
        .routes(routes!(rename_agent_profile))
        .routes(routes!(activate_agent_profile))
        .routes(routes!(materialize_agent_profile))
        .routes(routes!(list_meta_profiles))
        .routes(routes!(
            get_meta_profile,
            save_meta_profile,
            delete_meta_profile
        ))
        .routes(routes!(activate_meta_profile))
        .routes(routes!(
            list_provider_connections,
            create_provider_connection
        ))
        .routes(routes!(
            update_provider_connection,
            delete_provider_connection
        ))
}

fn mutation(name: &str, message: String) -> Json<Value> {
    Json(json!({"name": name, "message": message}))
}

/// Every agent profile and the active pointer (`default` is seeded and activated when no
/// profile is active).
#[utoipa::path(get, path = "/api/agent-profiles", tag = "Agent Profiles")]
async fn list_agent_profiles(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.settings.list_agent_profiles().await?))
}

/// One stored agent profile (secret-free, so shown whole).
#[utoipa::path(get, path = "/api/agent-profiles/{name}", tag = "Agent Profiles")]
async fn get_agent_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    profile_name(&name, &["path", "name"])?;
    let profile = state.settings.agent_profile(&name).await?;
    Ok(Json(json!({"name": name, "profile": profile})))
}

/// Saves an agent profile under `name`: an overwrite keeps its id and bumps its revision.
#[utoipa::path(post, path = "/api/agent-profiles/{name}", tag = "Agent Profiles")]
async fn save_agent_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ValidJson(body): ValidJson<Value>,
) -> Result<Response, ApiError> {
    if !body.is_object() {
        return Err(ApiError::Validation(vec![ValidationIssue::new(
            "dict_type",
            &["body"],
            "Input should be a valid dictionary",
        )
        .with_input(body)]));
    }
    profile_name(&name, &["path", "name"])?;
    state.settings.save_agent_profile(&name, body).await?;
    tracing::info!(profile = %name, "agent profile saved");
    let message = format!("Agent profile '{name}' saved");
    Ok((StatusCode::CREATED, mutation(&name, message)).into_response())
}

/// Deletes an agent profile (idempotent); another becomes active when it was.
#[utoipa::path(delete, path = "/api/agent-profiles/{name}", tag = "Agent Profiles")]
async fn delete_agent_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    profile_name(&name, &["path", "name"])?;
    state.settings.delete_agent_profile(&name).await?;
    Ok(mutation(&name, format!("Agent profile '{name}' deleted")))
}

#[derive(Debug, Deserialize)]
struct RenameRequest {
    new_name: String,
}

/// Renames an agent profile; its id (and so the active pointer) stays.
#[utoipa::path(
    post,
    path = "/api/agent-profiles/{name}/rename",
    tag = "Agent Profiles"
)]
async fn rename_agent_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ValidJson(body): ValidJson<RenameRequest>,
) -> Result<Json<Value>, ApiError> {
    profile_name(&name, &["path", "name"])?;
    profile_name(&body.new_name, &["body", "new_name"])?;
    let message = state
        .settings
        .rename_agent_profile(&name, &body.new_name)
        .await?;
    Ok(mutation(&body.new_name, message))
}

/// Makes the profile with this id the active one (pointer only).
#[utoipa::path(
    post,
    path = "/api/agent-profiles/{profile_id}/activate",
    tag = "Agent Profiles"
)]
async fn activate_agent_profile(
    State(state): State<AppState>,
    Path(profile_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if profile_id.chars().count() > 128 {
        return Err(ApiError::Validation(vec![ValidationIssue::new(
            "string_too_long",
            &["path", "profile_id"],
            "String should have at most 128 characters",
        )
        .with_input(profile_id)]));
    }
    state.settings.activate_agent_profile(&profile_id).await?;
    Ok(Json(json!({
        "id": profile_id,
        "message": format!("Agent profile '{profile_id}' activated"),
        "agent_settings_applied": false,
    })))
}

/// Diagnostics of launching the stored profile, or the draft in the body.
#[utoipa::path(
    post,
    path = "/api/agent-profiles/{name}/materialize",
    tag = "Agent Profiles"
)]
async fn materialize_agent_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ValidBytes(body): ValidBytes,
) -> Result<Json<Value>, ApiError> {
    profile_name(&name, &["path", "name"])?;
    let draft = materialize_draft(&body)?;
    Ok(Json(
        state
            .settings
            .materialize_agent_profile(&name, draft)
            .await?,
    ))
}

/// The optional `MaterializeAgentProfileRequest` body: `{"profile": {...} | null}`.
fn materialize_draft(body: &[u8]) -> Result<Option<Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid("json_invalid", &["body"], format!("JSON decode error: {e}"))
    })?;
    let obj = match value {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        other => {
            return Err(ApiError::Validation(vec![ValidationIssue::new(
                "model_attributes_type",
                &["body"],
                "Input should be a valid dictionary or object to extract fields from",
            )
            .with_input(other)]))
        }
    };
    let mut issues = Vec::new();
    for (k, v) in &obj {
        if k != "profile" {
            issues.push(
                ValidationIssue::new(
                    "extra_forbidden",
                    &["body", k],
                    "Extra inputs are not permitted",
                )
                .with_input(v.clone()),
            );
        }
    }
    match obj.get("profile") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(other) => issues.push(
            ValidationIssue::new(
                "value_error",
                &["body", "profile"],
                "Value error, profile must be an object",
            )
            .with_input(other.clone()),
        ),
    }
    if !issues.is_empty() {
        return Err(ApiError::Validation(issues));
    }
    Ok(obj.get("profile").filter(|p| p.is_object()).cloned())
}

/// Every meta-profile and the active one.
#[utoipa::path(get, path = "/api/meta-profiles", tag = "Meta-profiles")]
async fn list_meta_profiles(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.settings.list_meta_profiles().await?))
}

/// One meta-profile's configuration.
#[utoipa::path(get, path = "/api/meta-profiles/{name}", tag = "Meta-profiles")]
async fn get_meta_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    profile_name(&name, &["path", "name"])?;
    let config = state.settings.meta_profile(&name).await?;
    Ok(Json(json!({"name": name, "config": config})))
}

/// Saves a meta-profile (it must route: classes or a prompt template).
#[utoipa::path(post, path = "/api/meta-profiles/{name}", tag = "Meta-profiles")]
async fn save_meta_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ValidObject(body): ValidObject,
) -> Result<Response, ApiError> {
    profile_name(&name, &["path", "name"])?;
    let meta =
        meta_profiles::validate(&body, &[json!("body")], true).map_err(ApiError::Validation)?;
    state.settings.save_meta_profile(&name, meta).await?;
    let message = format!("Meta-profile '{name}' saved");
    Ok((StatusCode::CREATED, mutation(&name, message)).into_response())
}

/// Deletes a meta-profile (idempotent); clears the active pointer when it named it.
#[utoipa::path(delete, path = "/api/meta-profiles/{name}", tag = "Meta-profiles")]
async fn delete_meta_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    profile_name(&name, &["path", "name"])?;
    state.settings.delete_meta_profile(&name).await?;
    Ok(mutation(&name, format!("Meta-profile '{name}' deleted")))
}

/// Makes a meta-profile the one the routing tool uses.
#[utoipa::path(
    post,
    path = "/api/meta-profiles/{name}/activate",
    tag = "Meta-profiles"
)]
async fn activate_meta_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    profile_name(&name, &["path", "name"])?;
    let applied = state.settings.activate_meta_profile(&name).await?;
    let message = if applied {
        format!("Meta-profile '{name}' activated")
    } else {
        format!(
            "Meta-profile '{name}' not activated: the current agent settings cannot route between models"
        )
    };
    Ok(Json(
        json!({"name": name, "message": message, "applied": applied}),
    ))
}

/// Every provider connection (never a key).
#[utoipa::path(
    get,
    path = "/api/llm/provider-connections",
    tag = "LLM Provider Connections"
)]
async fn list_provider_connections(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.settings.list_connections().await?))
}

/// Creates a provider connection (its key sealed at rest).
#[utoipa::path(
    post,
    path = "/api/llm/provider-connections",
    tag = "LLM Provider Connections"
)]
async fn create_provider_connection(
    State(state): State<AppState>,
    ValidObject(body): ValidObject,
) -> Result<Response, ApiError> {
    let body = connections::validate_request("ProviderConnectionCreateRequest", &body)
        .map_err(ApiError::Validation)?;
    let created = state.settings.create_connection(body).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Changes the fields given (a key can be rotated, not cleared).
#[utoipa::path(
    patch,
    path = "/api/llm/provider-connections/{connection_id}",
    tag = "LLM Provider Connections"
)]
async fn update_provider_connection(
    State(state): State<AppState>,
    Path(connection_id): Path<String>,
    ValidObject(body): ValidObject,
) -> Result<Json<Value>, ApiError> {
    connections::validate_request("ProviderConnectionUpdateRequest", &body)
        .map_err(ApiError::Validation)?;
    Ok(Json(
        state
            .settings
            .update_connection(&connection_id, body)
            .await?,
    ))
}

/// Deletes a connection no profile and not the active settings reference.
#[utoipa::path(
    delete,
    path = "/api/llm/provider-connections/{connection_id}",
    tag = "LLM Provider Connections"
)]
async fn delete_provider_connection(
    State(state): State<AppState>,
    Path(connection_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        state.settings.delete_connection(&connection_id).await?,
    ))
}
