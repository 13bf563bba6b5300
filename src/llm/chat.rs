//! OpenAI-compatible Chat Completions: request body (message formatting of the reference),
//! non-streamed and streamed (SSE) responses assembled into one [`Completion`].

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::settings::Route;
use super::transport::{call_cost, header_cost, Failure, Transport};
use super::{
    Completion, CompletionRequest, LlmClient, LlmError, Message, Role, StreamDelta, ToolCall, Usage,
};

/// Tool results longer than this (in characters) are cut in the middle, like the reference.
pub(crate) const TOOL_TEXT_LIMIT: usize = 50_000;
const CLIP_NOTICE: &str =
    "<response clipped><NOTE>Only part of this output is shown: it exceeded the length limit.</NOTE>";

/// Keeps the head and tail of `text` within `limit` characters, with a notice between.
pub(crate) fn clip_tool_text(text: &str) -> String {
    let n = text.chars().count();
    if n <= TOOL_TEXT_LIMIT {
        return text.to_string();
    }
    let notice_len = CLIP_NOTICE.chars().count();
    let available = TOOL_TEXT_LIMIT - notice_len;
    let head = available / 2 + available % 2;
    let tail = available - head;
    let head_s: String = text.chars().take(head).collect();
    let tail_s: String = text.chars().skip(n - tail).collect();
    format!("{head_s}{CLIP_NOTICE}{tail_s}")
}

pub(crate) fn role_str(r: Role) -> &'static str {
    match r {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

fn is_plain_user(m: &Message) -> bool {
    m.role == Role::User && m.tool_calls.is_empty() && m.tool_call_id.is_none() && m.name.is_none()
}

/// Merges consecutive plain user messages into one (their parts concatenated).
pub(crate) fn merge_user_messages(messages: &[Message]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    for m in messages {
        if let Some(last) = out.last_mut() {
            if is_plain_user(last) && is_plain_user(m) {
                last.content.extend(m.content.iter().cloned());
                continue;
            }
        }
        out.push(m.clone());
    }
    out
}

/// Which text parts get an Anthropic-style cache breakpoint: `(message index, part index)`.
pub(crate) fn cache_breakpoints(messages: &[Message]) -> Vec<(usize, usize)> {
    let mut marks = Vec::new();
    if let Some(first) = messages.first() {
        if first.role == Role::System && !first.content.is_empty() {
            marks.push((0, 0));
        }
    }
    if let Some((i, m)) = messages
        .iter()
        .enumerate()
        .rev()
        .find(|(_, m)| matches!(m.role, Role::User | Role::Tool))
    {
        if !m.content.is_empty() {
            marks.push((i, m.content.len() - 1));
        }
    }
    marks
}

/// Formats the conversation as Chat Completions `messages`.
pub(crate) fn format_messages(route: &Route, messages: &[Message]) -> Vec<Value> {
    let messages = merge_user_messages(messages);
    let marks = if route.features.cache_control {
        cache_breakpoints(&messages)
    } else {
        Vec::new()
    };
    let ephemeral = || json!({"type": "ephemeral"});
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let mut d = Map::new();
        let is_tool = m.role == Role::Tool;
        let texts: Vec<String> = m
            .content
            .iter()
            .map(|t| {
                if is_tool {
                    clip_tool_text(t)
                } else {
                    t.clone()
                }
            })
            .collect();
        let has_tool_calls = m.role == Role::Assistant && !m.tool_calls.is_empty();
        if route.features.string_content {
            let joined = texts.join("\n");
            if !(has_tool_calls && joined.trim().is_empty()) {
                d.insert("content".into(), Value::String(joined));
            }
        } else {
            let mut parts = Vec::with_capacity(texts.len());
            let mut tool_cache = false;
            for (j, t) in texts.iter().enumerate() {
                if has_tool_calls && t.trim().is_empty() {
                    continue;
                }
                let mut part = json!({"type": "text", "text": t});
                if marks.contains(&(i, j)) {
                    if is_tool {
                        tool_cache = true;
                    } else {
                        part["cache_control"] = ephemeral();
                    }
                }
                parts.push(part);
            }
            if !(has_tool_calls && parts.is_empty()) {
                if m.role == Role::Assistant && parts.is_empty() {
                    d.insert("content".into(), Value::String(String::new()));
                } else {
                    d.insert("content".into(), Value::Array(parts));
                }
            }
            if tool_cache {
                d.insert("cache_control".into(), ephemeral());
            }
        }
        d.insert("role".into(), json!(role_str(m.role)));
        if has_tool_calls {
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments}})
                })
                .collect();
            d.insert("tool_calls".into(), Value::Array(calls));
        }
        if is_tool {
            if let Some(id) = &m.tool_call_id {
                d.insert("tool_call_id".into(), json!(id));
                d.insert("name".into(), json!(m.name.clone().unwrap_or_default()));
            }
        }
        if route.features.send_reasoning_content {
            if let Some(r) = m.reasoning_content.as_deref().filter(|r| !r.is_empty()) {
                d.insert("reasoning_content".into(), json!(r));
            }
        }
        out.push(Value::Object(d));
    }
    out
}

