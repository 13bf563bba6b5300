//! HTTP transport shared by the providers: headers, timeouts, retries with exponential backoff
//! (the reference's tenacity policy), SSE reading, and classification of failures into
//! [`LlmError`] the way the reference maps LiteLLM exceptions.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::settings::{Auth, Route};
use super::{LlmError, LlmSettings};

/// Longest error body kept for messages.
const MAX_ERROR_BODY: usize = 16 * 1024;
/// Largest non-streamed response body accepted.
const MAX_BODY: usize = 64 * 1024 * 1024;
/// Largest single SSE event accepted.
const MAX_SSE_EVENT: usize = 16 * 1024 * 1024;

const LONG_PROMPT_PATTERNS: &[&str] = &[
    "contextwindowexceedederror",
    "prompt is too long",
    "input length and `max_tokens` exceed context limit",
    "please reduce the length of",
    "exceeds the available context size",
    "context length exceeded",
    "input exceeds the context window",
    "context window exceeds limit",
    // LiteLLM's own detection of OpenAI-style messages.
    "maximum context length",
    "context_length_exceeded",
];
const MALFORMED_HISTORY_PATTERNS: &[&str] = &[
    "tool_use ids were found without `tool_result` blocks immediately after",
    "`tool_use` ids were found without `tool_result` blocks immediately after",
    "each `tool_use` block must have a corresponding `tool_result` block in the next message",
    "each tool_use must have a single result",
    "found multiple `tool_result` blocks with id:",
    "unexpected `tool_use_id` found in `tool_result` blocks",
    "each `tool_result` block must have a corresponding `tool_use` block in the previous message",
    "must be followed by tool messages responding to each 'tool_call_id'",
    "failed to parse tool call arguments as json",
];
const QUOTA_PATTERNS: &[&str] = &[
    "usage_limit_reached",
    "insufficient_quota",
    "budget_exceeded",
    "budget has been exceeded",
];
const AUTH_PATTERNS: &[&str] = &[
    "invalid api key",
    "unauthorized",
    "missing api key",
    "invalid authentication",
    "access denied",
    "status 401",
    "status 403",
];
const CONTENT_POLICY_PATTERNS: &[&str] = &[
    "content_policy",
    "content filtering policy",
    "output blocked by content filtering",
    "content_filter",
];

fn contains_any(haystack: &str, patterns: &[&str]) -> bool {
    let h = haystack.to_ascii_lowercase();
    patterns.iter().any(|p| h.contains(p))
}

/// One failed attempt: the error, whether the reference would retry it, and the server's
/// `Retry-After` hint.
#[derive(Debug)]
pub(crate) struct Failure {
    pub error: LlmError,
    pub retryable: bool,
    pub retry_after: Option<Duration>,
}

impl Failure {
    pub fn fatal(error: LlmError) -> Self {
        Failure {
            error,
            retryable: false,
            retry_after: None,
        }
    }

    pub fn no_response(msg: impl Into<String>) -> Self {
        Failure {
            error: LlmError::NoResponse(msg.into()),
            retryable: true,
            retry_after: None,
        }
    }
}

/// Classifies an HTTP error status and body like LiteLLM + the SDK's `map_provider_exception`.
pub(crate) fn classify_status(
    status: u16,
    body: &str,
    label: &str,
    retry_after: Option<Duration>,
) -> Failure {
    let detail = provider_message(body);
    let (class, default_retry) = match status {
        400 => ("BadRequestError", false),
        401 => ("AuthenticationError", false),
        403 => ("PermissionDeniedError", false),
        404 => ("NotFoundError", false),
        408 => ("Timeout", true),
        409 => ("APIError", true),
        413 => ("BadRequestError", false),
        422 => ("UnprocessableEntityError", false),
        429 => ("RateLimitError", true),
        500 => ("InternalServerError", true),
        502 => ("BadGatewayError", true),
        503 => ("ServiceUnavailableError", true),
        s if s >= 500 => ("InternalServerError", true),
        _ => ("APIError", false),
    };
    let message = format!("litellm.{class}: {label} - {detail}");
    // Classify on the whole body too: codes such as `content_policy_violation` live beside
    // the message.
    let lower = format!("{message} {body}").to_ascii_lowercase();
    let quota = contains_any(&lower, QUOTA_PATTERNS);
    let error = if contains_any(&lower, LONG_PROMPT_PATTERNS) {
        LlmError::ContextWindowExceeded(message)
    } else if contains_any(&lower, MALFORMED_HISTORY_PATTERNS) {
        LlmError::MalformedHistory(message)
    } else if status == 401 || status == 403 || contains_any(&lower, AUTH_PATTERNS) {
        LlmError::Authentication(message)
    } else if status == 429 {
        LlmError::RateLimit(message)
    } else if status == 408 {
        LlmError::Timeout(message)
    } else if status >= 500 {
        LlmError::ServiceUnavailable(message)
    } else if contains_any(&lower, CONTENT_POLICY_PATTERNS) {
        LlmError::ContentPolicy(message)
    } else if status == 400 || status == 413 {
        LlmError::BadRequest(message)
    } else {
        LlmError::Unmapped { class, message }
    };
    let retryable = default_retry
        && !quota
        && !matches!(
            error,
            LlmError::ContextWindowExceeded(_)
                | LlmError::MalformedHistory(_)
                | LlmError::Authentication(_)
        );
    Failure {
        error,
        retryable,
        retry_after: if status == 429 || status == 503 {
            retry_after
        } else {
            None
        },
    }
}

