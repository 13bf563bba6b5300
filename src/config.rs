//! Configuration: CLI flags, `OH_*` environment variables and the reference's JSON config file,
//! validated once into [`Config`]. No other module reads the environment for settings.

use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

/// Default JSON config file of the reference server (relative to the working directory).
pub const DEFAULT_CONFIG_FILE: &str = "workspace/openhands_agent_server_config.json";

/// Default cap on a request body (file uploads excepted, they stream to disk): room for messages
/// with pasted screenshots as base64 image content.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Default time for a request's headers (and for an idle kept-alive connection).
pub const DEFAULT_HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Default time an idle conversation keeps its documents and events in memory.
pub const DEFAULT_CONVERSATION_IDLE_TTL: std::time::Duration = std::time::Duration::from_secs(1200);

/// Default connection cap: three quarters of the open-file limit (the rest is for files,
/// pipes and WebSockets), at most 10,000.
fn default_max_connections() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    usize::try_from(soft / 4 * 3)
        .unwrap_or(10_000)
        .clamp(16, 10_000)
}

/// Command-line flags of the `agent-server` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "agent-server",
    version,
    about = "A fast, wire-compatible Rust replacement for the OpenHands agent-server.",
    long_about = "A fast, wire-compatible Rust replacement for the OpenHands agent-server.\n\n\
Environment (as the reference server reads them):\n  \
SESSION_API_KEY, OH_SESSION_API_KEYS_0..N, OH_SESSION_API_KEYS (JSON list)  API keys; none = no auth\n  \
OH_DEFERRED_INIT           true: start dormant until POST /api/init brings the configuration\n  \
OH_ENABLE_VSCODE           false: /api/vscode/* report VS Code as disabled\n  \
OH_PERSISTENCE_DIR         settings, secrets and LLM profiles (default ~/.openhands)\n  \
OH_CONVERSATIONS_PATH      where conversations are persisted (default workspace/conversations)\n  \
OH_BASH_EVENTS_DIR         where global bash events are kept (default workspace/bash_events)\n  \
OH_WORKSPACE_PATH          default workspace (default workspace/project)\n  \
OH_SECRET_KEY              key that encrypts secrets at rest (default: the first API key)\n  \
OH_ALLOW_CORS_ORIGINS_0..N, OH_ALLOW_CORS_ORIGIN_REGEX   extra CORS origins\n  \
OH_MAX_CONCURRENT_RUNS     parallel agent runs before 429 (default 10)\n  \
OH_MAX_REQUEST_BODY_BYTES  largest JSON/request body, uploads excepted (default 67108864 = 64 MiB)\n  \
OH_HEADER_READ_TIMEOUT_SECONDS  time for a request's headers and for an idle connection (default 30)\n  \
OH_CONVERSATION_IDLE_TTL_SECONDS  idle time before a conversation's events leave memory (default 1200)\n  \
OH_MAX_CONNECTIONS         open HTTP connections at most; over it a quick 503 (default 3/4 of the fd limit)\n  \
OH_BASH_EVENTS_MAX         bash events kept per events directory, oldest deleted first (default 20000)\n  \
OH_APP_BACKEND_PUBLIC_URL  separate browser origin serving Canvas App backends (/app-backends/*)\n  \
OH_TRUST_FORWARDED_HEADERS true: X-Forwarded-Proto/-Host decide a request's origin (behind a TLS proxy)\n  \
OPENHANDS_AGENT_SERVER_CONFIG_PATH  JSON config file (default workspace/openhands_agent_server_config.json)\n  \
OPENHANDS_BUILD_GIT_SHA, OPENHANDS_BUILD_GIT_REF  reported by /server_info\n  \
RUST_LOG                   log filter (default info)\n\n\
Subcommand:\n  \
launch docker|apptainer [OPTIONS]  start a server in a sandbox, print its URL and key (see `launch --help`)"
)]
pub struct Args {
    /// Address to bind. Default: 127.0.0.1 without an API key, 0.0.0.0 with one (as the reference).
    #[arg(long)]
    pub host: Option<String>,
    /// Port to bind; 0 picks a free port (the bound address is printed on stdout).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "OH_LOG_JSON")]
    pub log_json: bool,
    /// Accepted for compatibility with the reference's CLI; has no effect.
    #[arg(long, hide = true)]
    pub reload: bool,
}

