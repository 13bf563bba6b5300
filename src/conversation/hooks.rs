//! Command hooks from the conversation's `hook_config` (`pre_tool_use`, `post_tool_use`,
//! `user_prompt_submit`, `stop`): each matching command runs in the working directory with the
//! hook event as JSON on stdin; exit code 2, `{"decision":"deny"}` or `{"continue":false}`
//! blocks. Every execution is recorded as a `HookExecutionEvent`.

use std::process::Stdio;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;

use super::events;
use super::service::Conversation;

/// Verdict of the hooks for one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Blocked, with the reason to report.
    Block(String),
}

/// Output of one hook command.
struct HookRun {
    success: bool,
    blocked: bool,
    exit_code: i64,
    stdout: String,
    stderr: String,
    reason: Option<String>,
    additional_context: Option<String>,
    error: Option<String>,
}

/// Config key of each event type.
fn config_key(event_type: &str) -> &'static str {
    match event_type {
        "PreToolUse" => "pre_tool_use",
        "PostToolUse" => "post_tool_use",
        "UserPromptSubmit" => "user_prompt_submit",
        "SessionStart" => "session_start",
        "SessionEnd" => "session_end",
        _ => "stop",
    }
}

fn matches(matcher: &str, tool_name: Option<&str>) -> bool {
    if matcher == "*" || matcher.is_empty() {
        return true;
    }
    let Some(tool) = tool_name else {
        return false;
    };
    let pattern = if matcher.len() > 2 && matcher.starts_with('/') && matcher.ends_with('/') {
        Some(&matcher[1..matcher.len() - 1])
    } else if matcher.chars().any(|c| "|.*+?[]()^$\\".contains(c)) {
        Some(matcher)
    } else {
        None
    };
    if let Some(p) = pattern {
        if let Ok(re) = regex::Regex::new(&format!("^(?:{p})$")) {
            return re.is_match(tool);
        }
    }
    matcher == tool
}

/// The command hooks configured for `event_type` that match `tool_name`.
fn hooks_for(conv: &Conversation, event_type: &str, tool_name: Option<&str>) -> Vec<Value> {
    // The state's configuration once set (it holds the hooks of loaded plugins too).
    let cfg = conv
        .read_state(|s| s.hooks().cloned())
        .or_else(|| conv.read_meta(|m| m.hooks().cloned()));
    let Some(cfg) = cfg else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let key = config_key(event_type);
    let matchers = cfg
        .get(key)
        .or_else(|| cfg.get(event_type))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for m in matchers {
        let pattern = m.get("matcher").and_then(Value::as_str).unwrap_or("*");
        if !matches(pattern, tool_name) {
            continue;
        }
        for h in m
            .get("hooks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let kind = h.get("type").and_then(Value::as_str).unwrap_or("command");
            if kind == "command"
                && h.get("command")
                    .and_then(Value::as_str)
                    .is_some_and(|c| !c.is_empty())
            {
                out.push(h);
            } else if kind != "command" {
                tracing::warn!(kind, "only command hooks are supported; skipping");
            }
        }
    }
    out
}

async fn run_command(
    conv: &Conversation,
    hook: &Value,
    event_type: &str,
    tool_name: Option<&str>,
    input: &Value,
) -> HookRun {
    let command = hook
        .get("command")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let timeout = hook
        .get("timeout")
        .and_then(Value::as_f64)
        .unwrap_or(60.0)
        .max(1.0);
    let wd = conv.working_dir();
    let mut cmd = tokio::process::Command::new("bash");
    // The server's environment without its credentials, as for every child.
    cmd.env_clear()
        .envs(crate::util::child_env().iter().cloned());
    cmd.arg("-c")
        .arg(&command)
        .current_dir(&wd)
        .env("OPENHANDS_PROJECT_DIR", &wd)
        .env("OPENHANDS_SESSION_ID", conv.id.to_string())
        .env("OPENHANDS_EVENT_TYPE", event_type)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(t) = tool_name {
        cmd.env("OPENHANDS_TOOL_NAME", t);
    }
    let failed = |msg: String| HookRun {
        success: false,
        blocked: false,
        exit_code: -1,
        stdout: String::new(),
        stderr: String::new(),
        reason: None,
        additional_context: None,
        error: Some(msg),
    };
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return failed(format!("Hook execution failed: {e}")),
    };
    let pid = child.id();
    if let Some(mut stdin) = child.stdin.take() {
        let data = input.to_string();
        tokio::spawn(async move {
            let _ = stdin.write_all(data.as_bytes()).await;
        });
    }
    let out = match tokio::time::timeout(
        crate::util::duration_from_secs(timeout),
        child.wait_with_output(),
    )
    .await
    {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return failed(format!("Hook execution failed: {e}")),
        Err(_) => {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return failed(format!("Hook timed out after {timeout} seconds"));
        }
    };
    let code = out.status.code().map_or(-1, i64::from);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut run = HookRun {
        success: code == 0,
        blocked: code == 2,
        exit_code: code,
        stdout,
        stderr,
        reason: None,
        additional_context: None,
        error: None,
    };
    if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(run.stdout.trim()) {
        if let Some(d) = o.get("decision").and_then(Value::as_str) {
            if d.eq_ignore_ascii_case("deny") {
                run.blocked = true;
            }
        }
        if let Some(r) = o.get("reason") {
            run.reason = Some(
                r.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| r.to_string()),
            );
        }
        if let Some(c) = o.get("additionalContext") {
            run.additional_context = Some(
                c.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| c.to_string()),
            );
        }
        if o.get("continue").is_some_and(|c| c == &json!(false)) {
            run.blocked = true;
        }
    }
    run
}

