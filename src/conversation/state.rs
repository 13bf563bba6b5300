//! The typed form of a conversation's documents: the reference's `ConversationState`
//! (`base_state.json`, the `full_state` event, the state half of `ConversationInfo`) and the
//! changes the server makes to it ([`StateField`]).
//!
//! Fields the server reads or writes are typed; the models it only stores and shows (the agent,
//! the workspace, the confirmation policy, stats…) stay JSON, and fields this server does not
//! know (a newer reference's) are kept in `other`, so a load and a save change nothing.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Map, Value};

use super::ExecutionStatus;

/// The reference's `ConversationState`, field for field and in its order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConversationState {
    /// The conversation id (dashed UUID).
    #[serde(default)]
    pub id: Value,
    /// `AgentBase` (secrets in plaintext in memory).
    #[serde(default = "empty_object")]
    pub agent: Value,
    /// `BaseWorkspace`; `working_dir` is read.
    #[serde(default = "empty_object")]
    pub workspace: Value,
    /// Set on every save and view to the conversation's directory.
    #[serde(default)]
    pub persistence_dir: Option<String>,
    /// Steps a run may take.
    #[serde(default = "default_max_iterations")]
    pub max_iterations: u64,
    /// Whether stuck detection stops repetitive runs.
    #[serde(default = "yes")]
    pub stuck_detection: bool,
    /// Where the run stands; a stored value this server does not know reads as `error`, so
    /// nothing runs on a corrupted state.
    #[serde(default, deserialize_with = "lenient_status")]
    pub execution_status: ExecutionStatus,
    /// `ConfirmationPolicyBase` (`kind` is read).
    #[serde(default = "never_confirm")]
    pub confirmation_policy: Value,
    /// `SecurityAnalyzerBase` or null.
    #[serde(default)]
    pub security_analyzer: Value,
    /// Names of the knowledge skills activated so far.
    #[serde(default = "empty_array")]
    pub activated_knowledge_skills: Value,
    /// Path rules activated so far.
    #[serde(default = "empty_array")]
    pub activated_path_rules: Value,
    /// Skills invoked so far.
    #[serde(default = "empty_array")]
    pub invoked_skills: Value,
    /// Action id → reason, for actions a hook blocked.
    #[serde(default)]
    pub blocked_actions: Map<String, Value>,
    /// Message id → reason, for user messages a hook blocked.
    #[serde(default)]
    pub blocked_messages: Map<String, Value>,
    /// The newest user message.
    #[serde(default)]
    pub last_user_message_id: Option<String>,
    /// The head of the event log (derived from the log when it is loaded).
    #[serde(default)]
    pub leaf_event_id: Option<String>,
    /// Whether the head was moved before the first event.
    #[serde(default)]
    pub head_is_empty: bool,
    /// `ConversationStats` (see [`super::stats`]).
    #[serde(default = "empty_stats")]
    pub stats: Value,
    /// `SecretRegistry`: `{"secret_sources": {name: secret}}`.
    #[serde(default = "empty_registry")]
    pub secret_registry: Value,
    /// Tag name → value.
    #[serde(default)]
    pub tags: Map<String, Value>,
    /// State an ACP agent keeps between runs.
    #[serde(default = "empty_object")]
    pub agent_state: Value,
    /// `HookConfig` or null.
    #[serde(default)]
    pub hook_config: Value,
    /// Fields this server does not know, kept as stored.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

fn empty_object() -> Value {
    json!({})
}
fn empty_array() -> Value {
    json!([])
}
fn empty_stats() -> Value {
    json!({"usage_to_metrics": {}})
}
fn empty_registry() -> Value {
    json!({"secret_sources": {}})
}
fn never_confirm() -> Value {
    json!({"kind": "NeverConfirm"})
}
fn default_max_iterations() -> u64 {
    500
}
fn yes() -> bool {
    true
}

fn lenient_status<'de, D: Deserializer<'de>>(d: D) -> Result<ExecutionStatus, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => ExecutionStatus::Idle,
        Some(v) => v
            .as_str()
            .and_then(ExecutionStatus::parse)
            .unwrap_or(ExecutionStatus::Error),
    })
}

impl Default for ConversationState {
    fn default() -> Self {
        Self::from_map(Map::new())
    }
}

