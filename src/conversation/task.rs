//! The `task` tool (`task_tool_set`): the agent delegates a task to a sub-agent definition and
//! waits for its answer. Each task runs as a conversation of its own, kept under the parent's
//! directory (`<parent>/subagents/<id>/`, never listed with the user's conversations), with
//! the parent's LLM, the definition's tools and its system prompt as the prompt suffix.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::service::{Conversation, ConversationService};
use super::{events, ExecutionStatus};
use crate::llm::ToolDefinition;
use crate::subagents::Registry;
use crate::tools::{Tool, ToolContext, ToolError, ToolOutput};

const DESCRIPTION: &str = "Launch a subagent to handle complex, multi-step tasks autonomously.

Subagents are autonomous agents that work independently and return results to you. They are your primary tool for understanding codebases and running
tests, but each delegation has overhead — use them when the task genuinely benefits from a separate agent, not for simple lookups.

Available agent types and the tools they have access to:
{agent_types_info}

When NOT to use the task tool:
- A single grep, find, or cat command would answer your question — just run it yourself
- You are making a file edit (use file_editor directly)
- You already have the context needed

When using the task tool:
- Write a detailed prompt describing exactly what you need
- Include specific file paths, class names, or error messages from the issue
- Tell the agent what to report back (file paths, line numbers, code snippets)
- The agent's results are authoritative — verify subagent results only when the task involves judgment or
  interpretation.
  
{task_tool_examples}
";

const EXAMPLES: [(&str, &str); 2] = [
    (
        "code-explorer",
        "
Example — Multi-step exploration (good use of code-explorer):
    subagent_type=\"code-explorer\"
    prompt=\"Trace how the DateFormat.y() method is called through Django's
    template system. Find: (1) the method definition, (2) where it's
    registered as a format character, (3) all test cases. Include code
    snippets and file paths.\"
",
    ),
    (
        "bash-runner",
        "
Example — Running tests (good use of bash-runner):
    subagent_type=\"bash-runner\"
    prompt=\"Run: cd /workspace/django && python tests/runtests.py
    utils_tests.test_dateformat -v 2. Provide a summary including
    the total tests run, the final status, and a list of any
    failing test names. For each failure, include the specific
    cause or assertion error, but do not include the full stack
    trace or the verbose setup/teardown output.\"
",
    ),
];

