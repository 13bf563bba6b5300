//! Plugins: bundles of skills, commands, hooks and MCP servers, as the reference keeps them.
//!
//! - [`load`]: reading a plugin directory (Claude Code and Agent Plugins formats).
//! - [`source`]: source strings and the lenient fetch (shallow clones in a cache).
//! - [`installed`]: the installed-plugin store under `<persistence>/plugins/installed`.
//! - [`strict`]: the strict, pinned fetch of `POST /api/plugins/fetch`.
//! - [`marketplace`]: marketplace manifests, the public catalog, registered marketplaces.
//! - [`git`]: blocking git runs (own process group, killed on the deadline).
//!
//! Everything here blocks (file system, git): call it from `spawn_blocking`.

pub mod git;
pub mod installed;
pub mod load;
pub mod marketplace;
pub mod pyfmt;
pub mod source;
pub mod strict;

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use serde_json::{json, Value};

pub use load::{LoadError, Plugin};

/// What a plugin operation can fail with; the server (`crate::error`) maps each to the
/// reference's answer.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("Plugin '{0}' is not installed")]
    NotInstalled(String),
    #[error("Plugin already installed. Use force=true to overwrite.")]
    Exists,
    #[error("Failed to fetch plugin source. Check that the source is valid.")]
    Fetch,
    #[error("Invalid plugin. Ensure it has a valid kebab-case name.")]
    Invalid,
    #[error("Failed to fetch the source of plugin '{0}'. The installed copy was kept.")]
    RefreshFetch(String),
    #[error(
        "The source of plugin '{0}' no longer holds a valid plugin. The installed copy was kept."
    )]
    RefreshInvalid(String),
    /// A strict fetch failed (`code` decides the status).
    #[error("{message}")]
    Source { code: &'static str, message: String },
    /// A conversation's plugin or marketplace does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// A conversation's plugin reference cannot be used (400).
    #[error("{0}")]
    Unusable(String),
    /// What the reference lets escape as an unhandled exception (500 with an error id).
    #[error("{0}")]
    Unhandled(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl PluginError {
    /// The HTTP status the reference gives a strict-fetch error code.
    pub fn source_status(code: &str) -> u16 {
        match code {
            "source_unavailable" => 502,
            "timeout" => 504,
            _ => 422,
        }
    }
}

/// The persistence directory plugins live in (set when the server state is built), for code
/// that has no server state at hand (conversations).
static ROOT: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Sets the persistence directory plugin code uses.
pub fn set_persistence_dir(dir: &Path) {
    *ROOT.write().unwrap_or_else(|e| e.into_inner()) = Some(dir.to_path_buf());
}

/// The persistence directory set with [`set_persistence_dir`].
pub fn persistence_dir() -> Option<PathBuf> {
    ROOT.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The plugins of one persistence directory.
#[derive(Debug, Clone)]
pub struct Plugins {
    root: PathBuf,
}

/// Plugin subdirectories of `dir` (sorted), loaded; `skip` is not loaded, failures are
/// skipped.
fn load_all(dir: &Path, skip: Option<&Path>, data_root: &Path) -> Vec<Plugin> {
    let mut items: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    items.sort();
    items
        .into_iter()
        .filter(|i| i.is_dir() && skip.is_none_or(|s| source::resolve(i) != s))
        .filter_map(|i| match load::load(&i, data_root) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(path = %i.display(), error = %e, "skipping a plugin that does not load");
                None
            }
        })
        .collect()
}

/// Appends the plugins whose names are new.
fn merge_first_wins(found: Vec<Plugin>, out: &mut Vec<Plugin>) {
    for p in found {
        if !out.iter().any(|o| o.name == p.name) {
            out.push(p);
        }
    }
}

/// Puts `p` in `out`, replacing (in place) one of the same name.
fn put(out: &mut Vec<Plugin>, p: Plugin) {
    match out.iter_mut().find(|o| o.name == p.name) {
        Some(slot) => *slot = p,
        None => out.push(p),
    }
}

impl Plugins {
    /// The plugins of persistence directory `root`.
    pub fn new(root: &Path) -> Self {
        Plugins {
            root: root.to_path_buf(),
        }
    }

    /// The persistence directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The installed-plugin store.
    pub fn installed(&self) -> installed::Installed {
        installed::Installed::new(&self.root)
    }

    /// Parent of the Agent Plugins `${PLUGIN_DATA}` directories.
    pub fn data_root(&self) -> PathBuf {
        self.root.join("plugin-data")
    }

    /// Where conversations and `/plugins/fetch` keep fetched plugins.
    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("cache").join("plugins")
    }

    /// Loads the plugin in `dir`.
    pub fn load(&self, dir: &Path) -> Result<Plugin, LoadError> {
        load::load(dir, &self.data_root())
    }

    /// The user's plugins: `~/.agents/plugins/*`, `<persistence>/plugins/*` (not the installed
    /// store), then the enabled installed ones (all of those left out when one fails to
    /// load); the first of a name wins.
    pub fn user_plugins(&self) -> Vec<Plugin> {
        let data = self.data_root();
        let store = self.installed();
        let mut out = Vec::new();
        let mut dirs = Vec::new();
        if let Some(h) = source::home() {
            dirs.push(h.join(".agents").join("plugins"));
        }
        dirs.push(self.root.join("plugins"));
        for dir in dirs {
            merge_first_wins(load_all(&dir, Some(store.dir()), &data), &mut out);
        }
        match store.enabled_plugins() {
            Ok(list) => merge_first_wins(list, &mut out),
            Err(e) => tracing::warn!(error = %e, "installed plugins left out"),
        }
        out
    }

    /// The project's plugins: `.agents/plugins/*` and `.openhands/plugins/*` of `work_dir`,
    /// then of its git root; the first of a name wins.
    pub fn project_plugins(&self, work_dir: &Path) -> Vec<Plugin> {
        let data = self.data_root();
        let mut roots = vec![work_dir.to_path_buf()];
        if let Some(g) = work_dir
            .ancestors()
            .find(|d| d.join(".git").exists())
            .filter(|g| *g != work_dir)
        {
            roots.push(g.to_path_buf());
        }
        let mut out = Vec::new();
        for root in roots {
            for sub in [".agents/plugins", ".openhands/plugins"] {
                merge_first_wins(load_all(&root.join(sub), None, &data), &mut out);
            }
        }
        out
    }

    /// The locally available plugins: user ones, then project ones replacing those of the same
    /// name in place.
    pub fn available(&self, user: bool, project: bool, work_dir: Option<&str>) -> Vec<Plugin> {
        let mut out = Vec::new();
        if user {
            for p in self.user_plugins() {
                put(&mut out, p);
            }
        }
        if let Some(dir) = work_dir.filter(|d| project && !d.is_empty()) {
            for p in self.project_plugins(Path::new(dir)) {
                put(&mut out, p);
            }
        }
        out
    }

    /// The names of the installed plugins (reconciled).
    pub fn installed_names(&self) -> Vec<String> {
        self.installed()
            .list()
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["name"].as_str().map(str::to_string))
            .collect()
    }
}

/// `PluginInfo` of a loaded plugin.
pub fn plugin_info(p: &Plugin) -> Value {
    json!({
        "name": p.name, "version": p.version, "description": p.description,
        "path": p.path_str(), "skills": p.skill_summaries(), "files": load::list_files(&p.path),
    })
}
