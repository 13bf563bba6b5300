//! Routes a GUI uses around the agent: saved workspaces, VS Code status, the workspace-session
//! cookie and the workspace browser, hook configurations, the LLM and tool catalogues.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::mock_llm::MockLlm;
use crate::support::{call, ServerOptions, TestServer};

/// Saved workspaces are deduplicated by path, survive a restart, and a corrupted file is
/// reported (409) and left as it is.
#[tokio::test]
async fn workspaces_persist_and_a_corrupted_file_is_not_overwritten() {
    let state = tempfile::tempdir().unwrap();
    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let body = json!({"workspaces": [
        {"id": "1", "name": "A", "path": "/a", "parent_path": "/p"},
        {"id": "2", "name": "dup", "path": "/a"},
        {"id": "3", "name": "B", "path": "/b"}]});
    let (code, list) = call(&srv, Method::POST, "/api/workspaces", Some(body)).await;
    assert_eq!(code, 200);
    assert_eq!(
        list["workspaces"],
        json!([
        {"id": "1", "name": "A", "path": "/a", "parentPath": "/p"},
        {"id": "3", "name": "B", "path": "/b"}])
    );
    let parents = json!({"parents": [{"id": "p", "name": "P", "path": "/p"}]});
    assert_eq!(
        call(&srv, Method::POST, "/api/workspaces/parents", Some(parents))
            .await
            .0,
        200
    );
    assert_eq!(
        call(&srv, Method::DELETE, "/api/workspaces?path=/b", None).await,
        (200, json!({"deleted": true}))
    );
    assert_eq!(
        call(&srv, Method::DELETE, "/api/workspaces?path=/b", None)
            .await
            .0,
        404
    );
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/workspaces",
        Some(json!({"workspaces": [{"id": ""}]})),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        err["detail"][0]["loc"],
        json!(["body", "workspaces", 0, "id"])
    );
    drop(srv);

    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let (_, list) = call(&srv, Method::GET, "/api/workspaces", None).await;
    assert_eq!(
        list,
        json!({
        "workspaces": [{"id": "1", "name": "A", "path": "/a", "parentPath": "/p"}],
        "workspaceParents": [{"id": "p", "name": "P", "path": "/p"}]})
    );
    let file = state.path().join("persistence/workspaces.json");
    std::fs::write(&file, "{broken").unwrap();
    assert_eq!(
        call(&srv, Method::GET, "/api/workspaces", None).await.0,
        409
    );
    let body = json!({"workspaces": [{"id": "9", "name": "C", "path": "/c"}]});
    assert_eq!(
        call(&srv, Method::POST, "/api/workspaces", Some(body))
            .await
            .0,
        409
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "{broken");
}

