//! Runs of a conversation whose agent is an `ACPAgent`: the ACP server does the work. The
//! first run starts the server and a session in the workspace; each run sends the latest user
//! message as one `session/prompt`, records the server's tool calls as `ACPToolCallEvent`s
//! while it works, and ends with a `finish` action carrying the server's answer, as the
//! reference does. The session lives as long as the conversation is loaded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::events::{self, text};
use super::service::{Conversation, RunCtl};
use super::ExecutionStatus;
use crate::acp::{AcpError, Session};
use crate::conversation::StateField;

const SYSTEM_TEXT: &str = "This conversation is powered by an ACP server. The system prompt and tools are managed by the ACP server and are not available for display.";

/// Most characters of a tool's raw output kept in an event.
const RAW_OUTPUT_CHARS: usize = 30_000;

/// The `SystemPromptEvent` of an ACP conversation (its prompt and tools are the server's).
pub(super) fn system_prompt_event() -> Value {
    json!({"source": "agent", "system_prompt": text(SYSTEM_TEXT), "tools": [],
           "dynamic_context": null, "kind": "SystemPromptEvent"})
}

fn startup_error(code: &str, detail: &str) -> Value {
    json!({
        "source": "agent", "code": code, "detail": detail,
        "classification": {"kind": "config", "retryable": false, "user_action": "settings"},
        "kind": "ConversationErrorEvent",
    })
}

/// The live session of `conv`, started on first use.
async fn session(conv: &Arc<Conversation>) -> Result<Arc<Session>, AcpError> {
    let mut slot = conv.acp.lock().await;
    if let Some(s) = slot.as_ref() {
        return Ok(s.clone());
    }
    let agent = conv.agent_json();
    let env = conv.secret_values();
    let cwd = std::path::PathBuf::from(conv.working_dir());
    let session = Arc::new(crate::acp::start_session(&agent, &env, &cwd).await?);
    // Pick the model the agent asks for.
    if let Some(model) = agent["acp_model"].as_str() {
        let _ = set_model(&session, model, Duration::from_secs(90)).await;
    }
    let (current, available, via_config) = crate::acp::session_models(&session.new_session);
    let switchable = session
        .agent_name
        .as_str()
        .and_then(crate::acp::providers::detect)
        .is_some();
    let mut agent_state = json!({
        "acp_agent_name": session.agent_name, "acp_agent_version": session.agent_version,
        "acp_session_id": session.session_id, "acp_session_cwd": cwd.to_string_lossy(),
        "acp_supports_runtime_model_switch": switchable,
        "acp_model_via_config_option": via_config, "acp_available_models": available,
    });
    let current = agent["acp_model"]
        .as_str()
        .map(|m| json!(m))
        .unwrap_or(current);
    if !current.is_null() {
        agent_state["acp_current_model_id"] = current;
    }
    let _ = conv
        .set_field(StateField::AgentState(agent_state), true)
        .await;
    *slot = Some(session.clone());
    Ok(session)
}

/// Asks the session to use `model` (`session/set_model`, or the `model` config option).
pub async fn set_model(session: &Session, model: &str, timeout: Duration) -> Result<(), AcpError> {
    let (_, _, via_config) = crate::acp::session_models(&session.new_session);
    if via_config {
        session
            .process
            .request(
                "session/set_config_option",
                json!({"sessionId": session.session_id, "configId": "model", "value": model}),
                timeout,
                "ACPPromptError",
            )
            .await
            .map(|_| ())
    } else {
        session
            .process
            .request(
                "session/set_model",
                json!({"sessionId": session.session_id, "modelId": model}),
                timeout,
                "ACPPromptError",
            )
            .await
            .map(|_| ())
    }
}

