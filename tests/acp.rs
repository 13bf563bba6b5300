//! ACP agents through the real binary, with a small ACP server written for the tests
//! (`tests/fixtures/fake_acp_server.py`, needs python3): model discovery, a conversation run
//! by the ACP server (tool calls, answer, permission prompts approved), model switching.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{call, wait_for_end, ServerOptions, TestServer};

fn fake_server() -> Vec<String> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_acp_server.py");
    vec!["python3".into(), script.to_string_lossy().into_owned()]
}

#[tokio::test]
async fn acp_models_are_discovered_or_the_failure_reported() {
    let srv = TestServer::start();
    let settings =
        json!({"agent_kind": "acp", "acp_server": "custom", "acp_command": fake_server()});
    let (code, found) = call(
        &srv,
        Method::POST,
        "/api/acp/models",
        Some(json!({"agent_settings": settings})),
    )
    .await;
    assert_eq!(code, 200, "{found}");
    assert_eq!(
        found,
        json!({"agent_name": "fake-acp", "agent_version": "0.0.1", "current_model_id": "m1",
               "available_models": [{"model_id": "m1", "name": "Model One", "description": null},
                                    {"model_id": "m2", "name": "Model Two", "description": "second"}],
               "supports_runtime_model_switch": false, "error": null})
    );
    let missing = json!({"agent_settings": {"acp_server": "custom", "acp_command": ["/nonexistent/acp-bin"]}});
    let (code, found) = call(&srv, Method::POST, "/api/acp/models", Some(missing)).await;
    assert_eq!(code, 200);
    assert_eq!(
        found["error"],
        json!({"code": "ACPSpawnError", "detail": "[Errno 2] No such file or directory: '/nonexistent/acp-bin'"})
    );
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/acp/models",
        Some(json!({"agent_settings": {"acp_server": "custom"}})),
    )
    .await;
    assert_eq!(code, 422);
    assert!(err["detail"]
        .as_str()
        .unwrap()
        .contains("acp_command must be set"));
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/acp/models",
        Some(json!({"agent_settings": {"acp_server": "nope"}})),
    )
    .await;
    assert_eq!(
        (code, err["detail"][0]["type"].clone()),
        (422, json!("literal_error"))
    );
    let scratch: Vec<_> = std::fs::read_dir(srv.root.path().join("conversations"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".acp-model-discovery")
        })
        .collect();
    assert!(scratch.is_empty(), "discovery leaves nothing behind");
}

/// How many times the fake ACP server logging to `log` was started (its `initialize`s).
fn starts(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"initialize\""))
        .count()
}

/// The discovery scratch directories under `conversations`.
fn discovery_dirs(conversations: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(conversations)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".acp-model-discovery"))
                .collect()
        })
        .unwrap_or_default()
}

