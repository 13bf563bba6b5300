//! A plugin's MCP servers (`.mcp.json` or the Agent Plugins manifest) and the `${VAR}`
//! expansion of their settings.

use super::*;

/// Replaces `${VAR}` / `${VAR:-default}` references in every string of `value`: `lookup`
/// answers a name's value; unresolved references keep their text, or take their default
/// when `defaults`.
pub fn expand_vars(
    value: &Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    defaults: bool,
) -> Value {
    static VAR: OnceLock<Regex> = OnceLock::new();
    let re = VAR.get_or_init(|| {
        Regex::new(r"\$\{([a-zA-Z_][a-zA-Z0-9_]*)(?::-([^}]*))?\}")
            .unwrap_or_else(|_| Regex::new("$^").expect("regex"))
    });
    match value {
        Value::String(s) => Value::String(
            re.replace_all(s, |c: &regex::Captures<'_>| {
                if let Some(v) = lookup(&c[1]) {
                    return v;
                }
                match c.get(2) {
                    Some(d) if defaults => d.as_str().to_string(),
                    _ => c[0].to_string(),
                }
            })
            .into_owned(),
        ),
        Value::Array(a) => {
            Value::Array(a.iter().map(|v| expand_vars(v, lookup, defaults)).collect())
        }
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), expand_vars(v, lookup, defaults)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A variable of the children's environment.
pub fn child_env_var(name: &str) -> Option<String> {
    crate::util::child_env()
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.to_string_lossy().into_owned())
}

/// An MCP server entry as the SDK keeps it: `enabled` defaults to true.
pub(super) fn server_entry(v: &Value) -> Option<Value> {
    let mut obj = v.as_object()?.clone();
    obj.retain(|_, v| !v.is_null() && *v != json!({}));
    if !obj.contains_key("enabled") {
        obj.insert("enabled".into(), json!(true));
    }
    Some(Value::Object(obj))
}

pub(super) fn claude_mcp(dir: &Path) -> Map<String, Value> {
    let path = dir.join(".mcp.json");
    if !path.exists() || !resolves_within(&path, dir) {
        return Map::new();
    }
    let config = match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
    {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) | Err(_) => {
            tracing::warn!(path = %path.display(), "ignoring an unreadable plugin MCP config");
            return Map::new();
        }
    };
    let root = dir.to_string_lossy().into_owned();
    let lookup = |name: &str| {
        if name == "SKILL_ROOT" {
            Some(root.clone())
        } else {
            child_env_var(name)
        }
    };
    let config = expand_vars(&config, &lookup, false);
    servers_of(&config)
}

pub(super) fn servers_of(config: &Value) -> Map<String, Value> {
    config
        .get("mcpServers")
        .and_then(Value::as_object)
        .map(|servers| {
            servers
                .iter()
                .filter_map(|(k, v)| server_entry(v).map(|e| (k.clone(), e)))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn agent_plugins_mcp(dir: &Path, data_root: &Path) -> Map<String, Value> {
    let path = dir.join("mcp.json");
    if !path.is_file() || !resolves_within(&path, dir) {
        return Map::new();
    }
    let Some(config) = read_text(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    else {
        tracing::warn!(path = %path.display(), "ignoring an unreadable plugin MCP config");
        return Map::new();
    };
    let root = dir.to_string_lossy().into_owned();
    let data = source::cache_path(&root, data_root)
        .to_string_lossy()
        .into_owned();
    let lookup = |name: &str| match name {
        "PLUGIN_ROOT" => Some(root.clone()),
        "PLUGIN_DATA" => Some(data.clone()),
        _ => None,
    };
    servers_of(&expand_vars(&config, &lookup, false))
}
