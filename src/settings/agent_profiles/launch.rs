//! Launching from an agent profile: the seed profile, the `agent` a launch resolves to (LLM
//! profile, MCP servers, ACP servers and their credentials) and the launch diagnostics.

use super::*;

/// The profile seeded from the agent settings (the reference's `build_seed_profile`).
pub fn seed_from_settings(agent_settings: &Value, llm_profile: Option<&str>) -> Value {
    let s = agent_settings;
    let payload = if s["agent_kind"] == "acp" {
        let command: Vec<String> = s["acp_command"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let args = s["acp_args"].as_array().filter(|a| !a.is_empty()).cloned();
        json!({
            "agent_kind": "acp",
            "name": SEED_PROFILE_NAME,
            "acp_server": s["acp_server"],
            "acp_model": s["acp_model"],
            "acp_session_mode": s["acp_session_mode"],
            "acp_prompt_timeout": s["acp_prompt_timeout"],
            "acp_startup_timeout": s["acp_startup_timeout"],
            "acp_command": (!command.is_empty()).then(|| shell_join(&command)),
            "acp_args": args,
            "mcp_server_refs": null,
        })
    } else {
        let ctx = &s["agent_context"];
        let verification: Map<String, Value> = s["verification"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.as_str() != "critic_api_key")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        json!({
            "name": SEED_PROFILE_NAME,
            "llm_profile_ref": llm_profile.filter(|p| !p.is_empty()).unwrap_or(SEED_PROFILE_NAME),
            "agent": s.get("agent").cloned().unwrap_or(json!("CodeActAgent")),
            "tools": s["tools"],
            "disabled_skills": ctx.get("disabled_skills").cloned().unwrap_or(json!([])),
            "persona": s["persona"],
            "system_message_suffix": ctx["system_message_suffix"],
            "condenser": s.get("condenser").cloned().unwrap_or_else(default_condenser),
            "verification": verification,
            "enable_classify_and_switch_llm_tool": s.get("enable_classify_and_switch_llm_tool").cloned().unwrap_or(json!(false)),
            "meta_profile_ref": s["active_meta_profile"],
            "tool_concurrency_limit": s.get("tool_concurrency_limit").cloned().unwrap_or(json!(1)),
            "mcp_server_refs": null,
        })
    };
    // Settings the server validated always make a valid profile; fall back to the bare seed.
    validate(&payload).unwrap_or_else(|_| {
        json!({"schema_version": SCHEMA_VERSION, "agent_kind": "openhands",
               "id": uuid::Uuid::new_v4().to_string(), "name": SEED_PROFILE_NAME,
               "revision": 0, "llm_profile_ref": SEED_PROFILE_NAME})
    })
}

/// POSIX-shell quoting of a command (Python's `shlex.join`).
pub(super) fn shell_join(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            let safe = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
            if safe {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', "'\"'\"'"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Tools the agent can be given that this server does not run.
pub(super) fn unusable_tools(tools: &Value) -> Vec<String> {
    let Some(tools) = tools.as_array() else {
        // The standard set leaves the browser out where there is none (never here).
        return vec![BROWSER_TOOL.to_string()];
    };
    let ours = crate::tools::ToolSet::registered_names();
    tools
        .iter()
        .filter_map(|t| t["name"].as_str())
        .filter(|n| !ours.contains(n))
        .map(str::to_string)
        .collect()
}

pub(super) const BROWSER_TOOL: &str = "browser_tool_set";
/// The `schema_version` of the agent settings a launch resolves to.
pub(super) const AGENT_SETTINGS_SCHEMA_VERSION: u64 = 9;

/// Credential files the ACP providers read (`ACPAgentSettings.acp_file_secrets`).
pub(super) fn acp_file_secrets() -> Value {
    let file =
        |secret: &str, filename: &str, env: &str, subdir: &str, points: &str, warn: &[&str]| {
            json!({"secret_name": secret, "filename": filename, "env_var": env, "subdir": subdir,
               "env_points_to": points, "warn_if_unset": warn})
        };
    json!([
        file(
            "CODEX_AUTH_JSON",
            "auth.json",
            "CODEX_HOME",
            "codex",
            "dir",
            &[]
        ),
        file(
            "GOOGLE_APPLICATION_CREDENTIALS_JSON",
            "gcloud-credentials.json",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "gemini-cli",
            "file",
            &["GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION"]
        ),
        file(
            "KIMI_CODE_CONFIG_TOML",
            "config.toml",
            "KIMI_CODE_HOME",
            "kimi-code",
            "dir",
            &[]
        ),
        file(
            "PI_AUTH_JSON",
            "auth.json",
            "PI_CODING_AGENT_DIR",
            "pi",
            "dir",
            &[]
        ),
    ])
}

/// ACP providers: the secret names of the API key, the base URL and credential files.
pub(super) fn acp_credential_channels(server: &str) -> (Value, Value, Vec<&'static str>) {
    match server {
        "claude-code" => (
            json!("ANTHROPIC_API_KEY"),
            json!("ANTHROPIC_BASE_URL"),
            vec![],
        ),
        "codex" => (
            json!("OPENAI_API_KEY"),
            json!("OPENAI_BASE_URL"),
            vec!["CODEX_AUTH_JSON"],
        ),
        "gemini-cli" => (
            json!("GEMINI_API_KEY"),
            json!("GEMINI_BASE_URL"),
            vec!["GOOGLE_APPLICATION_CREDENTIALS_JSON"],
        ),
        "kimi-code" => (
            Value::Null,
            json!("KIMI_BASE_URL"),
            vec!["KIMI_CODE_CONFIG_TOML"],
        ),
        "pi" => (
            json!("ANTHROPIC_API_KEY"),
            Value::Null,
            vec!["PI_AUTH_JSON"],
        ),
        "opencode" => (json!("OPENCODE_API_KEY"), Value::Null, vec![]),
        _ => (Value::Null, Value::Null, vec![]),
    }
}

/// Partitions `refs` (deduplicated, in order) into those `available` has and the rest.
pub(super) fn partition(
    refs: &[Value],
    available: &Map<String, Value>,
) -> (Vec<String>, Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    for r in refs.iter().filter_map(Value::as_str) {
        if seen.insert(r) {
            if available.contains_key(r) {
                found.push(r.to_string());
            } else {
                missing.push(r.to_string());
            }
        }
    }
    (found, missing)
}

/// Loads a named document of a store: `Ok(None)` when there is none of that name.
pub type Loader = Box<dyn Fn(&str) -> Result<Option<Value>, String> + Send>;

/// What a launch of a profile reads besides the profile.
pub struct LaunchInputs {
    /// The agent settings (their `mcp_config`, decrypted).
    pub agent_settings: Value,
    /// Loads an LLM profile: `Ok(None)` when there is none of that name.
    pub llm: Loader,
    /// Loads a meta-profile: `Ok(None)` when there is none of that name.
    pub meta: Loader,
}

/// The reference's `AgentProfileDiagnostics` of launching `profile` (never fails: problems are
/// reported in the body). `resolved_settings` carries no secret.
pub fn materialize(profile: &Value, inputs: &LaunchInputs) -> Value {
    diagnose(profile, inputs, true)
}

/// The agent settings a launch of `profile` resolves to, secrets included; or the 422 detail
/// the reference answers when references dangle or the launch cannot be built.
pub fn resolve_for_launch(profile: &Value, inputs: &LaunchInputs) -> Result<Value, Value> {
    let mut d = diagnose(profile, inputs, false);
    if d["valid"] == true {
        return Ok(d["resolved_settings"].take());
    }
    let message = d["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("; ");
    let dangling_llm = if d["agent_kind"] == "openhands" && d["llm_profile_resolved"] == false {
        d["llm_profile_ref"].clone()
    } else {
        Value::Null
    };
    let unresolved = !dangling_llm.is_null()
        || d["dangling_mcp_server_refs"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
        || !d["dangling_meta_profile_ref"].is_null()
        || d["dangling_meta_profile_llm_refs"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
    if !unresolved {
        return Err(json!({"code": "invalid_agent_launch", "message": message}));
    }
    Err(json!({
        "code": "unresolved_profile_references",
        "message": message,
        "dangling_llm_profile_ref": dangling_llm,
        "dangling_mcp_server_refs": d["dangling_mcp_server_refs"],
        "dangling_meta_profile_ref": d["dangling_meta_profile_ref"],
        "dangling_meta_profile_llm_refs": d["dangling_meta_profile_llm_refs"],
    }))
}

pub(super) fn diagnose(profile: &Value, inputs: &LaunchInputs, redact: bool) -> Value {
    let redact_llm = |llm: Value| if redact { redact_llm(llm) } else { llm };
    let redact_mcp = |server: &Value| {
        if redact {
            redact_mcp(server)
        } else {
            server.clone()
        }
    };
    let kind = profile["agent_kind"].as_str().unwrap_or("openhands");
    let empty = Map::new();
    let mcp = inputs.agent_settings["mcp_config"]
        .as_object()
        .unwrap_or(&empty);
    let (resolved_keys, dangling_mcp): (Vec<String>, Vec<String>) =
        match profile["mcp_server_refs"].as_array() {
            None => (mcp.keys().cloned().collect(), Vec::new()),
            Some(refs) => partition(refs, mcp),
        };
    let mut d = json!({
        "agent_kind": kind, "valid": false, "errors": [], "unusable_tools": [],
        "llm_profile_ref": null, "llm_profile_resolved": false, "llm_api_key_set": false,
        "mcp_server_refs": profile["mcp_server_refs"], "resolved_mcp_config_keys": resolved_keys,
        "dangling_mcp_server_refs": [], "disabled_skills": [], "public_skills": null,
        "resolved_skills": [], "secret_refs": profile["secret_refs"],
        "acp_api_key_secret_name": null, "acp_base_url_secret_name": null,
        "acp_file_secret_names": [], "meta_profile_ref": null,
        "dangling_meta_profile_ref": null, "dangling_meta_profile_llm_refs": [],
        "resolved_settings": null,
    });
    let mcp_config: Map<String, Value> = resolved_keys
        .iter()
        .filter_map(|k| mcp.get(k).map(|v| (k.clone(), redact_mcp(v))))
        .collect();
    let mut errors: Vec<String> = Vec::new();
    if kind == "acp" {
        let server = profile["acp_server"].as_str().unwrap_or_default();
        let (key, url, files) = acp_credential_channels(server);
        d["acp_api_key_secret_name"] = key;
        d["acp_base_url_secret_name"] = url;
        d["acp_file_secret_names"] = json!(files);
        if !dangling_mcp.is_empty() {
            d["errors"] = json!([format!(
                "MCP server(s) not configured: {}",
                dangling_mcp.join(", ")
            )]);
            d["dangling_mcp_server_refs"] = json!(dangling_mcp);
            return d;
        }
        let command = profile["acp_command"]
            .as_str()
            .map(|c| shell_words::split(c).unwrap_or_else(|_| vec![c.to_string()]))
            .unwrap_or_default();
        if server == "custom" && command.is_empty() {
            d["errors"] = json!([
                "Failed to build agent settings: acp_command is required when \
                acp_server='custom' — there is no default launch command to fall back to"
            ]);
            return d;
        }
        d["resolved_settings"] = json!({
            "schema_version": AGENT_SETTINGS_SCHEMA_VERSION,
            "agent_kind": "acp", "acp_server": server, "acp_command": command,
            "acp_args": profile["acp_args"].as_array().cloned().unwrap_or_default(),
            "acp_model": profile["acp_model"], "acp_session_mode": profile["acp_session_mode"],
            "acp_prompt_timeout": profile["acp_prompt_timeout"],
            "acp_startup_timeout": profile["acp_startup_timeout"],
            "mcp_config": mcp_config, "acp_isolate_data_dir": false,
            "acp_file_secrets": acp_file_secrets(),
            "agent_context": agent_context(&Value::Null, &json!([]), false, false),
        });
        d["valid"] = json!(true);
        return d;
    }
    let llm_ref = profile["llm_profile_ref"].as_str().unwrap_or_default();
    d["llm_profile_ref"] = json!(llm_ref);
    d["disabled_skills"] = profile["disabled_skills"].clone();
    d["public_skills"] = profile["public_skills"].clone();
    d["meta_profile_ref"] = profile["meta_profile_ref"].clone();
    let unusable = unusable_tools(&profile["tools"]);
    let failing: Vec<&str> = unusable
        .iter()
        .map(String::as_str)
        .filter(|n| *n != BROWSER_TOOL)
        .collect();
    if !failing.is_empty() {
        errors.push(format!(
            "Tool(s) this server cannot run: {}",
            failing.join(", ")
        ));
    }
    d["unusable_tools"] = json!(unusable);
    let llm = match (inputs.llm)(llm_ref) {
        Ok(llm) => llm,
        Err(e) => {
            errors.push(format!(
                "Failed to build agent settings: Could not load LLM profile '{llm_ref}': {e}"
            ));
            d["errors"] = json!(errors);
            return d;
        }
    };
    // The meta-profile and the LLM profiles it routes to, when routing is on.
    let mut dangling_meta = Value::Null;
    let mut dangling_meta_llms: Vec<String> = Vec::new();
    let mut meta_profile = Value::Null;
    let mut meta_llms = Map::new();
    let routing = profile["enable_classify_and_switch_llm_tool"] == true;
    if let (true, Some(name)) = (routing, profile["meta_profile_ref"].as_str()) {
        match (inputs.meta)(name) {
            Ok(None) => dangling_meta = json!(name),
            Err(e) => {
                errors.push(format!(
                    "Failed to build agent settings: Could not load meta-profile '{name}': {e}"
                ));
                d["errors"] = json!(errors);
                return d;
            }
            Ok(Some(meta)) => {
                let mut refs = vec![meta["classifier_model"].clone()];
                refs.extend(
                    meta["classes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| c["model"].clone()),
                );
                let mut seen = std::collections::HashSet::new();
                for r in refs.iter().filter_map(Value::as_str) {
                    if !seen.insert(r.to_string()) {
                        continue;
                    }
                    match (inputs.llm)(r) {
                        Ok(Some(l)) => {
                            meta_llms.insert(r.to_string(), redact_llm(l));
                        }
                        _ => dangling_meta_llms.push(r.to_string()),
                    }
                }
                meta_profile = meta;
            }
        }
    }
    let mut problems = Vec::new();
    if llm.is_none() {
        problems.push(format!("LLM profile '{llm_ref}' not found"));
    }
    if !dangling_mcp.is_empty() {
        problems.push(format!(
            "MCP server(s) not configured: {}",
            dangling_mcp.join(", ")
        ));
    }
    if let Some(name) = dangling_meta.as_str() {
        problems.push(format!("Meta-profile '{name}' not found"));
    }
    if !dangling_meta_llms.is_empty() {
        problems.push(format!(
            "LLM profile(s) routed to by the meta-profile not found: {}",
            dangling_meta_llms.join(", ")
        ));
    }
    if let Some(llm) = &llm {
        d["llm_profile_resolved"] = json!(true);
        d["llm_api_key_set"] = json!(crate::settings::ProfileStore::api_key_set(llm));
    }
    if !problems.is_empty() {
        errors.extend(problems);
        d["errors"] = json!(errors);
        d["dangling_mcp_server_refs"] = json!(dangling_mcp);
        d["dangling_meta_profile_ref"] = dangling_meta;
        d["dangling_meta_profile_llm_refs"] = json!(dangling_meta_llms);
        return d;
    }
    if !errors.is_empty() {
        d["errors"] = json!(errors);
        return d;
    }
    let Some(llm) = llm else { return d };
    let mut llm = redact_llm(llm);
    llm["stream"] = json!(true);
    let tools = match profile["tools"].as_array() {
        Some(_) => profile["tools"].clone(),
        // The standard set, in the reference's order (without the tools we do not run).
        None => json!(["terminal", "file_editor", "task_tracker"]
            .iter()
            .map(|n| json!({"name": n, "params": {}}))
            .collect::<Vec<_>>()),
    };
    let mut verification = profile["verification"].clone();
    verification["critic_api_key"] = Value::Null;
    d["resolved_settings"] = json!({
        "schema_version": AGENT_SETTINGS_SCHEMA_VERSION,
        "agent_kind": "openhands", "agent": profile["agent"], "llm": llm, "tools": tools,
        "enable_classify_and_switch_llm_tool": profile["enable_classify_and_switch_llm_tool"],
        "active_meta_profile": profile["meta_profile_ref"], "meta_profile": meta_profile,
        "meta_profile_llms": meta_llms,
        "tool_concurrency_limit": profile["tool_concurrency_limit"],
        "mcp_config": mcp_config, "persona": profile["persona"],
        "agent_context": agent_context(&profile["system_message_suffix"], &profile["disabled_skills"], true, true),
        "condenser": profile["condenser"], "verification": verification,
    });
    d["valid"] = json!(true);
    d
}

/// The `AgentContext` a launch builds (no skills resolved here).
pub(super) fn agent_context(
    suffix: &Value,
    disabled: &Value,
    project_skills: bool,
    dated: bool,
) -> Value {
    json!({
        "skills": [], "system_message_suffix": suffix, "user_message_suffix": null,
        "load_user_skills": false, "load_public_skills": false,
        "marketplace_path": "marketplaces/default.json", "registered_marketplaces": [],
        "load_project_skills": project_skills, "load_memory": false,
        "disabled_skills": disabled, "secrets": null,
        "current_datetime": if dated { json!(crate::util::utc_timestamp()) } else { Value::Null },
    })
}

pub(super) fn redact_llm(mut llm: Value) -> Value {
    for field in crate::settings::document::LLM_SECRET_FIELDS {
        if llm[field].is_string() {
            llm[field] = json!(crate::crypto::MASK);
        }
    }
    llm
}

pub(super) fn redact_mcp(server: &Value) -> Value {
    let mut s = server.clone();
    for key in ["env", "headers"] {
        if let Some(m) = s.get_mut(key).and_then(Value::as_object_mut) {
            for v in m.values_mut() {
                *v = json!(crate::crypto::MASK);
            }
        }
    }
    s
}
