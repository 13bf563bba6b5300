//! Canvas App backends: one optional process per installed app, started only from an
//! artifact prepared (verified and unpacked read-only) for the exact installed revision.
//!
//! A backend runs without a shell in its own process group, with only the environment its
//! manifest names plus `HOME` (and the server's child marker, see `exec::orphans`); its output
//! is kept in a bounded in-memory buffer; it is stopped with SIGTERM to the group, then SIGKILL
//! after 5 s. A run record under `run/` lets a later server kill a backend whose server died.
//!
//! Every operation on one app holds that app's lock; the health wait of a start runs on its own
//! task so status and stop stay answerable while a backend comes up.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::manifest::{self, Artifact, Backend, Manifest, Platform};
use super::store::Installed;
use super::CanvasError;

mod artifact;
mod process;
mod records;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use process::{exit_code, group_alive, signal_group, wait_gone_blocking};
use records::write_run_record;

/// Most log bytes kept per backend; older chunks are dropped first.
pub const MAX_LOG_BYTES: usize = 256 * 1024;
/// Bytes read from a backend's stdout or stderr at a time (each read is one log chunk).
const LOG_CHUNK: usize = 8192;
/// How long a signalled process group has to exit before the next step.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a stopping process group is checked.
const STOP_POLL: Duration = Duration::from_millis(50);
/// Largest artifact download.
const MAX_ARTIFACT_BYTES: u64 = 1024 * 1024 * 1024;
/// Redirects an artifact download may follow.
const MAX_ARTIFACT_REDIRECTS: usize = 5;
/// Time for an artifact download.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Detail of a ready backend whose later probe failed.
const PROBE_FAILED: &str = "Backend health probe failed";
/// How long a stopped backend's output readers may take to see the end of its pipes.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// `BackendStatus`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub name: String,
    pub state: &'static str,
    pub revision: Option<String>,
    pub prepared_revision: Option<String>,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    pub detail: Option<String>,
}

/// `BackendLogs`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Logs {
    pub name: String,
    pub logs: String,
    pub truncated: bool,
}

/// In-memory state of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Stopped,
    Starting,
    Ready,
    Unhealthy,
}

impl RunState {
    fn as_str(self) -> &'static str {
        match self {
            RunState::Stopped => "stopped",
            RunState::Starting => "starting",
            RunState::Ready => "ready",
            RunState::Unhealthy => "unhealthy",
        }
    }
}

/// The newest output of a backend, at most [`MAX_LOG_BYTES`].
#[derive(Debug, Default)]
struct LogBuffer {
    chunks: std::collections::VecDeque<Vec<u8>>,
    bytes: usize,
    truncated: bool,
}

impl LogBuffer {
    fn push(&mut self, chunk: Vec<u8>) {
        self.bytes += chunk.len();
        self.chunks.push_back(chunk);
        while self.bytes > MAX_LOG_BYTES {
            let Some(old) = self.chunks.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            self.truncated = true;
        }
    }
}

/// A health wait in progress.
#[derive(Debug, Clone)]
struct StartTask {
    id: u64,
    /// Cancelled when the wait ends (or is abandoned).
    done: CancellationToken,
    abort: tokio::task::AbortHandle,
}

/// What the manager knows of one app's backend process.
#[derive(Debug)]
struct Runtime {
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
    /// Exit code once the process was reaped (a signal `n` as `-n`, as Python reports it).
    exit: Option<i32>,
    port: Option<u16>,
    revision: Option<String>,
    state: RunState,
    detail: Option<String>,
    logs: Arc<Mutex<LogBuffer>>,
    drains: Vec<tokio::task::JoinHandle<()>>,
    start: Option<StartTask>,
    stop_requested: CancellationToken,
}

impl Runtime {
    fn new() -> Self {
        Runtime {
            child: None,
            pid: None,
            exit: None,
            port: None,
            revision: None,
            state: RunState::Stopped,
            detail: None,
            logs: Arc::default(),
            drains: Vec::new(),
            start: None,
            stop_requested: CancellationToken::new(),
        }
    }

