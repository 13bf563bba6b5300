//! The base a diff compares against: an explicit ref resolved to a commit, else auto-detected
//! (the reference's "display" and "export" policies from upstream, default and local branches).

use std::path::Path;

use super::run::git;
use super::{GitError, EMPTY_TREE};

pub(super) async fn rev_parse(repo: &Path, rev: &str) -> Option<String> {
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

pub(super) async fn resolve_commit(repo: &Path, commit: &str) -> Result<String, GitError> {
    let spec = format!("{commit}^{{commit}}");
    git(&["git", "--no-pager", "rev-parse", "--verify", &spec], repo).await
}
