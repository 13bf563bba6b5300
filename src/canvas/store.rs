//! Installed Canvas extensions: full copies under `<persistence>/canvas-extensions/installed/
//! <name>/` and their metadata in `.installed.json` (`{"extensions": {name: info}}`, written
//! like pydantic's `model_dump_json(indent=2)`), kept in step with the directories the way the
//! reference's installation manager does (stale entries dropped, untracked packages
//! discovered). Blocking: call from `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde_json::{json, Map, Value};

use super::manifest::{self, LoadError, Manifest};
use super::source;
use super::CanvasError;

/// Metadata file name inside the installed directory.
const METADATA_FILE: &str = ".installed.json";
/// Legacy top-level keys merged into `extensions` when read.
const LEGACY_KEYS: [&str; 2] = ["plugins", "skills"];

/// The metadata record of one installed extension (`InstallationInfo`).
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub name: String,
    pub version: String,
    pub description: String,
    pub enabled: bool,
    pub source: String,
    pub requested_ref: Option<String>,
    pub resolved_ref: Option<String>,
    pub repo_path: Option<String>,
    pub installed_at: String,
    pub install_path: String,
}

/// `datetime.now(UTC).isoformat()`.
fn now_iso() -> String {
    let now = chrono::Utc::now();
    if now.timestamp_subsec_micros() == 0 {
        now.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        now.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

/// A lax boolean as pydantic reads one from JSON.
fn lax_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) if n.as_f64() == Some(1.0) => Some(true),
        Value::Number(n) if n.as_f64() == Some(0.0) => Some(false),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => Some(true),
            "false" | "f" | "no" | "n" | "off" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A path string as `pathlib.PurePosixPath` prints it (doubled and trailing slashes and `.`
/// parts dropped).
fn normal_path(p: &str) -> String {
    let normal: PathBuf = Path::new(p).components().collect();
    let s = normal.to_string_lossy().into_owned();
    if s.is_empty() {
        ".".into()
    } else {
        s
    }
}

impl Info {
    /// The record as stored and shown (the reference's key order).
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "enabled": self.enabled,
            "source": self.source,
            "requested_ref": self.requested_ref,
            "resolved_ref": self.resolved_ref,
            "repo_path": self.repo_path,
            "installed_at": self.installed_at,
            "install_path": self.install_path,
        })
    }

    /// Reads a stored record; `None` when it does not validate.
    fn from_json(v: &Value) -> Option<Info> {
        let m = v.as_object()?;
        let text = |k: &str, default: Option<&str>| -> Option<String> {
            match m.get(k) {
                Some(Value::String(s)) => Some(s.clone()),
                None => default.map(str::to_string),
                Some(_) => None,
            }
        };
        let optional = |k: &str| -> Option<Option<String>> {
            match m.get(k) {
                None | Some(Value::Null) => Some(None),
                Some(Value::String(s)) => Some(Some(s.clone())),
                Some(_) => None,
            }
        };
        Some(Info {
            name: text("name", None)?,
            version: text("version", Some(""))?,
            description: text("description", Some(""))?,
            enabled: match m.get("enabled") {
                None => true,
                Some(v) => lax_bool(v)?,
            },
            source: text("source", None)?,
            requested_ref: optional("requested_ref")?,
            resolved_ref: optional("resolved_ref")?,
            repo_path: optional("repo_path")?,
            installed_at: match m.get("installed_at") {
                None => now_iso(),
                Some(Value::String(s)) => s.clone(),
                Some(_) => return None,
            },
            install_path: normal_path(&text("install_path", None)?),
        })
    }

    /// The record of a package discovered in the installed directory.
    fn discovered(manifest: &Manifest, install_path: &Path) -> Info {
        Info {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            description: manifest.description.clone(),
            enabled: true,
            source: "local".into(),
            requested_ref: None,
            resolved_ref: None,
            repo_path: None,
            installed_at: now_iso(),
            install_path: install_path.to_string_lossy().into_owned(),
        }
    }
}

/// The metadata: records in insertion order.
#[derive(Debug, Default, Clone)]
struct Metadata(Vec<(String, Info)>);

impl Metadata {
    fn get(&self, name: &str) -> Option<&Info> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, i)| i)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Info> {
        self.0.iter_mut().find(|(n, _)| n == name).map(|(_, i)| i)
    }

    /// Inserts or replaces (a replaced record keeps its position).
    fn insert(&mut self, name: &str, info: Info) {
        match self.get_mut(name) {
            Some(slot) => *slot = info,
            None => self.0.push((name.to_string(), info)),
        }
    }

    fn remove(&mut self, name: &str) -> bool {
        let before = self.0.len();
        self.0.retain(|(n, _)| n != name);
        self.0.len() != before
    }
}

