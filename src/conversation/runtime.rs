//! What a conversation needs to run its agent ([`AgentRuntime`]): its tools, its LLM and the
//! tool definitions offered to the LLM. Built by [`super::agent`] on first use; held by the
//! conversation.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::llm::{LlmClient, LlmSettings, ToolDefinition};
use crate::tools::{Tool, ToolContext};

/// What a conversation needs to run its agent, built on first use.
pub struct AgentRuntime {
    /// The conversation's tools, in the order offered to the LLM.
    pub tools: Tools,
    /// The agent's LLM.
    pub llm: Arc<dyn LlmClient>,
    /// The `llm` object of the agent JSON.
    pub llm_json: Value,
    /// Stats key of the agent LLM.
    pub usage_id: String,
    /// Model name as configured.
    pub model: String,
    /// Definitions offered to the LLM (with `security_risk`/`summary` injected).
    pub definitions: Vec<ToolDefinition>,
    /// Context for tool execution (the cancel token is replaced per run).
    pub base_ctx: ToolContext,
    /// The condenser's LLM, when the agent has an `LLMSummarizingCondenser`.
    pub condenser_llm: Option<Arc<dyn LlmClient>>,
}

/// The tools of one conversation.
#[derive(Clone, Default)]
pub struct Tools(pub Vec<Arc<dyn Tool>>);

impl Tools {
    /// The tool called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.0.iter().find(|t| t.name() == name)
    }

    /// All tools.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.0.iter()
    }
}

/// Reads LLM settings from the agent's `llm` JSON (the model is required).
pub fn llm_settings(v: &Value) -> Result<LlmSettings, String> {
    LlmSettings::from_agent_llm_json(v)
}

/// Settings good enough for bookkeeping (usage id, model) even when the JSON is invalid.
pub(super) fn settings_or_default(v: &Value) -> LlmSettings {
    llm_settings(v).unwrap_or_else(|_| LlmSettings {
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
        usage_id: v
            .get("usage_id")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string(),
        raw: v.clone(),
        ..Default::default()
    })
}

const SECURITY_RISK_DESC: &str =
    "How risky this action is for the user's system and data: LOW for read-only or easily undone work, MEDIUM for changes inside the project, HIGH for destructive, irreversible or external effects.";
const SUMMARY_DESC: &str =
    "A short (about ten words) description of what this call does and to what.";

/// The tool's definition with the `security_risk` (non read-only tools) and `summary`
/// properties placed first.
fn offered_definition(tool: &dyn Tool) -> ToolDefinition {
    let mut def = tool.definition();
    let mut params = match def.parameters.clone() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let old_props = params.shift_remove("properties").and_then(|p| match p {
        Value::Object(m) => Some(m),
        _ => None,
    });
    let mut props = Map::new();
    if !tool.read_only() {
        props.insert(
            "security_risk".into(),
            json!({"type": "string", "description": SECURITY_RISK_DESC, "enum": ["UNKNOWN", "LOW", "MEDIUM", "HIGH"]}),
        );
    }
    let has_summary = old_props
        .as_ref()
        .is_some_and(|p| p.contains_key("summary"));
    if !has_summary {
        props.insert(
            "summary".into(),
            json!({"type": "string", "description": SUMMARY_DESC}),
        );
    }
    for (k, v) in old_props.unwrap_or_default() {
        props.insert(k, v);
    }
    let mut out = Map::new();
    out.insert(
        "type".into(),
        params.shift_remove("type").unwrap_or(json!("object")),
    );
    out.insert("properties".into(), Value::Object(props));
    for (k, v) in params {
        out.insert(k, v);
    }
    def.parameters = Value::Object(out);
    def
}

/// Annotations of the built-in tools (`readOnlyHint`, `destructiveHint`, `idempotentHint`,
/// `openWorldHint`).
pub(super) fn annotations(tool: &dyn Tool) -> Value {
    let (title, ro, de, id, ow) = match tool.name() {
        "terminal" => (Some("terminal"), false, true, false, true),
        "file_editor" => (Some("file_editor"), false, true, false, false),
        "task_tracker" => (None, false, false, true, false),
        "finish" => (Some("finish"), true, false, true, false),
        "think" => (Some("think"), true, false, true, false),
        _ => {
            let ro = tool.read_only();
            (None, ro, !ro, ro, false)
        }
    };
    let mut m = Map::new();
    if let Some(t) = title {
        m.insert("title".into(), json!(t));
    }
    m.insert("readOnlyHint".into(), json!(ro));
    m.insert("destructiveHint".into(), json!(de));
    m.insert("idempotentHint".into(), json!(id));
    m.insert("openWorldHint".into(), json!(ow));
    Value::Object(m)
}

impl AgentRuntime {
    /// A runtime for `llm` (configured by `llm_json`) and `tools`.
    pub fn new(
        llm: Arc<dyn LlmClient>,
        llm_json: &Value,
        tools: Tools,
        base_ctx: ToolContext,
    ) -> Self {
        let settings = settings_or_default(llm_json);
        let definitions = tools
            .iter()
            .map(|t| offered_definition(t.as_ref()))
            .collect();
        AgentRuntime {
            llm,
            usage_id: settings.usage_id,
            model: settings.model,
            llm_json: llm_json.clone(),
            definitions,
            tools,
            base_ctx,
            condenser_llm: None,
        }
    }

    /// Uses `client` for condensation (tests inject fakes; see [`ensure_initialized`]).
    pub fn with_condenser_llm(mut self, client: Arc<dyn LlmClient>) -> Self {
        self.condenser_llm = Some(client);
        self
    }
}
