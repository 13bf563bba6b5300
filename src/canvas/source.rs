//! Extension sources, classified and fetched as the reference does: `github:owner/repo[/path]`,
//! git URLs (`https://`, `http://`, `git://`, `file://`, `user@host:path`) cloned into a
//! per-URL cache under `<persistence>/cache/extensions/`, or local directories. The messages of
//! [`SourceError`] are the reference's. Blocking: call from `spawn_blocking`.

use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use regex::Regex;
use sha2::{Digest, Sha256};

/// Why a source could not be fetched (the reference's `ExtensionFetchError` message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// What a source names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    Local,
    Git,
    GitHub,
}

/// A fetched source: the directory holding the package.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub dir: PathBuf,
    /// The commit checked out, for git sources.
    pub resolved_ref: Option<String>,
    pub kind: SourceKind,
}

/// How long a clone or fetch may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for another install holding the same clone cache.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

fn static_regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a valid static pattern"))
}

/// `https://user:token@host/...` with the credentials replaced by `****`.
pub fn redact_url_credentials(url: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = static_regex(&RE, r"^(https?://)([^@/]+)@(.+)$");
    match re.captures(url) {
        Some(c) => format!("{}****@{}", &c[1], &c[3]),
        None => url.to_string(),
    }
}

fn is_git_url(source: &str) -> bool {
    static SSH: OnceLock<Regex> = OnceLock::new();
    source.starts_with("https://")
        || source.starts_with("http://")
        || static_regex(&SSH, r"^[\w.-]+@[\w.-]+:").is_match(source)
        || source.starts_with("git://")
        || source.starts_with("file://")
}

fn normalize_git_url(url: &str) -> String {
    if (url.starts_with("https://") || url.starts_with("http://")) && !url.ends_with(".git") {
        let trimmed = url.trim_end_matches('/');
        if super::manifest::UrlParts::split(trimmed)
            .path
            .contains("/_git/")
        {
            return trimmed.to_string();
        }
        return format!("{trimmed}.git");
    }
    url.to_string()
}

fn is_local_path_source(value: &str) -> bool {
    static SCHEME: OnceLock<Regex> = OnceLock::new();
    static WINDOWS: OnceLock<Regex> = OnceLock::new();
    let value = value.trim();
    if value.is_empty() {
        return false;
    }
    if value.starts_with("file://") || value.starts_with('~') || value.starts_with('.') {
        return true;
    }
    if value.starts_with('/')
        || value.starts_with('\\')
        || static_regex(&WINDOWS, r"^[A-Za-z]:[\\/]").is_match(value)
    {
        return true;
    }
    value.contains('\\') && !static_regex(&SCHEME, r"^[A-Za-z][A-Za-z0-9+.-]*://").is_match(value)
}

/// `github:owner/repo[/subpath]` split into `owner/repo` and the subpath.
fn split_github(source: &str) -> Result<(String, Option<String>), SourceError> {
    let rest = source.trim().strip_prefix("github:").unwrap_or_default();
    let (owner, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let (repo, subpath) = rest.split_once('/').unwrap_or((rest, ""));
    if owner.is_empty() || repo.is_empty() {
        return Err(SourceError(format!(
            "Invalid GitHub shorthand format: {source}. Expected format: github:owner/repo[/path]"
        )));
    }
    let subpath = subpath.trim_matches('/');
    Ok((
        format!("{owner}/{repo}"),
        (!subpath.is_empty()).then(|| subpath.to_string()),
    ))
}

/// Classifies `source`: its kind and the URL or path it names.
pub fn parse_source(source: &str) -> Result<(SourceKind, String), SourceError> {
    let source = source.trim();
    if source.starts_with("github:") {
        let (repo, _) = split_github(source)?;
        return Ok((SourceKind::GitHub, format!("https://github.com/{repo}.git")));
    }
    if is_git_url(source) {
        return Ok((SourceKind::Git, normalize_git_url(source)));
    }
    if is_local_path_source(source) || (source.contains('/') && !source.contains("://")) {
        return Ok((SourceKind::Local, source.to_string()));
    }
    Err(SourceError(format!(
        "Unable to parse extension source: {source}. Expected formats: 'github:owner/repo', \
         git URL, or local path"
    )))
}

/// A readable cache-directory name for a repository URL (`extract_repo_name`).
pub fn repo_name(source: &str) -> String {
    let mut name = source;
    for prefix in ["github:", "https://", "http://", "git://", "file://"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            name = rest;
            break;
        }
    }
    let mut name = name.to_string();
    if name.contains('@') && name.contains(':') {
        let (head, tail) = name.split_once(':').unwrap_or((&name, ""));
        if !head.contains('/') {
            name = tail.to_string();
        }
    }
    let trimmed = name.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix(".git").unwrap_or(trimmed);
    let last = trimmed.rsplit('/').next().unwrap_or(trimmed);
    let mut clean = String::new();
    for c in last.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            c
        } else {
            '-'
        };
        if !(c == '-' && clean.ends_with('-')) {
            clean.push(c);
        }
    }
    let clean = clean.trim_matches('-');
    if clean.is_empty() {
        "repo".into()
    } else {
        clean.chars().take(32).collect()
    }
}