/// The prompt blocks of the latest user message.
fn latest_prompt(evs: &[Value]) -> Vec<Value> {
    evs.iter()
        .rev()
        .find(|e| events::kind(e) == "MessageEvent" && e["source"] == "user")
        .map(|e| {
            e["llm_message"]["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| match b["type"].as_str() {
                    Some("text") => b["text"]
                        .as_str()
                        .filter(|t| !t.trim().is_empty())
                        .map(|t| json!({"type": "text", "text": t})),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One open tool call, as the server has described it so far.
#[derive(Default)]
struct ToolCall {
    fields: Map<String, Value>,
    done: bool,
}

fn tool_call_event(call: &ToolCall) -> Value {
    let f = &call.fields;
    let mut ev = Map::new();
    ev.insert("source".into(), json!("agent"));
    for (wire, ours) in [
        ("toolCallId", "tool_call_id"),
        ("title", "title"),
        ("status", "status"),
        ("kind", "tool_kind"),
        ("rawInput", "raw_input"),
        ("rawOutput", "raw_output"),
    ] {
        if let Some(v) = f.get(wire).filter(|v| !v.is_null()) {
            let v = match (ours, v) {
                ("raw_output", Value::String(s)) => {
                    json!(s.chars().take(RAW_OUTPUT_CHARS).collect::<String>())
                }
                _ => v.clone(),
            };
            ev.insert(ours.into(), v);
        }
    }
    if let Some(content) = f.get("content").and_then(Value::as_array) {
        let items: Vec<Value> = content
            .iter()
            .map(|c| {
                json!({"content": {"annotations": null, "text": c["content"]["text"],
                                   "field_meta": null, "type": c["content"]["type"]},
                       "field_meta": null, "type": c["type"]})
            })
            .collect();
        ev.insert("content".into(), Value::Array(items));
    }
    ev.insert(
        "is_error".into(),
        json!(f.get("status") == Some(&json!("failed"))),
    );
    ev.insert("kind".into(), json!("ACPToolCallEvent"));
    Value::Object(ev)
}

/// What a turn gathered from `session/update`s.
#[derive(Default)]
struct Turn {
    text: String,
    thoughts: String,
    calls: HashMap<String, ToolCall>,
    order: Vec<String>,
}

impl Turn {
    /// Folds one update in; answers the event to record, if any.
    fn apply(&mut self, params: &Value) -> Option<Value> {
        let u = &params["update"];
        match u["sessionUpdate"].as_str()? {
            "agent_message_chunk" => {
                self.text
                    .push_str(u["content"]["text"].as_str().unwrap_or_default());
                None
            }
            "agent_thought_chunk" => {
                self.thoughts
                    .push_str(u["content"]["text"].as_str().unwrap_or_default());
                None
            }
            "tool_call" => {
                let id = u["toolCallId"].as_str()?.to_string();
                let mut call = ToolCall::default();
                for (k, v) in u.as_object()? {
                    if k != "sessionUpdate" {
                        call.fields.insert(k.clone(), v.clone());
                    }
                }
                let ev = tool_call_event(&call);
                self.order.push(id.clone());
                self.calls.insert(id, call);
                Some(ev)
            }
            "tool_call_update" => {
                let id = u["toolCallId"].as_str()?;
                let call = self.calls.get_mut(id)?;
                for (k, v) in u.as_object()? {
                    if k != "sessionUpdate" && !v.is_null() {
                        call.fields.insert(k.clone(), v.clone());
                    }
                }
                let finished = matches!(
                    call.fields.get("status").and_then(Value::as_str),
                    Some("completed" | "failed")
                );
                if finished && !call.done {
                    call.done = true;
                    return Some(tool_call_event(call));
                }
                None
            }
            _ => None,
        }
    }

    /// Terminal events of the calls still open when the turn ends.
    fn close_open_calls(&mut self) -> Vec<Value> {
        let mut out = Vec::new();
        for id in &self.order {
            if let Some(call) = self.calls.get_mut(id) {
                if !call.done {
                    call.done = true;
                    out.push(tool_call_event(call));
                }
            }
        }
        out
    }
}

/// One run of an ACP conversation (initialized by the agent loop, which hands it over).
pub(super) async fn run_once(conv: &Arc<Conversation>, ctl: &RunCtl) -> std::io::Result<()> {
    conv.set_status(ExecutionStatus::Running).await?;
    let session = match session(conv).await {
        Ok(s) => s,
        Err(e) => {
            conv.append(startup_error(e.code, &e.detail)).await?;
            conv.set_status(ExecutionStatus::Error).await?;
            return Ok(());
        }
    };
    let prompt = conv.with_events(latest_prompt).await?;
    let agent = conv.agent_json();
    let idle = Duration::from_secs_f64(
        agent["acp_prompt_timeout"]
            .as_f64()
            .unwrap_or(1800.0)
            .clamp(1.0, 86_400.0),
    );
    let request = session.process.request(
        "session/prompt",
        json!({"sessionId": session.session_id, "prompt": prompt}),
        Duration::from_secs(86_400),
        "ACPPromptError",
    );
    tokio::pin!(request);
    let mut turn = Turn::default();
    let mut updates = session.process.updates.lock().await;
    let outcome = loop {
        tokio::select! {
            biased;
            _ = ctl.cancel.cancelled() => {
                let _ = session.process.notify("session/cancel", json!({"sessionId": session.session_id})).await;
                break None;
            }
            update = updates.recv() => {
                match update {
                    Some(u) => {
                        if let Some(ev) = turn.apply(&u) {
                            conv.append(ev).await?;
                        }
                    }
                    None => break Some(Err(AcpError { code: "ACPPromptError", detail: "Connection closed".into(), rpc_code: None })),
                }
            }
            result = &mut request => break Some(result),
            _ = tokio::time::sleep(idle) => {
                break Some(Err(AcpError { code: "ACPPromptTimeout", detail: format!(
                    "ACP prompt timed out after {}s with no activity from the agent.", idle.as_secs()), rpc_code: None }));
            }
        }
    };
    // Updates sent before the answer are all recorded.
    while let Ok(u) = updates.try_recv() {
        if let Some(ev) = turn.apply(&u) {
            conv.append(ev).await?;
        }
    }
    drop(updates);
    for ev in turn.close_open_calls() {
        conv.append(ev).await?;
    }
    match outcome {
        None => {
            conv.set_status(ExecutionStatus::Paused).await?;
            conv.append(events::bare("InterruptEvent", "user")).await?;
        }
        Some(Err(e)) => {
            conv.append(events::agent_message(
                &format!("ACP error: {}", e.detail),
                None,
                "",
            ))
            .await?;
            conv.append(events::conversation_error(e.code, &e.detail))
                .await?;
            conv.set_status(ExecutionStatus::Error).await?;
            // A broken session is started afresh next time.
            if let Some(s) = conv.acp.lock().await.take() {
                s.process.kill();
            }
        }
        Some(Ok(result)) => {
            let message = if turn.text.trim().is_empty() {
                "(No response from ACP server)".to_string()
            } else {
                turn.text.clone()
            };
            record_usage(conv, &result).await?;
            let call_id = uuid::Uuid::new_v4().to_string();
            let arguments = json!({"message": message}).to_string();
            let action = json!({
                "source": "agent", "thought": [],
                "reasoning_content": if turn.thoughts.is_empty() { Value::Null } else { json!(turn.thoughts) },
                "thinking_blocks": [],
                "action": {"message": message, "kind": "FinishAction"},
                "tool_name": "finish", "tool_call_id": call_id,
                "tool_call": {"id": call_id, "name": "finish", "arguments": arguments, "origin": "completion"},
                "llm_response_id": uuid::Uuid::new_v4().to_string(),
                "security_risk": "UNKNOWN", "kind": "ActionEvent",
            });
            let stored = conv.append(action).await?;
            let observation = json!({"content": [{"cache_prompt": false, "type": "text", "text": message}],
                                     "is_error": false, "kind": "FinishObservation"});
            conv.append(events::observation(
                "finish",
                &call_id,
                observation,
                events::id(&stored),
            ))
            .await?;
            conv.set_status(ExecutionStatus::Finished).await?;
        }
    }
    Ok(())
}

/// Token counts of a `session/prompt` answer go to the `acp-managed` metrics.
async fn record_usage(conv: &Arc<Conversation>, result: &Value) -> std::io::Result<()> {
    let usage = crate::llm::Usage {
        prompt_tokens: result["usage"]["inputTokens"].as_u64().unwrap_or(0),
        completion_tokens: result["usage"]["outputTokens"].as_u64().unwrap_or(0),
        ..Default::default()
    };
    let model = conv.agent_json()["llm"]["model"]
        .as_str()
        .unwrap_or("acp-managed")
        .to_string();
    let response_id = uuid::Uuid::new_v4().to_string();
    conv.record_usage("acp-managed", &model, &usage, 0.0, &response_id, 0.0)
        .await
}

/// Why a model switch was refused (mapped to the reference's statuses by the server).
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// 400.
    #[error("{0}")]
    Refused(String),
    /// 500: the server failed internally.
    #[error("{0}")]
    Failed(String),
    /// 504: the server did not answer in time.
    #[error("")]
    Timeout,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `POST .../switch_acp_model`: the live session (if any) switches now; the agent records the
/// model either way (a session started later picks it up).
pub async fn switch_model(conv: &Arc<Conversation>, model: &str) -> Result<(), SwitchError> {
    let mut agent = conv.agent_json();
    if agent["kind"] != "ACPAgent" {
        return Err(SwitchError::Refused(
            "switch_acp_model is only supported for ACP conversations.".into(),
        ));
    }
    if model.trim().is_empty() {
        return Err(SwitchError::Refused(
            "model must be a non-empty string".into(),
        ));
    }
    let live = conv.acp.lock().await.clone();
    if let Some(session) = live {
        let timeout = Duration::from_secs_f64(
            agent["acp_prompt_timeout"]
                .as_f64()
                .unwrap_or(1800.0)
                .clamp(1.0, 86_400.0),
        );
        if let Err(e) = set_model(&session, model, timeout).await {
            let (_, _, via_config) = crate::acp::session_models(&session.new_session);
            let call = if via_config {
                "set_config_option(model)"
            } else {
                "set_session_model"
            };
            return Err(match e.rpc_code {
                Some(-32603) => SwitchError::Failed("Internal error".into()),
                Some(_) => {
                    let message = e
                        .detail
                        .split_once("] ")
                        .map(|(_, m)| m)
                        .unwrap_or(&e.detail);
                    SwitchError::Refused(format!(
                        "ACP server rejected {call}(model='{model}'): {message}"
                    ))
                }
                None if e.code == "ACPStartupTimeout" || e.detail.contains("timed out") => {
                    SwitchError::Timeout
                }
                None => SwitchError::Failed(e.detail),
            });
        }
    }
    agent["acp_model"] = json!(model);
    let mut agent_state = conv
        .read_state(|s| Some(s.agent_state.clone()))
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    agent_state["acp_current_model_id"] = json!(model);
    conv.set_fields(
        vec![
            StateField::Agent(agent),
            StateField::AgentState(agent_state),
        ],
        true,
    )
    .await?;
    Ok(())
}
