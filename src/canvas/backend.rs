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

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| -s))
        .unwrap_or(-1)
}

fn group_alive(pgid: u32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    killpg(Pid::from_raw(pgid), None).is_ok()
}

fn signal_group(pgid: u32, signal: Signal) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(pgid), signal);
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

    /// Verifies and unpacks the artifact of the exact installed `revision`, and records the
    /// approval.
    pub async fn prepare(&self, name: &str, revision: &str) -> Result<Status, CanvasError> {
        let slot = self.slot(name);
        let _op = slot.slot.op.lock().await;
        let disk = self.disk(name).await?;
        let status = Self::compose(name, &disk, &slot.slot);
        if matches!(status.state, "missing" | "unsupported") {
            return Ok(status);
        }
        if disk.revision.as_deref() != Some(revision) {
            return Err(conflict(
                "approval revision does not match installed revision",
            ));
        }
        if let Some(p) = &disk.prepared {
            if p.revision == revision && Path::new(&p.artifact_dir).is_dir() {
                return Ok(status);
            }
        }
        let Some((_, artifact, platform)) = Self::parts(disk.manifest.as_ref()) else {
            return Ok(status);
        };
        let artifact = artifact.clone();
        let archive = if artifact.path.is_empty() {
            let url = artifact.url.clone().unwrap_or_default();
            self.download_archive(&url, &artifact.sha256).await?
        } else {
            let root = self.installed.dir().join(name);
            let rel = artifact.path.clone();
            let expected = artifact.sha256.clone();
            blocking(move || {
                let archive = manifest::resolve_contained_file(&root, &rel)
                    .ok_or_else(|| conflict("backend artifact is not a contained regular file"))?;
                if sha256_file(&archive).map_err(io)? != expected {
                    return Err(conflict(
                        "backend artifact checksum does not match manifest",
                    ));
                }
                Ok(archive)
            })
            .await??
        };
        let artifact_dir = self.artifacts_dir.join(name).join(&artifact.sha256);
        let target = artifact_dir.clone();
        let sha = artifact.sha256.clone();
        let strip = artifact.strip_components;
        blocking(move || unpack_once(&archive, &target, &sha, strip)).await??;
        let approval = json!({
            "revision": revision,
            "platform": platform.as_str(),
            "artifact_sha256": artifact.sha256,
            "artifact_dir": artifact_dir.to_string_lossy(),
        });
        let path = self.approval_path(name);
        blocking(move || -> Result<(), CanvasError> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            crate::conversation::store::write_atomic(&path, approval.to_string().as_bytes())
                .map_err(io)
        })
        .await??;
        tracing::info!(app = %name, %revision, "canvas app backend prepared");
        self.status_unlocked(name, &slot.slot).await
    }

    /// Downloads a URL artifact into `downloads/<sha>.tar.gz` (reused while its checksum
    /// matches): HTTPS only, redirects re-checked, at most 1 GiB.
    async fn download_archive(&self, url: &str, sha: &str) -> Result<PathBuf, CanvasError> {
        let dir = self.downloads_dir.clone();
        let destination = dir.join(format!("{sha}.tar.gz"));
        let cached = destination.clone();
        let expected = sha.to_string();
        let reuse = blocking(move || {
            let _ = std::fs::create_dir_all(&dir);
            if cached.is_file() && sha256_file(&cached).ok().as_deref() == Some(expected.as_str()) {
                return true;
            }
            let _ = std::fs::remove_file(&cached);
            false
        })
        .await?;
        if reuse {
            return Ok(destination);
        }
        let temporary = self
            .downloads_dir
            .join(format!(".{sha}.tar.gz.{}.tmp", std::process::id()));
        let result = self.fetch_to(url, sha, &temporary).await;
        match result {
            Ok(()) => {
                tokio::fs::rename(&temporary, &destination)
                    .await
                    .map_err(|_| conflict("backend artifact download failed"))?;
                Ok(destination)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&temporary).await;
                Err(e)
            }
        }
    }

    async fn fetch_to(&self, url: &str, sha: &str, temporary: &Path) -> Result<(), CanvasError> {
        let failed = || conflict("backend artifact download failed");
        let mut current = url.to_string();
        for hop in 0..=MAX_ARTIFACT_REDIRECTS {
            let parts = manifest::UrlParts::split(&current);
            if parts.scheme != "https"
                || parts.hostname().is_none()
                || parts.has_userinfo()
                || parts.fragment.is_some_and(|f| !f.is_empty())
            {
                return Err(conflict("backend artifact URL is not allowed"));
            }
            let response = self
                .download
                .get(&current)
                .header("Accept", "application/octet-stream")
                .header("Accept-Encoding", "identity")
                .header("User-Agent", "OpenHands-Agent-Server")
                .send()
                .await
                .map_err(|_| failed())?;
            let status = response.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match location {
                    Some(l) if hop < MAX_ARTIFACT_REDIRECTS => {
                        current = response
                            .url()
                            .join(&l)
                            .map(|u| u.to_string())
                            .map_err(|_| failed())?;
                        continue;
                    }
                    _ => return Err(conflict("backend artifact redirect limit exceeded")),
                }
            }
            if status >= 300 {
                return Err(CanvasError::Backend(format!(
                    "backend artifact download failed with HTTP {status}"
                )));
            }
            if response
                .content_length()
                .is_some_and(|n| n > MAX_ARTIFACT_BYTES)
            {
                return Err(conflict("backend artifact exceeds maximum size"));
            }
            let mut file = tokio::fs::File::create(temporary)
                .await
                .map_err(|_| failed())?;
            let mut digest = Sha256::new();
            let mut received = 0u64;
            let mut response = response;
            while let Some(chunk) = response.chunk().await.map_err(|_| failed())? {
                received += chunk.len() as u64;
                if received > MAX_ARTIFACT_BYTES {
                    return Err(conflict("backend artifact exceeds maximum size"));
                }
                digest.update(&chunk);
                tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                    .await
                    .map_err(|_| failed())?;
            }
            tokio::io::AsyncWriteExt::flush(&mut file)
                .await
                .map_err(|_| failed())?;
            if manifest::hex(&digest.finalize()) != sha {
                return Err(conflict(
                    "backend artifact checksum does not match manifest",
                ));
            }
            return Ok(());
        }
        Err(conflict("backend artifact redirect limit exceeded"))
    }

    /// Starts the prepared backend of `revision` and waits until it is ready, unhealthy or
    /// stopped.
    pub async fn start(&self, name: &str, revision: &str) -> Result<Status, CanvasError> {
        let slot = self.slot(name);
        let task = {
            let _op = slot.slot.op.lock().await;
            let disk = self.disk(name).await?;
            let current = Self::compose(name, &disk, &slot.slot);
            if matches!(current.state, "missing" | "unsupported") {
                return Ok(current);
            }
            let running = {
                let mut guard = slot.slot.rt();
                let rt = guard.get_or_insert_with(Runtime::new);
                if rt.alive() {
                    if rt.revision.as_deref() != Some(revision) {
                        return Err(conflict("a different backend revision is already running"));
                    }
                    Some(rt.start.clone())
                } else {
                    None
                }
            };
            match running {
                Some(None) => return self.refresh_unlocked(name, &slot.slot).await,
                Some(Some(task)) => Some(task),
                None => self.launch(name, revision, &disk, &slot.slot).await?,
            }
        };
        if let Some(task) = &task {
            task.done.cancelled().await;
        }
        let _op = slot.slot.op.lock().await;
        let unhealthy = {
            let mut guard = slot.slot.rt();
            match guard.as_mut() {
                Some(rt) => {
                    if let (Some(mine), Some(current)) = (&task, &rt.start) {
                        if mine.id == current.id {
                            rt.start = None;
                        }
                    }
                    rt.state == RunState::Unhealthy
                }
                None => false,
            }
        };
        if unhealthy {
            self.terminate(&slot.slot).await;
        }
        self.status_unlocked(name, &slot.slot).await
    }

    /// Spawns the backend (the app's lock held); answers its health wait, or `None` when it
    /// could not be spawned (the runtime then says why).
    async fn launch(
        &self,
        name: &str,
        revision: &str,
        disk: &DiskView,
        slot: &Arc<Slot>,
    ) -> Result<Option<StartTask>, CanvasError> {
        if disk.revision.as_deref() != Some(revision) {
            return Err(conflict(
                "approval revision does not match installed revision",
            ));
        }
        let prepared = disk
            .prepared
            .as_ref()
            .filter(|p| p.revision == revision)
            .ok_or_else(|| conflict("backend revision must be prepared before start"))?;
        let artifact_dir = PathBuf::from(&prepared.artifact_dir);
        let Some((backend, artifact, platform)) = Self::parts(disk.manifest.as_ref()) else {
            return Ok(None);
        };
        let backend = backend.clone();
        let expected = self
            .artifacts_dir
            .join(name)
            .join(&prepared.artifact_sha256);
        let (dir_ok, same_dir) = {
            let (a, e) = (artifact_dir.clone(), expected);
            blocking(move || {
                (
                    a.is_dir(),
                    super::source::resolve(&a) == super::source::resolve(&e),
                )
            })
            .await?
        };
        if !dir_ok {
            return Err(conflict("prepared backend artifact is missing"));
        }
        if prepared.platform != platform.as_str()
            || prepared.artifact_sha256 != artifact.sha256
            || !same_dir
        {
            return Err(conflict(
                "prepared backend metadata does not match manifest",
            ));
        }
        let had_process = slot.rt().as_ref().is_some_and(|rt| rt.child.is_some());
        if had_process {
            self.terminate(slot).await;
        }
        let package_root = super::source::resolve(&self.installed.dir().join(name));
        let data_dir = self.data_dir.join(name);
        let port = {
            let d = data_dir.clone();
            blocking(move || -> Result<u16, CanvasError> {
                std::fs::create_dir_all(&d).map_err(io)?;
                allocate_port().map_err(io)
            })
            .await??
        };
        let stop_requested = CancellationToken::new();
        let logs = {
            let mut guard = slot.rt();
            let rt = guard.get_or_insert_with(Runtime::new);
            rt.state = RunState::Starting;
            rt.detail = None;
            rt.port = Some(port);
            rt.revision = Some(revision.to_string());
            rt.logs = Arc::default();
            rt.stop_requested = stop_requested.clone();
            rt.exit = None;
            rt.logs.clone()
        };
        let spawned = {
            let (b, d, a, root) = (
                backend.clone(),
                data_dir.clone(),
                artifact_dir.clone(),
                package_root.clone(),
            );
            blocking(move || command(&b, port, &d, &a, &root)).await?
        };
        let child = spawned.and_then(|mut cmd| {
            cmd.spawn()
                .map_err(|e| python_os_error(&e, cmd.as_std().get_program()))
        });
        let mut child = match child {
            Ok(c) => c,
            Err(detail) => {
                tracing::warn!(app = %name, %detail, "canvas app backend did not start");
                if let Some(rt) = slot.rt().as_mut() {
                    rt.state = RunState::Unhealthy;
                    rt.detail = Some(detail);
                }
                self.terminate(slot).await;
                return Ok(None);
            }
        };
        let pid = child.id();
        tracing::info!(app = %name, pid, port, "canvas app backend started");
        if let Some(pid) = pid {
            let run_dir = self.run_dir.clone();
            let name = name.to_string();
            let _ = blocking(move || write_run_record(&run_dir, &name, pid)).await;
        }
        let mut drains = Vec::new();
        if let Some(out) = child.stdout.take() {
            drains.push(tokio::spawn(drain(out, b"[stdout] ", logs.clone())));
        }
        if let Some(err) = child.stderr.take() {
            drains.push(tokio::spawn(drain(err, b"[stderr] ", logs)));
        }
        // The process is recorded before its health wait starts (the wait checks it).
        if let Some(rt) = slot.rt().as_mut() {
            rt.child = Some(child);
            rt.pid = pid;
            rt.drains = drains;
        }
        let done = CancellationToken::new();
        let id = self.next_task.fetch_add(1, Ordering::Relaxed);
        let handle = tokio::spawn(await_healthy(
            slot.clone(),
            self.probe.clone(),
            backend.health.clone(),
            port,
            stop_requested,
            done.clone(),
        ));
        let task = StartTask {
            id,
            done,
            abort: handle.abort_handle(),
        };
        if let Some(rt) = slot.rt().as_mut() {
            rt.start = Some(task.clone());
        }
        Ok(Some(task))
    }

    /// Stops the process group (SIGTERM, SIGKILL after [`STOP_TIMEOUT`]), reaps it and
    /// forgets the process; the app's lock is held.
    async fn terminate(&self, slot: &Slot) {
        let (pid, exited) = {
            let mut guard = slot.rt();
            let Some(rt) = guard.as_mut() else {
                return;
            };
            if rt.child.is_none() {
                return;
            }
            (rt.pid, rt.poll_exit().is_some())
        };
        if let Some(pgid) = pid {
            if !exited {
                signal_group(pgid, Signal::SIGTERM);
                if !wait_group_exit(slot, pgid, STOP_TIMEOUT).await {
                    signal_group(pgid, Signal::SIGKILL);
                    wait_group_exit(slot, pgid, STOP_TIMEOUT).await;
                }
            } else if group_alive(pgid) {
                signal_group(pgid, Signal::SIGKILL);
                wait_group_exit(slot, pgid, STOP_TIMEOUT).await;
            }
        }
        let (child, drains) = {
            let mut guard = slot.rt();
            match guard.as_mut() {
                Some(rt) => (rt.child.take(), std::mem::take(&mut rt.drains)),
                None => (None, Vec::new()),
            }
        };
        let mut exit = None;
        if let Some(mut child) = child {
            // Bounded: a process that survives SIGKILL (stuck in the kernel) is left to the
            // runtime's reaper rather than holding the app's lock.
            if let Ok(Ok(status)) = tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
                exit = Some(exit_code(status));
            }
        }
        for mut drain in drains {
            if tokio::time::timeout(DRAIN_WAIT, &mut drain).await.is_err() {
                drain.abort();
            }
        }
        if let Some(pgid) = pid {
            let _ = tokio::fs::remove_file(self.run_dir.join(format!("{pgid}.json"))).await;
        }
        if let Some(rt) = slot.rt().as_mut() {
            rt.exit = rt.exit.or(exit);
            rt.pid = None;
            rt.port = None;
        }
    }

    /// Stops a backend (idempotent); its health wait, if any, is abandoned.
    pub async fn stop(&self, name: &str) -> Result<Status, CanvasError> {
        let slot = self.slot(name);
        let (status, task) = {
            let _op = slot.slot.op.lock().await;
            let task = {
                let mut guard = slot.slot.rt();
                match guard.as_mut() {
                    Some(rt) => {
                        rt.stop_requested.cancel();
                        let task = rt.start.take();
                        if let Some(t) = &task {
                            t.abort.abort();
                        }
                        Some(task)
                    }
                    None => None,
                }
            };
            if task.is_some() {
                self.terminate(&slot.slot).await;
                if let Some(rt) = slot.slot.rt().as_mut() {
                    rt.state = RunState::Stopped;
                    rt.detail = None;
                }
                tracing::info!(app = %name, "canvas app backend stopped");
            }
            (
                self.status_unlocked(name, &slot.slot).await?,
                task.flatten(),
            )
        };
        if let Some(task) = task {
            task.done.cancelled().await;
        }
        Ok(status)
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

    /// Kills backends a server that died without stopping them left running (their run
    /// records name them), before anything is served. Blocking.
    pub fn reap_orphans(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.run_dir) else {
            return 0;
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        let mut killed = 0;
        for path in paths {
            let record = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| RunRecord::from_json(&v));
            let Some(record) = record else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            if process_start_time(record.server_pid) == Some(record.server_start_time) {
                continue; // Its server still runs and owns it.
            }
            if self.is_recorded_backend(&record) {
                killed += 1;
                signal_group(record.pgid, Signal::SIGTERM);
                if !wait_gone_blocking(record.pgid, STOP_TIMEOUT) {
                    signal_group(record.pgid, Signal::SIGKILL);
                    wait_gone_blocking(record.pgid, STOP_TIMEOUT);
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        killed
    }

    fn is_recorded_backend(&self, record: &RunRecord) -> bool {
        if process_start_time(record.pgid) != Some(record.start_time) {
            return false;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", record.pgid)) else {
            return false;
        };
        let prefix = format!(
            "{}/",
            super::source::resolve(&self.artifacts_dir.join(&record.name)).display()
        );
        cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).starts_with(&prefix))
    }
}

