//! The client's error type.

/// Everything that can go wrong talking to or provisioning an agent server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with a non-success status.
    #[error("{method} {url} answered {status}: {body}")]
    Status {
        method: String,
        url: String,
        status: u16,
        body: String,
    },
    /// The request could not be sent or its answer not read.
    #[error("HTTP request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// The WebSocket failed.
    #[error("WebSocket error: {0}")]
    WebSocket(String),
    /// The answer did not have the expected shape.
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A required program (docker, apptainer) is missing or failed.
    #[error("{0}")]
    Tool(String),
    /// The sandbox did not become healthy before the deadline.
    #[error("{0}")]
    Timeout(String),
    /// The sandbox stopped or failed while starting.
    #[error("{0}")]
    Failed(String),
    /// The options are inconsistent.
    #[error("invalid options: {0}")]
    Invalid(String),
    /// The operation is not possible in the current state (e.g. pause without a sandbox).
    #[error("{0}")]
    State(String),
    /// A scheduler job (Slurm) ended before its server was ready, or did not become ready in
    /// time; `log_tail` holds the last lines of the job's output.
    #[error("Slurm job {job_id} {}: state {state}{}; log {log_path}:\n{log_tail}",
        if *timed_out { "did not become ready in time" } else { "ended before its server was ready" },
        reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Job {
        job_id: String,
        /// The scheduler's last known state (`PENDING`, `RUNNING`, `FAILED`, ...).
        state: String,
        /// The scheduler's reason or exit code, when it gave one.
        reason: Option<String>,
        /// The start deadline passed (the job was cancelled).
        timed_out: bool,
        log_path: String,
        log_tail: String,
    },
    /// A conversation run ended in `error` or `stuck`.
    #[error("conversation run ended with status {status}: {detail}")]
    RunFailed { status: String, detail: String },
}

impl ClientError {
    /// The HTTP status, when the server answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            ClientError::Http(e) => e.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// Whether retrying may help (5xx, connection errors, timeouts).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Status { status, .. } => *status >= 500 || *status == 429,
            ClientError::Http(e) => e.is_connect() || e.is_timeout() || e.is_request(),
            ClientError::WebSocket(_) => true,
            _ => false,
        }
    }
}
