//! The create request: validation of a `StartConversationRequest`, the stored defaults, and
//! the workspace a new conversation gets.

use super::*;

/// Keys of `StoredConversation` taken from the create request, with their defaults.
pub(in crate::conversation) fn meta_defaults() -> Vec<(&'static str, Value)> {
    vec![
        ("workspace", Value::Null),
        ("worktree", json!(false)),
        ("worktree_options", Value::Null),
        ("conversation_id", Value::Null),
        ("parent_conversation_id", Value::Null),
        ("confirmation_policy", json!({"kind": "NeverConfirm"})),
        ("security_analyzer", Value::Null),
        ("initial_message", Value::Null),
        ("max_iterations", json!(500)),
        ("stuck_detection", json!(true)),
        ("secrets", json!({})),
        ("secrets_encrypted", json!(false)),
        ("tool_module_qualnames", json!({})),
        ("client_tools", json!([])),
        ("agent_launch_additions", Value::Null),
        ("agent_definitions", json!([])),
        ("plugins", Value::Null),
        ("hook_config", Value::Null),
        ("tags", json!({})),
        ("user_id", Value::Null),
        ("observability_metadata", json!({})),
        ("observability_tags", json!([])),
        ("observability_span_name", json!("conversation")),
        ("observability_parent_span_context", Value::Null),
        ("autotitle", json!(true)),
        ("title_llm_profile", Value::Null),
        ("prompt", Value::Null),
        ("launched_agent_profile", Value::Null),
    ]
}

/// Validated `StartConversationRequest`.
pub(in crate::conversation) struct CreateRequest {
    pub(super) id: Option<Uuid>,
    pub(super) agent: Value,
    pub(super) meta: StoredConversation,
    pub(super) working_dir: String,
}

/// The reference's checks of `parent_conversation_id`: another, existing conversation on the
/// same workspace.
pub(in crate::conversation) fn check_parent(
    svc: &ConversationService,
    id: Uuid,
    parent: &str,
    working_dir: Option<&str>,
) -> Result<(), ConversationError> {
    let parent_id = Uuid::parse_str(parent)
        .map_err(|_| invalid("parent_conversation_id: Input should be a valid UUID"))?;
    if parent_id == id {
        return Err(ConversationError::Refused(
            "A conversation cannot be its own parent".into(),
        ));
    }
    let Some(p) = svc.get(&parent_id) else {
        return Err(ConversationError::Refused(format!(
            "Parent conversation {parent_id} not found"
        )));
    };
    let canon = |d: &str| std::fs::canonicalize(d).unwrap_or_else(|_| PathBuf::from(d));
    if working_dir.is_some_and(|w| canon(&p.working_dir()) != canon(w)) {
        return Err(ConversationError::Refused(format!(
            "Parent conversation {parent_id} belongs to a different workspace"
        )));
    }
    Ok(())
}

pub(in crate::conversation) fn invalid(msg: impl Into<String>) -> ConversationError {
    ConversationError::Invalid(msg.into())
}

