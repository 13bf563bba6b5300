//! One command's life: spawn `/bin/sh -c` in its own process group, read stdout and stderr
//! separately, publish `BashOutput` chunks while it runs (a stream's buffer reached
//! [`CHUNK_BYTES`], or output has waited [`FLUSH_AFTER`]), enforce the timeout and stop requests
//! by signalling the whole group (SIGTERM, then SIGKILL after [`KILL_GRACE`]), and finish with one
//! chunk carrying the rest and the exit code.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::sync::{watch, Notify};
use tokio::time::{sleep_until, Instant};

use super::model::{BashCommand, BashOutput};
use super::Inner;

/// The shell that runs commands: `/bin/sh -c`, as the reference's `create_subprocess_shell`
/// does (same syntax accepted, and dash starts in a third of bash's time).
const SHELL: &str = "/bin/sh";
/// A stream's buffer is published as a chunk once it holds this many bytes.
pub const CHUNK_BYTES: usize = 1024 * 1024;
/// Output waiting this long is published even if the buffer is small.
pub const FLUSH_AFTER: Duration = Duration::from_millis(100);
/// Time between SIGTERM and SIGKILL to a command's process group.
pub const KILL_GRACE: Duration = Duration::from_secs(1);
/// After SIGKILL, how long to wait for the pipes to close (a process that left the group may
/// hold them) before finishing anyway.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);
/// Bytes read from a pipe at once, once a stream has filled the first, small buffer.
const READ_BYTES: usize = 64 * 1024;
/// The first read buffer of each stream: most commands print little, and hundreds may run.
const FIRST_READ_BYTES: usize = 4 * 1024;
/// Output up to this size, published as one chunk, is also kept with the outcome, so
/// `execute_bash_command` answers without reading it back from disk.
const KEEP_WHOLE_BYTES: usize = 64 * 1024;

/// How a finished command ended, for `execute_bash_command`'s merged answer.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    /// The last chunk, with its text removed.
    pub last: BashOutput,
    /// The whole output with its text, when it was one small chunk (see [`KEEP_WHOLE_BYTES`]).
    pub whole: Option<BashOutput>,
    pub any_stdout: bool,
    pub any_stderr: bool,
}

/// Shared between a running command and the routes that stop or await it.
#[derive(Debug)]
pub(crate) struct Control {
    /// Signalled to stop the command (a permit is stored if it is not listening yet).
    pub stop: Notify,
    /// `Some` once the final chunk is stored.
    pub done: watch::Sender<Option<Arc<Outcome>>>,
}

impl Control {
    pub fn new() -> Self {
        Control {
            stop: Notify::new(),
            done: watch::channel(None).0,
        }
    }

    /// Waits (at most `limit`) for the command to finish.
    pub async fn wait_done(&self, limit: Option<Duration>) -> Option<Arc<Outcome>> {
        let mut rx = self.done.subscribe();
        let wait = rx.wait_for(|o| o.is_some());
        let got = match limit {
            Some(l) => tokio::time::timeout(l, wait).await.ok()?,
            None => wait.await,
        };
        got.ok().and_then(|o| o.clone())
    }
}

/// Which pipe a byte came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// Pending output of both streams and the shared chunk counter.
struct Chunker {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    order: i64,
    any_stdout: bool,
    any_stderr: bool,
}

/// Length of the longest prefix of `buf` (at most `max`) that does not end inside a UTF-8
/// sequence, so a multi-byte character is never split across chunks.
pub(crate) fn char_boundary(buf: &[u8], max: usize) -> usize {
    let end = max.min(buf.len());
    // Look back at most 3 bytes for the start of the sequence `end` falls into.
    let mut start = end;
    while start > 0 && end - start < 3 && (buf[start - 1] & 0xC0) == 0x80 {
        start -= 1;
    }
    if start == 0 {
        return end;
    }
    let lead = buf[start - 1];
    let need = match lead {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return end,
    };
    let have = end - (start - 1);
    if have < need {
        start - 1
    } else {
        end
    }
}

