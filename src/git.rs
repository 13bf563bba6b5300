//! Git service behind `/api/git/*`: shells out to `git` with no pager and a timeout.
//!
//! Every command runs in its own process group with a bounded output and a deadline; on timeout
//! (or when the caller gives up) the whole group is killed. Errors carry the reference's messages
//! (`Git command failed: <argv>`), which the HTTP layer returns as 400s.

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The hash of git's empty tree, a valid base for repositories without commits.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// Files larger than this are not diffed (1 MiB, as the reference).
pub const MAX_DIFF_FILE_SIZE: u64 = 1024 * 1024;

/// Deadline of one git command.
const GIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Most stdout bytes kept from one git command.
const MAX_STDOUT: usize = 64 * 1024 * 1024;
/// Most stderr bytes kept from one git command.
const MAX_STDERR: usize = 64 * 1024;

/// Kind of one changed path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum GitChangeStatus {
    Moved,
    Added,
    Deleted,
    Updated,
}

/// One changed path, relative to the directory asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitChange {
    pub status: GitChangeStatus,
    pub path: String,
}

/// Both sides of one file; `null`s when the file is not in a repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitDiff {
    pub modified: Option<String>,
    pub original: Option<String>,
}

/// One commit of `git log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitCommit {
    pub sha: String,
    pub short_sha: String,
    pub subject: String,
    pub author: String,
    /// Author date, strict ISO 8601 with offset (`%aI`).
    pub timestamp: String,
}

/// A page of recent commits, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GitCommitsPage {
    pub commits: Vec<GitCommit>,
    pub has_more: bool,
}

/// Errors of the git service; the messages are the reference's.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GitError {
    /// The path is not (inside) a repository: the routes answer `[]` or nulls.
    #[error("{0}")]
    NotARepository(String),
    /// A git command failed or timed out (`Git command failed: ...`).
    #[error("{message}")]
    Command {
        message: String,
        exit_code: i32,
        stderr: String,
    },
    /// A file-level problem (missing, too large, outside the repository).
    #[error("{0}")]
    Path(String),
}

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
async fn git(args: &[&str], cwd: &Path) -> Result<String, GitError> {
    run_git(args, cwd, &GitOptions::default()).await
}

/// Runs git and returns raw stdout bytes (for `-z` output).
async fn git_raw(args: &[&str], cwd: &Path) -> Result<String, GitError> {
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
fn translate_newlines(s: &str) -> String {
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

/// Resolves `path` like Python's non-strict `Path.resolve()`: symlinks of the existing prefix
/// are followed, the missing rest is normalised lexically.
pub async fn resolve_lenient(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut existing = absolute.clone();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(real) = tokio::fs::canonicalize(&existing).await {
            let mut out = real;
            for part in rest.iter().rev() {
                match Path::new(part).components().next() {
                    Some(Component::ParentDir) => {
                        out.pop();
                    }
                    Some(Component::CurDir) | None => {}
                    _ => out.push(part),
                }
            }
            return out;
        }
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => {
                // `..` or root at the end: fall back to a lexical clean-up.
                return lexical_normalize(&absolute);
            }
        }
    }
}

fn lexical_normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Checks that `dir` is inside a work tree (or git dir) and returns it resolved.
pub async fn validate_repository(dir: &Path) -> Result<PathBuf, GitError> {
    let repo = resolve_lenient(dir).await;
    let meta = tokio::fs::metadata(&repo).await;
    match meta {
        Err(_) => {
            return Err(GitError::NotARepository(format!(
                "Directory does not exist: {}",
                repo.display()
            )))
        }
        Ok(m) if !m.is_dir() => {
            return Err(GitError::NotARepository(format!(
                "Path is not a directory: {}",
                repo.display()
            )))
        }
        Ok(_) => {}
    }
    if git(&["git", "rev-parse", "--git-dir"], &repo)
        .await
        .is_err()
    {
        return Err(GitError::NotARepository(format!(
            "Not a git repository: {}",
            repo.display()
        )));
    }
    Ok(repo)
}

