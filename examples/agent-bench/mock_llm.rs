//! An instant scripted LLM inside the load generator: OpenAI Chat Completions, non-streaming,
//! playing the compat kit's `think_loop` script (one distinct `think` call per step). It answers
//! in microseconds on one write, so an agent step's time is the server's own cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// The directive a user message carries to select the script (same syntax as the kit's mock).
pub const DIRECTIVE: &str = "[[mock:think_loop]]";

/// The mock, served on a loopback port until dropped.
pub struct MockLlm {
    /// Base URL to give an agent's `llm.base_url` (ends with `/v1`).
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl MockLlm {
    /// Binds a free loopback port and serves the mock on the current runtime.
    pub async fn start() -> anyhow::Result<MockLlm> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let counter = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .with_state(counter);
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockLlm {
            base: format!("http://127.0.0.1:{port}/v1"),
            task,
        })
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn text(m: &Value) -> String {
    match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str().or(p.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn error(status: StatusCode, msg: &str) -> Response {
    let body = json!({"error": {"message": msg, "type": "invalid_request_error"}});
    (status, Json(body)).into_response()
}

/// One completion: a `think` call numbered by the tool results since the directive; a plain
/// title-like answer when the request has no tools (titles, condensation).
async fn complete(State(counter): State<Arc<AtomicU64>>, Json(body): Json<Value>) -> Response {
    if body["stream"].as_bool() == Some(true) {
        return error(StatusCode::BAD_REQUEST, "the bench mock does not stream");
    }
    let empty = Vec::new();
    let messages = body["messages"].as_array().unwrap_or(&empty);
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    let model = body["model"].as_str().unwrap_or("mock").to_owned();
    let has_tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
    let directive = messages
        .iter()
        .rposition(|m| m["role"] == "user" && text(m).contains(DIRECTIVE));
    let (message, finish) = match (has_tools, directive) {
        (false, _) => (
            json!({"role": "assistant", "content": "Mock title for think_loop"}),
            "stop",
        ),
        (true, None) => return error(StatusCode::BAD_REQUEST, "no [[mock:think_loop]] directive"),
        (true, Some(idx)) => {
            let step = messages[idx + 1..]
                .iter()
                .filter(|m| m["role"] == "tool")
                .count();
            let mut args = json!({"thought": format!("MOCK_THOUGHT step {step}"),
                                  "summary": format!("think step {step}")});
            // like the kit's mock: drop arguments the server's `think` does not declare
            let declared = body["tools"].as_array().and_then(|ts| {
                ts.iter()
                    .find(|t| t["function"]["name"] == "think")
                    .and_then(|t| t["function"]["parameters"]["properties"].as_object())
            });
            if let (Some(props), Some(a)) = (declared, args.as_object_mut()) {
                a.retain(|k, _| props.contains_key(k));
            }
            (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": format!("call_mock_{n}"), "type": "function",
                    "function": {"name": "think", "arguments": args.to_string()}}]}),
                "tool_calls",
            )
        }
    };
    let k = messages.len() as u64;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Json(json!({
        "id": format!("chatcmpl-mock-{n}"), "object": "chat.completion", "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 100 + k, "completion_tokens": 20, "total_tokens": 120 + k},
    }))
    .into_response()
}
