//! Skills: markdown guidance the agent is given, loaded from the places the SDK looks.
//!
//! - Project (`load_project`): third-party instruction files at the working directory and the
//!   git root (`AGENTS.md`, `CLAUDE.md`, `GEMINI.md`, `.cursorrules`), the same files in
//!   subdirectories as directory-scoped rules (`agents:<dir>`), then `.agents/skills`,
//!   `.openhands/skills` and the legacy `.openhands/microagents`.
//! - User (`load_user`): `~/.agents/skills`, `<persistence>/skills` (not `installed/`),
//!   `<persistence>/microagents`, then the enabled installed skills ([`installed`]).
//!
//! A skill file is markdown with optional YAML frontmatter (`name`, `triggers`, `description`,
//! `paths`, `inputs`, `disable-model-invocation`); `SKILL.md` in a directory is the AgentSkills
//! format. The first skill of a name wins within a tier. Blocking: call from `spawn_blocking`.

pub mod installed;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// Third-party instruction files (lower-cased) and the skill names they load as.
const THIRD_PARTY: [(&str, &str); 5] = [
    (".cursorrules", "cursorrules"),
    ("agents.md", "agents"),
    ("agent.md", "agents"),
    ("claude.md", "claude"),
    ("gemini.md", "gemini"),
];

fn third_party_name(file: &str) -> Option<&'static str> {
    let lower = file.to_ascii_lowercase();
    THIRD_PARTY
        .iter()
        .find(|(f, _)| *f == lower)
        .map(|(_, n)| *n)
}

/// How a skill is activated.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Always in context.
    Always,
    /// When a user message contains a keyword (or a `/task` command).
    Keywords(Vec<String>),
    /// When the agent touches a file under these globs.
    Paths(Vec<String>),
}

/// One loaded skill.
#[derive(Debug, Clone, PartialEq)]
pub struct Skill {
    pub name: String,
    pub content: String,
    pub trigger: Trigger,
    /// Absolute path of the file (none for generated skills).
    pub source: Option<String>,
    pub description: Option<String>,
    pub is_agentskills_format: bool,
    pub disable_model_invocation: bool,
}

impl Skill {
    /// `SkillInfo` as `POST /api/skills` lists it.
    pub fn info(&self) -> Value {
        let (kind, triggers) = match &self.trigger {
            _ if self.is_agentskills_format => ("agentskills", self.keywords()),
            Trigger::Always => ("repo", Vec::new()),
            Trigger::Keywords(k) => ("knowledge", k.clone()),
            Trigger::Paths(_) => ("knowledge", Vec::new()),
        };
        json!({
            "name": self.name,
            "type": kind,
            "content": self.content,
            "triggers": triggers,
            "source": self.source,
            "description": self.description,
            "is_agentskills_format": self.is_agentskills_format,
            "disable_model_invocation": self.disable_model_invocation,
        })
    }

    fn keywords(&self) -> Vec<String> {
        match &self.trigger {
            Trigger::Keywords(k) => k.clone(),
            _ => Vec::new(),
        }
    }

    fn category(&self) -> u8 {
        match (&self.trigger, self.is_agentskills_format) {
            (_, true) => 2,
            (Trigger::Always, _) => 0,
            _ => 1,
        }
    }
}

/// Splits `---\n<yaml>\n---\n<body>` into frontmatter and the stripped body.
pub(crate) fn frontmatter(text: &str) -> Result<(serde_json::Map<String, Value>, String), String> {
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"));
    let Some(rest) = rest else {
        return Ok((serde_json::Map::new(), text.trim().to_string()));
    };
    let end = rest
        .find("\n---\n")
        .map(|i| (i, i + 5))
        .or_else(|| rest.find("\n---\r\n").map(|i| (i, i + 6)))
        .or_else(|| rest.strip_suffix("\n---").map(|r| (r.len(), rest.len())));
    let Some((yaml_end, body_start)) = end else {
        return Ok((serde_json::Map::new(), text.trim().to_string()));
    };
    let yaml = &rest[..yaml_end];
    let meta: Value = if yaml.trim().is_empty() {
        json!({})
    } else {
        serde_yaml_ng::from_str(yaml).map_err(|e| format!("invalid frontmatter: {e}"))?
    };
    let meta = match meta {
        Value::Object(m) => m,
        Value::Null => serde_json::Map::new(),
        _ => return Err("frontmatter is not a mapping".into()),
    };
    Ok((meta, rest[body_start..].trim().to_string()))
}

