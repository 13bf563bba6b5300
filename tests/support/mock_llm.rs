//! A scripted OpenAI chat-completions mock (JSON and SSE), in the spirit of the acceptance
//! kit's `mock_llm.py`: the newest user message holding `[[mock:NAME key=value]]` selects the
//! script, the step is the number of `tool` messages after it. Requests without tools (titles,
//! ask_agent) get `Mock title for NAME`. Every request body is recorded.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

/// A running mock LLM.
pub struct MockLlm {
    /// `http://127.0.0.1:<port>/v1`.
    pub base_url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    requests: Arc<Mutex<Vec<Value>>>,
    counter: Arc<Mutex<u64>>,
    /// Whether request bodies are kept (not in long soaks: they would pile up).
    record: bool,
}

impl MockLlm {
    /// Starts the mock on a free port of the current runtime.
    pub async fn start() -> Self {
        Self::start_recording(true).await
    }

    /// Starts the mock without keeping request bodies ([`MockLlm::requests`] stays empty).
    pub async fn start_unrecorded() -> Self {
        Self::start_recording(false).await
    }

    async fn start_recording(record: bool) -> Self {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = Shared {
            requests: requests.clone(),
            counter: Arc::new(Mutex::new(0)),
            record,
        };
        let app = Router::new()
            .route("/v1/chat/completions", post(complete))
            .route("/chat/completions", post(complete))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind mock llm");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockLlm {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            requests,
            task,
        }
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.requests.lock().expect("lock").clone()
    }

    /// Requests whose messages mention `token`.
    pub fn requests_with(&self, token: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["messages"].to_string().contains(token))
            .collect()
    }

    /// The agent JSON the Python client would send for a default-like agent on this mock.
    pub fn agent(&self) -> Value {
        json!({
            "llm": {"model": "openai/mock", "api_key": "sk-mock", "base_url": self.base_url,
                    "usage_id": "agent", "num_retries": 0, "timeout": 60,
                    "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002},
            "tools": [{"name": "terminal", "params": {}}, {"name": "file_editor", "params": {}},
                      {"name": "task_tracker", "params": {}}],
            "mcp_config": {},
            "include_default_tools": ["FinishTool", "ThinkTool"],
            "kind": "Agent",
        })
    }
}

fn message_text(m: &Value) -> String {
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str).or(p.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// (script, args, index of the user message).
/// A directive: script name, its arguments, and the index of its user message.
type Directive = (String, Vec<(String, String)>, usize);

fn find_directive(messages: &[Value]) -> Option<Directive> {
    for (idx, m) in messages.iter().enumerate().rev() {
        if m.get("role").and_then(Value::as_str) != Some("user") {
            continue;
        }
        let text = message_text(m);
        if let Some(start) = text.rfind("[[mock:") {
            let rest = &text[start + 7..];
            let end = rest.find("]]")?;
            let mut parts = rest[..end].split_whitespace();
            let name = parts.next()?.to_string();
            let args = parts
                .filter_map(|p| {
                    p.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.replace("%20", " ")))
                })
                .collect();
            return Some((name, args, idx));
        }
    }
    None
}

