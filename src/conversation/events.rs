//! Event JSON as the SDK models it (`kind` discriminators, nulls omitted), monotonic naive-local
//! timestamps, and constructors for the events the server emits. Events are kept as JSON objects
//! so events written by the reference round-trip untouched.

use chrono::{Local, NaiveDateTime};
use serde_json::{json, Map, Value};

/// Produces strictly increasing naive local timestamps with six fractional digits.
#[derive(Debug, Default)]
pub struct Clock {
    last: Option<NaiveDateTime>,
}

const TS_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

impl Clock {
    /// Remembers `ts` (an existing event's timestamp) so later ones sort after it.
    pub fn observe(&mut self, ts: &str) {
        if let Ok(t) = NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S%.f") {
            if self.last.is_none_or(|l| t > l) {
                self.last = Some(t);
            }
        }
    }

    /// The next timestamp.
    pub fn tick(&mut self) -> String {
        let mut now = Local::now().naive_local();
        if let Some(last) = self.last {
            if now <= last {
                now = last + chrono::Duration::microseconds(1);
            }
        }
        self.last = Some(now);
        now.format(TS_FORMAT).to_string()
    }
}

/// `TextContent` as the SDK dumps it.
pub fn text(s: &str) -> Value {
    json!({"cache_prompt": false, "type": "text", "text": s})
}

/// Joins the text parts of a content list (`[TextContent|ImageContent]`).
pub fn content_text(content: Option<&Value>) -> String {
    let mut out = String::new();
    if let Some(items) = content.and_then(Value::as_array) {
        for item in items {
            if let Some(t) = item.get("text").and_then(Value::as_str) {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(t);
            }
        }
    }
    out
}

/// The `kind` of an event.
pub fn kind(ev: &Value) -> &str {
    ev.get("kind").and_then(Value::as_str).unwrap_or("")
}

/// The `id` of an event.
pub fn id(ev: &Value) -> &str {
    ev.get("id").and_then(Value::as_str).unwrap_or("")
}

/// A string field of an event.
pub fn str_field<'a>(ev: &'a Value, key: &str) -> Option<&'a str> {
    ev.get(key).and_then(Value::as_str)
}

/// Builds the final event: `id`, `timestamp`, `source`, `parent_id`, the body's fields, `kind`.
pub fn finalize(body: Value, id: &str, timestamp: &str, parent_id: Option<&str>) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), Value::String(id.into()));
    out.insert("timestamp".into(), Value::String(timestamp.into()));
    let Value::Object(mut body) = body else {
        return Value::Object(out);
    };
    out.insert(
        "source".into(),
        body.shift_remove("source")
            .unwrap_or_else(|| "environment".into()),
    );
    if let Some(p) = parent_id {
        out.insert("parent_id".into(), Value::String(p.into()));
    }
    let kind = body.shift_remove("kind");
    for (k, v) in body {
        if !v.is_null() {
            out.insert(k, v);
        }
    }
    if let Some(k) = kind {
        out.insert("kind".into(), k);
    }
    Value::Object(out)
}

/// `ConversationStateUpdateEvent` for one state field.
pub fn state_update(key: &str, value: Value) -> Value {
    json!({"source": "environment", "key": key, "value": value, "kind": "ConversationStateUpdateEvent"})
}

/// The agent's answer to the latest user message: the `finish` message, else the text of the
/// last agent `MessageEvent` after it (empty when there is none).
pub fn final_response(evs: &[Value]) -> String {
    for e in evs.iter().rev() {
        match kind(e) {
            "ActionEvent" if str_field(e, "tool_name") == Some("finish") => {
                if let Some(m) = e
                    .get("action")
                    .and_then(|a| a.get("message"))
                    .and_then(Value::as_str)
                {
                    return m.to_string();
                }
            }
            "MessageEvent" if str_field(e, "source") == Some("agent") => return message_text(e),
            "MessageEvent" if str_field(e, "source") == Some("user") => return String::new(),
            _ => {}
        }
    }
    String::new()
}

/// A user-role `MessageEvent` from `source` with the given content list.
pub fn user_message(source: &str, content: Value) -> Value {
    json!({
        "source": source,
        "llm_message": {"role": "user", "content": content, "thinking_blocks": []},
        "activated_skills": [],
        "extended_content": [],
        "kind": "MessageEvent",
    })
}

/// The agent's final text answer.
pub fn agent_message(text_body: &str, reasoning: Option<&str>, response_id: &str) -> Value {
    let mut msg = Map::new();
    msg.insert("role".into(), "assistant".into());
    msg.insert("content".into(), json!([text(text_body)]));
    if let Some(r) = reasoning {
        msg.insert("reasoning_content".into(), r.into());
    }
    msg.insert("thinking_blocks".into(), json!([]));
    json!({
        "source": "agent",
        "llm_message": Value::Object(msg),
        "llm_response_id": response_id,
        "activated_skills": [],
        "extended_content": [],
        "kind": "MessageEvent",
    })
}

