//! The agent loop run server-side for one conversation: lazy initialization (tools, LLM,
//! `SystemPromptEvent`), steps (LLM call → `ActionEvent`s → observations), confirmation,
//! pause/interrupt, iteration limits, stuck detection, stop hooks, and the LLM view of the
//! event log.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::events::{self, text};
use super::service::{Conversation, RunCtl};
use super::{hooks, status, stuck, ConversationError};
use crate::llm::{
    self, Completion, CompletionRequest, LlmClient, LlmError, LlmSettings, Message, Role, ToolCall,
    ToolDefinition,
};
use crate::tools::{Tool, ToolContext, ToolSet};

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
fn settings_or_default(v: &Value) -> LlmSettings {
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
fn annotations(tool: &dyn Tool) -> Value {
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

fn system_prompt(working_dir: &str, tools: &Tools) -> String {
    let names: Vec<&str> = tools.iter().map(|t| t.name()).collect();
    format!(
        "You are an autonomous software engineering agent working on the user's machine through tools.\n\
         \n\
         How to work:\n\
         - Understand the request first; inspect files and run commands before changing anything.\n\
         - Make focused, minimal changes and verify them (run the code or its tests) before you finish.\n\
         - Prefer one clear tool call at a time and read each result carefully.\n\
         - Never invent file contents or command output; look them up with the tools.\n\
         - Do not expose secrets, and ask before destructive or irreversible operations.\n\
         - When the task is complete, call `finish` with a short summary of what you did.\n\
         \n\
         For every call of a tool that can change something, set `security_risk` to LOW, MEDIUM or HIGH \
         according to its possible impact, and give a short `summary` of the call.\n\
         \n\
         Available tools: {}.\n\
         Your current working directory is: {working_dir}\n\
         Use absolute paths with the file editor.",
        names.join(", ")
    )
}

/// Builds the agent runtime and, on the very first use, emits the `SystemPromptEvent` (and the
/// `hook_config` state update when hooks are configured).
pub async fn ensure_initialized(
    conv: &Arc<Conversation>,
) -> Result<Arc<AgentRuntime>, ConversationError> {
    super::plugins::ensure_loaded(conv).await?;
    let mut guard = conv.runtime.lock().await;
    if let Some(rt) = guard.as_ref() {
        return Ok(rt.clone());
    }
    let agent = conv.agent_json();
    let llm_json = agent.get("llm").cloned().unwrap_or(json!({}));
    let settings = llm_settings(&llm_json).map_err(ConversationError::Invalid)?;
    let base_ctx = ToolContext {
        working_dir: conv.working_dir().into(),
        persistence_dir: conv.dir().to_path_buf(),
        cancel: tokio_util::sync::CancellationToken::new(),
    };
    let specs: Vec<Value> = agent
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let defaults = agent
        .get("include_default_tools")
        .and_then(Value::as_array)
        .cloned();
    let (mut toolset, mut unknown) =
        ToolSet::from_agent_spec_with_defaults(&specs, defaults.as_deref(), &base_ctx);
    // Tools that act on the conversation registry.
    if let Some(pos) = unknown.iter().position(|n| n == "start_child_conversation") {
        unknown.remove(pos);
        toolset.push(Arc::new(super::children::StartChildConversationTool::new(
            conv.registry(),
            conv.id,
        )));
    }
    if let Some(pos) = unknown.iter().position(|n| {
        matches!(
            n.as_str(),
            "task_tool_set" | "TaskToolSet" | "task" | "TaskTool"
        )
    }) {
        if let Some(registry) = conv.registry().upgrade().map(|s| s.subagents.clone()) {
            unknown.remove(pos);
            register_definitions(conv, &registry).await;
            toolset.push(Arc::new(crate::subagents::task::TaskTool::new(
                registry,
                conv.clone(),
            )));
        }
    }
    if !unknown.is_empty() {
        tracing::warn!(conversation = %conv.id, tools = ?unknown, "agent names tools this server does not provide");
    }
    for tool in mcp_tools(conv, agent.get("mcp_config")).await {
        toolset.push(tool);
    }
    let mut rt = AgentRuntime::new(
        llm::client_for(&settings),
        &llm_json,
        Tools(toolset.iter().cloned().collect()),
        base_ctx,
    );
    if let Some(cfg) = CondenserConfig::from_agent(&agent) {
        if let Ok(cs) = llm_settings(&cfg.llm) {
            rt = rt.with_condenser_llm(llm::client_for(&cs));
        }
    }
    let rt = Arc::new(rt);
    announce(conv, &rt).await?;
    *guard = Some(rt.clone());
    Ok(rt)
}

/// Registers the sub-agent definitions a conversation can delegate to: the ones its client
/// forwarded, then the workspace's and the user's definition files (first of a name wins).
async fn register_definitions(
    conv: &Arc<Conversation>,
    registry: &Arc<crate::subagents::Registry>,
) {
    for def in conv
        .meta_value("agent_definitions")
        .and_then(|d| d.as_array().cloned())
        .unwrap_or_default()
    {
        let mut def = def;
        if def.get("tools").is_none_or(Value::is_null) {
            def["tools"] = json!([]);
        }
        registry.register_if_absent(def);
    }
    let req = crate::subagents::CatalogRequest {
        load_user: true,
        load_project: true,
        load_builtin: false,
        project_dir: Some(conv.working_dir().into()),
    };
    let home = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_default();
    let persistence = conv
        .registry()
        .upgrade()
        .map(|s| s.persistence_dir())
        .unwrap_or_default();
    let files =
        tokio::task::spawn_blocking(move || crate::subagents::catalog(&req, &home, &persistence))
            .await
            .unwrap_or_default();
    for def in files {
        registry.register_if_absent(def);
    }
}

/// Longest wait for one MCP server to connect and list its tools.
const MCP_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connects the agent's MCP servers (all at once) and returns their tools; a server that
/// cannot be reached is logged and left out.
async fn mcp_tools(
    conv: &Arc<Conversation>,
    config: Option<&Value>,
) -> Vec<Arc<dyn crate::tools::Tool>> {
    let servers = config.map(crate::mcp::enabled_servers).unwrap_or_default();
    let connects = servers.iter().map(|(name, server)| async move {
        let client = crate::mcp::McpClient::connect(name, server, MCP_CONNECT_TIMEOUT).await?;
        let tools = tokio::time::timeout(MCP_CONNECT_TIMEOUT, client.tools())
            .await
            .unwrap_or_else(|_| {
                Err(crate::mcp::McpError {
                    kind: "timeout",
                    message: "tools/list timed out".into(),
                })
            })?;
        Ok::<_, crate::mcp::McpError>((client, tools))
    });
    let mut out: Vec<Arc<dyn crate::tools::Tool>> = Vec::new();
    for (result, (name, _)) in futures::future::join_all(connects)
        .await
        .into_iter()
        .zip(&servers)
    {
        match result {
            Ok((client, tools)) => {
                for t in &tools {
                    if let Some(tool) = crate::tools::mcp::McpTool::new(client.clone(), t) {
                        out.push(Arc::new(tool));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(conversation = %conv.id, server = %name, error = %e, "MCP server unavailable; its tools are left out")
            }
        }
    }
    out
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

/// Installs a prepared runtime (tests use fakes) and announces it like [`ensure_initialized`].
pub async fn install_runtime(
    conv: &Arc<Conversation>,
    rt: Arc<AgentRuntime>,
) -> Result<(), ConversationError> {
    let mut guard = conv.runtime.lock().await;
    announce(conv, &rt).await?;
    *guard = Some(rt);
    Ok(())
}

/// Registers the LLMs in the stats and emits the `SystemPromptEvent` once per conversation.
async fn announce(conv: &Arc<Conversation>, rt: &AgentRuntime) -> Result<(), ConversationError> {
    let agent = conv.agent_json();
    conv.register_usage(&rt.usage_id, &rt.model);
    conv.resolve_lookup_secrets().await;
    let secrets = conv.secret_values();
    for t in rt.tools.iter() {
        t.set_secrets(&secrets);
    }
    if let Some(cllm) = agent.get("condenser").and_then(|c| c.get("llm")) {
        let s = settings_or_default(cllm);
        conv.register_usage(&s.usage_id, &s.model);
    }
    let has_prompt = conv
        .with_events(|evs| evs.iter().any(|e| events::kind(e) == "SystemPromptEvent"))
        .await?;
    if has_prompt {
        return Ok(());
    }
    if agent["kind"] == "ACPAgent" {
        conv.append(super::acp_run::system_prompt_event()).await?;
        return Ok(());
    }
    let hook_config = conv.meta_value("hook_config").filter(|h| !h.is_null());
    let set = conv
        .state_value("hook_config")
        .is_some_and(|h| !h.is_null());
    if let (Some(h), false) = (hook_config, set) {
        conv.set_fields(vec![("hook_config", h)], true).await?;
    }
    let tool_defs: Vec<Value> = rt
        .tools
        .iter()
        .map(|t| {
            let mut entry = t.system_prompt_entry();
            if entry.get("annotations").is_none() {
                let kind = entry.get("kind").cloned();
                let title = entry.get("title").cloned();
                if let Some(o) = entry.as_object_mut() {
                    o.shift_remove("kind");
                    o.shift_remove("title");
                    o.insert("annotations".into(), annotations(t.as_ref()));
                    o.insert("kind".into(), kind.unwrap_or(Value::Null));
                    o.insert("title".into(), title.unwrap_or(Value::Null));
                }
            }
            entry
        })
        .collect();
    let mut prompt = system_prompt(&conv.working_dir(), &rt.tools);
    let ctx = agent.get("agent_context");
    if let Some(suffix) = ctx
        .and_then(|c| c.get("system_message_suffix"))
        .and_then(Value::as_str)
    {
        if !suffix.trim().is_empty() {
            prompt.push_str("\n\n");
            prompt.push_str(suffix);
        }
    }
    // Skills without triggers are always part of the instructions.
    for skill in ctx
        .and_then(|c| c.get("skills"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let untriggered = skill.get("trigger").is_none_or(Value::is_null);
        if let (true, Some(content)) = (untriggered, skill.get("content").and_then(Value::as_str)) {
            let name = skill.get("name").and_then(Value::as_str).unwrap_or("skill");
            prompt.push_str(&format!("\n\n<SKILL name=\"{name}\">\n{content}\n</SKILL>"));
        }
    }
    let names: Vec<String> = conv.secret_values().into_iter().map(|(k, _)| k).collect();
    let dynamic = (!names.is_empty()).then(|| {
        text(&format!(
            "<SECRETS>\nThese secrets are available as environment variables in the terminal when a command names them: {}. Use them by name (e.g. ${}); never print their values.\n</SECRETS>",
            names.iter().map(|n| format!("${n}")).collect::<Vec<_>>().join(", "),
            names[0]
        ))
    });
    let body = json!({
        "source": "agent",
        "system_prompt": text(&prompt),
        "tools": tool_defs,
        "dynamic_context": dynamic,
        "kind": "SystemPromptEvent",
    });
    conv.append(body).await?;
    Ok(())
}

/// ActionEvents (with an action) that have no observation, rejection or error yet.
pub fn unanswered_actions(evs: &[Value]) -> Vec<Value> {
    let mut answered_actions: HashSet<&str> = HashSet::new();
    let mut answered_calls: HashSet<&str> = HashSet::new();
    for e in evs {
        match events::kind(e) {
            "ObservationEvent" | "UserRejectObservation" => {
                if let Some(a) = events::str_field(e, "action_id") {
                    answered_actions.insert(a);
                }
            }
            "AgentErrorEvent" => {
                if let Some(c) = events::str_field(e, "tool_call_id") {
                    answered_calls.insert(c);
                }
            }
            _ => {}
        }
    }
    evs.iter()
        .filter(|e| {
            events::kind(e) == "ActionEvent"
                && e.get("action").is_some_and(|a| !a.is_null())
                && !answered_actions.contains(events::id(e))
                && !events::str_field(e, "tool_call_id").is_some_and(|c| answered_calls.contains(c))
        })
        .cloned()
        .collect()
}

/// The actions waiting for confirmation (same as [`unanswered_actions`]).
pub fn pending_actions(evs: &[Value]) -> Vec<Value> {
    unanswered_actions(evs)
}

/// Outcome of a failed step.
enum StepError {
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
            let _ = conv.set_status(status::ERROR).await;
        }
        if ctl.cancel.is_cancelled()
            || conv.is_deleted()
            || !ctl.rerun.swap(false, Ordering::AcqRel)
        {
            ctl.exiting.store(true, Ordering::Release);
            break;
        }
        let st = conv.status();
        if st == status::FINISHED || st == status::PAUSED {
            // A queued message re-arms a run that already stopped.
            conv.set_status(status::IDLE).await.ok();
        }
    }
}

async fn run_once(conv: &Arc<Conversation>, ctl: &RunCtl) -> std::io::Result<()> {
    if conv.agent_json()["kind"] == "ACPAgent" {
        return super::acp_run::run_once(conv, ctl).await;
    }
    let rt = match ensure_initialized(conv).await {
        Ok(rt) => rt,
        Err(e) => {
            conv.append(events::conversation_error(
                "AgentInitializationError",
                &e.to_string(),
            ))
            .await?;
            conv.set_status(status::ERROR).await?;
            return Ok(());
        }
    };
    let st = conv.status();
    if [
        status::IDLE,
        status::PAUSED,
        status::ERROR,
        status::STUCK,
        status::WAITING,
    ]
    .contains(&st.as_str())
    {
        conv.set_status(status::RUNNING).await?;
    }
    let max_iterations = conv
        .state_value("max_iterations")
        .and_then(|v| v.as_u64())
        .unwrap_or(500)
        .max(1);
    let stuck_on = conv
        .state_value("stuck_detection")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
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
        if st == status::PAUSED
            || st == status::STUCK
            || st == status::ERROR
            || st == status::WAITING
        {
            return Ok(());
        }
        if st == status::FINISHED {
            if hooks::run_stop_hooks(conv).await? {
                conv.set_status(status::RUNNING).await?;
                continue;
            }
            return Ok(());
        }
        if stuck_on {
            let verdict = conv.with_events(stuck::check).await?;
            match verdict {
                stuck::Verdict::Stuck => {
                    conv.set_status(status::STUCK).await?;
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
                conv.set_status(status::ERROR).await?;
                return Ok(());
            }
            Err(StepError::Io(e)) => return Err(e),
        }
        iteration += 1;
        let st = conv.status();
        if ctl.new_message.swap(false, Ordering::AcqRel)
            && (st == status::FINISHED || st == status::WAITING)
        {
            if st == status::WAITING {
                conv.reject_pending("Superseded by a new user message")
                    .await?;
            }
            conv.set_status(status::RUNNING).await?;
        }
        if conv.status() == status::WAITING {
            return Ok(());
        }
        if iteration >= max_iterations {
            let st = conv.status();
            if st == status::FINISHED || st == status::PAUSED {
                // Let stop hooks run for a finish reached on the last iteration.
                if st == status::FINISHED && hooks::run_stop_hooks(conv).await? {
                    conv.set_status(status::RUNNING).await?;
                } else {
                    return Ok(());
                }
            }
            conv.append(events::conversation_error(
                "MaxIterationsReached",
                &format!("Agent reached maximum iterations limit ({max_iterations})."),
            ))
            .await?;
            conv.set_status(status::ERROR).await?;
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
    conv.set_status(status::PAUSED).await?;
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
    if let Some(last) = conv
        .state_value("last_user_message_id")
        .and_then(|v| v.as_str().map(str::to_owned))
    {
        let blocked = conv.state_value("blocked_messages");
        if blocked.as_ref().and_then(|b| b.get(&last)).is_some() {
            conv.set_status(status::FINISHED).await?;
            return Ok(());
        }
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
    let cost = super::stats::call_cost(&rt.llm_json, &completion.usage);
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
        conv.set_status(status::WAITING).await?;
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
        conv.set_status(status::FINISHED).await?;
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

/// Replaces secret values with `<secret-hidden>`.
pub fn mask_secrets(s: &str, secrets: &[(String, String)]) -> String {
    let mut out = s.to_string();
    for (_, v) in secrets {
        if v.len() >= 3 {
            out = out.replace(v.as_str(), "<secret-hidden>");
        }
    }
    out
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
        .state_value("security_analyzer")
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
    let policy = conv
        .state_value("confirmation_policy")
        .unwrap_or(json!({"kind": "NeverConfirm"}));
    let analyzer = conv
        .state_value("security_analyzer")
        .filter(|v| !v.is_null());
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
        conv.set_status(status::FINISHED).await?;
    }
    Ok(())
}

/// The LLM text of an `ObservationEvent`: derived from the stored observation (never from
/// memory, so a reload gives the same prompt), secret values masked.
fn observation_text(ev: &Value, secrets: &[(String, String)]) -> String {
    let obs = ev.get("observation").unwrap_or(&Value::Null);
    mask_secrets(&crate::tools::observation_llm_text(obs), secrets)
}

/// Settings of an `LLMSummarizingCondenser`.
struct CondenserConfig {
    llm: Value,
    max_size: usize,
    keep_first: usize,
}

impl CondenserConfig {
    fn from_agent(agent: &Value) -> Option<Self> {
        let c = agent.get("condenser").filter(|c| c.is_object())?;
        if c.get("kind").and_then(Value::as_str) != Some("LLMSummarizingCondenser") {
            return None;
        }
        Some(CondenserConfig {
            llm: c.get("llm").filter(|l| l.is_object())?.clone(),
            max_size: c
                .get("max_size")
                .and_then(Value::as_u64)
                .unwrap_or(80)
                .max(4) as usize,
            keep_first: c.get("keep_first").and_then(Value::as_u64).unwrap_or(4) as usize,
        })
    }
}

const CONVERTIBLE: [&str; 6] = [
    "SystemPromptEvent",
    "MessageEvent",
    "ActionEvent",
    "ObservationEvent",
    "UserRejectObservation",
    "AgentErrorEvent",
];

/// The events the LLM sees: LLM-convertible events minus those forgotten by condensations,
/// with the latest summary inserted as a user message at its offset.
pub fn llm_view(evs: &[Value]) -> Vec<Value> {
    let mut forgotten: HashSet<&str> = HashSet::new();
    let mut summary: Option<(String, usize, String)> = None;
    for e in evs {
        if events::kind(e) == "Condensation" {
            if let Some(ids) = e.get("forgotten_event_ids").and_then(Value::as_array) {
                forgotten.extend(ids.iter().filter_map(Value::as_str));
            }
            if let Some(s) = events::str_field(e, "summary") {
                let off = e.get("summary_offset").and_then(Value::as_u64).unwrap_or(0) as usize;
                summary = Some((s.to_string(), off, events::id(e).to_string()));
            }
        }
    }
    let mut view: Vec<Value> = evs
        .iter()
        .filter(|e| CONVERTIBLE.contains(&events::kind(e)) && !forgotten.contains(events::id(e)))
        .cloned()
        .collect();
    if let Some((text_body, off, id)) = summary {
        let msg = json!({
            "id": format!("{id}-summary"),
            "source": "environment",
            "llm_message": {"role": "user", "content": [text(&text_body)]},
            "kind": "MessageEvent",
        });
        view.insert(off.min(view.len()), msg);
    }
    view
}

/// True when a `CondensationRequest` came after the last `Condensation`.
fn condensation_requested(evs: &[Value]) -> bool {
    for e in evs.iter().rev() {
        match events::kind(e) {
            "Condensation" => return false,
            "CondensationRequest" => return true,
            _ => {}
        }
    }
    false
}

fn render_for_summary(e: &Value) -> String {
    let body = match events::kind(e) {
        "MessageEvent" => format!(
            "{}: {}",
            e.get("llm_message")
                .and_then(|m| m.get("role"))
                .and_then(Value::as_str)
                .unwrap_or("user"),
            events::message_text(e)
        ),
        "ActionEvent" => format!(
            "agent called {} with {}",
            events::str_field(e, "tool_name").unwrap_or(""),
            e.get("tool_call")
                .and_then(|t| t.get("arguments"))
                .and_then(Value::as_str)
                .unwrap_or("{}")
        ),
        "ObservationEvent" => format!(
            "result of {}: {}",
            events::str_field(e, "tool_name").unwrap_or(""),
            events::content_text(e.get("observation").and_then(|o| o.get("content")))
        ),
        "UserRejectObservation" => format!(
            "action rejected: {}",
            events::str_field(e, "rejection_reason").unwrap_or("")
        ),
        "AgentErrorEvent" => format!("error: {}", events::str_field(e, "error").unwrap_or("")),
        _ => String::new(),
    };
    body.chars().take(2000).collect()
}

/// Summarizes the middle of the view with the condenser LLM into a `Condensation` event body;
/// `None` when there is nothing to forget.
async fn condense(
    conv: &Arc<Conversation>,
    rt: &AgentRuntime,
    cfg: &CondenserConfig,
    view: &[Value],
) -> Result<Option<Value>, StepError> {
    let keep_tail = (cfg.max_size / 2).saturating_sub(cfg.keep_first + 1);
    let start = cfg.keep_first.min(view.len());
    let end = view.len().saturating_sub(keep_tail).max(start);
    let middle = &view[start..end];
    let forgotten: Vec<Value> = middle
        .iter()
        .filter(|e| !events::id(e).ends_with("-summary"))
        .map(|e| json!(events::id(e)))
        .collect();
    if forgotten.is_empty() {
        return Ok(None);
    }
    let transcript: Vec<String> = middle.iter().map(render_for_summary).collect();
    let messages = vec![
        Message::text(
            Role::System,
            "You compress the history of a software agent's session. Write a concise summary of the events below that keeps everything needed to continue the task: the user's goals, decisions taken, files changed, commands run with their important results, open problems and next steps. Reply with the summary only.",
        ),
        Message::text(Role::User, transcript.join("\n\n")),
    ];
    let settings = settings_or_default(&cfg.llm);
    let Some(client) = rt.condenser_llm.clone() else {
        return Ok(None);
    };
    let started = Instant::now();
    let c = client
        .complete(CompletionRequest {
            messages,
            tools: Vec::new(),
            cache_key: Some(conv.id.to_string()),
        })
        .await
        .map_err(StepError::Llm)?;
    let cost = super::stats::call_cost(&cfg.llm, &c.usage);
    let latency = if c.latency_secs > 0.0 {
        c.latency_secs
    } else {
        started.elapsed().as_secs_f64()
    };
    conv.record_usage(
        &settings.usage_id,
        &settings.model,
        &c.usage,
        cost,
        &c.response_id,
        latency,
    )
    .await?;
    Ok(Some(json!({
        "source": "environment",
        "forgotten_event_ids": forgotten,
        "summary": c.text.unwrap_or_default(),
        "summary_offset": start,
        "llm_response_id": c.response_id,
        "kind": "Condensation",
    })))
}

/// Converts the event log into the chat the LLM sees.
pub fn build_messages(evs: &[Value], secrets: &[(String, String)]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    let mut answered: HashSet<String> = HashSet::new();
    for e in evs {
        if matches!(
            events::kind(e),
            "ObservationEvent" | "UserRejectObservation" | "AgentErrorEvent"
        ) {
            if let Some(c) = events::str_field(e, "tool_call_id") {
                answered.insert(c.to_string());
            }
        }
    }
    let mut last_response: Option<String> = None;
    for e in evs {
        let kind = events::kind(e);
        if kind != "ActionEvent" {
            last_response = None;
        }
        match kind {
            "SystemPromptEvent" => {
                let mut m = Message::text(
                    Role::System,
                    e.get("system_prompt")
                        .and_then(|t| t.get("text"))
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                );
                if let Some(d) = e
                    .get("dynamic_context")
                    .and_then(|t| t.get("text"))
                    .and_then(Value::as_str)
                {
                    m.content.push(d.to_string());
                }
                out.push(m);
            }
            "MessageEvent" => {
                let role = e
                    .get("llm_message")
                    .and_then(|m| m.get("role"))
                    .and_then(Value::as_str)
                    .unwrap_or("user");
                let body = events::message_text(e);
                if role == "assistant" {
                    let mut m = Message::text(Role::Assistant, body);
                    m.reasoning_content = e
                        .get("llm_message")
                        .and_then(|m| m.get("reasoning_content"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    out.push(m);
                } else {
                    let r = if role == "system" {
                        Role::System
                    } else {
                        Role::User
                    };
                    match out.last_mut() {
                        Some(prev)
                            if r == Role::User
                                && prev.role == Role::User
                                && prev.tool_calls.is_empty() =>
                        {
                            prev.content.push(body)
                        }
                        _ => out.push(Message::text(r, body)),
                    }
                }
            }
            "ActionEvent" => {
                let call_id = events::str_field(e, "tool_call_id")
                    .unwrap_or("")
                    .to_string();
                if !answered.contains(&call_id) {
                    continue;
                }
                let tc = e.get("tool_call");
                let call = ToolCall {
                    id: call_id,
                    name: tc
                        .and_then(|t| events::str_field(t, "name"))
                        .or(events::str_field(e, "tool_name"))
                        .unwrap_or("")
                        .to_string(),
                    arguments: tc
                        .and_then(|t| events::str_field(t, "arguments"))
                        .unwrap_or("{}")
                        .to_string(),
                    responses_item_id: tc
                        .and_then(|t| events::str_field(t, "responses_item_id"))
                        .map(str::to_owned),
                };
                let resp = events::str_field(e, "llm_response_id").map(str::to_owned);
                let same = resp.is_some() && resp == last_response;
                match out.last_mut() {
                    Some(prev) if same && prev.role == Role::Assistant => {
                        prev.tool_calls.push(call)
                    }
                    _ => {
                        let thought = events::content_text(e.get("thought"));
                        let mut m = Message::text(Role::Assistant, thought);
                        if m.content.iter().all(|c| c.is_empty()) {
                            m.content.clear();
                        }
                        m.tool_calls.push(call);
                        m.reasoning_content =
                            events::str_field(e, "reasoning_content").map(str::to_owned);
                        m.responses_reasoning_item = e.get("responses_reasoning_item").cloned();
                        out.push(m);
                    }
                }
                last_response = resp;
            }
            "ObservationEvent" | "UserRejectObservation" | "AgentErrorEvent" => {
                let body = match kind {
                    "ObservationEvent" => observation_text(e, secrets),
                    "UserRejectObservation" => format!(
                        "Action rejected: {}",
                        events::str_field(e, "rejection_reason")
                            .unwrap_or("User rejected the action")
                    ),
                    _ => events::str_field(e, "error").unwrap_or("").to_string(),
                };
                let mut m = Message::text(Role::Tool, body);
                m.tool_call_id = events::str_field(e, "tool_call_id").map(str::to_owned);
                m.name = events::str_field(e, "tool_name").map(str::to_owned);
                out.push(m);
            }
            _ => {}
        }
    }
    // Tool results must follow an assistant message that made the call.
    let mut called: HashSet<String> = HashSet::new();
    out.retain(|m| {
        if m.role == Role::Assistant {
            called.extend(m.tool_calls.iter().map(|c| c.id.clone()));
            true
        } else if m.role == Role::Tool {
            m.tool_call_id
                .as_ref()
                .is_some_and(|id| called.contains(id))
        } else {
            true
        }
    });
    out
}

/// A one-off LLM call with the agent's LLM, offering `tools` (the model sees them, e.g. to
/// understand the tool calls in the history; nothing is executed); records usage under
/// `usage_id`.
pub async fn side_call(
    conv: &Arc<Conversation>,
    messages: Vec<Message>,
    tools: Vec<ToolDefinition>,
    usage_id: &str,
) -> Result<String, ConversationError> {
    let agent = conv.agent_json();
    let llm_json = agent.get("llm").cloned().unwrap_or(json!({}));
    let mut settings = llm_settings(&llm_json).map_err(ConversationError::Llm)?;
    settings.usage_id = usage_id.to_string();
    let client = llm::client_for(&settings);
    let started = Instant::now();
    let c = client
        .complete(CompletionRequest {
            messages,
            tools,
            cache_key: Some(conv.id.to_string()),
        })
        .await
        .map_err(|e| ConversationError::Llm(format!("{}: {e}", e.code())))?;
    let cost = super::stats::call_cost(&llm_json, &c.usage);
    let latency = if c.latency_secs > 0.0 {
        c.latency_secs
    } else {
        started.elapsed().as_secs_f64()
    };
    conv.record_usage(
        usage_id,
        &settings.model,
        &c.usage,
        cost,
        &c.response_id,
        latency,
    )
    .await?;
    if conv.run_ctl().is_none() {
        conv.persist_state().await?;
    }
    Ok(c.text.unwrap_or_default())
}

/// Generates the conversation title from its first user message (best effort).
pub async fn autotitle(conv: Arc<Conversation>, first_message: String) {
    let prompt = "Write a short, descriptive title (at most 50 characters) for a conversation that begins with the user message below. Reply with the title only, without quotes.";
    let messages = vec![
        Message::text(Role::System, prompt),
        Message::text(
            Role::User,
            first_message.chars().take(2000).collect::<String>(),
        ),
    ];
    let usage_id = conv
        .agent_json()
        .get("llm")
        .and_then(|l| l.get("usage_id"))
        .and_then(Value::as_str)
        .unwrap_or("agent")
        .to_string();
    let title = match side_call(&conv, messages, Vec::new(), &usage_id).await {
        Ok(t) if !t.trim().is_empty() => t.trim().trim_matches('"').trim().to_string(),
        Ok(_) | Err(_) => first_message.trim().to_string(),
    };
    let title: String = title.chars().take(50).collect();
    if conv.is_deleted() || title.is_empty() {
        return;
    }
    if conv.meta_value("title").is_none_or(|t| t.is_null()) {
        if let Err(e) = conv.set_title(Some(title), None).await {
            tracing::warn!(conversation = %conv.id, error = %e, "could not store the title");
        }
    }
}

/// The reference's question prompt (`ask_agent_template.j2`, rendered).
fn ask_agent_prompt(question: &str) -> String {
    format!(
        "<QUESTION>\nBased on the activity so far answer the following question\n\n## Question\n{question}\n\n\n<IMPORTANT>\nThis is a question, do not make any tool call and just answer my question.\n</IMPORTANT>\n</QUESTION>"
    )
}

/// The conversation as the goal judge reads it: every LLM message but the system prompt, as
/// `role: text`, blank ones left out.
pub async fn transcript(conv: &Arc<Conversation>) -> Result<String, ConversationError> {
    let secrets = conv.secret_values();
    let messages = conv
        .with_events(|evs| build_messages(evs, &secrets))
        .await?;
    let lines: Vec<String> = messages
        .iter()
        .filter(|m| m.role != Role::System)
        .filter_map(|m| {
            let text = m.content.join("\n").trim().to_string();
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
                Role::System => "system",
            };
            (!text.is_empty()).then(|| format!("{role}: {text}"))
        })
        .collect();
    Ok(lines.join("\n\n"))
}

/// Answers a question about the conversation without recording events, as the reference does:
/// the conversation's LLM view, then the question in the reference's prompt, with the agent's
/// tools on offer so that the model understands the tool calls in the history.
pub async fn ask_agent(
    conv: &Arc<Conversation>,
    question: &str,
) -> Result<String, ConversationError> {
    let rt = ensure_initialized(conv).await?;
    let secrets = conv.secret_values();
    let mut messages = conv
        .with_events(|evs| build_messages(evs, &secrets))
        .await?;
    messages.push(Message::text(Role::User, ask_agent_prompt(question)));
    side_call(conv, messages, rt.definitions.clone(), "ask-agent-llm").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_results_without_calls_are_dropped_and_pending_calls_hidden() {
        let evs = vec![
            json!({"id": "s", "kind": "SystemPromptEvent", "system_prompt": {"text": "sys"}}),
            json!({"id": "u", "kind": "MessageEvent", "source": "user", "llm_message": {"role": "user", "content": [{"type": "text", "text": "hi"}]}}),
            json!({"id": "a1", "kind": "ActionEvent", "tool_name": "terminal", "tool_call_id": "c1", "llm_response_id": "r1",
                   "action": {"command": "ls"}, "tool_call": {"id": "c1", "name": "terminal", "arguments": "{}"}, "thought": []}),
            json!({"id": "a2", "kind": "ActionEvent", "tool_name": "terminal", "tool_call_id": "c2", "llm_response_id": "r1",
                   "action": {"command": "pwd"}, "tool_call": {"id": "c2", "name": "terminal", "arguments": "{}"}, "thought": []}),
            json!({"id": "o1", "kind": "ObservationEvent", "tool_name": "terminal", "tool_call_id": "c1", "action_id": "a1",
                   "observation": {"content": [{"type": "text", "text": "out"}], "is_error": false}}),
        ];
        let msgs = build_messages(&evs, &[]);
        assert_eq!(msgs.len(), 4);
        assert_eq!(
            msgs[2].tool_calls.len(),
            1,
            "the unanswered call is not replayed"
        );
        assert_eq!(msgs[3].content, vec!["out".to_string()]);
        let pending = pending_actions(&evs);
        assert_eq!(pending.len(), 1);
        assert_eq!(events::id(&pending[0]), "a2");
    }
}
