//! Agent profiles and meta-profiles through the real binary: the server-managed identity, the
//! seeded `default`, references to LLM profiles kept from dangling, launch diagnostics,
//! routing activation, persistence across a restart; errors worded like the reference.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::mock_llm::MockLlm;
use crate::support::{call, wait_for_end, ServerOptions, TestServer};

async fn agent_profile(srv: &TestServer, name: &str) -> Value {
    let (code, body) = call(
        srv,
        Method::GET,
        &format!("/api/agent-profiles/{name}"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    body["profile"].clone()
}

#[tokio::test]
async fn agent_profiles_keep_their_identity_and_their_references() {
    let state = tempfile::tempdir().unwrap();
    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));

    // No profile yet: `default` is seeded from the settings and made active.
    let (code, list) = call(&srv, Method::GET, "/api/agent-profiles", None).await;
    assert_eq!(code, 200);
    assert_eq!(list["profiles"][0]["name"], "default");
    assert_eq!(list["profiles"][0]["llm_profile_ref"], "default");
    assert_eq!(list["active_agent_profile_id"], list["profiles"][0]["id"]);

    // Saving twice keeps the id the server minted (not the client's) and bumps the revision.
    let body = json!({"llm_profile_ref": "fast", "id": "00000000-0000-0000-0000-000000000001"});
    let (code, saved) = call(&srv, Method::POST, "/api/agent-profiles/coder", Some(body)).await;
    assert_eq!(
        (code, saved["message"].clone()),
        (201, json!("Agent profile 'coder' saved"))
    );
    let first = agent_profile(&srv, "coder").await;
    assert_ne!(first["id"], "00000000-0000-0000-0000-000000000001");
    assert_eq!(first["condenser"]["condenser_kind"], "llm_summarizing");
    let body = json!({"llm_profile_ref": "fast", "persona": "Be brief."});
    call(&srv, Method::POST, "/api/agent-profiles/coder", Some(body)).await;
    let second = agent_profile(&srv, "coder").await;
    assert_eq!(
        (second["id"].clone(), second["revision"].clone()),
        (first["id"].clone(), json!(1))
    );
    assert_eq!(second["persona"], "Be brief.");

    // Invalid payloads: pydantic's words, located under the variant.
    let bad = json!({"llm_profile_ref": "", "bogus": 1});
    let (code, err) = call(&srv, Method::POST, "/api/agent-profiles/x", Some(bad)).await;
    assert_eq!(code, 422);
    assert_eq!(
        err["detail"],
        json!([
            {"loc": ["openhands", "llm_profile_ref"], "type": "string_too_short", "msg": "String should have at least 1 character"},
            {"loc": ["openhands", "bogus"], "type": "extra_forbidden", "msg": "Extra inputs are not permitted"}
        ])
    );
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/agent-profiles/x",
        Some(json!({"agent_kind": "odd"})),
    )
    .await;
    assert_eq!(
        (code, err["detail"][0]["type"].clone()),
        (422, json!("union_tag_invalid"))
    );
    let (code, _) = call(&srv, Method::GET, "/api/agent-profiles/x", None).await;
    assert_eq!(code, 404, "a refused profile is not stored");

    // The LLM profile it references: diagnostics report it missing, then resolved.
    let (_, diag) = call(
        &srv,
        Method::POST,
        "/api/agent-profiles/coder/materialize",
        Some(json!({})),
    )
    .await;
    assert_eq!(diag["valid"], false);
    assert_eq!(diag["errors"], json!(["LLM profile 'fast' not found"]));
    let llm = json!({"llm": {"model": "openai/gpt-4o", "api_key": "sk-secret-1"}});
    call(&srv, Method::POST, "/api/profiles/fast", Some(llm)).await;
    let (_, diag) = call(
        &srv,
        Method::POST,
        "/api/agent-profiles/coder/materialize",
        None,
    )
    .await;
    assert_eq!(
        (diag["valid"].clone(), diag["llm_api_key_set"].clone()),
        (json!(true), json!(true))
    );
    assert_eq!(diag["resolved_settings"]["llm"]["api_key"], "**********");
    assert_eq!(diag["resolved_settings"]["persona"], "Be brief.");
    assert!(!diag.to_string().contains("sk-secret-1"));

    // A referenced LLM profile cannot be deleted; renaming it carries the reference along.
    let (code, err) = call(&srv, Method::DELETE, "/api/profiles/fast", None).await;
    assert_eq!(
        (code, err["detail"].clone()),
        (
            409,
            json!("LLM profile is referenced by 1 agent profile(s): coder")
        )
    );
    let rename = json!({"new_name": "quick"});
    let (code, _) = call(
        &srv,
        Method::POST,
        "/api/profiles/fast/rename",
        Some(rename),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        agent_profile(&srv, "coder").await["llm_profile_ref"],
        "quick"
    );

    // Rename keeps the id; activation is by id; the active pointer survives a restart.
    let rename = json!({"new_name": "builder"});
    let (code, _) = call(
        &srv,
        Method::POST,
        "/api/agent-profiles/coder/rename",
        Some(rename),
    )
    .await;
    assert_eq!(code, 200);
    let id = first["id"].as_str().unwrap().to_string();
    let (code, act) = call(
        &srv,
        Method::POST,
        &format!("/api/agent-profiles/{id}/activate"),
        None,
    )
    .await;
    assert_eq!(
        (code, act["agent_settings_applied"].clone()),
        (200, json!(false))
    );
    let (code, _) = call(
        &srv,
        Method::POST,
        "/api/agent-profiles/builder/activate",
        None,
    )
    .await;
    assert_eq!(code, 404, "activation takes an id, not a name");
    drop(srv);

    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let (_, list) = call(&srv, Method::GET, "/api/agent-profiles", None).await;
    assert_eq!(list["active_agent_profile_id"], json!(id));
    assert_eq!(agent_profile(&srv, "builder").await["id"], json!(id));
    // Deleting the active profile moves the pointer back to `default`.
    let (code, _) = call(&srv, Method::DELETE, "/api/agent-profiles/builder", None).await;
    assert_eq!(code, 200);
    let (_, list) = call(&srv, Method::GET, "/api/agent-profiles", None).await;
    let names: Vec<&str> = list["profiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default"]);
    assert_eq!(list["active_agent_profile_id"], list["profiles"][0]["id"]);
    let (code, _) = call(&srv, Method::DELETE, "/api/profiles/quick", None).await;
    assert_eq!(code, 200, "no longer referenced");
}

