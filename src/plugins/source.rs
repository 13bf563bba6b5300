//! Plugin source strings and the lenient fetch (install, refresh, conversations, marketplaces):
//! `github:owner/repo[/path]`, git URLs (`https://`, `http://`, `git://`, `file://`,
//! `user@host:path`) and local paths, parsed in the reference's order; remote sources are
//! shallow clones kept in a cache directory (`<repo>-<sha256(url)[..16]>`), updated on each
//! fetch and used stale when the remote cannot be reached. Blocking: call from
//! `spawn_blocking`.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use regex::Regex;
use sha2::{Digest, Sha256};

use super::git;

/// Deadline of a clone.
const CLONE_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of a fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of a local git command.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for another fetch of the same cache entry.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// How a source string is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    Git,
    GitHub,
}

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).unwrap_or_else(|_| Regex::new("$^").expect("regex")))
}

/// `github:owner/repo[/sub/path]` → (`owner/repo`, sub path).
pub fn split_github(source: &str) -> Result<(String, Option<String>), String> {
    let rest = source.trim().strip_prefix("github:").unwrap_or_default();
    let (owner, rest) = rest.split_once('/').unwrap_or((rest, ""));
    let (repo, sub) = rest.split_once('/').unwrap_or((rest, ""));
    if owner.is_empty() || repo.is_empty() {
        return Err(format!(
            "Invalid GitHub shorthand format: {source}. Expected format: github:owner/repo[/path]"
        ));
    }
    let sub = sub.trim_matches('/');
    Ok((
        format!("{owner}/{repo}"),
        (!sub.is_empty()).then(|| sub.to_string()),
    ))
}

/// Whether `source` looks like a git URL (by scheme, or `user@host:path`).
pub fn is_git_url(source: &str) -> bool {
    static SSH: OnceLock<Regex> = OnceLock::new();
    ["https://", "http://", "git://", "file://"]
        .iter()
        .any(|p| source.starts_with(p))
        || re(&SSH, r"^[\w.-]+@[\w.-]+:").is_match(source)
}

/// Adds `.git` to http(s) URLs without it (not to Azure DevOps `/_git/` URLs).
pub fn normalize_git_url(url: &str) -> String {
    if (url.starts_with("https://") || url.starts_with("http://")) && !url.ends_with(".git") {
        let url = url.trim_end_matches('/');
        let path = url.splitn(4, '/').nth(3).unwrap_or_default();
        if format!("/{path}").contains("/_git/") {
            return url.to_string();
        }
        return format!("{url}.git");
    }
    url.to_string()
}

/// Whether `value` is absolute in POSIX or Windows syntax.
fn is_absolute_source(value: &str) -> bool {
    static DRIVE: OnceLock<Regex> = OnceLock::new();
    value.starts_with('/')
        || value.starts_with('\\')
        || re(&DRIVE, r"^[A-Za-z]:[\\/]").is_match(value)
}

/// Whether a source names a local path (`file://`, `~`, `.`, absolute, or backslashes
/// without a URL scheme).
pub fn is_local_path_source(source: &str) -> bool {
    static SCHEME: OnceLock<Regex> = OnceLock::new();
    let value = source.trim();
    if value.is_empty() {
        return false;
    }
    if value.starts_with("file://") || value.starts_with('~') || value.starts_with('.') {
        return true;
    }
    if is_absolute_source(value) {
        return true;
    }
    value.contains('\\') && !re(&SCHEME, r"^[A-Za-z][A-Za-z0-9+.-]*://").is_match(value)
}

/// Parses a source into its kind and URL (the path for local sources).
pub fn parse(source: &str) -> Result<(Kind, String), String> {
    let source = source.trim();
    if source.starts_with("github:") {
        let (repo, _) = split_github(source)?;
        return Ok((Kind::GitHub, format!("https://github.com/{repo}.git")));
    }
    if is_git_url(source) {
        return Ok((Kind::Git, normalize_git_url(source)));
    }
    if is_local_path_source(source) || (source.contains('/') && !source.contains("://")) {
        return Ok((Kind::Local, source.to_string()));
    }
    Err(format!(
        "Unable to parse extension source: {source}. Expected formats: 'github:owner/repo', git URL, or local path"
    ))
}

