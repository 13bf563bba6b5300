//! Reading the SDK's `LLM` JSON into [`LlmSettings`], and resolving a model string into the
//! endpoint, wire model name and capabilities used for the request (LiteLLM-style prefixes).

use serde_json::{Map, Value};

use super::LlmSettings;

/// The value the reference writes in place of a secret it will not echo.
const REDACTED: &str = "**********";

fn opt_str(v: &Value, key: &str) -> Option<String> {
    match v.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn opt_f64(v: &Value, key: &str) -> Result<Option<f64>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("llm.{key} must be a number")),
    }
}

fn opt_u64(v: &Value, key: &str) -> Result<Option<u64>, String> {
    match opt_f64(v, key)? {
        None => Ok(None),
        Some(x) if x >= 0.0 => Ok(Some(x as u64)),
        Some(_) => Err(format!("llm.{key} must not be negative")),
    }
}

fn opt_bool(v: &Value, key: &str) -> Option<bool> {
    v.get(key).and_then(Value::as_bool)
}

/// A secret field: plain string, or absent when null, empty, whitespace or redacted.
fn secret(v: &Value, key: &str) -> Option<String> {
    let s = v.get(key)?.as_str()?;
    if s.trim().is_empty() || s == REDACTED {
        None
    } else {
        Some(s.to_string())
    }
}

impl LlmSettings {
    /// Reads the `llm` object of an agent as the SDK client serializes it, with the SDK's
    /// defaults for absent fields. Fails only when `model` is missing or a field has the
    /// wrong type.
    pub fn from_agent_llm_json(v: &Value) -> Result<LlmSettings, String> {
        if !v.is_object() {
            return Err("llm must be an object".into());
        }
        // Like the SDK's validator: no default model once the object is given.
        let model = match v.get("model") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err("model must be specified in LLM".into()),
        };
        let timeout_secs = match v.get("timeout") {
            None => Some(300.0),
            Some(_) => opt_f64(v, "timeout")?,
        };
        // The SDK's `LLM.timeout` is `ge=0`.
        if timeout_secs.is_some_and(|t| t < 0.0) {
            return Err("llm.timeout: Input should be greater than or equal to 0".into());
        }
        let stream_idle_timeout_secs = match v.get("stream_idle_timeout") {
            None => timeout_secs,
            Some(_) => opt_f64(v, "stream_idle_timeout")?,
        };
        let mut base_url = opt_str(v, "base_url");
        if model.starts_with("openai/")
            && matches!(
                base_url.as_deref(),
                Some("https://api.openai.com") | Some("https://api.openai.com/")
            )
        {
            base_url = None;
        }
        let mut api_version = opt_str(v, "api_version");
        if model.starts_with("azure") && api_version.is_none() {
            api_version = Some("2024-12-01-preview".into());
        }
        let extra_headers = match v.get("extra_headers") {
            Some(Value::Object(m)) => m
                .iter()
                .filter_map(|(k, val)| match val {
                    Value::String(s) => Some((k.clone(), s.clone())),
                    Value::Null => None,
                    other => Some((k.clone(), other.to_string())),
                })
                .collect(),
            _ => Vec::new(),
        };
        let extra_body = match v.get("litellm_extra_body") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        let reasoning_effort = match v.get("reasoning_effort") {
            None => Some("high".to_string()),
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        let prompt_cache_retention = match v.get("prompt_cache_retention") {
            None => Some("24h".to_string()),
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        let openrouter_site_url = match v.get("openrouter_site_url") {
            None => Some("https://docs.all-hands.dev/".to_string()),
            _ => opt_str(v, "openrouter_site_url"),
        };
        let openrouter_app_name = match v.get("openrouter_app_name") {
            None => Some("OpenHands".to_string()),
            _ => opt_str(v, "openrouter_app_name"),
        };
        Ok(LlmSettings {
            model,
            base_url,
            api_key: secret(v, "api_key"),
            timeout_secs,
            num_retries: opt_u64(v, "num_retries")?.unwrap_or(5) as u32,
            retry_min_wait_secs: opt_f64(v, "retry_min_wait")?.unwrap_or(8.0),
            retry_max_wait_secs: opt_f64(v, "retry_max_wait")?.unwrap_or(64.0),
            retry_multiplier: opt_f64(v, "retry_multiplier")?.unwrap_or(8.0),
            temperature: opt_f64(v, "temperature")?,
            top_p: opt_f64(v, "top_p")?,
            max_output_tokens: opt_u64(v, "max_output_tokens")?,
            reasoning_effort,
            api_mode: Some(opt_str(v, "api_mode").unwrap_or_else(|| "auto".into())),
            usage_id: opt_str(v, "usage_id").unwrap_or_else(|| "default".into()),
            raw: v.clone(),
            stream: opt_bool(v, "stream").unwrap_or(false),
            stream_idle_timeout_secs,
            top_k: opt_f64(v, "top_k")?,
            seed: v.get("seed").and_then(Value::as_i64),
            max_input_tokens: opt_u64(v, "max_input_tokens")?,
            api_version,
            extra_headers,
            extra_body,
            drop_params: opt_bool(v, "drop_params").unwrap_or(true),
            caching_prompt: opt_bool(v, "caching_prompt").unwrap_or(true),
            input_cost_per_token: opt_f64(v, "input_cost_per_token")?,
            output_cost_per_token: opt_f64(v, "output_cost_per_token")?,
            reasoning_summary: opt_str(v, "reasoning_summary"),
            enable_encrypted_reasoning: opt_bool(v, "enable_encrypted_reasoning").unwrap_or(true),
            prompt_cache_retention,
            model_canonical_name: opt_str(v, "model_canonical_name"),
            force_string_serializer: opt_bool(v, "force_string_serializer"),
            capability_overrides: match v.get("capability_overrides") {
                Some(Value::Object(m)) => m.clone(),
                _ => Map::new(),
            },
            openrouter_site_url,
            openrouter_app_name,
            ollama_base_url: opt_str(v, "ollama_base_url"),
        })
    }
}

/// Which wire protocol a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// OpenAI-compatible `POST <base>/chat/completions`.
    Chat,
    /// OpenAI `POST <base>/responses`.
    Responses,
    /// Anthropic `POST <base>/v1/messages`.
    Anthropic,
    /// A provider this server cannot talk to (the message says which).
    Unsupported(&'static str),
}

/// How the API key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    Bearer,
    /// Azure's `api-key` header.
    AzureKey,
    /// Anthropic's `x-api-key` header.
    XApiKey,
}

