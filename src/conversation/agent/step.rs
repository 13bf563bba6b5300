//! One run of the agent loop: steps (LLM call → `ActionEvent`s → observations),
//! confirmation, pause/interrupt, iteration limits, stuck detection and stop hooks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::condense::{condense, CondenserConfig};
use super::init::ensure_initialized;
use crate::conversation::events::{self, text};
use crate::conversation::history::{
    build_messages, condensation_requested, llm_view, mask_secrets, pending_actions,
    unanswered_actions,
};
use crate::conversation::runtime::{AgentRuntime, Tools};
use crate::conversation::service::{Conversation, RunCtl};
use crate::conversation::{hooks, stuck, ConversationError, ExecutionStatus};
use crate::llm::{self, Completion, CompletionRequest, LlmError};
use crate::tools::ToolContext;

/// Outcome of a failed step.
pub(super) enum StepError {
    Interrupted,
    Llm(LlmError),
    Io(std::io::Error),
}

impl From<std::io::Error> for StepError {
    fn from(e: std::io::Error) -> Self {
        StepError::Io(e)
    }
}

impl From<ConversationError> for StepError {
    fn from(e: ConversationError) -> Self {
        match e {
            ConversationError::Io(e) => StepError::Io(e),
            other => StepError::Io(std::io::Error::other(other.to_string())),
        }
    }
}

/// One run (`POST /run`), repeated while messages asked for another run meanwhile.
pub async fn run(conv: Arc<Conversation>, ctl: RunCtl) {
    loop {
        if let Err(e) = run_once(&conv, &ctl).await {
            tracing::error!(conversation = %conv.id, error = %e, "run failed");
            let _ = conv
                .append(events::conversation_error("InternalError", &e.to_string()))
                .await;
            let _ = conv.set_status(ExecutionStatus::Error).await;
        }
        if ctl.cancel.is_cancelled()
            || conv.is_deleted()
            || !ctl.rerun.swap(false, Ordering::AcqRel)
        {
            ctl.exiting.store(true, Ordering::Release);
            break;
        }
        let st = conv.status();
        if st == ExecutionStatus::Finished || st == ExecutionStatus::Paused {
            // A queued message re-arms a run that already stopped.
            conv.set_status(ExecutionStatus::Idle).await.ok();
        }
    }
}

async fn run_once(conv: &Arc<Conversation>, ctl: &RunCtl) -> std::io::Result<()> {
    let rt = match ensure_initialized(conv).await {
        Ok(rt) => rt,
        Err(e) => {
            conv.append(events::conversation_error(
                "AgentInitializationError",
                &e.to_string(),
            ))
            .await?;
            conv.set_status(ExecutionStatus::Error).await?;
            return Ok(());
        }
    };
    if conv.agent_json()["kind"] == "ACPAgent" {
        return crate::conversation::acp_run::run_once(conv, ctl).await;
    }
    let st = conv.status();
    if [
        ExecutionStatus::Idle,
        ExecutionStatus::Paused,
        ExecutionStatus::Error,
        ExecutionStatus::Stuck,
        ExecutionStatus::WaitingForConfirmation,
    ]
    .contains(&st)
    {
        conv.set_status(ExecutionStatus::Running).await?;
    }
    let (max_iterations, stuck_on) =
        conv.read_state(|s| (s.max_iterations.max(1), s.stuck_detection));
    let mut iteration: u64 = 0;
    loop {
        if conv.is_deleted() {
            return Ok(());
        }
        if ctl.cancel.is_cancelled() {
            handle_interrupt(conv).await?;
            return Ok(());
        }
        let st = conv.status();
        if st == ExecutionStatus::Idle {
            // A message arrived after this loop's step finished the conversation.
            conv.set_status(ExecutionStatus::Running).await?;
        }
        if st == ExecutionStatus::Paused
            || st == ExecutionStatus::Stuck
            || st == ExecutionStatus::Error
            || st == ExecutionStatus::WaitingForConfirmation
        {
            return Ok(());
        }
        if st == ExecutionStatus::Finished {
            if hooks::run_stop_hooks(conv).await? {
                conv.set_status(ExecutionStatus::Running).await?;
                continue;
            }
            return Ok(());
        }
        if stuck_on {
            let verdict = conv.with_events(stuck::check).await?;
            match verdict {
                stuck::Verdict::Stuck => {
                    conv.set_status(ExecutionStatus::Stuck).await?;
                    return Ok(());
                }
                stuck::Verdict::Nudge(text_body) => {
                    conv.append(events::user_message(
                        "environment",
                        json!([text(&text_body)]),
                    ))
                    .await?;
                }
                stuck::Verdict::Fine => {}
            }
        }
        ctl.new_message.store(false, Ordering::Release);
        match step(conv, &rt, ctl).await {
            Ok(()) => {}
            Err(StepError::Interrupted) => {
                handle_interrupt(conv).await?;
                return Ok(());
            }
            Err(StepError::Llm(e)) => {
                conv.append(events::conversation_error(e.code(), &e.to_string()))
                    .await?;
                conv.set_status(ExecutionStatus::Error).await?;
                return Ok(());
            }
            Err(StepError::Io(e)) => return Err(e),
        }
        iteration += 1;
        let st = conv.status();
        if ctl.new_message.swap(false, Ordering::AcqRel)
            && (st == ExecutionStatus::Finished || st == ExecutionStatus::WaitingForConfirmation)
        {
            if st == ExecutionStatus::WaitingForConfirmation {
                conv.reject_pending("Superseded by a new user message")
                    .await?;
            }
            conv.set_status(ExecutionStatus::Running).await?;
        }
        if conv.status() == ExecutionStatus::WaitingForConfirmation {
            return Ok(());
        }
        if iteration >= max_iterations {
            let st = conv.status();
            if st == ExecutionStatus::Finished || st == ExecutionStatus::Paused {
                // Let stop hooks run for a finish reached on the last iteration.
                if st == ExecutionStatus::Finished && hooks::run_stop_hooks(conv).await? {
                    conv.set_status(ExecutionStatus::Running).await?;
                } else {
                    return Ok(());
                }
            }
            conv.append(events::conversation_error(
                "MaxIterationsReached",
                &format!("Agent reached maximum iterations limit ({max_iterations})."),
            ))
            .await?;
            conv.set_status(ExecutionStatus::Error).await?;
            return Ok(());
        }
    }
}

