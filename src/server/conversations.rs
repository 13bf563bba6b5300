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
use crate::conversation::{agent, events, service, status, Conversation, ConversationError};
use crate::error::{
    ApiError, ValidBytes, ValidJson, ValidObject, ValidPath, ValidQuery, ValidationIssue,
};

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
        if !status::ALL.contains(&v.as_str()) {
            return Err(ApiError::Validation(vec![ValidationIssue::new(
                "enum",
                &["query", "status"],
                format!(
                    "Input should be {}",
                    status::ALL.map(|s| format!("'{s}'")).join(", ")
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
        .filter(|c| status_filter.as_ref().is_none_or(|s| &c.status() == s))
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

/// Start a run in the background.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/run", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)),
    responses((status = 200, description = "Success"), (status = 409, description = "Already running"),
               (status = 429, description = "Too many runs")))]
async fn run(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &id)?.request_run().await.map_err(api_error)?;
    Ok(success())
}

/// Pause after the current step.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/pause", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Success")))]
async fn pause(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &id)?.pause().await.map_err(io_error)?;
    Ok(success())
}

/// Interrupt now (in-flight LLM call abandoned, running tool cancelled).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/interrupt", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Success")))]
async fn interrupt(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &id)?.interrupt().await.map_err(io_error)?;
    Ok(success())
}

/// Body of `/confirmation_policy`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct SetConfirmationPolicyRequest {
    policy: Value,
}

/// Set the confirmation policy.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/confirmation_policy", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), request_body = SetConfirmationPolicyRequest,
    responses((status = 200, description = "Success")))]
async fn confirmation_policy(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidJson(body): ValidJson<SetConfirmationPolicyRequest>,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    let kind = body
        .policy
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !matches!(
        kind.as_str(),
        "AlwaysConfirm" | "NeverConfirm" | "ConfirmRisky"
    ) {
        return Err(ApiError::Validation(vec![ValidationIssue::new(
            "union_tag_invalid",
            &["body", "policy"],
            "Input tag should be 'AlwaysConfirm', 'NeverConfirm' or 'ConfirmRisky'",
        )]));
    }
    let mut policy = body.policy;
    if kind == "ConfirmRisky" {
        if policy.get("threshold").is_none() {
            policy["threshold"] = json!("HIGH");
        }
        if policy.get("confirm_unknown").is_none() {
            policy["confirm_unknown"] = json!(true);
        }
    }
    conv.set_fields(vec![("confirmation_policy", policy)], true)
        .await
        .map_err(io_error)?;
    Ok(success())
}

/// Body of `/security_analyzer`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct SetSecurityAnalyzerRequest {
    #[allow(dead_code)]
    security_analyzer: Option<Value>,
}

/// Set (or clear) the security analyzer.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/security_analyzer", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), request_body = SetSecurityAnalyzerRequest,
    responses((status = 200, description = "Success")))]
async fn security_analyzer(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidJson(body): ValidJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    let Some(v) = body.get("security_analyzer") else {
        return Err(ApiError::Validation(vec![ValidationIssue::new(
            "missing",
            &["body", "security_analyzer"],
            "Field required",
        )]));
    };
    conv.set_fields(vec![("security_analyzer", v.clone())], true)
        .await
        .map_err(io_error)?;
    Ok(success())
}

/// Body of `/secrets`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct UpdateSecretsRequest {
    secrets: Map<String, Value>,
}

/// Add or replace secrets.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/secrets", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), request_body = UpdateSecretsRequest,
    responses((status = 200, description = "Success")))]
async fn secrets(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidJson(body): ValidJson<UpdateSecretsRequest>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &id)?
        .update_secrets(body.secrets)
        .await
        .map_err(io_error)?;
    Ok(success())
}

/// Body of `/ask_agent`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct AskAgentRequest {
    question: String,
}

/// Ask the agent's LLM about the conversation (no events recorded).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/ask_agent", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), request_body = AskAgentRequest,
    responses((status = 200, description = "{\"response\": str}")))]
