//! [`DockerWorkspace`]: runs the agent server in a local Docker container.
//!
//! Docker is driven through its CLI rather than the Engine API (bollard): the CLI honours the
//! user's `DOCKER_HOST`, contexts, credential helpers and buildx/BuildKit configuration exactly as
//! `docker run` does, adds no dependency tree to the server binary, and keeps the launcher's
//! behaviour identical to the Python SDK's (which shells out too), so errors read the same.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::guard::{self, Release};
use super::workspace::{RemoteWorkspace, WorkspaceOptions};
use super::ClientError;

/// Building the image from a Dockerfile instead of using a ready `server_image`.
#[derive(Debug, Clone)]
pub struct DockerBuild {
    /// Build context directory.
    pub context: PathBuf,
    /// Dockerfile (default `<context>/Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// `--target` stage.
    pub target: Option<String>,
    /// `--build-arg NAME=VALUE` pairs.
    pub build_args: Vec<(String, String)>,
    /// Tag given to the built image.
    pub tag: String,
}

/// Options of [`DockerWorkspace::start`] (the Python launcher's fields, plus a few).
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Image to run (ignored when `build` is set).
    pub server_image: Option<String>,
    /// Build the image first.
    pub build: Option<DockerBuild>,
    /// Host port published (on 127.0.0.1) for container port 8000; `None` picks a free one.
    pub host_port: Option<u16>,
    /// Names of variables of this process forwarded into the container.
    pub forward_env: Vec<String>,
    /// Extra `NAME=VALUE` variables for the container.
    pub env: Vec<(String, String)>,
    /// `-v` specs, passed verbatim (`/host/dir:/workspace[:ro]`).
    pub volumes: Vec<String>,
    /// Also publish container port 8001 (VS Code) on `host_port + 1`.
    pub extra_ports: bool,
    /// `--platform`; `None` runs the native platform (the reference forces `linux/amd64`).
    pub platform: Option<String>,
    /// `--gpus all`.
    pub enable_gpu: bool,
    /// `--network`; `host` makes the server bind `127.0.0.1:<host_port>` of the host directly.
    pub network: Option<String>,
    /// Health wait at start and after `resume()`.
    pub health_check_timeout: Duration,
    /// Working directory for relative git paths.
    pub working_dir: String,
    /// URL to use instead of `http://127.0.0.1:<host_port>`.
    pub host: Option<String>,
    /// Copy the container's log to stderr prefixed with `[DOCKER] `.
    pub detach_logs: bool,
    /// Leave the container running when this value is dropped or cleaned up.
    pub keep_alive: bool,
    /// `docker rmi -f <image>` on cleanup.
    pub cleanup_image: bool,
    /// Session key for the server; `None` uses `$OH_SESSION_API_KEYS_0`, else `$SESSION_API_KEY`.
    pub api_key: Option<String>,
    /// Container name (default `agent-server-<uuid>`).
    pub name: Option<String>,
    /// Extra `docker run` arguments placed before the image.
    pub extra_run_args: Vec<String>,
    /// `--ulimit nofile=N:N` (reference: 65536); dropped when the daemon cannot grant it.
    pub ulimit_nofile: Option<u64>,
    /// The docker executable.
    pub docker: String,
    /// `--user UID[:GID]` for the server. `None`: the image's user (10001), unless
    /// `map_mount_owner` picks the owner of a mounted directory.
    pub user: Option<String>,
    /// With no `user`, run the server as the owner of the first writable bind-mounted host
    /// directory when that owner is not root, so the server can write the mounted workspace
    /// (`HOME` is then `/tmp`, as such a uid has no home in the image).
    pub map_mount_owner: bool,
}

impl Default for DockerOptions {
    fn default() -> Self {
        DockerOptions {
            server_image: None,
            build: None,
            host_port: None,
            forward_env: vec![
                "DEBUG".into(),
                "SESSION_API_KEY".into(),
                "OH_SESSION_API_KEYS_0".into(),
            ],
            env: Vec::new(),
            volumes: Vec::new(),
            extra_ports: false,
            platform: None,
            enable_gpu: false,
            network: None,
            health_check_timeout: Duration::from_secs(120),
            working_dir: "/workspace".into(),
            host: None,
            user: None,
            map_mount_owner: true,
            detach_logs: true,
            keep_alive: false,
            cleanup_image: false,
            api_key: None,
            name: None,
            extra_run_args: Vec::new(),
            ulimit_nofile: Some(65536),
            docker: "docker".into(),
        }
    }
}

