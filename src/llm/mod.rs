//! LLM clients behind one small trait: OpenAI-compatible Chat Completions, the Responses API, and
//! Anthropic Messages, with LiteLLM-style model prefixes, retries with backoff, and error classes
//! that map to the reference's `ConversationErrorEvent.code` values.
//!
//! The agent loop only sees [`LlmClient`], [`CompletionRequest`] and [`Completion`].
//!
//! - `settings`: the SDK `LLM` JSON → [`LlmSettings`]; model string → endpoint + capabilities.
//! - `transport`: HTTP, retries/backoff, hard and stream-idle timeouts, error classification.
//! - `chat`, `responses`, `anthropic`: request bodies and response parsing per protocol.
//!
//! Not covered: Bedrock/Vertex native protocols, function-calling emulation
//! (`native_tool_calling: false`), Anthropic extended thinking, images. Cost is 0 unless a
//! LiteLLM proxy (`x-litellm-response-cost`) or the provider (`usage.cost`) reports it, or
//! per-token prices are configured: LiteLLM's price table is not shipped.

mod anthropic;
pub mod catalog;
mod chat;
mod responses;
mod settings;
mod transport;

use std::sync::Arc;

use serde_json::{Map, Value};

/// Settings of one LLM, read from the `llm` object of the client's agent JSON (SDK `LLM` model).
#[derive(Debug, Clone, Default)]
pub struct LlmSettings {
    /// LiteLLM-style model name, e.g. `openai/gpt-4o`, `anthropic/claude-sonnet-4`, `litellm_proxy/x`.
    pub model: String,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    /// Request timeout in seconds.
    pub timeout_secs: Option<f64>,
    pub num_retries: u32,
    pub retry_min_wait_secs: f64,
    pub retry_max_wait_secs: f64,
    pub retry_multiplier: f64,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_output_tokens: Option<u64>,
    pub reasoning_effort: Option<String>,
    /// `chat`, `responses` or `auto`.
    pub api_mode: Option<String>,
    pub usage_id: String,
    /// The whole `llm` object as the client sent it.
    pub raw: Value,
    /// Stream tokens (`stream: true` on the wire); the completion is assembled all the same.
    pub stream: bool,
    /// Longest wait for the next streamed chunk, in seconds.
    pub stream_idle_timeout_secs: Option<f64>,
    pub top_k: Option<f64>,
    pub seed: Option<i64>,
    /// Model context window when known (`max_input_tokens`); reported in usage.
    pub max_input_tokens: Option<u64>,
    /// Azure API version.
    pub api_version: Option<String>,
    /// Headers added to every request.
    pub extra_headers: Vec<(String, String)>,
    /// `litellm_extra_body`: merged into the request body.
    pub extra_body: Map<String, Value>,
    pub drop_params: bool,
    /// Anthropic-style prompt caching markers, for models that support them.
    pub caching_prompt: bool,
    /// Per-token price overrides (USD); cost is 0 without them unless the provider reports it.
    pub input_cost_per_token: Option<f64>,
    pub output_cost_per_token: Option<f64>,
    pub reasoning_summary: Option<String>,
    pub enable_encrypted_reasoning: bool,
    pub prompt_cache_retention: Option<String>,
    /// Name used for capability lookups instead of `model`.
    pub model_canonical_name: Option<String>,
    pub force_string_serializer: Option<bool>,
    /// `capability_overrides` (e.g. `{"supports_responses_api": false}`).
    pub capability_overrides: Map<String, Value>,
    pub openrouter_site_url: Option<String>,
    pub openrouter_app_name: Option<String>,
    pub ollama_base_url: Option<String>,
}

/// Role of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// One function call requested by the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// Provider call id (`call_...`; the Responses API's `call_id`).
    pub id: String,
    pub name: String,
    /// Raw JSON arguments as the model produced them.
    pub arguments: String,
    /// The Responses API's `function_call` item id.
    pub responses_item_id: Option<String>,
}

/// One message of the conversation as sent to the model.
#[derive(Debug, Clone)]
pub struct Message {
    pub role: Role,
    /// Text parts (joined by the providers that want a string).
    pub content: Vec<String>,
    pub tool_calls: Vec<ToolCall>,
    /// For `Role::Tool`: the call this message answers.
    pub tool_call_id: Option<String>,
    /// For `Role::Tool`: the tool's name.
    pub name: Option<String>,
    pub reasoning_content: Option<String>,
    /// Replayed Responses API reasoning item (`{id, summary, encrypted_content}`).
    pub responses_reasoning_item: Option<Value>,
}

