//! The `terminal` tool: a persistent interactive bash per conversation on a pseudo-terminal,
//! with the reference's action/observation shapes, timeouts and follow-up semantics.
//!
//! This file holds the tool itself (options, spec, action parsing, reset); `command.rs` runs one
//! action in the session and waits for its end, `observation.rs` builds the observation and its
//! LLM text, `input.rs` checks and encodes what the agent sends. The shell: `session.rs` (one
//! bash on a pseudo-terminal), `output.rs` (its bytes to output and prompt records),
//! `capture.rs` (bounded output, spooled when large), `split.rs` (one command per call).

mod capture;
mod command;
mod input;
mod observation;
mod output;
mod session;
mod split;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use self::input::literal_kind;
use self::observation::{Body, Metadata};
use self::session::Session;
use super::args::Validator;
use super::{definition, text_content, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolDefinition;

pub use self::input::set_runtime_idle_timeout;
pub(super) use self::observation::llm_text_of;

/// Characters of text the LLM gets for one terminal observation.
pub const MAX_OUTPUT_CHARS: usize = 30_000;
const NO_CHANGE_TIMEOUT_SECS: u64 = 30;
const RESET_TEXT: &str = "Terminal session has been reset. All previous environment variables \
and session state have been cleared.";

/// How the terminal runs.
#[derive(Debug, Clone)]
pub struct TerminalOptions {
    /// Where the shell starts.
    pub working_dir: PathBuf,
    /// `<persistence_dir>`; full outputs go to its `observations/` folder.
    pub persistence_dir: PathBuf,
    /// Return with exit code -1 after this long without new output (when no `timeout` is given).
    pub no_change_timeout: Duration,
    /// The bash binary.
    pub shell: String,
}

impl TerminalOptions {
    /// Options from the tool spec's `params` (`no_change_timeout_seconds`, `shell_path`).
    pub fn from_params(params: &Value, ctx: &ToolContext) -> Self {
        let secs = params
            .get("no_change_timeout_seconds")
            .and_then(super::args::to_f64)
            .filter(|s| *s > 0.0)
            .unwrap_or(NO_CHANGE_TIMEOUT_SECS as f64);
        TerminalOptions {
            working_dir: ctx.working_dir.clone(),
            persistence_dir: ctx.persistence_dir.clone(),
            no_change_timeout: crate::util::duration_from_secs(secs),
            shell: params
                .get("shell_path")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or("bash")
                .to_owned(),
        }
    }

    fn save_dir(&self) -> PathBuf {
        self.persistence_dir.join("observations")
    }
}

/// The `terminal` tool.
pub struct TerminalTool {
    opts: TerminalOptions,
    session: Mutex<Option<Session>>,
    /// Cancelled by [`Tool::close`] so that a running call returns at once.
    closing: std::sync::Mutex<CancellationToken>,
    /// `(name, value)` of the conversation's secrets.
    secrets: std::sync::RwLock<Vec<(String, String)>>,
}

/// A validated `TerminalAction`.
struct Action {
    command: String,
    is_input: bool,
    timeout: Option<f64>,
    reset: bool,
}

impl TerminalTool {
    /// A terminal whose shell starts on first use.
    pub fn new(opts: TerminalOptions) -> Self {
        TerminalTool {
            opts,
            session: Mutex::new(None),
            closing: std::sync::Mutex::new(CancellationToken::new()),
            secrets: std::sync::RwLock::new(Vec::new()),
        }
    }
}

#[async_trait::async_trait]
impl Tool for TerminalTool {
    fn name(&self) -> &'static str {
        "terminal"
    }

    fn kind(&self) -> &'static str {
        "TerminalTool"
    }

    fn definition(&self) -> ToolDefinition {
        definition(
            "terminal",
            DESCRIPTION.to_owned(),
            json!({
                "command": {"type": "string", "description": "The bash command to run. Send an empty string to collect more output from a command that returned exit code -1. With `is_input` true, this is text for the running process or a key name: `C-c`, `C-d`, `C-z` or any other `C-<letter>`, `UP`, `DOWN`, `LEFT`, `RIGHT`, `HOME`, `END`, `PGUP`, `PGDN`, `TAB`, `ESC`, `BS` (backspace), `ENTER`. One command per call; chain steps with && or ;."},
                "is_input": {"type": "boolean", "description": "True to send `command` to the process that is still running instead of running a new command. Defaults to false."},
                "timeout": {"type": "number", "description": format!("Optional hard limit in seconds. When it is reached the call returns while the command keeps running, and you decide whether to wait or stop it. Without it, the call returns once the command has printed nothing for {NO_CHANGE_TIMEOUT_SECS} seconds. Set it higher for long jobs such as installs, builds, test suites or sleeps.")},
                "reset": {"type": "boolean", "description": "True to throw away the current shell and start a new one (environment variables and other shell state are lost). Only for a terminal that stopped responding. Not allowed together with is_input."}
            }),
            &["command"],
        )
    }

    fn read_only(&self) -> bool {
        false
    }

    fn annotations(&self) -> Value {
        json!({"title": "terminal", "readOnlyHint": false, "destructiveHint": true,
               "idempotentHint": false, "openWorldHint": true})
    }

    fn parse_action(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let mut v = Validator::new("TerminalAction", args);
        let command = v.string("command", true);
        let is_input = v.boolean("is_input", false);
        let timeout = v.number("timeout", Some(0.0));
        let reset = v.boolean("reset", false);
        v.finish()?;
        let mut action = Map::new();
        action.insert("command".into(), json!(command.unwrap_or_default()));
        action.insert("is_input".into(), json!(is_input));
        if let Some(t) = timeout {
            action.insert("timeout".into(), json!(t));
        }
        action.insert("reset".into(), json!(reset));
        action.insert("kind".into(), json!("TerminalAction"));
        Ok(Value::Object(action))
    }

    async fn execute(&self, action: &Value, ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let action = Action {
            command: action
                .get("command")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            is_input: action
                .get("is_input")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            timeout: action.get("timeout").and_then(Value::as_f64),
            reset: action
                .get("reset")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        if action.reset && action.is_input {
            return Err(ToolError("Cannot use reset=True with is_input=True".into()));
        }
        if !action.is_input {
            if let Some(kind) = literal_kind(&action.command) {
                let head: String = action.command.trim_start().chars().take(60).collect();
                let text = format!(
                    "[Tool-argument error] The `command` argument looks like a Python/JSON \
                     {kind}, not a shell command. It starts with: {head:?}\n\nThe terminal runs \
                     exactly one shell command per call. To pass structured data or several \
                     lines of code, create a script with the file editor and run it (for example \
                     `python /tmp/run.py`), or feed the code to an interpreter with a heredoc such \
                     as `python - <<'EOF'` ... `EOF`. A list or dict literal is not something the \
                     shell can run."
                );
                return Ok(self
                    .observe(
                        Some(&action.command),
                        Body::Text(text),
                        Metadata::default(),
                        None,
                        true,
                    )
                    .await);
            }
        }
        let mut slot = self.session.lock().await;
        if action.reset {
            self.fresh_session(&mut slot).await?;
            if action.command.trim().is_empty() {
                return Ok(self
                    .observe(
                        Some("[RESET]"),
                        Body::Text(RESET_TEXT.into()),
                        Metadata::default(),
                        Some(0),
                        false,
                    )
                    .await);
            }
            let plain = Action {
                command: action.command.clone(),
                is_input: false,
                timeout: action.timeout,
                reset: false,
            };
            let mut out = self.run_action(&mut slot, &plain, ctx).await?;
            let text = out.observation["content"][0]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let joined = format!("{RESET_TEXT}\n\n{text}");
            out.observation["content"] = json!([text_content(joined.clone())]);
            out.observation["command"] = json!(format!("[RESET] {}", action.command));
            return Ok(out);
        }
        self.run_action(&mut slot, &action, ctx).await
    }

    fn set_secrets(&self, secrets: &[(String, String)]) {
        *self.secrets.write().unwrap_or_else(|e| e.into_inner()) = secrets.to_vec();
    }

    async fn close(&self) {
        let token = {
            let mut guard = self.closing.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *guard)
        };
        token.cancel();
        if let Some(s) = self.session.lock().await.take() {
            s.kill().await;
        }
    }
}

const DESCRIPTION: &str = "Run a bash command in a terminal session that persists between calls \
(working directory, environment variables and background jobs carry over).

How it works:
* One command per call. Chain steps with `&&` or `;`, or put longer logic in a script file.
* Long-running work: start it in the background with output redirected, e.g. \
`python app.py > app.log 2>&1 &`, then check the log.
* If a command prints nothing for a while, the call returns with exit code -1 while the command \
keeps running. Then send an empty `command` to collect more output, send text or keys such as \
`C-c` with `is_input` set to true, or wait by setting `timeout` on the next call.
* `timeout` sets a hard limit in seconds for this call; use it for commands known to take long.
* Very long output is cut in the middle; the complete text is saved to a file whose path is given.

Good habits:
* Prefer absolute paths and avoid `cd` where you can; the directory does persist if you change it.
* Pass non-interactive flags (`-y`, `--yes`, `--no-pager`) and avoid pagers and editors that wait \
for keyboard input.
* Use `reset` only when the terminal no longer responds; it starts a fresh shell.";

#[cfg(test)]
mod tests;
