//! [`SlurmWorkspace`]: runs the agent server as a Slurm batch job on a compute node.
//!
//! `start()` writes a job script into a per-job directory under `state_dir` (which must be on a
//! filesystem the compute nodes share, as home directories are on HPC clusters), submits it with
//! `sbatch`, and polls: the job runs the server (the bare binary, or `apptainer run` of a SIF)
//! with `--port 0`, and the script turns the server's `agent-server listening on ...` line into
//! an `address` file (`<node> <port>`) next to the job's log. The launcher then waits for
//! `/health` and returns a ready workspace. A job that ends first, or a start that passes its
//! deadline (queue wait included), is cancelled and reported as [`ClientError::Job`] with the
//! tail of the job's log. `cleanup()`, dropping the value (also while unwinding from a panic)
//! and, with [`cleanup_on_signals`](super::cleanup_on_signals), Ctrl-C `scancel` the job.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::process::Command;

use super::apptainer::run_args;
use super::guard::{self, Release};
use super::workspace::{health_ok, RemoteWorkspace, WorkspaceOptions};
use super::{ApptainerOptions, ClientError, SifSource};

/// What the job runs on the compute node.
#[derive(Debug, Clone)]
pub enum SlurmServer {
    /// The `agent-server` binary at this path (as seen from the compute node).
    Binary(PathBuf),
    /// `apptainer run` of a SIF file (`source` must be [`SifSource::File`], on shared storage);
    /// the options' flags (`--compat`, binds, `--nv`, ...) apply, ports and health do not.
    Apptainer(Box<ApptainerOptions>),
}

