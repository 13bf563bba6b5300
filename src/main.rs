//! The `agent-server` binary: parse the configuration, set up logging, serve until SIGTERM/Ctrl-C.

use std::io::Write;

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use agent_server::config::{Args, Config};

mod init;
use agent_server::server::{serve, serve_deferred, AppState};

/// glibc malloc arenas the server may use. The default (8 per core) lets every tokio worker keep
/// its own arena of freed buffers: after a large transfer the resident set stays tens of MiB
/// above the working set. Two arenas keep the peak bounded at no measurable cost.
const MALLOC_ARENAS: i32 = 2;
/// Allocations from this size on get their own mapping (see `tune_malloc`).
const MMAP_THRESHOLD: i32 = 256 * 1024;

fn main() -> anyhow::Result<()> {
    if std::process::id() == 1 && std::env::var_os("AGENT_SERVER_NO_INIT").is_none() {
        // PID 1 of a container without an init: orphans of the agent's commands would pile up
        // as zombies. Become a minimal init and run the server as its child.
        init::run_as_init();
    }
    tune_malloc();
    if std::env::args_os().nth(1).is_some_and(|a| a == "launch") {
        std::process::exit(agent_server::client::launch::main(
            std::env::args_os().skip(2).collect(),
        ));
    }
    let args = Args::parse();
    let config = Config::from_args(args).context("invalid configuration")?;
    init_tracing(config.log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run(config));
    // Blocking work still running once the server has stopped (a huge archive the client
    // gave up on) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

async fn run(config: Config) -> anyhow::Result<()> {
    let addr = format!("{}:{}", config.host, config.port);
    let listener = TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot bind {addr}"))?;
    let local = listener.local_addr().context("no local address")?;
    if config.session_api_keys.is_empty() && local.ip().is_unspecified() {
        tracing::warn!(
            "binding {local} without a session API key: anyone who can reach it can run commands"
        );
    }
    let deferred = config.deferred_init.then(|| config.clone());
    let state = if deferred.is_some() {
        AppState::dormant(&config).context("cannot initialise the dormant server state")?
    } else {
        AppState::new(config).context("cannot initialise the server state")?
    };
    // Printed on stdout so that `--port 0` users (and launchers) learn the address.
    let mut out = std::io::stdout();
    let _ = writeln!(out, "agent-server listening on http://{local}");
    let _ = out.flush();
    tracing::info!(%local, "listening");
    if let Some(base) = deferred {
        tracing::info!("deferred init: dormant until POST /api/init");
        serve_deferred(listener, state, base, shutdown_signal())
            .await
            .context("server failed")?;
    } else {
        serve(listener, state, shutdown_signal())
            .await
            .context("server failed")?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Logs go to stderr: colours only when it is a terminal (and `NO_COLOR` is unset), so a log
/// redirected to a file or collected by a container runtime is plain text.
fn init_tracing(json: bool) {
    use std::io::IsTerminal;
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The WebSocket library traces whole frames, and a client's first frame may carry its session
    // key: never more than info for it, whatever RUST_LOG asks.
    for target in ["tungstenite=info", "tokio_tungstenite=info"] {
        if let Ok(directive) = target.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Tunes glibc's malloc before any thread starts: at most `MALLOC_ARENAS` arenas, and blocks of
/// `MMAP_THRESHOLD` bytes or more always mapped on their own, so that the 1 MiB output chunks and
/// transfer buffers go back to the system when freed instead of staying in an arena (glibc
/// otherwise raises that threshold after the first such free). A tunable already set in the
/// environment is left alone.
#[allow(unsafe_code)]
fn tune_malloc() {
    // SAFETY: mallopt only changes allocator tunables; it is called once, before the runtime
    // starts any thread, with valid parameters and values.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        }
    }
}
