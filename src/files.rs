//! File service behind `/api/file/*`: streamed uploads written atomically, streamed downloads,
//! directory creation and listing, workspace archives (see [`archive`]).
//!
//! Paths are not sandboxed (like the reference's global routes); they must be absolute.

pub mod archive;
pub mod trajectory;

use std::fmt::Display;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

/// Errors of the file service; messages are the reference's `detail` strings.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("Path must be absolute")]
    NotAbsolute,
    #[error("Path is a directory")]
    IsDirectory,
    #[error("A parent of the path is not a directory")]
    ParentNotDirectory,
    #[error("File not found")]
    FileNotFound,
    #[error("Path is not a file")]
    NotAFile,
    #[error("Directory not found")]
    DirectoryNotFound,
    #[error("Path is not a directory")]
    NotADirectory,
    #[error("Path exists and is not a directory")]
    ExistsNotDirectory,
    /// 403 `Permission denied: ...`.
    #[error("Permission denied: {0}")]
    PermissionDenied(String),
    /// Another 400 with its own message.
    #[error("{0}")]
    Invalid(String),
    /// A 500; the message is the whole `exception` text after the status.
    #[error("{0}")]
    Failed(String),
}

/// `{"success": true, "file_size": N}` of an upload.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileUploadResult {
    pub success: bool,
    /// Number of bytes written to the destination.
    pub file_size: u64,
}

/// `{"success": true}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Success {
    pub success: bool,
}

impl Default for Success {
    fn default() -> Self {
        Success { success: true }
    }
}

/// One labelled location of the file browser.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FileBrowserEntry {
    pub label: String,
    pub path: String,
}

/// The server user's home, its top-level directories and the filesystem roots.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HomeResponse {
    pub home: String,
    pub favorites: Vec<FileBrowserEntry>,
    pub locations: Vec<FileBrowserEntry>,
}

/// One sub-directory.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubdirectoryEntry {
    pub name: String,
    pub path: String,
}

/// A page of sub-directories; `next_page_id` is the name of the next page's first item.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SubdirectoryPage {
    pub items: Vec<SubdirectoryEntry>,
    pub next_page_id: Option<String>,
}

/// Formats an OS error like Python's `str(OSError)`: `[Errno 13] Permission denied: '/x'`.
pub fn os_error_text(e: &std::io::Error, path: &Path) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = nix::errno::Errno::from_raw(code).desc();
            format!("[Errno {code}] {text}: '{}'", path.display())
        }
        None => e.to_string(),
    }
}

fn is_errno(e: &std::io::Error, errno: nix::errno::Errno) -> bool {
    e.raw_os_error() == Some(errno as i32)
}

/// Longest path the kernel accepts (`PATH_MAX`, terminating NUL included).
const PATH_MAX: usize = 4096;
/// Longest name of one path component (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// Requires an absolute path the kernel can take: no NUL byte, at most `PATH_MAX - 1` bytes,
/// no component over `NAME_MAX` bytes (each a 400 saying which rule it breaks).
pub fn require_absolute(path: &str) -> Result<PathBuf, FileError> {
    if path.contains('\0') {
        return Err(FileError::Invalid("Path contains a NUL byte".into()));
    }
    if path.len() >= PATH_MAX {
        return Err(FileError::Invalid(format!(
            "Path is too long: {} bytes (the limit is {})",
            path.len(),
            PATH_MAX - 1
        )));
    }
    if let Some(long) = path.split('/').find(|c| c.len() > NAME_MAX) {
        let start: String = long.chars().take(32).collect();
        return Err(FileError::Invalid(format!(
            "Path component is too long: '{start}…' has {} bytes (the limit is {NAME_MAX})",
            long.len()
        )));
    }
    let p = PathBuf::from(path);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(FileError::NotAbsolute)
    }
}

