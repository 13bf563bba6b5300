//! `/api/conversations/*` routes: create (idempotent), get, patch, delete, search, count, batch
//! get, run/pause/interrupt, policy/analyzer/secrets updates, ask_agent, condense, fork,
//! navigate, agent_final_response, and clear refusals for the reference's routes this server
//! does not implement.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::conversation::{
    agent, events, service, Conversation, ConversationError, ExecutionStatus,
};
use crate::error::{
    ApiError, ValidBytes, ValidJson, ValidObject, ValidPath, ValidQuery, ValidationIssue,
};

mod agent_ops;
mod control;
mod scoped;

pub(super) use scoped::scoped_router;

/// Maps a domain error to the HTTP error of the conversation routes.
pub(super) fn api_error(e: ConversationError) -> ApiError {
    match e {
        ConversationError::NotFound => ApiError::not_found(),
        ConversationError::Conflict(m) => ApiError::Conflict(m),
        ConversationError::TooManyRuns(m) => ApiError::TooManyRequests(m),
        ConversationError::Invalid(m) => {
            ApiError::Validation(vec![ValidationIssue::new("value_error", &["body"], m)])
        }
        ConversationError::Missing(m) => ApiError::NotFound(m),
        ConversationError::Refused(m) => ApiError::Unprocessable(m),
        ConversationError::Plugin(m) => ApiError::Unhandled(m),
        ConversationError::Llm(m) => ApiError::Internal(m),
        ConversationError::Io(e) => ApiError::Internal(e.to_string()),
    }
}

fn io_error(e: std::io::Error) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// The conversation `id` or 404 `{"detail":"Not Found"}`.
pub(super) fn find(state: &AppState, id: &Uuid) -> Result<Arc<Conversation>, ApiError> {
    state.conversations.get(id).ok_or_else(ApiError::not_found)
}

fn success() -> Json<Value> {
    Json(json!({"success": true}))
}

/// `include_skills` query flag.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub(super) struct SkillsQuery {
    #[serde(default)]
    include_skills: bool,
}

/// Create a conversation, or return the existing one with the same `conversation_id`.
#[utoipa::path(post, path = "/api/conversations", tag = "Conversations",
    params(SkillsQuery), request_body = Object,
    responses((status = 201, description = "ConversationInfo of the new conversation"),
               (status = 200, description = "ConversationInfo of the existing conversation")))]
async fn create(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<SkillsQuery>,
    ValidJson(mut body): ValidJson<Value>,
) -> Result<Response, ApiError> {
    let plugins = crate::conversation::plugins::checked_sources(body.get("plugins"))
        .map_err(ApiError::Validation)?;
    if let (Some((stored, _)), Some(obj)) = (&plugins, body.as_object_mut()) {
        obj.insert("plugins".into(), stored.clone());
    }
    let body = state.settings.resolve_agent_source(body).await?;
    let (conv, created) = state.conversations.create(&body).await.map_err(api_error)?;
    if let (true, Some((_, raw))) = (created, plugins) {
        crate::conversation::plugins::remember_sources(conv.id, raw);
    }
    let code = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut info = conv.info(q.include_skills, false);
    add_children(&state, &mut info);
    Ok((code, Json(info)).into_response())
}

/// Fills `sub_conversation_ids` of a `ConversationInfo` from the registry.
fn add_children(state: &AppState, info: &mut Value) {
    let Some(id) = info["id"].as_str().and_then(|s| Uuid::parse_str(s).ok()) else {
        return;
    };
    let kids: Vec<String> = state
        .conversations
        .children_of(&id)
        .iter()
        .map(Uuid::to_string)
        .collect();
    info["sub_conversation_ids"] = json!(kids);
}

/// Get a conversation.
#[utoipa::path(get, path = "/api/conversations/{conversation_id}", tag = "Conversations",
    params(("conversation_id" = Uuid, Path), SkillsQuery),
    responses((status = 200, description = "ConversationInfo"), (status = 404, description = "Unknown")))]
async fn get_conversation(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidQuery(q): ValidQuery<SkillsQuery>,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    let mut info = conv
        .info_view(q.include_skills, true)
        .await
        .map_err(io_error)?;
    add_children(&state, &mut info);
    Ok(Json(info))
}

