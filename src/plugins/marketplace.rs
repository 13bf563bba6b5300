//! Marketplaces: a `marketplace.json` (in `.plugin/` or `.claude-plugin/`) listing plugins and
//! standalone skills. Used by the public catalog (`GET /api/plugins/marketplace`, from the
//! clone of the public extensions repository) and by conversations (the marketplaces an
//! agent registers, for `load_plugin` and auto-loading). Blocking: call from
//! `spawn_blocking`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::load::{self, LoadError};
use super::pyfmt;
use super::source;

/// The public extensions repository.
pub const PUBLIC_REPO: &str = "https://github.com/OpenHands/extensions";
/// How long a non-empty catalog is reused.
const CATALOG_TTL: Duration = Duration::from_secs(300);

/// Where a marketplace entry's plugin comes from.
#[derive(Debug, Clone)]
pub enum EntrySource {
    /// A path (relative to the marketplace) or URL.
    Text(String),
    /// `{"source": "github"|"url", repo, url, ref, path}`.
    Object {
        kind: String,
        repo: Option<String>,
        url: Option<String>,
        git_ref: Option<String>,
        path: Option<String>,
    },
}

/// One plugin a marketplace lists.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub description: Option<String>,
    pub source: EntrySource,
}

/// A loaded marketplace.
#[derive(Debug, Clone)]
pub struct Marketplace {
    pub path: PathBuf,
    pub plugins: Vec<Entry>,
    /// Standalone skills listed, `(name, source)` (a skills-only folder has these and no
    /// plugins).
    pub skills: Vec<(String, String)>,
}

fn opt_text(o: &Map<String, Value>, k: &str) -> Option<String> {
    o.get(k).and_then(Value::as_str).map(str::to_string)
}

type Issue = (String, &'static str, &'static str, Value);

fn check_text(o: &Map<String, Value>, loc: &str, key: &str, required: bool, out: &mut Vec<Issue>) {
    let at = if loc.is_empty() {
        key.to_string()
    } else {
        format!("{loc}.{key}")
    };
    match o.get(key) {
        None if required => out.push((at, "missing", "Field required", Value::Object(o.clone()))),
        Some(v) if !v.is_string() && (!v.is_null() || required) => out.push((
            at,
            "string_type",
            "Input should be a valid string",
            v.clone(),
        )),
        _ => {}
    }
}

/// Reads a marketplace document (`path` is the marketplace directory).
pub fn from_value(data: &Value, path: &Path) -> Result<Marketplace, String> {
    let mut issues: Vec<Issue> = Vec::new();
    let Some(o) = data.as_object() else {
        return Err(pyfmt::validation_errors(
            "Marketplace",
            &[(
                String::new(),
                "model_type",
                "Input should be a valid dictionary or instance of Marketplace",
                data.clone(),
            )],
        ));
    };
    check_text(o, "", "name", true, &mut issues);
    match o.get("owner") {
        None => issues.push(("owner".into(), "missing", "Field required", data.clone())),
        Some(Value::Object(owner)) => check_text(owner, "owner", "name", true, &mut issues),
        Some(v) => issues.push((
            "owner".into(),
            "model_type",
            "Input should be a valid dictionary or instance of MarketplaceOwner",
            v.clone(),
        )),
    }
    let mut plugins = Vec::new();
    for (i, p) in o
        .get("plugins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let loc = format!("plugins.{i}");
        let Some(e) = p.as_object() else {
            issues.push((
                loc,
                "model_type",
                "Input should be a valid dictionary or instance of MarketplacePluginEntry",
                p.clone(),
            ));
            continue;
        };
        check_text(e, &loc, "name", true, &mut issues);
        check_text(e, &loc, "description", false, &mut issues);
        let src = match e.get("source") {
            Some(Value::String(s)) => Some(EntrySource::Text(s.clone())),
            Some(Value::Object(s)) => {
                let kind = opt_text(s, "source");
                let (repo, url) = (opt_text(s, "repo"), opt_text(s, "url"));
                match kind.as_deref() {
                    None => {
                        issues.push((
                            format!("{loc}.source.source"),
                            "missing",
                            "Field required",
                            Value::Object(s.clone()),
                        ));
                        None
                    }
                    Some("github") if repo.is_none() => {
                        issues.push((
                            format!("{loc}.source"),
                            "value_error",
                            "Value error, GitHub source requires 'repo' field",
                            Value::Object(s.clone()),
                        ));
                        None
                    }
                    Some("url") if url.is_none() => {
                        issues.push((
                            format!("{loc}.source"),
                            "value_error",
                            "Value error, URL source requires 'url' field",
                            Value::Object(s.clone()),
                        ));
                        None
                    }
                    Some(k) => Some(EntrySource::Object {
                        kind: k.to_string(),
                        repo,
                        url,
                        git_ref: opt_text(s, "ref"),
                        path: opt_text(s, "path"),
                    }),
                }
            }
            None => {
                issues.push((
                    format!("{loc}.source"),
                    "missing",
                    "Field required",
                    p.clone(),
                ));
                None
            }
            Some(v) => {
                issues.push((
                    format!("{loc}.source"),
                    "string_type",
                    "Input should be a valid string",
                    v.clone(),
                ));
                None
            }
        };
        if let (Some(source), Some(name)) = (src, opt_text(e, "name")) {
            plugins.push(Entry {
                name,
                description: opt_text(e, "description"),
                source,
            });
        }
    }
    let mut skills = Vec::new();
    for (i, e) in o
        .get("skills")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let loc = format!("skills.{i}");
        let Some(e) = e.as_object() else {
            issues.push((
                loc,
                "model_type",
                "Input should be a valid dictionary or instance of MarketplaceEntry",
                e.clone(),
            ));
            continue;
        };
        check_text(e, &loc, "name", true, &mut issues);
        check_text(e, &loc, "source", true, &mut issues);
        if let (Some(n), Some(src)) = (opt_text(e, "name"), opt_text(e, "source")) {
            skills.push((n, src));
        }
    }
    if !issues.is_empty() {
        return Err(pyfmt::validation_errors("Marketplace", &issues));
    }
    Ok(Marketplace {
        path: path.to_path_buf(),
        plugins,
        skills,
    })
}

