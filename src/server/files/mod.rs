//! `/api/file/*` routes, thin wrappers over [`crate::files`], plus the file responses they
//! share (streamed bodies with `etag`, `last-modified` and `Range` support, as Starlette's
//! `FileResponse`) and pydantic-style query parsing.

use std::collections::VecDeque;
use std::io::SeekFrom;
use std::time::UNIX_EPOCH;

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use md5::{Digest, Md5};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::error::{ApiError, ValidationIssue};
use crate::files::archive::{self, ArchiveFormat, ArchiveRequest};
use crate::files::{self, FileError, FileUploadResult, HomeResponse, SubdirectoryPage, Success};

mod params;
mod response;
#[cfg(test)]
mod tests;

pub(super) use params::Params;
pub(super) use response::file_response;
use response::TRIM_AFTER;

/// Routes of the file group.
pub(super) fn router() -> OpenApiRouter<AppState> {
    // Uploads have no size limit; every other route keeps the default.
    let upload = OpenApiRouter::new()
        .routes(routes!(upload_file))
        .layer(DefaultBodyLimit::disable());
    OpenApiRouter::new()
        .merge(upload)
        .routes(routes!(download_file))
        .routes(routes!(create_directory))
        .routes(routes!(archive_directory))
        .routes(routes!(download_trajectory))
        .routes(routes!(home_directory))
        .routes(routes!(search_subdirs))
}

// ---------------------------------------------------------------------------------------------
// Errors.

fn file_error(e: FileError) -> Response {
    match e {
        FileError::FileNotFound | FileError::DirectoryNotFound => {
            ApiError::NotFound(e.to_string()).into_response()
        }
        FileError::PermissionDenied(_) => (
            StatusCode::FORBIDDEN,
            Json(json!({"detail": e.to_string()})),
        )
            .into_response(),
        FileError::Failed(msg) => ApiError::Internal(msg).into_response(),
        other => ApiError::BadRequest(other.to_string()).into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers.

/// Upload a file (multipart field `file`) to an absolute path; parents are created.
#[utoipa::path(
    post,
    path = "/api/file/upload",
    tag = "Files",
    params(("path" = String, Query, description = "Absolute file path")),
    request_body(content_type = "multipart/form-data", description = "Multipart form with a `file` part"),
    responses((status = 200, body = FileUploadResult), (status = 422, description = "Validation Error"))
)]
async fn upload_file(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    state.activity.touch();
    let mut params = Params::new(query);
    let path = params.required("path");
    let missing_file = || ValidationIssue::new("missing", &["body", "file"], "Field required");
    let mut multipart = match multipart {
        Ok(m) => m,
        Err(_) => {
            params.push(missing_file());
            return params
                .finish()
                .err()
                .map(IntoResponse::into_response)
                .unwrap_or_else(|| {
                    ApiError::invalid("missing", &["body", "file"], "Field required")
                        .into_response()
                });
        }
    };
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some("file") => {
                if field.file_name().is_none() {
                    params.push(ValidationIssue::new(
                        "value_error",
                        &["body", "file"],
                        "Value error, Expected UploadFile, received: <class 'str'>",
                    ));
                }
                if let Err(e) = params.finish() {
                    return e.into_response();
                }
                return match files::upload(&path, field).await {
                    Ok(r) => {
                        if r.file_size >= TRIM_AFTER {
                            crate::util::trim_heap_soon();
                        }
                        Json(r).into_response()
                    }
                    Err(e) => file_error(e),
                };
            }
            Ok(Some(_)) => continue,
            Ok(None) => {
                params.push(missing_file());
                return params
                    .finish()
                    .err()
                    .map(IntoResponse::into_response)
                    .unwrap_or_default();
            }
            Err(e) => {
                // Like Starlette's lenient parser: a broken body has no `file` part.
                tracing::debug!(error = %e, "malformed multipart body");
                params.push(missing_file());
                return params
                    .finish()
                    .err()
                    .map(IntoResponse::into_response)
                    .unwrap_or_default();
            }
        }
    }
}

/// Download a file (streamed, `Range` supported).
#[utoipa::path(
    get,
    path = "/api/file/download",
    tag = "Files",
    params(("path" = String, Query, description = "Absolute file path")),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 422, description = "Validation Error")
    )
)]
async fn download_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    state.activity.touch();
    let mut params = Params::new(query);
    let path = params.required("path");
    if let Err(e) = params.finish() {
        return e.into_response();
    }
    match files::open_for_download(&path).await {
        Ok(f) => file_response(
            f.file,
            &f.metadata,
            Some(&f.name),
            "application/octet-stream",
            &[],
            &headers,
        ),
        Err(e) => file_error(e),
    }
}

/// Create a directory and its missing parents (an existing directory is fine).
#[utoipa::path(
    post,
    path = "/api/file/create_directory",
    tag = "Files",
    params(("path" = String, Query, description = "Absolute directory path to create")),
    responses((status = 200, body = Success), (status = 422, description = "Validation Error"))
)]
async fn create_directory(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    state.activity.touch();
    let mut params = Params::new(query);
    let path = params.required("path");
    if let Err(e) = params.finish() {
        return e.into_response();
    }
    match files::create_directory(&path).await {
        Ok(s) => Json(s).into_response(),
        Err(e) => file_error(e),
    }
}