async fn ask_agent(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidJson(body): ValidJson<AskAgentRequest>,
) -> Result<Json<Value>, ApiError> {
    let conv = state
        .conversations
        .get(&id)
        .ok_or_else(|| ApiError::NotFound("Conversation not found".into()))?;
    let answer = agent::ask_agent(&conv, &body.question)
        .await
        .map_err(api_error)?;
    Ok(Json(json!({"response": answer})))
}

/// Request condensation of the history.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/condense", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)),
    responses((status = 200, description = "Success"), (status = 409, description = "No condenser")))]
async fn condense(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    if conv
        .agent_json()
        .get("condenser")
        .is_none_or(Value::is_null)
    {
        return Err(ApiError::Conflict(
            "Cannot condense conversation: No condenser configured".into(),
        ));
    }
    conv.append(events::bare("CondensationRequest", "environment"))
        .await
        .map_err(io_error)?;
    Ok(success())
}

/// Body of `/fork`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub(super) struct ForkConversationRequest {
    id: Option<Uuid>,
    title: Option<String>,
    tags: Option<Map<String, Value>>,
    reset_metrics: Option<bool>,
    from_event_id: Option<String>,
}

/// Fork a conversation (events copied, status idle).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/fork", tag = "Conversations",
    params(("conversation_id" = Uuid, Path), SkillsQuery), request_body = ForkConversationRequest,
    responses((status = 201, description = "ConversationInfo of the fork")))]
async fn fork(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidQuery(q): ValidQuery<SkillsQuery>,
    ValidBytes(body): ValidBytes,
) -> Result<Response, ApiError> {
    let req: ForkConversationRequest = if body.is_empty() {
        ForkConversationRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid("value_error", &["body"], e.to_string()))?
    };
    let source = state
        .conversations
        .get(&id)
        .ok_or_else(|| ApiError::NotFound("Source conversation not found".into()))?;
    if req.title.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(ApiError::invalid(
            "string_too_long",
            &["body", "title"],
            "String should have at most 200 characters",
        ));
    }
    let fork = state
        .conversations
        .fork(
            &source,
            req.id,
            req.title,
            req.tags,
            req.reset_metrics.unwrap_or(true),
            req.from_event_id,
        )
        .await
        .map_err(api_error)?;
    Ok((
        StatusCode::CREATED,
        Json(fork.info(q.include_skills, false)),
    )
        .into_response())
}

/// Body of `/navigate`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub(super) struct NavigateConversationRequest {
    event_id: Option<String>,
}

/// Move the conversation's HEAD to an event.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/navigate", tag = "Conversations",
    params(("conversation_id" = Uuid, Path), SkillsQuery), request_body = NavigateConversationRequest,
    responses((status = 200, description = "ConversationInfo")))]
async fn navigate(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidQuery(q): ValidQuery<SkillsQuery>,
    ValidJson(body): ValidJson<NavigateConversationRequest>,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    if let Some(eid) = &body.event_id {
        let exists = conv
            .with_events(|evs| evs.iter().any(|e| events::id(e) == eid))
            .await
            .map_err(io_error)?;
        if !exists {
            return Err(ApiError::NotFound(format!("Unknown event_id: {eid}")));
        }
    }
    let leaf = body.event_id.map(Value::String).unwrap_or(Value::Null);
    let empty = leaf.is_null();
    conv.set_fields(
        vec![("leaf_event_id", leaf), ("head_is_empty", json!(empty))],
        false,
    )
    .await
    .map_err(io_error)?;
    Ok(Json(conv.info(q.include_skills, true)))
}

/// The agent's last answer (finish message or final text).
#[utoipa::path(get, path = "/api/conversations/{conversation_id}/agent_final_response", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "{\"response\": str}")))]
async fn agent_final_response(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    let response = conv
        .with_events(events::final_response)
        .await
        .map_err(io_error)?;
    Ok(Json(json!({"response": response})))
}

/// Runtime status of a local conversation (always available).
#[utoipa::path(get, path = "/api/conversations/{conversation_id}/runtime", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Runtime info")))]
async fn runtime(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &id)?;
    Ok(Json(
        json!({"runtime_status": "available", "can_resume": true, "runtime_error": null}),
    ))
}

