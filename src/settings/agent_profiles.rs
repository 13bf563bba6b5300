//! Agent profiles: named, secret-free launch specs (`agent-profiles/<name>.json`) that
//! reference an LLM profile by name (`llm_profile_ref`) and the user's MCP servers by key, as
//! the reference's `AgentProfileStore` keeps them. The server manages each profile's stable
//! `id` (kept across overwrites and renames) and `revision` (bumped on every overwrite); the
//! active profile is the `active_agent_profile_id` pointer of `settings.json`.
//!
//! Blocking file I/O: call from `spawn_blocking` (the [`super::SettingsService`] methods do).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use std::sync::Arc;

use super::profiles::canonical;
use super::store::{read_json, Read};
use super::{Settings, SettingsError, SettingsService};

/// Most agent profiles a server keeps (creating one more answers 409).
pub const MAX_AGENT_PROFILES: usize = 50;
/// The profile seeded from the agent settings when none is active.
pub const SEED_PROFILE_NAME: &str = "default";
/// The current `schema_version` of a stored profile.
const SCHEMA_VERSION: i64 = 4;
/// Switches older profiles carried; the tool list replaced them.
const RETIRED_TOOL_SWITCHES: [&str; 2] = ["enable_sub_agents", "enable_switch_llm_tool"];

/// Why a profile payload was refused (both answer 422).
#[derive(Debug)]
pub enum Invalid {
    /// pydantic-like issues: `{"loc", "type", "msg"}` objects, `loc` starting with the variant.
    Issues(Vec<Value>),
    /// A payload no migration can read (the reference's generic sentence).
    Unreadable,
}

fn issue(loc: Vec<Value>, kind: &str, msg: &str) -> Value {
    json!({"loc": loc, "type": kind, "msg": msg})
}

/// Brings an older payload up to the current schema, as the reference's migrations do.
fn migrate(mut payload: Map<String, Value>) -> Result<Map<String, Value>, Invalid> {
    let version = match payload.get("schema_version") {
        None => SCHEMA_VERSION,
        Some(Value::Number(n)) => n.as_i64().ok_or(Invalid::Unreadable)?,
        Some(_) => return Err(Invalid::Unreadable),
    };
    if !(0..=SCHEMA_VERSION).contains(&version) || version == 0 {
        return Err(Invalid::Unreadable);
    }
    if version < 2 {
        payload.remove("skills");
        let default_v1 = payload.get("agent_kind").is_none_or(|k| k == "openhands")
            && payload.get("name").is_some_and(|n| n == SEED_PROFILE_NAME)
            && payload.get("revision").is_none_or(|r| r == 0)
            && payload.get("tools") == Some(&json!([]));
        if default_v1 {
            payload.insert("tools".into(), Value::Null);
        }
    }
    if version < 4 {
        for switch in RETIRED_TOOL_SWITCHES {
            payload.remove(switch);
        }
    }
    payload.insert("schema_version".into(), json!(SCHEMA_VERSION));
    Ok(payload)
}

