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
// Query parsing with pydantic-shaped 422s.

/// Raw query pairs with typed getters that collect pydantic-style issues.
pub(super) struct Params {
    pairs: Vec<(String, String)>,
    issues: Vec<ValidationIssue>,
}

impl Params {
    /// Parses the query string (never fails: bad encodings are decoded lossily).
    pub(super) fn new(
        pairs: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    ) -> Self {
        Params {
            pairs: pairs.map(|q| q.0).unwrap_or_default(),
            issues: Vec::new(),
        }
    }

    /// The last value of `key` (as Starlette's `QueryParams.get`).
    pub(super) fn opt(&self, key: &str) -> Option<String> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// Every value of `key`, in order.
    pub(super) fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A required string.
    pub(super) fn required(&mut self, key: &str) -> String {
        match self.opt(key) {
            Some(v) => v,
            None => {
                self.issues.push(ValidationIssue::new(
                    "missing",
                    &["query", key],
                    "Field required",
                ));
                String::new()
            }
        }
    }

    /// A boolean with pydantic's lenient spellings.
    pub(super) fn boolean(&mut self, key: &str, default: bool) -> bool {
        let Some(v) = self.opt(key) else {
            return default;
        };
        match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "t" | "yes" | "y" | "on" => true,
            "0" | "false" | "f" | "no" | "n" | "off" => false,
            _ => {
                self.issues.push(
                    ValidationIssue::new(
                        "bool_parsing",
                        &["query", key],
                        "Input should be a valid boolean, unable to interpret input",
                    )
                    .with_input(v),
                );
                default
            }
        }
    }

    /// An integer within `min..=max` (`min_exclusive` gives pydantic's `gt` wording).
    pub(super) fn integer(
        &mut self,
        key: &str,
        default: i64,
        min: i64,
        min_exclusive: bool,
        max: i64,
    ) -> i64 {
        let Some(v) = self.opt(key) else {
            return default;
        };
        let Ok(n) = v.trim().parse::<i64>() else {
            self.issues.push(
                ValidationIssue::new(
                    "int_parsing",
                    &["query", key],
                    "Input should be a valid integer, unable to parse string as an integer",
                )
                .with_input(v),
            );
            return default;
        };
        let low_ok = if min_exclusive { n > min } else { n >= min };
        if !low_ok {
            let (kind, msg) = if min_exclusive {
                (
                    "greater_than",
                    format!("Input should be greater than {min}"),
                )
            } else {
                (
                    "greater_than_equal",
                    format!("Input should be greater than or equal to {min}"),
                )
            };
            self.issues
                .push(ValidationIssue::new(kind, &["query", key], msg).with_input(v));
            return default;
        }
        if n > max {
            self.issues.push(
                ValidationIssue::new(
                    "less_than_equal",
                    &["query", key],
                    format!("Input should be less than or equal to {max}"),
                )
                .with_input(v),
            );
            return default;
        }
        n
    }

    /// Adds an issue found by the caller.
    pub(super) fn push(&mut self, issue: ValidationIssue) {
        self.issues.push(issue);
    }

    /// `Err(422)` when any value was invalid.
    pub(super) fn finish(self) -> Result<(), ApiError> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.issues))
        }
    }
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
// Streamed file responses.

/// Python's `str(float)` for an mtime: shortest round-trip digits, always with a fraction.
fn py_float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// `content-disposition` as Starlette writes it (RFC 5987 form for non-plain names).
fn content_disposition(filename: &str) -> String {
    let quoted = archive::percent_encode(filename, "/");
    if quoted != filename {
        format!("attachment; filename*=utf-8''{quoted}")
    } else {
        format!("attachment; filename=\"{filename}\"")
    }
}

