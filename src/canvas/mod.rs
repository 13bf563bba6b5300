//! Canvas extensions and their app backends, in the reference's layout under the persistence
//! directory (`canvas-extensions/installed/`, `canvas-extensions/backends/`,
//! `cache/extensions/`):
//!
//! - [`manifest`]: the `canvas-extension.json` model, its revision hash, containment checks.
//! - [`source`]: install sources (local directories, git URLs, `github:` shorthands).
//! - [`store`]: installed packages and their `.installed.json` records.
//! - [`backend`]: the optional backend process of an app (prepare, start, stop, logs).
//! - [`bridge`]: the cookie sessions and rules of the `/app-backends/...` browser ingress.

pub mod backend;
pub mod bridge;
pub mod manifest;
pub mod source;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

pub use backend::{Backends, Logs, Status};
pub use bridge::Sessions;
pub use store::{Info, Installed};

/// Errors of the Canvas services; `error.rs` maps each to its HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum CanvasError {
    #[error("Canvas extension '{0}' is not installed")]
    NotInstalled(String),
    #[error("Canvas extension '{0}' bundle not found")]
    BundleNotFound(String),
    #[error("Canvas extension '{0}' icon not found")]
    IconNotFound(String),
    /// The source could not be read (the reference's fetch error message).
    #[error("Could not read canvas extension source: {0}")]
    Source(String),
    #[error("Canvas extension already installed. Use force=true to overwrite.")]
    AlreadyInstalled,
    #[error(
        "No canvas-extension.json found at the resolved location. Source plus Path must point \
         at the extension's own directory, not the repository root."
    )]
    NoManifest,
    #[error("Invalid canvas extension. Ensure the manifest is well-formed.")]
    InvalidExtension,
    #[error("Stop running Canvas App backends before a forced install")]
    BackendsRunning,
    /// A backend operation refused in the current state (409).
    #[error("{0}")]
    Backend(String),
    #[error("Canvas App backend ingress is not configured")]
    IngressNotConfigured,
    #[error("Canvas App backend ingress is misconfigured")]
    IngressMisconfigured,
    #[error("Canvas App request must use the configured ingress origin")]
    WrongIngress,
    #[error("Origin is not allowed")]
    OriginNotAllowed,
    #[error("Canvas App ingress must use a separate browser origin")]
    SameOrigin,
    #[error("Canvas App backend is not ready")]
    NotReady,
    #[error("Canvas App sessions require HTTPS or a loopback secure context")]
    InsecureContext,
    #[error("Invalid backend path")]
    InvalidPath,
    #[error("Unauthorized")]
    Unauthorized,
    #[error("Runtime secret exposure is unsupported")]
    ExposeSecrets,
    #[error("Canvas App backend unreachable")]
    Unreachable,
    #[error("Upstream redirect is not allowed")]
    Redirect,
    #[error("{0}")]
    Io(String),
}

/// The Canvas services of one server.
#[derive(Debug)]
pub struct Canvas {
    pub installed: Arc<Installed>,
    pub backends: Backends,
    pub sessions: Sessions,
    /// Client of the ingress proxy (loopback backends: no proxy, no redirects followed).
    pub http: reqwest::Client,
}

/// An absolute form of `path` (relative paths anchored at the working directory).
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    }
}

/// `InstalledCanvasExtensionResponse`: the record and its live manifest (or `null`).
pub fn response(info: &Info, manifest: Option<&manifest::Manifest>) -> Value {
    let mut v = info.to_json();
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "manifest".into(),
            manifest.map_or(Value::Null, manifest::Manifest::to_json),
        );
    }
    v
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CanvasError> + Send + 'static,
) -> Result<T, CanvasError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CanvasError::Io(e.to_string()))?
}

impl Canvas {
    /// The Canvas services on the persistence directory `persistence`.
    pub fn new(persistence: &Path) -> Self {
        let persistence = absolute(persistence);
        let installed = Arc::new(Installed::new(&persistence));
        let backends = Backends::new(
            installed.clone(),
            &persistence.join("canvas-extensions").join("backends"),
        );
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            .no_proxy()
            .build()
            .unwrap_or_default();
        Canvas {
            installed,
            backends,
            sessions: Sessions::default(),
            http,
        }
    }

