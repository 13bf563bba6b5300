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

struct Manifest {
    name: String,
    version: String,
    description: String,
}

fn read_text(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_string)
        .unwrap_or(text))
}

/// A root `plugin.json` that fails to parse, is not an object, or names a `$schema`.
fn is_agent_plugins(dir: &Path) -> bool {
    let path = dir.join("plugin.json");
    if !path.is_file() {
        return false;
    }
    match read_text(&path)
        .ok()
        .map(|t| serde_json::from_str::<Value>(&t))
    {
        Some(Ok(Value::Object(m))) => m.contains_key("$schema"),
        _ => true,
    }
}

/// Checks an Agent Plugins manifest against the vendored schema; the first violation in the
/// order `jsonschema` reports it, in its words.
fn schema_violation(data: &Map<String, Value>) -> Option<String> {
    let not_type = |v: &Value, t: &str| format!("{} is not of type '{t}'", pyfmt::repr(v));
    const ORDER: [&str; 10] = [
        "$schema",
        "name",
        "version",
        "description",
        "author",
        "homepage",
        "repository",
        "license",
        "keywords",
        "extensions",
    ];
    for key in ORDER {
        let Some(v) = data.get(key) else { continue };
        match key {
            "$schema" => {}
            "name" => {
                let Some(s) = v.as_str() else {
                    return Some(not_type(v, "string"));
                };
                let len = s.chars().count();
                if len < 1 {
                    return Some(format!("{} should be non-empty", pyfmt::repr(v)));
                }
                if len > 64 {
                    return Some(format!("{} is too long", pyfmt::repr(v)));
                }
                if !valid_manifest_name(s) {
                    return Some(format!(
                        "{} does not match {}",
                        pyfmt::repr(v),
                        pyfmt::repr_str(r"^(?!.*(?:--|\.\.))[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$")
                    ));
                }
            }
            "author" => {
                let Some(author) = v.as_object() else {
                    return Some(not_type(v, "object"));
                };
                for field in ["name", "email", "url"] {
                    if let Some(f) = author.get(field).filter(|f| !f.is_string()) {
                        return Some(not_type(f, "string"));
                    }
                }
                let extra: Vec<String> = author
                    .keys()
                    .filter(|k| !["name", "email", "url"].contains(&k.as_str()))
                    .map(|k| pyfmt::repr_str(k))
                    .collect();
                if !extra.is_empty() {
                    let verb = if extra.len() == 1 { "was" } else { "were" };
                    return Some(format!(
                        "Additional properties are not allowed ({} {verb} unexpected)",
                        extra.join(", ")
                    ));
                }
            }
            "keywords" => {
                let Some(items) = v.as_array() else {
                    return Some(not_type(v, "array"));
                };
                if let Some(bad) = items.iter().find(|i| !i.is_string()) {
                    return Some(not_type(bad, "string"));
                }
            }
            "extensions" => {
                if let Some(bad) = v
                    .as_object()
                    .and_then(|m| m.values().find(|e| !e.is_object()))
                {
                    return Some(not_type(bad, "object"));
                }
            }
            _ => {
                if !v.is_string() {
                    return Some(not_type(v, "string"));
                }
            }
        }
    }
    for required in ["$schema", "name"] {
        if !data.contains_key(required) {
            return Some(format!(
                "{} is a required property",
                pyfmt::repr_str(required)
            ));
        }
    }
    None
}

/// `^(?!.*(?:--|\.\.))[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$`
fn valid_manifest_name(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !s.contains("--")
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge(s.chars().next())
        && edge(s.chars().last())
}

