//! ACP (Agent Client Protocol) servers: agents such as Claude Code or Codex that run as a
//! child process and speak JSON-RPC 2.0 over stdio (one JSON object per line). [`AcpProcess`]
//! is the client side: it spawns the server in its own process group (killed as a tree when
//! dropped), matches responses to requests, answers the server's own requests (permission
//! prompts are approved with their first option, as the reference does; file and terminal
//! requests are refused) and hands `session/update` notifications over in order through a
//! bounded channel. [`discover_models`] is `POST /api/acp/models`.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

/// Most `session/update` notifications buffered before the reader waits for the consumer.
const UPDATE_BUFFER: usize = 1024;
/// Bytes of the server's stderr kept for error messages.
const STDERR_TAIL: usize = 4096;

/// An ACP failure with the reference's error code (`ACPSpawnError`, `ACPInitError`, ...).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct AcpError {
    pub code: &'static str,
    pub detail: String,
    /// The JSON-RPC error code, when the server answered with an error.
    pub rpc_code: Option<i64>,
}

impl AcpError {
    fn new(code: &'static str, detail: impl Into<String>) -> Self {
        AcpError {
            code,
            detail: detail.into(),
            rpc_code: None,
        }
    }
}

/// The reference's wording of a JSON-RPC error: `[code] message: details`, at most 500 chars.
fn rpc_error_text(err: &Value) -> String {
    let code = err["code"].as_i64().unwrap_or(0);
    let message = err["message"].as_str().unwrap_or("error");
    let data = &err["data"];
    let details = ["message", "details", "detail", "error"]
        .iter()
        .find_map(|k| data[*k].as_str().map(str::to_string))
        .or_else(|| (!data.is_null()).then(|| data.to_string()));
    let text = match details {
        Some(d) => format!("[{code}] {message}: {d}"),
        None => format!("[{code}] {message}"),
    };
    text.chars().take(500).collect()
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, Value>>>>>;

/// A running ACP server.
pub struct AcpProcess {
    child: Mutex<Option<tokio::process::Child>>,
    pid: Option<u32>,
    stdin: Arc<tokio::sync::Mutex<tokio::process::ChildStdin>>,
    pending: Pending,
    next_id: AtomicU64,
    /// `session/update` notifications, in arrival order.
    pub updates: tokio::sync::Mutex<mpsc::Receiver<Value>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl std::fmt::Debug for AcpProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcpProcess")
            .field("pid", &self.pid)
            .finish()
    }
}

/// Python's wording of a failed spawn (`[Errno 2] No such file or directory: 'cmd'`).
fn spawn_error(program: &str, e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(2) => format!("[Errno 2] No such file or directory: '{program}'"),
        Some(13) => format!("[Errno 13] Permission denied: '{program}'"),
        Some(n) => format!("[Errno {n}] {e}: '{program}'"),
        None => e.to_string(),
    }
}

impl AcpProcess {
    /// Spawns `command` (program and arguments) in `cwd` with `env` added to the server's
    /// environment.
    pub fn spawn(
        command: &[String],
        env: &[(String, String)],
        cwd: &Path,
    ) -> Result<Self, AcpError> {
        let Some((program, args)) = command.split_first() else {
            return Err(AcpError::new("ACPSpawnError", "no ACP command"));
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .current_dir(cwd)
            .envs(crate::util::child_env().iter().cloned())
            .envs(env.iter().cloned())
            .env_remove("CLAUDECODE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| AcpError::new("ACPSpawnError", spawn_error(program, &e)))?;
        let pid = child.id();
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| AcpError::new("ACPSpawnError", "no stdin"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| AcpError::new("ACPSpawnError", "no stdout"))?;
        let stderr_pipe = child.stderr.take();
        let pending: Pending = Arc::default();
        let (tx, rx) = mpsc::channel(UPDATE_BUFFER);
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdin = Arc::new(tokio::sync::Mutex::new(stdin));
        // The reader: responses to their waiters, notifications to `updates`, the server's
        // own requests answered at once.
        let waiters = pending.clone();
        let answers = stdin.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let line = line.trim();
                if !(line.starts_with('{') && line.contains("\"jsonrpc\"")) {
                    tracing::debug!(line, "ACP server output");
                    continue;
                }
                let Ok(msg) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                match (msg.get("id"), msg.get("method").and_then(Value::as_str)) {
                    (Some(id), None) => {
                        let waiter = id.as_u64().and_then(|id| {
                            waiters
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .remove(&id)
                        });
                        if let Some(w) = waiter {
                            let answer = match msg.get("error") {
                                Some(err) => Err(err.clone()),
                                None => Ok(msg.get("result").cloned().unwrap_or(Value::Null)),
                            };
                            let _ = w.send(answer);
                        }
                    }
                    (Some(id), Some(method)) => {
                        let mut answer =
                            answer_server_request(id, method, &msg["params"]).to_string();
                        answer.push('\n');
                        let mut w = answers.lock().await;
                        if w.write_all(answer.as_bytes()).await.is_err() || w.flush().await.is_err()
                        {
                            break;
                        }
                    }
                    (None, Some("session/update")) => {
                        // Waits while the consumer is behind: updates are never dropped.
                        let delivered = tx.send(msg["params"].clone()).await;
                        if delivered.is_err() {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            // The server is gone: every waiter learns it.
            waiters.lock().unwrap_or_else(|e| e.into_inner()).clear();
        });
        if let Some(mut pipe) = stderr_pipe {
            let tail = stderr.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                    t.extend_from_slice(&buf[..n]);
                    let excess = t.len().saturating_sub(STDERR_TAIL);
                    t.drain(..excess);
                }
            });
        }
        let process = AcpProcess {
            child: Mutex::new(Some(child)),
            pid,
            stdin,
            pending,
            next_id: AtomicU64::new(0),
            updates: tokio::sync::Mutex::new(rx),
            stderr,
        };
        Ok(process)
    }

