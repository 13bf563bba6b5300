//! The `task_tracker` tool: the agent's plan as a task list, kept in `<persistence_dir>/TASKS.json`.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

use super::args::Validator;
use super::{definition, simple_observation, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolDefinition;

const STATUSES: &[&str] = &["todo", "in_progress", "done"];

/// The `task_tracker` tool.
pub struct TaskTrackerTool {
    file: PathBuf,
    /// The current list; loaded from the file on first use.
    tasks: Mutex<Option<Vec<Value>>>,
}

impl TaskTrackerTool {
    /// A tracker storing its list in `<persistence_dir>/TASKS.json`.
    pub fn new(persistence_dir: &Path) -> Self {
        TaskTrackerTool {
            file: persistence_dir.join("TASKS.json"),
            tasks: Mutex::new(None),
        }
    }
}

/// Accepts the status names other agents' todo tools use.
fn normalize_status(s: &str) -> String {
    let n = s.trim().to_lowercase().replace(['-', ' '], "_");
    match n.as_str() {
        "pending" | "to_do" => "todo".into(),
        "completed" | "complete" => "done".into(),
        _ if STATUSES.contains(&n.as_str()) => n,
        _ => s.to_owned(),
    }
}

fn parse_task(i: usize, item: &Value, errors: &mut Vec<(String, String)>) -> Option<Value> {
    let Some(obj) = item.as_object() else {
        errors.push((
            format!("task_list.{i}"),
            "Input should be a valid dictionary or instance of TaskItem".into(),
        ));
        return None;
    };
    let mut ok = true;
    let title = match obj.get("title") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => {
            errors.push((format!("task_list.{i}.title"), "Field required".into()));
            ok = false;
            String::new()
        }
        Some(_) => {
            errors.push((
                format!("task_list.{i}.title"),
                "Input should be a valid string".into(),
            ));
            ok = false;
            String::new()
        }
    };
    let notes = match obj.get("notes") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(_) => {
            errors.push((
                format!("task_list.{i}.notes"),
                "Input should be a valid string".into(),
            ));
            ok = false;
            String::new()
        }
    };
    let status = match obj.get("status") {
        None | Some(Value::Null) => "todo".to_owned(),
        Some(Value::String(s)) => {
            let n = normalize_status(s);
            if STATUSES.contains(&n.as_str()) {
                n
            } else {
                errors.push((
                    format!("task_list.{i}.status"),
                    "Input should be 'todo', 'in_progress' or 'done'".into(),
                ));
                ok = false;
                n
            }
        }
        Some(_) => {
            errors.push((
                format!("task_list.{i}.status"),
                "Input should be 'todo', 'in_progress' or 'done'".into(),
            ));
            ok = false;
            String::new()
        }
    };
    for k in obj.keys() {
        if !matches!(k.as_str(), "title" | "notes" | "status") {
            // TaskItem is a plain model: pydantic ignores unknown keys there.
            continue;
        }
    }
    ok.then(|| json!({"title": title, "notes": notes, "status": status}))
}

fn format_tasks(tasks: &[Value]) -> String {
    let mut out = "# Task List\n\n".to_owned();
    for (i, t) in tasks.iter().enumerate() {
        let icon = match t["status"].as_str() {
            Some("in_progress") => "🔄",
            Some("done") => "✅",
            _ => "⏳",
        };
        out.push_str(&format!(
            "{}. {icon} {}\n",
            i + 1,
            t["title"].as_str().unwrap_or("")
        ));
        if let Some(n) = t["notes"].as_str().filter(|n| !n.is_empty()) {
            out.push_str(&format!("   {n}\n"));
        }
    }
    out.trim_end().to_owned()
}

