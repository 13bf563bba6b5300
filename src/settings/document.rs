//! The settings document: the reference's defaults, validation of a merged document against
//! the schema the server serves (`/api/settings/agent-schema`), the deep merge of diffs, and the
//! three views of its secret fields (plaintext in memory, sealed on disk, masked in answers).

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::crypto::{Cipher, MASK};

/// Version of the persisted `settings.json` layout the reference writes.
pub const PERSISTED_SCHEMA_VERSION: u64 = 6;

/// The reference's defaults (`agent_settings`, `conversation_settings`), without the
/// `agent_context.current_datetime` it stamps when a document is created.
const DEFAULTS: &str = include_str!("data/defaults.json");
/// `GET /api/settings/agent-schema` of the reference, which validation follows.
pub const AGENT_SCHEMA: &str = include_str!("data/agent_schema.json");
/// `GET /api/settings/conversation-schema` of the reference.
pub const CONVERSATION_SCHEMA: &str = include_str!("data/conversation_schema.json");

/// Secret string fields of an LLM object.
pub const LLM_SECRET_FIELDS: [&str; 4] = [
    "api_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
];

/// How secret fields appear in an answer (`X-Expose-Secrets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expose {
    /// `**********` for a set secret, `null` for an unset one (no header).
    Redacted,
    /// Fernet tokens under the server's key (`encrypted`; needs a key).
    Encrypted,
    /// The values themselves (`plaintext`).
    Plaintext,
}

/// One field of a served settings schema.
#[derive(Debug)]
struct FieldSpec {
    value_type: String,
    choices: Vec<Value>,
    nullable: bool,
}

/// Field specs by dotted key (`llm.model`, `condenser.max_size`, `max_iterations`).
fn specs(schema: &'static str) -> HashMap<String, FieldSpec> {
    let doc: Value = serde_json::from_str(schema).unwrap_or(Value::Null);
    let mut out = HashMap::new();
    for section in doc["sections"].as_array().into_iter().flatten() {
        for field in section["fields"].as_array().into_iter().flatten() {
            let Some(key) = field["key"].as_str() else {
                continue;
            };
            out.insert(
                key.to_string(),
                FieldSpec {
                    value_type: field["value_type"].as_str().unwrap_or("").to_string(),
                    choices: field["choices"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|c| c["value"].clone())
                        .collect(),
                    nullable: field["default"].is_null(),
                },
            );
        }
    }
    out
}

fn agent_specs() -> &'static HashMap<String, FieldSpec> {
    static SPECS: OnceLock<HashMap<String, FieldSpec>> = OnceLock::new();
    SPECS.get_or_init(|| specs(AGENT_SCHEMA))
}

fn conversation_specs() -> &'static HashMap<String, FieldSpec> {
    static SPECS: OnceLock<HashMap<String, FieldSpec>> = OnceLock::new();
    SPECS.get_or_init(|| specs(CONVERSATION_SCHEMA))
}

fn defaults() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| serde_json::from_str(DEFAULTS).unwrap_or_else(|_| json!({})))
}

/// The default `llm` object (every field of the SDK's `LLM` with its default).
pub fn default_llm() -> Value {
    defaults()["agent_settings"]["llm"].clone()
}

/// A problem with one field, worded like pydantic (`kind` is its error type).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Keys and list indexes below the request body.
    pub loc: Vec<Value>,
    pub kind: &'static str,
    pub msg: String,
    pub input: Value,
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

