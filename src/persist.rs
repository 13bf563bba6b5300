//! Crash-safe files, shared by every store (conversations, settings, skills, plugins, canvas):
//! a write goes to a temp file created 0600 and fsynced, is renamed into place, and the
//! directory is fsynced; directories are created owner-only. Blocking: call from
//! `spawn_blocking`.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::Value;

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}-{}.tmp",
        run_token(),
        uuid::Uuid::new_v4().simple()
    ));
    let written = {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes).and_then(|()| f.sync_all())
    };
    // A full disk or an I/O error leaves no temp file behind.
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir);
    Ok(())
}

/// A random token of this process, part of every temp file name it writes: temp files without
/// it were left by an earlier process (a crash) and are safe to remove, while this process's
/// own writes in flight are left alone (a PID would not do: in a container it is the same after
/// every restart).
pub fn run_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| crate::util::hex_id()[..12].to_string())
}

/// Fsyncs a directory so a rename or create in it survives a crash (best effort).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Creates `dir` (and its parents) readable by the owner only.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if !dir.exists() {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    Ok(())
}

/// Writes `value` (indented, like the reference) to `path` atomically, mode 0600.
pub fn write_pretty_json(path: &Path, value: &Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(path, &bytes)
}

/// A scratch directory, removed with its contents when dropped (blocking: drop it off the
/// async runtime, or call [`ScratchDir::remove`] there first).
#[derive(Debug)]
pub struct ScratchDir(Option<std::path::PathBuf>);

impl ScratchDir {
    /// Takes charge of `path` (not created here).
    pub fn new(path: std::path::PathBuf) -> Self {
        Self(Some(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// Removes the directory now, from async code (on the blocking pool).
    pub async fn remove(mut self) {
        if let Some(path) = self.0.take() {
            let _ = tokio::fs::remove_dir_all(path).await;
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_dir_all(path);
        }
    }
}
