//! `POST /api/plugins/fetch`: the strict fetch (the reference's `fetch_plugin_strict` with
//! local sources allowed and the pin cache on). `${NAME}` references in the source and ref
//! must name a secret; a git source is fetched at one commit into a scratch repository (no
//! credential helpers, no prompts, the request's deadline per git command) and copied,
//! without `.git`, to `<persistence>/cache/plugins/<repo>-<hash>/resolved-refs/<sha>`; the
//! plugin there must have a manifest and load. Failures carry the reference's codes.
//! Blocking: call from `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use regex::Regex;
use serde_json::{json, Value};

use super::installed::copy_tree_links;
use super::load;
use super::pyfmt;
use super::source::{self, Kind};
use super::PluginError;

fn fail(code: &'static str, message: impl Into<String>) -> PluginError {
    PluginError::Source {
        code,
        message: message.into(),
    }
}

fn placeholder() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"\$\{([a-zA-Z_][a-zA-Z0-9_]*)(?::-([^}]*))?\}")
            .unwrap_or_else(|_| Regex::new("$^").expect("regex"))
    })
}

/// Names referenced as `${NAME}` in `texts`, sorted, each once.
pub fn referenced_names(texts: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = texts
        .iter()
        .flat_map(|t| placeholder().captures_iter(t).map(|c| c[1].to_string()))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn expand(text: &str, values: &[(String, String)]) -> String {
    placeholder()
        .replace_all(text, |c: &regex::Captures<'_>| {
            values
                .iter()
                .find(|(k, _)| k == &c[1])
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| c[0].to_string())
        })
        .into_owned()
}

fn sanitize(message: &str, secrets: &[String]) -> String {
    let mut out = source::redact_url_credentials(&source::redact_in_text(message), false);
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "****");
    }
    out
}

/// The error code of a failed git command, from its stderr.
fn classify(stderr: &str, default: &'static str) -> &'static str {
    let lower = stderr.to_lowercase();
    let any = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    if any(&["authentication failed", "authentication required"]) {
        "auth_failed"
    } else if any(&[
        "couldn't find remote ref",
        "could not find remote ref",
        "not our ref",
        "unadvertised object",
        "bad object",
        "needed a single revision",
    ]) {
        "ref_not_found"
    } else if any(&[
        "could not read username",
        "terminal prompts disabled",
        "repository not found",
        "could not resolve host",
        "failed to connect",
        "connection refused",
        "does not appear to be a git repository",
        "access rights",
    ]) {
        "source_unavailable"
    } else {
        default
    }
}

struct Git<'a> {
    repo: PathBuf,
    timeout: Duration,
    secrets: &'a [String],
}

impl Git<'_> {
    fn run(&self, args: &[&str], default: &'static str) -> Result<String, PluginError> {
        let mut cmd = super::git::command([
            "-c",
            "credential.helper=",
            "-c",
            "core.askPass=",
            "-c",
            "protocol.file.allow=always",
        ]);
        cmd.args(args)
            .current_dir(&self.repo)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_ASKPASS", "true")
            .env("SSH_ASKPASS", "true");
        match super::git::run(cmd, self.timeout) {
            Ok(out) if out.success => Ok(out.stdout),
            Ok(out) => {
                // Python reads the output in text mode: universal newlines.
                let text = out.stderr.replace("\r\n", "\n").replace('\r', "\n");
                let stderr = sanitize(text.trim(), self.secrets);
                Err(fail(classify(&stderr, default), stderr))
            }
            Err(super::git::RunError::TimedOut) => Err(fail("timeout", "Git operation timed out.")),
            Err(super::git::RunError::Spawn(e)) => {
                Err(fail("source_unavailable", format!("Git failed: {e}")))
            }
        }
    }
}

/// The plugin directory `repo_path` names under `root` (which it must not leave).
fn apply_repo_path(root: &Path, repo_path: Option<&str>) -> Result<PathBuf, PluginError> {
    let Some(rp) = repo_path.filter(|r| !r.is_empty()) else {
        return Ok(root.to_path_buf());
    };
    let path = root.join(rp.trim_matches('/'));
    if !source::resolves_within(&path, root) || !path.is_dir() {
        return Err(fail(
            "repo_path_not_found",
            format!("repo_path not found: {rp}"),
        ));
    }
    Ok(path)
}

/// The request of a strict fetch.
#[derive(Debug, Clone)]
pub struct Request {
    pub source: String,
    pub git_ref: Option<String>,
    pub repo_path: Option<String>,
    /// Secret name → value (`None`: named but without a value).
    pub secrets: Vec<(String, Option<String>)>,
    pub timeout: Duration,
}

