//! Persistence and memory: reopening, reference directories, slow subscribers, hooks,
//! condensation, idle release.

use super::*;

#[tokio::test]
async fn reads_the_reference_sample() {
    // Written by the reference server 1.58.2, kept in the repo.
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference_conversations");
    let fx = fixture();
    std::fs::create_dir_all(&fx.root).expect("mkdir");
    let status_ = std::process::Command::new("cp")
        .arg("-r")
        .arg(sample.join("d9a4accae10742dfb7b3aced612a72d3"))
        .arg(&fx.root)
        .status()
        .expect("cp");
    assert!(status_.success());
    let svc =
        ConversationService::open(fx.root.clone(), Some("test-secret-key-123"), 4).expect("open");
    let id = uuid::Uuid::parse_str("d9a4accae10742dfb7b3aced612a72d3").expect("uuid");
    let conv = svc.get(&id).expect("listed");
    assert_eq!(conv.events().await.expect("events").len(), 50);
    assert_eq!(conv.agent_json()["llm"]["model"], "openai/mock-chat");
    assert!(
        conv.agent_json()["llm"]["api_key"].is_string(),
        "reference token decrypted"
    );
    assert_eq!(
        conv.read_meta(|m| m.title.clone()).as_deref(),
        Some("Broken Python file test")
    );
}

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_not_waited_for() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    let mut sub = conv.subscribe().expect("subscribe");
    let first = sub.rx.recv().await.expect("snapshot");
    assert!(first.contains("full_state"));
    let n = crate::conversation::service::SUBSCRIBER_QUEUE + 10;
    for i in 0..n {
        conv.append(events::user_message("user", msg(&format!("m{i}"))))
            .await
            .expect("append");
    }
    // Everything was persisted although nobody read the queue.
    assert_eq!(conv.events().await.expect("events").len(), n);
    let mut got = 0;
    while sub.rx.recv().await.is_some() {
        got += 1;
    }
    assert!(got < n, "the queue is bounded");
    assert!(sub.overflowed.load(std::sync::atomic::Ordering::Acquire));
}

#[tokio::test]
async fn stop_hook_feedback_keeps_the_agent_going() {
    let fx = fixture();
    std::fs::create_dir_all(&fx.work).expect("mkdir");
    let marker = fx.work.join("denied-once");
    let script = format!(
        "if [ -f '{m}' ]; then exit 0; else touch '{m}'; echo '{{\"decision\": \"deny\", \"additionalContext\": \"fix the syntax\"}}'; exit 2; fi",
        m = marker.display()
    );
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(
        &svc,
        &fx,
        json!({"autotitle": false, "hook_config": {"stop": [{"matcher": "*", "hooks": [{"type": "command", "command": script}]}]}}),
    )
    .await;
    install(
        &conv,
        FakeLlm::new(
            vec![],
            Some(Reply::Call("finish", json!({"message": "done"}))),
        ),
    )
    .await;
    conv.send_message(msg("go"), false).await.expect("send");
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    let evs = conv.events().await.expect("events");
    let hooks: Vec<&Value> = evs
        .iter()
        .filter(|e| events::kind(e) == "HookExecutionEvent")
        .collect();
    assert_eq!(hooks.len(), 2, "{:?}", kinds(&evs));
    assert_eq!(hooks[0]["blocked"], true);
    assert_eq!(hooks[0]["additional_context"], "fix the syntax");
    assert_eq!(hooks[1]["success"], true);
    let feedback = evs
        .iter()
        .find(|e| events::kind(e) == "MessageEvent" && e["source"] == "environment")
        .expect("feedback");
    assert!(events::message_text(feedback).starts_with("[Stop hook feedback] fix the syntax"));
    assert_eq!(
        evs.iter()
            .filter(|e| events::kind(e) == "ActionEvent")
            .count(),
        2
    );
    assert!(evs.iter().any(|e| e["key"] == "hook_config"));
}