/// A readable directory name for a repository URL or path (≤ 32 chars, `repo` if empty).
pub fn extract_repo_name(source: &str) -> String {
    static UNSAFE: OnceLock<Regex> = OnceLock::new();
    static DASHES: OnceLock<Regex> = OnceLock::new();
    let mut name = source;
    for prefix in ["github:", "https://", "http://", "git://", "file://"] {
        if let Some(rest) = name.strip_prefix(prefix) {
            name = rest;
            break;
        }
    }
    if name.contains('@') && name.contains(':') {
        let (head, tail) = name.split_once(':').unwrap_or((name, ""));
        if !head.contains('/') {
            name = tail;
        }
    }
    let name = name.trim_end_matches('/');
    let name = name.strip_suffix(".git").unwrap_or(name);
    let name = name.rsplit('/').next().unwrap_or(name);
    let name = re(&UNSAFE, r"[^a-zA-Z0-9_-]").replace_all(name, "-");
    let name = re(&DASHES, r"-+").replace_all(&name, "-");
    let name: String = name.trim_matches('-').chars().take(32).collect();
    if name.is_empty() {
        "repo".into()
    } else {
        name
    }
}

/// First 16 hex digits of the SHA-256 of `text`.
pub fn hash16(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The cache directory of a source URL: `<cache_dir>/<repo>-<hash16>`.
pub fn cache_path(url: &str, cache_dir: &Path) -> PathBuf {
    cache_dir.join(format!("{}-{}", extract_repo_name(url), hash16(url)))
}

/// Masks `user:password@` in an http(s) URL; with `preserve_placeholders`, userinfo holding a
/// `${VAR}` reference is kept.
pub fn redact_url_credentials(url: &str, preserve_placeholders: bool) -> String {
    static CREDS: OnceLock<Regex> = OnceLock::new();
    let Some(c) = re(&CREDS, r"(?s)^(https?://)([^@/]+)@(.+)$").captures(url) else {
        return url.to_string();
    };
    if preserve_placeholders && c[2].contains("${") {
        return url.to_string();
    }
    format!("{}****@{}", &c[1], &c[3])
}

/// Masks `http(s)://user:token@` credentials anywhere in `text`.
pub fn redact_in_text(text: &str) -> String {
    static EMBEDDED: OnceLock<Regex> = OnceLock::new();
    re(&EMBEDDED, r"(?i)(https?://)[^/@\s]+@")
        .replace_all(text, "${1}****@")
        .into_owned()
}

/// The user's home directory (`$HOME`).
pub fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// `~` and `~/...` expanded with `$HOME`.
pub fn expand_user(path: &str) -> PathBuf {
    match (path.strip_prefix('~'), home()) {
        (Some(""), Some(h)) => h,
        (Some(rest), Some(h)) if rest.starts_with('/') => h.join(rest.trim_start_matches('/')),
        _ => PathBuf::from(path),
    }
}

/// The absolute path with symlinks resolved where they exist (Python's non-strict
/// `Path.resolve()`): relative paths are taken from the current directory.
pub fn resolve(path: &Path) -> PathBuf {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut out = PathBuf::from("/");
    let mut hops = 0;
    let mut todo: Vec<PathBuf> = abs
        .components()
        .rev()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    while let Some(part) = todo.pop() {
        match Path::new(&part).components().next() {
            Some(Component::RootDir) | Some(Component::Prefix(_)) => out = PathBuf::from("/"),
            Some(Component::CurDir) | None => {}
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::Normal(name)) => {
                let next = out.join(name);
                match std::fs::read_link(&next) {
                    Ok(target) if hops < 40 => {
                        hops += 1;
                        if target.is_absolute() {
                            out = PathBuf::from("/");
                        }
                        todo.extend(
                            target
                                .components()
                                .rev()
                                .map(|c| PathBuf::from(c.as_os_str())),
                        );
                    }
                    _ => out = next,
                }
            }
        }
    }
    out
}

/// Whether `path` resolves inside the resolved `root`.
pub fn resolves_within(path: &Path, root: &Path) -> bool {
    resolve(path).starts_with(resolve(root))
}

