//! The reference's on-disk layout of one conversation, written crash-safely:
//! `<root>/<hex>/meta.json`, `base_state.json` and `events/event-NNNNN-<id>.json`.
//! Every write goes to a temp file that is fsynced, renamed into place, and the directory
//! fsynced. All functions here block: call them from `spawn_blocking`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir);
    Ok(())
}

/// Fsyncs a directory so a rename or create in it survives a crash (best effort).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `value` as compact JSON atomically.
pub fn write_json(path: &Path, value: &Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    write_atomic(path, &bytes)
}

/// Writes a new, never-rewritten file (an event): created exclusively, data synced, then the
/// directory synced. A crash mid-write can only leave a torn last file, which the loader
/// skips, so no temp file and rename are needed.
pub fn write_new_json(path: &Path, value: &Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    f.write_all(&bytes)?;
    f.sync_data()?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> std::io::Result<Value> {
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The file name of event number `index` with id `id`.
pub fn event_file_name(index: usize, id: &str) -> String {
    format!("event-{index:05}-{id}.json")
}

/// Parses `event-<idx>-<id>.json` into `(idx, id)`.
pub fn parse_event_file_name(name: &str) -> Option<(usize, String)> {
    let rest = name.strip_prefix("event-")?.strip_suffix(".json")?;
    let (idx, id) = rest.split_once('-')?;
    if idx.len() < 5 || !idx.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if id.len() < 8 || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return None;
    }
    Some((idx.parse().ok()?, id.to_string()))
}

/// Loads every event of `events_dir` in append order. Unreadable files are skipped (logged).
pub fn load_events(events_dir: &Path) -> std::io::Result<Vec<Value>> {
    let mut found: Vec<(usize, PathBuf)> = Vec::new();
    let rd = match fs::read_dir(events_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((idx, _)) = parse_event_file_name(&name) {
            found.push((idx, entry.path()));
        }
    }
    found.sort_by_key(|(i, _)| *i);
    let mut events = Vec::with_capacity(found.len());
    for (_, path) in found {
        match read_json(&path) {
            Ok(v) if v.is_object() => events.push(v),
            Ok(_) => tracing::warn!(path = %path.display(), "skipping non-object event file"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping unreadable event file")
            }
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip() {
        let n = event_file_name(7, "5b904947-441e-4dee-bfff-3cae7620fc85");
        assert_eq!(n, "event-00007-5b904947-441e-4dee-bfff-3cae7620fc85.json");
        assert_eq!(
            parse_event_file_name(&n),
            Some((7, "5b904947-441e-4dee-bfff-3cae7620fc85".into()))
        );
        assert_eq!(parse_event_file_name("event-1-abcdefgh.json"), None);
        assert_eq!(parse_event_file_name(".eventlog-len-3.marker"), None);
        assert_eq!(
            parse_event_file_name("event-123456-abcdef12.json"),
            Some((123456, "abcdef12".into()))
        );
    }
}