impl Message {
    /// A message with one text part.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: vec![text.into()],
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
            reasoning_content: None,
            responses_reasoning_item: None,
        }
    }
}

/// A tool offered to the model.
#[derive(Debug, Clone)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    /// JSON schema of the parameters.
    pub parameters: Value,
}

/// One completion request.
#[derive(Debug, Clone, Default)]
pub struct CompletionRequest {
    pub messages: Vec<Message>,
    pub tools: Vec<ToolDefinition>,
    /// Sent as `prompt_cache_key` where supported (the conversation id).
    pub cache_key: Option<String>,
}

/// Token usage and cost of one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub context_window: u64,
    /// Cost in USD when known (0 otherwise).
    pub cost: f64,
}

/// The model's answer.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    /// Provider response id (becomes `llm_response_id`).
    pub response_id: String,
    /// Assistant text, if any.
    pub text: Option<String>,
    pub tool_calls: Vec<ToolCall>,
    pub reasoning_content: Option<String>,
    pub responses_reasoning_item: Option<Value>,
    pub usage: Usage,
    /// Wall time of the call in seconds.
    pub latency_secs: f64,
}

/// LLM failures, named like the reference's exception classes. `Display` gives the
/// message the reference puts in `ConversationErrorEvent.detail` (for authentication
/// failures, the fixed sentence the reference uses).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("Your LLM API key appears to be invalid or has expired.")]
    Authentication(String),
    #[error("{0}")]
    RateLimit(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    ServiceUnavailable(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    ContentPolicy(String),
    #[error("{0}")]
    ContextWindowExceeded(String),
    #[error("{0}")]
    NoResponse(String),
    #[error("{0}")]
    Other(String),
    /// The provider rejected the tool-call/tool-result history.
    #[error("{0}")]
    MalformedHistory(String),
    /// A provider error the reference leaves unmapped; `class` is LiteLLM's exception class
    /// name (`NotFoundError`, `UnprocessableEntityError`, `APIError`, ...).
    #[error("{message}")]
    Unmapped {
        class: &'static str,
        message: String,
    },
}

impl LlmError {
    /// The reference's exception class name, used as `ConversationErrorEvent.code`.
    pub fn code(&self) -> &'static str {
        match self {
            LlmError::Authentication(_) => "LLMAuthenticationError",
            LlmError::RateLimit(_) => "LLMRateLimitError",
            LlmError::Timeout(_) => "LLMTimeoutError",
            LlmError::ServiceUnavailable(_) => "LLMServiceUnavailableError",
            LlmError::BadRequest(_) => "LLMBadRequestError",
            LlmError::ContentPolicy(_) => "LLMContentPolicyViolationError",
            LlmError::ContextWindowExceeded(_) => "LLMContextWindowExceedError",
            LlmError::NoResponse(_) => "LLMNoResponseError",
            LlmError::Other(_) => "LLMError",
            LlmError::MalformedHistory(_) => "LLMMalformedConversationHistoryError",
            LlmError::Unmapped { class, .. } => class,
        }
    }

    /// The provider's message (for authentication failures too).
    pub fn message(&self) -> &str {
        match self {
            LlmError::Authentication(m)
            | LlmError::RateLimit(m)
            | LlmError::Timeout(m)
            | LlmError::ServiceUnavailable(m)
            | LlmError::BadRequest(m)
            | LlmError::ContentPolicy(m)
            | LlmError::ContextWindowExceeded(m)
            | LlmError::NoResponse(m)
            | LlmError::Other(m)
            | LlmError::MalformedHistory(m) => m,
            LlmError::Unmapped { message, .. } => message,
        }
    }
}

/// A piece of a streamed answer (becomes `StreamingDeltaEvent`).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamDelta {
    Content(String),
    Reasoning(String),
}

/// Receives [`StreamDelta`]s while a streamed call is in flight (must not block).
pub type DeltaSink = dyn Fn(StreamDelta) + Send + Sync;

/// A model endpoint. Implementations retry transient failures themselves.
#[async_trait::async_trait]
pub trait LlmClient: Send + Sync {
    /// Sends one request and returns the model's answer.
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError>;

