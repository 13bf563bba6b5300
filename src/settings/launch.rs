//! The agent a conversation starts with when the client sends `agent_settings` or an
//! `agent_profile_id` instead of a full `agent`: the settings (or the profile resolved against
//! the stores) become the SDK `Agent` the conversation runs, as the reference's launch does.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::agent_profiles::resolve_for_launch;
use super::document::{deep_merge, Settings};
use super::{SettingsError, SettingsService};

/// Settings keys that were replaced by the tool list.
const REMOVED_SETTINGS: [&str; 2] = ["enable_sub_agents", "enable_switch_llm_tool"];

/// Why a launch source cannot start a conversation (mapped to HTTP by the server).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// 422 `{"detail": message}`.
    #[error("{0}")]
    Invalid(String),
    /// 422 whose `detail` is this object (`unresolved_profile_references`, ...).
    #[error("{0}")]
    Unresolved(Value),
    /// 404: no agent profile has this id.
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// The SDK `Agent` built from resolved OpenHands agent settings.
pub fn agent_from_settings(settings: &Value) -> Value {
    let tools = match settings["tools"].as_array() {
        Some(tools) => Value::Array(tools.clone()),
        None => json!(["terminal", "file_editor", "task_tracker"]
            .iter()
            .map(|n| json!({"name": n, "params": {}}))
            .collect::<Vec<_>>()),
    };
    let mut context = settings["agent_context"].clone();
    if let Some(persona) = settings["persona"].as_str() {
        // The persona replaces the built-in one; here it leads the suffix the agent sees.
        let suffix = context["system_message_suffix"]
            .as_str()
            .unwrap_or_default();
        let joined = [persona, suffix]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("\n\n");
        if context.is_object() {
            context["system_message_suffix"] = json!(joined);
        }
    }
    json!({
        "kind": "Agent",
        "llm": settings["llm"],
        "tools": tools,
        "mcp_config": settings.get("mcp_config").cloned().unwrap_or(json!({})),
        "agent_context": context,
        "include_default_tools": ["FinishTool", "ThinkTool"],
    })
}

/// Validates `agent_settings` from a request and completes them with the defaults.
fn settings_from_request(given: &Value) -> Result<Value, LaunchError> {
    let Some(obj) = given.as_object() else {
        return Err(LaunchError::Invalid(
            "Persisted settings payload must be a mapping or BaseModel.".into(),
        ));
    };
    let removed: Vec<&str> = REMOVED_SETTINGS
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .collect();
    if !removed.is_empty() {
        return Err(LaunchError::Invalid(format!(
            "Removed agent settings: {}",
            removed.join(", ")
        )));
    }
    if let Some(v) = obj.get("schema_version").and_then(Value::as_i64) {
        if v > 9 {
            return Err(LaunchError::Invalid(format!(
                "AgentSettings schema_version {v} is newer than supported version 9."
            )));
        }
    }
    if obj.get("agent_kind").is_some_and(|k| k == "acp") {
        if obj.contains_key("llm") {
            return Err(LaunchError::Invalid("Removed agent settings: llm".into()));
        }
        return Ok(given.clone());
    }
    let mut settings = Settings::default().agent_settings;
    deep_merge(&mut settings, given, 0);
    Ok(settings)
}

/// The SDK `ACPAgent` built from ACP agent settings (the server's command resolved).
pub fn acp_agent_from_settings(settings: &Value) -> Result<Value, LaunchError> {
    let command = crate::acp::providers::resolve_command(&json!({
        "acp_command": settings["acp_command"],
        "acp_server": settings.get("acp_server").cloned().unwrap_or(json!("claude-code")),
    }))
    .map_err(|message| {
        LaunchError::Unresolved(json!({"code": "invalid_agent_launch", "message": message}))
    })?;
    let model = settings["acp_model"].as_str().unwrap_or("acp-managed");
    Ok(json!({
        "kind": "ACPAgent",
        "llm": {"model": model, "usage_id": "acp-managed"},
        "tools": [],
        "mcp_config": settings.get("mcp_config").cloned().unwrap_or(json!({})),
        "include_default_tools": [],
        "acp_command": command,
        "acp_server": settings.get("acp_server").cloned().unwrap_or(json!("claude-code")),
        "acp_args": settings.get("acp_args").cloned().unwrap_or(json!([])),
        "acp_session_mode": settings["acp_session_mode"],
        "acp_prompt_timeout": settings.get("acp_prompt_timeout").cloned().unwrap_or(json!(1800.0)),
        "acp_startup_timeout": settings.get("acp_startup_timeout").cloned().unwrap_or(json!(90.0)),
        "acp_model": settings["acp_model"],
    }))
}

