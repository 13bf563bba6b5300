//! Lazy initialization of a conversation's agent: tools (built-in, MCP, sub-agents), LLM,
//! and on the very first use the `SystemPromptEvent`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::condense::CondenserConfig;
use crate::conversation::events::{self, text};
use crate::conversation::runtime::{
    annotations, llm_settings, settings_or_default, AgentRuntime, Tools,
};
use crate::conversation::service::Conversation;
use crate::conversation::ConversationError;
use crate::conversation::{StateField, StoredConversation};
use crate::llm::{self};
use crate::tools::{ToolContext, ToolSet};

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
    crate::conversation::plugins::ensure_loaded(conv).await?;
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
        toolset.push(Arc::new(
            crate::conversation::children::StartChildConversationTool::new(
                conv.registry(),
                conv.id,
            ),
        ));
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
            toolset.push(Arc::new(crate::conversation::task::TaskTool::new(
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
    for def in conv.read_meta(|m| StoredConversation::list(&m.agent_definitions).to_vec()) {
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
        conv.append(crate::conversation::acp_run::system_prompt_event())
            .await?;
        return Ok(());
    }
    let hook_config = conv.read_meta(|m| Some(m.hook_config.clone()).filter(|h| !h.is_null()));
    let set = conv.read_state(|s| !s.hook_config.is_null());
    if let (Some(h), false) = (hook_config, set) {
        conv.set_field(StateField::HookConfig(h), true).await?;
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
