//! Runs: replies, tool calls, limits, confirmation, interrupt and pause.

use super::*;

#[tokio::test]
async fn text_reply_finishes_and_records_stats() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    let llm = FakeLlm::new(vec![Reply::Text("hello there")], None);
    install(&conv, llm.clone()).await;
    conv.send_message(msg("hi"), false).await.expect("send");
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    let evs = conv.events().await.expect("events");
    assert_eq!(
        kinds(&evs),
        ["SystemPromptEvent", "MessageEvent", "MessageEvent"]
    );
    let last = evs
        .iter()
        .rev()
        .find(|e| events::kind(e) == "MessageEvent")
        .expect("reply");
    assert_eq!(last["source"], "agent");
    assert_eq!(last["llm_response_id"], "resp-1");
    let stats = conv.read_state(|s| s.stats.clone());
    let cost = stats["usage_to_metrics"]["agent"]["accumulated_cost"]
        .as_f64()
        .expect("cost");
    assert!((cost - 0.12).abs() < 1e-9, "cost {cost}");
    // The stats update precedes the reply, and secrets never reach the disk in clear.
    let on_disk = std::fs::read_to_string(conv.dir().join("base_state.json")).expect("base_state");
    assert!(!on_disk.contains("sk-secret"));
    // The LLM saw the system prompt, the user message and the tool definitions with the
    // injected parameters first.
    let req = &llm.seen.lock().expect("lock")[0];
    assert_eq!(req.messages.len(), 2);
    let props = req.tools[0].parameters["properties"]
        .as_object()
        .expect("props");
    let keys: Vec<&String> = props.keys().collect();
    assert_eq!(keys, ["security_risk", "summary", "text"]);
    let finish_props = req.tools[1].parameters["properties"]
        .as_object()
        .expect("props");
    assert!(!finish_props.contains_key("security_risk"));
}

#[tokio::test]
async fn tool_calls_produce_actions_and_observations_then_finish() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    let llm = FakeLlm::new(
        vec![
            Reply::Call(
                "echo",
                json!({"text": "one", "summary": "say one", "security_risk": "LOW"}),
            ),
            Reply::Call("nope", json!({})),
            Reply::Call("echo", json!({"wrong": 1})),
            Reply::Call("finish", json!({"message": "all done"})),
        ],
        None,
    );
    install(&conv, llm.clone()).await;
    conv.send_message(msg("go"), true).await.expect("send");
    for _ in 0..500 {
        if conv.run_ctl().is_none() && conv.status() != ExecutionStatus::Idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    let evs = conv.events().await.expect("events");
    assert_eq!(
        kinds(&evs),
        [
            "SystemPromptEvent",
            "MessageEvent",
            "ActionEvent",
            "ObservationEvent",
            "ActionEvent",
            "AgentErrorEvent",
            "ActionEvent",
            "AgentErrorEvent",
            "ActionEvent",
            "ObservationEvent"
        ]
    );
    let action = evs
        .iter()
        .find(|e| events::kind(e) == "ActionEvent")
        .expect("action");
    assert_eq!(action["summary"], "say one");
    assert_eq!(
        action["security_risk"], "UNKNOWN",
        "no analyzer: risk not recorded"
    );
    assert_eq!(action["action"]["kind"], "EchoAction");
    let obs = evs
        .iter()
        .find(|e| events::kind(e) == "ObservationEvent")
        .expect("obs");
    assert_eq!(obs["action_id"], action["id"]);
    let unknown = evs
        .iter()
        .find(|e| events::kind(e) == "AgentErrorEvent")
        .expect("err");
    assert!(unknown["error"]
        .as_str()
        .unwrap_or_default()
        .contains("Tool 'nope' not found"));
    // The second request carried the tool result as the LLM text of the tool.
    let seen = llm.seen.lock().expect("lock");
    let tool_msg = seen[1]
        .messages
        .iter()
        .find(|m| m.role == crate::llm::Role::Tool)
        .expect("tool msg");
    assert_eq!(tool_msg.content, vec!["one".to_string()]);
    // Parent chain: every event but the first has a parent.
    assert!(evs.iter().skip(1).all(|e| e.get("parent_id").is_some()));
}

#[tokio::test]
async fn max_iterations_and_llm_errors_end_in_error() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false, "max_iterations": 3})).await;
    let llm = FakeLlm::new(vec![], Some(Reply::Call("echo", json!({"text": "again"}))));
    install(&conv, llm).await;
    conv.send_message(msg("loop"), false).await.expect("send");
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::Error);
    let evs = conv.events().await.expect("events");
    assert_eq!(
        evs.iter()
            .filter(|e| events::kind(e) == "ActionEvent")
            .count(),
        3
    );
    let err = evs
        .iter()
        .rev()
        .find(|e| events::kind(e) == "ConversationErrorEvent")
        .expect("error");
    assert_eq!(err["code"], "MaxIterationsReached");

    let conv2 = create(&svc, &fx, json!({"autotitle": false})).await;
    install(
        &conv2,
        FakeLlm::new(
            vec![Reply::Fail(LlmError::Authentication("401".into()))],
            None,
        ),
    )
    .await;
    conv2.send_message(msg("hi"), false).await.expect("send");
    run_to_end(&conv2).await;
    assert_eq!(conv2.status(), ExecutionStatus::Error);
    let evs = conv2.events().await.expect("events");
    let err = evs
        .iter()
        .rev()
        .find(|e| events::kind(e) == "ConversationErrorEvent")
        .expect("error");
    assert_eq!(err["code"], "LLMAuthenticationError");
}