async fn rev_parse(repo: &Path, rev: &str) -> Option<String> {
    git(&["git", "--no-pager", "rev-parse", "--verify", rev], repo)
        .await
        .ok()
        .filter(|s| !s.is_empty())
}

async fn merge_base(repo: &Path, a: &str, b: &str) -> Option<String> {
    git(&["git", "--no-pager", "merge-base", a, b], repo)
        .await
        .ok()
        .filter(|s| !s.is_empty())
}

async fn current_branch(repo: &Path) -> Option<String> {
    git(
        &["git", "--no-pager", "rev-parse", "--abbrev-ref", "HEAD"],
        repo,
    )
    .await
    .ok()
    .filter(|b| !b.is_empty() && b != "HEAD")
}

async fn repo_has_commits(repo: &Path) -> bool {
    match git(&["git", "--no-pager", "rev-list", "--count", "--all"], repo).await {
        Ok(count) => count.trim() != "0",
        Err(_) => false,
    }
}

/// `HEAD branch:` of `git remote show origin` (may contact the remote).
async fn remote_show_default_branch(repo: &Path) -> Result<Option<String>, GitError> {
    let info = git(&["git", "--no-pager", "remote", "show", "origin"], repo).await?;
    for line in info.lines() {
        if line.contains("HEAD branch:") {
            let branch = line.rsplit(':').next().unwrap_or_default().trim();
            return Ok(Some(branch.to_owned()).filter(|b| !b.is_empty()));
        }
    }
    Ok(None)
}

async fn remote_default_branch(repo: &Path) -> Option<String> {
    if let Ok(symref) = git(
        &[
            "git",
            "--no-pager",
            "rev-parse",
            "--abbrev-ref",
            "origin/HEAD",
        ],
        repo,
    )
    .await
    {
        if let Some(b) = symref.strip_prefix("origin/").filter(|b| !b.is_empty()) {
            return Some(b.to_owned());
        }
    }
    remote_show_default_branch(repo)
        .await
        .ok()
        .flatten()
        .filter(|b| b != "(unknown)")
}

async fn has_tracked_changes(repo: &Path) -> bool {
    match git(
        &[
            "git",
            "--no-pager",
            "status",
            "--porcelain",
            "--untracked-files=no",
        ],
        repo,
    )
    .await
    {
        Ok(s) => !s.trim().is_empty(),
        Err(_) => true,
    }
}

/// The base showing what was changed here (the reference's "display" policy).
async fn display_base_ref(repo: &Path) -> String {
    let head = rev_parse(repo, "HEAD").await;
    let branch = current_branch(repo).await;
    if let Some(branch) = &branch {
        if let Some(upstream) = rev_parse(repo, &format!("origin/{branch}")).await {
            let pushed_and_clean =
                Some(&upstream) == head.as_ref() && !has_tracked_changes(repo).await;
            if !pushed_and_clean {
                return upstream;
            }
        }
    }
    if let Some(default) = remote_default_branch(repo).await {
        let remote = format!("origin/{default}");
        if let Some(base) = merge_base(repo, "HEAD", &remote).await {
            return base;
        }
        if let Some(sha) = rev_parse(repo, &remote).await {
            return sha;
        }
    } else {
        for local in ["main", "master"] {
            if let Some(local_sha) = rev_parse(repo, local).await {
                if branch.as_deref() != Some(local) {
                    if let Some(base) = merge_base(repo, "HEAD", local).await {
                        if base == local_sha {
                            return base;
                        }
                    }
                }
                break;
            }
        }
    }
    head.unwrap_or_else(|| EMPTY_TREE.to_owned())
}

