//! Small helpers shared by services: ids and timestamps in the reference's formats.

use chrono::{Local, SecondsFormat, Utc};

/// A new random id as 32 lowercase hex digits (the reference's `OpenHandsUUID` wire form).
pub fn hex_id() -> String {
    random_uuid().simple().to_string()
}

/// A new random id in the dashed uuid4 form used for conversations and events.
pub fn dashed_id() -> String {
    random_uuid().to_string()
}

/// A version-4 uuid from the thread's random generator (seeded from the OS, reseeded
/// periodically), rather than a system call for every id.
fn random_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// Aware UTC time with microseconds and a `Z` suffix: `2026-11-25T11:21:09.170846Z`.
pub fn utc_timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Naive server-local time as Python's `datetime.now().isoformat()` prints it
/// (microseconds dropped when they are zero), used by conversation events.
pub fn local_naive_timestamp() -> String {
    let now = Local::now().naive_local();
    if now.and_utc().timestamp_subsec_micros() == 0 {
        now.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        now.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

/// Asks the allocator to give free memory back to the system half a second from now (one
/// trim for a burst of calls), on a blocking thread. Called after work that allocates a lot
/// briefly (pages of conversations read from disk, large transfers): glibc otherwise keeps
/// those pages in its arenas.
pub fn trim_heap_soon() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static PENDING: AtomicBool = AtomicBool::new(false);
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    rt.spawn(async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        PENDING.store(false, Ordering::Release);
        let _ = tokio::task::spawn_blocking(trim_heap).await;
    });
}

#[allow(unsafe_code)]
fn trim_heap() {
    // SAFETY: malloc_trim only returns free pages to the kernel; it takes the allocator's own
    // locks and touches no memory in use.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Environment variables never passed to child processes (credentials of the server).
const SENSITIVE_ENV: &[&str] = &[
    "SESSION_API_KEY",
    "OH_SESSION_API_KEYS",
    "OH_SECRET_KEY",
    "LMNR_PROJECT_API_KEY",
    "OTEL_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
];
/// Prefixes of such variables (`OH_SESSION_API_KEYS_0`, ...).
const SENSITIVE_ENV_PREFIXES: &[&str] = &["OH_SESSION_API_KEYS_"];

/// One environment variable.
pub type EnvVar = (std::ffi::OsString, std::ffi::OsString);

/// The environment of every child the server starts (workspace commands, the agent's terminal,
/// hooks): the server's own, without its credentials, with `AI_AGENT` set. Children start from
/// an empty environment plus this. Computed on first use; [`extend_child_env`] adds to it
/// (deferred init delivers variables later).
pub fn child_env() -> std::sync::Arc<Vec<EnvVar>> {
    let slot = CHILD_ENV.get_or_init(|| {
        let mut env = filter_env(std::env::vars_os());
        if let Some((name, value)) = CHILD_MARKER.get() {
            env.retain(|(k, _)| k != name.as_str());
            env.push((name.into(), value.into()));
        }
        std::sync::RwLock::new(std::sync::Arc::new(env))
    });
    slot.read().unwrap_or_else(|e| e.into_inner()).clone()
}

static CHILD_ENV: std::sync::OnceLock<std::sync::RwLock<std::sync::Arc<Vec<EnvVar>>>> =
    std::sync::OnceLock::new();

/// Sets `vars` (name, value) in the environment of every child started from now on (credential
/// names are filtered like the server's own).
pub fn extend_child_env(vars: &[(String, String)]) {
    let current = child_env();
    let mut env: Vec<EnvVar> = current.as_ref().clone();
    let added = filter_env(
        vars.iter()
            .map(|(k, v)| (std::ffi::OsString::from(k), std::ffi::OsString::from(v))),
    );
    for (k, v) in added {
        if k == "AI_AGENT" {
            continue;
        }
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    }
    if let Some(slot) = CHILD_ENV.get() {
        *slot.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(env);
    }
}

/// `NAME=VALUE` added to [`child_env`] (see `exec::orphans`); set once at start-up.
static CHILD_MARKER: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();

/// Marks every child started from now on with `name=value`. Only the first call counts; it must
/// come before the first child is started.
pub fn set_child_marker(name: &str, value: &str) {
    let _ = CHILD_MARKER.set((name.into(), value.into()));
}

/// [`child_env`] of a given environment.
fn filter_env(vars: impl Iterator<Item = EnvVar>) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = vars
        .filter(|(key, _)| {
            let k = key.to_string_lossy();
            !SENSITIVE_ENV.contains(&k.as_ref())
                && !SENSITIVE_ENV_PREFIXES.iter().any(|p| k.starts_with(p))
        })
        .collect();
    let agent_unset = env
        .iter()
        .find(|(k, _)| k == "AI_AGENT")
        .is_none_or(|(_, v)| v.to_string_lossy().trim().is_empty());
    if agent_unset {
        env.retain(|(k, _)| k != "AI_AGENT");
        env.push(("AI_AGENT".into(), "openhands".into()));
    }
    env
}

