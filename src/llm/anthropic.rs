//! Anthropic Messages API (`POST <base>/v1/messages`, `x-api-key`, `anthropic-version`):
//! system blocks, `tool_use`/`tool_result`, prompt-cache breakpoints like the reference
//! (static system block and the last user/tool message), plain and streamed responses.
//!
//! Extended thinking is not requested (the stored conversation does not keep thinking-block
//! signatures, which Anthropic requires when replaying tool use with thinking on).

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::chat::{cache_breakpoints, clip_tool_text, merge_user_messages};
use super::transport::{call_cost, header_cost, Failure, Transport};
use super::{
    Completion, CompletionRequest, DeltaSink, LlmClient, LlmError, Message, Role, StreamDelta,
    ToolCall, Usage,
};

const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Default `max_tokens` when the settings give none (Anthropic requires one).
fn default_max_tokens(model: &str) -> u64 {
    let m = model.to_ascii_lowercase();
    if m.contains("claude-3-5") {
        8_192
    } else if m.contains("claude-3-haiku")
        || m.contains("claude-3-opus")
        || m.contains("claude-3-sonnet")
    {
        4_096
    } else if m.contains("opus-4-1")
        || m.contains("opus-4-0")
        || m.ends_with("opus-4")
        || m.contains("opus-4-2025")
    {
        32_000
    } else if m.contains("claude") {
        64_000
    } else {
        4_096
    }
}

fn ephemeral() -> Value {
    json!({"type": "ephemeral"})
}

/// Parses tool-call arguments into the `input` object Anthropic wants.
fn tool_input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({}),
    }
}

/// `(system blocks, messages)` for the conversation.
pub(crate) fn format_messages(messages: &[Message], cache: bool) -> (Vec<Value>, Vec<Value>) {
    let messages = merge_user_messages(messages);
    let marks = if cache {
        cache_breakpoints(&messages)
    } else {
        Vec::new()
    };
    let mut system = Vec::new();
    // (role, content blocks); consecutive same-role turns are merged.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    let mut push = |role: &'static str, blocks: Vec<Value>| {
        if blocks.is_empty() {
            return;
        }
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    };
    for (i, m) in messages.iter().enumerate() {
        match m.role {
            Role::System => {
                for (j, t) in m.content.iter().enumerate() {
                    if t.is_empty() {
                        continue;
                    }
                    let mut b = json!({"type": "text", "text": t});
                    if marks.contains(&(i, j)) {
                        b["cache_control"] = ephemeral();
                    }
                    system.push(b);
                }
            }
            Role::User => {
                let n = m.content.len();
                let mut blocks = Vec::new();
                for (j, t) in m.content.iter().enumerate() {
                    if t.is_empty() && !(j + 1 == n && blocks.is_empty()) {
                        continue;
                    }
                    let text = if t.is_empty() { "." } else { t.as_str() };
                    let mut b = json!({"type": "text", "text": text});
                    if marks.contains(&(i, j)) {
                        b["cache_control"] = ephemeral();
                    }
                    blocks.push(b);
                }
                push("user", blocks);
            }
            Role::Tool => {
                let Some(id) = &m.tool_call_id else { continue };
                let content: Vec<Value> = m
                    .content
                    .iter()
                    .filter(|t| !t.is_empty())
                    .map(|t| json!({"type": "text", "text": clip_tool_text(t)}))
                    .collect();
                let mut b = json!({"type": "tool_result", "tool_use_id": id});
                if !content.is_empty() {
                    b["content"] = Value::Array(content);
                }
                if !m.content.is_empty() && marks.contains(&(i, m.content.len() - 1)) {
                    b["cache_control"] = ephemeral();
                }
                push("user", vec![b]);
            }
            Role::Assistant => {
                let mut blocks: Vec<Value> = m
                    .content
                    .iter()
                    .filter(|t| !t.trim().is_empty())
                    .map(|t| json!({"type": "text", "text": t}))
                    .collect();
                for c in &m.tool_calls {
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name,
                                       "input": tool_input(&c.arguments)}));
                }
                push("assistant", blocks);
            }
        }
    }
    if turns.first().is_some_and(|(r, _)| *r == "assistant") {
        turns.insert(0, ("user", vec![json!({"type": "text", "text": "."})]));
    }
    let msgs = turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    (system, msgs)
}

