//! Settings, secrets and LLM profiles through the real binary: persistence across restarts,
//! secrets sealed at rest and kept out of logs, a wrong `OH_SECRET_KEY` refused with a clear
//! error, validation answers like the reference.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{call, wait_for_end, ServerOptions, TestServer};

async fn plaintext_settings(srv: &TestServer) -> Value {
    let r = srv
        .client()
        .get(format!("{}/api/settings", srv.url))
        .header("X-Expose-Secrets", "plaintext")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn with_key(state: &std::path::Path, key: &str) -> ServerOptions {
    let mut opts = ServerOptions::on_state(state);
    opts.env.push(("OH_SECRET_KEY".into(), key.into()));
    opts
}

/// Set, list (names only), read, restart, still there; sealed on disk and never in the log;
/// a server with another key cannot read them and refuses to overwrite them.
#[tokio::test]
async fn secrets_and_settings_survive_restarts_and_a_wrong_key_is_refused() {
    let state = tempfile::tempdir().unwrap();
    let srv = TestServer::start_with(with_key(state.path(), "key-a"));
    let body = json!({"name": "DEPLOY_TOKEN", "value": "val-3f9c", "description": "deploys"});
    let (code, item) = call(&srv, Method::PUT, "/api/settings/secrets", Some(body)).await;
    assert_eq!(
        (code, item),
        (
            200,
            json!({"name": "DEPLOY_TOKEN", "description": "deploys"})
        )
    );
    let diff = json!({"agent_settings_diff": {"llm": {"model": "openai/m", "api_key": "sk-llm-77e"}},
                      "conversation_settings_diff": {"max_iterations": 42}});
    let (code, answer) = call(&srv, Method::PATCH, "/api/settings", Some(diff)).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["agent_settings"]["llm"]["api_key"], "**********");
    let first_log = srv.log();
    drop(srv);

    let srv = TestServer::start_with(with_key(state.path(), "key-a"));
    let (_, list) = call(&srv, Method::GET, "/api/settings/secrets", None).await;
    assert_eq!(
        list,
        json!({"secrets": [{"name": "DEPLOY_TOKEN", "description": "deploys"}]})
    );
    let (code, value) = call(
        &srv,
        Method::GET,
        "/api/settings/secrets/DEPLOY_TOKEN",
        None,
    )
    .await;
    assert_eq!((code, value), (200, json!("val-3f9c")));
    let settings = plaintext_settings(&srv).await;
    assert_eq!(settings["agent_settings"]["llm"]["api_key"], "sk-llm-77e");
    assert_eq!(settings["conversation_settings"]["max_iterations"], 42);
    assert_eq!(settings["llm_api_key_is_set"], true);
    let persistence = state.path().join("persistence");
    let on_disk = std::fs::read_to_string(persistence.join("secrets.json")).unwrap()
        + &std::fs::read_to_string(persistence.join("settings.json")).unwrap();
    for value in ["val-3f9c", "sk-llm-77e"] {
        assert!(!on_disk.contains(value), "{value} stored in clear");
        assert!(
            !first_log.contains(value) && !srv.log().contains(value),
            "{value} logged"
        );
    }
    drop(srv);

    let srv = TestServer::start_with(with_key(state.path(), "key-b"));
    let (code, _) = call(
        &srv,
        Method::GET,
        "/api/settings/secrets/DEPLOY_TOKEN",
        None,
    )
    .await;
    assert_eq!(code, 404);
    let body = json!({"name": "OTHER", "value": "x"});
    let (code, err) = call(&srv, Method::PUT, "/api/settings/secrets", Some(body)).await;
    assert_eq!(code, 500, "{err}");
    assert!(
        err["detail"].as_str().unwrap().contains("OH_SECRET_KEY"),
        "{err}"
    );
    let diff = json!({"misc_settings_diff": {"a": 1}});
    let (code, err) = call(&srv, Method::PATCH, "/api/settings", Some(diff)).await;
    assert_eq!(code, 409, "{err}");
    assert!(
        err["detail"].as_str().unwrap().contains("different key"),
        "{err}"
    );
    let settings = plaintext_settings(&srv).await;
    assert!(settings["agent_settings"]["llm"]["api_key"].is_null());
    assert_eq!(settings["agent_settings"]["llm"]["model"], "openai/m");
    let after = std::fs::read_to_string(persistence.join("secrets.json")).unwrap()
        + &std::fs::read_to_string(persistence.join("settings.json")).unwrap();
    assert_eq!(
        on_disk, after,
        "a server with the wrong key rewrote the files"
    );
    drop(srv);

    // The right key still reads everything.
    let srv = TestServer::start_with(with_key(state.path(), "key-a"));
    let (code, value) = call(
        &srv,
        Method::GET,
        "/api/settings/secrets/DEPLOY_TOKEN",
        None,
    )
    .await;
    assert_eq!((code, value), (200, json!("val-3f9c")));
}

