//! Request validation with the reference's 422 shapes (pydantic's error types and messages):
//! JSON bodies, `ExecuteBashRequest`, the search query string (datetimes, UUIDs, lax integers).

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::{json, Value};

use crate::error::{ApiError, ValidationIssue};
use crate::exec::{
    BashEventKind, BashEventSortOrder, ExecuteBashRequest, SearchQuery, DEFAULT_TIMEOUT_SECS,
};

/// Default and largest `limit` of a search page.
const MAX_PAGE: i64 = 100;

pub(super) fn issue(kind: &str, loc: Vec<Value>, msg: &str, input: Value) -> ValidationIssue {
    ValidationIssue {
        kind: kind.into(),
        loc,
        msg: msg.into(),
        input,
    }
}

/// Parses a JSON body the way FastAPI does before validation: empty → `missing`, bad JSON →
/// `json_invalid` at the byte offset of the error.
pub(super) fn parse_json_body(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::Validation(vec![issue(
            "missing",
            vec![json!("body")],
            "Field required",
            Value::Null,
        )]));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        // serde reports line/column (1-based); the reference reports the character offset.
        let offset: usize = bytes
            .split(|b| *b == b'\n')
            .take(e.line().saturating_sub(1))
            .map(|l| l.len() + 1)
            .sum::<usize>()
            + e.column().saturating_sub(1);
        ApiError::Validation(vec![issue(
            "json_invalid",
            vec![json!("body"), json!(offset)],
            "JSON decode error",
            json!({}),
        )])
    })
}

/// Integer parsing as pydantic's lax mode: integers, integral floats, numeric strings, bools.
fn lax_int(value: &Value) -> Result<i64, (&'static str, &'static str)> {
    const NOT_INT: (&str, &str) = ("int_type", "Input should be a valid integer");
    const FRACTION: (&str, &str) = (
        "int_from_float",
        "Input should be a valid integer, got a number with a fractional part",
    );
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else if n.as_u64().is_some() {
                Ok(i64::MAX)
            } else {
                let f = n.as_f64().ok_or(NOT_INT)?;
                if f.is_finite() && f.fract() == 0.0 {
                    Ok(f as i64)
                } else {
                    Err(FRACTION)
                }
            }
        }
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::String(s) => lax_int_str(s).ok_or((
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
        )),
        _ => Err(NOT_INT),
    }
}

fn lax_int_str(s: &str) -> Option<i64> {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Some(i);
    }
    // "5.0" is an integer for pydantic; "1.5" and "1e3" are not.
    let (whole, frac) = t.split_once('.')?;
    if !frac.is_empty() && frac.bytes().all(|b| b == b'0') {
        whole.parse().ok()
    } else {
        None
    }
}

/// Validates an `ExecuteBashRequest` body, collecting every problem like pydantic.
pub(super) fn parse_execute_request(
    value: Value,
) -> Result<ExecuteBashRequest, Vec<ValidationIssue>> {
    let Value::Object(map) = &value else {
        return Err(vec![issue(
            "model_attributes_type",
            vec![json!("body")],
            "Input should be a valid dictionary or object to extract fields from",
            value,
        )]);
    };
    let mut issues = Vec::new();
    let command = match map.get("command") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            issues.push(issue(
                "string_type",
                vec![json!("body"), json!("command")],
                "Input should be a valid string",
                other.clone(),
            ));
            None
        }
        None => {
            issues.push(issue(
                "missing",
                vec![json!("body"), json!("command")],
                "Field required",
                value.clone(),
            ));
            None
        }
    };
    let cwd = match map.get("cwd") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            issues.push(issue(
                "string_type",
                vec![json!("body"), json!("cwd")],
                "Input should be a valid string",
                other.clone(),
            ));
            None
        }
    };
    let timeout = match map.get("timeout") {
        None => DEFAULT_TIMEOUT_SECS,
        Some(v) => match lax_int(v) {
            Ok(t) => t,
            Err((kind, msg)) => {
                issues.push(issue(
                    kind,
                    vec![json!("body"), json!("timeout")],
                    msg,
                    v.clone(),
                ));
                DEFAULT_TIMEOUT_SECS
            }
        },
    };
    match command {
        Some(command) if issues.is_empty() => Ok(ExecuteBashRequest {
            command,
            cwd,
            timeout,
        }),
        _ => Err(issues),
    }
}

pub(super) fn request_from_body(bytes: &[u8]) -> Result<ExecuteBashRequest, ApiError> {
    parse_execute_request(parse_json_body(bytes)?).map_err(ApiError::Validation)
}

/// A query datetime as pydantic reads it: ISO 8601 with or without zone (naive = UTC here, as
/// the file names are UTC), a date, or a Unix time in seconds (milliseconds when large).
fn parse_datetime(raw: &str) -> Result<DateTime<Utc>, String> {
    let s = raw.trim();
    if let Ok(n) = s.parse::<f64>() {
        if n.is_finite() {
            let secs = if n.abs() > 2e10 { n / 1000.0 } else { n };
            let micros = (secs * 1e6).round() as i64;
            if let Some(t) = DateTime::from_timestamp_micros(micros) {
                return Ok(t);
            }
        }
        return Err("invalid datetime".into());
    }
    let zoned = if let Some(rest) = s.strip_suffix(['Z', 'z']) {
        format!("{rest}+00:00")
    } else {
        s.to_owned()
    };
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M%:z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(&zoned, fmt) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    Err(if s.len() < 10 {
        "input is too short".into()
    } else {
        "invalid datetime format".into()
    })
}

