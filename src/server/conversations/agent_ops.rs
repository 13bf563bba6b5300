//! A conversation's agent: goal mode, profile/LLM/ACP-model switches, plugin loading and child
//! conversations.

use super::*;

/// Starts goal mode: the agent works on `objective` in rounds until a judge finds it done or
/// `max_iterations` rounds were judged.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/goal", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Success")))]
pub(super) async fn goal(
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
pub(super) async fn goal_stop(
    State(state): State<AppState>,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Json<Value>, ApiError> {
    find(&state, &id)?.stop_goal();
    Ok(success())
}

/// Resumes the last goal that was interrupted, from its last judged round.
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/goal/resume", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)), responses((status = 200, description = "Success")))]
pub(super) async fn goal_resume(
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
pub(super) struct SwitchProfileRequest {
    profile_name: Option<String>,
}

/// Switch the conversation to a saved LLM profile (its LLM is used from the next step on).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/switch_profile", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)),
    responses((status = 200, description = "Switched")))]
pub(super) async fn switch_profile(
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
pub(super) struct SwitchLlmRequest {
    llm: Option<Value>,
}

/// Switch the conversation to the given LLM (from the next step on).
#[utoipa::path(post, path = "/api/conversations/{conversation_id}/switch_llm", tag = "Conversations",
    params(("conversation_id" = Uuid, Path)),
    responses((status = 200, description = "Switched")))]
pub(super) async fn switch_llm(
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
pub(super) async fn switch_acp_model(
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
pub(super) async fn load_plugin(
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
pub(super) async fn children(
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
