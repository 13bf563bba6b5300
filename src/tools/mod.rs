//! The agent's tools, with the reference's names, parameter schemas, action and observation shapes:
//! `terminal`, `file_editor`, `task_tracker`, `think`, `finish`.
//!
//! The agent loop builds a [`ToolSet`] per conversation, offers [`Tool::definition`]s to the LLM,
//! turns tool-call arguments into action JSON with [`Tool::parse_action`] and runs them with
//! [`Tool::execute`].

mod args;
mod builtins;
pub mod client;
mod file_editor;
pub mod mcp;
mod task_tracker;
mod terminal;
mod truncate;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::llm::ToolDefinition;

pub use builtins::{FinishTool, ThinkTool};
pub use file_editor::FileEditorTool;
pub use task_tracker::TaskTrackerTool;
pub use terminal::{set_runtime_idle_timeout, TerminalOptions, TerminalTool};
pub use truncate::maybe_truncate;

/// The header the SDK puts in front of an error observation's text for the LLM.
pub const ERROR_MESSAGE_HEADER: &str = "[An error occurred during execution.]\n";

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
}

impl ToolOutput {
    /// The text the LLM receives as the tool result (see [`observation_llm_text`]).
    pub fn llm_text(&self) -> String {
        observation_llm_text(&self.observation)
    }
}

/// The text the LLM receives for an observation, derived from the observation alone as the
/// SDK's `to_llm_content` does: the same persisted event gives the same prompt before and
/// after an idle release or a restart. It starts with [`ERROR_MESSAGE_HEADER`] when the
/// observation has `is_error: true`.
pub fn observation_llm_text(obs: &Value) -> String {
    let is_error = obs.get("is_error").and_then(Value::as_bool) == Some(true);
    let texts: Vec<&str> = obs
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| item.get("text").and_then(Value::as_str))
        .collect();
    let field = |k: &str| obs.get(k).and_then(Value::as_str).unwrap_or_default();
    match field("kind") {
        "TerminalObservation" => terminal::llm_text_of(obs, &texts.join("\n"), is_error),
        "MCPToolObservation" => {
            let head = format!("[Tool '{}' executed.]", field("tool_name"));
            let body: Vec<&str> = std::iter::once(head.as_str()).chain(texts).collect();
            llm_text(&body.join("\n"), is_error)
        }
        "TaskObservation" => {
            let header = format!(
                "Task ID: {}\nSubagent: {}\nStatus: {}",
                field("task_id"),
                field("subagent"),
                field("status")
            );
            format!("{header}\n{}", llm_text(&texts.join("\n"), is_error))
        }
        _ => llm_text(&texts.join("\n"), is_error),
    }
}

/// A tool failure that becomes an `AgentErrorEvent` ("Error executing tool '<name>': <msg>").
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

/// One tool the agent can call.
#[async_trait::async_trait]
pub trait Tool: Send + Sync {
    /// The LLM-facing function name (`terminal`, `file_editor`, ...).
    fn name(&self) -> &str;
    /// The SDK class name (`TerminalTool`, ...).
    fn kind(&self) -> &str;
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

    /// The SDK's `ToolAnnotations` of this tool (`title`, `readOnlyHint`, ...).
    fn annotations(&self) -> Value {
        Value::Null
    }

    /// The entry describing this tool in `SystemPromptEvent.tools`:
    /// `{description, action_type, observation_type, annotations, kind, title}`.
    fn system_prompt_entry(&self) -> Value {
        let kind = self.kind();
        let base = kind.strip_suffix("Tool").unwrap_or(kind);
        let mut entry = json!({
            "description": self.definition().description,
            "action_type": format!("{base}Action"),
            "observation_type": format!("{base}Observation"),
        });
        let annotations = self.annotations();
        if !annotations.is_null() {
            entry["annotations"] = annotations;
        }
        entry["kind"] = json!(kind);
        entry["title"] = json!(self.name());
        entry
    }

    /// Releases what the tool holds (e.g. kills the terminal's shell and its children).
    async fn close(&self) {}

