//! Git service behind `/api/git/*`: shells out to `git` with no pager and a timeout.
//!
//! Every command runs in its own process group with a bounded output and a deadline; on timeout
//! (or when the caller gives up) the whole group is killed. Errors carry the reference's messages
//! (`Git command failed: <argv>`), which the HTTP layer returns as 400s.
//!
//! This module holds the shared types; `run.rs` runs one git command, `repo.rs` locates the
//! repository, `refs.rs` picks the base to compare against, `changes.rs` lists changed paths,
//! `diff.rs` diffs one working-tree file, `history.rs` reads commits, `metadata.rs` describes a
//! repository for archive headers.

mod changes;
mod diff;
mod history;
mod metadata;
mod refs;
mod repo;
mod run;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use changes::{changes, changes_in_repo};
pub use diff::diff;
pub use history::{commit_changes, commit_file_diff, commits};
pub use metadata::{redact_url, repository_metadata, RepoMetadata};
pub use refs::{valid_ref, RefPurpose};
pub use repo::{resolve_lenient, validate_repository};
pub use run::{normalize_lines, run_git, shell_quote, GitOptions};

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
