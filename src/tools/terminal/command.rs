//! Runs one action in the session: refusals (multiple commands, nothing running), secrets
//! exported first, the command or keystrokes sent, then waiting for its prompt, the timeout,
//! the no-output timeout, the shell's exit, closing or an interrupt.

use std::time::Duration;

use tokio::time::Instant;

use super::input::{ansi_c_quote, ctrl_letter, idle_timeout_rejection, is_env_name, key_bytes};
use super::observation::{secs_text, Body, Metadata};
use super::session::{Session, SpawnOptions};
use super::{split, Action, TerminalTool};
use crate::tools::args::py_num;
use crate::tools::{ToolContext, ToolError, ToolOutput};

/// Quiet time after an interrupt before the terminal takes the next command.
const INTERRUPT_SETTLE: Duration = Duration::from_millis(300);
const CONTINUE_PREFIX: &str = "[Below is the output of the previous command.]\n";
const HINT: &str = "To see more output, send an empty command ''. You can also send input to \
the running process with is_input set to true, send keys such as \"C-c\", \"C-z\" or \"C-d\" to \
stop it before running something else, or pass a larger timeout for commands that need longer.";
/// Lines longer than this are sent through a script file (the tty line buffer is small).
const MAX_TYPED_LINE: usize = 1024;

impl TerminalTool {
    fn spawn_options(&self) -> SpawnOptions {
        SpawnOptions {
            working_dir: self.opts.working_dir.clone(),
            shell: self.opts.shell.clone(),
            spool_dir: self.opts.save_dir(),
        }
    }

    pub(super) async fn fresh_session(&self, slot: &mut Option<Session>) -> Result<(), ToolError> {
        if let Some(old) = slot.take() {
            old.kill().await;
        }
        let s = Session::start(self.spawn_options())
            .await
            .map_err(ToolError)?;
        *slot = Some(s);
        Ok(())
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

    pub(super) async fn run_action(
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