/// Polls until the process group `pgid` is gone (reaping the leader); `false` on timeout.
async fn wait_group_exit(slot: &Slot, pgid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(rt) = slot.rt().as_mut() {
            rt.poll_exit();
        }
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(STOP_POLL).await;
    }
}

fn wait_gone_blocking(pgid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(STOP_POLL);
    }
}

/// Waits for a starting backend to answer its health probe (its own task, so the app's lock
/// stays free); sets the runtime's state when done.
async fn await_healthy(
    slot: Arc<Slot>,
    client: reqwest::Client,
    health: manifest::Health,
    port: u16,
    stop: CancellationToken,
    done: CancellationToken,
) {
    // Whatever ends this wait (also an abort), waiters are released.
    let _done = done.drop_guard();
    let deadline = Instant::now() + crate::util::duration_from_secs(health.timeout_seconds);
    let interval = crate::util::duration_from_secs(health.interval_seconds);
    let url = format!("http://127.0.0.1:{port}{}", health.path);
    let outcome: Result<(), String> = loop {
        if Instant::now() >= deadline {
            break Err("backend health check timed out".into());
        }
        if stop.is_cancelled() {
            return;
        }
        let exited = {
            let mut guard = slot.rt();
            match guard.as_mut() {
                Some(rt) if rt.child.is_some() => rt.poll_exit().map(|c| c.to_string()),
                _ => Some("None".to_string()),
            }
        };
        if let Some(code) = exited {
            break Err(format!("backend exited with code {code}"));
        }
        let ok = tokio::select! {
            r = client.get(&url).send() => r.is_ok_and(|r| (200..400).contains(&r.status().as_u16())),
            _ = stop.cancelled() => return,
        };
        if ok {
            break Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    };
    if let Some(rt) = slot.rt().as_mut() {
        match outcome {
            _ if stop.is_cancelled() => {
                rt.state = RunState::Stopped;
                rt.detail = None;
            }
            Ok(()) => {
                rt.state = RunState::Ready;
                rt.detail = None;
            }
            Err(detail) => {
                rt.state = RunState::Unhealthy;
                rt.detail = Some(detail);
            }
        }
    }
}

/// Reads one output pipe of a backend into its log buffer, chunk by chunk.
async fn drain(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    label: &'static [u8],
    logs: Arc<Mutex<LogBuffer>>,
) {
    let mut buf = vec![0u8; LOG_CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut entry = Vec::with_capacity(label.len() + n);
                entry.extend_from_slice(label);
                entry.extend_from_slice(&buf[..n]);
                logs.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
            }
        }
    }
}

