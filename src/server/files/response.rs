//! Streamed file responses as Starlette's `FileResponse`: `etag`, `last-modified`,
//! `content-disposition` and `Range` support.

use super::*;

// ---------------------------------------------------------------------------------------------
// Streamed file responses.

/// Python's `str(float)` for an mtime: shortest round-trip digits, always with a fraction.
pub(super) fn py_float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

/// `content-disposition` as Starlette writes it (RFC 5987 form for non-plain names).
pub(super) fn content_disposition(filename: &str) -> String {
    let quoted = archive::percent_encode(filename, "/");
    if quoted != filename {
        format!("attachment; filename*=utf-8''{quoted}")
    } else {
        format!("attachment; filename=\"{filename}\"")
    }
}

pub(super) enum RangeError {
    Malformed(&'static str),
    Unsatisfiable,
}

/// Starlette's `Range` parsing: `Ok(vec![])` means "send the whole file".
pub(super) fn parse_range(value: &str, size: u64) -> Result<Vec<(u64, u64)>, RangeError> {
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
pub(super) enum Piece {
    Bytes(Bytes),
    Copy { start: u64, end: u64, seek: bool },
}

pub(super) const CHUNK: usize = 64 * 1024;
/// Transfers from this size on give their allocator pages back when they end.
pub(super) const TRIM_AFTER: u64 = 1 << 20;

/// Streams `pieces` from `file` in 64 KiB chunks (memory stays bounded whatever the size).
pub(super) fn body_from(file: tokio::fs::File, pieces: Vec<Piece>) -> Body {
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

pub(super) fn header_value(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A Starlette-like `FileResponse` for an open file (`filename`: sent as an attachment with
/// that name).
pub(in crate::server) fn file_response(
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
