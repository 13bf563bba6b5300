//! What every provider shares: retries and when to give up, error classes, timeouts, costs,
//! keys and providers, and a smoke test against the acceptance kit's mock LLM.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;

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