/// Validates a profile payload (migrated first) as the reference's `AgentProfile` union and
/// answers its canonical dump.
pub fn validate(payload: &Value) -> Result<Value, Invalid> {
    let Some(map) = payload.as_object() else {
        return Err(Invalid::Unreadable);
    };
    let map = migrate(map.clone())?;
    let tag = match map.get("agent_kind") {
        None => "openhands".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let model = match tag.as_str() {
        "openhands" => "OpenHandsAgentProfile",
        "acp" => "ACPAgentProfile",
        _ => {
            return Err(Invalid::Issues(vec![issue(
                vec![],
                "union_tag_invalid",
                &format!(
                    "Input tag '{tag}' found using _agent_profile_discriminator() does not \
                     match any of the expected tags: 'openhands', 'acp'"
                ),
            )]))
        }
    };
    if tag == "openhands" && RETIRED_TOOL_SWITCHES.iter().any(|s| map.contains_key(*s)) {
        return Err(Invalid::Issues(vec![issue(
            vec![json!(tag)],
            "value_error",
            "Value error, Retired tool switches were removed; select tools instead.",
        )]));
    }
    let mut out =
        crate::schema::validate(model, &Value::Object(map), &[json!(tag)]).map_err(|issues| {
            Invalid::Issues(
                issues
                    .into_iter()
                    .map(|i| json!({"loc": i.loc, "type": i.kind, "msg": i.msg}))
                    .collect(),
            )
        })?;
    if out.get("id").is_none_or(Value::is_null) {
        out["id"] = json!(uuid::Uuid::new_v4().to_string());
    }
    if tag == "openhands" {
        if out.get("condenser").is_none() {
            out["condenser"] = default_condenser();
        }
        if let Some(tools) = out["tools"].as_array() {
            out["tools"] = Value::Array(merge_duplicate_tools(tools));
        }
    }
    Ok(order_like_the_reference(out, tag == "openhands"))
}

fn default_condenser() -> Value {
    crate::schema::validate("LLMSummarizingCondenserSettings", &json!({}), &[])
        .unwrap_or_else(|_| json!({"condenser_kind": "llm_summarizing", "enabled": true}))
}

/// Collapses tool specs naming the same tool, keeping the first one with parameters.
fn merge_duplicate_tools(tools: &[Value]) -> Vec<Value> {
    let mut kept: Vec<Value> = Vec::new();
    for tool in tools {
        let has_params = |t: &Value| t["params"].as_object().is_some_and(|p| !p.is_empty());
        let spec = json!({"name": tool["name"], "params": tool.get("params").cloned().unwrap_or(json!({}))});
        match kept.iter_mut().find(|k| k["name"] == tool["name"]) {
            None => kept.push(spec),
            Some(k) if has_params(tool) && !has_params(k) => *k = spec,
            Some(_) => {}
        }
    }
    kept
}

/// The field order of the reference's dump (base fields first, then the variant's).
fn order_like_the_reference(profile: Value, openhands: bool) -> Value {
    const BASE: [&str; 7] = [
        "schema_version",
        "agent_kind",
        "id",
        "name",
        "revision",
        "mcp_server_refs",
        "secret_refs",
    ];
    let Value::Object(mut map) = profile else {
        return profile;
    };
    let mut out = Map::new();
    for key in BASE {
        if let Some(v) = map.remove(key) {
            out.insert(key.into(), v);
        }
    }
    let model = if openhands {
        "OpenHandsAgentProfile"
    } else {
        "ACPAgentProfile"
    };
    for key in crate::schema::property_names(model) {
        if let Some(v) = map.remove(&key) {
            out.insert(key, v);
        }
    }
    out.extend(map);
    Value::Object(out)
}

/// What a store operation can fail with.
#[derive(Debug)]
pub enum StoreError {
    NotFound,
    Exists,
    LimitReached,
    /// The stored file is not a readable profile.
    Corrupt(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e)
    }
}

/// The `agent-profiles` directory.
#[derive(Debug, Clone)]
pub struct AgentProfileStore {
    dir: PathBuf,
}

/// One profile as listed (`AgentProfileInfo`), read without validation.
pub fn summary(name: &str, data: &Value) -> Value {
    let kind = data["agent_kind"].as_str().unwrap_or("openhands");
    json!({
        "id": data.get("id").cloned().unwrap_or(Value::Null),
        "name": name,
        "agent_kind": kind,
        "revision": data.get("revision").cloned().unwrap_or(Value::Null),
        "llm_profile_ref": if kind == "openhands" { data.get("llm_profile_ref").cloned().unwrap_or(Value::Null) } else { Value::Null },
        "mcp_server_refs": data.get("mcp_server_refs").cloned().unwrap_or(Value::Null),
    })
}

impl AgentProfileStore {
    /// The store in `dir` (created on first save).
    pub fn new(dir: PathBuf) -> Self {
        AgentProfileStore { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.json", canonical(name)))
    }

    fn count(&self) -> Result<usize, StoreError> {
        Ok(self.names()?.len())
    }

    fn names(&self) -> Result<Vec<String>, StoreError> {
        Ok(super::store::json_names(&self.dir)?)
    }

    /// Summaries of every readable profile, sorted by name (unreadable files are skipped).
    pub fn summaries(&self) -> Result<Vec<Value>, StoreError> {
        let mut out = Vec::new();
        for name in self.names()? {
            match read_json(&self.path(&name))? {
                Read::Json(data) if data.is_object() => out.push(summary(&name, &data)),
                _ => tracing::warn!(profile = %name, "skipping an unreadable agent profile"),
            }
        }
        Ok(out)
    }

    /// The name of the profile whose id is `id`.
    pub fn name_for_id(&self, id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .summaries()?
            .into_iter()
            .find(|s| s["id"].as_str() == Some(id))
            .and_then(|s| s["name"].as_str().map(str::to_string)))
    }

