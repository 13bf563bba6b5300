//! Plugins of a conversation. The `plugins` a conversation is created with are stored (their
//! sources' inline credentials masked in `meta.json`) and loaded, with the plugins of the
//! marketplaces the agent registers for auto-loading and the ambient ones (the user's, the
//! enabled installed ones, the project's), once before the agent first runs
//! ([`ensure_loaded`]); `POST .../load_plugin` adds one plugin of a registered marketplace
//! ([`load_plugin`]). Loading merges skills into `agent.agent_context.skills` (by name, the
//! later wins), MCP servers into `agent.mcp_config` (`${VAR}` expanded with the
//! conversation's secrets) and hooks into `hook_config` (appended), recorded as
//! `ConversationStateUpdateEvent`s.
//!
//! Not done (this server has no such machinery): sub-agent definitions, and connecting the
//! MCP servers of a plugin loaded after the agent started (they are connected when the
//! conversation next starts).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{events, Conversation, ConversationError};
use crate::conversation::{StateField, StoredConversation};
use crate::crypto::{map_secret_fields, MASK};
use crate::plugins::marketplace::{Registration, Registry, ResolveError};
use crate::plugins::{load, source, Plugin, PluginError, Plugins};
use crate::schema::ValidationIssue;

/// What this process knows of a conversation's plugins.
#[derive(Debug, Default)]
struct State {
    /// [`ensure_loaded`] has run to completion.
    loaded: bool,
    /// The `plugins` as given at creation (credentials unmasked), while this process lives.
    sources: Option<Vec<Value>>,
}

type Slot = Arc<tokio::sync::Mutex<State>>;

static STATES: Mutex<Option<HashMap<Uuid, Slot>>> = Mutex::new(None);

fn slot(id: Uuid) -> Slot {
    let mut map = STATES.lock().unwrap_or_else(|e| e.into_inner());
    map.get_or_insert_with(HashMap::new)
        .entry(id)
        .or_default()
        .clone()
}

/// Checks the `plugins` of a `StartConversationRequest` (`PluginSource` items; `repo_path`
/// relative and without `..`). Answers the list to store (sources with inline credentials
/// masked) and the list as given, or pydantic's issues.
pub fn checked_sources(
    plugins: Option<&Value>,
) -> Result<Option<(Value, Value)>, Vec<ValidationIssue>> {
    let items = match plugins {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(other) => {
            return Err(vec![ValidationIssue::new(
                "list_type",
                &["body", "plugins"],
                "Input should be a valid list",
            )
            .with_input(other.clone())])
        }
    };
    let mut issues = Vec::new();
    let mut stored = Vec::new();
    let mut raw = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let loc = [json!("body"), json!("plugins"), json!(i)];
        let spec = match crate::schema::validate("PluginSource", item, &loc) {
            Ok(s) => s,
            Err(found) => {
                issues.extend(found);
                continue;
            }
        };
        if let Some(rp) = spec["repo_path"].as_str() {
            let problem = if rp.starts_with('/') {
                Some("repo_path must be relative, not absolute")
            } else if std::path::Path::new(rp)
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                Some("repo_path cannot contain '..' (parent directory traversal)")
            } else {
                None
            };
            if let Some(p) = problem {
                let mut at = loc.to_vec();
                at.push(json!("repo_path"));
                issues.push(ValidationIssue {
                    kind: "value_error".into(),
                    loc: at,
                    msg: format!("Value error, {p}"),
                    input: json!(rp),
                });
                continue;
            }
        }
        let source = spec["source"].as_str().unwrap_or_default();
        stored.push(json!({
            "source": source::redact_url_credentials(source, true),
            "ref": spec["ref"], "repo_path": spec["repo_path"],
        }));
        raw.push(json!({"source": source, "ref": spec["ref"], "repo_path": spec["repo_path"]}));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(Some((Value::Array(stored), Value::Array(raw))))
}

/// Keeps the `plugins` a conversation was created with as given (the stored copy has
/// credentials masked), for this process's lifetime.
pub fn remember_sources(id: Uuid, raw: Value) {
    if let Value::Array(items) = raw {
        if let Ok(mut st) = slot(id).try_lock() {
            st.sources = Some(items);
        }
    }
}

/// `${VAR}` references expanded with the conversation's secrets (no environment, no
/// defaults).
fn expand_secrets(text: &str, secrets: &[(String, String)]) -> String {
    let lookup = |n: &str| secrets.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    load::expand_vars(&json!(text), &lookup, false)
        .as_str()
        .unwrap_or(text)
        .to_string()
}

