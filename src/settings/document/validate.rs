//! Validation against the schemas the server serves: field types, choices and numeric bounds
//! worded like pydantic's errors, an LLM object completed with its defaults, an MCP server
//! entry.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::defaults::default_llm;
use super::{AGENT_SCHEMA, CONVERSATION_SCHEMA};

/// One field of a served settings schema.
#[derive(Debug)]
pub(super) struct FieldSpec {
    value_type: String,
    choices: Vec<Value>,
    nullable: bool,
    bounds: Option<&'static Bounds>,
}

/// A numeric field's limits as the reference's models set them (`ge`/`gt`, `le`/`lt`):
/// `(limit, exclusive)`.
#[derive(Debug)]
struct Bounds {
    min: Option<(f64, bool)>,
    max: Option<(f64, bool)>,
}

const AT_LEAST_0: Bounds = Bounds {
    min: Some((0.0, false)),
    max: None,
};
const AT_LEAST_1: Bounds = Bounds {
    min: Some((1.0, false)),
    max: None,
};
const ABOVE_0: Bounds = Bounds {
    min: Some((0.0, true)),
    max: None,
};
const BETWEEN_0_AND_1: Bounds = Bounds {
    min: Some((0.0, true)),
    max: Some((1.0, true)),
};

/// The bounds of the settings fields (from the reference's `LLM`,
/// `LLMSummarizingCondenserSettings` and conversation settings models), by dotted key.
const BOUNDS: &[(&str, &Bounds)] = &[
    ("llm.num_retries", &AT_LEAST_0),
    ("llm.retry_multiplier", &AT_LEAST_0),
    ("llm.retry_min_wait", &AT_LEAST_0),
    ("llm.retry_max_wait", &AT_LEAST_0),
    ("llm.timeout", &AT_LEAST_0),
    ("llm.stream_idle_timeout", &AT_LEAST_0),
    ("llm.max_message_chars", &AT_LEAST_1),
    ("llm.temperature", &AT_LEAST_0),
    (
        "llm.top_p",
        &Bounds {
            min: Some((0.0, false)),
            max: Some((1.0, false)),
        },
    ),
    ("llm.top_k", &AT_LEAST_0),
    ("llm.max_input_tokens", &AT_LEAST_1),
    ("llm.max_output_tokens", &AT_LEAST_1),
    ("llm.input_cost_per_token", &AT_LEAST_0),
    ("llm.output_cost_per_token", &AT_LEAST_0),
    (
        "condenser.max_size",
        &Bounds {
            min: Some((20.0, false)),
            max: None,
        },
    ),
    ("condenser.max_tokens", &ABOVE_0),
    ("condenser.keep_first", &AT_LEAST_0),
    ("condenser.minimum_progress", &BETWEEN_0_AND_1),
    ("condenser.hard_context_reset_max_retries", &ABOVE_0),
    (
        "condenser.hard_context_reset_context_scaling",
        &BETWEEN_0_AND_1,
    ),
    ("max_iterations", &AT_LEAST_1),
];

/// Python's rendering of a bound (`0`, `0.5`).
fn limit_text(limit: f64) -> String {
    if limit.fract() == 0.0 {
        format!("{}", limit as i64)
    } else {
        limit.to_string()
    }
}

/// The pydantic error of `value` outside `bounds`, if it is.
fn check_bounds(bounds: &Bounds, value: f64) -> Option<(&'static str, String)> {
    if let Some((min, exclusive)) = bounds.min {
        if exclusive && value <= min {
            return Some((
                "greater_than",
                format!("Input should be greater than {}", limit_text(min)),
            ));
        }
        if !exclusive && value < min {
            return Some((
                "greater_than_equal",
                format!(
                    "Input should be greater than or equal to {}",
                    limit_text(min)
                ),
            ));
        }
    }
    if let Some((max, exclusive)) = bounds.max {
        if exclusive && value >= max {
            return Some((
                "less_than",
                format!("Input should be less than {}", limit_text(max)),
            ));
        }
        if !exclusive && value > max {
            return Some((
                "less_than_equal",
                format!("Input should be less than or equal to {}", limit_text(max)),
            ));
        }
    }
    None
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
                    bounds: BOUNDS.iter().find(|(k, _)| *k == key).map(|(_, b)| *b),
                },
            );
        }
    }
    out
}

pub(super) fn agent_specs() -> &'static HashMap<String, FieldSpec> {
    static SPECS: OnceLock<HashMap<String, FieldSpec>> = OnceLock::new();
    SPECS.get_or_init(|| specs(AGENT_SCHEMA))
}

pub(super) fn conversation_specs() -> &'static HashMap<String, FieldSpec> {
    static SPECS: OnceLock<HashMap<String, FieldSpec>> = OnceLock::new();
    SPECS.get_or_init(|| specs(CONVERSATION_SCHEMA))
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
    match (spec.bounds, value.as_f64()) {
        (Some(bounds), Some(number)) => check_bounds(bounds, number),
        _ => None,
    }
}

/// Checks every field of `doc` named in `specs` under `prefix` (`"llm."` for an LLM object).
pub(super) fn check_fields(
    doc: &Value,
    specs: &HashMap<String, FieldSpec>,
    prefix: &str,
) -> Vec<FieldError> {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::settings::document::Settings;

    #[test]
    fn defaults_match_the_served_schema() {
        let s = Settings::default();
        assert!(check_fields(&s.agent_settings, agent_specs(), "").is_empty());
        assert!(check_fields(&s.conversation_settings, conversation_specs(), "").is_empty());
        assert_eq!(s.agent_settings["llm"]["model"], "gpt-5.6");
        assert!(!s.llm_api_key_is_set());
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
