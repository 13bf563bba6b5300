//! Plugin manifests: the Agent Plugins `plugin.json` (checked against its schema) and the
//! Claude Code manifest (`.plugin/` or `.claude-plugin/`, else inferred).

use super::*;

pub(super) struct Manifest {
    pub(super) name: String,
    pub(super) version: String,
    pub(super) description: String,
}

pub(super) fn read_text(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .strip_prefix('\u{feff}')
        .map(str::to_string)
        .unwrap_or(text))
}

/// A root `plugin.json` that fails to parse, is not an object, or names a `$schema`.
pub(super) fn is_agent_plugins(dir: &Path) -> bool {
    let path = dir.join("plugin.json");
    if !path.is_file() {
        return false;
    }
    match read_text(&path)
        .ok()
        .map(|t| serde_json::from_str::<Value>(&t))
    {
        Some(Ok(Value::Object(m))) => m.contains_key("$schema"),
        _ => true,
    }
}

/// Checks an Agent Plugins manifest against the vendored schema; the first violation in the
/// order `jsonschema` reports it, in its words.
pub(super) fn schema_violation(data: &Map<String, Value>) -> Option<String> {
    let not_type = |v: &Value, t: &str| format!("{} is not of type '{t}'", pyfmt::repr(v));
    const ORDER: [&str; 10] = [
        "$schema",
        "name",
        "version",
        "description",
        "author",
        "homepage",
        "repository",
        "license",
        "keywords",
        "extensions",
    ];
    for key in ORDER {
        let Some(v) = data.get(key) else { continue };
        match key {
            "$schema" => {}
            "name" => {
                let Some(s) = v.as_str() else {
                    return Some(not_type(v, "string"));
                };
                let len = s.chars().count();
                if len < 1 {
                    return Some(format!("{} should be non-empty", pyfmt::repr(v)));
                }
                if len > 64 {
                    return Some(format!("{} is too long", pyfmt::repr(v)));
                }
                if !valid_manifest_name(s) {
                    return Some(format!(
                        "{} does not match {}",
                        pyfmt::repr(v),
                        pyfmt::repr_str(r"^(?!.*(?:--|\.\.))[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$")
                    ));
                }
            }
            "author" => {
                let Some(author) = v.as_object() else {
                    return Some(not_type(v, "object"));
                };
                for field in ["name", "email", "url"] {
                    if let Some(f) = author.get(field).filter(|f| !f.is_string()) {
                        return Some(not_type(f, "string"));
                    }
                }
                let extra: Vec<String> = author
                    .keys()
                    .filter(|k| !["name", "email", "url"].contains(&k.as_str()))
                    .map(|k| pyfmt::repr_str(k))
                    .collect();
                if !extra.is_empty() {
                    let verb = if extra.len() == 1 { "was" } else { "were" };
                    return Some(format!(
                        "Additional properties are not allowed ({} {verb} unexpected)",
                        extra.join(", ")
                    ));
                }
            }
            "keywords" => {
                let Some(items) = v.as_array() else {
                    return Some(not_type(v, "array"));
                };
                if let Some(bad) = items.iter().find(|i| !i.is_string()) {
                    return Some(not_type(bad, "string"));
                }
            }
            "extensions" => {
                if let Some(bad) = v
                    .as_object()
                    .and_then(|m| m.values().find(|e| !e.is_object()))
                {
                    return Some(not_type(bad, "object"));
                }
            }
            _ => {
                if !v.is_string() {
                    return Some(not_type(v, "string"));
                }
            }
        }
    }
    for required in ["$schema", "name"] {
        if !data.contains_key(required) {
            return Some(format!(
                "{} is a required property",
                pyfmt::repr_str(required)
            ));
        }
    }
    None
}

/// `^(?!.*(?:--|\.\.))[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$`
pub(super) fn valid_manifest_name(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !s.contains("--")
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge(s.chars().next())
        && edge(s.chars().last())
}