/// The reference's `extension` wording of fetch errors, as plugin code shows it.
pub fn plugin_wording(message: &str) -> String {
    static LOWER: OnceLock<Regex> = OnceLock::new();
    static UPPER: OnceLock<Regex> = OnceLock::new();
    let m = re(&LOWER, r"\bextension\b").replace_all(message, "plugin");
    re(&UPPER, r"\bExtension\b")
        .replace_all(&m, "Plugin")
        .into_owned()
}

/// `base/<subpath>`, which must stay inside `base` and exist (`context` names `base` in the
/// errors).
fn apply_subpath(base: &Path, subpath: Option<&str>, context: &str) -> Result<PathBuf, String> {
    let Some(sub) = subpath.filter(|s| !s.is_empty()) else {
        return Ok(base.to_path_buf());
    };
    let path = base.join(sub.trim_matches('/'));
    if !resolve(&path).starts_with(resolve(base)) {
        return Err(format!("Subdirectory '{sub}' escapes {context}"));
    }
    if !path.exists() {
        return Err(format!("Subdirectory '{sub}' not found in {context}"));
    }
    Ok(path)
}

/// A fetched source: the directory and, for git sources, the commit checked out.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    pub resolved_ref: Option<String>,
}

fn is_full_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pinned copy `/plugins/fetch` made of `source` at commit `sha`, if there is one.
fn pinned_copy(
    source: &str,
    cache_dir: &Path,
    sha: &str,
    repo_path: Option<&str>,
) -> Option<PathBuf> {
    let (kind, url) = parse(source).ok()?;
    if kind == Kind::Local {
        return None;
    }
    let root = cache_path(&url, cache_dir)
        .join("resolved-refs")
        .join(sha.to_ascii_lowercase());
    if !root.is_dir() {
        return None;
    }
    let Some(rp) = repo_path else {
        return Some(root);
    };
    let candidate = root.join(rp.trim_matches('/'));
    (candidate.is_dir() && resolves_within(&candidate, &root)).then_some(candidate)
}

/// Fetches `source` (at `git_ref`, in `repo_path`) as the reference's `fetch_with_resolution`
/// does, cloning into `cache_dir`. With `pinned`, a full-SHA ref first looks for the copy
/// `/plugins/fetch` pinned. Errors are worded like the reference's plugin fetch errors.
pub fn fetch(
    source: &str,
    git_ref: Option<&str>,
    repo_path: Option<&str>,
    cache_dir: &Path,
    pinned: bool,
) -> Result<Fetched, String> {
    if pinned {
        if let Some(sha) = git_ref.filter(|r| is_full_sha(r)) {
            if let Some(path) = pinned_copy(source, cache_dir, sha, repo_path) {
                return Ok(Fetched {
                    path,
                    resolved_ref: Some(sha.to_ascii_lowercase()),
                });
            }
        }
    }
    fetch_inner(source, git_ref, repo_path, cache_dir).map_err(|m| plugin_wording(&m))
}

fn fetch_inner(
    source: &str,
    git_ref: Option<&str>,
    repo_path: Option<&str>,
    cache_dir: &Path,
) -> Result<Fetched, String> {
    let (kind, url) = parse(source)?;
    let mut repo_path = repo_path.map(str::to_string);
    if kind == Kind::GitHub {
        if let (_, Some(sub)) = split_github(source)? {
            if repo_path.as_deref().is_some_and(|r| !r.is_empty()) {
                return Err(format!(
                    "GitHub shorthand {source} already names a subdirectory; do not also pass repo_path"
                ));
            }
            repo_path = Some(sub);
        }
    }
    if kind == Kind::Local {
        let base = resolve(&expand_user(&url));
        if !base.exists() {
            return Err(format!(
                "Local extension path does not exist: {}",
                base.display()
            ));
        }
        let path = apply_subpath(
            &base,
            repo_path.as_deref(),
            &format!("local source '{source}'"),
        )?;
        return Ok(Fetched {
            path,
            resolved_ref: None,
        });
    }
    let clone = cache_path(&url, cache_dir);
    let _ = std::fs::create_dir_all(cache_dir);
    if !clone_or_update(&url, &clone, git_ref, true, false) {
        return Err(format!(
            "Failed to fetch extension from {}",
            redact_url_credentials(source, false)
        ));
    }
    let resolved = head_commit(&clone).or_else(|| Some(git_ref.unwrap_or("HEAD").to_string()));
    let path = apply_subpath(&clone, repo_path.as_deref(), "extension repository")?;
    Ok(Fetched {
        path,
        resolved_ref: resolved,
    })
}

