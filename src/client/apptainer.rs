//! [`ApptainerWorkspace`]: runs the agent server from a SIF with `apptainer run`, unprivileged,
//! on host networking with a free port (HPC clusters, no daemon).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use super::guard::{self, Release};
use super::workspace::{RemoteWorkspace, WorkspaceOptions};
use super::ClientError;

/// Where the SIF comes from.
#[derive(Debug, Clone)]
pub enum SifSource {
    /// An existing SIF file.
    File(PathBuf),
    /// An image URI converted with `apptainer pull`: `docker://ref`, `docker-daemon://ref:tag`
    /// (a local Docker image, no registry), `oras://…`; a bare reference means `docker://`.
    Image(String),
    /// A definition file (e.g. the repository's `apptainer.def`) built with `apptainer build`.
    Definition(PathBuf),
}

/// Options of [`ApptainerWorkspace::start`].
#[derive(Debug, Clone)]
pub struct ApptainerOptions {
    pub source: SifSource,
    /// Port the server binds on the host; `None` picks a free one.
    pub host_port: Option<u16>,
    /// Names of variables of this process forwarded into the container.
    pub forward_env: Vec<String>,
    /// Extra `NAME=VALUE` variables for the container.
    pub env: Vec<(String, String)>,
    /// `--bind <mount_dir>:/workspace`.
    pub mount_dir: Option<PathBuf>,
    /// Extra `--bind src[:dst[:opts]]` (plus comma-separated `$OPENHANDS_APPTAINER_EXTRA_BINDS`).
    pub extra_bind_mounts: Vec<String>,
    /// Copy the server's output to stderr prefixed with `[APPTAINER] ` (else it is discarded).
    pub detach_logs: bool,
    /// Only checks that `host_port + 1` is free (host networking maps nothing).
    pub extra_ports: bool,
    /// `--nv`.
    pub enable_gpu: bool,
    /// Where converted SIFs are cached (default `~/.apptainer_cache`).
    pub cache_dir: Option<PathBuf>,
    /// `--fakeroot` (off by default: many clusters do not allow it).
    pub use_fakeroot: bool,
    /// `--compat` (contained, clean environment, private PID/IPC namespaces, writable tmpfs
    /// overlay on the read-only image).
    pub enable_docker_compat: bool,
    /// `--no-mount <loc>` for each.
    pub disable_mount_locations: Vec<String>,
    pub health_check_timeout: Duration,
    pub working_dir: String,
    /// Session key; `None` uses `$OH_SESSION_API_KEYS_0`, else `$SESSION_API_KEY`.
    pub api_key: Option<String>,
    /// The apptainer executable.
    pub apptainer: String,
}

impl ApptainerOptions {
    /// Options with the defaults for `source`.
    pub fn new(source: SifSource) -> Self {
        ApptainerOptions {
            source,
            host_port: None,
            forward_env: vec![
                "DEBUG".into(),
                "SESSION_API_KEY".into(),
                "OH_SESSION_API_KEYS_0".into(),
            ],
            env: Vec::new(),
            mount_dir: None,
            extra_bind_mounts: Vec::new(),
            detach_logs: true,
            extra_ports: false,
            enable_gpu: false,
            cache_dir: None,
            use_fakeroot: false,
            enable_docker_compat: true,
            disable_mount_locations: vec!["hostfs".into(), "bind-paths".into(), "tmp".into()],
            health_check_timeout: Duration::from_secs(120),
            working_dir: "/workspace".into(),
            api_key: None,
            apptainer: "apptainer".into(),
        }
    }
}

