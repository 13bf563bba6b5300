//! Server-side conversations through the real binary and the Rust mock LLM: routes, the events
//! WebSocket, the agent loop (tools, pause, interrupt, confirmation, limits, errors, stuck),
//! persistence across a SIGKILL, and reading a directory written by the reference.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMsg;

use crate::support::mock_llm::MockLlm;
use crate::support::{ServerOptions, TestServer};

async fn create(srv: &TestServer, body: Value) -> (u16, Value) {
    let r = srv
        .client()
        .post(format!("{}/api/conversations", srv.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap())
}

fn create_body(llm: &MockLlm, workdir: &std::path::Path) -> Value {
    json!({
        "agent": llm.agent(),
        "workspace": {"working_dir": workdir.to_string_lossy(), "kind": "LocalWorkspace"},
        "max_iterations": 50,
        "tool_module_qualnames": {"terminal": "openhands.tools.terminal.definition"},
        "stuck_detection_thresholds": {"ignored": true},
    })
}

async fn get(srv: &TestServer, path: &str) -> (u16, Value) {
    let r = srv
        .client()
        .get(format!("{}{path}", srv.url))
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

async fn post(srv: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let r = srv
        .client()
        .post(format!("{}{path}", srv.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

async fn all_events(srv: &TestServer, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let mut path = format!("/api/conversations/{id}/events/search?limit=100");
        if let Some(p) = &page {
            path.push_str(&format!("&page_id={p}"));
        }
        let (code, v) = get(srv, &path).await;
        assert_eq!(code, 200, "{v}");
        out.extend(v["items"].as_array().unwrap().iter().cloned());
        match v["next_page_id"].as_str() {
            Some(p) => page = Some(p.to_string()),
            None => return out,
        }
    }
}

async fn status(srv: &TestServer, id: &str) -> String {
    get(srv, &format!("/api/conversations/{id}")).await.1["execution_status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn wait_status(srv: &TestServer, id: &str, want: &[&str], secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = status(srv, id).await;
        if want.contains(&s.as_str()) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "status {s}, wanted {want:?}; events: {:?}",
            kinds(&all_events(srv, id).await)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a run has begun after the first `since` events: a terminal status read before
/// the run task sets `running` would otherwise be taken for the run's end (the status of a
/// conversation in `error` is not reset by a new message, here as in the reference).
async fn wait_run_started(srv: &TestServer, id: &str, since: usize, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let evs = all_events(srv, id).await;
        let started = evs.iter().skip(since).any(|e| {
            e["kind"] == "ConversationStateUpdateEvent"
                && e["key"] == "execution_status"
                && e["value"] == "running"
        });
        if started {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no run started; events: {:?}",
            kinds(&evs)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| match e["kind"].as_str() {
            Some("ConversationStateUpdateEvent") => {
                format!("state:{}", e["key"].as_str().unwrap_or(""))
            }
            Some(k) => k.to_string(),
            None => "?".into(),
        })
        .collect()
}

async fn say(srv: &TestServer, id: &str, text: &str, run: bool) {
    let (code, v) = post(
        srv,
        &format!("/api/conversations/{id}/events"),
        json!({"role": "user", "content": [{"type": "text", "text": text, "cache_prompt": false}], "run": run, "sender": "x"}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
}

/// Fails the test when the run shows that the binary has no working LLM client (or, with
/// `need_tools`, no tools): everything after would test nothing.
async fn assert_agent_ready(srv: &TestServer, id: &str, need_tools: bool) {
    let evs = all_events(srv, id).await;
    let no_llm = evs.iter().find(|e| {
        e["kind"] == "ConversationErrorEvent"
            && e["detail"]
                .as_str()
                .unwrap_or("")
                .contains("no LLM provider is implemented")
    });
    assert!(no_llm.is_none(), "no LLM client: {no_llm:?}");
    let no_tools = evs
        .iter()
        .find(|e| e["kind"] == "SystemPromptEvent")
        .is_some_and(|e| e["tools"].as_array().is_none_or(|t| t.is_empty()));
    assert!(!(need_tools && no_tools), "the agent has no tools");
}

/// Waits (30 s at most) until the conversation has a `terminal` ActionEvent.
async fn wait_terminal_action(srv: &TestServer, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !all_events(srv, id)
        .await
        .iter()
        .any(|e| e["kind"] == "ActionEvent" && e["tool_name"] == "terminal")
    {
        assert!(
            Instant::now() < deadline,
            "the terminal action never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_text(srv: &TestServer, id: &str) {
    say(srv, id, "[[mock:text]] hi", true).await;
    wait_status(srv, id, &["finished", "error"], 60).await;
    assert_agent_ready(srv, id, true).await;
}

#[tokio::test]
async fn create_get_search_patch_delete() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let wd = srv.workdir().join("new dir");
    let cid = uuid::Uuid::new_v4().to_string();
    let mut body = create_body(&llm, &wd);
    body["conversation_id"] = json!(cid);
    let (code, info) = create(&srv, body.clone()).await;
    assert_eq!(code, 201, "{info}");
    assert_eq!(info["id"], cid);
    assert_eq!(info["execution_status"], "idle");
    assert_eq!(
        info["agent"]["llm"]["api_key"],
        Value::Null,
        "secrets are nulled in REST"
    );
    assert_eq!(info["agent"]["kind"], "Agent");
    assert_eq!(
        info["tool_module_qualnames"]["terminal"],
        "openhands.tools.terminal.definition"
    );
    assert!(
        wd.join(".git").is_dir(),
        "working dir created and git-initialised"
    );
    let hex = cid.replace('-', "");
    assert!(info["persistence_dir"].as_str().unwrap().ends_with(&hex));
    let dir = std::path::Path::new(info["persistence_dir"].as_str().unwrap());
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        srv.root_path().join(dir)
    };
    assert!(dir.join("meta.json").is_file() && dir.join("base_state.json").is_file());

    // Idempotent create.
    let (code, again) = create(&srv, body).await;
    assert_eq!((code, again["id"].clone()), (200, json!(cid)));

    // Missing agent / workspace.
    let (code, _) = create(
        &srv,
        json!({"workspace": {"working_dir": "/tmp", "kind": "LocalWorkspace"}}),
    )
    .await;
    assert_eq!(code, 422);

    let (code, got) = get(&srv, &format!("/api/conversations/{cid}")).await;
    assert_eq!(code, 200);
    assert_eq!(got["runtime_info"]["runtime_status"], "available");
    let (code, _) = get(
        &srv,
        &format!("/api/conversations/{}", uuid::Uuid::new_v4()),
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = get(&srv, "/api/conversations/not-a-uuid").await;
    assert_eq!(code, 422);

    let (code, second) = create(&srv, create_body(&llm, &srv.workdir())).await;
    assert_eq!(code, 201);
    let (_, page) = get(&srv, "/api/conversations/search?limit=1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], second["id"], "newest first");
    let next = page["next_page_id"].as_str().unwrap();
    assert!(!next.contains('-'), "hex page id");
    let (_, page2) = get(
        &srv,
        &format!("/api/conversations/search?limit=1&page_id={next}"),
    )
    .await;
    assert_eq!(page2["items"][0]["id"], cid);
    assert_eq!(page2["next_page_id"], Value::Null);
    assert_eq!(get(&srv, "/api/conversations/count").await.1, json!(2));
    assert_eq!(
        get(&srv, "/api/conversations/count?status=running").await.1,
        json!(0)
    );
    assert_eq!(
        get(&srv, "/api/conversations/search?status=bogus").await.0,
        422
    );
    assert_eq!(get(&srv, "/api/conversations/search?limit=0").await.0, 422);
    let missing = uuid::Uuid::new_v4();
    let (code, batch) = get(&srv, &format!("/api/conversations?ids={cid}&ids={missing}")).await;
    assert_eq!(code, 200);
    assert_eq!(batch[0]["id"], cid);
    assert_eq!(batch[1], Value::Null);

    let r = srv
        .client()
        .patch(format!("{}/api/conversations/{cid}", srv.url))
        .json(&json!({"title": "  My title ", "tags": {"team": "core"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, got) = get(&srv, &format!("/api/conversations/{cid}")).await;
    assert_eq!(got["title"], "My title");
    assert_eq!(got["tags"]["team"], "core");
    let r = srv
        .client()
        .patch(format!("{}/api/conversations/{cid}", srv.url))
        .json(&json!({"tags": {"Bad-Key": "x"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);

    // Events of a fresh conversation, condense, unsupported routes answer clearly.
    let (code, evs) = get(&srv, &format!("/api/conversations/{cid}/events/search")).await;
    assert_eq!(code, 200);
    assert_eq!(
        kinds(evs["items"].as_array().unwrap()),
        ["state:tags"],
        "only the tags update"
    );
    assert_eq!(
        get(&srv, &format!("/api/conversations/{missing}/events/search"))
            .await
            .0,
        404
    );
    let (code, v) = post(
        &srv,
        &format!("/api/conversations/{cid}/condense"),
        json!({}),
    )
    .await;
    assert_eq!(code, 409, "no condenser configured: {v}");
    let (code, v) = post(
        &srv,
        &format!("/api/conversations/{cid}/switch_acp_model"),
        json!({"model": "x"}),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        v["detail"],
        "switch_acp_model is only supported for ACP conversations."
    );

    let r = srv
        .client()
        .delete(format!("{}/api/conversations/{cid}", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!dir.exists(), "conversation directory removed");
    assert!(wd.is_dir(), "workspace kept");
    assert_eq!(get(&srv, &format!("/api/conversations/{cid}")).await.0, 404);
    let r = srv
        .client()
        .delete(format!("{}/api/conversations/{cid}", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

async fn ws_connect(
    srv: &TestServer,
    id: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!(
        "{}/sockets/events/{id}",
        srv.url.replace("http://", "ws://")
    );
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .ok()??
        {
            Ok(WsMsg::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(WsMsg::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn websocket_snapshot_live_events_and_text_run() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let (_, info) = create(&srv, create_body(&llm, &srv.workdir())).await;
    let id = info["id"].as_str().unwrap().to_string();

    // Unknown conversation: 4004.
    let mut bad = ws_connect(&srv, &uuid::Uuid::new_v4().to_string()).await;
    match tokio::time::timeout(Duration::from_secs(10), bad.next())
        .await
        .unwrap()
    {
        Some(Ok(WsMsg::Close(Some(f)))) => assert_eq!(u16::from(f.code), 4004),
        other => panic!("expected close 4004, got {other:?}"),
    }

    let mut ws = ws_connect(&srv, &id).await;
    let first = next_json(&mut ws).await.unwrap();
    assert_eq!(first["kind"], "ConversationStateUpdateEvent");
    assert_eq!(first["key"], "full_state");
    assert_eq!(first["value"]["execution_status"], "idle");
    assert_eq!(first["value"]["agent"]["llm"]["api_key"], "**********");

    // A message sent over the socket is appended and run.
    ws.send(WsMsg::Text(
        json!({"role": "user", "content": [{"type": "text", "text": "[[mock:text]] over ws"}]})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mut seen = Vec::new();
    let mut final_state = None;
    while let Some(ev) = next_json(&mut ws).await {
        if ev["key"] == "full_state" && ev["value"]["execution_status"] != "running" {
            final_state = Some(ev);
            break;
        }
        seen.push(ev);
    }
    let final_state = final_state.expect("a full_state after the run");
    assert_agent_ready(&srv, &id, true).await;
    assert_eq!(final_state["value"]["execution_status"], "finished");
    let k = kinds(&seen);
    for want in [
        "SystemPromptEvent",
        "MessageEvent",
        "state:last_user_message_id",
        "state:execution_status",
        "state:stats",
    ] {
        assert!(k.contains(&want.to_string()), "missing {want} in {k:?}");
    }
    let reply = seen
        .iter()
        .rev()
        .find(|e| e["kind"] == "MessageEvent")
        .unwrap();
    assert_eq!(reply["source"], "agent");
    assert!(reply["llm_message"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("MOCK_TEXT_REPLY"));
    // REST sees the same persisted events, in the same order, without full_state snapshots.
    let rest = all_events(&srv, &id).await;
    let live_ids: Vec<&Value> = seen.iter().map(|e| &e["id"]).collect();
    let rest_ids: Vec<&Value> = rest.iter().map(|e| &e["id"]).collect();
    assert_eq!(rest_ids, live_ids);
    // Timestamps are naive local with microseconds and increase.
    let ts: Vec<&str> = rest
        .iter()
        .map(|e| e["timestamp"].as_str().unwrap())
        .collect();
    assert!(ts.iter().all(|t| t.len() == 26 && !t.ends_with('Z')));
    assert!(ts.windows(2).all(|w| w[0] < w[1]));
    // Filters and paging of events/search.
    let (_, agent_msgs) = get(
        &srv,
        &format!("/api/conversations/{id}/events/search?kind=MessageEvent&source=agent"),
    )
    .await;
    assert_eq!(agent_msgs["items"].as_array().unwrap().len(), 1);
    let (_, by_body) = get(
        &srv,
        &format!("/api/conversations/{id}/events/search?body=over%20WS"),
    )
    .await;
    assert_eq!(by_body["items"].as_array().unwrap().len(), 1);
    let (_, desc) = get(
        &srv,
        &format!("/api/conversations/{id}/events/search?sort_order=TIMESTAMP_DESC&limit=2"),
    )
    .await;
    assert_eq!(desc["items"][0]["id"], rest.last().unwrap()["id"]);
    assert_eq!(desc["next_page_id"], rest[rest.len() - 3]["id"]);
    let (_, n) = get(
        &srv,
        &format!("/api/conversations/{id}/events/count?kind=SystemPromptEvent"),
    )
    .await;
    assert_eq!(n, json!(1));
    let one = &rest[1]["id"];
    let (code, ev) = get(
        &srv,
        &format!("/api/conversations/{id}/events/{}", one.as_str().unwrap()),
    )
    .await;
    assert_eq!((code, &ev["id"]), (200, one));
    let (_, fin) = get(
        &srv,
        &format!("/api/conversations/{id}/agent_final_response"),
    )
    .await;
    assert!(fin["response"]
        .as_str()
        .unwrap()
        .contains("MOCK_TEXT_REPLY"));
    // Running a finished conversation again is allowed; the stats carry the agent's usage.
    let (_, info) = get(&srv, &format!("/api/conversations/{id}")).await;
    let agent_stats = &info["stats"]["usage_to_metrics"]["agent"];
    assert!(
        agent_stats["accumulated_token_usage"]["prompt_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(agent_stats["accumulated_cost"].as_f64().unwrap() > 0.0);
    assert!(
        agent_stats["token_usages"].as_array().is_some(),
        "full metrics form in REST"
    );

    // The title was generated from the first user message.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, info) = get(&srv, &format!("/api/conversations/{id}")).await;
        if info["title"] == "Mock title for text" {
            break;
        }
        assert!(Instant::now() < deadline, "title: {}", info["title"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ask_agent answers without recording events, under its own usage id.
    let before = all_events(&srv, &id).await.len();
    let (code, ans) = post(
        &srv,
        &format!("/api/conversations/{id}/ask_agent"),
        json!({"question": "what happened?"}),
    )
    .await;
    assert_eq!(code, 200, "{ans}");
    assert!(!ans["response"].as_str().unwrap().is_empty(), "{ans}");
    // As the reference asks: the question in its prompt, the agent's tools on offer (the model
    // must understand the tool calls in the history).
    let asked = llm
        .requests()
        .into_iter()
        .find(|r| r.to_string().contains("Based on the activity so far"))
        .expect("the ask_agent request");
    assert!(
        asked["tools"].to_string().contains("\"terminal\""),
        "{asked}"
    );
    let last = asked["messages"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .to_string();
    assert!(last.contains("## Question\\nwhat happened?"), "{last}");
    assert!(last.contains("do not make any tool call"), "{last}");
    let evs = all_events(&srv, &id).await;
    assert!(evs[before..]
        .iter()
        .all(|e| e["kind"] == "ConversationStateUpdateEvent"));
    let (_, info) = get(&srv, &format!("/api/conversations/{id}")).await;
    assert!(info["stats"]["usage_to_metrics"]
        .get("ask-agent-llm")
        .is_some());

    // A new socket can replay the history after its snapshot.
    let url = format!(
        "{}/sockets/events/{id}?resend_mode=all",
        srv.url.replace("http://", "ws://")
    );
    let mut ws2 = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let snap = next_json(&mut ws2).await.unwrap();
    assert_eq!(snap["key"], "full_state");
    for want in evs.iter().take(5) {
        let got = next_json(&mut ws2).await.unwrap();
        assert_eq!(got["id"], want["id"]);
    }
}

#[tokio::test]
async fn tools_run_and_results_reach_the_llm() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let wd = srv.workdir();
    let (_, info) = create(&srv, create_body(&llm, &wd)).await;
    let id = info["id"].as_str().unwrap().to_string();
    run_text(&srv, &id).await;
    let since = all_events(&srv, &id).await.len();
    say(&srv, &id, "[[mock:echo]] tok-echo", true).await;
    wait_run_started(&srv, &id, since, 30).await;
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error"], 60).await,
        "finished"
    );
    assert_eq!(
        std::fs::read_to_string(wd.join("echo_out.txt")).unwrap(),
        "hello from mock\n"
    );
    let evs = all_events(&srv, &id).await;
    let act = evs
        .iter()
        .find(|e| e["kind"] == "ActionEvent" && e["tool_name"] == "terminal")
        .unwrap();
    let obs = evs
        .iter()
        .find(|e| e["kind"] == "ObservationEvent" && e["tool_name"] == "terminal")
        .unwrap();
    assert_eq!(obs["action_id"], act["id"]);
    assert_eq!(obs["observation"]["kind"], "TerminalObservation");
    assert!(evs
        .iter()
        .any(|e| e["kind"] == "ActionEvent" && e["tool_name"] == "finish"));
    let reqs: Vec<Value> = llm
        .requests_with("tok-echo")
        .into_iter()
        .filter(|r| r.get("tools").is_some())
        .collect();
    assert_eq!(reqs.len(), 2);
    let tool_msg = reqs[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|m| m["role"] == "tool")
        .unwrap();
    assert!(tool_msg.to_string().contains("mock-marker-42"));

    // An unknown tool becomes an AgentErrorEvent and the agent goes on.
    let since = all_events(&srv, &id).await.len();
    say(&srv, &id, "[[mock:bad_tool]] tok-bad", true).await;
    wait_run_started(&srv, &id, since, 30).await;
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error"], 60).await,
        "finished"
    );
    let evs = all_events(&srv, &id).await;
    let err = evs.iter().find(|e| e["kind"] == "AgentErrorEvent").unwrap();
    assert!(err["error"].as_str().unwrap().contains("no_such_tool"));
}

#[tokio::test]
async fn run_conflict_interrupt_pause_and_max_iterations() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let (_, info) = create(&srv, create_body(&llm, &srv.workdir())).await;
    let id = info["id"].as_str().unwrap().to_string();
    run_text(&srv, &id).await;
    // Interrupt a long tool call.
    say(&srv, &id, "[[mock:slow secs=30]] tok-slow", true).await;
    wait_terminal_action(&srv, &id).await;
    let (code, v) = post(&srv, &format!("/api/conversations/{id}/run"), json!({})).await;
    assert_eq!(code, 409, "{v}");
    let started = Instant::now();
    let (code, _) = post(
        &srv,
        &format!("/api/conversations/{id}/interrupt"),
        json!({}),
    )
    .await;
    assert_eq!(code, 200);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "interrupt does not wait for the tool"
    );
    assert_eq!(wait_status(&srv, &id, &["paused"], 10).await, "paused");
    let k = kinds(&all_events(&srv, &id).await);
    assert_eq!(
        k.last().map(String::as_str),
        Some("InterruptEvent"),
        "{k:?}"
    );

    // Pause a loop at a step boundary, then resume with a new instruction.
    say(&srv, &id, "[[mock:loop sleep=0.2]] tok-loop", true).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while all_events(&srv, &id)
        .await
        .iter()
        .filter(|e| e["kind"] == "ObservationEvent")
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "loop did not progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    post(&srv, &format!("/api/conversations/{id}/pause"), json!({})).await;
    wait_status(&srv, &id, &["paused"], 20).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let n1 = all_events(&srv, &id).await.len();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        all_events(&srv, &id).await.len(),
        n1,
        "no activity after pause"
    );
    assert!(all_events(&srv, &id)
        .await
        .iter()
        .any(|e| e["kind"] == "PauseEvent"));

    // max_iterations is per run.
    let mut body = create_body(&llm, &srv.workdir());
    body["max_iterations"] = json!(3);
    let (_, info) = create(&srv, body).await;
    let id2 = info["id"].as_str().unwrap().to_string();
    say(&srv, &id2, "[[mock:loop sleep=0]] tok-max", true).await;
    assert_eq!(
        wait_status(&srv, &id2, &["error", "finished"], 60).await,
        "error"
    );
    let evs = all_events(&srv, &id2).await;
    assert_eq!(evs.iter().filter(|e| e["kind"] == "ActionEvent").count(), 3);
    let err = evs
        .iter()
        .rev()
        .find(|e| e["kind"] == "ConversationErrorEvent")
        .unwrap();
    assert_eq!(err["code"], "MaxIterationsReached");
}

#[tokio::test]
async fn llm_failure_stuck_and_confirmation() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let (_, info) = create(&srv, create_body(&llm, &srv.workdir())).await;
    let id = info["id"].as_str().unwrap().to_string();
    run_text(&srv, &id).await;
    let since = all_events(&srv, &id).await.len();
    say(&srv, &id, "[[mock:llm_error]] tok-err", true).await;
    wait_run_started(&srv, &id, since, 30).await;
    assert_eq!(
        wait_status(&srv, &id, &["error", "finished"], 60).await,
        "error"
    );
    let evs = all_events(&srv, &id).await;
    let err = evs
        .iter()
        .rev()
        .find(|e| e["kind"] == "ConversationErrorEvent")
        .unwrap();
    assert!(err["code"].as_str().unwrap().starts_with("LLM"), "{err}");
    assert!(!err["detail"].as_str().unwrap().is_empty());

    // The same action with the same output four times: stuck.
    let since = all_events(&srv, &id).await.len();
    say(&srv, &id, "[[mock:repeat]] tok-rep", true).await;
    wait_run_started(&srv, &id, since, 30).await;
    assert_eq!(
        wait_status(&srv, &id, &["stuck", "error", "finished"], 60).await,
        "stuck"
    );

    // Confirmation: the action waits, a rejection answers it without running it.
    let wd = srv.workdir();
    let (_, info) = create(&srv, create_body(&llm, &wd)).await;
    let id = info["id"].as_str().unwrap().to_string();
    let (code, _) = post(
        &srv,
        &format!("/api/conversations/{id}/confirmation_policy"),
        json!({"policy": {"kind": "AlwaysConfirm"}}),
    )
    .await;
    assert_eq!(code, 200);
    say(&srv, &id, "[[mock:echo]] tok-conf", true).await;
    assert_eq!(
        wait_status(
            &srv,
            &id,
            &["waiting_for_confirmation", "finished", "error"],
            60
        )
        .await,
        "waiting_for_confirmation"
    );
    assert!(!wd.join("echo_out.txt").exists());
    let (code, _) = post(
        &srv,
        &format!("/api/conversations/{id}/events/respond_to_confirmation"),
        json!({"accept": false, "reason": "nope"}),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(status(&srv, &id).await, "idle");
    let evs = all_events(&srv, &id).await;
    let rej = evs
        .iter()
        .find(|e| e["kind"] == "UserRejectObservation")
        .unwrap();
    assert_eq!(rej["rejection_reason"], "nope");
    assert!(!wd.join("echo_out.txt").exists());
    // Accepting runs the next pending action.
    post(
        &srv,
        &format!("/api/conversations/{id}/confirmation_policy"),
        json!({"policy": {"kind": "NeverConfirm"}}),
    )
    .await;
    post(&srv, &format!("/api/conversations/{id}/run"), json!({})).await;
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error"], 60).await,
        "finished"
    );
}

#[tokio::test]
async fn sigkill_mid_run_then_restart_recovers() {
    let first = TestServer::start_with(ServerOptions {
        env: vec![("OH_SECRET_KEY".into(), "restart-key".into())],
        ..Default::default()
    });
    let convs = first.root_path().join("conversations");
    let llm = MockLlm::start().await;
    let (_, info) = create(&first, create_body(&llm, &first.workdir())).await;
    let id = info["id"].as_str().unwrap().to_string();
    run_text(&first, &id).await;
    say(&first, &id, "[[mock:slow secs=60]] tok-crash", true).await;
    wait_terminal_action(&first, &id).await;
    let before = all_events(&first, &id).await;
    let mut first = first;
    first.stop_with(nix::sys::signal::Signal::SIGKILL);

    // Keep the old root alive (it holds the conversations dir) while the new server runs.
    let second = TestServer::start_with(ServerOptions {
        conversations_dir: Some(convs.clone()),
        env: vec![("OH_SECRET_KEY".into(), "restart-key".into())],
        ..Default::default()
    });
    let (code, page) = get(&second, "/api/conversations/search").await;
    assert_eq!(code, 200);
    assert!(page["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == id.as_str()));
    assert_eq!(
        status(&second, &id).await,
        "error",
        "a run cut by a crash is resumable, not running"
    );
    let after = all_events(&second, &id).await;
    let ids = |evs: &[Value]| {
        evs.iter()
            .map(|e| (e["id"].clone(), e["kind"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&after[..before.len()]), ids(&before), "events intact");
    let recovery = after
        .iter()
        .find(|e| e["kind"] == "AgentErrorEvent")
        .unwrap();
    assert!(recovery["error"].as_str().unwrap().contains("restart"));
    // The API key survived (encrypted at rest) and the conversation runs again.
    let since = all_events(&second, &id).await.len();
    say(&second, &id, "[[mock:text]] tok-after", true).await;
    wait_run_started(&second, &id, since, 30).await;
    assert_eq!(
        wait_status(&second, &id, &["finished", "error"], 60).await,
        "finished"
    );
    drop(first);
}

#[tokio::test]
async fn opens_a_directory_written_by_the_reference() {
    // Written by the reference server 1.58.2 (with OH_SECRET_KEY below) and kept in the repo.
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference_conversations");
    let root = tempfile::tempdir().unwrap();
    let convs = root.path().join("conversations");
    std::fs::create_dir_all(&convs).unwrap();
    let ok = std::process::Command::new("cp")
        .arg("-r")
        .arg(sample.join("d9a4accae10742dfb7b3aced612a72d3"))
        .arg(&convs)
        .status()
        .unwrap();
    assert!(ok.success());
    let srv = TestServer::start_with(ServerOptions {
        conversations_dir: Some(convs),
        env: vec![("OH_SECRET_KEY".into(), "test-secret-key-123".into())],
        ..Default::default()
    });
    let id = "d9a4acca-e107-42df-b7b3-aced612a72d3";
    let (code, info) = get(&srv, &format!("/api/conversations/{id}")).await;
    assert_eq!(code, 200, "{info}");
    assert_eq!(info["title"], "Broken Python file test");
    assert_eq!(info["agent"]["llm"]["model"], "openai/mock-chat");
    let evs = all_events(&srv, id).await;
    assert_eq!(evs.len(), 50);
    assert_eq!(evs[0]["id"], "5b904947-441e-4dee-bfff-3cae7620fc85");
    let mut ws = ws_connect(&srv, id).await;
    let first = next_json(&mut ws).await.unwrap();
    assert_eq!(first["key"], "full_state");
}

#[tokio::test]
async fn scoped_file_and_git_routes_check_the_workspace() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let wd = srv.workdir();
    let (_, info) = create(&srv, create_body(&llm, &wd)).await;
    let id = info["id"].as_str().unwrap();
    std::fs::write(wd.join("a.txt"), "scoped\n").unwrap();
    let inside = wd.join("a.txt");
    let r = srv
        .client()
        .get(format!("{}/api/conversations/{id}/file/download", srv.url))
        .query(&[("path", inside.to_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "scoped\n");
    let r = srv
        .client()
        .get(format!("{}/api/conversations/{id}/file/download", srv.url))
        .query(&[("path", "/etc/hostname")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = srv
        .client()
        .get(format!("{}/api/conversations/{id}/git/changes", srv.url))
        .query(&[("path", wd.to_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let changes: Value = r.json().await.unwrap();
    assert!(changes.to_string().contains("a.txt"), "{changes}");
    let other = uuid::Uuid::new_v4();
    let r = srv
        .client()
        .get(format!("{}/api/conversations/{other}/git/changes", srv.url))
        .query(&[("path", wd.to_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn scoped_bash_defaults_to_the_workspace() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let wd = srv.workdir();
    let (_, info) = create(&srv, create_body(&llm, &wd)).await;
    let id = info["id"].as_str().unwrap();
    let (code, cmd) = post(
        &srv,
        &format!("/api/conversations/{id}/bash/start_bash_command"),
        json!({"command": "pwd"}),
    )
    .await;
    assert_eq!(code, 200, "{cmd}");
    let cid = cmd["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, page) = get(
            &srv,
            &format!("/api/conversations/{id}/bash/bash_events/search?kind__eq=BashOutput&command_id__eq={cid}"),
        )
        .await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if let Some(done) = items.iter().find(|i| !i["exit_code"].is_null()) {
            let out: String = items.iter().filter_map(|i| i["stdout"].as_str()).collect();
            assert_eq!(done["exit_code"], 0);
            assert_eq!(out.trim(), wd.to_str().unwrap());
            break;
        }
        assert!(Instant::now() < deadline, "command did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Scoped commands keep their events apart from the global store.
    let (_, global) = get(
        &srv,
        &format!("/api/bash/bash_events/search?command_id__eq={cid}"),
    )
    .await;
    assert_eq!(
        global["items"].as_array().map(Vec::len),
        Some(0),
        "{global}"
    );
    let (code, _) = post(
        &srv,
        &format!("/api/conversations/{id}/bash/start_bash_command"),
        json!({"command": "pwd", "cwd": "/"}),
    )
    .await;
    assert_eq!(code, 422);
}

/// The agent's terminal starts from the server's environment without the server's credentials
/// (the session keys in every form, the secret key), like workspace commands.
#[tokio::test]
async fn terminal_never_sees_the_server_credentials() {
    let srv = TestServer::start_with(ServerOptions {
        api_key: Some("key-one-5e1".into()),
        env: vec![
            ("OH_SESSION_API_KEYS".into(), r#"["key-one-5e1"]"#.into()),
            ("OH_SECRET_KEY".into(), "secret-key-9c2".into()),
            ("SOME_TOOL_SETTING".into(), "visible-3a7".into()),
        ],
        ..Default::default()
    });
    let llm = MockLlm::start().await;
    let wd = srv.workdir();
    let (code, info) = create(&srv, create_body(&llm, &wd)).await;
    assert_eq!(code, 201, "{info}");
    let id = info["id"].as_str().unwrap().to_string();
    say(&srv, &id, "[[mock:cmd run=env%20|%20sort]]", true).await;
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error"], 60).await,
        "finished"
    );
    let evs = all_events(&srv, &id).await;
    let obs = evs
        .iter()
        .find(|e| e["kind"] == "ObservationEvent" && e["tool_name"] == "terminal")
        .expect("a terminal observation")
        .to_string();
    assert!(obs.contains("SOME_TOOL_SETTING=visible-3a7"), "{obs}");
    assert!(obs.contains("AI_AGENT=openhands"), "{obs}");
    for secret in ["key-one-5e1", "secret-key-9c2", "OH_SESSION_API_KEYS"] {
        assert!(
            !obs.contains(secret),
            "{secret} reached the terminal: {obs}"
        );
    }
}

/// As the reference serialises them: single and batch GETs give the whole event model, `null`
/// fields included (`dynamic_context` of a system prompt without secrets, `parent_id`), while
/// search drops `null` fields.
#[tokio::test]
async fn event_gets_keep_null_fields_search_drops_them() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let wd = srv.workdir();
    let (_, info) = create(&srv, create_body(&llm, &wd)).await;
    let id = info["id"].as_str().unwrap().to_string();
    run_text(&srv, &id).await;
    let evs = all_events(&srv, &id).await;
    let sys = evs
        .iter()
        .find(|e| e["kind"] == "SystemPromptEvent")
        .expect("a system prompt");
    assert!(
        sys.as_object().unwrap().values().all(|v| !v.is_null()),
        "search kept null fields: {sys}"
    );
    let ev_id = sys["id"].as_str().unwrap();
    let (code, one) = get(&srv, &format!("/api/conversations/{id}/events/{ev_id}")).await;
    assert_eq!(code, 200);
    assert!(
        one.get("dynamic_context").is_some_and(Value::is_null),
        "{one}"
    );
    let batch: Value = srv
        .client()
        .get(format!("{}/api/conversations/{id}/events", srv.url))
        .json(&json!([ev_id, "no-such-id"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(batch[0], one);
    assert!(batch[1].is_null());
}

/// The conversation-scoped copies of the routes with a path parameter of their own work like
/// the global ones (they answered 500: the handlers saw the outer route's parameters too).
#[tokio::test]
async fn scoped_routes_with_their_own_path_parameters() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let wd = srv.workdir();
    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(&wd)
            .output()
            .unwrap();
        assert!(ok.status.success(), "{ok:?}");
        String::from_utf8_lossy(&ok.stdout).trim().to_string()
    };
    git(&["init", "-q"]);
    std::fs::write(wd.join("a.txt"), "one\n").unwrap();
    git(&["add", "a.txt"]);
    git(&["commit", "-qm", "first"]);
    let sha = git(&["rev-parse", "HEAD"]);
    let (_, info) = create(&srv, create_body(&llm, &wd)).await;
    let id = info["id"].as_str().unwrap().to_string();
    let base = format!("/api/conversations/{id}");

    let (code, cmd) = post(
        &srv,
        &format!("{base}/bash/start_bash_command"),
        json!({"command": "sleep 30"}),
    )
    .await;
    assert_eq!(code, 200, "{cmd}");
    let cid = cmd["id"].as_str().unwrap();
    let (code, ev) = get(&srv, &format!("{base}/bash/bash_events/{cid}")).await;
    assert_eq!((code, ev["id"].as_str()), (200, Some(cid)), "{ev}");
    let (code, stopped) = post(
        &srv,
        &format!("{base}/bash/bash_commands/{cid}/stop"),
        json!({}),
    )
    .await;
    assert_eq!(code, 200, "{stopped}");
    let (code, changes) = get(
        &srv,
        &format!("{base}/git/commits/{sha}/changes?path={}", wd.display()),
    )
    .await;
    assert_eq!(code, 200, "{changes}");
    assert!(changes.to_string().contains("a.txt"), "{changes}");
    let r = srv
        .client()
        .get(format!("{}{base}/file/download-trajectory/{id}", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// A client-defined tool (`client_tools` at create): offered to the model with the client's
/// schema; its call is an `ActionEvent` whose action holds the arguments (the client carries it
/// out), and the agent gets the reference's acknowledgment and goes on.
#[tokio::test]
async fn client_defined_tools_reach_the_client_with_their_arguments() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let wd = srv.workdir();
    let mut body = create_body(&llm, &wd);
    let spec = json!({
        "name": "show_notification",
        "description": "Display a notification banner in the UI.",
        "parameters": {"type": "object",
            "properties": {"message": {"type": "string"},
                           "level": {"type": "string", "enum": ["info", "warning", "error"]}},
            "required": ["message", "level"]},
    });
    body["client_tools"] = json!([spec]);
    let (code, info) = create(&srv, body.clone()).await;
    assert_eq!(code, 201, "{info}");
    let id = info["id"].as_str().unwrap().to_string();
    say(&srv, &id, "[[mock:client]] tok-client", true).await;
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error"], 60).await,
        "finished"
    );
    let evs = all_events(&srv, &id).await;
    let act = evs
        .iter()
        .find(|e| e["kind"] == "ActionEvent" && e["tool_name"] == "show_notification")
        .expect("the client tool's action");
    assert_eq!(
        act["action"],
        json!({"message": "hello client", "level": "info", "kind": "ClientAction_show_notification"})
    );
    let obs = evs
        .iter()
        .find(|e| e["kind"] == "ObservationEvent" && e["tool_name"] == "show_notification")
        .expect("the acknowledgment");
    assert_eq!(obs["observation"]["kind"], "ClientToolObservation");
    assert_eq!(
        obs["observation"]["content"][0]["text"],
        "Tool call dispatched to client."
    );
    let offered = llm
        .requests_with("tok-client")
        .into_iter()
        .find(|r| r.get("tools").is_some())
        .expect("a request with tools")["tools"]
        .to_string();
    assert!(
        offered.contains("show_notification") && offered.contains("warning"),
        "{offered}"
    );

    // Specs the reference refuses are refused.
    body["client_tools"] =
        json!([{"name": "x", "description": "d", "parameters": {"type": "string"}}]);
    let (code, err) = create(&srv, body).await;
    assert!((400..500).contains(&code), "{code} {err}");
    assert!(err.to_string().contains("object JSON Schema"), "{err}");
}

/// `pause` while a tool step runs, then `run` before the step ends: the run resumes (no 409)
/// and the conversation finishes, as with the reference.
#[tokio::test]
async fn run_after_a_pause_during_a_tool_step_resumes() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let wd = srv.workdir();
    let (_, info) = create(&srv, create_body(&llm, &wd)).await;
    let id = info["id"].as_str().unwrap().to_string();
    say(&srv, &id, "[[mock:slow secs=4]]", true).await;
    wait_terminal_action(&srv, &id).await;
    let (code, _) = post(&srv, &format!("/api/conversations/{id}/pause"), json!({})).await;
    assert_eq!(code, 200);
    assert_eq!(status(&srv, &id).await, "paused");
    // The window under test: the tool step is still running when `run` comes.
    let observed = |evs: &[Value]| {
        evs.iter()
            .any(|e| e["kind"] == "ObservationEvent" && e.to_string().contains("slow-end"))
    };
    assert!(
        !observed(&all_events(&srv, &id).await),
        "the 4 s step ended before the run request; this machine is too slow for the test"
    );
    let (code, body) = post(&srv, &format!("/api/conversations/{id}/run"), json!({})).await;
    assert_eq!(code, 200, "run during the paused step: {body}");
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error", "paused"], 60).await,
        "finished"
    );
    let evs = all_events(&srv, &id).await;
    assert!(observed(&evs));
    assert!(evs
        .iter()
        .any(|e| e["kind"] == "ActionEvent" && e["tool_name"] == "finish"));
}

/// The replay of a finished conversation (`resend_mode=all`) and `events/search` agree: after
/// the snapshot, the socket sends exactly the listed events, in order.
#[tokio::test]
async fn replay_of_a_finished_conversation_matches_search() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let wd = srv.workdir();
    let (_, info) = create(&srv, create_body(&llm, &wd)).await;
    let id = info["id"].as_str().unwrap().to_string();
    say(&srv, &id, "[[mock:echo]] tok-replay", true).await;
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error"], 60).await,
        "finished"
    );
    // The title is generated beside the run (its LLM call records stats events): wait for it
    // and for the log to settle, so that the listing below is the whole log.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut count = 0;
    loop {
        let (_, info) = get(&srv, &format!("/api/conversations/{id}")).await;
        let now = all_events(&srv, &id).await.len();
        if !info["title"].is_null() && now == count {
            break;
        }
        assert!(Instant::now() < deadline, "the log never settled");
        count = now;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A second run, watched: the replay socket opens the moment the run has ended (its final
    // snapshot seen), inside the 300 ms after which the run repeats that snapshot to the
    // sockets connected before it ended. The replay must not get that repeat: it would be an
    // event `events/search` does not list.
    let mut watcher = ws_connect(&srv, &id).await;
    assert_eq!(next_json(&mut watcher).await.unwrap()["key"], "full_state");
    say(&srv, &id, "[[mock:echo]] tok-replay-2", true).await;
    let mut finished = false;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), next_json(&mut watcher))
            .await
            .expect("the second run never ended")
            .expect("the watcher's socket closed");
        if ev["key"] == "execution_status" && ev["value"] == "finished" {
            finished = true;
        }
        if finished && ev["key"] == "full_state" {
            break;
        }
    }
    let url = format!(
        "{}/sockets/events/{id}?resend_mode=all",
        srv.url.replace("http://", "ws://")
    );
    let mut ws = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let snap = next_json(&mut ws).await.unwrap();
    assert_eq!(snap["key"], "full_state");
    let mut sent = Vec::new();
    while let Ok(Some(Ok(WsMsg::Text(t)))) =
        tokio::time::timeout(Duration::from_millis(700), ws.next()).await
    {
        let v: Value = serde_json::from_str(&t).unwrap();
        sent.push(v["id"].clone());
    }
    let listed: Vec<Value> = all_events(&srv, &id)
        .await
        .iter()
        .map(|e| e["id"].clone())
        .collect();
    assert_eq!(sent, listed);
    // The watcher, connected when the run ended, does get the repeat.
    let repeat = tokio::time::timeout(Duration::from_secs(2), next_json(&mut watcher))
        .await
        .expect("no repeated snapshot for the socket connected during the run")
        .unwrap();
    assert_eq!(repeat["key"], "full_state");
}

/// The answer to a create names the modules of the built-in tools the agent uses (as the
/// reference records them for other clients), keeping those the client gave.
#[tokio::test]
async fn create_records_the_modules_of_built_in_tools() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let wd = srv.workdir();
    let mut agent = llm.agent();
    agent["tools"] =
        json!([{"name": "terminal"}, {"name": "file_editor"}, {"name": "task_tracker"}]);
    let body = json!({"agent": agent,
        "workspace": {"working_dir": wd.to_string_lossy(), "kind": "LocalWorkspace"},
        "tool_module_qualnames": {"terminal": "my.own.module"}});
    let (code, info) = create(&srv, body).await;
    assert_eq!(code, 201, "{info}");
    assert_eq!(
        info["tool_module_qualnames"],
        json!({
        "terminal": "my.own.module",
        "file_editor": "openhands.tools.file_editor.definition",
        "task_tracker": "openhands.tools.task_tracker.definition"})
    );
}

/// A parent whose agent starts a child conversation: the child runs its task to the end, is
/// listed under the parent, keeps its events, and both survive a restart; the children route
/// validates and refuses unknown parents.
#[tokio::test]
async fn a_parent_starts_a_child_that_runs_and_survives_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let llm = MockLlm::start().await;
    let mut body = create_body(&llm, &srv.workdir());
    body["agent"]["tools"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "start_child_conversation", "params": {}}));
    let (_, info) = create(&srv, body).await;
    let parent = info["id"].as_str().unwrap().to_string();
    say(&srv, &parent, "[[mock:child]] tok-parent", true).await;
    assert_eq!(
        wait_status(&srv, &parent, &["finished", "error"], 60).await,
        "finished"
    );
    let evs = all_events(&srv, &parent).await;
    let obs = evs
        .iter()
        .find(|e| e["observation"]["kind"] == "StartChildConversationObservation")
        .unwrap_or_else(|| panic!("no child observation: {:?}", kinds(&evs)));
    assert_eq!(obs["observation"]["is_error"], false, "{obs}");
    let child = obs["observation"]["conversation_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(obs["observation"]["parent_conversation_id"], json!(parent));
    assert_eq!(obs["observation"]["isolation"], "shared");

    assert_eq!(
        wait_status(&srv, &child, &["finished", "error"], 60).await,
        "finished"
    );
    let (_, p) = get(&srv, &format!("/api/conversations/{parent}")).await;
    assert_eq!(p["sub_conversation_ids"], json!([child]));
    let (_, c) = get(&srv, &format!("/api/conversations/{child}")).await;
    assert_eq!(c["parent_conversation_id"], json!(parent));
    assert_eq!(c["title"], "kid");
    let child_events = all_events(&srv, &child).await;
    assert!(child_events.iter().any(|e| e["kind"] == "MessageEvent"
        && e["llm_message"]["content"]
            .to_string()
            .contains("child-task")));
    drop(srv);

    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let (_, p) = get(&srv, &format!("/api/conversations/{parent}")).await;
    assert_eq!(p["sub_conversation_ids"], json!([child]));
    assert_eq!(all_events(&srv, &child).await.len(), child_events.len());

    // The route itself.
    let (code, answer) = post(
        &srv,
        &format!("/api/conversations/{parent}/children"),
        json!({"task": "[[mock:text]] second", "isolation": "shared"}),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(answer["parent_conversation_id"], json!(parent));
    let (code, err) = post(
        &srv,
        &format!("/api/conversations/{parent}/children"),
        json!({"task": ""}),
    )
    .await;
    assert_eq!(
        (code, err["detail"][0]["type"].clone()),
        (422, json!("string_too_short"))
    );
    let (code, err) = post(
        &srv,
        "/api/conversations/00000000-0000-0000-0000-000000000009/children",
        json!({"task": "x"}),
    )
    .await;
    assert_eq!(
        (code, err["detail"].clone()),
        (404, json!("Parent conversation not found"))
    );
    let mut orphan = create_body(&llm, &srv.workdir());
    orphan["parent_conversation_id"] = json!("00000000-0000-0000-0000-000000000009");
    let (code, err) = post(&srv, "/api/conversations", orphan).await;
    assert_eq!(
        (code, err["detail"].clone()),
        (
            422,
            json!("Parent conversation 00000000-0000-0000-0000-000000000009 not found")
        )
    );
}

/// `isolation: worktree` in a repository with commits gives the child its own worktree on a
/// new branch (and says so in its prompt); without commits the child shares the workspace.
#[tokio::test]
async fn a_child_gets_a_worktree_of_a_repository() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let wd = srv.workdir();
    let (_, info) = create(&srv, create_body(&llm, &wd)).await;
    let parent = info["id"].as_str().unwrap().to_string();
    let (code, rt) = post(
        &srv,
        &format!("/api/conversations/{parent}/runtime/reprovision"),
        json!({}),
    )
    .await;
    assert_eq!(
        (code, rt["runtime_status"].clone()),
        (200, json!("available"))
    );
    let path = format!("/api/conversations/{parent}/children");
    // Created conversations get `git init`: no commit yet, so no worktree.
    let (code, answer) = post(&srv, &path, json!({"task": "[[mock:text]] a"})).await;
    assert_eq!(
        (code, answer["isolation"].clone()),
        (201, json!("shared")),
        "{answer}"
    );

    let git = |args: &[&str]| {
        let ok = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@e"])
            .args(args)
            .current_dir(&wd)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    std::fs::write(wd.join("README"), "hi\n").unwrap();
    git(&["add", "README"]);
    git(&["commit", "-qm", "init"]);
    let (code, answer) = post(&srv, &path, json!({"task": "[[mock:text]] b"})).await;
    assert_eq!(
        (code, answer["isolation"].clone()),
        (201, json!("worktree")),
        "{answer}"
    );
    let child = answer["conversation_id"].as_str().unwrap();
    let ws = std::path::PathBuf::from(answer["workspace"].as_str().unwrap());
    assert!(
        ws.join("README").is_file(),
        "the worktree has the files: {ws:?}"
    );
    let branches = std::process::Command::new("git")
        .args(["branch", "--list", &format!("openhands/{child}")])
        .current_dir(&wd)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&branches.stdout).trim().is_empty());
    let (_, c) = get(&srv, &format!("/api/conversations/{child}")).await;
    assert!(c["agent"]["agent_context"]["system_message_suffix"]
        .as_str()
        .unwrap()
        .contains("dedicated git worktree"));
    let _ = std::fs::remove_dir_all(ws.parent().and_then(|p| p.parent()).unwrap());
}

/// Sub-agent definitions a client forwards are offered by the `task` tool of the conversations
/// started afterwards; a delegated task runs to its answer in its own persisted conversation
/// that is not listed with the user's.
#[tokio::test]
async fn a_forwarded_sub_agent_runs_a_delegated_task() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let mut body = create_body(&llm, &srv.workdir());
    body["agent"]["tools"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "task_tool_set", "params": {}}));
    body["agent_definitions"] = json!([
        {"name": "test_reviewer", "description": "Code review specialist", "tools": ["terminal"],
         "system_prompt": "You review code for correctness."}
    ]);
    let (code, info) = create(&srv, body).await;
    assert_eq!(code, 201, "{info}");
    let id = info["id"].as_str().unwrap().to_string();
    say(
        &srv,
        &id,
        "[[mock:task agent=test_reviewer]] tok-task",
        true,
    )
    .await;
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error"], 60).await,
        "finished"
    );
    let evs = all_events(&srv, &id).await;
    let prompt = evs
        .iter()
        .find(|e| e["kind"] == "SystemPromptEvent")
        .unwrap();
    let task_tool = prompt["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["title"] == "task")
        .unwrap_or_else(|| panic!("no task tool in {}", prompt["tools"]));
    let description = task_tool["description"].as_str().unwrap();
    assert!(
        description.contains("- **test_reviewer**: Code review specialist (tools: terminal)"),
        "{description}"
    );
    assert!(
        description.contains("- **bash-runner**"),
        "built-ins are offered too"
    );

    let obs = evs
        .iter()
        .find(|e| e["observation"]["kind"] == "TaskObservation")
        .unwrap_or_else(|| panic!("no task observation: {:?}", kinds(&evs)));
    assert_eq!(obs["observation"]["status"], "completed", "{obs}");
    assert_eq!(obs["observation"]["subagent"], "test_reviewer");
    assert_eq!(obs["observation"]["task_id"], "task_00000001");
    assert_eq!(
        obs["observation"]["content"][0]["text"],
        "MOCK_TEXT_REPLY: hello"
    );
    // The sub-agent got its definition's prompt and only its tools.
    let sub = llm.requests_with("sub-task");
    let sub = sub
        .iter()
        .find(|r| r["tools"].is_array())
        .expect("the sub-agent's LLM call");
    assert!(sub["messages"]
        .to_string()
        .contains("You review code for correctness."));
    let names: Vec<&str> = sub["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["function"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&"terminal") && !names.contains(&"file_editor"),
        "{names:?}"
    );
    // Its conversation is kept under the parent, not listed with the user's.
    let hex = id.replace('-', "");
    let kept = srv
        .root
        .path()
        .join("conversations")
        .join(&hex)
        .join("subagents");
    assert!(
        std::fs::read_dir(&kept).map(|d| d.count()).unwrap_or(0) == 1,
        "{kept:?}"
    );
    let (_, page) = get(&srv, "/api/conversations/search").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);

    // An unknown sub-agent is an error observation, not a failed run.
    say(&srv, &id, "[[mock:task agent=nobody]] tok-task2", true).await;
    wait_run_started(&srv, &id, evs.len(), 30).await;
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error"], 60).await,
        "finished"
    );
    let evs = all_events(&srv, &id).await;
    let bad = evs
        .iter()
        .rev()
        .find(|e| e["observation"]["kind"] == "TaskObservation")
        .unwrap();
    assert_eq!(bad["observation"]["is_error"], true);
    assert!(bad["observation"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Unknown agent 'nobody'"));
}

fn goal_statuses(evs: &[Value]) -> Vec<(String, u64)> {
    evs.iter()
        .filter(|e| e["kind"] == "ConversationStateUpdateEvent" && e["key"] == "goal")
        .map(|e| {
            (
                e["value"]["status"].as_str().unwrap().to_string(),
                e["value"]["iteration"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until a goal loop that started after the first `since` goal statuses has ended.
async fn wait_goal_end(srv: &TestServer, id: &str, since: usize) -> Vec<(String, u64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statuses = goal_statuses(&all_events(srv, id).await);
        if statuses.len() > since + 1 && statuses.last().is_some_and(|(s, _)| s != "running") {
            return statuses;
        }
        assert!(Instant::now() < deadline, "goal did not end: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Goal mode: rounds until the judge finds the objective done, a cap on judged rounds, stop and
/// resume, and the reference's answers to bad requests.
#[tokio::test]
async fn goal_mode_runs_rounds_until_the_judge_is_satisfied() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let (_, info) = create(&srv, create_body(&llm, &srv.workdir())).await;
    let id = info["id"].as_str().unwrap().to_string();
    let goal = format!("/api/conversations/{id}/goal");

    let (code, _) = post(&srv, &goal, json!({})).await;
    assert_eq!(code, 422);
    let (code, err) = post(&srv, &goal, json!({"objective": "  "})).await;
    assert_eq!(
        (code, err["detail"].clone()),
        (400, json!("Goal objective must not be empty."))
    );
    let (code, err) = post(&srv, &goal, json!({"objective": "x", "max_iterations": 0})).await;
    assert_eq!(
        (code, err["detail"][0]["type"].clone()),
        (422, json!("greater_than_equal"))
    );
    let (code, err) = post(&srv, &format!("{goal}/resume"), json!({})).await;
    assert_eq!(
        (code, err["detail"].clone()),
        (400, json!("no_resumable_goal"))
    );

    // Not done after the first round; done after the follow-up.
    let since = 0;
    let (code, _) = post(
        &srv,
        &goal,
        json!({"objective": "[[mock:text]] make hello.txt"}),
    )
    .await;
    assert_eq!(code, 200);
    let statuses = wait_goal_end(&srv, &id, since).await;
    assert_eq!(
        statuses,
        [
            ("running".to_string(), 0),
            ("running".to_string(), 1),
            ("complete".to_string(), 2)
        ]
    );
    let evs = all_events(&srv, &id).await;
    let users: Vec<String> = evs
        .iter()
        .filter(|e| e["kind"] == "MessageEvent" && e["source"] == "user")
        .map(|e| {
            e["llm_message"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(users[0], "[[mock:text]] make hello.txt");
    assert!(users[1].starts_with(
        "The goal is NOT yet complete (audit iteration 1).\nOutstanding: hello.txt not verified"
    ));
    let judged = llm.requests_with("auditing whether a long-running GOAL");
    assert_eq!(judged.len(), 2);
    assert!(judged[0]["messages"][1]["content"]
        .to_string()
        .contains("<objective>"));

    // A cap on judged rounds.
    let since = goal_statuses(&all_events(&srv, &id).await).len();
    let (code, _) = post(
        &srv,
        &goal,
        json!({"objective": "[[mock:text]] judge=never", "max_iterations": 1}),
    )
    .await;
    assert_eq!(code, 200);
    let statuses = wait_goal_end(&srv, &id, since).await;
    assert_eq!(statuses.last().unwrap(), &("capped".to_string(), 1));
    let (code, err) = post(&srv, &format!("{goal}/resume"), json!({})).await;
    assert_eq!(
        (code, err["detail"].clone()),
        (400, json!("no_resumable_goal"))
    );

    // Stopped while the agent works: interrupted, then resumable.
    let since = goal_statuses(&all_events(&srv, &id).await).len();
    let (code, _) = post(
        &srv,
        &goal,
        json!({"objective": "[[mock:slow secs=2]] judge=done", "max_iterations": 3}),
    )
    .await;
    assert_eq!(code, 200);
    wait_status(&srv, &id, &["running"], 30).await;
    let (code, _) = post(&srv, &goal, json!({"objective": "again"})).await;
    assert_eq!(code, 409, "one goal at a time");
    let (code, _) = post(&srv, &format!("{goal}/stop"), json!({})).await;
    assert_eq!(code, 200);
    let statuses = wait_goal_end(&srv, &id, since).await;
    assert_eq!(statuses.last().unwrap().0, "interrupted");
    // The stopped round's run goes on: resuming is refused until it has ended.
    let since_resume = goal_statuses(&all_events(&srv, &id).await).len();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = post(&srv, &format!("{goal}/resume"), json!({})).await;
        if code == 200 {
            break;
        }
        assert_eq!(code, 409, "{body}");
        assert!(Instant::now() < deadline, "resume still refused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let statuses = wait_goal_end(&srv, &id, since_resume).await;
    assert_eq!(statuses.last().unwrap().0, "complete", "{statuses:?}");
    let evs = all_events(&srv, &id).await;
    assert!(evs.iter().any(|e| e["kind"] == "MessageEvent"
        && e["llm_message"]["content"][0]["text"]
            .as_str()
            .unwrap_or("")
            .starts_with("Resuming a goal")));
}

/// The prompt `ask_agent` sent for a conversation: its `messages` and `tools`, serialized.
async fn asked_prompt(srv: &TestServer, llm: &MockLlm, id: &str) -> (String, Vec<Value>) {
    let seen = llm.requests().len();
    let (code, ans) = post(
        srv,
        &format!("/api/conversations/{id}/ask_agent"),
        json!({"question": "what happened so far?"}),
    )
    .await;
    assert_eq!(code, 200, "{ans}");
    let req = llm.requests()[seen..]
        .iter()
        .rev()
        .find(|r| r["messages"].to_string().contains("what happened so far?"))
        .cloned()
        .expect("the ask_agent request");
    let messages = req["messages"].as_array().cloned().unwrap_or_default();
    (format!("{}{}", req["messages"], req["tools"]), messages)
}

/// Fails with the first difference of two serialized prompts (they are long).
fn assert_same_prompt(got: &str, want: &str, when: &str) {
    if got == want {
        return;
    }
    let at = got
        .bytes()
        .zip(want.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |s: &str| {
        let mut start = at.saturating_sub(80).min(s.len());
        while !s.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = (at + 200).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        s[start..end].to_string()
    };
    panic!(
        "the prompt changed {when} at byte {at}:\n  was: {}\n  now: {}",
        around(want),
        around(got)
    );
}

#[tokio::test]
async fn prompt_is_byte_identical_after_an_idle_release_and_a_restart() {
    let env: Vec<(String, String)> = vec![
        ("OH_CONVERSATION_IDLE_TTL_SECONDS".into(), "1".into()),
        (
            "RUST_LOG".into(),
            "info,agent_server::conversation=debug".into(),
        ),
        ("OH_SECRET_KEY".into(), "prompt-key".into()),
    ];
    let mut first = TestServer::start_with(ServerOptions {
        env: env.clone(),
        ..Default::default()
    });
    let convs = first.root_path().join("conversations");
    let llm = MockLlm::start().await;
    let (_, info) = create(&first, create_body(&llm, &first.workdir())).await;
    let id = info["id"].as_str().unwrap().to_string();
    say(&first, &id, "[[mock:echo marker=tok-prompt]] go", true).await;
    assert_eq!(
        wait_status(&first, &id, &["finished", "error"], 60).await,
        "finished"
    );
    let (live, live_messages) = asked_prompt(&first, &llm, &id).await;
    // The history keeps the agent's tool calls as tool calls, each answered by its result.
    let call_id = live_messages
        .iter()
        .filter(|m| m["role"] == "assistant")
        .flat_map(|m| m["tool_calls"].as_array().cloned().unwrap_or_default())
        .find(|c| c["function"]["name"] == "terminal")
        .and_then(|c| c["id"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no terminal tool call in {live}"));
    assert!(
        live_messages.iter().any(|m| m["role"] == "tool"
            && m["tool_call_id"] == call_id.as_str()
            && m.to_string().contains("tok-prompt-42")),
        "no tool result for {call_id}: {live}"
    );
    // The terminal's text for the LLM carries more than the observation's content.
    assert!(live.contains("tok-prompt-42"), "{live}");
    assert!(
        live.contains("[Command finished with exit code 0]"),
        "{live}"
    );

    // Idle past the TTL: the conversation drops what it loaded, then reads it back.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !first.log().contains("released an idle conversation") {
        assert!(
            Instant::now() < deadline,
            "never released:\n{}",
            first.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (released, _) = asked_prompt(&first, &llm, &id).await;
    assert_same_prompt(&released, &live, "after an idle release");

    first.stop_with(nix::sys::signal::Signal::SIGTERM);
    let second = TestServer::start_with(ServerOptions {
        conversations_dir: Some(convs),
        env,
        ..Default::default()
    });
    let (restarted, asked) = asked_prompt(&second, &llm, &id).await;
    assert_same_prompt(&restarted, &live, "after a restart");

    // The next step of a run sees the same history, byte for byte.
    let seen = llm.requests().len();
    say(&second, &id, "[[mock:text]] tok-next", true).await;
    assert_eq!(
        wait_status(&second, &id, &["finished", "error"], 60).await,
        "finished"
    );
    let step = llm.requests()[seen..]
        .iter()
        .find(|r| r["messages"].to_string().contains("tok-next"))
        .cloned()
        .expect("the run's request");
    let history = &asked[..asked.len() - 1];
    let step_messages = step["messages"].as_array().unwrap();
    assert_same_prompt(
        &serde_json::to_string(&step_messages[..history.len()]).unwrap(),
        &serde_json::to_string(history).unwrap(),
        "in the next step",
    );
    drop(first);
}

/// Every process below `root` (pid, command line), read from `/proc`.
fn descendants(root: u32) -> Vec<(i32, String)> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_string()) else {
            continue;
        };
        let ppid: i32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmd = std::fs::read(entry.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .unwrap_or_default();
        parent_of.push((pid, ppid, cmd));
    }
    let mut out: Vec<(i32, String)> = Vec::new();
    let mut frontier = vec![root as i32];
    while let Some(p) = frontier.pop() {
        for (pid, ppid, cmd) in &parent_of {
            if *ppid == p && !out.iter().any(|(q, _)| q == pid) {
                out.push((*pid, cmd.clone()));
                frontier.push(*pid);
            }
        }
    }
    out
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .is_some_and(|zombie| !zombie)
}

#[tokio::test]
async fn sigterm_during_runs_stops_every_child_and_keeps_every_event() {
    let env: Vec<(String, String)> = vec![("OH_SECRET_KEY".into(), "term-key".into())];
    let mut first = TestServer::start_with(ServerOptions {
        env: env.clone(),
        ..Default::default()
    });
    let convs = first.root_path().join("conversations");
    let llm = MockLlm::start().await;
    let mut ids = Vec::new();
    for secs in ["61.25", "62.25"] {
        let (_, info) = create(&first, create_body(&llm, &first.workdir())).await;
        let id = info["id"].as_str().unwrap().to_string();
        say(&first, &id, &format!("[[mock:slow secs={secs}]] go"), true).await;
        ids.push(id);
    }
    // A command of the conversation-scoped bash API, in a conversation that is not running.
    let (_, info) = create(&first, create_body(&llm, &first.workdir())).await;
    let idle = info["id"].as_str().unwrap().to_string();
    let (code, v) = post(
        &first,
        &format!("/api/conversations/{idle}/bash/start_bash_command"),
        json!({"command": "sleep 63.25"}),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    for id in &ids {
        wait_terminal_action(&first, id).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let kids = loop {
        let kids = descendants(first.pid());
        let has = |s: &str| kids.iter().any(|(_, c)| c.contains(s));
        if has("sleep 61.25") && has("sleep 62.25") && has("sleep 63.25") {
            break kids;
        }
        assert!(Instant::now() < deadline, "children not started: {kids:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut seen = Vec::new();
    for id in &ids {
        seen.push(all_events(&first, id).await);
    }

    first.stop_with(nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left: Vec<_> = kids.iter().filter(|(p, _)| alive(*p)).cloned().collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(left.is_empty(), "children outlived the server: {left:?}");

    // Every event a client saw is on disk, and no run is left `running`.
    let second = TestServer::start_with(ServerOptions {
        conversations_dir: Some(convs),
        env,
        ..Default::default()
    });
    for (id, before) in ids.iter().zip(&seen) {
        let after = all_events(&second, id).await;
        let ids_of = |evs: &[Value]| evs.iter().map(|e| e["id"].clone()).collect::<Vec<_>>();
        assert!(after.len() >= before.len(), "{id}: events lost");
        assert_eq!(ids_of(&after[..before.len()]), ids_of(before), "{id}");
        assert_ne!(status(&second, id).await, "running", "{id}");
    }
    drop(first);
}

/// As the SDK drives a conversation (`send_message`, then `run()`, which takes a 409 for "a run
/// is active" and then waits for the end): a message sent the moment the previous run reports
/// `finished` is run too, wherever its requests fall against the loop winding down.
#[tokio::test]
async fn a_message_sent_as_the_previous_run_ends_is_run() {
    let srv = TestServer::start();
    let llm = MockLlm::start_unrecorded().await;
    let mut body = create_body(&llm, &srv.workdir());
    body["max_iterations"] = json!(1000);
    let (_, info) = create(&srv, body).await;
    let id = info["id"].as_str().unwrap().to_string();
    let mut ws = ws_connect(&srv, &id).await;
    assert_eq!(next_json(&mut ws).await.unwrap()["key"], "full_state");
    let mut lost = Vec::new();
    for round in 0..60 {
        say(&srv, &id, &format!("[[mock:text]] round {round}"), false).await;
        let (code, v) = post(&srv, &format!("/api/conversations/{id}/run"), json!({})).await;
        assert!(code == 200 || code == 409, "{code} {v}");
        // The run answers this round's message, then reports `finished`; the next round
        // follows at once.
        let mut answered = false;
        while let Ok(Some(ev)) =
            tokio::time::timeout(Duration::from_secs(3), next_json(&mut ws)).await
        {
            if ev["kind"] == "MessageEvent" && ev["source"] == "agent" {
                answered = true;
            }
            if ev["key"] == "execution_status" && ev["value"] == "finished" && answered {
                break;
            }
        }
        if !answered {
            lost.push((round, code, status(&srv, &id).await));
            say(&srv, &id, "[[mock:text]] recover", true).await;
            wait_status(&srv, &id, &["finished", "error"], 30).await;
        }
    }
    assert!(
        lost.is_empty(),
        "messages never run (round, /run status, status after): {lost:?}"
    );
}

/// What the agent's terminal started on a server killed with SIGKILL does not outlive the next
/// start on the same state, even a process that ignores the hang-up the terminal's end sends.
#[tokio::test]
async fn a_killed_servers_terminal_is_killed_at_the_next_start() {
    let state = tempfile::tempdir().unwrap();
    let opts = ServerOptions::on_state(state.path());
    let pid_file = state.path().join("terminal.pid");
    let mut first = TestServer::start_with(opts.clone());
    let llm = MockLlm::start().await;
    let (_, info) = create(&first, create_body(&llm, &first.workdir())).await;
    let id = info["id"].as_str().unwrap().to_string();
    let command = format!(
        "nohup sleep 300 > /dev/null 2>&1 & echo $! > {}",
        pid_file.display()
    )
    .replace(' ', "%20");
    say(&first, &id, &format!("[[mock:cmd run={command}]]"), true).await;
    let mut shell = String::new();
    for _ in 0..600 {
        shell = std::fs::read_to_string(&pid_file).unwrap_or_default();
        if !shell.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let shell: u32 = shell
        .trim()
        .parse()
        .expect("the pid of the terminal's command");
    let alive = |pid: u32| {
        // A zombie counts as gone.
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| !s.contains("State:\tZ"))
    };
    assert!(alive(shell));
    first.stop_with(nix::sys::signal::Signal::SIGKILL);
    let _second = TestServer::start_with(opts);
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(shell) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !alive(shell),
        "the terminal's command {shell} is still running"
    );
}

/// Hooks start from the server's environment without its credentials, like every child.
#[tokio::test]
async fn hooks_never_see_the_server_credentials() {
    let srv = TestServer::start_with(ServerOptions {
        api_key: Some("key-hook-4b1".into()),
        env: vec![
            ("OH_SESSION_API_KEYS".into(), r#"["key-hook-4b1"]"#.into()),
            ("OH_SECRET_KEY".into(), "secret-hook-8d3".into()),
            ("SOME_HOOK_SETTING".into(), "visible-6e2".into()),
        ],
        ..Default::default()
    });
    let llm = MockLlm::start().await;
    let mut body = create_body(&llm, &srv.workdir());
    body["hook_config"] = json!({"user_prompt_submit": [{"matcher": "*",
        "hooks": [{"type": "command", "command": "env | sort"}]}]});
    let (code, info) = create(&srv, body).await;
    assert_eq!(code, 201, "{info}");
    let id = info["id"].as_str().unwrap().to_string();
    say(&srv, &id, "[[mock:text]] hooked", true).await;
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error"], 60).await,
        "finished"
    );
    let evs = all_events(&srv, &id).await;
    let out = evs
        .iter()
        .find(|e| e["kind"] == "HookExecutionEvent")
        .expect("the hook ran")["stdout"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(out.contains("SOME_HOOK_SETTING=visible-6e2"), "{out}");
    for secret in ["key-hook-4b1", "secret-hook-8d3", "OH_SESSION_API_KEYS"] {
        assert!(!out.contains(secret), "{secret} reached the hook: {out}");
    }
}

/// Timeouts a client gives far beyond any real duration (1e20 s: the LLM's timeout and stream
/// idle timeout, a hook's timeout) are clamped; the run goes on as usual instead of panicking.
#[tokio::test]
async fn huge_timeouts_from_the_client_do_not_break_a_run() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let mut body = create_body(&llm, &srv.workdir());
    body["agent"]["llm"]["timeout"] = json!(1e20);
    body["agent"]["llm"]["stream_idle_timeout"] = json!(1e20);
    body["agent"]["llm"]["stream"] = json!(true);
    body["hook_config"] = json!({"user_prompt_submit": [{"matcher": "*",
        "hooks": [{"type": "command", "command": "echo hook-ok", "timeout": 1e20}]}]});
    let (code, info) = create(&srv, body).await;
    assert_eq!(code, 201, "{info}");
    let id = info["id"].as_str().unwrap().to_string();
    say(&srv, &id, "[[mock:echo]] long timeouts", true).await;
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error"], 60).await,
        "finished",
        "{:?}",
        kinds(&all_events(&srv, &id).await)
    );
    let evs = all_events(&srv, &id).await;
    assert!(evs.iter().any(|e| e["kind"] == "HookExecutionEvent"
        && e["stdout"].as_str().is_some_and(|s| s.contains("hook-ok"))));
    assert!(evs
        .iter()
        .any(|e| e["kind"] == "ObservationEvent" && e.to_string().contains("mock-marker-42")));
}

/// A full disk (a 2 MiB tmpfs holding the conversations): a message that cannot be stored is
/// refused with the OS's words, no torn event file or temp file is left, the server keeps
/// serving; with space again the conversation goes on, and after a restart every event loads
/// with nothing to repair.
#[tokio::test]
#[ignore = "needs root to mount a tmpfs; run with --include-ignored"]
async fn full_disk_refuses_an_event_and_loses_nothing() {
    let dir = crate::support::Tmpfs::mount("2m");
    let convs = dir.path().join("conversations");
    let opts = ServerOptions {
        conversations_dir: Some(convs.clone()),
        ..Default::default()
    };
    let srv = TestServer::start_with(opts.clone());
    let llm = MockLlm::start().await;
    let (_, info) = create(&srv, create_body(&llm, &srv.workdir())).await;
    let id = info["id"].as_str().unwrap().to_string();
    say(&srv, &id, "[[mock:echo]] before", true).await;
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error"], 60).await,
        "finished"
    );
    let ids = |evs: &[Value]| evs.iter().map(|e| e["id"].clone()).collect::<Vec<_>>();
    let before = ids(&all_events(&srv, &id).await);

    // Fill the disk.
    {
        use std::io::Write;
        let mut fill = std::fs::File::create(dir.path().join("fill")).unwrap();
        while fill.write_all(&[0u8; 16 * 1024]).is_ok() {}
        // The last partial blocks too.
        while fill.write_all(&[0u8; 512]).is_ok() {}
    }
    let (code, v) = post(
        &srv,
        &format!("/api/conversations/{id}/events"),
        json!({"role": "user", "content": [{"type": "text", "text": "on a full disk"}], "run": false}),
    )
    .await;
    assert!(code >= 500, "{code} {v}");
    assert!(
        v.to_string().contains("No space left on device"),
        "{code} {v}"
    );
    assert!(
        crate::support::torn_or_temp_files(&convs).is_empty(),
        "{:?}",
        crate::support::torn_or_temp_files(&convs)
    );
    let (code, _) = get(&srv, "/health").await;
    assert_eq!(code, 200);
    assert_eq!(ids(&all_events(&srv, &id).await), before);

    // Space again: the conversation goes on.
    std::fs::remove_file(dir.path().join("fill")).unwrap();
    say(&srv, &id, "[[mock:echo]] after", true).await;
    assert_eq!(
        wait_status(&srv, &id, &["finished", "error"], 60).await,
        "finished"
    );
    let after = ids(&all_events(&srv, &id).await);
    assert_eq!(after[..before.len()], before[..]);
    drop(srv);

    let srv = TestServer::start_with(opts);
    assert_eq!(ids(&all_events(&srv, &id).await), after);
    assert!(
        !srv.log().contains("torn") && !srv.log().contains("temp file"),
        "a repair was needed:\n{}",
        srv.log()
    );
}
