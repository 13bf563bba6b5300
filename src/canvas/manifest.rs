//! The Canvas extension manifest (`canvas-extension.json`): parsed the way the reference's
//! pydantic model validates it (lax numbers, unknown keys ignored, a non-SVG icon dropped
//! rather than rejected) and dumped with its key order, so the revision hash of a manifest is
//! the reference's. Entry-point and icon containment are checked against the package root.

use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{json, Map, Value};

/// File a package's manifest is read from, at its root.
pub const MANIFEST_FILENAME: &str = "canvas-extension.json";

/// Platforms a backend artifact may be declared for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    LinuxAmd64,
    LinuxArm64,
}

impl Platform {
    /// The manifest key of the platform.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::LinuxAmd64 => "linux-amd64",
            Platform::LinuxArm64 => "linux-arm64",
        }
    }

    fn parse(key: &str) -> Option<Self> {
        match key {
            "linux-amd64" => Some(Platform::LinuxAmd64),
            "linux-arm64" => Some(Platform::LinuxArm64),
            _ => None,
        }
    }

    /// The platform of this machine, if backends can run on it.
    pub fn current() -> Option<Self> {
        if std::env::consts::OS != "linux" {
            return None;
        }
        match std::env::consts::ARCH {
            "x86_64" => Some(Platform::LinuxAmd64),
            "aarch64" => Some(Platform::LinuxArm64),
            _ => None,
        }
    }
}

/// A page contributed to the Canvas navigation.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub id: String,
    pub title: String,
    pub path: String,
}

/// A backend artifact for one platform: a package-relative archive or an HTTPS URL.
#[derive(Debug, Clone, PartialEq)]
pub struct Artifact {
    /// Package-relative `.tar.gz` path; empty for a URL artifact.
    pub path: String,
    pub url: Option<String>,
    pub sha256: String,
    pub strip_components: u32,
}

/// The loopback readiness probe of a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub path: String,
    pub timeout_seconds: f64,
    pub interval_seconds: f64,
}

/// An optional backend process declared by a Canvas App.
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    /// In manifest order.
    pub artifacts: Vec<(Platform, Artifact)>,
    pub argv: Vec<String>,
    pub health: Health,
    pub inherit_environment: Vec<String>,
}

impl Backend {
    /// The artifact declared for `platform`.
    pub fn artifact(&self, platform: Platform) -> Option<&Artifact> {
        self.artifacts
            .iter()
            .find(|(p, _)| *p == platform)
            .map(|(_, a)| a)
    }
}

/// A validated manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub display_name: String,
    pub version: String,
    pub description: String,
    pub entrypoint: String,
    pub pages: Vec<Page>,
    pub backend: Option<Backend>,
    pub icon: Option<String>,
}

/// Why a manifest was refused (the API words every case the same way; this is for logs).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// Why a package directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// There is no manifest file at the package root.
    #[error("no {MANIFEST_FILENAME} in the package")]
    NoManifest,
    /// The manifest (or the package around it) is not valid.
    #[error("invalid canvas extension: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

fn regex(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a valid static pattern"))
}

/// Whether `name` is kebab-case (`^[a-z0-9]+(?:-[a-z0-9]+)*$`), the rule for extension names
/// and page ids.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn valid_page_path(path: &str) -> bool {
    path.strip_prefix('/')
        .is_some_and(|rest| rest.split('/').all(valid_name))
}

/// `Path(value).parts` holds `..`.
fn has_parent_part(value: &str) -> bool {
    value.split('/').any(|p| p == "..")
}

// ---- pydantic-like lax field readers ----------------------------------------------------

fn string(v: &Value, field: &str) -> Result<String, Invalid> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| invalid(format!("{field}: Input should be a valid string")))
}

/// A lax integer: JSON integers, floats without a fraction, numeric strings, booleans.
fn integer(v: &Value, field: &str) -> Result<i64, Invalid> {
    let bad = || invalid(format!("{field}: Input should be a valid integer"));
    let from_float = |f: f64| {
        if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 {
            Ok(f as i64)
        } else {
            Err(bad())
        }
    };
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(i),
            None => from_float(n.as_f64().ok_or_else(bad)?),
        },
        Value::String(s) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(i) => Ok(i),
                Err(_) => from_float(s.parse::<f64>().map_err(|_| bad())?),
            }
        }
        Value::Bool(b) => Ok(i64::from(*b)),
        _ => Err(bad()),
    }
}

