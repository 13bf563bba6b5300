//! Provider tests against in-process mock HTTP servers that check the exact requests.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use super::*;

/// A canned reply of the mock server.
enum Canned {
    Json(u16, Value, Vec<(&'static str, &'static str)>),
    Sse(Vec<String>),
    /// Wait, then answer 200 with this JSON.
    Slow(Duration, Value),
}

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone)]
struct MockState {
    replies: Arc<Mutex<VecDeque<Canned>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Mock {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Mock {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handler(
    State(st): State<MockState>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    st.seen.lock().unwrap().push(Seen {
        path: uri.to_string(),
        headers,
        body,
    });
    let next = st.replies.lock().unwrap().pop_front();
    match next {
        Some(Canned::Json(status, v, hdrs)) => {
            let mut b = Response::builder().status(StatusCode::from_u16(status).unwrap());
            for (k, val) in hdrs {
                b = b.header(k, val);
            }
            b.header("content-type", "application/json")
                .body(Body::from(v.to_string()))
                .unwrap()
        }
        Some(Canned::Sse(events)) => {
            let mut text = String::new();
            for e in events {
                text.push_str(&e);
                text.push_str("\n\n");
            }
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from(text))
                .unwrap()
        }
        Some(Canned::Slow(d, v)) => {
            tokio::time::sleep(d).await;
            Response::builder().body(Body::from(v.to_string())).unwrap()
        }
        None => Response::builder().status(599).body(Body::empty()).unwrap(),
    }
}

async fn mock(replies: Vec<Canned>) -> Mock {
    let st = MockState {
        replies: Arc::new(Mutex::new(replies.into())),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let seen = st.seen.clone();
    let app = axum::Router::new().fallback(handler).with_state(st);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Mock {
        base: format!("http://{addr}"),
        seen,
    }
}

fn settings(extra: Value) -> LlmSettings {
    let mut j = json!({
        "model": "openai/mock", "api_key": "sk-test", "num_retries": 3,
        "retry_min_wait": 0, "retry_max_wait": 0, "retry_multiplier": 0, "usage_id": "agent"
    });
    for (k, v) in extra.as_object().unwrap() {
        j[k] = v.clone();
    }
    LlmSettings::from_agent_llm_json(&j).unwrap()
}

fn tool_def() -> ToolDefinition {
    ToolDefinition {
        name: "terminal".into(),
        description: "Run a command".into(),
        parameters: json!({"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}),
    }
}

fn conversation() -> CompletionRequest {
    let mut system = Message::text(Role::System, "static prompt");
    system.content.push("dynamic context".into());
    let mut assistant = Message::text(Role::Assistant, "I will look.");
    assistant.tool_calls.push(ToolCall {
        id: "call_1".into(),
        name: "terminal".into(),
        arguments: "{\"command\": \"ls\"}".into(),
        responses_item_id: Some("fc_1".into()),
    });
    assistant.responses_reasoning_item = Some(json!({
        "id": "rs_1", "summary": ["Plan: list"], "encrypted_content": "ENC"
    }));
    let mut tool = Message::text(Role::Tool, "a.txt\n");
    tool.tool_call_id = Some("call_1".into());
    tool.name = Some("terminal".into());
    let mut bare_assistant = Message::text(Role::Assistant, "");
    bare_assistant.tool_calls.push(ToolCall {
        id: "call_2".into(),
        name: "terminal".into(),
        arguments: "{\"command\": \"pwd\"}".into(),
        responses_item_id: None,
    });
    let mut tool2 = Message::text(Role::Tool, "/w");
    tool2.tool_call_id = Some("call_2".into());
    tool2.name = Some("terminal".into());
    CompletionRequest {
        messages: vec![
            system,
            Message::text(Role::User, "list files"),
            Message::text(Role::User, "please"),
            assistant,
            tool,
            bare_assistant,
            tool2,
            Message::text(Role::User, "thanks"),
        ],
        tools: vec![tool_def()],
        cache_key: Some("conv-1".into()),
    }
}

fn chat_ok(id: &str) -> Value {
    json!({
        "id": id, "object": "chat.completion", "model": "mock",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Running it.",
            "tool_calls": [{"id": "call_9", "type": "function",
                            "function": {"name": "terminal", "arguments": "{\"command\":\"echo hi\"}"}}]
        }}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                  "prompt_tokens_details": {"cached_tokens": 100},
                  "completion_tokens_details": {"reasoning_tokens": 7}}
    })
}

#[tokio::test]
async fn llm_chat_request_and_response_match_the_reference() {
    let m = mock(vec![Canned::Json(200, chat_ok("chatcmpl-1"), vec![])]).await;
    let s = settings(
        json!({"base_url": format!("{}/v1/", m.base), "extra_headers": {"X-Extra": "yes"}}),
    );
    let c = client_for(&s).complete(conversation()).await.unwrap();

    let reqs = m.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.headers["authorization"], "Bearer sk-test");
    assert_eq!(r.headers["x-extra"], "yes");
    assert_eq!(r.headers["http-referer"], "https://docs.all-hands.dev/");
    assert_eq!(r.headers["x-title"], "OpenHands");
    assert_eq!(r.headers["x-litellm-session-id"], "conv-1");
    let expected = json!({
        "model": "mock",
        "messages": [
            {"content": [{"type": "text", "text": "static prompt"},
                         {"type": "text", "text": "dynamic context"}], "role": "system"},
            {"content": [{"type": "text", "text": "list files"}, {"type": "text", "text": "please"}],
             "role": "user"},
            {"content": [{"type": "text", "text": "I will look."}], "role": "assistant",
             "tool_calls": [{"id": "call_1", "type": "function",
                             "function": {"name": "terminal", "arguments": "{\"command\": \"ls\"}"}}]},
            {"content": [{"type": "text", "text": "a.txt\n"}], "role": "tool",
             "tool_call_id": "call_1", "name": "terminal"},
            {"role": "assistant",
             "tool_calls": [{"id": "call_2", "type": "function",
                             "function": {"name": "terminal", "arguments": "{\"command\": \"pwd\"}"}}]},
            {"content": [{"type": "text", "text": "/w"}], "role": "tool",
             "tool_call_id": "call_2", "name": "terminal"},
            {"content": [{"type": "text", "text": "thanks"}], "role": "user"}
        ],
        "tools": [{"type": "function", "function": {"name": "terminal", "description": "Run a command",
                   "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                                  "required": ["command"]}}}],
        "reasoning_effort": "high",
        "prompt_cache_key": "conv-1"
    });
    assert_eq!(r.body, expected);

    assert_eq!(c.response_id, "chatcmpl-1");
    assert_eq!(c.text.as_deref(), Some("Running it."));
    assert_eq!(
        c.tool_calls,
        vec![ToolCall {
            id: "call_9".into(),
            name: "terminal".into(),
            arguments: "{\"command\":\"echo hi\"}".into(),
            responses_item_id: None
        }]
    );
    assert_eq!(
        c.usage,
        Usage {
            prompt_tokens: 120,
            completion_tokens: 30,
            cache_read_tokens: 100,
            cache_write_tokens: 0,
            reasoning_tokens: 7,
            context_window: 0,
            cost: 0.0
        }
    );
}

#[tokio::test]
async fn llm_chat_cache_markers_and_sampling_for_proxy_claude() {
    let m = mock(vec![Canned::Json(
        200,
        chat_ok("x"),
        vec![("x-litellm-response-cost", "0.0125")],
    )])
    .await;
    let s = settings(json!({
        "model": "litellm_proxy/claude-sonnet-4-5", "base_url": m.base,
        "temperature": 0.5, "max_output_tokens": 1000
    }));
    let c = client_for(&s).complete(conversation()).await.unwrap();
    assert_eq!(c.usage.cost, 0.0125);
    let body = &m.requests()[0].body;
    assert_eq!(m.requests()[0].path, "/chat/completions");
    assert_eq!(body["model"], "claude-sonnet-4-5");
    let msgs = body["messages"].as_array().unwrap();
    assert_eq!(
        msgs[0]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert!(msgs[0]["content"][1].get("cache_control").is_none());
    assert_eq!(
        msgs[6]["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert!(msgs[5].get("cache_control").is_none());
    // Reasoning model: sampling params dropped, reasoning effort sent, no prompt_cache_key.
    assert!(body.get("temperature").is_none());
    assert_eq!(body["reasoning_effort"], "high");
    assert_eq!(body["max_completion_tokens"], 1000);
    assert!(body.get("prompt_cache_key").is_none());

    // The last user/tool message carries the marker at message level for tool messages.
    let m2 = mock(vec![Canned::Json(200, chat_ok("y"), vec![])]).await;
    let s2 = settings(json!({"model": "litellm_proxy/claude-sonnet-4-5", "base_url": m2.base}));
    let mut req = conversation();
    req.messages.pop();
    client_for(&s2).complete(req).await.unwrap();
    let body = &m2.requests()[0].body;
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "tool");
    assert_eq!(last["cache_control"], json!({"type": "ephemeral"}));
    assert!(last["content"][0].get("cache_control").is_none());
}

fn sse(v: Value) -> String {
    format!("data: {v}")
}

#[tokio::test]
async fn llm_chat_stream_assembles_text_tool_calls_and_usage() {
    let chunk = |delta: Value| {
        sse(
            json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "model": "mock",
                   "choices": [{"index": 0, "delta": delta, "finish_reason": null}]}),
        )
    };
    let events = vec![
        chunk(json!({"role": "assistant", "content": ""})),
        chunk(json!({"content": "Hel"})),
        chunk(json!({"content": "lo"})),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                     "function": {"name": "terminal", "arguments": ""}}]}),
        ),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"comm"}}]})),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "and\": \"ls\"}"}}]})),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                     "function": {"name": "think", "arguments": "{}"}}]}),
        ),
        sse(json!({"id": "chatcmpl-s", "choices": [], "usage":
            {"prompt_tokens": 10, "completion_tokens": 5,
             "prompt_tokens_details": {"cached_tokens": 4, "cache_creation_tokens": 2}}})),
        "data: [DONE]".to_string(),
    ];
    let m = mock(vec![Canned::Sse(events)]).await;
    let s = settings(json!({"base_url": format!("{}/v1", m.base), "stream": true}));
    let deltas = Arc::new(Mutex::new(Vec::new()));
    let d2 = deltas.clone();
    let sink = move |d: StreamDelta| d2.lock().unwrap().push(d);
    let c = client_for(&s)
        .complete_streaming(conversation(), &sink)
        .await
        .unwrap();
    let body = &m.requests()[0].body;
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(c.response_id, "chatcmpl-s");
    assert_eq!(c.text.as_deref(), Some("Hello"));
    assert_eq!(c.tool_calls.len(), 2);
    assert_eq!(c.tool_calls[0].id, "call_a");
    assert_eq!(c.tool_calls[0].arguments, "{\"command\": \"ls\"}");
    assert_eq!(c.tool_calls[1].name, "think");
    assert_eq!(
        (
            c.usage.prompt_tokens,
            c.usage.completion_tokens,
            c.usage.cache_read_tokens,
            c.usage.cache_write_tokens
        ),
        (10, 5, 4, 2)
    );
    assert_eq!(
        *deltas.lock().unwrap(),
        vec![
            StreamDelta::Content("Hel".into()),
            StreamDelta::Content("lo".into())
        ]
    );
}

