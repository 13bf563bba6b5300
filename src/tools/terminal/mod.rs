//! The `terminal` tool: a persistent interactive bash per conversation on a pseudo-terminal,
//! with the reference's action/observation shapes, timeouts and follow-up semantics.

mod session;
mod split;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::session::{Captured, PromptInfo, Session, SpawnOptions};
use super::args::{py_num, Validator};
use super::{definition, llm_text, text_content, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolDefinition;

/// Characters of text the LLM gets for one terminal observation.
pub const MAX_OUTPUT_CHARS: usize = 30_000;
/// Quiet time after an interrupt before the terminal takes the next command.
const INTERRUPT_SETTLE: Duration = Duration::from_millis(300);
const NO_CHANGE_TIMEOUT_SECS: u64 = 30;
const CONTINUE_PREFIX: &str = "[Below is the output of the previous command.]\n";
const RESET_TEXT: &str = "Terminal session has been reset. All previous environment variables \
and session state have been cleared.";
const HINT: &str = "To see more output, send an empty command ''. You can also send input to \
the running process with is_input set to true, send keys such as \"C-c\", \"C-z\" or \"C-d\" to \
stop it before running something else, or pass a larger timeout for commands that need longer.";
/// Lines longer than this are sent through a script file (the tty line buffer is small).
const MAX_TYPED_LINE: usize = 1024;

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

/// `CmdOutputMetadata`.
#[derive(Debug, Clone)]
struct Metadata {
    exit_code: i64,
    pid: i64,
    username: Option<String>,
    hostname: Option<String>,
    working_dir: Option<String>,
    py_interpreter_path: Option<String>,
    prefix: String,
    suffix: String,
}

impl Default for Metadata {
    fn default() -> Self {
        Metadata {
            exit_code: -1,
            pid: -1,
            username: None,
            hostname: None,
            working_dir: None,
            py_interpreter_path: None,
            prefix: String::new(),
            suffix: String::new(),
        }
    }
}

impl Metadata {
    fn from_prompt(p: &PromptInfo) -> Self {
        Metadata {
            exit_code: p.exit_code,
            pid: p.pid,
            username: p.username.clone(),
            hostname: p.hostname.clone(),
            working_dir: p.working_dir.clone(),
            py_interpreter_path: p.py_interpreter_path.clone(),
            ..Metadata::default()
        }
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("exit_code".into(), json!(self.exit_code));
        m.insert("pid".into(), json!(self.pid));
        for (k, v) in [
            ("username", &self.username),
            ("hostname", &self.hostname),
            ("working_dir", &self.working_dir),
            ("py_interpreter_path", &self.py_interpreter_path),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        }
        m.insert("prefix".into(), json!(self.prefix));
        m.insert("suffix".into(), json!(self.suffix));
        Value::Object(m)
    }

    /// The metadata of a `TerminalObservation` as stored (missing fields take their defaults).
    fn from_json(m: &Value) -> Self {
        let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        let i = |k: &str| m.get(k).and_then(Value::as_i64).unwrap_or(-1);
        Metadata {
            exit_code: i("exit_code"),
            pid: i("pid"),
            username: s("username"),
            hostname: s("hostname"),
            working_dir: s("working_dir"),
            py_interpreter_path: s("py_interpreter_path"),
            prefix: s("prefix").unwrap_or_default(),
            suffix: s("suffix").unwrap_or_default(),
        }
    }

    /// What follows the output in the LLM text.
    fn trailer(&self) -> String {
        let mut t = self.suffix.clone();
        if let Some(wd) = self.working_dir.as_deref().filter(|s| !s.is_empty()) {
            t.push_str(&format!("\n[Current working directory: {wd}]"));
        }
        if let Some(py) = self
            .py_interpreter_path
            .as_deref()
            .filter(|s| !s.is_empty())
        {
            t.push_str(&format!("\n[Python interpreter: {py}]"));
        }
        if self.exit_code != -1 {
            t.push_str(&format!(
                "\n[Command finished with exit code {}]",
                self.exit_code
            ));
        }
        t
    }
}

/// The LLM text of a stored `TerminalObservation` whose content reads `text`: the metadata's
/// prefix, the output, then the suffix, working directory, interpreter and exit code.
pub(super) fn llm_text_of(obs: &Value, text: &str, is_error: bool) -> String {
    let meta = Metadata::from_json(obs.get("metadata").unwrap_or(&Value::Null));
    llm_text(
        &format!("{}{}{}", meta.prefix, text, meta.trailer()),
        is_error,
    )
}

/// Text of one observation before it is assembled.
enum Body {
    Text(String),
    Output(Captured),
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

    fn spawn_options(&self) -> SpawnOptions {
        SpawnOptions {
            working_dir: self.opts.working_dir.clone(),
            shell: self.opts.shell.clone(),
            spool_dir: self.opts.save_dir(),
        }
    }

    async fn fresh_session(&self, slot: &mut Option<Session>) -> Result<(), ToolError> {
        if let Some(old) = slot.take() {
            old.kill().await;
        }
        let s = Session::start(self.spawn_options())
            .await
            .map_err(ToolError)?;
        *slot = Some(s);
        Ok(())
    }

    /// Builds a `TerminalObservation` and its LLM text.
    async fn observe(
        &self,
        command: Option<&str>,
        body: Body,
        meta: Metadata,
        exit_code: Option<i64>,
        is_error: bool,
    ) -> ToolOutput {
        let trailer = meta.trailer();
        let header = if is_error {
            super::ERROR_MESSAGE_HEADER.len()
        } else {
            0
        };
        let budget = MAX_OUTPUT_CHARS
            .saturating_sub(meta.prefix.chars().count() + trailer.chars().count() + header)
            .max(2_000);
        let text = match body {
            Body::Text(t) => t,
            Body::Output(c) => self.mask(&self.render_output(c, budget).await),
        };
        let mut obs = Map::new();
        obs.insert("content".into(), json!([text_content(text.clone())]));
        obs.insert("is_error".into(), json!(is_error));
        if let Some(c) = command {
            obs.insert("command".into(), json!(c));
        }
        if let Some(e) = exit_code {
            obs.insert("exit_code".into(), json!(e));
        }
        obs.insert("timeout".into(), json!(false));
        obs.insert("metadata".into(), meta.to_json());
        obs.insert(
            "full_output_save_dir".into(),
            json!(self.opts.save_dir().to_string_lossy()),
        );
        obs.insert("kind".into(), json!("TerminalObservation"));
        ToolOutput {
            observation: Value::Object(obs),
        }
    }

    /// The command output as shown: whole when it fits, else head + notice + tail with the
    /// complete output saved under `observations/`.
    async fn render_output(&self, c: Captured, budget: usize) -> String {
        let save_dir = self.opts.save_dir();
        if let Some(whole) = c.whole {
            let text = whole.trim_start_matches('\n').trim_end().to_owned();
            if let Some((p, _)) = &c.spooled {
                let _ = tokio::fs::remove_file(p).await;
            }
            if text.chars().count() <= budget {
                return text;
            }
            let hash = short_hash(&text);
            let path = save_dir.join(format!("terminal_output_{hash}.txt"));
            let saved = match tokio::fs::create_dir_all(&save_dir).await {
                Ok(()) => tokio::fs::write(&path, &text).await.is_ok(),
                Err(_) => false,
            };
            return cut_middle(
                text.trim_start_matches('\n'),
                "",
                budget,
                saved.then_some(path.as_path()),
            );
        }
        let head = c.head.trim_start_matches('\n').to_owned();
        let tail = c.tail.trim_end().to_owned();
        let saved = match c.spooled {
            Some((spool, hash)) => {
                let path = save_dir.join(format!("terminal_output_{hash}.txt"));
                match tokio::fs::rename(&spool, &path).await {
                    Ok(()) => Some(path),
                    Err(_) => {
                        let _ = tokio::fs::remove_file(&spool).await;
                        None
                    }
                }
            }
            None => None,
        };
        cut_middle(&head, &tail, budget, saved.as_deref())
    }

    /// Replaces every secret value in `text` with `<secret-hidden>`.
    fn mask(&self, text: &str) -> String {
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let mut out = text.to_owned();
        for (_, value) in secrets.iter() {
            if !value.is_empty() && out.contains(value.as_str()) {
                out = out.replace(value.as_str(), "<secret-hidden>");
            }
        }
        out
    }

    /// `export NAME=$'value' && ...` for the secrets `command` mentions (case-insensitive).
    fn secret_exports(&self, command: &str) -> Option<String> {
        let secrets = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        let lower = command.to_lowercase();
        let exports: Vec<String> = secrets
            .iter()
            .filter(|(name, value)| {
                !value.is_empty() && is_env_name(name) && lower.contains(&name.to_lowercase())
            })
            .map(|(name, value)| format!("export {name}={}", ansi_c_quote(value)))
            .collect();
        (!exports.is_empty()).then(|| exports.join(" && "))
    }

    /// Runs a helper command (not shown to the model) and waits for it to finish.
    async fn run_hidden(&self, session: &mut Session, line: &str) -> Result<(), ToolError> {
        let target = session.prompts() + 1;
        session.running_until = Some(target);
        session
            .write(format!("{line}\n").into_bytes())
            .await
            .map_err(ToolError)?;
        let mut rx = session.subscribe();
        let deadline = Instant::now() + Duration::from_secs(10);
        while session.prompts() < target && !session.status().2 {
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        if session.prompts() >= target {
            session.running_until = None;
        }
        session.discard_output();
        Ok(())
    }

    async fn run_action(
        &self,
        slot: &mut Option<Session>,
        action: &Action,
        ctx: &ToolContext,
    ) -> Result<ToolOutput, ToolError> {
        let dead = slot.as_ref().is_none_or(|s| s.status().2);
        if dead {
            self.fresh_session(slot).await?;
        }
        let Some(session) = slot.as_mut() else {
            return Err(ToolError("the terminal session is not available".into()));
        };
        let command = action.command.trim();

        if let Some(msg) = idle_timeout_rejection(command, action.is_input, action.timeout) {
            return Ok(self
                .observe(
                    Some(command),
                    Body::Text(msg),
                    Metadata::default(),
                    None,
                    true,
                )
                .await);
        }

        let running = session
            .running_until
            .is_some_and(|until| session.prompts() < until);
        if !running {
            session.running_until = None;
            if command.is_empty() {
                return Ok(self
                    .observe(
                        Some(command),
                        Body::Text("No previous running command to retrieve logs from.".into()),
                        Metadata::default(),
                        None,
                        true,
                    )
                    .await);
            }
            if action.is_input {
                return Ok(self
                    .observe(
                        Some(command),
                        Body::Text("No previous running command to interact with.".into()),
                        Metadata::default(),
                        None,
                        true,
                    )
                    .await);
            }
        }

        if !action.is_input {
            let parts = split::split_commands(command);
            if parts.len() > 1 {
                let list: Vec<String> = parts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("({}) {c}", i + 1))
                    .collect();
                let text = format!(
                    "Cannot execute multiple commands at once.\nRun them one per call, or join \
                     them into a single command with && or ;\nProvided commands:\n{}",
                    list.join("\n")
                );
                return Ok(self
                    .observe(
                        Some(command),
                        Body::Text(text),
                        Metadata::default(),
                        None,
                        true,
                    )
                    .await);
            }
        }

        if running && !action.is_input && !command.is_empty() {
            let meta = Metadata {
                prefix: CONTINUE_PREFIX.into(),
                suffix: format!(
                    "\n[Your command \"{command}\" was NOT executed: the previous command is \
                     still running, and a new command can only run once it has finished. Set \
                     `is_input` to true to interact with the running process. {HINT}]"
                ),
                ..Metadata::default()
            };
            let out = session.take_output();
            return Ok(self
                .observe(Some(command), Body::Output(out), meta, Some(-1), true)
                .await);
        }

        let continuing = running;
        if !running {
            session.discard_output();
            if let Some(old) = session.script.take() {
                let _ = tokio::fs::remove_file(old).await;
            }
        }

        // Send the command or the keystrokes.
        let is_key = action.is_input && key_bytes(command).is_some();
        if action.is_input {
            let bytes = match key_bytes(command) {
                Some(b) => b,
                None => {
                    let mut t = command.replace("\r\n", "\n").into_bytes();
                    t.push(b'\n');
                    t
                }
            };
            session.write(bytes).await.map_err(ToolError)?;
        } else if !command.is_empty() {
            if let Some(exports) = self.secret_exports(command) {
                self.run_hidden(session, &exports).await?;
                if session.running_until.is_some() {
                    return Err(ToolError(
                        "could not export the secrets to the terminal".into(),
                    ));
                }
            }
            let line = if command.lines().any(|l| l.len() > MAX_TYPED_LINE) {
                let path = std::env::temp_dir()
                    .join(format!("oh-terminal-{:016x}.sh", rand::random::<u64>()));
                tokio::fs::write(&path, format!("{command}\n"))
                    .await
                    .map_err(|e| ToolError(format!("cannot write the command file: {e}")))?;
                let quoted = path.to_string_lossy().replace('\'', "'\\''");
                session.script = Some(path);
                format!(". '{quoted}'\n")
            } else {
                format!("{command}\n")
            };
            session.running_until = Some(session.prompts() + 1);
            session.write(line.into_bytes()).await.map_err(ToolError)?;
        }
        let Some(target) = session.running_until else {
            return Err(ToolError("no command is running".into()));
        };

        let start = Instant::now();
        let hard = action
            .timeout
            .map(|t| start + crate::util::duration_from_secs(t.min(1.0e7)));
        let mut rx = session.subscribe();
        let cont_prefix = if continuing { CONTINUE_PREFIX } else { "" };
        let closing = self
            .closing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        loop {
            let (prompts, last_output, eof) = session.status();
            if prompts >= target {
                return Ok(self.completed(session, command, is_key, cont_prefix).await);
            }
            if eof {
                let out = session.take_output();
                session.running_until = None;
                let meta = Metadata {
                    prefix: cont_prefix.into(),
                    suffix: "\n[The shell exited while the command was running. A new terminal \
                             session will be started for the next command.]"
                        .into(),
                    ..Metadata::default()
                };
                return Ok(self
                    .observe(Some(command), Body::Output(out), meta, Some(-1), true)
                    .await);
            }
            let last_change = Instant::from_std(last_output).max(start);
            let soft = hard
                .is_none()
                .then(|| last_change + self.opts.no_change_timeout);
            let deadline = match (soft, hard) {
                (Some(s), _) => s,
                (None, Some(h)) => h,
                (None, None) => start + Duration::from_secs(3600),
            };
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    if let (Some(h), Some(t)) = (hard, action.timeout) {
                        if now >= h {
                            let meta = Metadata {
                                prefix: cont_prefix.into(),
                                suffix: format!(
                                    "\n[The command timed out after {} seconds. {HINT}]",
                                    py_num(t)
                                ),
                                ..Metadata::default()
                            };
                            let out = session.take_output();
                            return Ok(self.observe(Some(command), Body::Output(out), meta, Some(-1), false).await);
                        }
                    }
                    if hard.is_none() {
                        let (_, last_output, _) = session.status();
                        let last_change = Instant::from_std(last_output).max(start);
                        if now >= last_change + self.opts.no_change_timeout {
                            let meta = Metadata {
                                prefix: cont_prefix.into(),
                                suffix: format!(
                                    "\n[The command has no new output after {} seconds. {HINT}]",
                                    secs_text(self.opts.no_change_timeout)
                                ),
                                ..Metadata::default()
                            };
                            let out = session.take_output();
                            return Ok(self.observe(Some(command), Body::Output(out), meta, Some(-1), false).await);
                        }
                    }
                }
                _ = closing.cancelled() => {
                    let out = session.take_output();
                    session.running_until = None;
                    let meta = Metadata {
                        prefix: cont_prefix.into(),
                        suffix: "\n[The terminal was closed while the command was running.]".into(),
                        ..Metadata::default()
                    };
                    return Ok(self.observe(Some(command), Body::Output(out), meta, Some(-1), true).await);
                }
                _ = ctx.cancel.cancelled() => {
                    return Ok(self.interrupted(session, command, target, cont_prefix).await);
                }
            }
        }
    }

    async fn completed(
        &self,
        session: &mut Session,
        command: &str,
        is_key: bool,
        prefix: &str,
    ) -> ToolOutput {
        let prompt = session.last_prompt();
        session.running_until = None;
        let mut meta = Metadata::from_prompt(&prompt);
        meta.prefix = prefix.into();
        meta.suffix = match ctrl_letter(command).filter(|_| is_key) {
            Some(letter) => format!(
                "\n[The command completed with exit code {}. CTRL+{letter} was sent.]",
                prompt.exit_code
            ),
            None => format!(
                "\n[The command completed with exit code {}.]",
                prompt.exit_code
            ),
        };
        let out = session.take_output();
        if let Some(s) = session.script.take() {
            let _ = tokio::fs::remove_file(s).await;
        }
        self.observe(
            Some(command),
            Body::Output(out),
            meta,
            Some(prompt.exit_code),
            false,
        )
        .await
    }

    /// The conversation was interrupted: Ctrl-C the foreground job and report what we have.
    ///
    /// Returns once the shell is quiet again ([`INTERRUPT_SETTLE`] without output), so that no
    /// prompt of the interrupted command can be mistaken for the end of the next one.
    async fn interrupted(
        &self,
        session: &mut Session,
        command: &str,
        target: u64,
        prefix: &str,
    ) -> ToolOutput {
        let _ = session.write(vec![0x03]).await;
        let mut rx = session.subscribe();
        // If the Ctrl-C reached bash before it read the command, the typed line was dropped and
        // bash waits silently; if it landed between bash reading the line and the command taking
        // the terminal, the command runs on. A second Ctrl-C plus an empty line covers both: the
        // command is stopped and bash prints its prompt (extra prompts are absorbed below).
        for (wait_ms, nudge) in [(1000, true), (1500, false)] {
            let deadline = Instant::now() + Duration::from_millis(wait_ms);
            loop {
                if session.prompts() >= target {
                    // Ctrl-C and the nudge may each make bash print a prompt: absorb the late
                    // ones now, or the next command would take a stale prompt as its own end.
                    while tokio::time::timeout(INTERRUPT_SETTLE, rx.changed())
                        .await
                        .is_ok_and(|r| r.is_ok())
                    {}
                    return self.completed(session, command, false, prefix).await;
                }
                if tokio::time::timeout_at(deadline, rx.changed())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            if nudge {
                let _ = session.write(vec![0x03, b'\n']).await;
            }
        }
        let meta = Metadata {
            prefix: prefix.into(),
            suffix: "\n[The command was interrupted.]".into(),
            ..Metadata::default()
        };
        let out = session.take_output();
        self.observe(Some(command), Body::Output(out), meta, Some(-1), false)
            .await
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

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Quotes `value` for bash as `$'...'`.
fn ansi_c_quote(value: &str) -> String {
    let mut out = String::from("$'");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// `Python`-style seconds: `30` for whole numbers, else the float.
fn secs_text(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

/// Middle-truncates `head + tail` to `budget` characters with a notice naming the saved file.
fn cut_middle(head: &str, tail: &str, budget: usize, saved: Option<&Path>) -> String {
    let head_part = |n: usize| -> &str { &head[..super::truncate::byte_index(head, n)] };
    let text_lines = |s: &str| s.lines().count();
    let build_notice = |line: usize| match saved {
        Some(p) => format!(
            "<response clipped><NOTE>The output was too long, so its middle part is not shown. \
             The complete output is saved in {} - read it with other tools if you need it (the \
             omitted part starts around line {line}).</NOTE>",
            p.display()
        ),
        None => super::truncate::CLIPPED_NOTICE.to_owned(),
    };
    let (source_head, source_tail) = if tail.is_empty() {
        (head, "")
    } else {
        (head, tail)
    };
    let total_tail_chars = source_tail.chars().count();
    let provisional = build_notice(0).chars().count() + 12;
    let available = budget.saturating_sub(provisional);
    let want_head = available.div_ceil(2);
    let head_chars = want_head.min(source_head.chars().count());
    let notice = build_notice(text_lines(head_part(head_chars)) + 1);
    let remaining = budget.saturating_sub(notice.chars().count() + head_chars);
    let (head_text, tail_text) = if source_tail.is_empty() {
        // One text: take the tail from its end.
        let all = source_head;
        let n = all.chars().count();
        let t = remaining.min(n.saturating_sub(head_chars));
        let start = super::truncate::byte_index(all, n - t);
        (head_part(head_chars), &all[start..])
    } else {
        let t = remaining.min(total_tail_chars);
        let start = super::truncate::byte_index(source_tail, total_tail_chars - t);
        (head_part(head_chars), &source_tail[start..])
    };
    format!("{head_text}{notice}{tail_text}")
}

fn short_hash(text: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(text.as_bytes());
    d.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a special key name (`C-c`, `UP`, `TAB`, ...), if `cmd` is one.
fn key_bytes(cmd: &str) -> Option<Vec<u8>> {
    let upper = cmd.trim().to_ascii_uppercase();
    let named: &[u8] = match upper.as_str() {
        "ENTER" => b"\n",
        "TAB" => b"\t",
        "BS" => b"\x7f",
        "ESC" => b"\x1b",
        "UP" => b"\x1b[A",
        "DOWN" => b"\x1b[B",
        "RIGHT" => b"\x1b[C",
        "LEFT" => b"\x1b[D",
        "HOME" => b"\x1b[H",
        "END" => b"\x1b[F",
        "PGUP" => b"\x1b[5~",
        "PGDN" => b"\x1b[6~",
        _ => {
            let letter = ctrl_letter(cmd)?;
            return Some(vec![(letter as u8) & 0x1f]);
        }
    };
    Some(named.to_vec())
}

/// `C` for `C-c`: the letter of a `C-<letter>` key.
fn ctrl_letter(cmd: &str) -> Option<char> {
    let t = cmd.trim();
    let rest = t.strip_prefix("C-").or_else(|| t.strip_prefix("c-"))?;
    let mut chars = rest.chars();
    let c = chars.next()?;
    (chars.next().is_none() && c.is_ascii_alphabetic()).then(|| c.to_ascii_uppercase())
}

/// Detects a Python/JSON literal passed as the command (`[{...}]`, `{"k": ...}`).
fn literal_kind(command: &str) -> Option<&'static str> {
    let s: Vec<char> = command.trim_start().chars().take(3).collect();
    if s.len() < 2 {
        return None;
    }
    match (s[0], s[1]) {
        ('[', '{' | '"' | '\'') => Some("list literal"),
        ('[', '[') => match s.get(2) {
            Some(' ' | '\t') | None => None,
            Some(_) => Some("nested list literal"),
        },
        ('{', '"' | '\'') => Some("dict literal"),
        _ => None,
    }
}

/// The runtime's idle timeout in seconds as bits of an `f64`; 0: none.
static RUNTIME_IDLE_TIMEOUT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets the runtime's idle timeout (`Config::runtime_idle_timeout_secs`): foreground commands
/// with timeouts above 90 % of it are refused. Applies to every terminal from then on.
pub fn set_runtime_idle_timeout(secs: Option<f64>) {
    let bits = secs.filter(|s| *s > 0.0).map_or(0, f64::to_bits);
    RUNTIME_IDLE_TIMEOUT.store(bits, std::sync::atomic::Ordering::Relaxed);
}

/// With a runtime idle timeout set, foreground timeouts above 90 % of it are refused.
fn idle_timeout_rejection(command: &str, is_input: bool, timeout: Option<f64>) -> Option<String> {
    let timeout = timeout?;
    if is_input || command.is_empty() {
        return None;
    }
    let idle = f64::from_bits(RUNTIME_IDLE_TIMEOUT.load(std::sync::atomic::Ordering::Relaxed));
    if idle <= 0.0 {
        return None;
    }
    let max = idle * 0.9;
    if timeout <= max {
        return None;
    }
    Some(format!(
        "Refusing to run a foreground command with timeout={timeout}s.\n\nThis runtime is \
         cleaned up after {idle}s without activity, so foreground commands are limited to 90% of \
         that ({max}s). Use a shorter timeout, leave it out and poll with empty commands, or run \
         the work in the background and check its log file."
    ))
}

#[cfg(test)]
mod tests;