fn agent_plugins_manifest(dir: &Path) -> Result<Manifest, LoadError> {
    let path = dir.join("plugin.json");
    let shown = path.display();
    if !resolves_within(&path, dir) {
        return Err(LoadError::Invalid(format!(
            "Manifest {shown} resolves outside the plugin root"
        )));
    }
    let text = read_text(&path)
        .map_err(|e| LoadError::Invalid(format!("Failed to read manifest {shown}: {e}")))?;
    let data = pyfmt::parse_json(&text)
        .map_err(|e| LoadError::Invalid(format!("Invalid JSON in {shown}: {e}")))?;
    let Value::Object(mut data) = data else {
        return Err(LoadError::Invalid(format!(
            "Manifest {shown} must contain a JSON object, got {}",
            pyfmt::type_name(&data)
        )));
    };
    let schema = data.get("$schema").cloned().unwrap_or(Value::Null);
    if schema != AGENT_PLUGINS_SCHEMA {
        return Err(LoadError::Invalid(format!(
            "Unsupported or missing $schema in {shown}: {}. Supported: {AGENT_PLUGINS_SCHEMA}",
            pyfmt::repr(&schema)
        )));
    }
    const KNOWN: [&str; 10] = [
        "$schema",
        "name",
        "version",
        "description",
        "author",
        "homepage",
        "repository",
        "license",
        "keywords",
        "extensions",
    ];
    data.retain(|k, _| KNOWN.contains(&k.as_str()));
    if data.get("extensions").is_some_and(|e| !e.is_object()) {
        data.shift_remove("extensions");
    }
    if let Some(msg) = schema_violation(&data) {
        return Err(LoadError::Invalid(format!(
            "Invalid Agent Plugins manifest {shown}: {msg}"
        )));
    }
    let text = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Manifest {
        name: text("name").unwrap_or_default(),
        version: text("version").unwrap_or_else(|| "1.0.0".into()),
        description: text("description").unwrap_or_default(),
    })
}

/// pydantic's report of a `PluginManifest` that does not validate (simplified).
fn manifest_errors(data: &Value) -> Option<String> {
    let mut errors: Vec<(String, &str, &str, Value)> = Vec::new();
    let Some(obj) = data.as_object() else {
        errors.push((
            String::new(),
            "model_type",
            "Input should be a valid dictionary or instance of PluginManifest",
            data.clone(),
        ));
        return Some(pyfmt::validation_errors("PluginManifest", &errors));
    };
    match obj.get("name") {
        None => errors.push(("name".into(), "missing", "Field required", data.clone())),
        Some(v) if !v.is_string() => errors.push((
            "name".into(),
            "string_type",
            "Input should be a valid string",
            v.clone(),
        )),
        _ => {}
    }
    for key in ["version", "description"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_string()) {
            errors.push((
                key.into(),
                "string_type",
                "Input should be a valid string",
                v.clone(),
            ));
        }
    }
    if let Some(v) = obj.get("author").filter(|v| !v.is_object() && !v.is_null()) {
        errors.push((
            "author".into(),
            "model_type",
            "Input should be a valid dictionary or instance of PluginAuthor",
            v.clone(),
        ));
    }
    if let Some(v) = obj
        .get("entry_command")
        .filter(|v| !v.is_string() && !v.is_null())
    {
        errors.push((
            "entry_command".into(),
            "string_type",
            "Input should be a valid string",
            v.clone(),
        ));
    }
    (!errors.is_empty()).then(|| pyfmt::validation_errors("PluginManifest", &errors))
}

fn claude_manifest(dir: &Path) -> Result<Manifest, LoadError> {
    let found = [".plugin", ".claude-plugin"]
        .iter()
        .map(|d| dir.join(d).join("plugin.json"))
        .find(|p| p.symlink_metadata().is_ok());
    let Some(path) = found else {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(Manifest {
            description: format!("Plugin loaded from {name}"),
            name,
            version: "1.0.0".into(),
        });
    };
    let shown = path.display();
    if !resolves_within(&path, dir) {
        return Err(LoadError::Invalid(format!(
            "Manifest {shown} resolves outside the plugin root"
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        LoadError::Invalid(format!(
            "Failed to parse manifest {shown}: [Errno {}] {}: {}",
            e.raw_os_error().unwrap_or(0),
            io_words(&e),
            pyfmt::repr_str(&path.to_string_lossy())
        ))
    })?;
    let mut data = pyfmt::parse_json(&text)
        .map_err(|e| LoadError::Invalid(format!("Invalid JSON in {shown}: {e}")))?;
    if let Some(author) = data
        .get("author")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        data["author"] = author_from_string(&author);
    }
    if let Some(errors) = manifest_errors(&data) {
        return Err(LoadError::Invalid(format!(
            "Failed to parse manifest {shown}: {errors}"
        )));
    }
    let text = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Manifest {
        name: text("name").unwrap_or_default(),
        version: text("version").unwrap_or_else(|| "1.0.0".into()),
        description: text("description").unwrap_or_default(),
    })
}