#[tokio::test]
async fn llm_retries_5xx_and_429_then_succeeds() {
    let m = mock(vec![
        Canned::Json(500, json!({"error": {"message": "boom"}}), vec![]),
        Canned::Json(
            429,
            json!({"error": {"message": "slow down"}}),
            vec![("retry-after", "0")],
        ),
        Canned::Json(200, chat_ok("chatcmpl-ok"), vec![]),
    ])
    .await;
    let s = settings(json!({"base_url": m.base}));
    let c = client_for(&s).complete(conversation()).await.unwrap();
    assert_eq!(c.response_id, "chatcmpl-ok");
    assert_eq!(m.requests().len(), 3);
}

#[tokio::test]
async fn llm_gives_up_after_num_retries_attempts() {
    let m = mock(vec![
        Canned::Json(503, json!({"error": {"message": "down"}}), vec![]),
        Canned::Json(503, json!({"error": {"message": "down"}}), vec![]),
        Canned::Json(503, json!({"error": {"message": "down"}}), vec![]),
        Canned::Json(200, chat_ok("never"), vec![]),
    ])
    .await;
    let s = settings(json!({"base_url": m.base}));
    let e = client_for(&s).complete(conversation()).await.unwrap_err();
    assert_eq!(e.code(), "LLMServiceUnavailableError");
    assert!(e.to_string().contains("down"), "{e}");
    assert_eq!(m.requests().len(), 3);
}