/// Runs the hooks of `event_type`; records each; returns the block reason if any blocked.
async fn run_all(
    conv: &Arc<Conversation>,
    event_type: &str,
    tool_name: Option<&str>,
    mut payload: Map<String, Value>,
    action_id: Option<&str>,
    message_id: Option<&str>,
    hook_input: Value,
) -> std::io::Result<Option<String>> {
    let hooks = hooks_for(conv, event_type, tool_name);
    if hooks.is_empty() {
        return Ok(None);
    }
    payload.insert("event_type".into(), json!(event_type));
    payload
        .entry("tool_name")
        .or_insert(tool_name.map_or(Value::Null, |t| json!(t)));
    payload.insert("session_id".into(), json!(conv.id.to_string()));
    payload.insert("working_dir".into(), json!(conv.working_dir()));
    let input = Value::Object(payload);
    let mut blocked: Option<String> = None;
    for h in hooks {
        let r = run_command(conv, &h, event_type, tool_name, &input).await;
        let body = json!({
            "source": "hook",
            "hook_event_type": event_type,
            "hook_command": h.get("command").cloned().unwrap_or(Value::Null),
            "tool_name": tool_name,
            "success": r.success,
            "blocked": r.blocked,
            "exit_code": r.exit_code,
            "stdout": r.stdout,
            "stderr": r.stderr,
            "reason": r.reason,
            "additional_context": r.additional_context,
            "error": r.error,
            "action_id": action_id,
            "message_id": message_id,
            "hook_input": hook_input,
            "kind": "HookExecutionEvent",
        });
        conv.append(body).await?;
        if r.blocked {
            let why = r
                .additional_context
                .clone()
                .filter(|s| !s.trim().is_empty())
                .or(r.reason.clone().filter(|s| !s.trim().is_empty()))
                .or_else(|| Some(r.stderr.trim().to_string()).filter(|s| !s.is_empty()))
                .unwrap_or_else(|| "Blocked by hook".to_string());
            blocked = Some(why);
            break;
        }
    }
    Ok(blocked)
}

/// PreToolUse hooks for one action.
pub async fn pre_tool_use(
    conv: &Arc<Conversation>,
    tool: &str,
    action: &Value,
    action_id: &str,
) -> std::io::Result<Decision> {
    let mut p = Map::new();
    p.insert("tool_input".into(), action.clone());
    let r = run_all(
        conv,
        "PreToolUse",
        Some(tool),
        p,
        Some(action_id),
        None,
        json!({"tool_input": action}),
    )
    .await?;
    Ok(match r {
        Some(reason) => Decision::Block(reason),
        None => Decision::Allow,
    })
}

/// PostToolUse hooks for one executed action.
pub async fn post_tool_use(
    conv: &Arc<Conversation>,
    tool: &str,
    action: &Value,
    action_id: &str,
) -> std::io::Result<()> {
    let mut p = Map::new();
    p.insert("tool_input".into(), action.clone());
    run_all(
        conv,
        "PostToolUse",
        Some(tool),
        p,
        Some(action_id),
        None,
        json!({"tool_input": action}),
    )
    .await?;
    Ok(())
}

/// UserPromptSubmit hooks for a new user message; returns the block reason.
pub async fn user_prompt_submit(
    conv: &Arc<Conversation>,
    message: &str,
    message_id: &str,
) -> std::io::Result<Option<String>> {
    let mut p = Map::new();
    p.insert("message".into(), json!(message));
    run_all(
        conv,
        "UserPromptSubmit",
        None,
        p,
        None,
        Some(message_id),
        json!({"message": message}),
    )
    .await
}

/// Stop hooks when the agent finished. On a block, appends the feedback message and returns
/// true (the run continues).
pub async fn run_stop_hooks(conv: &Arc<Conversation>) -> std::io::Result<bool> {
    let mut p = Map::new();
    p.insert("metadata".into(), json!({"reason": "agent_finished"}));
    let blocked = run_all(
        conv,
        "Stop",
        None,
        p,
        None,
        None,
        json!({"reason": "agent_finished"}),
    )
    .await?;
    match blocked {
        Some(feedback) => {
            conv.append(events::user_message(
                "environment",
                json!([events::text(&format!("[Stop hook feedback] {feedback}"))]),
            ))
            .await?;
            Ok(true)
        }
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matcher_rules() {
        assert!(matches("*", None));
        assert!(matches("", Some("terminal")));
        assert!(matches("terminal", Some("terminal")));
        assert!(!matches("terminal", Some("file_editor")));
        assert!(matches("terminal|file_editor", Some("file_editor")));
        assert!(matches("/file_.*/", Some("file_editor")));
        assert!(!matches("terminal", None));
    }
}
