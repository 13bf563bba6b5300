//! The one error type of the HTTP API and its mapping to status codes and bodies (as the
//! reference server shapes them), plus extractors that turn malformed input into 422s.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

pub use crate::schema::ValidationIssue;

/// Errors of the HTTP API; each maps to one status code in [`IntoResponse`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("validation failed")]
    Validation(Vec<ValidationIssue>),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    #[error("{0}")]
    Internal(String),
    /// 422 whose `detail` is a sentence (the reference's `HTTPException(422, ...)`).
    #[error("{0}")]
    Unprocessable(String),
    /// 503 whose `detail` is a sentence the client may show.
    #[error("{0}")]
    Unavailable(String),
    /// 504: something this request waited for took too long.
    #[error("{0}")]
    GatewayTimeout(String),
    /// 502: an upstream this request needed could not be used.
    #[error("{0}")]
    BadGateway(String),
    /// 500 shaped as the reference answers an exception it did not handle: the message as is,
    /// with a fresh `error_id`.
    #[error("{0}")]
    Unhandled(String),
    /// 500 whose `detail` is a sentence the client may show.
    #[error("{0}")]
    Failed(String),
    /// 422 whose `detail` is this value as the reference words it (not FastAPI's shape).
    #[error("validation failed")]
    Rejected(Value),
    /// 403 whose `detail` is a sentence.
    #[error("{0}")]
    Forbidden(String),
    /// 421: the request reached this server under a host it must not be served on.
    #[error("{0}")]
    Misdirected(String),
}

impl ApiError {
    /// A 422 with one issue.
    pub fn invalid(kind: &str, loc: &[&str], msg: impl Into<String>) -> Self {
        ApiError::Validation(vec![ValidationIssue::new(kind, loc, msg)])
    }