#[tokio::test]
async fn llm_does_not_retry_bad_requests() {
    let m = mock(vec![
        Canned::Json(
            400,
            json!({"error": {"message": "invalid tool schema"}}),
            vec![],
        ),
        Canned::Json(200, chat_ok("never"), vec![]),
    ])
    .await;
    let s = settings(json!({"base_url": m.base}));
    let e = client_for(&s).complete(conversation()).await.unwrap_err();
    assert_eq!(e.code(), "LLMBadRequestError");
    assert!(e.to_string().contains("invalid tool schema"));
    assert_eq!(m.requests().len(), 1);

    let m = mock(vec![Canned::Json(
        400,
        json!({"error": {"message": "This model's maximum context length is 8192 tokens.",
                         "code": "context_length_exceeded"}}),
        vec![],
    )])
    .await;
    let s = settings(json!({"base_url": m.base}));
    let e = client_for(&s).complete(conversation()).await.unwrap_err();
    assert_eq!(e.code(), "LLMContextWindowExceedError");
    assert_eq!(m.requests().len(), 1);
}

#[tokio::test]
async fn llm_unauthorized_is_an_authentication_error() {
    let m = mock(vec![Canned::Json(
        401,
        json!({"error": {"message": "Incorrect API key provided"}}),
        vec![],
    )])
    .await;
    let s = settings(json!({"base_url": m.base}));
    let e = client_for(&s).complete(conversation()).await.unwrap_err();
    assert_eq!(e.code(), "LLMAuthenticationError");
    assert_eq!(
        e.to_string(),
        "Your LLM API key appears to be invalid or has expired."
    );
    assert!(e.message().contains("Incorrect API key"));
    assert_eq!(m.requests().len(), 1);
}

