//! What every launcher shares: free-port selection, the health wait, and a process-wide registry
//! of live sandboxes so that Ctrl-C/SIGTERM can release them ([`cleanup_on_signals`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

use super::workspace::health_ok;
use super::ClientError;

/// A synchronous release action (runs from `Drop`, panics and signal handlers).
pub(crate) type Release = Box<dyn FnOnce() + Send>;

fn registry() -> &'static Mutex<HashMap<u64, Release>> {
    static REG: OnceLock<Mutex<HashMap<u64, Release>>> = OnceLock::new();
    REG.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Registers a release action; returns its ticket for [`unregister`].
pub(crate) fn register(release: Release) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut reg) = registry().lock() {
        reg.insert(id, release);
    }
    id
}

/// Removes a release action without running it (the owner cleaned up itself).
pub(crate) fn unregister(ticket: u64) -> Option<Release> {
    registry().lock().ok().and_then(|mut r| r.remove(&ticket))
}

/// Releases every sandbox started by this process that is still alive (containers removed,
/// processes killed, cloud sandboxes deleted unless kept alive). Blocking; safe to call twice.
pub fn cleanup_all() {
    let actions: Vec<Release> = match registry().lock() {
        Ok(mut reg) => reg.drain().map(|(_, a)| a).collect(),
        Err(_) => Vec::new(),
    };
    for a in actions {
        a();
    }
}

/// Spawns a task that, on Ctrl-C or SIGTERM, releases every live sandboxes ([`cleanup_all`]) and
/// exits the process with status 130 (SIGINT) or 143 (SIGTERM). Needs a Tokio runtime.
pub fn cleanup_on_signals() {
    tokio::spawn(async {
        let code = wait_for_signal().await;
        let _ = tokio::task::spawn_blocking(cleanup_all).await;
        std::process::exit(code);
    });
}

/// Resolves with the conventional exit status on Ctrl-C (130) or SIGTERM (143).
pub(crate) async fn wait_for_signal() -> i32 {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => 130,
        _ = term => 143,
    }
}

/// Whether `port` can be bound on all local interfaces right now.
pub fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// A random free port in 30000–39999 (50 attempts, like the reference), else any free port.
pub fn find_available_tcp_port() -> Result<u16, ClientError> {
    let mut ports: Vec<u16> = (30000..40000).collect();
    ports.shuffle(&mut rand::rng());
    if let Some(p) = ports.into_iter().take(50).find(|p| port_is_free(*p)) {
        return Ok(p);
    }
    std::net::TcpListener::bind(("0.0.0.0", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| ClientError::Failed(format!("no free TCP port: {e}")))
}

/// Picks `requested` (checked free) or a free port; also checks `port+1` when `extra` is set.
pub(crate) fn choose_port(requested: Option<u16>, extra: bool) -> Result<u16, ClientError> {
    let port = match requested {
        Some(p) if !port_is_free(p) => {
            return Err(ClientError::Failed(format!("Port {p} is not available")))
        }
        Some(p) => p,
        None => find_available_tcp_port()?,
    };
    if extra && !port_is_free(port.saturating_add(1)) {
        return Err(ClientError::Failed(format!(
            "Port {} is not available for VSCode",
            port.saturating_add(1)
        )));
    }
    Ok(port)
}

/// Polls `GET {host}/health` until it answers 2xx, `still_running` reports a failure, or
/// `timeout` passes.
pub(crate) async fn wait_healthy<F, Fut>(
    host: &str,
    timeout: Duration,
    mut still_running: F,
) -> Result<(), ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ClientError>>,
{
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .build()?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if health_ok(&http, host, Duration::from_secs(1)).await {
            return Ok(());
        }
        still_running().await?;
        if Instant::now() >= deadline {
            return Err(ClientError::Timeout(
                "Container failed to become healthy in time".into(),
            ));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// `KEY` values of `names` that are set in this process's environment.
pub(crate) fn forwarded_env(names: &[String]) -> Vec<(String, String)> {
    names
        .iter()
        .filter_map(|n| std::env::var(n).ok().map(|v| (n.clone(), v)))
        .collect()
}

/// Runs `fut` to completion on a private runtime in a helper thread (for `Drop` and signal-time
/// releases that must make an HTTP call while possibly inside another runtime).
pub(crate) fn run_blocking<F>(fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let handle = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(fut);
        }
    });
    let _ = handle.join();
}

/// Waits of an exponential backoff: `first`, `first`, `2*first`, … capped at `max`
/// (tenacity's `wait_exponential(multiplier=1, min=2, max=10)` for `first = 2 s`).
pub(crate) fn backoff(first: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    std::iter::once(first).chain(std::iter::successors(Some(first), move |d| {
        Some((*d * 2).min(max))
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_busy_port_is_refused() {
        let l = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let p = l.local_addr().unwrap().port();
        assert!(!port_is_free(p));
        let err = choose_port(Some(p), false).unwrap_err();
        assert_eq!(err.to_string(), format!("Port {p} is not available"));
        let free = find_available_tcp_port().unwrap();
        assert!((30000..40000).contains(&free) || free != p);
    }

    #[test]
    fn registry_runs_each_release_once() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t1 = tx.clone();
        register(Box::new(move || t1.send(1).unwrap()));
        let ticket = register(Box::new(move || tx.send(2).unwrap()));
        assert!(unregister(ticket).is_some());
        cleanup_all();
        cleanup_all();
        assert_eq!(rx.try_iter().collect::<Vec<_>>(), vec![1]);
    }
}