/// The base of an exported patch: only bases a fresh clone can rebuild (the "export" policy).
async fn export_base_ref(repo: &Path) -> String {
    let mut candidates = Vec::new();
    if let Some(branch) = current_branch(repo).await {
        candidates.push(format!("origin/{branch}"));
    }
    if let Ok(Some(default)) = remote_show_default_branch(repo).await {
        candidates.push(format!("origin/{default}"));
        if let Some(base) = merge_base(repo, "HEAD", &format!("origin/{default}")).await {
            candidates.push(base);
        }
    }
    for candidate in candidates {
        if let Some(sha) = rev_parse(repo, &candidate).await {
            return sha;
        }
    }
    EMPTY_TREE.to_owned()
}

/// Which auto-detection policy [`valid_ref`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefPurpose {
    Display,
    Export,
}

/// The ref to compare against: `override_ref` resolved to a commit (`HEAD` on an unborn branch is
/// the empty tree; other unknown refs are errors), else auto-detected.
pub async fn valid_ref(
    repo: &Path,
    override_ref: Option<&str>,
    purpose: RefPurpose,
) -> Result<String, GitError> {
    if let Some(r) = override_ref {
        let spec = format!("{r}^{{commit}}");
        return match git(&["git", "--no-pager", "rev-parse", "--verify", &spec], repo).await {
            Ok(sha) => Ok(sha),
            Err(_) if r == "HEAD" => Ok(EMPTY_TREE.to_owned()),
            Err(e) => Err(e),
        };
    }
    if !repo_has_commits(repo).await {
        return Ok(EMPTY_TREE.to_owned());
    }
    Ok(match purpose {
        RefPurpose::Display => display_base_ref(repo).await,
        RefPurpose::Export => export_base_ref(repo).await,
    })
}

fn map_status(code: &str) -> Option<GitChangeStatus> {
    match code {
        "M" | "U" | "T" => Some(GitChangeStatus::Updated),
        "A" => Some(GitChangeStatus::Added),
        "D" => Some(GitChangeStatus::Deleted),
        _ => None,
    }
}

/// Parses `git diff --name-status -z`: renames become DELETED(old) + ADDED(new), copies ADDED(new).
fn parse_name_status_z(output: &str) -> Result<Vec<GitChange>, GitError> {
    let mut fields = output.split('\0').filter(|f| !f.is_empty());
    let mut changes = Vec::new();
    let bad = |what: String| GitError::Command {
        message: what,
        exit_code: 0,
        stderr: "Invalid output format".into(),
    };
    while let Some(status) = fields.next() {
        let status = status.trim();
        if status.starts_with('R') || status.starts_with('C') {
            let (Some(old), Some(new)) = (fields.next(), fields.next()) else {
                return Err(bad(format!("Unexpected git diff output format: {status}")));
            };
            if status.starts_with('R') {
                changes.push(GitChange {
                    status: GitChangeStatus::Deleted,
                    path: old.to_owned(),
                });
            }
            changes.push(GitChange {
                status: GitChangeStatus::Added,
                path: new.to_owned(),
            });
            continue;
        }
        let Some(path) = fields.next() else {
            return Err(bad(format!("Unexpected git diff output format: {status}")));
        };
        let Some(kind) = map_status(status) else {
            return Err(GitError::Command {
                message: format!("Unexpected git status: {status}"),
                exit_code: 0,
                stderr: format!("Unexpected status code: {status}"),
            });
        };
        changes.push(GitChange {
            status: kind,
            path: path.to_owned(),
        });
    }
    Ok(changes)
}

