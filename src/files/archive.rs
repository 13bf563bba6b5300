//! Workspace archives for `GET /api/file/archive`: a git patch of the working tree against a
//! base (`git-delta`) or a gzip tarball of the files (`tar.gz`), built on disk next to the
//! workspace and handed back as an already-unlinked open file (nothing is left behind).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::FileError;
use crate::git::{self, GitError, GitOptions, RefPurpose, EMPTY_TREE};

/// Excluded unless `use_default_excludes=false`.
pub const DEFAULT_EXCLUDES: &[&str] = &[
    ".git/",
    "node_modules/",
    ".venv/",
    "venv/",
    "__pycache__/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    "dist/",
    "build/",
    ".next/",
    "target/",
    "*.pyc",
];

/// Name of the manifest member added to a tarball.
pub const MANIFEST_NAME: &str = "archive_manifest.json";

/// Never descended when looking for the repository under a workspace.
const DESCENT_SKIP: &[&str] = &["node_modules", "venv", "site-packages", "vendor"];

/// Credential-bearing files inside any `.git` directory, never archived.
const SENSITIVE_GIT_FILES: &[&str] = &[
    "config",
    "config.worktree",
    "credentials",
    ".git-credentials",
    "FETCH_HEAD",
];

/// Archive formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    GitDelta,
    TarGz,
}

impl ArchiveFormat {
    /// Parses the `format` query value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "git-delta" => Some(ArchiveFormat::GitDelta),
            "tar.gz" => Some(ArchiveFormat::TarGz),
            _ => None,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            ArchiveFormat::GitDelta => ".patch",
            ArchiveFormat::TarGz => ".tar.gz",
        }
    }

    /// Media type of the response.
    pub fn media_type(self) -> &'static str {
        match self {
            ArchiveFormat::GitDelta => "text/x-patch; charset=utf-8",
            ArchiveFormat::TarGz => "application/gzip",
        }
    }
}

/// What to archive.
#[derive(Debug, Clone)]
pub struct ArchiveRequest {
    pub path: String,
    pub format: ArchiveFormat,
    pub base_ref: Option<String>,
    pub use_default_excludes: bool,
    pub exclude: Vec<String>,
}

