//! One entry of a 422 `detail` list ([`ValidationIssue`]), shaped like a pydantic validation
//! error: produced by the schema validator and the services, answered by `crate::error`.

use serde::Serialize;
use serde_json::{json, Value};

/// One entry of a 422 `detail` list, shaped like a pydantic validation error. Its `ctx` object
/// (the bound, pattern or choices that were violated) is derived from `type` and `msg` when
/// serialised, as pydantic reports it.
#[derive(Debug, Clone)]
pub struct ValidationIssue {
    pub kind: String,
    pub loc: Vec<Value>,
    pub msg: String,
    pub input: Value,
}

impl Serialize for ValidationIssue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let ctx = issue_ctx(&self.kind, &self.msg);
        let mut m = serializer.serialize_map(Some(if ctx.is_some() { 5 } else { 4 }))?;
        m.serialize_entry("type", &self.kind)?;
        m.serialize_entry("loc", &self.loc)?;
        m.serialize_entry("msg", &self.msg)?;
        m.serialize_entry("input", &self.input)?;
        if let Some(ctx) = ctx {
            m.serialize_entry("ctx", &ctx)?;
        }
        m.end()
    }
}

/// pydantic's `ctx` for the error types that carry one, read back from the message it words.
fn issue_ctx(kind: &str, msg: &str) -> Option<Value> {
    let after = |prefix: &str| msg.strip_prefix(prefix).map(str::trim);
    let number = |text: &str| -> Value {
        text.parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::from(text))
    };
    let bound = |key: &str, prefix: &str| after(prefix).map(|n| json!({ key: number(n) }));
    match kind {
        "greater_than" => bound("gt", "Input should be greater than "),
        "greater_than_equal" => bound("ge", "Input should be greater than or equal to "),
        "less_than" => bound("lt", "Input should be less than "),
        "less_than_equal" => bound("le", "Input should be less than or equal to "),
        "enum" | "literal_error" => after("Input should be ").map(|e| json!({ "expected": e })),
        "value_error" => after("Value error, ").map(|e| json!({ "error": e })),
        "uuid_parsing" => after("Input should be a valid UUID, ").map(|e| json!({ "error": e })),
        "string_too_short" => after("String should have at least ")
            .and_then(|n| n.split(' ').next())
            .map(|n| json!({ "min_length": number(n) })),
        "string_too_long" => after("String should have at most ")
            .and_then(|n| n.split(' ').next())
            .map(|n| json!({ "max_length": number(n) })),
        "string_pattern_mismatch" => after("String should match pattern ")
            .map(|p| json!({ "pattern": p.trim_matches('\'') })),
        _ => None,
    }
}

impl ValidationIssue {
    /// An issue at `loc` (e.g. `["query", "limit"]`) of the given pydantic `type`.
    pub fn new(kind: &str, loc: &[&str], msg: impl Into<String>) -> Self {
        ValidationIssue {
            kind: kind.into(),
            loc: loc.iter().map(|s| Value::String((*s).into())).collect(),
            msg: msg.into(),
            input: Value::Null,
        }
    }

    /// Sets the offending input value.
    pub fn with_input(mut self, input: impl Into<Value>) -> Self {
        self.input = input.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_carry_pydantic_ctx() {
        let v = |i: ValidationIssue| serde_json::to_value(i).unwrap_or_default();
        let le = v(ValidationIssue::new(
            "less_than_equal",
            &["query", "limit"],
            "Input should be less than or equal to 100",
        )
        .with_input("101"));
        assert_eq!(
            le,
            json!({"type": "less_than_equal", "loc": ["query", "limit"],
                   "msg": "Input should be less than or equal to 100", "input": "101",
                   "ctx": {"le": 100}})
        );
        let gt = v(ValidationIssue::new(
            "greater_than",
            &["q"],
            "Input should be greater than 0",
        ));
        assert_eq!(gt["ctx"], json!({"gt": 0}));
        let en = v(ValidationIssue::new(
            "enum",
            &["q"],
            "Input should be 'A' or 'B'",
        ));
        assert_eq!(en["ctx"], json!({"expected": "'A' or 'B'"}));
        let missing = v(ValidationIssue::new(
            "missing",
            &["body", "file"],
            "Field required",
        ));
        assert!(missing.get("ctx").is_none());
    }
}
