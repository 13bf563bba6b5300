//! `/api/settings*` (settings, MCP servers, secrets) and `/api/profiles*` (LLM profiles):
//! thin wrappers over [`crate::settings::SettingsService`]. Their request and response schemas
//! in `/openapi.json` are the reference's (see `openapi.rs`).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::error::{ApiError, ValidJson, ValidObject, ValidationIssue};
use crate::settings::document::{AGENT_SCHEMA, CONVERSATION_SCHEMA};
use crate::settings::{profiles, Expose, McpChange, SettingsUpdate};

/// Routes of the Settings and Profiles groups.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_agent_settings_schema))
        .routes(routes!(get_conversation_settings_schema))
        .routes(routes!(get_settings, update_settings))
        .routes(routes!(
            create_mcp_server,
            patch_mcp_server,
            delete_mcp_server
        ))
        .routes(routes!(list_secrets, create_secret))
        .routes(routes!(get_secret_value, delete_secret))
        .routes(routes!(list_profiles))
        .routes(routes!(get_profile, save_profile, delete_profile))
        .routes(routes!(rename_profile))
        .routes(routes!(activate_profile))
        .routes(routes!(validate_profile))
}

/// Reads `X-Expose-Secrets`: absent → redacted; `encrypted` (or the legacy `true`) or
/// `plaintext`; anything else is a 400.
fn expose_mode(headers: &HeaderMap) -> Result<Expose, ApiError> {
    let value = headers
        .get("x-expose-secrets")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match value.as_str() {
        "" => Ok(Expose::Redacted),
        "true" | "encrypted" => Ok(Expose::Encrypted),
        "plaintext" => Ok(Expose::Plaintext),
        other => Err(ApiError::BadRequest(format!(
            "Invalid X-Expose-Secrets header value: '{other}'. Valid values are: 'encrypted', 'plaintext'."
        ))),
    }
}