/// Changes of one repository (or a directory inside one), paths relative to `dir`.
pub async fn changes_in_repo(dir: &Path, ref_: Option<&str>) -> Result<Vec<GitChange>, GitError> {
    let repo = validate_repository(dir).await?;
    let base = valid_ref(&repo, ref_, RefPurpose::Display).await?;
    let diff = git_raw(
        &[
            "git",
            "--no-pager",
            "diff",
            "--name-status",
            "--relative",
            "-z",
            &base,
        ],
        &repo,
    )
    .await?;
    let mut changes = parse_name_status_z(&diff)?;
    if let Ok(untracked) = git_raw(
        &[
            "git",
            "--no-pager",
            "ls-files",
            "--others",
            "--exclude-standard",
            "-z",
        ],
        &repo,
    )
    .await
    {
        changes.extend(
            untracked
                .split('\0')
                .filter(|p| !p.trim().is_empty())
                .map(|p| GitChange {
                    status: GitChangeStatus::Added,
                    // A nested repository is listed as `dir/`; the reference prints `dir`.
                    path: p.trim_end_matches('/').to_owned(),
                }),
        );
    }
    Ok(changes)
}

/// Non-hidden sub-directories of `dir` holding a `.git` entry (nested repositories).
async fn nested_repositories(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(dir).await else {
        return found;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        if tokio::fs::symlink_metadata(entry.path().join(".git"))
            .await
            .is_ok()
            && tokio::fs::metadata(entry.path())
                .await
                .is_ok_and(|m| m.is_dir())
        {
            found.push(name.to_owned());
        }
    }
    found
}

fn is_under(path: &str, dir: &str) -> bool {
    Path::new(path).starts_with(dir)
}

/// Changes under `dir` against `ref_` (or the auto-detected base), including repositories one
/// level down, sorted by path.
pub async fn changes(dir: &Path, ref_: Option<&str>) -> Result<Vec<GitChange>, GitError> {
    let nested = nested_repositories(dir).await;
    let (mut all, base_error) = match changes_in_repo(dir, ref_).await {
        Ok(c) => (c, None),
        Err(e @ GitError::NotARepository(_)) if !nested.is_empty() => (Vec::new(), Some(e)),
        Err(e) => return Err(e),
    };
    all.retain(|c| !nested.iter().any(|n| is_under(&c.path, n)));
    let mut found_nested = false;
    for name in &nested {
        let Ok(inner) = changes_in_repo(&dir.join(name), ref_).await else {
            tracing::warn!(dir = %name, "skipping nested git directory");
            continue;
        };
        found_nested = true;
        all.extend(inner.into_iter().map(|c| GitChange {
            status: c.status,
            path: format!("{name}/{}", c.path),
        }));
    }
    if let (Some(e), false) = (base_error, found_nested) {
        return Err(e);
    }
    all.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(all)
}

/// The closest directory at or above `path` holding a `.git` entry.
async fn closest_repo(path: &Path) -> Option<PathBuf> {
    let mut current = Some(path);
    while let Some(dir) = current {
        if tokio::fs::symlink_metadata(dir.join(".git")).await.is_ok() {
            return Some(dir.to_path_buf());
        }
        current = dir.parent();
    }
    None
}

fn too_large(size: u64) -> GitError {
    GitError::Path(format!(
        "File too large for git diff: {size} bytes (max: {MAX_DIFF_FILE_SIZE} bytes)"
    ))
}

fn relative_spec(rev: &str, rel: &Path) -> String {
    format!("{rev}:{}", rel.to_string_lossy())
}

/// Size of the blob at `rev:rel`, or `None` when there is no file there.
async fn blob_size(repo: &Path, rev: &str, rel: &Path) -> Option<u64> {
    let spec = relative_spec(rev, rel);
    let kind = git(&["git", "cat-file", "-t", &spec], repo).await.ok()?;
    if kind != "blob" {
        return None;
    }
    git(&["git", "cat-file", "-s", &spec], repo)
        .await
        .ok()?
        .parse()
        .ok()
}