#[tokio::test]
async fn llm_timeout_is_a_timeout_error() {
    let m = mock(vec![
        Canned::Slow(Duration::from_secs(5), chat_ok("late")),
        Canned::Slow(Duration::from_secs(5), chat_ok("late")),
    ])
    .await;
    let s = settings(json!({"base_url": m.base, "timeout": 0.3, "num_retries": 2}));
    let e = client_for(&s).complete(conversation()).await.unwrap_err();
    assert_eq!(e.code(), "LLMTimeoutError");
    assert_eq!(m.requests().len(), 2);
}

#[tokio::test]
async fn llm_empty_choices_is_no_response_and_is_retried() {
    let empty =
        json!({"id": "e", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 0}});
    let m = mock(vec![
        Canned::Json(200, empty.clone(), vec![]),
        Canned::Json(200, empty, vec![]),
    ])
    .await;
    let s = settings(
        json!({"model": "litellm_proxy/m", "base_url": m.base, "num_retries": 2,
                            "temperature": 0}),
    );
    let e = client_for(&s).complete(conversation()).await.unwrap_err();
    assert_eq!(e.code(), "LLMNoResponseError");
    let reqs = m.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].body["temperature"], 0.0);
    assert_eq!(reqs[1].body["temperature"], 1.0);
}

#[tokio::test]
async fn llm_connection_refused_is_service_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let s = settings(json!({"base_url": format!("http://127.0.0.1:{port}/v1"), "num_retries": 1}));
    let e = client_for(&s).complete(conversation()).await.unwrap_err();
    assert_eq!(e.code(), "LLMServiceUnavailableError");
}