/// Reprovisions the runtime of a conversation: a local conversation's runtime is this server,
/// always available, so there is nothing to do (as in the reference's local mode).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/runtime/reprovision", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Runtime info")))]
async fn reprovision(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    runtime(State(state), ValidPath(id)).await
}
/// Starts goal mode: the agent works on `objective` in rounds until a judge finds it done or
/// `max_iterations` rounds were judged.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/goal", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Success")))]
async fn goal(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidObject(body): ValidObject,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    let mut issues = Vec::new();
    let objective = match body.get("objective") {
        Some(Value::String(o)) => o.clone(),
        None => {
            issues.push(
                ValidationIssue::new("missing", &["body", "objective"], "Field required")
                    .with_input(body.clone()),
            );
            String::new()
        }
        Some(other) => {
            issues.push(
                ValidationIssue::new(
                    "string_type",
                    &["body", "objective"],
                    "Input should be a valid string",
                )
                .with_input(other.clone()),
            );
            String::new()
        }
    };
    let max_iterations = match body.get("max_iterations") {
        None | Some(Value::Null) => 10,
        Some(v) => match v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        {
            Some(n) if n >= 1 => n as u64,
            Some(_) => {
                issues.push(
                    ValidationIssue::new(
                        "greater_than_equal",
                        &["body", "max_iterations"],
                        "Input should be greater than or equal to 1",
                    )
                    .with_input(v.clone()),
                );
                0
            }
            None => {
                issues.push(
                    ValidationIssue::new(
                        "int_type",
                        &["body", "max_iterations"],
                        "Input should be a valid integer",
                    )
                    .with_input(v.clone()),
                );
                0
            }
        },
    };
    if !issues.is_empty() {
        return Err(ApiError::Validation(issues));
    }
    if objective.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "Goal objective must not be empty.".into(),
        ));
    }
    conv.ensure_events().await.map_err(io_error)?;
    let start = crate::conversation::goal::GoalStart {
        objective,
        max_iterations,
        iteration: 0,
        resume: false,
    };
    conv.start_goal(start).map_err(api_error)?;
    Ok(success())
}

/// Stops goal mode (a run in progress goes on).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/goal/stop", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Success")))]
async fn goal_stop(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &id)?.stop_goal();
    Ok(success())
}

/// Resumes the last goal that was interrupted, from its last judged round.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/goal/resume", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Success")))]
async fn goal_resume(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let conv = find(&state, &id)?;
    let last = conv
        .with_events(crate::conversation::goal::last_status)
        .await
        .map_err(io_error)?;
    let Some(last) = last.filter(|g| !matches!(g["status"].as_str(), Some("complete" | "capped")))
    else {
        return Err(ApiError::BadRequest("no_resumable_goal".into()));
    };
    let max_iterations = last["max_iterations"].as_u64().unwrap_or(10).max(1);
    let start = crate::conversation::goal::GoalStart {
        objective: last["objective"].as_str().unwrap_or_default().to_string(),
        max_iterations,
        iteration: last["iteration"]
            .as_u64()
            .unwrap_or(0)
            .min(max_iterations - 1),
        resume: true,
    };
    conv.start_goal(start).map_err(api_error)?;
    Ok(success())
}
/// Body of `/switch_profile`.
#[derive(Debug, Deserialize)]
struct SwitchProfileRequest {
    profile_name: Option<String>,
}

/// Switch the conversation to a saved LLM profile (its LLM is used from the next step on).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/switch_profile", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)),
    responses((status = 200, description = "Switched")))]
async fn switch_profile(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    body: Result<ValidJson<SwitchProfileRequest>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let name = match body {
        Ok(ValidJson(SwitchProfileRequest {
            profile_name: Some(n),
        })) => n,
        _ => {
            return Err(ApiError::invalid(
                "missing",
                &["body", "profile_name"],
                "Field required",
            ))
        }
    };
    let conv = find(&state, &id)?;
    if !crate::settings::profiles::valid_name(&name) {
        return Err(ApiError::BadRequest(format!(
            "Invalid profile name: '{name}'. Profile names must be 1-64 characters, start with \
             a letter or digit, and contain only letters, digits, '.', '_', or '-'."
        )));
    }
    let mut llm = state.settings.profile_llm(&name).await?;
    llm["usage_id"] = json!(format!("profile:{name}"));
    crate::conversation::switch::switch_llm(&conv, llm)
        .await
        .map_err(api_error)?;
    Ok(success())
}