/// Capabilities that change the request body (the reference's `ModelFeatures`, approximated
/// without LiteLLM's model table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Features {
    pub reasoning_effort: bool,
    /// Explicit `cache_control` markers (Anthropic-style prompt caching) are active.
    pub cache_control: bool,
    pub prompt_cache_key: bool,
    pub prompt_cache_retention: bool,
    pub string_content: bool,
    pub send_reasoning_content: bool,
    /// Drop temperature/top_p/top_k (reasoning models reject them).
    pub drop_sampling: bool,
}

/// A model string resolved into where and how to send requests.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub api: Api,
    /// LiteLLM provider name (`openai`, `anthropic`, `litellm_proxy`, ...).
    pub provider: &'static str,
    /// Model name sent on the wire (prefix stripped).
    pub wire_model: String,
    /// Base URL without trailing slash.
    pub base_url: String,
    pub auth: Auth,
    pub features: Features,
    pub azure: bool,
    pub openrouter: bool,
}

impl Route {
    /// Label used in error messages, like LiteLLM's `OpenAIException`.
    pub fn exception_label(&self) -> &'static str {
        match self.api {
            Api::Anthropic => "AnthropicException",
            _ if self.azure => "AzureException",
            _ => "OpenAIException",
        }
    }
}

/// `(prefix, provider, default base URL, OpenAI-compatible?)`.
const PROVIDERS: &[(&str, &str, &str)] = &[
    ("openai/", "openai", "https://api.openai.com/v1"),
    ("anthropic/", "anthropic", "https://api.anthropic.com"),
    ("litellm_proxy/", "litellm_proxy", ""),
    (
        "openhands/",
        "litellm_proxy",
        "https://llm-proxy.app.all-hands.dev",
    ),
    ("digitalocean/", "openai", "https://inference.do-ai.run/v1"),
    ("openrouter/", "openrouter", "https://openrouter.ai/api/v1"),
    ("ollama_chat/", "ollama", "http://localhost:11434"),
    ("ollama/", "ollama", "http://localhost:11434"),
    ("hosted_vllm/", "hosted_vllm", ""),
    ("vllm/", "hosted_vllm", ""),
    ("azure/", "azure", ""),
    ("deepseek/", "deepseek", "https://api.deepseek.com/v1"),
    ("groq/", "groq", "https://api.groq.com/openai/v1"),
    ("mistral/", "mistral", "https://api.mistral.ai/v1"),
    ("together_ai/", "together_ai", "https://api.together.xyz/v1"),
    (
        "fireworks_ai/",
        "fireworks_ai",
        "https://api.fireworks.ai/inference/v1",
    ),
    ("xai/", "xai", "https://api.x.ai/v1"),
    (
        "gemini/",
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
    ),
    ("lm_studio/", "lm_studio", "http://localhost:1234/v1"),
    ("moonshot/", "moonshot", "https://api.moonshot.ai/v1"),
    ("cerebras/", "cerebras", "https://api.cerebras.ai/v1"),
    ("perplexity/", "perplexity", "https://api.perplexity.ai"),
    (
        "nvidia_nim/",
        "nvidia_nim",
        "https://integrate.api.nvidia.com/v1",
    ),
    (
        "dashscope/",
        "dashscope",
        "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    ),
    ("openai_like/", "openai", ""),
    ("custom_openai/", "openai", ""),
];

/// Providers whose native protocol is not implemented here.
const UNSUPPORTED: &[&str] = &[
    "bedrock/",
    "vertex_ai/",
    "vertex_ai_beta/",
    "sagemaker/",
    "watsonx/",
    "cohere/",
    "huggingface/",
    "replicate/",
];

/// Environment variables LiteLLM reads for a provider's API key and base URL.
pub(crate) fn env_vars(provider: &str) -> (Option<&'static str>, Option<&'static str>) {
    match provider {
        "openai" => (Some("OPENAI_API_KEY"), None),
        "anthropic" => (Some("ANTHROPIC_API_KEY"), None),
        "litellm_proxy" => (
            Some("LITELLM_PROXY_API_KEY"),
            Some("LITELLM_PROXY_API_BASE"),
        ),
        "hosted_vllm" => (Some("HOSTED_VLLM_API_KEY"), Some("HOSTED_VLLM_API_BASE")),
        "azure" => (Some("AZURE_API_KEY"), Some("AZURE_API_BASE")),
        "openrouter" => (Some("OPENROUTER_API_KEY"), None),
        "deepseek" => (Some("DEEPSEEK_API_KEY"), None),
        "groq" => (Some("GROQ_API_KEY"), None),
        "mistral" => (Some("MISTRAL_API_KEY"), None),
        "together_ai" => (Some("TOGETHERAI_API_KEY"), None),
        "fireworks_ai" => (Some("FIREWORKS_AI_API_KEY"), None),
        "xai" => (Some("XAI_API_KEY"), None),
        "gemini" => (Some("GEMINI_API_KEY"), None),
        "moonshot" => (Some("MOONSHOT_API_KEY"), None),
        "cerebras" => (Some("CEREBRAS_API_KEY"), None),
        "perplexity" => (Some("PERPLEXITYAI_API_KEY"), None),
        "nvidia_nim" => (Some("NVIDIA_NIM_API_KEY"), None),
        "dashscope" => (Some("DASHSCOPE_API_KEY"), None),
        _ => (None, None),
    }
}

/// Case-insensitive substring match against any pattern.
pub(crate) fn model_matches(model: &str, patterns: &[&str]) -> bool {
    let m = model.to_ascii_lowercase();
    patterns.iter().any(|p| m.contains(&p.to_ascii_lowercase()))
}

/// Ordered include/exclude (`!x`) substring rules; the last matching rule wins.
fn ordered_rules(model: &str, rules: &[&str]) -> bool {
    let m = model.to_ascii_lowercase();
    let mut decided = false;
    for rule in rules {
        let (exclude, core) = match rule.strip_prefix('!') {
            Some(c) => (true, c),
            None => (false, *rule),
        };
        if !core.is_empty() && m.contains(core) {
            decided = !exclude;
        }
    }
    decided
}

const RESPONSES_API_MODELS: &[&str] = &["gpt-5", "gpt-6", "codex-mini-latest"];
const PROMPT_CACHE_MODELS: &[&str] = &[
    "claude-3-7-sonnet",
    "claude-sonnet-3-7-latest",
    "claude-3-5-sonnet",
    "claude-3-5-haiku",
    "claude-3-haiku-20240307",
    "claude-3-opus-20240229",
    "claude-sonnet-4",
    "claude-opus-4",
    "claude-haiku-4-5",
    "claude-haiku-5-5",
    "claude-opus-5",
    "claude-sonnet-5",
    "claude-fable-5",
];
const PROMPT_CACHE_RETENTION_RULES: &[&str] =
    &["gpt-5", "gpt-4.1", "!mini", "gpt-5.1-codex-mini", "!azure/"];
const STRING_CONTENT_MODELS: &[&str] = &[
    "deepseek-v3.2",
    "glm",
    "groq/kimi-k2-instruct",
    "openrouter/minimax",
];
const SEND_REASONING_CONTENT_MODELS: &[&str] = &[
    "kimi-k3",
    "kimi-k2-thinking",
    "kimi-k2.5",
    "kimi-k2.6",
    "openrouter/minimax-m2",
    "deepseek/deepseek-reasoner",
    "deepseek/deepseek-v4-pro",
    "deepseek/deepseek-v4-flash",
    "deepseek/deepseek-v4.1-flash",
];
/// Families known to accept `reasoning_effort` whatever the provider prefix.
const REASONING_MODELS: &[&str] = &[
    "gpt-5",
    "gpt-6",
    "codex",
    "o1-",
    "o1",
    "o3",
    "o4-mini",
    "claude-3-7",
    "claude-sonnet-4",
    "claude-opus-4",
    "claude-haiku-4-5",
    "claude-sonnet-5",
    "claude-opus-5",
    "deepseek-reasoner",
    "gemini-2.5",
    "gemini-3",
    "grok-3-mini",
    "grok-4",
    "kimi-k3",
    "gpt-oss",
];
/// Families that are not reasoning models when named without a provider prefix.
const NON_REASONING_BARE: &[&str] = &["gpt-4", "gpt-3.5", "claude-3-5", "claude-3-haiku"];
/// Providers whose OpenAI-style parameter list includes `reasoning_effort` for any model.
const REASONING_PARAM_PROVIDERS: &[&str] = &[
    "openai",
    "openrouter",
    "hosted_vllm",
    "ollama",
    "deepseek",
    "gemini",
    "xai",
    "groq",
    "lm_studio",
    "together_ai",
    "fireworks_ai",
];
/// Providers that accept OpenAI's `prompt_cache_key`.
const PROMPT_CACHE_KEY_PROVIDERS: &[&str] = &[
    "openai",
    "azure",
    "openrouter",
    "hosted_vllm",
    "deepseek",
    "xai",
    "groq",
    "lm_studio",
    "together_ai",
    "fireworks_ai",
    "moonshot",
];

fn trim_slash(s: &str) -> String {
    s.trim_end_matches('/').to_string()
}

fn override_bool(settings: &LlmSettings, key: &str) -> Option<bool> {
    settings
        .capability_overrides
        .get(key)
        .and_then(Value::as_bool)
}

/// Resolves the model string of `settings` (LiteLLM prefix rules, `api_mode`, `base_url`).
pub(crate) fn resolve(settings: &LlmSettings) -> Route {
    let model = settings.model.trim();
    let lower = model.to_ascii_lowercase();
    let mut provider: &'static str = "";
    let mut wire_model = model.to_string();
    let mut default_base = "";
    let mut prefixed = false;
    for (prefix, name, base) in PROVIDERS {
        if lower.starts_with(prefix) {
            provider = name;
            wire_model = model[prefix.len()..].to_string();
            default_base = base;
            prefixed = true;
            break;
        }
    }
    let unsupported = UNSUPPORTED.iter().find(|p| lower.starts_with(**p)).copied();
    if !prefixed {
        // Bare names: LiteLLM infers the provider from well-known model families.
        provider = if lower.starts_with("claude") {
            default_base = "https://api.anthropic.com";
            "anthropic"
        } else {
            default_base = "https://api.openai.com/v1";
            "openai"
        };
    }
    let openrouter = provider == "openrouter"
        || settings
            .base_url
            .as_deref()
            .is_some_and(|b| b.contains("openrouter.ai"));
    let azure = provider == "azure";
    let mut base_url = match (&settings.base_url, provider) {
        (Some(b), _) => trim_slash(b),
        (None, "ollama") => trim_slash(settings.ollama_base_url.as_deref().unwrap_or(default_base)),
        (None, _) => trim_slash(default_base),
    };
    if provider == "ollama" && !base_url.ends_with("/v1") {
        base_url.push_str("/v1");
    }
    let caps_model = settings
        .model_canonical_name
        .clone()
        .unwrap_or_else(|| model.to_string());

    let responses = match settings.api_mode.as_deref() {
        Some("chat") => false,
        Some("responses") => true,
        _ => override_bool(settings, "supports_responses_api")
            .unwrap_or_else(|| model_matches(&caps_model, RESPONSES_API_MODELS)),
    };
    let api = if let Some(p) = unsupported {
        Api::Unsupported(p)
    } else if provider == "anthropic" {
        Api::Anthropic
    } else if responses {
        Api::Responses
    } else {
        Api::Chat
    };
    let auth = match api {
        Api::Anthropic => Auth::XApiKey,
        _ if azure => Auth::AzureKey,
        _ => Auth::Bearer,
    };

    let reasoning_effort =
        override_bool(settings, "supports_reasoning_effort").unwrap_or_else(|| {
            if model_matches(&caps_model, REASONING_MODELS) {
                return true;
            }
            let bare_non_reasoning = model_matches(&wire_model, NON_REASONING_BARE);
            prefixed
                && REASONING_PARAM_PROVIDERS.contains(&provider)
                && !(azure && bare_non_reasoning)
        });
    let cache_control = settings.caching_prompt
        && override_bool(settings, "supports_prompt_cache")
            .unwrap_or_else(|| model_matches(&caps_model, PROMPT_CACHE_MODELS));
    let is_claude = lower.contains("claude");
    let prompt_cache_key =
        override_bool(settings, "supports_prompt_cache_key").unwrap_or_else(|| {
            if api == Api::Anthropic || (is_claude && provider != "openrouter") {
                return false;
            }
            PROMPT_CACHE_KEY_PROVIDERS.contains(&provider)
        });
    let prompt_cache_retention = override_bool(settings, "supports_prompt_cache_retention")
        .unwrap_or_else(|| ordered_rules(&caps_model, PROMPT_CACHE_RETENTION_RULES));
    let sampling = override_bool(settings, "supports_sampling_params");
    let drop_sampling = match sampling {
        Some(s) => !s,
        None => reasoning_effort && !lower.contains("gemini"),
    };
    let features = Features {
        reasoning_effort,
        cache_control,
        prompt_cache_key,
        prompt_cache_retention,
        string_content: settings
            .force_string_serializer
            .unwrap_or_else(|| model_matches(&caps_model, STRING_CONTENT_MODELS)),
        send_reasoning_content: model_matches(&caps_model, SEND_REASONING_CONTENT_MODELS),
        drop_sampling,
    };
    Route {
        api,
        provider,
        wire_model,
        base_url,
        auth,
        features,
        azure,
        openrouter,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(model: &str, base: Option<&str>) -> Route {
        let mut j = json!({"model": model});
        if let Some(b) = base {
            j["base_url"] = json!(b);
        }
        resolve(&LlmSettings::from_agent_llm_json(&j).unwrap())
    }

    #[test]
    fn llm_settings_defaults_follow_the_sdk() {
        let s = LlmSettings::from_agent_llm_json(
            &json!({"model": "openai/mock", "api_key": "**********"}),
        )
        .unwrap();
        assert_eq!(s.api_key, None);
        assert_eq!(s.num_retries, 5);
        assert_eq!(s.retry_multiplier, 8.0);
        assert_eq!(s.retry_min_wait_secs, 8.0);
        assert_eq!(s.retry_max_wait_secs, 64.0);
        assert_eq!(s.timeout_secs, Some(300.0));
        assert_eq!(s.stream_idle_timeout_secs, Some(300.0));
        assert_eq!(s.reasoning_effort.as_deref(), Some("high"));
        assert_eq!(s.api_mode.as_deref(), Some("auto"));
        assert_eq!(s.usage_id, "default");
        assert!(s.caching_prompt && s.drop_params && !s.stream);
        let s = LlmSettings::from_agent_llm_json(&json!({
            "model": "x", "api_key": "sk-1", "timeout": null, "reasoning_effort": null,
            "extra_headers": {"X-A": "1"}, "usage_id": "agent", "num_retries": 2
        }))
        .unwrap();
        assert_eq!(s.api_key.as_deref(), Some("sk-1"));
        assert_eq!(s.timeout_secs, None);
        assert_eq!(s.reasoning_effort, None);
        assert_eq!(s.extra_headers, vec![("X-A".to_string(), "1".to_string())]);
        assert_eq!(s.usage_id, "agent");
        assert_eq!(s.num_retries, 2);
        assert!(LlmSettings::from_agent_llm_json(&json!({"model": ""})).is_err());
        assert!(LlmSettings::from_agent_llm_json(&json!({"api_key": "k"})).is_err());
        assert!(LlmSettings::from_agent_llm_json(&json!({"model": "m", "timeout": "x"})).is_err());
    }

    #[test]
    fn llm_routes_follow_litellm_prefixes() {
        let r = route("openai/mock", Some("http://127.0.0.1:9/v1/"));
        assert_eq!((r.api, r.wire_model.as_str()), (Api::Chat, "mock"));
        assert_eq!(r.base_url, "http://127.0.0.1:9/v1");
        assert!(r.features.reasoning_effort && r.features.prompt_cache_key);
        assert!(!r.features.cache_control);

        let r = route("gpt-5-mock", Some("http://h/v1"));
        assert_eq!(r.api, Api::Responses);
        assert!(r.features.prompt_cache_retention);

        let r = route("anthropic/claude-sonnet-4-5", None);
        assert_eq!(r.api, Api::Anthropic);
        assert_eq!(r.base_url, "https://api.anthropic.com");
        assert!(r.features.cache_control && !r.features.prompt_cache_key);

        let r = route("litellm_proxy/claude-sonnet-4-5", Some("https://proxy"));
        assert_eq!((r.api, r.provider), (Api::Chat, "litellm_proxy"));
        assert!(r.features.cache_control && !r.features.prompt_cache_key);

        let r = route("litellm_proxy/mock", Some("https://proxy"));
        assert!(!r.features.reasoning_effort && !r.features.prompt_cache_key);

        let r = route("ollama/llama3", None);
        assert_eq!(r.base_url, "http://localhost:11434/v1");
        assert_eq!(r.wire_model, "llama3");

        let r = route("openrouter/anthropic/claude-sonnet-4", None);
        assert_eq!(r.wire_model, "anthropic/claude-sonnet-4");
        assert!(r.openrouter);

        let r = route("azure/gpt-4o", Some("https://x.openai.azure.com"));
        assert_eq!(r.auth, Auth::AzureKey);
        assert!(!r.features.reasoning_effort);

        assert!(matches!(route("bedrock/x", None).api, Api::Unsupported(_)));
        let r = route("glm-4.6", Some("http://h"));
        assert!(r.features.string_content);

        let mut s =
            LlmSettings::from_agent_llm_json(&json!({"model": "gpt-5", "api_mode": "chat"}))
                .unwrap();
        assert_eq!(resolve(&s).api, Api::Chat);
        s.api_mode = Some("responses".into());
        s.model = "openai/mock".into();
        assert_eq!(resolve(&s).api, Api::Responses);
    }
}
