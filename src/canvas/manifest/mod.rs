//! The Canvas extension manifest (`canvas-extension.json`): parsed the way the reference's
//! pydantic model validates it (lax numbers, unknown keys ignored, a non-SVG icon dropped
//! rather than rejected) and dumped with its key order, so the revision hash of a manifest is
//! the reference's. Entry-point and icon containment are checked against the package root.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{json, Map, Value};

mod backend_spec;
mod fields;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod url;

pub use backend_spec::SAFE_INHERITED_ENV;
pub use url::{InvalidPort, UrlParts};

use backend_spec::backend;
use fields::{array, integer, number, object, required, string, strings};

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
    let normal = crate::util::lexical_normalize(&absolute);
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