/// The file at `path` (relative paths resolve against the server's cwd) against `ref_`.
pub async fn diff(path: &Path, ref_: Option<&str>) -> Result<GitDiff, GitError> {
    let path = resolve_lenient(path).await;
    let missing = || GitError::Path(format!("File does not exist: {}", path.display()));
    let meta = tokio::fs::metadata(&path).await;
    let deleted = meta.is_err();
    match &meta {
        Ok(m) if m.len() > MAX_DIFF_FILE_SIZE => return Err(too_large(m.len())),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound && path.exists() => {
            return Err(GitError::Path(format!(
                "Cannot access file: {}",
                path.display()
            )))
        }
        _ => {}
    }
    let Some(closest) = closest_repo(&path).await else {
        if deleted {
            return Err(missing());
        }
        return Err(GitError::NotARepository(format!(
            "File is not in a git repository: {}",
            path.display()
        )));
    };
    let repo = validate_repository(&closest).await?;
    let base = valid_ref(&repo, ref_, RefPurpose::Display).await?;
    let rel = path
        .strip_prefix(&repo)
        .map_err(|_| {
            GitError::Path(format!(
                "File is not within git repository: {}",
                path.display()
            ))
        })?
        .to_path_buf();
    if deleted {
        match blob_size(&repo, &base, &rel).await {
            None => return Err(missing()),
            Some(size) if size > MAX_DIFF_FILE_SIZE => return Err(too_large(size)),
            Some(_) => {}
        }
    }
    let original = match run_git(
        &["git", "show", &relative_spec(&base, &rel)],
        &repo,
        &GitOptions {
            keep_whitespace: true,
            ..Default::default()
        },
    )
    .await
    {
        Ok(text) => normalize_lines(&text),
        Err(_) => String::new(),
    };
    if deleted {
        return Ok(GitDiff {
            modified: Some(String::new()),
            original: Some(original),
        });
    }
    let modified = match tokio::fs::read(&path).await {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => normalize_lines(&translate_newlines(&text)),
            Err(_) => String::new(),
        },
        Err(_) => String::new(),
    };
    Ok(GitDiff {
        modified: Some(modified),
        original: Some(original),
    })
}

async fn resolve_commit(repo: &Path, commit: &str) -> Result<String, GitError> {
    let spec = format!("{commit}^{{commit}}");
    git(&["git", "--no-pager", "rev-parse", "--verify", &spec], repo).await
}

/// The most recent commits reachable from HEAD, newest first.
pub async fn commits(dir: &Path, limit: usize) -> Result<GitCommitsPage, GitError> {
    let repo = validate_repository(dir).await?;
    let Some(head) = rev_parse(&repo, "HEAD").await else {
        return Ok(GitCommitsPage {
            commits: Vec::new(),
            has_more: false,
        });
    };
    let n = (limit + 1).to_string();
    let out = git(
        &[
            "git",
            "--no-pager",
            "log",
            "--no-show-signature",
            "--format=%H%x1f%h%x1f%an%x1f%aI%x1f%s",
            "-n",
            &n,
            &head,
        ],
        &repo,
    )
    .await?;
    let mut commits: Vec<GitCommit> = out
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\u{1f}').collect();
            match f.as_slice() {
                [sha, short, author, ts, subject] => Some(GitCommit {
                    sha: (*sha).into(),
                    short_sha: (*short).into(),
                    subject: (*subject).into(),
                    author: (*author).into(),
                    timestamp: (*ts).into(),
                }),
                _ => None,
            }
        })
        .collect();
    let has_more = commits.len() > limit;
    commits.truncate(limit);
    Ok(GitCommitsPage { commits, has_more })
}

/// The files one commit changed against its first parent (the empty tree for a root commit).
pub async fn commit_changes(dir: &Path, commit: &str) -> Result<Vec<GitChange>, GitError> {
    let repo = validate_repository(dir).await?;
    let sha = resolve_commit(&repo, commit).await?;
    let parent = rev_parse(&repo, &format!("{sha}^"))
        .await
        .unwrap_or_else(|| EMPTY_TREE.to_owned());
    let out = git_raw(
        &[
            "git",
            "--no-pager",
            "diff",
            "--name-status",
            "-z",
            &parent,
            &sha,
        ],
        &repo,
    )
    .await?;
    parse_name_status_z(&out)
}