/// Merges `extra` over `body` (top-level keys; objects merged one level deep).
pub(crate) fn merge_extra_body(body: &mut Value, extra: &Map<String, Value>) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    for (k, v) in extra {
        match (obj.get_mut(k), v) {
            (Some(Value::Object(dst)), Value::Object(src)) => {
                for (k2, v2) in src {
                    dst.insert(k2.clone(), v2.clone());
                }
            }
            _ => {
                obj.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Builds the full request body.
pub(crate) fn build_body(t: &Transport, req: &CompletionRequest, stream: bool) -> Value {
    let s = &t.settings;
    let route = &t.route;
    let mut body = Map::new();
    body.insert("model".into(), json!(route.wire_model));
    body.insert(
        "messages".into(),
        Value::Array(format_messages(route, &req.messages)),
    );
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|d| {
                json!({"type": "function", "function": {
                    "name": d.name, "description": d.description, "parameters": d.parameters}})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if stream {
        body.insert("stream".into(), json!(true));
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if !route.features.drop_sampling {
        if let Some(v) = s.temperature {
            body.insert("temperature".into(), json!(v));
        }
        if let Some(v) = s.top_p {
            body.insert("top_p".into(), json!(v));
        }
        if let Some(v) = s.top_k {
            body.insert("top_k".into(), json!(v));
        }
    }
    if let Some(m) = s.max_output_tokens {
        let key = if route.azure {
            "max_tokens"
        } else {
            "max_completion_tokens"
        };
        body.insert(key.into(), json!(m));
    }
    if route.features.reasoning_effort {
        if let Some(e) = &s.reasoning_effort {
            body.insert("reasoning_effort".into(), json!(e));
        }
    }
    if route.features.prompt_cache_retention {
        if let Some(r) = &s.prompt_cache_retention {
            body.insert("prompt_cache_retention".into(), json!(r));
        }
    }
    if let Some(seed) = s.seed {
        body.insert("seed".into(), json!(seed));
    }
    if route.features.prompt_cache_key {
        if let Some(k) = &req.cache_key {
            body.insert("prompt_cache_key".into(), json!(k));
        }
    }
    let mut body = Value::Object(body);
    merge_extra_body(&mut body, &s.extra_body);
    if route.openrouter {
        if let Some(k) = &req.cache_key {
            if body.get("session_id").is_none() {
                body["session_id"] = json!(k);
            }
        }
    }
    body
}

/// Headers every call carries: the OpenRouter attribution pair (the reference sends it to
/// every provider whenever the fields are set, which they are by default), then the user's
/// `extra_headers` (which win).
pub(crate) fn base_headers(t: &Transport) -> Vec<(String, String)> {
    let s = &t.settings;
    let mut h = Vec::new();
    if let Some(u) = &s.openrouter_site_url {
        h.push(("HTTP-Referer".to_string(), u.clone()));
    }
    if let Some(n) = &s.openrouter_app_name {
        h.push(("X-Title".to_string(), n.clone()));
    }
    h.extend(s.extra_headers.iter().cloned());
    h
}

/// Extra headers of a call: [`base_headers`] plus LiteLLM's session id.
pub(crate) fn extra_headers(t: &Transport, req: &CompletionRequest) -> Vec<(String, String)> {
    let mut h = base_headers(t);
    if let Some(k) = &req.cache_key {
        h.push(("x-litellm-session-id".to_string(), k.clone()));
    }
    h
}

fn u64_at(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

/// Chat `usage` → [`Usage`] (LiteLLM's normalization, incl. Anthropic-style cache fields).
pub(crate) fn parse_usage(u: &Value) -> Usage {
    let cache_write = match u64_at(u, "/prompt_tokens_details/cache_creation_tokens") {
        0 => u64_at(u, "/cache_creation_input_tokens"),
        n => n,
    };
    let cache_read = match u64_at(u, "/prompt_tokens_details/cached_tokens") {
        0 => u64_at(u, "/cache_read_input_tokens"),
        n => n,
    };
    Usage {
        prompt_tokens: u64_at(u, "/prompt_tokens"),
        completion_tokens: u64_at(u, "/completion_tokens"),
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        reasoning_tokens: u64_at(u, "/completion_tokens_details/reasoning_tokens"),
        context_window: 0,
        cost: 0.0,
    }
}

fn text_of(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let t: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            (!t.is_empty()).then(|| t.join(""))
        }
        _ => None,
    }
}

/// Parses a non-streamed Chat Completions response.
pub(crate) fn parse_response(v: &Value) -> Result<Completion, Failure> {
    let choice = v
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .ok_or_else(|| {
            Failure::no_response(format!("Response choices is less than 1. Response: {v}"))
        })?;
    let msg = choice.get("message").cloned().unwrap_or(Value::Null);
    let mut tool_calls = Vec::new();
    if let Some(calls) = msg.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            if c.get("type")
                .and_then(Value::as_str)
                .is_some_and(|t| t != "function")
            {
                continue;
            }
            let f = c.get("function").cloned().unwrap_or(Value::Null);
            let arguments = match f.get("arguments") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            tool_calls.push(ToolCall {
                id: c
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: f
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arguments,
                responses_item_id: None,
            });
        }
    }
    let reasoning = msg
        .get("reasoning_content")
        .or_else(|| msg.get("reasoning"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let usage = v.get("usage").map(parse_usage).unwrap_or_default();
    Ok(Completion {
        response_id: v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        text: msg.get("content").and_then(text_of),
        tool_calls,
        reasoning_content: reasoning,
        responses_reasoning_item: None,
        usage,
        latency_secs: 0.0,
    })
}

/// Accumulates streamed chunks into one response (like LiteLLM's `stream_chunk_builder`).
#[derive(Default)]
pub(crate) struct StreamAssembler {
    id: String,
    text: String,
    has_text: bool,
    reasoning: String,
    calls: BTreeMap<u64, (String, String, String)>,
    usage: Option<Value>,
    saw_choice: bool,
}

impl StreamAssembler {
    /// Feeds one `data:` payload; returns the visible deltas it carried.
    pub fn push(&mut self, data: &str) -> Result<Vec<StreamDelta>, Failure> {
        let v: Value = serde_json::from_str(data).map_err(|e| {
            Failure::fatal(LlmError::Unmapped {
                class: "APIError",
                message: format!("litellm.APIError: invalid stream chunk: {e}"),
            })
        })?;
        if let Some(err) = v.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("stream error");
            return Err(Failure {
                error: LlmError::ServiceUnavailable(format!("litellm.APIError: {msg}")),
                retryable: true,
                retry_after: None,
            });
        }
        if self.id.is_empty() {
            if let Some(id) = v.get("id").and_then(Value::as_str) {
                self.id = id.to_string();
            }
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            self.usage = Some(u.clone());
        }
        let mut deltas = Vec::new();
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            return Ok(deltas);
        };
        for ch in choices {
            if ch.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                continue;
            }
            self.saw_choice = true;
            let Some(delta) = ch.get("delta") else {
                continue;
            };
            if let Some(t) = delta.get("content").and_then(Value::as_str) {
                self.has_text = true;
                self.text.push_str(t);
                if !t.is_empty() {
                    deltas.push(StreamDelta::Content(t.to_string()));
                }
            }
            let r = delta
                .get("reasoning_content")
                .or_else(|| delta.get("reasoning"))
                .and_then(Value::as_str);
            if let Some(r) = r {
                self.reasoning.push_str(r);
                if !r.is_empty() {
                    deltas.push(StreamDelta::Reasoning(r.to_string()));
                }
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (pos, c) in calls.iter().enumerate() {
                    let idx = c.get("index").and_then(Value::as_u64).unwrap_or(pos as u64);
                    let e = self.calls.entry(idx).or_default();
                    if let Some(id) = c.get("id").and_then(Value::as_str) {
                        if !id.is_empty() {
                            e.0 = id.to_string();
                        }
                    }
                    if let Some(f) = c.get("function") {
                        if let Some(n) = f.get("name").and_then(Value::as_str) {
                            e.1.push_str(n);
                        }
                        if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                            e.2.push_str(a);
                        }
                    }
                }
            }
        }
        Ok(deltas)
    }

    /// The assembled completion.
    pub fn finish(self) -> Result<Completion, Failure> {
        if !self.saw_choice {
            return Err(Failure::no_response(
                "Response choices is less than 1 (empty stream).",
            ));
        }
        let tool_calls = self
            .calls
            .into_values()
            .map(|(id, name, arguments)| ToolCall {
                id,
                name,
                arguments,
                responses_item_id: None,
            })
            .collect();
        Ok(Completion {
            response_id: self.id,
            text: self.has_text.then_some(self.text),
            tool_calls,
            reasoning_content: (!self.reasoning.is_empty()).then_some(self.reasoning),
            responses_reasoning_item: None,
            usage: self.usage.as_ref().map(parse_usage).unwrap_or_default(),
            latency_secs: 0.0,
        })
    }
}