fn decode(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

impl Chunker {
    fn take(&mut self, stream: Stream, max: usize, final_chunk: bool) -> Option<String> {
        let buf = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        let cut = if final_chunk {
            buf.len()
        } else {
            let c = char_boundary(buf, max);
            // Only an incomplete character is pending: cut inside it rather than never.
            if c == 0 && buf.len() >= 4 {
                max.min(buf.len())
            } else {
                c
            }
        };
        if cut == 0 {
            return None;
        }
        let rest = buf.split_off(cut);
        let chunk = std::mem::replace(buf, rest);
        let text = decode(chunk);
        match stream {
            Stream::Stdout => self.any_stdout = true,
            Stream::Stderr => self.any_stderr = true,
        }
        Some(text)
    }

    fn pending(&self) -> bool {
        !self.stdout.is_empty() || !self.stderr.is_empty()
    }
}

/// Publishes one chunk; storage errors are logged (the command keeps running). Returns the
/// chunk as stored, without its text unless `keep_text`.
async fn emit(
    inner: &Inner,
    command: &BashCommand,
    chunker: &mut Chunker,
    stdout: Option<String>,
    stderr: Option<String>,
    exit_code: Option<i64>,
    keep_text: bool,
) -> BashOutput {
    let mut output = BashOutput {
        id: crate::util::hex_id(),
        timestamp: String::new(),
        command_id: command.id.clone(),
        order: chunker.order,
        exit_code,
        stdout,
        stderr,
        kind: "BashOutput".into(),
    };
    chunker.order += 1;
    // The text is copied only when asked (small outputs): otherwise the outcome keeps only the
    // chunk's metadata.
    let mut head = BashOutput {
        id: output.id.clone(),
        timestamp: String::new(),
        command_id: output.command_id.clone(),
        order: output.order,
        exit_code,
        stdout: keep_text.then(|| output.stdout.clone()).flatten(),
        stderr: keep_text.then(|| output.stderr.clone()).flatten(),
        kind: output.kind.clone(),
    };
    if let Some(stamp) = inner
        .append(move |stamp| {
            output.timestamp = stamp.timestamp.clone();
            super::BashEvent::Output(output)
        })
        .await
    {
        head.timestamp = stamp.timestamp;
    }
    head
}

/// A read that filled `buf` means a stream is busy: read [`READ_BYTES`] at a time from now on.
fn grow_if_filled(buf: &mut Vec<u8>, read: usize) {
    if read == buf.len() && buf.len() < READ_BYTES {
        buf.resize(READ_BYTES, 0);
    }
}

/// Sends `signal` to the process group `pgid` (already gone is fine).
fn signal_group(pgid: Option<u32>, signal: Signal) {
    if let Some(pid) = pgid.and_then(|p| i32::try_from(p).ok()) {
        if let Err(e) = killpg(Pid::from_raw(pid), signal) {
            if e != nix::errno::Errno::ESRCH {
                tracing::debug!(pgid = pid, %signal, error = %e, "cannot signal process group");
            }
        }
    }
}

/// The reference's spawn-error text for `cwd`, e.g. `[Errno 2] No such file or directory: '/x'`.
fn spawn_error_text(err: &std::io::Error, cwd: Option<&str>) -> String {
    let detail = match err.raw_os_error() {
        Some(code) => format!(
            "[Errno {code}] {}",
            nix::errno::Errno::from_raw(code).desc()
        ),
        None => err.to_string(),
    };
    match cwd {
        Some(c) if err.raw_os_error().is_some() => format!("{detail}: '{c}'"),
        _ => detail,
    }
}

/// The timeout as a deadline (far away for huge values, now for zero or negative ones).
fn deadline(timeout_secs: i64) -> Instant {
    let secs = u64::try_from(timeout_secs.max(0)).unwrap_or(0);
    let far = Duration::from_secs(60 * 60 * 24 * 365 * 10);
    Instant::now()
        .checked_add(Duration::from_secs(secs).min(far))
        .unwrap_or_else(Instant::now)
}

/// Runs `command` to its end and stores its outputs; `control` is signalled when done.
pub(crate) async fn run(inner: Arc<Inner>, command: BashCommand, control: Arc<Control>) {
    let mut chunker = Chunker {
        stdout: Vec::new(),
        stderr: Vec::new(),
        order: 0,
        any_stdout: false,
        any_stderr: false,
    };
    let cwd = command.cwd.clone();
    let mut cmd = tokio::process::Command::new(SHELL);
    cmd.arg("-c")
        .arg(&command.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(c) = &cwd {
        cmd.current_dir(c);
    }
    cmd.env_clear()
        .envs(crate::util::child_env().iter().map(|(k, v)| (k, v)));
    let spawned = match cwd.as_deref() {
        // Checked first so the error names the directory, as the reference's does.
        Some(c) => match tokio::fs::metadata(c).await {
            Ok(m) if m.is_dir() => cmd.spawn(),
            Ok(_) => Err(std::io::Error::from_raw_os_error(libc::ENOTDIR)),
            Err(e) => Err(e),
        },
        None => cmd.spawn(),
    };
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let text = format!(
                "Error executing command: {}",
                spawn_error_text(&e, cwd.as_deref())
            );
            tracing::warn!(command_id = %command.id, error = %e, "cannot start bash command");
            let last = emit(
                &inner,
                &command,
                &mut chunker,
                None,
                Some(text),
                Some(-1),
                false,
            )
            .await;
            let _ = control.done.send(Some(Arc::new(Outcome {
                last,
                whole: None,
                any_stdout: false,
                any_stderr: true,
            })));
            return;
        }
    };
    let pgid = child.id();
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        signal_group(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
        return;
    };
    let mut out_buf = vec![0u8; FIRST_READ_BYTES];
    let mut err_buf = vec![0u8; FIRST_READ_BYTES];
    let (mut out_open, mut err_open) = (true, true);
    let mut status: Option<std::process::ExitStatus> = None;
    let timeout_at = deadline(command.timeout);
    let mut timed_out = false;
    let mut killing = false;
    let mut kill_at: Option<Instant> = None;
    let mut give_up_at: Option<Instant> = None;
    let mut flush_at: Option<Instant> = None;

    while out_open || err_open || status.is_none() {
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::select! {
            r = out.read(&mut out_buf), if out_open => match r {
                Ok(n) if n > 0 => {
                    chunker.stdout.extend_from_slice(&out_buf[..n]);
                    grow_if_filled(&mut out_buf, n);
                    flush_at.get_or_insert_with(|| Instant::now() + FLUSH_AFTER);
                }
                _ => out_open = false,
            },
            r = err.read(&mut err_buf), if err_open => match r {
                Ok(n) if n > 0 => {
                    chunker.stderr.extend_from_slice(&err_buf[..n]);
                    grow_if_filled(&mut err_buf, n);
                    flush_at.get_or_insert_with(|| Instant::now() + FLUSH_AFTER);
                }
                _ => err_open = false,
            },
            s = child.wait(), if status.is_none() => match s {
                Ok(s) => status = Some(s),
                Err(e) => {
                    tracing::warn!(command_id = %command.id, error = %e, "cannot wait for bash command");
                    break;
                }
            },
            _ = sleep_until(flush_at.unwrap_or(far)), if flush_at.is_some() => {
                flush_at = None;
                let stdout = chunker.take(Stream::Stdout, usize::MAX, false);
                let stderr = chunker.take(Stream::Stderr, usize::MAX, false);
                if stdout.is_some() || stderr.is_some() {
                    emit(&inner, &command, &mut chunker, stdout, stderr, None, false).await;
                }
                if chunker.pending() {
                    flush_at = Some(Instant::now() + FLUSH_AFTER);
                }
            },
            _ = sleep_until(timeout_at), if !killing => {
                tracing::info!(command_id = %command.id, timeout = command.timeout, "bash command timed out");
                timed_out = true;
                killing = true;
                signal_group(pgid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + KILL_GRACE);
            },
            _ = control.stop.notified(), if !killing => {
                killing = true;
                signal_group(pgid, Signal::SIGTERM);
                kill_at = Some(Instant::now() + KILL_GRACE);
            },
            _ = sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() => {
                kill_at = None;
                signal_group(pgid, Signal::SIGKILL);
                give_up_at = Some(Instant::now() + DRAIN_AFTER_KILL);
            },
            _ = sleep_until(give_up_at.unwrap_or(far)), if give_up_at.is_some() => {
                tracing::warn!(command_id = %command.id, "bash command's pipes stayed open after SIGKILL");
                break;
            },
        }
        // Publish full chunks at once (this also bounds memory: reading waits for the write).
        for stream in [Stream::Stdout, Stream::Stderr] {
            loop {
                let len = match stream {
                    Stream::Stdout => chunker.stdout.len(),
                    Stream::Stderr => chunker.stderr.len(),
                };
                if len < CHUNK_BYTES {
                    break;
                }
                let Some(text) = chunker.take(stream, CHUNK_BYTES, false) else {
                    break;
                };
                let (o, e) = match stream {
                    Stream::Stdout => (Some(text), None),
                    Stream::Stderr => (None, Some(text)),
                };
                emit(&inner, &command, &mut chunker, o, e, None, false).await;
            }
        }
        if !chunker.pending() {
            flush_at = None;
        }
    }
    if killing && kill_at.is_some() {
        // The leader died of SIGTERM: make sure nothing of its group survives it.
        signal_group(pgid, Signal::SIGKILL);
    }
    let exit_code = if timed_out {
        -1
    } else {
        match status {
            Some(s) => {
                use std::os::unix::process::ExitStatusExt;
                s.code()
                    .map(i64::from)
                    .or_else(|| s.signal().map(|sig| -i64::from(sig)))
                    .unwrap_or(-1)
            }
            None => -1,
        }
    };
    if status.is_none() {
        // Reaped later by tokio's orphan handling.
        signal_group(pgid, Signal::SIGKILL);
    }
    let stdout = chunker.take(Stream::Stdout, usize::MAX, true);
    let stderr = chunker.take(Stream::Stderr, usize::MAX, true);
    let only_chunk = chunker.order == 0;
    let small = stdout.as_ref().map_or(0, String::len) + stderr.as_ref().map_or(0, String::len)
        <= KEEP_WHOLE_BYTES;
    let keep = only_chunk && small;
    let mut last = emit(
        &inner,
        &command,
        &mut chunker,
        stdout,
        stderr,
        Some(exit_code),
        keep,
    )
    .await;
    // The text moves to `whole`; `last` keeps the metadata only.
    let whole = keep.then(|| BashOutput {
        stdout: last.stdout.take(),
        stderr: last.stderr.take(),
        ..last.clone()
    });
    let _ = control.done.send(Some(Arc::new(Outcome {
        last,
        whole,
        any_stdout: chunker.any_stdout,
        any_stderr: chunker.any_stderr,
    })));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_splits_a_character() {
        let s = "aé€😀".as_bytes(); // 1 + 2 + 3 + 4 bytes
        assert_eq!(char_boundary(s, 1), 1);
        assert_eq!(char_boundary(s, 2), 1);
        assert_eq!(char_boundary(s, 3), 3);
        assert_eq!(char_boundary(s, 4), 3);
        assert_eq!(char_boundary(s, 5), 3);
        assert_eq!(char_boundary(s, 6), 6);
        assert_eq!(char_boundary(s, 9), 6);
        assert_eq!(char_boundary(s, 10), 10);
        assert_eq!(char_boundary(s, 100), 10);
        assert_eq!(char_boundary(&[0xff, 0x80, 0x80, 0x80], 4), 4);
    }

    #[test]
    fn pending_partial_character_waits_for_the_rest() {
        let mut c = Chunker {
            stdout: "x€".as_bytes()[..2].to_vec(),
            stderr: Vec::new(),
            order: 0,
            any_stdout: false,
            any_stderr: false,
        };
        assert_eq!(
            c.take(Stream::Stdout, usize::MAX, false).as_deref(),
            Some("x")
        );
        c.stdout.extend_from_slice(&"€".as_bytes()[1..]);
        assert_eq!(
            c.take(Stream::Stdout, usize::MAX, false).as_deref(),
            Some("€")
        );
    }
}