/// Model discovery as the reference runs it: identical asks at once share one start of the ACP
/// server, an ask within five minutes is answered without starting it, `refresh` starts it
/// again; a client that leaves does not stop the discovery (it ends, its answer serves the next
/// ask, its scratch directory goes); a killed server's scratch directories go at start.
#[tokio::test]
async fn acp_model_discovery_is_shared_kept_and_outlives_its_client() {
    let state = tempfile::tempdir().unwrap();
    let conversations = state.path().join("conversations");
    let stale = conversations.join(".acp-model-discovery-0123abcd");
    std::fs::create_dir_all(stale.join("workspace")).unwrap();
    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    assert!(
        !stale.exists(),
        "a killed server's scratch directory is removed at start"
    );
    let ask = |log: &std::path::Path, delay: &str, refresh: bool| {
        let secret = |v: &str| json!({"kind": "StaticSecret", "value": v});
        json!({
            "agent_settings": {"agent_kind": "acp", "acp_server": "custom", "acp_command": fake_server()},
            "secrets": {"FAKE_ACP_LOG": secret(&log.to_string_lossy()),
                        "FAKE_ACP_START_DELAY": secret(delay)},
            "refresh": refresh,
        })
    };
    let models = |body: Value| call(&srv, Method::POST, "/api/acp/models", Some(body));
    let log = state.path().join("acp-shared.jsonl");
    let (a, b) = tokio::join!(models(ask(&log, "1", false)), models(ask(&log, "1", false)),);
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert_eq!(a.1["agent_name"], "fake-acp", "{a:?}");
    assert_eq!(a.1, b.1);
    assert_eq!(
        starts(&log),
        1,
        "two identical asks at once start the server once"
    );
    let (code, kept) = models(ask(&log, "1", false)).await;
    assert_eq!((code, &kept), (200, &a.1));
    assert_eq!(
        starts(&log),
        1,
        "a second ask is answered from the kept answer"
    );
    let (code, again) = models(ask(&log, "1", true)).await;
    assert_eq!((code, &again), (200, &a.1));
    assert_eq!(starts(&log), 2, "refresh asks the server again");

    // A client that gives up after 300 ms, during the server's 2 s start.
    let log = state.path().join("acp-left.jsonl");
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(300))
        .build()
        .unwrap();
    let left = impatient
        .post(format!("{}/api/acp/models", srv.url))
        .json(&ask(&log, "2", false))
        .send()
        .await;
    assert!(left.is_err(), "the client timed out: {left:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !(std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("session/new")
        && discovery_dirs(&conversations).is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the discovery went on without its client and cleaned up: log {:?}, dirs {:?}",
            std::fs::read_to_string(&log),
            discovery_dirs(&conversations)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (code, found) = models(ask(&log, "2", false)).await;
    assert_eq!((code, &found["agent_name"]), (200, &json!("fake-acp")));
    assert_eq!(
        starts(&log),
        1,
        "the answer of the abandoned discovery was kept"
    );
}