/// Body of `/switch_llm`.
#[derive(Debug, Deserialize)]
struct SwitchLlmRequest {
    llm: Option<Value>,
}

/// Switch the conversation to the given LLM (from the next step on).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/switch_llm", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)),
    responses((status = 200, description = "Switched")))]
async fn switch_llm(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    body: Result<ValidJson<SwitchLlmRequest>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let Ok(ValidJson(SwitchLlmRequest { llm: Some(llm) })) = body else {
        return Err(ApiError::invalid(
            "missing",
            &["body", "llm"],
            "Field required",
        ));
    };
    let llm = state.settings.incoming_llm(&llm)?;
    let llm = state.settings.resolve_connection(llm).await?;
    let conv = find(&state, &id)?;
    crate::conversation::switch::switch_llm(&conv, llm)
        .await
        .map_err(api_error)?;
    Ok(success())
}
/// Switches the model of an ACP conversation's server (now when a session is live; at the
/// start of the next one otherwise).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/switch_acp_model", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Success")))]
async fn switch_acp_model(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidObject(body): ValidObject,
) -> Result<Json<Value>, ApiError> {
    let model = match body.get("model") {
        Some(Value::String(m)) => m.clone(),
        None => {
            return Err(ApiError::Validation(vec![ValidationIssue::new(
                "missing",
                &["body", "model"],
                "Field required",
            )]))
        }
        Some(other) => {
            return Err(ApiError::Validation(vec![ValidationIssue::new(
                "string_type",
                &["body", "model"],
                "Input should be a valid string",
            )
            .with_input(other.clone())]))
        }
    };
    let conv = find(&state, &id)?;
    use crate::conversation::acp_run::{switch_model, SwitchError};
    match switch_model(&conv, &model).await {
        Ok(()) => Ok(success()),
        Err(SwitchError::Refused(m)) => Err(ApiError::BadRequest(m)),
        Err(SwitchError::Failed(m)) => Err(ApiError::Internal(m)),
        Err(SwitchError::Timeout) => Err(ApiError::GatewayTimeout(String::new())),
        Err(SwitchError::Io(e)) => Err(io_error(e)),
    }
}
/// Load a plugin from the conversation's registered marketplaces
/// (`{"plugin_ref": "name" | "name@marketplace"}`).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/load_plugin", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), request_body = Object,
    responses((status = 200, description = "Loaded"),
              (status = 400, description = "Invalid plugin reference or inactive conversation"),
              (status = 404, description = "Conversation or plugin not found")))]
async fn load_plugin(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidBytes(body): ValidBytes,
) -> Result<Json<Value>, ApiError> {
    let parsed: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::invalid("json_invalid", &["body"], format!("JSON decode error: {e}"))
        })?
    };
    let plugin_ref = match parsed.get("plugin_ref") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::Validation(vec![ValidationIssue::new(
                "string_type",
                &["body", "plugin_ref"],
                "Input should be a valid string",
            )
            .with_input(other.clone())]))
        }
        None => {
            return Err(ApiError::invalid(
                "missing",
                &["body", "plugin_ref"],
                "Field required",
            ))
        }
    };
    let conv = find(&state, &id)?;
    conv.ensure_events().await.map_err(io_error)?;
    crate::conversation::plugins::load_plugin(&conv, &plugin_ref).await?;
    Ok(success())
}
/// Starts a child conversation with the parent's agent and settings and `task` as its first
/// message (in a git worktree of the workspace when asked and possible).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/children", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)),
    responses((status = 201, description = "StartChildConversationResponse")))]
