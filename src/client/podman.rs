//! [`PodmanWorkspace`]: the Docker launcher run with the `podman` CLI (no daemon; rootless when
//! run by an ordinary user).
//!
//! Podman takes `docker run`'s grammar, so this wraps [`DockerWorkspace`] with three differences
//! that matter on real hosts: the image is copied from the local Docker daemon when Podman does
//! not have it (`docker save | podman load`); `--ulimit nofile/nproc` are set from this process's
//! own hard limits (rootful Podman otherwise asks the kernel for limits far above what containers
//! and VMs grant, and the container fails with "error setting rlimit"); and the image's
//! HEALTHCHECK is disabled unless asked for (Podman runs it through systemd timers, which hosts
//! without systemd lack). GPUs go through CDI (`--device nvidia.com/gpu=all`).

use std::process::Stdio;

use tokio::process::Command;

use super::{ClientError, DockerOptions, DockerWorkspace};

/// Options of [`PodmanWorkspace::start`].
#[derive(Debug, Clone)]
pub struct PodmanOptions {
    /// Everything the Docker launcher takes (image, port, env, volumes, network, user, GPUs,
    /// keep alive, ...); its `docker` executable is replaced by `podman`.
    pub run: DockerOptions,
    /// The podman executable.
    pub podman: String,
    /// When Podman lacks the image and a local Docker daemon has it, copy it over first.
    pub load_from_docker: bool,
    /// `--ulimit` values; `None` derives `nofile` and `nproc` from this process's hard limits.
    pub ulimits: Option<Vec<String>>,
    /// Keep the image's HEALTHCHECK (needs systemd on the host).
    pub healthcheck: bool,
}

impl PodmanOptions {
    /// Options running `image`.
    pub fn image(image: impl Into<String>) -> Self {
        let mut run = DockerOptions::image(image);
        run.docker = "podman".into();
        PodmanOptions {
            run,
            podman: "podman".into(),
            load_from_docker: true,
            ulimits: None,
            healthcheck: false,
        }
    }
}

/// A running agent-server container under Podman. Derefs to the [`DockerWorkspace`] doing the
/// work (container id and name, pause/resume, cleanup), which derefs to its `RemoteWorkspace`.
#[derive(Debug)]
pub struct PodmanWorkspace {
    inner: DockerWorkspace,
}

impl std::ops::Deref for PodmanWorkspace {
    type Target = DockerWorkspace;
    fn deref(&self) -> &DockerWorkspace {
        &self.inner
    }
}

impl std::ops::DerefMut for PodmanWorkspace {
    fn deref_mut(&mut self) -> &mut DockerWorkspace {
        &mut self.inner
    }
}

impl PodmanWorkspace {
    /// Checks Podman, makes sure it has the image, runs the container and waits for `/health`.
    pub async fn start(opts: PodmanOptions) -> Result<Self, ClientError> {
        let podman = opts.podman.clone();
        let ok = Command::new(&podman)
            .args(["version", "--format", "{{.Client.Version}}"])
            .stdin(Stdio::null())
            .output()
            .await
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err(ClientError::Tool(format!(
                "Podman is not available ({podman} version failed): install podman \
                 (images/slurm-setup.sh does on Debian/Ubuntu)"
            )));
        }
        let mut run = opts.run.clone();
        run.docker = podman.clone();
        if opts.load_from_docker && run.build.is_none() {
            if let Some(image) = run.server_image.clone() {
                ensure_image(&podman, &image).await?;
            }
        }
        // Our own flags go first so that the caller's extra arguments can still override them.
        let mut extra = Vec::new();
        if !opts.healthcheck {
            extra.push("--no-healthcheck".to_string());
        }
        for u in opts.ulimits.clone().unwrap_or_else(default_ulimits) {
            extra.push("--ulimit".into());
            extra.push(u);
        }
        if run.enable_gpu {
            extra.extend(["--device".into(), "nvidia.com/gpu=all".into()]);
            run.enable_gpu = false;
        }
        extra.append(&mut run.extra_run_args);
        run.extra_run_args = extra;
        run.ulimit_nofile = None;
        Ok(PodmanWorkspace {
            inner: DockerWorkspace::start(run).await?,
        })
    }

    /// The Docker launcher doing the work.
    pub fn inner(&self) -> &DockerWorkspace {
        &self.inner
    }

    /// The Docker launcher doing the work, owning the container from now on.
    pub fn into_inner(self) -> DockerWorkspace {
        self.inner
    }

    /// Leaves the container running and forgets it; returns its id.
    pub fn detach(self) -> Option<String> {
        self.inner.detach()
    }
}

/// `nofile` and `nproc` at this process's hard limits (bounded by the kernel's `pid_max` for
/// processes and 1048576 for files, what rootful Podman would ask for).
fn default_ulimits() -> Vec<String> {
    use nix::sys::resource::{getrlimit, Resource};
    let hard = |r| getrlimit(r).map(|(_, h)| h).unwrap_or(u64::MAX);
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(32768);
    let nofile = hard(Resource::RLIMIT_NOFILE).min(1_048_576);
    let nproc = hard(Resource::RLIMIT_NPROC).min(pid_max);
    vec![
        format!("nofile={nofile}:{nofile}"),
        format!("nproc={nproc}:{nproc}"),
    ]
}

/// Copies `image` from the local Docker daemon when Podman lacks it or has another build of it
/// (one copy at a time).
async fn ensure_image(podman: &str, image: &str) -> Result<(), ClientError> {
    static LOADING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = LOADING.lock().await;
    // Docker's copy wins when it differs (a rebuilt image), as Podman's would otherwise be stale.
    let Some(docker_id) = image_id("docker", image).await else {
        // No Docker copy: Podman uses its own, or pulls it.
        return Ok(());
    };
    if image_id(podman, image).await.as_deref() == Some(docker_id.as_str()) {
        return Ok(());
    }
    tracing::info!(%image, "copying the image from Docker to Podman");
    let mut save = Command::new("docker")
        .args(["save", image])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| ClientError::Tool(format!("cannot run docker save: {e}")))?;
    let pipe: Stdio = save
        .stdout
        .take()
        .ok_or_else(|| ClientError::Tool("docker save has no output".into()))?
        .try_into()
        .map_err(|e| ClientError::Tool(format!("docker save output: {e}")))?;
    let load = Command::new(podman)
        .args(["load", "-q"])
        .stdin(pipe)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| ClientError::Tool(format!("cannot run {podman} load: {e}")))?;
    let saved = save.wait().await;
    if !load.status.success() || !saved.is_ok_and(|s| s.success()) {
        return Err(ClientError::Failed(format!(
            "copying {image} from Docker to Podman failed: {}",
            String::from_utf8_lossy(&load.stderr).trim()
        )));
    }
    Ok(())
}

/// The image's id without its `sha256:` prefix, if `tool` has the image.
async fn image_id(tool: &str, image: &str) -> Option<String> {
    let out = Command::new(tool)
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())?;
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let id = id.strip_prefix("sha256:").unwrap_or(&id).to_string();
    (!id.is_empty()).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_stay_within_this_process_limits() {
        let u = default_ulimits();
        assert_eq!(u.len(), 2);
        assert!(u[0].starts_with("nofile="), "{u:?}");
        assert!(u[1].starts_with("nproc="), "{u:?}");
        let (soft, hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .unwrap_or((0, 0));
        assert!(soft <= hard);
        let n: u64 = u[0]["nofile=".len()..]
            .split(':')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX);
        assert!(n <= hard);
    }
}