/// `ErrorClassification` for an agent-side tool error the model can retry.
pub fn retryable_agent_action() -> Value {
    json!({"kind": "agent_action", "retryable": true, "user_action": "retry"})
}

/// `ErrorClassification` for an internal failure.
pub fn internal_error() -> Value {
    json!({"kind": "internal", "retryable": false, "user_action": "none"})
}

/// `AgentErrorEvent` answering one tool call.
pub fn agent_error(
    tool_name: &str,
    tool_call_id: &str,
    error: &str,
    classification: Value,
) -> Value {
    json!({
        "source": "agent",
        "tool_name": tool_name,
        "tool_call_id": tool_call_id,
        "error": error,
        "classification": classification,
        "kind": "AgentErrorEvent",
    })
}

/// `ConversationErrorEvent` with a classification derived from the code.
pub fn conversation_error(code: &str, detail: &str) -> Value {
    let classification = match code {
        "LLMAuthenticationError" => {
            json!({"kind": "auth", "retryable": false, "user_action": "settings"})
        }
        "LLMRateLimitError" => {
            json!({"kind": "rate_limit", "retryable": true, "user_action": "retry"})
        }
        "LLMTimeoutError" | "LLMServiceUnavailableError" | "LLMNoResponseError" => {
            json!({"kind": "transient", "retryable": true, "user_action": "retry"})
        }
        "LLMBadRequestError" | "LLMContextWindowExceedError" => {
            json!({"kind": "config", "retryable": false, "user_action": "settings"})
        }
        "MaxIterationsReached" | "MaxBudgetReached" => {
            json!({"kind": "agent_action", "retryable": false, "user_action": "none"})
        }
        _ => json!({"kind": "unknown", "retryable": false, "user_action": "none"}),
    };
    json!({
        "source": "environment",
        "code": code,
        "detail": detail,
        "classification": classification,
        "kind": "ConversationErrorEvent",
    })
}

/// `ObservationEvent` for an executed action.
pub fn observation(
    tool_name: &str,
    tool_call_id: &str,
    observation: Value,
    action_id: &str,
) -> Value {
    json!({
        "source": "environment",
        "tool_name": tool_name,
        "tool_call_id": tool_call_id,
        "observation": observation,
        "action_id": action_id,
        "extended_content": [],
        "kind": "ObservationEvent",
    })
}

/// `UserRejectObservation` for a rejected action.
pub fn user_reject(
    tool_name: &str,
    tool_call_id: &str,
    reason: &str,
    source: &str,
    action_id: &str,
) -> Value {
    json!({
        "source": "environment",
        "tool_name": tool_name,
        "tool_call_id": tool_call_id,
        "rejection_reason": reason,
        "rejection_source": source,
        "action_id": action_id,
        "kind": "UserRejectObservation",
    })
}

/// An event with no fields besides the base ones (`PauseEvent`, `InterruptEvent`,
/// `CondensationRequest`).
pub fn bare(kind: &str, source: &str) -> Value {
    json!({"source": source, "kind": kind})
}

/// True for the LLM-convertible kinds whose `parent_id` chain forms the conversation tree.
pub fn moves_head(ev: &Value) -> bool {
    kind(ev) != "ConversationStateUpdateEvent"
}

/// Text of a `MessageEvent` (its content and extended content).
pub fn message_text(ev: &Value) -> String {
    let mut t = content_text(ev.get("llm_message").and_then(|m| m.get("content")));
    let ext = content_text(ev.get("extended_content"));
    if !ext.is_empty() {
        t.push('\n');
        t.push_str(&ext);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_strictly_monotonic_with_micros() {
        let mut c = Clock::default();
        c.observe("2999-01-01T00:00:00.000001");
        let a = c.tick();
        let b = c.tick();
        assert_eq!(a, "2999-01-01T00:00:00.000002");
        assert!(b > a);
        assert_eq!(b.len(), 26);
    }

    #[test]
    fn finalize_orders_fields_and_drops_nulls() {
        let ev = finalize(
            json!({"source": "user", "x": null, "y": 1, "kind": "K"}),
            "i",
            "t",
            Some("p"),
        );
        let keys: Vec<&String> = ev.as_object().expect("obj").keys().collect();
        assert_eq!(
            keys,
            ["id", "timestamp", "source", "parent_id", "y", "kind"]
        );
    }
}
