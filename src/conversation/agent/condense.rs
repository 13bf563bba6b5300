//! The `LLMSummarizingCondenser`: summarizes the middle of a long history into a
//! `Condensation` event.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::step::StepError;
use crate::conversation::events::{self};
use crate::conversation::runtime::{settings_or_default, AgentRuntime};
use crate::conversation::service::Conversation;
use crate::llm::{CompletionRequest, Message, Role};

/// Settings of an `LLMSummarizingCondenser`.
pub(super) struct CondenserConfig {
    pub(super) llm: Value,
    pub(super) max_size: usize,
    keep_first: usize,
}

impl CondenserConfig {
    pub(super) fn from_agent(agent: &Value) -> Option<Self> {
        let c = agent.get("condenser").filter(|c| c.is_object())?;
        if c.get("kind").and_then(Value::as_str) != Some("LLMSummarizingCondenser") {
            return None;
        }
        Some(CondenserConfig {
            llm: c.get("llm").filter(|l| l.is_object())?.clone(),
            max_size: c
                .get("max_size")
                .and_then(Value::as_u64)
                .unwrap_or(80)
                .max(4) as usize,
            keep_first: c.get("keep_first").and_then(Value::as_u64).unwrap_or(4) as usize,
        })
    }
}

fn render_for_summary(e: &Value) -> String {
    let body = match events::kind(e) {
        "MessageEvent" => format!(
            "{}: {}",
            e.get("llm_message")
                .and_then(|m| m.get("role"))
                .and_then(Value::as_str)
                .unwrap_or("user"),
            events::message_text(e)
        ),
        "ActionEvent" => format!(
            "agent called {} with {}",
            events::str_field(e, "tool_name").unwrap_or(""),
            e.get("tool_call")
                .and_then(|t| t.get("arguments"))
                .and_then(Value::as_str)
                .unwrap_or("{}")
        ),
        "ObservationEvent" => format!(
            "result of {}: {}",
            events::str_field(e, "tool_name").unwrap_or(""),
            events::content_text(e.get("observation").and_then(|o| o.get("content")))
        ),
        "UserRejectObservation" => format!(
            "action rejected: {}",
            events::str_field(e, "rejection_reason").unwrap_or("")
        ),
        "AgentErrorEvent" => format!("error: {}", events::str_field(e, "error").unwrap_or("")),
        _ => String::new(),
    };
    body.chars().take(2000).collect()
}

/// Summarizes the middle of the view with the condenser LLM into a `Condensation` event body;
/// `None` when there is nothing to forget.
pub(super) async fn condense(
    conv: &Arc<Conversation>,
    rt: &AgentRuntime,
    cfg: &CondenserConfig,
    view: &[Value],
) -> Result<Option<Value>, StepError> {
    let keep_tail = (cfg.max_size / 2).saturating_sub(cfg.keep_first + 1);
    let start = cfg.keep_first.min(view.len());
    let end = view.len().saturating_sub(keep_tail).max(start);
    let middle = &view[start..end];
    let forgotten: Vec<Value> = middle
        .iter()
        .filter(|e| !events::id(e).ends_with("-summary"))
        .map(|e| json!(events::id(e)))
        .collect();
    if forgotten.is_empty() {
        return Ok(None);
    }
    let transcript: Vec<String> = middle.iter().map(render_for_summary).collect();
    let messages = vec![
        Message::text(
            Role::System,
            "You compress the history of a software agent's session. Write a concise summary of the events below that keeps everything needed to continue the task: the user's goals, decisions taken, files changed, commands run with their important results, open problems and next steps. Reply with the summary only.",
        ),
        Message::text(Role::User, transcript.join("\n\n")),
    ];
    let settings = settings_or_default(&cfg.llm);
    let Some(client) = rt.condenser_llm.clone() else {
        return Ok(None);
    };
    let started = Instant::now();
    let c = client
        .complete(CompletionRequest {
            messages,
            tools: Vec::new(),
            cache_key: Some(conv.id.to_string()),
        })
        .await
        .map_err(StepError::Llm)?;
    let cost = crate::conversation::stats::call_cost(&cfg.llm, &c.usage);
    let latency = if c.latency_secs > 0.0 {
        c.latency_secs
    } else {
        started.elapsed().as_secs_f64()
    };
    conv.record_usage(
        &settings.usage_id,
        &settings.model,
        &c.usage,
        cost,
        &c.response_id,
        latency,
    )
    .await?;
    Ok(Some(json!({
        "source": "environment",
        "forgotten_event_ids": forgotten,
        "summary": c.text.unwrap_or_default(),
        "summary_offset": start,
        "llm_response_id": c.response_id,
        "kind": "Condensation",
    })))
}
