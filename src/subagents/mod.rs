//! Sub-agent definitions: named specialist agents the main agent can delegate a task to (the
//! `task` tool, `crate::conversation::task`). They come from Markdown files with YAML
//! frontmatter (the project's `.agents/agents/` and `.openhands/agents/`, the user's
//! `~/.agents/agents/` and `<persistence>/agents/`), from the built-ins, and from definitions
//! a client forwards when it starts a conversation. The first definition of a name wins, as in
//! the reference.
//!
//! Definitions are kept as `SubAgentInfo` JSON (the wire shape of `POST /api/sub-agents`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

/// Frontmatter keys a definition reads; the others go to `metadata`.
const KNOWN_KEYS: [&str; 14] = [
    "name",
    "description",
    "model",
    "color",
    "tools",
    "skills",
    "max_iteration_per_run",
    "max_budget_per_run",
    "hooks",
    "profile_store_dir",
    "mcp_config",
    "mcp_servers",
    "permission_mode",
    "condenser",
];

/// The built-in definitions (the reference's, without the browser-only `web-researcher`:
/// this server has no browser).
pub fn builtins() -> Vec<Value> {
    serde_json::from_str(include_str!("builtin_agents.json")).unwrap_or_default()
}

fn string_list(v: Option<&Value>, split_commas: bool) -> Vec<Value> {
    match v {
        Some(Value::String(s)) if split_commas => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| json!(s))
            .collect(),
        Some(Value::String(s)) => vec![json!(s)],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => json!(s),
                other => json!(other.to_string()),
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn examples(description: &str) -> Vec<Value> {
    let Ok(re) = regex::Regex::new(r"(?is)<example>(.*?)</example>") else {
        return Vec::new();
    };
    re.captures_iter(description)
        .filter_map(|c| c.get(1))
        .map(|m| json!(m.as_str().trim()))
        .collect()
}

/// Parses one definition file (`level` is `project` or `user`); `None` when it is not a valid
/// definition (logged).
pub fn parse_file(path: &Path, level: &str) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let (meta, body) = match crate::skills::frontmatter(&text) {
        Ok(parts) => parts,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable agent definition");
            return None;
        }
    };
    let stem = path.file_stem()?.to_string_lossy().into_owned();
    let text_of = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
    let description = text_of("description").unwrap_or_default();
    let permission_mode = match meta.get("permission_mode") {
        None | Some(Value::Null) => Value::Null,
        Some(v) => {
            let mode = v.as_str().unwrap_or_default().to_ascii_lowercase();
            if !["always_confirm", "never_confirm", "confirm_risky"].contains(&mode.as_str()) {
                tracing::warn!(file = %path.display(), "skipping an agent definition with an unknown permission_mode");
                return None;
            }
            json!(mode)
        }
    };
    let max_iterations = match meta.get("max_iteration_per_run") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| *n > 0);
    let budget = match meta.get("max_budget_per_run") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let mcp = meta
        .get("mcp_config")
        .or_else(|| meta.get("mcp_servers"))
        .filter(|v| v.is_object())
        .cloned()
        .unwrap_or(Value::Null);
    let condenser = match meta.get("condenser") {
        None | Some(Value::Null) | Some(Value::Bool(true)) => Value::Null,
        Some(Value::Bool(false)) => json!({"kind": "NoOpCondenser"}),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "none" | "off" | "false" | "no" | "disable" | "disabled" => {
                json!({"kind": "NoOpCondenser"})
            }
            _ => Value::Null,
        },
        Some(other) => other.clone(),
    };
    let metadata: Map<String, Value> = meta
        .iter()
        .filter(|(k, _)| !KNOWN_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some(json!({
        "name": text_of("name").unwrap_or(stem),
        "description": description,
        "model": text_of("model").unwrap_or_else(|| "inherit".into()),
        "color": text_of("color"),
        "tools": string_list(meta.get("tools"), false),
        "skills": string_list(meta.get("skills"), true),
        "system_prompt": body,
        "when_to_use_examples": examples(&description),
        "permission_mode": permission_mode,
        "max_iteration_per_run": max_iterations,
        "max_budget_per_run": budget,
        "mcp_config": mcp,
        "mcp_servers": mcp,
        "profile_store_dir": text_of("profile_store_dir"),
        "hooks": meta.get("hooks").filter(|h| h.is_object()).cloned().unwrap_or(Value::Null),
        "condenser": condenser,
        "metadata": metadata,
        "level": level,
        "source": path.to_string_lossy(),
        "is_builtin": false,
    }))
}