async fn handle_interrupt(conv: &Arc<Conversation>) -> std::io::Result<()> {
    let orphans = conv.with_events(unanswered_actions).await?;
    for a in orphans {
        conv.append(events::agent_error(
            events::str_field(&a, "tool_name").unwrap_or(""),
            events::str_field(&a, "tool_call_id").unwrap_or(""),
            "Tool call interrupted before completion. The conversation was paused.",
            events::internal_error(),
        ))
        .await?;
    }
    conv.set_status(ExecutionStatus::Paused).await?;
    conv.append(events::bare("InterruptEvent", "user")).await?;
    Ok(())
}

/// Runs `fut` unless the run is interrupted first.
async fn cancellable<T>(
    ctl: &RunCtl,
    fut: impl std::future::Future<Output = T>,
) -> Result<T, StepError> {
    tokio::select! {
        biased;
        _ = ctl.cancel.cancelled() => Err(StepError::Interrupted),
        r = fut => Ok(r),
    }
}

async fn step(
    conv: &Arc<Conversation>,
    rt: &Arc<AgentRuntime>,
    ctl: &RunCtl,
) -> Result<(), StepError> {
    let pending = conv.with_events(pending_actions).await?;
    if !pending.is_empty() {
        return execute_actions(conv, rt, ctl, pending).await;
    }
    let last_message_blocked = conv.read_state(|s| {
        s.last_user_message_id
            .as_ref()
            .is_some_and(|last| s.blocked_messages.contains_key(last))
    });
    if last_message_blocked {
        conv.set_status(ExecutionStatus::Finished).await?;
        return Ok(());
    }
    if let Some(cfg) =
        CondenserConfig::from_agent(&conv.agent_json()).filter(|_| rt.condenser_llm.is_some())
    {
        let (view, requested) = conv
            .with_events(|evs| (llm_view(evs), condensation_requested(evs)))
            .await?;
        if view.len() > cfg.max_size || requested {
            if let Some(ev) = cancellable(ctl, condense(conv, rt, &cfg, &view)).await?? {
                conv.append(ev).await?;
                return Ok(());
            }
        }
    }
    let secrets = conv.secret_values();
    let messages = conv
        .with_events(|evs| build_messages(&llm_view(evs), &secrets))
        .await?;
    let request = CompletionRequest {
        messages,
        tools: rt.definitions.clone(),
        cache_key: Some(conv.id.to_string()),
    };
    let started = Instant::now();
    let sink_conv = conv.clone();
    let sink = move |d: llm::StreamDelta| {
        let body = match d {
            llm::StreamDelta::Content(c) => {
                json!({"source": "agent", "content": c, "kind": "StreamingDeltaEvent"})
            }
            llm::StreamDelta::Reasoning(r) => {
                json!({"source": "agent", "reasoning_content": r, "kind": "StreamingDeltaEvent"})
            }
        };
        sink_conv.publish_transient(body);
    };
    let completion = cancellable(ctl, rt.llm.complete_streaming(request, &sink))
        .await?
        .map_err(StepError::Llm)?;
    let latency = if completion.latency_secs > 0.0 {
        completion.latency_secs
    } else {
        started.elapsed().as_secs_f64()
    };
    let cost = crate::conversation::stats::call_cost(&rt.llm_json, &completion.usage);
    conv.record_usage(
        &rt.usage_id,
        &rt.model,
        &completion.usage,
        cost,
        &completion.response_id,
        latency,
    )
    .await?;
    if completion.tool_calls.is_empty() {
        return handle_text_reply(conv, &completion).await;
    }
    let actions = emit_actions(conv, rt, &completion).await?;
    if actions.is_empty() {
        return Ok(());
    }
    let only_builtin = actions.len() == 1
        && matches!(
            events::str_field(&actions[0], "tool_name"),
            Some("finish") | Some("think")
        );
    if !only_builtin && needs_confirmation(conv, &actions).await? {
        conv.set_status(ExecutionStatus::WaitingForConfirmation)
            .await?;
        return Ok(());
    }
    execute_actions(conv, rt, ctl, actions).await
}

