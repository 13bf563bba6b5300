//! Installed plugins: copies under `<persistence>/plugins/installed/<name>/` with their
//! metadata in `.installed.json` (`{"extensions": {name: {...}}}`), kept as the reference
//! keeps them. Listing, enabling and loading first reconcile the metadata with the
//! directories (entries whose directory is gone are dropped; valid untracked directories are
//! adopted with `source: "local"`). Blocking: call from `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use crate::persist::ScratchDir;

use super::load::{self, LoadError, Plugin};
use super::source::{self, Kind};
use super::PluginError;

/// Serialises changes to the metadata file (the reference has no lock; concurrent requests
/// here must not lose each other's writes).
static STORE: Mutex<()> = Mutex::new(());

fn store_lock() -> std::sync::MutexGuard<'static, ()> {
    STORE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `name` is a valid installed name: `^[a-z0-9]+(?:-[a-z0-9]+)*$`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('-').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Python's `datetime.now(UTC).isoformat()`.
fn now_iso() -> String {
    let now = chrono::Utc::now();
    if now.timestamp_subsec_micros() == 0 {
        now.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        now.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

/// One metadata entry in the reference's field order.
fn entry(
    plugin: &Plugin,
    enabled: bool,
    source: &str,
    requested_ref: Option<&str>,
    resolved_ref: Option<&str>,
    repo_path: Option<&str>,
    install_path: &Path,
) -> Value {
    json!({
        "name": plugin.name, "version": plugin.version, "description": plugin.description,
        "enabled": enabled, "source": source, "requested_ref": requested_ref,
        "resolved_ref": resolved_ref, "repo_path": repo_path, "installed_at": now_iso(),
        "install_path": install_path.to_string_lossy(),
    })
}

/// A stored entry validated and put in field order (`None` when invalid).
fn normalize(v: &Value) -> Option<Value> {
    let o = v.as_object()?;
    let text = |k: &str| -> Option<Option<Value>> {
        match o.get(k) {
            None => Some(None),
            Some(Value::String(s)) => Some(Some(json!(s))),
            Some(_) => None,
        }
    };
    let opt = |k: &str| -> Option<Value> {
        match o.get(k) {
            None | Some(Value::Null) => Some(Value::Null),
            Some(Value::String(s)) => Some(json!(s)),
            Some(_) => None,
        }
    };
    let enabled = match o.get("enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return None,
    };
    Some(json!({
        "name": text("name")??,
        "version": text("version")?.unwrap_or(json!("")),
        "description": text("description")?.unwrap_or(json!("")),
        "enabled": enabled,
        "source": text("source")??,
        "requested_ref": opt("requested_ref")?,
        "resolved_ref": opt("resolved_ref")?,
        "repo_path": opt("repo_path")?,
        "installed_at": text("installed_at")?.unwrap_or_else(|| json!(now_iso())),
        "install_path": text("install_path")??,
    }))
}

/// The installed plugins of one persistence directory.
#[derive(Debug, Clone)]
pub struct Installed {
    dir: PathBuf,
    cache: PathBuf,
    data_root: PathBuf,
}

impl Installed {
    /// The store under `<persistence>/plugins/installed`; remote sources are cloned into
    /// `<persistence>/cache/extensions`.
    pub fn new(persistence: &Path) -> Self {
        Installed {
            dir: source::resolve(&persistence.join("plugins").join("installed")),
            cache: persistence.join("cache").join("extensions"),
            data_root: persistence.join("plugin-data"),
        }
    }

    /// The directory holding the installed copies.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn meta_path(&self) -> PathBuf {
        self.dir.join(".installed.json")
    }

    /// The metadata (empty when missing or invalid; legacy `plugins`/`skills` maps merged).
    fn read(&self) -> Map<String, Value> {
        let Ok(bytes) = std::fs::read(self.meta_path()) else {
            return Map::new();
        };
        let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(&bytes) else {
            tracing::warn!("installed plugin metadata is not a JSON object; treating it as empty");
            return Map::new();
        };
        let mut merged = Map::new();
        let mut legacy = false;
        for key in ["plugins", "skills"] {
            if let Some(Value::Object(m)) = doc.get(key) {
                legacy = true;
                merged.extend(m.clone());
            }
        }
        let explicit = match doc.get("extensions") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) if legacy => Map::new(),
            Some(_) => return Map::new(),
        };
        merged.extend(explicit);
        let mut out = Map::new();
        for (k, v) in merged {
            match normalize(&v) {
                Some(e) => {
                    out.insert(k, e);
                }
                None => {
                    tracing::warn!("invalid installed plugin metadata; treating it as empty");
                    return Map::new();
                }
            }
        }
        out
    }

    fn save(&self, entries: &Map<String, Value>) -> std::io::Result<()> {
        crate::persist::write_pretty_json(&self.meta_path(), &json!({ "extensions": entries }))
    }

    /// Drops entries whose directory is gone and adopts valid untracked directories.
    fn sync(&self, entries: &mut Map<String, Value>) {
        entries.retain(|name, _| valid_name(name) && self.dir.join(name).exists());
        let mut children: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        children.sort();
        for item in children {
            let name = item
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !item.is_dir()
                || name.starts_with('.')
                || entries.contains_key(&name)
                || !valid_name(&name)
            {
                continue;
            }
            let Ok(plugin) = load::load(&item, &self.data_root) else {
                continue;
            };
            if plugin.name != name {
                tracing::warn!(dir = %name, manifest = %plugin.name, "skipping an installed plugin whose manifest names another plugin");
                continue;
            }
            let e = entry(&plugin, true, "local", None, None, None, &item);
            entries.insert(name, e);
        }
    }

    /// Every installed plugin (reconciled first), in installation order.
    pub fn list(&self) -> std::io::Result<Vec<Value>> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let _g = store_lock();
        let mut entries = self.read();
        self.sync(&mut entries);
        self.save(&entries)?;
        Ok(entries.into_iter().map(|(_, v)| v).collect())
    }

    /// One tracked plugin whose directory exists (no reconciliation).
    pub fn get(&self, name: &str) -> Option<Value> {
        let entry = self.read().get(name).cloned()?;
        self.dir.join(name).exists().then_some(entry)
    }

    /// Enables or disables an installed plugin; false when it is not installed.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> std::io::Result<bool> {
        if !self.dir.exists() {
            return Ok(false);
        }
        let _g = store_lock();
        let mut entries = self.read();
        self.sync(&mut entries);
        let found = entries.contains_key(name) && self.dir.join(name).exists();
        if let Some(e) = entries.get_mut(name).filter(|_| found) {
            e["enabled"] = json!(enabled);
        }
        self.save(&entries)?;
        Ok(found)
    }

    /// Removes a tracked plugin and its copy; false when it is not tracked.
    pub fn uninstall(&self, name: &str) -> std::io::Result<bool> {
        let _g = store_lock();
        let mut entries = self.read();
        if entries.shift_remove(name).is_none() {
            self.save(&entries)?;
            return Ok(false);
        }
        let path = self.dir.join(name);
        if path.symlink_metadata().is_ok() {
            std::fs::remove_dir_all(&path)?;
        }
        self.save(&entries)?;
        Ok(true)
    }

    /// Installs the plugin `source` holds (see the reference's `InstallationManager.install`);
    /// `root_name` names a whole-repository source when it is loaded (refresh keeps the
    /// installed name).
    pub fn install(
        &self,
        src: &str,
        git_ref: Option<&str>,
        repo_path: Option<&str>,
        force: bool,
        root_name: Option<&str>,
    ) -> Result<Value, PluginError> {
        let fetched = source::fetch(src, git_ref, repo_path, &self.cache, false).map_err(|e| {
            tracing::info!(error = %e, "plugin source could not be fetched");
            PluginError::Fetch
        })?;
        let plugin = self
            .load_fetched(&fetched.path, src, repo_path, root_name)
            .map_err(|e| match e {
                LoadError::NotFound(m) => PluginError::Unhandled(m),
                LoadError::Invalid(m) => {
                    tracing::info!(error = %m, "not a valid plugin");
                    PluginError::Invalid
                }
            })?;
        if !valid_name(&plugin.name) {
            return Err(PluginError::Invalid);
        }
        let target = self.dir.join(&plugin.name);
        if target.exists() && !force {
            return Err(PluginError::Exists);
        }
        std::fs::create_dir_all(&self.dir)?;
        let staging = self
            .dir
            .join(format!(".{}.{}.tmp", plugin.name, crate::util::hex_id()));
        if let Err(e) = copy_tree(&fetched.path, &staging, 0) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e.into());
        }
        let _g = store_lock();
        if target.symlink_metadata().is_ok() {
            std::fs::remove_dir_all(&target)?;
        }
        std::fs::rename(&staging, &target)?;
        let mut entries = self.read();
        let enabled = entries
            .get(&plugin.name)
            .and_then(|e| e["enabled"].as_bool())
            .unwrap_or(true);
        let e = entry(
            &plugin,
            enabled,
            src,
            git_ref,
            fetched.resolved_ref.as_deref(),
            repo_path,
            &target,
        );
        entries.insert(plugin.name.clone(), e.clone());
        self.save(&entries)?;
        Ok(e)
    }

    /// A remote source without `repo_path` is the root of its clone: it is loaded from a copy
    /// named after the repository (or `root_name`), as a local directory would be.
    fn load_fetched(
        &self,
        path: &Path,
        src: &str,
        repo_path: Option<&str>,
        root_name: Option<&str>,
    ) -> Result<Plugin, LoadError> {
        let (kind, url) = source::parse(src).map_err(LoadError::Invalid)?;
        if repo_path.is_some_and(|r| !r.is_empty()) || kind == Kind::Local {
            return load::load(path, &self.data_root);
        }
        let staging = ScratchDir::new(std::env::temp_dir().join(format!(
            "agent-server-plugin-load-{}",
            crate::util::hex_id()
        )));
        let name = root_name
            .map(str::to_string)
            .unwrap_or_else(|| source::extract_repo_name(&url));
        let copy = staging.path().join(name);
        copy_tree_links(path, &copy).map_err(|e| LoadError::Invalid(e.to_string()))?;
        load::load(&copy, &self.data_root)
    }

    /// Fetches an installed plugin's source again (latest, no ref) and reinstalls it; the old
    /// copy stays when that fails.
    pub fn refresh(&self, name: &str) -> Result<Value, PluginError> {
        let current = self
            .get(name)
            .ok_or_else(|| PluginError::NotInstalled(name.into()))?;
        let src = current["source"].as_str().unwrap_or_default().to_string();
        let repo_path = current["repo_path"].as_str().map(str::to_string);
        self.install(&src, None, repo_path.as_deref(), true, Some(name))
            .map_err(|e| match e {
                PluginError::Fetch => PluginError::RefreshFetch(name.into()),
                PluginError::Invalid => PluginError::RefreshInvalid(name.into()),
                other => other,
            })
    }

    /// The enabled installed plugins, loaded; an error when one of them does not load.
    pub fn enabled_plugins(&self) -> Result<Vec<Plugin>, String> {
        let entries = self.list().map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for e in entries {
            if e["enabled"].as_bool() != Some(true) {
                continue;
            }
            let path = self.dir.join(e["name"].as_str().unwrap_or_default());
            if path.exists() {
                out.push(load::load(&path, &self.data_root).map_err(|e| e.to_string())?);
            }
        }
        Ok(out)
    }

    /// `InstalledPluginResponse` of an entry: its fields and, when the copy loads, its skills
    /// and files (else both null).
    pub fn response(&self, e: &Value) -> Value {
        let path = PathBuf::from(e["install_path"].as_str().unwrap_or_default());
        let (skills, files) = match load::load(&path, &self.data_root) {
            Ok(p) => (json!(p.skill_summaries()), json!(load::list_files(&p.path))),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "installed plugin does not load");
                (Value::Null, Value::Null)
            }
        };
        json!({
            "name": e["name"], "version": e["version"], "description": e["description"],
            "enabled": e["enabled"], "source": e["source"], "resolved_ref": e["resolved_ref"],
            "repo_path": e["repo_path"], "installed_at": e["installed_at"],
            "install_path": e["install_path"], "skills": skills, "files": files,
        })
    }
}

