//! One interactive bash on a pseudo-terminal: a reader thread turns its output into command
//! output and prompt records (`output.rs`, kept by `capture.rs`), the async side sends input
//! and waits for the next prompt; killing it kills every process of its session.
//!
//! Completion is detected with a per-session random marker that `PROMPT_COMMAND` prints (with
//! the exit code and working directory as JSON) before every prompt. Output is kept in bounded
//! memory (head and tail); beyond that it is spooled to a file that becomes the saved full output.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};
use rand::Rng;
use tokio::sync::watch;

use super::capture::Captured;
use super::output::{PromptInfo, Shared};

/// Sent to bash first: no echo, no history expansion, and a marked prompt carrying the exit
/// code and working directory as JSON. The token only ever appears whole in prompt output.
const INIT_SCRIPT: &str = r#"stty -echo 2>/dev/null; set +H
__oh_t=@TOKEN@; __oh_u=$(id -un 2>/dev/null); __oh_h=${HOSTNAME%%.*}
__oh_esc() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}; REPLY=$s; }
__oh_prompt() { local ec=$? bg=${!:--1} d py; py=$(command -v python 2>/dev/null); __oh_esc "$PWD"; d=$REPLY; __oh_esc "$py"; py=$REPLY; printf '\n###OH-%s-BEGIN###{"exit_code":%s,"pid":%s,"username":"%s","hostname":"%s","working_dir":"%s","py_interpreter_path":"%s"}###OH-%s-END###\n' "$__oh_t" "$ec" "$bg" "$__oh_u" "$__oh_h" "$d" "$py" "$__oh_t"; PS1=''; PS2=''; return $ec; }
PS1=''; PS2=''; PROMPT_COMMAND=__oh_prompt
"#;

/// A running bash on a pseudo-terminal.
pub(super) struct Session {
    shared: Arc<Mutex<Shared>>,
    changed: watch::Receiver<u64>,
    writer: Arc<Mutex<Box<dyn Write + Send>>>,
    child: Arc<Mutex<Option<Box<dyn Child + Send + Sync>>>>,
    pid: Option<i32>,
    _master: Mutex<Box<dyn MasterPty + Send>>,
    /// Prompt count at which the running command is done; `None` when idle.
    pub running_until: Option<u64>,
    /// A script file used to send a long command, removed once it is done.
    pub script: Option<PathBuf>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How to start a session.
#[derive(Debug, Clone)]
pub(super) struct SpawnOptions {
    pub working_dir: PathBuf,
    pub shell: String,
    pub spool_dir: PathBuf,
}

impl Session {
    /// Starts bash and waits until it shows its first marked prompt.
    pub(super) async fn start(opts: SpawnOptions) -> Result<Session, String> {
        let session = tokio::task::spawn_blocking(move || Session::spawn(&opts))
            .await
            .map_err(|e| format!("terminal start failed: {e}"))??;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut rx = session.changed.clone();
        loop {
            {
                let mut sh = lock(&session.shared);
                if sh.prompts >= 1 {
                    sh.take();
                    break;
                }
                if sh.eof {
                    return Err("the shell exited while starting".into());
                }
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err("the shell exited while starting".into()),
                Err(_) => {
                    session.kill().await;
                    return Err("the shell did not become ready within 30 seconds".into());
                }
            }
        }
        Ok(session)
    }

