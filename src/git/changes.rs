//! Changed paths of a directory against a base: `git diff --name-status -z` parsed, untracked
//! files added, repositories one level down included.

use std::path::Path;

use super::refs::{valid_ref, RefPurpose};
use super::repo::validate_repository;
use super::run::git_raw;
use super::{GitChange, GitChangeStatus, GitError};

fn map_status(code: &str) -> Option<GitChangeStatus> {
    match code {
        "M" | "U" | "T" => Some(GitChangeStatus::Updated),
        "A" => Some(GitChangeStatus::Added),
        "D" => Some(GitChangeStatus::Deleted),
        _ => None,
    }
}

/// Parses `git diff --name-status -z`: renames become DELETED(old) + ADDED(new), copies ADDED(new).
pub(super) fn parse_name_status_z(output: &str) -> Result<Vec<GitChange>, GitError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

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
}