/// The installed extensions of one persistence directory.
#[derive(Debug)]
pub struct Installed {
    /// `<persistence>/canvas-extensions/installed`, resolved.
    dir: PathBuf,
    /// Clone cache of git sources: `<persistence>/cache/extensions`.
    cache_dir: PathBuf,
    /// Serialises metadata read-modify-write sessions.
    meta: Mutex<()>,
    /// Serialises installs (fetch, copy, record).
    install: Mutex<()>,
}

fn guard(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Installed {
    /// The installed extensions under `persistence`.
    pub fn new(persistence: &Path) -> Self {
        Installed {
            dir: source::resolve(&persistence.join("canvas-extensions").join("installed")),
            cache_dir: persistence.join("cache").join("extensions"),
            meta: Mutex::new(()),
            install: Mutex::new(()),
        }
    }

    /// Where the packages are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn metadata_path(&self) -> PathBuf {
        self.dir.join(METADATA_FILE)
    }

    /// Reads the metadata; a missing or invalid file reads as empty.
    fn load(&self) -> Metadata {
        let Ok(bytes) = std::fs::read(self.metadata_path()) else {
            return Metadata::default();
        };
        let Ok(Value::Object(mut doc)) = serde_json::from_slice::<Value>(&bytes) else {
            return Metadata::default();
        };
        let mut merged = Map::new();
        for key in LEGACY_KEYS {
            if let Some(legacy) = doc.remove(key) {
                let Value::Object(entries) = legacy else {
                    return Metadata::default();
                };
                merged.extend(entries);
            }
        }
        if !merged.is_empty() {
            match doc.get("extensions") {
                Some(Value::Object(current)) => merged.extend(current.clone()),
                None | Some(Value::Null) => {}
                Some(_) => return Metadata::default(),
            }
            doc.insert("extensions".into(), Value::Object(merged));
        }
        let entries = match doc.get("extensions") {
            None => return Metadata::default(),
            Some(Value::Object(e)) => e,
            Some(_) => return Metadata::default(),
        };
        let mut out = Vec::with_capacity(entries.len());
        for (name, v) in entries {
            match Info::from_json(v) {
                Some(info) => out.push((name.clone(), info)),
                None => {
                    tracing::warn!("installed canvas extension metadata is invalid; ignored");
                    return Metadata::default();
                }
            }
        }
        Metadata(out)
    }

    fn save(&self, meta: &Metadata) -> Result<(), CanvasError> {
        let mut entries = Map::new();
        for (name, info) in &meta.0 {
            entries.insert(name.clone(), info.to_json());
        }
        crate::persist::write_pretty_json(&self.metadata_path(), &json!({ "extensions": entries }))
            .map_err(|e| CanvasError::Io(e.to_string()))
    }

    /// Drops records with invalid names or missing directories; answers the survivors.
    fn validate_tracked(&self, meta: &mut Metadata) -> Vec<Info> {
        meta.0
            .retain(|(name, _)| manifest::valid_name(name) && self.dir.join(name).exists());
        meta.0.iter().map(|(_, i)| i.clone()).collect()
    }

    /// Adds records for valid packages in the directory that have none; answers them.
    fn discover_untracked(&self, meta: &mut Metadata) -> Vec<Info> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        let mut found = Vec::new();
        for name in names {
            let path = self.dir.join(&name);
            if !path.is_dir() || name.starts_with('.') || meta.get(&name).is_some() {
                continue;
            }
            if !manifest::valid_name(&name) {
                continue;
            }
            let Ok(m) = manifest::load_from_dir(&path) else {
                continue;
            };
            if m.name != name {
                tracing::warn!(dir = %name, manifest = %m.name, "canvas extension directory and manifest names differ; skipped");
                continue;
            }
            let info = Info::discovered(&m, &path);
            meta.insert(&name, info.clone());
            found.push(info);
        }
        found
    }

    /// Names with a valid record and a directory.
    fn tracked_names(&self) -> Vec<String> {
        if !self.dir.exists() {
            return Vec::new();
        }
        let mut meta = self.load();
        self.validate_tracked(&mut meta)
            .into_iter()
            .map(|i| i.name)
            .collect()
    }

    /// Every installed extension (self-healing: stale records dropped, untracked packages
    /// added, disabled).
    pub fn list(&self) -> Result<Vec<Info>, CanvasError> {
        if !self.dir.exists() {
            return Ok(Vec::new());
        }
        let _g = guard(&self.meta);
        let mut meta = self.load();
        let mut infos = self.validate_tracked(&mut meta);
        let discovered = self.discover_untracked(&mut meta);
        for mut info in discovered {
            // A newly discovered package lands disabled, like a new install.
            if let Some(stored) = meta.get_mut(&info.name) {
                stored.enabled = false;
            }
            info.enabled = false;
            infos.push(info);
        }
        self.save(&meta)?;
        Ok(infos)
    }

    /// One installed extension (a record and its directory; no discovery).
    pub fn get(&self, name: &str) -> Option<Info> {
        let meta = self.load();
        let info = meta.get(name)?;
        self.dir.join(name).exists().then(|| info.clone())
    }

    /// The live, re-validated manifest of an installed extension.
    pub fn manifest(&self, name: &str) -> Option<Manifest> {
        self.get(name)?;
        manifest::load_from_dir(&self.dir.join(name)).ok()
    }

    /// The record and live manifest of an installed extension.
    pub fn with_manifest(&self, name: &str) -> Option<(Info, Option<Manifest>)> {
        let info = self.get(name)?;
        let manifest = manifest::load_from_dir(&self.dir.join(name)).ok();
        Some((info, manifest))
    }

    /// The file the bundle endpoint serves (entry point re-checked now).
    pub fn bundle_path(&self, name: &str) -> Option<PathBuf> {
        let m = self.manifest(name)?;
        manifest::resolve_contained_file(&self.dir.join(name), &m.entrypoint)
    }

    /// The icon file, if declared and contained.
    pub fn icon_path(&self, name: &str) -> Option<PathBuf> {
        let m = self.manifest(name)?;
        manifest::resolve_contained_file(&self.dir.join(name), m.icon.as_deref()?)
    }

    /// Enables or disables an extension; `false` when it is not installed. Syncs the records
    /// first (packages discovered here keep the default `enabled`).
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<bool, CanvasError> {
        if !self.dir.exists() {
            return Ok(false);
        }
        let _g = guard(&self.meta);
        let mut meta = self.load();
        self.validate_tracked(&mut meta);
        self.discover_untracked(&mut meta);
        let known = match meta.get_mut(name) {
            Some(info) => {
                info.enabled = enabled;
                true
            }
            None => false,
        };
        self.save(&meta)?;
        Ok(known && self.dir.join(name).exists())
    }

    /// Removes an extension's package and record (and any staged update); `false` when it has
    /// no record.
    pub fn uninstall(&self, name: &str) -> Result<bool, CanvasError> {
        let _g = guard(&self.meta);
        let mut meta = self.load();
        if meta.get(name).is_none() {
            if self.dir.exists() {
                self.save(&meta)?;
            }
            return Ok(false);
        }
        let path = self.dir.join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| CanvasError::Io(e.to_string()))?;
        }
        meta.remove(name);
        self.save(&meta)?;
        let _ = std::fs::remove_dir_all(self.dir.join(".staging").join(name));
        Ok(true)
    }

    /// Installs the package `source` names; a new extension lands disabled, a forced
    /// reinstall keeps its `enabled`.
    pub fn install(
        &self,
        source: &str,
        git_ref: Option<&str>,
        repo_path: Option<&str>,
        force: bool,
    ) -> Result<Info, CanvasError> {
        let _install = guard(&self.install);
        let pre_existing = self.tracked_names();
        let fetched = source::fetch(source, git_ref, repo_path, &self.cache_dir)
            .map_err(|e| CanvasError::Source(e.0))?;
        let m = manifest::load_from_dir(&fetched.dir).map_err(|e| match e {
            LoadError::NoManifest => CanvasError::NoManifest,
            LoadError::Invalid(why) => {
                tracing::info!(%why, "canvas extension refused");
                CanvasError::InvalidExtension
            }
        })?;
        let install_path = self.dir.join(&m.name);
        if install_path.exists() {
            if !force {
                return Err(CanvasError::AlreadyInstalled);
            }
            std::fs::remove_dir_all(&install_path).map_err(|_| CanvasError::InvalidExtension)?;
        }
        crate::persist::ensure_dir(&self.dir).map_err(|e| CanvasError::Io(e.to_string()))?;
        if let Err(e) = copy_tree(&fetched.dir, &install_path, 0) {
            tracing::info!(error = %e, "canvas extension package could not be copied");
            let _ = std::fs::remove_dir_all(&install_path);
            return Err(CanvasError::InvalidExtension);
        }
        let mut info = Info {
            name: m.name.clone(),
            version: m.version.clone(),
            description: m.description.clone(),
            enabled: true,
            source: source.to_string(),
            requested_ref: git_ref.map(str::to_string),
            resolved_ref: fetched.resolved_ref.clone(),
            repo_path: repo_path.map(str::to_string),
            installed_at: now_iso(),
            install_path: install_path.to_string_lossy().into_owned(),
        };
        {
            let _g = guard(&self.meta);
            let mut meta = self.load();
            if let Some(existing) = meta.get(&m.name) {
                info.enabled = existing.enabled;
            }
            meta.insert(&m.name, info.clone());
            self.save(&meta)?;
        }
        if !pre_existing.contains(&info.name) && info.enabled {
            self.set_enabled(&info.name, false)?;
            info.enabled = false;
        }
        tracing::info!(name = %info.name, version = %info.version, "canvas extension installed");
        Ok(info)
    }
}