/// A finished archive: an open (already unlinked) file plus its response headers.
#[derive(Debug)]
pub struct Archive {
    pub file: tokio::fs::File,
    pub metadata: std::fs::Metadata,
    pub filename: String,
    pub media_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

/// Percent-encodes every byte except unreserved ones and `safe` (`quote(value, safe)`).
pub use crate::urlcode::quote as percent_encode;

/// Set when the request that asked for an archive is gone (the client left, the server stops):
/// the walk on the blocking pool then stops at its next file.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The error of a walk stopped by [`CancelOnDrop`].
fn cancelled() -> std::io::Error {
    std::io::Error::other("the archive request was cancelled")
}

/// Pseudo file systems whose "files" are kernel interfaces (sizes that lie, reads that never
/// end or have effects): never archived, even when the path asked for contains them.
fn is_pseudo_fs(dir: &Path) -> bool {
    use nix::sys::statfs::{
        statfs, BPF_FS_MAGIC, CGROUP_SUPER_MAGIC, DEBUGFS_MAGIC, PROC_SUPER_MAGIC,
        SECURITYFS_MAGIC, SYSFS_MAGIC, TRACEFS_MAGIC,
    };
    statfs(dir).is_ok_and(|fs| {
        [
            PROC_SUPER_MAGIC,
            SYSFS_MAGIC,
            DEBUGFS_MAGIC,
            TRACEFS_MAGIC,
            SECURITYFS_MAGIC,
            CGROUP_SUPER_MAGIC,
            BPF_FS_MAGIC,
        ]
        .contains(&fs.filesystem_type())
    })
}

/// Removes a scratch file when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.0);
        if path.as_os_str().is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn_blocking(move || {
                    let _ = std::fs::remove_file(path);
                });
            }
            Err(_) => {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Builds the archive described by `req`.
pub async fn create(req: ArchiveRequest) -> Result<Archive, FileError> {
    let target = super::require_absolute(&req.path)?;
    match tokio::fs::metadata(&target).await {
        Err(_) => return Err(FileError::DirectoryNotFound),
        Ok(m) if !m.is_dir() => return Err(FileError::NotADirectory),
        Ok(_) => {}
    }
    if req.base_ref.as_deref().is_some_and(|r| r.starts_with('-')) {
        return Err(FileError::Invalid(
            "base_ref must not start with '-'".into(),
        ));
    }
    let target = tokio::fs::canonicalize(&target)
        .await
        .map_err(|e| FileError::Failed(format!("Failed to archive directory: {e}")))?;
    let mut excludes: Vec<String> = if req.use_default_excludes {
        DEFAULT_EXCLUDES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        Vec::new()
    };
    excludes.extend(req.exclude.iter().cloned());

    // Scratch space on the workspace's volume (its parent), else the temp dir.
    let scratch_dir = match target.parent() {
        Some(p)
            if p != target
                && nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
                && !is_pseudo_fs(p) =>
        {
            p.to_path_buf()
        }
        _ => std::env::temp_dir(),
    };
    let output = scratch_dir.join(format!(
        "tmp{}{}",
        &crate::util::hex_id()[..8],
        req.format.suffix()
    ));
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&output)
        .await
        .map_err(|e| FileError::Failed(format!("Failed to archive directory: {e}")))?;
    let scratch = Scratch(output.clone());
    let cancel = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancel.clone());

    let root = {
        let t = target.clone();
        tokio::task::spawn_blocking(move || resolve_repo_root(&t, 3))
            .await
            .unwrap_or(target.clone())
    };
    let mut base_commit = String::new();
    match req.format {
        ArchiveFormat::GitDelta => {
            base_commit = git_delta(&root, req.base_ref.as_deref(), &output, &excludes).await?;
        }
        ArchiveFormat::TarGz => {
            let (r, o, ex) = (root.clone(), output.clone(), excludes.clone());
            tokio::task::spawn_blocking(move || write_tar_gz(&r, &o, &ex, &cancel))
                .await
                .map_err(|e| FileError::Failed(format!("Failed to archive directory: {e}")))?
                .map_err(|e| FileError::Failed(format!("Failed to archive directory: {e}")))?;
        }
    }

    let mut headers = Vec::new();
    if tokio::fs::symlink_metadata(root.join(".git")).await.is_ok() {
        let meta = git::repository_metadata(&root).await;
        if let Some(v) = meta.remote {
            headers.push(("x-archive-repo-remote", percent_encode(&v, "")));
        }
        if let Some(v) = meta.branch {
            headers.push(("x-archive-branch", percent_encode(&v, "")));
        }
        if let Some(v) = meta.head_commit {
            headers.push(("x-archive-head-commit", percent_encode(&v, "")));
        }
        headers.push((
            "x-archive-repo-root",
            percent_encode(&root.display().to_string(), ""),
        ));
    }
    if !base_commit.is_empty() {
        headers.push(("x-archive-base-commit", base_commit));
        headers.push((
            "x-archive-base-ref",
            req.base_ref.clone().unwrap_or_else(|| "auto".into()),
        ));
    }

    let file = tokio::fs::File::open(&output)
        .await
        .map_err(|e| FileError::Failed(format!("Failed to archive directory: {e}")))?;
    // The open file outlives its name: unlink now so nothing is left behind.
    drop(scratch);
    let metadata = file
        .metadata()
        .await
        .map_err(|e| FileError::Failed(format!("Failed to archive directory: {e}")))?;
    let name = archive_name(&root);
    Ok(Archive {
        file,
        metadata,
        filename: format!("{name}{}", req.format.suffix()),
        media_type: req.format.media_type(),
        headers,
    })
}

/// `target` itself when it is a work tree, else the single repository up to `max_depth` below
/// it (skipping hidden and vendored directories), else `target`.
fn resolve_repo_root(target: &Path, max_depth: usize) -> PathBuf {
    if target.join(".git").symlink_metadata().is_ok() {
        return target.to_path_buf();
    }
    let mut found: Vec<PathBuf> = Vec::new();
    let mut frontier = vec![(target.to_path_buf(), 0usize)];
    while let Some((current, depth)) = frontier.pop() {
        if depth >= max_depth {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        let mut children: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        children.sort();
        for child in children {
            let name = child
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') || DESCENT_SKIP.contains(&name.as_str()) {
                continue;
            }
            match child.symlink_metadata() {
                Ok(m) if m.is_dir() => {}
                _ => continue,
            }
            if child.join(".git").symlink_metadata().is_ok() {
                found.push(child);
                if found.len() > 1 {
                    return target.to_path_buf();
                }
            } else {
                frontier.push((child, depth + 1));
            }
        }
    }
    if found.len() == 1 {
        found.remove(0)
    } else {
        target.to_path_buf()
    }
}

