//! One working-tree file against the base: both sides as text, size-limited, deleted files
//! read from git.

use std::path::Path;

use super::refs::{valid_ref, RefPurpose};
use super::repo::{closest_repo, relative_to_repo, resolve_lenient, validate_repository};
use super::run::{git, normalize_lines, run_git, translate_newlines, GitOptions};
use super::{GitDiff, GitError, MAX_DIFF_FILE_SIZE};

pub(super) fn too_large(size: u64) -> GitError {
    GitError::Path(format!(
        "File too large for git diff: {size} bytes (max: {MAX_DIFF_FILE_SIZE} bytes)"
    ))
}

pub(super) fn relative_spec(rev: &str, rel: &Path) -> String {
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
    let rel = relative_to_repo(&repo, &path)?;
    if deleted {
        match blob_size(&repo, &base, &rel).await {
            None => return Err(missing()),
            Some(size) if size > MAX_DIFF_FILE_SIZE => return Err(too_large(size)),
            Some(_) => {}
        }
    }
    let original = if rel.as_os_str().is_empty() {
        // The repository's root is no file (`rev:` would name its tree).
        String::new()
    } else {
        match run_git(
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
        }
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