/// The human part of a provider error body (`error.message`, `message`, `detail`, or the text).
fn provider_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let candidates = [
            v.pointer("/error/message"),
            v.get("message"),
            v.get("detail"),
            v.get("error"),
        ];
        for c in candidates.into_iter().flatten() {
            if let Some(s) = c.as_str() {
                return s.to_string();
            }
        }
        return v.to_string();
    }
    let t = body.trim();
    if t.is_empty() {
        "(empty response body)".into()
    } else {
        t.to_string()
    }
}

/// Classifies a transport-level failure (connect, timeout, broken body).
pub(crate) fn classify_reqwest(e: &reqwest::Error, label: &str) -> Failure {
    if e.is_timeout() {
        return Failure {
            error: LlmError::Timeout(format!("litellm.Timeout: {label} - {e}")),
            retryable: true,
            retry_after: None,
        };
    }
    if e.is_decode() {
        return Failure::fatal(LlmError::Unmapped {
            class: "APIError",
            message: format!("litellm.APIError: {label} - invalid response: {e}"),
        });
    }
    // Connect errors, resets, incomplete bodies: LiteLLM's APIConnectionError.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    Failure {
        error: LlmError::ServiceUnavailable(format!("litellm.APIConnectionError: {label} - {msg}")),
        retryable: true,
        retry_after: None,
    }
}

fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after-ms").and_then(|v| v.to_str().ok());
    if let Some(ms) = v.and_then(|s| s.trim().parse::<f64>().ok()) {
        if ms.is_finite() && ms >= 0.0 {
            return Some(crate::util::duration_from_secs(ms / 1000.0));
        }
    }
    let v = headers.get("retry-after").and_then(|v| v.to_str().ok())?;
    let secs = v.trim().parse::<f64>().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| crate::util::duration_from_secs(secs))
}

/// The HTTP side of one LLM endpoint.
#[derive(Clone)]
pub(crate) struct Transport {
    http: reqwest::Client,
    pub route: Route,
    pub settings: LlmSettings,
}

/// A successful HTTP response, not yet read.
pub(crate) struct Reply {
    pub response: reqwest::Response,
}