async fn show_at(repo: &Path, rev: &str, rel: &Path) -> Result<String, GitError> {
    let spec = relative_spec(rev, rel);
    let Ok(size) = git(&["git", "--no-pager", "cat-file", "-s", &spec], repo).await else {
        return Ok(String::new());
    };
    let size: u64 = size.parse().unwrap_or(0);
    if size > MAX_DIFF_FILE_SIZE {
        return Err(too_large(size));
    }
    Ok(git(&["git", "--no-pager", "show", &spec], repo)
        .await
        .unwrap_or_default())
}

/// One file as changed by `commit`, both sides read from git objects.
pub async fn commit_file_diff(path: &Path, commit: &str) -> Result<GitDiff, GitError> {
    let path = resolve_lenient(path).await;
    let Some(closest) = closest_repo(&path).await else {
        return Err(GitError::NotARepository(format!(
            "File is not in a git repository: {}",
            path.display()
        )));
    };
    let repo = validate_repository(&closest).await?;
    let sha = resolve_commit(&repo, commit).await?;
    let parent = rev_parse(&repo, &format!("{sha}^"))
        .await
        .unwrap_or_else(|| EMPTY_TREE.to_owned());
    let rel = path
        .strip_prefix(&repo)
        .map_err(|_| {
            GitError::Path(format!(
                "File is not within git repository: {}",
                path.display()
            ))
        })?
        .to_path_buf();
    let original = show_at(&repo, &parent, &rel).await?;
    let modified = show_at(&repo, &sha, &rel).await?;
    Ok(GitDiff {
        modified: Some(modified),
        original: Some(original),
    })
}

/// Repository identity for archive headers: origin URL (credentials removed), branch, HEAD.
#[derive(Debug, Default, Clone)]
pub struct RepoMetadata {
    pub remote: Option<String>,
    pub branch: Option<String>,
    pub head_commit: Option<String>,
}

/// Best-effort [`RepoMetadata`] of `repo`.
pub async fn repository_metadata(repo: &Path) -> RepoMetadata {
    let mut meta = RepoMetadata::default();
    if let Ok(remote) = git(&["git", "--no-pager", "remote", "get-url", "origin"], repo).await {
        if !remote.is_empty() {
            meta.remote = Some(redact_url(&remote));
        }
    }
    if let Ok(out) = git(
        &[
            "git",
            "--no-pager",
            "rev-parse",
            "HEAD",
            "--abbrev-ref",
            "HEAD",
        ],
        repo,
    )
    .await
    {
        let lines: Vec<&str> = out.lines().collect();
        if let [head, branch] = lines.as_slice() {
            meta.head_commit = Some((*head).to_owned());
            meta.branch = Some(if *branch == "HEAD" {
                "DETACHED".to_owned()
            } else {
                (*branch).to_owned()
            });
        }
    }
    meta
}

/// Masks credentials and drops query parameters of a URL (`https://user:tok@host/x?k=v`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let host = match authority.rsplit_once('@') {
        Some((_, h)) => format!("****@{h}"),
        None => authority.to_owned(),
    };
    let tail = tail.split(['?', '#']).next().unwrap_or_default();
    format!("{scheme}://{host}{tail}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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

    #[test]
    fn renames_split_in_two() {
        let c = parse_name_status_z("R100\0old.txt\0new.txt\0M\0b c.txt\0").unwrap();
        assert_eq!(
            c,
            vec![
                GitChange {
                    status: GitChangeStatus::Deleted,
                    path: "old.txt".into()
                },
                GitChange {
                    status: GitChangeStatus::Added,
                    path: "new.txt".into()
                },
                GitChange {
                    status: GitChangeStatus::Updated,
                    path: "b c.txt".into()
                },
            ]
        );
    }

    #[test]
    fn urls_lose_credentials() {
        assert_eq!(
            redact_url("https://x-access-token:abc@github.com/o/r.git?x=1"),
            "https://****@github.com/o/r.git"
        );
        assert_eq!(
            redact_url("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
    }
}
