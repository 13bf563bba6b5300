//! Commit history: recent commits of HEAD, the files one commit changed, and one file as a
//! commit changed it.

use std::path::Path;

use super::changes::parse_name_status_z;
use super::diff::{relative_spec, too_large};
use super::refs::{resolve_commit, rev_parse};
use super::repo::{closest_repo, relative_to_repo, resolve_lenient, validate_repository};
use super::run::{git, git_raw};
use super::{
    GitChange, GitCommit, GitCommitsPage, GitDiff, GitError, EMPTY_TREE, MAX_DIFF_FILE_SIZE,
};

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
    if rel.as_os_str().is_empty() {
        // The repository's root is no file (`rev:` would name its tree).
        return Ok(String::new());
    }
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
    let rel = relative_to_repo(&repo, &path)?;
    let original = show_at(&repo, &parent, &rel).await?;
    let modified = show_at(&repo, &sha, &rel).await?;
    Ok(GitDiff {
        modified: Some(modified),
        original: Some(original),
    })
}