/// A UUID (dashed, hex, braced or URN) as 32 hex digits, or the reference's 422 issue.
pub(super) fn parse_uuid(raw: &str, loc: Vec<Value>) -> Result<String, Box<ValidationIssue>> {
    uuid::Uuid::parse_str(raw.trim())
        .map(|u| u.simple().to_string())
        .map_err(|e| {
            Box::new(issue(
                "uuid_parsing",
                loc,
                &format!("Input should be a valid UUID, {e}"),
                json!(raw),
            ))
        })
}

/// The decoded `key=value` pairs of a raw query string.
pub(super) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    crate::urlcode::query_pairs(raw.unwrap_or(""))
}

/// Validates the search query string, collecting every problem like FastAPI.
pub(super) fn parse_search_query(raw: Option<&str>) -> Result<SearchQuery, ApiError> {
    let pairs = query_pairs(raw);
    // Starlette: the last value of a repeated parameter wins.
    let get = |key: &str| crate::urlcode::last_value(&pairs, key);
    let loc = |name: &str| vec![json!("query"), json!(name)];
    let mut issues = Vec::new();
    let mut query = SearchQuery {
        limit: MAX_PAGE as usize,
        ..SearchQuery::default()
    };
    if let Some(v) = get("kind__eq") {
        match BashEventKind::parse(v) {
            Some(k) => query.kind = Some(k),
            None => issues.push(issue(
                "literal_error",
                loc("kind__eq"),
                "Input should be 'BashCommand' or 'BashOutput'",
                json!(v),
            )),
        }
    }
    if let Some(v) = get("command_id__eq") {
        match parse_uuid(v, loc("command_id__eq")) {
            Ok(id) => query.command_id = Some(id),
            Err(i) => issues.push(*i),
        }
    }
    for (name, slot) in [
        ("timestamp__gte", &mut query.timestamp_gte),
        ("timestamp__lt", &mut query.timestamp_lt),
    ] {
        if let Some(v) = get(name) {
            match parse_datetime(v) {
                Ok(t) => *slot = Some(t),
                Err(why) => issues.push(issue(
                    "datetime_from_date_parsing",
                    loc(name),
                    &format!("Input should be a valid datetime or date, {why}"),
                    json!(v),
                )),
            }
        }
    }
    const INT_PARSING: &str =
        "Input should be a valid integer, unable to parse string as an integer";
    if let Some(v) = get("order__gt") {
        match lax_int_str(v) {
            Some(o) => query.order_gt = Some(o),
            None => issues.push(issue(
                "int_parsing",
                loc("order__gt"),
                INT_PARSING,
                json!(v),
            )),
        }
    }
    if let Some(v) = get("sort_order") {
        match v {
            "TIMESTAMP" => query.sort_order = BashEventSortOrder::Timestamp,
            "TIMESTAMP_DESC" => query.sort_order = BashEventSortOrder::TimestampDesc,
            _ => issues.push(issue(
                "enum",
                loc("sort_order"),
                "Input should be 'TIMESTAMP' or 'TIMESTAMP_DESC'",
                json!(v),
            )),
        }
    }
    if let Some(v) = get("page_id") {
        query.page_id = Some(v.to_owned());
    }
    if let Some(v) = get("limit") {
        match lax_int_str(v) {
            Some(l) if l <= 0 => issues.push(issue(
                "greater_than",
                loc("limit"),
                "Input should be greater than 0",
                json!(v),
            )),
            Some(l) if l > MAX_PAGE => issues.push(issue(
                "less_than_equal",
                loc("limit"),
                "Input should be less than or equal to 100",
                json!(v),
            )),
            Some(l) => query.limit = l as usize,
            None => issues.push(issue("int_parsing", loc("limit"), INT_PARSING, json!(v))),
        }
    }
    if issues.is_empty() {
        Ok(query)
    } else {
        Err(ApiError::Validation(issues))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lax_integers() {
        assert_eq!(lax_int_str("5"), Some(5));
        assert_eq!(lax_int_str("5.0"), Some(5));
        assert_eq!(lax_int_str("1.5"), None);
        assert_eq!(lax_int_str("x"), None);
        assert_eq!(lax_int(&json!(2.0)), Ok(2));
        assert!(lax_int(&json!(1.5)).is_err());
        assert!(lax_int(&Value::Null).is_err());
    }

    #[test]
    fn datetimes() {
        let t = parse_datetime("2026-11-25T10:00:00+02:00").expect("zoned");
        assert_eq!(t.to_rfc3339(), "2026-11-25T08:00:00+00:00");
        assert!(parse_datetime("2026-11-25T10:00:00Z").is_ok());
        assert!(parse_datetime("2026-11-25T10:00:00.123456").is_ok());
        assert!(parse_datetime("2026-11-25").is_ok());
        assert!(parse_datetime("1700000000").is_ok());
        assert!(parse_datetime("bad").is_err());
    }

    #[test]
    fn request_validation_collects_issues() {
        let issues = parse_execute_request(json!({"timeout": 1.5})).expect_err("invalid");
        let kinds: Vec<&str> = issues.iter().map(|i| i.kind.as_str()).collect();
        assert_eq!(kinds, ["missing", "int_from_float"]);
        let ok = parse_execute_request(json!({"command": "x", "timeout": "2"})).expect("valid");
        assert_eq!(ok.timeout, 2);
        assert_eq!(ok.cwd, None);
    }
}
