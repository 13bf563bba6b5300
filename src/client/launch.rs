//! The `agent-server launch docker|podman|apptainer|slurm …` subcommand: start a sandboxed server, print its
//! URL and key, then either stay in the foreground (logs; Ctrl-C stops and removes it) or, with
//! `--detach`, leave it running and exit, like `docker run -d`.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rand::Rng;

mod cluster;

use super::{
    guard, ApptainerOptions, ApptainerWorkspace, DockerBuild, DockerOptions, DockerWorkspace,
    SifSource,
};

/// `agent-server launch`.
#[derive(Debug, Parser)]
#[command(
    name = "agent-server launch",
    about = "Start an agent server in a sandbox and print its URL and session key.",
    long_about = "Start an agent server in a sandbox and print its URL and session key as\n\
`export AGENT_SERVER_URL=…` and `export AGENT_SERVER_API_KEY=…` lines on stdout (so\n\
`eval \"$(agent-server launch docker -d)\"` sets them in your shell), or one JSON object with --json. In the foreground the server's log follows on stderr and Ctrl-C stops and removes the sandbox;\n\
with --detach it keeps running and the command exits."
)]
pub struct LaunchCli {
    #[command(subcommand)]
    pub sandbox: Sandbox,
}

/// Which sandbox.
#[derive(Debug, Subcommand)]
pub enum Sandbox {
    /// Run the server image in a Docker container (published on 127.0.0.1 only).
    Docker(DockerArgs),
    /// Run the server from a SIF with Apptainer (unprivileged, host network).
    Apptainer(ApptainerArgs),
    /// Run the server image with Podman (the docker options; no daemon, rootless for non-root).
    Podman(DockerArgs),
    /// Submit a Slurm batch job that runs the server on a compute node.
    Slurm(cluster::SlurmArgs),
}

/// Options shared by every sandbox.
#[derive(Debug, Args)]
pub struct Common {
    /// Host port for the server (default: a free port in 30000-39999).
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    pub port: Option<u16>,
    /// Variable for the server: NAME=VALUE, or NAME to pass this shell's value (repeatable).
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// Session key required by the server (default: a new random key).
    #[arg(long, env = "AGENT_SERVER_LAUNCH_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Run without a session key (anyone who can reach the port can run commands).
    #[arg(long, conflicts_with = "api_key")]
    pub no_auth: bool,
    /// Seconds to wait for /health.
    #[arg(long, default_value_t = 120.0)]
    pub timeout: f64,
    /// Leave the sandbox running and exit once it is healthy.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Print {"url","api_key",…} as one JSON line instead of `export` lines.
    #[arg(long)]
    pub json: bool,
    /// Do not copy the server's log to stderr.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `launch docker`.
#[derive(Debug, Args)]
pub struct DockerArgs {
    /// Image to run (ignored with --build).
    #[arg(default_value = "agent-server:latest")]
    pub image: String,
    #[command(flatten)]
    pub common: Common,
    /// Bind mount, as `docker run -v` (repeatable).
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:OPTS]")]
    pub volume: Vec<String>,
    /// Container name (default agent-server-<uuid>).
    #[arg(long)]
    pub name: Option<String>,
    /// Platform, e.g. linux/arm64 (default: native).
    #[arg(long)]
    pub platform: Option<String>,
    /// Docker network.
    #[arg(long)]
    pub network: Option<String>,
    /// Expose all GPUs (--gpus all).
    #[arg(long)]
    pub gpus: bool,
    /// Also publish VS Code (container 8001) on PORT+1.
    #[arg(long)]
    pub extra_ports: bool,
    /// Run the server as UID[:GID] (default: the owner of the first writable `-v` host
    /// directory when it is not root, so the server can write it; else the image's user 10001).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Build the image from this context's Dockerfile first (tagged IMAGE).
    #[arg(long, value_name = "CONTEXT")]
    pub build: Option<PathBuf>,
    /// Dockerfile stage to build.
    #[arg(long, requires = "build")]
    pub target: Option<String>,
    /// Build argument NAME=VALUE (repeatable).
    #[arg(long = "build-arg", requires = "build", value_name = "NAME=VALUE")]
    pub build_arg: Vec<String>,
}

/// `launch apptainer`.
#[derive(Debug, Args)]
pub struct ApptainerArgs {
    /// Existing SIF file.
    #[arg(long, conflicts_with_all = ["image", "def"])]
    pub sif: Option<PathBuf>,
    /// Image to convert: docker://REF, docker-daemon://REF (local Docker), oras://…
    #[arg(long, conflicts_with = "def")]
    pub image: Option<String>,
    /// Definition file to build (e.g. apptainer.def).
    #[arg(long)]
    pub def: Option<PathBuf>,
    #[command(flatten)]
    pub common: Common,
    /// Bind mount SRC[:DST[:OPTS]] (repeatable).
    #[arg(short = 'B', long = "bind")]
    pub bind: Vec<String>,
    /// Host directory bound writable on /workspace.
    #[arg(long)]
    pub workspace: Option<PathBuf>,
    /// NVIDIA GPU support (--nv).
    #[arg(long)]
    pub nv: bool,
    /// Where converted SIFs are cached (default ~/.apptainer_cache).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Run with --fakeroot.
    #[arg(long)]
    pub fakeroot: bool,
    /// Do not pass --compat.
    #[arg(long)]
    pub no_compat: bool,
}

