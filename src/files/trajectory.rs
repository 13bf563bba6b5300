//! Zip of a conversation's directory for `download-trajectory`, with secrets redacted from
//! every JSON/JSONL file, files still being written (`*.tmp`) and the `acp/` directory left
//! out. Written to a scratch file with the `zip` crate (deflate; zip64 where sizes or the
//! entry count need it).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Field names whose string values are credentials.
const SECRET_FIELDS: &[&str] = &[
    "api_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "llm_api_key",
];
/// What secrets become.
const REDACTED: &str = "**********";
/// Prefix of Fernet ciphertext (recoverable secret material).
const FERNET_PREFIX: &str = "gAAAAA";
/// Top-level directories never exported (runtime credentials).
const EXCLUDED_TOP_DIRS: &[&str] = &["acp"];

fn is_secret(key: Option<&str>, value: &Value) -> bool {
    let Value::String(s) = value else {
        return false;
    };
    if s.is_empty() || s == REDACTED {
        return false;
    }
    s.starts_with(FERNET_PREFIX) || key.is_some_and(|k| SECRET_FIELDS.contains(&k))
}

/// Replaces secret values in place; true when anything changed.
pub fn redact(value: &mut Value) -> bool {
    let mut changed = false;
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret(Some(k), v) {
                    *v = Value::String(REDACTED.into());
                    changed = true;
                } else if redact(v) {
                    changed = true;
                }
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                if is_secret(None, v) {
                    *v = Value::String(REDACTED.into());
                    changed = true;
                } else if redact(v) {
                    changed = true;
                }
            }
        }
        _ => {}
    }
    changed
}

/// JSON as Python's `json.dumps` writes it: `", "` and `": "` separators, ASCII only.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        for c in fragment.chars() {
            if c.is_ascii() {
                w.write_all(&[c as u8])?;
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
            }
        }
        Ok(())
    }
}

fn python_dumps(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    if serde::Serialize::serialize(value, &mut ser).is_err() {
        return Vec::new();
    }
    out
}

/// The redacted content of a JSON (`jsonl`: one document per line) file, or `None` when
/// nothing needed redacting (the bytes are then archived unchanged).
pub fn redacted_json(data: &[u8], jsonl: bool) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(data).ok()?;
    if jsonl {
        let mut changed = false;
        let mut out = Vec::with_capacity(data.len());
        for line in text.split_inclusive('\n') {
            let trimmed = line.trim();
            let parsed = (!trimmed.is_empty())
                .then(|| serde_json::from_str::<Value>(trimmed).ok())
                .flatten();
            match parsed {
                Some(mut v) => {
                    changed |= redact(&mut v);
                    out.extend(python_dumps(&v));
                    if line.ends_with('\n') {
                        out.push(b'\n');
                    }
                }
                None => out.extend_from_slice(line.as_bytes()),
            }
        }
        return changed.then_some(out);
    }
    let mut v: Value = serde_json::from_str(text).ok()?;
    redact(&mut v).then(|| python_dumps(&v))
}

/// The entry time of `t`: local time, as Python's `zipfile` (clamped to what zip can hold).
fn zip_time(t: std::time::SystemTime) -> zip::DateTime {
    use chrono::{Datelike, Timelike};
    let dt: chrono::DateTime<chrono::Local> = t.into();
    zip::DateTime::from_date_and_time(
        dt.year().clamp(1980, 2107) as u16,
        dt.month() as u8,
        dt.day() as u8,
        dt.hour() as u8,
        dt.minute() as u8,
        dt.second() as u8,
    )
    .unwrap_or_default()
}

/// Entry options from a file's metadata: its modification time and permission bits;
/// zip64 sizes for files that are (or may grow while read to) 4 GiB.
fn options(meta: &std::fs::Metadata, size: u64) -> zip::write::SimpleFileOptions {
    use std::os::unix::fs::PermissionsExt;
    zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip_time(meta.modified().unwrap_or(std::time::UNIX_EPOCH)))
        .unix_permissions(meta.permissions().mode())
        .large_file(size >= LARGE_FILE)
}

/// Files from this size on get zip64 sizes (headroom for files still growing).
const LARGE_FILE: u64 = 1 << 31;

fn zip_error(e: zip::result::ZipError) -> std::io::Error {
    match e {
        zip::result::ZipError::Io(e) => e,
        other => std::io::Error::other(other),
    }
}