impl Transport {
    pub fn new(settings: &LlmSettings, route: Route) -> Self {
        // One pooled client for every LLM of the process (unit tests run one runtime per
        // test, and pooled connections must not outlive their runtime).
        static HTTP: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
        let build = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                .pool_idle_timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default()
        };
        let http = if cfg!(test) {
            build()
        } else {
            HTTP.get_or_init(build).clone()
        };
        Transport {
            http,
            route,
            settings: settings.clone(),
        }
    }

    /// Error-message label (`OpenAIException`, `AnthropicException`, ...).
    pub fn label(&self) -> &'static str {
        self.route.exception_label()
    }

    /// Headers for every request: auth, provider extras, user extras, session id.
    pub fn headers(&self, extra: &[(String, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |k: &str, v: &str| {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
                h.insert(k, v);
            }
        };
        put("content-type", "application/json");
        if let Some(key) = &self.settings.api_key {
            match self.route.auth {
                Auth::Bearer => put("authorization", &format!("Bearer {key}")),
                Auth::AzureKey => put("api-key", key),
                Auth::XApiKey => put("x-api-key", key),
            }
        }
        for (k, v) in extra {
            put(k, v);
        }
        h
    }

    /// Sends one POST and returns the response if its status is a success.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: &Value,
    ) -> Result<Reply, Failure> {
        let req = self.http.post(url).headers(headers).json(body);
        let response = req
            .send()
            .await
            .map_err(|e| classify_reqwest(&e, self.label()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Reply { response });
        }
        let retry_after = parse_retry_after(response.headers());
        let text = read_limited(response, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&text).into_owned();
        Err(classify_status(
            status.as_u16(),
            &text,
            self.label(),
            retry_after,
        ))
    }

    /// Reads a whole JSON body (bounded).
    pub async fn json(&self, reply: Reply) -> Result<Value, Failure> {
        let bytes = read_limited(reply.response, MAX_BODY)
            .await
            .map_err(|e| classify_reqwest(&e, self.label()))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Failure::fatal(LlmError::Unmapped {
                class: "APIError",
                message: format!(
                    "litellm.APIError: {} - response is not valid JSON: {e}",
                    self.label()
                ),
            })
        })
    }

    /// Runs `attempt` with the reference's retry policy: at most `num_retries` attempts
    /// (at least one), waiting `clamp(multiplier * 2^(n-1), min, max)` seconds after the
    /// n-th failure (or the server's `Retry-After`, capped at the max wait), and a hard
    /// timeout of `timeout` seconds per attempt.
    pub async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, LlmError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let max_attempts = self.settings.num_retries.max(1);
        let mut n = 0u32;
        loop {
            n += 1;
            let outcome = match self.settings.timeout_secs.filter(|t| *t > 0.0) {
                Some(secs) => {
                    match tokio::time::timeout(crate::util::duration_from_secs(secs), attempt())
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(Failure {
                            error: LlmError::Timeout(format!(
                                "litellm.Timeout: LLM hard timeout after {} seconds",
                                fmt_secs(secs)
                            )),
                            retryable: true,
                            retry_after: None,
                        }),
                    }
                }
                None => attempt().await,
            };
            let failure = match outcome {
                Ok(v) => return Ok(v),
                Err(f) => f,
            };
            if !failure.retryable || n >= max_attempts {
                return Err(failure.error);
            }
            let wait = self.backoff(n, failure.retry_after);
            tracing::warn!(
                provider = self.route.provider,
                attempt = n,
                max_attempts,
                wait_secs = wait.as_secs_f64(),
                error = %failure.error,
                "LLM call failed; retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    fn backoff(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let s = &self.settings;
        let max = s.retry_max_wait_secs.max(0.0);
        let min = s.retry_min_wait_secs.max(0.0).min(max);
        let secs = match retry_after {
            Some(ra) => ra.as_secs_f64().min(max),
            None => {
                let exp = s.retry_multiplier * 2f64.powi(n.saturating_sub(1).min(60) as i32);
                if exp.is_finite() {
                    exp.clamp(min, max)
                } else {
                    max
                }
            }
        };
        crate::util::duration_from_secs(secs)
    }

    /// Reads a streamed (SSE) body, calling `on_event(event_name, data)` for each event
    /// whose data is not `[DONE]`. Each chunk must arrive within `stream_idle_timeout`.
    pub async fn read_sse<F>(&self, reply: Reply, mut on_event: F) -> Result<(), Failure>
    where
        F: FnMut(Option<&str>, &str) -> Result<(), Failure>,
    {
        let idle = self
            .settings
            .stream_idle_timeout_secs
            .filter(|t| *t > 0.0)
            .map(crate::util::duration_from_secs);
        let mut stream = reply.response.bytes_stream();
        let mut parser = SseParser::default();
        loop {
            let next = match idle {
                Some(d) => match tokio::time::timeout(d, stream.next()).await {
                    Ok(x) => x,
                    Err(_) => {
                        return Err(Failure {
                            error: LlmError::Timeout(format!(
                                "litellm.Timeout: LLM stream idle timeout after {} seconds",
                                fmt_secs(d.as_secs_f64())
                            )),
                            retryable: true,
                            retry_after: None,
                        })
                    }
                },
                None => stream.next().await,
            };
            let chunk: Bytes = match next {
                None => break,
                Some(Ok(c)) => c,
                Some(Err(e)) => return Err(classify_reqwest(&e, self.label())),
            };
            for ev in parser.push(&chunk)? {
                if ev.data.trim() == "[DONE]" {
                    return Ok(());
                }
                on_event(ev.event.as_deref(), &ev.data)?;
            }
        }
        for ev in parser.finish() {
            if ev.data.trim() == "[DONE]" {
                return Ok(());
            }
            on_event(ev.event.as_deref(), &ev.data)?;
        }
        Ok(())
    }
}

fn fmt_secs(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{}", s as i64)
    } else {
        format!("{s}")
    }
}

async fn read_limited(
    response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// One server-sent event.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct SseEvent {
    pub event: Option<String>,
    pub data: String,
}

