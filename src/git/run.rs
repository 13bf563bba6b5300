//! Runs one git command: its own process group, no pager or prompt, bounded output, a deadline
//! that kills the group; stdout as text with Python's newline handling.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{GitError, GIT_TIMEOUT, MAX_STDERR, MAX_STDOUT};

/// Quotes one argument like Python's `shlex.quote`, for error messages.
pub fn shell_quote(arg: &str) -> String {
    if arg.is_empty() {
        return "''".into();
    }
    let safe = arg.chars().all(|c| {
        c.is_ascii_alphanumeric()
            || matches!(c, '_' | '@' | '%' | '+' | '=' | ':' | ',' | '.' | '/' | '-')
    });
    if safe {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', "'\"'\"'"))
    }
}

fn shell_join(args: &[&str]) -> String {
    args.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Options of one git invocation.
#[derive(Debug, Default, Clone)]
pub struct GitOptions {
    /// Keep leading/trailing whitespace (file contents).
    pub keep_whitespace: bool,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// Write stdout to this file instead of capturing it.
    pub stdout_file: Option<PathBuf>,
    /// Deadline; [`GIT_TIMEOUT`] when `None`.
    pub timeout: Option<Duration>,
}

/// Kills the process group of a git child unless disarmed (the child exited).
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn read_bounded<R: AsyncRead + Unpin>(reader: Option<R>, cap: usize) -> Vec<u8> {
    let Some(mut reader) = reader else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
                // Keep draining so the child never blocks on a full pipe.
            }
        }
    }
    out
}

/// Runs `git <args>` in `cwd` and returns its stdout as text (lossy UTF-8, `\r\n` → `\n`).
///
/// `args` are what error messages show (the reference's argv, starting with `"git"`); the
/// command really run also disables pagers and prompts.
pub async fn run_git(args: &[&str], cwd: &Path, opts: &GitOptions) -> Result<String, GitError> {
    let shown = shell_join(args);
    let mut cmd = tokio::process::Command::new("git");
    cmd.args(["-c", "core.pager=cat"])
        .args(args.iter().skip(1))
        .current_dir(cwd)
        .env("GIT_PAGER", "cat")
        .env("PAGER", "cat")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_OPTIONAL_LOCKS", "0")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in &opts.env {
        cmd.env(k, v);
    }
    if let Some(file) = &opts.stdout_file {
        let f = tokio::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(file)
            .await
            .map_err(|e| GitError::Command {
                message: format!("Git command failed: {shown}"),
                exit_code: -1,
                stderr: e.to_string(),
            })?;
        cmd.stdout(Stdio::from(f.into_std().await));
    } else {
        cmd.stdout(Stdio::piped());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Also the error for a missing `cwd`.
            if !cwd.exists() {
                return Err(GitError::Command {
                    message: format!("Git command failed: {shown}"),
                    exit_code: -1,
                    stderr: e.to_string(),
                });
            }
            return Err(GitError::Command {
                message: "Git command not found. Is git installed?".into(),
                exit_code: -1,
                stderr: "Git executable not found".into(),
            });
        }
        Err(e) => {
            return Err(GitError::Command {
                message: format!("Git command failed: {shown}"),
                exit_code: -1,
                stderr: e.to_string(),
            })
        }
    };
    let mut guard = GroupGuard(child.id().map(|p| p as i32));
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let work = async {
        let (out, err, status) = tokio::join!(
            read_bounded(stdout, MAX_STDOUT),
            read_bounded(stderr, MAX_STDERR),
            child.wait()
        );
        (out, err, status)
    };
    let timeout = opts.timeout.unwrap_or(GIT_TIMEOUT);
    let Ok((out, err, status)) = tokio::time::timeout(timeout, work).await else {
        // The guard kills the group.
        return Err(GitError::Command {
            message: format!("Git command timed out: {shown}"),
            exit_code: -1,
            stderr: "Command timed out".into(),
        });
    };
    guard.0 = None;
    let code = status.ok().and_then(|s| s.code()).unwrap_or(-1);
    if code != 0 {
        let stderr = String::from_utf8_lossy(&err).trim().to_owned();
        tracing::debug!(command = %shown, code, %stderr, "git command failed");
        return Err(GitError::Command {
            message: format!("Git command failed: {shown}"),
            exit_code: code,
            stderr,
        });
    }
    let text = translate_newlines(&String::from_utf8_lossy(&out));
    Ok(if opts.keep_whitespace {
        text
    } else {
        text.trim().to_owned()
    })
}

/// Runs git with default options and returns trimmed stdout.
pub(super) async fn git(args: &[&str], cwd: &Path) -> Result<String, GitError> {
    run_git(args, cwd, &GitOptions::default()).await
}

/// Runs git and returns raw stdout bytes (for `-z` output).
pub(super) async fn git_raw(args: &[&str], cwd: &Path) -> Result<String, GitError> {
    run_git(
        args,
        cwd,
        &GitOptions {
            keep_whitespace: true,
            ..Default::default()
        },
    )
    .await
}

/// Python's universal-newline translation: `\r\n` and `\r` become `\n`.
pub(super) fn translate_newlines(s: &str) -> String {
    if !s.contains('\r') {
        return s.to_owned();
    }
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// Python's `str.splitlines()` then `"\n".join(...)`: line breaks normalised, the final one dropped.
pub fn normalize_lines(s: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    let mut start = 0;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let is_break = matches!(
            c,
            '\n' | '\r'
                | '\u{0b}'
                | '\u{0c}'
                | '\u{1c}'
                | '\u{1d}'
                | '\u{1e}'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        );
        if is_break {
            lines.push(&s[start..i]);
            let mut end = i + c.len_utf8();
            if c == '\r' {
                if let Some((j, '\n')) = chars.peek().copied() {
                    chars.next();
                    end = j + 1;
                }
            }
            start = end;
        }
    }
    if start < s.len() {
        lines.push(&s[start..]);
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_like_shlex() {
        assert_eq!(shell_quote("HEAD"), "HEAD");
        assert_eq!(shell_quote("nope^{commit}"), "'nope^{commit}'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a'b"), "'a'\"'\"'b'");
    }

    #[test]
    fn lines_are_normalized_like_python() {
        assert_eq!(normalize_lines("a\nb\n"), "a\nb");
        assert_eq!(normalize_lines("a\r\nb\rc"), "a\nb\nc");
        assert_eq!(normalize_lines("a\n\n"), "a\n");
        assert_eq!(normalize_lines(""), "");
    }
}