/// Builds the full request body.
pub(crate) fn build_body(t: &Transport, req: &CompletionRequest, stream: bool) -> Value {
    let s = &t.settings;
    let f = &t.route.features;
    let (system, messages) = format_messages(&req.messages, f.cache_control);
    let mut body = Map::new();
    body.insert("model".into(), json!(t.route.wire_model));
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|d| json!({"name": d.name, "description": d.description, "input_schema": d.parameters}))
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    } else if req
        .messages
        .iter()
        .any(|m| !m.tool_calls.is_empty() || m.role == Role::Tool)
    {
        // Anthropic rejects tool_use/tool_result blocks unless tools are defined (LiteLLM
        // adds a placeholder the same way).
        body.insert(
            "tools".into(),
            json!([{"name": "dummy_tool", "input_schema": {"type": "object", "properties": {}},
                    "type": "custom", "description": "Placeholder tool; do not call it."}]),
        );
    }
    let max_tokens = s
        .max_output_tokens
        .unwrap_or_else(|| default_max_tokens(&t.route.wire_model));
    body.insert("max_tokens".into(), json!(max_tokens));
    if !f.drop_sampling {
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
    if stream {
        body.insert("stream".into(), json!(true));
    }
    let mut body = Value::Object(body);
    super::chat::merge_extra_body(&mut body, &s.extra_body);
    body
}

fn u64_at(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

/// Anthropic usage → [`Usage`] (prompt tokens include cache reads and writes, like LiteLLM).
fn parse_usage(u: &Value) -> Usage {
    let input = u64_at(u, "/input_tokens");
    let cache_read = u64_at(u, "/cache_read_input_tokens");
    let cache_write = u64_at(u, "/cache_creation_input_tokens");
    Usage {
        prompt_tokens: input + cache_read + cache_write,
        completion_tokens: u64_at(u, "/output_tokens"),
        cache_read_tokens: cache_read,
        cache_write_tokens: cache_write,
        reasoning_tokens: 0,
        context_window: 0,
        cost: 0.0,
    }
}

/// Parses a Messages API response.
pub(crate) fn parse_response(v: &Value) -> Result<Completion, Failure> {
    let Some(blocks) = v.get("content").and_then(Value::as_array) else {
        return Err(Failure::no_response(format!(
            "Response choices is less than 1. Response: {v}"
        )));
    };
    let mut text = String::new();
    let mut has_text = false;
    let mut thinking = String::new();
    let mut tool_calls = Vec::new();
    for b in blocks {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                has_text = true;
                text.push_str(b.get("text").and_then(Value::as_str).unwrap_or_default());
            }
            Some("thinking") => {
                thinking.push_str(
                    b.get("thinking")
                        .and_then(Value::as_str)
                        .unwrap_or_default(),
                );
            }
            Some("tool_use") => tool_calls.push(ToolCall {
                id: b
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                name: b
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                arguments: b
                    .get("input")
                    .map(|i| i.to_string())
                    .unwrap_or_else(|| "{}".into()),
                responses_item_id: None,
            }),
            _ => {}
        }
    }
    Ok(Completion {
        response_id: v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        text: has_text.then_some(text),
        tool_calls,
        reasoning_content: (!thinking.is_empty()).then_some(thinking),
        responses_reasoning_item: None,
        usage: v.get("usage").map(parse_usage).unwrap_or_default(),
        latency_secs: 0.0,
    })
}

/// Accumulates a streamed Messages response.
#[derive(Default)]
struct StreamAssembler {
    id: String,
    usage: Map<String, Value>,
    /// index → (kind, text / partial json, tool id, tool name)
    blocks: BTreeMap<u64, (String, String, String, String)>,
    started: bool,
}