/// The backend command: placeholders filled in, the executable resolved inside the artifact,
/// the package as working directory, only the allowed environment plus `HOME`. Blocking.
fn command(
    backend: &Backend,
    port: u16,
    data_dir: &Path,
    artifact_dir: &Path,
    package_root: &Path,
) -> Result<tokio::process::Command, String> {
    let replacements = [
        ("{port}", port.to_string()),
        ("{data_dir}", data_dir.to_string_lossy().into_owned()),
        (
            "{artifact_dir}",
            artifact_dir.to_string_lossy().into_owned(),
        ),
    ];
    let mut argv: Vec<String> = backend
        .argv
        .iter()
        .map(|arg| {
            replacements
                .iter()
                .fold(arg.clone(), |a, (k, v)| a.replace(k, v))
        })
        .collect();
    let root = super::source::resolve(artifact_dir);
    let executable = super::source::resolve(Path::new(&argv[0]));
    let executable_ok = executable.starts_with(&root)
        && executable.is_file()
        && nix::unistd::access(&executable, nix::unistd::AccessFlags::X_OK).is_ok();
    if !executable_ok {
        return Err(
            "backend executable must be an executable regular file inside the prepared artifact"
                .into(),
        );
    }
    argv[0] = executable.to_string_lossy().into_owned();
    let home = data_dir.join("home");
    std::fs::create_dir_all(&home).map_err(|e| python_os_error(&e, home.as_os_str()))?;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(package_root)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    for var in &backend.inherit_environment {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd.env("HOME", &home);
    // The server's marker (exec::orphans): a server started on this state kills it if this
    // server dies without stopping it.
    for (key, value) in crate::util::child_env().iter() {
        if key == crate::exec::orphans::MARKER {
            cmd.env(key, value);
        }
    }
    Ok(cmd)
}

/// An OS error worded like Python's `OSError` (`[Errno 2] No such file or directory: 'x'`).
fn python_os_error(e: &std::io::Error, path: &std::ffi::OsStr) -> String {
    match e.raw_os_error() {
        Some(code) => format!(
            "[Errno {code}] {}: '{}'",
            nix::errno::Errno::from_raw(code).desc(),
            path.to_string_lossy()
        ),
        None => e.to_string(),
    }
}

/// A free loopback port (bound, read, released).
fn allocate_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut digest = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    Ok(manifest::hex(&digest.finalize()))
}