/// Bad input gets the reference's answers and changes nothing.
#[tokio::test]
async fn bad_settings_secrets_and_profiles_are_refused() {
    let srv = TestServer::start();
    let before = call(&srv, Method::GET, "/api/settings", None).await.1;
    for (body, code) in [
        (json!({}), 400),
        (
            json!({"agent_settings_diff": {"llm": {"temperature": "hot"}}}),
            422,
        ),
        (
            json!({"conversation_settings_diff": {"security_analyzer": "maybe"}}),
            422,
        ),
        (json!({"agent_settings_diff": "x"}), 422),
        (json!({"active_profile": "missing"}), 404),
    ] {
        let (got, answer) = call(&srv, Method::PATCH, "/api/settings", Some(body.clone())).await;
        assert_eq!(got, code, "{body} → {answer}");
    }
    let mut after = call(&srv, Method::GET, "/api/settings", None).await.1;
    after["agent_settings"]["agent_context"]["current_datetime"] =
        before["agent_settings"]["agent_context"]["current_datetime"].clone();
    assert_eq!(before, after);
    for (body, code) in [
        (json!({"name": "1bad", "value": "x"}), 422),
        (json!({"name": "EMPTY", "value": "  "}), 422),
        (json!({"name": "MASKED", "value": "**********"}), 422),
        (json!({"name": "NOVALUE"}), 422),
    ] {
        let (got, _) = call(
            &srv,
            Method::PUT,
            "/api/settings/secrets",
            Some(body.clone()),
        )
        .await;
        assert_eq!(got, code, "{body}");
    }
    assert_eq!(
        call(&srv, Method::GET, "/api/settings/secrets", None)
            .await
            .1,
        json!({"secrets": []})
    );
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/profiles/p1",
        Some(json!({"llm": {}})),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        err["detail"][0]["msg"],
        "Value error, model must be specified in LLM"
    );
    let (code, _) = call(
        &srv,
        Method::POST,
        "/api/profiles/.x",
        Some(json!({"llm": {"model": "m"}})),
    )
    .await;
    assert_eq!(code, 422);
    let (code, _) = call(&srv, Method::GET, "/api/settings", Some(json!(null))).await;
    assert_eq!(code, 200);
    let r = srv
        .client()
        .get(format!("{}/api/settings", srv.url))
        .header("X-Expose-Secrets", "encrypted")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "encrypted secrets without a key");
}

