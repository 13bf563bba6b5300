//! `/v1/models`, `/v1/chat/completions`, `/v1/responses`: the OpenAI-compatible gateway
//! ([`crate::gateway`]). Requests are checked like the reference's models (extra keys ignored).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::AppState;
use crate::error::{ApiError, ValidJson, ValidationIssue};
use crate::gateway::{content_text, Gateway, GatewayError, Turn, TurnResult};

const CONVERSATION_HEADER: &str = "x-openhands-serverconversation-id";

/// Routes of the OpenAI Compatibility group.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_openai_models))
        .routes(routes!(create_chat_completion))
        .routes(routes!(create_response))
}

fn gateway(state: &AppState) -> Gateway {
    Gateway {
        conversations: state.conversations.clone(),
        settings: state.settings.clone(),
        workspace: state.config.workspace_path.clone(),
    }
}

fn gateway_error(e: GatewayError) -> ApiError {
    match e {
        GatewayError::BadRequest(m) => ApiError::BadRequest(m),
        GatewayError::NotFound(m) => ApiError::NotFound(m),
        GatewayError::Conflict(m) => ApiError::Conflict(m),
        GatewayError::TooManyRuns(m) => ApiError::TooManyRequests(m),
        e @ GatewayError::Timeout => ApiError::GatewayTimeout(e.to_string()),
        GatewayError::Failed(m) => ApiError::Internal(m),
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The saved LLM profiles, as models.
#[utoipa::path(get, path = "/v1/models", tag = "OpenAI Compatibility")]
async fn get_openai_models(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let names = gateway(&state)
        .profile_names()
        .await
        .map_err(gateway_error)?;
    Ok(Json(crate::gateway::models(&names)))
}

/// User content parts of a chat message (`text` and `image_url` parts).
fn chat_parts(content: &Value) -> Result<Vec<Value>, ApiError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for p in parts {
                match p["type"].as_str().unwrap_or("") {
                    "text" => {
                        if let Some(t) = p["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(json!({"type": "text", "text": t}));
                        }
                    }
                    "image_url" => {
                        let url = p["image_url"]
                            .as_str()
                            .or_else(|| p["image_url"]["url"].as_str())
                            .ok_or_else(|| {
                                ApiError::BadRequest(
                                    "image_url content part is missing a url".into(),
                                )
                            })?;
                        out.push(json!({"type": "image", "image_urls": [url]}));
                    }
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "Unsupported content part type: {other}"
                        )))
                    }
                }
            }
            Ok(out)
        }
        _ => Err(ApiError::invalid(
            "value_error",
            &["body", "messages"],
            "Invalid content",
        )),
    }
}

fn required_str<'a>(body: &'a Value, key: &str) -> Result<&'a str, ApiError> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s),
        None => Err(ApiError::Validation(vec![ValidationIssue::new(
            "missing",
            &["body", key],
            "Field required",
        )
        .with_input(body.clone())])),
        Some(other) => Err(ApiError::Validation(vec![ValidationIssue::new(
            "string_type",
            &["body", key],
            "Input should be a valid string",
        )
        .with_input(other.clone())])),
    }
}

fn conversation_id(headers: &HeaderMap) -> Result<Option<Uuid>, ApiError> {
    let Some(raw) = headers
        .get(CONVERSATION_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    Uuid::parse_str(raw).map(Some).map_err(|e| {
        ApiError::Validation(vec![ValidationIssue::new(
            "uuid_parsing",
            &["header", "X-OpenHands-ServerConversation-ID"],
            format!("Input should be a valid UUID, {e}"),
        )
        .with_input(raw)])
    })
}

fn with_conversation(mut response: Response, id: Uuid) -> Response {
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(CONVERSATION_HEADER, v);
    }
    response
}

/// Runs one agent turn for the latest user message; `stream: true` replays the answer as
/// server-sent events once the turn is done.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "OpenAI Compatibility")]
async fn create_chat_completion(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<Value>,
) -> Result<Response, ApiError> {
    let model = required_str(&body, "model")?.to_string();
    let messages = match body.get("messages") {
        Some(Value::Array(m)) => m.clone(),
        _ => {
            return Err(ApiError::Validation(vec![ValidationIssue::new(
                "missing",
                &["body", "messages"],
                "Field required",
            )
            .with_input(body.clone())]))
        }
    };
    const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];
    for (i, m) in messages.iter().enumerate() {
        if !m["role"].as_str().is_some_and(|r| ROLES.contains(&r)) {
            let mut issue = ValidationIssue::new(
                "literal_error",
                &["body", "messages"],
                "Input should be 'system', 'developer', 'user', 'assistant' or 'tool'",
            )
            .with_input(m["role"].clone());
            issue.loc.push(json!(i));
            issue.loc.push(json!("role"));
            return Err(ApiError::Validation(vec![issue]));
        }
    }
    let id = conversation_id(&headers)?;
    let user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .ok_or_else(|| ApiError::BadRequest("At least one user message is required".into()))?;
    let system: Vec<String> = messages
        .iter()
        .filter(|m| matches!(m["role"].as_str(), Some("system" | "developer")))
        .map(|m| content_text(&m["content"]))
        .collect();
    let parts = chat_parts(&user["content"])?;
    let turn = Turn {
        model: model.clone(),
        parts,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        conversation_id: id,
    };
    let result = gateway(&state).run(turn).await.map_err(gateway_error)?;
    let stream = body["stream"].as_bool().unwrap_or(false);
    let include_usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    Ok(with_conversation(
        chat_answer(&model, &result, stream, include_usage),
        result.conversation_id,
    ))
}