/// The strerror text of an I/O error (without Rust's ` (os error N)` suffix).
fn io_words(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// `"Name <email>"` → `{name, email, url}`.
fn author_from_string(s: &str) -> Value {
    if let (Some(lt), true) = (s.find('<'), s.contains('>')) {
        let name = s[..lt].trim();
        let rest = &s[lt + 1..];
        let email = rest.split('>').next().unwrap_or_default().trim();
        return json!({"name": name, "email": email, "url": null});
    }
    json!({"name": s.trim(), "email": null, "url": null})
}

/// The first file named `SKILL.md` (any case) in `dir`, in name order.
fn find_skill_md(dir: &Path) -> Option<PathBuf> {
    sorted_children(dir).into_iter().find(|p| {
        p.is_file()
            && p.file_name()
                .is_some_and(|n| n.eq_ignore_ascii_case("skill.md"))
    })
}

fn sorted_children(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn load_skills(dir: &Path) -> Vec<PluginSkill> {
    let skills_dir = dir.join("skills");
    if skills_dir.symlink_metadata().is_ok() {
        if !resolves_within(&skills_dir, dir) || !skills_dir.is_dir() {
            return Vec::new();
        }
        let mut files = Vec::new();
        for sub in sorted_children(&skills_dir) {
            if !resolves_within(&sub, dir) || !sub.is_dir() {
                continue;
            }
            if let Some(md) = find_skill_md(&sub).filter(|m| resolves_within(m, dir)) {
                files.push(md);
            }
        }
        for f in sorted_children(&skills_dir) {
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.ends_with(".md")
                && f.is_file()
                && !name.eq_ignore_ascii_case("readme.md")
                && resolves_within(&f, dir)
            {
                files.push(f);
            }
        }
        // By category (AgentSkills, always-on, triggered), one per name, then in path order.
        let mut by_category: [Vec<(PathBuf, PluginSkill)>; 3] = Default::default();
        for file in files {
            let Some(skill) = load_skill(&file, Some(&skills_dir)) else {
                continue;
            };
            let agentskills = file
                .file_name()
                .is_some_and(|n| n.eq_ignore_ascii_case("skill.md"));
            let category = if agentskills {
                0
            } else if skill.json["trigger"].is_null() {
                1
            } else {
                2
            };
            let slot = &mut by_category[category];
            match slot.iter_mut().find(|(_, s)| s.name == skill.name) {
                Some(existing) => *existing = (file, skill),
                None => slot.push((file, skill)),
            }
        }
        let mut all: Vec<(PathBuf, PluginSkill)> = by_category.into_iter().flatten().collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        return all.into_iter().map(|(_, s)| s).collect();
    }
    match find_skill_md(dir).filter(|m| resolves_within(m, dir)) {
        Some(md) => load_skill(&md, Some(dir)).into_iter().collect(),
        None => Vec::new(),
    }
}

/// The skill of a skill folder (its `SKILL.md`), relaxed names.
pub fn load_skill_dir(dir: &Path) -> Option<PluginSkill> {
    load_skill(&find_skill_md(dir)?, None)
}

/// The SDK `Skill` fields a plugin skill is dumped with.
struct SkillFields<'a> {
    name: &'a str,
    content: &'a str,
    trigger: Value,
    source: Option<&'a str>,
    inputs: Value,
    agentskills: bool,
    description: Option<&'a str>,
    meta: &'a Map<String, Value>,
    allowed_tools: Option<Value>,
    disable_model_invocation: bool,
}

fn skill_json(f: SkillFields<'_>) -> Value {
    let text = |k: &str| f.meta.get(k).and_then(Value::as_str);
    let metadata = f.meta.get("metadata").and_then(Value::as_object).map(|m| {
        m.iter()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| pyfmt::repr(v));
                (k.clone(), Value::String(v))
            })
            .collect::<Map<String, Value>>()
    });
    json!({
        "name": f.name, "content": f.content, "trigger": f.trigger, "source": f.source,
        "mcp_tools": null, "inputs": f.inputs, "is_agentskills_format": f.agentskills,
        "version": "1.0.0", "description": f.description, "license": text("license"),
        "compatibility": text("compatibility"), "metadata": metadata,
        "allowed_tools": f.allowed_tools, "disable_model_invocation": f.disable_model_invocation,
        "resources": null,
    })
}