/// The excludes as git `:(exclude)` pathspecs.
fn exclude_pathspecs(excludes: &[String]) -> Vec<String> {
    let mut specs = Vec::new();
    for raw in excludes {
        let dir_only = raw.ends_with('/');
        let pat = raw.trim_end_matches('/');
        if pat.is_empty() {
            continue;
        }
        if pat.contains('/') {
            if !dir_only {
                specs.push(format!(":(glob,exclude){pat}"));
            }
            specs.push(format!(":(glob,exclude){pat}/**"));
        } else {
            if !dir_only {
                specs.push(format!(":(glob,exclude)**/{pat}"));
            }
            specs.push(format!(":(glob,exclude)**/{pat}/**"));
        }
    }
    specs
}

/// The reference reports every failing step with one generic message.
fn delta_error(e: GitError) -> FileError {
    tracing::warn!(error = %e, "git delta failed");
    let what = match &e {
        GitError::Command { message, .. } if message.starts_with("Git command timed out") => {
            "Timed out generating git delta"
        }
        _ => "Failed to generate git delta",
    };
    FileError::Failed(format!("Failed to generate git delta: {what}"))
}

/// Writes `git diff --binary` of the working tree against the base into `output`, using a
/// throwaway index. Returns the base commit (empty for the empty tree).
async fn git_delta(
    root: &Path,
    base_ref: Option<&str>,
    output: &Path,
    excludes: &[String],
) -> Result<String, FileError> {
    if let Err(e) = git::validate_repository(root).await {
        return Err(FileError::Invalid(format!("Not a git repository: {e}")));
    }
    let mut effective = base_ref.map(str::to_owned);
    if effective.is_none() {
        let branch = git::run_git(
            &["git", "--no-pager", "rev-parse", "--abbrev-ref", "HEAD"],
            root,
            &GitOptions::default(),
        )
        .await;
        if branch.is_ok_and(|b| b == "HEAD") {
            effective = Some("HEAD".into());
        }
    }
    let base = match git::valid_ref(root, effective.as_deref(), RefPurpose::Export).await {
        Ok(r) => r,
        Err(_) => {
            return Err(FileError::Invalid(format!(
                "base_ref {} could not be resolved",
                py_repr(base_ref.unwrap_or("None"))
            )))
        }
    };
    let index = output.with_file_name(format!(
        "{}.index",
        output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let _index_guard = Scratch(index.clone());
    let env = vec![("GIT_INDEX_FILE".to_owned(), index.display().to_string())];
    let pathspecs = exclude_pathspecs(excludes);
    let opts = |secs: u64| GitOptions {
        env: env.clone(),
        timeout: Some(std::time::Duration::from_secs(secs)),
        ..Default::default()
    };
    git::run_git(&["git", "read-tree", &base], root, &opts(60))
        .await
        .map_err(delta_error)?;
    let mut add: Vec<&str> = vec!["git", "add", "-A", "--", "."];
    add.extend(pathspecs.iter().map(String::as_str));
    git::run_git(&add, root, &opts(300))
        .await
        .map_err(delta_error)?;
    let mut diff: Vec<&str> = vec!["git", "diff", "--binary", "--cached", &base, "--", "."];
    diff.extend(pathspecs.iter().map(String::as_str));
    let mut diff_opts = opts(300);
    diff_opts.stdout_file = Some(output.to_path_buf());
    git::run_git(&diff, root, &diff_opts)
        .await
        .map_err(delta_error)?;
    if base == EMPTY_TREE {
        return Ok(String::new());
    }
    let spec = format!("{base}^{{commit}}");
    Ok(git::run_git(
        &["git", "--no-pager", "rev-parse", "--verify", &spec],
        root,
        &GitOptions::default(),
    )
    .await
    .unwrap_or_default())
}

/// Python's `repr()` of a short string, for messages.
fn py_repr(s: &str) -> String {
    if s == "None" {
        return s.into();
    }
    if s.contains('\'') && !s.contains('"') {
        format!("\"{s}\"")
    } else {
        format!("'{}'", s.replace('\'', "\\'"))
    }
}

/// A shell-style glob match of one path component (`*`, `?`, `[...]`), like `fnmatch`.
fn fnmatch(name: &str, pattern: &str) -> bool {
    fn inner(n: &[char], p: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len()).any(|i| inner(&n[i..], &p[1..])),
            Some('?') => !n.is_empty() && inner(&n[1..], &p[1..]),
            Some('[') => {
                let Some(close) = p.iter().skip(1).position(|c| *c == ']').map(|i| i + 1) else {
                    return n.first() == Some(&'[') && inner(&n[1..], &p[1..]);
                };
                let Some(c) = n.first() else { return false };
                let mut set = &p[1..close];
                let negate = matches!(set.first(), Some('!'));
                if negate {
                    set = &set[1..];
                }
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= *c && *c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == *c;
                        i += 1;
                    }
                }
                hit != negate && inner(&n[1..], &p[close + 1..])
            }
            Some(ch) => n.first() == Some(ch) && inner(&n[1..], &p[1..]),
        }
    }
    let n: Vec<char> = name.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    inner(&n, &p)
}

