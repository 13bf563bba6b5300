//! OpenAI Responses API (`POST <base>/responses`): instructions + input items, reasoning
//! items replayed, function calls keyed by `call_id`; plain and streamed (SSE) responses.

use std::time::Instant;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::chat::{clip_tool_text, extra_headers, merge_extra_body, merge_user_messages};
use super::transport::{call_cost, header_cost, Failure, Transport};
use super::{
    Completion, CompletionRequest, DeltaSink, LlmClient, LlmError, Message, Role, StreamDelta,
    ToolCall, Usage,
};

/// `instructions` (system text) and `input` items for the conversation.
pub(crate) fn format_input(messages: &[Message]) -> (Option<String>, Vec<Value>) {
    let messages = merge_user_messages(messages);
    let mut instructions: Option<String> = None;
    let mut input = Vec::new();
    for m in &messages {
        match m.role {
            Role::System => {
                let parts: Vec<&str> = m
                    .content
                    .iter()
                    .map(String::as_str)
                    .filter(|t| !t.is_empty())
                    .collect();
                let s = parts.join("\n");
                let s = s.trim();
                if !s.is_empty() {
                    instructions = Some(match instructions {
                        None => s.to_string(),
                        Some(prev) => format!("{prev}\n\n---\n\n{s}"),
                    });
                }
            }
            Role::User => {
                let mut content: Vec<Value> = m
                    .content
                    .iter()
                    .map(|t| json!({"type": "input_text", "text": t}))
                    .collect();
                if content.is_empty() {
                    content.push(json!({"type": "input_text", "text": ""}));
                }
                input.push(json!({"type": "message", "role": "user", "content": content}));
            }
            Role::Assistant => {
                if let Some(item) = m
                    .responses_reasoning_item
                    .as_ref()
                    .and_then(reasoning_input)
                {
                    input.push(item);
                }
                let texts: Vec<Value> = m
                    .content
                    .iter()
                    .filter(|t| !t.is_empty())
                    .map(|t| json!({"type": "output_text", "text": t}))
                    .collect();
                if !texts.is_empty() {
                    input.push(json!({"type": "message", "role": "assistant", "content": texts}));
                }
                for c in &m.tool_calls {
                    let id = match &c.responses_item_id {
                        Some(id) => id.clone(),
                        None if c.id.starts_with("fc") => c.id.clone(),
                        None => format!("fc_{}", c.id),
                    };
                    input.push(json!({"type": "function_call", "id": id, "call_id": c.id,
                                      "name": c.name, "arguments": c.arguments}));
                }
            }
            Role::Tool => {
                if let Some(call_id) = &m.tool_call_id {
                    for t in &m.content {
                        input.push(json!({"type": "function_call_output", "call_id": call_id,
                                          "output": clip_tool_text(t)}));
                    }
                }
            }
        }
    }
    (instructions, input)
}