/// The JSON config file (a subset of the reference's `Config` model); unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FileConfig {
    session_api_keys: Vec<String>,
    allow_cors_origins: Vec<String>,
    allow_cors_origin_regex: Option<String>,
    conversations_path: Option<PathBuf>,
    workspace_path: Option<PathBuf>,
    bash_events_dir: Option<PathBuf>,
    secret_key: Option<String>,
    max_concurrent_runs: Option<usize>,
    app_backend_public_url: Option<String>,
    trust_forwarded_headers: Option<bool>,
}

/// Validated server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub log_json: bool,
    /// Accepted API keys; empty means no authentication.
    pub session_api_keys: Vec<String>,
    pub allow_cors_origins: Vec<String>,
    /// `OH_ALLOW_CORS_ORIGIN_REGEX`: origins it matches in full are allowed (checked to compile).
    pub allow_cors_origin_regex: Option<String>,
    /// `OH_RUNTIME_IDLE_TIMEOUT_SECONDS`: the runtime is cleaned up after this long without
    /// activity, so the terminal refuses foreground commands with longer timeouts.
    pub runtime_idle_timeout_secs: Option<f64>,
    pub conversations_path: PathBuf,
    pub workspace_path: PathBuf,
    pub bash_events_dir: PathBuf,
    /// `OH_DEFERRED_INIT`: start dormant; `/api/*` answers 503 until `POST /api/init`.
    pub deferred_init: bool,
    /// `OH_ENABLE_VSCODE` (default true): what `/api/vscode/status` reports as configured.
    pub enable_vscode: bool,
    /// Settings, secrets and LLM profiles (`OH_PERSISTENCE_DIR`, else `~/.openhands`).
    pub persistence_dir: PathBuf,
    /// Where `workspaces.json` is kept: `OH_PERSISTENCE_DIR`, else `.openhands` beside the
    /// conversations directory (as the reference).
    pub workspaces_dir: PathBuf,
    /// Key for encrypting secrets at rest (`OH_SECRET_KEY`, else the first API key).
    pub secret_key: Option<String>,
    pub max_concurrent_runs: usize,
    /// Largest request body accepted outside file uploads (`OH_MAX_REQUEST_BODY_BYTES`).
    pub max_request_body_bytes: usize,
    /// Seconds a client has to send a request's headers, idle keep-alive included
    /// (`OH_HEADER_READ_TIMEOUT_SECONDS`).
    pub header_read_timeout: std::time::Duration,
    /// Idle time after which a conversation's documents and events leave memory
    /// (`OH_CONVERSATION_IDLE_TTL_SECONDS`).
    pub conversation_idle_ttl: std::time::Duration,
    /// Open HTTP connections at most, WebSockets excluded (`OH_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Bash events kept per events directory; older ones are deleted (`OH_BASH_EVENTS_MAX`).
    pub bash_events_max: usize,
    pub build_git_sha: String,
    pub build_git_ref: String,
    /// The separate browser origin that exposes Canvas App backends
    /// (`OH_APP_BACKEND_PUBLIC_URL`); `None`: the `/app-backends` bridge is off.
    pub app_backend_public_url: Option<String>,
    /// Trust `X-Forwarded-Proto`/`X-Forwarded-Host` for a request's origin
    /// (`OH_TRUST_FORWARDED_HEADERS`).
    pub trust_forwarded_headers: bool,
    /// `DOCKER_HOST_ADDR`: a host whose origin may bootstrap Canvas App sessions.
    pub docker_host_addr: Option<String>,
}

/// A configuration problem found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid JSON: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{name} is not valid: {reason}")]
    Env { name: String, reason: String },
}

/// `regex` if it compiles as the full-match pattern CORS checks use; else the error naming
/// where it came from.
fn checked_regex(regex: String, name: String) -> Result<String, ConfigError> {
    match cors_regex(&regex) {
        Ok(_) => Ok(regex),
        Err(e) => Err(ConfigError::Env {
            name,
            reason: format!("{regex:?} is not a valid regular expression: {e}"),
        }),
    }
}