enum Step {
    Text(String),
    Tool(&'static str, Value),
    Error(u16),
}

fn script(name: &str, args: &[(String, String)], step: usize) -> Step {
    let arg = |k: &str| args.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    let finish = || Step::Tool("finish", json!({"message": format!("{name} done")}));
    match name {
        "text" => Step::Text("MOCK_TEXT_REPLY: hello".into()),
        "llm_error" => Step::Error(500),
        "echo" => match step {
            0 => Step::Tool(
                "terminal",
                json!({"command": format!("printf 'hello from mock\\n' > echo_out.txt && echo \"{}-$((40+2))\"",
                                          arg("marker").unwrap_or("mock-marker".into())),
                       "security_risk": "LOW", "summary": "write a file and print a marker"}),
            ),
            _ => finish(),
        },
        "loop" => Step::Tool(
            "terminal",
            json!({"command": format!("echo loop-step-{step} && sleep {}", arg("sleep").unwrap_or("0.2".into())),
                   "security_risk": "LOW"}),
        ),
        "repeat" => Step::Tool(
            "terminal",
            json!({"command": "echo same-output", "security_risk": "LOW"}),
        ),
        "slow" => match step {
            0 => Step::Tool(
                "terminal",
                json!({"command": format!("echo slow-start && sleep {} && echo slow-end", arg("secs").unwrap_or("30".into())),
                       "timeout": 120, "security_risk": "LOW"}),
            ),
            _ => finish(),
        },
        "bad_tool" => match step {
            0 => Step::Tool("no_such_tool", json!({"x": 1})),
            _ => finish(),
        },
        // Calls the client-defined tool `show_notification`, then finish.
        "client" => match step {
            0 => Step::Tool(
                "show_notification",
                json!({"message": "hello client", "level": "info", "security_risk": "LOW"}),
            ),
            _ => finish(),
        },
        // `[[mock:cmd run=COMMAND]]` (spaces as %20): the terminal runs COMMAND, then finish.
        "cmd" => match step {
            0 => Step::Tool(
                "terminal",
                json!({"command": arg("run").unwrap_or("true".into()), "security_risk": "LOW"}),
            ),
            _ => finish(),
        },
        // `[[mock:mcp text=TEXT]]`: calls the MCP tool `echo_text`, then finish.
        "mcp" => match step {
            0 => Step::Tool(
                "echo_text",
                json!({"text": arg("text").unwrap_or("hi".into())}),
            ),
            _ => finish(),
        },
        "think" => match step {
            0 => Step::Tool("think", json!({"thought": "MOCK_THOUGHT"})),
            _ => finish(),
        },
        // `[[mock:task agent=NAME]]`: delegates a task (that makes the sub-agent answer with
        // text) to sub-agent NAME, then finish.
        "task" => match step {
            0 => Step::Tool(
                "task",
                json!({"prompt": "[[mock:text]] sub-task", "description": "review",
                       "subagent_type": arg("agent").unwrap_or("general-purpose".into())}),
            ),
            _ => finish(),
        },
        // `[[mock:child isolation=shared]]`: starts a child conversation whose task makes it
        // answer with text, then finish.
        "child" => match step {
            0 => Step::Tool(
                "start_child_conversation",
                json!({"task": "[[mock:text]] child-task", "title": "kid",
                       "isolation": arg("isolation").unwrap_or("shared".into())}),
            ),
            _ => finish(),
        },
        _ => Step::Text(format!("MOCK: unknown script {name}")),
    }
}

async fn complete(State(shared): State<Shared>, Json(body): Json<Value>) -> Response {
    if shared.record {
        shared.requests.lock().expect("lock").push(body.clone());
    }
    let n = {
        let mut c = shared.counter.lock().expect("lock");
        *c += 1;
        *c
    };
    let messages = body
        .get("messages")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let directive = find_directive(&messages);
    let has_tools = body
        .get("tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    // The goal judge: done once a follow-up round has happened (or at once when the objective
    // says `judge=done`), unless it says `judge=never`.
    let transcript = body["messages"].to_string();
    let step = if transcript.contains("auditing whether a long-running GOAL") {
        let objective = transcript
            .split("<objective>")
            .nth(1)
            .and_then(|rest| rest.split("</objective>").next())
            .unwrap_or_default();
        let done = !objective.contains("judge=never")
            && (objective.contains("judge=done") || transcript.contains("audit iteration 1"));
        let verdict = if done {
            json!({"score": 1.0, "complete": true, "missing": ""})
        } else {
            json!({"score": 0.4, "complete": false, "missing": "hello.txt not verified"})
        };
        Step::Text(format!("```json\n{verdict}\n```"))
    } else if !has_tools {
        Step::Text(match &directive {
            Some((name, _, _)) => format!("Mock title for {name}"),
            None => "Mock title".into(),
        })
    } else {
        match &directive {
            Some((name, args, idx)) => {
                let step = messages[idx + 1..]
                    .iter()
                    .filter(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
                    .count();
                script(name, args, step)
            }
            None => Step::Text("MOCK: no directive".into()),
        }
    };
    let model = body.get("model").cloned().unwrap_or(json!("mock"));
    let usage = json!({"prompt_tokens": 100 + messages.len(), "completion_tokens": 20, "total_tokens": 120 + messages.len()});
    let (message, finish) = match step {
        Step::Error(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, Json(json!({"error": {"message": "mock LLM failure (scripted)", "type": "server_error"}})))
                .into_response();
        }
        Step::Text(t) => (json!({"role": "assistant", "content": t}), "stop"),
        Step::Tool(name, args) => {
            // Keep only the parameters the server's tool declares.
            let declared: Option<Vec<String>> = body["tools"].as_array().and_then(|tools| {
                tools
                    .iter()
                    .find(|t| t["function"]["name"] == name)
                    .and_then(|t| {
                        t["function"]["parameters"]["properties"]
                            .as_object()
                            .map(|p| p.keys().cloned().collect())
                    })
            });
            let args = match (declared, args) {
                (Some(keys), Value::Object(m)) => {
                    Value::Object(m.into_iter().filter(|(k, _)| keys.contains(k)).collect())
                }
                (_, a) => a,
            };
            (
                json!({"role": "assistant", "content": null, "tool_calls": [{
                    "id": format!("call_mock_{n}"), "type": "function",
                    "function": {"name": name, "arguments": args.to_string()}}]}),
                "tool_calls",
            )
        }
    };
    let id = format!("chatcmpl-mock-{n}");
    if body["stream"] == true {
        return stream_answer(&id, &model, message, finish, usage);
    }
    Json(json!({
        "id": id, "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }))
    .into_response()
}

/// The same answer as Server-Sent Events (`stream: true`): one delta with the content or the
/// tool calls, a finish chunk, a usage chunk, `[DONE]`.
fn stream_answer(id: &str, model: &Value, message: Value, finish: &str, usage: Value) -> Response {
    let chunk = |choices: Value, usage: Value| {
        let c = json!({"id": id, "object": "chat.completion.chunk", "created": 0, "model": model,
                       "choices": choices, "usage": usage});
        format!("data: {c}\n\n")
    };
    let mut delta = json!({"role": "assistant"});
    if let Some(text) = message["content"].as_str() {
        delta["content"] = json!(text);
    }
    if let Some(calls) = message["tool_calls"].as_array() {
        let indexed: Vec<Value> = calls
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = c.clone();
                c["index"] = json!(i);
                c
            })
            .collect();
        delta["tool_calls"] = json!(indexed);
    }
    let mut text = chunk(
        json!([{"index": 0, "delta": delta, "finish_reason": null}]),
        Value::Null,
    );
    text.push_str(&chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": finish}]),
        Value::Null,
    ));
    text.push_str(&chunk(json!([]), usage));
    text.push_str("data: [DONE]\n\n");
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        text,
    )
        .into_response()
}
