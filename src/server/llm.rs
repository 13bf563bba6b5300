//! `/api/llm/*` (model and provider catalogues, the ChatGPT-subscription sign-in) and
//! `/api/tools/*` (the agent tools this server runs).

use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::error::{ApiError, ValidJson};
use crate::llm::catalog;

/// Routes of the LLM and Tools groups.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_providers))
        .routes(routes!(list_models))
        .routes(routes!(list_verified_models))
        .routes(routes!(list_openai_subscription_models))
        .routes(routes!(get_openai_subscription_status))
        .routes(routes!(start_openai_subscription_device_login))
        .routes(routes!(poll_openai_subscription_device_login))
        .routes(routes!(logout_openai_subscription))
        .routes(routes!(list_available_tools))
        .routes(routes!(get_tool_catalog))
}

/// LLM providers known to the catalogue.
#[utoipa::path(get, path = "/api/llm/providers", tag = "LLM")]
async fn list_providers() -> Json<Value> {
    Json(catalog::providers().clone())
}

#[derive(Debug, Deserialize)]
struct ModelsQuery {
    provider: Option<String>,
}

/// Known models, optionally those of one provider.
#[utoipa::path(get, path = "/api/llm/models", tag = "LLM")]
async fn list_models(
    crate::error::ValidQuery(query): crate::error::ValidQuery<ModelsQuery>,
) -> Json<Value> {
    Json(json!({ "models": catalog::models(query.provider.as_deref()) }))
}

/// Models verified to work well with OpenHands, by provider.
#[utoipa::path(get, path = "/api/llm/models/verified", tag = "LLM")]
async fn list_verified_models() -> Json<Value> {
    Json(catalog::verified().clone())
}

/// Models offered through a ChatGPT subscription.
#[utoipa::path(get, path = "/api/llm/subscription/openai/models", tag = "LLM")]
async fn list_openai_subscription_models() -> Json<Value> {
    Json(json!({"vendor": "openai", "models": catalog::OPENAI_SUBSCRIPTION_MODELS}))
}

fn not_connected() -> Json<Value> {
    Json(json!({"vendor": "openai", "connected": false, "account_email": null, "expires_at": null}))
}

/// Subscription sign-in state: this server keeps no ChatGPT credentials, so never connected.
#[utoipa::path(get, path = "/api/llm/subscription/openai/status", tag = "LLM")]
async fn get_openai_subscription_status() -> Json<Value> {
    not_connected()
}

/// ChatGPT device-code sign-in is not offered by this server: a 400 that says so, like the
/// other features it refuses.
#[utoipa::path(post, path = "/api/llm/subscription/openai/device/start", tag = "LLM")]
async fn start_openai_subscription_device_login() -> Result<Json<Value>, ApiError> {
    Err(ApiError::BadRequest(
        "ChatGPT subscription sign-in is not supported by this server; use an API key \
         (a saved LLM profile or the settings' llm.api_key)"
            .into(),
    ))
}

#[derive(Debug, Deserialize)]
struct DevicePollRequest {
    #[allow(dead_code)]
    device_code: String,
}

/// Polls a device-code sign-in; none can have been started here, so none is found.
#[utoipa::path(post, path = "/api/llm/subscription/openai/device/poll", tag = "LLM")]
async fn poll_openai_subscription_device_login(
    ValidJson(_body): ValidJson<DevicePollRequest>,
) -> Result<Json<Value>, ApiError> {
    Err(ApiError::NotFound(
        "Subscription device login not found or expired".into(),
    ))
}

/// Forgets subscription credentials (there are none).
#[utoipa::path(post, path = "/api/llm/subscription/openai/logout", tag = "LLM")]
async fn logout_openai_subscription() -> Json<Value> {
    not_connected()
}

/// Names of the tools an agent of this server can use.
#[utoipa::path(get, path = "/api/tools/", tag = "Tools")]
async fn list_available_tools() -> Json<Value> {
    Json(json!(crate::tools::ToolSet::registered_names()))
}

/// The tool catalogue: every tool the reference offers, `usable` for those this server runs.
#[utoipa::path(get, path = "/api/tools/catalog", tag = "Tools")]
async fn get_tool_catalog() -> Json<Value> {
    Json(json!({ "tools": crate::tools::ToolSet::catalog() }))
}