/// A stored reasoning item (`{id, summary: [str], content?, encrypted_content?, status?}`)
/// as a Responses input item; `None` without an id.
fn reasoning_input(item: &Value) -> Option<Value> {
    let id = item.get("id")?.as_str()?;
    let strings = |key: &str| -> Vec<String> {
        item.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| {
                        s.as_str()
                            .or_else(|| s.get("text").and_then(Value::as_str))
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Map::new();
    out.insert("type".into(), json!("reasoning"));
    out.insert("id".into(), json!(id));
    let summary: Vec<Value> = strings("summary")
        .into_iter()
        .map(|t| json!({"type": "summary_text", "text": t}))
        .collect();
    out.insert("summary".into(), Value::Array(summary));
    let content = strings("content");
    if !content.is_empty() {
        let c: Vec<Value> = content
            .into_iter()
            .map(|t| json!({"type": "reasoning_text", "text": t}))
            .collect();
        out.insert("content".into(), Value::Array(c));
    }
    for key in ["encrypted_content", "status"] {
        if let Some(v) = item
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            out.insert(key.into(), json!(v));
        }
    }
    Some(Value::Object(out))
}

/// Builds the full request body.
pub(crate) fn build_body(t: &Transport, req: &CompletionRequest, stream: bool) -> Value {
    let s = &t.settings;
    let f = &t.route.features;
    let (instructions, input) = format_input(&req.messages);
    let mut body = Map::new();
    body.insert("model".into(), json!(t.route.wire_model));
    body.insert("input".into(), Value::Array(input));
    if f.reasoning_effort && s.enable_encrypted_reasoning {
        body.insert("include".into(), json!(["reasoning.encrypted_content"]));
    }
    if let Some(i) = instructions {
        body.insert("instructions".into(), json!(i));
    }
    if let (true, Some(effort)) = (f.reasoning_effort, s.reasoning_effort.as_deref()) {
        if !effort.is_empty() {
            let mut r = json!({"effort": effort});
            if let Some(summary) = &s.reasoning_summary {
                r["summary"] = json!(summary);
            }
            body.insert("reasoning".into(), r);
        }
    }
    body.insert("store".into(), json!(false));
    body.insert("tool_choice".into(), json!("auto"));
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|d| {
                json!({"type": "function", "name": d.name, "description": d.description,
                       "parameters": d.parameters, "strict": false})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    let sampling_off = s
        .capability_overrides
        .get("supports_sampling_params")
        .and_then(Value::as_bool)
        == Some(false);
    if !sampling_off {
        if let Some(v) = s.temperature {
            body.insert("temperature".into(), json!(v));
        }
    }
    if let Some(m) = s.max_output_tokens {
        body.insert("max_output_tokens".into(), json!(m));
    }
    if f.prompt_cache_retention {
        if let Some(r) = &s.prompt_cache_retention {
            body.insert("prompt_cache_retention".into(), json!(r));
        }
    }
    if f.prompt_cache_key {
        if let Some(k) = &req.cache_key {
            body.insert("prompt_cache_key".into(), json!(k));
        }
    }
    if stream {
        body.insert("stream".into(), json!(true));
    }
    let mut body = Value::Object(body);
    merge_extra_body(&mut body, &s.extra_body);
    body
}

fn u64_at(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

/// The response id as LiteLLM hands it to the SDK (base64-wrapped with the provider).
fn wrap_response_id(provider: &str, id: &str) -> String {
    if id.is_empty() {
        return String::new();
    }
    let raw = format!("litellm:custom_llm_provider:{provider};model_id:None;response_id:{id}");
    format!(
        "resp_{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Parses a Responses API response object.
pub(crate) fn parse_response(v: &Value, provider: &str) -> Result<Completion, Failure> {
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let msg = err
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| err.to_string());
        return Err(Failure {
            error: LlmError::ServiceUnavailable(format!("litellm.APIError: {msg}")),
            retryable: true,
            retry_after: None,
        });
    }
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    let mut reasoning_item: Option<Value> = None;
    for item in v
        .get("output")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match item.get("type").and_then(Value::as_str) {
            Some("message") => {
                for part in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if part.get("type").and_then(Value::as_str) == Some("output_text") {
                        if let Some(t) = part.get("text").and_then(Value::as_str) {
                            if !t.is_empty() {
                                texts.push(t.to_string());
                            }
                        }
                    }
                }
            }
            Some("function_call") => {
                let item_id = item.get("id").and_then(Value::as_str).map(str::to_string);
                let call_id = item
                    .get("call_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| item_id.clone())
                    .unwrap_or_default();
                let arguments = match item.get("arguments") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                };
                tool_calls.push(ToolCall {
                    id: call_id,
                    name: item
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    arguments,
                    responses_item_id: item_id,
                });
            }
            Some("reasoning") => {
                let texts_of = |key: &str| -> Vec<Value> {
                    item.get(key)
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .map(|p| json!(p.get("text").and_then(Value::as_str).unwrap_or("")))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let mut r = Map::new();
                if let Some(id) = item.get("id").filter(|x| !x.is_null()) {
                    r.insert("id".into(), id.clone());
                }
                r.insert("summary".into(), Value::Array(texts_of("summary")));
                let content = texts_of("content");
                if !content.is_empty() {
                    r.insert("content".into(), Value::Array(content));
                }
                for key in ["encrypted_content", "status"] {
                    if let Some(x) = item.get(key).filter(|x| !x.is_null()) {
                        r.insert(key.into(), x.clone());
                    }
                }
                reasoning_item = Some(Value::Object(r));
            }
            _ => {}
        }
    }
    let text = texts.join("\n").trim().to_string();
    let u = v.get("usage").cloned().unwrap_or(Value::Null);
    let usage = Usage {
        prompt_tokens: u64_at(&u, "/input_tokens"),
        completion_tokens: u64_at(&u, "/output_tokens"),
        cache_read_tokens: u64_at(&u, "/input_tokens_details/cached_tokens"),
        cache_write_tokens: 0,
        reasoning_tokens: u64_at(&u, "/output_tokens_details/reasoning_tokens"),
        context_window: 0,
        cost: u.get("cost").and_then(Value::as_f64).unwrap_or(0.0),
    };
    Ok(Completion {
        response_id: wrap_response_id(
            provider,
            v.get("id").and_then(Value::as_str).unwrap_or_default(),
        ),
        text: (!text.is_empty()).then_some(text),
        tool_calls,
        reasoning_content: None,
        responses_reasoning_item: reasoning_item,
        usage,
        latency_secs: 0.0,
    })
}

/// Responses API client.
pub(crate) struct ResponsesClient {
    pub t: Transport,
}

impl ResponsesClient {
    fn url(&self) -> String {
        let t = &self.t;
        if t.route.azure {
            let v = t
                .settings
                .api_version
                .as_deref()
                .unwrap_or("2024-12-01-preview");
            format!("{}/openai/responses?api-version={v}", t.route.base_url)
        } else {
            format!("{}/responses", t.route.base_url)
        }
    }

    async fn attempt(
        &self,
        body: &Value,
        req: &CompletionRequest,
        stream: bool,
        on_delta: Option<&DeltaSink>,
    ) -> Result<Completion, Failure> {
        let t = &self.t;
        let reply = t
            .post(&self.url(), t.headers(&extra_headers(t, req)), body)
            .await?;
        let hcost = header_cost(reply.response.headers());
        let provider = t.route.provider;
        let mut c = if stream {
            let mut done: Option<Value> = None;
            t.read_sse(reply, |event, data| {
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                let kind = v
                    .get("type")
                    .and_then(Value::as_str)
                    .or(event)
                    .unwrap_or_default()
                    .to_string();
                match kind.as_str() {
                    "response.output_text.delta" => {
                        if let (Some(sink), Some(d)) =
                            (on_delta, v.get("delta").and_then(Value::as_str))
                        {
                            sink(StreamDelta::Content(d.to_string()));
                        }
                    }
                    "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                        if let (Some(sink), Some(d)) =
                            (on_delta, v.get("delta").and_then(Value::as_str))
                        {
                            sink(StreamDelta::Reasoning(d.to_string()));
                        }
                    }
                    "response.completed" | "response.incomplete" => {
                        done = v.get("response").cloned();
                    }
                    "response.failed" | "error" => {
                        let msg = v
                            .pointer("/response/error/message")
                            .or_else(|| v.get("message"))
                            .and_then(Value::as_str)
                            .unwrap_or("the response failed");
                        return Err(Failure {
                            error: LlmError::ServiceUnavailable(format!("litellm.APIError: {msg}")),
                            retryable: true,
                            retry_after: None,
                        });
                    }
                    _ => {}
                }
                Ok(())
            })
            .await?;
            let v = done.ok_or_else(|| {
                Failure::no_response("The streamed response ended before it completed.")
            })?;
            parse_response(&v, provider)?
        } else {
            parse_response(&t.json(reply).await?, provider)?
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
            .with_retries(|| self.attempt(&body, &req, stream, on_delta))
            .await?;
        c.latency_secs = started.elapsed().as_secs_f64();
        c.usage.context_window = self.t.settings.max_input_tokens.unwrap_or(0);
        Ok(c)
    }
}

#[async_trait::async_trait]
impl LlmClient for ResponsesClient {
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
