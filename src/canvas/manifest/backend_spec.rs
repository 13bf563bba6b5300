//! The manifest's `backend` section: argv, environment, artifacts and health check.

use super::*;

/// Placeholders a backend argv may hold.
pub(super) const ARGV_PLACEHOLDERS: [&str; 3] = ["{port}", "{data_dir}", "{artifact_dir}"];
/// Variables a backend may inherit from the server's environment.
pub const SAFE_INHERITED_ENV: [&str; 6] = ["LANG", "LC_ALL", "LC_CTYPE", "PATH", "TMPDIR", "TZ"];

pub(super) fn backend(value: &Value) -> Result<Backend, Invalid> {
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

pub(super) fn artifact(value: &Value) -> Result<Artifact, Invalid> {
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

pub(super) fn health(value: &Value) -> Result<Health, Invalid> {
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