/// Incremental SSE parser (lines split across chunks, `\r\n` or `\n`).
#[derive(Default)]
pub(crate) struct SseParser {
    line: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, Failure> {
        let mut out = Vec::new();
        for &b in chunk {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, &mut out);
            } else {
                self.line.push(b);
                if self.line.len() + self.current.data.len() > MAX_SSE_EVENT {
                    return Err(Failure::fatal(LlmError::Unmapped {
                        class: "APIError",
                        message: "litellm.APIError: streamed event too large".into(),
                    }));
                }
            }
        }
        Ok(out)
    }

    pub fn finish(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.line_done(&line, &mut out);
        }
        self.line_done(&[], &mut out);
        out
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                out.push(std::mem::take(&mut self.current));
                self.has_data = false;
            } else {
                self.current = SseEvent::default();
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.current.event = Some(value.to_string()),
            _ => {}
        }
    }
}

/// Cost of one call: the LiteLLM proxy's `x-litellm-response-cost` header, else the
/// provider-reported cost, else the per-token overrides, else 0 (no price table is shipped).
pub(crate) fn call_cost(
    settings: &LlmSettings,
    header_cost: Option<f64>,
    provider_cost: Option<f64>,
    prompt_tokens: u64,
    completion_tokens: u64,
) -> f64 {
    if let Some(c) = header_cost.or(provider_cost) {
        return c.max(0.0);
    }
    match (
        settings.input_cost_per_token,
        settings.output_cost_per_token,
    ) {
        (Some(i), Some(o)) => prompt_tokens as f64 * i + completion_tokens as f64 * o,
        _ => 0.0,
    }
}

/// The `x-litellm-response-cost` header, if any.
pub(crate) fn header_cost(headers: &HeaderMap) -> Option<f64> {
    headers
        .get("x-litellm-response-cost")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|c| c.is_finite())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn llm_retry_after_from_a_provider_never_panics() {
        let h = |name: &str, v: &str| {
            let mut m = HeaderMap::new();
            m.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap_or_else(|_| panic!()),
                v.parse().unwrap_or_else(|_| panic!()),
            );
            parse_retry_after(&m)
        };
        let max = crate::util::duration_from_secs(f64::INFINITY);
        assert_eq!(h("retry-after", "1e20"), Some(max));
        assert_eq!(h("retry-after-ms", "1e25"), Some(max));
        assert_eq!(h("retry-after", "2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(h("retry-after", "-1"), None);
    }

    #[test]
    fn llm_sse_parser_handles_split_lines() {
        let mut p = SseParser::default();
        let mut evs = p.push(b"data: {\"a\"").unwrap();
        assert!(evs.is_empty());
        evs.extend(
            p.push(b":1}\r\n\r\nevent: x\ndata: 2\ndata: 3\n\n: c\n\ndata: [DONE]")
                .unwrap(),
        );
        evs.extend(p.finish());
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: None,
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: Some("x".into()),
                    data: "2\n3".into()
                },
                SseEvent {
                    event: None,
                    data: "[DONE]".into()
                },
            ]
        );
    }

    #[test]
    fn llm_status_classification_matches_the_reference() {
        let c = |s, b: &str| classify_status(s, b, "OpenAIException", None);
        assert_eq!(c(401, "{}").error.code(), "LLMAuthenticationError");
        assert_eq!(c(403, "{}").error.code(), "LLMAuthenticationError");
        let f = c(
            400,
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens"}}"#,
        );
        assert_eq!(f.error.code(), "LLMContextWindowExceedError");
        assert!(!f.retryable);
        assert_eq!(
            c(400, "prompt is too long: 300000 tokens").error.code(),
            "LLMContextWindowExceedError"
        );
        assert_eq!(c(400, "bad").error.code(), "LLMBadRequestError");
        assert_eq!(
            c(
                400,
                r#"{"error":{"code":"content_policy_violation","message":"no"}}"#
            )
            .error
            .code(),
            "LLMContentPolicyViolationError"
        );
        assert_eq!(
            c(400, "content_policy violation").error.code(),
            "LLMContentPolicyViolationError"
        );
        assert_eq!(
            c(400, "messages.3: `tool_use` ids were found without `tool_result` blocks immediately after").error.code(),
            "LLMMalformedConversationHistoryError"
        );
        let f = c(429, "slow down");
        assert_eq!(f.error.code(), "LLMRateLimitError");
        assert!(f.retryable);
        assert!(!c(429, r#"{"error":{"type":"insufficient_quota"}}"#).retryable);
        let f = c(500, "boom");
        assert_eq!(f.error.code(), "LLMServiceUnavailableError");
        assert!(f.retryable);
        assert_eq!(c(404, "nope").error.code(), "NotFoundError");
        assert_eq!(c(422, "nope").error.code(), "UnprocessableEntityError");
        assert!(!c(404, "x").retryable && !c(400, "x").retryable);
    }
}
