//! `agent-server launch slurm|podman`: the cluster-side launchers' command lines.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{api_key, foreground, print_ready, split_env, Common, DockerArgs};
use crate::client::{
    guard, ApptainerOptions, DockerOptions, PodmanOptions, PodmanWorkspace, SifSource,
    SlurmOptions, SlurmServer, SlurmWorkspace,
};

/// `launch slurm`.
#[derive(Debug, Args)]
pub struct SlurmArgs {
    /// The agent-server binary as the compute node sees it (default: this binary).
    #[arg(long, conflicts_with = "sif")]
    pub binary: Option<PathBuf>,
    /// Run this SIF with `apptainer run` on the node instead of the bare binary.
    #[arg(long)]
    pub sif: Option<PathBuf>,
    /// Apptainer bind mount SRC[:DST[:OPTS]] (repeatable; with --sif).
    #[arg(short = 'B', long = "bind", requires = "sif")]
    pub bind: Vec<String>,
    /// NVIDIA GPU support in the container (--nv; with --sif).
    #[arg(long, requires = "sif")]
    pub nv: bool,
    /// The apptainer executable on the node.
    #[arg(long, default_value = "apptainer")]
    pub apptainer: String,
    #[command(flatten)]
    pub common: Common,
    /// sbatch --partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// sbatch --account.
    #[arg(long)]
    pub account: Option<String>,
    /// sbatch --qos.
    #[arg(long)]
    pub qos: Option<String>,
    /// sbatch --time: the job's wall-clock limit (MM, HH:MM:SS, D-HH).
    #[arg(long)]
    pub time: Option<String>,
    /// sbatch --mem (e.g. 512M, 4G).
    #[arg(long)]
    pub mem: Option<String>,
    /// sbatch --cpus-per-task.
    #[arg(long)]
    pub cpus: Option<u32>,
    /// sbatch --gpus (e.g. 1, a100:2).
    #[arg(long)]
    pub gpus: Option<String>,
    /// Further sbatch argument, verbatim (repeatable), e.g. --sbatch-arg=--constraint=skylake.
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    pub sbatch_arg: Vec<String>,
    /// sbatch --job-name.
    #[arg(long, default_value = "agent-server")]
    pub job_name: String,
    /// Shared directory for job scripts, logs and address files (default ~/.agent-server/slurm).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The server's working directory on the node (default: the job directory).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Connect to this host instead of the node name the job reports.
    #[arg(long)]
    pub connect_host: Option<String>,
}

/// Runs `launch slurm`.
pub(super) async fn slurm(a: SlurmArgs) -> i32 {
    let server = match a.sif {
        Some(sif) => {
            let mut o = ApptainerOptions::new(SifSource::File(sif));
            o.extra_bind_mounts = a.bind;
            o.enable_gpu = a.nv;
            o.apptainer = a.apptainer;
            SlurmServer::Apptainer(Box::new(o))
        }
        None => match a.binary.map(Ok).unwrap_or_else(std::env::current_exe) {
            Ok(b) => SlurmServer::Binary(b),
            Err(e) => {
                eprintln!(
                    "agent-server launch slurm: cannot locate this binary ({e}): use --binary"
                );
                return 2;
            }
        },
    };
    let (forward, env) = split_env(&a.common.env);
    let key = api_key(&a.common);
    if key.is_none() {
        eprintln!("agent-server launch slurm: --no-auth is not supported (the server listens on the cluster network)");
        return 2;
    }
    let mut o = SlurmOptions::new(server);
    o.partition = a.partition;
    o.account = a.account;
    o.qos = a.qos;
    o.time_limit = a.time;
    o.memory = a.mem;
    o.cpus_per_task = a.cpus;
    o.gpus = a.gpus;
    o.sbatch_args = a.sbatch_arg;
    o.job_name = a.job_name;
    o.state_dir = a.state_dir;
    o.workdir = a.workdir;
    o.connect_host = a.connect_host;
    o.port = a.common.port;
    o.forward_env.extend(forward);
    o.env = env;
    o.api_key = key.clone();
    o.keep_alive = a.common.detach;
    o.start_timeout = a.common.health_timeout();
    let mut ws = match SlurmWorkspace::start(o).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("agent-server launch slurm: {e}");
            return 1;
        }
    };
    let job = ws.job_id().unwrap_or_default().to_string();
    print_ready(
        &a.common,
        ws.host(),
        key.as_deref(),
        &[
            ("job_id", job.clone()),
            ("node", ws.node().to_string()),
            ("log", ws.log_path().display().to_string()),
        ],
    );
    if a.common.detach {
        ws.detach();
        return 0;
    }
    if !a.common.quiet {
        eprintln!(
            "agent-server launch slurm: job {job} runs; its log is {}; Ctrl-C cancels it",
            ws.log_path().display()
        );
    }
    let code = tokio::select! {
        code = guard::wait_for_signal() => code,
        _ = async {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if !ws.alive().await {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if !ws.alive().await { break; }
                }
            }
        } => {
            eprintln!("agent-server launch slurm: the server stopped answering");
            1
        }
    };
    let _ = ws.cleanup().await;
    code
}

/// Runs `launch podman` (the `launch docker` options, run with Podman).
pub(super) async fn podman(a: DockerArgs) -> i32 {
    if a.build.is_some() {
        eprintln!(
            "agent-server launch podman: --build is not supported (build with `podman build`)"
        );
        return 2;
    }
    let (forward, env) = split_env(&a.common.env);
    let key = api_key(&a.common);
    let mut o = PodmanOptions::image(&a.image);
    let r: &mut DockerOptions = &mut o.run;
    r.host_port = a.common.port;
    r.forward_env = forward;
    r.env = env;
    r.volumes = a.volume;
    r.name = a.name;
    r.platform = a.platform;
    r.network = a.network;
    r.enable_gpu = a.gpus;
    r.extra_ports = a.extra_ports;
    r.user = a.user;
    r.api_key = key.clone();
    r.detach_logs = !a.common.quiet && !a.common.detach;
    r.keep_alive = a.common.detach;
    r.health_check_timeout = a.common.health_timeout();
    let ws = match PodmanWorkspace::start(o).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("agent-server launch podman: {e}");
            return 1;
        }
    };
    let id = ws.container_id().unwrap_or_default().to_string();
    print_ready(
        &a.common,
        ws.host(),
        key.as_deref(),
        &[("container_id", id), ("container_name", ws.name().into())],
    );
    if a.common.detach {
        ws.detach();
        return 0;
    }
    foreground(ws.into_inner()).await
}
