//! Agent profiles and meta-profiles through the real binary: the server-managed identity, the
//! seeded `default`, references to LLM profiles kept from dangling, launch diagnostics,
//! routing activation, persistence across a restart; errors worded like the reference.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{call, ServerOptions, TestServer};

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
}