enum RangeError {
    Malformed(&'static str),
    Unsatisfiable,
}

/// Starlette's `Range` parsing: `Ok(vec![])` means "send the whole file".
fn parse_range(value: &str, size: u64) -> Result<Vec<(u64, u64)>, RangeError> {
    let Some((units, spec)) = value.split_once('=') else {
        return Err(RangeError::Malformed("Malformed range header."));
    };
    if !units.trim().eq_ignore_ascii_case("bytes") {
        return Err(RangeError::Malformed("Only support bytes range"));
    }
    if spec.matches(',').count() + 1 > 100 {
        return Ok(Vec::new());
    }
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() || part == "-" {
            continue;
        }
        let Some((start, end)) = part.split_once('-') else {
            continue;
        };
        let (start, end) = (start.trim(), end.trim());
        let parsed = (|| -> Option<(u64, u64)> {
            if start.is_empty() {
                let n: u64 = end.parse().ok()?;
                return Some((size.saturating_sub(n), size));
            }
            let s: u64 = start.parse().ok()?;
            let e = if end.is_empty() {
                size
            } else {
                let e: u64 = end.parse().ok()?;
                if e < size {
                    e + 1
                } else {
                    size
                }
            };
            Some((s, e))
        })();
        if let Some(r) = parsed {
            ranges.push(r);
        }
    }
    if ranges.is_empty() {
        return Err(RangeError::Malformed(
            "Range header: range must be requested",
        ));
    }
    if ranges.iter().any(|(s, _)| *s >= size) {
        return Err(RangeError::Unsatisfiable);
    }
    if ranges.iter().any(|(s, e)| s >= e) {
        return Err(RangeError::Malformed(
            "Range header: start must be less than end",
        ));
    }
    if ranges.len() == 1 {
        return Ok(ranges);
    }
    ranges.sort();
    let mut merged: Vec<(u64, u64)> = vec![ranges[0]];
    for (s, e) in ranges.into_iter().skip(1) {
        if let Some(last) = merged.last_mut() {
            if s <= last.1 {
                last.1 = last.1.max(e);
                continue;
            }
        }
        merged.push((s, e));
    }
    Ok(merged)
}

/// One step of a file body: literal bytes, or a byte range of the file.
enum Piece {
    Bytes(Bytes),
    Copy { start: u64, end: u64, seek: bool },
}

const CHUNK: usize = 64 * 1024;
/// Transfers from this size on give their allocator pages back when they end.
const TRIM_AFTER: u64 = 1 << 20;

/// Streams `pieces` from `file` in 64 KiB chunks (memory stays bounded whatever the size).
fn body_from(file: tokio::fs::File, pieces: Vec<Piece>) -> Body {
    let total: u64 = pieces
        .iter()
        .map(|p| match p {
            Piece::Bytes(b) => b.len() as u64,
            Piece::Copy { start, end, .. } => end.saturating_sub(*start),
        })
        .sum();
    let stream = futures::stream::unfold(
        (file, VecDeque::from(pieces)),
        move |(mut file, mut pieces)| async move {
            let Some(piece) = pieces.pop_front() else {
                if total >= TRIM_AFTER {
                    crate::util::trim_heap_soon();
                }
                return None;
            };
            match piece {
                Piece::Bytes(b) => Some((Ok(b), (file, pieces))),
                Piece::Copy { start, end, seek } => {
                    if seek {
                        if let Err(e) = file.seek(SeekFrom::Start(start)).await {
                            return Some((Err(e), (file, VecDeque::new())));
                        }
                    }
                    let want = ((end - start) as usize).min(CHUNK);
                    let mut buf = vec![0u8; want];
                    match file.read(&mut buf).await {
                        Ok(0) => Some((
                            Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "file is shorter than expected",
                            )),
                            (file, VecDeque::new()),
                        )),
                        Ok(n) => {
                            buf.truncate(n);
                            let next = start + n as u64;
                            if next < end {
                                pieces.push_front(Piece::Copy {
                                    start: next,
                                    end,
                                    seek: false,
                                });
                            }
                            Some((Ok(Bytes::from(buf)), (file, pieces)))
                        }
                        Err(e) => Some((Err(e), (file, VecDeque::new()))),
                    }
                }
            }
        },
    );
    Body::from_stream(stream)
}