/// A lax float: JSON numbers, numeric strings, booleans.
fn number(v: &Value, field: &str) -> Result<f64, Invalid> {
    let bad = || invalid(format!("{field}: Input should be a valid number"));
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(bad),
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| bad()),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        _ => Err(bad()),
    }
}

fn object<'v>(v: &'v Value, field: &str) -> Result<&'v Map<String, Value>, Invalid> {
    v.as_object()
        .ok_or_else(|| invalid(format!("{field}: Input should be an object")))
}

fn array<'v>(v: &'v Value, field: &str) -> Result<&'v Vec<Value>, Invalid> {
    v.as_array()
        .ok_or_else(|| invalid(format!("{field}: Input should be a valid array")))
}

fn required<'v>(m: &'v Map<String, Value>, key: &str) -> Result<&'v Value, Invalid> {
    m.get(key)
        .ok_or_else(|| invalid(format!("{key}: Field required")))
}

fn strings(v: &Value, field: &str) -> Result<Vec<String>, Invalid> {
    array(v, field)?
        .iter()
        .map(|item| string(item, field))
        .collect()
}

// ---- the model ---------------------------------------------------------------------------

/// Parses and validates manifest bytes (`model_validate_json`).
pub fn parse(bytes: &[u8]) -> Result<Manifest, Invalid> {
    let text = std::str::from_utf8(bytes).map_err(|_| invalid("manifest is not UTF-8"))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
    from_value(&value)
}

/// Validates a manifest document.
pub fn from_value(value: &Value) -> Result<Manifest, Invalid> {
    let m = value
        .as_object()
        .ok_or_else(|| invalid("manifest must be an object"))?;
    let schema_version = integer(required(m, "schema_version")?, "schema_version")?;
    if schema_version != 1 {
        return Err(invalid("unsupported canvas extension schema_version"));
    }
    let name = string(required(m, "name")?, "name")?;
    if !valid_name(&name) {
        return Err(invalid(format!(
            "Invalid extension name. Expected kebab-case, got {name:?}."
        )));
    }
    let display_name = string(required(m, "display_name")?, "display_name")?;
    let version = string(required(m, "version")?, "version")?;
    let description = match m.get("description") {
        Some(v) => string(v, "description")?,
        None => String::new(),
    };
    let entrypoint = string(required(m, "entrypoint")?, "entrypoint")?;
    if entrypoint.is_empty() {
        return Err(invalid("entrypoint must not be empty"));
    }
    if entrypoint.starts_with('/') {
        return Err(invalid("entrypoint must be relative, not absolute"));
    }
    if has_parent_part(&entrypoint) {
        return Err(invalid("entrypoint cannot contain '..'"));
    }
    let pages = match m.get("contributes") {
        Some(c) => pages(object(c, "contributes")?)?,
        None => Vec::new(),
    };
    let backend = match m.get("backend") {
        None | Some(Value::Null) => None,
        Some(b) => Some(backend(b)?),
    };
    // A non-SVG icon is dropped, never an error (the manifest is re-read on every request).
    let icon = match m.get("icon") {
        Some(Value::String(s)) if s.ends_with(".svg") => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => {
            tracing::warn!(icon = %other, "ignoring invalid canvas extension icon");
            None
        }
    };
    Ok(Manifest {
        name,
        display_name,
        version,
        description,
        entrypoint,
        pages,
        backend,
        icon,
    })
}

fn pages(contributes: &Map<String, Value>) -> Result<Vec<Page>, Invalid> {
    let Some(list) = contributes.get("pages") else {
        return Ok(Vec::new());
    };
    let mut out: Vec<Page> = Vec::new();
    for item in array(list, "contributes.pages")? {
        let p = object(item, "page")?;
        let id = string(required(p, "id")?, "page.id")?;
        let title = string(required(p, "title")?, "page.title")?;
        let path = string(required(p, "path")?, "page.path")?;
        if !valid_name(&id) {
            return Err(invalid(format!("Invalid contribution id {id:?}")));
        }
        if !valid_page_path(&path) {
            return Err(invalid(format!("Invalid page path {path:?}")));
        }
        out.push(Page { id, title, path });
    }
    for (i, page) in out.iter().enumerate() {
        if out[..i].iter().any(|p| p.id == page.id) {
            return Err(invalid(format!(
                "Duplicate page contribution id: {:?}",
                page.id
            )));
        }
        if out[..i].iter().any(|p| p.path == page.path) {
            return Err(invalid(format!("Duplicate page path: {:?}", page.path)));
        }
    }
    Ok(out)
}