/// Chat Completions client.
pub(crate) struct ChatClient {
    pub t: Transport,
}

impl ChatClient {
    fn url(&self) -> String {
        let t = &self.t;
        if t.route.azure {
            let v = t
                .settings
                .api_version
                .as_deref()
                .unwrap_or("2024-12-01-preview");
            format!(
                "{}/openai/deployments/{}/chat/completions?api-version={v}",
                t.route.base_url, t.route.wire_model
            )
        } else {
            format!("{}/chat/completions", t.route.base_url)
        }
    }

    async fn attempt(
        &self,
        body: &Value,
        req: &CompletionRequest,
        stream: bool,
        on_delta: Option<&super::DeltaSink>,
    ) -> Result<Completion, Failure> {
        let t = &self.t;
        let headers = t.headers(&extra_headers(t, req));
        let reply = t.post(&self.url(), headers, body).await?;
        let hcost = header_cost(reply.response.headers());
        let mut c = if stream {
            let mut asm = StreamAssembler::default();
            t.read_sse(reply, |_, data| {
                for d in asm.push(data)? {
                    if let Some(sink) = on_delta {
                        sink(d);
                    }
                }
                Ok(())
            })
            .await?;
            asm.finish()?
        } else {
            let v = t.json(reply).await?;
            let provider_cost = v.pointer("/usage/cost").and_then(Value::as_f64);
            let mut c = parse_response(&v)?;
            c.usage.cost = provider_cost.unwrap_or(0.0);
            c
        };
        let provider_cost = (c.usage.cost > 0.0).then_some(c.usage.cost);
        c.usage.cost = call_cost(
            &t.settings,
            hcost,
            provider_cost,
            c.usage.prompt_tokens,
            c.usage.completion_tokens,
        );
        Ok(c)
    }