/// `shutil.copytree(src, dst)`: symlinks followed (their targets copied), modes and times kept.
fn copy_tree(src: &Path, dst: &Path, depth: usize) -> std::io::Result<()> {
    if depth > 64 {
        return Err(std::io::Error::other("directory nesting too deep"));
    }
    std::fs::create_dir(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::metadata(&from)?;
        if meta.is_dir() {
            copy_tree(&from, &to, depth + 1)?;
        } else if meta.is_file() {
            std::fs::copy(&from, &to)?;
            copy_times(&meta, &to)?;
        } else {
            return Err(std::io::Error::other(format!(
                "{} is not a regular file",
                from.display()
            )));
        }
    }
    let meta = std::fs::metadata(src)?;
    std::fs::set_permissions(dst, meta.permissions())?;
    copy_times(&meta, dst)
}

fn copy_times(meta: &std::fs::Metadata, to: &Path) -> std::io::Result<()> {
    let mut times = std::fs::FileTimes::new();
    if let Ok(t) = meta.accessed() {
        times = times.set_accessed(t);
    }
    if let Ok(t) = meta.modified() {
        times = times.set_modified(t);
    }
    std::fs::File::open(to)?.set_times(times)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn package(root: &Path, name: &str) -> PathBuf {
        let dir = root.join("src").join(name);
        std::fs::create_dir_all(dir.join("dist")).unwrap();
        std::fs::write(dir.join("dist/index.js"), "export {}\n").unwrap();
        std::fs::write(
            dir.join(manifest::MANIFEST_FILENAME),
            json!({"schema_version": 1, "name": name, "display_name": "X", "version": "1.0",
                   "entrypoint": "dist/index.js"})
            .to_string(),
        )
        .unwrap();
        dir
    }

    #[test]
    fn install_list_enable_uninstall_and_discovery() {
        let root = tempfile::tempdir().unwrap();
        let src = package(root.path(), "one");
        let installed = Installed::new(&root.path().join("p"));
        let info = installed
            .install(src.to_str().unwrap(), None, None, false)
            .unwrap();
        assert!(!info.enabled);
        assert!(matches!(
            installed.install(src.to_str().unwrap(), None, None, false),
            Err(CanvasError::AlreadyInstalled)
        ));
        assert!(installed.set_enabled("one", true).unwrap());
        let again = installed
            .install(src.to_str().unwrap(), None, None, true)
            .unwrap();
        assert!(again.enabled, "a forced reinstall keeps enabled");
        // A package copied in by hand is discovered, disabled, after the tracked ones.
        let other = package(root.path(), "another");
        copy_tree(&other, &installed.dir().join("another"), 0).unwrap();
        let names: Vec<(String, bool)> = installed
            .list()
            .unwrap()
            .into_iter()
            .map(|i| (i.name, i.enabled))
            .collect();
        assert_eq!(names, [("one".into(), true), ("another".into(), false)]);
        let text = std::fs::read_to_string(installed.dir().join(METADATA_FILE)).unwrap();
        assert!(text.starts_with("{\n  \"extensions\": {\n    \"one\": {\n      \"name\""));
        assert!(installed.uninstall("one").unwrap());
        assert!(!installed.uninstall("one").unwrap());
        assert!(installed.get("one").is_none());
        assert!(!installed.set_enabled("one", true).unwrap());
    }
}