#[tokio::test]
async fn long_histories_are_condensed_with_a_summary() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    // Give the stored agent a small condenser.
    let mut agent = conv.agent_json();
    agent["condenser"] = json!({"llm": {"model": "openai/fake", "usage_id": "condenser"}, "max_size": 8,
                                "keep_first": 2, "kind": "LLMSummarizingCondenser"});
    conv.set_field(crate::conversation::StateField::Agent(agent), false)
        .await
        .expect("agent");
    let script: Vec<Reply> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|t| Reply::Call("echo", json!({"text": t})))
        .chain([Reply::Call("finish", json!({"message": "ok"}))])
        .collect();
    let llm = FakeLlm::new(script, None);
    let condenser = FakeLlm::new(vec![], Some(Reply::Text("SUMMARY OF EARLIER WORK")));
    install_with(&conv, llm.clone(), Some(condenser.clone())).await;
    conv.send_message(msg("go"), false).await.expect("send");
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    let evs = conv.events().await.expect("events");
    let cond = evs
        .iter()
        .find(|e| events::kind(e) == "Condensation")
        .unwrap_or_else(|| panic!("no Condensation: {:?}", kinds(&evs)));
    assert!(!cond["forgotten_event_ids"]
        .as_array()
        .expect("ids")
        .is_empty());
    assert_eq!(cond["summary"], "SUMMARY OF EARLIER WORK");
    assert_eq!(cond["summary_offset"], 2);
    let seen = llm.seen.lock().expect("lock");
    let last = seen.last().expect("requests");
    let texts: Vec<String> = last
        .messages
        .iter()
        .flat_map(|m| m.content.clone())
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("SUMMARY OF EARLIER WORK")),
        "{texts:?}"
    );
    assert!(conv.read_state(|s| s.stats.clone())["usage_to_metrics"]
        .get("condenser")
        .is_some());
}

#[tokio::test]
async fn idle_conversations_release_memory_and_reload_on_use() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    install(
        &conv,
        FakeLlm::new(vec![Reply::Text("one"), Reply::Text("two")], None),
    )
    .await;
    conv.send_message(msg("hi"), false).await.expect("send");
    run_to_end(&conv).await;
    let before = conv.events().await.expect("events");
    {
        let _sub = conv.subscribe().expect("subscribe");
        assert!(
            !conv.release_if_idle(Duration::ZERO),
            "a watched conversation stays loaded"
        );
    }
    assert!(conv.release_if_idle(Duration::ZERO));
    let ids = |evs: &[Value]| {
        evs.iter()
            .map(|e| events::id(e).to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&conv.events().await.expect("reload")), ids(&before));
    // It keeps working: the agent is rebuilt, the system prompt is not repeated.
    install(&conv, FakeLlm::new(vec![Reply::Text("again")], None)).await;
    conv.send_message(msg("more"), false).await.expect("send");
    run_to_end(&conv).await;
    let evs = conv.events().await.expect("events");
    assert_eq!(
        evs.iter()
            .filter(|e| events::kind(e) == "SystemPromptEvent")
            .count(),
        1
    );
    assert_eq!(ids(&evs[..before.len()]), ids(&before));
}