/// `Marketplace.load`: the manifest in `.plugin/` or `.claude-plugin/` of `dir`.
pub fn load(dir: &Path) -> Result<Marketplace, LoadError> {
    let dir = source::resolve(dir);
    if !dir.is_dir() {
        return Err(LoadError::NotFound(format!(
            "Marketplace directory not found: {}",
            dir.display()
        )));
    }
    let Some(path) = [".plugin", ".claude-plugin"]
        .iter()
        .map(|d| dir.join(d).join("marketplace.json"))
        .find(|p| p.exists())
    else {
        return Err(LoadError::NotFound(format!(
            "Marketplace manifest not found. Expected marketplace.json in .plugin or .claude-plugin directory under {}",
            dir.display()
        )));
    };
    let text = std::fs::read_to_string(&path).map_err(|e| LoadError::Invalid(e.to_string()))?;
    let data = pyfmt::parse_json(&text)
        .map_err(|e| LoadError::Invalid(format!("Invalid JSON in {}: {e}", path.display())))?;
    from_value(&data, &dir).map_err(LoadError::Invalid)
}

impl Marketplace {
    /// The plugin entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.plugins.iter().find(|p| p.name == name)
    }

    /// `(source, ref, repo_path)` to fetch an entry from: object sources as they say,
    /// absolute paths and URLs as they are, other paths under the marketplace directory.
    pub fn resolve(&self, e: &Entry) -> Result<(String, Option<String>, Option<String>), String> {
        match &e.source {
            EntrySource::Object {
                kind,
                repo,
                url,
                git_ref,
                path,
            } => match (kind.as_str(), repo, url) {
                ("github", Some(repo), _) => {
                    Ok((format!("github:{repo}"), git_ref.clone(), path.clone()))
                }
                ("url", _, Some(url)) => Ok((url.clone(), git_ref.clone(), path.clone())),
                _ => Err(format!(
                    "Invalid plugin source for '{}': source type '{kind}' is missing required field",
                    e.name
                )),
            },
            EntrySource::Text(s) if s.starts_with('/') || s.starts_with('~') || s.contains("://") => {
                Ok((s.clone(), None, None))
            }
            EntrySource::Text(s) => {
                let rel = s.trim_start_matches(['.', '/']);
                Ok((self.path.join(rel).to_string_lossy().into_owned(), None, None))
            }
        }
    }
}

/// A true plugin of the public catalog: a source under `./plugins/` (or an object source
/// whose path is under `plugins/`).
fn is_true_plugin(e: &Entry) -> bool {
    match &e.source {
        EntrySource::Text(s) => s.starts_with("./plugins/"),
        EntrySource::Object { path, .. } => {
            path.as_deref().is_some_and(|p| p.starts_with("plugins/"))
        }
    }
}