async fn children(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
    ValidObject(body): ValidObject,
) -> Result<Response, ApiError> {
    let mut issues = Vec::new();
    let task = match body.get("task") {
        None => {
            issues.push(
                ValidationIssue::new("missing", &["body", "task"], "Field required")
                    .with_input(body.clone()),
            );
            String::new()
        }
        Some(Value::String(t)) if t.is_empty() => {
            issues.push(
                ValidationIssue::new(
                    "string_too_short",
                    &["body", "task"],
                    "String should have at least 1 character",
                )
                .with_input(""),
            );
            String::new()
        }
        Some(Value::String(t)) => t.clone(),
        Some(other) => {
            issues.push(
                ValidationIssue::new(
                    "string_type",
                    &["body", "task"],
                    "Input should be a valid string",
                )
                .with_input(other.clone()),
            );
            String::new()
        }
    };
    let title = match body.get("title") {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) => Some(t.clone()),
        Some(other) => {
            issues.push(
                ValidationIssue::new(
                    "string_type",
                    &["body", "title"],
                    "Input should be a valid string",
                )
                .with_input(other.clone()),
            );
            None
        }
    };
    let isolation = match body.get("isolation") {
        None => "worktree".to_string(),
        Some(Value::String(i)) if i == "worktree" || i == "shared" => i.clone(),
        Some(other) => {
            issues.push(
                ValidationIssue::new(
                    "literal_error",
                    &["body", "isolation"],
                    "Input should be 'worktree' or 'shared'",
                )
                .with_input(other.clone()),
            );
            String::new()
        }
    };
    if !issues.is_empty() {
        return Err(ApiError::Validation(issues));
    }
    let req = crate::conversation::children::ChildRequest {
        task,
        title,
        isolation,
    };
    let answer = state
        .conversations
        .start_child(&id, req)
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// Conversation routes.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, batch_get))
        .routes(routes!(search))
        .routes(routes!(count))
        .routes(routes!(get_conversation, patch, delete))
        .routes(routes!(run))
        .routes(routes!(pause))
        .routes(routes!(interrupt))
        .routes(routes!(confirmation_policy))
        .routes(routes!(security_analyzer))
        .routes(routes!(secrets))
        .routes(routes!(ask_agent))
        .routes(routes!(condense))
        .routes(routes!(fork))
        .routes(routes!(navigate))
        .routes(routes!(agent_final_response))
        .routes(routes!(runtime))
        .routes(routes!(reprovision))
        .routes(routes!(goal))
        .routes(routes!(goal_stop))
        .routes(routes!(goal_resume))
        .routes(routes!(switch_profile))
        .routes(routes!(switch_llm))
        .routes(routes!(switch_acp_model))
        .routes(routes!(load_plugin))
        .routes(routes!(children))
}

/// The workspace route groups a conversation-scoped request can be forwarded to.
#[derive(Clone, Copy, PartialEq)]
enum Group {
    File,
    Git,
    Bash,
}

impl Group {
    fn name(self) -> &'static str {
        match self {
            Group::File => "file",
            Group::Git => "git",
            Group::Bash => "bash",
        }
    }
}

/// The workspace-checked copies of the file, git and bash routes under
/// `/api/conversations/{id}/file|git|bash/...`: the conversation must exist, every `path` /
/// `workspace_dir` must be absolute and inside its working directory; the request is then
/// served by the global route of its group (built once here, with `state`), bash by the
/// conversation's own bash service.
pub(super) fn scoped_router(state: &AppState) -> axum::Router<AppState> {
    let limit = axum::extract::DefaultBodyLimit::max(state.config.max_request_body_bytes);
    let built = |routes: OpenApiRouter<AppState>| {
        routes
            .split_for_parts()
            .0
            .layer(limit)
            .with_state(state.clone())
    };
    let group_route = |group: Group, inner: axum::Router| {
        axum::routing::any(
            move |State(state): State<AppState>,
                  axum::extract::Path(params): axum::extract::Path<(String, String)>,
                  req: axum::extract::Request| {
                scoped(state, params, req, group, inner.clone())
            },
        )
    };
    axum::Router::new()
        .route(
            "/api/conversations/{conversation_id}/file/{*rest}",
            group_route(Group::File, built(super::files::router())),
        )
        .route(
            "/api/conversations/{conversation_id}/git/{*rest}",
            group_route(Group::Git, built(super::git::router())),
        )
        .route(
            "/api/conversations/{conversation_id}/bash/{*rest}",
            group_route(Group::Bash, built(super::bash::router())),
        )
}

fn unprocessable(msg: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({"detail": msg})),
    )
        .into_response()
}