#[tokio::test]
async fn meta_profiles_route_only_when_they_can() {
    let state = tempfile::tempdir().unwrap();
    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/meta-profiles/m",
        Some(json!({"classifier_model": "fast"})),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        err["detail"][0]["msg"],
        "Value error, A meta-profile needs either classes or a prompt_template to route."
    );
    let direct = json!({"classifier_model": "fast", "prompt_template": "pick one"});
    let (code, err) = call(&srv, Method::POST, "/api/meta-profiles/m", Some(direct)).await;
    assert_eq!(code, 422);
    assert!(err["detail"][0]["msg"]
        .as_str()
        .unwrap()
        .contains("{{ instance_text }}"));

    let meta = json!({"classifier_model": "fast", "classes": [{"description": "ui work", "model": "vision"}]});
    let (code, _) = call(&srv, Method::POST, "/api/meta-profiles/router", Some(meta)).await;
    assert_eq!(code, 201);
    let (_, list) = call(&srv, Method::GET, "/api/meta-profiles", None).await;
    assert_eq!(
        list,
        json!({"meta_profiles": [{"name": "router", "classifier_model": "fast", "num_classes": 1}], "active_meta_profile": null})
    );

    let (code, act) = call(
        &srv,
        Method::POST,
        "/api/meta-profiles/router/activate",
        None,
    )
    .await;
    assert_eq!((code, act["applied"].clone()), (200, json!(true)));
    let (_, settings) = call(&srv, Method::GET, "/api/settings", None).await;
    assert_eq!(settings["active_meta_profile"], "router");
    assert_eq!(
        settings["agent_settings"]["enable_classify_and_switch_llm_tool"],
        true
    );
    assert_eq!(
        settings["agent_settings"]["meta_profile"]["classes"][0]["model"],
        "vision"
    );
    let (code, _) = call(
        &srv,
        Method::PATCH,
        "/api/settings",
        Some(json!({"active_meta_profile": "nope"})),
    )
    .await;
    assert_eq!(code, 404);

    let (code, _) = call(&srv, Method::DELETE, "/api/meta-profiles/router", None).await;
    assert_eq!(code, 200);
    let (_, settings) = call(&srv, Method::GET, "/api/settings", None).await;
    assert_eq!(settings["active_meta_profile"], Value::Null);
    assert_eq!(
        settings["agent_settings"]["enable_classify_and_switch_llm_tool"],
        false
    );
    let (code, _) = call(&srv, Method::GET, "/api/meta-profiles/router", None).await;
    assert_eq!(code, 404);

    // ACP agent settings cannot route: activation records nothing.
    let diff = json!({"agent_settings_diff": {"agent_kind": "acp", "acp_server": "codex"}});
    let (code, settings) = call(&srv, Method::PATCH, "/api/settings", Some(diff)).await;
    assert_eq!(code, 200, "{settings}");
    assert_eq!(settings["agent_settings"]["acp_server"], "codex");
    assert!(
        settings["agent_settings"].get("llm").is_none(),
        "no LLM in ACP settings"
    );
    let meta =
        json!({"classifier_model": "fast", "classes": [{"description": "ui", "model": "vision"}]});
    call(&srv, Method::POST, "/api/meta-profiles/again", Some(meta)).await;
    let (code, act) = call(
        &srv,
        Method::POST,
        "/api/meta-profiles/again/activate",
        None,
    )
    .await;
    assert_eq!((code, act["applied"].clone()), (200, json!(false)));
    let (_, settings) = call(&srv, Method::GET, "/api/settings", None).await;
    assert_eq!(settings["agent_settings"]["agent_kind"], "acp");
    assert!(settings["agent_settings"].get("llm").is_none());
}