/// Options of [`SlurmWorkspace::start`].
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    pub server: SlurmServer,
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time` (Slurm syntax: `MM`, `HH:MM:SS`, `D-HH`), the job's wall-clock limit.
    pub time_limit: Option<String>,
    /// `--mem` (e.g. `512M`, `4G`).
    pub memory: Option<String>,
    /// `--cpus-per-task`.
    pub cpus_per_task: Option<u32>,
    /// `--gpus` (e.g. `1`, `a100:2`).
    pub gpus: Option<String>,
    /// `--job-name`.
    pub job_name: String,
    /// Further `sbatch` arguments, verbatim (e.g. `--constraint=skylake`, `--begin=now+60`).
    pub sbatch_args: Vec<String>,
    /// Where job directories (script, log, address file) are made; must be shared with the
    /// compute nodes. Default `~/.agent-server/slurm`.
    pub state_dir: Option<PathBuf>,
    /// Server's working directory on the node (`--chdir`; its `workspace/` state goes there).
    /// Default: the job directory.
    pub workdir: Option<PathBuf>,
    /// Port on the node; `None` lets the server pick a free one.
    pub port: Option<u16>,
    /// Names of variables of this process passed to the job.
    pub forward_env: Vec<String>,
    /// Extra `NAME=VALUE` variables for the server.
    pub env: Vec<(String, String)>,
    /// Session key; `None` uses `$OH_SESSION_API_KEYS_0`, else `$SESSION_API_KEY`, else a new
    /// random key (the server listens on the cluster network, so it always has one).
    pub api_key: Option<String>,
    /// Submit → ready deadline, queue wait included; the job is cancelled when it passes.
    pub start_timeout: Duration,
    /// Host name to connect to instead of the node name the job reports (e.g. a tunnel).
    pub connect_host: Option<String>,
    /// Directory for relative git paths (default: `workdir`, or `/workspace` under Apptainer).
    pub working_dir: Option<String>,
    /// Leave the job running when this value is dropped or cleaned up (a job that does not
    /// become ready is cancelled all the same).
    pub keep_alive: bool,
    /// Directory holding `sbatch`, `squeue`, `scancel`, `scontrol` (default: `PATH`).
    pub slurm_bin: Option<PathBuf>,
}

impl SlurmOptions {
    /// Options running `server` with the defaults.
    pub fn new(server: SlurmServer) -> Self {
        SlurmOptions {
            server,
            partition: None,
            account: None,
            qos: None,
            time_limit: None,
            memory: None,
            cpus_per_task: None,
            gpus: None,
            job_name: "agent-server".into(),
            sbatch_args: Vec::new(),
            state_dir: None,
            workdir: None,
            port: None,
            forward_env: vec!["DEBUG".into()],
            env: Vec::new(),
            api_key: None,
            start_timeout: Duration::from_secs(600),
            connect_host: None,
            working_dir: None,
            keep_alive: false,
            slurm_bin: None,
        }
    }

    fn tool(&self, name: &str) -> String {
        match &self.slurm_bin {
            Some(d) => d.join(name).display().to_string(),
            None => name.to_string(),
        }
    }
}

/// A running agent server in a Slurm job. Derefs to its [`RemoteWorkspace`].
#[derive(Debug)]
pub struct SlurmWorkspace {
    workspace: RemoteWorkspace,
    job_id: Option<String>,
    job_dir: PathBuf,
    node: String,
    port: u16,
    scancel: String,
    squeue: String,
    keep_alive: bool,
    ticket: Option<u64>,
}

impl std::ops::Deref for SlurmWorkspace {
    type Target = RemoteWorkspace;
    fn deref(&self) -> &RemoteWorkspace {
        &self.workspace
    }
}

/// The scheduler's view of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JobState {
    state: String,
    reason: Option<String>,
    /// PENDING, RUNNING, CONFIGURING, ... (not yet ended).
    active: bool,
}

impl SlurmWorkspace {
    /// Submits the job, waits until its server answers `/health`, returns the workspace.
    /// On failure the job is cancelled and its directory (with the full log) kept.
    pub async fn start(opts: SlurmOptions) -> Result<Self, ClientError> {
        if opts.start_timeout.is_zero() {
            return Err(ClientError::Invalid(
                "start_timeout must be positive".into(),
            ));
        }
        if let SlurmServer::Apptainer(a) = &opts.server {
            if !matches!(a.source, SifSource::File(_)) {
                return Err(ClientError::Invalid(
                    "a Slurm job runs an existing SIF file (SifSource::File on shared storage)"
                        .into(),
                ));
            }
        }
        let sbatch = opts.tool("sbatch");
        let ok = Command::new(&sbatch)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .await
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err(ClientError::Tool(format!(
                "Slurm is not available ({sbatch} --version failed): install the Slurm client \
                 tools or set slurm_bin"
            )));
        }
        let state_dir = match &opts.state_dir {
            Some(d) => d.clone(),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir)
                .join(".agent-server/slurm"),
        };
        let short = uuid::Uuid::new_v4().simple().to_string();
        let job_dir = state_dir.join(format!("{}-{}", opts.job_name, &short[..12]));
        make_private_dir(&job_dir).await?;
        let api_key = opts.api_key.clone().unwrap_or_else(|| {
            std::env::var("OH_SESSION_API_KEYS_0")
                .ok()
                .or_else(|| std::env::var("SESSION_API_KEY").ok())
                .filter(|k| !k.is_empty())
                .unwrap_or_else(random_key)
        });
        let workdir = opts.workdir.clone().unwrap_or_else(|| job_dir.clone());
        let script = job_script(&opts, &job_dir);
        let script_path = job_dir.join("job.sh");
        tokio::fs::write(&script_path, script)
            .await
            .map_err(|e| io_err(&script_path, e))?;
        let log_path = job_dir.join("job.log");

        let mut cmd = Command::new(&sbatch);
        cmd.arg("--parsable")
            .arg(format!("--job-name={}", opts.job_name))
            .arg(format!("--output={}", log_path.display()))
            .arg(format!("--chdir={}", workdir.display()));
        for (flag, v) in [
            ("--partition", &opts.partition),
            ("--account", &opts.account),
            ("--qos", &opts.qos),
            ("--time", &opts.time_limit),
            ("--mem", &opts.memory),
            ("--gpus", &opts.gpus),
        ] {
            if let Some(v) = v {
                cmd.arg(format!("{flag}={v}"));
            }
        }
        if let Some(c) = opts.cpus_per_task {
            cmd.arg(format!("--cpus-per-task={c}"));
        }
        // Only named variables reach the job, their values through sbatch's environment
        // (never a command line): the launcher's whole environment is not exported.
        let mut names: Vec<String> = ["PATH", "HOME", "USER", "LANG", "TZ"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (k, v) in guard::forwarded_env(&opts.forward_env)
            .into_iter()
            .chain(opts.env.iter().cloned())
        {
            cmd.env(&k, v);
            names.push(k);
        }
        for var in ["SESSION_API_KEY", "OH_SESSION_API_KEYS_0"] {
            cmd.env(var, &api_key);
            names.push(var.into());
        }
        let mut seen = std::collections::HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        cmd.arg(format!("--export={}", names.join(",")));
        cmd.args(&opts.sbatch_args)
            .arg(&script_path)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .map_err(|e| ClientError::Tool(format!("cannot run {sbatch}: {e}")))?;
        if !out.status.success() {
            return Err(ClientError::Failed(format!(
                "sbatch refused the job: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let job_id = stdout
            .trim()
            .split(';')
            .next()
            .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit() || c == '_'))
            .ok_or_else(|| ClientError::Protocol(format!("sbatch printed no job id: {stdout}")))?
            .to_string();
        tracing::info!(job = %job_id, dir = %job_dir.display(), "submitted Slurm job");
        let scancel = opts.tool("scancel");
        // Until it is ready the job is ours to cancel, kept alive or not.
        let ticket = {
            let (scancel, squeue, id) = (scancel.clone(), opts.tool("squeue"), job_id.clone());
            Some(guard::register(
                Box::new(move || cancel_job(&scancel, &squeue, &id)) as Release,
            ))
        };
        let mut ws = SlurmWorkspace {
            workspace: RemoteWorkspace::new("http://unresolved.invalid", None)?,
            job_id: Some(job_id.clone()),
            job_dir: job_dir.clone(),
            node: String::new(),
            port: 0,
            scancel,
            squeue: opts.tool("squeue"),
            keep_alive: false,
            ticket,
        };
        match ws.wait_ready(&opts, &api_key, &workdir).await {
            Ok(()) => {
                if opts.keep_alive {
                    ws.keep_alive = true;
                    if let Some(t) = ws.ticket.take() {
                        guard::unregister(t);
                    }
                }
                Ok(ws)
            }
            Err(e) => {
                ws.cancel_now();
                Err(e)
            }
        }
    }

    /// Polls the address file, the job's state and then `/health` until ready or failed.
    async fn wait_ready(
        &mut self,
        opts: &SlurmOptions,
        api_key: &str,
        workdir: &Path,
    ) -> Result<(), ClientError> {
        let job_id = self.job_id.clone().unwrap_or_default();
        let address_path = self.job_dir.join("address");
        let log_path = self.job_dir.join("job.log");
        let scontrol = opts.tool("scontrol");
        let deadline = Instant::now() + opts.start_timeout;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .build()?;
        let mut pause = Duration::from_millis(50);
        let mut last_state = JobState {
            state: "PENDING".into(),
            reason: None,
            active: true,
        };
        let mut host: Option<String> = None;
        let mut next_state_check = Instant::now();
        loop {
            if host.is_none() {
                if let Some((node, port)) = read_address(&address_path).await {
                    let h = opts.connect_host.clone().unwrap_or_else(|| node.clone());
                    self.node = node;
                    self.port = port;
                    host = Some(format!("http://{}:{port}", bracket_ipv6(&h)));
                }
            }
            if let Some(h) = &host {
                if health_ok(&http, h, Duration::from_secs(1)).await {
                    let mut w = WorkspaceOptions::new(h.clone());
                    w.api_key = Some(api_key.to_string());
                    w.working_dir =
                        opts.working_dir
                            .clone()
                            .unwrap_or_else(|| match &opts.server {
                                SlurmServer::Apptainer(_) => "/workspace".into(),
                                SlurmServer::Binary(_) => workdir.display().to_string(),
                            });
                    self.workspace = RemoteWorkspace::with_options(w)?;
                    return Ok(());
                }
            }
            if Instant::now() >= next_state_check {
                // An unanswered query (a busy controller) keeps the last known state.
                if let Some(s) = job_state(&self.squeue, &scontrol, &job_id).await? {
                    last_state = s;
                }
                next_state_check = Instant::now() + Duration::from_millis(500);
                if !last_state.active {
                    // The job may have written its last lines just now.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    return Err(job_error(&job_id, last_state, false, &log_path).await);
                }
            }
            if Instant::now() >= deadline {
                return Err(job_error(&job_id, last_state, true, &log_path).await);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// The Slurm job id (`None` after cleanup or detach).
    pub fn job_id(&self) -> Option<&str> {
        self.job_id.as_deref()
    }

    /// The node the server runs on, as the job reported it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The server's port on the node.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The job directory (script, `job.log`, `address`).
    pub fn job_dir(&self) -> &Path {
        &self.job_dir
    }

    /// The job's output file.
    pub fn log_path(&self) -> PathBuf {
        self.job_dir.join("job.log")
    }

    /// The workspace API.
    pub fn workspace(&self) -> &RemoteWorkspace {
        &self.workspace
    }

    /// `scancel`s the job (unless `keep_alive`), waits until it has left the queue, and removes
    /// the job directory. Safe to cancel: until the job is gone, `Drop` still owns it.
    pub async fn cleanup(&mut self) -> Result<(), ClientError> {
        let Some(id) = self.job_id.clone() else {
            return Ok(());
        };
        if self.keep_alive {
            self.job_id = None;
            return Ok(());
        }
        let (scancel, squeue) = (self.scancel.clone(), self.squeue.clone());
        tokio::task::spawn_blocking(move || cancel_job(&scancel, &squeue, &id))
            .await
            .map_err(|e| ClientError::Failed(format!("cleanup task failed: {e}")))?;
        self.job_id = None;
        if let Some(t) = self.ticket.take() {
            guard::unregister(t);
        }
        let _ = tokio::fs::remove_dir_all(&self.job_dir).await;
        Ok(())
    }

    /// Leaves the job running and forgets it; returns its id.
    pub fn detach(mut self) -> Option<String> {
        if let Some(t) = self.ticket.take() {
            guard::unregister(t);
        }
        self.job_id.take()
    }

    /// Synchronous cancel for failures and `Drop` (the directory is kept).
    fn cancel_now(&mut self) {
        if let Some(t) = self.ticket.take() {
            guard::unregister(t);
        }
        if let Some(id) = self.job_id.take() {
            if !self.keep_alive {
                cancel_job(&self.scancel, &self.squeue, &id);
            }
        }
    }
}

impl Drop for SlurmWorkspace {
    fn drop(&mut self) {
        self.cancel_now();
    }
}

/// `scancel <id>` (blocking), then waits (bounded, 30 s) until `squeue` no longer lists it.
fn cancel_job(scancel: &str, squeue: &str, id: &str) {
    let _ = std::process::Command::new(scancel)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    for _ in 0..150 {
        let listed = std::process::Command::new(squeue)
            .args(["-h", "-j", id, "-o", "%i"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| o.status.success() && !String::from_utf8_lossy(&o.stdout).trim().is_empty())
            .unwrap_or(false);
        if !listed {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The job's state from `squeue`, or from `scontrol` once it has left the queue; `None` when
/// the controller did not answer.
async fn job_state(
    squeue: &str,
    scontrol: &str,
    id: &str,
) -> Result<Option<JobState>, ClientError> {
    let out = Command::new(squeue)
        .args(["-h", "-j", id, "-o", "%T|%r"])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| ClientError::Tool(format!("cannot run {squeue}: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // squeue fails for a job the controller has forgotten ("Invalid job id specified"), which
    // means it ended; any other failure is the controller not answering.
    if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("Invalid job id") {
        return Ok(None);
    }
    if let Some(line) = text.lines().find(|l| !l.trim().is_empty()) {
        let (state, reason) = line.split_once('|').unwrap_or((line, ""));
        let state = state.trim().to_string();
        let active = !is_final(&state);
        let reason = Some(reason.trim())
            .filter(|r| !r.is_empty() && *r != "None")
            .map(String::from);
        return Ok(Some(JobState {
            state,
            reason,
            active,
        }));
    }
    // Gone from the queue: its final state, while the controller still remembers it.
    let out = Command::new(scontrol)
        .args(["show", "job", "-o", id])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await;
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("Invalid job id") => String::new(),
        _ => return Ok(None),
    };
    let field = |name: &str| {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(String::from)
    };
    let state = field("JobState=").unwrap_or_else(|| "ENDED".into());
    let reason = match (field("Reason="), field("ExitCode=")) {
        (Some(r), Some(c)) if r != "None" => Some(format!("{r}, exit code {c}")),
        (_, Some(c)) => Some(format!("exit code {c}")),
        (r, None) => r.filter(|r| r != "None"),
    };
    Ok(Some(JobState {
        active: !is_final(&state) && state != "ENDED",
        state,
        reason,
    }))
}

fn is_final(state: &str) -> bool {
    matches!(
        state,
        "COMPLETED"
            | "CANCELLED"
            | "FAILED"
            | "TIMEOUT"
            | "NODE_FAIL"
            | "PREEMPTED"
            | "BOOT_FAIL"
            | "DEADLINE"
            | "OUT_OF_MEMORY"
            | "COMPLETING"
            | "REVOKED"
            | "SPECIAL_EXIT"
    )
}

async fn job_error(id: &str, state: JobState, timed_out: bool, log: &Path) -> ClientError {
    ClientError::Job {
        job_id: id.to_string(),
        state: state.state,
        reason: state.reason,
        timed_out,
        log_path: log.display().to_string(),
        log_tail: log_tail(log, 30).await,
    }
}

/// The last `lines` lines of `path` (at most its last 16 KiB are read).
pub(crate) async fn log_tail(path: &Path, lines: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let Ok(mut f) = tokio::fs::File::open(path).await else {
        return "(no log yet)".into();
    };
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(16 * 1024);
    if f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.take(16 * 1024).read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `<node> <port>` from the job's address file, once it is complete.
async fn read_address(path: &Path) -> Option<(String, u16)> {
    let text = tokio::fs::read_to_string(path).await.ok()?;
    let mut parts = text.split_whitespace();
    let node = parts.next()?.to_string();
    let port = parts.next()?.parse().ok()?;
    Some((node, port))
}

fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `value` as one single-quoted POSIX shell word.
fn sh(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// The batch script: runs the server, copies its output to the log and, from its
/// `agent-server listening on http://HOST:PORT` line, writes `<node> <port>` to `address`.
fn job_script(opts: &SlurmOptions, job_dir: &Path) -> String {
    let port = opts.port.unwrap_or(0);
    let (exports, command) = match &opts.server {
        SlurmServer::Binary(bin) => (
            String::new(),
            format!(
                "{} --host 0.0.0.0 --port {port}",
                sh(&bin.display().to_string())
            ),
        ),
        SlurmServer::Apptainer(a) => {
            let sif = match &a.source {
                SifSource::File(p) => p.clone(),
                _ => PathBuf::new(),
            };
            let args: Vec<String> = run_args(a, &sif, port).iter().map(|s| sh(s)).collect();
            // `--compat` starts from a clean environment: variables travel as APPTAINERENV_*.
            let mut names: Vec<String> = ["SESSION_API_KEY", "OH_SESSION_API_KEYS_0"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            names.extend(opts.forward_env.iter().cloned());
            names.extend(opts.env.iter().map(|(k, _)| k.clone()));
            let exports = names
                .iter()
                .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .map(|n| format!("[ -n \"${{{n}+x}}\" ] && export APPTAINERENV_{n}=\"${n}\"\n"))
                .collect::<String>();
            (exports, format!("{} {}", sh(&a.apptainer), args.join(" ")))
        }
    };
    format!(
        r#"#!/bin/bash
# Agent server job written by agent-server's SlurmWorkspace.
set -u
dir={dir}
echo "agent-server job ${{SLURM_JOB_ID:-?}} on $(hostname)"
{exports}report() {{
  while IFS= read -r line; do
    printf '%s\n' "$line"
    case $line in
      'agent-server listening on http://'*)
        printf '%s %s\n' "$(hostname)" "${{line##*:}}" > "$dir/address.tmp" \
          && mv -f "$dir/address.tmp" "$dir/address" ;;
    esac
  done
}}
{command} | report
status=${{PIPESTATUS[0]}}
echo "agent-server exited with status $status"
exit "$status"
"#,
        dir = sh(&job_dir.display().to_string()),
    )
}