/// Batch get: `?ids=..&ids=..` → `[ConversationInfo|null]` in request order.
#[utoipa::path(get, path = "/api/conversations", tag = "Conversations",
    params(("ids" = Vec<Uuid>, Query), SkillsQuery),
    responses((status = 200, description = "List of ConversationInfo or null")))]
async fn batch_get(
    State(state): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut ids = Vec::new();
    let mut include_skills = false;
    for (k, v) in crate::urlcode::query_pairs(raw.as_deref().unwrap_or("")) {
        match k.as_str() {
            "ids" => ids.push(v),
            "include_skills" => include_skills = matches!(v.as_str(), "true" | "1" | "yes" | "on"),
            _ => {}
        }
    }
    if ids.is_empty() {
        return Err(ApiError::Validation(vec![ValidationIssue::new(
            "missing",
            &["query", "ids"],
            "Field required",
        )]));
    }
    if ids.len() > 99 {
        return Err(ApiError::Validation(vec![ValidationIssue::new(
            "too_long",
            &["query", "ids"],
            "List should have at most 99 items",
        )]));
    }
    let mut found = Vec::new();
    for raw_id in ids {
        let id = Uuid::parse_str(&raw_id).map_err(|_| {
            ApiError::Validation(vec![ValidationIssue::new(
                "uuid_parsing",
                &["query", "ids"],
                "Input should be a valid UUID",
            )
            .with_input(raw_id.clone())])
        })?;
        found.push(state.conversations.get(&id));
    }
    let convs: Vec<Arc<Conversation>> = found.iter().flatten().cloned().collect();
    let mut infos = service::infos(&convs, include_skills, true)
        .await
        .map_err(io_error)?
        .into_iter();
    let out = found
        .iter()
        .map(|c| c.as_ref().and(infos.next()).unwrap_or(Value::Null))
        .map(|mut info| {
            add_children(&state, &mut info);
            info
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

/// Query of `/conversations/search` and `/count`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub(super) struct SearchQuery {
    page_id: Option<String>,
    limit: Option<i64>,
    status: Option<String>,
    sort_order: Option<String>,
    #[serde(default)]
    include_skills: bool,
}

/// Checks `limit` (1..=100, default 100).
pub(super) fn check_limit(limit: Option<i64>) -> Result<usize, ApiError> {
    match limit {
        None => Ok(100),
        Some(n) if n <= 0 => Err(ApiError::Validation(vec![ValidationIssue::new(
            "greater_than",
            &["query", "limit"],
            "Input should be greater than 0",
        )
        .with_input(n.to_string())])),
        Some(n) if n > 100 => Err(ApiError::Validation(vec![ValidationIssue::new(
            "less_than_equal",
            &["query", "limit"],
            "Input should be less than or equal to 100",
        )
        .with_input(n.to_string())])),
        Some(n) => Ok(n as usize),
    }
}

fn check_status(s: &Option<String>) -> Result<(), ApiError> {
    if let Some(v) = s {
        if ExecutionStatus::parse(v).is_none() {
            return Err(ApiError::Validation(vec![ValidationIssue::new(
                "enum",
                &["query", "status"],
                format!(
                    "Input should be {}",
                    ExecutionStatus::ALL.map(|s| format!("'{s}'")).join(", ")
                ),
            )
            .with_input(v.clone())]));
        }
    }
    Ok(())
}

fn filtered(state: &AppState, status_filter: &Option<String>) -> Vec<Arc<Conversation>> {
    state
        .conversations
        .all()
        .into_iter()
        .filter(|c| {
            status_filter
                .as_ref()
                .is_none_or(|s| c.status().as_str() == s)
        })
        .collect()
}

/// Search conversations.
#[utoipa::path(get, path = "/api/conversations/search", tag = "Conversations", params(SearchQuery),
    responses((status = 200, description = "A page of ConversationInfo")))]