    /// Like [`LlmClient::complete`], also handing text deltas to `on_delta` as they arrive
    /// when the settings ask for streaming (`stream: true`). The default does not stream.
    async fn complete_streaming(
        &self,
        request: CompletionRequest,
        on_delta: &DeltaSink,
    ) -> Result<Completion, LlmError> {
        let _ = on_delta;
        self.complete(request).await
    }
}

/// Pre-flight check of an SDK `LLM` object (`POST /api/profiles/{name}/validate`): one
/// single-attempt call asking for one token, within 15 s (or the LLM's shorter timeout).
/// `Err((class, message))` names what is wrong; rate limits and timeouts pass (they say
/// nothing about the configuration), unless the 429 says a quota or budget is used up.
pub async fn preflight(llm: &Value) -> Result<(), (String, String)> {
    let mut settings =
        LlmSettings::from_agent_llm_json(llm).map_err(|m| ("LLMBadRequestError".to_string(), m))?;
    settings.num_retries = 0;
    settings.stream = false;
    settings.max_output_tokens = Some(1);
    let limit = settings.timeout_secs.unwrap_or(15.0).min(15.0);
    settings.timeout_secs = Some(limit);
    let request = CompletionRequest {
        messages: vec![
            Message::text(Role::System, "Reply with one token."),
            Message::text(Role::User, "ping"),
        ],
        ..Default::default()
    };
    let client = client_for(&settings);
    let call = client.complete(request);
    match tokio::time::timeout(crate::util::duration_from_secs(limit + 1.0), call).await {
        Ok(Ok(_)) | Err(_) => Ok(()),
        Ok(Err(e @ (LlmError::RateLimit(_) | LlmError::Timeout(_)))) => {
            let quota = ["quota", "budget", "insufficient"]
                .iter()
                .any(|w| e.message().to_ascii_lowercase().contains(w));
            if quota {
                Err((e.code().to_string(), e.message().to_string()))
            } else {
                Ok(())
            }
        }
        Ok(Err(e)) => Err((e.code().to_string(), e.message().to_string())),
    }
}

/// The client for `settings` (provider chosen from the model prefix and `api_mode`).
///
/// Like LiteLLM in the reference server, a missing API key or base URL falls back to the
/// provider's usual environment variable (`OPENAI_API_KEY`, `LITELLM_PROXY_API_BASE`, ...).
pub fn client_for(settings: &LlmSettings) -> Arc<dyn LlmClient> {
    let mut settings = settings.clone();
    let mut route = settings::resolve(&settings);
    let (key_var, base_var) = settings::env_vars(route.provider);
    if settings.api_key.is_none() {
        settings.api_key = key_var
            .and_then(|v| std::env::var(v).ok())
            .filter(|k| !k.trim().is_empty());
    }
    if route.base_url.is_empty() {
        if let Some(b) = base_var.and_then(|v| std::env::var(v).ok()) {
            route.base_url = b.trim().trim_end_matches('/').to_string();
        }
    }
    let api = route.api;
    if route.base_url.is_empty() && !matches!(api, settings::Api::Unsupported(_)) {
        return Arc::new(Misconfigured(format!(
            "litellm.BadRequestError: model `{}` needs a base_url (provider `{}` has no default endpoint)",
            settings.model, route.provider
        )));
    }
    let t = transport::Transport::new(&settings, route);
    match api {
        settings::Api::Chat => Arc::new(chat::ChatClient { t }),
        settings::Api::Responses => Arc::new(responses::ResponsesClient { t }),
        settings::Api::Anthropic => Arc::new(anthropic::AnthropicClient { t }),
        settings::Api::Unsupported(prefix) => Arc::new(Misconfigured(format!(
            "litellm.BadRequestError: models with the `{prefix}` prefix are not supported by this \
             server; use an OpenAI-compatible endpoint (e.g. `litellm_proxy/`)"
        ))),
    }
}

/// Settings no request can succeed with: every call fails with the same bad-request error.
struct Misconfigured(String);

#[async_trait::async_trait]
impl LlmClient for Misconfigured {
    async fn complete(&self, _request: CompletionRequest) -> Result<Completion, LlmError> {
        Err(LlmError::BadRequest(self.0.clone()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
