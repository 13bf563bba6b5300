//! Reading a plugin directory (the reference's `Plugin.load`): the Agent Plugins format (a
//! root `plugin.json` declaring its `$schema`) or, for everything else, the Claude Code format
//! (`.plugin/plugin.json` or `.claude-plugin/plugin.json`, else a manifest inferred from the
//! directory name). Both bring skills (`skills/<name>/SKILL.md`, `skills/*.md`, or a root
//! `SKILL.md`), commands (each also a skill `<plugin>:<command>`), hooks and MCP servers.
//! Paths that resolve outside the plugin are ignored. Agent definitions are not read (this
//! server has no sub-agents). Blocking: call from `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{json, Map, Value};

use super::pyfmt;
use super::source::{self, resolves_within};
use crate::skills::{self, Trigger};

mod manifest;
mod mcp;
mod skill_files;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

pub use mcp::{child_env_var, expand_vars};
pub use skill_files::load_skill_dir;

use manifest::{agent_plugins_manifest, claude_manifest, is_agent_plugins, read_text};
use mcp::{agent_plugins_mcp, claude_mcp};
use skill_files::{load_commands, load_skills, skill_json, SkillFields};

/// The only Agent Plugins manifest schema.
pub const AGENT_PLUGINS_SCHEMA: &str = "https://agent-plugins.org/schemas/1.0.0/plugin.schema.json";
/// Where the Agent Plugins format keeps this client's components.
const NAMESPACE: &str = "dev.openhands";

/// Why a directory is not a plugin: `NotFound` is the reference's `FileNotFoundError`,
/// `Invalid` its `ValueError`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

/// One skill a plugin brings: its name and description, and the SDK `Skill` JSON.
#[derive(Debug, Clone)]
pub struct PluginSkill {
    pub name: String,
    pub description: Option<String>,
    pub json: Value,
}

/// A command (`commands/<name>.md`).
#[derive(Debug, Clone)]
pub struct Command {
    pub name: String,
    pub description: String,
    pub argument_hint: Option<String>,
    pub allowed_tools: Vec<String>,
    pub content: String,
    pub source: String,
}

impl Command {
    /// The keyword-triggered skill `<plugin>:<command>` this command becomes.
    pub fn to_skill(&self, plugin: &str) -> PluginSkill {
        let mut parts = Vec::new();
        if !self.description.is_empty() {
            parts.push(format!("## {}\n\n{}\n", self.name, self.description));
        }
        if let Some(hint) = self.argument_hint.as_deref().filter(|h| !h.is_empty()) {
            parts.push(format!("**Arguments**: `$ARGUMENTS` - {hint}\n"));
        }
        if !self.content.is_empty() {
            parts.push(format!("\n{}", self.content));
        }
        let name = format!("{plugin}:{}", self.name);
        let description = if self.description.is_empty() {
            format!("Command {} from {plugin}", self.name)
        } else {
            self.description.clone()
        };
        let tools = (!self.allowed_tools.is_empty()).then(|| self.allowed_tools.clone());
        PluginSkill {
            json: skill_json(SkillFields {
                name: &name,
                content: parts.join("\n").trim(),
                trigger: json!({"type": "keyword", "keywords": [format!("/{name}")]}),
                source: Some(&self.source),
                inputs: json!([]),
                agentskills: false,
                description: Some(&description),
                meta: &Map::new(),
                allowed_tools: tools.map(|t| json!(t)),
                disable_model_invocation: false,
            }),
            name,
            description: Some(description),
        }
    }
}

/// A loaded plugin.
#[derive(Debug, Clone)]
pub struct Plugin {
    pub name: String,
    pub version: String,
    pub description: String,
    /// The resolved plugin directory.
    pub path: PathBuf,
    pub skills: Vec<PluginSkill>,
    pub commands: Vec<Command>,
    /// The normalised `HookConfig`, when the plugin configures hooks.
    pub hooks: Option<Value>,
    /// MCP servers by name (`${VAR}` references other than the format's own kept).
    pub mcp: Map<String, Value>,
}

impl Plugin {
    /// Skills, then the skills of the commands (what a conversation gets).
    pub fn all_skills(&self) -> Vec<PluginSkill> {
        let mut out = self.skills.clone();
        out.extend(self.commands.iter().map(|c| c.to_skill(&self.name)));
        out
    }

    /// `[{name, description}]` of [`Plugin::all_skills`].
    pub fn skill_summaries(&self) -> Vec<Value> {
        self.all_skills()
            .iter()
            .map(|s| json!({"name": s.name, "description": s.description}))
            .collect()
    }

    /// The plugin directory as a string.
    pub fn path_str(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}

/// Loads the plugin in `dir`; `data_root` is the parent of Agent Plugins `${PLUGIN_DATA}`
/// directories.
pub fn load(dir: &Path, data_root: &Path) -> Result<Plugin, LoadError> {
    let dir = source::resolve(dir);
    if !dir.is_dir() {
        return Err(LoadError::NotFound(format!(
            "Plugin directory not found: {}",
            dir.display()
        )));
    }
    let agent_plugins = is_agent_plugins(&dir);
    let manifest = if agent_plugins {
        agent_plugins_manifest(&dir)?
    } else {
        claude_manifest(&dir)?
    };
    let skills = load_skills(&dir);
    let ext_root = if agent_plugins {
        dir.join(NAMESPACE)
    } else {
        dir.clone()
    };
    let hooks = load_hooks(&ext_root, &dir);
    let mcp = if agent_plugins {
        agent_plugins_mcp(&dir, data_root)
    } else {
        claude_mcp(&dir)
    };
    let commands = load_commands(&ext_root, &dir);
    Ok(Plugin {
        name: manifest.name,
        version: manifest.version,
        description: manifest.description,
        path: dir,
        skills,
        commands,
        hooks,
        mcp,
    })
}

fn load_hooks(root: &Path, plugin_dir: &Path) -> Option<Value> {
    let path = root.join("hooks").join("hooks.json");
    if !path.exists() || !resolves_within(&path, plugin_dir) {
        return None;
    }
    let file: Value = match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring plugin hooks");
            return None;
        }
    };
    crate::hook_config::normalize_config(&file)
}

/// Every regular file under `root` (not inside `.git` directories, not through directory
/// symlinks), as sorted `/`-separated relative paths, at most 2000.
pub fn list_files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if name != ".git" {
                    walk(&path, &child, out);
                }
            } else if ft.is_symlink() && path.is_dir() {
                // A directory link is listed by `os.walk` as a directory and not entered.
            } else {
                out.push(child);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out.sort();
    out.truncate(2000);
    out
}