    /// The conversation's secrets as `(name, value)` pairs (values already resolved). The
    /// terminal exports the ones a command mentions and hides every value in its output.
    fn set_secrets(&self, _secrets: &[(String, String)]) {}
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
        Self::from_agent_spec_with_defaults(tool_specs, None, ctx)
    }

    /// Like [`ToolSet::from_agent_spec`], honouring the agent's `include_default_tools`
    /// (`["FinishTool", "ThinkTool"]` by default; `None` means that default).
    pub fn from_agent_spec_with_defaults(
        tool_specs: &[Value],
        include_default_tools: Option<&[Value]>,
        ctx: &ToolContext,
    ) -> (Self, Vec<String>) {
        let mut tools: Vec<Arc<dyn Tool>> = Vec::new();
        let mut unknown = Vec::new();
        for spec in tool_specs {
            let Some(name) = spec.get("name").and_then(Value::as_str) else {
                continue;
            };
            let params = spec.get("params").cloned().unwrap_or(Value::Null);
            // A client-defined tool carries its spec (see `client`).
            let client = params
                .get("spec")
                .filter(|s| s.get("name").and_then(Value::as_str) == Some(name))
                .and_then(client::ClientTool::from_spec);
            if let Some(tool) = client {
                if tools.iter().all(|t| t.name() != name) {
                    tools.push(Arc::new(tool));
                }
                continue;
            }
            let tool: Arc<dyn Tool> = match name {
                "terminal" | "TerminalTool" | "bash" | "BashTool" | "execute_bash" => Arc::new(
                    TerminalTool::new(TerminalOptions::from_params(&params, ctx)),
                ),
                "file_editor" | "FileEditorTool" | "str_replace_editor" => {
                    Arc::new(FileEditorTool::new(&ctx.working_dir))
                }
                "task_tracker" | "TaskTrackerTool" => {
                    Arc::new(TaskTrackerTool::new(&ctx.persistence_dir))
                }
                "finish" | "FinishTool" => Arc::new(FinishTool),
                "think" | "ThinkTool" => Arc::new(ThinkTool),
                other => {
                    unknown.push(other.to_owned());
                    continue;
                }
            };
            if tools.iter().all(|t| t.name() != tool.name()) {
                tools.push(tool);
            }
        }
        let defaults: Vec<String> = match include_default_tools {
            None => vec!["FinishTool".into(), "ThinkTool".into()],
            Some(list) => list
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Object(o) => o.get("name").and_then(Value::as_str).map(str::to_owned),
                    _ => None,
                })
                .collect(),
        };
        for name in defaults {
            let tool: Arc<dyn Tool> = match name.as_str() {
                "FinishTool" | "finish" => Arc::new(FinishTool),
                "ThinkTool" | "think" => Arc::new(ThinkTool),
                other => {
                    unknown.push(other.to_owned());
                    continue;
                }
            };
            if tools.iter().all(|t| t.name() != tool.name()) {
                tools.push(tool);
            }
        }
        (ToolSet { tools }, unknown)
    }

    /// The tool called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Tool>> {
        self.tools.iter().find(|t| t.name() == name)
    }

    /// All tools, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Tool>> {
        self.tools.iter()
    }

    /// Registered tool names a client may put in an agent's `tools` list, in the reference's
    /// registration order (`GET /api/tools/`, `usable_tools`).
    pub fn registered_names() -> Vec<&'static str> {
        vec!["file_editor", "task_tracker", "terminal"]
    }

    /// The reference's Python module defining the built-in tool `name`.
    pub fn module_of(name: &str) -> Option<&'static str> {
        match name {
            "terminal" => Some("openhands.tools.terminal.definition"),
            "file_editor" => Some("openhands.tools.file_editor.definition"),
            "task_tracker" => Some("openhands.tools.task_tracker.definition"),
            _ => None,
        }
    }

    /// `GET /api/tools/catalog`: the reference's catalogue entries, `usable` only for the
    /// tools this server runs (the others are listed so a client can show them as unavailable).
    pub fn catalog() -> Vec<serde_json::Value> {
        let entries: Vec<serde_json::Value> =
            serde_json::from_str(include_str!("catalog.json")).unwrap_or_default();
        let ours = Self::registered_names();
        entries
            .into_iter()
            .map(|mut e| {
                let usable = e["name"].as_str().is_some_and(|n| ours.contains(&n));
                e["usable"] = serde_json::Value::Bool(usable);
                e
            })
            .collect()
    }

    /// Adds `tool` unless one of that name is there already.
    pub fn push(&mut self, tool: Arc<dyn Tool>) {
        if self.tools.iter().all(|t| t.name() != tool.name()) {
            self.tools.push(tool);
        }
    }

    /// Hands the conversation's secrets (name, resolved value) to the tools that use them;
    /// call again whenever they change.
    pub fn set_secrets(&self, secrets: &[(String, String)]) {
        for tool in &self.tools {
            tool.set_secrets(secrets);
        }
    }

    /// Closes every tool (kills terminal sessions). Call when the conversation is deleted or
    /// the server shuts down.
    pub async fn close(&self) {
        for tool in &self.tools {
            tool.close().await;
        }
    }
}

/// A `TextContent` as the SDK serialises it.
pub(crate) fn text_content(text: impl Into<String>) -> Value {
    json!({"cache_prompt": false, "type": "text", "text": text.into()})
}

