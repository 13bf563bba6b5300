//! The reference's on-disk layout of one conversation, written crash-safely:
//! `<root>/<hex>/meta.json`, `base_state.json` and `events/event-NNNNN-<id>.json`.
//! Every write goes to a temp file that is fsynced, renamed into place, and the directory
//! fsynced. All functions here block: call them from `spawn_blocking`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::persist::run_token;
pub use crate::persist::{sync_dir, write_atomic};

/// Writes `value` as compact JSON atomically.
pub fn write_json(path: &Path, value: &Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    write_atomic(path, &bytes)
}

/// Writes a new, never-rewritten file (an event): created exclusively, data synced, then the
/// directory synced. A failed write removes the file; a crash mid-write can only leave a torn
/// last file, which the loader sets aside, so no temp file and rename are needed.
pub fn write_new_json(path: &Path, value: &Value) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    if let Err(e) = f.write_all(&bytes).and_then(|()| f.sync_data()) {
        // A full disk or an I/O error: no torn file is left under an event's name.
        drop(f);
        let _ = fs::remove_file(path);
        return Err(e);
    }
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

/// Loads every event of `events_dir` in append order, repairing what a crash can leave behind
/// (each repair is logged once; the next load finds nothing to repair):
/// - an event file that is empty or not a JSON object (a write cut short; events are persisted
///   before anyone sees them, so no client was sent it) is renamed to `.<name>.torn`, out of the
///   event names, so its index is free again and it is not reported at every load;
/// - temp files of interrupted atomic writes (`.<name>.<id>.tmp`) in the conversation directory
///   and in `events_dir` are removed.
pub fn load_events(events_dir: &Path) -> std::io::Result<Vec<Value>> {
    if let Some(conv_dir) = events_dir.parent() {
        remove_temp_files(conv_dir);
    }
    remove_temp_files(events_dir);
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
        let problem = match read_json(&path) {
            Ok(v) if v.is_object() => {
                events.push(v);
                continue;
            }
            Ok(_) => "not a JSON object".to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => e.to_string(),
            Err(e) => {
                // Unreadable for another reason (permissions, I/O): leave it, say why.
                tracing::warn!(path = %path.display(), error = %e, "skipping unreadable event file");
                continue;
            }
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let aside = path.with_file_name(format!(".{name}.torn"));
        match fs::rename(&path, &aside) {
            Ok(()) => tracing::warn!(
                path = %path.display(), moved_to = %aside.display(), problem,
                "set aside a torn event file (a write cut short by a crash)"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(), error = %e, problem,
                "skipping a torn event file that cannot be moved aside"
            ),
        }
    }
    Ok(events)
}

/// Removes `.<name>.<id>.tmp` files left by atomic writes of an earlier process that a crash
/// interrupted (this process's own writes in flight carry its [`run_token`]).
fn remove_temp_files(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let ours = format!(".{}-", run_token());
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            && name.ends_with(".tmp")
            && !name.contains(&ours)
            && entry.path().is_file()
        {
            match fs::remove_file(entry.path()) {
                Ok(()) => tracing::warn!(
                    path = %entry.path().display(),
                    "removed the temp file of a write a crash interrupted"
                ),
                Err(e) => {
                    tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove a leftover temp file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::util::test_log::logged;

    #[test]
    fn a_crash_s_leftovers_are_repaired_at_load() {
        let root = tempfile::tempdir().unwrap();
        let events = root.path().join("events");
        fs::create_dir_all(&events).unwrap();
        let id = |n: u8| format!("5b904947-441e-4dee-bfff-3cae7620fc{n:02x}");
        for i in 0..2u8 {
            write_new_json(
                &events.join(event_file_name(i.into(), &id(i))),
                &serde_json::json!({"id": id(i), "kind": "MessageEvent"}),
            )
            .unwrap();
        }
        let torn = events.join(event_file_name(2, &id(2)));
        fs::write(&torn, b"").unwrap();
        let half = events.join(event_file_name(3, &id(3)));
        fs::write(&half, b"{\"id\": \"5b9").unwrap();
        let tmp = root.path().join(".base_state.json.0123abcd.tmp");
        fs::write(&tmp, b"{}").unwrap();
        // A write of this process in flight is left alone.
        let ours = root
            .path()
            .join(format!(".meta.json.{}-0123abcd.tmp", run_token()));
        fs::write(&ours, b"{}").unwrap();

        let (loaded, log) = logged(|| load_events(&events).unwrap());
        assert_eq!(loaded.len(), 2);
        // Each repair is said once, naming the file.
        for (what, path) in [
            ("set aside a torn event file", &torn),
            ("set aside a torn event file", &half),
            ("removed the temp file", &tmp),
        ] {
            let lines = log
                .lines()
                .filter(|l| l.contains(what) && l.contains(&*path.to_string_lossy()))
                .count();
            assert_eq!(lines, 1, "{what} {}:\n{log}", path.display());
        }
        assert!(!torn.exists() && !half.exists() && !tmp.exists());
        assert!(ours.exists());
        let names: Vec<String> = fs::read_dir(&events)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        // The torn files are kept aside, out of the event names: index 2 is free again.
        assert_eq!(
            names
                .iter()
                .filter(|n| parse_event_file_name(n).is_some())
                .count(),
            2
        );
        assert_eq!(names.iter().filter(|n| n.ends_with(".torn")).count(), 2);
        // A second load finds the same events and nothing to repair: it says nothing.
        let (again, log) = logged(|| load_events(&events).unwrap());
        assert_eq!(again, loaded);
        assert_eq!(log, "", "a second load repairs nothing");
    }

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
