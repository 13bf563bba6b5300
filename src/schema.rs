//! The reference's model schemas (from its exported OpenAPI document, vendored at
//! `src/server/contract/`) and a validator that checks JSON against them the way pydantic
//! validates a request body: lax coercion of numbers and booleans, literals, bounds, patterns,
//! required and forbidden fields, with pydantic's error types and wording. It returns the
//! document as the model would dump it: defaults filled in, fields the model ignores dropped.
//!
//! Only the models named in [`ROOTS`] (and what they refer to) are kept in memory, parsed on
//! first use.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value};

mod issue;

pub use issue::ValidationIssue;

/// The reference's exported OpenAPI document: the wire contract.
pub const CONTRACT: &str = include_str!("server/contract/openapi-1.58.2.json");

/// Models validated with this module.
const ROOTS: &[&str] = &[
    "OpenHandsAgentProfile",
    "ACPAgentProfile",
    "MetaProfile",
    "ProviderConnectionCreateRequest",
    "ProviderConnectionUpdateRequest",
    "SubAgentsRequest",
    "ACPModelDiscoveryRequest",
    "ACPAgentSettings",
    "InstallCanvasExtensionRequest",
    "UpdateCanvasExtensionStateRequest",
    "BackendRevisionRequest",
    "PluginsRequest",
    "InstallPluginRequest",
    "FetchPluginRequest",
    "UpdatePluginStateRequest",
    "PluginSource",
];

struct Schemas {
    models: HashMap<String, Value>,
    patterns: std::sync::Mutex<HashMap<String, Option<Regex>>>,
}

fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut doc: Value = serde_json::from_str(CONTRACT).unwrap_or_default();
        let all = doc
            .pointer_mut("/components/schemas")
            .map(Value::take)
            .unwrap_or_default();
        drop(doc);
        let mut models = HashMap::new();
        let mut todo: Vec<String> = ROOTS.iter().map(|s| s.to_string()).collect();
        while let Some(name) = todo.pop() {
            if models.contains_key(&name) {
                continue;
            }
            let Some(schema) = all.get(&name) else {
                continue;
            };
            collect_refs(schema, &mut todo);
            models.insert(name, schema.clone());
        }
        crate::util::trim_heap_soon();
        Schemas {
            models,
            patterns: Default::default(),
        }
    })
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v.as_str()) {
                    ("$ref", Some(r)) => out.push(ref_name(r).to_string()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

fn ref_name(r: &str) -> &str {
    r.rsplit('/').next().unwrap_or(r)
}

/// The property names of model `model`, in the reference's order.
pub fn property_names(model: &str) -> Vec<String> {
    schemas()
        .models
        .get(model)
        .and_then(|m| m.get("properties"))
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// Validates `value` as the reference's model `model`; `loc` prefixes every issue's location
/// (e.g. `["body"]`). Answers the model's dump, or every issue found.
pub fn validate(model: &str, value: &Value, loc: &[Value]) -> Result<Value, Vec<ValidationIssue>> {
    let schema = Value::String(format!("#/components/schemas/{model}"));
    let schema = serde_json::json!({ "$ref": schema });
    let mut v = Check {
        issues: Vec::new(),
        loc: loc.to_vec(),
    };
    let out = v.value(&schema, value);
    if v.issues.is_empty() {
        Ok(out)
    } else {
        Err(v.issues)
    }
}

/// One validation pass: the issues found and the location being checked.
struct Check {
    issues: Vec<ValidationIssue>,
    loc: Vec<Value>,
}

fn number_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

fn quoted(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    }
}

/// pydantic's wording of a choice between literals: `'a', 'b' or 'c'`.
fn choices(options: &[Value]) -> String {
    let words: Vec<String> = options.iter().map(quoted).collect();
    match words.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => words.join(""),
    }
}

impl Check {
    fn issue(&mut self, kind: &str, msg: impl Into<String>, input: &Value) {
        self.issues.push(ValidationIssue {
            kind: kind.into(),
            loc: self.loc.clone(),
            msg: msg.into(),
            input: input.clone(),
        });
    }

    fn resolve<'s>(&self, schema: &'s Value) -> (&'s Value, Option<&'s str>) {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = ref_name(r);
                match schemas().models.get(name) {
                    Some(s) => (s, Some(name)),
                    None => (schema, None),
                }
            }
            None => (schema, None),
        }
    }

    /// Checks `value` against `schema`; answers the coerced value.
    fn value(&mut self, schema: &Value, value: &Value) -> Value {
        let (schema, model) = self.resolve(schema);
        if let Some(options) = schema.get("anyOf").and_then(Value::as_array) {
            return self.any_of(options, value);
        }
        if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
            return self.one_of(options, value);
        }
        if let Some(c) = schema.get("const") {
            if value != c {
                self.issue(
                    "literal_error",
                    format!("Input should be {}", quoted(c)),
                    value,
                );
            }
            return value.clone();
        }
        let kind = schema.get("type").and_then(Value::as_str).unwrap_or("");
        let out = match kind {
            "object" if schema.get("properties").is_some() || model.is_some() => {
                return self.model(schema, model.unwrap_or("object"), value)
            }
            "object" => match value {
                Value::Object(_) => value.clone(),
                _ => {
                    self.issue("dict_type", "Input should be a valid dictionary", value);
                    return value.clone();
                }
            },
            "array" => {
                let Value::Array(items) = value else {
                    self.issue("list_type", "Input should be a valid list", value);
                    return value.clone();
                };
                let item_schema = schema.get("items").cloned().unwrap_or(Value::Bool(true));
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    self.loc.push(Value::from(i));
                    out.push(self.value(&item_schema, item));
                    self.loc.pop();
                }
                Value::Array(out)
            }
            "string" => self.string(schema, value),
            "integer" => self.integer(value),
            "number" => self.number(value),
            "boolean" => self.boolean(value),
            "null" => {
                if !value.is_null() {
                    self.issue("none_required", "Input should be None", value);
                }
                Value::Null
            }
            _ => value.clone(),
        };
        if out.is_null() && !value.is_null() {
            return value.clone();
        }
        if let Some(options) = schema.get("enum").and_then(Value::as_array) {
            if !options.contains(&out) {
                let msg = format!("Input should be {}", choices(options));
                self.issue("literal_error", msg, value);
            }
        }
        self.bounds(schema, &out, value);
        out
    }

    fn any_of(&mut self, options: &[Value], value: &Value) -> Value {
        let nullable = options
            .iter()
            .any(|o| o.get("type") == Some(&"null".into()));
        let others: Vec<&Value> = options
            .iter()
            .filter(|o| o.get("type") != Some(&"null".into()))
            .collect();
        if value.is_null() && nullable {
            return Value::Null;
        }
        // A member whose checks pass wins; otherwise the first member's issues are reported.
        for option in &others {
            let mut trial = Check {
                issues: Vec::new(),
                loc: self.loc.clone(),
            };
            let out = trial.value(option, value);
            if trial.issues.is_empty() {
                return out;
            }
        }
        match others.first() {
            Some(first) => self.value(first, value),
            None => value.clone(),
        }
    }

    fn one_of(&mut self, options: &[Value], value: &Value) -> Value {
        // Members told apart by a constant field (`condenser_kind`, `kind`, ...).
        for option in options {
            let (resolved, _) = self.resolve(option);
            let Some(props) = resolved.get("properties").and_then(Value::as_object) else {
                continue;
            };
            let tagged = props.iter().any(|(k, p)| {
                p.get("const")
                    .is_some_and(|c| value.get(k).is_some_and(|v| v == c))
            });
            if tagged {
                return self.value(option, value);
            }
        }
        self.any_of(options, value)
    }

    fn model(&mut self, schema: &Value, name: &str, value: &Value) -> Value {
        let Value::Object(given) = value else {
            self.issue(
                "model_type",
                format!("Input should be a valid dictionary or instance of {name}"),
                value,
            );
            return value.clone();
        };
        let empty = Map::new();
        let props = schema
            .get("properties")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut out = Map::new();
        for (key, prop) in props {
            match given.get(key) {
                Some(v) => {
                    self.loc.push(Value::from(key.as_str()));
                    let checked = self.value(prop, v);
                    self.loc.pop();
                    out.insert(key.clone(), checked);
                }
                None if required.contains(&key.as_str()) => {
                    self.loc.push(Value::from(key.as_str()));
                    self.issue("missing", "Field required", value);
                    self.loc.pop();
                }
                None => {
                    if let Some(d) = default_of(prop) {
                        out.insert(key.clone(), d);
                    }
                }
            }
        }
        match schema.get("additionalProperties") {
            Some(Value::Bool(false)) => {
                for (key, v) in given {
                    if !props.contains_key(key) {
                        self.loc.push(Value::from(key.as_str()));
                        self.issue("extra_forbidden", "Extra inputs are not permitted", v);
                        self.loc.pop();
                    }
                }
            }
            Some(Value::Bool(true)) => {
                for (key, v) in given {
                    if !props.contains_key(key) {
                        out.insert(key.clone(), v.clone());
                    }
                }
            }
            _ => {}
        }
        Value::Object(out)
    }

    fn string(&mut self, schema: &Value, value: &Value) -> Value {
        let Some(s) = value.as_str() else {
            self.issue("string_type", "Input should be a valid string", value);
            return Value::Null;
        };
        let chars = s.chars().count() as u64;
        let plural = |n: u64| if n == 1 { "character" } else { "characters" };
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if chars < min {
                let msg = format!("String should have at least {min} {}", plural(min));
                self.issue("string_too_short", msg, value);
            }
        }
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            if chars > max {
                let msg = format!("String should have at most {max} {}", plural(max));
                self.issue("string_too_long", msg, value);
            }
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            let matched = {
                let mut cache = match schemas().patterns.lock() {
                    Ok(c) => c,
                    Err(p) => p.into_inner(),
                };
                cache
                    .entry(pattern.to_string())
                    .or_insert_with(|| Regex::new(pattern).ok())
                    .as_ref()
                    .is_none_or(|re| re.is_match(s))
            };
            if !matched {
                let msg = format!("String should match pattern '{pattern}'");
                self.issue("string_pattern_mismatch", msg, value);
            }
        }
        if schema.get("format").and_then(Value::as_str) == Some("uuid") {
            match uuid::Uuid::parse_str(s) {
                Ok(u) => return Value::String(u.hyphenated().to_string()),
                Err(e) => self.issue(
                    "uuid_parsing",
                    format!("Input should be a valid UUID, {e}"),
                    value,
                ),
            }
        }
        value.clone()
    }

    fn integer(&mut self, value: &Value) -> Value {
        match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => value.clone(),
            Value::Number(n) => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
                _ => {
                    self.issue(
                        "int_from_float",
                        "Input should be a valid integer, got a number with a fractional part",
                        value,
                    );
                    Value::Null
                }
            },
            Value::String(s) => match s.trim().parse::<i64>() {
                Ok(i) => Value::from(i),
                Err(_) => {
                    self.issue(
                        "int_parsing",
                        "Input should be a valid integer, unable to parse string as an integer",
                        value,
                    );
                    Value::Null
                }
            },
            Value::Bool(b) => Value::from(i64::from(*b)),
            _ => {
                self.issue("int_type", "Input should be a valid integer", value);
                Value::Null
            }
        }
    }

    fn number(&mut self, value: &Value) -> Value {
        match value {
            Value::Number(n) => Value::from(n.as_f64().unwrap_or_default()),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => Value::from(f),
                _ => {
                    self.issue(
                        "float_parsing",
                        "Input should be a valid number, unable to parse string as a number",
                        value,
                    );
                    Value::Null
                }
            },
            Value::Bool(b) => Value::from(f64::from(u8::from(*b))),
            _ => {
                self.issue("float_type", "Input should be a valid number", value);
                Value::Null
            }
        }
    }

    fn boolean(&mut self, value: &Value) -> Value {
        match value {
            Value::Bool(_) => value.clone(),
            Value::Number(n) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                Value::Bool(n.as_i64() == Some(1))
            }
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "t" | "yes" | "y" | "on" | "1" => Value::Bool(true),
                "false" | "f" | "no" | "n" | "off" | "0" => Value::Bool(false),
                _ => {
                    self.issue(
                        "bool_parsing",
                        "Input should be a valid boolean, unable to interpret input",
                        value,
                    );
                    Value::Null
                }
            },
            _ => {
                self.issue("bool_type", "Input should be a valid boolean", value);
                Value::Null
            }
        }
    }

    fn bounds(&mut self, schema: &Value, out: &Value, input: &Value) {
        let Some(x) = out.as_f64() else {
            return;
        };
        let bound = |k: &str| schema.get(k).and_then(Value::as_f64);
        if let Some(b) = bound("minimum").filter(|b| x < *b) {
            let msg = format!(
                "Input should be greater than or equal to {}",
                number_text(b)
            );
            self.issue("greater_than_equal", msg, input);
        }
        if let Some(b) = bound("exclusiveMinimum").filter(|b| x <= *b) {
            let msg = format!("Input should be greater than {}", number_text(b));
            self.issue("greater_than", msg, input);
        }
        if let Some(b) = bound("maximum").filter(|b| x > *b) {
            let msg = format!("Input should be less than or equal to {}", number_text(b));
            self.issue("less_than_equal", msg, input);
        }
        if let Some(b) = bound("exclusiveMaximum").filter(|b| x >= *b) {
            let msg = format!("Input should be less than {}", number_text(b));
            self.issue("less_than", msg, input);
        }
    }
}

