//! Query parsing for the file and git routes, with pydantic-shaped 422s.

use super::*;

// ---------------------------------------------------------------------------------------------
// Query parsing with pydantic-shaped 422s.

/// Raw query pairs with typed getters that collect pydantic-style issues.
pub(in crate::server) struct Params {
    pairs: Vec<(String, String)>,
    issues: Vec<ValidationIssue>,
}

impl Params {
    /// Parses the query string (never fails: bad encodings are decoded lossily).
    pub(in crate::server) fn new(
        pairs: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
    ) -> Self {
        Params {
            pairs: pairs.map(|q| q.0).unwrap_or_default(),
            issues: Vec::new(),
        }
    }

    /// The last value of `key` (as Starlette's `QueryParams.get`).
    pub(in crate::server) fn opt(&self, key: &str) -> Option<String> {
        crate::urlcode::last_value(&self.pairs, key).map(str::to_owned)
    }

    /// Every value of `key`, in order.
    pub(in crate::server) fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A required string.
    pub(in crate::server) fn required(&mut self, key: &str) -> String {
        match self.opt(key) {
            Some(v) => v,
            None => {
                self.issues.push(ValidationIssue::new(
                    "missing",
                    &["query", key],
                    "Field required",
                ));
                String::new()
            }
        }
    }

    /// A boolean with pydantic's lenient spellings.
    pub(in crate::server) fn boolean(&mut self, key: &str, default: bool) -> bool {
        let Some(v) = self.opt(key) else {
            return default;
        };
        match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "t" | "yes" | "y" | "on" => true,
            "0" | "false" | "f" | "no" | "n" | "off" => false,
            _ => {
                self.issues.push(
                    ValidationIssue::new(
                        "bool_parsing",
                        &["query", key],
                        "Input should be a valid boolean, unable to interpret input",
                    )
                    .with_input(v),
                );
                default
            }
        }
    }

    /// An integer within `min..=max` (`min_exclusive` gives pydantic's `gt` wording).
    pub(in crate::server) fn integer(
        &mut self,
        key: &str,
        default: i64,
        min: i64,
        min_exclusive: bool,
        max: i64,
    ) -> i64 {
        let Some(v) = self.opt(key) else {
            return default;
        };
        let Ok(n) = v.trim().parse::<i64>() else {
            self.issues.push(
                ValidationIssue::new(
                    "int_parsing",
                    &["query", key],
                    "Input should be a valid integer, unable to parse string as an integer",
                )
                .with_input(v),
            );
            return default;
        };
        let low_ok = if min_exclusive { n > min } else { n >= min };
        if !low_ok {
            let (kind, msg) = if min_exclusive {
                (
                    "greater_than",
                    format!("Input should be greater than {min}"),
                )
            } else {
                (
                    "greater_than_equal",
                    format!("Input should be greater than or equal to {min}"),
                )
            };
            self.issues
                .push(ValidationIssue::new(kind, &["query", key], msg).with_input(v));
            return default;
        }
        if n > max {
            self.issues.push(
                ValidationIssue::new(
                    "less_than_equal",
                    &["query", key],
                    format!("Input should be less than or equal to {max}"),
                )
                .with_input(v),
            );
            return default;
        }
        n
    }

    /// Adds an issue found by the caller.
    pub(in crate::server) fn push(&mut self, issue: ValidationIssue) {
        self.issues.push(issue);
    }

    /// `Err(422)` when any value was invalid.
    pub(in crate::server) fn finish(self) -> Result<(), ApiError> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.issues))
        }
    }
}