/// The catalog entries (with `installed: false`) of the public repository clone under
/// `persistence`; empty when there is no usable clone.
fn fetch_catalog(persistence: &Path) -> Vec<Value> {
    let clone = persistence.join("cache/skills/public-skills");
    let git_ref = std::env::var("EXTENSIONS_REF").unwrap_or_else(|_| "main".into());
    if !source::clone_or_update(PUBLIC_REPO, &clone, Some(&git_ref), true, false) {
        tracing::warn!("failed to access the public extensions repository");
        return Vec::new();
    }
    let market = match load(&clone) {
        Ok(m) => m,
        Err(e) => {
            let fallback = clone.join("marketplaces/default.json");
            let data = std::fs::read_to_string(&fallback)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok());
            match data.map(|d| from_value(&d, &source::resolve(&clone))) {
                Some(Ok(m)) => m,
                _ => {
                    tracing::warn!(error = %e, "the public marketplace cannot be read");
                    return Vec::new();
                }
            }
        }
    };
    let data_root = persistence.join("plugin-data");
    let mut out = Vec::new();
    for e in market.plugins.iter().filter(|e| is_true_plugin(e)) {
        let Ok((src, git_ref, repo_path)) = market.resolve(e) else {
            continue;
        };
        let mut entry = json!({
            "name": e.name, "description": e.description, "source": src, "ref": git_ref,
            "repo_path": repo_path, "installed": false, "path": null, "skills": null, "files": null,
        });
        if git_ref.is_none() && repo_path.is_none() && Path::new(&src).is_dir() {
            if let Ok(p) = load::load(Path::new(&src), &data_root) {
                entry["path"] = json!(src);
                entry["skills"] = json!(p.skill_summaries());
                entry["files"] = json!(load::list_files(&p.path));
            }
        }
        out.push(entry);
    }
    out
}

/// The last non-empty catalog: persistence directory, when, entries.
type Cached = (PathBuf, Instant, Vec<Value>);
static CATALOG: Mutex<Option<Cached>> = Mutex::new(None);

/// `GET /api/plugins/marketplace`: the public catalog's true plugins (reused for five
/// minutes when non-empty), each marked `installed` when an installed plugin has its name.
pub fn catalog(persistence: &Path, installed: &[String]) -> Vec<Value> {
    let cached = {
        let slot = CATALOG.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref()
            .filter(|(root, at, _)| root == persistence && at.elapsed() < CATALOG_TTL)
            .map(|(_, _, entries)| entries.clone())
    };
    let entries = match cached {
        Some(e) => e,
        None => {
            let fresh = fetch_catalog(persistence);
            if !fresh.is_empty() {
                *CATALOG.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((persistence.to_path_buf(), Instant::now(), fresh.clone()));
            }
            fresh
        }
    };
    entries
        .into_iter()
        .map(|mut e| {
            let name = e["name"].as_str().unwrap_or_default().to_string();
            e["installed"] = json!(installed.contains(&name));
            e
        })
        .collect()
}

/// A marketplace an agent registers (`AgentContext.registered_marketplaces`).
#[derive(Debug, Clone)]
pub struct Registration {
    pub name: String,
    pub source: String,
    pub git_ref: Option<String>,
    pub repo_path: Option<String>,
    /// `true`/`false`, or the names it loads.
    pub auto_load: Result<bool, Vec<String>>,
}

impl Registration {
    /// Reads one registration (`None` when it is not one).
    pub fn from_value(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        let auto_load = match o.get("auto_load") {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Array(a)) => Err(a
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()),
            Some(_) => Ok(false),
        };
        Some(Registration {
            name: opt_text(o, "name")?,
            source: opt_text(o, "source")?,
            git_ref: opt_text(o, "ref"),
            repo_path: opt_text(o, "repo_path"),
            auto_load,
        })
    }

    /// Whether this registration loads `plugin` at conversation start.
    pub fn auto_loads(&self, plugin: &str) -> bool {
        match &self.auto_load {
            Ok(b) => *b,
            Err(names) => names.iter().any(|n| n == plugin),
        }
    }
}

/// Why a plugin reference does not resolve: `NotFound` answers 404, `Bad` 400.
#[derive(Debug, Clone)]
pub enum ResolveError {
    NotFound(String),
    Bad(String),
}