/// Whether the relative path `parts` is excluded (gitignore-like semantics of the reference).
fn is_excluded(parts: &[&str], patterns: &[String], is_dir: bool) -> bool {
    for raw in patterns {
        let dir_only = raw.ends_with('/');
        let pattern = raw.trim_end_matches('/');
        if pattern.contains('/') {
            let pp: Vec<&str> = pattern.split('/').collect();
            if parts.len() >= pp.len() && parts.iter().zip(&pp).all(|(a, b)| fnmatch(a, b)) {
                if dir_only && !is_dir && parts.len() == pp.len() {
                    continue;
                }
                return true;
            }
        } else {
            let candidates = if is_dir || !dir_only {
                parts
            } else {
                &parts[..parts.len().saturating_sub(1)]
            };
            if candidates.iter().any(|p| fnmatch(p, pattern)) {
                return true;
            }
        }
    }
    false
}

/// Credential-bearing files inside any `.git` directory (config, credentials, reflogs).
fn is_sensitive_git_internal(parts: &[&str]) -> bool {
    if let Some(i) = parts.iter().position(|p| *p == ".git") {
        let internal = &parts[i + 1..];
        let Some(last) = internal.last() else {
            return false;
        };
        return internal.contains(&"logs") || SENSITIVE_GIT_FILES.contains(last);
    }
    false
}

/// Reads exactly `remaining` bytes: pads with NULs if the file shrank, stops if it grew; fails
/// once `cancel` is set.
struct ExactSize<'a, R> {
    inner: R,
    remaining: u64,
    cancel: &'a AtomicBool,
}

impl<R: Read> Read for ExactSize<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        if self.cancel.load(Ordering::Acquire) {
            return Err(cancelled());
        }
        let want = buf.len().min(self.remaining as usize);
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(0) | Err(_) => {
                buf[..want].fill(0);
                want
            }
            Ok(n) => n,
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Python's `json.dumps(..., indent=2, sort_keys=True)` escapes non-ASCII.
fn ascii_json(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// The top-level name of an archive of `root`: its directory name, `root` for `/` (archive
/// entry names must be relative).
fn archive_name(root: &Path) -> String {
    root.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into())
}