/// Why unpacking an artifact failed.
#[derive(Debug)]
enum Unpack {
    /// The reference's 409 wording.
    Refused(&'static str),
    /// The archive could not be read as gzip-compressed tar.
    Corrupt,
    Io(std::io::Error),
}

/// Unpacks `archive` into `target` (`artifacts/<name>/<sha>`) unless it is already there:
/// into a hidden temporary directory first, then renamed. Blocking.
fn unpack_once(archive: &Path, target: &Path, sha: &str, strip: u32) -> Result<(), CanvasError> {
    if target.exists() {
        return Ok(());
    }
    let parent = target.parent().ok_or_else(|| io("artifact directory"))?;
    std::fs::create_dir_all(parent).map_err(io)?;
    let temporary = parent.join(format!(".{sha}.{}", &crate::util::hex_id()[..8]));
    std::fs::create_dir(&temporary).map_err(io)?;
    let result = extract(archive, &temporary, strip);
    let outcome = match result {
        Ok(()) => match std::fs::rename(&temporary, target) {
            Ok(()) => Ok(()),
            Err(_) if target.is_dir() => Ok(()),
            Err(e) => Err(io(e)),
        },
        Err(Unpack::Refused(msg)) => Err(conflict(msg)),
        Err(Unpack::Corrupt) => Err(conflict("backend artifact is not a valid gzip tar archive")),
        Err(Unpack::Io(e)) => Err(io(e)),
    };
    if temporary.exists() {
        make_writable(&temporary);
        let _ = std::fs::remove_dir_all(&temporary);
    }
    outcome
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&entry.path());
            }
        }
    }
}