    /// Runs `op` on its own task: a client that goes away mid-operation (a start waiting for
    /// health, a stop waiting for the group to exit) cannot leave it half done.
    pub async fn detached<T, F, Fut>(self: &Arc<Self>, op: F) -> Result<T, CanvasError>
    where
        F: FnOnce(Arc<Canvas>) -> Fut,
        Fut: std::future::Future<Output = Result<T, CanvasError>> + Send + 'static,
        T: Send + 'static,
    {
        tokio::spawn(op(self.clone()))
            .await
            .map_err(|e| CanvasError::Io(e.to_string()))?
    }

    /// Kills backends a crashed server left running. Blocking; call before serving.
    pub fn reap_orphans(&self) {
        let killed = self.backends.reap_orphans();
        if killed > 0 {
            tracing::warn!(
                backends = killed,
                "stopped canvas app backends left running by an earlier server"
            );
        }
    }

    /// Ends an app's sessions and stops its backend.
    pub async fn revoke_and_stop(&self, name: &str) -> Result<Status, CanvasError> {
        self.sessions.revoke_app(name);
        self.backends.stop(name).await
    }

    /// Installs an extension (a new one lands disabled); its backend approval is dropped.
    pub async fn install(
        &self,
        source: String,
        git_ref: Option<String>,
        repo_path: Option<String>,
        force: bool,
    ) -> Result<Value, CanvasError> {
        if force && self.backends.has_running() {
            return Err(CanvasError::BackendsRunning);
        }
        let installed = self.installed.clone();
        let info = blocking(move || {
            installed.install(&source, git_ref.as_deref(), repo_path.as_deref(), force)
        })
        .await?;
        self.backends.invalidate_approval(&info.name);
        let installed = self.installed.clone();
        blocking(move || {
            let manifest = installed.manifest(&info.name);
            Ok(response(&info, manifest.as_ref()))
        })
        .await
    }

    /// Every installed extension.
    pub async fn list(&self) -> Result<Vec<Value>, CanvasError> {
        let installed = self.installed.clone();
        blocking(move || {
            let infos = installed.list()?;
            Ok(infos
                .iter()
                .map(|i| response(i, installed.manifest(&i.name).as_ref()))
                .collect())
        })
        .await
    }

    /// One installed extension.
    pub async fn get(&self, name: &str) -> Result<Value, CanvasError> {
        let installed = self.installed.clone();
        let name = name.to_string();
        blocking(move || match installed.with_manifest(&name) {
            Some((info, manifest)) => Ok(response(&info, manifest.as_ref())),
            None => Err(CanvasError::NotInstalled(name)),
        })
        .await
    }

    /// Enables or disables an extension; disabling first ends its sessions and backend.
    pub async fn set_enabled(&self, name: &str, enabled: bool) -> Result<(), CanvasError> {
        if !enabled {
            self.revoke_and_stop(name).await?;
        }
        let installed = self.installed.clone();
        let owned = name.to_string();
        let known = blocking(move || installed.set_enabled(&owned, enabled)).await?;
        if known {
            Ok(())
        } else {
            Err(CanvasError::NotInstalled(name.to_string()))
        }
    }

    /// Uninstalls an extension (its backend data, approval and artifacts are kept).
    pub async fn uninstall(&self, name: &str) -> Result<(), CanvasError> {
        self.revoke_and_stop(name).await?;
        let installed = self.installed.clone();
        let owned = name.to_string();
        let removed = blocking(move || installed.uninstall(&owned)).await?;
        if removed {
            tracing::info!(%name, "canvas extension uninstalled");
            Ok(())
        } else {
            Err(CanvasError::NotInstalled(name.to_string()))
        }
    }

    /// The entry-point file of an extension, checked now.
    pub async fn bundle(&self, name: &str) -> Result<PathBuf, CanvasError> {
        let installed = self.installed.clone();
        let owned = name.to_string();
        blocking(move || {
            installed
                .bundle_path(&owned)
                .ok_or(CanvasError::BundleNotFound(owned))
        })
        .await
    }

    /// The SVG icon of an extension, checked now.
    pub async fn icon(&self, name: &str) -> Result<PathBuf, CanvasError> {
        let installed = self.installed.clone();
        let owned = name.to_string();
        blocking(move || {
            installed
                .icon_path(&owned)
                .ok_or(CanvasError::IconNotFound(owned))
        })
        .await
    }

    /// Ends every session and stops every backend (server shutdown).
    pub async fn shutdown(&self) {
        self.sessions.revoke_all();
        self.backends.shutdown().await;
    }
}