/// The marketplaces `agent.agent_context` registers, sources and refs expanded.
fn registrations(agent: &Value, secrets: &[(String, String)]) -> Vec<Registration> {
    agent
        .get("agent_context")
        .and_then(|c| c.get("registered_marketplaces"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Registration::from_value)
        .map(|mut r| {
            r.source = expand_secrets(&r.source, secrets);
            r.git_ref = r.git_ref.map(|g| expand_secrets(&g, secrets));
            r
        })
        .collect()
}

/// An agent with plugins merged in, and the hooks they bring.
struct Merge {
    agent: Value,
    skills: Vec<Value>,
    mcp: Map<String, Value>,
    hooks: Vec<Value>,
}

impl Merge {
    fn new(agent: Value) -> Self {
        let skills = agent
            .get("agent_context")
            .and_then(|c| c.get("skills"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mcp = agent.get("mcp_config").map(|c| {
            c.get("mcpServers")
                .filter(|m| m.is_object())
                .unwrap_or(c)
                .as_object()
                .cloned()
                .unwrap_or_default()
        });
        Merge {
            agent,
            skills,
            mcp: mcp.unwrap_or_default(),
            hooks: Vec::new(),
        }
    }

    fn add(&mut self, plugin: &Plugin) {
        for skill in plugin.all_skills() {
            match self
                .skills
                .iter_mut()
                .find(|s| s["name"] == skill.name.as_str())
            {
                Some(slot) => *slot = skill.json,
                None => self.skills.push(skill.json),
            }
        }
        for (name, server) in &plugin.mcp {
            self.mcp.insert(name.clone(), server.clone());
        }
        if let Some(h) = &plugin.hooks {
            self.hooks.push(h.clone());
        }
    }

    /// The agent with the merged skills and MCP servers (`${VAR}` expanded with `secrets`,
    /// the environment, then defaults).
    fn finish(mut self, secrets: &[(String, String)]) -> (Value, Vec<Value>) {
        let lookup = |n: &str| {
            secrets
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
                .or_else(|| load::child_env_var(n))
        };
        let mcp = load::expand_vars(&Value::Object(self.mcp), &lookup, true);
        if !self.agent["agent_context"].is_object() {
            self.agent["agent_context"] = json!({
                "skills": [], "system_message_suffix": null, "user_message_suffix": null,
                "load_user_skills": false, "load_public_skills": false,
                "marketplace_path": "marketplaces/default.json", "registered_marketplaces": [],
                "load_project_skills": false, "load_memory": false, "disabled_skills": [],
                "secrets": null, "current_datetime": crate::util::utc_timestamp(),
            });
        }
        self.agent["agent_context"]["skills"] = Value::Array(self.skills);
        self.agent["mcp_config"] = mcp;
        (self.agent, self.hooks)
    }
}

/// `HookConfig.merge`: the matchers of each event concatenated (`None` when none).
fn merge_hooks(configs: &[Value]) -> Option<Value> {
    const KEYS: [&str; 6] = [
        "pre_tool_use",
        "post_tool_use",
        "user_prompt_submit",
        "session_start",
        "session_end",
        "stop",
    ];
    let configs: Vec<Value> = configs
        .iter()
        .map(|c| crate::hook_config::normalize_config(c).unwrap_or_else(|| c.clone()))
        .collect();
    let mut out = Map::new();
    let mut any = false;
    for key in KEYS {
        let all: Vec<Value> = configs
            .iter()
            .filter_map(|c| c.get(key).and_then(Value::as_array))
            .flatten()
            .cloned()
            .collect();
        any |= !all.is_empty();
        out.insert(key.into(), Value::Array(all));
    }
    any.then_some(Value::Object(out))
}

/// Loads the explicit, auto-loaded and ambient plugins into `agent` (blocking). `None` when
/// there were none; an error when an explicit or auto-loaded plugin cannot be fetched or
/// loaded.
fn merge_all(
    root: PathBuf,
    agent: Value,
    specs: Vec<Value>,
    work_dir: String,
    secrets: Vec<(String, String)>,
) -> Result<Option<(Value, Vec<Value>)>, String> {
    let plugins = Plugins::new(&root);
    let cache = plugins.cache_dir();
    let mut to_load: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    let mut market_skills = Vec::new();
    let regs = registrations(&agent, &secrets);
    let auto = |r: &Registration| match &r.auto_load {
        Ok(all) => *all,
        Err(names) => !names.is_empty(),
    };
    if regs.iter().any(auto) {
        let mut registry = Registry::new(regs.clone(), cache.clone());
        for reg in regs.iter().filter(|r| auto(r)) {
            match registry.marketplace(&reg.name) {
                Ok(market) => {
                    for e in market.plugins.iter().filter(|e| reg.auto_loads(&e.name)) {
                        match market.resolve(e) {
                            Ok(spec) => to_load.push(spec),
                            Err(m) => return Err(m),
                        }
                    }
                    market_skills.extend(market.standalone_skills(reg));
                }
                Err(e) => {
                    tracing::warn!(marketplace = %reg.name, error = %e, "marketplace not loaded")
                }
            }
        }
    }
    for s in &specs {
        let text = |k: &str| s[k].as_str().map(str::to_string);
        to_load.push((
            expand_secrets(&text("source").unwrap_or_default(), &secrets),
            text("ref").map(|r| expand_secrets(&r, &secrets)),
            text("repo_path"),
        ));
    }
    let mut merge = Merge::new(agent);
    let mut changed = false;
    // Standalone marketplace skills: low precedence (kept only where no skill has the name).
    for skill in market_skills {
        if !merge
            .skills
            .iter()
            .any(|s| s["name"] == skill.name.as_str())
        {
            merge.skills.push(skill.json);
            changed = true;
        }
    }
    let mut explicit = HashSet::new();
    for (src, git_ref, repo_path) in &to_load {
        let fetched = source::fetch(src, git_ref.as_deref(), repo_path.as_deref(), &cache, true)?;
        let plugin = plugins.load(&fetched.path).map_err(|e| e.to_string())?;
        tracing::info!(plugin = %plugin.name, "plugin loaded into a conversation");
        explicit.insert(plugin.name.clone());
        merge.add(&plugin);
        changed = true;
    }
    for plugin in plugins.available(true, true, Some(&work_dir)) {
        if explicit.contains(&plugin.name) {
            continue;
        }
        merge.add(&plugin);
        changed = true;
    }
    Ok(changed.then(|| merge.finish(&secrets)))
}

/// Records a new agent: its JSON (secrets in plaintext) and one state update (secrets
/// masked); nothing when it is the agent the conversation has.
async fn set_agent(conv: &Arc<Conversation>, agent: Value) -> std::io::Result<()> {
    if conv.agent_json() == agent {
        return Ok(());
    }
    conv.set_field(StateField::Agent(agent.clone()), false)
        .await?;
    let mut shown = agent;
    map_secret_fields(&mut shown, &|_| Value::String(MASK.into()));
    conv.append(events::state_update("agent", shown)).await?;
    Ok(())
}

/// Loads the conversation's plugins once (before the agent first runs; again after a failure).
pub async fn ensure_loaded(conv: &Arc<Conversation>) -> Result<(), ConversationError> {
    let slot = slot(conv.id);
    let mut st = slot.lock().await;
    if st.loaded {
        return Ok(());
    }
    let Some(root) = crate::plugins::persistence_dir() else {
        st.loaded = true;
        return Ok(());
    };
    let agent = conv.agent_json();
    let specs = match &st.sources {
        Some(s) => s.clone(),
        None => conv.read_meta(|m| StoredConversation::list(&m.plugins).to_vec()),
    };
    let registered = agent
        .pointer("/agent_context/registered_marketplaces")
        .and_then(Value::as_array)
        .is_some_and(|r| !r.is_empty());
    if !specs.is_empty() || registered {
        conv.resolve_lookup_secrets().await;
    }
    let secrets = conv.secret_values();
    let work_dir = conv.working_dir();
    let merged =
        tokio::task::spawn_blocking(move || merge_all(root, agent, specs, work_dir, secrets))
            .await
            .map_err(|e| ConversationError::Io(std::io::Error::other(e)))?
            .map_err(ConversationError::Plugin)?;
    if let Some((agent, hooks)) = merged {
        set_agent(conv, agent).await?;
        if !hooks.is_empty() {
            let mut all: Vec<Value> = conv.read_meta(|m| m.hooks().cloned()).into_iter().collect();
            all.extend(hooks);
            if let Some(h) = merge_hooks(&all) {
                conv.set_field(StateField::HookConfig(h), true).await?;
            }
        }
    }
    st.loaded = true;
    Ok(())
}

/// `POST /api/conversations/{id}/load_plugin`: loads `plugin_ref` (`name` or
/// `name@marketplace`) from the marketplaces the agent registers.
pub async fn load_plugin(conv: &Arc<Conversation>, plugin_ref: &str) -> Result<(), PluginError> {
    ensure_loaded(conv).await.map_err(|e| match e {
        ConversationError::Io(e) => PluginError::Io(e),
        other => PluginError::Unusable(other.to_string()),
    })?;
    let Some(root) = crate::plugins::persistence_dir() else {
        return Err(PluginError::Unusable("Plugins are not available".into()));
    };
    let agent = conv.agent_json();
    if !agent["agent_context"].is_object() {
        return Err(PluginError::Unusable(
            "No agent context available. Configure agent_context with registered_marketplaces to use load_plugin().".into(),
        ));
    }
    let secrets = conv.secret_values();
    let regs = registrations(&agent, &secrets);
    if regs.is_empty() {
        return Err(PluginError::Unusable(
            "No marketplaces registered. Configure registered_marketplaces in AgentContext to use load_plugin().".into(),
        ));
    }
    let mut seen = HashSet::new();
    if let Some(dup) = regs.iter().find(|r| !seen.insert(r.name.clone())) {
        return Err(PluginError::Unusable(format!(
            "Duplicate marketplace registration: {}",
            dup.name
        )));
    }
    let plugin_ref = plugin_ref.to_string();
    let merged =
        tokio::task::spawn_blocking(move || -> Result<(Value, Vec<Value>), PluginError> {
            let plugins = Plugins::new(&root);
            let mut registry = Registry::new(regs, plugins.cache_dir());
            let (src, git_ref, repo_path) = registry.resolve(&plugin_ref).map_err(|e| match e {
                ResolveError::NotFound(m) => PluginError::NotFound(m),
                ResolveError::Bad(m) => PluginError::Unusable(m),
            })?;
            let src = expand_secrets(&src, &secrets);
            let git_ref = git_ref.map(|r| expand_secrets(&r, &secrets));
            let fetched = source::fetch(
                &src,
                git_ref.as_deref(),
                repo_path.as_deref(),
                &plugins.cache_dir(),
                true,
            )
            .map_err(PluginError::Unusable)?;
            let plugin = plugins
                .load(&fetched.path)
                .map_err(|e| PluginError::Unusable(e.to_string()))?;
            tracing::info!(plugin = %plugin.name, "plugin loaded into a conversation");
            let mut merge = Merge::new(agent);
            merge.add(&plugin);
            Ok(merge.finish(&secrets))
        })
        .await
        .map_err(|e| PluginError::Io(std::io::Error::other(e)))??;
    let (agent, hooks) = merged;
    if !hooks.is_empty() {
        let current = conv
            .read_state(|s| s.hooks().cloned())
            .or_else(|| conv.read_meta(|m| m.hooks().cloned()));
        let mut all: Vec<Value> = current.into_iter().collect();
        all.extend(hooks);
        if let Some(h) = merge_hooks(&all) {
            conv.set_field(StateField::HookConfig(h), true).await?;
        }
    }
    set_agent(conv, agent).await?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_checked_and_masked() {
        let ok = checked_sources(Some(&json!([
            {"source": "https://u:pw@h/r.git", "repo_path": "p"},
            {"source": "https://x:${T}@h/r.git"}
        ])))
        .unwrap()
        .unwrap();
        assert_eq!(
            ok.0,
            json!([{"source": "https://****@h/r.git", "ref": null, "repo_path": "p"},
                   {"source": "https://x:${T}@h/r.git", "ref": null, "repo_path": null}])
        );
        assert_eq!(ok.1[0]["source"], "https://u:pw@h/r.git");
        let errs = checked_sources(Some(&json!([{"source": "a", "repo_path": "/abs"},
                                                 {"source": "a", "repo_path": "a/../b"}, {}])))
        .unwrap_err();
        let v = serde_json::to_value(&errs).unwrap();
        assert_eq!(
            v[0]["msg"],
            "Value error, repo_path must be relative, not absolute"
        );
        assert_eq!(
            v[0]["ctx"]["error"],
            "repo_path must be relative, not absolute"
        );
        assert_eq!(v[1]["loc"], json!(["body", "plugins", 1, "repo_path"]));
        assert_eq!(v[2]["type"], "missing");
        assert_eq!(v[2]["loc"], json!(["body", "plugins", 2, "source"]));
    }

    #[test]
    fn hooks_concatenate() {
        let hook = json!({"type": "command", "command": "true"});
        let a = json!({"user_prompt_submit": [{"matcher": "*", "hooks": [hook]}], "stop": []});
        let b = json!({"UserPromptSubmit": [{"matcher": "x", "hooks": [hook]}]});
        let m = merge_hooks(&[a, b]).unwrap();
        assert_eq!(m["user_prompt_submit"].as_array().unwrap().len(), 2);
        assert_eq!(m["user_prompt_submit"][1]["hooks"][0]["timeout"], 60);
        assert_eq!(m["pre_tool_use"], json!([]));
        assert!(merge_hooks(&[json!({})]).is_none());
    }
}