impl Common {
    /// `--timeout` as a duration: at least 0.1 s, at most a day (NaN and infinities included).
    fn health_timeout(&self) -> Duration {
        let secs = if self.timeout.is_finite() {
            self.timeout.clamp(0.1, 86_400.0)
        } else {
            86_400.0
        };
        Duration::from_secs_f64(secs)
    }
}

fn split_env(specs: &[String]) -> (Vec<String>, Vec<(String, String)>) {
    let mut forward = Vec::new();
    let mut set = Vec::new();
    for s in specs {
        match s.split_once('=') {
            Some((k, v)) => set.push((k.to_string(), v.to_string())),
            None => forward.push(s.clone()),
        }
    }
    (forward, set)
}

fn api_key(c: &Common) -> Option<String> {
    if c.no_auth {
        return None;
    }
    Some(c.api_key.clone().unwrap_or_else(|| {
        let bytes: [u8; 24] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }))
}

/// Prints where the server is: one JSON object with `--json`, otherwise `export` lines for a
/// POSIX shell (`eval "$(agent-server launch docker -d)"`). Every variable is prefixed with
/// `AGENT_SERVER_` so that common names (`CONTAINER_NAME`, ...) are left alone, and every value
/// is single-quoted.
fn print_ready(c: &Common, url: &str, key: Option<&str>, extra: &[(&str, String)]) {
    let mut out = std::io::stdout();
    let _ = out.write_all(ready_text(c.json, url, key, extra).as_bytes());
    let _ = out.flush();
}

fn ready_text(json: bool, url: &str, key: Option<&str>, extra: &[(&str, String)]) -> String {
    if json {
        let mut m = serde_json::Map::new();
        m.insert("url".into(), url.into());
        m.insert("api_key".into(), key.into());
        for (k, v) in extra {
            m.insert((*k).into(), v.clone().into());
        }
        return format!("{}\n", serde_json::Value::Object(m));
    }
    let mut text = format!("export AGENT_SERVER_URL={}\n", shell_quote(url));
    text.push_str(&format!(
        "export AGENT_SERVER_API_KEY={}\n",
        shell_quote(key.unwrap_or(""))
    ));
    for (k, v) in extra {
        text.push_str(&format!(
            "export AGENT_SERVER_{}={}\n",
            k.to_uppercase(),
            shell_quote(v)
        ));
    }
    text
}

/// `value` as one single-quoted POSIX shell word.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// Runs `agent-server launch …` (`args` excludes the program name and `launch`); returns the
/// process exit status.
pub fn main(args: Vec<OsString>) -> i32 {
    let cli = match LaunchCli::try_parse_from(
        std::iter::once(OsString::from("agent-server launch")).chain(args),
    ) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agent-server launch: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(async move {
        // Ctrl-C while starting (or building) must not leak the sandbox either.
        tokio::select! {
            code = run(cli) => code,
            code = guard::wait_for_signal() => {
                tokio::task::spawn_blocking(guard::cleanup_all).await.ok();
                code
            }
        }
    })
}