/// One skill file as the SDK loads it for a plugin (relaxed names).
fn load_skill(path: &Path, base: Option<&Path>) -> Option<PluginSkill> {
    let skill = match skills::load_file(path, base) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "skipping a plugin skill");
            return None;
        }
    };
    let meta = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| skills::frontmatter(&t).ok())
        .map(|(m, _)| m)
        .unwrap_or_default();
    let has_inputs = meta.contains_key("inputs");
    let trigger = match &skill.trigger {
        Trigger::Always => Value::Null,
        Trigger::Paths(p) => json!({"type": "path", "paths": p}),
        Trigger::Keywords(k) if has_inputs => json!({"type": "task", "triggers": k}),
        Trigger::Keywords(k) => json!({"type": "keyword", "keywords": k}),
    };
    let inputs = match (&skill.trigger, meta.get("inputs")) {
        (Trigger::Keywords(_), Some(Value::Array(items))) => Value::Array(
            items
                .iter()
                .map(|i| json!({"name": i.get("name"), "description": i.get("description")}))
                .collect(),
        ),
        _ => json!([]),
    };
    let allowed_tools = match meta
        .get("allowed-tools")
        .or_else(|| meta.get("allowed_tools"))
    {
        Some(Value::String(s)) => Some(json!(s.split_whitespace().collect::<Vec<_>>())),
        Some(Value::Array(a)) => Some(json!(a
            .iter()
            .map(|t| t
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| pyfmt::repr(t)))
            .collect::<Vec<_>>())),
        _ => None,
    };
    let source = skill.source.clone();
    Some(PluginSkill {
        json: skill_json(SkillFields {
            name: &skill.name,
            content: &skill.content,
            trigger,
            source: source.as_deref(),
            inputs,
            agentskills: skill.is_agentskills_format,
            description: skill.description.as_deref(),
            meta: &meta,
            allowed_tools,
            disable_model_invocation: skill.disable_model_invocation,
        }),
        name: skill.name,
        description: skill.description,
    })
}

/// Python's `str()` of a frontmatter value.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => pyfmt::repr(other),
    }
}

fn load_command(path: &Path) -> Result<Command, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let (meta, body) = skills::frontmatter(&text)?;
    let truthy = |v: Option<&Value>| {
        v.filter(|v| match v {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::Bool(true) => true,
        })
        .cloned()
    };
    let hint = truthy(meta.get("argument-hint")).or_else(|| truthy(meta.get("argumentHint")));
    let argument_hint = match hint {
        Some(Value::Array(items)) => Some(items.iter().map(py_str).collect::<Vec<_>>().join(" ")),
        Some(v) => Some(py_str(&v)),
        None => None,
    };
    let tools = truthy(meta.get("allowed-tools")).or_else(|| truthy(meta.get("allowedTools")));
    let allowed_tools = match tools {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(items)) => items.iter().map(py_str).collect(),
        _ => Vec::new(),
    };
    Ok(Command {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        description: meta.get("description").map(py_str).unwrap_or_default(),
        argument_hint,
        allowed_tools,
        content: body.trim().to_string(),
        source: path.to_string_lossy().into_owned(),
    })
}

fn load_commands(root: &Path, plugin_dir: &Path) -> Vec<Command> {
    let dir = root.join("commands");
    if !dir.is_dir() || !resolves_within(&dir, plugin_dir) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for item in sorted_children(&dir) {
        let name = item
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let md = item
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("md"));
        if item.is_dir()
            || !md
            || name == "README.md"
            || name == "readme.md"
            || !resolves_within(&item, plugin_dir)
        {
            continue;
        }
        match load_command(&item) {
            Ok(c) => out.push(c),
            Err(e) => {
                tracing::warn!(path = %item.display(), error = %e, "skipping a plugin command")
            }
        }
    }
    out
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
    crate::conversation::hooks::normalize_config(&file)
}

