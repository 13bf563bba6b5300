//! The OpenAI-compatible gateway (`/v1/models`, `/v1/chat/completions`, `/v1/responses`): a
//! model is a saved LLM profile named `openhands_<profile>`; each request runs one agent turn
//! in a conversation (a new one, or the one named by `X-OpenHands-ServerConversation-ID`) and
//! answers with the agent's final response and the conversation's token usage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::conversation::{events, Conversation, ConversationService, ExecutionStatus};
use crate::settings::{profiles, SettingsService};

/// Prefix of gateway model ids.
pub const MODEL_PREFIX: &str = "openhands_";

/// Longest wait for one turn.
const TURN_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a gateway request failed (mapped to the reference's statuses by the server module).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Failed(String),
    #[error("Agent run timed out")]
    Timeout,
    #[error("{0}")]
    TooManyRuns(String),
}

/// One turn to run: the user content parts, extra system text, the model asked for.
#[derive(Debug, Clone)]
pub struct Turn {
    pub model: String,
    pub parts: Vec<Value>,
    pub system: Option<String>,
    pub conversation_id: Option<Uuid>,
}

/// What a finished turn produced.
#[derive(Debug, Clone)]
pub struct TurnResult {
    pub conversation_id: Uuid,
    pub text: String,
    /// Token totals of the conversation (every LLM): prompt, completion, cache read, reasoning.
    pub usage: [u64; 4],
}

/// The gateway over the server's services.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub conversations: Arc<ConversationService>,
    pub settings: Arc<SettingsService>,
    pub workspace: std::path::PathBuf,
}

/// `{"object": "list", "data": [...]}` of the profiles, sorted by id.
pub fn models(profile_names: &[String]) -> Value {
    let mut ids: Vec<String> = profile_names
        .iter()
        .map(|n| format!("{MODEL_PREFIX}{n}"))
        .collect();
    ids.sort();
    let data: Vec<Value> = ids
        .into_iter()
        .map(|id| json!({"id": id, "created": 0, "object": "model", "owned_by": "openhands"}))
        .collect();
    json!({"object": "list", "data": data})
}

/// The text of a message's content (a string, or the `text` parts joined by newlines).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn token_totals(stats: &Value) -> [u64; 4] {
    let mut out = [0u64; 4];
    for m in stats["usage_to_metrics"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        let acc = &m["accumulated_token_usage"];
        for (i, k) in [
            "prompt_tokens",
            "completion_tokens",
            "cache_read_tokens",
            "reasoning_tokens",
        ]
        .iter()
        .enumerate()
        {
            out[i] += acc[*k].as_u64().unwrap_or(0);
        }
    }
    out
}

impl Gateway {
    /// Names of the saved profiles.
    pub async fn profile_names(&self) -> Result<Vec<String>, GatewayError> {
        let list = self
            .settings
            .list_profiles()
            .await
            .map_err(|e| GatewayError::Failed(e.to_string()))?;
        Ok(list["profiles"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect())
    }

    /// The LLM of `model` (`openhands_<profile>`).
    async fn profile_llm(&self, model: &str) -> Result<Value, GatewayError> {
        let name = model
            .strip_prefix(MODEL_PREFIX)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                GatewayError::NotFound(format!(
                    "Unknown OpenHands model '{model}'. Use GET /v1/models."
                ))
            })?;
        if !profiles::valid_name(name) {
            return Err(GatewayError::BadRequest(format!(
                "Invalid profile name: '{name}'. Profile names must be 1-64 characters, start \
                 with a letter or digit, and contain only letters, digits, '.', '_', or '-'."
            )));
        }
        let mut llm = self
            .settings
            .profile_llm(name)
            .await
            .map_err(|_| GatewayError::NotFound(format!("Profile '{name}' not found")))?;
        llm["usage_id"] = json!("default");
        Ok(llm)
    }

    /// Runs one turn and waits for its end.
    pub async fn run(&self, turn: Turn) -> Result<TurnResult, GatewayError> {
        let llm = self.profile_llm(&turn.model).await?;
        let existing = turn
            .conversation_id
            .and_then(|id| self.conversations.get(&id));
        let conv = match existing {
            Some(conv) => {
                if conv.status() == ExecutionStatus::Error {
                    return Err(GatewayError::Failed(
                        "Agent run ended with status: error".into(),
                    ));
                }
                let before = conv.with_events(|e| e.len()).await.unwrap_or(0);
                conv.send_message(Value::Array(turn.parts.clone()), true)
                    .await
                    .map_err(|e| match e {
                        crate::conversation::ConversationError::TooManyRuns(m) => {
                            GatewayError::TooManyRuns(m)
                        }
                        other => GatewayError::Failed(other.to_string()),
                    })?;
                self.wait(&conv, before).await?;
                conv
            }
            None => {
                let mut agent = json!({
                    "kind": "Agent",
                    "llm": llm,
                    "tools": [{"name": "terminal"}, {"name": "file_editor"}, {"name": "task_tracker"}],
                });
                if let Some(sys) = &turn.system {
                    agent["agent_context"] = json!({"system_message_suffix": sys});
                }
                let mut body = json!({
                    "agent": agent,
                    "workspace": {"working_dir": self.workspace.to_string_lossy(), "kind": "LocalWorkspace"},
                    "initial_message": {"role": "user", "content": turn.parts, "run": true},
                    "autotitle": false,
                });
                if let Some(id) = turn.conversation_id {
                    body["conversation_id"] = json!(id.to_string());
                }
                let (conv, _) = self
                    .conversations
                    .create(&body)
                    .await
                    .map_err(|e| GatewayError::Failed(e.to_string()))?;
                self.wait(&conv, 0).await?;
                conv
            }
        };
        let text = conv
            .with_events(events::final_response)
            .await
            .map_err(|e| GatewayError::Failed(e.to_string()))?;
        let stats = conv.read_state(|s| s.stats.clone());
        Ok(TurnResult {
            conversation_id: conv.id,
            text,
            usage: token_totals(&stats),
        })
    }

    /// Waits until the run started by this request has ended (`before`: events before it).
    async fn wait(&self, conv: &Arc<Conversation>, before: usize) -> Result<(), GatewayError> {
        let deadline = Instant::now() + TURN_TIMEOUT;
        let mut saw_running = false;
        loop {
            let st = conv.status();
            saw_running |= st == ExecutionStatus::Running;
            let grown = conv.with_events(|e| e.len()).await.unwrap_or(0) > before + 1;
            let ended = !matches!(st, ExecutionStatus::Running | ExecutionStatus::Idle);
            if ended && (saw_running || grown) && conv.run_ctl().is_none() {
                return match st {
                    ExecutionStatus::Finished => Ok(()),
                    ExecutionStatus::Paused | ExecutionStatus::WaitingForConfirmation => Err(
                        GatewayError::Conflict(format!("Agent run ended with status: {st}")),
                    ),
                    ExecutionStatus::Error | ExecutionStatus::Stuck => Err(GatewayError::Failed(
                        format!("Agent run ended with status: {st}"),
                    )),
                    other => Err(GatewayError::Failed(format!(
                        "Agent run ended with unexpected status: {other}"
                    ))),
                };
            }
            if Instant::now() > deadline {
                return Err(GatewayError::Timeout);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
