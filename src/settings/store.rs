//! JSON files of the persistence directory: owner-only directories, atomic 0600 writes.
//! Blocking: call from `spawn_blocking`.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use serde_json::Value;

pub use crate::persist::{ensure_dir, write_pretty_json as write_json};

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

/// Names of the `<name>.json` files in `dir` whose name is a valid profile name, sorted (none
/// when `dir` does not exist).
pub fn json_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".json")?;
            super::profiles::valid_name(stem).then(|| stem.to_string())
        })
        .collect();
    names.sort();
    Ok(names)
}

/// Deletes `path`; a missing file is no error.
pub fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