pub(super) fn agent_plugins_manifest(dir: &Path) -> Result<Manifest, LoadError> {
    let path = dir.join("plugin.json");
    let shown = path.display();
    if !resolves_within(&path, dir) {
        return Err(LoadError::Invalid(format!(
            "Manifest {shown} resolves outside the plugin root"
        )));
    }
    let text = read_text(&path)
        .map_err(|e| LoadError::Invalid(format!("Failed to read manifest {shown}: {e}")))?;
    let data = pyfmt::parse_json(&text)
        .map_err(|e| LoadError::Invalid(format!("Invalid JSON in {shown}: {e}")))?;
    let Value::Object(mut data) = data else {
        return Err(LoadError::Invalid(format!(
            "Manifest {shown} must contain a JSON object, got {}",
            pyfmt::type_name(&data)
        )));
    };
    let schema = data.get("$schema").cloned().unwrap_or(Value::Null);
    if schema != AGENT_PLUGINS_SCHEMA {
        return Err(LoadError::Invalid(format!(
            "Unsupported or missing $schema in {shown}: {}. Supported: {AGENT_PLUGINS_SCHEMA}",
            pyfmt::repr(&schema)
        )));
    }
    const KNOWN: [&str; 10] = [
        "$schema",
        "name",
        "version",
        "description",
        "author",
        "homepage",
        "repository",
        "license",
        "keywords",
        "extensions",
    ];
    data.retain(|k, _| KNOWN.contains(&k.as_str()));
    if data.get("extensions").is_some_and(|e| !e.is_object()) {
        data.shift_remove("extensions");
    }
    if let Some(msg) = schema_violation(&data) {
        return Err(LoadError::Invalid(format!(
            "Invalid Agent Plugins manifest {shown}: {msg}"
        )));
    }
    let text = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Manifest {
        name: text("name").unwrap_or_default(),
        version: text("version").unwrap_or_else(|| "1.0.0".into()),
        description: text("description").unwrap_or_default(),
    })
}

/// pydantic's report of a `PluginManifest` that does not validate (simplified).
pub(super) fn manifest_errors(data: &Value) -> Option<String> {
    let mut errors: Vec<(String, &str, &str, Value)> = Vec::new();
    let Some(obj) = data.as_object() else {
        errors.push((
            String::new(),
            "model_type",
            "Input should be a valid dictionary or instance of PluginManifest",
            data.clone(),
        ));
        return Some(pyfmt::validation_errors("PluginManifest", &errors));
    };
    match obj.get("name") {
        None => errors.push(("name".into(), "missing", "Field required", data.clone())),
        Some(v) if !v.is_string() => errors.push((
            "name".into(),
            "string_type",
            "Input should be a valid string",
            v.clone(),
        )),
        _ => {}
    }
    for key in ["version", "description"] {
        if let Some(v) = obj.get(key).filter(|v| !v.is_string()) {
            errors.push((
                key.into(),
                "string_type",
                "Input should be a valid string",
                v.clone(),
            ));
        }
    }
    if let Some(v) = obj.get("author").filter(|v| !v.is_object() && !v.is_null()) {
        errors.push((
            "author".into(),
            "model_type",
            "Input should be a valid dictionary or instance of PluginAuthor",
            v.clone(),
        ));
    }
    if let Some(v) = obj
        .get("entry_command")
        .filter(|v| !v.is_string() && !v.is_null())
    {
        errors.push((
            "entry_command".into(),
            "string_type",
            "Input should be a valid string",
            v.clone(),
        ));
    }
    (!errors.is_empty()).then(|| pyfmt::validation_errors("PluginManifest", &errors))
}

pub(super) fn claude_manifest(dir: &Path) -> Result<Manifest, LoadError> {
    let found = [".plugin", ".claude-plugin"]
        .iter()
        .map(|d| dir.join(d).join("plugin.json"))
        .find(|p| p.symlink_metadata().is_ok());
    let Some(path) = found else {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(Manifest {
            description: format!("Plugin loaded from {name}"),
            name,
            version: "1.0.0".into(),
        });
    };
    let shown = path.display();
    if !resolves_within(&path, dir) {
        return Err(LoadError::Invalid(format!(
            "Manifest {shown} resolves outside the plugin root"
        )));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        LoadError::Invalid(format!(
            "Failed to parse manifest {shown}: [Errno {}] {}: {}",
            e.raw_os_error().unwrap_or(0),
            io_words(&e),
            pyfmt::repr_str(&path.to_string_lossy())
        ))
    })?;
    let mut data = pyfmt::parse_json(&text)
        .map_err(|e| LoadError::Invalid(format!("Invalid JSON in {shown}: {e}")))?;
    if let Some(author) = data
        .get("author")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        data["author"] = author_from_string(&author);
    }
    if let Some(errors) = manifest_errors(&data) {
        return Err(LoadError::Invalid(format!(
            "Failed to parse manifest {shown}: {errors}"
        )));
    }
    let text = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_string);
    Ok(Manifest {
        name: text("name").unwrap_or_default(),
        version: text("version").unwrap_or_else(|| "1.0.0".into()),
        description: text("description").unwrap_or_default(),
    })
}

/// The strerror text of an I/O error (without Rust's ` (os error N)` suffix).
pub(super) fn io_words(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// `"Name <email>"` → `{name, email, url}`.
pub(super) fn author_from_string(s: &str) -> Value {
    if let (Some(lt), true) = (s.find('<'), s.contains('>')) {
        let name = s[..lt].trim();
        let rest = &s[lt + 1..];
        let email = rest.split('>').next().unwrap_or_default().trim();
        return json!({"name": name, "email": email, "url": null});
    }
    json!({"name": s.trim(), "email": null, "url": null})
}
