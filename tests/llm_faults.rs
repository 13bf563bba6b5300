//! LLM faults: a model endpoint that drops connections, stalls, answers 429 or 500, or answers
//! garbage. The agent retries what is worth retrying (within `num_retries`), then records a
//! `ConversationErrorEvent` and the status `error`; the server keeps serving.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{call, wait_for_end, TestServer};

/// A model endpoint that misbehaves in one way on every request; counts the requests.
async fn faulty_llm(mode: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                // Read the request head and body (enough to know one came).
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if got.len() >= head_end + 4 + len {
                            break;
                        }
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let reply = |status: &str, body: &str| {
                    format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                };
                let out = match mode {
                    "drop" => return,
                    "stall" => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        return;
                    }
                    "429" => reply(
                        "429 Too Many Requests",
                        r#"{"error":{"message":"slow down","type":"rate_limit"}}"#,
                    ),
                    "500" => reply(
                        "500 Internal Server Error",
                        r#"{"error":{"message":"boom","type":"server_error"}}"#,
                    ),
                    _ => reply("200 OK", "this is not json"),
                };
                let _ = tcp.write_all(out.as_bytes()).await;
            });
        }
    });
    (url, count)
}

/// One conversation on a faulty endpoint: waits for its end and returns the status, the
/// error event and the number of requests the endpoint saw.
async fn run_against(srv: &TestServer, mode: &'static str) -> (String, Option<Value>, usize) {
    let (url, count) = faulty_llm(mode).await;
    let llm = json!({"model": "openai/faulty", "base_url": url, "api_key": "k", "usage_id": "agent",
                     "num_retries": 3, "retry_min_wait": 0, "retry_max_wait": 0, "retry_multiplier": 0,
                     "timeout": 2});
    let body = json!({
        "agent": {"kind": "Agent", "llm": llm, "tools": []},
        "workspace": {"working_dir": srv.workdir().to_string_lossy(), "kind": "LocalWorkspace"},
        "initial_message": {"role": "user", "content": [{"type": "text", "text": "hello"}], "run": true},
        "autotitle": false,
    });
    let (code, conv) = call(srv, Method::POST, "/api/conversations", Some(body)).await;
    assert_eq!(code, 201, "{conv}");
    let id = conv["id"].as_str().unwrap().to_string();
    let c = wait_for_end(srv, &id, 60).await;
    let status = c["execution_status"].as_str().unwrap_or("").to_string();
    let (_, page) = call(
        srv,
        Method::GET,
        &format!("/api/conversations/{id}/events/search?limit=100"),
        None,
    )
    .await;
    let error = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "ConversationErrorEvent")
        .cloned();
    (status, error, count.load(Ordering::SeqCst))
}

#[tokio::test]
async fn llm_faults_are_retried_then_reported() {
    let srv = TestServer::start();
    // (fault, retried, the error's code: the reference's exception class)
    for (mode, retried, code) in [
        ("drop", true, "LLMServiceUnavailableError"),
        ("stall", true, "LLMTimeoutError"),
        ("429", true, "LLMRateLimitError"),
        ("500", true, "LLMServiceUnavailableError"),
        ("garbage", false, "APIError"),
    ] {
        let (status, error, requests) = run_against(&srv, mode).await;
        assert_eq!(status, "error", "{mode}");
        let error = error.unwrap_or_else(|| panic!("{mode}: no ConversationErrorEvent"));
        assert_eq!(error["code"], code, "{mode}: {error}");
        if retried {
            // `num_retries: 3` allows three attempts in all, as the reference's retry loop does.
            assert_eq!(requests, 3, "{mode}: three attempts expected; {error}");
        } else {
            assert!(requests >= 1, "{mode}");
        }
        let (code, _) = call(&srv, Method::GET, "/health", None).await;
        assert_eq!(code, 200, "{mode}: the server stopped answering");
    }
}
