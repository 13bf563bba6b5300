//! JSON files of the persistence directory: owner-only directories, atomic 0600 writes.
//! Blocking: call from `spawn_blocking`.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use serde_json::Value;

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

/// The outcome of reading a JSON file.
#[derive(Debug)]
pub enum Read {
    Missing,
    Json(Value),
    /// The file exists but is not JSON (kept as is: writes refuse to replace it).
    Corrupt,
}

/// Reads `path` as JSON.
pub fn read_json(path: &Path) -> std::io::Result<Read> {
    match fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).map_or(Read::Corrupt, Read::Json)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(Read::Missing),
        Err(e) => Err(e),
    }
}

/// Writes `value` (indented, like the reference) to `path` atomically, mode 0600.
pub fn write_json(path: &Path, value: &Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        ensure_dir(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    crate::conversation::store::write_atomic(path, &bytes)
}