/// The definitions in one directory (top-level `*.md` but README, by file name).
fn scan_dir(dir: &Path, level: &str) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().to_ascii_lowercase());
            name.is_some_and(|n| n.ends_with(".md") && n != "readme.md")
        })
        .collect();
    files.sort();
    files.iter().filter_map(|f| parse_file(f, level)).collect()
}

/// What `POST /api/sub-agents` lists.
#[derive(Debug, Clone)]
pub struct CatalogRequest {
    pub load_user: bool,
    pub load_project: bool,
    pub load_builtin: bool,
    pub project_dir: Option<PathBuf>,
}

/// The definitions visible from `project_dir`, first of each name (project, user, built-in).
/// Blocking.
pub fn catalog(req: &CatalogRequest, home: &Path, persistence_dir: &Path) -> Vec<Value> {
    let mut all = Vec::new();
    if let (true, Some(project)) = (req.load_project, &req.project_dir) {
        all.extend(scan_dir(&project.join(".agents").join("agents"), "project"));
        all.extend(scan_dir(
            &project.join(".openhands").join("agents"),
            "project",
        ));
    }
    if req.load_user {
        all.extend(scan_dir(&home.join(".agents").join("agents"), "user"));
        all.extend(scan_dir(&persistence_dir.join("agents"), "user"));
    }
    if req.load_builtin {
        all.extend(builtins());
    }
    first_of_each_name(all)
}

fn first_of_each_name(all: Vec<Value>) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    all.into_iter()
        .filter(|d| seen.insert(d["name"].as_str().unwrap_or_default().to_string()))
        .collect()
}

/// The definitions the `task` tool can run, across conversations: built-ins first, then each
/// forwarded or file definition whose name is new.
#[derive(Debug)]
pub struct Registry {
    defs: Mutex<Vec<Value>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            defs: Mutex::new(builtins()),
        }
    }
}

impl Registry {
    /// Adds `def` unless a definition of that name exists; answers whether it was added.
    pub fn register_if_absent(&self, def: Value) -> bool {
        let Some(name) = def["name"].as_str().filter(|n| !n.is_empty()) else {
            return false;
        };
        let mut defs = self.defs.lock().unwrap_or_else(|e| e.into_inner());
        if defs.iter().any(|d| d["name"] == name) {
            return false;
        }
        defs.push(def);
        true
    }

    /// Every definition, by name.
    pub fn list(&self) -> Vec<Value> {
        let mut defs = self.defs.lock().unwrap_or_else(|e| e.into_inner()).clone();
        defs.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        defs
    }

    /// The definition `name` (with the reference's aliases).
    pub fn get(&self, name: &str) -> Option<Value> {
        let name = match name.trim() {
            "" | "default" | "default cli mode" => "general-purpose",
            "explore" => "code-explorer",
            "bash" => "bash-runner",
            other => other,
        };
        self.defs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_file_is_read_like_the_reference() {
        let dir = tempfile::tempdir().unwrap();
        let agents = dir.path().join(".agents/agents");
        std::fs::create_dir_all(&agents).unwrap();
        std::fs::write(
            agents.join("reviewer.md"),
            "---\nname: reviewer\ndescription: Reviews code <example>review my PR</example>\n\
             model: fast\ncolor: blue\ntools: [terminal, file_editor]\nskills: a, b\n\
             permission_mode: Confirm_Risky\nmax_iteration_per_run: \"7\"\n\
             max_budget_per_run: 1.5\ncondenser: none\ncustom_key: hello\n---\nYou review code.\n",
        )
        .unwrap();
        std::fs::write(agents.join("README.md"), "not an agent").unwrap();
        let req = CatalogRequest {
            load_user: false,
            load_project: true,
            load_builtin: true,
            project_dir: Some(dir.path().to_path_buf()),
        };
        let all = catalog(&req, dir.path(), dir.path());
        let r = &all[0];
        assert_eq!(r["name"], "reviewer");
        assert_eq!(r["skills"], json!(["a", "b"]));
        assert_eq!(r["permission_mode"], "confirm_risky");
        assert_eq!(r["max_iteration_per_run"], 7);
        assert_eq!(r["when_to_use_examples"], json!(["review my PR"]));
        assert_eq!(r["condenser"], json!({"kind": "NoOpCondenser"}));
        assert_eq!(r["metadata"], json!({"custom_key": "hello"}));
        assert_eq!(r["system_prompt"], "You review code.");
        let names: Vec<&str> = all.iter().map(|d| d["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "reviewer",
                "bash-runner",
                "code-explorer",
                "general-purpose"
            ]
        );
    }
}
