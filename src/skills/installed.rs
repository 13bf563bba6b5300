//! Installed skills: copies under `<persistence>/skills/installed/<name>/` with their metadata
//! in `.installed.json` (`{"extensions": {name: {...}}}`), as the reference keeps them.
//! A source is a local directory or a git repository (`github:owner/repo[/path]`, or a git
//! URL), optionally with `repo_path` inside it. Blocking: call from `spawn_blocking`.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::persist::ScratchDir;

use super::Skill;

/// What an installed-skill operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("Skill '{0}' is not installed")]
    NotInstalled(String),
    #[error("Skill already installed. Use force=true to overwrite.")]
    Exists,
    #[error("Failed to fetch skill source. Check that the source is valid.")]
    Fetch,
    #[error("Invalid skill. Ensure the source contains a valid SKILL.md.")]
    Invalid,
    #[error("Failed to fetch the source of skill '{0}'. The installed copy was kept.")]
    RefreshFetch(String),
    #[error(
        "The source of skill '{0}' no longer holds a valid skill. The installed copy was kept."
    )]
    RefreshInvalid(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The installed skills of one persistence directory.
#[derive(Debug, Clone)]
pub struct Installed {
    dir: PathBuf,
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        if entry.file_type()?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// A fetched source: the directory holding the skill, and the clone to remove afterwards.
struct Fetched {
    dir: PathBuf,
    scratch: Option<ScratchDir>,
}

/// Clones `url` (at `git_ref`) into a scratch directory under `parent`; the child runs in its
/// own process group.
fn clone(url: &str, git_ref: Option<&str>, parent: &Path) -> Option<ScratchDir> {
    let scratch = ScratchDir::new(parent.join(format!(".clone-{}", crate::util::hex_id())));
    std::fs::create_dir_all(scratch.path()).ok()?;
    let mut cmd = crate::util::git_command();
    cmd.args(["clone", "--depth", "1", "--quiet"]);
    if let Some(r) = git_ref {
        cmd.args(["--branch", r]);
    }
    cmd.arg(url).arg(scratch.path().join("repo"));
    let ok = cmd.status().is_ok_and(|s| s.success());
    ok.then_some(scratch)
}

fn fetch(
    source: &str,
    git_ref: Option<&str>,
    repo_path: Option<&str>,
    scratch_parent: &Path,
) -> Option<Fetched> {
    let (root, scratch) = if let Some(rest) = source.strip_prefix("github:") {
        let parts: Vec<&str> = rest.splitn(3, '/').collect();
        if parts.len() < 2 {
            return None;
        }
        let url = format!("https://github.com/{}/{}.git", parts[0], parts[1]);
        let tmp = clone(&url, git_ref, scratch_parent)?;
        let mut root = tmp.path().join("repo");
        if let Some(sub) = parts.get(2) {
            root = root.join(sub);
        }
        (root, Some(tmp))
    } else if source.contains("://") || source.starts_with("git@") {
        let tmp = clone(source, git_ref, scratch_parent)?;
        (tmp.path().join("repo"), Some(tmp))
    } else {
        (PathBuf::from(source), None)
    };
    let dir = match repo_path {
        Some(p) => root.join(p),
        None => root,
    };
    dir.is_dir().then_some(Fetched { dir, scratch })
}

/// The skill a fetched directory holds (its `SKILL.md`).
fn skill_of(dir: &Path) -> Option<Skill> {
    let md = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.eq_ignore_ascii_case("SKILL.md"))
        })?;
    let skill = super::load_file(&md, None).ok()?;
    valid_name(&skill.name).then_some(skill)
}

/// Whether `name` is a valid installed-skill name (`^[a-z0-9]+(-[a-z0-9]+)*$`, ≤ 255).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.split('-').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

impl Installed {
    /// The installed skills under `<persistence>/skills/installed`.
    pub fn new(persistence: &Path) -> Self {
        Installed {
            dir: persistence.join("skills").join("installed"),
        }
    }

    fn meta_path(&self) -> PathBuf {
        self.dir.join(".installed.json")
    }

    fn read(&self) -> Map<String, Value> {
        std::fs::read(self.meta_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("extensions").and_then(Value::as_object).cloned())
            .unwrap_or_default()
    }