/// `git rev-parse HEAD` of a clone.
pub fn head_commit(repo: &Path) -> Option<String> {
    let mut cmd = git::command(["rev-parse", "HEAD"]);
    cmd.current_dir(repo);
    let out = git::run(cmd, LOCAL_TIMEOUT).ok()?;
    let sha = out.stdout.trim().to_string();
    (out.success && !sha.is_empty()).then_some(sha)
}

fn git_in(repo: &Path, args: &[&str], timeout: Duration) -> Option<git::Output> {
    let mut cmd = git::command(args);
    cmd.current_dir(repo);
    git::run(cmd, timeout).ok()
}

fn succeeded(out: Option<git::Output>) -> bool {
    out.is_some_and(|o| o.success)
}

/// An exclusive lock on `<repo>.lock` (the reference's lock file), held while it lives.
fn lock(repo: &Path) -> Option<nix::fcntl::Flock<std::fs::File>> {
    let mut name = repo.file_name()?.to_os_string();
    name.push(".lock");
    let path = repo.with_file_name(name);
    let deadline = Instant::now() + LOCK_TIMEOUT;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ok()?;
    loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(locked) => return Some(locked),
            Err((f, _)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => {
                tracing::warn!(path = %path.display(), "timed out waiting for a plugin cache lock");
                return None;
            }
        }
    }
}

/// Checks out `git_ref` in a clone: fetched from the remote when `update`, else (or when the
/// remote cannot be reached and not `strict`) resolved from what the clone has.
fn checkout_ref(repo: &Path, git_ref: &str, update: bool, strict: bool) -> bool {
    if git_ref.starts_with('-') {
        return false;
    }
    if update {
        match git_in(
            repo,
            &["fetch", "--depth", "1", "origin", git_ref],
            FETCH_TIMEOUT,
        ) {
            Some(out) if out.success => {
                return succeeded(git_in(
                    repo,
                    &["checkout", "--force", "--detach", "FETCH_HEAD"],
                    LOCAL_TIMEOUT,
                ));
            }
            Some(out) => {
                let err = out.stderr.to_ascii_lowercase();
                if strict
                    || err.contains("couldn't find remote ref")
                    || err.contains("could not find remote ref")
                {
                    return false;
                }
            }
            None if strict => return false,
            None => {}
        }
    }
    for candidate in [
        format!("{git_ref}^{{commit}}"),
        format!("origin/{git_ref}^{{commit}}"),
    ] {
        let Some(out) = git_in(
            repo,
            &["rev-parse", "--verify", "--quiet", &candidate],
            LOCAL_TIMEOUT,
        ) else {
            continue;
        };
        let sha = out.stdout.trim().to_string();
        if out.success && !sha.is_empty() {
            return succeeded(git_in(
                repo,
                &["checkout", "--force", "--detach", &sha],
                LOCAL_TIMEOUT,
            ));
        }
    }
    false
}

