//! The reference's defaults and how a document is completed with them: the default document
//! and LLM, each agent variant's defaults, the deep merge of diffs, and filling in missing keys
//! and pruning unknown ones.

use std::sync::OnceLock;

use serde_json::{json, Value};

use super::Settings;

/// The reference's defaults (`agent_settings`, `conversation_settings`), without the
/// `agent_context.current_datetime` it stamps when a document is created.
const DEFAULTS: &str = include_str!("../data/defaults.json");

pub(super) fn defaults() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::from_str(DEFAULTS).unwrap_or_else(|_| json!({})))
}

/// The default `llm` object (every field of the SDK's `LLM` with its default).
pub fn default_llm() -> Value {
    defaults()["agent_settings"]["llm"].clone()
}

/// The defaults of an agent-settings variant (`openhands` or `acp`), as the reference dumps
/// them.
pub fn variant_defaults(kind: &str) -> Value {
    if kind != "acp" {
        return Settings::default().agent_settings;
    }
    let file =
        |secret: &str, filename: &str, env: &str, subdir: &str, points: &str, warn: &[&str]| {
            json!({"secret_name": secret, "filename": filename, "env_var": env, "subdir": subdir,
               "env_points_to": points, "warn_if_unset": warn})
        };
    json!({
        "schema_version": 9, "agent_kind": "acp", "acp_server": "claude-code",
        "acp_command": [], "acp_args": [], "acp_model": null, "acp_session_mode": null,
        "acp_prompt_timeout": 1800.0, "acp_startup_timeout": 90.0, "mcp_config": {},
        "acp_isolate_data_dir": false,
        "acp_file_secrets": [
            file("CODEX_AUTH_JSON", "auth.json", "CODEX_HOME", "codex", "dir", &[]),
            file("GOOGLE_APPLICATION_CREDENTIALS_JSON", "gcloud-credentials.json",
                 "GOOGLE_APPLICATION_CREDENTIALS", "gemini-cli", "file",
                 &["GOOGLE_CLOUD_PROJECT", "GOOGLE_CLOUD_LOCATION"]),
            file("KIMI_CODE_CONFIG_TOML", "config.toml", "KIMI_CODE_HOME", "kimi-code", "dir", &[]),
            file("PI_AUTH_JSON", "auth.json", "PI_CODING_AGENT_DIR", "pi", "dir", &[]),
        ],
        "agent_context": null,
    })
}

/// Deep-merges `diff` into `target`: objects merge recursively; a `null` below the top level
/// of `target` removes that key (the reference's "unset" primitive), at the top it is a value.
pub fn deep_merge(target: &mut Value, diff: &Value, depth: usize) {
    match (target, diff) {
        (Value::Object(t), Value::Object(d)) => {
            for (k, v) in d {
                if v.is_null() && depth > 0 {
                    t.remove(k);
                } else if v.is_object() && t.get(k).is_some_and(Value::is_object) {
                    if let Some(slot) = t.get_mut(k) {
                        deep_merge(slot, v, depth + 1);
                    }
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        (t, d) => *t = d.clone(),
    }
}

/// Fills keys missing from `doc` with those of `defaults`, recursively (objects only).
pub(super) fn fill_defaults(doc: &mut Value, defaults: &Value) {
    if let (Value::Object(d), Value::Object(def)) = (doc, defaults) {
        for (k, v) in def {
            match d.get_mut(k) {
                None => {
                    d.insert(k.clone(), v.clone());
                }
                Some(existing) if existing.is_object() && v.is_object() => {
                    fill_defaults(existing, v)
                }
                Some(_) => {}
            }
        }
    }
}

/// Removes keys the defaults do not have, in `doc` and in every object whose default has
/// fields (a model, like `llm`); objects whose default is empty are free maps (`mcp_config`,
/// `litellm_extra_body`) and keep their keys. Unknown settings are ignored, as there.
pub(super) fn prune_unknown(doc: &mut Value, defaults: &Value) {
    if let (Value::Object(d), Value::Object(def)) = (doc, defaults) {
        if def.is_empty() {
            return;
        }
        d.retain(|k, _| def.contains_key(k));
        for (k, v) in d.iter_mut() {
            prune_unknown(v, &def[k]);
        }
    }
}