    pub(crate) async fn run(
        &self,
        req: CompletionRequest,
        on_delta: Option<&super::DeltaSink>,
    ) -> Result<Completion, LlmError> {
        let stream = self.t.settings.stream;
        let body = std::sync::Mutex::new(build_body(&self.t, &req, stream));
        let started = Instant::now();
        let mut c = self
            .t
            .with_retries(|| async {
                let current = body.lock().map(|b| b.clone()).unwrap_or(Value::Null);
                let out = self.attempt(&current, &req, stream, on_delta).await;
                // Like the reference: an empty answer at temperature 0 is retried at 1.0.
                if let Err(Failure {
                    error: LlmError::NoResponse(_),
                    ..
                }) = &out
                {
                    if let Ok(mut b) = body.lock() {
                        if b.get("temperature").and_then(Value::as_f64) == Some(0.0) {
                            b["temperature"] = json!(1.0);
                        }
                    }
                }
                out
            })
            .await?;
        c.latency_secs = started.elapsed().as_secs_f64();
        c.usage.context_window = self.t.settings.max_input_tokens.unwrap_or(0);
        Ok(c)
    }
}

#[async_trait::async_trait]
impl LlmClient for ChatClient {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        self.run(request, None).await
    }

    async fn complete_streaming(
        &self,
        request: CompletionRequest,
        on_delta: &super::DeltaSink,
    ) -> Result<Completion, LlmError> {
        self.run(request, Some(on_delta)).await
    }
}
