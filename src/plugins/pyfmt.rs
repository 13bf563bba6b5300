//! Python's wording where the reference shows it: `repr()` of JSON values and strings, type
//! names, and `json.loads` error messages.

use serde_json::Value;

/// Python's `repr()` of a string: single quotes unless the text holds `'` and no `"`.
pub fn repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || (0x7f..=0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a JSON value as `json.loads` would return it.
pub fn repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e16 => format!("{f:.1}"),
            _ => n.to_string(),
        },
        Value::String(s) => repr_str(s),
        Value::Array(a) => format!("[{}]", a.iter().map(repr).collect::<Vec<_>>().join(", ")),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", repr_str(k), repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's type name of a JSON value.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// pydantic's `str(ValidationError)` for `model`: one block per `(location, type, message,
/// input)`.
pub fn validation_errors(model: &str, errors: &[(String, &str, &str, Value)]) -> String {
    let n = errors.len();
    let mut out = format!(
        "{n} validation error{} for {model}",
        if n == 1 { "" } else { "s" }
    );
    for (loc, kind, msg, input) in errors {
        if !loc.is_empty() {
            out.push('\n');
            out.push_str(loc);
        }
        out.push_str(&format!(
            "\n  {msg} [type={kind}, input_value={}, input_type={}]\n    For further information visit https://errors.pydantic.dev/2.14/v/{kind}",
            repr(input),
            type_name(input)
        ));
    }
    out
}

/// Parses JSON text; the error is worded as Python's `json.JSONDecodeError` (`Expecting
/// value: line 1 column 1 (char 0)`).
pub fn parse_json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| json_error(text, &e))
}

fn json_error(text: &str, e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let last = text.trim_end().chars().last();
    let in_object = msg.starts_with("EOF while parsing an object");
    let what = if msg.starts_with("key must be a string") {
        "Expecting property name enclosed in double quotes"
    } else if msg.starts_with("expected `:`") {
        "Expecting ':' delimiter"
    } else if msg.starts_with("expected `,` or") {
        "Expecting ',' delimiter"
    } else if msg.starts_with("trailing characters") {
        "Extra data"
    } else if msg.starts_with("EOF while parsing a string") {
        "Unterminated string starting at"
    } else if msg.starts_with("control character") {
        "Invalid control character at"
    } else if msg.starts_with("invalid escape") {
        "Invalid \\escape"
    } else if in_object || msg.starts_with("EOF while parsing a list") {
        match last {
            Some('{') => "Expecting property name enclosed in double quotes",
            Some(',') if in_object => "Expecting property name enclosed in double quotes",
            Some(',') | Some('[') | Some(':') => "Expecting value",
            _ => "Expecting ',' delimiter",
        }
    } else {
        "Expecting value"
    };
    // Python counts characters from 0; an error at the end of the text points past it, an
    // unterminated string at its opening quote.
    let offset = if msg.starts_with("EOF while parsing a string") {
        text.rfind('"').map_or(0, |b| text[..b].chars().count())
    } else if e.is_eof() {
        text.chars().count()
    } else {
        let (line, column) = (e.line().max(1), e.column().max(1));
        let at = text
            .split('\n')
            .take(line - 1)
            .map(|l| l.chars().count() + 1)
            .sum::<usize>()
            + column
            - 1;
        if what == "Expecting value" {
            // serde stops inside a bad literal; Python points at its start.
            let chars: Vec<char> = text.chars().collect();
            let mut start = at.min(chars.len());
            while start > 0
                && (chars[start - 1].is_alphanumeric() || "+-.".contains(chars[start - 1]))
            {
                start -= 1;
            }
            start
        } else {
            at
        }
    };
    let before: String = text.chars().take(offset).collect();
    let line = before.matches('\n').count() + 1;
    let column = offset
        - before
            .rfind('\n')
            .map_or(0, |b| before[..=b].chars().count())
        + 1;
    format!("{what}: line {line} column {column} (char {offset})")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reprs() {
        assert_eq!(repr_str("it's"), "\"it's\"");
        assert_eq!(repr_str("a'b\"c\n"), "'a\\'b\"c\\n'");
        assert_eq!(
            repr(&json!({"code": "x", "n": [1, 2.5, null, true]})),
            "{'code': 'x', 'n': [1, 2.5, None, True]}"
        );
    }

    #[test]
    fn json_errors_read_like_python() {
        let e = |t: &str| parse_json(t).unwrap_err();
        assert_eq!(
            e("{bad"),
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"
        );
        assert_eq!(e(""), "Expecting value: line 1 column 1 (char 0)");
        assert_eq!(
            e("{\"a\" 1}"),
            "Expecting ':' delimiter: line 1 column 6 (char 5)"
        );
        assert_eq!(e("{\"a\":1} x"), "Extra data: line 1 column 9 (char 8)");
        assert_eq!(e("[1,"), "Expecting value: line 1 column 4 (char 3)");
        assert_eq!(
            e("{\"a\":1"),
            "Expecting ',' delimiter: line 1 column 7 (char 6)"
        );
        assert_eq!(
            e("\"abc"),
            "Unterminated string starting at: line 1 column 1 (char 0)"
        );
        assert_eq!(
            e("{\"a\":tru}"),
            "Expecting value: line 1 column 6 (char 5)"
        );
    }
}
