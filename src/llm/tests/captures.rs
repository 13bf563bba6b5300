//! Request bodies equal to the ones the reference sent, captured in `tests/fixtures/`.

use serde_json::{json, Value};

use super::*;

use super::responses::responses_ok;

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
