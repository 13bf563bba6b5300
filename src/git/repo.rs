//! Locating the repository: lenient path resolution like Python's `Path.resolve()`, the
//! work-tree check, and the closest directory holding `.git`.

use std::path::{Component, Path, PathBuf};

use super::run::git;
use super::GitError;

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
                return crate::util::lexical_normalize(&absolute);
            }
        }
    }
}

/// `path` relative to the repository `repo` it lies in (`Path` error when it is outside).
pub(super) fn relative_to_repo(repo: &Path, path: &Path) -> Result<PathBuf, GitError> {
    path.strip_prefix(repo).map(Path::to_path_buf).map_err(|_| {
        GitError::Path(format!(
            "File is not within git repository: {}",
            path.display()
        ))
    })
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

/// The closest directory at or above `path` holding a `.git` entry.
pub(super) async fn closest_repo(path: &Path) -> Option<PathBuf> {
    let mut current = Some(path);
    while let Some(dir) = current {
        if tokio::fs::symlink_metadata(dir.join(".git")).await.is_ok() {
            return Some(dir.to_path_buf());
        }
        current = dir.parent();
    }
    None
}
