//! The LLM view of a conversation's history, derived from the persisted events alone (the
//! same events always give the same prompt): convertible events minus condensed ones, the
//! chat messages built from them, and the actions still waiting for an answer.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::events::{self, text};
use crate::llm::{Message, Role, ToolCall};

/// ActionEvents (with an action) that have no observation, rejection or error yet.
pub fn unanswered_actions(evs: &[Value]) -> Vec<Value> {
    let mut answered_actions: HashSet<&str> = HashSet::new();
    let mut answered_calls: HashSet<&str> = HashSet::new();
    for e in evs {
        match events::kind(e) {
            "ObservationEvent" | "UserRejectObservation" => {
                if let Some(a) = events::str_field(e, "action_id") {
                    answered_actions.insert(a);
                }
            }
            "AgentErrorEvent" => {
                if let Some(c) = events::str_field(e, "tool_call_id") {
                    answered_calls.insert(c);
                }
            }
            _ => {}
        }
    }
    evs.iter()
        .filter(|e| {
            events::kind(e) == "ActionEvent"
                && e.get("action").is_some_and(|a| !a.is_null())
                && !answered_actions.contains(events::id(e))
                && !events::str_field(e, "tool_call_id").is_some_and(|c| answered_calls.contains(c))
        })
        .cloned()
        .collect()
}

/// The actions waiting for confirmation (same as [`unanswered_actions`]).
pub fn pending_actions(evs: &[Value]) -> Vec<Value> {
    unanswered_actions(evs)
}

/// Replaces secret values with `<secret-hidden>`.
pub fn mask_secrets(s: &str, secrets: &[(String, String)]) -> String {
    let mut out = s.to_string();
    for (_, v) in secrets {
        if v.len() >= 3 {
            out = out.replace(v.as_str(), "<secret-hidden>");
        }
    }
    out
}

/// The LLM text of an `ObservationEvent`: derived from the stored observation (never from
/// memory, so a reload gives the same prompt), secret values masked.
fn observation_text(ev: &Value, secrets: &[(String, String)]) -> String {
    let obs = ev.get("observation").unwrap_or(&Value::Null);
    mask_secrets(&crate::tools::observation_llm_text(obs), secrets)
}

const CONVERTIBLE: [&str; 6] = [
    "SystemPromptEvent",
    "MessageEvent",
    "ActionEvent",
    "ObservationEvent",
    "UserRejectObservation",
    "AgentErrorEvent",
];

/// The events the LLM sees: LLM-convertible events minus those forgotten by condensations,
/// with the latest summary inserted as a user message at its offset.
pub fn llm_view(evs: &[Value]) -> Vec<Value> {
    let mut forgotten: HashSet<&str> = HashSet::new();
    let mut summary: Option<(String, usize, String)> = None;
    for e in evs {
        if events::kind(e) == "Condensation" {
            if let Some(ids) = e.get("forgotten_event_ids").and_then(Value::as_array) {
                forgotten.extend(ids.iter().filter_map(Value::as_str));
            }
            if let Some(s) = events::str_field(e, "summary") {
                let off = e.get("summary_offset").and_then(Value::as_u64).unwrap_or(0) as usize;
                summary = Some((s.to_string(), off, events::id(e).to_string()));
            }
        }
    }
    let mut view: Vec<Value> = evs
        .iter()
        .filter(|e| CONVERTIBLE.contains(&events::kind(e)) && !forgotten.contains(events::id(e)))
        .cloned()
        .collect();
    if let Some((text_body, off, id)) = summary {
        let msg = json!({
            "id": format!("{id}-summary"),
            "source": "environment",
            "llm_message": {"role": "user", "content": [text(&text_body)]},
            "kind": "MessageEvent",
        });
        view.insert(off.min(view.len()), msg);
    }
    view
}

/// True when a `CondensationRequest` came after the last `Condensation`.
pub(super) fn condensation_requested(evs: &[Value]) -> bool {
    for e in evs.iter().rev() {
        match events::kind(e) {
            "Condensation" => return false,
            "CondensationRequest" => return true,
            _ => {}
        }
    }
    false
}

