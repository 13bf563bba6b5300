//! Validation of tool-call arguments the way the SDK's pydantic Action models do it (lax
//! coercion of numbers and booleans, literal enums, defaults, no extra fields), with
//! pydantic-style error text.

use serde_json::{Map, Value};

/// Collects the fields of one action model and the errors found on the way.
pub(crate) struct Validator<'a> {
    model: &'static str,
    args: &'a Map<String, Value>,
    known: Vec<&'static str>,
    errors: Vec<(String, String)>,
}

impl<'a> Validator<'a> {
    pub(crate) fn new(model: &'static str, args: &'a Map<String, Value>) -> Self {
        Validator {
            model,
            args,
            known: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Records an error at `loc`.
    pub(crate) fn error(&mut self, loc: impl Into<String>, msg: impl Into<String>) {
        self.errors.push((loc.into(), msg.into()));
    }

    /// The raw value of `field` (null counts as absent), marking the field as known.
    fn value(&mut self, field: &'static str) -> Option<&'a Value> {
        self.known.push(field);
        self.args.get(field).filter(|v| !v.is_null())
    }

    fn missing(&mut self, field: &'static str, required: bool) {
        if required {
            if self.args.get(field).is_some_and(Value::is_null) {
                self.error(field, "Input should be a valid string");
            } else {
                self.error(field, "Field required");
            }
        }
    }

    /// A string field.
    pub(crate) fn string(&mut self, field: &'static str, required: bool) -> Option<String> {
        match self.value(field) {
            None => {
                self.missing(field, required);
                None
            }
            Some(v) => {
                let s = as_str(v, field, &mut self.errors);
                s.map(str::to_owned)
            }
        }
    }

    /// A boolean field with a default.
    pub(crate) fn boolean(&mut self, field: &'static str, default: bool) -> bool {
        match self.value(field) {
            None => default,
            Some(v) => match to_bool(v) {
                Some(b) => b,
                None => {
                    self.error(field, "Input should be a valid boolean");
                    default
                }
            },
        }
    }

    /// An optional number field (`>= min` when given).
    pub(crate) fn number(&mut self, field: &'static str, min: Option<f64>) -> Option<f64> {
        let v = self.value(field)?;
        let Some(n) = to_f64(v) else {
            self.error(field, "Input should be a valid number");
            return None;
        };
        if let Some(min) = min {
            if n < min {
                self.error(
                    field,
                    format!(
                        "Input should be greater than or equal to {}",
                        int_or_float(min)
                    ),
                );
                return None;
            }
        }
        Some(n)
    }

    /// An optional integer field (`>= min` when given).
    pub(crate) fn integer(&mut self, field: &'static str, min: Option<i64>) -> Option<i64> {
        let v = self.value(field)?;
        let Some(n) = to_i64(v) else {
            self.error(field, "Input should be a valid integer");
            return None;
        };
        if let Some(min) = min {
            if n < min {
                self.error(
                    field,
                    format!("Input should be greater than or equal to {min}"),
                );
                return None;
            }
        }
        Some(n)
    }

    /// A string restricted to `allowed`, with an optional default.
    pub(crate) fn literal(
        &mut self,
        field: &'static str,
        allowed: &[&str],
        default: Option<&str>,
    ) -> Option<String> {
        match self.value(field) {
            None => {
                if default.is_none() {
                    self.missing(field, true);
                }
                default.map(str::to_owned)
            }
            Some(v) => match v.as_str() {
                Some(s) if allowed.contains(&s) => Some(s.to_owned()),
                _ => {
                    self.error(field, format!("Input should be {}", literal_list(allowed)));
                    None
                }
            },
        }
    }

    /// An optional list of integers.
    pub(crate) fn int_list(&mut self, field: &'static str) -> Option<Vec<i64>> {
        let v = self.value(field)?;
        let Some(items) = v.as_array() else {
            self.error(field, "Input should be a valid list");
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match to_i64(item) {
                Some(n) => out.push(n),
                None => self.error(format!("{field}.{i}"), "Input should be a valid integer"),
            }
        }
        Some(out)
    }

    /// An optional raw value, for fields validated by the caller.
    pub(crate) fn raw(&mut self, field: &'static str) -> Option<&'a Value> {
        self.value(field)
    }

    /// Fails with the collected errors (and any unknown argument).
    pub(crate) fn finish(mut self) -> Result<(), String> {
        let extra: Vec<String> = self
            .args
            .keys()
            .filter(|k| !self.known.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in extra {
            self.error(k, "Extra inputs are not permitted");
        }
        if self.errors.is_empty() {
            return Ok(());
        }
        let n = self.errors.len();
        let mut msg = format!(
            "{n} validation error{} for {}",
            if n == 1 { "" } else { "s" },
            self.model
        );
        for (loc, m) in &self.errors {
            msg.push_str(&format!("\n{loc}\n  {m}"));
        }
        Err(msg)
    }
}

fn as_str<'v>(v: &'v Value, field: &str, errors: &mut Vec<(String, String)>) -> Option<&'v str> {
    match v.as_str() {
        Some(s) => Some(s),
        None => {
            errors.push((field.to_owned(), "Input should be a valid string".into()));
            None
        }
    }
}

/// `'a', 'b' or 'c'` as pydantic lists literal choices.
fn literal_list(allowed: &[&str]) -> String {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// Lax boolean coercion (pydantic accepts 0/1 and common words).
pub(crate) fn to_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Some(false),
            Some(1.0) => Some(true),
            _ => None,
        },
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "on" | "t" => Some(true),
            "false" | "0" | "no" | "n" | "off" | "f" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// Lax number coercion (numbers and numeric strings).
pub(crate) fn to_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

/// Lax integer coercion (integers, whole floats, integer strings).
pub(crate) fn to_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|x| x.fract() == 0.0 && x.abs() < 9.0e15)
                .map(|x| x as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

/// A whole number without a fraction, else the float.
fn int_or_float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// A float as Python prints it (`20.0`, `0.5`).
pub(crate) fn py_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn reports_missing_wrong_types_and_extras() {
        let args = map(json!({"is_input": "maybe", "bogus": 1}));
        let mut v = Validator::new("TerminalAction", &args);
        assert_eq!(v.string("command", true), None);
        assert!(!v.boolean("is_input", false));
        let err = v.finish().err().unwrap_or_default();
        assert_eq!(
            err,
            "3 validation errors for TerminalAction\ncommand\n  Field required\nis_input\n  \
             Input should be a valid boolean\nbogus\n  Extra inputs are not permitted"
        );
    }

    #[test]
    fn coerces_like_pydantic_lax_mode() {
        let args = map(json!({"a": "30", "b": "true", "c": 2.0, "d": "view"}));
        let mut v = Validator::new("X", &args);
        assert_eq!(v.number("a", Some(0.0)), Some(30.0));
        assert!(v.boolean("b", false));
        assert_eq!(v.integer("c", None), Some(2));
        assert_eq!(
            v.literal("d", &["view", "plan"], None).as_deref(),
            Some("view")
        );
        assert!(v.finish().is_ok());
        let args = map(json!({"d": "nope", "a": -1}));
        let mut v = Validator::new("X", &args);
        v.literal("d", &["view", "create", "insert"], None);
        v.number("a", Some(0.0));
        let err = v.finish().err().unwrap_or_default();
        assert!(
            err.contains("Input should be 'view', 'create' or 'insert'"),
            "{err}"
        );
        assert!(
            err.contains("Input should be greater than or equal to 0"),
            "{err}"
        );
        assert_eq!(py_num(20.0), "20.0");
        assert_eq!(py_num(0.5), "0.5");
    }
}