impl DockerOptions {
    /// Options running `image`.
    pub fn image(image: impl Into<String>) -> Self {
        DockerOptions {
            server_image: Some(image.into()),
            ..Default::default()
        }
    }
}

/// A running agent-server container. Derefs to its [`RemoteWorkspace`].
#[derive(Debug)]
pub struct DockerWorkspace {
    workspace: RemoteWorkspace,
    container_id: Option<String>,
    name: String,
    image: String,
    host_port: u16,
    opts: DockerOptions,
    ticket: Option<u64>,
    logs: Option<tokio::task::JoinHandle<()>>,
}

impl std::ops::Deref for DockerWorkspace {
    type Target = RemoteWorkspace;
    fn deref(&self) -> &RemoteWorkspace {
        &self.workspace
    }
}

impl DockerWorkspace {
    /// Builds (if asked), runs the container, waits for `/health` and returns the workspace.
    /// On any failure the container is removed before the error is returned.
    pub async fn start(opts: DockerOptions) -> Result<Self, ClientError> {
        if opts.build.is_none() && opts.server_image.as_deref().unwrap_or("").is_empty() {
            return Err(ClientError::Invalid(
                "DockerWorkspace needs `server_image` or `build`".into(),
            ));
        }
        if opts.health_check_timeout.is_zero() {
            return Err(ClientError::Invalid(
                "health_check_timeout must be positive".into(),
            ));
        }
        let docker = opts.docker.clone();
        let version = Command::new(&docker)
            .args(["version", "--format", "{{.Server.Version}}"])
            .stdin(Stdio::null())
            .output()
            .await;
        if !matches!(&version, Ok(o) if o.status.success()) {
            return Err(ClientError::Tool(
                "Docker is not available. Please install and start Docker Desktop/daemon.".into(),
            ));
        }
        let image = match &opts.build {
            Some(b) => build_image(&docker, b).await?,
            None => opts.server_image.clone().unwrap_or_default(),
        };
        let host_port = guard::choose_port(opts.host_port, opts.extra_ports)?;
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| format!("agent-server-{}", uuid::Uuid::new_v4()));
        let api_key = opts.api_key.clone().or_else(|| {
            std::env::var("OH_SESSION_API_KEYS_0")
                .ok()
                .or_else(|| std::env::var("SESSION_API_KEY").ok())
                .filter(|k| !k.is_empty())
        });