async fn run(cli: LaunchCli) -> i32 {
    match cli.sandbox {
        Sandbox::Podman(a) => cluster::podman(a).await,
        Sandbox::Slurm(a) => cluster::slurm(a).await,
        Sandbox::Docker(a) => {
            let (forward, env) = split_env(&a.common.env);
            let key = api_key(&a.common);
            let mut o = DockerOptions::image(&a.image);
            o.host_port = a.common.port;
            o.forward_env = forward;
            o.env = env;
            o.volumes = a.volume;
            o.name = a.name;
            o.platform = a.platform;
            o.network = a.network;
            o.enable_gpu = a.gpus;
            o.extra_ports = a.extra_ports;
            o.user = a.user;
            o.api_key = key.clone();
            o.detach_logs = !a.common.quiet && !a.common.detach;
            o.keep_alive = a.common.detach;
            o.health_check_timeout = a.common.health_timeout();
            if let Some(ctx) = a.build {
                o.build = Some(DockerBuild {
                    context: ctx,
                    dockerfile: None,
                    target: a.target,
                    build_args: split_env(&a.build_arg).1,
                    tag: a.image.clone(),
                });
            }
            let ws = match DockerWorkspace::start(o).await {
                Ok(ws) => ws,
                Err(e) => {
                    eprintln!("agent-server launch docker: {e}");
                    return 1;
                }
            };
            let id = ws.container_id().unwrap_or_default().to_string();
            print_ready(
                &a.common,
                ws.host(),
                key.as_deref(),
                &[
                    ("container_id", id.clone()),
                    ("container_name", ws.name().into()),
                ],
            );
            if a.common.detach {
                ws.detach();
                return 0;
            }
            foreground(ws).await
        }
        Sandbox::Apptainer(a) => {
            let source = match (a.sif, a.image, a.def) {
                (Some(s), _, _) => SifSource::File(s),
                (_, Some(i), _) => SifSource::Image(i),
                (_, _, Some(d)) => SifSource::Definition(d),
                _ => {
                    eprintln!(
                        "agent-server launch apptainer: one of --sif, --image or --def is required"
                    );
                    return 2;
                }
            };
            if a.common.detach {
                eprintln!(
                    "agent-server launch apptainer: --detach is not supported (no daemon keeps it)"
                );
                return 2;
            }
            let (forward, env) = split_env(&a.common.env);
            let key = api_key(&a.common);
            let mut o = ApptainerOptions::new(source);
            o.host_port = a.common.port;
            o.forward_env = forward;
            o.env = env;
            o.extra_bind_mounts = a.bind;
            o.mount_dir = a.workspace;
            o.enable_gpu = a.nv;
            o.cache_dir = a.cache_dir;
            o.use_fakeroot = a.fakeroot;
            o.enable_docker_compat = !a.no_compat;
            o.api_key = key.clone();
            o.detach_logs = !a.common.quiet;
            o.health_check_timeout = a.common.health_timeout();
            let mut ws = match ApptainerWorkspace::start(o).await {
                Ok(ws) => ws,
                Err(e) => {
                    eprintln!("agent-server launch apptainer: {e}");
                    return 1;
                }
            };
            let sif = ws.sif().display().to_string();
            print_ready(&a.common, ws.host(), key.as_deref(), &[("sif", sif)]);
            let code = guard::wait_for_signal().await;
            let _ = ws.cleanup().await;
            code
        }
    }
}

/// Waits for Ctrl-C/SIGTERM (cleaning up) or for the container to stop on its own.
async fn foreground(mut ws: DockerWorkspace) -> i32 {
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
            eprintln!("agent-server launch docker: the server stopped answering");
            1
        }
    };
    let _ = ws.cleanup().await;
    code
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn docker_flags_read_like_docker_run() {
        let cli = LaunchCli::try_parse_from([
            "launch",
            "docker",
            "-d",
            "-p",
            "8000",
            "-e",
            "A=1",
            "-e",
            "B",
            "-v",
            "/a:/b:ro",
            "--name",
            "n",
            "my/image:tag",
        ])
        .unwrap();
        let Sandbox::Docker(a) = cli.sandbox else {
            panic!("not docker")
        };
        assert_eq!(a.image, "my/image:tag");
        assert_eq!(a.common.port, Some(8000));
        assert!(a.common.detach);
        assert_eq!(a.volume, ["/a:/b:ro"]);
        let (forward, set) = split_env(&a.common.env);
        assert_eq!(forward, ["B"]);
        assert_eq!(set, [("A".to_string(), "1".to_string())]);
        // A fresh random key unless told otherwise.
        let k = api_key(&a.common).unwrap();
        assert_eq!(k.len(), 48);
        assert_ne!(Some(k), api_key(&a.common));
        assert!(
            LaunchCli::try_parse_from(["launch", "docker", "--no-auth", "--api-key", "k"]).is_err()
        );
        assert!(
            LaunchCli::try_parse_from(["launch", "apptainer", "--sif", "a", "--image", "b"])
                .is_err()
        );
    }

    #[test]
    fn ready_lines_are_shell_safe_exports() {
        let text = ready_text(
            false,
            "http://127.0.0.1:30001",
            Some("k'ey $(rm -rf /)"),
            &[("container_name", "n".into())],
        );
        assert_eq!(
            text,
            "export AGENT_SERVER_URL='http://127.0.0.1:30001'\n\
             export AGENT_SERVER_API_KEY='k'\\''ey $(rm -rf /)'\n\
             export AGENT_SERVER_CONTAINER_NAME='n'\n"
        );
        // What a shell makes of them: the exact values, nothing run.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{text}printf '%s|%s|%s' \"$AGENT_SERVER_URL\" \"$AGENT_SERVER_API_KEY\" \"$AGENT_SERVER_CONTAINER_NAME\""
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "http://127.0.0.1:30001|k'ey $(rm -rf /)|n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&ready_text(true, "u", None, &[])).unwrap();
        assert_eq!(json, serde_json::json!({"url": "u", "api_key": null}));
    }
}
