//! One interactive bash on a pseudo-terminal: a reader thread turns its output into command
//! output and prompt records, the async side sends input and waits for the next prompt.
//!
//! Completion is detected with a per-session random marker that `PROMPT_COMMAND` prints (with
//! the exit code and working directory as JSON) before every prompt. Output is kept in bounded
//! memory (head and tail); beyond that it is spooled to a file that becomes the saved full output.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use portable_pty::{native_pty_system, Child, CommandBuilder, MasterPty, PtySize};
use rand::Rng;
use serde_json::Value;
use tokio::sync::watch;

/// Characters of output kept at the start of a command's output.
const HEAD_CAP: usize = 32_000;
/// Characters of output kept at the end of a command's output (trimmed when it doubles).
const TAIL_CAP: usize = 32_000;
/// A marker start with no end after this many bytes is ordinary output.
const MAX_PENDING_MARKER: usize = 16_384;

/// Sent to bash first: no echo, no history expansion, and a marked prompt carrying the exit
/// code and working directory as JSON. The token only ever appears whole in prompt output.
const INIT_SCRIPT: &str = r#"stty -echo 2>/dev/null; set +H
__oh_t=@TOKEN@; __oh_u=$(id -un 2>/dev/null); __oh_h=${HOSTNAME%%.*}
__oh_esc() { local s=${1//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\t'/\\t}; REPLY=$s; }
__oh_prompt() { local ec=$? bg=${!:--1} d py; py=$(command -v python 2>/dev/null); __oh_esc "$PWD"; d=$REPLY; __oh_esc "$py"; py=$REPLY; printf '\n###OH-%s-BEGIN###{"exit_code":%s,"pid":%s,"username":"%s","hostname":"%s","working_dir":"%s","py_interpreter_path":"%s"}###OH-%s-END###\n' "$__oh_t" "$ec" "$bg" "$__oh_u" "$__oh_h" "$d" "$py" "$__oh_t"; PS1=''; PS2=''; return $ec; }
PS1=''; PS2=''; PROMPT_COMMAND=__oh_prompt
"#;

/// What the prompt reported after a command.
#[derive(Debug, Clone, Default)]
pub(super) struct PromptInfo {
    pub exit_code: i64,
    pub pid: i64,
    pub username: Option<String>,
    pub hostname: Option<String>,
    pub working_dir: Option<String>,
    pub py_interpreter_path: Option<String>,
}

/// Output collected since the last reset: the whole text while small, else head, tail and a
/// spool file holding everything.
#[derive(Default)]
pub(super) struct Capture {
    head: String,
    head_chars: usize,
    tail: String,
    total_chars: usize,
    spool: Option<Spool>,
    spool_failed: bool,
    spool_dir: PathBuf,
}

struct Spool {
    keep: bool,
    file: std::io::BufWriter<File>,
    path: PathBuf,
    /// Random id naming the saved file.
    id: String,
}

/// A finished capture.
pub(super) struct Captured {
    /// The whole output when it was small enough to keep, else `None`.
    pub whole: Option<String>,
    pub head: String,
    pub tail: String,
    /// The spool file with the whole output and a random id for its final name, when output
    /// was large.
    pub spooled: Option<(PathBuf, String)>,
}

impl Capture {
    fn new(spool_dir: PathBuf) -> Self {
        Capture {
            spool_dir,
            ..Capture::default()
        }
    }

    fn push(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let n = text.chars().count();
        self.total_chars += n;
        if self.spool.is_none() && self.head_chars + n <= HEAD_CAP {
            self.head.push_str(text);
            self.head_chars += n;
            return;
        }
        if self.spool.is_none() && !self.spool_failed {
            self.open_spool();
        }
        if let Some(spool) = &mut self.spool {
            if spool.file.write_all(text.as_bytes()).is_err() {
                self.spool_failed = true;
            }
        }
        let room = HEAD_CAP.saturating_sub(self.head_chars);
        let rest = if room > 0 {
            let cut = super::super::truncate::byte_index(text, room);
            self.head.push_str(&text[..cut]);
            self.head_chars = HEAD_CAP;
            &text[cut..]
        } else {
            text
        };
        self.tail.push_str(rest);
        if self.tail.len() > 4 * TAIL_CAP {
            let chars = self.tail.chars().count();
            if chars > 2 * TAIL_CAP {
                let cut = super::super::truncate::byte_index(&self.tail, chars - TAIL_CAP);
                self.tail.drain(..cut);
            }
        }
    }

    fn open_spool(&mut self) {
        let name = format!(".terminal_spool_{:016x}.part", rand::rng().random::<u64>());
        let path = self.spool_dir.join(name);
        let opened = std::fs::create_dir_all(&self.spool_dir).and_then(|_| File::create(&path));
        match opened {
            Ok(mut file) => {
                if file.write_all(self.head.as_bytes()).is_err() {
                    self.spool_failed = true;
                    let _ = std::fs::remove_file(&path);
                    return;
                }
                self.spool = Some(Spool {
                    keep: false,
                    file: std::io::BufWriter::with_capacity(256 * 1024, file),
                    path,
                    id: format!("{:08x}", rand::rng().random::<u32>()),
                });
            }
            Err(_) => self.spool_failed = true,
        }
    }

    /// Takes the collected output, leaving an empty capture.
    fn take(&mut self) -> Captured {
        let spool_dir = std::mem::take(&mut self.spool_dir);
        let old = std::mem::replace(self, Capture::new(spool_dir));
        let mut old = old;
        let spool = old.spool.take();
        let big = old.total_chars > old.head_chars;
        let spooled = spool.and_then(|mut s| {
            if s.file.flush().is_err() {
                return None;
            }
            s.keep = true;
            Some((s.path.clone(), s.id.clone()))
        });
        if big {
            let chars = old.tail.chars().count();
            if chars > TAIL_CAP {
                let cut = super::super::truncate::byte_index(&old.tail, chars - TAIL_CAP);
                old.tail.drain(..cut);
            }
            Captured {
                whole: None,
                head: old.head,
                tail: old.tail,
                spooled,
            }
        } else {
            Captured {
                whole: Some(old.head),
                head: String::new(),
                tail: String::new(),
                spooled,
            }
        }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes terminal escape sequences (colours, cursor moves, titles) from the output stream;
/// a sequence split across reads is handled.
#[derive(Default)]
struct AnsiFilter {
    state: AnsiState,
    len: usize,
}

#[derive(Default, PartialEq)]
enum AnsiState {
    #[default]
    Normal,
    Esc,
    Csi,
    Osc,
    OscEsc,
    Skip1,
}

impl AnsiFilter {
    fn filter(&mut self, s: &str) -> String {
        if self.state == AnsiState::Normal && !s.contains('\x1b') {
            return s.to_owned();
        }
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            if self.state != AnsiState::Normal {
                self.len += 1;
                // A runaway sequence (binary garbage) ends here rather than eating the output.
                if self.len > 4096 {
                    self.state = AnsiState::Normal;
                }
            }
            self.state = match self.state {
                AnsiState::Normal => {
                    if c == '\x1b' {
                        self.len = 0;
                        AnsiState::Esc
                    } else {
                        out.push(c);
                        AnsiState::Normal
                    }
                }
                AnsiState::Esc => match c {
                    '[' => AnsiState::Csi,
                    ']' | 'P' | '_' | '^' | 'X' => AnsiState::Osc,
                    '(' | ')' | '*' | '+' | '#' | '%' => AnsiState::Skip1,
                    _ => AnsiState::Normal,
                },
                AnsiState::Csi => {
                    if ('\x40'..='\x7e').contains(&c) {
                        AnsiState::Normal
                    } else {
                        AnsiState::Csi
                    }
                }
                AnsiState::Osc => match c {
                    '\x07' => AnsiState::Normal,
                    '\x1b' => AnsiState::OscEsc,
                    _ => AnsiState::Osc,
                },
                AnsiState::OscEsc => {
                    if c == '\\' {
                        AnsiState::Normal
                    } else {
                        AnsiState::Osc
                    }
                }
                AnsiState::Skip1 => AnsiState::Normal,
            };
        }
        out
    }
}

/// Assembles output lines the way a terminal shows them: a carriage return starts the line
/// over (progress bars), backspace erases, other control characters are dropped.
#[derive(Default)]
struct LineBuffer {
    line: String,
    cr: bool,
}

/// An unfinished line longer than this is passed on as is.
const MAX_LINE: usize = 64 * 1024;

impl LineBuffer {
    fn emit(&mut self, text: &str, capture: &mut Capture) {
        let plain = !self.cr
            && !text
                .bytes()
                .any(|b| (b < 0x20 && b != b'\n' && b != b'\t') || b == 0x7f);
        if plain {
            match text.rfind('\n') {
                Some(i) => {
                    if self.line.is_empty() {
                        capture.push(&text[..=i]);
                    } else {
                        self.line.push_str(&text[..=i]);
                        capture.push(&self.line);
                        self.line.clear();
                    }
                    self.line.push_str(&text[i + 1..]);
                }
                None => self.line.push_str(text),
            }
            if self.line.len() > MAX_LINE {
                capture.push(&self.line);
                self.line.clear();
            }
            return;
        }
        for c in text.chars() {
            if self.cr {
                self.cr = false;
                if c != '\n' {
                    self.line.clear();
                }
            }
            match c {
                '\n' => {
                    self.line.push('\n');
                    capture.push(&self.line);
                    self.line.clear();
                }
                '\r' => self.cr = true,
                '\x08' => {
                    self.line.pop();
                }
                '\t' => self.line.push(c),
                c if (c as u32) < 0x20 || c == '\x7f' => {}
                c => self.line.push(c),
            }
            if self.line.len() > MAX_LINE {
                capture.push(&self.line);
                self.line.clear();
            }
        }
    }

    fn flush(&mut self, capture: &mut Capture) {
        capture.push(&self.line);
        self.line.clear();
    }
}

/// State shared between the reader thread and the session.
struct Shared {
    begin: String,
    end: String,
    utf8_rest: Vec<u8>,
    ansi: AnsiFilter,
    line: LineBuffer,
    pending: String,
    skip_newline: bool,
    capture: Capture,
    prompts: u64,
    last_prompt: PromptInfo,
    last_output: Instant,
    eof: bool,
}

impl Shared {
    fn feed(&mut self, bytes: &[u8]) {
        self.last_output = Instant::now();
        let mut buf = std::mem::take(&mut self.utf8_rest);
        buf.extend_from_slice(bytes);
        let valid_up_to = match std::str::from_utf8(&buf) {
            Ok(_) => buf.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => buf.len(),
        };
        self.utf8_rest = buf[valid_up_to..].to_vec();
        let mut text = String::from_utf8_lossy(&buf[..valid_up_to]).into_owned();
        // Keep a trailing CR until we know whether an LF follows.
        if text.ends_with('\r') {
            text.pop();
            let mut rest = b"\r".to_vec();
            rest.extend_from_slice(&self.utf8_rest);
            self.utf8_rest = rest;
        }
        let text = text.replace("\r\n", "\n");
        let text = self.ansi.filter(&text);
        self.pending.push_str(&text);
        self.process();
    }

    /// Takes the output so far, including an unfinished last line.
    fn take(&mut self) -> Captured {
        self.line.flush(&mut self.capture);
        self.capture.take()
    }

    fn process(&mut self) {
        loop {
            if self.skip_newline && !self.pending.is_empty() {
                if self.pending.starts_with('\n') {
                    self.pending.remove(0);
                }
                self.skip_newline = false;
            }
            match self.pending.find(&self.begin) {
                Some(i) => {
                    let after = i + self.begin.len();
                    let out_end = if self.pending[..i].ends_with('\n') {
                        i - 1
                    } else {
                        i
                    };
                    match self.pending[after..].find(&self.end) {
                        Some(j) => {
                            let out = self.pending[..out_end].to_owned();
                            self.line.emit(&out, &mut self.capture);
                            self.line.flush(&mut self.capture);
                            self.last_prompt = parse_prompt(&self.pending[after..after + j]);
                            self.prompts += 1;
                            self.pending.drain(..after + j + self.end.len());
                            self.skip_newline = true;
                        }
                        None => {
                            if self.pending.len() - i > MAX_PENDING_MARKER {
                                let all = std::mem::take(&mut self.pending);
                                self.line.emit(&all, &mut self.capture);
                            } else {
                                let out: String = self.pending.drain(..out_end).collect();
                                self.line.emit(&out, &mut self.capture);
                            }
                            return;
                        }
                    }
                }
                None => {
                    let hold = held_back(&self.pending, &self.begin);
                    let emit = self.pending.len() - hold;
                    let out: String = self.pending.drain(..emit).collect();
                    self.line.emit(&out, &mut self.capture);
                    return;
                }
            }
        }
    }
}

/// Length of the longest suffix of `text` that could start `"\n" + begin`.
fn held_back(text: &str, begin: &str) -> usize {
    let full = format!("\n{begin}");
    let max = full.len().min(text.len());
    (1..=max)
        .rev()
        .find(|&k| {
            text.is_char_boundary(text.len() - k) && full.starts_with(&text[text.len() - k..])
        })
        .unwrap_or(0)
}

fn parse_prompt(json: &str) -> PromptInfo {
    let v: Value = serde_json::from_str(json.trim()).unwrap_or(Value::Null);
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    PromptInfo {
        exit_code: v.get("exit_code").and_then(Value::as_i64).unwrap_or(-1),
        pid: v.get("pid").and_then(Value::as_i64).unwrap_or(-1),
        username: s("username"),
        hostname: s("hostname"),
        working_dir: s("working_dir"),
        py_interpreter_path: s("py_interpreter_path"),
    }
}

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
        let shared = Arc::new(Mutex::new(Shared {
            begin: format!("###OH-{token}-BEGIN###"),
            end: format!("###OH-{token}-END###"),
            utf8_rest: Vec::new(),
            ansi: AnsiFilter::default(),
            line: LineBuffer::default(),
            pending: String::new(),
            skip_newline: false,
            capture: Capture::new(opts.spool_dir.clone()),
            prompts: 0,
            last_prompt: PromptInfo::default(),
            last_output: Instant::now(),
            eof: false,
        }));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            begin: "###OH-t-BEGIN###".into(),
            end: "###OH-t-END###".into(),
            utf8_rest: Vec::new(),
            ansi: AnsiFilter::default(),
            line: LineBuffer::default(),
            pending: String::new(),
            skip_newline: false,
            capture: Capture::new(std::env::temp_dir()),
            prompts: 0,
            last_prompt: PromptInfo::default(),
            last_output: Instant::now(),
            eof: false,
        }
    }

    #[test]
    fn markers_split_across_reads_are_found() {
        let mut sh = shared();
        let stream = "hello\r\nworld\r\n\n###OH-t-BEGIN###{\"exit_code\":3,\"pid\":-1,\"working_dir\":\"/x\"}###OH-t-END###\nnext";
        for chunk in stream.as_bytes().chunks(5) {
            sh.feed(chunk);
        }
        assert_eq!(sh.prompts, 1);
        assert_eq!(sh.last_prompt.exit_code, 3);
        assert_eq!(sh.last_prompt.working_dir.as_deref(), Some("/x"));
        let c = sh.take();
        assert_eq!(c.whole.as_deref(), Some("hello\nworld\nnext"));
    }

    #[test]
    fn escapes_progress_bars_and_backspaces_are_rendered() {
        let mut sh = shared();
        for chunk in [
            &b"\x1b[01;34mblue\x1b[0m plain\r\n"[..],
            b"\x1b]0;title\x07ok\x1b[",
            b"2Kdone\r\n10%\r50%\r",
            b"100%\r\nab\x08c\x07\n",
        ] {
            sh.feed(chunk);
        }
        assert_eq!(
            sh.take().whole.as_deref(),
            Some("blue plain\nokdone\n100%\nac")
        );
    }

    #[test]
    fn split_utf8_is_decoded() {
        let mut sh = shared();
        let bytes = "héllo wörld".as_bytes();
        for chunk in bytes.chunks(1) {
            sh.feed(chunk);
        }
        sh.feed(b"\n");
        sh.feed(b"x");
        assert_eq!(sh.take().whole.as_deref(), Some("héllo wörld\nx"));
    }

    #[test]
    fn large_output_spools_and_keeps_both_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut c = Capture::new(dir.path().to_path_buf());
        let mut all = String::new();
        for i in 0..50_000 {
            let line = format!("line-{i}\n");
            all.push_str(&line);
            c.push(&line);
        }
        let got = c.take();
        assert!(got.whole.is_none());
        assert!(got.head.starts_with("line-0\n"));
        assert!(got.tail.ends_with("line-49999\n"));
        let (path, _) = got.spooled.expect("spooled");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), all);
    }
}
