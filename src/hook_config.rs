//! The hooks file format: a `hooks.json` of a project (`.openhands/hooks.json`) or a plugin,
//! normalised into the reference's complete `HookConfig` (snake_case event keys, every
//! definition field filled in). Running hooks is `crate::conversation::hooks`.

use serde_json::{json, Value};

/// Hook events in the order the reference lists them, with their file-format names.
const EVENTS: [(&str, &str); 6] = [
    ("pre_tool_use", "PreToolUse"),
    ("post_tool_use", "PostToolUse"),
    ("user_prompt_submit", "UserPromptSubmit"),
    ("session_start", "SessionStart"),
    ("session_end", "SessionEnd"),
    ("stop", "Stop"),
];

/// One hook definition with every field (`HookDefinition`), or `None` when invalid.
fn normalize_definition(h: &Value) -> Option<Value> {
    let obj = h.as_object()?;
    const KNOWN: [&str; 9] = [
        "type",
        "name",
        "command",
        "prompt",
        "system_prompt",
        "tools",
        "timeout",
        "max_iterations",
        "async",
    ];
    if obj.keys().any(|k| !KNOWN.contains(&k.as_str())) {
        return None;
    }
    let kind = obj.get("type").and_then(Value::as_str).unwrap_or("command");
    let command = obj.get("command").and_then(Value::as_str).unwrap_or("");
    let prompt = obj.get("prompt").filter(|p| !p.is_null());
    let is_async = obj.get("async").and_then(Value::as_bool).unwrap_or(false);
    let valid = match kind {
        "command" => !command.is_empty(),
        "prompt" => prompt.is_some() && command.is_empty() && !is_async,
        "agent" => command.is_empty() && !is_async,
        _ => false,
    };
    if !valid {
        return None;
    }
    Some(json!({
        "type": kind,
        "name": obj.get("name").cloned().unwrap_or(Value::Null),
        "command": command,
        "prompt": prompt.cloned().unwrap_or(Value::Null),
        "system_prompt": obj.get("system_prompt").cloned().unwrap_or(Value::Null),
        "tools": obj.get("tools").cloned().unwrap_or_else(|| json!([])),
        "timeout": obj.get("timeout").cloned().unwrap_or_else(|| json!(60)),
        "max_iterations": obj.get("max_iterations").cloned().unwrap_or_else(|| json!(3)),
        "async": is_async,
    }))
}

/// A hooks file (`{"PreToolUse": [...]}`, snake_case keys, or the legacy `{"hooks": {...}}`)
/// as a complete `HookConfig`; `None` when it is invalid or configures nothing.
pub fn normalize_config(file: &Value) -> Option<Value> {
    let file = match file.get("hooks") {
        Some(inner) if file.as_object().is_some_and(|m| m.len() == 1) => inner,
        _ => file,
    };
    let obj = file.as_object()?;
    for key in obj.keys() {
        if !EVENTS
            .iter()
            .any(|(snake, pascal)| key == snake || key == pascal)
        {
            return None;
        }
    }
    let mut out = serde_json::Map::new();
    let mut any = false;
    for (snake, pascal) in EVENTS {
        let mut matchers = Vec::new();
        for m in obj
            .get(snake)
            .or_else(|| obj.get(pascal))
            .map(|v| v.as_array().cloned())
            .unwrap_or(Some(Vec::new()))?
        {
            let matcher = match m.get("matcher") {
                None | Some(Value::Null) => "*".to_string(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return None,
            };
            let hooks = m
                .get("hooks")
                .and_then(Value::as_array)?
                .iter()
                .map(normalize_definition)
                .collect::<Option<Vec<_>>>()?;
            matchers.push(json!({"matcher": matcher, "hooks": hooks}));
        }
        any |= !matchers.is_empty();
        out.insert(snake.into(), Value::Array(matchers));
    }
    any.then_some(Value::Object(out))
}

/// The hook configuration of `project_dir` (`.openhands/hooks.json`), normalised; `None`
/// when there is no usable one.
pub async fn load_project_config(project_dir: std::path::PathBuf) -> Option<Value> {
    let path = project_dir.join(".openhands").join("hooks.json");
    let bytes = tokio::fs::read(&path).await.ok()?;
    let file: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "hooks file is not JSON");
            return None;
        }
    };
    normalize_config(&file)
}