    /// The exit code, reaping the process if it ended; `None` while it runs.
    fn poll_exit(&mut self) -> Option<i32> {
        if self.exit.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.exit = Some(exit_code(status));
                }
            }
        }
        self.exit
    }

    /// A process exists and has not exited.
    fn alive(&mut self) -> bool {
        self.child.is_some() && self.poll_exit().is_none()
    }

    /// The process or its group still runs.
    fn group_alive(&mut self) -> bool {
        self.alive() || self.pid.is_some_and(group_alive)
    }
}

/// One app's lock and runtime.
#[derive(Debug)]
struct Slot {
    op: tokio::sync::Mutex<()>,
    rt: Mutex<Option<Runtime>>,
}

impl Slot {
    fn rt(&self) -> MutexGuard<'_, Option<Runtime>> {
        self.rt.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A slot in use; released from the map when nothing else holds it and it has no runtime
/// (so names that never ran a backend leave nothing behind).
struct SlotRef<'m> {
    manager: &'m Backends,
    name: String,
    slot: Arc<Slot>,
}

impl Drop for SlotRef<'_> {
    fn drop(&mut self) {
        let mut slots = self.manager.slots();
        if Arc::strong_count(&self.slot) == 2 && self.slot.rt().is_none() {
            slots.remove(&self.name);
        }
    }
}

/// `approvals/<name>.json`: the revision an operator approved and the artifact prepared for it.
#[derive(Debug, Clone, PartialEq)]
struct Prepared {
    revision: String,
    platform: String,
    artifact_sha256: String,
    artifact_dir: String,
}

impl Prepared {
    fn from_json(v: &Value) -> Option<Self> {
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let platform = text("platform")?;
        if platform != "linux-amd64" && platform != "linux-arm64" {
            return None;
        }
        Some(Prepared {
            revision: text("revision")?,
            platform,
            artifact_sha256: text("artifact_sha256")?,
            artifact_dir: text("artifact_dir")?,
        })
    }
}

/// What the disk says about an app (read off the runtime, in one blocking step).
struct DiskView {
    revision: Option<String>,
    manifest: Option<Manifest>,
    prepared: Option<Prepared>,
}

/// Owns the backend processes of the installed Canvas Apps.
pub struct Backends {
    installed: Arc<Installed>,
    artifacts_dir: PathBuf,
    downloads_dir: PathBuf,
    data_dir: PathBuf,
    approvals_dir: PathBuf,
    run_dir: PathBuf,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    next_task: AtomicU64,
    probe: reqwest::Client,
    download: reqwest::Client,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("state_dir", &self.approvals_dir.parent())
            .finish()
    }
}

/// Why a backend operation was refused: the reference's 409 wording.
fn conflict(msg: &str) -> CanvasError {
    CanvasError::Backend(msg.to_string())
}

fn io(e: impl std::fmt::Display) -> CanvasError {
    CanvasError::Io(e.to_string())
}

/// Runs blocking work off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CanvasError> {
    tokio::task::spawn_blocking(f).await.map_err(io)
}