/// The value a model gives a field its input leaves out: the schema's default, null for an
/// optional field, `[]` for a list, a nested model's own defaults. `None` where the
/// reference computes it (ids, unions).
fn default_of(prop: &Value) -> Option<Value> {
    if let Some(d) = prop.get("default") {
        return Some(d.clone());
    }
    if let Some(options) = prop.get("anyOf").and_then(Value::as_array) {
        if options
            .iter()
            .any(|o| o.get("type") == Some(&"null".into()))
        {
            return Some(Value::Null);
        }
    }
    if prop.get("type").and_then(Value::as_str) == Some("array") {
        return Some(Value::Array(Vec::new()));
    }
    if let Some(r) = prop.get("$ref").and_then(Value::as_str) {
        let schema = schemas().models.get(ref_name(r))?;
        let mut check = Check {
            issues: Vec::new(),
            loc: Vec::new(),
        };
        let out = check.model(schema, ref_name(r), &Value::Object(Map::new()));
        return check.issues.is_empty().then_some(out);
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinds(r: Result<Value, Vec<ValidationIssue>>) -> Vec<(String, String)> {
        r.unwrap_err()
            .into_iter()
            .map(|i| (i.kind, serde_json::to_string(&i.loc).unwrap()))
            .collect()
    }

    #[test]
    fn a_profile_is_filled_with_its_defaults() {
        let out = validate(
            "OpenHandsAgentProfile",
            &json!({"name": "a", "llm_profile_ref": "x", "tool_concurrency_limit": "2"}),
            &[],
        )
        .unwrap();
        assert_eq!(out["schema_version"], 4);
        assert_eq!(out["agent"], "CodeActAgent");
        assert_eq!(out["tool_concurrency_limit"], 2);
        assert_eq!(out["verification"]["critic_threshold"], 0.6);
        assert!(out["tools"].is_null());
        assert_eq!(out["disabled_skills"], json!([]));
    }

    #[test]
    fn errors_are_worded_and_located_like_pydantic() {
        let errs = kinds(validate(
            "OpenHandsAgentProfile",
            &json!({"name": "", "bogus": 1, "verification": {"critic_threshold": 2},
                    "condenser": {"condenser_kind": "no_op", "enabled": "maybe"}}),
            &[json!("body")],
        ));
        assert!(errs.contains(&("string_too_short".into(), r#"["body","name"]"#.into())));
        assert!(errs.contains(&("missing".into(), r#"["body","llm_profile_ref"]"#.into())));
        assert!(errs.contains(&("extra_forbidden".into(), r#"["body","bogus"]"#.into())));
        assert!(errs.contains(&(
            "less_than_equal".into(),
            r#"["body","verification","critic_threshold"]"#.into()
        )));
        assert!(errs.contains(&(
            "bool_parsing".into(),
            r#"["body","condenser","enabled"]"#.into()
        )));
        let acp = kinds(validate(
            "ACPAgentProfile",
            &json!({"name": "a", "acp_server": "nope"}),
            &[],
        ));
        assert_eq!(
            acp,
            vec![("literal_error".into(), r#"["acp_server"]"#.into())]
        );
    }
}