/// Fetches and checks a plugin; answers `FetchPluginResponse`.
pub fn fetch(req: &Request, cache_dir: &Path, data_root: &Path) -> Result<Value, PluginError> {
    let mut texts = vec![req.source.as_str()];
    if let Some(r) = &req.git_ref {
        texts.push(r);
    }
    let mut values = Vec::new();
    for name in referenced_names(&texts) {
        match req.secrets.iter().find(|(k, _)| *k == name) {
            Some((_, Some(v))) => values.push((name, v.clone())),
            _ => return Err(fail("missing_secret", format!("Missing secret: {name}"))),
        }
    }
    let secret_values: Vec<String> = values.iter().map(|(_, v)| v.clone()).collect();
    let expanded = expand(&req.source, &values);
    let git_ref = req.git_ref.as_deref().map(|r| expand(r, &values));
    let (kind, url) =
        source::parse(&expanded).map_err(|_| fail("invalid_source", "Invalid plugin source."))?;
    let repo_path = req.repo_path.as_deref();
    let checked = |root: PathBuf, resolved: Option<String>| {
        check(&root, req, resolved, &secret_values, data_root)
    };
    if kind == Kind::Local {
        let root = source::resolve(&source::expand_user(&url));
        return checked(apply_repo_path(&root, repo_path)?, None);
    }
    let pins = source::cache_path(&url, cache_dir).join("resolved-refs");
    if let Some(sha) = git_ref
        .as_deref()
        .filter(|r| r.len() == 40 && r.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        let pinned = pins.join(sha.to_ascii_lowercase());
        if pinned.is_dir() {
            return checked(
                apply_repo_path(&pinned, repo_path)?,
                Some(sha.to_ascii_lowercase()),
            );
        }
    }
    let work = Scratch(
        std::env::temp_dir().join(format!("openhands-plugin-fetch-{}", crate::util::hex_id())),
    );
    let git = Git {
        repo: work.0.join("repo"),
        timeout: req.timeout,
        secrets: &secret_values,
    };
    std::fs::create_dir_all(&git.repo)?;
    git.run(&["init", "--quiet"], "source_unavailable")?;
    git.run(
        &["remote", "add", "--", "origin", &url],
        "source_unavailable",
    )?;
    let fetch_ref = git_ref.as_deref().unwrap_or("HEAD");
    if fetch_ref.starts_with('-') {
        return Err(fail("ref_not_found", format!("Ref not found: {fetch_ref}")));
    }
    let default = if git_ref.is_some() {
        "ref_not_found"
    } else {
        "source_unavailable"
    };
    git.run(&["fetch", "--depth", "1", "origin", fetch_ref], default)?;
    let sha = git
        .run(&["rev-parse", "FETCH_HEAD^{commit}"], "ref_not_found")?
        .trim()
        .to_ascii_lowercase();
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(fail("ref_not_found", format!("Ref not found: {fetch_ref}")));
    }
    git.run(&["checkout", "--quiet", "--detach", &sha], "ref_not_found")?;
    let pinned = store_pinned(&git.repo, &pins, &sha)?;
    checked(apply_repo_path(&pinned, repo_path)?, Some(sha))
}

/// Copies a checkout (without `.git`) to `pins/<sha>` unless it is there already.
fn store_pinned(checkout: &Path, pins: &Path, sha: &str) -> Result<PathBuf, PluginError> {
    std::fs::create_dir_all(pins)?;
    let target = pins.join(sha);
    let lock_path = pins.join(format!("{sha}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| std::io::Error::from(e))?;
    if target.is_dir() {
        return Ok(target);
    }
    let tmp = pins.join(format!(".{sha}.{}.tmp", std::process::id()));
    if tmp.symlink_metadata().is_ok() {
        std::fs::remove_dir_all(&tmp)?;
    }
    if let Err(e) = copy_tree_links(checkout, &tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.into());
    }
    std::fs::rename(&tmp, &target)?;
    Ok(target)
}

/// The raw manifest and the loaded contents of a fetched plugin.
fn check(
    root: &Path,
    req: &Request,
    resolved_ref: Option<String>,
    secrets: &[String],
    data_root: &Path,
) -> Result<Value, PluginError> {
    let candidates = [
        root.join("plugin.json"),
        root.join(".plugin").join("plugin.json"),
        root.join(".claude-plugin").join("plugin.json"),
    ];
    let Some(path) = candidates
        .iter()
        .find(|c| c.is_file() && source::resolves_within(c, root))
    else {
        return Err(fail(
            "invalid_plugin",
            "Invalid plugin: plugin.json not found.",
        ));
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(
            "invalid_plugin",
            format!(
                "Invalid plugin manifest: {}",
                sanitize(&e.to_string(), secrets)
            ),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let manifest = pyfmt::parse_json(text).map_err(|e| {
        fail(
            "invalid_plugin",
            format!("Invalid plugin manifest: {}", sanitize(&e, secrets)),
        )
    })?;
    if !manifest.is_object() {
        return Err(fail(
            "invalid_plugin",
            "Invalid plugin manifest: plugin.json must be an object.",
        ));
    }
    let plugin = load::load(root, data_root).map_err(|e| {
        fail(
            "invalid_plugin",
            format!("Invalid plugin: {}", sanitize(&e.to_string(), secrets)),
        )
    })?;
    Ok(json!({
        "path": root.to_string_lossy(),
        "resolved_ref": resolved_ref,
        "source": req.source,
        "repo_path": req.repo_path,
        "manifest": manifest,
        "skills": plugin.skills.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        "commands": plugin.commands.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
    }))
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn git_errors_are_classified() {
        assert_eq!(
            classify("fatal: couldn't find remote ref nope", "source_unavailable"),
            "ref_not_found"
        );
        assert_eq!(
            classify(
                "fatal: unable to access 'x': Could not resolve host: github.com",
                "ref_not_found"
            ),
            "source_unavailable"
        );
        assert_eq!(classify("odd", "ref_not_found"), "ref_not_found");
        assert_eq!(
            sanitize("https://u:tok@h/x tok", &["tok".into()]),
            "https://****@h/x ****"
        );
        assert_eq!(referenced_names(&["${B}${A:-x}", "${B}"]), ["A", "B"]);
    }
}
