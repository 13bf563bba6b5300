//! Pydantic-like lax field readers (strings, integers, numbers, objects, arrays) with the
//! reference's error words.

use super::*;

// ---- pydantic-like lax field readers ----------------------------------------------------

pub(super) fn string(v: &Value, field: &str) -> Result<String, Invalid> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| invalid(format!("{field}: Input should be a valid string")))
}

/// A lax integer: JSON integers, floats without a fraction, numeric strings, booleans.
pub(super) fn integer(v: &Value, field: &str) -> Result<i64, Invalid> {
    let bad = || invalid(format!("{field}: Input should be a valid integer"));
    let from_float = |f: f64| {
        if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 {
            Ok(f as i64)
        } else {
            Err(bad())
        }
    };
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(i),
            None => from_float(n.as_f64().ok_or_else(bad)?),
        },
        Value::String(s) => {
            let s = s.trim();
            match s.parse::<i64>() {
                Ok(i) => Ok(i),
                Err(_) => from_float(s.parse::<f64>().map_err(|_| bad())?),
            }
        }
        Value::Bool(b) => Ok(i64::from(*b)),
        _ => Err(bad()),
    }
}

/// A lax float: JSON numbers, numeric strings, booleans.
pub(super) fn number(v: &Value, field: &str) -> Result<f64, Invalid> {
    let bad = || invalid(format!("{field}: Input should be a valid number"));
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(bad),
        Value::String(s) => s.trim().parse::<f64>().map_err(|_| bad()),
        Value::Bool(b) => Ok(f64::from(u8::from(*b))),
        _ => Err(bad()),
    }
}

pub(super) fn object<'v>(v: &'v Value, field: &str) -> Result<&'v Map<String, Value>, Invalid> {
    v.as_object()
        .ok_or_else(|| invalid(format!("{field}: Input should be an object")))
}

pub(super) fn array<'v>(v: &'v Value, field: &str) -> Result<&'v Vec<Value>, Invalid> {
    v.as_array()
        .ok_or_else(|| invalid(format!("{field}: Input should be a valid array")))
}

pub(super) fn required<'v>(m: &'v Map<String, Value>, key: &str) -> Result<&'v Value, Invalid> {
    m.get(key)
        .ok_or_else(|| invalid(format!("{key}: Field required")))
}

pub(super) fn strings(v: &Value, field: &str) -> Result<Vec<String>, Invalid> {
    array(v, field)?
        .iter()
        .map(|item| string(item, field))
        .collect()
}