async fn handle_text_reply(conv: &Arc<Conversation>, c: &Completion) -> Result<(), StepError> {
    let body = c.text.clone().unwrap_or_default();
    if !body.trim().is_empty() {
        let masked = mask_secrets(&body, &conv.secret_values());
        conv.append(events::agent_message(
            &masked,
            c.reasoning_content.as_deref(),
            &c.response_id,
        ))
        .await?;
        conv.set_status(ExecutionStatus::Finished).await?;
    } else {
        conv.append(events::agent_message(
            &body,
            c.reasoning_content.as_deref(),
            &c.response_id,
        ))
        .await?;
        conv.append(events::user_message(
            "environment",
            json!([text("Your last response contained neither a tool call nor a message. Use a tool to continue, or call `finish` when the task is done.")]),
        ))
        .await?;
    }
    Ok(())
}

/// Maps a model's tool name to one of ours (aliases and stray XML suffixes).
fn normalize_tool_name(name: &str, tools: &Tools) -> String {
    if tools.get(name).is_some() {
        return name.to_string();
    }
    let cut: String = name
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if tools.get(&cut).is_some() {
        return cut;
    }
    match cut.as_str() {
        "bash" | "command" | "execute" | "execute_bash" | "shell" => "terminal".into(),
        "str_replace" | "str_replace_editor" | "edit" | "editor" => "file_editor".into(),
        _ => name.to_string(),
    }
}

fn normalize_risk(v: Option<&Value>) -> &'static str {
    match v
        .and_then(Value::as_str)
        .map(|s| s.trim().to_ascii_uppercase())
        .as_deref()
    {
        Some("LOW") => "LOW",
        Some("MEDIUM") => "MEDIUM",
        Some("HIGH") => "HIGH",
        _ => "UNKNOWN",
    }
}