pub(in crate::conversation) fn parse_create(
    body: &Value,
    cipher: Option<&Cipher>,
) -> Result<CreateRequest, ConversationError> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("Input should be a valid dictionary"))?;
    let mut agent = match obj.get("agent") {
        Some(a @ Value::Object(_)) => a.clone(),
        // `agent_settings` and `agent_profile_id` are turned into an `agent` before this
        // (`SettingsService::resolve_agent_source`).
        Some(Value::Null) | None => {
            return Err(invalid(
                "One of `agent`, `agent_settings`, or `agent_profile_id` must be provided",
            ));
        }
        Some(_) => return Err(invalid("agent: Input should be a valid dictionary")),
    };
    if agent.get("llm").is_none_or(|l| !l.is_object()) {
        return Err(invalid("agent.llm: Field required"));
    }
    match agent.get("kind").and_then(Value::as_str) {
        None => {
            agent["kind"] = json!("Agent");
        }
        Some("Agent") => {}
        Some("ACPAgent") => {
            let has_command = agent["acp_command"]
                .as_array()
                .is_some_and(|c| c.iter().any(|v| v.as_str().is_some_and(|s| !s.is_empty())));
            if !has_command {
                return Err(invalid("agent.acp_command: Field required"));
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "agent kind {other:?} is not supported by this server"
            )))
        }
    }
    if obj.get("secrets_encrypted").and_then(Value::as_bool) == Some(true) {
        crypto::map_secret_fields(&mut agent, &|s| crypto::unseal(cipher, s));
    }
    // Client-defined tools join the agent's tools with their spec, as the reference injects
    // them; the specs are also kept in the metadata (`client_tools`).
    let client_tools = match obj.get("client_tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(specs) => crate::tools::client::validate_specs(specs).map_err(invalid)?,
    };
    if !client_tools.is_empty() {
        if !agent.get("tools").is_some_and(Value::is_array) {
            agent["tools"] = json!([]);
        }
        if let Some(tools) = agent.get_mut("tools").and_then(Value::as_array_mut) {
            for spec in &client_tools {
                let name = spec["name"].clone();
                if tools.iter().any(|t| t.get("name") == Some(&name)) {
                    return Err(invalid(format!(
                        "Client tool name {name} collides with an existing non-client tool. Choose a unique client tool name."
                    )));
                }
                tools.push(json!({"name": name, "params": {"spec": spec}}));
            }
        }
    }
    let working_dir = obj
        .get("workspace")
        .and_then(|w| w.get("working_dir"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("workspace: Field required"))?
        .to_string();
    if let Some(rt) = obj.get("conversation_runtime") {
        if !(rt.is_null() || rt == "local") {
            return Err(invalid("This server only runs local conversations"));
        }
    }
    let id = match obj.get("conversation_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            Uuid::parse_str(s)
                .map_err(|_| invalid("conversation_id: Input should be a valid UUID"))?,
        ),
        Some(_) => return Err(invalid("conversation_id: Input should be a valid UUID")),
    };
    let mut meta = Map::new();
    for (k, default) in meta_defaults() {
        let v = obj.get(k).cloned().unwrap_or(default.clone());
        let v = if v.is_null() && !default.is_null() {
            default
        } else {
            v
        };
        meta.insert(k.into(), v);
    }
    meta["workspace"] = json!({"working_dir": working_dir, "kind": "LocalWorkspace"});
    match meta.get("max_iterations").and_then(Value::as_i64) {
        Some(n) if n >= 1 => {}
        _ => {
            return Err(invalid(
                "max_iterations: Input should be greater than or equal to 1",
            ))
        }
    }
    if let Some(tags) = meta.get("tags").and_then(Value::as_object) {
        validate_tags(tags)?;
    } else {
        return Err(invalid("tags: Input should be a valid dictionary"));
    }
    // Modules of the built-in tools the agent names, so that any client can deserialize the
    // tool events (the reference records the server-resolved ones).
    let client_tool_names: Vec<String> = meta["client_tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    if let Some(modules) = meta
        .get_mut("tool_module_qualnames")
        .and_then(Value::as_object_mut)
    {
        for tool in agent["tools"].as_array().into_iter().flatten() {
            let Some(name) = tool["name"].as_str() else {
                continue;
            };
            if client_tool_names.iter().any(|c| c == name) {
                continue;
            }
            if let Some(module) = crate::tools::ToolSet::module_of(name) {
                modules.entry(name).or_insert_with(|| json!(module));
            }
        }
    }
    // Secrets may be given as plain strings or `{"value": ...}`.
    if let Some(secrets) = meta.get_mut("secrets").and_then(Value::as_object_mut) {
        for v in secrets.values_mut() {
            *v = normalize_secret(v.clone());
        }
    }
    let meta = StoredConversation::from_map(meta).map_err(|e| invalid(e.to_string()))?;
    Ok(CreateRequest {
        id,
        agent,
        meta,
        working_dir,
    })
}

/// Checks tag keys (`^[a-z0-9]+$`) and values (≤256 chars).
pub fn validate_tags(tags: &Map<String, Value>) -> Result<(), ConversationError> {
    for (k, v) in tags {
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(invalid(format!("tags: key {k:?} must match ^[a-z0-9]+$")));
        }
        match v.as_str() {
            Some(s) if s.chars().count() <= 256 => {}
            Some(_) => {
                return Err(invalid(format!(
                    "tags: value of {k:?} is longer than 256 characters"
                )))
            }
            None => return Err(invalid(format!("tags: value of {k:?} must be a string"))),
        }
    }
    Ok(())
}

/// A plain string or `{"value": ..}` becomes a `StaticSecret`.
pub fn normalize_secret(v: Value) -> Value {
    match v {
        Value::String(s) => json!({"value": s, "kind": "StaticSecret"}),
        Value::Object(mut m) => {
            if !m.contains_key("kind") {
                m.insert("kind".into(), json!("StaticSecret"));
            }
            Value::Object(m)
        }
        other => other,
    }
}

pub(in crate::conversation) fn persistence_dir_string(root: &Path, hex: &str) -> String {
    root.join(hex).to_string_lossy().into_owned()
}

/// `mkdir -p` the working directory and `git init` it when it is not inside a repository.
pub(in crate::conversation) async fn prepare_workspace(dir: &str) -> Result<(), ConversationError> {
    tokio::fs::create_dir_all(dir).await?;
    let inside = tokio::process::Command::new("git")
        .args(["rev-parse", "--is-inside-work-tree"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .status()
        .await;
    if !matches!(inside, Ok(s) if s.success()) {
        let r = tokio::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .status()
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, dir, "git init failed");
        }
    }
    Ok(())
}