    fn write(&self, entries: Map<String, Value>) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(&json!({ "extensions": entries }))
            .map_err(std::io::Error::other)?;
        crate::persist::write_atomic(&self.meta_path(), &bytes)
    }

    /// `InstalledSkillResponse` of one entry.
    fn response(entry: &Value) -> Value {
        json!({
            "name": entry["name"], "version": entry["version"], "description": entry["description"],
            "enabled": entry["enabled"], "source": entry["source"],
            "resolved_ref": entry["resolved_ref"], "repo_path": entry["repo_path"],
            "installed_at": entry["installed_at"], "install_path": entry["install_path"],
        })
    }

    /// Every installed skill, in installation order.
    pub fn list(&self) -> Vec<Value> {
        self.read().values().map(Self::response).collect()
    }

    /// One installed skill.
    pub fn get(&self, name: &str) -> Result<Value, InstallError> {
        self.read()
            .get(name)
            .map(Self::response)
            .ok_or_else(|| InstallError::NotInstalled(name.into()))
    }

    /// Installs the skill `source` holds.
    pub fn install(
        &self,
        source: &str,
        git_ref: Option<&str>,
        repo_path: Option<&str>,
        force: bool,
    ) -> Result<Value, InstallError> {
        std::fs::create_dir_all(&self.dir)?;
        let fetched = fetch(source, git_ref, repo_path, &self.dir).ok_or(InstallError::Fetch)?;
        let skill = skill_of(&fetched.dir).ok_or(InstallError::Invalid)?;
        let mut entries = self.read();
        if entries.contains_key(&skill.name) && !force {
            return Err(InstallError::Exists);
        }
        let enabled = entries
            .get(&skill.name)
            .and_then(|e| e["enabled"].as_bool())
            .unwrap_or(true);
        let entry = self.place(&skill, &fetched.dir, source, git_ref, repo_path, enabled)?;
        drop(fetched.scratch);
        entries.insert(skill.name.clone(), entry.clone());
        self.write(entries)?;
        Ok(Self::response(&entry))
    }

    /// Copies the skill into place (replacing an older copy only once the new one is whole).
    fn place(
        &self,
        skill: &Skill,
        from: &Path,
        source: &str,
        git_ref: Option<&str>,
        repo_path: Option<&str>,
        enabled: bool,
    ) -> Result<Value, InstallError> {
        std::fs::create_dir_all(&self.dir)?;
        let target = self.dir.join(&skill.name);
        let staging = self
            .dir
            .join(format!(".{}.{}", skill.name, crate::util::hex_id()));
        copy_dir(from, &staging)?;
        if target.exists() {
            std::fs::remove_dir_all(&target)?;
        }
        std::fs::rename(&staging, &target)?;
        let now = chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
            .to_string();
        Ok(json!({
            "name": skill.name, "version": "1.0.0", "description": skill.description,
            "enabled": enabled, "source": source, "requested_ref": git_ref,
            "resolved_ref": Value::Null, "repo_path": repo_path, "installed_at": now,
            "install_path": target.to_string_lossy(),
        }))
    }

    /// Enables or disables one installed skill.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), InstallError> {
        let mut entries = self.read();
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| InstallError::NotInstalled(name.into()))?;
        entry["enabled"] = json!(enabled);
        self.write(entries)?;
        Ok(())
    }

    /// Removes one installed skill and its files.
    pub fn uninstall(&self, name: &str) -> Result<(), InstallError> {
        let mut entries = self.read();
        if entries.remove(name).is_none() {
            return Err(InstallError::NotInstalled(name.into()));
        }
        let target = self.dir.join(name);
        if target.exists() {
            std::fs::remove_dir_all(&target)?;
        }
        self.write(entries)?;
        Ok(())
    }

    /// Fetches an installed skill's source again; the old copy stays when that fails.
    pub fn refresh(&self, name: &str) -> Result<Value, InstallError> {
        let mut entries = self.read();
        let entry = entries
            .get(name)
            .cloned()
            .ok_or_else(|| InstallError::NotInstalled(name.into()))?;
        let text = |k: &str| entry[k].as_str().map(str::to_string);
        let source = text("source").unwrap_or_default();
        let (git_ref, repo_path) = (text("requested_ref"), text("repo_path"));
        let fetched = fetch(&source, git_ref.as_deref(), repo_path.as_deref(), &self.dir)
            .ok_or_else(|| InstallError::RefreshFetch(name.into()))?;
        let skill = skill_of(&fetched.dir)
            .filter(|s| s.name == name)
            .ok_or_else(|| InstallError::RefreshInvalid(name.into()))?;
        let enabled = entry["enabled"].as_bool().unwrap_or(true);
        let fresh = self.place(
            &skill,
            &fetched.dir,
            &source,
            git_ref.as_deref(),
            repo_path.as_deref(),
            enabled,
        )?;
        entries.insert(name.into(), fresh.clone());
        self.write(entries)?;
        Ok(Self::response(&fresh))
    }

    /// The enabled installed skills, loaded (for the user tier).
    pub fn enabled_skills(&self) -> Vec<Skill> {
        self.read()
            .iter()
            .filter(|(_, e)| e["enabled"].as_bool().unwrap_or(true))
            .filter_map(|(name, _)| skill_of(&self.dir.join(name)))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn install_disable_refresh_uninstall_a_local_skill() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src/my-skill");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("SKILL.md"),
            "---\nname: my-skill\ndescription: Mine.\n---\nDo it.\n",
        )
        .unwrap();
        let installed = Installed::new(&root.path().join("p"));
        let got = installed
            .install(src.to_str().unwrap(), None, None, false)
            .unwrap();
        assert_eq!(got["name"], "my-skill");
        assert_eq!(got["enabled"], true);
        assert!(matches!(
            installed.install(src.to_str().unwrap(), None, None, false),
            Err(InstallError::Exists)
        ));
        assert_eq!(installed.enabled_skills().len(), 1);
        installed.set_enabled("my-skill", false).unwrap();
        assert!(installed.enabled_skills().is_empty());
        assert_eq!(installed.refresh("my-skill").unwrap()["enabled"], false);
        std::fs::remove_dir_all(&src).unwrap();
        assert!(matches!(
            installed.refresh("my-skill"),
            Err(InstallError::RefreshFetch(_))
        ));
        installed.uninstall("my-skill").unwrap();
        assert!(installed.list().is_empty());
        assert!(matches!(
            installed.install("/nonexistent", None, None, false),
            Err(InstallError::Fetch)
        ));
        assert!(valid_name("deep-skill") && !valid_name("Bad_Name") && !valid_name("a--b"));
    }
}
