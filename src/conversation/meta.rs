//! The typed form of `meta.json`: the reference's `StoredConversation` (the conversation's
//! configuration as created, plus the server-assigned fields). Fields the server reads are
//! typed; the rest stay JSON in the reference's order, and fields this server does not know
//! are kept in `other`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// The reference's `StoredConversation`, field for field.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredConversation {
    /// `LocalWorkspace` with its `working_dir`.
    #[serde(default)]
    pub workspace: Value,
    /// Whether a git worktree was asked for.
    #[serde(default = "no")]
    pub worktree: Value,
    /// Options of that worktree.
    #[serde(default)]
    pub worktree_options: Value,
    /// The id the create request asked for.
    #[serde(default)]
    pub conversation_id: Value,
    /// The conversation that started this one.
    #[serde(default)]
    pub parent_conversation_id: Option<String>,
    /// The policy at creation (a first load after a restart goes back to it).
    #[serde(default = "never_confirm")]
    pub confirmation_policy: Value,
    /// The analyzer at creation (a first load after a restart goes back to it).
    #[serde(default)]
    pub security_analyzer: Value,
    /// The message sent (and run) right after creation.
    #[serde(default)]
    pub initial_message: Value,
    /// Steps a run may take (sub-agents inherit it).
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u64,
    /// Whether stuck detection is on.
    #[serde(default = "yes")]
    pub stuck_detection: Value,
    /// Name → secret (values in plaintext in memory, sealed on disk).
    #[serde(default)]
    pub secrets: Map<String, Value>,
    /// Whether the create request's secrets came sealed.
    #[serde(default = "no")]
    pub secrets_encrypted: Value,
    /// Tool name → Python module, so any client can deserialize the tool events.
    #[serde(default = "empty_object")]
    pub tool_module_qualnames: Value,
    /// Specs of the client-defined tools.
    #[serde(default = "empty_array")]
    pub client_tools: Value,
    /// Additions a launcher made to the agent.
    #[serde(default)]
    pub agent_launch_additions: Value,
    /// Sub-agent definitions the `task` tool can run.
    #[serde(default = "empty_array")]
    pub agent_definitions: Value,
    /// Plugin sources loaded before the first run.
    #[serde(default)]
    pub plugins: Value,
    /// `HookConfig` at creation, or null.
    #[serde(default)]
    pub hook_config: Value,
    /// Tag name → value.
    #[serde(default)]
    pub tags: Map<String, Value>,
    /// The owner, when the launcher set one.
    #[serde(default)]
    pub user_id: Value,
    /// Tracing metadata.
    #[serde(default = "empty_object")]
    pub observability_metadata: Value,
    /// Tracing tags.
    #[serde(default = "empty_array")]
    pub observability_tags: Value,
    /// Tracing span name.
    #[serde(default = "conversation")]
    pub observability_span_name: Value,
    /// Tracing parent span.
    #[serde(default)]
    pub observability_parent_span_context: Value,
    /// Whether the first message titles the conversation.
    #[serde(default = "yes_bool")]
    pub autotitle: bool,
    /// The LLM profile that writes titles.
    #[serde(default)]
    pub title_llm_profile: Value,
    /// The create request's prompt, if any.
    #[serde(default)]
    pub prompt: Value,
    /// The agent profile that launched the conversation.
    #[serde(default)]
    pub launched_agent_profile: Value,
    /// Credentials a runtime needs (always empty here).
    #[serde(default = "empty_array")]
    pub required_runtime_credential_bindings: Value,
    /// The conversation id (hex).
    #[serde(default)]
    pub id: String,
    /// The title (set by the user or written from the first message).
    #[serde(default)]
    pub title: Option<String>,
    /// Metrics snapshot.
    #[serde(default)]
    pub metrics: Value,
    /// Creation time (ISO 8601).
    #[serde(default)]
    pub created_at: String,
    /// Last change of the metadata (ISO 8601).
    #[serde(default)]
    pub updated_at: String,
    /// The conversation this one was forked from.
    #[serde(default)]
    pub forked_from_conversation_id: Option<String>,
    /// The event it was forked at.
    #[serde(default)]
    pub forked_from_event_id: Option<String>,
    /// Fields this server does not know, kept as stored.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

fn no() -> Value {
    json!(false)
}
fn yes() -> Value {
    json!(true)
}
fn yes_bool() -> bool {
    true
}
fn empty_object() -> Value {
    json!({})
}
fn empty_array() -> Value {
    json!([])
}
fn conversation() -> Value {
    json!("conversation")
}
fn never_confirm() -> Value {
    json!({"kind": "NeverConfirm"})
}
fn default_max_iterations() -> u64 {
    500
}

impl Default for StoredConversation {
    fn default() -> Self {
        Self::from_map(Map::new()).unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

impl StoredConversation {
    /// Reads a stored `meta.json` (`Err` names the field of the wrong type).
    pub fn from_map(map: Map<String, Value>) -> Result<Self, serde_json::Error> {
        serde_json::from_value(Value::Object(map))
    }

    /// The metadata as a JSON object, in the reference's field order.
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// The title, when one is set.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }

    /// The hook configuration at creation, when one was given.
    pub fn hooks(&self) -> Option<&Value> {
        Some(&self.hook_config).filter(|h| h.is_object())
    }

    /// A list-valued field as a slice (empty when null).
    pub fn list(v: &Value) -> &[Value] {
        v.as_array().map(Vec::as_slice).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_references_meta_json_round_trips_with_unknown_fields_kept() {
        let stored = json!({
            "workspace": {"working_dir": "/w", "kind": "LocalWorkspace"},
            "worktree": false, "worktree_options": null, "conversation_id": null,
            "parent_conversation_id": null, "confirmation_policy": {"kind": "NeverConfirm"},
            "security_analyzer": null, "initial_message": null, "max_iterations": 30,
            "stuck_detection": true, "secrets": {"K": {"kind": "StaticSecret", "value": "v"}},
            "secrets_encrypted": false, "tool_module_qualnames": {}, "client_tools": [],
            "agent_launch_additions": null, "agent_definitions": [], "plugins": null,
            "hook_config": null, "tags": {"a": "b"}, "user_id": null,
            "observability_metadata": {}, "observability_tags": [],
            "observability_span_name": "conversation",
            "observability_parent_span_context": null, "autotitle": false,
            "title_llm_profile": null, "prompt": null, "launched_agent_profile": null,
            "required_runtime_credential_bindings": [], "id": "0123abcd",
            "title": "T", "metrics": null, "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:01Z", "forked_from_conversation_id": null,
            "forked_from_event_id": null, "a_newer_field": [1],
        });
        let meta = StoredConversation::from_map(stored.as_object().unwrap().clone()).unwrap();
        assert_eq!(meta.max_iterations, 30);
        assert!(!meta.autotitle);
        assert_eq!(meta.title(), Some("T"));
        assert_eq!(Value::Object(meta.to_map()), stored);
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        let bad = json!({"max_iterations": "many"});
        let err = StoredConversation::from_map(bad.as_object().unwrap().clone()).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        assert_eq!(StoredConversation::default().max_iterations, 500);
    }
}