/// Streams a gzip tarball of `root` (no symlinks followed) into `output`, with a manifest.
fn write_tar_gz(
    root: &Path,
    output: &Path,
    excludes: &[String],
    cancel: &AtomicBool,
) -> std::io::Result<()> {
    let name = archive_name(root);
    let out = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(output)?;
    let gz =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(out), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let manifest_name = format!("{name}/{MANIFEST_NAME}");
    let mut collision = false;
    let mut file_count: u64 = 0;
    let mut total_bytes: u64 = 0;
    // Depth-first walk like `os.walk` (top-down, sorted for determinism).
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel_dir) = stack.pop() {
        if cancel.load(Ordering::Acquire) {
            return Err(cancelled());
        }
        let dir = root.join(&rel_dir);
        if is_pseudo_fs(&dir) {
            tracing::info!(dir = %dir.display(), "not archiving a kernel pseudo file system");
            continue;
        }
        let arc_dir = if rel_dir.as_os_str().is_empty() {
            name.clone()
        } else {
            format!("{name}/{}", rel_dir.display())
        };
        if dir.symlink_metadata().is_ok_and(|m| m.is_dir()) {
            if let Err(e) = tar.append_dir(&arc_dir, &dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "skipping unreadable directory");
            }
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for entry in entries {
            let entry_name = entry.file_name().to_string_lossy().into_owned();
            let rel = rel_dir.join(&entry_name);
            let rel_str = rel.to_string_lossy().into_owned();
            let parts: Vec<&str> = rel_str.split('/').collect();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                if !is_excluded(&parts, excludes, true) && !is_sensitive_git_internal(&parts) {
                    subdirs.push(rel);
                }
                continue;
            }
            if !ft.is_file()
                || is_excluded(&parts, excludes, false)
                || is_sensitive_git_internal(&parts)
            {
                continue;
            }
            let path = entry.path();
            let Ok(file) = std::fs::File::open(&path) else {
                tracing::warn!(file = %path.display(), "skipping unreadable file");
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let arcname = format!("{name}/{rel_str}");
            let mut header = tar::Header::new_gnu();
            header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
            header.set_size(meta.len());
            let reader = ExactSize {
                inner: file,
                remaining: meta.len(),
                cancel,
            };
            // A failure here may have written a partial member: give up on the archive.
            tar.append_data(&mut header, &arcname, reader)?;
            if arcname == manifest_name {
                collision = true;
            }
            file_count += 1;
            total_bytes += meta.len();
        }
        // Reverse so the sorted order is kept when popping.
        stack.extend(subdirs.into_iter().rev());
    }
    if !collision {
        let excludes_json: Vec<String> = excludes
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect();
        let excludes_text = if excludes_json.is_empty() {
            "[]".to_owned()
        } else {
            format!("[\n    {}\n  ]", excludes_json.join(",\n    "))
        };
        let manifest = format!(
            "{{\n  \"excludes\": {},\n  \"file_count\": {file_count},\n  \"format\": \"tar.gz\",\n  \"source\": {},\n  \"total_bytes\": {total_bytes}\n}}",
            ascii_json(&excludes_text),
            ascii_json(&serde_json::to_string(&name).unwrap_or_default()),
        );
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(manifest.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        tar.append_data(&mut header, &manifest_name, manifest.as_bytes())?;
    }
    let gz = tar.into_inner()?;
    let mut buf = gz.finish()?;
    std::io::Write::flush(&mut buf)?;
    let file = buf.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_root_directory_archives_under_a_relative_name() {
        // Entry names must be relative: `/` would make them absolute (a 500 found by fuzzing).
        assert_eq!(super::archive_name(std::path::Path::new("/")), "root");
        assert_eq!(super::archive_name(std::path::Path::new("/a/proj")), "proj");
    }

    use super::*;

    #[test]
    fn globs_match_like_fnmatch() {
        assert!(fnmatch("a.pyc", "*.pyc"));
        assert!(!fnmatch("a.py", "*.pyc"));
        assert!(fnmatch("node_modules", "node_modules"));
        assert!(fnmatch("b", "[abc]"));
        assert!(!fnmatch("d", "[!d]"));
    }

    #[test]
    fn excludes_follow_directory_rules() {
        let pats: Vec<String> = vec!["build/".into(), "*.pyc".into(), "secrets/prod".into()];
        assert!(is_excluded(&["build"], &pats, true));
        assert!(!is_excluded(&["build"], &pats, false));
        assert!(is_excluded(&["a", "x.pyc"], &pats, false));
        assert!(is_excluded(&["secrets", "prod", "key"], &pats, false));
        assert!(!is_excluded(&["src", "main.rs"], &pats, false));
    }

    #[test]
    fn git_credentials_are_sensitive() {
        assert!(is_sensitive_git_internal(&[".git", "config"]));
        assert!(is_sensitive_git_internal(&[".git", "logs", "HEAD"]));
        assert!(!is_sensitive_git_internal(&[".git", "HEAD"]));
        assert!(!is_sensitive_git_internal(&["config"]));
    }
}