/// Copies a directory tree, following symlinks (as `shutil.copytree` does by default).
fn copy_tree(from: &Path, to: &Path, depth: usize) -> std::io::Result<()> {
    if depth > 64 {
        return Err(std::io::Error::other(format!(
            "directory tree too deep at {}",
            from.display()
        )));
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if src.is_dir() {
            copy_tree(&src, &dst, depth + 1)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Copies a directory tree without `.git`, keeping symlinks as links.
pub fn copy_tree_links(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_name() == ".git" {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_dir() {
            copy_tree_links(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn plugin_dir(root: &Path, name: &str) -> PathBuf {
        let dir = root.join("src").join(name);
        std::fs::create_dir_all(dir.join(".plugin")).unwrap();
        std::fs::write(
            dir.join(".plugin/plugin.json"),
            format!(r#"{{"name":"{name}","version":"0.2.0","description":"D"}}"#),
        )
        .unwrap();
        dir
    }

    #[test]
    fn install_list_disable_refresh_uninstall() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path().join("p");
        let src = plugin_dir(root.path(), "demo-plugin");
        let store = Installed::new(&p);
        assert!(store.list().unwrap().is_empty());
        let got = store
            .install(src.to_str().unwrap(), Some("v1"), None, false, None)
            .unwrap();
        assert_eq!(got["requested_ref"], "v1");
        assert_eq!(got["resolved_ref"], Value::Null);
        assert!(matches!(
            store.install(src.to_str().unwrap(), None, None, false, None),
            Err(PluginError::Exists)
        ));
        // An untracked valid directory is adopted, an invalid one ignored.
        plugin_dir(&p.join("plugins/installed"), "x");
        std::fs::rename(
            p.join("plugins/installed/src/x"),
            p.join("plugins/installed/manual-plug"),
        )
        .unwrap();
        std::fs::remove_dir_all(p.join("plugins/installed/src")).unwrap();
        assert!(store.get("manual-plug").is_none());
        let names: Vec<Value> = store
            .list()
            .unwrap()
            .iter()
            .map(|e| e["name"].clone())
            .collect();
        assert_eq!(
            names,
            [json!("demo-plugin")],
            "manifest names another plugin"
        );
        assert!(store.set_enabled("demo-plugin", false).unwrap());
        assert!(!store.set_enabled("nope", false).unwrap());
        assert_eq!(store.refresh("demo-plugin").unwrap()["enabled"], false);
        assert_eq!(
            store.get("demo-plugin").unwrap()["requested_ref"],
            Value::Null
        );
        std::fs::remove_dir_all(&src).unwrap();
        assert!(matches!(
            store.refresh("demo-plugin"),
            Err(PluginError::RefreshFetch(_))
        ));
        assert!(store.uninstall("demo-plugin").unwrap());
        assert!(!store.uninstall("demo-plugin").unwrap());
        let text = std::fs::read_to_string(p.join("plugins/installed/.installed.json")).unwrap();
        assert_eq!(text, "{\n  \"extensions\": {}\n}");
        assert!(
            valid_name("a-1")
                && !valid_name("a--b")
                && !valid_name("Bad_Name")
                && !valid_name("-a")
        );
    }
}
