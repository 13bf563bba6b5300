//! A plugin's skills (`skills/<name>/SKILL.md`, `skills/*.md`, a root `SKILL.md`) and commands
//! (each also a skill `<plugin>:<command>`).

use super::*;

/// The first file named `SKILL.md` (any case) in `dir`, in name order.
pub(super) fn find_skill_md(dir: &Path) -> Option<PathBuf> {
    sorted_children(dir).into_iter().find(|p| {
        p.is_file()
            && p.file_name()
                .is_some_and(|n| n.eq_ignore_ascii_case("skill.md"))
    })
}

pub(super) fn sorted_children(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

pub(super) fn load_skills(dir: &Path) -> Vec<PluginSkill> {
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
pub(super) struct SkillFields<'a> {
    pub(super) name: &'a str,
    pub(super) content: &'a str,
    pub(super) trigger: Value,
    pub(super) source: Option<&'a str>,
    pub(super) inputs: Value,
    pub(super) agentskills: bool,
    pub(super) description: Option<&'a str>,
    pub(super) meta: &'a Map<String, Value>,
    pub(super) allowed_tools: Option<Value>,
    pub(super) disable_model_invocation: bool,
}

pub(super) fn skill_json(f: SkillFields<'_>) -> Value {
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
pub(super) fn load_skill(path: &Path, base: Option<&Path>) -> Option<PluginSkill> {
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
pub(super) fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => pyfmt::repr(other),
    }
}

pub(super) fn load_command(path: &Path) -> Result<Command, String> {
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

pub(super) fn load_commands(root: &Path, plugin_dir: &Path) -> Vec<Command> {
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