/// The CORS origin pattern `regex` as a full match (Starlette's `fullmatch`).
pub fn cors_regex(regex: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{regex})$"))
}

impl Config {
    /// Builds the configuration from flags and the process environment.
    pub fn from_args(args: Args) -> Result<Self, ConfigError> {
        Self::from_args_and_env(args, |k| std::env::var(k).ok())
    }

    /// Builds the configuration from flags and an environment lookup (testable).
    pub fn from_args_and_env(
        args: Args,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file_path = env("OPENHANDS_AGENT_SERVER_CONFIG_PATH")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_FILE));
        let file = read_file_config(&file_path)?;

        let mut keys = env_list(&env, "OH_SESSION_API_KEYS")?;
        if keys.is_empty() {
            keys = file.session_api_keys;
        }
        if keys.is_empty() {
            keys.extend(env("SESSION_API_KEY"));
        }
        keys.retain(|k| !k.is_empty());

        let mut cors = env_list(&env, "OH_ALLOW_CORS_ORIGINS")?;
        if cors.is_empty() {
            cors = file.allow_cors_origins;
        }
        let path = |name: &str, from_file: Option<PathBuf>, default: &str| {
            env(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or(from_file)
                .unwrap_or_else(|| PathBuf::from(default))
        };
        let max_concurrent_runs = match env("OH_MAX_CONCURRENT_RUNS") {
            Some(v) => v.parse().map_err(|_| ConfigError::Env {
                name: "OH_MAX_CONCURRENT_RUNS".into(),
                reason: format!("{v:?} is not a positive integer"),
            })?,
            None => file.max_concurrent_runs.unwrap_or(10),
        };
        let max_request_body_bytes = positive(
            &env,
            "OH_MAX_REQUEST_BODY_BYTES",
            "a positive number of bytes",
            DEFAULT_MAX_REQUEST_BODY_BYTES,
        )?;
        let header_read_timeout = seconds(
            &env,
            "OH_HEADER_READ_TIMEOUT_SECONDS",
            DEFAULT_HEADER_READ_TIMEOUT,
        )?;
        let conversation_idle_ttl = seconds(
            &env,
            "OH_CONVERSATION_IDLE_TTL_SECONDS",
            DEFAULT_CONVERSATION_IDLE_TTL,
        )?;
        let max_connections = positive(
            &env,
            "OH_MAX_CONNECTIONS",
            "a positive integer",
            default_max_connections(),
        )?;
        let bash_events_max = positive(
            &env,
            "OH_BASH_EVENTS_MAX",
            "a positive integer",
            crate::exec::DEFAULT_MAX_EVENTS,
        )?;
        let secret_key = env("OH_SECRET_KEY")
            .filter(|v| !v.is_empty())
            .or(file.secret_key)
            .or_else(|| keys.first().cloned());
        let persistence_override = env("OH_PERSISTENCE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let conversations_path = path(
            "OH_CONVERSATIONS_PATH",
            file.conversations_path,
            "workspace/conversations",
        );
        let allow_cors_origin_regex = match env("OH_ALLOW_CORS_ORIGIN_REGEX") {
            Some(r) => Some(checked_regex(r, "OH_ALLOW_CORS_ORIGIN_REGEX".into())?),
            None => file
                .allow_cors_origin_regex
                .map(|r| {
                    let name = format!("allow_cors_origin_regex in {}", file_path.display());
                    checked_regex(r, name)
                })
                .transpose()?,
        };
        let runtime_idle_timeout_secs = env("OH_RUNTIME_IDLE_TIMEOUT_SECONDS")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| *v > 0.0);
        let host = args.host.unwrap_or_else(|| {
            if keys.is_empty() {
                "127.0.0.1"
            } else {
                "0.0.0.0"
            }
            .to_string()
        });
        Ok(Config {
            host,
            port: args.port,
            log_json: args.log_json,
            session_api_keys: keys,
            allow_cors_origins: cors,
            allow_cors_origin_regex,
            runtime_idle_timeout_secs,
            workspace_path: path(
                "OH_WORKSPACE_PATH",
                file.workspace_path,
                "workspace/project",
            ),
            bash_events_dir: path(
                "OH_BASH_EVENTS_DIR",
                file.bash_events_dir,
                "workspace/bash_events",
            ),
            deferred_init: matches!(
                env("OH_DEFERRED_INIT")
                    .map(|v| v.trim().to_ascii_lowercase())
                    .as_deref(),
                Some("true" | "1" | "yes" | "on")
            ),
            enable_vscode: !matches!(
                env("OH_ENABLE_VSCODE")
                    .map(|v| v.trim().to_ascii_lowercase())
                    .as_deref(),
                Some("false" | "0" | "no" | "off")
            ),
            persistence_dir: persistence_override
                .clone()
                .unwrap_or_else(default_persistence_dir),
            workspaces_dir: persistence_override.unwrap_or_else(|| {
                conversations_path
                    .parent()
                    .unwrap_or(Path::new("."))
                    .join(".openhands")
            }),
            conversations_path,
            secret_key,
            max_concurrent_runs,
            max_request_body_bytes,
            header_read_timeout,
            conversation_idle_ttl,
            max_connections,
            bash_events_max,
            build_git_sha: env("OPENHANDS_BUILD_GIT_SHA").unwrap_or_else(|| "unknown".into()),
            build_git_ref: env("OPENHANDS_BUILD_GIT_REF").unwrap_or_else(|| "unknown".into()),
            app_backend_public_url: env("OH_APP_BACKEND_PUBLIC_URL")
                .or(file.app_backend_public_url)
                .filter(|v| !v.is_empty()),
            trust_forwarded_headers: match env("OH_TRUST_FORWARDED_HEADERS") {
                Some(v) => matches!(
                    v.trim().to_ascii_lowercase().as_str(),
                    "true" | "1" | "yes" | "on" | "t" | "y"
                ),
                None => file.trust_forwarded_headers.unwrap_or(false),
            },
            docker_host_addr: env("DOCKER_HOST_ADDR").filter(|v| !v.is_empty()),
        })
    }

    /// A configuration for tests and embedding: no auth, storage under `root`.
    pub fn for_root(root: &Path) -> Self {
        Config {
            host: "127.0.0.1".into(),
            port: 0,
            log_json: false,
            session_api_keys: Vec::new(),
            allow_cors_origins: Vec::new(),
            allow_cors_origin_regex: None,
            runtime_idle_timeout_secs: None,
            conversations_path: root.join("conversations"),
            workspace_path: root.join("project"),
            bash_events_dir: root.join("bash_events"),
            persistence_dir: root.join("persistence"),
            workspaces_dir: root.join("persistence"),
            enable_vscode: true,
            deferred_init: false,
            secret_key: None,
            max_concurrent_runs: 10,
            max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY_BYTES,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            conversation_idle_ttl: DEFAULT_CONVERSATION_IDLE_TTL,
            max_connections: default_max_connections(),
            bash_events_max: crate::exec::DEFAULT_MAX_EVENTS,
            build_git_sha: "unknown".into(),
            build_git_ref: "unknown".into(),
            app_backend_public_url: None,
            trust_forwarded_headers: false,
            docker_host_addr: None,
        }
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A positive integer variable, `default` when unset; `what` words the error.
fn positive(
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
    what: &str,
    default: usize,
) -> Result<usize, ConfigError> {
    match env(name) {
        Some(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ConfigError::Env {
                name: name.into(),
                reason: format!("{v:?} is not {what}"),
            }),
        None => Ok(default),
    }
}

/// A positive number of seconds from `name` (fractions allowed), else `default`.
fn seconds(
    env: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    match env(name) {
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n > 0.0)
            .map(crate::util::duration_from_secs)
            .ok_or_else(|| ConfigError::Env {
                name: name.into(),
                reason: format!("{v:?} is not a positive number of seconds"),
            }),
        None => Ok(default),
    }
}