fn json_text(text: &'static str) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

/// The schema used to render agent settings forms.
#[utoipa::path(get, path = "/api/settings/agent-schema", tag = "Settings")]
async fn get_agent_settings_schema() -> Response {
    json_text(AGENT_SCHEMA)
}

/// The schema used to render conversation settings forms.
#[utoipa::path(get, path = "/api/settings/conversation-schema", tag = "Settings")]
async fn get_conversation_settings_schema() -> Response {
    json_text(CONVERSATION_SCHEMA)
}

/// The persisted settings; secrets as `X-Expose-Secrets` asks (redacted without it).
#[utoipa::path(get, path = "/api/settings", tag = "Settings")]
async fn get_settings(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let mode = expose_mode(&headers)?;
    if mode == Expose::Plaintext {
        tracing::warn!("settings read with plaintext secrets");
    }
    Ok(Json(state.settings.settings_response(mode).await?))
}

/// Partial update: the `*_settings_diff` objects are deep-merged (a nested `null` removes
/// that key); `active_profile` applies that profile's LLM.
#[utoipa::path(patch, path = "/api/settings", tag = "Settings")]
async fn update_settings(
    State(state): State<AppState>,
    ValidObject(body): ValidObject,
) -> Result<Json<Value>, ApiError> {
    let mut issues = Vec::new();
    for key in [
        "agent_settings_diff",
        "conversation_settings_diff",
        "misc_settings_diff",
    ] {
        if body
            .get(key)
            .is_some_and(|v| !v.is_null() && !v.is_object())
        {
            issues.push(
                ValidationIssue::new(
                    "dict_type",
                    &["body", key],
                    "Input should be a valid dictionary",
                )
                .with_input(body[key].clone()),
            );
        }
    }
    for key in [
        "active_profile",
        "active_agent_profile_id",
        "active_meta_profile",
    ] {
        if body
            .get(key)
            .is_some_and(|v| !v.is_null() && !v.is_string())
        {
            issues.push(
                ValidationIssue::new(
                    "string_type",
                    &["body", key],
                    "Input should be a valid string",
                )
                .with_input(body[key].clone()),
            );
        }
    }
    for key in ["active_profile", "active_meta_profile"] {
        if let Some(name) = body[key].as_str() {
            if let Err(ApiError::Validation(mut found)) = profile_name(name, &["body", key]) {
                issues.append(&mut found);
            }
        }
    }
    if let Some(id) = body["active_agent_profile_id"].as_str() {
        if uuid::Uuid::try_parse(id).is_err() || id.len() != 36 {
            issues.push(
                ValidationIssue::new(
                    "string_pattern_mismatch",
                    &["body", "active_agent_profile_id"],
                    format!("String should match pattern '{UUID_PATTERN}'"),
                )
                .with_input(id),
            );
        }
    }
    if !issues.is_empty() {
        return Err(ApiError::Validation(issues));
    }
    Ok(Json(
        state
            .settings
            .update(SettingsUpdate::from_json(&body))
            .await?,
    ))
}

const UUID_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// Adds one named MCP server (409 when the name is taken).
#[utoipa::path(post, path = "/api/settings/mcp/{settings_key}", tag = "Settings")]
async fn create_mcp_server(
    State(state): State<AppState>,
    Path(key): Path<String>,
    ValidObject(body): ValidObject,
) -> Result<Response, ApiError> {
    let server = crate::settings::document::validate_mcp_server(&body)
        .map_err(crate::settings::SettingsError::Fields)?;
    let answer = state
        .settings
        .change_mcp_server(key, McpChange::Create(server))
        .await?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// Sparsely updates one existing MCP server.
#[utoipa::path(patch, path = "/api/settings/mcp/{settings_key}", tag = "Settings")]
async fn patch_mcp_server(
    State(state): State<AppState>,
    Path(key): Path<String>,
    ValidObject(patch): ValidObject,
) -> Result<Json<Value>, ApiError> {
    let answer = state
        .settings
        .change_mcp_server(key, McpChange::Patch(patch))
        .await?;
    Ok(Json(answer))
}

/// Removes one existing MCP server.
#[utoipa::path(delete, path = "/api/settings/mcp/{settings_key}", tag = "Settings")]
async fn delete_mcp_server(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        state
            .settings
            .change_mcp_server(key, McpChange::Delete)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
struct SecretsQuery {
    agent_profile_id: Option<String>,
}

/// Names and descriptions of the stored secrets (never their values).
#[utoipa::path(get, path = "/api/settings/secrets", tag = "Settings")]
async fn list_secrets(
    State(state): State<AppState>,
    crate::error::ValidQuery(query): crate::error::ValidQuery<SecretsQuery>,
) -> Result<Json<Value>, ApiError> {
    // Scoped to an agent profile: only the secrets its `secret_refs` name (all when it has none).
    let allowed: Option<Vec<String>> = match &query.agent_profile_id {
        None => None,
        Some(id) => {
            let profile = state
                .settings
                .agent_profile_by_id(id)
                .await?
                .ok_or_else(|| ApiError::NotFound("Agent profile not found".into()))?;
            profile["secret_refs"].as_array().map(|refs| {
                refs.iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect()
            })
        }
    };
    let mut secrets = state.settings.list_secrets().await?;
    if let Some(allowed) = allowed {
        secrets.retain(|s| allowed.contains(&s.name));
    }
    Ok(Json(json!({ "secrets": secrets })))
}

/// One secret's value as plain text (for `LookupSecret`).
#[utoipa::path(get, path = "/api/settings/secrets/{name}", tag = "Settings")]
async fn get_secret_value(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let value = state.settings.secret_value(&name).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        value,
    )
        .into_response())
}

/// Extra fields are ignored, as the reference's model does.
#[derive(Debug, Deserialize)]
struct SecretCreateRequest {
    name: String,
    value: String,
    #[serde(default)]
    description: Option<String>,
}

/// Creates or replaces a secret.
#[utoipa::path(put, path = "/api/settings/secrets", tag = "Settings")]
async fn create_secret(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<SecretCreateRequest>,
) -> Result<Json<Value>, ApiError> {
    let item = state
        .settings
        .put_secret(body.name, body.value, body.description)
        .await?;
    tracing::info!(secret = %item.name, "secret stored");
    Ok(Json(json!(item)))
}

/// Deletes a secret.
#[utoipa::path(delete, path = "/api/settings/secrets/{name}", tag = "Settings")]
async fn delete_secret(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.settings.delete_secret(name).await?;
    Ok(Json(json!({"deleted": true})))
}

/// Checks a profile name against the reference's path pattern (422 like pydantic).
pub(super) fn profile_name(name: &str, loc: &[&str]) -> Result<(), ApiError> {
    if profiles::valid_name(name) {
        return Ok(());
    }
    Err(ApiError::Validation(vec![ValidationIssue::new(
        "string_pattern_mismatch",
        loc,
        "String should match pattern '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'",
    )
    .with_input(name)]))
}

/// The saved LLM profiles and the active one.
#[utoipa::path(get, path = "/api/profiles", tag = "Profiles")]
async fn list_profiles(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.settings.list_profiles().await?))
}