/// Extracts a gzip tar into `root`: only regular files and directories, no absolute or `..`
/// names, no duplicates, `strip` leading components removed; files keep `mode & 0o555` and
/// every directory ends read-only (0555).
fn extract(archive: &Path, root: &Path, strip: u32) -> Result<(), Unpack> {
    use std::os::unix::fs::PermissionsExt;
    let unsafe_entry = Unpack::Refused("backend artifact contains an unsafe archive entry");
    let file = std::fs::File::open(archive).map_err(Unpack::Io)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let root = std::fs::canonicalize(root).map_err(Unpack::Io)?;
    let mut seen: Vec<String> = Vec::new();
    let mut extracted = 0usize;
    for entry in tar.entries().map_err(|_| Unpack::Corrupt)? {
        let mut entry = entry.map_err(|_| Unpack::Corrupt)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let parts: Vec<&str> = raw
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if raw.starts_with('/') || parts.contains(&"..") {
            return Err(unsafe_entry);
        }
        let Some(kept) = parts.get(strip as usize..).filter(|k| !k.is_empty()) else {
            continue;
        };
        let relative = kept.join("/");
        let is_file = matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
        );
        let is_dir = kind == tar::EntryType::Directory;
        if seen.contains(&relative) || !(is_file || is_dir) {
            return Err(unsafe_entry);
        }
        seen.push(relative.clone());
        let target = super::source::resolve(&root.join(&relative));
        if !target.starts_with(&root) {
            return Err(unsafe_entry);
        }
        if is_dir {
            std::fs::create_dir_all(&target).map_err(Unpack::Io)?;
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(Unpack::Io)?;
            }
            let mode = entry.header().mode().map_err(|_| Unpack::Corrupt)? & 0o555;
            let mut out = std::fs::File::create(&target).map_err(Unpack::Io)?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = entry.read(&mut buf).map_err(|_| Unpack::Corrupt)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).map_err(Unpack::Io)?;
            }
            drop(out);
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .map_err(Unpack::Io)?;
        }
        extracted += 1;
    }
    if extracted == 0 {
        return Err(Unpack::Refused(
            "backend artifact contains no files after stripping",
        ));
    }
    // Every directory read-only, deepest first (their parents stay writable until then).
    let mut all_dirs = Vec::new();
    collect_dirs(&root, &mut all_dirs);
    all_dirs.sort();
    for dir in all_dirs.iter().rev() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555))
            .map_err(Unpack::Io)?;
    }
    Ok(())
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