#[tokio::test]
async fn llm_cost_uses_per_token_overrides() {
    let m = mock(vec![Canned::Json(200, chat_ok("c"), vec![])]).await;
    let s = settings(
        json!({"base_url": m.base, "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}),
    );
    let c = client_for(&s).complete(conversation()).await.unwrap();
    assert!((c.usage.cost - (120.0 * 1e-6 + 30.0 * 2e-6)).abs() < 1e-12);
}

/// Smoke test against the acceptance kit's mock LLM.
#[tokio::test]
#[ignore = "needs the OpenHands acceptance kit beside the clone (../shared/compat/mock_llm.py); run with --include-ignored"]
async fn llm_smoke_against_kit_mock_llm() {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/compat/mock_llm.py");
    assert!(script.exists(), "no kit mock LLM at {}", script.display());
    let dir = tempfile::tempdir().unwrap();
    let port_file = dir.path().join("port");
    let mut child = match tokio::process::Command::new("python3")
        .arg(script)
        .args(["--port", "0", "--port-file"])
        .arg(&port_file)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!("cannot run python3 for the kit's mock LLM: {e}"),
    };
    let mut port = String::new();
    for _ in 0..100 {
        if let Ok(p) = tokio::fs::read_to_string(&port_file).await {
            if !p.trim().is_empty() {
                port = p.trim().to_string();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!port.is_empty(), "mock LLM did not start");
    for stream in [false, true] {
        let s =
            settings(json!({"base_url": format!("http://127.0.0.1:{port}/v1"), "stream": stream}));
        let req = CompletionRequest {
            messages: vec![
                Message::text(Role::System, "You work in /tmp/ws."),
                Message::text(Role::User, "[[mock:text]] say something"),
            ],
            tools: vec![tool_def()],
            cache_key: Some("c".into()),
        };
        let c = client_for(&s).complete(req).await.unwrap();
        assert!(
            c.text.as_deref().unwrap_or("").contains("MOCK_TEXT_REPLY"),
            "{c:?}"
        );
        assert!(c.response_id.starts_with("chatcmpl-mock-"));
        assert!(
            c.usage.prompt_tokens > 0 && c.usage.completion_tokens > 0,
            "{c:?}"
        );

        let req = CompletionRequest {
            messages: vec![
                Message::text(Role::System, "You work in /tmp/ws."),
                Message::text(Role::User, "[[mock:echo dir=/tmp/ws]] go"),
            ],
            tools: vec![tool_def()],
            cache_key: None,
        };
        let c = client_for(&s).complete(req).await.unwrap();
        assert_eq!(c.tool_calls.len(), 1, "{c:?}");
        assert_eq!(c.tool_calls[0].name, "terminal");
        let args: Value = serde_json::from_str(&c.tool_calls[0].arguments).unwrap();
        assert!(args["command"].as_str().unwrap().contains("echo"), "{args}");
    }
    let _ = child.start_kill();
}

fn responses_ok() -> Value {
    json!({
        "id": "resp_abc", "object": "response", "status": "completed", "model": "gpt-5-mock",
        "output": [
            {"type": "reasoning", "id": "rs_2", "summary": [{"type": "summary_text", "text": "Plan: run pwd"}],
             "encrypted_content": "ENC2"},
            {"type": "message", "id": "msg_1", "role": "assistant",
             "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "id": "fc_2", "call_id": "call_2b", "name": "terminal",
             "arguments": "{\"command\": \"pwd\"}", "status": "completed"}
        ],
        "usage": {"input_tokens": 50, "output_tokens": 12,
                  "input_tokens_details": {"cached_tokens": 32},
                  "output_tokens_details": {"reasoning_tokens": 9}}
    })
}

#[tokio::test]
async fn llm_responses_request_and_response_match_the_reference() {
    let m = mock(vec![Canned::Json(200, responses_ok(), vec![])]).await;
    let s = settings(json!({"model": "gpt-5-mock", "base_url": format!("{}/v1", m.base)}));
    let c = client_for(&s).complete(conversation()).await.unwrap();
    let r = &m.requests()[0];
    assert_eq!(r.path, "/v1/responses");
    assert_eq!(r.headers["authorization"], "Bearer sk-test");
    let expected = json!({
        "model": "gpt-5-mock",
        "input": [
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "list files"}, {"type": "input_text", "text": "please"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Plan: list"}],
             "encrypted_content": "ENC"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "I will look."}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "terminal",
             "arguments": "{\"command\": \"ls\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt\n"},
            {"type": "function_call", "id": "fc_call_2", "call_id": "call_2", "name": "terminal",
             "arguments": "{\"command\": \"pwd\"}"},
            {"type": "function_call_output", "call_id": "call_2", "output": "/w"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]}
        ],
        "include": ["reasoning.encrypted_content"],
        "instructions": "static prompt\ndynamic context",
        "reasoning": {"effort": "high"},
        "store": false,
        "tool_choice": "auto",
        "tools": [{"type": "function", "name": "terminal", "description": "Run a command",
                   "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                                  "required": ["command"]}, "strict": false}],
        "prompt_cache_retention": "24h",
        "prompt_cache_key": "conv-1"
    });
    assert_eq!(r.body, expected);

    assert!(c.response_id.starts_with("resp_"));
    assert_eq!(c.text.as_deref(), Some("Checking."));
    assert_eq!(
        c.tool_calls,
        vec![ToolCall {
            id: "call_2b".into(),
            name: "terminal".into(),
            arguments: "{\"command\": \"pwd\"}".into(),
            responses_item_id: Some("fc_2".into())
        }]
    );
    assert_eq!(
        c.responses_reasoning_item,
        Some(json!({"id": "rs_2", "summary": ["Plan: run pwd"], "encrypted_content": "ENC2"}))
    );
    assert_eq!(
        (
            c.usage.prompt_tokens,
            c.usage.completion_tokens,
            c.usage.cache_read_tokens,
            c.usage.reasoning_tokens
        ),
        (50, 12, 32, 9)
    );
}

#[tokio::test]
async fn llm_responses_stream_uses_the_completed_response() {
    let ev = |v: Value| format!("event: {}\ndata: {v}", v["type"].as_str().unwrap());
    let m = mock(vec![Canned::Sse(vec![
        ev(json!({"type": "response.created", "response": {"id": "resp_abc", "output": []}})),
        ev(json!({"type": "response.output_text.delta", "delta": "Check"})),
        ev(json!({"type": "response.output_text.delta", "delta": "ing."})),
        ev(json!({"type": "response.completed", "response": responses_ok()})),
    ])])
    .await;
    let s = settings(json!({"model": "openai/gpt-5-mini", "base_url": m.base, "stream": true}));
    let deltas = Arc::new(Mutex::new(Vec::new()));
    let d2 = deltas.clone();
    let sink = move |d: StreamDelta| d2.lock().unwrap().push(d);
    let c = client_for(&s)
        .complete_streaming(conversation(), &sink)
        .await
        .unwrap();
    assert_eq!(m.requests()[0].body["stream"], true);
    assert_eq!(m.requests()[0].body["model"], "gpt-5-mini");
    assert_eq!(c.tool_calls[0].id, "call_2b");
    assert_eq!(c.text.as_deref(), Some("Checking."));
    assert_eq!(deltas.lock().unwrap().len(), 2);
}

fn anthropic_ok() -> Value {
    json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "terminal", "input": {"command": "ls"}}
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 20,
                  "cache_creation_input_tokens": 300, "cache_read_input_tokens": 1000}
    })
}