/// An observation `{content: [text], is_error, ...fields, kind}` and the LLM text of a plain
/// (single text) observation.
pub(crate) fn simple_observation(
    kind: &str,
    text: &str,
    is_error: bool,
    fields: Map<String, Value>,
) -> ToolOutput {
    let mut obs = Map::new();
    obs.insert("content".into(), json!([text_content(text)]));
    obs.insert("is_error".into(), json!(is_error));
    for (k, v) in fields {
        if !v.is_null() {
            obs.insert(k, v);
        }
    }
    obs.insert("kind".into(), json!(kind));
    ToolOutput {
        observation: Value::Object(obs),
    }
}

/// The LLM text of an observation: its text, with the error header when `is_error`.
pub(crate) fn llm_text(text: &str, is_error: bool) -> String {
    if is_error {
        format!("{ERROR_MESSAGE_HEADER}{text}")
    } else {
        text.to_owned()
    }
}

/// The definition of a tool from its description and parameter properties.
pub(crate) fn definition(
    name: &str,
    description: String,
    properties: Value,
    required: &[&str],
) -> ToolDefinition {
    let mut params = json!({"type": "object", "properties": properties});
    if !required.is_empty() {
        params["required"] = json!(required);
    }
    ToolDefinition {
        name: name.to_owned(),
        description,
        parameters: params,
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A context with fresh private working and persistence dirs.
    pub fn ctx() -> (tempfile::TempDir, ToolContext) {
        let dir = tempfile::tempdir().expect("tempdir");
        let work = dir.path().join("ws");
        let persist = dir.path().join("conv");
        std::fs::create_dir_all(&work).expect("mkdir");
        std::fs::create_dir_all(&persist).expect("mkdir");
        let ctx = ToolContext {
            working_dir: work.canonicalize().expect("canon"),
            persistence_dir: persist,
            cancel: CancellationToken::new(),
        };
        (dir, ctx)
    }

    /// The single text of an observation.
    pub fn obs_text(out: &ToolOutput) -> String {
        out.observation["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::ctx;
    use super::*;

    #[test]
    fn tool_set_from_default_cli_agent() {
        let (_d, ctx) = ctx();
        let specs = vec![
            json!({"name": "terminal", "params": {}}),
            json!({"name": "file_editor", "params": {}}),
            json!({"name": "task_tracker", "params": {}}),
            json!({"name": "browser_tool_set", "params": {}}),
        ];
        let (set, unknown) = ToolSet::from_agent_spec(&specs, &ctx);
        let names: Vec<_> = set.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            ["terminal", "file_editor", "task_tracker", "finish", "think"]
        );
        assert_eq!(unknown, ["browser_tool_set"]);
        assert!(set.get("finish").is_some_and(|t| t.read_only()));
        assert!(set.get("terminal").is_some_and(|t| !t.read_only()));
        let entry = set.get("terminal").map(|t| t.system_prompt_entry());
        let entry = entry.unwrap_or_default();
        assert_eq!(entry["action_type"], "TerminalAction");
        assert_eq!(entry["observation_type"], "TerminalObservation");
        assert_eq!(entry["annotations"]["destructiveHint"], true);
        assert_eq!(entry["kind"], "TerminalTool");
    }

    #[test]
    fn include_default_tools_is_respected() {
        let (_d, ctx) = ctx();
        let specs = vec![json!({"name": "terminal"})];
        let only_finish = vec![json!("FinishTool")];
        let (set, _) = ToolSet::from_agent_spec_with_defaults(&specs, Some(&only_finish), &ctx);
        let names: Vec<_> = set.iter().map(|t| t.name()).collect();
        assert_eq!(names, ["terminal", "finish"]);
        let (set, _) = ToolSet::from_agent_spec_with_defaults(&[], Some(&[]), &ctx);
        assert_eq!(set.iter().count(), 0);
    }

    #[test]
    fn schemas_match_the_reference_shape() {
        let (_d, ctx) = ctx();
        let specs = vec![
            json!({"name": "terminal"}),
            json!({"name": "file_editor"}),
            json!({"name": "task_tracker"}),
        ];
        let (set, _) = ToolSet::from_agent_spec(&specs, &ctx);
        let props = |name: &str| -> Vec<String> {
            set.get(name)
                .map(|t| t.definition().parameters["properties"].clone())
                .and_then(|p| p.as_object().map(|o| o.keys().cloned().collect()))
                .unwrap_or_default()
        };
        assert_eq!(
            props("terminal"),
            ["command", "is_input", "timeout", "reset"]
        );
        assert_eq!(
            props("file_editor"),
            [
                "command",
                "path",
                "file_text",
                "old_str",
                "new_str",
                "insert_line",
                "view_range"
            ]
        );
        assert_eq!(props("task_tracker"), ["command", "task_list"]);
        assert_eq!(props("finish"), ["message"]);
        assert_eq!(props("think"), ["thought"]);
        let fe = set.get("file_editor").map(|t| t.definition());
        let fe = fe.map(|d| d.description).unwrap_or_default();
        assert!(fe.contains(&format!(
            "Your current working directory is: {}",
            ctx.working_dir.display()
        )));
    }
}