#[tokio::test]
async fn confirmation_reject_and_accept() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(
        &svc,
        &fx,
        json!({"autotitle": false, "confirmation_policy": {"kind": "AlwaysConfirm"}}),
    )
    .await;
    let llm = FakeLlm::new(
        vec![
            Reply::Call("echo", json!({"text": "risky"})),
            Reply::Call("echo", json!({"text": "second"})),
        ],
        Some(Reply::Call("finish", json!({"message": "ok"}))),
    );
    install(&conv, llm).await;
    conv.send_message(msg("go"), false).await.expect("send");
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::WaitingForConfirmation);
    conv.reject_pending("no thanks").await.expect("reject");
    assert_eq!(conv.status(), ExecutionStatus::Idle);
    let evs = conv.events().await.expect("events");
    let rej = evs
        .iter()
        .find(|e| events::kind(e) == "UserRejectObservation")
        .expect("reject");
    assert_eq!(rej["rejection_reason"], "no thanks");
    assert_eq!(rej["rejection_source"], "user");
    // Next run stops again at the second action; running again accepts it.
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::WaitingForConfirmation);
    run_to_end(&conv).await;
    let evs = conv.events().await.expect("events");
    let obs: Vec<&Value> = evs
        .iter()
        .filter(|e| events::kind(e) == "ObservationEvent")
        .collect();
    assert_eq!(obs[0]["observation"]["content"][0]["text"], "second");
}

#[tokio::test]
async fn interrupt_abandons_the_llm_call_and_pauses() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    install(
        &conv,
        FakeLlm::new(vec![Reply::Slow(Duration::from_secs(60))], None),
    )
    .await;
    conv.send_message(msg("slow"), true).await.expect("send");
    tokio::time::sleep(Duration::from_millis(100)).await;
    conv.interrupt().await.expect("interrupt");
    assert!(
        conv.run_ctl().is_none(),
        "interrupt waits for the run to stop"
    );
    assert_eq!(conv.status(), ExecutionStatus::Paused);
    let evs = conv.events().await.expect("events");
    assert_eq!(
        kinds(&evs).last().map(String::as_str),
        Some("InterruptEvent")
    );
}

#[tokio::test]
async fn pause_stops_at_the_step_boundary() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(
        &svc,
        &fx,
        json!({"autotitle": false, "stuck_detection": false}),
    )
    .await;
    install(
        &conv,
        FakeLlm::new(vec![], Some(Reply::Call("echo", json!({"text": "tick"})))),
    )
    .await;
    conv.send_message(msg("loop"), true).await.expect("send");
    tokio::time::sleep(Duration::from_millis(50)).await;
    conv.pause().await.expect("pause");
    for _ in 0..500 {
        if conv.run_ctl().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(conv.run_ctl().is_none());
    assert_eq!(conv.status(), ExecutionStatus::Paused);
    let evs = conv.events().await.expect("events");
    assert!(evs.iter().any(|e| events::kind(e) == "PauseEvent"));
}

#[tokio::test]
async fn reopening_keeps_events_and_recovers_a_crashed_run() {
    let fx = fixture();
    let id;
    {
        let svc = ConversationService::open(fx.root.clone(), Some("k1"), 4).expect("open");
        let conv = create(&svc, &fx, json!({"autotitle": false})).await;
        id = conv.id;
        install(&conv, FakeLlm::new(vec![Reply::Text("hello")], None)).await;
        conv.send_message(msg("hi"), false).await.expect("send");
        run_to_end(&conv).await;
        // Simulate a crash mid-run: an action without result and status running on disk.
        conv.append(json!({"source": "agent", "thought": [], "thinking_blocks": [], "action": {"text": "x", "kind": "EchoAction"},
            "tool_name": "echo", "tool_call_id": "c-crash", "tool_call": {"id": "c-crash", "name": "echo", "arguments": "{}", "origin": "completion"},
            "llm_response_id": "r", "security_risk": "UNKNOWN", "kind": "ActionEvent"}))
            .await
            .expect("append");
        conv.set_status(ExecutionStatus::Running)
            .await
            .expect("status");
    }
    let svc = ConversationService::open(fx.root.clone(), Some("k1"), 4).expect("reopen");
    let conv = svc.get(&id).expect("listed");
    assert_eq!(conv.status(), ExecutionStatus::Error);
    assert_eq!(
        conv.agent_json()["llm"]["api_key"],
        "sk-secret",
        "secret decrypted with the key"
    );
    let evs = conv.events().await.expect("events");
    let err = evs
        .iter()
        .rev()
        .find(|e| events::kind(e) == "AgentErrorEvent")
        .expect("recovery error");
    assert_eq!(err["tool_call_id"], "c-crash");
    assert!(err["error"]
        .as_str()
        .unwrap_or_default()
        .contains("restart"));
    // It can run again.
    install(&conv, FakeLlm::new(vec![Reply::Text("back")], None)).await;
    conv.send_message(msg("again"), false).await.expect("send");
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    let info = conv.info(false, true);
    assert_eq!(info["agent"]["llm"]["api_key"], Value::Null);
}