fn chat_answer(model: &str, r: &TurnResult, stream: bool, include_usage: bool) -> Response {
    let id = format!("chatcmpl-{}", crate::util::hex_id());
    let created = now_secs() as u64;
    let [prompt, completion, _, _] = r.usage;
    let usage = json!({"completion_tokens": completion, "prompt_tokens": prompt,
                       "total_tokens": prompt + completion});
    if !stream {
        return Json(json!({
            "id": id,
            "choices": [{"finish_reason": "stop", "index": 0,
                         "message": {"content": r.text, "role": "assistant"}}],
            "created": created, "model": model, "object": "chat.completion", "usage": usage,
        }))
        .into_response();
    }
    let chunk = |choices: Value| {
        json!({"id": id, "choices": choices, "created": created, "model": model,
               "object": "chat.completion.chunk"})
    };
    let mut chunks = vec![
        chunk(json!([{"delta": {"role": "assistant"}, "index": 0}])),
        chunk(json!([{"delta": {"content": r.text}, "index": 0}])),
        chunk(json!([{"delta": {}, "finish_reason": "stop", "index": 0}])),
    ];
    if include_usage {
        let mut last = chunk(json!([]));
        last["usage"] = usage;
        chunks.push(last);
    }
    let mut text = String::new();
    for c in chunks {
        text.push_str(&format!("data: {c}\n\n"));
    }
    text.push_str("data: [DONE]\n\n");
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/event-stream; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Parts of a Responses input message.
fn response_parts(content: &Value) -> Result<Vec<Value>, ApiError> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => {
            let mut out = Vec::new();
            for p in parts {
                match p["type"].as_str().unwrap_or("") {
                    "input_text" | "output_text" => {
                        if let Some(t) = p["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(json!({"type": "text", "text": t}));
                        }
                    }
                    "input_image" => {
                        let url = p["image_url"].as_str().ok_or_else(|| {
                            ApiError::BadRequest(
                                "input_image content part is missing an image_url".into(),
                            )
                        })?;
                        out.push(json!({"type": "image", "image_urls": [url]}));
                    }
                    other => {
                        return Err(ApiError::BadRequest(format!(
                            "Unsupported Responses content part type: {other}"
                        )))
                    }
                }
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

/// Runs one agent turn for a Responses request (no streaming, no stored responses).
#[utoipa::path(post, path = "/v1/responses", tag = "OpenAI Compatibility")]
async fn create_response(
    State(state): State<AppState>,
    ValidJson(body): ValidJson<Value>,
) -> Result<Response, ApiError> {
    let model = required_str(&body, "model")?.to_string();
    let Some(input) = body.get("input") else {
        return Err(ApiError::Validation(vec![ValidationIssue::new(
            "missing",
            &["body", "input"],
            "Field required",
        )
        .with_input(body.clone())]));
    };
    if body["stream"].as_bool() == Some(true) {
        return Err(ApiError::BadRequest(
            "Streaming responses are not supported yet".into(),
        ));
    }
    if body["store"].as_bool() == Some(true) {
        return Err(ApiError::BadRequest(
            "Persistent response storage (store=True) is not supported yet".into(),
        ));
    }
    if body["previous_response_id"]
        .as_str()
        .is_some_and(|s| !s.is_empty())
    {
        return Err(ApiError::BadRequest(
            "previous_response_id is not supported; replay input items instead".into(),
        ));
    }
    let mut system: Vec<String> = body["instructions"]
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .into_iter()
        .collect();
    let parts = match input {
        Value::String(s) if s.is_empty() => {
            return Err(ApiError::BadRequest(
                "Responses input must not be empty".into(),
            ))
        }
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(items) => {
            let rest: Vec<&Value> = items
                .iter()
                .filter(|m| !matches!(m["role"].as_str(), Some("system" | "developer")))
                .collect();
            system.extend(
                items
                    .iter()
                    .filter(|m| matches!(m["role"].as_str(), Some("system" | "developer")))
                    .map(|m| content_text(&m["content"])),
            );
            if !rest.iter().any(|m| m["role"] == "user") {
                return Err(ApiError::BadRequest(
                    "Responses input must include a user message".into(),
                ));
            }
            if rest.len() == 1 {
                response_parts(&rest[0]["content"])?
            } else {
                let mut out = Vec::new();
                for m in rest {
                    let role = m["role"].as_str().unwrap_or("user");
                    out.push(json!({"type": "text", "text": format!("<message role=\"{role}\">")}));
                    out.extend(response_parts(&m["content"])?);
                    out.push(json!({"type": "text", "text": "</message>"}));
                }
                out
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "value_error",
                &["body", "input"],
                "Invalid input",
            ))
        }
    };
    let created_at = now_secs();
    let turn = Turn {
        model: model.clone(),
        parts,
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        conversation_id: None,
    };
    let r = gateway(&state).run(turn).await.map_err(gateway_error)?;
    let [input_tokens, output_tokens, cached, reasoning] = r.usage;
    let mut answer = json!({
        "id": format!("resp_{}", crate::util::hex_id()),
        "created_at": created_at,
        "completed_at": now_secs(),
        "model": model,
        "object": "response",
        "output": [{"id": format!("msg_{}", crate::util::hex_id()),
                    "content": [{"annotations": [], "text": r.text, "type": "output_text"}],
                    "role": "assistant", "status": "completed", "type": "message"}],
        "parallel_tool_calls": false,
        "status": "completed",
        "tool_choice": "none",
        "tools": [],
        "usage": {"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": cached},
                  "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning},
                  "total_tokens": input_tokens + output_tokens},
    });
    if let Some(i) = body["instructions"].as_str() {
        answer["instructions"] = json!(i);
    }
    if body["metadata"].is_object() {
        answer["metadata"] = body["metadata"].clone();
    }
    Ok(with_conversation(
        Json(answer).into_response(),
        r.conversation_id,
    ))
}