impl ConversationState {
    /// A state read from disk (or made at creation from the agent alone): missing fields take
    /// the conversation's id and its creation-time configuration from `meta`, then the
    /// reference's defaults.
    pub fn with_defaults(
        mut stored: Map<String, Value>,
        id: uuid::Uuid,
        meta: &super::StoredConversation,
    ) -> Self {
        let from_meta = [
            ("id", json!(id.to_string())),
            ("workspace", meta.workspace.clone()),
            ("max_iterations", json!(meta.max_iterations)),
            ("stuck_detection", meta.stuck_detection.clone()),
            ("confirmation_policy", meta.confirmation_policy.clone()),
            ("security_analyzer", meta.security_analyzer.clone()),
            ("tags", Value::Object(meta.tags.clone())),
        ];
        for (k, v) in from_meta {
            if !stored.contains_key(k) && !v.is_null() {
                stored.insert(k.into(), v);
            }
        }
        Self::from_map(stored)
    }

    /// Reads a stored state. A field of the wrong type is replaced by its default (and
    /// logged): the conversation stays loadable, as it was before the state was typed.
    pub fn from_map(map: Map<String, Value>) -> Self {
        match serde_json::from_value::<Self>(Value::Object(map.clone())) {
            Ok(s) => s,
            Err(first) => {
                let mut out: Self = serde_json::from_value(json!({})).unwrap_or_else(|_| {
                    unreachable!("every field of ConversationState has a default")
                });
                let mut bad = Vec::new();
                for (k, v) in map {
                    let mut probe = Map::new();
                    probe.insert(k.clone(), v.clone());
                    match serde_json::from_value::<Self>(Value::Object(probe)) {
                        Ok(one) => out.take_field(&k, one),
                        Err(_) => bad.push(k),
                    }
                }
                tracing::warn!(error = %first, fields = ?bad, "state fields of the wrong type were reset to their defaults");
                out
            }
        }
    }

    /// Copies field `key` from `from` (a state read from that one field).
    fn take_field(&mut self, key: &str, from: Self) {
        let mut mine = self.to_map();
        if let Some(v) = from.to_map().shift_remove(key) {
            mine.insert(key.to_string(), v);
        }
        if let Ok(s) = serde_json::from_value(Value::Object(mine)) {
            *self = s;
        }
    }

    /// The state as a JSON object, in the reference's field order.
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        }
    }

    /// The working directory of the workspace (`.` when absent).
    pub fn working_dir(&self) -> &str {
        self.workspace
            .get("working_dir")
            .and_then(Value::as_str)
            .unwrap_or(".")
    }

    /// `secret_registry.secret_sources`: name → secret.
    pub fn secret_sources(&self) -> Option<&Map<String, Value>> {
        self.secret_registry
            .get("secret_sources")
            .and_then(Value::as_object)
    }

    /// The hook configuration, when one is set.
    pub fn hooks(&self) -> Option<&Value> {
        Some(&self.hook_config).filter(|h| h.is_object())
    }

    /// Applies one change.
    pub fn apply(&mut self, field: StateField) {
        match field {
            StateField::ExecutionStatus(s) => self.execution_status = s,
            StateField::Agent(v) => self.agent = v,
            StateField::AgentState(v) => self.agent_state = v,
            StateField::ConfirmationPolicy(v) => self.confirmation_policy = v,
            StateField::SecurityAnalyzer(v) => self.security_analyzer = v,
            StateField::HookConfig(v) => self.hook_config = v,
            StateField::LastUserMessageId(id) => self.last_user_message_id = Some(id),
            StateField::BlockedMessages(m) => self.blocked_messages = m,
            StateField::LeafEventId(id) => self.leaf_event_id = id,
            StateField::HeadIsEmpty(b) => self.head_is_empty = b,
            StateField::Stats(v) => self.stats = v,
            StateField::SecretRegistry(v) => self.secret_registry = v,
            StateField::Tags(m) => self.tags = m,
        }
    }
}

/// One change the server makes to a [`ConversationState`]; each is also the
/// `ConversationStateUpdateEvent` (`key`, `value`) announcing it.
#[derive(Debug, Clone, PartialEq)]
pub enum StateField {
    /// `execution_status`.
    ExecutionStatus(ExecutionStatus),
    /// `agent` (plugins loaded, model switched, ACP agent updated).
    Agent(Value),
    /// `agent_state`.
    AgentState(Value),
    /// `confirmation_policy`.
    ConfirmationPolicy(Value),
    /// `security_analyzer`.
    SecurityAnalyzer(Value),
    /// `hook_config`.
    HookConfig(Value),
    /// `last_user_message_id`.
    LastUserMessageId(String),
    /// `blocked_messages`.
    BlockedMessages(Map<String, Value>),
    /// `leaf_event_id` (null: before the first event).
    LeafEventId(Option<String>),
    /// `head_is_empty`.
    HeadIsEmpty(bool),
    /// `stats` (the event carries [`super::stats::snapshot`] of it).
    Stats(Value),
    /// `secret_registry`.
    SecretRegistry(Value),
    /// `tags`.
    Tags(Map<String, Value>),
}