    fn spawn(opts: &SpawnOptions) -> Result<Session, String> {
        let token: String = {
            let mut rng = rand::rng();
            (0..24)
                .map(|_| format!("{:x}", rng.random_range(0..16u8)))
                .collect()
        };
        let pair = native_pty_system()
            .openpty(PtySize {
                rows: 50,
                cols: 250,
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
        let mut cmd = CommandBuilder::new(&opts.shell);
        cmd.args(["--noediting", "-i"]);
        cmd.cwd(&opts.working_dir);
        // The server's environment without its credentials (one builder for every child).
        cmd.env_clear();
        for (key, value) in crate::util::child_env().iter() {
            cmd.env(key, value);
        }
        cmd.env("TERM", "xterm-256color");
        cmd.env("PS1", "");
        cmd.env("PS2", "");
        if std::env::var_os("PAGER").is_none() {
            cmd.env("PAGER", "cat");
        }
        if std::env::var_os("GIT_PAGER").is_none() {
            cmd.env("GIT_PAGER", "cat");
        }
        let child = pair
            .slave
            .spawn_command(cmd)
            .map_err(|e| format!("cannot start {}: {e}", opts.shell))?;
        drop(pair.slave);
        let pid = child.process_id().and_then(|p| i32::try_from(p).ok());
        let mut reader = pair
            .master
            .try_clone_reader()
            .map_err(|e| format!("pseudo-terminal reader: {e}"))?;
        let writer = pair
            .master
            .take_writer()
            .map_err(|e| format!("pseudo-terminal writer: {e}"))?;
        let shared = Arc::new(Mutex::new(Shared::new(&token, opts.spool_dir.clone())));
        let (tx, rx) = watch::channel(0u64);
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("terminal-reader".into())
            .spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match reader.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            lock(&thread_shared).feed(&buf[..n]);
                            tx.send_modify(|v| *v = v.wrapping_add(1));
                        }
                    }
                }
                lock(&thread_shared).eof = true;
                tx.send_modify(|v| *v = v.wrapping_add(1));
            })
            .map_err(|e| format!("cannot start the terminal reader: {e}"))?;
        let session = Session {
            shared,
            changed: rx,
            writer: Arc::new(Mutex::new(writer)),
            child: Arc::new(Mutex::new(Some(child))),
            pid,
            _master: Mutex::new(pair.master),
            running_until: None,
            script: None,
        };
        // No echo, no history expansion, and a marked prompt carrying exit code and cwd.
        let init = INIT_SCRIPT.replace("@TOKEN@", &token);
        session.write_blocking(init.as_bytes())?;
        Ok(session)
    }

    fn write_blocking(&self, data: &[u8]) -> Result<(), String> {
        let mut w = lock(&self.writer);
        w.write_all(data)
            .and_then(|_| w.flush())
            .map_err(|e| format!("cannot write to the terminal: {e}"))
    }

    /// Sends bytes to the terminal without blocking the runtime.
    pub(super) async fn write(&self, data: Vec<u8>) -> Result<(), String> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = lock(&writer);
            w.write_all(&data)
                .and_then(|_| w.flush())
                .map_err(|e| format!("cannot write to the terminal: {e}"))
        })
        .await
        .map_err(|e| format!("cannot write to the terminal: {e}"))?
    }

    /// A receiver that changes whenever output arrives.
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.clone()
    }

    /// `(prompts seen, time of last output, shell gone)`.
    pub(super) fn status(&self) -> (u64, Instant, bool) {
        let sh = lock(&self.shared);
        (sh.prompts, sh.last_output, sh.eof)
    }

    pub(super) fn prompts(&self) -> u64 {
        lock(&self.shared).prompts
    }

    pub(super) fn last_prompt(&self) -> PromptInfo {
        lock(&self.shared).last_prompt.clone()
    }

    /// Takes the output collected so far.
    pub(super) fn take_output(&self) -> Captured {
        lock(&self.shared).take()
    }

    /// Drops the output collected so far.
    pub(super) fn discard_output(&self) {
        drop(lock(&self.shared).take());
    }

    /// Kills bash and everything started from it, and reaps it.
    pub(super) async fn kill(&self) {
        let pid = self.pid;
        let child = self.child.clone();
        let script = self.script.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(pid) = pid {
                kill_session_tree(pid);
            }
            if let Some(mut c) = lock(&child).take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            if let Some(s) = script {
                let _ = std::fs::remove_file(s);
            }
        })
        .await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let pid = self.pid;
        let child = self.child.clone();
        if let Some(pid) = pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Finish the job (children in other process groups, reaping) off the caller's thread.
        let _ = std::thread::Builder::new()
            .name("terminal-reaper".into())
            .spawn(move || {
                if let Some(pid) = pid {
                    kill_session_tree(pid);
                }
                if let Some(mut c) = lock(&child).take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            });
        if let Some(s) = self.script.take() {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// Kills every process of the session led by `sid` (bash started with `setsid`), including
/// jobs that bash moved to their own process groups.
fn kill_session_tree(sid: i32) {
    use nix::sys::signal::{kill, killpg, Signal};
    use nix::unistd::Pid;
    if sid <= 1 || sid == std::process::id() as i32 {
        return;
    }
    for _ in 0..5 {
        let mut found = false;
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                if session_of(&entry.path()) == Some(sid) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    found = true;
                }
            }
        }
        let _ = killpg(Pid::from_raw(sid), Signal::SIGKILL);
        if !found {
            break;
        }
    }
}

/// The session id of a process from `/proc/<pid>/stat`.
fn session_of(proc_dir: &Path) -> Option<i32> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    // Fields after the command name: state, ppid, pgrp, session.
    after.split_whitespace().nth(3)?.parse().ok()
}