/// Lexically normalizes an absolute path (`.`/`..` resolved).
fn normalize(p: &std::path::Path) -> std::path::PathBuf {
    let mut out = std::path::PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

async fn inside(root: &str, candidate: &str) -> bool {
    let cand = std::path::Path::new(candidate);
    if !cand.is_absolute() {
        return false;
    }
    let root_c = tokio::fs::canonicalize(root)
        .await
        .unwrap_or_else(|_| normalize(std::path::Path::new(root)));
    let mut probe = normalize(cand);
    // Resolve symlinks of the longest existing prefix.
    let mut tail = Vec::new();
    let resolved = loop {
        match tokio::fs::canonicalize(&probe).await {
            Ok(p) => break p,
            Err(_) => match (probe.file_name().map(|n| n.to_os_string()), probe.parent()) {
                (Some(name), Some(parent)) => {
                    tail.push(name);
                    probe = parent.to_path_buf();
                }
                _ => break probe,
            },
        }
    };
    let mut full = resolved;
    for t in tail.into_iter().rev() {
        full.push(t);
    }
    full.starts_with(&root_c)
}

async fn scoped(
    state: AppState,
    (raw_id, rest): (String, String),
    req: axum::extract::Request,
    group: Group,
    inner: axum::Router,
) -> Response {
    let Ok(id) = Uuid::parse_str(&raw_id) else {
        return ApiError::invalid(
            "uuid_parsing",
            &["path", "runtime_conversation_id"],
            "Input should be a valid UUID",
        )
        .into_response();
    };
    let Some(conv) = state.conversations.get(&id) else {
        return ApiError::NotFound(format!("Conversation not found: {id}")).into_response();
    };
    let root = conv.working_dir();
    let query = req.uri().query().unwrap_or("").to_string();
    for (k, v) in crate::urlcode::query_pairs(&query) {
        if (k == "path" || k == "workspace_dir") && !inside(&root, &v).await {
            return unprocessable("path must be inside the conversation workspace");
        }
    }
    if let Some(tid) = rest.strip_prefix("download-trajectory/") {
        if Uuid::parse_str(tid).ok() != Some(id) {
            return unprocessable("conversation_id must match the runtime conversation");
        }
    }
    // Bash commands: `cwd` must be inside the workspace and defaults to it.
    let req = if group == Group::Bash
        && req.method() == axum::http::Method::POST
        && rest.ends_with("_bash_command")
    {
        let (mut parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, 16 * 1024 * 1024).await else {
            return ApiError::BadRequest("request body too large".into()).into_response();
        };
        let body = match serde_json::from_slice::<Value>(&bytes) {
            Ok(mut v) => {
                match v.get("cwd").and_then(Value::as_str) {
                    Some(cwd) => {
                        if !inside(&root, cwd).await {
                            return unprocessable("cwd must be inside the conversation workspace");
                        }
                    }
                    None => {
                        if let Some(o) = v.as_object_mut() {
                            o.insert("cwd".into(), json!(root));
                        }
                    }
                }
                serde_json::to_vec(&v).unwrap_or_default()
            }
            Err(_) => bytes.to_vec(),
        };
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        axum::extract::Request::from_parts(parts, axum::body::Body::from(body))
    } else {
        req
    };
    let group_name = group.name();
    let target = if query.is_empty() {
        format!("/api/{group_name}/{rest}")
    } else {
        format!("/api/{group_name}/{rest}?{query}")
    };
    let (mut parts, body) = req.into_parts();
    match target.parse() {
        Ok(uri) => parts.uri = uri,
        Err(_) => return ApiError::BadRequest("malformed path".into()).into_response(),
    }
    // The outer route's path parameters must not reach the inner handlers (they would see
    // three parameters where they expect one): the request goes in with fresh extensions.
    parts.extensions = axum::http::Extensions::new();
    if group == Group::Bash {
        match conv.bash_service() {
            Ok(b) => {
                parts.extensions.insert(super::bash::ScopedBash(b));
            }
            Err(e) => return ApiError::Internal(e.to_string()).into_response(),
        }
    }
    match tower::ServiceExt::oneshot(inner, axum::extract::Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}
