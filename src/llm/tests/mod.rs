//! Provider tests against in-process mock HTTP servers that check the exact requests.
//!
//! This file holds the mock server and the shared fixtures; the tests are by topic: `chat.rs`
//! (Chat Completions), `responses.rs` (Responses API), `anthropic.rs` (Messages),
//! `transport.rs` (retries, error classes, timeouts, costs, keys, the kit's mock LLM),
//! `captures.rs` (request bodies equal to the reference's captured ones).

mod anthropic;
mod captures;
mod chat;
mod responses;
mod transport;

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
