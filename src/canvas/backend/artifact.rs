//! Backend artifacts: downloaded (bounded, redirects followed, SHA-256 checked), verified and
//! unpacked read-only for an approved revision.

use super::*;

impl Backends {
    /// Verifies and unpacks the artifact of the exact installed `revision`, and records the
    /// approval.
    pub async fn prepare(&self, name: &str, revision: &str) -> Result<Status, CanvasError> {
        let slot = self.slot(name);
        let _op = slot.slot.op.lock().await;
        let disk = self.disk(name).await?;
        let status = Self::compose(name, &disk, &slot.slot);
        if matches!(status.state, "missing" | "unsupported") {
            return Ok(status);
        }
        if disk.revision.as_deref() != Some(revision) {
            return Err(conflict(
                "approval revision does not match installed revision",
            ));
        }
        if let Some(p) = &disk.prepared {
            if p.revision == revision && Path::new(&p.artifact_dir).is_dir() {
                return Ok(status);
            }
        }
        let Some((_, artifact, platform)) = Self::parts(disk.manifest.as_ref()) else {
            return Ok(status);
        };
        let artifact = artifact.clone();
        let archive = if artifact.path.is_empty() {
            let url = artifact.url.clone().unwrap_or_default();
            self.download_archive(&url, &artifact.sha256).await?
        } else {
            let root = self.installed.dir().join(name);
            let rel = artifact.path.clone();
            let expected = artifact.sha256.clone();
            blocking(move || {
                let archive = manifest::resolve_contained_file(&root, &rel)
                    .ok_or_else(|| conflict("backend artifact is not a contained regular file"))?;
                if sha256_file(&archive).map_err(io)? != expected {
                    return Err(conflict(
                        "backend artifact checksum does not match manifest",
                    ));
                }
                Ok(archive)
            })
            .await??
        };
        let artifact_dir = self.artifacts_dir.join(name).join(&artifact.sha256);
        let target = artifact_dir.clone();
        let sha = artifact.sha256.clone();
        let strip = artifact.strip_components;
        blocking(move || unpack_once(&archive, &target, &sha, strip)).await??;
        let approval = json!({
            "revision": revision,
            "platform": platform.as_str(),
            "artifact_sha256": artifact.sha256,
            "artifact_dir": artifact_dir.to_string_lossy(),
        });
        let path = self.approval_path(name);
        blocking(move || -> Result<(), CanvasError> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            crate::persist::write_atomic(&path, approval.to_string().as_bytes()).map_err(io)
        })
        .await??;
        tracing::info!(app = %name, %revision, "canvas app backend prepared");
        self.status_unlocked(name, &slot.slot).await
    }

    /// Downloads a URL artifact into `downloads/<sha>.tar.gz` (reused while its checksum
    /// matches): HTTPS only, redirects re-checked, at most 1 GiB.
    pub(super) async fn download_archive(
        &self,
        url: &str,
        sha: &str,
    ) -> Result<PathBuf, CanvasError> {
        let dir = self.downloads_dir.clone();
        let destination = dir.join(format!("{sha}.tar.gz"));
        let cached = destination.clone();
        let expected = sha.to_string();
        let reuse = blocking(move || {
            let _ = std::fs::create_dir_all(&dir);
            if cached.is_file() && sha256_file(&cached).ok().as_deref() == Some(expected.as_str()) {
                return true;
            }
            let _ = std::fs::remove_file(&cached);
            false
        })
        .await?;
        if reuse {
            return Ok(destination);
        }
        let temporary = self
            .downloads_dir
            .join(format!(".{sha}.tar.gz.{}.tmp", std::process::id()));
        let result = self.fetch_to(url, sha, &temporary).await;
        match result {
            Ok(()) => {
                tokio::fs::rename(&temporary, &destination)
                    .await
                    .map_err(|_| conflict("backend artifact download failed"))?;
                Ok(destination)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&temporary).await;
                Err(e)
            }
        }
    }

    pub(super) async fn fetch_to(
        &self,
        url: &str,
        sha: &str,
        temporary: &Path,
    ) -> Result<(), CanvasError> {
        let failed = || conflict("backend artifact download failed");
        let mut current = url.to_string();
        for hop in 0..=MAX_ARTIFACT_REDIRECTS {
            let parts = manifest::UrlParts::split(&current);
            if parts.scheme != "https"
                || parts.hostname().is_none()
                || parts.has_userinfo()
                || parts.fragment.is_some_and(|f| !f.is_empty())
            {
                return Err(conflict("backend artifact URL is not allowed"));
            }
            let response = self
                .download
                .get(&current)
                .header("Accept", "application/octet-stream")
                .header("Accept-Encoding", "identity")
                .header("User-Agent", "OpenHands-Agent-Server")
                .send()
                .await
                .map_err(|_| failed())?;
            let status = response.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match location {
                    Some(l) if hop < MAX_ARTIFACT_REDIRECTS => {
                        current = response
                            .url()
                            .join(&l)
                            .map(|u| u.to_string())
                            .map_err(|_| failed())?;
                        continue;
                    }
                    _ => return Err(conflict("backend artifact redirect limit exceeded")),
                }
            }
            if status >= 300 {
                return Err(CanvasError::Backend(format!(
                    "backend artifact download failed with HTTP {status}"
                )));
            }
            if response
                .content_length()
                .is_some_and(|n| n > MAX_ARTIFACT_BYTES)
            {
                return Err(conflict("backend artifact exceeds maximum size"));
            }
            let mut file = tokio::fs::File::create(temporary)
                .await
                .map_err(|_| failed())?;
            let mut digest = Sha256::new();
            let mut received = 0u64;
            let mut response = response;
            while let Some(chunk) = response.chunk().await.map_err(|_| failed())? {
                received += chunk.len() as u64;
                if received > MAX_ARTIFACT_BYTES {
                    return Err(conflict("backend artifact exceeds maximum size"));
                }
                digest.update(&chunk);
                tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                    .await
                    .map_err(|_| failed())?;
            }
            tokio::io::AsyncWriteExt::flush(&mut file)
                .await
                .map_err(|_| failed())?;
            if manifest::hex(&digest.finalize()) != sha {
                return Err(conflict(
                    "backend artifact checksum does not match manifest",
                ));
            }
            return Ok(());
        }
        Err(conflict("backend artifact redirect limit exceeded"))
    }
}