/// The agent resolved settings launch: an `Agent`, or an `ACPAgent` for ACP settings.
fn agent_for(settings: &Value) -> Result<Value, LaunchError> {
    if settings["agent_kind"] == "acp" {
        acp_agent_from_settings(settings)
    } else {
        Ok(agent_from_settings(settings))
    }
}

impl SettingsService {
    /// Turns a `StartConversationRequest` that names `agent_settings` or `agent_profile_id`
    /// into one with the `agent` they launch (and `launched_agent_profile` for a profile); a
    /// request with an `agent` keeps it (and loses any `agent_settings`).
    pub async fn resolve_agent_source(
        self: &Arc<Self>,
        mut body: Value,
    ) -> Result<Value, LaunchError> {
        let Some(obj) = body.as_object_mut() else {
            return Ok(body);
        };
        obj.remove("launched_agent_profile");
        for key in ["agent", "agent_settings"] {
            if obj.get(key).is_some_and(Value::is_null) {
                obj.remove(key);
            }
        }
        let profile_id = obj
            .get("agent_profile_id")
            .filter(|v| !v.is_null())
            .cloned();
        let additions_ref = obj
            .get("agent_launch_additions")
            .and_then(|a| a.get("llm_profile_ref"))
            .filter(|v| !v.is_null())
            .cloned();
        if let Some(_id) = &profile_id {
            let clash: Vec<&str> = ["agent", "agent_settings"]
                .into_iter()
                .filter(|k| obj.contains_key(*k))
                .collect();
            if !clash.is_empty() {
                let names: Vec<String> = clash.iter().map(|k| format!("`{k}`")).collect();
                return Err(LaunchError::Invalid(format!(
                    "`agent_profile_id` is mutually exclusive with {}",
                    names.join(", ")
                )));
            }
        } else if additions_ref.is_some() {
            return Err(LaunchError::Invalid(
                "`agent_launch_additions.llm_profile_ref` requires `agent_profile_id`".into(),
            ));
        }
        if obj.contains_key("agent") {
            obj.remove("agent_settings");
            return Ok(body);
        }
        if let Some(settings) = obj.remove("agent_settings") {
            let settings = settings_from_request(&settings)?;
            obj.insert("agent".into(), agent_for(&settings)?);
            return Ok(body);
        }
        let Some(id) = profile_id else {
            return Err(LaunchError::Invalid(
                "One of `agent`, `agent_settings`, or `agent_profile_id` must be provided".into(),
            ));
        };
        let id_text = id.as_str().unwrap_or_default().to_string();
        let Some(mut profile) = self.agent_profile_by_id(&id_text).await? else {
            return Err(LaunchError::NotFound(format!(
                "Agent profile with id '{id_text}' not found"
            )));
        };
        if let Some(r) = additions_ref.as_ref().and_then(Value::as_str) {
            if profile["agent_kind"] != "openhands" {
                return Err(LaunchError::Invalid(
                    "agent_launch_additions.llm_profile_ref applies only to an OpenHands Agent Profile"
                        .into(),
                ));
            }
            profile["llm_profile_ref"] = json!(r);
        }
        let inputs = self.launch_inputs().await?;
        let p = profile.clone();
        let resolved = tokio::task::spawn_blocking(move || resolve_for_launch(&p, &inputs))
            .await
            .map_err(|e| SettingsError::Io(e.to_string()))?;
        let settings = resolved.map_err(LaunchError::Unresolved)?;
        obj.insert("agent".into(), agent_for(&settings)?);
        obj.remove("agent_profile_id");
        // Secrets outside the profile's allow-list are not handed over.
        if let Some(refs) = profile["secret_refs"].as_array() {
            let allowed: Vec<&str> = refs.iter().filter_map(Value::as_str).collect();
            if let Some(secrets) = obj.get_mut("secrets").and_then(Value::as_object_mut) {
                secrets.retain(|k, _| allowed.contains(&k.as_str()));
            }
        }
        let mut launched = Map::new();
        launched.insert("agent_profile_id".into(), profile["id"].clone());
        launched.insert("revision".into(), profile["revision"].clone());
        launched.insert("secret_refs".into(), profile["secret_refs"].clone());
        launched.insert(
            "llm_profile_ref".into(),
            additions_ref.unwrap_or(Value::Null),
        );
        obj.insert("launched_agent_profile".into(), Value::Object(launched));
        Ok(body)
    }
}