#[tokio::test]
async fn an_acp_server_runs_the_conversation() {
    let state = tempfile::tempdir().unwrap();
    let log = state.path().join("acp-log.jsonl");
    let mut opts = ServerOptions::on_state(state.path());
    opts.env
        .push(("FAKE_ACP_LOG".into(), log.to_string_lossy().into_owned()));
    let srv = TestServer::start_with(opts);
    let body = json!({
        "agent": {"kind": "ACPAgent", "acp_command": fake_server(),
                  "llm": {"model": "acp-managed", "usage_id": "acp-managed"}},
        "workspace": {"working_dir": srv.workdir().to_string_lossy(), "kind": "LocalWorkspace"},
    });
    let (code, info) = call(&srv, Method::POST, "/api/conversations", Some(body)).await;
    assert_eq!(code, 201, "{info}");
    let id = info["id"].as_str().unwrap().to_string();
    // Before the first run the model is recorded for the session to come.
    let (code, _) = call(
        &srv,
        Method::POST,
        &format!("/api/conversations/{id}/switch_acp_model"),
        Some(json!({"model": "m2"})),
    )
    .await;
    assert_eq!(code, 200);

    let msg =
        json!({"role": "user", "content": [{"type": "text", "text": "hello acp"}], "run": true});
    let (code, _) = call(
        &srv,
        Method::POST,
        &format!("/api/conversations/{id}/events"),
        Some(msg),
    )
    .await;
    assert_eq!(code, 200);
    let end = wait_for_end(&srv, &id, 60).await;
    assert_eq!(end["execution_status"], "finished", "{end}");
    let (_, page) = call(
        &srv,
        Method::GET,
        &format!("/api/conversations/{id}/events/search?limit=100"),
        None,
    )
    .await;
    let evs = page["items"].as_array().unwrap().clone();
    let prompt = evs
        .iter()
        .find(|e| e["kind"] == "SystemPromptEvent")
        .unwrap();
    assert!(prompt["system_prompt"]["text"]
        .as_str()
        .unwrap()
        .contains("powered by an ACP server"));
    let calls: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "ACPToolCallEvent")
        .collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(
        (calls[0]["status"].clone(), calls[1]["status"].clone()),
        (json!("pending"), json!("completed"))
    );
    assert_eq!(calls[1]["raw_output"], "a.txt\nb.txt");
    assert_eq!(calls[1]["tool_kind"], "execute");
    let finish = evs
        .iter()
        .rev()
        .find(|e| e["kind"] == "ActionEvent")
        .unwrap();
    assert_eq!(finish["action"]["message"], "FAKE_ACP_REPLY: hello acp");
    assert_eq!(finish["reasoning_content"], "thinking");
    let (_, info) = call(&srv, Method::GET, &format!("/api/conversations/{id}"), None).await;
    assert_eq!(info["agent"]["acp_model"], "m2");

    // What the server was sent: the saved model applied, the permission prompt approved.
    let sent: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let methods: Vec<&str> = sent.iter().filter_map(|m| m["method"].as_str()).collect();
    assert_eq!(
        methods,
        [
            "initialize",
            "session/new",
            "session/set_model",
            "session/prompt"
        ]
    );
    assert_eq!(sent[2]["params"]["modelId"], "m2");
    let approval = sent.iter().find(|m| m.get("result").is_some()).unwrap();
    assert_eq!(
        approval["result"]["outcome"],
        json!({"optionId": "allow-once", "outcome": "selected"})
    );

    // A live session switches at once; a model the server refuses is a 400 naming it.
    let (code, err) = call(
        &srv,
        Method::POST,
        &format!("/api/conversations/{id}/switch_acp_model"),
        Some(json!({"model": "bad"})),
    )
    .await;
    assert_eq!(
        (code, err["detail"].clone()),
        (
            400,
            json!("ACP server rejected set_session_model(model='bad'): Invalid params")
        )
    );
    let (code, _) = call(
        &srv,
        Method::POST,
        &format!("/api/conversations/{id}/switch_acp_model"),
        Some(json!({"model": "m1"})),
    )
    .await;
    assert_eq!(code, 200);
    let (code, err) = call(
        &srv,
        Method::POST,
        &format!("/api/conversations/{id}/switch_acp_model"),
        Some(json!({"model": " "})),
    )
    .await;
    assert_eq!(
        (code, err["detail"].clone()),
        (400, json!("model must be a non-empty string"))
    );
}

#[tokio::test]
async fn acp_agent_settings_start_an_acp_conversation() {
    let srv = TestServer::start();
    let workspace =
        json!({"working_dir": srv.workdir().to_string_lossy(), "kind": "LocalWorkspace"});
    let bad = json!({"agent_settings": {"agent_kind": "acp", "acp_server": "custom"}, "workspace": workspace});
    let (code, err) = call(&srv, Method::POST, "/api/conversations", Some(bad)).await;
    assert_eq!(
        (code, err["detail"]["code"].clone()),
        (422, json!("invalid_agent_launch"))
    );
    let body = json!({
        "agent_settings": {"agent_kind": "acp", "acp_server": "custom", "acp_command": fake_server()},
        "workspace": workspace,
        "initial_message": {"role": "user", "content": [{"type": "text", "text": "from settings"}], "run": true},
    });
    let (code, info) = call(&srv, Method::POST, "/api/conversations", Some(body)).await;
    assert_eq!(code, 201, "{info}");
    assert_eq!(info["agent"]["kind"], "ACPAgent");
    let id = info["id"].as_str().unwrap().to_string();
    assert_eq!(
        wait_for_end(&srv, &id, 60).await["execution_status"],
        "finished"
    );
    let (_, page) = call(
        &srv,
        Method::GET,
        &format!("/api/conversations/{id}/events/search?limit=100"),
        None,
    )
    .await;
    let finish = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["kind"] == "ActionEvent")
        .cloned()
        .unwrap();
    assert_eq!(finish["action"]["message"], "FAKE_ACP_REPLY: from settings");
}