/// Profiles: save, list, activate (the settings take its LLM), rename (the active pointer
/// follows), delete (the pointer clears); MCP servers: create, conflict, patch, delete.
#[tokio::test]
async fn profiles_and_mcp_servers() {
    let srv = TestServer::start_with(ServerOptions {
        env: vec![("OH_SECRET_KEY".into(), "k".into())],
        ..Default::default()
    });
    let llm =
        json!({"llm": {"model": "openai/fast", "api_key": "sk-fast", "base_url": "http://x"}});
    let (code, _) = call(&srv, Method::POST, "/api/profiles/fast", Some(llm)).await;
    assert_eq!(code, 201);
    let (_, detail) = call(&srv, Method::GET, "/api/profiles/fast", None).await;
    assert!(
        detail["config"]["api_key"].is_null() && detail["api_key_set"] == true,
        "{detail}"
    );
    let (code, answer) = call(&srv, Method::POST, "/api/profiles/fast/activate", None).await;
    assert_eq!((code, answer["llm_applied"].clone()), (200, json!(true)));
    let settings = plaintext_settings(&srv).await;
    assert_eq!(settings["active_profile"], "fast");
    assert_eq!(settings["agent_settings"]["llm"]["api_key"], "sk-fast");
    let (code, _) = call(
        &srv,
        Method::POST,
        "/api/profiles/fast/rename",
        Some(json!({"new_name": "quick"})),
    )
    .await;
    assert_eq!(code, 200);
    let (_, list) = call(&srv, Method::GET, "/api/profiles", None).await;
    assert_eq!(list["active_profile"], "quick");
    assert_eq!(list["profiles"][0]["name"], "quick");
    let (code, _) = call(&srv, Method::DELETE, "/api/profiles/quick", None).await;
    assert_eq!(code, 200);
    let (_, list) = call(&srv, Method::GET, "/api/profiles", None).await;
    assert_eq!(list, json!({"profiles": [], "active_profile": null}));

    let server =
        json!({"url": "http://127.0.0.1:9/mcp", "transport": "http", "headers": {"X-Key": "h-1"}});
    let (code, answer) = call(
        &srv,
        Method::POST,
        "/api/settings/mcp/svc",
        Some(server.clone()),
    )
    .await;
    assert_eq!(code, 201, "{answer}");
    assert_eq!(
        answer["agent_settings"]["mcp_config"]["svc"]["headers"]["X-Key"],
        "**********"
    );
    let (code, _) = call(&srv, Method::POST, "/api/settings/mcp/svc", Some(server)).await;
    assert_eq!(code, 409);
    let patch = json!({"headers": {"X-Key": null, "X-B": "2"}});
    let (code, _) = call(&srv, Method::PATCH, "/api/settings/mcp/svc", Some(patch)).await;
    assert_eq!(code, 200);
    let settings = plaintext_settings(&srv).await;
    assert_eq!(
        settings["agent_settings"]["mcp_config"]["svc"]["headers"],
        json!({"X-B": "2"})
    );
    let (code, _) = call(&srv, Method::DELETE, "/api/settings/mcp/svc", None).await;
    assert_eq!(code, 200);
    let (code, _) = call(&srv, Method::DELETE, "/api/settings/mcp/svc", None).await;
    assert_eq!(code, 404);
}