impl StreamAssembler {
    fn push(&mut self, data: &str) -> Result<Vec<StreamDelta>, Failure> {
        let v: Value = serde_json::from_str(data).map_err(|e| {
            Failure::fatal(LlmError::Unmapped {
                class: "APIError",
                message: format!(
                    "litellm.APIError: AnthropicException - invalid stream event: {e}"
                ),
            })
        })?;
        let mut out = Vec::new();
        let merge_usage = |usage: &mut Map<String, Value>, u: Option<&Value>| {
            if let Some(Value::Object(m)) = u {
                for (k, val) in m {
                    if !val.is_null() {
                        usage.insert(k.clone(), val.clone());
                    }
                }
            }
        };
        match v.get("type").and_then(Value::as_str) {
            Some("message_start") => {
                self.started = true;
                if let Some(id) = v.pointer("/message/id").and_then(Value::as_str) {
                    self.id = id.to_string();
                }
                merge_usage(&mut self.usage, v.pointer("/message/usage"));
            }
            Some("content_block_start") => {
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let b = v.get("content_block").cloned().unwrap_or(Value::Null);
                let kind = b
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let initial = match kind.as_str() {
                    "text" => b
                        .get("text")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    _ => String::new(),
                };
                self.blocks.insert(
                    idx,
                    (
                        kind,
                        initial,
                        b.get("id")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        b.get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    ),
                );
            }
            Some("content_block_delta") => {
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let d = v.get("delta").cloned().unwrap_or(Value::Null);
                let entry = self.blocks.entry(idx).or_default();
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = d.get("text").and_then(Value::as_str).unwrap_or_default();
                        entry.1.push_str(t);
                        if !t.is_empty() {
                            out.push(StreamDelta::Content(t.to_string()));
                        }
                    }
                    Some("input_json_delta") => {
                        entry.1.push_str(
                            d.get("partial_json")
                                .and_then(Value::as_str)
                                .unwrap_or_default(),
                        );
                    }
                    Some("thinking_delta") => {
                        let t = d
                            .get("thinking")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        entry.1.push_str(t);
                        if !t.is_empty() {
                            out.push(StreamDelta::Reasoning(t.to_string()));
                        }
                    }
                    _ => {}
                }
            }
            Some("message_delta") => merge_usage(&mut self.usage, v.get("usage")),
            Some("error") => {
                let msg = v
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("stream error");
                return Err(Failure {
                    error: LlmError::ServiceUnavailable(format!(
                        "litellm.InternalServerError: AnthropicException - {msg}"
                    )),
                    retryable: true,
                    retry_after: None,
                });
            }
            _ => {}
        }
        Ok(out)
    }

    fn finish(self) -> Result<Completion, Failure> {
        if !self.started {
            return Err(Failure::no_response(
                "Response choices is less than 1 (empty stream).",
            ));
        }
        let mut text = String::new();
        let mut has_text = false;
        let mut thinking = String::new();
        let mut tool_calls = Vec::new();
        for (kind, body, id, name) in self.blocks.into_values() {
            match kind.as_str() {
                "text" => {
                    has_text = true;
                    text.push_str(&body);
                }
                "thinking" => thinking.push_str(&body),
                "tool_use" => tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments: if body.trim().is_empty() {
                        "{}".into()
                    } else {
                        body
                    },
                    responses_item_id: None,
                }),
                _ => {}
            }
        }
        Ok(Completion {
            response_id: self.id,
            text: has_text.then_some(text),
            tool_calls,
            reasoning_content: (!thinking.is_empty()).then_some(thinking),
            responses_reasoning_item: None,
            usage: parse_usage(&Value::Object(self.usage)),
            latency_secs: 0.0,
        })
    }
}

/// Anthropic Messages client.
pub(crate) struct AnthropicClient {
    pub t: Transport,
}

impl AnthropicClient {
    fn url(&self) -> String {
        let b = &self.t.route.base_url;
        if b.ends_with("/v1/messages") {
            b.clone()
        } else if b.ends_with("/v1") {
            format!("{b}/messages")
        } else {
            format!("{b}/v1/messages")
        }
    }

    async fn attempt(
        &self,
        body: &Value,
        stream: bool,
        on_delta: Option<&DeltaSink>,
    ) -> Result<Completion, Failure> {
        let t = &self.t;
        let mut extra = vec![(
            "anthropic-version".to_string(),
            ANTHROPIC_VERSION.to_string(),
        )];
        extra.extend(super::chat::base_headers(t));
        let reply = t.post(&self.url(), t.headers(&extra), body).await?;
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
            parse_response(&t.json(reply).await?)?
        };
        c.usage.cost = call_cost(
            &t.settings,
            hcost,
            None,
            c.usage.prompt_tokens,
            c.usage.completion_tokens,
        );
        Ok(c)
    }

    async fn run(
        &self,
        req: CompletionRequest,
        on_delta: Option<&DeltaSink>,
    ) -> Result<Completion, LlmError> {
        let stream = self.t.settings.stream;
        let body = build_body(&self.t, &req, stream);
        let started = Instant::now();
        let mut c = self
            .t
            .with_retries(|| self.attempt(&body, stream, on_delta))
            .await?;
        c.latency_secs = started.elapsed().as_secs_f64();
        c.usage.context_window = self.t.settings.max_input_tokens.unwrap_or(0);
        Ok(c)
    }
}

#[async_trait::async_trait]
impl LlmClient for AnthropicClient {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        self.run(request, None).await
    }

    async fn complete_streaming(
        &self,
        request: CompletionRequest,
        on_delta: &DeltaSink,
    ) -> Result<Completion, LlmError> {
        self.run(request, Some(on_delta)).await
    }
}
