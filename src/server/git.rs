//! `/api/git/*` routes, thin wrappers over [`crate::git`].
//!
//! A path that is not a repository answers `[]`, an empty page or nulls; other git failures
//! (an unknown ref or commit, a file too large) answer 400 with the git message.

use std::path::PathBuf;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::files::Params;
use super::AppState;
use crate::error::{ApiError, ValidationIssue};
use crate::git::{self, GitChange, GitCommitsPage, GitDiff, GitError};

type RawQuery = Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

const SHA_PATTERN: &str = "^[0-9a-fA-F]{4,64}$";

/// Routes of the git group.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(git_changes))
        .routes(routes!(git_diff))
        .routes(routes!(git_commits))
        .routes(routes!(git_commit_changes))
        .routes(routes!(repositories_search))
}

fn is_sha(s: &str) -> bool {
    (4..=64).contains(&s.len()) && s.chars().all(|c| c.is_ascii_hexdigit())
}

fn pattern_issue(loc: &str, key: &str, input: &str) -> ValidationIssue {
    ValidationIssue::new(
        "string_pattern_mismatch",
        &[loc, key],
        format!("String should match pattern '{SHA_PATTERN}'"),
    )
    .with_input(input)
}

/// Maps a git error to 400, or to `empty` when the path is not a repository.
fn answer<T: Serialize>(result: Result<T, GitError>, empty: impl FnOnce() -> T) -> Response {
    match result {
        Ok(v) => Json(v).into_response(),
        Err(GitError::NotARepository(msg)) => {
            tracing::debug!(%msg, "not a git repository");
            Json(empty()).into_response()
        }
        Err(e) => ApiError::BadRequest(e.to_string()).into_response(),
    }
}

/// Changed files under a directory against a ref (default: the upstream/default branch).
#[utoipa::path(
    get,
    path = "/api/git/changes",
    tag = "Git",
    params(
        ("path" = String, Query, description = "The git repository path"),
        ("ref" = Option<String>, Query, description = "Optional ref to compare against (e.g. HEAD)")
    ),
    responses((status = 200, body = Vec<GitChange>), (status = 422, description = "Validation Error"))
)]
async fn git_changes(State(state): State<AppState>, query: RawQuery) -> Response {
    state.activity.touch();
    let mut params = Params::new(query);
    let path = params.required("path");
    let ref_ = params.opt("ref");
    if let Err(e) = params.finish() {
        return e.into_response();
    }
    answer(
        git::changes(&PathBuf::from(path), ref_.as_deref()).await,
        Vec::new,
    )
}

/// Both sides of one file: at the base ref (or a commit's parent) and now (or at the commit).
#[utoipa::path(
    get,
    path = "/api/git/diff",
    tag = "Git",
    params(
        ("path" = String, Query, description = "The file path to get diff for"),
        ("ref" = Option<String>, Query, description = "Optional ref to compare against (e.g. HEAD)"),
        ("commit" = Option<String>, Query, description = "Optional commit SHA; exclusive with `ref`")
    ),
    responses((status = 200, body = GitDiff), (status = 422, description = "Validation Error"))
)]
async fn git_diff(State(state): State<AppState>, query: RawQuery) -> Response {
    state.activity.touch();
    let mut params = Params::new(query);
    let path = params.required("path");
    let ref_ = params.opt("ref");
    let commit = params.opt("commit");
    if let Some(c) = &commit {
        if !is_sha(c) {
            params.push(pattern_issue("query", "commit", c));
        }
    }
    if let Err(e) = params.finish() {
        return e.into_response();
    }
    if ref_.is_some() && commit.is_some() {
        return ApiError::BadRequest("'ref' and 'commit' are mutually exclusive".into())
            .into_response();
    }
    let empty = || GitDiff {
        modified: None,
        original: None,
    };
    let path = PathBuf::from(path);
    match commit {
        Some(c) => answer(git::commit_file_diff(&path, &c).await, empty),
        None => answer(git::diff(&path, ref_.as_deref()).await, empty),
    }
}