/// Every path under `dir`, sorted like Python's `sorted(dir.rglob("*"))`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Writes the zip of `source` (entries named `<source name>/...`) into `output` (blocking).
pub fn write_zip(source: &Path, output: &Path) -> std::io::Result<()> {
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(output)?;
    let mut zip = zip::ZipWriter::new(BufWriter::new(file));
    zip.add_directory(name.as_str(), options(&std::fs::metadata(source)?, 0))
        .map_err(zip_error)?;
    for path in walk(source) {
        let Ok(rel) = path.strip_prefix(source) else {
            continue;
        };
        let rel_str = rel.to_string_lossy().into_owned();
        let top = rel_str.split('/').next().unwrap_or_default();
        if EXCLUDED_TOP_DIRS.contains(&top) || rel_str.ends_with(".tmp") {
            continue;
        }
        let arcname = format!("{name}/{rel_str}");
        // Entries may vanish while a running conversation saves: skip them.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            zip.add_directory(arcname, options(&meta, 0))
                .map_err(zip_error)?;
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if ext == "json" || ext == "jsonl" {
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            let data = redacted_json(&data, ext == "jsonl").unwrap_or(data);
            zip.start_file(arcname, options(&meta, data.len() as u64))
                .map_err(zip_error)?;
            zip.write_all(&data)?;
        } else {
            let Ok(mut f) = std::fs::File::open(&path) else {
                continue;
            };
            zip.start_file(arcname, options(&meta, meta.len()))
                .map_err(zip_error)?;
            std::io::copy(&mut f, &mut zip)?;
        }
    }
    let out = zip.finish().map_err(zip_error)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// Builds the zip of `conversation_dir` next to it and returns it open and already unlinked.
pub async fn create(
    conversation_dir: &Path,
) -> std::io::Result<(tokio::fs::File, std::fs::Metadata)> {
    let parent = conversation_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let name = conversation_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let output = parent.join(format!(".{name}.{}.zip.tmp", crate::util::hex_id()));
    tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&output)
        .await?;
    let (src, out) = (conversation_dir.to_path_buf(), output.clone());
    let result = tokio::task::spawn_blocking(move || write_zip(&src, &out))
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
    let opened = match result {
        Ok(()) => tokio::fs::File::open(&output).await,
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_file(&output).await;
    let file = opened?;
    let meta = file.metadata().await?;
    Ok((file, meta))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn secrets_are_redacted_like_the_reference() {
        let data = br#"{"llm": {"api_key": "sk-123", "model": "m"}, "x": ["gAAAAAabc", "ok"]}"#;
        let out = redacted_json(data, false).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"llm": {"api_key": "**********", "model": "m"}, "x": ["**********", "ok"]}"#
        );
        assert!(redacted_json(br#"{"a": 1}"#, false).is_none());
        let lines = b"{\"api_key\": \"k\"}\n{\"b\": \"\xc3\xa9\"}\n";
        let out = redacted_json(lines, true).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"api_key\": \"**********\"}\n{\"b\": \"\\u00e9\"}\n"
        );
    }

    #[test]
    fn an_archive_of_more_than_65535_entries_is_readable() {
        // The classic zip end record counts entries in 16 bits: beyond that, zip64.
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("conv");
        std::fs::create_dir(&source).unwrap();
        let files = 70_000;
        for i in 0..files {
            std::fs::File::create(source.join(format!("f{i:05}"))).unwrap();
        }
        std::fs::write(source.join("base_state.json"), br#"{"api_key": "sk-1"}"#).unwrap();
        let output = tmp.path().join("out.zip");
        std::fs::File::create(&output).unwrap();
        write_zip(&source, &output).unwrap();

        let mut archive = zip::ZipArchive::new(std::fs::File::open(&output).unwrap()).unwrap();
        assert_eq!(archive.len(), files + 2);
        assert_eq!(archive.by_index(0).unwrap().name(), "conv/");
        let mut state = String::new();
        archive
            .by_name("conv/base_state.json")
            .unwrap()
            .read_to_string(&mut state)
            .unwrap();
        assert_eq!(state, r#"{"api_key": "**********"}"#);
        assert!(archive.by_name("conv/f69999").is_ok());
    }
}