    /// A 404 with the reference's generic body.
    pub fn not_found() -> Self {
        ApiError::NotFound("Not Found".into())
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) | ApiError::Failed(_) | ApiError::Unhandled(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::Unprocessable(_) | ApiError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Misdirected(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::settings::SettingsError> for ApiError {
    fn from(e: crate::settings::SettingsError) -> Self {
        use crate::settings::SettingsError as E;
        match e {
            E::BadRequest(m) => ApiError::BadRequest(m),
            E::NotFound(m) => ApiError::NotFound(m),
            E::Conflict(m) => ApiError::Conflict(m),
            E::Invalid(m) => ApiError::Unprocessable(m),
            E::Fields(errors) => ApiError::Validation(
                errors
                    .into_iter()
                    .map(|f| {
                        let mut loc = vec![Value::String("body".into())];
                        loc.extend(f.loc);
                        ValidationIssue {
                            kind: f.kind.into(),
                            loc,
                            msg: f.msg,
                            input: f.input,
                        }
                    })
                    .collect(),
            ),
            E::Rejected(detail) => ApiError::Rejected(detail),
            e @ E::KeyMismatch { conflict: true, .. } => ApiError::Conflict(e.to_string()),
            e @ E::KeyMismatch { .. } => ApiError::Failed(e.to_string()),
            e @ E::NoKey => ApiError::Unavailable(e.to_string()),
            E::Io(m) => ApiError::Internal(m),
        }
    }
}

impl From<crate::settings::launch::LaunchError> for ApiError {
    fn from(e: crate::settings::launch::LaunchError) -> Self {
        use crate::settings::launch::LaunchError as E;
        match e {
            E::Invalid(m) => ApiError::Unprocessable(m),
            E::Unresolved(detail) => ApiError::Rejected(detail),
            E::NotFound(m) => ApiError::NotFound(m),
            E::Settings(e) => e.into(),
        }
    }
}

impl From<crate::canvas::CanvasError> for ApiError {
    fn from(e: crate::canvas::CanvasError) -> Self {
        use crate::canvas::CanvasError as E;
        let msg = e.to_string();
        match e {
            E::NotInstalled(_) | E::BundleNotFound(_) | E::IconNotFound(_) => {
                ApiError::NotFound(msg)
            }
            E::Source(_) | E::InvalidPath => ApiError::BadRequest(msg),
            E::AlreadyInstalled | E::BackendsRunning | E::Backend(_) | E::SameOrigin => {
                ApiError::Conflict(msg)
            }
            E::NoManifest | E::InvalidExtension | E::ExposeSecrets => ApiError::Unprocessable(msg),
            E::IngressNotConfigured
            | E::IngressMisconfigured
            | E::NotReady
            | E::InsecureContext => ApiError::ServiceUnavailable(msg),
            E::WrongIngress => ApiError::Misdirected(msg),
            E::OriginNotAllowed => ApiError::Forbidden(msg),
            E::Unauthorized => ApiError::Unauthorized,
            E::Unreachable | E::Redirect => ApiError::BadGateway(msg),
            E::Io(_) => ApiError::Internal(msg),
        }
    }
}

impl From<crate::plugins::PluginError> for ApiError {
    fn from(e: crate::plugins::PluginError) -> Self {
        use crate::plugins::PluginError as E;
        match e {
            E::NotInstalled(_) | E::NotFound(_) => ApiError::NotFound(e.to_string()),
            E::Exists => ApiError::Conflict(e.to_string()),
            E::Fetch | E::RefreshFetch(_) | E::Unusable(_) => ApiError::BadRequest(e.to_string()),
            E::Invalid | E::RefreshInvalid(_) => ApiError::Unprocessable(e.to_string()),
            E::Source { code, message } => {
                let detail = json!({"code": code, "message": message});
                // 5xx bodies carry the detail as Python renders the dict.
                let shown = format!(
                    "{{'code': {}, 'message': {}}}",
                    crate::plugins::pyfmt::repr_str(code),
                    crate::plugins::pyfmt::repr_str(&message)
                );
                match E::source_status(code) {
                    502 => ApiError::BadGateway(shown),
                    504 => ApiError::GatewayTimeout(shown),
                    _ => ApiError::Rejected(detail),
                }
            }
            E::Unhandled(m) => ApiError::Unhandled(m),
            E::Io(e) => ApiError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Validation(issues) => json!({ "detail": issues }),
            ApiError::Rejected(detail) => json!({ "detail": detail }),
            // 5xx: the reference moves the message into `exception`, prefixed with the status.
            ApiError::ServiceUnavailable(msg)
            | ApiError::Internal(msg)
            | ApiError::GatewayTimeout(msg)
            | ApiError::BadGateway(msg) => {
                tracing::error!(status = status.as_u16(), error = %msg, "request failed");
                json!({
                    "detail": "Internal Server Error",
                    "exception": format!("{}: {}", status.as_u16(), msg),
                })
            }
            ApiError::Unhandled(msg) => {
                tracing::error!(error = %msg, "request failed");
                json!({
                    "detail": "Internal Server Error",
                    "exception": msg,
                    "error_id": crate::util::hex_id(),
                })
            }
            other => json!({ "detail": other.to_string() }),
        };
        (status, Json(body)).into_response()
    }
}

/// Rewords serde's "invalid type: integer `5`, expected a string" as pydantic does.
fn pydantic_type_issue(issue: ValidationIssue) -> ValidationIssue {
    let Some(expected) = issue
        .msg
        .strip_prefix("invalid type: ")
        .and_then(|m| m.split(", expected ").nth(1))
    else {
        return issue;
    };
    let expected = expected.split(" at line ").next().unwrap_or(expected);
    let from_string = issue.msg.starts_with("invalid type: string");
    let (kind, msg) = match expected {
        "a boolean" if from_string => (
            "bool_parsing",
            "Input should be a valid boolean, unable to interpret input",
        ),
        "f64" | "f32" if from_string => (
            "float_parsing",
            "Input should be a valid number, unable to parse string as a number",
        ),
        e if from_string && (e.starts_with('i') || e.starts_with('u')) => (
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
        ),
        "a string" => ("string_type", "Input should be a valid string"),
        "a boolean" => ("bool_type", "Input should be a valid boolean"),
        "f64" | "f32" => ("float_type", "Input should be a valid number"),
        e if e.starts_with('i') || e.starts_with('u') => {
            ("int_type", "Input should be a valid integer")
        }
        "a sequence" => ("list_type", "Input should be a valid list"),
        e if e.starts_with("a map") || e.starts_with("struct") => {
            ("dict_type", "Input should be a valid dictionary")
        }
        _ => return issue,
    };
    ValidationIssue {
        kind: kind.into(),
        msg: msg.into(),
        ..issue
    }
}

/// Splits a serde message like "missing field `path`" or "limit: invalid digit" into a 422 issue.
fn issue_from_serde(location: &str, message: &str) -> ValidationIssue {
    if let Some(rest) = message.split("missing field `").nth(1) {
        let field = rest.split('`').next().unwrap_or_default();
        return ValidationIssue::new("missing", &[location, field], "Field required");
    }
    // serde_urlencoded / serde_path_to_error prefix the field name: "field: message"
    let (field, msg) = match message.split_once(": ") {
        Some((f, m)) if !f.contains(' ') => (Some(f), m),
        _ => (None, message),
    };
    let mut loc = vec![Value::String(location.into())];
    if let Some(f) = field {
        loc.extend(f.split('.').map(|p| Value::String(p.into())));
    }
    ValidationIssue {
        kind: "value_error".into(),
        loc,
        msg: msg.into(),
        input: Value::Null,
    }
}

/// `Query<T>` that answers malformed query strings with a 422 `detail` list.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(ValidQuery(q.0)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::Validation(vec![issue_from_serde(
                    "query",
                    &e.body_text()
                        .replace("Failed to deserialize query string: ", ""),
                )]))
            }
            Err(e) => Err(ApiError::invalid("value_error", &["query"], e.body_text())),
        }
    }
}

