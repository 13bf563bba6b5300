//! `POST /api/acp/models`: which models an ACP server offers, asked by starting it once
//! ([`crate::acp::discovery`]: shared by identical asks, kept five minutes). A server that
//! cannot start is reported in the answer's `error`, as the reference does; only invalid
//! settings are HTTP errors.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::error::{ApiError, ValidObject, ValidationIssue};

/// Routes of the ACP group.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(discover_acp_models))
}

/// The secrets of a request as environment variables for the server: static values, and
/// `LookupSecret`s resolved (this server's own secret URLs from its store).
async fn secret_env(state: &AppState, secrets: &Value) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (name, source) in secrets.as_object().into_iter().flatten() {
        let value = match source["kind"].as_str() {
            Some("LookupSecret") => {
                let local = crate::settings::lookup::LocalSecrets {
                    service: state.settings.clone(),
                    port: state.config.port,
                };
                crate::settings::lookup::resolve(source, Some(&local)).await
            }
            _ => source["value"].as_str().map(str::to_string),
        };
        if let Some(v) = value {
            env.push((name.clone(), v));
        }
    }
    env
}

/// Lists the models of the ACP server of `agent_settings` (started once, or a kept answer).
#[utoipa::path(post, path = "/api/acp/models", tag = "ACP")]
async fn discover_acp_models(
    State(state): State<AppState>,
    ValidObject(body): ValidObject,
) -> Result<Json<Value>, ApiError> {
    if body["agent_settings"].get("llm").is_some() {
        return Err(ApiError::Validation(vec![ValidationIssue::new(
            "value_error",
            &["body", "agent_settings"],
            "Value error, ACPAgentSettings.llm was removed; use acp_model instead.",
        )
        .with_input(body["agent_settings"].clone())]));
    }
    let req = crate::schema::validate("ACPModelDiscoveryRequest", &body, &[json!("body")])
        .map_err(ApiError::Validation)?;
    let settings = &req["agent_settings"];
    crate::acp::providers::resolve_command(settings).map_err(ApiError::Unprocessable)?;
    let ask = crate::acp::discovery::Ask {
        settings: settings.clone(),
        env: secret_env(&state, &req["secrets"]).await,
        refresh: req["refresh"].as_bool().unwrap_or(false),
    };
    Ok(Json(state.acp_discoveries.discover(ask).await))
}