/// Archive a directory as a git patch (`git-delta`) or a gzip tarball (`tar.gz`).
#[utoipa::path(
    get,
    path = "/api/file/archive",
    tag = "Files",
    params(
        ("path" = String, Query, description = "Absolute path of the directory to archive"),
        ("format" = Option<String>, Query, description = "`git-delta` (default) or `tar.gz`"),
        ("base_ref" = Option<String>, Query, description = "git-delta only: base ref to diff against"),
        ("use_default_excludes" = Option<bool>, Query, description = "Apply the built-in excludes (default true)"),
        ("exclude" = Option<Vec<String>>, Query, description = "Extra glob patterns to exclude (repeatable)")
    ),
    responses(
        (status = 200, description = "The archive", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 422, description = "Validation Error")
    )
)]
async fn archive_directory(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    state.activity.touch();
    let mut params = Params::new(query);
    let path = params.required("path");
    let format = match params.opt("format") {
        None => ArchiveFormat::GitDelta,
        Some(f) => ArchiveFormat::parse(&f).unwrap_or_else(|| {
            params.push(
                ValidationIssue::new(
                    "literal_error",
                    &["query", "format"],
                    "Input should be 'git-delta' or 'tar.gz'",
                )
                .with_input(f),
            );
            ArchiveFormat::GitDelta
        }),
    };
    let base_ref = params.opt("base_ref");
    let use_default_excludes = params.boolean("use_default_excludes", true);
    let exclude = params.all("exclude");
    if let Err(e) = params.finish() {
        return e.into_response();
    }
    let req = ArchiveRequest {
        path,
        format,
        base_ref,
        use_default_excludes,
        exclude,
    };
    match archive::create(req).await {
        Ok(a) => file_response(
            a.file,
            &a.metadata,
            Some(&a.filename),
            a.media_type,
            &a.headers,
            &headers,
        ),
        Err(e) => file_error(e),
    }
}

/// Download a zip of a conversation's directory, secrets redacted.
#[utoipa::path(
    get,
    path = "/api/file/download-trajectory/{conversation_id}",
    tag = "Files",
    params(("conversation_id" = String, Path, description = "Conversation id (uuid)")),
    responses(
        (status = 200, description = "A zip archive", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "Conversation not found"),
        (status = 422, description = "Validation Error")
    )
)]
async fn download_trajectory(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(conversation_id): axum::extract::Path<String>,
) -> Response {
    let id = match uuid::Uuid::parse_str(&conversation_id) {
        Ok(id) => id,
        Err(e) => {
            return ApiError::Validation(vec![ValidationIssue::new(
                "uuid_parsing",
                &["path", "conversation_id"],
                format!("Input should be a valid UUID, {e}"),
            )
            .with_input(conversation_id)])
            .into_response()
        }
    };
    let dir = state
        .config
        .conversations_path
        .join(id.simple().to_string());
    if !tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
        return ApiError::NotFound("Conversation not found".into()).into_response();
    }
    match files::trajectory::create(&dir).await {
        Ok((file, meta)) => file_response(
            file,
            &meta,
            Some(&format!("{}.zip", id.simple())),
            "application/octet-stream",
            &[],
            &headers,
        ),
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}

/// The server user's home directory, its top-level directories and the filesystem roots.
#[utoipa::path(
    get,
    path = "/api/file/home",
    tag = "Files",
    params(("include_hidden" = Option<bool>, Query, description = "Include hidden top-level directories in `favorites`")),
    responses((status = 200, body = HomeResponse), (status = 422, description = "Validation Error"))
)]
async fn home_directory(
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let mut params = Params::new(query);
    let include_hidden = params.boolean("include_hidden", false);
    if let Err(e) = params.finish() {
        return e.into_response();
    }
    Json(files::home(include_hidden).await).into_response()
}

/// A page of the immediate sub-directories of an absolute path.
#[utoipa::path(
    get,
    path = "/api/file/search_subdirs",
    tag = "Files",
    params(
        ("path" = String, Query, description = "Absolute directory path to list subdirectories of"),
        ("page_id" = Option<String>, Query, description = "next_page_id of the previous page"),
        ("limit" = Option<i64>, Query, description = "Page size (1..=100, default 100)"),
        ("include_hidden" = Option<bool>, Query, description = "Include hidden sub-directories")
    ),
    responses((status = 200, body = SubdirectoryPage), (status = 422, description = "Validation Error"))
)]
async fn search_subdirs(
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let mut params = Params::new(query);
    let path = params.required("path");
    let page_id = params.opt("page_id");
    let limit = params.integer("limit", 100, 0, true, 100);
    let include_hidden = params.boolean("include_hidden", false);
    if let Err(e) = params.finish() {
        return e.into_response();
    }
    match files::search_subdirs(&path, page_id.as_deref(), limit as usize, include_hidden).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => file_error(e),
    }
}