/// `run/<pgid>.json`: which server started which backend process group.
#[derive(Debug, Clone, PartialEq)]
struct RunRecord {
    name: String,
    pgid: u32,
    start_time: u64,
    server_pid: u32,
    server_start_time: u64,
}

impl RunRecord {
    fn from_json(v: &Value) -> Option<Self> {
        let int = |k: &str| v.get(k).and_then(Value::as_u64);
        Some(RunRecord {
            name: v.get("name")?.as_str()?.to_string(),
            pgid: u32::try_from(int("pgid")?).ok()?,
            start_time: int("start_time")?,
            server_pid: u32::try_from(int("server_pid")?).ok()?,
            server_start_time: int("server_start_time")?,
        })
    }
}

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(19)?.parse().ok()
}

fn write_run_record(run_dir: &Path, name: &str, pgid: u32) {
    let me = std::process::id();
    let (Some(start_time), Some(server_start_time)) =
        (process_start_time(pgid), process_start_time(me))
    else {
        return;
    };
    let record = json!({
        "name": name,
        "pgid": pgid,
        "start_time": start_time,
        "server_pid": me,
        "server_start_time": server_start_time,
    });
    if std::fs::create_dir_all(run_dir).is_ok() {
        let path = run_dir.join(format!("{pgid}.json"));
        if let Err(e) =
            crate::conversation::store::write_atomic(&path, record.to_string().as_bytes())
        {
            tracing::warn!(error = %e, "cannot write canvas app backend run record");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn tgz(members: &[(&str, &[u8], u32, tar::EntryType)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for (name, data, mode, kind) in members {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(data.len() as u64);
            header.set_mode(*mode);
            if *kind == tar::EntryType::Symlink {
                header.set_link_name("/etc/passwd").unwrap();
            }
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn artifacts_unpack_read_only_and_refuse_unsafe_entries() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.tar.gz");
        std::fs::write(
            &good,
            tgz(&[
                (
                    "pkg/bin/run",
                    b"#!/bin/sh\n",
                    0o777,
                    tar::EntryType::Regular,
                ),
                ("pkg/README", b"hi", 0o644, tar::EntryType::Regular),
            ]),
        )
        .unwrap();
        let target = dir.path().join("a/sha");
        unpack_once(&good, &target, "sha", 1).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&target.join("bin/run")), 0o555);
        assert_eq!(mode(&target.join("README")), 0o444);
        assert_eq!(mode(&target.join("bin")), 0o555);
        assert_eq!(mode(&target), 0o555);
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(dir.path().join("a")).unwrap().count(), 1);

        let bad = |members: &[(&str, &[u8], u32, tar::EntryType)], strip: u32| {
            let path = dir.path().join("bad.tar.gz");
            std::fs::write(&path, tgz(members)).unwrap();
            let target = dir.path().join(format!("b/{}", crate::util::hex_id()));
            match unpack_once(&path, &target, "x", strip) {
                Err(CanvasError::Backend(m)) => m,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            bad(&[("link", b"", 0o777, tar::EntryType::Symlink)], 0),
            "backend artifact contains an unsafe archive entry"
        );
        assert_eq!(
            bad(
                &[
                    ("a", b"1", 0o644, tar::EntryType::Regular),
                    ("./a", b"2", 0o644, tar::EntryType::Regular)
                ],
                0
            ),
            "backend artifact contains an unsafe archive entry"
        );
        assert_eq!(
            bad(&[("top", b"1", 0o644, tar::EntryType::Regular)], 1),
            "backend artifact contains no files after stripping"
        );
        std::fs::write(dir.path().join("junk.tar.gz"), b"not a tarball").unwrap();
        let e = unpack_once(
            &dir.path().join("junk.tar.gz"),
            &dir.path().join("c/x"),
            "x",
            0,
        );
        assert!(
            matches!(&e, Err(CanvasError::Backend(m)) if m == "backend artifact is not a valid gzip tar archive"),
            "{e:?}"
        );
    }

    #[test]
    fn run_records_of_a_dead_server_get_their_backends_killed() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let installed = Arc::new(Installed::new(&root.join("p")));
        let backends = Backends::new(installed, &root.join("backends"));
        let artifact = root.join("backends/artifacts/app/abc");
        std::fs::create_dir_all(&artifact).unwrap();
        let spawn = |arg0: &Path| {
            let mut cmd = std::process::Command::new("sh");
            cmd.arg("-c").arg("sleep 300").arg(arg0);
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            cmd.spawn().unwrap()
        };
        // A dead server: a finished process's pid and a start time that cannot match.
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = gone.id();
        gone.wait().unwrap();
        let backend = spawn(&artifact.join("run"));
        let mut stranger = spawn(&root.join("elsewhere/run"));
        std::thread::sleep(Duration::from_millis(100));
        let run_dir = root.join("backends/run");
        for (child, name) in [(&backend, "app"), (&stranger, "app")] {
            let pgid = child.id();
            let record = json!({"name": name, "pgid": pgid,
                "start_time": process_start_time(pgid).unwrap(), "server_pid": dead_pid,
                "server_start_time": 1});
            std::fs::create_dir_all(&run_dir).unwrap();
            std::fs::write(run_dir.join(format!("{pgid}.json")), record.to_string()).unwrap();
        }
        std::fs::write(run_dir.join("junk.json"), "{").unwrap();
        // A record whose server still runs (this process) is left alone.
        let me = std::process::id();
        let mine = json!({"name": "app", "pgid": 1, "start_time": 1, "server_pid": me,
            "server_start_time": process_start_time(me).unwrap()});
        std::fs::write(run_dir.join("1.json"), mine.to_string()).unwrap();

        // Reaped as soon as it dies, as init reaps a dead server's orphans.
        let mut backend = backend;
        let waiter = std::thread::spawn(move || backend.wait().unwrap());
        let started = Instant::now();
        assert_eq!(backends.reap_orphans(), 1);
        assert!(started.elapsed() < STOP_TIMEOUT, "SIGTERM was enough");
        let status = waiter.join().unwrap();
        assert!(status.signal().is_some(), "the backend was killed");
        assert!(
            stranger.try_wait().unwrap().is_none(),
            "an unrelated process survived"
        );
        let left: Vec<String> = std::fs::read_dir(&run_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, ["1.json"]);
        let _ = stranger.kill();
        let _ = stranger.wait();
    }

    #[test]
    fn the_log_buffer_keeps_the_newest_bytes() {
        let mut logs = LogBuffer::default();
        for _ in 0..40 {
            logs.push(vec![b'x'; 8192]);
        }
        assert!(logs.bytes <= MAX_LOG_BYTES);
        assert!(logs.truncated);
        assert_eq!(logs.chunks.len(), MAX_LOG_BYTES / 8192);
    }
}