/// Loads one skill file; `base` derives the name of a plain `.md` without a `name`.
pub fn load_file(path: &Path, base: Option<&Path>) -> Result<Skill, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let source = Some(path.to_string_lossy().into_owned());
    let agentskills = file_name.eq_ignore_ascii_case("skill.md");
    if !agentskills {
        if let Some(name) = third_party_name(&file_name) {
            return Ok(Skill {
                name: name.into(),
                content: text,
                trigger: Trigger::Always,
                source,
                description: None,
                is_agentskills_format: false,
                disable_model_invocation: false,
            });
        }
    }
    let (meta, content) = frontmatter(&text)?;
    let derived = if agentskills {
        path.parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        match base.and_then(|b| path.strip_prefix(b).ok()) {
            Some(rel) => rel.with_extension("").to_string_lossy().into_owned(),
            None => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    };
    let name = match meta.get("name") {
        Some(Value::String(s)) => s.clone(),
        Some(other) if !other.is_null() => other.to_string(),
        _ => derived,
    };
    let strings = |v: Option<&Value>| -> Result<Vec<String>, String> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect()),
            Some(_) => Err("Triggers must be a list of strings".into()),
        }
    };
    let mut keywords = strings(meta.get("triggers"))?;
    let paths: Vec<String> = match meta.get("paths") {
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
        other => strings(other)?,
    }
    .into_iter()
    .filter(|p| !p.is_empty())
    .collect();
    let trigger = if !paths.is_empty() {
        Trigger::Paths(paths)
    } else if meta.contains_key("inputs") {
        let task = format!("/{name}");
        if !keywords.contains(&task) {
            keywords.push(task);
        }
        Trigger::Keywords(keywords)
    } else if !keywords.is_empty() {
        Trigger::Keywords(keywords)
    } else {
        Trigger::Always
    };
    let flag = meta
        .get("disable-model-invocation")
        .or_else(|| meta.get("disable_model_invocation"));
    Ok(Skill {
        name,
        content,
        trigger,
        source,
        description: meta
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        is_agentskills_format: agentskills,
        disable_model_invocation: flag.and_then(Value::as_bool).unwrap_or(false),
    })
}