#[tokio::test]
async fn llm_anthropic_request_and_response_match_the_reference() {
    let m = mock(vec![Canned::Json(200, anthropic_ok(), vec![])]).await;
    let s = settings(
        json!({"model": "anthropic/claude-sonnet-4-5", "base_url": m.base,
                            "api_key": "sk-ant", "temperature": 0.2}),
    );
    let c = client_for(&s).complete(conversation()).await.unwrap();
    let r = &m.requests()[0];
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.headers["x-api-key"], "sk-ant");
    assert_eq!(r.headers["anthropic-version"], "2023-06-01");
    assert!(r.headers.get("authorization").is_none());
    let eph = json!({"type": "ephemeral"});
    let expected = json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "list files"},
                                         {"type": "text", "text": "please"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "I will look."},
                {"type": "tool_use", "id": "call_1", "name": "terminal", "input": {"command": "ls"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "a.txt\n"}]}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_2", "name": "terminal", "input": {"command": "pwd"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_2", "content": [{"type": "text", "text": "/w"}]},
                {"type": "text", "text": "thanks", "cache_control": eph}]}
        ],
        "system": [{"type": "text", "text": "static prompt", "cache_control": eph},
                   {"type": "text", "text": "dynamic context"}],
        "tools": [{"name": "terminal", "description": "Run a command",
                   "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                                    "required": ["command"]}}],
        "max_tokens": 64000
    });
    assert_eq!(r.body, expected);
    assert_eq!(c.response_id, "msg_01");
    assert_eq!(c.text.as_deref(), Some("Let me check."));
    assert_eq!(c.tool_calls[0].id, "toolu_1");
    assert_eq!(
        serde_json::from_str::<Value>(&c.tool_calls[0].arguments).unwrap(),
        json!({"command": "ls"})
    );
    assert_eq!(
        (
            c.usage.prompt_tokens,
            c.usage.completion_tokens,
            c.usage.cache_read_tokens,
            c.usage.cache_write_tokens
        ),
        (1310, 20, 1000, 300)
    );

    // The cache marker of a trailing tool result sits on the tool_result block.
    let m = mock(vec![Canned::Json(200, anthropic_ok(), vec![])]).await;
    let s = settings(
        json!({"model": "anthropic/claude-3-5-sonnet-20241022", "base_url": m.base, "temperature": 0.2}),
    );
    let mut req = conversation();
    req.messages.pop();
    client_for(&s).complete(req).await.unwrap();
    let body = &m.requests()[0].body;
    let last = body["messages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["content"][0]["type"], "tool_result");
    assert_eq!(
        last["content"][0]["cache_control"],
        json!({"type": "ephemeral"})
    );
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["max_tokens"], 8192);

    // History with tool use but no tools offered (e.g. a summary call) gets a placeholder tool.
    let m = mock(vec![Canned::Json(200, anthropic_ok(), vec![])]).await;
    let s = settings(json!({"model": "anthropic/claude-sonnet-4-5", "base_url": m.base}));
    let mut req = conversation();
    req.tools.clear();
    client_for(&s).complete(req).await.unwrap();
    assert_eq!(m.requests()[0].body["tools"][0]["name"], "dummy_tool");
}