impl StateField {
    /// The field's name on the wire.
    pub fn key(&self) -> &'static str {
        match self {
            Self::ExecutionStatus(_) => "execution_status",
            Self::Agent(_) => "agent",
            Self::AgentState(_) => "agent_state",
            Self::ConfirmationPolicy(_) => "confirmation_policy",
            Self::SecurityAnalyzer(_) => "security_analyzer",
            Self::HookConfig(_) => "hook_config",
            Self::LastUserMessageId(_) => "last_user_message_id",
            Self::BlockedMessages(_) => "blocked_messages",
            Self::LeafEventId(_) => "leaf_event_id",
            Self::HeadIsEmpty(_) => "head_is_empty",
            Self::Stats(_) => "stats",
            Self::SecretRegistry(_) => "secret_registry",
            Self::Tags(_) => "tags",
        }
    }

    /// The value its state-update event carries.
    pub fn event_value(&self) -> Value {
        match self {
            Self::ExecutionStatus(s) => json!(s),
            Self::Agent(v)
            | Self::AgentState(v)
            | Self::ConfirmationPolicy(v)
            | Self::SecurityAnalyzer(v)
            | Self::HookConfig(v)
            | Self::SecretRegistry(v) => v.clone(),
            Self::Stats(v) => super::stats::snapshot(v),
            Self::LastUserMessageId(id) => json!(id),
            Self::BlockedMessages(m) | Self::Tags(m) => Value::Object(m.clone()),
            Self::LeafEventId(id) => json!(id),
            Self::HeadIsEmpty(b) => json!(b),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_state_round_trips_unchanged_with_unknown_fields_kept() {
        let stored = json!({
            "id": "6f1c2e1e-0000-4000-8000-000000000001",
            "agent": {"kind": "Agent", "llm": {"model": "m"}},
            "workspace": {"working_dir": "/w", "kind": "LocalWorkspace"},
            "persistence_dir": "/p",
            "max_iterations": 7,
            "stuck_detection": false,
            "execution_status": "waiting_for_confirmation",
            "confirmation_policy": {"kind": "AlwaysConfirm"},
            "security_analyzer": null,
            "activated_knowledge_skills": ["a"],
            "activated_path_rules": [],
            "invoked_skills": [],
            "blocked_actions": {},
            "blocked_messages": {"m1": "no"},
            "last_user_message_id": "m1",
            "leaf_event_id": "e9",
            "head_is_empty": false,
            "stats": {"usage_to_metrics": {}},
            "secret_registry": {"secret_sources": {}},
            "tags": {"team": "x"},
            "agent_state": {},
            "hook_config": null,
            "from_a_newer_reference": {"x": 1},
        });
        let state = ConversationState::from_map(stored.as_object().unwrap().clone());
        assert_eq!(
            state.execution_status,
            ExecutionStatus::WaitingForConfirmation
        );
        assert_eq!(state.max_iterations, 7);
        assert_eq!(state.working_dir(), "/w");
        assert_eq!(Value::Object(state.to_map()), stored);
    }

    #[test]
    fn missing_fields_take_the_references_defaults_and_bad_ones_do_not_lose_the_rest() {
        let state = ConversationState::from_map(Map::new());
        assert_eq!(state.execution_status, ExecutionStatus::Idle);
        assert_eq!(state.max_iterations, 500);
        assert!(state.stuck_detection);
        assert_eq!(state.confirmation_policy["kind"], "NeverConfirm");
        let bad = json!({"execution_status": "dancing", "max_iterations": "many",
            "last_user_message_id": "m7", "tags": {"a": "b"}});
        let state = ConversationState::from_map(bad.as_object().unwrap().clone());
        assert_eq!(state.execution_status, ExecutionStatus::Error);
        assert_eq!(state.max_iterations, 500);
        assert_eq!(state.last_user_message_id.as_deref(), Some("m7"));
        assert_eq!(state.tags["a"], "b");
    }

    #[test]
    fn each_change_sets_its_field_and_names_it_as_the_wire_does() {
        let mut state = ConversationState::default();
        let changes = [
            StateField::ExecutionStatus(ExecutionStatus::Running),
            StateField::LastUserMessageId("m".into()),
            StateField::LeafEventId(None),
            StateField::HeadIsEmpty(true),
            StateField::Tags(Map::new()),
        ];
        for c in changes {
            let key = c.key();
            let value = c.event_value();
            state.apply(c);
            assert_eq!(state.to_map()[key], value, "{key}");
        }
    }
}