async fn search(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = check_limit(q.limit)?;
    check_status(&q.status)?;
    let order = q.sort_order.as_deref().unwrap_or("CREATED_AT_DESC");
    let key = match order {
        "CREATED_AT" | "CREATED_AT_DESC" => "created_at",
        "UPDATED_AT" | "UPDATED_AT_DESC" => "updated_at",
        other => {
            return Err(ApiError::Validation(vec![ValidationIssue::new(
            "enum",
            &["query", "sort_order"],
            "Input should be 'CREATED_AT', 'UPDATED_AT', 'CREATED_AT_DESC' or 'UPDATED_AT_DESC'",
        )
        .with_input(other.to_string())]))
        }
    };
    let mut items: Vec<(String, Arc<Conversation>)> = filtered(&state, &q.status)
        .into_iter()
        .map(|c| (c.sort_key(key), c))
        .collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    if order.ends_with("_DESC") {
        items.reverse();
    }
    let start = q
        .page_id
        .as_deref()
        .and_then(|p| {
            items
                .iter()
                .position(|(_, c)| c.id.simple().to_string() == p)
        })
        .unwrap_or(0);
    let page: Vec<Arc<Conversation>> = items
        .iter()
        .skip(start)
        .take(limit)
        .map(|(_, c)| c.clone())
        .collect();
    let mut page = service::infos(&page, q.include_skills, true)
        .await
        .map_err(io_error)?;
    for info in &mut page {
        add_children(&state, info);
    }
    let next = items
        .get(start + limit)
        .map(|(_, c)| json!(c.id.simple().to_string()))
        .unwrap_or(Value::Null);
    Ok(Json(json!({"items": page, "next_page_id": next})))
}

/// Count conversations.
#[utoipa::path(get, path = "/api/conversations/count", tag = "Conversations", params(SearchQuery),
    responses((status = 200, description = "Number of conversations")))]
async fn count(
    State(state): State<AppState>,
    ValidQuery(q): ValidQuery<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    check_status(&q.status)?;
    Ok(Json(json!(filtered(&state, &q.status).len())))
}

/// Body of `PATCH /api/conversations/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct UpdateConversationRequest {
    title: Option<String>,
    tags: Option<Map<String, Value>>,
}

/// Update the title and/or tags.
#[utoipa::path(patch, path = "/api/conversations/{conversation_id}", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), request_body = UpdateConversationRequest,
    responses((status = 200, description = "Success")))]
async fn patch(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidJson(body): ValidJson<UpdateConversationRequest>,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    let title = match body.title {
        Some(t) => {
            let t = t.trim().to_string();
            if t.is_empty() || t.chars().count() > 200 {
                return Err(ApiError::Validation(vec![ValidationIssue::new(
                    "value_error",
                    &["body", "title"],
                    "Title must be 1 to 200 characters and not blank",
                )]));
            }
            Some(t)
        }
        None => None,
    };
    if let Some(tags) = &body.tags {
        crate::conversation::service::validate_tags(tags).map_err(api_error)?;
    }
    conv.set_title(title, body.tags).await.map_err(io_error)?;
    Ok(success())
}

/// Delete a conversation (its directory; the workspace is kept).
#[utoipa::path(delete, path = "/api/conversations/{conversation_id}", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Success")))]
async fn delete(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    state.conversations.delete(&id).await.map_err(api_error)?;
    Ok(success())
}

/// Conversation routes.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, batch_get))
        .routes(routes!(search))
        .routes(routes!(count))
        .routes(routes!(get_conversation, patch, delete))
        .routes(routes!(control::run))
        .routes(routes!(control::pause))
        .routes(routes!(control::interrupt))
        .routes(routes!(control::confirmation_policy))
        .routes(routes!(control::security_analyzer))
        .routes(routes!(control::secrets))
        .routes(routes!(control::ask_agent))
        .routes(routes!(control::condense))
        .routes(routes!(control::fork))
        .routes(routes!(control::navigate))
        .routes(routes!(control::agent_final_response))
        .routes(routes!(control::runtime))
        .routes(routes!(control::reprovision))
        .routes(routes!(agent_ops::goal))
        .routes(routes!(agent_ops::goal_stop))
        .routes(routes!(agent_ops::goal_resume))
        .routes(routes!(agent_ops::switch_profile))
        .routes(routes!(agent_ops::switch_llm))
        .routes(routes!(agent_ops::switch_acp_model))
        .routes(routes!(agent_ops::load_plugin))
        .routes(routes!(agent_ops::children))
}