async fn emit_actions(
    conv: &Arc<Conversation>,
    rt: &Arc<AgentRuntime>,
    c: &Completion,
) -> Result<Vec<Value>, StepError> {
    let analyzer = conv
        .read_state(|s| Some(s.security_analyzer.clone()))
        .filter(|v| !v.is_null());
    let mut out = Vec::new();
    let available: Vec<&str> = rt.tools.iter().map(|t| t.name()).collect();
    for (i, tc) in c.tool_calls.iter().enumerate() {
        let first = i == 0;
        let name = normalize_tool_name(&tc.name, &rt.tools);
        let parsed: Result<Map<String, Value>, String> =
            match serde_json::from_str::<Value>(&tc.arguments) {
                Ok(Value::Object(m)) => Ok(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
                Ok(Value::Null) => Ok(Map::new()),
                Ok(_) => Err("the arguments are not a JSON object".to_string()),
                Err(e) => Err(format!("the arguments are not valid JSON: {e}")),
            };
        let mut tool_call = Map::new();
        tool_call.insert("id".into(), json!(tc.id));
        if let Some(r) = &tc.responses_item_id {
            tool_call.insert("responses_item_id".into(), json!(r));
        }
        tool_call.insert("name".into(), json!(name));
        let arguments = match &parsed {
            Ok(_) => tc.arguments.clone(),
            Err(e) => json!({"_openhands_malformed_tool_call": true, "error": e}).to_string(),
        };
        tool_call.insert("arguments".into(), json!(arguments));
        tool_call.insert(
            "origin".into(),
            json!(if tc.responses_item_id.is_some() {
                "responses"
            } else {
                "completion"
            }),
        );
        let mut ev = Map::new();
        ev.insert("source".into(), json!("agent"));
        let thought: Vec<Value> = if first {
            c.text
                .iter()
                .filter(|t| !t.is_empty())
                .map(|t| text(t))
                .collect()
        } else {
            Vec::new()
        };
        ev.insert("thought".into(), Value::Array(thought));
        if first {
            if let Some(r) = &c.reasoning_content {
                ev.insert("reasoning_content".into(), json!(r));
            }
        }
        ev.insert("thinking_blocks".into(), json!([]));
        if first {
            if let Some(r) = &c.responses_reasoning_item {
                ev.insert("responses_reasoning_item".into(), r.clone());
            }
        }
        let tool = rt.tools.get(&name).cloned();
        let mut error: Option<String> = None;
        let mut action: Option<Value> = None;
        let mut risk = "UNKNOWN";
        let mut summary: Option<String> = None;
        match (&tool, parsed) {
            (None, _) => {
                error = Some(format!(
                    "Tool '{}' not found. Available: {:?}",
                    tc.name, available
                ));
            }
            (Some(_), Err(e)) => {
                error = Some(format!(
                    "Error validating tool '{name}': {e}. Parameters provided: []"
                ));
            }
            (Some(t), Ok(mut args)) => {
                let r = args.shift_remove("security_risk");
                let has_summary_param = t
                    .definition()
                    .parameters
                    .get("properties")
                    .is_some_and(|p| p.get("summary").is_some());
                let s = if has_summary_param {
                    None
                } else {
                    args.shift_remove("summary")
                };
                if !t.read_only() && analyzer.is_some() {
                    risk = normalize_risk(r.as_ref());
                }
                let keys: Vec<String> = args.keys().cloned().collect();
                if name == "file_editor" && !args.contains_key("command") {
                    let cmd = if args.contains_key("old_str") {
                        Some("str_replace")
                    } else if args.contains_key("insert_line") {
                        Some("insert")
                    } else if args.contains_key("file_text") {
                        Some("create")
                    } else if args.contains_key("path") {
                        Some("view")
                    } else {
                        None
                    };
                    if let Some(cmd) = cmd {
                        args.insert("command".into(), json!(cmd));
                    }
                }
                match t.parse_action(&args) {
                    Ok(a) => {
                        action = Some(a);
                        summary = Some(
                            s.and_then(|v| v.as_str().map(str::to_owned))
                                .unwrap_or_else(|| {
                                    format!("{name}: {}", Value::Object(args.clone()))
                                }),
                        );
                    }
                    Err(msg) => {
                        error = Some(format!(
                            "Error validating tool '{name}': {msg}. Parameters provided: {keys:?}"
                        ));
                    }
                }
            }
        }
        if let Some(a) = &action {
            ev.insert("action".into(), a.clone());
        }
        ev.insert("tool_name".into(), json!(name));
        ev.insert("tool_call_id".into(), json!(tc.id));
        ev.insert("tool_call".into(), Value::Object(tool_call));
        ev.insert("llm_response_id".into(), json!(c.response_id));
        ev.insert("security_risk".into(), json!(risk));
        if let Some(s) = summary {
            ev.insert("summary".into(), json!(s));
        }
        ev.insert("kind".into(), json!("ActionEvent"));
        let stored = conv.append(Value::Object(ev)).await?;
        if let Some(err) = error {
            conv.append(events::agent_error(
                &name,
                &tc.id,
                &err,
                events::retryable_agent_action(),
            ))
            .await?;
            continue;
        }
        out.push(stored);
        if name == "finish" {
            break;
        }
    }
    Ok(out)
}

fn risk_rank(r: &str) -> u8 {
    match r {
        "LOW" => 1,
        "MEDIUM" => 2,
        "HIGH" => 3,
        _ => 0,
    }
}

async fn needs_confirmation(conv: &Arc<Conversation>, actions: &[Value]) -> std::io::Result<bool> {
    let (policy, analyzer) =
        conv.read_state(|s| (s.confirmation_policy.clone(), s.security_analyzer.clone()));
    let analyzer = Some(analyzer).filter(|v| !v.is_null());
    let risks: Vec<(String, String)> = actions
        .iter()
        .map(|a| {
            (
                events::id(a).to_string(),
                events::str_field(a, "security_risk")
                    .unwrap_or("UNKNOWN")
                    .to_string(),
            )
        })
        .collect();
    if let Some(an) = &analyzer {
        let mut risk_map = Map::new();
        for (id, r) in &risks {
            risk_map.insert(id.clone(), json!(r));
        }
        conv.append(json!({
            "source": "environment",
            "analyzer": an.get("kind").and_then(Value::as_str).unwrap_or("SecurityAnalyzer"),
            "policy": policy.get("kind").and_then(Value::as_str).unwrap_or("NeverConfirm"),
            "risks": risk_map,
            "details": {},
            "kind": "SecurityAnalysisEvent",
        }))
        .await?;
    }
    let kind = policy
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("NeverConfirm");
    Ok(match kind {
        "AlwaysConfirm" => true,
        "ConfirmRisky" => {
            let threshold = policy
                .get("threshold")
                .and_then(Value::as_str)
                .unwrap_or("HIGH");
            let confirm_unknown = policy
                .get("confirm_unknown")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            risks.iter().any(|(_, r)| {
                if r == "UNKNOWN" {
                    confirm_unknown
                } else {
                    risk_rank(r) >= risk_rank(threshold)
                }
            })
        }
        _ => false,
    })
}

async fn execute_actions(
    conv: &Arc<Conversation>,
    rt: &Arc<AgentRuntime>,
    ctl: &RunCtl,
    actions: Vec<Value>,
) -> Result<(), StepError> {
    let mut finished = false;
    for a in actions {
        if ctl.cancel.is_cancelled() {
            return Err(StepError::Interrupted);
        }
        let name = events::str_field(&a, "tool_name").unwrap_or("").to_string();
        let call_id = events::str_field(&a, "tool_call_id")
            .unwrap_or("")
            .to_string();
        let action_id = events::id(&a).to_string();
        let Some(tool) = rt.tools.get(&name).cloned() else {
            conv.append(events::agent_error(
                &name,
                &call_id,
                &format!("Tool '{name}' not found."),
                events::retryable_agent_action(),
            ))
            .await?;
            continue;
        };
        let action = a.get("action").cloned().unwrap_or(Value::Null);
        match hooks::pre_tool_use(conv, &name, &action, &action_id).await? {
            hooks::Decision::Block(reason) => {
                conv.append(events::user_reject(
                    &name, &call_id, &reason, "hook", &action_id,
                ))
                .await?;
                continue;
            }
            hooks::Decision::Allow => {}
        }
        let ctx = ToolContext {
            cancel: ctl.cancel.child_token(),
            ..rt.base_ctx.clone()
        };
        let exec = tool.execute(&action, &ctx);
        tokio::pin!(exec);
        let result = tokio::select! {
            r = &mut exec => r,
            _ = ctl.cancel.cancelled() => {
                // Give the tool a moment to stop its process and report.
                match tokio::time::timeout(Duration::from_secs(3), &mut exec).await {
                    Ok(r) => r,
                    Err(_) => return Err(StepError::Interrupted),
                }
            }
        };
        match result {
            Ok(out) => {
                conv.append(events::observation(
                    &name,
                    &call_id,
                    out.observation,
                    &action_id,
                ))
                .await?;
                hooks::post_tool_use(conv, &name, &action, &action_id).await?;
            }
            Err(e) => {
                conv.append(events::agent_error(
                    &name,
                    &call_id,
                    &format!("Error executing tool '{name}': {e}"),
                    events::retryable_agent_action(),
                ))
                .await?;
            }
        }
        if name == "finish" {
            finished = true;
        }
        if ctl.cancel.is_cancelled() {
            return Err(StepError::Interrupted);
        }
    }
    if finished {
        conv.set_status(ExecutionStatus::Finished).await?;
    }
    Ok(())
}