fn sorted_entries(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// `.md` files below `dir` (recursively), not `README.md`, not `SKILL.md`, not under `skip`.
fn markdown_files(dir: &Path, skip: &HashSet<PathBuf>, out: &mut Vec<PathBuf>) {
    for entry in sorted_entries(dir) {
        if skip.iter().any(|s| entry.starts_with(s)) {
            continue;
        }
        if entry.is_dir() {
            markdown_files(&entry, skip, out);
        } else if entry.extension().is_some_and(|e| e == "md") {
            let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            if name != "README.md" && !name.eq_ignore_ascii_case("skill.md") {
                out.push(entry);
            }
        }
    }
}

/// The skills of one directory: `<name>/SKILL.md` directories and plain `.md` files, ordered
/// always-on first, then triggered, then AgentSkills (a failing file is logged and skipped).
pub fn load_dir(dir: &Path, exclude: &HashSet<PathBuf>) -> Vec<Skill> {
    if !dir.is_dir() {
        return Vec::new();
    }
    let mut files = Vec::new();
    let mut skill_dirs = HashSet::new();
    for sub in sorted_entries(dir) {
        if exclude.contains(&sub) || !sub.is_dir() {
            continue;
        }
        let skill_md = sorted_entries(&sub).into_iter().find(|f| {
            f.is_file()
                && f.file_name()
                    .is_some_and(|n| n.eq_ignore_ascii_case("SKILL.md"))
        });
        if let Some(md) = skill_md {
            files.push(md);
            skill_dirs.insert(sub);
        }
    }
    let mut skip: HashSet<PathBuf> = skill_dirs;
    skip.extend(exclude.iter().cloned());
    markdown_files(dir, &skip, &mut files);
    let mut loaded: Vec<Skill> = Vec::new();
    for file in files {
        match load_file(&file, Some(dir)) {
            Ok(skill) => match loaded.iter_mut().find(|s| s.name == skill.name) {
                Some(slot) => *slot = skill,
                None => loaded.push(skill),
            },
            Err(e) => tracing::warn!(path = %file.display(), error = %e, "skipping a skill"),
        }
    }
    loaded.sort_by_key(Skill::category);
    loaded
}

/// Appends the skills of `dirs` whose names are new.
fn merge_first_wins(
    dirs: &[PathBuf],
    exclude: &HashSet<PathBuf>,
    seen: &mut HashSet<String>,
    out: &mut Vec<Skill>,
) {
    for dir in dirs {
        for skill in load_dir(dir, exclude) {
            if seen.insert(skill.name.clone()) {
                out.push(skill);
            }
        }
    }
}

fn git_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

/// Third-party files below `root` (not at its top), as `(path, relative directory)`; hidden
/// directories and common dependency folders are not searched.
fn nested_third_party(root: &Path) -> Vec<(PathBuf, String)> {
    const SKIP: [&str; 5] = ["node_modules", "target", "venv", "__pycache__", "dist"];
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let mut visited = 0usize;
    while let Some(dir) = stack.pop() {
        visited += 1;
        if visited > 10_000 {
            break;
        }
        for entry in sorted_entries(&dir) {
            let name = entry
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if entry.is_dir() && !entry.is_symlink() {
                if !name.starts_with('.') && !SKIP.contains(&name.as_str()) {
                    stack.push(entry);
                }
            } else if dir != root && entry.is_file() && third_party_name(&name).is_some() {
                if let Ok(rel) = dir.strip_prefix(root) {
                    out.push((entry.clone(), rel.to_string_lossy().into_owned()));
                }
            }
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    out
}

/// The project skills of `work_dir` (see the module docs).
pub fn load_project(work_dir: &Path) -> Vec<Skill> {
    if !work_dir.is_dir() {
        return Vec::new();
    }
    let mut roots = vec![work_dir.to_path_buf()];
    if let Some(g) = git_root(work_dir).filter(|g| g != work_dir) {
        roots.push(g);
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for root in &roots {
        let mut names_here = HashSet::new();
        for entry in sorted_entries(root) {
            let file = entry
                .file_name()
                .map(|n| n.to_string_lossy().to_ascii_lowercase())
                .unwrap_or_default();
            if !entry.is_file() || third_party_name(&file).is_none() || !names_here.insert(file) {
                continue;
            }
            if let Ok(skill) = load_file(&entry, None) {
                if seen.insert(skill.name.clone()) {
                    out.push(skill);
                }
            }
        }
    }
    for (path, rel) in nested_third_party(work_dir) {
        let Ok(content) = std::fs::read_to_string(&path) else {
            continue;
        };
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(base) = third_party_name(&file) else {
            continue;
        };
        let skill = Skill {
            name: format!("{base}:{rel}"),
            content,
            trigger: Trigger::Paths(vec![format!("{rel}/**")]),
            source: Some(path.to_string_lossy().into_owned()),
            description: None,
            is_agentskills_format: false,
            disable_model_invocation: true,
        };
        if seen.insert(skill.name.clone()) {
            out.push(skill);
        }
    }
    for root in &roots {
        let dirs = [
            root.join(".agents/skills"),
            root.join(".openhands/skills"),
            root.join(".openhands/microagents"),
        ];
        merge_first_wins(&dirs, &HashSet::new(), &mut seen, &mut out);
    }
    out
}

/// The user skills (see the module docs): `home` is the user's home directory, `persistence`
/// the persistence directory.
pub fn load_user(home: Option<&Path>, persistence: &Path) -> Vec<Skill> {
    let mut dirs = Vec::new();
    if let Some(h) = home {
        dirs.push(h.join(".agents/skills"));
    }
    dirs.push(persistence.join("skills"));
    dirs.push(persistence.join("microagents"));
    let exclude: HashSet<PathBuf> = [persistence.join("skills/installed")].into();
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    merge_first_wins(&dirs, &exclude, &mut seen, &mut out);
    for skill in installed::Installed::new(persistence).enabled_skills() {
        if seen.insert(skill.name.clone()) {
            out.push(skill);
        }
    }
    out
}

/// The `work_hosts` skill for exposed `WORKER_*` URLs of a sandbox, if any.
pub fn work_hosts(exposed_urls: &[Value]) -> Option<Skill> {
    let hosts: Vec<String> = exposed_urls
        .iter()
        .filter(|u| u["name"].as_str().is_some_and(|n| n.starts_with("WORKER_")))
        .map(|u| format!("* {} (port {})", u["url"].as_str().unwrap_or(""), u["port"]))
        .collect();
    (!hosts.is_empty()).then(|| Skill {
        name: "work_hosts".into(),
        content: format!(
            "The user has access to the following hosts for accessing a web application, each of which has a corresponding port:\n{}",
            hosts.join("\n")
        ),
        trigger: Trigger::Always,
        source: None,
        description: None,
        is_agentskills_format: false,
        disable_model_invocation: false,
    })
}

/// Merges `later` into `skills`: a skill of a known name replaces it in place, a new one is
/// appended (the reference's precedence: later tiers win, first position kept).
pub fn merge(skills: &mut Vec<Skill>, later: Vec<Skill>) {
    for skill in later {
        match skills.iter_mut().find(|s| s.name == skill.name) {
            Some(slot) => *slot = skill,
            None => skills.push(skill),
        }
    }
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
    fn project_skills_in_the_reference_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        write(&p.join("AGENTS.md"), "# Project rules\nAlways run tests.\n");
        write(
            &p.join(".openhands/skills/foo.md"),
            "---\nname: foo\ntriggers:\n  - foo\n  - foobar\n---\nFoo skill body.\n",
        );
        write(
            &p.join(".agents/skills/bar/SKILL.md"),
            "---\nname: bar\ndescription: Bar does bar things.\n---\n# Bar\nBar skill body.\n",
        );
        write(
            &p.join(".openhands/microagents/x.md"),
            "---\nname: x\ntriggers:\n- /xtask\n---\nLegacy microagent x.\n",
        );
        write(&p.join("sub/AGENTS.md"), "nested rules\n");
        let infos: Vec<Value> = load_project(p).iter().map(Skill::info).collect();
        let names: Vec<&str> = infos.iter().map(|i| i["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["agents", "agents:sub", "bar", "foo", "x"]);
        assert_eq!(infos[0]["content"], "# Project rules\nAlways run tests.\n");
        assert_eq!(infos[0]["type"], "repo");
        assert_eq!(infos[1]["disable_model_invocation"], true);
        assert_eq!(infos[2]["type"], "agentskills");
        assert_eq!(infos[2]["content"], "# Bar\nBar skill body.");
        assert_eq!(infos[2]["description"], "Bar does bar things.");
        assert_eq!(infos[3]["triggers"], json!(["foo", "foobar"]));
        assert_eq!(infos[4]["type"], "knowledge");
    }

    #[test]
    fn later_tiers_replace_in_place() {
        let s = |name: &str, content: &str| Skill {
            name: name.into(),
            content: content.into(),
            trigger: Trigger::Always,
            source: None,
            description: None,
            is_agentskills_format: false,
            disable_model_invocation: false,
        };
        let mut skills = vec![s("a", "1"), s("b", "1")];
        merge(&mut skills, vec![s("c", "2"), s("a", "2")]);
        let got: Vec<(&str, &str)> = skills
            .iter()
            .map(|k| (k.name.as_str(), k.content.as_str()))
            .collect();
        assert_eq!(got, [("a", "2"), ("b", "1"), ("c", "2")]);
    }
}
