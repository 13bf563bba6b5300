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

mod launch;
mod service;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

pub use launch::{materialize, resolve_for_launch, seed_from_settings, LaunchInputs, Loader};

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
        crate::persist::sync_dir(&self.dir);
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