    /// The last lines the server wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let t = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&t).trim().to_string()
    }

    async fn write(&self, msg: &Value) -> Result<(), AcpError> {
        let mut line = msg.to_string();
        line.push('\n');
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(line.as_bytes()).await.map_err(|e| {
            AcpError::new("ACPInitError", format!("ACP server closed its input: {e}"))
        })?;
        stdin
            .flush()
            .await
            .map_err(|e| AcpError::new("ACPInitError", e.to_string()))
    }

    /// Sends a request and waits (at most `timeout`) for its result; a JSON-RPC error becomes
    /// an [`AcpError`] with `code` and the reference's wording.
    pub async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
        code: &'static str,
    ) -> Result<Value, AcpError> {
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        self.write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(err))) => Err(AcpError {
                code,
                detail: rpc_error_text(&err),
                rpc_code: err["code"].as_i64(),
            }),
            Ok(Err(_)) => {
                let tail = self.stderr_tail();
                let detail = if tail.is_empty() {
                    "Connection closed".to_string()
                } else {
                    format!("Connection closed. stderr: {tail}")
                };
                Err(AcpError::new(code, detail))
            }
            Err(_) => {
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                Err(AcpError::new(
                    if code == "ACPInitError" {
                        "ACPStartupTimeout"
                    } else {
                        code
                    },
                    format!("{method} timed out after {}s", timeout.as_secs()),
                ))
            }
        }
    }

    /// Sends a notification.
    pub async fn notify(&self, method: &str, params: Value) -> Result<(), AcpError> {
        self.write(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
    }

    /// Kills the server and everything it started.
    pub fn kill(&self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.start_kill();
            tokio::spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

impl Drop for AcpProcess {
    fn drop(&mut self) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The answer to a request the server sends us.
fn answer_server_request(id: &Value, method: &str, params: &Value) -> Value {
    match method {
        "session/request_permission" => {
            let option = params["options"]
                .as_array()
                .and_then(|o| o.first())
                .and_then(|o| o["optionId"].as_str())
                .unwrap_or("allow-once");
            json!({"jsonrpc": "2.0", "id": id,
                   "result": {"outcome": {"optionId": option, "outcome": "selected"}}})
        }
        _ => json!({"jsonrpc": "2.0", "id": id,
                    "error": {"code": -32601, "message": format!("Method not found: {method}")}}),
    }
}

pub mod discovery;
pub mod providers;

/// A model an ACP server offers (`ACPModelInfo`).
fn model_info(id: &Value, name: &Value, description: &Value) -> Value {
    json!({"model_id": id, "name": name, "description": description})
}

/// What a started session says about models: `(current, available, via_config_option)`.
pub fn session_models(result: &Value) -> (Value, Vec<Value>, bool) {
    if let Some(models) = result.get("models").filter(|m| m.is_object()) {
        let available = models["availableModels"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| model_info(&m["modelId"], &m["name"], &m["description"]))
            .collect();
        return (models["currentModelId"].clone(), available, false);
    }
    let option = result["configOptions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|o| o["id"] == "model" && o["type"] == "select");
    if let Some(o) = option {
        let available = o["options"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| model_info(&m["value"], &m["name"], &m["description"]))
            .collect();
        return (o["currentValue"].clone(), available, true);
    }
    (Value::Null, Vec::new(), false)
}

/// A started ACP session: the process and what `initialize` and `session/new` said.
#[derive(Debug)]
pub struct Session {
    pub process: AcpProcess,
    pub session_id: String,
    pub agent_name: Value,
    pub agent_version: Value,
    /// The `session/new` result.
    pub new_session: Value,
}

/// Starts the server of `settings` and a session in `cwd` (steps 1–4 and 6 of the reference's
/// startup, bounded by `acp_startup_timeout`); `env` are the secrets handed to the server.
pub async fn start_session(
    settings: &Value,
    env: &[(String, String)],
    cwd: &Path,
) -> Result<Session, AcpError> {
    let command =
        providers::resolve_command(settings).map_err(|e| AcpError::new("ACPSpawnError", e))?;
    let timeout = Duration::from_secs_f64(
        settings["acp_startup_timeout"]
            .as_f64()
            .unwrap_or(90.0)
            .clamp(0.1, 86_400.0),
    );
    let process = AcpProcess::spawn(&command, env, cwd)?;
    let init = process
        .request(
            "initialize",
            json!({"protocolVersion": 1}),
            timeout,
            "ACPInitError",
        )
        .await?;
    let cwd_text = cwd.to_string_lossy().into_owned();
    let created = process
        .request(
            "session/new",
            json!({"cwd": cwd_text, "mcpServers": []}),
            timeout,
            "ACPInitError",
        )
        .await?;
    let session_id = created["sessionId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let agent_name = init["agentInfo"]["name"].clone();
    let provider = agent_name.as_str().and_then(providers::detect);
    let mode = settings["acp_session_mode"]
        .as_str()
        .map(str::to_string)
        .or_else(|| provider.and_then(|p| p.session_mode).map(str::to_string));
    if let Some(mode) = mode {
        // A server without modes keeps its default.
        let _ = process
            .request(
                "session/set_mode",
                json!({"sessionId": session_id, "modeId": mode}),
                timeout,
                "ACPInitError",
            )
            .await;
    }
    Ok(Session {
        process,
        session_id,
        agent_name,
        agent_version: init["agentInfo"]["version"].clone(),
        new_session: created,
    })
}