/// A `git` command for fetching sources (skills, plugins, canvas extensions): the children's
/// environment, no prompts, no output, its own process group.
pub fn git_command() -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    cmd.env_clear()
        .envs(child_env().iter().map(|(k, v)| (k, v)))
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd
}

/// Longest duration taken from outside input: about 31 years, far beyond any real timeout.
pub const MAX_INPUT_SECS: f64 = 1.0e9;

/// A duration from seconds given by a client, a provider or a config file. Never panics
/// (`Duration::from_secs_f64` does on negative, NaN or huge values): NaN and negative values give
/// zero, values past [`MAX_INPUT_SECS`] (infinity included) give that.
pub fn duration_from_secs(secs: f64) -> std::time::Duration {
    let secs = if secs.is_nan() {
        0.0
    } else {
        secs.clamp(0.0, MAX_INPUT_SECS)
    };
    std::time::Duration::from_secs_f64(secs)
}

/// Runs blocking `f` from synchronous code that may be on a runtime thread: on the
/// multi-threaded runtime the thread is handed over (`block_in_place`) so other tasks move on.
pub fn blocking_section<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// `path` with `.` dropped and `..` applied lexically (no file-system access, symlinks ignored).
pub fn lexical_normalize(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Captures what tests log.
#[cfg(test)]
pub(crate) mod test_log {
    use std::sync::{Arc, Mutex};

    /// What the current thread logs at `level` and above (one line per record, no colours)
    /// until dropped; read with [`Capture::text`]. Async tests on the current-thread runtime
    /// log on this thread.
    pub(crate) struct Capture {
        buf: Arc<Mutex<Vec<u8>>>,
        _guard: tracing::subscriber::DefaultGuard,
    }

    impl Capture {
        pub(crate) fn start(level: tracing::Level) -> Self {
            let buf = Arc::new(Mutex::new(Vec::new()));
            let sink = buf.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(level)
                .with_writer(move || Sink(sink.clone()))
                .finish();
            let guard = tracing::subscriber::set_default(subscriber);
            Self { buf, _guard: guard }
        }

        /// Everything logged so far.
        pub(crate) fn text(&self) -> String {
            let buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
            String::from_utf8_lossy(&buf).into_owned()
        }
    }

    /// Runs `f` and returns what it logged at INFO and above.
    pub(crate) fn logged<R>(f: impl FnOnce() -> R) -> (R, String) {
        let capture = Capture::start(tracing::Level::INFO);
        let out = f();
        (out, capture.text())
    }

    /// A log writer into a shared buffer.
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn children_never_get_the_server_credentials() {
        let vars = [
            ("PATH", "/bin"),
            ("SESSION_API_KEY", "a"),
            ("OH_SESSION_API_KEYS", "[\"b\"]"),
            ("OH_SESSION_API_KEYS_0", "c"),
            ("OH_SECRET_KEY", "d"),
            ("OTEL_HEADERS", "e"),
            ("AI_AGENT", ""),
        ];
        let env = filter_env(vars.iter().map(|(k, v)| ((*k).into(), (*v).into())));
        let names: Vec<_> = env.iter().map(|(k, _)| k.to_string_lossy()).collect();
        assert_eq!(names, ["PATH", "AI_AGENT"]);
        assert_eq!(env[1].1, "openhands");
    }

    #[test]
    fn durations_from_outside_input_are_clamped() {
        assert_eq!(duration_from_secs(1.5), Duration::from_millis(1500));
        assert_eq!(duration_from_secs(-3.0), Duration::ZERO);
        assert_eq!(duration_from_secs(f64::NAN), Duration::ZERO);
        let max = Duration::from_secs_f64(MAX_INPUT_SECS);
        for huge in [1e20, f64::INFINITY, f64::MAX] {
            assert_eq!(duration_from_secs(huge), max);
        }
        assert_eq!(duration_from_secs(f64::NEG_INFINITY), Duration::ZERO);
    }
}