/// The cookie `POST /api/auth/workspace-session` sets opens the workspace browser (and only
/// it); the browser serves files and directory `index.html`, and refuses paths outside.
#[tokio::test]
async fn workspace_session_cookie_opens_the_workspace_browser_only() {
    let srv = TestServer::start_with(ServerOptions {
        api_key: Some("key-7c1".into()),
        ..Default::default()
    });
    let llm = MockLlm::start().await;
    let wd = srv.workdir();
    std::fs::create_dir_all(wd.join("site")).unwrap();
    std::fs::write(wd.join("site/index.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(wd.join("notes.txt"), "hello\n").unwrap();
    let create = json!({"agent": llm.agent(),
        "workspace": {"working_dir": wd.to_string_lossy(), "kind": "LocalWorkspace"}});
    let (code, conv) = call(&srv, Method::POST, "/api/conversations", Some(create)).await;
    assert_eq!(code, 201, "{conv}");
    let id = conv["id"].as_str().unwrap();

    let r = srv
        .client()
        .post(format!("{}/api/auth/workspace-session", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("oh_workspace_session_key=key-7c1; HttpOnly; Max-Age=315360000; Path=/api/conversations"), "{cookie}");
    let bare = reqwest::Client::new();
    let get = |path: String, with_cookie: bool| {
        let mut req = bare.get(format!("{}{path}", srv.url));
        if with_cookie {
            req = req.header("Cookie", "oh_workspace_session_key=key-7c1");
        }
        req.send()
    };
    let file = format!("/api/conversations/{id}/workspace/notes.txt");
    assert_eq!(get(file.clone(), false).await.unwrap().status(), 401);
    let r = get(file, true).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(r.text().await.unwrap(), "hello\n");
    let r = get(format!("/api/conversations/{id}/workspace/site"), true)
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "<h1>hi</h1>");
    let r = get(
        format!("/api/conversations/{id}/workspace/..%2F..%2Fetc%2Fpasswd"),
        true,
    )
    .await
    .unwrap();
    assert!(matches!(r.status().as_u16(), 400 | 404), "{}", r.status());
    assert_eq!(
        get(format!("/api/conversations/{id}/workspace"), true)
            .await
            .unwrap()
            .status(),
        404
    );
    // The root's index.html, with or without the trailing slash of the prefix the reference
    // hands out (`conversation_workspace_url_path`).
    std::fs::write(wd.join("index.html"), "<h1>root</h1>").unwrap();
    for root in ["workspace", "workspace/"] {
        let r = get(format!("/api/conversations/{id}/{root}"), true)
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{root}");
        assert_eq!(r.text().await.unwrap(), "<h1>root</h1>", "{root}");
    }
    // Elsewhere the cookie is not a credential.
    assert_eq!(
        get("/api/workspaces".into(), true).await.unwrap().status(),
        401
    );
    let r = srv
        .client()
        .delete(format!("{}/api/auth/workspace-session", srv.url))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

/// Hook files in the three formats are normalised; broken ones answer `null`.
#[tokio::test]
async fn hook_configurations_are_normalised() {
    let srv = TestServer::start();
    let dir = srv.workdir();
    std::fs::create_dir_all(dir.join(".openhands")).unwrap();
    let file = dir.join(".openhands/hooks.json");
    let ask = || {
        call(
            &srv,
            Method::POST,
            "/api/hooks",
            Some(json!({"project_dir": dir.to_string_lossy()})),
        )
    };
    std::fs::write(
        &file,
        r#"{"PreToolUse":[{"matcher":"terminal","hooks":[{"command":"echo hi","timeout":10}]}]}"#,
    )
    .unwrap();
    let (code, answer) = ask().await;
    assert_eq!(code, 200);
    let cfg = &answer["hook_config"];
    assert_eq!(
        cfg["pre_tool_use"][0]["hooks"][0],
        json!({"type": "command", "name": null,
        "command": "echo hi", "prompt": null, "system_prompt": null, "tools": [], "timeout": 10,
        "max_iterations": 3, "async": false})
    );
    assert_eq!(cfg["stop"], json!([]));
    std::fs::write(
        &file,
        r#"{"hooks":{"stop":[{"hooks":[{"command":"true"}]}]}}"#,
    )
    .unwrap();
    assert_eq!(ask().await.1["hook_config"]["stop"][0]["matcher"], "*");
    std::fs::write(&file, r#"{"Bogus":[]}"#).unwrap();
    assert_eq!(ask().await.1, json!({"hook_config": null}));
    std::fs::write(&file, "garbage").unwrap();
    assert_eq!(ask().await.1, json!({"hook_config": null}));
    let (code, _) = call(
        &srv,
        Method::POST,
        "/api/hooks",
        Some(json!({"project_dir": 5})),
    )
    .await;
    assert_eq!(code, 422);
}

/// Catalogues: providers, models (filtered by provider), verified models; the tools this server
/// runs, also in `/server_info`; VS Code reported as not running.
#[tokio::test]
async fn catalogues_tools_and_vscode_status() {
    let srv = TestServer::start();
    let (_, providers) = call(&srv, Method::GET, "/api/llm/providers", None).await;
    assert!(providers["providers"]
        .as_array()
        .unwrap()
        .contains(&json!("anthropic")));
    let (_, all) = call(&srv, Method::GET, "/api/llm/models", None).await;
    let (_, some) = call(
        &srv,
        Method::GET,
        "/api/llm/models?provider=anthropic",
        None,
    )
    .await;
    let (all, some) = (
        all["models"].as_array().unwrap().len(),
        some["models"].as_array().unwrap().len(),
    );
    assert!(some > 0 && some < all, "{some} of {all}");
    let (_, verified) = call(&srv, Method::GET, "/api/llm/models/verified", None).await;
    assert!(verified["models"]["openhands"]
        .as_array()
        .is_some_and(|m| !m.is_empty()));
    let (_, tools) = call(&srv, Method::GET, "/api/tools/", None).await;
    assert_eq!(tools, json!(["file_editor", "task_tracker", "terminal"]));
    let (_, catalog) = call(&srv, Method::GET, "/api/tools/catalog", None).await;
    let usable: Vec<&str> = catalog["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["usable"] == true)
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(usable, ["file_editor", "task_tracker", "terminal"]);
    let (_, info) = call(&srv, Method::GET, "/server_info", None).await;
    assert!(info["usable_tools"]
        .as_array()
        .unwrap()
        .contains(&json!("terminal")));
    assert_eq!(
        call(&srv, Method::GET, "/api/vscode/status", None).await.1,
        json!({"running": false, "enabled": true})
    );
    assert_eq!(
        call(&srv, Method::GET, "/api/vscode/url", None).await.1,
        json!({"url": null})
    );
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/llm/subscription/openai/device/start",
        None,
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        err["detail"].as_str().unwrap().contains("not supported"),
        "{err}"
    );
}

/// Skills: project files in the reference's order and shapes, user skills, an installed skill
/// that joins the user tier until disabled, and the install errors.
#[tokio::test]
async fn skills_from_the_project_the_user_and_installs() {
    let srv = TestServer::start();
    let project = srv.workdir();
    let write = |path: std::path::PathBuf, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(project.join("AGENTS.md"), "# Rules\n");
    write(
        project.join(".openhands/skills/foo.md"),
        "---\ntriggers:\n- foo\n---\nFoo body.\n",
    );
    write(
        project.join(".agents/skills/bar/SKILL.md"),
        "---\nname: bar\ndescription: Bar.\n---\nBar body.\n",
    );
    let home = srv.root_path().join("home");
    write(
        home.join(".agents/skills/mine/SKILL.md"),
        "---\nname: mine\n---\nMine.\n",
    );
    let source = srv.root_path().join("src/deep-skill");
    write(
        source.join("SKILL.md"),
        "---\nname: deep-skill\ndescription: Deep.\n---\nDeep body.\n",
    );

    let body = json!({"load_public": false, "project_dir": project.to_string_lossy()});
    let (code, answer) = call(&srv, Method::POST, "/api/skills", Some(body.clone())).await;
    assert_eq!(code, 200, "{answer}");
    let names: Vec<&str> = answer["skills"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine", "agents", "bar", "foo"]);
    assert_eq!(
        answer["sources"],
        json!({"sandbox": 0, "registered_marketplaces": 0, "sdk_base": 1, "org": 0, "project": 3})
    );
    let foo = &answer["skills"][3];
    assert_eq!(
        (
            foo["type"].clone(),
            foo["triggers"].clone(),
            foo["content"].clone()
        ),
        (json!("knowledge"), json!(["foo"]), json!("Foo body."))
    );

    let install = json!({"source": source.to_string_lossy()});
    let (code, got) = call(
        &srv,
        Method::POST,
        "/api/skills/install",
        Some(install.clone()),
    )
    .await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(
        (got["name"].clone(), got["enabled"].clone()),
        (json!("deep-skill"), json!(true))
    );
    assert_eq!(
        call(&srv, Method::POST, "/api/skills/install", Some(install))
            .await
            .0,
        409
    );
    let (_, answer) = call(&srv, Method::POST, "/api/skills", Some(body.clone())).await;
    assert!(answer["skills"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "deep-skill"));
    let (code, _) = call(
        &srv,
        Method::PATCH,
        "/api/skills/installed/deep-skill",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(code, 200);
    let (_, answer) = call(&srv, Method::POST, "/api/skills", Some(body)).await;
    assert!(!answer["skills"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "deep-skill"));
    let (_, list) = call(&srv, Method::GET, "/api/skills/installed", None).await;
    assert_eq!(list["skills"][0]["enabled"], false);
    let (code, _) = call(
        &srv,
        Method::POST,
        "/api/skills/installed/deep-skill/refresh",
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        call(
            &srv,
            Method::DELETE,
            "/api/skills/installed/deep-skill",
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(
            &srv,
            Method::DELETE,
            "/api/skills/installed/deep-skill",
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        call(&srv, Method::GET, "/api/skills/installed/Bad_Name", None)
            .await
            .0,
        422
    );
    let missing = json!({"source": srv.root_path().join("nope").to_string_lossy()});
    assert_eq!(
        call(&srv, Method::POST, "/api/skills/install", Some(missing))
            .await
            .0,
        400
    );
    let (_, catalog) = call(&srv, Method::GET, "/api/skills/catalog", None).await;
    assert_eq!(catalog["skills"][0]["origin"], "user");
}

/// The OpenAI-compatible gateway: profiles as models, one agent turn per completion (plain
/// and streamed), a conversation reused through its header, bearer-token auth, Responses.
#[tokio::test]
async fn openai_gateway_runs_agent_turns() {
    let srv = TestServer::start_with(ServerOptions {
        api_key: Some("gw-key".into()),
        ..Default::default()
    });
    let llm = MockLlm::start().await;
    let profile = json!({"llm": {"model": "openai/mock", "base_url": llm.base_url, "api_key": "k", "num_retries": 0}});
    assert_eq!(
        call(&srv, Method::POST, "/api/profiles/mock", Some(profile))
            .await
            .0,
        201
    );
    let bare = reqwest::Client::new();
    let r = bare
        .get(format!("{}/v1/models", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = bare
        .get(format!("{}/v1/models", srv.url))
        .bearer_auth("gw-key")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"object": "list", "data": [
        {"id": "openhands_mock", "created": 0, "object": "model", "owned_by": "openhands"}]})
    );

    let ask = json!({"model": "openhands_mock", "messages": [
        {"role": "system", "content": "Be terse."}, {"role": "user", "content": "[[mock:text]] hi"}]});
    let r = srv
        .client()
        .post(format!("{}/v1/chat/completions", srv.url))
        .json(&ask)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let conv_id = r.headers()["x-openhands-serverconversation-id"]
        .to_str()
        .unwrap()
        .to_string();
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        "MOCK_TEXT_REPLY: hello"
    );
    let first_total = answer["usage"]["total_tokens"].as_u64().unwrap();
    assert!(first_total > 0, "{answer}");
    let (_, conv) = call(
        &srv,
        Method::GET,
        &format!("/api/conversations/{conv_id}"),
        None,
    )
    .await;
    assert_eq!(
        conv["agent"]["agent_context"]["system_message_suffix"],
        "Be terse."
    );

    let mut again = ask.clone();
    again["stream"] = json!(true);
    again["stream_options"] = json!({"include_usage": true});
    let r = srv
        .client()
        .post(format!("{}/v1/chat/completions", srv.url))
        .header("X-OpenHands-ServerConversation-ID", &conv_id)
        .json(&again)
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    let chunks: Vec<&str> = text.split("\n\n").filter(|c| !c.is_empty()).collect();
    assert_eq!(chunks.len(), 5, "{text}");
    assert_eq!(chunks[4], "data: [DONE]");
    let usage: Value = serde_json::from_str(chunks[3].trim_start_matches("data: ")).unwrap();
    assert!(
        usage["usage"]["total_tokens"].as_u64().unwrap() > first_total,
        "usage is cumulative"
    );

    let (code, err) = call(
        &srv,
        Method::POST,
        "/v1/chat/completions",
        Some(json!({"model": "openhands_nope", "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert_eq!(
        (code, err["detail"].clone()),
        (404, json!("Profile 'nope' not found"))
    );
    let (code, _) = call(
        &srv,
        Method::POST,
        "/v1/chat/completions",
        Some(json!({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    assert_eq!(code, 404);
    let (code, resp) = call(&srv, Method::POST, "/v1/responses",
        Some(json!({"model": "openhands_mock", "input": "[[mock:text]] hi", "instructions": "Short."}))).await;
    assert_eq!(code, 200, "{resp}");
    assert_eq!(
        resp["output"][0]["content"][0]["text"],
        "MOCK_TEXT_REPLY: hello"
    );
    assert_eq!(resp["instructions"], "Short.");
    let (code, _) = call(
        &srv,
        Method::POST,
        "/v1/responses",
        Some(json!({"model": "openhands_mock", "input": "x", "stream": true})),
    )
    .await;
    assert_eq!(code, 400);
}