fn header_value(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A Starlette-like `FileResponse` for an open file (`filename`: sent as an attachment with
/// that name).
pub(super) fn file_response(
    file: tokio::fs::File,
    meta: &std::fs::Metadata,
    filename: Option<&str>,
    media_type: &str,
    extra: &[(&'static str, String)],
    request: &HeaderMap,
) -> Response {
    let size = meta.len();
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as f64 + d.subsec_nanos() as f64 * 1e-9)
        .unwrap_or(0.0);
    let last_modified =
        httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(mtime.floor() as u64));
    let etag = format!(
        "\"{:x}\"",
        Md5::digest(format!("{}-{size}", py_float(mtime)).as_bytes())
    );

    let mut headers = HeaderMap::new();
    for (k, v) in extra {
        headers.insert(*k, header_value(v));
    }
    headers.insert(header::CONTENT_TYPE, header_value(media_type));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(filename) = filename {
        headers.insert(
            header::CONTENT_DISPOSITION,
            header_value(&content_disposition(filename)),
        );
    }
    headers.insert(header::LAST_MODIFIED, header_value(&last_modified));
    headers.insert(header::ETAG, header_value(&etag));

    let range = request.get(header::RANGE).and_then(|v| v.to_str().ok());
    let if_range_ok = match request.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) if v.starts_with("W/") => false,
        Some(v) => v == last_modified || v == etag,
    };
    let ranges = match range {
        Some(r) if if_range_ok => match parse_range(r, size) {
            Ok(r) => r,
            Err(RangeError::Malformed(msg)) => {
                return (StatusCode::BAD_REQUEST, msg).into_response();
            }
            Err(RangeError::Unsatisfiable) => {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                    "",
                )
                    .into_response();
            }
        },
        _ => Vec::new(),
    };

    let (status, pieces, length) = match ranges.as_slice() {
        [] => (
            StatusCode::OK,
            vec![Piece::Copy {
                start: 0,
                end: size,
                seek: false,
            }],
            size,
        ),
        [(start, end)] => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {start}-{}/{size}", end - 1)),
            );
            (
                StatusCode::PARTIAL_CONTENT,
                vec![Piece::Copy {
                    start: *start,
                    end: *end,
                    seek: true,
                }],
                end - start,
            )
        }
        many => {
            let boundary = &crate::util::hex_id()[..26];
            let mut pieces = Vec::new();
            let mut length = 0u64;
            for (start, end) in many {
                let head = format!(
                    "--{boundary}\r\nContent-Type: {media_type}\r\nContent-Range: bytes {start}-{}/{size}\r\n\r\n",
                    end - 1
                );
                length += head.len() as u64 + (end - start) + 2;
                pieces.push(Piece::Bytes(Bytes::from(head)));
                pieces.push(Piece::Copy {
                    start: *start,
                    end: *end,
                    seek: true,
                });
                pieces.push(Piece::Bytes(Bytes::from_static(b"\r\n")));
            }
            let tail = format!("--{boundary}--");
            length += tail.len() as u64;
            pieces.push(Piece::Bytes(Bytes::from(tail)));
            headers.insert(
                header::CONTENT_TYPE,
                header_value(&format!("multipart/byteranges; boundary={boundary}")),
            );
            (StatusCode::PARTIAL_CONTENT, pieces, length)
        }
    };
    // Empty copies would read nothing: drop them.
    let pieces: Vec<Piece> = pieces
        .into_iter()
        .filter(|p| !matches!(p, Piece::Copy { start, end, .. } if start >= end))
        .collect();
    headers.insert(header::CONTENT_LENGTH, header_value(&length.to_string()));
    let mut response = Response::new(body_from(file, pieces));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
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
    state.activity.touch();
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
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    state.activity.touch();
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
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    state.activity.touch();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_starlette() {
        assert!(matches!(parse_range("bytes=0-9", 100), Ok(r) if r == vec![(0, 10)]));
        assert!(matches!(parse_range("bytes=-10", 100), Ok(r) if r == vec![(90, 100)]));
        assert!(matches!(parse_range("bytes=90-", 100), Ok(r) if r == vec![(90, 100)]));
        assert!(matches!(parse_range("bytes=0-999", 100), Ok(r) if r == vec![(0, 100)]));
        assert!(matches!(
            parse_range("bytes=200-300", 100),
            Err(RangeError::Unsatisfiable)
        ));
        assert!(matches!(
            parse_range("items=0-1", 100),
            Err(RangeError::Malformed(_))
        ));
        assert!(
            matches!(parse_range("bytes=0-1,1-5,10-20", 100), Ok(r) if r == vec![(0, 6), (10, 21)])
        );
    }

    #[test]
    fn floats_print_like_python() {
        assert_eq!(py_float(1700000000.0), "1700000000.0");
        assert_eq!(py_float(1795609409.1998625), "1795609409.1998625");
    }

    #[test]
    fn disposition_quotes_unusual_names() {
        assert_eq!(
            content_disposition("up.txt"),
            "attachment; filename=\"up.txt\""
        );
        assert_eq!(
            content_disposition("a b.txt"),
            "attachment; filename*=utf-8''a%20b.txt"
        );
    }
}