#[async_trait::async_trait]
impl Tool for TaskTrackerTool {
    fn name(&self) -> &'static str {
        "task_tracker"
    }

    fn kind(&self) -> &'static str {
        "TaskTrackerTool"
    }

    fn definition(&self) -> ToolDefinition {
        definition(
            "task_tracker",
            "Keep a visible plan for work with several steps.\n\n\
             Use it when a request needs three or more distinct steps, when the user gives a \
             list of things to do, or when the work is complex enough that progress should be \
             tracked. Skip it for one-step or purely conversational requests.\n\n\
             * `view` shows the current list.\n\
             * `plan` replaces the whole list with `task_list`; each task has a `title`, \
             optional `notes`, and a `status` of `todo`, `in_progress` or `done`.\n\n\
             Keep exactly one task `in_progress` while working, mark a task `done` as soon as it \
             is finished (not in batches), and add tasks you discover along the way. Mark a task \
             done only when it is really complete: not when tests fail, errors remain or the \
             work is partial."
                .into(),
            json!({
                "command": {"type": "string", "description": "`view` to show the list, `plan` to replace it with `task_list`. View the list before changing it.", "enum": ["view", "plan"]},
                "task_list": {"type": "array", "description": "The complete task list (required for `plan`).", "items": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string", "description": "Short name of the task."},
                        "notes": {"type": "string", "description": "Optional details about the task."},
                        "status": {"type": "string", "description": "Progress of the task: 'todo', 'in_progress' or 'done'.", "enum": ["todo", "in_progress", "done"]}
                    },
                    "required": ["title"]
                }}
            }),
            &[],
        )
    }

    fn read_only(&self) -> bool {
        false
    }

    fn annotations(&self) -> Value {
        json!({"title": "task_tracker", "readOnlyHint": false, "destructiveHint": false,
               "idempotentHint": true, "openWorldHint": false})
    }

    fn parse_action(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let mut v = Validator::new("TaskTrackerAction", args);
        let command = v.literal("command", &["view", "plan"], Some("view"));
        let mut tasks = Vec::new();
        if let Some(list) = v.raw("task_list") {
            match list.as_array() {
                Some(items) => {
                    let mut errors = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        if let Some(t) = parse_task(i, item, &mut errors) {
                            tasks.push(t);
                        }
                    }
                    for (loc, msg) in errors {
                        v.error(loc, msg);
                    }
                }
                None => v.error("task_list", "Input should be a valid list"),
            }
        }
        v.finish()?;
        Ok(
            json!({"command": command.unwrap_or_else(|| "view".into()), "task_list": tasks, "kind": "TaskTrackerAction"}),
        )
    }

    async fn execute(&self, action: &Value, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let command = action
            .get("command")
            .and_then(Value::as_str)
            .unwrap_or("view");
        let mut guard = self.tasks.lock().await;
        if guard.is_none() {
            let loaded = match tokio::fs::read(&self.file).await {
                Ok(bytes) => serde_json::from_slice::<Vec<Value>>(&bytes).unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            *guard = Some(loaded);
        }
        let tasks = guard.get_or_insert_with(Vec::new);
        let fields = |command: &str, list: &[Value]| {
            let mut m = Map::new();
            m.insert("command".into(), json!(command));
            m.insert("task_list".into(), json!(list));
            m
        };
        match command {
            "plan" => {
                let list: Vec<Value> = action
                    .get("task_list")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                *tasks = list;
                if let Some(dir) = self.file.parent() {
                    let _ = tokio::fs::create_dir_all(dir).await;
                }
                let body = serde_json::to_string_pretty(&*tasks).unwrap_or_else(|_| "[]".into());
                let tmp = self.file.with_extension("json.tmp");
                if tokio::fs::write(&tmp, body).await.is_ok() {
                    let _ = tokio::fs::rename(&tmp, &self.file).await;
                }
                let text = format!("Task list has been updated with {} item(s).", tasks.len());
                Ok(simple_observation(
                    "TaskTrackerObservation",
                    &text,
                    false,
                    fields("plan", tasks),
                ))
            }
            "view" => {
                if tasks.is_empty() {
                    return Ok(simple_observation(
                        "TaskTrackerObservation",
                        "No task list found. Use the \"plan\" command to create one.",
                        false,
                        fields("view", &[]),
                    ));
                }
                let text = format_tasks(tasks);
                Ok(simple_observation(
                    "TaskTrackerObservation",
                    &text,
                    false,
                    fields("view", tasks),
                ))
            }
            other => Ok(simple_observation(
                "TaskTrackerObservation",
                &format!("Unknown command: {other}. Supported commands are \"view\" and \"plan\"."),
                true,
                fields(other, &[]),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ctx, obs_text};
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[tokio::test]
    async fn plan_view_and_persist() {
        let (_d, ctx) = ctx();
        let t = TaskTrackerTool::new(&ctx.persistence_dir);
        let view = t.parse_action(&map(json!({}))).unwrap_or_default();
        assert_eq!(
            view,
            json!({"command": "view", "task_list": [], "kind": "TaskTrackerAction"})
        );
        let out = t
            .execute(&view, &ctx)
            .await
            .map_err(|e| e.0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            obs_text(&out),
            "No task list found. Use the \"plan\" command to create one."
        );

        let plan = t.parse_action(&map(json!({"command": "plan", "task_list": [
            {"title": "First", "notes": "n1", "status": "done"},
            {"title": "Second", "status": "In Progress"},
            {"title": "Third"}]})));
        let plan = plan.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            plan["task_list"][1],
            json!({"title": "Second", "notes": "", "status": "in_progress"})
        );
        assert_eq!(plan["task_list"][2]["status"], "todo");
        let out = t
            .execute(&plan, &ctx)
            .await
            .map_err(|e| e.0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(obs_text(&out), "Task list has been updated with 3 item(s).");
        assert_eq!(out.observation["command"], "plan");
        assert_eq!(out.observation["task_list"], plan["task_list"]);
        assert_eq!(out.observation["kind"], "TaskTrackerObservation");
        let saved: Value = serde_json::from_slice(
            &std::fs::read(ctx.persistence_dir.join("TASKS.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        assert_eq!(saved, plan["task_list"]);

        // A new tracker (e.g. after a restart) reads the saved list.
        let t2 = TaskTrackerTool::new(&ctx.persistence_dir);
        let out = t2
            .execute(&view, &ctx)
            .await
            .map_err(|e| e.0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            obs_text(&out),
            "# Task List\n\n1. ✅ First\n   n1\n2. 🔄 Second\n3. ⏳ Third"
        );
    }

    #[test]
    fn invalid_task_lists_are_rejected() {
        let (_d, ctx) = ctx();
        let t = TaskTrackerTool::new(&ctx.persistence_dir);
        let err = t
            .parse_action(&map(
                json!({"command": "plan", "task_list": [{"notes": "x", "status": "weird"}]}),
            ))
            .err()
            .unwrap_or_default();
        assert!(
            err.starts_with("2 validation errors for TaskTrackerAction"),
            "{err}"
        );
        assert!(err.contains("task_list.0.title\n  Field required"), "{err}");
        assert!(err.contains("task_list.0.status"), "{err}");
        let err = t
            .parse_action(&map(json!({"command": "edit"})))
            .err()
            .unwrap_or_default();
        assert!(err.contains("Input should be 'view' or 'plan'"), "{err}");
    }
}