fn random_key() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn io_err(path: &Path, source: std::io::Error) -> ClientError {
    ClientError::Io {
        path: path.display().to_string(),
        source,
    }
}

async fn make_private_dir(dir: &Path) -> Result<(), ClientError> {
    use std::os::unix::fs::PermissionsExt;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| io_err(dir, e))?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .await
        .map_err(|e| io_err(dir, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_script_reports_the_address_the_server_prints() {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("fake server");
        std::fs::write(
            &server,
            "#!/bin/sh\necho \"args: $*\"\necho 'agent-server listening on http://0.0.0.0:34567'\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
        let job_dir = dir.path().join("it's a job");
        std::fs::create_dir(&job_dir).unwrap();
        let opts = SlurmOptions::new(SlurmServer::Binary(server));
        let script = job_script(&opts, &job_dir);
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let log = String::from_utf8_lossy(&out.stdout);
        assert!(log.contains("args: --host 0.0.0.0 --port 0"), "{log}");
        assert!(log.contains("agent-server exited with status 0"), "{log}");
        let addr = std::fs::read_to_string(job_dir.join("address")).unwrap();
        let host = String::from_utf8(
            std::process::Command::new("hostname")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        assert_eq!(addr, format!("{} 34567\n", host.trim()));
    }

    #[test]
    fn apptainer_jobs_pass_variables_as_apptainerenv() {
        let mut a = ApptainerOptions::new(SifSource::File("/shared/agent.sif".into()));
        a.enable_gpu = true;
        let mut opts = SlurmOptions::new(SlurmServer::Apptainer(Box::new(a)));
        opts.env = vec![("FOO".into(), "x".into())];
        let s = job_script(&opts, Path::new("/d"));
        assert!(s.contains("export APPTAINERENV_FOO=\"$FOO\""), "{s}");
        assert!(s.contains("export APPTAINERENV_SESSION_API_KEY=\"$SESSION_API_KEY\""));
        assert!(s.contains(
            "'apptainer' 'run' '--compat' '--nv' '--no-mount' 'hostfs' '--no-mount' \
             'bind-paths' '--no-mount' 'tmp' '/shared/agent.sif' '--host' '0.0.0.0' '--port' '0' \
             | report"
        ));
    }

    #[tokio::test]
    async fn the_log_tail_is_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("log");
        let text: String = (0..5000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&p, text).unwrap();
        assert_eq!(log_tail(&p, 2).await, "line 4998\nline 4999");
        assert_eq!(log_tail(&dir.path().join("none"), 2).await, "(no log yet)");
    }
}