/// `path` made absolute and resolved like Python's non-strict `Path.resolve()` (`realpath`):
/// components are walked left to right, symlinks followed as they come, and the part that
/// does not exist is kept as written.
pub fn resolve(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut out = PathBuf::from("/");
    let mut links = 0;
    walk(&mut out, &absolute, &mut links);
    out
}

fn walk(out: &mut PathBuf, path: &Path, links: &mut usize) {
    for c in path.components() {
        match c {
            Component::RootDir => *out = PathBuf::from("/"),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                let Ok(meta) = std::fs::symlink_metadata(&*out) else {
                    continue;
                };
                if meta.file_type().is_symlink() && *links < 40 {
                    *links += 1;
                    if let Ok(target) = std::fs::read_link(&*out) {
                        out.pop();
                        walk(out, &target, links);
                    }
                }
            }
        }
    }
}

/// `~` and `~user` at the start of `path` expanded (`Path.expanduser`).
fn expand_user(path: &str) -> PathBuf {
    let Some(rest) = path.strip_prefix('~') else {
        return PathBuf::from(path);
    };
    let (user, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let home = if user.is_empty() {
        std::env::var_os("HOME").map(PathBuf::from)
    } else {
        nix::unistd::User::from_name(user)
            .ok()
            .flatten()
            .map(|u| u.dir)
    };
    match home {
        Some(home) if tail.is_empty() => home,
        Some(home) => home.join(tail),
        None => PathBuf::from(path),
    }
}

/// `base/subpath`, which must stay inside `base` and exist (`_apply_subpath`).
fn apply_subpath(
    base: &Path,
    subpath: Option<&str>,
    context: &str,
) -> Result<PathBuf, SourceError> {
    let Some(subpath) = subpath.filter(|s| !s.is_empty()) else {
        return Ok(base.to_path_buf());
    };
    let joined = base.join(subpath.trim_matches('/'));
    if !resolve(&joined).starts_with(resolve(base)) {
        return Err(SourceError(format!(
            "Subdirectory '{subpath}' escapes {context}"
        )));
    }
    if !joined.exists() {
        return Err(SourceError(format!(
            "Subdirectory '{subpath}' not found in {context}"
        )));
    }
    Ok(joined)
}

/// Fetches `source` (at `git_ref`, narrowed to `repo_path`) and answers where the package is.
/// Git sources are cloned or updated in `cache_dir`.
pub fn fetch(
    source: &str,
    git_ref: Option<&str>,
    repo_path: Option<&str>,
    cache_dir: &Path,
) -> Result<Fetched, SourceError> {
    let (kind, url) = parse_source(source)?;
    let mut repo_path = repo_path.map(str::to_string);
    if kind == SourceKind::GitHub {
        let (_, subpath) = split_github(source)?;
        if let Some(sub) = subpath {
            if repo_path.as_deref().is_some_and(|p| !p.is_empty()) {
                return Err(SourceError(format!(
                    "GitHub shorthand {source} already names a subdirectory; do not also pass \
                     repo_path"
                )));
            }
            repo_path = Some(sub);
        }
    }
    if kind == SourceKind::Local {
        let base = resolve(&expand_user(&url));
        if !base.exists() {
            return Err(SourceError(format!(
                "Local extension path does not exist: {}",
                base.display()
            )));
        }
        let dir = apply_subpath(
            &base,
            repo_path.as_deref(),
            &format!("local source '{source}'"),
        )?;
        return Ok(Fetched {
            dir,
            resolved_ref: None,
            kind,
        });
    }
    let digest = Sha256::digest(url.as_bytes());
    let cache = cache_dir.join(format!(
        "{}-{}",
        repo_name(&url),
        &super::manifest::hex(&digest)[..16]
    ));
    let failed = || {
        SourceError(format!(
            "Failed to fetch extension from {}",
            redact_url_credentials(source)
        ))
    };
    std::fs::create_dir_all(cache_dir).map_err(|_| failed())?;
    clone_or_update(&url, &cache, git_ref).ok_or_else(failed)?;
    let resolved = git(&cache, &["rev-parse", "HEAD"], Duration::from_secs(30))
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| git_ref.unwrap_or("HEAD").to_string());
    let dir = apply_subpath(&cache, repo_path.as_deref(), "extension repository")?;
    Ok(Fetched {
        dir,
        resolved_ref: Some(resolved),
        kind,
    })
}