/// A running `apptainer run` of the agent server. Derefs to its [`RemoteWorkspace`].
#[derive(Debug)]
pub struct ApptainerWorkspace {
    workspace: RemoteWorkspace,
    child: Option<Child>,
    pgid: Option<i32>,
    sif: PathBuf,
    host_port: u16,
    ticket: Option<u64>,
    logs: Option<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for ApptainerWorkspace {
    type Target = RemoteWorkspace;
    fn deref(&self) -> &RemoteWorkspace {
        &self.workspace
    }
}

impl ApptainerWorkspace {
    /// Prepares the SIF, starts the server, waits for `/health`; kills it again on failure.
    pub async fn start(opts: ApptainerOptions) -> Result<Self, ClientError> {
        if let SifSource::File(p) = &opts.source {
            if !tokio::fs::try_exists(p).await.unwrap_or(false) {
                return Err(ClientError::Invalid(format!(
                    "SIF file not found: {}",
                    p.display()
                )));
            }
        }
        let host_port = guard::choose_port(opts.host_port, opts.extra_ports)?;
        let ok = Command::new(&opts.apptainer)
            .arg("version")
            .stdin(Stdio::null())
            .output()
            .await
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return Err(ClientError::Tool(
                "Apptainer is not available. Please install Apptainer \
                 (https://apptainer.org/docs/user/main/quick_start.html)"
                    .into(),
            ));
        }
        let sif = prepare_sif(&opts).await?;
        let args = run_args(&opts, &sif, host_port);
        let api_key = opts.api_key.clone().or_else(|| {
            std::env::var("OH_SESSION_API_KEYS_0")
                .ok()
                .or_else(|| std::env::var("SESSION_API_KEY").ok())
                .filter(|k| !k.is_empty())
        });
        let mut cmd = Command::new(&opts.apptainer);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // Values go through APPTAINERENV_* so they never appear on a command line.
        for (k, v) in guard::forwarded_env(&opts.forward_env)
            .into_iter()
            .chain(opts.env.iter().cloned())
        {
            cmd.env(format!("APPTAINERENV_{k}"), v);
        }
        if let Some(k) = &api_key {
            cmd.env("APPTAINERENV_SESSION_API_KEY", k);
            cmd.env("APPTAINERENV_OH_SESSION_API_KEYS_0", k);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| ClientError::Tool(format!("cannot run {}: {e}", opts.apptainer)))?;
        let pgid = child.id().map(|p| p as i32);
        let ticket = pgid.map(|g| guard::register(Box::new(move || kill_group(g)) as Release));
        let out = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>);
        let err = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn AsyncRead + Unpin + Send>);
        let logs = Some(spawn_log_copy(out, err, opts.detach_logs));
        let mut wopts = WorkspaceOptions::new(format!("http://localhost:{host_port}"));
        wopts.api_key = api_key;
        wopts.working_dir = opts.working_dir.clone();
        let mut ws = ApptainerWorkspace {
            workspace: RemoteWorkspace::with_options(wopts)?,
            child: Some(child),
            pgid,
            sif,
            host_port,
            ticket,
            logs,
        };
        let health = format!("http://127.0.0.1:{host_port}");
        let res = {
            let child = &mut ws.child;
            let exited = std::sync::Mutex::new(child);
            guard::wait_healthy(&health, opts.health_check_timeout, || {
                let status = exited
                    .lock()
                    .ok()
                    .and_then(|mut c| c.as_mut().and_then(|c| c.try_wait().ok().flatten()));
                async move {
                    match status {
                        Some(s) => Err(ClientError::Failed(format!(
                            "Container process stopped unexpectedly with exit code {}",
                            s.code().unwrap_or(-1)
                        ))),
                        None => Ok(()),
                    }
                }
            })
            .await
        };
        if let Err(e) = res {
            ws.stop_now();
            return Err(e);
        }
        Ok(ws)
    }

    /// The SIF the server runs from.
    pub fn sif(&self) -> &Path {
        &self.sif
    }

    /// Host port of the server.
    pub fn host_port(&self) -> u16 {
        self.host_port
    }

    /// The workspace API.
    pub fn workspace(&self) -> &RemoteWorkspace {
        &self.workspace
    }

    /// Not supported by Apptainer (as in the reference).
    pub async fn pause(&self) -> Result<(), ClientError> {
        Err(ClientError::State(
            "ApptainerWorkspace does not support pause()".into(),
        ))
    }

    /// Terminates the process group (SIGTERM, SIGKILL after 5 s) and reaps it.
    pub async fn cleanup(&mut self) -> Result<(), ClientError> {
        if let Some(t) = self.ticket.take() {
            guard::unregister(t);
        }
        if let (Some(g), Some(mut child)) = (self.pgid.take(), self.child.take()) {
            let _ = killpg(Pid::from_raw(g), Signal::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            }
            // Stragglers that left the leader behind.
            let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
        }
        if let Some(l) = self.logs.take() {
            l.abort();
        }
        Ok(())
    }

    fn stop_now(&mut self) {
        if let Some(t) = self.ticket.take() {
            guard::unregister(t);
        }
        if let Some(g) = self.pgid.take() {
            let _ = killpg(Pid::from_raw(g), Signal::SIGTERM);
            if let Some(child) = self.child.as_mut() {
                for _ in 0..50 {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
            if let Some(child) = self.child.as_mut() {
                for _ in 0..20 {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        self.child = None;
        if let Some(l) = self.logs.take() {
            l.abort();
        }
    }
}

impl Drop for ApptainerWorkspace {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Signal-time release: SIGTERM the group, give it 2 s, then SIGKILL.
fn kill_group(pgid: i32) {
    let pid = Pid::from_raw(pgid);
    if killpg(pid, Signal::SIGTERM).is_err() {
        return;
    }
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        if killpg(pid, None).is_err() {
            return;
        }
    }
    let _ = killpg(pid, Signal::SIGKILL);
}

/// The `apptainer run` arguments (without the environment, which travels as `APPTAINERENV_*`).
pub(crate) fn run_args(opts: &ApptainerOptions, sif: &Path, port: u16) -> Vec<String> {
    let mut a = vec!["run".to_string()];
    if opts.use_fakeroot {
        a.push("--fakeroot".into());
    }
    if opts.enable_docker_compat {
        a.push("--compat".into());
    }
    if opts.enable_gpu {
        a.push("--nv".into());
    }
    for loc in &opts.disable_mount_locations {
        a.push("--no-mount".into());
        a.push(loc.clone());
    }
    if let Some(d) = &opts.mount_dir {
        a.push("--bind".into());
        a.push(format!("{}:/workspace", d.display()));
    }
    let from_env = std::env::var("OPENHANDS_APPTAINER_EXTRA_BINDS").unwrap_or_default();
    for b in opts
        .extra_bind_mounts
        .iter()
        .map(String::as_str)
        .chain(from_env.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
    {
        a.push("--bind".into());
        a.push(b.to_string());
    }
    a.push(sif.display().to_string());
    a.extend([
        "--host".into(),
        "0.0.0.0".into(),
        "--port".into(),
        port.to_string(),
    ]);
    a
}

/// Returns a SIF path, converting or building (into the cache, atomically) when needed.
async fn prepare_sif(opts: &ApptainerOptions) -> Result<PathBuf, ClientError> {
    let (uri, def) = match &opts.source {
        SifSource::File(p) => return Ok(p.clone()),
        SifSource::Image(i) if i.contains("://") => (i.clone(), None),
        SifSource::Image(i) => (format!("docker://{i}"), None),
        SifSource::Definition(d) => (d.display().to_string(), Some(d.clone())),
    };
    let cache = match &opts.cache_dir {
        Some(c) => c.clone(),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join(".apptainer_cache"),
    };
    tokio::fs::create_dir_all(&cache)
        .await
        .map_err(|e| ClientError::Io {
            path: cache.display().to_string(),
            source: e,
        })?;
    let key = match &def {
        // A definition is keyed by its content so that an edited file is rebuilt.
        Some(d) => {
            let text = tokio::fs::read(d).await.map_err(|e| ClientError::Io {
                path: d.display().to_string(),
                source: e,
            })?;
            format!("def_{:016x}", fnv1a(&text))
        }
        None => uri.replacen("://", "_", 1).replace(['/', ':', '@'], "_"),
    };
    let sif = cache.join(format!("{key}.sif"));
    if tokio::fs::try_exists(&sif).await.unwrap_or(false) {
        return Ok(sif);
    }
    // Written under a temporary name and renamed, so a half-written SIF is never reused.
    let tmp = cache.join(format!(".{key}.{}.tmp.sif", uuid::Uuid::new_v4().simple()));
    let mut cmd = Command::new(&opts.apptainer);
    if def.is_some() {
        cmd.arg("build");
        if opts.use_fakeroot {
            cmd.arg("--fakeroot");
        }
        cmd.arg(&tmp).arg(&uri);
    } else {
        cmd.arg("pull").arg(&tmp).arg(&uri);
    }
    let out = cmd
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| ClientError::Tool(format!("cannot run {}: {e}", opts.apptainer)))?;
    if !out.status.success() {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(ClientError::Failed(format!(
            "Failed to pull and convert Docker image: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    tokio::fs::rename(&tmp, &sif)
        .await
        .map_err(|e| ClientError::Io {
            path: sif.display().to_string(),
            source: e,
        })?;
    Ok(sif)
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// Drains the server's output (always, so a full pipe never blocks it), copying it to stderr
/// with an `[APPTAINER] ` prefix when `show` is set.
fn spawn_log_copy(
    out: Option<Box<dyn AsyncRead + Unpin + Send>>,
    err: Option<Box<dyn AsyncRead + Unpin + Send>>,
    show: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let copy = |r: Option<Box<dyn AsyncRead + Unpin + Send>>| async move {
            if let Some(r) = r {
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    if show {
                        eprintln!("[APPTAINER] {l}");
                    }
                }
            }
        };
        tokio::join!(copy(out), copy(err));
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn run_arguments_follow_the_cli_grammar() {
        let mut o = ApptainerOptions::new(SifSource::File("/x.sif".into()));
        o.enable_gpu = true;
        o.mount_dir = Some("/data".into());
        o.extra_bind_mounts = vec!["/a:/b:ro".into()];
        let a = run_args(&o, Path::new("/c/x.sif"), 31000);
        assert_eq!(
            a.join(" "),
            "run --compat --nv --no-mount hostfs --no-mount bind-paths --no-mount tmp \
             --bind /data:/workspace --bind /a:/b:ro /c/x.sif --host 0.0.0.0 --port 31000"
        );
    }
}
