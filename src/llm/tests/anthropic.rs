//! Anthropic Messages: request and response shapes, streamed tool use, overloaded answers retried.

use serde_json::{json, Value};

use super::*;

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