/// A plugin to fetch: source, ref, repo path.
pub type Spec = (String, Option<String>, Option<String>);

/// The registered marketplaces of a conversation, fetched on first use.
pub struct Registry {
    regs: Vec<Registration>,
    fetched: HashMap<String, Result<Marketplace, String>>,
    cache_dir: PathBuf,
}

impl Registry {
    /// Marketplaces are fetched into `cache_dir` (`<persistence>/cache/plugins`).
    pub fn new(regs: Vec<Registration>, cache_dir: PathBuf) -> Self {
        Registry {
            regs,
            fetched: HashMap::new(),
            cache_dir,
        }
    }

    /// The registrations.
    pub fn registrations(&self) -> &[Registration] {
        &self.regs
    }

    /// The marketplace registered as `name`, fetched (once).
    pub fn marketplace(&mut self, name: &str) -> Result<Marketplace, String> {
        if let Some(r) = self.fetched.get(name) {
            return r.clone();
        }
        let Some(reg) = self.regs.iter().find(|r| r.name == name).cloned() else {
            return Err(format!("Marketplace '{name}' is not registered"));
        };
        let result = source::fetch(
            &reg.source,
            reg.git_ref.as_deref(),
            reg.repo_path.as_deref(),
            &self.cache_dir,
            true,
        )
        .and_then(|f| match load(&f.path) {
            Ok(m) => Ok(m),
            Err(LoadError::NotFound(missing)) => {
                let skills = skill_folders(&f.path);
                if skills.is_empty() {
                    Err(format!(
                        "{missing}, and no skill folders (<name>/SKILL.md) were found there"
                    ))
                } else {
                    Ok(Marketplace {
                        path: source::resolve(&f.path),
                        plugins: Vec::new(),
                        skills,
                    })
                }
            }
            Err(LoadError::Invalid(m)) => Err(m),
        });
        self.fetched.insert(name.to_string(), result.clone());
        result
    }