    /// The validated profile stored as `name`.
    pub fn load(&self, name: &str) -> Result<Value, StoreError> {
        match read_json(&self.path(name))? {
            Read::Missing => Err(StoreError::NotFound),
            Read::Corrupt => Err(StoreError::Corrupt(format!(
                "Failed to load profile `{name}`: not JSON"
            ))),
            Read::Json(data) => validate(&data).map_err(|_| {
                StoreError::Corrupt(format!("Failed to load profile `{name}`: invalid profile"))
            }),
        }
    }

    /// Whether a file exists under `name`.
    pub fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    /// Saves a validated `profile` under its name with the server-managed identity: an
    /// overwrite keeps the namesake's id and bumps its revision, a creation mints a new id.
    pub fn save_preserving_identity(&self, mut profile: Value) -> Result<Value, StoreError> {
        let name = canonical(profile["name"].as_str().unwrap_or_default()).to_string();
        profile["name"] = json!(name);
        let existing = match read_json(&self.path(&name))? {
            Read::Json(data) => Some(data),
            _ => None,
        };
        let prior_id = existing
            .as_ref()
            .and_then(|d| d["id"].as_str())
            .and_then(|s| uuid::Uuid::parse_str(s).ok());
        match prior_id {
            Some(id) => {
                let rev = existing
                    .as_ref()
                    .and_then(|d| d["revision"].as_i64())
                    .unwrap_or(0);
                profile["id"] = json!(id.hyphenated().to_string());
                profile["revision"] = json!(rev + 1);
            }
            None => profile["id"] = json!(uuid::Uuid::new_v4().to_string()),
        }
        self.save(&profile)?;
        Ok(profile)
    }

    /// Writes `profile` under its name (409 past the limit when it is new).
    pub fn save(&self, profile: &Value) -> Result<(), StoreError> {
        let name = profile["name"].as_str().unwrap_or_default();
        let path = self.path(name);
        if !path.exists() && self.count()? >= MAX_AGENT_PROFILES {
            return Err(StoreError::LimitReached);
        }
        write(&path, profile)
    }

    /// Deletes `name`; a missing profile is no error.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        Ok(super::store::remove_if_exists(&self.path(name))?)
    }

    /// Renames `old` to `new`, rewriting the name inside the file; the id stays.
    pub fn rename(&self, old: &str, new: &str) -> Result<(), StoreError> {
        let (from, to) = (self.path(old), self.path(new));
        let Read::Json(mut data) = read_json(&from)? else {
            return if from.exists() {
                Err(StoreError::Corrupt(format!("Profile `{old}` is not JSON")))
            } else {
                Err(StoreError::NotFound)
            };
        };
        if from == to {
            return Ok(());
        }
        if to.exists() {
            return Err(StoreError::Exists);
        }
        if data.is_object() {
            data["name"] = json!(canonical(new));
        }
        write(&to, &data)?;
        fs::remove_file(&from)?;
        crate::conversation::store::sync_dir(&self.dir);
        Ok(())
    }

    /// Names of the OpenHands profiles whose `llm_profile_ref` is `llm_profile`.
    pub fn referrers(&self, llm_profile: &str) -> Result<Vec<String>, StoreError> {
        let key = canonical(llm_profile);
        Ok(self
            .summaries()?
            .into_iter()
            .filter(|s| {
                s["agent_kind"] == "openhands"
                    && s["llm_profile_ref"].as_str().map(canonical) == Some(key)
            })
            .filter_map(|s| s["name"].as_str().map(str::to_string))
            .collect())
    }

    /// Points every profile that references LLM profile `old` at `new`.
    pub fn cascade_rename(&self, old: &str, new: &str) -> Result<Vec<String>, StoreError> {
        let names = self.referrers(old)?;
        for name in &names {
            let path = self.path(name);
            if let Read::Json(mut data) = read_json(&path)? {
                data["llm_profile_ref"] = json!(canonical(new));
                write(&path, &data)?;
            }
        }
        Ok(names)
    }
}

