//! The agent's tools, with the reference's names, parameter schemas, action and observation shapes:
//! `terminal`, `file_editor`, `task_tracker`, `think`, `finish`.
//!
//! The agent loop builds a [`ToolSet`] per conversation, offers [`Tool::definition`]s to the LLM,
//! turns tool-call arguments into action JSON with [`Tool::parse_action`] and runs them with
//! [`Tool::execute`].

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::llm::ToolDefinition;

/// What a tool needs to know about the conversation it serves.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// The conversation's working directory (commands start here; relative paths resolve here).
    pub working_dir: PathBuf,
    /// `<conversations_path>/<hex id>`: where tools may keep files (e.g. full terminal output).
    pub persistence_dir: PathBuf,
    /// Cancelled when the conversation is interrupted: a running tool stops as soon as it can.
    pub cancel: CancellationToken,
}

/// The result of running one action.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// The observation as the SDK models it, with its `kind` (e.g. `TerminalObservation`).
    pub observation: Value,
    /// The text the LLM receives as the tool result.
    pub llm_text: String,
}

/// A tool failure that becomes an `AgentErrorEvent` ("Error executing tool '<name>': <msg>").
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

/// One tool the agent can call.
#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    /// The LLM-facing function name (`terminal`, `file_editor`, ...).
    fn name(&self) -> &'static str;
    /// The SDK class name (`TerminalTool`, ...).
    fn kind(&self) -> &'static str;
    /// Description and JSON schema offered to the LLM, without `security_risk` and `summary`
    /// (the agent injects those).
    fn definition(&self) -> ToolDefinition;
    /// True for tools that never change anything (`finish`, `think`): no `security_risk`.
    fn read_only(&self) -> bool;
    /// Validates the model's arguments (with `security_risk`/`summary` removed) into the action
    /// JSON stored on the `ActionEvent` (with defaults filled in and its `kind`). The error text
    /// is the validation message the agent reports.
    fn parse_action(&self, args: &Map<String, Value>) -> Result<Value, String>;
    /// Runs an action produced by [`Tool::parse_action`].
    async fn execute(&self, action: &Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError>;
}

/// The tools of one conversation, in the order offered to the LLM.
#[derive(Clone, Default)]
pub struct ToolSet {
    tools: Vec<Arc<dyn Tool>>,
}

impl ToolSet {
    /// Builds the tools named in the agent's `tools` list (`[{"name": "terminal", "params": {}}, ...]`)
    /// plus the built-in `finish` and `think`. Unknown names are skipped and returned.
    pub fn from_agent_spec(tool_specs: &[Value], ctx: &ToolContext) -> (Self, Vec<String>) {
        let _ = ctx;
        let unknown = tool_specs
            .iter()
            .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
            .collect();
        (ToolSet { tools: Vec::new() }, unknown)
    }

    /// The tool called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// All tools, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.tools.iter()
    }

    /// Names of the tools this build can provide (for `/server_info`).
    pub fn available_names() -> Vec<&'static str> {
        Vec::new()
    }
}
