//! Side calls with the agent's LLM that record no events: titles, `ask_agent`, the goal
//! judge's transcript.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::init::ensure_initialized;
use crate::conversation::history::build_messages;
use crate::conversation::runtime::llm_settings;
use crate::conversation::service::Conversation;
use crate::conversation::ConversationError;
use crate::llm::{self, CompletionRequest, Message, Role, ToolDefinition};

/// A one-off LLM call with the agent's LLM, offering `tools` (the model sees them, e.g. to
/// understand the tool calls in the history; nothing is executed); records usage under
/// `usage_id`.
pub async fn side_call(
    conv: &Arc<Conversation>,
    messages: Vec<Message>,
    tools: Vec<ToolDefinition>,
    usage_id: &str,
) -> Result<String, ConversationError> {
    let agent = conv.agent_json();
    let llm_json = agent.get("llm").cloned().unwrap_or(json!({}));
    let mut settings = llm_settings(&llm_json).map_err(ConversationError::Llm)?;
    settings.usage_id = usage_id.to_string();
    let client = llm::client_for(&settings);
    let started = Instant::now();
    let c = client
        .complete(CompletionRequest {
            messages,
            tools,
            cache_key: Some(conv.id.to_string()),
        })
        .await
        .map_err(|e| ConversationError::Llm(format!("{}: {e}", e.code())))?;
    let cost = crate::conversation::stats::call_cost(&llm_json, &c.usage);
    let latency = if c.latency_secs > 0.0 {
        c.latency_secs
    } else {
        started.elapsed().as_secs_f64()
    };
    conv.record_usage(
        usage_id,
        &settings.model,
        &c.usage,
        cost,
        &c.response_id,
        latency,
    )
    .await?;
    if conv.run_ctl().is_none() {
        conv.persist_state().await?;
    }
    Ok(c.text.unwrap_or_default())
}

/// Generates the conversation title from its first user message (best effort).
pub async fn autotitle(conv: Arc<Conversation>, first_message: String) {
    let prompt = "Write a short, descriptive title (at most 50 characters) for a conversation that begins with the user message below. Reply with the title only, without quotes.";
    let messages = vec![
        Message::text(Role::System, prompt),
        Message::text(
            Role::User,
            first_message.chars().take(2000).collect::<String>(),
        ),
    ];
    let usage_id = conv
        .agent_json()
        .get("llm")
        .and_then(|l| l.get("usage_id"))
        .and_then(Value::as_str)
        .unwrap_or("agent")
        .to_string();
    let title = match side_call(&conv, messages, Vec::new(), &usage_id).await {
        Ok(t) if !t.trim().is_empty() => t.trim().trim_matches('"').trim().to_string(),
        Ok(_) | Err(_) => first_message.trim().to_string(),
    };
    let title: String = title.chars().take(50).collect();
    if conv.is_deleted() || title.is_empty() {
        return;
    }
    if conv.read_meta(|m| m.title.is_none()) {
        if let Err(e) = conv.set_title(Some(title), None).await {
            tracing::warn!(conversation = %conv.id, error = %e, "could not store the title");
        }
    }
}

/// The reference's question prompt (`ask_agent_template.j2`, rendered).
fn ask_agent_prompt(question: &str) -> String {
    format!(
        "<QUESTION>\nBased on the activity so far answer the following question\n\n## Question\n{question}\n\n\n<IMPORTANT>\nThis is a question, do not make any tool call and just answer my question.\n</IMPORTANT>\n</QUESTION>"
    )
}

/// The conversation as the goal judge reads it: every LLM message but the system prompt, as
/// `role: text`, blank ones left out.
pub async fn transcript(conv: &Arc<Conversation>) -> Result<String, ConversationError> {
    let secrets = conv.secret_values();
    let messages = conv
        .with_events(|evs| build_messages(evs, &secrets))
        .await?;
    let lines: Vec<String> = messages
        .iter()
        .filter(|m| m.role != Role::System)
        .filter_map(|m| {
            let text = m.content.join("\n").trim().to_string();
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
                Role::System => "system",
            };
            (!text.is_empty()).then(|| format!("{role}: {text}"))
        })
        .collect();
    Ok(lines.join("\n\n"))
}

/// Answers a question about the conversation without recording events, as the reference does:
/// the conversation's LLM view, then the question in the reference's prompt, with the agent's
/// tools on offer so that the model understands the tool calls in the history.
pub async fn ask_agent(
    conv: &Arc<Conversation>,
    question: &str,
) -> Result<String, ConversationError> {
    let rt = ensure_initialized(conv).await?;
    let secrets = conv.secret_values();
    let mut messages = conv
        .with_events(|evs| build_messages(evs, &secrets))
        .await?;
    messages.push(Message::text(Role::User, ask_agent_prompt(question)));
    side_call(conv, messages, rt.definitions.clone(), "ask-agent-llm").await
}