/// The repository's most recent commits, newest first.
#[utoipa::path(
    get,
    path = "/api/git/commits",
    tag = "Git",
    params(
        ("path" = String, Query, description = "The git repository path"),
        ("limit" = Option<i64>, Query, description = "Maximum commits to return (1..=200, default 50)")
    ),
    responses((status = 200, body = GitCommitsPage), (status = 422, description = "Validation Error"))
)]
async fn git_commits(State(state): State<AppState>, query: RawQuery) -> Response {
    state.activity.touch();
    let mut params = Params::new(query);
    let path = params.required("path");
    let limit = params.integer("limit", 50, 1, false, 200);
    if let Err(e) = params.finish() {
        return e.into_response();
    }
    answer(
        git::commits(&PathBuf::from(path), limit as usize).await,
        || GitCommitsPage {
            commits: Vec::new(),
            has_more: false,
        },
    )
}

/// The files one commit changed against its first parent.
#[utoipa::path(
    get,
    path = "/api/git/commits/{sha}/changes",
    tag = "Git",
    params(
        ("sha" = String, Path, description = "Commit SHA"),
        ("path" = String, Query, description = "The git repository path")
    ),
    responses((status = 200, body = Vec<GitChange>), (status = 422, description = "Validation Error"))
)]
async fn git_commit_changes(
    State(state): State<AppState>,
    Path(sha): Path<String>,
    query: RawQuery,
) -> Response {
    state.activity.touch();
    let mut params = Params::new(query);
    if !is_sha(&sha) {
        params.push(pattern_issue("path", "sha", &sha));
    }
    let path = params.required("path");
    if let Err(e) = params.finish() {
        return e.into_response();
    }
    answer(
        git::commit_changes(&PathBuf::from(path), &sha).await,
        Vec::new,
    )
}

/// One repository of a git provider.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GitProviderRepository {
    pub id: String,
    pub full_name: String,
    pub git_provider: String,
    pub is_public: bool,
    pub stargazers_count: Option<i64>,
    pub pushed_at: Option<String>,
    pub main_branch: Option<String>,
}

/// A page of provider repositories.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct GitProviderRepositoryPage {
    pub items: Vec<GitProviderRepository>,
    pub next_page_id: Option<String>,
    pub missing_token: bool,
}

const PROVIDERS: &[&str] = &["github", "gitlab", "bitbucket", "azure_devops"];

/// Repositories a configured provider token can access (only GitHub is supported).
#[utoipa::path(
    get,
    path = "/api/git/repositories/search",
    tag = "Git",
    params(
        ("provider" = String, Query, description = "Git provider to search"),
        ("query" = Option<String>, Query, description = "Optional repository name filter"),
        ("limit" = Option<i64>, Query, description = "Maximum repositories to return (1..=100)"),
        ("page_id" = Option<String>, Query, description = "Provider-specific page cursor")
    ),
    responses((status = 200, body = GitProviderRepositoryPage), (status = 422, description = "Validation Error"))
)]
async fn repositories_search(query: RawQuery) -> Response {
    let mut params = Params::new(query);
    let provider = params.opt("provider");
    match &provider {
        None => params.push(ValidationIssue::new(
            "missing",
            &["query", "provider"],
            "Field required",
        )),
        Some(p) if !PROVIDERS.contains(&p.as_str()) => params.push(
            ValidationIssue::new(
                "enum",
                &["query", "provider"],
                "Input should be 'github', 'gitlab', 'bitbucket' or 'azure_devops'",
            )
            .with_input(p.clone()),
        ),
        Some(_) => {}
    }
    let _limit = params.integer("limit", 100, 1, false, 100);
    if let Err(e) = params.finish() {
        return e.into_response();
    }
    let provider = provider.unwrap_or_default();
    if provider != "github" {
        return ApiError::BadRequest(format!(
            "Repository discovery is not supported for provider '{provider}'"
        ))
        .into_response();
    }
    // Provider tokens live in the secrets store, which this server does not read yet: answer
    // like the reference does when no token is configured.
    Json(GitProviderRepositoryPage {
        items: Vec::new(),
        next_page_id: None,
        missing_token: true,
    })
    .into_response()
}