/// An OS error on `path` as the client should see it: permission problems are a 403, a name
/// the file system refuses is a 400, anything else goes through `failed` (a 500).
fn io_failure(e: &std::io::Error, path: &Path, failed: impl Fn(String) -> FileError) -> FileError {
    use nix::errno::Errno;
    let text = os_error_text(e, path);
    if e.kind() == std::io::ErrorKind::PermissionDenied
        || is_errno(e, Errno::EPERM)
        || is_errno(e, Errno::EROFS)
    {
        FileError::PermissionDenied(text)
    } else if is_errno(e, Errno::ENAMETOOLONG) || is_errno(e, Errno::EILSEQ) {
        FileError::Invalid(text)
    } else {
        failed(text)
    }
}

/// Removes a temporary file unless disarmed (also when the upload future is dropped).
struct TempGuard(Option<PathBuf>);

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn_blocking(move || {
                        let _ = std::fs::remove_file(&path);
                    });
                }
                Err(_) => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
}

/// Buffer between the request body and the temporary file.
const WRITE_BUFFER: usize = 256 * 1024;

/// Streams `body` to `path` (absolute): parents are created, the bytes go to a temporary file
/// in the target directory which is fsynced and renamed over the target. A failed or aborted
/// upload leaves the old file intact and no temporary file behind.
pub async fn upload<S, E>(path: &str, body: S) -> Result<FileUploadResult, FileError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Display,
{
    let target = require_absolute(path)?;
    let failed = |e: String| FileError::Failed(format!("Failed to upload file: {e}"));
    let Some(parent) = target.parent().map(Path::to_path_buf) else {
        return Err(FileError::IsDirectory);
    };
    if let Err(e) = tokio::fs::create_dir_all(&parent).await {
        if is_errno(&e, nix::errno::Errno::EEXIST) || is_errno(&e, nix::errno::Errno::ENOTDIR) {
            return Err(FileError::ParentNotDirectory);
        }
        return Err(io_failure(&e, &parent, failed));
    }
    // Writing through a symlink replaces the file it points to, as `open(path, "wb")` would.
    let mut target = target;
    if let Ok(meta) = tokio::fs::symlink_metadata(&target).await {
        if meta.file_type().is_symlink() {
            if let Ok(real) = tokio::fs::canonicalize(&target).await {
                target = real;
            }
        }
    }
    let existing = tokio::fs::metadata(&target).await.ok();
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(FileError::IsDirectory);
    }
    let dir = target.parent().unwrap_or(&parent).to_path_buf();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Keep the temporary name within NAME_MAX whatever the target's name.
    let short: String = name.chars().take(64).collect();
    let tmp = dir.join(format!(".{short}.{}.upload.tmp", crate::util::hex_id()));
    let mode = existing
        .as_ref()
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o666);
    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .await
        .map_err(|e| {
            if is_errno(&e, nix::errno::Errno::ENOTDIR) {
                FileError::ParentNotDirectory
            } else {
                io_failure(&e, &target, failed)
            }
        })?;
    let mut guard = TempGuard(Some(tmp.clone()));
    let mut writer = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut size: u64 = 0;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| failed(e.to_string()))?;
        writer
            .write_all(&chunk)
            .await
            .map_err(|e| failed(os_error_text(&e, &target)))?;
        size += chunk.len() as u64;
    }
    writer
        .flush()
        .await
        .map_err(|e| failed(os_error_text(&e, &target)))?;
    let file = writer.into_inner();
    file.sync_all()
        .await
        .map_err(|e| failed(os_error_text(&e, &target)))?;
    drop(file);
    tokio::fs::rename(&tmp, &target).await.map_err(|e| {
        if is_errno(&e, nix::errno::Errno::EISDIR) {
            FileError::IsDirectory
        } else {
            io_failure(&e, &target, failed)
        }
    })?;
    guard.0 = None;
    // Make the rename itself durable; failure here does not undo the upload.
    if let Ok(d) = tokio::fs::File::open(&dir).await {
        let _ = d.sync_all().await;
    }
    tracing::info!(path = %target.display(), size, "uploaded file");
    Ok(FileUploadResult {
        success: true,
        file_size: size,
    })
}

/// An open regular file ready to be streamed.
#[derive(Debug)]
pub struct OpenFile {
    pub file: tokio::fs::File,
    pub metadata: std::fs::Metadata,
    /// File name for `content-disposition`.
    pub name: String,
}