/// One profile's LLM; secrets as `X-Expose-Secrets` asks (`api_key` null without it).
#[utoipa::path(get, path = "/api/profiles/{name}", tag = "Profiles")]
async fn get_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    profile_name(&name, &["path", "name"])?;
    let mode = expose_mode(&headers)?;
    Ok(Json(state.settings.profile_detail(&name, mode).await?))
}

#[derive(Debug, Deserialize)]
struct SaveProfileRequest {
    llm: Value,
    #[serde(default = "yes")]
    include_secrets: bool,
}

fn yes() -> bool {
    true
}

/// Saves an LLM configuration under a name (replacing one of that name).
#[utoipa::path(post, path = "/api/profiles/{name}", tag = "Profiles")]
async fn save_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ValidJson(body): ValidJson<SaveProfileRequest>,
) -> Result<Response, ApiError> {
    profile_name(&name, &["path", "name"])?;
    state
        .settings
        .save_profile(name.clone(), body.llm, body.include_secrets)
        .await?;
    tracing::info!(profile = %name, include_secrets = body.include_secrets, "profile saved");
    let message = format!("Profile '{name}' saved");
    Ok((
        StatusCode::CREATED,
        Json(json!({"name": name, "message": message})),
    )
        .into_response())
}

/// Deletes a profile (idempotent).
#[utoipa::path(delete, path = "/api/profiles/{name}", tag = "Profiles")]
async fn delete_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    profile_name(&name, &["path", "name"])?;
    state.settings.delete_profile(name.clone()).await?;
    let message = format!("Profile '{name}' deleted");
    Ok(Json(json!({"name": name, "message": message})))
}

#[derive(Debug, Deserialize)]
struct RenameProfileRequest {
    new_name: String,
}

/// Renames a profile (409 when the new name is taken).
#[utoipa::path(post, path = "/api/profiles/{name}/rename", tag = "Profiles")]
async fn rename_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ValidJson(body): ValidJson<RenameProfileRequest>,
) -> Result<Json<Value>, ApiError> {
    profile_name(&name, &["path", "name"])?;
    profile_name(&body.new_name, &["body", "new_name"])?;
    let new = body.new_name;
    state
        .settings
        .rename_profile(name.clone(), new.clone())
        .await?;
    let message = if name == new {
        format!("Profile '{name}' unchanged (same name)")
    } else {
        format!("Profile '{name}' renamed to '{new}'")
    };
    Ok(Json(json!({"name": new, "message": message})))
}

/// Applies a profile's LLM to the settings and marks it active.
#[utoipa::path(post, path = "/api/profiles/{name}/activate", tag = "Profiles")]
async fn activate_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    profile_name(&name, &["path", "name"])?;
    let applied = state.settings.activate_profile(&name).await?;
    let message = if applied {
        format!("Profile '{name}' activated and applied to current settings")
    } else {
        format!("Profile '{name}' activated")
    };
    Ok(Json(
        json!({"name": name, "message": message, "llm_applied": applied}),
    ))
}

#[derive(Debug, Deserialize)]
struct ValidateProfileRequest {
    llm: Value,
}

/// Pre-flight check of a draft LLM: one 1-token completion, no retries, 15 s at most.
/// Rate limits and timeouts do not fail it (they say nothing about the configuration).
#[utoipa::path(post, path = "/api/profiles/{name}/validate", tag = "Profiles")]
async fn validate_profile(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ValidJson(body): ValidJson<ValidateProfileRequest>,
) -> Result<Json<Value>, ApiError> {
    profile_name(&name, &["path", "name"])?;
    let llm = match state.settings.incoming_llm(&body.llm) {
        // A value out of the SDK's bounds fails the check (a verdict, as there), not the request.
        Err(crate::settings::SettingsError::Fields(errors))
            if errors
                .iter()
                .all(|e| e.kind.starts_with("greater_than") || e.kind.starts_with("less_than")) =>
        {
            let message: Vec<String> = errors
                .iter()
                .map(|e| {
                    let loc: Vec<String> = e
                        .loc
                        .iter()
                        .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_string))
                        .collect();
                    format!("{}: {}", loc.join("."), e.msg)
                })
                .collect();
            let error = json!({"type": "LLMBadRequestError", "message": message.join("; ")});
            return Ok(Json(json!({"valid": false, "error": error})));
        }
        other => other?,
    };
    let llm = state.settings.resolve_connection(llm).await?;
    let verdict = crate::llm::preflight(&llm).await;
    Ok(Json(match verdict {
        Ok(()) => json!({"valid": true, "error": null}),
        Err((kind, message)) => {
            tracing::info!(profile = %name, error = %kind, "profile pre-flight failed");
            json!({"valid": false, "error": {"type": kind, "message": message}})
        }
    }))
}