/// An exclusive lock on `<cache>.lock`, held while the clone is used.
struct CacheLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

fn lock_cache(cache: &Path) -> Option<CacheLock> {
    let mut path = cache.as_os_str().to_os_string();
    path.push(".lock");
    let deadline = Instant::now() + LOCK_TIMEOUT;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(path))
        .ok()?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Some(CacheLock(lock)),
            Err((f, _)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => return None,
        }
    }
}

/// Clones `url` into `cache` (shallow) or updates the clone there, then checks out `git_ref`.
fn clone_or_update(url: &str, cache: &Path, git_ref: Option<&str>) -> Option<()> {
    let _lock = lock_cache(cache)?;
    if cache.join(".git").exists() {
        match git_ref {
            Some(r) => checkout_ref(cache, r, true),
            None => {
                update(cache);
                Some(())
            }
        }
    } else {
        if cache.exists() {
            std::fs::remove_dir_all(cache).ok()?;
        }
        let parent = cache.parent()?;
        let target = cache.to_string_lossy().into_owned();
        git(
            parent,
            &["clone", "--depth", "1", "--quiet", url, &target],
            GIT_TIMEOUT,
        )?;
        match git_ref {
            Some(r) => checkout_ref(cache, r, true),
            None => Some(()),
        }
    }
}

/// The commit `rev` names in the clone, if any.
fn commit_of(cache: &Path, rev: &str) -> Option<String> {
    let spec = format!("{rev}^{{commit}}");
    git(
        cache,
        &["rev-parse", "--verify", "--quiet", &spec],
        Duration::from_secs(30),
    )
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
}

/// Fetches `git_ref` from the origin and checks its commit out (detached); when the origin
/// cannot be reached, a matching cached tag, branch or commit is used.
fn checkout_ref(cache: &Path, git_ref: &str, allow_cached: bool) -> Option<()> {
    let full_sha = git_ref.len() == 40 && git_ref.bytes().all(|b| b.is_ascii_hexdigit());
    let cached = |r: &str| {
        [
            format!("refs/tags/{r}"),
            format!("refs/remotes/origin/{r}"),
            r.to_string(),
        ]
        .iter()
        .find_map(|c| commit_of(cache, c))
    };
    let commit = if full_sha {
        commit_of(cache, git_ref)
    } else {
        None
    };
    let commit = match commit {
        Some(c) => c,
        None => {
            let fetched = git(
                cache,
                &["fetch", "--depth", "1", "--quiet", "origin", git_ref],
                GIT_TIMEOUT,
            )
            .and_then(|_| commit_of(cache, "FETCH_HEAD"));
            match fetched {
                Some(c) => c,
                None if allow_cached => cached(git_ref)?,
                None => return None,
            }
        }
    };
    git(
        cache,
        &["checkout", "--quiet", "--force", "--detach", &commit],
        Duration::from_secs(60),
    )
    .map(|_| ())
}