/// Replaces `${VAR}` / `${VAR:-default}` references in every string of `value`: `lookup`
/// answers a name's value; unresolved references keep their text, or take their default
/// when `defaults`.
pub fn expand_vars(
    value: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    defaults: bool,
) -> Value {
    static VAR: OnceLock<Regex> = OnceLock::new();
    let re = VAR.get_or_init(|| {
        Regex::new(r"\$\{([a-zA-Z_][a-zA-Z0-9_]*)(?::-([^}]*))?\}")
            .unwrap_or_else(|_| Regex::new("$^").expect("regex"))
    });
    match value {
        Value::String(s) => Value::String(
            re.replace_all(s, |c: &regex::Captures<'_>| {
                if let Some(v) = lookup(&c[1]) {
                    return v;
                }
                match c.get(2) {
                    Some(d) if defaults => d.as_str().to_string(),
                    _ => c[0].to_string(),
                }
            })
            .into_owned(),
        ),
        Value::Array(a) => {
            Value::Array(a.iter().map(|v| expand_vars(v, lookup, defaults)).collect())
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), expand_vars(v, lookup, defaults)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A variable of the children's environment.
pub fn child_env_var(name: &str) -> Option<String> {
    crate::util::child_env()
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.to_string_lossy().into_owned())
}

/// An MCP server entry as the SDK keeps it: `enabled` defaults to true.
fn server_entry(v: &Value) -> Option<Value> {
    let mut obj = v.as_object()?.clone();
    obj.retain(|_, v| !v.is_null() && *v != json!({}));
    if !obj.contains_key("enabled") {
        obj.insert("enabled".into(), json!(true));
    }
    Some(Value::Object(obj))
}

fn claude_mcp(dir: &Path) -> Map<String, Value> {
    let path = dir.join(".mcp.json");
    if !path.exists() || !resolves_within(&path, dir) {
        return Map::new();
    }
    let config = match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
    {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => {
            tracing::warn!(path = %path.display(), "ignoring an unreadable plugin MCP config");
            return Map::new();
        }
    };
    let root = dir.to_string_lossy().into_owned();
    let lookup = |name: &str| {
        if name == "SKILL_ROOT" {
            Some(root.clone())
        } else {
            child_env_var(name)
        }
    };
    let config = expand_vars(&config, &lookup, false);
    servers_of(&config)
}

fn servers_of(config: &Value) -> Map<String, Value> {
    config
        .get("mcpServers")
        .and_then(Value::as_object)
        .map(|servers| {
            servers
                .iter()
                .filter_map(|(k, v)| server_entry(v).map(|e| (k.clone(), e)))
                .collect()
        })
        .unwrap_or_default()
}