#[tokio::test]
async fn llm_anthropic_stream_assembles_tool_use() {
    let ev = |v: Value| format!("event: {}\ndata: {v}", v["type"].as_str().unwrap());
    let m = mock(vec![Canned::Sse(vec![
        ev(json!({"type": "message_start", "message": {"id": "msg_s", "usage": {"input_tokens": 5, "cache_read_input_tokens": 7, "output_tokens": 1}}})),
        ev(json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})),
        ev(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "On it"}})),
        ev(json!({"type": "content_block_stop", "index": 0})),
        ev(json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_s", "name": "terminal", "input": {}}})),
        ev(json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"command\":"}})),
        ev(json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": " \"ls\"}"}})),
        ev(json!({"type": "content_block_stop", "index": 1})),
        ev(json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 15}})),
        ev(json!({"type": "message_stop"})),
    ])])
    .await;
    let s = settings(
        json!({"model": "anthropic/claude-sonnet-4-5", "base_url": format!("{}/v1", m.base), "stream": true}),
    );
    let c = client_for(&s).complete(conversation()).await.unwrap();
    assert_eq!(m.requests()[0].path, "/v1/messages");
    assert_eq!(m.requests()[0].body["stream"], true);
    assert_eq!(c.response_id, "msg_s");
    assert_eq!(c.text.as_deref(), Some("On it"));
    assert_eq!(c.tool_calls[0].id, "toolu_s");
    assert_eq!(c.tool_calls[0].arguments, "{\"command\": \"ls\"}");
    assert_eq!(
        (
            c.usage.prompt_tokens,
            c.usage.completion_tokens,
            c.usage.cache_read_tokens
        ),
        (12, 15, 7)
    );
}

#[tokio::test]
async fn llm_anthropic_overloaded_is_retried() {
    let m = mock(vec![
        Canned::Json(529, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}), vec![]),
        Canned::Json(200, anthropic_ok(), vec![]),
    ])
    .await;
    let s = settings(json!({"model": "anthropic/claude-sonnet-4-5", "base_url": m.base}));
    let c = client_for(&s).complete(conversation()).await.unwrap();
    assert_eq!(c.response_id, "msg_01");
    assert_eq!(m.requests().len(), 2);
}

/// Rebuilds our messages from a captured Chat Completions request.
fn messages_from_chat_capture(body: &Value) -> Vec<Message> {
    let texts = |m: &Value| -> Vec<String> {
        m.get("content")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|p| p["text"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let role = match m["role"].as_str().unwrap() {
                "system" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                _ => Role::Tool,
            };
            let mut msg = Message::text(role, "");
            msg.content = texts(m);
            for c in m
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                msg.tool_calls.push(ToolCall {
                    id: c["id"].as_str().unwrap().into(),
                    name: c["function"]["name"].as_str().unwrap().into(),
                    arguments: c["function"]["arguments"].as_str().unwrap().into(),
                    responses_item_id: None,
                });
            }
            msg.tool_call_id = m
                .get("tool_call_id")
                .and_then(Value::as_str)
                .map(str::to_string);
            msg.name = m.get("name").and_then(Value::as_str).map(str::to_string);
            msg
        })
        .collect()
}

fn tools_from_capture(tools: &Value, nested: bool) -> Vec<ToolDefinition> {
    tools
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let f = if nested { &t["function"] } else { t };
            ToolDefinition {
                name: f["name"].as_str().unwrap().into(),
                description: f["description"].as_str().unwrap().into(),
                parameters: f["parameters"].clone(),
            }
        })
        .collect()
}