/// Placeholders a backend argv may hold.
const ARGV_PLACEHOLDERS: [&str; 3] = ["{port}", "{data_dir}", "{artifact_dir}"];
/// Variables a backend may inherit from the server's environment.
pub const SAFE_INHERITED_ENV: [&str; 6] = ["LANG", "LC_ALL", "LC_CTYPE", "PATH", "TMPDIR", "TZ"];

fn backend(value: &Value) -> Result<Backend, Invalid> {
    let b = object(value, "backend")?;
    // `Literal[1]`: 1, 1.0 and true pass; "1" does not.
    let literal_one = match required(b, "schema_version")? {
        Value::Number(n) => n.as_f64() == Some(1.0),
        Value::Bool(true) => true,
        _ => false,
    };
    if !literal_one {
        return Err(invalid("backend.schema_version: Input should be 1"));
    }
    let arts = object(required(b, "artifacts")?, "backend.artifacts")?;
    let mut artifacts = Vec::new();
    for (key, art) in arts {
        let platform = Platform::parse(key)
            .ok_or_else(|| invalid(format!("unsupported backend platform {key:?}")))?;
        artifacts.push((platform, artifact(art)?));
    }
    if artifacts.is_empty() {
        return Err(invalid(
            "backend.artifacts must declare at least one platform",
        ));
    }
    let argv = strings(required(b, "argv")?, "backend.argv")?;
    if argv.is_empty() {
        return Err(invalid("backend.argv must not be empty"));
    }
    static PLACEHOLDER: OnceLock<Regex> = OnceLock::new();
    let placeholder = regex(&PLACEHOLDER, r"\{[^{}]+\}");
    for arg in &argv {
        if arg.is_empty() || arg.contains('\0') {
            return Err(invalid("backend argv entries must be non-empty"));
        }
        if placeholder
            .find_iter(arg)
            .any(|m| !ARGV_PLACEHOLDERS.contains(&m.as_str()))
        {
            return Err(invalid("backend argv contains an unsupported placeholder"));
        }
    }
    let health = match b.get("health") {
        Some(h) => health(h)?,
        None => Health {
            path: "/health".into(),
            timeout_seconds: 30.0,
            interval_seconds: 0.1,
        },
    };
    let inherit_environment = match b.get("inherit_environment") {
        Some(v) => strings(v, "backend.inherit_environment")?,
        None => Vec::new(),
    };
    for (i, var) in inherit_environment.iter().enumerate() {
        if inherit_environment[..i].contains(var) {
            return Err(invalid("inherit_environment entries must be unique"));
        }
        if !SAFE_INHERITED_ENV.contains(&var.as_str()) {
            return Err(invalid(
                "inherit_environment contains a disallowed variable",
            ));
        }
    }
    if !argv[0].contains("{artifact_dir}") {
        return Err(invalid(
            "backend argv executable must be inside {artifact_dir}",
        ));
    }
    Ok(Backend {
        artifacts,
        argv,
        health,
        inherit_environment,
    })
}

fn artifact(value: &Value) -> Result<Artifact, Invalid> {
    let a = object(value, "artifact")?;
    // A URL artifact without a path gets an empty one (a "before" validator).
    let url_given = a.get("url").is_some_and(|u| match u {
        Value::String(s) => !s.is_empty(),
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::Array(v) => !v.is_empty(),
        Value::Object(o) => !o.is_empty(),
        Value::Bool(true) => true,
    });
    let path = match a.get("path") {
        Some(p) => string(p, "artifact.path")?,
        None if url_given => String::new(),
        None => return Err(invalid("artifact.path: Field required")),
    };
    let url = match a.get("url") {
        None | Some(Value::Null) => None,
        Some(u) => Some(string(u, "artifact.url")?),
    };
    let sha256 = string(required(a, "sha256")?, "artifact.sha256")?;
    if sha256.len() != 64
        || !sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(invalid("artifact.sha256 must be a lowercase SHA-256"));
    }
    let strip_components = match a.get("strip_components") {
        Some(v) => integer(v, "artifact.strip_components")?,
        None => 0,
    };
    if !(0..=16).contains(&strip_components) {
        return Err(invalid("artifact.strip_components must be within 0..16"));
    }
    if !path.is_empty()
        && (path.starts_with('/') || has_parent_part(&path) || !path.ends_with(".tar.gz"))
    {
        return Err(invalid("artifact path must be a relative .tar.gz path"));
    }
    if let Some(u) = &url {
        let parts = UrlParts::split(u);
        let ok = parts.scheme == "https"
            && parts.hostname().is_some()
            && !parts.has_userinfo()
            && parts.fragment.is_none_or(str::is_empty)
            && parts.path.ends_with(".tar.gz");
        if !ok {
            return Err(invalid(
                "artifact url must be a credential-free HTTPS .tar.gz URL",
            ));
        }
    }
    if path.is_empty() == url.is_none() {
        return Err(invalid("artifact must declare exactly one of path or url"));
    }
    if !path.is_empty() && strip_components != 0 {
        return Err(invalid(
            "strip_components is supported only for remote artifacts",
        ));
    }
    Ok(Artifact {
        path,
        url,
        sha256,
        strip_components: strip_components as u32,
    })
}

