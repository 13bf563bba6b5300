//! The Responses API: request and response shapes, and a stream ending with the completed response.

use serde_json::{json, Value};

use super::*;

pub(super) fn responses_ok() -> Value {
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