/// Converts the event log into the chat the LLM sees.
pub fn build_messages(evs: &[Value], secrets: &[(String, String)]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    let mut answered: HashSet<String> = HashSet::new();
    for e in evs {
        if matches!(
            events::kind(e),
            "ObservationEvent" | "UserRejectObservation" | "AgentErrorEvent"
        ) {
            if let Some(c) = events::str_field(e, "tool_call_id") {
                answered.insert(c.to_string());
            }
        }
    }
    let mut last_response: Option<String> = None;
    for e in evs {
        let kind = events::kind(e);
        if kind != "ActionEvent" {
            last_response = None;
        }
        match kind {
            "SystemPromptEvent" => {
                let mut m = Message::text(
                    Role::System,
                    e.get("system_prompt")
                        .and_then(|t| t.get("text"))
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                );
                if let Some(d) = e
                    .get("dynamic_context")
                    .and_then(|t| t.get("text"))
                    .and_then(Value::as_str)
                {
                    m.content.push(d.to_string());
                }
                out.push(m);
            }
            "MessageEvent" => {
                let role = e
                    .get("llm_message")
                    .and_then(|m| m.get("role"))
                    .and_then(Value::as_str)
                    .unwrap_or("user");
                let body = events::message_text(e);
                if role == "assistant" {
                    let mut m = Message::text(Role::Assistant, body);
                    m.reasoning_content = e
                        .get("llm_message")
                        .and_then(|m| m.get("reasoning_content"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    out.push(m);
                } else {
                    let r = if role == "system" {
                        Role::System
                    } else {
                        Role::User
                    };
                    match out.last_mut() {
                        Some(prev)
                            if r == Role::User
                                && prev.role == Role::User
                                && prev.tool_calls.is_empty() =>
                        {
                            prev.content.push(body)
                        }
                        _ => out.push(Message::text(r, body)),
                    }
                }
            }
            "ActionEvent" => {
                let call_id = events::str_field(e, "tool_call_id")
                    .unwrap_or("")
                    .to_string();
                if !answered.contains(&call_id) {
                    continue;
                }
                let tc = e.get("tool_call");
                let call = ToolCall {
                    id: call_id,
                    name: tc
                        .and_then(|t| events::str_field(t, "name"))
                        .or(events::str_field(e, "tool_name"))
                        .unwrap_or("")
                        .to_string(),
                    arguments: tc
                        .and_then(|t| events::str_field(t, "arguments"))
                        .unwrap_or("{}")
                        .to_string(),
                    responses_item_id: tc
                        .and_then(|t| events::str_field(t, "responses_item_id"))
                        .map(str::to_owned),
                };
                let resp = events::str_field(e, "llm_response_id").map(str::to_owned);
                let same = resp.is_some() && resp == last_response;
                match out.last_mut() {
                    Some(prev) if same && prev.role == Role::Assistant => {
                        prev.tool_calls.push(call)
                    }
                    _ => {
                        let thought = events::content_text(e.get("thought"));
                        let mut m = Message::text(Role::Assistant, thought);
                        if m.content.iter().all(|c| c.is_empty()) {
                            m.content.clear();
                        }
                        m.tool_calls.push(call);
                        m.reasoning_content =
                            events::str_field(e, "reasoning_content").map(str::to_owned);
                        m.responses_reasoning_item = e.get("responses_reasoning_item").cloned();
                        out.push(m);
                    }
                }
                last_response = resp;
            }
            "ObservationEvent" | "UserRejectObservation" | "AgentErrorEvent" => {
                let body = match kind {
                    "ObservationEvent" => observation_text(e, secrets),
                    "UserRejectObservation" => format!(
                        "Action rejected: {}",
                        events::str_field(e, "rejection_reason")
                            .unwrap_or("User rejected the action")
                    ),
                    _ => events::str_field(e, "error").unwrap_or("").to_string(),
                };
                let mut m = Message::text(Role::Tool, body);
                m.tool_call_id = events::str_field(e, "tool_call_id").map(str::to_owned);
                m.name = events::str_field(e, "tool_name").map(str::to_owned);
                out.push(m);
            }
            _ => {}
        }
    }
    // Tool results must follow an assistant message that made the call.
    let mut called: HashSet<String> = HashSet::new();
    out.retain(|m| {
        if m.role == Role::Assistant {
            called.extend(m.tool_calls.iter().map(|c| c.id.clone()));
            true
        } else if m.role == Role::Tool {
            m.tool_call_id
                .as_ref()
                .is_some_and(|id| called.contains(id))
        } else {
            true
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_results_without_calls_are_dropped_and_pending_calls_hidden() {
        let evs = vec![
            json!({"id": "s", "kind": "SystemPromptEvent", "system_prompt": {"text": "sys"}}),
            json!({"id": "u", "kind": "MessageEvent", "source": "user", "llm_message": {"role": "user", "content": [{"type": "text", "text": "hi"}]}}),
            json!({"id": "a1", "kind": "ActionEvent", "tool_name": "terminal", "tool_call_id": "c1", "llm_response_id": "r1",
                   "action": {"command": "ls"}, "tool_call": {"id": "c1", "name": "terminal", "arguments": "{}"}, "thought": []}),
            json!({"id": "a2", "kind": "ActionEvent", "tool_name": "terminal", "tool_call_id": "c2", "llm_response_id": "r1",
                   "action": {"command": "pwd"}, "tool_call": {"id": "c2", "name": "terminal", "arguments": "{}"}, "thought": []}),
            json!({"id": "o1", "kind": "ObservationEvent", "tool_name": "terminal", "tool_call_id": "c1", "action_id": "a1",
                   "observation": {"content": [{"type": "text", "text": "out"}], "is_error": false}}),
        ];
        let msgs = build_messages(&evs, &[]);
        assert_eq!(msgs.len(), 4);
        assert_eq!(
            msgs[2].tool_calls.len(),
            1,
            "the unanswered call is not replayed"
        );
        assert_eq!(msgs[3].content, vec!["out".to_string()]);
        let pending = pending_actions(&evs);
        assert_eq!(pending.len(), 1);
        assert_eq!(events::id(&pending[0]), "a2");
    }
}