fn health(value: &Value) -> Result<Health, Invalid> {
    let h = object(value, "backend.health")?;
    let path = match h.get("path") {
        Some(p) => string(p, "health.path")?,
        None => "/health".into(),
    };
    static HEALTH_PATH: OnceLock<Regex> = OnceLock::new();
    if !regex(&HEALTH_PATH, r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$").is_match(&path) {
        return Err(invalid("health.path does not match its pattern"));
    }
    let bounded = |key: &str, default: f64, max: f64| -> Result<f64, Invalid> {
        let x = match h.get(key) {
            Some(v) => number(v, key)?,
            None => return Ok(default),
        };
        if x > 0.0 && x <= max {
            Ok(x)
        } else {
            Err(invalid(format!("health.{key} is out of range")))
        }
    };
    Ok(Health {
        path,
        timeout_seconds: bounded("timeout_seconds", 30.0, 300.0)?,
        interval_seconds: bounded("interval_seconds", 0.1, 10.0)?,
    })
}

impl Manifest {
    /// The manifest as the API shows it (`model_dump`: `backend`/`icon` left out when unset,
    /// an artifact's `url` always present).
    pub fn to_json(&self) -> Value {
        self.dump(true)
    }

    /// The installed revision of a manifest without a resolved git ref:
    /// `sha256:` + the hash of its compact dump without nulls (`model_dump_json(exclude_none)`).
    pub fn revision(&self) -> String {
        use sha2::{Digest, Sha256};
        let payload = self.dump(false).to_string();
        let digest = Sha256::digest(payload.as_bytes());
        format!("sha256:{}", hex(&digest))
    }

    fn dump(&self, with_null_url: bool) -> Value {
        let mut m = Map::new();
        m.insert("schema_version".into(), json!(1));
        m.insert("name".into(), json!(self.name));
        m.insert("display_name".into(), json!(self.display_name));
        m.insert("version".into(), json!(self.version));
        m.insert("description".into(), json!(self.description));
        m.insert("entrypoint".into(), json!(self.entrypoint));
        let pages: Vec<Value> = self
            .pages
            .iter()
            .map(|p| json!({"id": p.id, "title": p.title, "path": p.path}))
            .collect();
        m.insert("contributes".into(), json!({ "pages": pages }));
        if let Some(b) = &self.backend {
            let mut artifacts = Map::new();
            for (platform, a) in &b.artifacts {
                let mut art = Map::new();
                art.insert("path".into(), json!(a.path));
                if a.url.is_some() || with_null_url {
                    art.insert("url".into(), json!(a.url));
                }
                art.insert("sha256".into(), json!(a.sha256));
                art.insert("strip_components".into(), json!(a.strip_components));
                artifacts.insert(platform.as_str().into(), Value::Object(art));
            }
            m.insert(
                "backend".into(),
                json!({
                    "schema_version": 1,
                    "artifacts": artifacts,
                    "argv": b.argv,
                    "health": {
                        "path": b.health.path,
                        "timeout_seconds": b.health.timeout_seconds,
                        "interval_seconds": b.health.interval_seconds,
                    },
                    "inherit_environment": b.inherit_environment,
                }),
            );
        }
        if let Some(icon) = &self.icon {
            m.insert("icon".into(), json!(icon));
        }
        Value::Object(m)
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- loading from a package directory ----------------------------------------------------

/// Reads and validates the manifest of the package at `dir`, and checks that its entry point
/// resolves to a regular file inside the package (`load_from_dir`). Blocking.
pub fn load_from_dir(dir: &Path) -> Result<Manifest, LoadError> {
    let bytes = match std::fs::read(dir.join(MANIFEST_FILENAME)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::NoManifest),
        Err(e) => return Err(LoadError::Invalid(e.to_string())),
    };
    let manifest = parse(&bytes).map_err(|e| LoadError::Invalid(e.0))?;
    if resolve_contained_file(dir, &manifest.entrypoint).is_none() {
        return Err(LoadError::Invalid(format!(
            "entrypoint {:?} does not resolve to a file in the extension package",
            manifest.entrypoint
        )));
    }
    Ok(manifest)
}

/// `relative` under `root` with symlinks resolved, if that is a regular file inside the
/// resolved `root` (a directory, a dangling link, a loop or an escape answer `None`). Blocking.
pub fn resolve_contained_file(root: &Path, relative: &str) -> Option<PathBuf> {
    let root = std::fs::canonicalize(root).ok()?;
    let candidate = std::fs::canonicalize(root.join(relative)).ok()?;
    (candidate.starts_with(&root) && candidate.is_file()).then_some(candidate)
}

/// `path` made absolute and resolved like Python's non-strict `Path.resolve()`: symlinks of the
/// part that exists are resolved, the rest is appended lexically.
pub fn resolve_lenient(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut normal = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other.as_os_str()),
        }
    }
    let mut existing = normal.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = std::fs::canonicalize(&existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return normal,
        }
    }
}