/// Checks `value` against a field spec; `None` when it conforms.
fn check_value(spec: &FieldSpec, value: &Value) -> Option<(&'static str, String)> {
    if value.is_null() {
        return (!spec.nullable).then(|| match spec.value_type.as_str() {
            "string" => ("string_type", "Input should be a valid string".into()),
            "integer" => ("int_type", "Input should be a valid integer".into()),
            "number" => ("float_type", "Input should be a valid number".into()),
            "boolean" => ("bool_type", "Input should be a valid boolean".into()),
            "array" => ("list_type", "Input should be a valid list".into()),
            _ => ("dict_type", "Input should be a valid dictionary".into()),
        });
    }
    let ok = match spec.value_type.as_str() {
        "string" => value.is_string(),
        "integer" => {
            value.is_i64() || value.is_u64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => true,
    };
    if !ok {
        let parsing = value.is_string();
        return Some(match spec.value_type.as_str() {
            "string" => ("string_type", "Input should be a valid string".into()),
            "integer" if parsing => (
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer".into(),
            ),
            "integer" => ("int_type", "Input should be a valid integer".into()),
            "number" if parsing => (
                "float_parsing",
                "Input should be a valid number, unable to parse string as a number".into(),
            ),
            "number" => ("float_type", "Input should be a valid number".into()),
            "boolean" => ("bool_type", "Input should be a valid boolean".into()),
            "array" => ("list_type", "Input should be a valid list".into()),
            _ => ("dict_type", "Input should be a valid dictionary".into()),
        });
    }
    if !spec.choices.is_empty() && !spec.choices.contains(value) {
        let names: Vec<String> = spec
            .choices
            .iter()
            .map(|c| c.to_string().replace('"', "'"))
            .collect();
        return Some((
            "literal_error",
            format!("Input should be {}", names.join(" or ")),
        ));
    }
    None
}

/// Checks every field of `doc` named in `specs` under `prefix` (`"llm."` for an LLM object).
fn check_fields(doc: &Value, specs: &HashMap<String, FieldSpec>, prefix: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut keys: Vec<&String> = specs.keys().filter(|k| k.starts_with(prefix)).collect();
    keys.sort();
    for key in keys {
        let path: Vec<&str> = key[prefix.len()..].split('.').collect();
        let mut cursor = doc;
        let mut present = true;
        for part in &path {
            match cursor.get(part) {
                Some(v) => cursor = v,
                None => {
                    present = false;
                    break;
                }
            }
        }
        if !present {
            continue;
        }
        if let Some((kind, msg)) = check_value(&specs[key], cursor) {
            errors.push(FieldError {
                loc: path.iter().map(|s| Value::from(*s)).collect(),
                kind,
                msg,
                input: cursor.clone(),
            });
        }
    }
    errors
}

/// Validates an LLM object as the SDK's `LLM` model does (fields the schema knows; `model`
/// required) and returns it completed with the defaults. Unknown fields are dropped.
pub fn validate_llm(llm: &Value) -> Result<Value, Vec<FieldError>> {
    let Some(given) = llm.as_object() else {
        return Err(vec![FieldError {
            loc: vec![],
            kind: "model_type",
            msg: "Input should be a valid dictionary or instance of LLM".into(),
            input: llm.clone(),
        }]);
    };
    let mut errors = check_fields(llm, agent_specs(), "llm.");
    if !matches!(given.get("model"), Some(Value::String(s)) if !s.is_empty()) && errors.is_empty() {
        errors.push(FieldError {
            loc: vec![],
            kind: "value_error",
            msg: "Value error, model must be specified in LLM".into(),
            input: llm.clone(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut full = default_llm();
    if let Some(full_map) = full.as_object_mut() {
        for (k, v) in given {
            if full_map.contains_key(k) {
                full_map.insert(k.clone(), v.clone());
            }
        }
    }
    Ok(full)
}

/// Validates one MCP server entry as the SDK's `MCPServer` (extra fields forbidden) and returns
/// its stored form: `type`/`shttp` normalised, `null`s dropped, `enabled` defaulting to true.
pub fn validate_mcp_server(server: &Value) -> Result<Value, Vec<FieldError>> {
    let Some(map) = server.as_object() else {
        return Err(vec![FieldError {
            loc: vec![],
            kind: "model_type",
            msg: "Input should be a valid dictionary or instance of MCPServer".into(),
            input: server.clone(),
        }]);
    };
    let mut out = Map::new();
    let mut errors = Vec::new();
    let err = |field: &str, kind: &'static str, msg: &str, input: &Value| FieldError {
        loc: vec![field.into()],
        kind,
        msg: msg.into(),
        input: input.clone(),
    };
    for (key, value) in map {
        let key = if key == "type" && !map.contains_key("transport") {
            "transport"
        } else {
            key.as_str()
        };
        let ok = match key {
            _ if value.is_null() => continue,
            "url" | "command" | "cwd" | "description" | "icon" => match value.as_str() {
                Some("") if key == "url" || key == "command" => {
                    errors.push(err(
                        key,
                        "string_too_short",
                        "String should have at least 1 character",
                        value,
                    ));
                    continue;
                }
                Some(_) => true,
                None => {
                    errors.push(err(
                        key,
                        "string_type",
                        "Input should be a valid string",
                        value,
                    ));
                    continue;
                }
            },
            "transport" => {
                let t = if value == "shttp" {
                    json!("http")
                } else {
                    value.clone()
                };
                if !matches!(
                    t.as_str(),
                    Some("stdio" | "http" | "streamable-http" | "sse")
                ) {
                    errors.push(err(
                        key,
                        "literal_error",
                        "Input should be 'stdio', 'http', 'streamable-http' or 'sse'",
                        value,
                    ));
                    continue;
                }
                out.insert(key.into(), t);
                continue;
            }
            "args" => value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)),
            "env" | "headers" => value
                .as_object()
                .is_some_and(|m| m.values().all(|v| v.is_string() || v.is_null())),
            "timeout" | "sse_read_timeout" => value.is_number(),
            "keep_alive" | "enabled" => value.is_boolean(),
            "auth" => value.get("strategy").is_some_and(Value::is_string),
            _ => {
                errors.push(err(
                    key,
                    "extra_forbidden",
                    "Extra inputs are not permitted",
                    value,
                ));
                continue;
            }
        };
        if !ok {
            errors.push(err(key, "value_error", "Input has the wrong type", value));
            continue;
        }
        out.insert(key.into(), value.clone());
    }
    if errors.is_empty() {
        let transport = out.get("transport").and_then(Value::as_str);
        let problem = match transport {
            Some("stdio") if !out.contains_key("command") => {
                Some("stdio MCP servers require 'command'")
            }
            Some("http" | "streamable-http" | "sse") if !out.contains_key("url") => {
                Some("remote MCP servers require 'url'")
            }
            _ => None,
        };
        if let Some(problem) = problem {
            errors.push(FieldError {
                loc: vec![],
                kind: "value_error",
                msg: format!("Value error, {problem}"),
                input: server.clone(),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    out.entry("enabled").or_insert(Value::Bool(true));
    Ok(Value::Object(out))
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
fn fill_defaults(doc: &mut Value, defaults: &Value) {
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
fn prune_unknown(doc: &mut Value, defaults: &Value) {
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

/// The persisted settings, secrets in plaintext (a secret that could not be decrypted is null).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub agent_settings: Value,
    pub conversation_settings: Value,
    pub active_profile: Option<String>,
    pub active_agent_profile_id: Option<String>,
    pub active_meta_profile: Option<String>,
    pub misc_settings: Value,
}

impl Default for Settings {
    fn default() -> Self {
        let mut agent = defaults()["agent_settings"].clone();
        agent["agent_context"]["current_datetime"] = json!(crate::util::utc_timestamp());
        Settings {
            agent_settings: agent,
            conversation_settings: defaults()["conversation_settings"].clone(),
            active_profile: None,
            active_agent_profile_id: None,
            active_meta_profile: None,
            misc_settings: json!({}),
        }
    }
}

/// Applies `f` to every secret string of agent settings: LLM secret fields, the critic key,
/// and the `env`/`headers` values of MCP servers.
fn map_secrets(agent: &mut Value, f: &mut dyn FnMut(&str) -> Value) {
    for field in LLM_SECRET_FIELDS {
        if let Some(Value::String(s)) = agent["llm"].get(field).cloned() {
            agent["llm"][field] = f(&s);
        }
    }
    if let Some(Value::String(s)) = agent["verification"].get("critic_api_key").cloned() {
        agent["verification"]["critic_api_key"] = f(&s);
    }
    if let Some(servers) = agent.get_mut("mcp_config").and_then(Value::as_object_mut) {
        for server in servers.values_mut() {
            for map in ["env", "headers"] {
                if let Some(values) = server.get_mut(map).and_then(Value::as_object_mut) {
                    for v in values.values_mut() {
                        if let Value::String(s) = v.clone() {
                            *v = f(&s);
                        }
                    }
                }
            }
        }
    }
}

/// A stored secret could not be decrypted with the server's key.
#[derive(Debug, Clone, Copy)]
pub struct UndecryptableSecret;

/// Turns one stored secret into plaintext: a token is decrypted (`Err` when it cannot be);
/// anything else was stored without a key and is the value itself.
pub fn unseal_value(cipher: Option<&Cipher>, stored: &str) -> Result<String, UndecryptableSecret> {
    if stored.starts_with("gAAAAA") {
        return cipher
            .and_then(|c| c.decrypt(stored))
            .ok_or(UndecryptableSecret);
    }
    Ok(stored.to_string())
}

/// The on-disk form of one secret: a token under the key, the value itself without a key
/// (as the reference stores it; the file is 0600).
pub fn seal_value(cipher: Option<&Cipher>, plain: &str) -> Value {
    match cipher {
        Some(c) if plain != MASK => Value::String(c.encrypt(plain)),
        _ => Value::String(plain.to_string()),
    }
}

/// The answer form of one secret.
pub fn expose_value(cipher: Option<&Cipher>, plain: &str, mode: Expose) -> Value {
    match mode {
        Expose::Redacted => Value::String(MASK.into()),
        Expose::Plaintext => Value::String(plain.into()),
        Expose::Encrypted => seal_value(cipher, plain),
    }
}

fn opt_string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

impl Settings {
    /// Reads a stored document: missing fields take their defaults; secrets are decrypted.
    /// With `strict`, a secret that cannot be decrypted fails the load (read-modify-write must
    /// not overwrite it); otherwise it reads as null.
    pub fn from_stored(
        stored: &Value,
        cipher: Option<&Cipher>,
        strict: bool,
    ) -> Result<Settings, UndecryptableSecret> {
        let mut s = Settings::default();
        if let Some(agent) = stored.get("agent_settings").filter(|v| v.is_object()) {
            let mut agent = agent.clone();
            let kind = agent["agent_kind"]
                .as_str()
                .unwrap_or("openhands")
                .to_string();
            fill_defaults(&mut agent, &variant_defaults(&kind));
            s.agent_settings = agent;
        }
        if let Some(conv) = stored
            .get("conversation_settings")
            .filter(|v| v.is_object())
        {
            let mut conv = conv.clone();
            fill_defaults(&mut conv, &s.conversation_settings);
            s.conversation_settings = conv;
        }
        s.active_profile = opt_string(&stored["active_profile"]);
        s.active_agent_profile_id = opt_string(&stored["active_agent_profile_id"]);
        s.active_meta_profile = opt_string(&stored["active_meta_profile"]);
        if stored["misc_settings"].is_object() {
            s.misc_settings = stored["misc_settings"].clone();
        }
        let mut failed = false;
        map_secrets(
            &mut s.agent_settings,
            &mut |v| match unseal_value(cipher, v) {
                Ok(p) => Value::String(p),
                Err(_) => {
                    failed = true;
                    Value::Null
                }
            },
        );
        if failed && strict {
            return Err(UndecryptableSecret);
        }
        Ok(s)
    }

    /// The document as stored in `settings.json`.
    pub fn to_stored(&self, cipher: Option<&Cipher>) -> Value {
        let mut agent = self.agent_settings.clone();
        map_secrets(&mut agent, &mut |v| seal_value(cipher, v));
        json!({
            "schema_version": PERSISTED_SCHEMA_VERSION,
            "agent_settings": agent,
            "conversation_settings": self.conversation_settings,
            "active_profile": self.active_profile,
            "active_agent_profile_id": self.active_agent_profile_id,
            "active_meta_profile": self.active_meta_profile,
            "misc_settings": self.misc_settings,
        })
    }

    /// Whether the LLM has a non-empty API key.
    pub fn llm_api_key_is_set(&self) -> bool {
        self.agent_settings["llm"]["api_key"]
            .as_str()
            .is_some_and(|k| !k.trim().is_empty())
    }

    /// `SettingsResponse` with secrets shown as `mode` says.
    pub fn response(&self, cipher: Option<&Cipher>, mode: Expose) -> Value {
        let mut agent = self.agent_settings.clone();
        map_secrets(&mut agent, &mut |v| expose_value(cipher, v, mode));
        json!({
            "agent_settings": agent,
            "conversation_settings": self.conversation_settings,
            "llm_api_key_is_set": self.llm_api_key_is_set(),
            "active_profile": self.active_profile,
            "active_agent_profile_id": self.active_agent_profile_id,
            "active_meta_profile": self.active_meta_profile,
            "misc_settings": self.misc_settings,
        })
    }

    /// Merges the diffs of a settings update and validates the result; on error `self` is
    /// unchanged. Secrets arriving as tokens of our key are decrypted; the mask keeps the
    /// stored value (a client round-tripping a redacted answer must not erase its key).
    pub fn apply_diffs(
        &mut self,
        agent_diff: Option<&Value>,
        conversation_diff: Option<&Value>,
        misc_diff: Option<&Value>,
        cipher: Option<&Cipher>,
    ) -> Result<(), Vec<FieldError>> {
        let mut agent = self.agent_settings.clone();
        if let Some(diff) = agent_diff {
            let mut diff = diff.clone();
            if !diff.is_object() {
                return Err(vec![FieldError {
                    loc: vec!["agent_settings_diff".into()],
                    kind: "dict_type",
                    msg: "Input should be a valid dictionary".into(),
                    input: diff,
                }]);
            }
            let previous = self.agent_settings.clone();
            let keep_mask = |path: &[&str], diff: &mut Value| {
                let mut slot = &mut *diff;
                for p in path {
                    match slot.get_mut(*p) {
                        Some(s) => slot = s,
                        None => return,
                    }
                }
                if let Value::String(s) = slot {
                    if s == MASK {
                        let mut old = &previous;
                        for p in path {
                            old = &old[*p];
                        }
                        *slot = old.clone();
                    } else if let Ok(plain) = unseal_value(cipher, s) {
                        *s = plain;
                    }
                }
            };
            for field in LLM_SECRET_FIELDS {
                keep_mask(&["llm", field], &mut diff);
            }
            keep_mask(&["verification", "critic_api_key"], &mut diff);
            if let Some(servers) = diff.get("mcp_config").and_then(Value::as_object) {
                let names: Vec<String> = servers.keys().cloned().collect();
                for name in names {
                    for map in ["env", "headers"] {
                        let keys: Vec<String> = diff["mcp_config"][&name][map]
                            .as_object()
                            .map(|m| m.keys().cloned().collect())
                            .unwrap_or_default();
                        for k in keys {
                            keep_mask(&["mcp_config", &name, map, &k], &mut diff);
                        }
                    }
                }
            }
            // A new `agent_kind` starts from that variant's defaults (no merge across variants).
            if let Some(kind) = diff["agent_kind"].as_str() {
                if agent["agent_kind"].as_str() != Some(kind) {
                    agent = variant_defaults(kind);
                }
            }
            deep_merge(&mut agent, &diff, 0);
            let template = variant_defaults(agent["agent_kind"].as_str().unwrap_or("openhands"));
            fill_defaults(&mut agent, &template);
            prune_unknown(&mut agent, &template);
        }
        if agent["agent_kind"] == "acp" {
            return self.apply_acp(agent, conversation_diff, misc_diff);
        }
        let mut conversation = self.conversation_settings.clone();
        if let Some(diff) = conversation_diff {
            deep_merge(&mut conversation, diff, 0);
            fill_defaults(&mut conversation, &defaults()["conversation_settings"]);
            prune_unknown(&mut conversation, &defaults()["conversation_settings"]);
        }
        let mut errors = check_fields(&agent, agent_specs(), "");
        if !matches!(agent["agent_kind"].as_str(), Some("openhands" | "acp")) {
            errors.push(FieldError {
                loc: vec!["agent_kind".into()],
                kind: "literal_error",
                msg: "Input should be 'openhands' or 'acp'".into(),
                input: agent["agent_kind"].clone(),
            });
        }
        if agent["llm"]["model"].as_str().is_none_or(str::is_empty) {
            errors.push(FieldError {
                loc: vec!["llm".into()],
                kind: "value_error",
                msg: "Value error, model must be specified in LLM".into(),
                input: agent["llm"].clone(),
            });
        }
        if let Some(servers) = agent.get_mut("mcp_config").and_then(Value::as_object_mut) {
            for (name, server) in servers.iter_mut() {
                match validate_mcp_server(server) {
                    Ok(clean) => *server = clean,
                    Err(e) => errors.extend(e.into_iter().map(|mut e| {
                        e.loc.splice(
                            0..0,
                            [Value::from("mcp_config"), Value::from(name.as_str())],
                        );
                        e
                    })),
                }
            }
        } else if !agent["mcp_config"].is_null() {
            errors.push(FieldError {
                loc: vec!["mcp_config".into()],
                kind: "dict_type",
                msg: "Input should be a valid dictionary".into(),
                input: agent["mcp_config"].clone(),
            });
        }
        errors.extend(check_fields(&conversation, conversation_specs(), ""));
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut misc = self.misc_settings.clone();
        if let Some(diff) = misc_diff {
            deep_merge(&mut misc, diff, 0);
        }
        self.agent_settings = agent;
        self.conversation_settings = conversation;
        self.misc_settings = misc;
        Ok(())
    }

    /// Sets the active meta-profile and mirrors it into OpenHands agent settings (routing on
    /// while one is active; `meta`, when given, is its configuration). Agent settings that
    /// cannot route (ACP) clear the pointer instead.
    pub fn apply_active_meta_profile(&mut self, name: Option<String>, meta: Option<Value>) {
        if self.agent_settings["agent_kind"] != "openhands" {
            self.active_meta_profile = None;
            return;
        }
        if let Some(agent) = self.agent_settings.as_object_mut() {
            agent.insert("active_meta_profile".into(), json!(name));
            agent.insert(
                "enable_classify_and_switch_llm_tool".into(),
                json!(name.is_some()),
            );
            if let Some(meta) = meta {
                agent.insert("meta_profile".into(), meta);
            }
        }
        self.active_meta_profile = name;
    }

    /// The end of [`Settings::apply_diffs`] for ACP agent settings (validated as the reference's
    /// `ACPAgentSettings`).
    fn apply_acp(
        &mut self,
        agent: Value,
        conversation_diff: Option<&Value>,
        misc_diff: Option<&Value>,
    ) -> Result<(), Vec<FieldError>> {
        let agent = crate::schema::validate("ACPAgentSettings", &agent, &[]).map_err(|issues| {
            issues
                .into_iter()
                .map(|i| FieldError {
                    loc: i.loc,
                    kind: match i.kind.as_str() {
                        "literal_error" => "literal_error",
                        "extra_forbidden" => "extra_forbidden",
                        "missing" => "missing",
                        _ => "value_error",
                    },
                    msg: i.msg,
                    input: i.input,
                })
                .collect::<Vec<_>>()
        })?;
        let mut conversation = self.conversation_settings.clone();
        if let Some(diff) = conversation_diff {
            deep_merge(&mut conversation, diff, 0);
            fill_defaults(&mut conversation, &defaults()["conversation_settings"]);
            prune_unknown(&mut conversation, &defaults()["conversation_settings"]);
        }
        let errors = check_fields(&conversation, conversation_specs(), "");
        if !errors.is_empty() {
            return Err(errors);
        }
        if let Some(diff) = misc_diff {
            deep_merge(&mut self.misc_settings, diff, 0);
        }
        self.agent_settings = agent;
        self.conversation_settings = conversation;
        // ACP agents cannot route between models.
        self.active_meta_profile = None;
        Ok(())
    }

    /// Replaces the LLM with `llm` (a validated, complete LLM object).
    pub fn set_llm(&mut self, llm: Value) {
        self.agent_settings["llm"] = llm;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_served_schema() {
        let s = Settings::default();
        assert!(check_fields(&s.agent_settings, agent_specs(), "").is_empty());
        assert!(check_fields(&s.conversation_settings, conversation_specs(), "").is_empty());
        assert_eq!(s.agent_settings["llm"]["model"], "gpt-5.6");
        assert!(!s.llm_api_key_is_set());
    }

    #[test]
    fn diffs_merge_deeply_and_nested_null_unsets() {
        let mut s = Settings::default();
        let diff = json!({"llm": {"model": "openai/gpt-4o", "api_key": "sk-1"},
                          "mcp_config": {"a": {"command": "x", "env": {"A": "1", "B": "2"}}}});
        s.apply_diffs(Some(&diff), None, None, None).unwrap();
        assert_eq!(s.agent_settings["llm"]["model"], "openai/gpt-4o");
        assert_eq!(s.agent_settings["llm"]["num_retries"], 5);
        let unset = json!({"mcp_config": {"a": {"env": {"A": null}}}});
        s.apply_diffs(Some(&unset), None, None, None).unwrap();
        assert_eq!(
            s.agent_settings["mcp_config"]["a"]["env"],
            json!({"B": "2"})
        );
        assert_eq!(s.agent_settings["mcp_config"]["a"]["enabled"], true);
    }

    #[test]
    fn a_wrong_type_or_choice_is_refused_and_changes_nothing() {
        let mut s = Settings::default();
        let before = s.clone();
        let bad = json!({"llm": {"temperature": "hot"}});
        let errors = s.apply_diffs(Some(&bad), None, None, None).unwrap_err();
        assert_eq!(errors[0].kind, "float_parsing");
        let bad = json!({"security_analyzer": "maybe"});
        assert!(s.apply_diffs(None, Some(&bad), None, None).is_err());
        let bad = json!({"max_iterations": null});
        assert!(s.apply_diffs(None, Some(&bad), None, None).is_err());
        assert_eq!(s, before);
    }

    #[test]
    fn secrets_are_sealed_on_disk_and_masked_in_answers() {
        let cipher = Cipher::from_key("k").unwrap();
        let mut s = Settings::default();
        let diff = json!({"llm": {"api_key": "sk-secret"}});
        s.apply_diffs(Some(&diff), None, None, Some(&cipher))
            .unwrap();
        let stored = s.to_stored(Some(&cipher));
        let token = stored["agent_settings"]["llm"]["api_key"].as_str().unwrap();
        assert!(token.starts_with("gAAAAA"));
        assert!(!stored.to_string().contains("sk-secret"));
        let back = Settings::from_stored(&stored, Some(&cipher), true).unwrap();
        assert_eq!(back.agent_settings["llm"]["api_key"], "sk-secret");
        let shown = back.response(Some(&cipher), Expose::Redacted);
        assert_eq!(shown["agent_settings"]["llm"]["api_key"], MASK);
        assert_eq!(shown["llm_api_key_is_set"], true);
        // A masked value sent back keeps the stored key.
        let mut again = back.clone();
        let diff = json!({"llm": {"api_key": MASK}});
        again
            .apply_diffs(Some(&diff), None, None, Some(&cipher))
            .unwrap();
        assert_eq!(again.agent_settings["llm"]["api_key"], "sk-secret");
        // Another key cannot read it: strict loads fail, lenient ones read null.
        let other = Cipher::from_key("other").unwrap();
        assert!(Settings::from_stored(&stored, Some(&other), true).is_err());
        let lenient = Settings::from_stored(&stored, Some(&other), false).unwrap();
        assert!(lenient.agent_settings["llm"]["api_key"].is_null());
    }

    #[test]
    fn mcp_servers_are_validated_like_the_sdk() {
        assert!(validate_mcp_server(&json!({"transport": "stdio"})).is_err());
        assert!(validate_mcp_server(&json!({"command": "x", "zzz": 1})).is_err());
        let ok = validate_mcp_server(&json!({"type": "shttp", "url": "http://h", "timeout": null}))
            .unwrap();
        assert_eq!(
            ok,
            json!({"transport": "http", "url": "http://h", "enabled": true})
        );
    }

    #[test]
    fn an_llm_needs_a_model_and_gets_the_defaults() {
        assert!(validate_llm(&json!({})).is_err());
        let llm = validate_llm(&json!({"model": "m", "unknown": 1})).unwrap();
        assert_eq!(llm["model"], "m");
        assert_eq!(llm["timeout"], 300);
        assert!(llm.get("unknown").is_none());
    }
}