/// The tool description listing `defs` (the reference's template).
pub fn description(defs: &[Value]) -> String {
    let info = if defs.is_empty() {
        "- No user-registered agents yet. Call register_agent(...) to add custom agents."
            .to_string()
    } else {
        defs.iter()
            .map(|d| {
                let tools: Vec<&str> = d["tools"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let mut line = format!(
                    "- **{}**: {}",
                    d["name"].as_str().unwrap_or_default(),
                    d["description"].as_str().unwrap_or_default()
                );
                if !tools.is_empty() {
                    line.push_str(&format!(" (tools: {})", tools.join(", ")));
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let names: Vec<&str> = defs.iter().filter_map(|d| d["name"].as_str()).collect();
    let examples: Vec<&str> = EXAMPLES
        .iter()
        .filter(|(name, _)| names.contains(name))
        .map(|(_, ex)| *ex)
        .collect();
    DESCRIPTION
        .replace("{agent_types_info}", &info)
        .replace("{task_tool_examples}", &examples.join("\n"))
}

/// Longest a sub-agent may run.
const TASK_TIMEOUT: Duration = Duration::from_secs(3600);

/// The `task` tool of one conversation.
pub struct TaskTool {
    registry: Arc<Registry>,
    parent: Arc<Conversation>,
    description: String,
    /// The conversations the tasks run in (created on first use, under the parent's directory).
    runner: OnceLock<Arc<ConversationService>>,
    next_task: AtomicU32,
    tasks: Mutex<HashMap<String, Uuid>>,
}

impl TaskTool {
    /// The tool of `parent`, offering the definitions of `registry`.
    pub fn new(registry: Arc<Registry>, parent: Arc<Conversation>) -> Self {
        let description = description(&registry.list());
        TaskTool {
            registry,
            parent,
            description,
            runner: OnceLock::new(),
            next_task: AtomicU32::new(1),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    fn runner(&self) -> Result<Arc<ConversationService>, String> {
        if let Some(r) = self.runner.get() {
            return Ok(r.clone());
        }
        let svc = self
            .parent
            .nested_service("subagents")
            .map_err(|e| format!("cannot prepare the sub-agent store: {e}"))?;
        Ok(self.runner.get_or_init(|| Arc::new(svc)).clone())
    }

    /// The agent a definition runs: the parent's LLM and MCP servers, the definition's tools
    /// and prompt.
    fn agent_for(&self, def: &Value) -> Value {
        let parent = self.parent.agent_json();
        let tools: Vec<Value> = def["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|t| json!({"name": t, "params": {}}))
            .collect();
        let mut agent = json!({
            "kind": "Agent",
            "llm": parent["llm"],
            "tools": tools,
            "mcp_config": parent.get("mcp_config").cloned().unwrap_or(json!({})),
            "include_default_tools": ["FinishTool", "ThinkTool"],
        });
        if let Some(prompt) = def["system_prompt"].as_str().filter(|p| !p.is_empty()) {
            agent["agent_context"] = json!({"system_message_suffix": prompt});
        }
        agent
    }

    async fn run(
        &self,
        action: &Value,
        cancel: &CancellationToken,
    ) -> Result<(String, String, String), TaskFailure> {
        let wanted = action["subagent_type"]
            .as_str()
            .unwrap_or("general-purpose");
        let Some(def) = self.registry.get(wanted) else {
            let names: Vec<String> = self
                .registry
                .list()
                .iter()
                .filter_map(|d| d["name"].as_str().map(str::to_string))
                .collect();
            return Err(TaskFailure::unknown(format!(
                "Failed to execute task: Unknown agent '{wanted}'. Available types: {}. Use register_agent() to add custom agent types.",
                names.join(", ")
            )));
        };
        let subagent = def["name"].as_str().unwrap_or(wanted).to_string();
        let runner = self.runner().map_err(TaskFailure::unknown)?;
        let prompt = action["prompt"].as_str().unwrap_or_default();
        let (task_id, conv) = match action["resume"].as_str() {
            Some(id) => {
                let known = self
                    .tasks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(id)
                    .copied();
                let Some(conv) = known.and_then(|c| runner.get(&c)) else {
                    let mut ids: Vec<String> = self
                        .tasks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .keys()
                        .cloned()
                        .collect();
                    ids.sort();
                    return Err(TaskFailure::unknown(format!(
                        "Failed to execute task: Task '{id}' not found. Available tasks: {}",
                        ids.join(", ")
                    )));
                };
                (id.to_string(), conv)
            }
            None => {
                let task_id = format!("task_{:08x}", self.next_task.fetch_add(1, Ordering::AcqRel));
                let max_iterations = def["max_iteration_per_run"]
                    .as_i64()
                    .or_else(|| i64::try_from(self.parent.read_meta(|m| m.max_iterations)).ok())
                    .unwrap_or(500);
                let mut body = Map::new();
                body.insert("agent".into(), self.agent_for(&def));
                body.insert(
                    "workspace".into(),
                    json!({"working_dir": self.parent.working_dir(), "kind": "LocalWorkspace"}),
                );
                body.insert("max_iterations".into(), json!(max_iterations));
                body.insert("autotitle".into(), json!(false));
                let (conv, _) = runner
                    .create(&Value::Object(body))
                    .await
                    .map_err(|e| TaskFailure::unknown(format!("Failed to execute task: {e}")))?;
                self.tasks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(task_id.clone(), conv.id);
                (task_id, conv)
            }
        };
        let fail = |text: String| TaskFailure {
            task_id: task_id.clone(),
            subagent: subagent.clone(),
            text,
        };
        let before = conv.with_events(|e| e.len()).await.unwrap_or(0);
        conv.send_message(json!([{"type": "text", "text": prompt}]), true)
            .await
            .map_err(|e| fail(format!("Failed to execute task: {e}")))?;
        let deadline = tokio::time::Instant::now() + TASK_TIMEOUT;
        loop {
            let st = conv.status();
            let grown = conv.with_events(|e| e.len()).await.unwrap_or(0) > before + 1;
            if grown && st != ExecutionStatus::Running && conv.run_ctl().is_none() {
                break;
            }
            if cancel.is_cancelled() || tokio::time::Instant::now() > deadline {
                let _ = conv.interrupt().await;
                return Err(fail(
                    "Sub-agent stopped without finishing (status: interrupted).".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let evs = conv.with_events(|e| e.to_vec()).await.unwrap_or_default();
        let st = conv.status();
        if st == ExecutionStatus::Finished {
            let answer = events::final_response(&evs);
            let answer = if answer.trim().is_empty() {
                "Task completed with no result.".to_string()
            } else {
                answer
            };
            return Ok((task_id, subagent, answer));
        }
        let detail = evs
            .iter()
            .rev()
            .find(|e| e["kind"] == "ConversationErrorEvent")
            .and_then(|e| e["detail"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("Sub-agent stopped without finishing (status: {st})."));
        Err(fail(detail))
    }
}

/// A task that ended without an answer.
struct TaskFailure {
    task_id: String,
    subagent: String,
    text: String,
}

impl TaskFailure {
    fn unknown(text: String) -> Self {
        TaskFailure {
            task_id: "unknown".into(),
            subagent: String::new(),
            text,
        }
    }
}

fn output(task_id: &str, subagent: &str, status: &str, text: &str, is_error: bool) -> ToolOutput {
    ToolOutput {
        observation: json!({
            "content": [{"cache_prompt": false, "type": "text", "text": text}],
            "is_error": is_error,
            "task_id": task_id,
            "subagent": subagent,
            "status": status,
            "kind": "TaskObservation",
        }),
    }
}

#[async_trait::async_trait]
impl Tool for TaskTool {
    fn name(&self) -> &str {
        "task"
    }

    fn kind(&self) -> &str {
        "TaskTool"
    }

    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: "task".into(),
            description: self.description.clone(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "description": {"type": "string", "description": "A short (3-5 word) description of the task."},
                    "prompt": {"type": "string", "description": "The task for the agent to perform."},
                    "subagent_type": {"type": "string", "description": "The type of specialized agent to use for this task."},
                    "resume": {"type": "string", "description": "Task ID of the task to resume from."},
                },
                "required": ["prompt"],
            }),
        }
    }

    fn read_only(&self) -> bool {
        false
    }

    fn annotations(&self) -> Value {
        json!({"title": "task", "readOnlyHint": false, "destructiveHint": true,
               "idempotentHint": false, "openWorldHint": true})
    }

    fn parse_action(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let Some(prompt) = args.get("prompt").and_then(Value::as_str) else {
            return Err("prompt: Field required".into());
        };
        let text = |k: &str| args.get(k).and_then(Value::as_str).map(str::to_string);
        let mut action = json!({
            "description": text("description"),
            "prompt": prompt,
            "subagent_type": text("subagent_type").unwrap_or_else(|| "general-purpose".into()),
        });
        if let Some(r) = text("resume") {
            action["resume"] = json!(r);
        }
        action["kind"] = json!("TaskAction");
        Ok(action)
    }

    async fn execute(&self, action: &Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        Ok(match self.run(action, &ctx.cancel).await {
            Ok((task_id, subagent, answer)) => {
                output(&task_id, &subagent, "completed", &answer, false)
            }
            Err(f) => output(&f.task_id, &f.subagent, "error", &f.text, true),
        })
    }
}