// ---- URLs ---------------------------------------------------------------------------------

/// A URL's port that is not a number in 0..=65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidPort;

/// A URL split like Python's `urllib.parse.urlsplit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlParts<'a> {
    /// Lower-cased; empty when there is none.
    pub scheme: String,
    pub netloc: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub fragment: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    /// Splits `url` into its parts.
    pub fn split(url: &'a str) -> Self {
        let mut rest = url;
        let mut scheme = String::new();
        if let Some(i) = url.find(':') {
            let candidate = &url[..i];
            let valid = candidate
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && candidate
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if valid {
                scheme = candidate.to_ascii_lowercase();
                rest = &url[i + 1..];
            }
        }
        let mut netloc = "";
        if let Some(after) = rest.strip_prefix("//") {
            let end = after.find(['/', '?', '#']).unwrap_or(after.len());
            netloc = &after[..end];
            rest = &after[end..];
        }
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        UrlParts {
            scheme,
            netloc,
            path,
            query,
            fragment,
        }
    }

    /// Whether the netloc holds user information (`user[:password]@`).
    pub fn has_userinfo(&self) -> bool {
        self.netloc.contains('@')
    }

    fn host_port(&self) -> (&'a str, Option<&'a str>) {
        let hostinfo = self.netloc.rsplit_once('@').map_or(self.netloc, |(_, h)| h);
        if let Some(bracketed) = hostinfo.strip_prefix('[') {
            let (host, after) = bracketed.split_once(']').unwrap_or((bracketed, ""));
            (host, after.strip_prefix(':'))
        } else {
            match hostinfo.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostinfo, None),
            }
        }
    }

    /// The lower-cased host name, if any.
    pub fn hostname(&self) -> Option<String> {
        let (host, _) = self.host_port();
        (!host.is_empty()).then(|| host.to_ascii_lowercase())
    }

    /// The explicit port: `Ok(None)` without one, `Err` when it is not a valid port.
    pub fn port(&self) -> Result<Option<u16>, InvalidPort> {
        match self.host_port().1 {
            None | Some("") => Ok(None),
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u16>().map(Some).map_err(|_| InvalidPort)
            }
            Some(_) => Err(InvalidPort),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hello() -> Value {
        serde_json::from_str(
            r#"{
  "schema_version": 1,
  "name": "hello-app",
  "display_name": "Hello App",
  "version": "0.1.0",
  "description": "A tiny test app",
  "entrypoint": "dist/index.js",
  "icon": "icon.svg",
  "contributes": {"pages": [{"id": "main", "title": "Hello", "path": "/hello"}]},
  "backend": {
    "schema_version": 1,
    "artifacts": {"linux-amd64": {"path": "backend/backend-linux-amd64.tar.gz", "sha256": "dbb9c59682c42a688090224c9da1f8fc4f35ebdeb004650fb392e29f41a797b4"}},
    "argv": ["{artifact_dir}/server.py", "{port}", "{data_dir}"],
    "health": {"path": "/health", "timeout_seconds": 10, "interval_seconds": 0.2},
    "inherit_environment": ["PATH", "LANG"]
  }
}"#,
        )
        .unwrap()
    }

    #[test]
    fn the_revision_is_the_references() {
        let m = from_value(&hello()).unwrap();
        assert_eq!(
            m.revision(),
            "sha256:e55a2e6635d871a84eeed45999af69f055312b3ca6a69a03f03fab7ac68f7f67"
        );
        let shown = m.to_json();
        assert_eq!(
            shown["backend"]["artifacts"]["linux-amd64"]["url"],
            Value::Null
        );
        assert_eq!(shown["backend"]["health"]["timeout_seconds"], json!(10.0));
        assert_eq!(
            shown
                .as_object()
                .unwrap()
                .keys()
                .next_back()
                .map(String::as_str),
            Some("icon")
        );
    }

    #[test]
    fn lax_values_and_dropped_icons_as_pydantic() {
        let base = json!({"schema_version": "1", "name": "a", "display_name": "A",
                          "version": "1", "entrypoint": "x.js", "icon": "i.png", "extra": 5});
        let m = from_value(&base).unwrap();
        assert_eq!(m.icon, None);
        for (key, bad) in [
            ("version", json!(1)),
            ("description", Value::Null),
            ("schema_version", json!(2)),
            ("schema_version", json!(1.5)),
            ("name", json!("Bad_Name")),
            ("entrypoint", json!("/abs.js")),
            ("entrypoint", json!("a/../b.js")),
            ("entrypoint", json!("")),
            ("contributes", Value::Null),
        ] {
            let mut v = base.clone();
            v[key] = bad.clone();
            assert!(from_value(&v).is_err(), "{key} = {bad} accepted");
        }
        let mut v = base.clone();
        v["schema_version"] = json!(true);
        assert!(from_value(&v).is_ok());
        let be = json!({"schema_version": 1,
                        "artifacts": {"linux-amd64": {"path": "b.tar.gz", "sha256": "a".repeat(64), "strip_components": 0}},
                        "argv": ["{artifact_dir}/x"], "health": {}, "inherit_environment": []});
        let mut v = base.clone();
        v["backend"] = be.clone();
        let m = from_value(&v).unwrap();
        assert_eq!(m.backend.as_ref().unwrap().health.interval_seconds, 0.1);
        for (pointer, bad) in [
            ("/backend/schema_version", json!("1")),
            ("/backend/argv/0", json!("/bin/x")),
            ("/backend/argv", json!(["{artifact_dir}/x", "{x}"])),
            ("/backend/inherit_environment", json!(["HOME"])),
            ("/backend/inherit_environment", json!(["PATH", "PATH"])),
            ("/backend/artifacts/linux-amd64/strip_components", json!(1)),
            ("/backend/artifacts/linux-amd64/path", json!("../b.tar.gz")),
            (
                "/backend/artifacts/linux-amd64/sha256",
                json!("A".repeat(64)),
            ),
            ("/backend/health", json!({"timeout_seconds": 0})),
            ("/backend/health", json!({"path": "health"})),
        ] {
            let mut v = v.clone();
            *v.pointer_mut(pointer)
                .unwrap_or_else(|| panic!("{pointer}")) = bad.clone();
            assert!(from_value(&v).is_err(), "{pointer} = {bad} accepted");
        }
        let mut remote = v.clone();
        remote["backend"]["artifacts"]["linux-amd64"] = json!({"url": "https://h/a.tar.gz?x=1", "sha256": "a".repeat(64), "strip_components": "2"});
        let m = from_value(&remote).unwrap();
        let a = &m.backend.unwrap().artifacts[0].1;
        assert_eq!((a.path.as_str(), a.strip_components), ("", 2));
        for url in [
            "http://h/a.tar.gz",
            "https://u:p@h/a.tar.gz",
            "https://h/a.zip",
            "https:///a.tar.gz",
        ] {
            let mut r = remote.clone();
            r["backend"]["artifacts"]["linux-amd64"]["url"] = json!(url);
            assert!(from_value(&r).is_err(), "{url} accepted");
        }
    }

    #[test]
    fn urls_split_like_urllib() {
        let u = UrlParts::split("HTTPS://User@Example.COM:8443/a/b.tar.gz?q=1#f");
        assert_eq!(u.scheme, "https");
        assert_eq!(u.hostname().as_deref(), Some("example.com"));
        assert_eq!(u.port(), Ok(Some(8443)));
        assert!(u.has_userinfo());
        assert_eq!(
            (u.path, u.query, u.fragment),
            ("/a/b.tar.gz", Some("q=1"), Some("f"))
        );
        assert_eq!(
            UrlParts::split("http://[::1]:80/").hostname().as_deref(),
            Some("::1")
        );
        assert!(UrlParts::split("http://h:x/").port().is_err());
    }
}