/// `switch_profile` and `switch_llm`: the next run uses the new model, one state update with
/// the new agent (key masked) is recorded, the conversation shows it; bad requests are refused.
#[tokio::test]
async fn a_conversation_switches_its_llm_to_a_profile_and_back() {
    let srv = TestServer::start_with(ServerOptions {
        env: vec![("OH_SECRET_KEY".into(), "k".into())],
        ..Default::default()
    });
    let llm = crate::support::mock_llm::MockLlm::start().await;
    let wd = srv.workdir();
    let create = json!({"agent": llm.agent(),
        "workspace": {"working_dir": wd.to_string_lossy(), "kind": "LocalWorkspace"}});
    let (code, conv) = call(&srv, Method::POST, "/api/conversations", Some(create)).await;
    assert_eq!(code, 201, "{conv}");
    let id = conv["id"].as_str().unwrap().to_string();
    let profile = json!({"llm": {"model": "openai/mock-fast", "base_url": llm.base_url,
                                 "api_key": "sk-fast-4d2", "num_retries": 0}});
    assert_eq!(
        call(&srv, Method::POST, "/api/profiles/fast", Some(profile))
            .await
            .0,
        201
    );

    let switch_path = format!("/api/conversations/{id}/switch_profile");
    let switch = |body: Value| call(&srv, Method::POST, &switch_path, Some(body));
    assert_eq!(
        switch(json!({"profile_name": "fast"})).await,
        (200, json!({"success": true}))
    );
    assert_eq!(switch(json!({"profile_name": "nope"})).await.0, 404);
    assert_eq!(switch(json!({"profile_name": "../etc"})).await.0, 400);
    assert_eq!(switch(json!({})).await.0, 422);
    let unknown = "/api/conversations/00000000-0000-0000-0000-000000000000/switch_profile";
    assert_eq!(
        call(
            &srv,
            Method::POST,
            unknown,
            Some(json!({"profile_name": "fast"}))
        )
        .await
        .0,
        404
    );

    let message = json!({"role": "user", "content": [{"type": "text", "text": "[[mock:text]] go"}], "run": true});
    let (code, _) = call(
        &srv,
        Method::POST,
        &format!("/api/conversations/{id}/events"),
        Some(message),
    )
    .await;
    assert_eq!(code, 200);
    let c = wait_for_end(&srv, &id, 30).await;
    assert_eq!(c["execution_status"], "finished", "{c}");
    assert_eq!(c["agent"]["llm"]["model"], "openai/mock-fast");
    assert_eq!(c["agent"]["llm"]["usage_id"], "profile:fast");
    let models: Vec<Value> = llm.requests().iter().map(|r| r["model"].clone()).collect();
    assert_eq!(models.last(), Some(&json!("mock-fast")), "{models:?}");
    let (_, page) = call(
        &srv,
        Method::GET,
        &format!("/api/conversations/{id}/events/search?limit=100"),
        None,
    )
    .await;
    let updates: Vec<&Value> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "ConversationStateUpdateEvent" && e["key"] == "agent")
        .collect();
    assert_eq!(updates.len(), 1, "{page}");
    assert_eq!(updates[0]["value"]["llm"]["api_key"], "**********");
    assert!(!srv.log().contains("sk-fast-4d2"));

    let back =
        json!({"llm": {"model": "openai/mock-back", "base_url": llm.base_url, "api_key": "k2"}});
    let path = format!("/api/conversations/{id}/switch_llm");
    assert_eq!(
        call(&srv, Method::POST, &path, Some(back)).await,
        (200, json!({"success": true}))
    );
    let (_, c) = call(&srv, Method::GET, &format!("/api/conversations/{id}"), None).await;
    assert_eq!(c["agent"]["llm"]["model"], "openai/mock-back");
    let (code, err) = call(&srv, Method::POST, &path, Some(json!({"llm": {}}))).await;
    assert_eq!(code, 422);
    assert_eq!(err["detail"][0]["loc"], json!(["body", "llm"]));
    assert_eq!(
        call(&srv, Method::POST, &path, Some(json!({"model": "x"})))
            .await
            .0,
        422
    );
}