/// Reads a list variable the reference's way: `NAME` as a JSON list, or `NAME_0`, `NAME_1`, ...
fn env_list(env: &impl Fn(&str) -> Option<String>, name: &str) -> Result<Vec<String>, ConfigError> {
    if let Some(raw) = env(name).filter(|v| !v.trim().is_empty()) {
        return serde_json::from_str(&raw).map_err(|e| ConfigError::Env {
            name: name.into(),
            reason: format!("expected a JSON list of strings: {e}"),
        });
    }
    let mut out = Vec::new();
    for i in 0.. {
        match env(&format!("{name}_{i}")) {
            Some(v) => out.push(v),
            None => break,
        }
    }
    Ok(out)
}

/// `~/.openhands` (the reference's user-level persistence directory), or `.openhands` in the
/// working directory when there is no home.
fn default_persistence_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".openhands"))
        .unwrap_or_else(|| PathBuf::from(".openhands"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)], host: Option<&str>) -> Config {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args = Args {
            host: host.map(Into::into),
            port: 0,
            log_json: false,
            reload: false,
        };
        Config::from_args_and_env(args, |k| map.get(k).cloned()).expect("valid config")
    }

    #[test]
    fn an_invalid_cors_regex_is_an_error_naming_the_variable() {
        let args = Args {
            host: None,
            port: 0,
            log_json: false,
            reload: false,
        };
        let env = |k: &str| (k == "OH_ALLOW_CORS_ORIGIN_REGEX").then(|| "https://(a|b".to_string());
        let err = Config::from_args_and_env(args, env).expect_err("invalid regex refused");
        assert!(
            err.to_string().contains("OH_ALLOW_CORS_ORIGIN_REGEX"),
            "{err}"
        );
        let c = cfg(
            &[("OH_ALLOW_CORS_ORIGIN_REGEX", "https://.*\\.example\\.com")],
            None,
        );
        let re =
            cors_regex(c.allow_cors_origin_regex.as_deref().unwrap_or_default()).expect("compiles");
        assert!(re.is_match("https://app.example.com"));
        assert!(!re.is_match("https://app.example.com.evil.net"));
    }

    #[test]
    fn runtime_idle_timeout_is_read_once_into_the_config() {
        assert_eq!(cfg(&[], None).runtime_idle_timeout_secs, None);
        let c = cfg(&[("OH_RUNTIME_IDLE_TIMEOUT_SECONDS", " 600 ")], None);
        assert_eq!(c.runtime_idle_timeout_secs, Some(600.0));
    }

    #[test]
    fn loopback_without_key_wildcard_with_key() {
        assert_eq!(cfg(&[], None).host, "127.0.0.1");
        let c = cfg(&[("SESSION_API_KEY", "k")], None);
        assert_eq!(c.host, "0.0.0.0");
        assert_eq!(c.session_api_keys, vec!["k"]);
        assert_eq!(c.secret_key.as_deref(), Some("k"));
    }

    #[test]
    fn numbered_keys_win_over_legacy_key() {
        let c = cfg(
            &[
                ("SESSION_API_KEY", "legacy"),
                ("OH_SESSION_API_KEYS_0", "a"),
                ("OH_SESSION_API_KEYS_1", "b"),
            ],
            Some("1.2.3.4"),
        );
        assert_eq!(c.session_api_keys, vec!["a", "b"]);
        assert_eq!(c.host, "1.2.3.4");
    }

    #[test]
    fn request_body_limit_from_env() {
        assert_eq!(cfg(&[], None).max_request_body_bytes, 64 << 20);
        let c = cfg(&[("OH_MAX_REQUEST_BODY_BYTES", "1024")], None);
        assert_eq!(c.max_request_body_bytes, 1024);
        let args = || Args {
            host: None,
            port: 0,
            log_json: false,
            reload: false,
        };
        for bad in ["0", "-1", "lots"] {
            let err = Config::from_args_and_env(args(), |k| {
                (k == "OH_MAX_REQUEST_BODY_BYTES").then(|| bad.to_string())
            })
            .expect_err("a bad limit is refused");
            assert!(
                err.to_string().contains("OH_MAX_REQUEST_BODY_BYTES"),
                "{err}"
            );
        }
    }

    #[test]
    fn conversations_path_from_env() {
        let c = cfg(&[("OH_CONVERSATIONS_PATH", "/x/convs")], None);
        assert_eq!(c.conversations_path, PathBuf::from("/x/convs"));
    }
}
