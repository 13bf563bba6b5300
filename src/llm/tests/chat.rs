//! Chat Completions: the request and response shapes, cache markers, streaming, plain-string models.

use serde_json::{json, Value};

use super::*;

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
async fn llm_string_content_models_get_plain_strings() {
    let m = mock(vec![Canned::Json(200, chat_ok("x"), vec![])]).await;
    let s = settings(json!({"model": "openai/glm-4.6", "base_url": m.base}));
    client_for(&s).complete(conversation()).await.unwrap();
    let msgs = m.requests()[0].body["messages"].clone();
    assert_eq!(msgs[0]["content"], "static prompt\ndynamic context");
    assert_eq!(msgs[3]["content"], "a.txt\n");
    assert!(msgs[4].get("content").is_none());
}