#[tokio::test]
async fn provider_connections_share_a_key_and_refuse_to_dangle() {
    let state = tempfile::tempdir().unwrap();
    let mut opts = ServerOptions::on_state(state.path());
    opts.env.push(("OH_SECRET_KEY".into(), "conn-key".into()));
    let srv = TestServer::start_with(opts);
    let base = "/api/llm/provider-connections";
    let bad = json!({"display_name": "", "api_key": "  "});
    let (code, err) = call(&srv, Method::POST, base, Some(bad)).await;
    assert_eq!(code, 422);
    let kinds: Vec<&str> = err["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["string_too_short", "value_error"]);

    let body = json!({"display_name": "Team key", "api_key": "sk-shared-91", "base_url": "http://127.0.0.1:9/v1"});
    let (code, created) = call(&srv, Method::POST, base, Some(body)).await;
    assert_eq!((code, created["api_key_set"].clone()), (201, json!(true)));
    let id = created["id"].as_str().unwrap().to_string();
    let file = state
        .path()
        .join("persistence/provider-connections/provider_connections.json");
    let raw = std::fs::read_to_string(file).unwrap();
    assert!(
        raw.contains(&id) && !raw.contains("sk-shared-91"),
        "the key is sealed at rest"
    );

    // A linked profile keeps no key of its own; its key is the connection's.
    let llm = json!({"llm": {"model": "openai/gpt-4o", "provider_connection_id": id, "api_key": "sk-inline"}});
    call(&srv, Method::POST, "/api/profiles/linked", Some(llm)).await;
    let (_, list) = call(&srv, Method::GET, "/api/profiles", None).await;
    assert_eq!(list["profiles"][0]["api_key_set"], true);
    assert_eq!(list["profiles"][0]["provider_connection_broken"], false);
    let (_, detail) = call(&srv, Method::GET, "/api/profiles/linked", None).await;
    assert_eq!(
        (
            detail["api_key_set"].clone(),
            detail["config"]["base_url"].clone()
        ),
        (json!(true), Value::Null)
    );

    // Activation resolves the connection into the settings; the key rotates for every user.
    call(&srv, Method::POST, "/api/profiles/linked/activate", None).await;
    let (_, s) = call(&srv, Method::GET, "/api/settings", None).await;
    assert_eq!(
        s["agent_settings"]["llm"]["base_url"],
        "http://127.0.0.1:9/v1"
    );
    let (code, err) = call(&srv, Method::DELETE, &format!("{base}/{id}"), None).await;
    assert_eq!(code, 409);
    assert_eq!(
        err["detail"],
        "Provider connection cannot be deleted while it is referenced by LLM profile(s): linked and referenced by the active agent settings. Update those references before deleting it."
    );
    let (code, _) = call(
        &srv,
        Method::PATCH,
        &format!("{base}/{id}"),
        Some(json!({"api_key": null})),
    )
    .await;
    assert_eq!(code, 422, "a key cannot be cleared");
    let (code, updated) = call(
        &srv,
        Method::PATCH,
        &format!("{base}/{id}"),
        Some(json!({"display_name": "Renamed"})),
    )
    .await;
    assert_eq!(
        (code, updated["display_name"].clone()),
        (200, json!("Renamed"))
    );
    let (code, _) = call(
        &srv,
        Method::PATCH,
        &format!("{base}/nope"),
        Some(json!({"display_name": "x"})),
    )
    .await;
    assert_eq!(code, 404);

    // Unlinked, it can go.
    call(&srv, Method::DELETE, "/api/profiles/linked", None).await;
    let diff = json!({"agent_settings_diff": {"llm": {"model": "openai/gpt-4o", "provider_connection_id": null}}});
    call(&srv, Method::PATCH, "/api/settings", Some(diff)).await;
    let (code, gone) = call(&srv, Method::DELETE, &format!("{base}/{id}"), None).await;
    assert_eq!((code, gone["api_key_set"].clone()), (200, json!(false)));
    let (_, list) = call(&srv, Method::GET, base, None).await;
    assert_eq!(list, json!([]));
}

/// A conversation started from an agent profile runs with the LLM profile it references, the
/// profile's prompt suffix and only the secrets it allows; `agent_settings` work too.
#[tokio::test]
async fn conversations_start_from_a_profile_or_from_agent_settings() {
    let state = tempfile::tempdir().unwrap();
    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let llm = MockLlm::start().await;
    let workspace =
        json!({"working_dir": srv.workdir().to_string_lossy(), "kind": "LocalWorkspace"});

    let (code, err) = call(&srv, Method::POST, "/api/conversations",
        Some(json!({"agent_profile_id": "00000000-0000-0000-0000-00000000000a", "workspace": workspace}))).await;
    assert_eq!(
        (code, err["detail"].clone()),
        (
            404,
            json!("Agent profile with id '00000000-0000-0000-0000-00000000000a' not found")
        )
    );

    let profile = json!({"llm_profile_ref": "mock", "system_message_suffix": "Always answer in haiku.",
                         "secret_refs": ["ALLOWED"], "mcp_server_refs": ["nowhere"]});
    call(
        &srv,
        Method::POST,
        "/api/agent-profiles/poet",
        Some(profile),
    )
    .await;
    let id = agent_profile(&srv, "poet").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let start = json!({"agent_profile_id": id, "workspace": workspace,
                       "secrets": {"ALLOWED": "a-1", "FORBIDDEN": "f-2"},
                       "initial_message": {"role": "user", "content": [{"type": "text", "text": "[[mock:text]] tok-prof"}], "run": true}});
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/conversations",
        Some(start.clone()),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(err["detail"]["code"], "unresolved_profile_references");
    assert_eq!(err["detail"]["dangling_llm_profile_ref"], "mock");
    assert_eq!(
        err["detail"]["dangling_mcp_server_refs"],
        json!(["nowhere"])
    );

    let profile = json!({"llm_profile_ref": "mock", "system_message_suffix": "Always answer in haiku.",
                         "secret_refs": ["ALLOWED"]});
    call(
        &srv,
        Method::POST,
        "/api/agent-profiles/poet",
        Some(profile),
    )
    .await;
    call(
        &srv,
        Method::POST,
        "/api/profiles/mock",
        Some(json!({"llm": llm.agent()["llm"]})),
    )
    .await;
    let (code, info) = call(&srv, Method::POST, "/api/conversations", Some(start)).await;
    assert_eq!(code, 201, "{info}");
    assert_eq!(
        info["launched_agent_profile"]["agent_profile_id"],
        json!(id)
    );
    assert_eq!(info["launched_agent_profile"]["revision"], 1);
    let conv = info["id"].as_str().unwrap().to_string();
    let end = wait_for_end(&srv, &conv, 60).await;
    assert_eq!(end["execution_status"], "finished", "{end}");
    let sent = llm.requests_with("tok-prof");
    assert!(!sent.is_empty(), "the profile's LLM was called");
    assert!(
        sent.iter().any(|r| r["tools"].is_array()
            && r["messages"]
                .to_string()
                .contains("Always answer in haiku.")),
        "the profile's suffix reaches the agent's prompt"
    );
    let (_, again) = call(
        &srv,
        Method::GET,
        &format!("/api/conversations/{conv}"),
        None,
    )
    .await;
    assert_eq!(
        again["launched_agent_profile"]["agent_profile_id"],
        json!(id)
    );
    let names: Vec<String> = again["secret_registry"]["secret_sources"]
        .as_object()
        .map(|s| s.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(names, ["ALLOWED"], "only the secrets the profile allows");

    let clash = json!({"agent_profile_id": id, "agent": llm.agent(), "workspace": workspace});
    let (code, err) = call(&srv, Method::POST, "/api/conversations", Some(clash)).await;
    assert_eq!(
        (code, err["detail"].clone()),
        (
            422,
            json!("`agent_profile_id` is mutually exclusive with `agent`")
        )
    );

    // Plain agent settings.
    let start = json!({"agent_settings": {"llm": llm.agent()["llm"]}, "workspace": workspace,
                       "initial_message": {"role": "user", "content": [{"type": "text", "text": "[[mock:text]] tok-set"}], "run": true}});
    let (code, info) = call(&srv, Method::POST, "/api/conversations", Some(start)).await;
    assert_eq!(code, 201, "{info}");
    assert_eq!(info["launched_agent_profile"], Value::Null);
    let conv = info["id"].as_str().unwrap().to_string();
    assert_eq!(
        wait_for_end(&srv, &conv, 60).await["execution_status"],
        "finished"
    );
    assert!(!llm.requests_with("tok-set").is_empty());
    let bad = json!({"agent_settings": {"enable_sub_agents": true}, "workspace": workspace});
    let (code, err) = call(&srv, Method::POST, "/api/conversations", Some(bad)).await;
    assert_eq!(
        (code, err["detail"].clone()),
        (422, json!("Removed agent settings: enable_sub_agents"))
    );
}

/// The pre-flight check of a draft LLM answers a timeout the SDK refuses (negative) with a
/// verdict, as the reference's `ge=0` does, instead of dropping the connection on a panic; and a
/// huge one still checks the draft.
#[tokio::test]
async fn a_draft_llm_with_a_negative_or_huge_timeout_gets_a_verdict() {
    let srv = TestServer::start();
    let llm = MockLlm::start().await;
    let draft = |timeout: Value| {
        json!({"llm": {"model": "openai/mock-chat", "base_url": llm.base_url,
            "api_key": "sk-test", "timeout": timeout}})
    };
    let (code, body) = call(
        &srv,
        Method::POST,
        "/api/profiles/draft/validate",
        Some(draft(json!(-5))),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["valid"], false, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("greater than or equal to 0"), "{body}");
    let (code, body) = call(
        &srv,
        Method::POST,
        "/api/profiles/draft/validate",
        Some(draft(json!(1e20))),
    )
    .await;
    assert_eq!((code, body["valid"].clone()), (200, json!(true)), "{body}");
    let (code, _) = call(&srv, Method::GET, "/health", None).await;
    assert_eq!(code, 200);
}
