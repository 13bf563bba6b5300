//! Run control and per-conversation settings: run, pause, interrupt, confirmation policy,
//! security analyzer, secrets, ask-agent, condense, fork, navigate, final response, runtime.

use super::*;
use crate::conversation::StateField;

/// Start a run in the background.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/run", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)),
    responses((status = 200, description = "Success"), (status = 409, description = "Already running"),
               (status = 429, description = "Too many runs")))]
pub(super) async fn run(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &id)?.request_run().await.map_err(api_error)?;
    Ok(success())
}

/// Pause after the current step.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/pause", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Success")))]
pub(super) async fn pause(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &id)?.pause().await.map_err(io_error)?;
    Ok(success())
}

/// Interrupt now (in-flight LLM call abandoned, running tool cancelled).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/interrupt", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Success")))]
pub(super) async fn interrupt(
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
pub(super) async fn confirmation_policy(
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
    conv.set_field(StateField::ConfirmationPolicy(policy), true)
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
pub(super) async fn security_analyzer(
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
    conv.set_field(StateField::SecurityAnalyzer(v.clone()), true)
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
pub(super) async fn secrets(
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
pub(super) async fn ask_agent(
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
pub(super) async fn condense(
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
pub(super) async fn fork(
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
pub(super) async fn navigate(
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
    let empty = body.event_id.is_none();
    conv.set_fields(
        vec![
            StateField::LeafEventId(body.event_id),
            StateField::HeadIsEmpty(empty),
        ],
        false,
    )
    .await
    .map_err(io_error)?;
    Ok(Json(conv.info(q.include_skills, true)))
}

/// The agent's last answer (finish message or final text).
#[utoipa::path(get, path = "/api/conversations/{conversation_id}/agent_final_response", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "{\"response\": str}")))]
pub(super) async fn agent_final_response(
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
pub(super) async fn runtime(
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
pub(super) async fn reprovision(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    runtime(State(state), ValidPath(id)).await
}