/// Clones `url` into `repo` (shallow) or, when a clone is there, updates it; then checks out
/// `git_ref` when given. Without `strict`, a clone whose update fails is used as it is.
/// Returns whether `repo` now holds a usable checkout.
pub fn clone_or_update(
    url: &str,
    repo: &Path,
    git_ref: Option<&str>,
    update: bool,
    strict: bool,
) -> bool {
    if let Some(parent) = repo.parent() {
        if std::fs::create_dir_all(parent).is_err() {
            return false;
        }
    }
    let Some(_lock) = lock(repo) else {
        return false;
    };
    if repo.join(".git").exists() {
        if let Some(r) = git_ref {
            return checkout_ref(repo, r, update, strict);
        }
        if update {
            let fetched = succeeded(git_in(
                repo,
                &["fetch", "--depth", "1", "origin", "HEAD"],
                FETCH_TIMEOUT,
            ));
            if fetched {
                return succeeded(git_in(
                    repo,
                    &["checkout", "--force", "--detach", "FETCH_HEAD"],
                    LOCAL_TIMEOUT,
                ));
            }
            if strict {
                return false;
            }
            tracing::warn!(repo = %repo.display(), "could not update a cached clone; using it as it is");
        }
        return true;
    }
    if repo.exists() && std::fs::remove_dir_all(repo).is_err() {
        return false;
    }
    let cmd = git::command([
        std::ffi::OsStr::new("clone"),
        "--depth".as_ref(),
        "1".as_ref(),
        "--quiet".as_ref(),
        "--".as_ref(),
        url.as_ref(),
        repo.as_os_str(),
    ]);
    let cloned = match git::run(cmd, CLONE_TIMEOUT) {
        Ok(out) if out.success => true,
        Ok(out) => {
            tracing::warn!(url = %redact_url_credentials(url, false), error = %redact_in_text(out.stderr.trim()), "git clone failed");
            false
        }
        Err(e) => {
            tracing::warn!(url = %redact_url_credentials(url, false), error = ?e, "git clone failed");
            false
        }
    };
    if !cloned {
        let _ = std::fs::remove_dir_all(repo);
        return false;
    }
    match git_ref {
        Some(r) => checkout_ref(repo, r, true, strict),
        None => true,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_like_the_reference() {
        assert_eq!(
            parse("github:OpenHands/extensions/plugins/x").unwrap(),
            (
                Kind::GitHub,
                "https://github.com/OpenHands/extensions.git".into()
            )
        );
        assert!(parse("github:OpenHands")
            .unwrap_err()
            .starts_with("Invalid GitHub shorthand"));
        assert_eq!(
            parse("https://github.com/o/r/").unwrap().1,
            "https://github.com/o/r.git"
        );
        assert_eq!(parse("git@github.com:o/r.git").unwrap().0, Kind::Git);
        assert_eq!(parse("file:///tmp/x").unwrap().0, Kind::Git);
        assert_eq!(parse("~/p").unwrap().0, Kind::Local);
        assert_eq!(parse("plugins/x").unwrap().0, Kind::Local);
        assert_eq!(parse("C:\\x").unwrap().0, Kind::Local);
        assert!(parse("notapath")
            .unwrap_err()
            .starts_with("Unable to parse extension source"));
    }

    #[test]
    fn cache_names_match_the_reference() {
        let p = cache_path("file:///tmp/refplug/src/gitrepo", Path::new("/c"));
        assert_eq!(p, Path::new("/c/gitrepo-a848390d9f31d4e5"));
        let p = cache_path(
            "https://github.com/OpenHands/extensions.git",
            Path::new("/c"),
        );
        assert_eq!(p, Path::new("/c/extensions-e40d070fedd3f46c"));
        assert_eq!(extract_repo_name("git@host:team/My.Repo.git"), "My-Repo");
        assert_eq!(extract_repo_name("https://x/"), "x");
        assert_eq!(extract_repo_name("https://"), "repo");
    }

    #[test]
    fn credentials_are_masked() {
        assert_eq!(
            redact_url_credentials("https://u:pw@github.com/o/r.git", false),
            "https://****@github.com/o/r.git"
        );
        assert_eq!(
            redact_url_credentials("https://x:${TOK}@h/r.git", true),
            "https://x:${TOK}@h/r.git"
        );
        assert_eq!(
            redact_in_text("fatal: 'https://u:pw@h/r.git/' x"),
            "fatal: 'https://****@h/r.git/' x"
        );
        assert_eq!(
            plugin_wording("Local extension path does not exist: /x"),
            "Local plugin path does not exist: /x"
        );
    }

    #[test]
    fn paths_resolve_without_existing() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::os::unix::fs::symlink(real.join("target"), real.join("link")).unwrap();
        assert_eq!(resolve(&real.join("link/a/../b")), real.join("target/b"));
        assert!(!resolves_within(&real.join("x/../../y"), &real));
    }
}