/// `Path<T>` that answers malformed path parameters with a 422 `detail` list.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ValidPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(p) => Ok(ValidPath(p.0)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(ApiError::Validation(
                vec![issue_from_serde("path", &e.body_text())],
            )),
            Err(e) => Err(ApiError::invalid("value_error", &["path"], e.body_text())),
        }
    }
}

/// `Json<T>` that answers malformed bodies with a 422 `detail` list naming the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ValidBytes(bytes) = ValidBytes::from_request(req, state).await?;
        if bytes.is_empty() {
            return Err(ApiError::invalid("missing", &["body"], "Field required"));
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => Ok(ValidJson(v)),
            Err(err) => {
                let path = err.path().to_string();
                let inner = err.into_inner();
                let text = inner.to_string();
                let issue = if inner.is_syntax() || inner.is_eof() {
                    ValidationIssue::new(
                        "json_invalid",
                        &["body"],
                        format!("JSON decode error: {text}"),
                    )
                } else if path == "." {
                    issue_from_serde("body", &text)
                } else {
                    issue_from_serde("body", &format!("{path}: {text}"))
                };
                let issue = pydantic_type_issue(issue);
                // pydantic reports a missing field with the object it is missing from.
                let issue = if issue.kind == "missing" {
                    let container = &issue.loc[1..issue.loc.len().saturating_sub(1)];
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let input = container.iter().try_fold(&body, |v, key| match key {
                        Value::String(k) => v.get(k.as_str()),
                        _ => None,
                    });
                    let input = input.cloned().unwrap_or(Value::Null);
                    issue.with_input(input)
                } else if issue.kind.ends_with("_type") {
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let input = issue.loc[1..].iter().try_fold(&body, |v, key| match key {
                        Value::String(k) => v.get(k.as_str()),
                        Value::Number(n) => n.as_u64().and_then(|i| v.get(i as usize)),
                        _ => None,
                    });
                    let input = input.cloned().unwrap_or(Value::Null);
                    issue.with_input(input)
                } else {
                    issue
                };
                Err(ApiError::Validation(vec![issue]))
            }
        }
    }
}

/// A JSON object body (`ValidJson<Value>` that answers any other JSON value with pydantic's
/// `model_attributes_type` 422, as a model-typed body does).
#[derive(Debug, Clone, Default)]
pub struct ValidObject(pub Value);

impl<S: Send + Sync> FromRequest<S> for ValidObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ValidJson(body) = ValidJson::<Value>::from_request(req, state).await?;
        if body.is_object() {
            return Ok(ValidObject(body));
        }
        Err(ApiError::Validation(vec![ValidationIssue::new(
            "model_attributes_type",
            &["body"],
            "Input should be a valid dictionary or object to extract fields from",
        )
        .with_input(body)]))
    }
}

/// Maps axum's own JSON rejection (for handlers that use `Json` directly) to a 422, or a 413
/// for a body over the limit.
impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return body_too_large();
        }
        ApiError::invalid("json_invalid", &["body"], e.body_text())
    }
}

/// The whole request body as bytes, within the server's body limit
/// (`OH_MAX_REQUEST_BODY_BYTES`); over it, a JSON 413 like every other error.
#[derive(Debug, Clone, Default)]
pub struct ValidBytes(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for ValidBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => Ok(ValidBytes(b)),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(body_too_large()),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

fn body_too_large() -> ApiError {
    ApiError::PayloadTooLarge(
        "Request body too large: it exceeds the server's limit (OH_MAX_REQUEST_BODY_BYTES)".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_field_names_the_field() {
        let i = issue_from_serde("query", "missing field `path`");
        assert_eq!(i.kind, "missing");
        assert_eq!(i.loc, vec![json!("query"), json!("path")]);
    }

    #[test]
    fn prefixed_message_names_the_field() {
        let i = issue_from_serde("query", "limit: invalid digit found in string");
        assert_eq!(i.loc, vec![json!("query"), json!("limit")]);
    }
}
