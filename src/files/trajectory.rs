//! Zip of a conversation's directory for `download-trajectory`, with secrets redacted from
//! every JSON/JSONL file, files still being written (`*.tmp`) and the `acp/` directory left
//! out. Written to a scratch file by a small zip writer (deflate via flate2).

use std::io::{BufWriter, Read, Seek, Write};
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

/// One central-directory record.
struct Entry {
    name: Vec<u8>,
    crc: u32,
    compressed: u32,
    size: u32,
    offset: u32,
    method: u16,
    time: u16,
    date: u16,
    external_attr: u32,
}

fn dos_time(t: std::time::SystemTime) -> (u16, u16) {
    let dt: chrono::DateTime<chrono::Local> = t.into();
    use chrono::{Datelike, Timelike};
    let year = dt.year().clamp(1980, 2107) as u16;
    let date = ((year - 1980) << 9) | ((dt.month() as u16) << 5) | dt.day() as u16;
    let time = ((dt.hour() as u16) << 11) | ((dt.minute() as u16) << 5) | (dt.second() as u16 / 2);
    (time, date)
}

fn too_big() -> std::io::Error {
    std::io::Error::other("file too large for a zip without zip64")
}

/// Minimal zip writer: stored directories, deflated files, no zip64.
struct ZipWriter<W: Write + Seek> {
    out: W,
    entries: Vec<Entry>,
}

impl<W: Write + Seek> ZipWriter<W> {
    fn offset(&mut self) -> std::io::Result<u32> {
        u32::try_from(self.out.stream_position()?).map_err(|_| too_big())
    }

    fn local_header(&mut self, e: &Entry) -> std::io::Result<()> {
        let mut h = Vec::with_capacity(30 + e.name.len());
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes());
        h.extend_from_slice(&0x0800u16.to_le_bytes()); // UTF-8 names
        h.extend_from_slice(&e.method.to_le_bytes());
        h.extend_from_slice(&e.time.to_le_bytes());
        h.extend_from_slice(&e.date.to_le_bytes());
        h.extend_from_slice(&e.crc.to_le_bytes());
        h.extend_from_slice(&e.compressed.to_le_bytes());
        h.extend_from_slice(&e.size.to_le_bytes());
        h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&e.name);
        self.out.write_all(&h)
    }

    fn add_dir(&mut self, name: &str, meta: &std::fs::Metadata) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let (time, date) = dos_time(meta.modified().unwrap_or(std::time::UNIX_EPOCH));
        let entry = Entry {
            name: format!("{name}/").into_bytes(),
            crc: 0,
            compressed: 0,
            size: 0,
            offset: self.offset()?,
            method: 0,
            time,
            date,
            external_attr: ((0o040000 | (meta.permissions().mode() & 0o7777)) << 16) | 0x10,
        };
        self.local_header(&entry)?;
        self.entries.push(entry);
        Ok(())
    }

    fn add_file(
        &mut self,
        name: &str,
        meta: &std::fs::Metadata,
        mut data: impl Read,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let (time, date) = dos_time(meta.modified().unwrap_or(std::time::UNIX_EPOCH));
        let offset = self.offset()?;
        let mut entry = Entry {
            name: name.as_bytes().to_vec(),
            crc: 0,
            compressed: 0,
            size: 0,
            offset,
            method: 8,
            time,
            date,
            external_attr: (0o100000 | (meta.permissions().mode() & 0o7777)) << 16,
        };
        self.local_header(&entry)?;
        let start = self.out.stream_position()?;
        let mut crc = flate2::Crc::new();
        let mut size: u64 = 0;
        {
            let mut enc =
                flate2::write::DeflateEncoder::new(&mut self.out, flate2::Compression::default());
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = data.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                crc.update(&buf[..n]);
                size += n as u64;
                enc.write_all(&buf[..n])?;
            }
            enc.finish()?;
        }
        let end = self.out.stream_position()?;
        entry.crc = crc.sum();
        entry.size = u32::try_from(size).map_err(|_| too_big())?;
        entry.compressed = u32::try_from(end - start).map_err(|_| too_big())?;
        // Patch the sizes into the local header.
        self.out
            .seek(std::io::SeekFrom::Start(u64::from(offset) + 14))?;
        self.out.write_all(&entry.crc.to_le_bytes())?;
        self.out.write_all(&entry.compressed.to_le_bytes())?;
        self.out.write_all(&entry.size.to_le_bytes())?;
        self.out.seek(std::io::SeekFrom::Start(end))?;
        self.entries.push(entry);
        Ok(())
    }

    fn finish(mut self) -> std::io::Result<W> {
        let cd_start = self.offset()?;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let mut h = Vec::with_capacity(46 + e.name.len());
            h.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            h.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes()); // made by unix
            h.extend_from_slice(&20u16.to_le_bytes());
            h.extend_from_slice(&0x0800u16.to_le_bytes());
            h.extend_from_slice(&e.method.to_le_bytes());
            h.extend_from_slice(&e.time.to_le_bytes());
            h.extend_from_slice(&e.date.to_le_bytes());
            h.extend_from_slice(&e.crc.to_le_bytes());
            h.extend_from_slice(&e.compressed.to_le_bytes());
            h.extend_from_slice(&e.size.to_le_bytes());
            h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            h.extend_from_slice(&[0u8; 8]); // extra, comment, disk, internal attr
            h.extend_from_slice(&e.external_attr.to_le_bytes());
            h.extend_from_slice(&e.offset.to_le_bytes());
            h.extend_from_slice(&e.name);
            self.out.write_all(&h)?;
        }
        let cd_end = self.offset()?;
        let count = u16::try_from(entries.len()).map_err(|_| too_big())?;
        let mut end = Vec::with_capacity(22);
        end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        end.extend_from_slice(&[0u8; 4]);
        end.extend_from_slice(&count.to_le_bytes());
        end.extend_from_slice(&count.to_le_bytes());
        end.extend_from_slice(&(cd_end - cd_start).to_le_bytes());
        end.extend_from_slice(&cd_start.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.out.write_all(&end)?;
        Ok(self.out)
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
    let mut zip = ZipWriter {
        out: BufWriter::new(file),
        entries: Vec::new(),
    };
    zip.add_dir(&name, &std::fs::metadata(source)?)?;
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
            zip.add_dir(&arcname, &meta)?;
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
            zip.add_file(&arcname, &meta, data.as_slice())?;
        } else {
            let Ok(f) = std::fs::File::open(&path) else {
                continue;
            };
            zip.add_file(&arcname, &meta, f)?;
        }
    }
    let out = zip.finish()?;
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
}