    /// Resolves `plugin` or `plugin@marketplace` to what to fetch.
    pub fn resolve(&mut self, plugin_ref: &str) -> Result<Spec, ResolveError> {
        let (plugin, market) = match plugin_ref.rsplit_once('@') {
            None if plugin_ref.is_empty() => {
                return Err(ResolveError::Bad(
                    "Plugin reference must not be empty".into(),
                ))
            }
            None => (plugin_ref, None),
            Some((p, m)) if p.is_empty() || m.is_empty() => {
                return Err(ResolveError::Bad(
                    "Plugin reference must use 'plugin-name@marketplace-name'".into(),
                ))
            }
            Some((p, m)) => (p, Some(m)),
        };
        if let Some(m) = market {
            if !self.regs.iter().any(|r| r.name == m) {
                return Err(ResolveError::NotFound(format!(
                    "Marketplace '{m}' is not registered"
                )));
            }
            let market = self.marketplace(m).map_err(ResolveError::Bad)?;
            let entry = market.get(plugin).ok_or_else(|| {
                ResolveError::NotFound(format!("Plugin '{plugin}' not found in marketplace '{m}'"))
            })?;
            return market.resolve(entry).map_err(ResolveError::Bad);
        }
        let names: Vec<String> = self.regs.iter().map(|r| r.name.clone()).collect();
        let mut matches = Vec::new();
        let mut failures = Vec::new();
        let mut searched = 0;
        for name in names {
            let market = match self.marketplace(&name) {
                Ok(m) => m,
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    continue;
                }
            };
            searched += 1;
            if let Some(entry) = market.get(plugin) {
                matches.push((name, market.resolve(entry).map_err(ResolveError::Bad)?));
            }
        }
        match matches.len() {
            0 if !failures.is_empty() && searched == 0 => Err(ResolveError::NotFound(format!(
                "Plugin '{plugin}' not found; marketplace fetch failed: {}",
                failures.join("; ")
            ))),
            0 => Err(ResolveError::NotFound(format!(
                "Plugin '{plugin}' not found in any registered marketplace"
            ))),
            1 => Ok(matches.remove(0).1),
            _ => Err(ResolveError::Bad(format!(
                "Plugin '{plugin}' is ambiguous; found in multiple marketplaces: {}. Use '{plugin}@<marketplace-name>'.",
                matches.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

/// The `<name>/SKILL.md` folders of a plain skills folder (in `skills/`, `.skills/`, or
/// `dir`) as `(skill name, "./<relative folder>")`, the first of a name kept.
fn skill_folders(dir: &Path) -> Vec<(String, String)> {
    let dir = source::resolve(dir);
    let roots: Vec<PathBuf> = [dir.join("skills"), dir.join(".skills")]
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    let roots = if roots.is_empty() {
        vec![dir.clone()]
    } else {
        roots
    };
    let mut out: Vec<(String, String)> = Vec::new();
    for root in roots {
        let mut subs: Vec<PathBuf> = std::fs::read_dir(&root)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        subs.sort();
        for sub in subs {
            if !sub.is_dir() || !source::resolves_within(&sub, &dir) {
                continue;
            }
            let Some(skill) = load::load_skill_dir(&sub) else {
                continue;
            };
            let rel = sub
                .strip_prefix(&dir)
                .unwrap_or(&sub)
                .to_string_lossy()
                .into_owned();
            if !out.iter().any(|(n, _)| *n == skill.name) {
                out.push((skill.name, format!("./{rel}")));
            }
        }
    }
    out
}

impl Marketplace {
    /// The standalone skills `reg` auto-loads, loaded from their folders (local sources only;
    /// those that cannot be read are skipped).
    pub fn standalone_skills(&self, reg: &Registration) -> Vec<load::PluginSkill> {
        let mut out = Vec::new();
        for (name, src) in &self.skills {
            if !reg.auto_loads(name) {
                continue;
            }
            let dir = if let Some(p) = src.strip_prefix("file://") {
                PathBuf::from(p)
            } else if src.contains("://") {
                tracing::warn!(skill = %name, "remote marketplace skills are not loaded");
                continue;
            } else {
                let p = source::expand_user(src);
                if p.is_absolute() {
                    p
                } else {
                    source::resolve(&self.path.join(p))
                }
            };
            match load::load_skill_dir(&dir) {
                Some(s) => out.push(s),
                None => tracing::warn!(skill = %name, "marketplace skill not loaded"),
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn market(dir: &Path) {
        std::fs::create_dir_all(dir.join(".plugin")).unwrap();
        std::fs::write(
            dir.join(".plugin/marketplace.json"),
            r#"{"name":"m","owner":{"name":"T"},"plugins":[
              {"name":"demo","source":"./plugins/demo","description":"Demo"},
              {"name":"remote","source":{"source":"github","repo":"o/r","path":"plugins/remote","ref":"v1"}},
              {"name":"skill-like","source":"./skills/gamma"}]}"#,
        )
        .unwrap();
    }

    #[test]
    fn references_resolve_against_registered_marketplaces() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("market");
        market(&dir);
        let reg = |name: &str, source: &str| Registration {
            name: name.into(),
            source: source.into(),
            git_ref: None,
            repo_path: None,
            auto_load: Ok(false),
        };
        let mut r = Registry::new(
            vec![
                reg("test-market", dir.to_str().unwrap()),
                reg("broken", &tmp.path().join("missing").to_string_lossy()),
            ],
            tmp.path().join("cache"),
        );
        let (src, git_ref, rp) = r.resolve("demo").unwrap();
        assert_eq!(
            src,
            source::resolve(&dir).join("plugins/demo").to_string_lossy()
        );
        assert_eq!((git_ref, rp), (None, None));
        let remote = r.resolve("remote@test-market").unwrap();
        assert_eq!(
            remote,
            (
                "github:o/r".into(),
                Some("v1".into()),
                Some("plugins/remote".into())
            )
        );
        let nf = |e: Result<Spec, ResolveError>| match e {
            Err(ResolveError::NotFound(m)) => m,
            other => panic!("{other:?}"),
        };
        let bad = |e: Result<Spec, ResolveError>| match e {
            Err(ResolveError::Bad(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            nf(r.resolve("nope")),
            "Plugin 'nope' not found in any registered marketplace"
        );
        assert_eq!(
            nf(r.resolve("x@nomarket")),
            "Marketplace 'nomarket' is not registered"
        );
        assert_eq!(
            nf(r.resolve("nope@test-market")),
            "Plugin 'nope' not found in marketplace 'test-market'"
        );
        assert_eq!(
            bad(r.resolve("@test-market")),
            "Plugin reference must use 'plugin-name@marketplace-name'"
        );
        assert_eq!(bad(r.resolve("")), "Plugin reference must not be empty");
        assert!(bad(r.resolve("demo@broken")).starts_with("Local plugin path does not exist"));
    }
}