/// A request body the reference sent to the model, captured and kept in `tests/fixtures/`.
fn read_capture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[tokio::test]
async fn llm_chat_body_equals_the_reference_capture() {
    let capture = read_capture("llm_request_chat_completions.json");
    let m = mock(vec![Canned::Json(200, chat_ok("x"), vec![])]).await;
    let s = settings(json!({"model": "openai/mock-chat", "base_url": format!("{}/v1", m.base)}));
    let req = CompletionRequest {
        messages: messages_from_chat_capture(&capture),
        tools: tools_from_capture(&capture["tools"], true),
        cache_key: capture["prompt_cache_key"].as_str().map(str::to_string),
    };
    client_for(&s).complete(req).await.unwrap();
    assert_eq!(m.requests()[0].body, capture);
}

#[tokio::test]
async fn llm_responses_body_equals_the_reference_capture() {
    let capture = read_capture("llm_request_responses_api.json");
    let mut messages = vec![Message::text(
        Role::System,
        capture["instructions"].as_str().unwrap(),
    )];
    for item in capture["input"].as_array().unwrap() {
        match item["type"].as_str().unwrap() {
            "message" => {
                let mut msg = Message::text(Role::User, "");
                msg.content = item["content"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["text"].as_str().unwrap().to_string())
                    .collect();
                messages.push(msg);
            }
            "reasoning" => {
                let mut msg = Message::text(Role::Assistant, "");
                msg.content.clear();
                let summary: Vec<Value> = item["summary"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["text"].clone())
                    .collect();
                msg.responses_reasoning_item = Some(json!({
                    "id": item["id"], "summary": summary, "encrypted_content": item["encrypted_content"]
                }));
                messages.push(msg);
            }
            "function_call" => {
                let last = messages.last_mut().unwrap();
                last.tool_calls.push(ToolCall {
                    id: item["call_id"].as_str().unwrap().into(),
                    name: item["name"].as_str().unwrap().into(),
                    arguments: item["arguments"].as_str().unwrap().into(),
                    responses_item_id: item["id"].as_str().map(str::to_string),
                });
            }
            _ => {
                let mut msg = Message::text(Role::Tool, item["output"].as_str().unwrap());
                msg.tool_call_id = item["call_id"].as_str().map(str::to_string);
                msg.name = Some("terminal".into());
                messages.push(msg);
            }
        }
    }
    let m = mock(vec![Canned::Json(200, responses_ok(), vec![])]).await;
    let s = settings(json!({"model": "gpt-5-mock", "base_url": format!("{}/v1", m.base)}));
    let req = CompletionRequest {
        messages,
        tools: tools_from_capture(&capture["tools"], false),
        cache_key: capture["prompt_cache_key"].as_str().map(str::to_string),
    };
    client_for(&s).complete(req).await.unwrap();
    assert_eq!(m.requests()[0].body, capture);
}

#[tokio::test]
async fn llm_redacted_key_sends_no_authorization_and_unknown_providers_fail_clearly() {
    let m = mock(vec![Canned::Json(200, chat_ok("x"), vec![])]).await;
    // A provider whose key variable is not set in test environments.
    let s =
        settings(json!({"model": "hosted_vllm/qwen", "base_url": m.base, "api_key": "**********"}));
    client_for(&s).complete(conversation()).await.unwrap();
    assert!(m.requests()[0].headers.get("authorization").is_none());

    let s = settings(json!({"model": "bedrock/anthropic.claude-v2"}));
    let e = client_for(&s).complete(conversation()).await.unwrap_err();
    assert_eq!(e.code(), "LLMBadRequestError");
    assert!(e.to_string().contains("bedrock/"), "{e}");

    if std::env::var_os("LITELLM_PROXY_API_BASE").is_none() {
        let s = settings(json!({"model": "litellm_proxy/x"}));
        let e = client_for(&s).complete(conversation()).await.unwrap_err();
        assert_eq!(e.code(), "LLMBadRequestError");
        assert!(e.to_string().contains("base_url"), "{e}");
    }
}

#[tokio::test]
async fn llm_string_content_models_get_plain_strings() {
    let m = mock(vec![Canned::Json(200, chat_ok("x"), vec![])]).await;
    let s = settings(json!({"model": "openai/glm-4.6", "base_url": m.base}));
    client_for(&s).complete(conversation()).await.unwrap();
    let msgs = m.requests()[0].body["messages"].clone();
    assert_eq!(msgs[0]["content"], "static prompt\ndynamic context");
    assert_eq!(msgs[3]["content"], "a.txt\n");
    assert!(msgs[4].get("content").is_none());
}