/// Opens `path` (absolute, a regular file) for download.
pub async fn open_for_download(path: &str) -> Result<OpenFile, FileError> {
    let target = require_absolute(path)?;
    let failed = |e: String| FileError::Failed(format!("Failed to download file: {e}"));
    let meta = match tokio::fs::metadata(&target).await {
        Ok(m) => m,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || is_errno(&e, nix::errno::Errno::ENOTDIR)
                || is_errno(&e, nix::errno::Errno::ELOOP) =>
        {
            return Err(FileError::FileNotFound)
        }
        Err(e) => return Err(io_failure(&e, &target, failed)),
    };
    if !meta.is_file() {
        return Err(FileError::NotAFile);
    }
    let file = tokio::fs::File::open(&target)
        .await
        .map_err(|e| io_failure(&e, &target, failed))?;
    let metadata = file
        .metadata()
        .await
        .map_err(|e| failed(os_error_text(&e, &target)))?;
    if !metadata.is_file() {
        return Err(FileError::NotAFile);
    }
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(OpenFile {
        file,
        metadata,
        name,
    })
}

/// `mkdir -p path`; an existing directory is fine.
pub async fn create_directory(path: &str) -> Result<Success, FileError> {
    let target = require_absolute(path)?;
    match tokio::fs::create_dir_all(&target).await {
        Ok(()) => Ok(Success::default()),
        Err(e)
            if is_errno(&e, nix::errno::Errno::EEXIST)
                || is_errno(&e, nix::errno::Errno::ENOTDIR) =>
        {
            Err(FileError::ExistsNotDirectory)
        }
        Err(e) => Err(io_failure(&e, &target, |text| {
            FileError::Failed(format!("Failed to create directory: {text}"))
        })),
    }
}

/// Immediate sub-directories of `dir` (no symlinks; hidden ones only when asked).
async fn list_subdirs(dir: &Path, include_hidden: bool) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !include_hidden && name.starts_with('.') {
            continue;
        }
        if entry.file_type().await.is_ok_and(|t| t.is_dir()) {
            names.push(name);
        }
    }
    Ok(names)
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.dir)
        })
        .unwrap_or_else(|| PathBuf::from("/"))
}

/// The home directory, up to 50 of its top-level directories, and `/`.
pub async fn home(include_hidden: bool) -> HomeResponse {
    let home = home_dir();
    let mut names = list_subdirs(&home, include_hidden)
        .await
        .unwrap_or_default();
    names.sort_by_key(|n| n.to_lowercase());
    names.truncate(50);
    HomeResponse {
        home: home.display().to_string(),
        favorites: names
            .into_iter()
            .map(|n| FileBrowserEntry {
                path: home.join(&n).display().to_string(),
                label: n,
            })
            .collect(),
        locations: vec![FileBrowserEntry {
            label: "/".into(),
            path: "/".into(),
        }],
    }
}

/// One page of the sub-directories of `path`, sorted case-insensitively.
pub async fn search_subdirs(
    path: &str,
    page_id: Option<&str>,
    limit: usize,
    include_hidden: bool,
) -> Result<SubdirectoryPage, FileError> {
    let target = require_absolute(path)?;
    match tokio::fs::metadata(&target).await {
        Err(_) => return Err(FileError::DirectoryNotFound),
        Ok(m) if !m.is_dir() => return Err(FileError::NotADirectory),
        Ok(_) => {}
    }
    let mut names = list_subdirs(&target, include_hidden)
        .await
        .map_err(|e| io_failure(&e, &target, FileError::Failed))?;
    names.sort_by(|a, b| (a.to_lowercase(), a).cmp(&(b.to_lowercase(), b)));
    let start = page_id
        .filter(|p| !p.is_empty())
        .and_then(|p| {
            names
                .iter()
                .position(|n| n == p)
                .or_else(|| names.iter().position(|n| n.to_lowercase() == p))
        })
        .unwrap_or(0);
    let next_page_id = names.get(start + limit).cloned();
    let items = names
        .iter()
        .skip(start)
        .take(limit)
        .map(|n| SubdirectoryEntry {
            name: n.clone(),
            path: target.join(n).display().to_string(),
        })
        .collect();
    Ok(SubdirectoryPage {
        items,
        next_page_id,
    })
}