/// MCP: a stdio server's tools join the agent's tools, a call reaches the server (with the
/// configured environment) and its answer is the observation; `POST /api/mcp/test` lists the
/// tools and runs one.
#[tokio::test]
async fn mcp_server_tools_work_in_the_agent_loop_and_the_test_route() {
    let srv = TestServer::start();
    let llm = crate::support::mock_llm::MockLlm::start().await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_echo_server.py");
    // A token in the arguments finds this test's server among processes.
    let token = format!("mcp-token-{}", std::process::id());
    let server = json!({"command": "python3", "args": [script.to_string_lossy(), token],
                        "env": {"MCP_GREETING": "from-env"}});

    let test =
        json!({"server": server, "tool_call": {"name": "echo_text", "arguments": {"text": "t1"}}});
    let (code, answer) = call(&srv, Method::POST, "/api/mcp/test", Some(test)).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["tools"], json!(["echo_text", "fail"]));
    assert_eq!(answer["tool_result"]["text"], "ECHO: t1 from-env");
    let bad = json!({"server": {"command": "/nonexistent/mcp-server"}});
    let (code, answer) = call(&srv, Method::POST, "/api/mcp/test", Some(bad)).await;
    assert_eq!(
        (code, answer["ok"].clone(), answer["error_kind"].clone()),
        (200, json!(false), json!("connection"))
    );
    // OAuth sign-in needs a server whose auth is oauth2 (400 otherwise, as the reference);
    // this server does not offer it and says so in an `MCPOAuthStartResponse`.
    let plain = json!({"server": {"type": "http", "url": "http://127.0.0.1:1/mcp"}});
    let (code, answer) = call(&srv, Method::POST, "/api/mcp/oauth/start", Some(plain)).await;
    assert_eq!(
        (code, &answer["detail"]),
        (
            400,
            &json!("MCP OAuth start requires auth.strategy='oauth2'")
        )
    );
    let oauth = json!({"server": {"type": "http", "url": "http://127.0.0.1:1/mcp",
                                  "auth": {"strategy": "oauth2"}}});
    let (code, answer) = call(&srv, Method::POST, "/api/mcp/oauth/start", Some(oauth)).await;
    assert_eq!((code, &answer["ok"]), (200, &json!(false)), "{answer}");
    assert!(answer["error"].as_str().is_some(), "{answer}");

    let mut agent = llm.agent();
    agent["mcp_config"] = json!({"echo": server});
    let wd = srv.workdir();
    let create = json!({"agent": agent,
        "workspace": {"working_dir": wd.to_string_lossy(), "kind": "LocalWorkspace"},
        "initial_message": {"role": "user", "content": [{"type": "text", "text": "[[mock:mcp text=hello-mcp]]"}], "run": true}});
    let (code, conv) = call(&srv, Method::POST, "/api/conversations", Some(create)).await;
    assert_eq!(code, 201, "{conv}");
    let id = conv["id"].as_str().unwrap().to_string();
    let c = wait_for_end(&srv, &id, 60).await;
    assert_eq!(c["execution_status"], "finished", "{c}");
    let (_, page) = call(
        &srv,
        Method::GET,
        &format!("/api/conversations/{id}/events/search?limit=100"),
        None,
    )
    .await;
    let items = page["items"].as_array().unwrap();
    let action = items
        .iter()
        .find(|e| e["kind"] == "ActionEvent" && e["tool_name"] == "echo_text")
        .expect("an MCP action");
    assert_eq!(
        action["action"],
        json!({"data": {"text": "hello-mcp"}, "kind": "MCPToolAction"})
    );
    let obs = items
        .iter()
        .find(|e| e["kind"] == "ObservationEvent" && e["tool_name"] == "echo_text")
        .expect("an MCP observation");
    assert_eq!(obs["observation"]["kind"], "MCPToolObservation");
    assert_eq!(
        obs["observation"]["content"][1]["text"],
        "ECHO: hello-mcp from-env"
    );
    let prompt = items
        .iter()
        .find(|e| e["kind"] == "SystemPromptEvent")
        .unwrap();
    assert!(
        prompt["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["title"] == "echo_text"),
        "{prompt}"
    );
    // The LLM got the tool and its result.
    let sent: Vec<Value> = llm
        .requests()
        .into_iter()
        .filter(|r| r["tools"].is_array())
        .collect();
    assert!(sent[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["function"]["name"] == "echo_text"));
    assert!(sent[1].to_string().contains("ECHO: hello-mcp from-env"));
    // Deleting the conversation stops its MCP server.
    let running = || {
        std::process::Command::new("pgrep")
            .args(["-f", &token])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false)
    };
    assert!(
        running(),
        "the MCP server should run while the conversation lives"
    );
    let (code, _) = call(
        &srv,
        Method::DELETE,
        &format!("/api/conversations/{id}"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the MCP server outlived its conversation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Secrets listed for an agent profile are the ones its `secret_refs` name (all without refs;
/// 404 for an unknown id); a secret body's extra fields are ignored; a settings PATCH refuses
/// profile pointers that are no profile name (422) and stores an empty LLM key as none.
#[tokio::test]
async fn secrets_by_agent_profile_and_settings_pointers_and_empty_keys() {
    let srv = TestServer::start();
    for name in ["A", "B"] {
        let body = json!({"name": name, "value": "v", "extra": 1});
        let (code, answer) = call(&srv, Method::PUT, "/api/settings/secrets", Some(body)).await;
        assert_eq!(code, 200, "an extra field is ignored: {answer}");
    }
    let names = |list: &Value| -> Vec<String> {
        list["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    let (code, list) = call(&srv, Method::GET, "/api/agent-profiles", None).await;
    assert_eq!(code, 200, "{list}");
    let default_id = list["profiles"][0]["id"].as_str().unwrap().to_string();
    let body =
        json!({"llm_profile_ref": list["profiles"][0]["llm_profile_ref"], "secret_refs": ["B"]});
    let (code, saved) = call(&srv, Method::POST, "/api/agent-profiles/scoped", Some(body)).await;
    assert_eq!(code, 201, "{saved}");
    let (_, scoped) = call(&srv, Method::GET, "/api/agent-profiles/scoped", None).await;
    let scoped_id = scoped["profile"]["id"].as_str().unwrap().to_string();
    let list_for = |id: String| {
        let srv = &srv;
        async move {
            call(
                srv,
                Method::GET,
                &format!("/api/settings/secrets?agent_profile_id={id}"),
                None,
            )
            .await
        }
    };
    let (code, list) = list_for(scoped_id).await;
    assert_eq!((code, names(&list)), (200, vec!["B".to_string()]));
    let (code, list) = list_for(default_id).await;
    assert_eq!(
        (code, names(&list)),
        (200, vec!["A".to_string(), "B".to_string()])
    );
    let (code, err) = list_for("00000000-0000-0000-0000-000000000009".into()).await;
    assert_eq!(
        (code, &err["detail"]),
        (404, &json!("Agent profile not found"))
    );

    for key in ["active_profile", "active_meta_profile"] {
        for bad in ["", "bad name!"] {
            let (code, err) = call(
                &srv,
                Method::PATCH,
                "/api/settings",
                Some(json!({key: bad})),
            )
            .await;
            assert_eq!(code, 422, "{key}={bad:?}: {err}");
            assert_eq!(err["detail"][0]["type"], "string_pattern_mismatch", "{err}");
            assert_eq!(err["detail"][0]["loc"], json!(["body", key]), "{err}");
        }
    }
    // Numeric fields keep the reference's bounds; the settings stay as they were.
    for diff in [
        json!({"conversation_settings_diff": {"max_iterations": 0}}),
        json!({"agent_settings_diff": {"llm": {"num_retries": -1}}}),
        json!({"agent_settings_diff": {"llm": {"timeout": -5}}}),
        json!({"agent_settings_diff": {"llm": {"temperature": -1}}}),
        json!({"agent_settings_diff": {"llm": {"top_p": 7}}}),
        json!({"agent_settings_diff": {"condenser": {"max_size": 1}}}),
    ] {
        let (code, err) = call(&srv, Method::PATCH, "/api/settings", Some(diff.clone())).await;
        assert_eq!(code, 422, "{diff}: {err}");
    }
    let (_, now) = call(&srv, Method::GET, "/api/settings", None).await;
    assert_eq!(now["conversation_settings"]["max_iterations"], 500, "{now}");
    assert_eq!(now["agent_settings"]["condenser"]["max_size"], 240, "{now}");
    let fine = json!({"agent_settings_diff": {"llm": {"top_p": 1, "temperature": 0}, "condenser": {"max_size": 20}},
                      "conversation_settings_diff": {"max_iterations": 1}});
    let (code, answer) = call(&srv, Method::PATCH, "/api/settings", Some(fine)).await;
    assert_eq!(code, 200, "values at their bounds pass: {answer}");
    let set = json!({"agent_settings_diff": {"llm": {"api_key": "sk-abc123"}}});
    let (code, _) = call(&srv, Method::PATCH, "/api/settings", Some(set)).await;
    assert_eq!(code, 200);
    for empty in ["", "   "] {
        let clear = json!({"agent_settings_diff": {"llm": {"api_key": empty}}});
        let (code, answer) = call(&srv, Method::PATCH, "/api/settings", Some(clear)).await;
        assert_eq!(code, 200, "{answer}");
        assert_eq!(answer["llm_api_key_is_set"], false, "{answer}");
        assert_eq!(
            answer["agent_settings"]["llm"]["api_key"],
            Value::Null,
            "{answer}"
        );
        let stored = plaintext_settings(&srv).await;
        assert_eq!(stored["agent_settings"]["llm"]["api_key"], Value::Null);
    }
}