impl Backends {
    /// The backends of the apps in `installed`, with their state under `state_dir`
    /// (`<persistence>/canvas-extensions/backends`).
    pub fn new(installed: Arc<Installed>, state_dir: &Path) -> Self {
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .no_proxy()
            .build()
            .unwrap_or_default();
        let download = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(DOWNLOAD_TIMEOUT)
            .build()
            .unwrap_or_default();
        Backends {
            installed,
            artifacts_dir: state_dir.join("artifacts"),
            downloads_dir: state_dir.join("downloads"),
            data_dir: state_dir.join("data"),
            approvals_dir: state_dir.join("approvals"),
            run_dir: state_dir.join("run"),
            slots: Mutex::new(HashMap::new()),
            next_task: AtomicU64::new(1),
            probe,
            download,
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn slot(&self, name: &str) -> SlotRef<'_> {
        let slot = self
            .slots()
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Slot {
                    op: tokio::sync::Mutex::new(()),
                    rt: Mutex::new(None),
                })
            })
            .clone();
        SlotRef {
            manager: self,
            name: name.to_string(),
            slot,
        }
    }

    fn approval_path(&self, name: &str) -> PathBuf {
        self.approvals_dir.join(format!("{name}.json"))
    }

    /// Forgets the approval of `name` (after an install changed the package).
    pub fn invalidate_approval(&self, name: &str) {
        let _ = std::fs::remove_file(self.approval_path(name));
    }

    /// The installed revision of an app: its resolved git commit, else the hash of its
    /// manifest. Blocking.
    fn disk_view(installed: &Installed, approvals: &Path, name: &str) -> DiskView {
        let (revision, manifest) = match installed.with_manifest(name) {
            Some((info, Some(m))) => {
                let revision = match info.resolved_ref.filter(|r| !r.is_empty()) {
                    Some(r) => r,
                    None => m.revision(),
                };
                (Some(revision), Some(m))
            }
            _ => (None, None),
        };
        let prepared = std::fs::read(approvals.join(format!("{name}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| Prepared::from_json(&v));
        DiskView {
            revision,
            manifest,
            prepared,
        }
    }

    async fn disk(&self, name: &str) -> Result<DiskView, CanvasError> {
        let installed = self.installed.clone();
        let approvals = self.approvals_dir.clone();
        let name = name.to_string();
        blocking(move || Self::disk_view(&installed, &approvals, &name)).await
    }

    /// The backend, artifact and platform an app can run here.
    fn parts(manifest: Option<&Manifest>) -> Option<(&Backend, &Artifact, Platform)> {
        let backend = manifest?.backend.as_ref()?;
        let platform = Platform::current()?;
        Some((backend, backend.artifact(platform)?, platform))
    }

    /// The status from what is on disk and in memory (`_status_unlocked`).
    fn compose(name: &str, disk: &DiskView, slot: &Slot) -> Status {
        let mut guard = slot.rt();
        let rt = guard.as_mut();
        let (state, detail) = match &disk.manifest {
            None => (
                "missing",
                Some("Canvas App is not installed or its manifest is invalid".to_string()),
            ),
            Some(m) if m.backend.is_none() => (
                "unsupported",
                Some("Canvas App does not declare a backend".to_string()),
            ),
            Some(m) if Self::parts(Some(m)).is_none() => (
                "unsupported",
                Some("Canvas App backend does not support this platform".to_string()),
            ),
            _ => match rt.as_ref().map(|r| (r.state, r.detail.clone())) {
                Some((s @ (RunState::Starting | RunState::Ready | RunState::Unhealthy), d)) => {
                    (s.as_str(), d)
                }
                _ => ("stopped", None),
            },
        };
        let (pid, port) = match rt {
            Some(r) => {
                if r.alive() {
                    (r.pid, r.port)
                } else {
                    (None, None)
                }
            }
            None => (None, None),
        };
        Status {
            name: name.to_string(),
            state,
            revision: disk.revision.clone(),
            prepared_revision: disk.prepared.as_ref().map(|p| p.revision.clone()),
            pid,
            port,
            detail,
        }
    }

    async fn status_unlocked(&self, name: &str, slot: &Slot) -> Result<Status, CanvasError> {
        let disk = self.disk(name).await?;
        Ok(Self::compose(name, &disk, slot))
    }

    /// The status, after noticing an exited process or re-probing a ready one.
    pub async fn status(&self, name: &str) -> Result<Status, CanvasError> {
        let slot = self.slot(name);
        let _op = slot.slot.op.lock().await;
        self.refresh_unlocked(name, &slot.slot).await
    }

    async fn refresh_unlocked(&self, name: &str, slot: &Slot) -> Result<Status, CanvasError> {
        enum Next {
            Reap,
            Probe(u16),
            Nothing,
        }
        let next = {
            let mut guard = slot.rt();
            let exited = guard
                .as_mut()
                .is_some_and(|rt| rt.child.is_some() && rt.poll_exit().is_some());
            match guard.as_mut() {
                Some(rt) if exited => {
                    let code = rt.exit.unwrap_or(-1);
                    rt.port = None;
                    rt.state = RunState::Unhealthy;
                    rt.detail = Some(format!("Backend exited with code {code}"));
                    Next::Reap
                }
                Some(rt)
                    if rt.port.is_some()
                        && (rt.state == RunState::Ready
                            || (rt.state == RunState::Unhealthy
                                && rt.detail.as_deref() == Some(PROBE_FAILED))) =>
                {
                    Next::Probe(rt.port.unwrap_or_default())
                }
                _ => Next::Nothing,
            }
        };
        match next {
            Next::Reap => self.terminate(slot).await,
            Next::Probe(port) => {
                let disk = self.disk(name).await?;
                let Some(backend) = disk.manifest.as_ref().and_then(|m| m.backend.as_ref()) else {
                    return Ok(Self::compose(name, &disk, slot));
                };
                let ok = self.probe(port, &backend.health.path).await;
                if let Some(rt) = slot.rt().as_mut() {
                    if ok {
                        rt.state = RunState::Ready;
                        rt.detail = None;
                    } else {
                        rt.state = RunState::Unhealthy;
                        rt.detail = Some(PROBE_FAILED.into());
                    }
                }
                return Ok(Self::compose(name, &disk, slot));
            }
            Next::Nothing => {}
        }
        self.status_unlocked(name, slot).await
    }

    /// GET `http://127.0.0.1:{port}{path}` (1 s, redirects followed): a 2xx or 3xx answer.
    async fn probe(&self, port: u16, path: &str) -> bool {
        let url = format!("http://127.0.0.1:{port}{path}");
        match self.probe.get(url).send().await {
            Ok(r) => (200..400).contains(&r.status().as_u16()),
            Err(_) => false,
        }
    }

    /// The newest `limit` bytes of a backend's output.
    pub async fn logs(&self, name: &str, limit: usize) -> Logs {
        let slot = self.slot(name);
        let _op = slot.slot.op.lock().await;
        let guard = slot.slot.rt();
        let Some(rt) = guard.as_ref() else {
            return Logs {
                name: name.into(),
                logs: String::new(),
                truncated: false,
            };
        };
        let buffer = rt.logs.lock().unwrap_or_else(|e| e.into_inner());
        let mut tail: Vec<u8> = Vec::with_capacity(buffer.bytes.min(limit));
        let mut need = limit;
        let mut parts = Vec::new();
        for chunk in buffer.chunks.iter().rev() {
            if need == 0 {
                break;
            }
            let take = chunk.len().min(need);
            parts.push(&chunk[chunk.len() - take..]);
            need -= take;
        }
        for part in parts.iter().rev() {
            tail.extend_from_slice(part);
        }
        Logs {
            name: name.into(),
            logs: String::from_utf8_lossy(&tail).into_owned(),
            truncated: buffer.truncated || buffer.bytes > limit,
        }
    }

    /// Deletes a stopped backend's data directory.
    pub async fn delete_data(&self, name: &str) -> Result<Status, CanvasError> {
        let slot = self.slot(name);
        let _op = slot.slot.op.lock().await;
        let busy = slot
            .slot
            .rt()
            .as_mut()
            .is_some_and(|rt| rt.start.is_some() || (rt.child.is_some() && rt.group_alive()));
        if busy {
            return Err(conflict("stop the backend before deleting its data"));
        }
        let dir = self.data_dir.join(name);
        blocking(move || {
            let _ = std::fs::remove_dir_all(dir);
        })
        .await?;
        self.status_unlocked(name, &slot.slot).await
    }

    /// Whether any backend is starting or running.
    pub fn has_running(&self) -> bool {
        let slots: Vec<Arc<Slot>> = self.slots().values().cloned().collect();
        slots.iter().any(|s| {
            s.rt()
                .as_mut()
                .is_some_and(|rt| rt.start.is_some() || (rt.child.is_some() && rt.group_alive()))
        })
    }

    /// The loopback port of a ready, running backend.
    pub fn ready_port(&self, name: &str) -> Option<u16> {
        let slot = self.slots().get(name).cloned()?;
        let mut guard = slot.rt();
        let rt = guard.as_mut()?;
        if rt.state != RunState::Ready || rt.port.is_none() || !rt.alive() {
            return None;
        }
        rt.port
    }

    /// Stops every backend (server shutdown).
    pub async fn shutdown(&self) {
        let names: Vec<String> = self.slots().keys().cloned().collect();
        let stops = names.iter().map(|n| self.stop(n));
        for result in futures::future::join_all(stops).await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "canvas app backend did not stop cleanly");
            }
        }
    }
}