/// The scoped bash runner's stdout, in order, of every output stored for `command_id`.
async fn scoped_stdout(conv: &Conversation, command_id: &str) -> (String, Option<i64>) {
    let bash = conv.bash_service().await.expect("bash");
    let page = bash
        .search_page(crate::exec::SearchQuery {
            command_id: Some(command_id.to_string()),
            limit: 100,
            ..Default::default()
        })
        .await;
    let mut out = String::new();
    let mut exit = None;
    for ev in page.items {
        if let crate::exec::BashEvent::Output(o) = ev {
            out.push_str(o.stdout.as_deref().unwrap_or_default());
            exit = exit.or(o.exit_code);
        }
    }
    (out, exit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_scoped_bash_runner_is_released_and_its_events_kept() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    let (weak, command_id) = {
        let bash = conv.bash_service().await.expect("bash");
        let started = bash
            .start(crate::exec::ExecuteBashRequest {
                command: "sleep 1; echo done".into(),
                cwd: None,
                timeout: 30,
            })
            .await
            .expect("start");
        (Arc::downgrade(&bash), started.id)
    };
    assert!(
        !conv.release_bash_if_idle(Duration::ZERO),
        "a runner with a running command is kept"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while scoped_stdout(&conv, &command_id).await.1.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let _sub = conv.bash_service().await.expect("bash").subscribe();
        assert!(
            !conv.release_bash_if_idle(Duration::ZERO),
            "a watched runner is kept"
        );
    }
    assert!(
        !conv.release_bash_if_idle(Duration::from_secs(60)),
        "a runner used within the idle time is kept"
    );
    assert!(conv.release_bash_if_idle(Duration::ZERO));
    assert!(
        weak.upgrade().is_none(),
        "the released runner (and its event index) is freed"
    );
    // The next request opens it again from its files: nothing is lost.
    assert_eq!(
        scoped_stdout(&conv, &command_id).await,
        ("done\n".to_string(), Some(0))
    );
}

#[tokio::test]
async fn listed_conversations_keep_a_summary_and_are_read_from_disk_on_demand() {
    let fx = fixture();
    let (id, other, created_at) = {
        let svc = ConversationService::open(fx.root.clone(), Some("k1"), 4).expect("open");
        let conv = create(
            &svc,
            &fx,
            json!({"autotitle": false, "tags": {"team": "a"}}),
        )
        .await;
        install(&conv, FakeLlm::new(vec![Reply::Text("hello")], None)).await;
        conv.send_message(msg("hi"), false).await.expect("send");
        run_to_end(&conv).await;
        conv.set_title(Some("First".into()), None)
            .await
            .expect("title");
        let other = create(&svc, &fx, json!({"autotitle": false})).await.id;
        let created_at = conv.sort_key("created_at");
        (conv.id, other, created_at)
    };
    // After a restart only a summary is in memory: status and sort keys come from it.
    let svc = ConversationService::open(fx.root.clone(), Some("k1"), 4).expect("reopen");
    let conv = svc.get(&id).expect("listed");
    assert!(!conv.docs_loaded());
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    assert_eq!(conv.sort_key("created_at"), created_at);
    // REST views read the files for the answer only.
    let second = svc.get(&other).expect("listed");
    let infos = crate::conversation::service::infos(&[second.clone(), conv.clone()], false, true)
        .await
        .expect("infos");
    assert_eq!(infos[0]["id"], json!(other.to_string()));
    assert_eq!(infos[1]["title"], "First");
    assert_eq!(infos[1]["tags"], json!({"team": "a"}));
    assert_eq!(infos[1]["agent"]["llm"]["api_key"], Value::Null);
    let cost = infos[1]["stats"]["usage_to_metrics"]["agent"]["accumulated_cost"].clone();
    assert!(
        cost.as_f64().is_some_and(|c| c > 0.0),
        "stats on disk: {cost}"
    );
    assert!(!conv.docs_loaded() && !second.docs_loaded());
    // Using it loads the documents (secrets decrypted) and keeps them.
    assert_eq!(conv.agent_json()["llm"]["api_key"], "sk-secret");
    assert!(conv.docs_loaded());
    assert_eq!(conv.info(false, true), infos[1]);
    // Unsaved stats keep it in memory until they are written.
    conv.register_usage("extra", "openai/other");
    assert!(!conv.release_if_idle(Duration::ZERO));
    conv.persist_state().await.expect("persist");
    assert!(conv.release_if_idle(Duration::ZERO));
    assert!(!conv.docs_loaded());
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    let stats = conv.read_state(|s| s.stats.clone());
    assert!(stats["usage_to_metrics"].get("extra").is_some(), "{stats}");
    assert_eq!(
        conv.read_meta(|m| m.title.clone()).as_deref(),
        Some("First")
    );
}