fn agent_plugins_mcp(dir: &Path, data_root: &Path) -> Map<String, Value> {
    let path = dir.join("mcp.json");
    if !path.is_file() || !resolves_within(&path, dir) {
        return Map::new();
    }
    let Some(config) = read_text(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        tracing::warn!(path = %path.display(), "ignoring an unreadable plugin MCP config");
        return Map::new();
    };
    let root = dir.to_string_lossy().into_owned();
    let data = source::cache_path(&root, data_root)
        .to_string_lossy()
        .into_owned();
    let lookup = |name: &str| match name {
        "PLUGIN_ROOT" => Some(root.clone()),
        "PLUGIN_DATA" => Some(data.clone()),
        _ => None,
    };
    servers_of(&expand_vars(&config, &lookup, false))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_claude_code_plugin_with_skills_commands_hooks_and_mcp() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("demo");
        write(
            &dir.join(".plugin/plugin.json"),
            r#"{"name":"demo-plugin","version":"0.2.0","description":"Demo","author":"Jane <j@x>"}"#,
        );
        write(
            &dir.join("skills/greet/SKILL.md"),
            "---\nname: greet\ndescription: Greets.\n---\nAlways greet.\n",
        );
        write(&dir.join("skills/README.md"), "readme");
        write(
            &dir.join("skills/loose.md"),
            "---\ntriggers: [foo]\n---\nloose\n",
        );
        write(
            &dir.join("commands/hello.md"),
            "---\ndescription: Say hello\nargument-hint: <name>\nallowed-tools: [terminal]\n---\nSay hello to $ARGUMENTS.\n",
        );
        write(&dir.join("commands/README.md"), "x");
        write(
            &dir.join("hooks/hooks.json"),
            r#"{"hooks":{"UserPromptSubmit":[{"matcher":"*","hooks":[{"type":"command","command":"echo hi"}]}]}}"#,
        );
        write(
            &dir.join(".mcp.json"),
            r#"{"mcpServers":{"m":{"command":"echo","args":["${SKILL_ROOT}","${FOO_UNSET_X:-bar}"]}}}"#,
        );
        let p = load(&dir, &tmp.path().join("data")).unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str()),
            ("demo-plugin", "0.2.0")
        );
        let names: Vec<String> = p.all_skills().iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, ["greet", "loose", "demo-plugin:hello"]);
        let hello = &p.all_skills()[2].json;
        assert_eq!(
            hello["content"],
            "## hello\n\nSay hello\n\n**Arguments**: `$ARGUMENTS` - <name>\n\n\nSay hello to $ARGUMENTS."
        );
        assert_eq!(hello["allowed_tools"], json!(["terminal"]));
        assert_eq!(hello["trigger"]["keywords"], json!(["/demo-plugin:hello"]));
        assert_eq!(p.skills[1].json["trigger"]["type"], "keyword");
        assert!(p.hooks.unwrap()["user_prompt_submit"][0]["hooks"][0]["command"] == "echo hi");
        let root = source::resolve(&dir).to_string_lossy().into_owned();
        assert_eq!(
            p.mcp["m"],
            json!({"command": "echo", "args": [root, "${FOO_UNSET_X:-bar}"], "enabled": true})
        );
        assert_eq!(
            list_files(&dir),
            [
                ".mcp.json",
                ".plugin/plugin.json",
                "commands/README.md",
                "commands/hello.md",
                "hooks/hooks.json",
                "skills/README.md",
                "skills/greet/SKILL.md",
                "skills/loose.md"
            ]
        );
    }

    #[test]
    fn formats_and_manifest_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let dir = tmp.path().join("nomanifest");
        write(
            &dir.join("skills/beta/SKILL.md"),
            "---\ndescription: Beta\n---\nBeta body\n",
        );
        let p = load(&dir, &data).unwrap();
        assert_eq!(p.name, "nomanifest");
        assert_eq!(p.description, "Plugin loaded from nomanifest");
        assert_eq!(p.skills[0].json["is_agentskills_format"], true);

        let dir = tmp.path().join("rootnoschema");
        write(&dir.join("plugin.json"), r#"{"name":"copilot-style"}"#);
        assert_eq!(load(&dir, &data).unwrap().name, "rootnoschema");

        let dir = tmp.path().join("ap");
        write(
            &dir.join("plugin.json"),
            &format!(
                r#"{{"$schema":"{AGENT_PLUGINS_SCHEMA}","name":"ap-plugin","version":"1.1.0","x":1,"extensions":{{"dev.openhands":{{"entry_command":"go"}}}}}}"#
            ),
        );
        write(
            &dir.join("dev.openhands/commands/go.md"),
            "---\ndescription: Go cmd\n---\nGo!\n",
        );
        let p = load(&dir, &data).unwrap();
        assert_eq!(p.name, "ap-plugin");
        assert_eq!(
            p.all_skills()[0].json["content"],
            "## go\n\nGo cmd\n\n\nGo!"
        );

        let dir = tmp.path().join("badschema");
        write(
            &dir.join("plugin.json"),
            r#"{"$schema":"https://example.com/x.json","name":"x"}"#,
        );
        let err = load(&dir, &data).unwrap_err().to_string();
        assert!(
            err.ends_with(&format!(
                "plugin.json: 'https://example.com/x.json'. Supported: {AGENT_PLUGINS_SCHEMA}"
            )),
            "{err}"
        );
        write(
            &dir.join("plugin.json"),
            &format!(r#"{{"$schema":"{AGENT_PLUGINS_SCHEMA}","name":"Bad_Name"}}"#),
        );
        let err = load(&dir, &data).unwrap_err().to_string();
        assert!(
            err.ends_with(
                r"'Bad_Name' does not match '^(?!.*(?:--|\\.\\.))[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$'"
            ),
            "{err}"
        );

        let dir = tmp.path().join("badjson");
        write(&dir.join(".plugin/plugin.json"), "{bad");
        let err = load(&dir, &data).unwrap_err().to_string();
        assert!(err.ends_with(
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
        ));
        assert!(matches!(
            load(&dir.join(".plugin/plugin.json"), &data),
            Err(LoadError::NotFound(_))
        ));
    }
}