pub(super) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut digest = Sha256::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
    }
    Ok(manifest::hex(&digest.finalize()))
}

/// Why unpacking an artifact failed.
#[derive(Debug)]
pub(super) enum Unpack {
    /// The reference's 409 wording.
    Refused(&'static str),
    /// The archive could not be read as gzip-compressed tar.
    Corrupt,
    Io(std::io::Error),
}

/// Unpacks `archive` into `target` (`artifacts/<name>/<sha>`) unless it is already there:
/// into a hidden temporary directory first, then renamed. Blocking.
pub(super) fn unpack_once(
    archive: &Path,
    target: &Path,
    sha: &str,
    strip: u32,
) -> Result<(), CanvasError> {
    if target.exists() {
        return Ok(());
    }
    let parent = target.parent().ok_or_else(|| io("artifact directory"))?;
    std::fs::create_dir_all(parent).map_err(io)?;
    let temporary = parent.join(format!(".{sha}.{}", &crate::util::hex_id()[..8]));
    std::fs::create_dir(&temporary).map_err(io)?;
    let result = extract(archive, &temporary, strip);
    let outcome = match result {
        Ok(()) => match std::fs::rename(&temporary, target) {
            Ok(()) => Ok(()),
            Err(_) if target.is_dir() => Ok(()),
            Err(e) => Err(io(e)),
        },
        Err(Unpack::Refused(msg)) => Err(conflict(msg)),
        Err(Unpack::Corrupt) => Err(conflict("backend artifact is not a valid gzip tar archive")),
        Err(Unpack::Io(e)) => Err(io(e)),
    };
    if temporary.exists() {
        make_writable(&temporary);
        let _ = std::fs::remove_dir_all(&temporary);
    }
    outcome
}

pub(super) fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&entry.path());
            }
        }
    }
}

/// Extracts a gzip tar into `root`: only regular files and directories, no absolute or `..`
/// names, no duplicates, `strip` leading components removed; files keep `mode & 0o555` and
/// every directory ends read-only (0555).
pub(super) fn extract(archive: &Path, root: &Path, strip: u32) -> Result<(), Unpack> {
    use std::os::unix::fs::PermissionsExt;
    let unsafe_entry = Unpack::Refused("backend artifact contains an unsafe archive entry");
    let file = std::fs::File::open(archive).map_err(Unpack::Io)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let root = std::fs::canonicalize(root).map_err(Unpack::Io)?;
    let mut seen: Vec<String> = Vec::new();
    let mut extracted = 0usize;
    for entry in tar.entries().map_err(|_| Unpack::Corrupt)? {
        let mut entry = entry.map_err(|_| Unpack::Corrupt)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let parts: Vec<&str> = raw
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        if raw.starts_with('/') || parts.contains(&"..") {
            return Err(unsafe_entry);
        }
        let Some(kept) = parts.get(strip as usize..).filter(|k| !k.is_empty()) else {
            continue;
        };
        let relative = kept.join("/");
        let is_file = matches!(
            kind,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
        );
        let is_dir = kind == tar::EntryType::Directory;
        if seen.contains(&relative) || !(is_file || is_dir) {
            return Err(unsafe_entry);
        }
        seen.push(relative.clone());
        let target = crate::canvas::source::resolve(&root.join(&relative));
        if !target.starts_with(&root) {
            return Err(unsafe_entry);
        }
        if is_dir {
            std::fs::create_dir_all(&target).map_err(Unpack::Io)?;
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(Unpack::Io)?;
            }
            let mode = entry.header().mode().map_err(|_| Unpack::Corrupt)? & 0o555;
            let mut out = std::fs::File::create(&target).map_err(Unpack::Io)?;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = entry.read(&mut buf).map_err(|_| Unpack::Corrupt)?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).map_err(Unpack::Io)?;
            }
            drop(out);
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .map_err(Unpack::Io)?;
        }
        extracted += 1;
    }
    if extracted == 0 {
        return Err(Unpack::Refused(
            "backend artifact contains no files after stripping",
        ));
    }
    // Every directory read-only, deepest first (their parents stay writable until then).
    let mut all_dirs = Vec::new();
    collect_dirs(&root, &mut all_dirs);
    all_dirs.sort();
    for dir in all_dirs.iter().rev() {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555))
            .map_err(Unpack::Io)?;
    }
    Ok(())
}

pub(super) fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}