        let mut out = None;
        for with_ulimit in [opts.ulimit_nofile.is_some(), false] {
            let mut cmd = run_command(&opts, &image, &name, host_port, with_ulimit);
            let o = cmd
                .output()
                .await
                .map_err(|e| ClientError::Tool(format!("cannot run {docker}: {e}")))?;
            if o.status.success() {
                out = Some(o);
                break;
            }
            // `docker run -d` may have created the container before failing to start it.
            remove_container(&docker, &name);
            let err = String::from_utf8_lossy(&o.stderr).trim().to_string();
            // A daemon whose own hard limit is lower cannot grant the nofile ulimit: go without.
            if !(with_ulimit && err.contains("rlimit")) {
                return Err(ClientError::Failed(format!(
                    "Failed to run docker container: {err}"
                )));
            }
            tracing::warn!(
                "the Docker daemon cannot raise the nofile ulimit; running without --ulimit"
            );
        }
        let Some(out) = out else {
            return Err(ClientError::Failed("Failed to run docker container".into()));
        };
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let ticket = (!opts.keep_alive).then(|| {
            let (docker, id) = (docker.clone(), id.clone());
            guard::register(Box::new(move || remove_container(&docker, &id)) as Release)
        });
        let logs = opts.detach_logs.then(|| spawn_log_copy(&docker, &id));
        let host = opts
            .host
            .clone()
            .unwrap_or_else(|| format!("http://127.0.0.1:{host_port}"));
        let mut wopts = WorkspaceOptions::new(host);
        wopts.api_key = api_key;
        wopts.working_dir = opts.working_dir.clone();
        let workspace = RemoteWorkspace::with_options(wopts);
        let mut ws = DockerWorkspace {
            workspace: match workspace {
                Ok(w) => w,
                Err(e) => {
                    remove_container(&docker, &id);
                    return Err(e);
                }
            },
            container_id: Some(id),
            name,
            image,
            host_port,
            opts,
            ticket,
            logs,
        };
        if let Err(e) = ws.wait_healthy().await {
            ws.remove_now();
            return Err(e);
        }
        Ok(ws)
    }

    /// The container id.
    pub fn container_id(&self) -> Option<&str> {
        self.container_id.as_deref()
    }

    /// The container name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The image the container runs.
    pub fn image(&self) -> &str {
        &self.image
    }

    /// Host port of the server.
    pub fn host_port(&self) -> u16 {
        self.host_port
    }

    /// The workspace API of the container.
    pub fn workspace(&self) -> &RemoteWorkspace {
        &self.workspace
    }

    async fn wait_healthy(&self) -> Result<(), ClientError> {
        let id = self.container_id.clone().unwrap_or_default();
        let docker = self.opts.docker.clone();
        guard::wait_healthy(
            self.workspace.host(),
            self.opts.health_check_timeout,
            || {
                let (id, docker) = (id.clone(), docker.clone());
                async move { container_running(&docker, &id).await }
            },
        )
        .await
    }

    /// `docker pause`.
    pub async fn pause(&self) -> Result<(), ClientError> {
        let id = self
            .container_id
            .as_deref()
            .ok_or_else(|| ClientError::State("Cannot pause: container is not running".into()))?;
        docker_ok(
            &self.opts.docker,
            &["pause", id],
            "Failed to pause container",
        )
        .await
    }

    /// `docker unpause`, then the health wait.
    pub async fn resume(&self) -> Result<(), ClientError> {
        let id = self
            .container_id
            .as_deref()
            .ok_or_else(|| ClientError::State("Cannot resume: container is not running".into()))?;
        docker_ok(
            &self.opts.docker,
            &["unpause", id],
            "Failed to resume container",
        )
        .await?;
        self.wait_healthy().await
    }

    /// Stops and removes the container (unless `keep_alive`), and the image if `cleanup_image`.
    /// Safe to cancel: until the container is gone, `Drop` and the signal handler still own it.
    pub async fn cleanup(&mut self) -> Result<(), ClientError> {
        if let Some(logs) = self.logs.take() {
            logs.abort();
        }
        let Some(id) = self.container_id.clone() else {
            return Ok(());
        };
        if self.opts.keep_alive {
            self.container_id = None;
            return Ok(());
        }
        let docker = self.opts.docker.clone();
        let _ = Command::new(&docker)
            .args(["stop", "-t", "5", &id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await;
        tokio::task::spawn_blocking(move || remove_container(&docker, &id))
            .await
            .map_err(|e| ClientError::Failed(format!("cleanup task failed: {e}")))?;
        self.container_id = None;
        if let Some(t) = self.ticket.take() {
            guard::unregister(t);
        }
        if self.opts.cleanup_image {
            let _ = Command::new(&self.opts.docker)
                .args(["rmi", "-f", &self.image])
                .stdin(Stdio::null())
                .output()
                .await;
        }
        Ok(())
    }

    /// Leaves the container running and forgets it (like `docker run -d`): returns its id.
    pub fn detach(mut self) -> Option<String> {
        if let Some(t) = self.ticket.take() {
            guard::unregister(t);
        }
        if let Some(logs) = self.logs.take() {
            logs.abort();
        }
        self.container_id.take()
    }

    /// Synchronous removal, for errors and `Drop`.
    fn remove_now(&mut self) {
        if let Some(logs) = self.logs.take() {
            logs.abort();
        }
        if let Some(t) = self.ticket.take() {
            guard::unregister(t);
        }
        if let Some(id) = self.container_id.take() {
            if !self.opts.keep_alive {
                remove_container(&self.opts.docker, &id);
            }
        }
    }
}

impl Drop for DockerWorkspace {
    fn drop(&mut self) {
        self.remove_now();
    }
}

/// The `docker run` command line (values of variables travel in the CLI's environment).
fn run_command(
    opts: &DockerOptions,
    image: &str,
    name: &str,
    host_port: u16,
    with_ulimit: bool,
) -> Command {
    let mut cmd = Command::new(&opts.docker);
    cmd.args(["run", "-d"]);
    if let Some(p) = &opts.platform {
        cmd.args(["--platform", p]);
    }
    cmd.args(["--rm", "--name", name]);
    if let (true, Some(n)) = (with_ulimit, opts.ulimit_nofile) {
        cmd.arg("--ulimit").arg(format!("nofile={n}:{n}"));
    }
    cmd.args([
        "--label",
        &format!(
            "org.openhands.agent-server.launcher-pid={}",
            std::process::id()
        ),
    ]);
    // Values travel in the CLI's environment (`-e NAME`), never on its command line.
    let explicit_key = opts.api_key.is_some();
    for (k, v) in guard::forwarded_env(&opts.forward_env) {
        if explicit_key && (k == "SESSION_API_KEY" || k == "OH_SESSION_API_KEYS_0") {
            continue;
        }
        cmd.arg("-e").arg(&k).env(&k, v);
    }
    if let Some(k) = &opts.api_key {
        for var in ["SESSION_API_KEY", "OH_SESSION_API_KEYS_0"] {
            cmd.arg("-e").arg(var).env(var, k);
        }
    }
    for (k, v) in &opts.env {
        cmd.arg("-e").arg(k).env(k, v);
    }
    for v in &opts.volumes {
        cmd.arg("-v").arg(v);
    }
    let user = opts.user.clone().or_else(|| {
        opts.map_mount_owner
            .then(|| mount_owner(&opts.volumes))
            .flatten()
            .map(|(uid, gid)| format!("{uid}:{gid}"))
    });
    if let Some(user) = user {
        cmd.args(["--user", &user]);
        if opts.user.is_none() && !opts.env.iter().any(|(k, _)| k == "HOME") {
            cmd.args(["-e", "HOME=/tmp"]);
        }
    }
    // With the host's network there is nothing to publish: the server binds the host port on
    // loopback itself (the reference passes -p and 8000 anyway, which then collide).
    let host_net = opts.network.as_deref() == Some("host");
    if !host_net {
        cmd.arg("-p").arg(format!("127.0.0.1:{host_port}:8000"));
        if opts.extra_ports {
            cmd.arg("-p")
                .arg(format!("127.0.0.1:{}:8001", host_port.saturating_add(1)));
        }
    }
    if opts.enable_gpu {
        cmd.args(["--gpus", "all"]);
    }
    if let Some(n) = &opts.network {
        cmd.args(["--network", n]);
    }
    cmd.args(&opts.extra_run_args);
    if host_net {
        cmd.arg(image)
            .args(["--host", "127.0.0.1", "--port", &host_port.to_string()]);
    } else {
        cmd.arg(image).args(["--host", "0.0.0.0", "--port", "8000"]);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// Owner (uid, gid) of the first writable bind mount `SRC:DST[:OPTS]` whose source is an
/// existing host directory not owned by root.
fn mount_owner(volumes: &[String]) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    volumes.iter().find_map(|v| {
        let mut parts = v.split(':');
        let src = parts.next()?;
        let _dst = parts.next()?;
        let read_only = parts
            .next()
            .is_some_and(|o| o.split(',').any(|o| o == "ro"));
        if read_only || !src.starts_with('/') {
            return None;
        }
        let meta = std::fs::metadata(src).ok().filter(|m| m.is_dir())?;
        (meta.uid() != 0).then(|| (meta.uid(), meta.gid()))
    })
}

/// `docker rm -f <id>` (blocking), waiting until the container is gone.
fn remove_container(docker: &str, id: &str) {
    let _ = std::process::Command::new(docker)
        .args(["rm", "-f", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    // `--rm` removal may still be in progress; wait (bounded) until inspect no longer finds it.
    for _ in 0..50 {
        let gone = std::process::Command::new(docker)
            .args(["inspect", "--format", "{{.Id}}", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true);
        if gone {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn container_running(docker: &str, id: &str) -> Result<(), ClientError> {
    let out = Command::new(docker)
        .args(["inspect", "-f", "{{.State.Running}}", id])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| ClientError::Tool(format!("cannot run {docker}: {e}")))?;
    if String::from_utf8_lossy(&out.stdout).trim() == "true" {
        return Ok(());
    }
    let logs = Command::new(docker)
        .args(["logs", id])
        .stdin(Stdio::null())
        .output()
        .await
        .map(|o| {
            format!(
                "{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default();
    Err(ClientError::Failed(format!(
        "Container stopped unexpectedly. Logs:\n{logs}"
    )))
}

async fn docker_ok(docker: &str, args: &[&str], what: &str) -> Result<(), ClientError> {
    let out = Command::new(docker)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| ClientError::Tool(format!("cannot run {docker}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ClientError::Failed(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Copies `docker logs -f` to stderr with a `[DOCKER] ` prefix until aborted.
fn spawn_log_copy(docker: &str, id: &str) -> tokio::task::JoinHandle<()> {
    let mut cmd = Command::new(docker);
    cmd.args(["logs", "-f", id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tokio::spawn(async move {
        let Ok(mut child) = cmd.spawn() else { return };
        let out = child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
        let err = child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
        let copy = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| async move {
            if let Some(r) = r {
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    eprintln!("[DOCKER] {l}");
                }
            }
        };
        tokio::join!(copy(out), copy(err));
        let _ = child.wait().await;
    })
}

/// `docker build`, streaming its progress to stderr as `[BUILD] …`; returns the tag.
async fn build_image(docker: &str, b: &DockerBuild) -> Result<String, ClientError> {
    let mut cmd = Command::new(docker);
    cmd.arg("build").arg("--tag").arg(&b.tag);
    if let Some(f) = &b.dockerfile {
        cmd.arg("--file").arg(f);
    }
    if let Some(t) = &b.target {
        cmd.args(["--target", t]);
    }
    for (k, v) in &b.build_args {
        cmd.arg("--build-arg").arg(format!("{k}={v}"));
    }
    cmd.arg(&b.context)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| ClientError::Tool(format!("cannot run {docker}: {e}")))?;
    let tail = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
    let copy = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| {
        let tail = tail.clone();
        async move {
            if let Some(r) = r {
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    eprintln!("[BUILD] {l}");
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == 40 {
                            t.pop_front();
                        }
                        t.push_back(l);
                    }
                }
            }
        }
    };
    let out = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let err = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    tokio::join!(copy(out), copy(err));
    let status = child
        .wait()
        .await
        .map_err(|e| ClientError::Tool(format!("docker build: {e}")))?;
    if !status.success() {
        let tail = tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        return Err(ClientError::Failed(format!(
            "docker build of {} failed:\n{tail}",
            b.tag
        )));
    }
    Ok(b.tag.clone())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::chown;

    fn args(cmd: &Command) -> Vec<String> {
        cmd.as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_server_runs_as_the_owner_of_a_writable_mount() {
        let dir = tempfile::tempdir().unwrap();
        chown(dir.path(), Some(4321), Some(4322)).unwrap();
        let root_owned = tempfile::tempdir().unwrap();
        chown(root_owned.path(), Some(0), Some(0)).unwrap();
        let mut o = DockerOptions::image("img");
        o.volumes = vec![
            format!("{}:/mnt/ro:ro", dir.path().display()),
            format!("{}:/mnt/root", root_owned.path().display()),
            format!("{}:/workspace/project", dir.path().display()),
        ];
        let a = args(&run_command(&o, "img", "n", 30000, false));
        let at = a.iter().position(|x| x == "--user").unwrap();
        assert_eq!(a[at + 1], "4321:4322");
        assert!(a.contains(&"HOME=/tmp".to_string()));

        // Read-only or root-owned mounts alone change nothing; an explicit user wins.
        o.volumes.remove(2);
        assert!(!args(&run_command(&o, "img", "n", 30000, false)).contains(&"--user".into()));
        o.user = Some("1:1".into());
        let a = args(&run_command(&o, "img", "n", 30000, false));
        assert!(a.windows(2).any(|w| w == ["--user", "1:1"]));
        assert!(!a.contains(&"HOME=/tmp".to_string()));
        o.user = None;
        o.volumes = vec![format!("{}:/w", dir.path().display())];
        o.map_mount_owner = false;
        assert!(!args(&run_command(&o, "img", "n", 30000, false)).contains(&"--user".into()));
    }
}