/// Brings a clone without a requested ref up to date with its origin; the cached copy stays
/// when the origin cannot be reached.
fn update(cache: &Path) {
    if git(
        cache,
        &["fetch", "--depth", "1", "--quiet", "origin"],
        GIT_TIMEOUT,
    )
    .is_none()
    {
        return;
    }
    let branch = git(
        cache,
        &["symbolic-ref", "--quiet", "--short", "HEAD"],
        Duration::from_secs(30),
    )
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty());
    match branch {
        Some(b) => {
            let _ = git(
                cache,
                &["reset", "--quiet", "--hard", &format!("origin/{b}")],
                Duration::from_secs(60),
            );
        }
        None => {
            if let Some(c) = commit_of(cache, "refs/remotes/origin/HEAD") {
                let _ = git(
                    cache,
                    &["checkout", "--quiet", "--force", "--detach", &c],
                    Duration::from_secs(60),
                );
            }
        }
    }
}

/// Runs `git args` in `dir` (its own process group, no prompts, killed after `timeout`);
/// its standard output when it succeeds.
fn git(dir: &Path, args: &[&str], timeout: Duration) -> Option<String> {
    let mut cmd = crate::util::git_command();
    cmd.current_dir(dir).args(args).stdout(Stdio::piped());
    let mut child = cmd.spawn().ok()?;
    let stdout = child.stdout.take();
    // Read on a thread so a chatty command cannot block on a full pipe.
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut s) = stdout {
            let _ = std::io::Read::read_to_end(&mut s, &mut out);
        }
        out
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait();
                break None;
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    status
        .filter(|s| s.success())
        .map(|_| String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_classified_like_the_reference() {
        let kind = parse_source;
        assert_eq!(
            kind("github:o/r/sub").unwrap(),
            (SourceKind::GitHub, "https://github.com/o/r.git".into())
        );
        assert_eq!(
            kind("https://github.com/o/r/").unwrap(),
            (SourceKind::Git, "https://github.com/o/r.git".into())
        );
        assert_eq!(
            kind("https://dev.azure.com/o/p/_git/r").unwrap().1,
            "https://dev.azure.com/o/p/_git/r"
        );
        assert_eq!(kind("git@github.com:o/r.git").unwrap().0, SourceKind::Git);
        assert_eq!(kind("file:///x").unwrap().0, SourceKind::Git);
        assert_eq!(kind("plugins/x").unwrap().0, SourceKind::Local);
        assert_eq!(kind("~/x").unwrap().0, SourceKind::Local);
        assert_eq!(kind("C:\\x").unwrap().0, SourceKind::Local);
        assert_eq!(
            kind("  ").unwrap_err().0,
            "Unable to parse extension source: . Expected formats: 'github:owner/repo', git URL, \
             or local path"
        );
        assert_eq!(
            kind("github:owner").unwrap_err().0,
            "Invalid GitHub shorthand format: github:owner. Expected format: \
             github:owner/repo[/path]"
        );
        assert_eq!(
            redact_url_credentials("https://user:tok@example.invalid/o/r.git"),
            "https://****@example.invalid/o/r.git"
        );
        assert_eq!(repo_name("https://github.com/owner/my.repo.git"), "my-repo");
        assert_eq!(repo_name("git@github.com:owner/r.git"), "r");
        assert_eq!(repo_name("file:///"), "repo");
    }

    #[test]
    fn resolve_follows_links_and_keeps_missing_parts() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(real.join("a")).unwrap();
        std::os::unix::fs::symlink(real.join("a"), real.join("l")).unwrap();
        assert_eq!(resolve(&real.join("l/x/../y")), real.join("a/y"));
        assert_eq!(resolve(&real.join("l/..")), real.clone());
    }
}