fn write(path: &Path, value: &Value) -> Result<(), StoreError> {
    super::store::write_json(path, value).map_err(StoreError::Io)
}

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
fn shell_join(words: &[String]) -> String {
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
fn unusable_tools(tools: &Value) -> Vec<String> {
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

const BROWSER_TOOL: &str = "browser_tool_set";
/// The `schema_version` of the agent settings a launch resolves to.
const AGENT_SETTINGS_SCHEMA_VERSION: u64 = 9;

/// Credential files the ACP providers read (`ACPAgentSettings.acp_file_secrets`).
fn acp_file_secrets() -> Value {
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
fn acp_credential_channels(server: &str) -> (Value, Value, Vec<&'static str>) {
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
fn partition(refs: &[Value], available: &Map<String, Value>) -> (Vec<String>, Vec<String>) {
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

fn diagnose(profile: &Value, inputs: &LaunchInputs, redact: bool) -> Value {
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
        d["llm_api_key_set"] = json!(super::ProfileStore::api_key_set(llm));
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
fn agent_context(suffix: &Value, disabled: &Value, project_skills: bool, dated: bool) -> Value {
    json!({
        "skills": [], "system_message_suffix": suffix, "user_message_suffix": null,
        "load_user_skills": false, "load_public_skills": false,
        "marketplace_path": "marketplaces/default.json", "registered_marketplaces": [],
        "load_project_skills": project_skills, "load_memory": false,
        "disabled_skills": disabled, "secrets": null,
        "current_datetime": if dated { json!(crate::util::utc_timestamp()) } else { Value::Null },
    })
}

fn redact_llm(mut llm: Value) -> Value {
    for field in super::document::LLM_SECRET_FIELDS {
        if llm[field].is_string() {
            llm[field] = json!(crate::conversation::crypto::MASK);
        }
    }
    llm
}

fn redact_mcp(server: &Value) -> Value {
    let mut s = server.clone();
    for key in ["env", "headers"] {
        if let Some(m) = s.get_mut(key).and_then(Value::as_object_mut) {
            for v in m.values_mut() {
                *v = json!(crate::conversation::crypto::MASK);
            }
        }
    }
    s
}

fn store_error(name: &str, e: StoreError) -> SettingsError {
    match e {
        StoreError::NotFound => SettingsError::NotFound(format!("Agent profile '{name}' not found")),
        StoreError::Exists => SettingsError::Conflict(format!("Agent profile '{name}' already exists")),
        StoreError::LimitReached => SettingsError::Conflict(format!(
            "Agent profile limit reached ({MAX_AGENT_PROFILES}). Delete a profile before saving a new one."
        )),
        StoreError::Corrupt(m) => SettingsError::BadRequest(m),
        StoreError::Io(e) => SettingsError::Io(e.to_string()),
    }
}

fn invalid(e: Invalid) -> SettingsError {
    match e {
        Invalid::Issues(issues) => SettingsError::Rejected(Value::Array(issues)),
        Invalid::Unreadable => SettingsError::Invalid("Invalid agent profile".into()),
    }
}

/// Whether an LLM carries configuration worth keeping as a profile (a key, a subscription or
/// an endpoint), not bare defaults.
fn llm_has_real_config(llm: &Value) -> bool {
    super::ProfileStore::api_key_set(llm)
        || llm["is_subscription"] == true
        || llm["auth_type"] == "subscription"
        || llm["base_url"]
            .as_str()
            .is_some_and(|u| !u.trim().is_empty())
}

impl SettingsService {
    pub(super) fn agent_store(&self) -> AgentProfileStore {
        AgentProfileStore::new(self.dir.join("agent-profiles"))
    }

    /// Keeps `active_agent_profile_id` on a stored profile: a missing or dangling pointer moves
    /// to `default`, seeded from the agent settings when absent (with a `default` LLM profile
    /// mirroring a configured LLM), else to the first other profile. Blocking; the caller holds
    /// the lock.
    fn ensure_active_blocking(&self) -> Result<(), SettingsError> {
        let store = self.agent_store();
        let cipher = self.cipher();
        let path = self.settings_path();
        let settings = Self::load_settings(&path, cipher.as_deref(), false)?;
        let known = |id: &str| store.name_for_id(id).map(|n| n.is_some());
        if let Some(id) = &settings.active_agent_profile_id {
            if known(id).map_err(|e| store_error("", e))? {
                return Ok(());
            }
        }
        let target = match store.load(SEED_PROFILE_NAME) {
            Ok(p) => p["id"].as_str().map(str::to_string),
            Err(StoreError::NotFound) => {
                let mut llm_ref = settings.active_profile.clone().filter(|p| !p.is_empty());
                if llm_ref.is_none() && settings.agent_settings["agent_kind"] != "acp" {
                    llm_ref = Some(SEED_PROFILE_NAME.into());
                    self.seed_default_llm_profile(&settings.agent_settings["llm"]);
                }
                let seed = seed_from_settings(&settings.agent_settings, llm_ref.as_deref());
                match store.save(&seed) {
                    Ok(()) => {
                        tracing::info!(id = %seed["id"], "seeded the default agent profile");
                        seed["id"].as_str().map(str::to_string)
                    }
                    Err(StoreError::LimitReached) => None,
                    Err(e) => return Err(store_error(SEED_PROFILE_NAME, e)),
                }
            }
            Err(_) => {
                tracing::warn!("agent profile 'default' exists but cannot be read; leaving it");
                None
            }
        };
        let target = match target {
            Some(id) => Some(id),
            None => store
                .summaries()
                .map_err(|e| store_error("", e))?
                .into_iter()
                .find(|s| s["id"].is_string() && s["name"] != SEED_PROFILE_NAME)
                .and_then(|s| s["id"].as_str().map(str::to_string)),
        };
        let Some(id) = target else { return Ok(()) };
        let mut settings = Self::load_settings(&path, cipher.as_deref(), true)?;
        settings.active_agent_profile_id = Some(id);
        super::store::write_json(&path, &settings.to_stored(cipher.as_deref()))
            .map_err(|e| SettingsError::Io(e.to_string()))
    }

    /// Mirrors a configured LLM into a `default` LLM profile unless one exists.
    fn seed_default_llm_profile(&self, llm: &Value) {
        let cipher = self.cipher();
        match self.profiles.load(cipher.as_deref(), SEED_PROFILE_NAME) {
            Err(super::profiles::ProfileError::NotFound) if llm_has_real_config(llm) => {
                if let Err(e) = self
                    .profiles
                    .save(cipher.as_deref(), SEED_PROFILE_NAME, llm, true)
                {
                    tracing::warn!(error = ?e, "could not seed the default LLM profile");
                }
            }
            _ => {}
        }
    }

    async fn with_agent_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&SettingsService) -> Result<T, SettingsError> + Send + 'static,
    ) -> Result<T, SettingsError> {
        let _guard = self.lock.lock().await;
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| SettingsError::Io(e.to_string()))?
    }

    /// `GET /api/agent-profiles`: every profile and the active pointer (some profile is always
    /// active: `default` is seeded when none is).
    pub async fn list_agent_profiles(self: &Arc<Self>) -> Result<Value, SettingsError> {
        self.with_agent_store(|me| {
            me.ensure_active_blocking()?;
            let profiles = me.agent_store().summaries().map_err(|e| store_error("", e))?;
            let settings = Self::load_settings(&me.settings_path(), me.cipher().as_deref(), false)?;
            Ok(json!({"profiles": profiles, "active_agent_profile_id": settings.active_agent_profile_id}))
        })
        .await
    }

    /// The stored profile `name` (validated).
    pub async fn agent_profile(self: &Arc<Self>, name: &str) -> Result<Value, SettingsError> {
        let name = name.to_string();
        self.with_agent_store(move |me| {
            me.agent_store()
                .load(&name)
                .map_err(|e| store_error(&name, e))
        })
        .await
    }

    /// Saves `body` as profile `name` (the path name wins over the body's).
    pub async fn save_agent_profile(
        self: &Arc<Self>,
        name: &str,
        body: Value,
    ) -> Result<(), SettingsError> {
        let mut body = body;
        body["name"] = json!(name);
        let profile = validate(&body).map_err(invalid)?;
        self.with_agent_store(move |me| {
            let name = profile["name"].as_str().unwrap_or_default().to_string();
            me.agent_store()
                .save_preserving_identity(profile)
                .map(|_| ())
                .map_err(|e| store_error(&name, e))
        })
        .await
    }

    /// Deletes profile `name` (idempotent); when it was active, ACP agent settings are reset to
    /// the OpenHands defaults (keeping the MCP servers) and another profile becomes active.
    pub async fn delete_agent_profile(self: &Arc<Self>, name: &str) -> Result<(), SettingsError> {
        let name = name.to_string();
        self.with_agent_store(move |me| {
            let store = me.agent_store();
            let id = store
                .summaries()
                .map_err(|e| store_error(&name, e))?
                .into_iter()
                .find(|s| s["name"].as_str() == Some(canonical(&name)))
                .and_then(|s| s["id"].as_str().map(str::to_string));
            store.delete(&name).map_err(|e| store_error(&name, e))?;
            let Some(id) = id else { return Ok(()) };
            let (path, cipher) = (me.settings_path(), me.cipher());
            let mut settings = Self::load_settings(&path, cipher.as_deref(), false)?;
            if settings.active_agent_profile_id.as_deref() != Some(id.as_str()) {
                return Ok(());
            }
            settings = Self::load_settings(&path, cipher.as_deref(), true)?;
            settings.active_agent_profile_id = None;
            if settings.agent_settings["agent_kind"] != "openhands" {
                let mcp = settings.agent_settings["mcp_config"].clone();
                settings.agent_settings = Settings::default().agent_settings;
                settings.agent_settings["mcp_config"] = mcp;
            }
            super::store::write_json(&path, &settings.to_stored(cipher.as_deref()))
                .map_err(|e| SettingsError::Io(e.to_string()))?;
            me.ensure_active_blocking()
        })
        .await
    }

    /// Renames a profile (its id, and so an active pointer, stays); answers the message.
    pub async fn rename_agent_profile(
        self: &Arc<Self>,
        name: &str,
        new_name: &str,
    ) -> Result<String, SettingsError> {
        let (name, new_name) = (name.to_string(), new_name.to_string());
        self.with_agent_store(move |me| {
            me.agent_store()
                .rename(&name, &new_name)
                .map_err(|e| match e {
                    StoreError::Exists => store_error(&new_name, e),
                    e => store_error(&name, e),
                })?;
            Ok(if name == new_name {
                format!("Agent profile '{name}' unchanged (same name)")
            } else {
                format!("Agent profile '{name}' renamed to '{new_name}'")
            })
        })
        .await
    }

    /// Points `active_agent_profile_id` at the profile with this id (nothing else changes).
    pub async fn activate_agent_profile(self: &Arc<Self>, id: &str) -> Result<(), SettingsError> {
        let id = id.to_string();
        self.with_agent_store(move |me| {
            let known = me
                .agent_store()
                .name_for_id(&id)
                .map_err(|e| store_error("", e))?;
            if known.is_none() {
                return Err(SettingsError::NotFound(format!(
                    "Agent profile with id '{id}' not found"
                )));
            }
            let (path, cipher) = (me.settings_path(), me.cipher());
            let mut settings = Self::load_settings(&path, cipher.as_deref(), true)
                .map_err(|_| SettingsError::Io("Failed to activate agent profile".into()))?;
            settings.active_agent_profile_id = Some(id);
            super::store::write_json(&path, &settings.to_stored(cipher.as_deref()))
                .map_err(|_| SettingsError::Io("Failed to activate agent profile".into()))
        })
        .await
    }

    /// The active agent profile (activating `default` when none is), if any.
    pub async fn active_agent_profile(self: &Arc<Self>) -> Result<Option<Value>, SettingsError> {
        self.with_agent_store(|me| {
            me.ensure_active_blocking()?;
            let settings = Self::load_settings(&me.settings_path(), me.cipher().as_deref(), false)?;
            let Some(id) = settings.active_agent_profile_id else {
                return Ok(None);
            };
            let store = me.agent_store();
            match store.name_for_id(&id).map_err(|e| store_error("", e))? {
                Some(name) => Ok(store.load(&name).ok()),
                None => Ok(None),
            }
        })
        .await
    }

    /// The stored profile with this id.
    pub async fn agent_profile_by_id(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<Option<Value>, SettingsError> {
        let id = id.to_string();
        self.with_agent_store(move |me| {
            let store = me.agent_store();
            match store.name_for_id(&id).map_err(|e| store_error("", e))? {
                Some(name) => store
                    .load(&name)
                    .map(Some)
                    .map_err(|e| store_error(&name, e)),
                None => Ok(None),
            }
        })
        .await
    }

    /// What a launch of `profile` reads: the agent settings, LLM profiles and meta-profiles.
    pub async fn launch_inputs(self: &Arc<Self>) -> Result<LaunchInputs, SettingsError> {
        let settings = self.settings().await?;
        let (profiles, cipher) = (self.profiles.clone(), self.cipher());
        let meta_dir = self.dir.join("meta-profiles");
        Ok(LaunchInputs {
            agent_settings: settings.agent_settings,
            llm: Box::new(move |name| match profiles.load(cipher.as_deref(), name) {
                Ok(llm) => Ok(Some(llm)),
                Err(super::profiles::ProfileError::NotFound) => Ok(None),
                Err(e) => Err(format!("{e:?}")),
            }),
            meta: Box::new(move |name| {
                super::meta_profiles::MetaProfileStore::new(meta_dir.clone())
                    .load(name)
                    .map_err(|e| format!("{e:?}"))
            }),
        })
    }

    /// `POST /api/agent-profiles/{name}/materialize`: diagnostics of the stored profile, or of
    /// `draft` when given.
    pub async fn materialize_agent_profile(
        self: &Arc<Self>,
        name: &str,
        draft: Option<Value>,
    ) -> Result<Value, SettingsError> {
        let profile = match draft {
            Some(mut d) => {
                d["name"] = json!(name);
                validate(&d).map_err(invalid)?
            }
            None => self.agent_profile(name).await?,
        };
        let inputs = self.launch_inputs().await?;
        tokio::task::spawn_blocking(move || materialize(&profile, &inputs))
            .await
            .map_err(|e| SettingsError::Io(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_kept_across_overwrites_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let store = AgentProfileStore::new(dir.path().join("agent-profiles"));
        let p = validate(&json!({"name": "a", "llm_profile_ref": "x", "id": "00000000-0000-0000-0000-000000000001"})).unwrap();
        let first = store.save_preserving_identity(p.clone()).unwrap();
        assert_ne!(first["id"], "00000000-0000-0000-0000-000000000001");
        assert_eq!(first["revision"], 0);
        let second = store.save_preserving_identity(p).unwrap();
        assert_eq!(second["id"], first["id"]);
        assert_eq!(second["revision"], 1);
        store.rename("a", "b").unwrap();
        let loaded = store.load("b").unwrap();
        assert_eq!(
            (loaded["id"].clone(), loaded["name"].clone()),
            (first["id"].clone(), json!("b"))
        );
        assert_eq!(
            store
                .name_for_id(first["id"].as_str().unwrap())
                .unwrap()
                .as_deref(),
            Some("b")
        );
        assert_eq!(
            store.cascade_rename("x", "y").unwrap(),
            vec!["b".to_string()]
        );
        assert_eq!(store.load("b").unwrap()["llm_profile_ref"], "y");
    }

    #[test]
    fn old_payloads_are_migrated_and_duplicates_merged() {
        let p = validate(
            &json!({"schema_version": 1, "name": "a", "llm_profile_ref": "x",
            "skills": [{"name": "s"}],
            "tools": [{"name": "T"}, {"name": "T", "params": {"k": 1}}]}),
        )
        .unwrap();
        assert_eq!(p["schema_version"], 4);
        assert_eq!(p["tools"], json!([{"name": "T", "params": {"k": 1}}]));
        assert!(matches!(
            validate(&json!({"schema_version": 9, "name": "a"})),
            Err(Invalid::Unreadable)
        ));
        assert_eq!(shell_join(&["a b".into(), "c".into()]), "'a b' c");
    }
}
