//! Plugins through the real binary: installing local and git plugins, listing, enabling,
//! refreshing, uninstalling (the reference's on-disk layout, kept across a restart), the
//! locally available plugins, the strict fetch, the public marketplace catalog from a cached
//! clone, and plugins reaching a conversation's agent (at creation and by `load_plugin`).
//! Answers are the reference's, status and body.

use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::mock_llm::MockLlm;
use crate::support::{call, wait_for_end, ServerOptions, TestServer};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A Claude Code layout plugin: manifest, a skill, a command, a hook and an MCP server.
fn demo_plugin(dir: &Path, name: &str) -> PathBuf {
    let dir = dir.join(name);
    write(
        &dir.join(".plugin/plugin.json"),
        &format!(
            r#"{{"name":"{name}","version":"0.2.0","description":"Demo plugin","author":"Jane Doe <jane@example.com>","entry_command":"hello"}}"#
        ),
    );
    write(
        &dir.join("skills/greet/SKILL.md"),
        "---\nname: greet\ndescription: Greets the user warmly.\n---\nAlways greet the user by name (plugin-skill-token).\n",
    );
    write(
        &dir.join("commands/hello.md"),
        "---\ndescription: Say hello\nargument-hint: <name>\nallowed-tools: [terminal]\n---\nSay hello to $ARGUMENTS.\n",
    );
    write(&dir.join("README.md"), "# Demo\n");
    write(
        &dir.join("hooks/hooks.json"),
        r#"{"hooks":{"UserPromptSubmit":[{"matcher":"*","hooks":[{"type":"command","command":"echo hook-ran"}]}]}}"#,
    );
    write(
        &dir.join(".mcp.json"),
        r#"{"mcpServers":{"demo-mcp":{"command":"echo","args":["${SKILL_ROOT}","${FOO:-bar}"]}}}"#,
    );
    dir
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "git {args:?}");
}

/// Makes `dir` a git repository with one commit on `main`.
fn git_repo(dir: &Path) {
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "init"]);
}

fn head(dir: &Path) -> String {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn installed_plugins_are_managed_and_kept_across_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let demo = demo_plugin(src.path(), "demo-plugin");
    let installed = state.path().join("persistence/plugins/installed");
    let mut srv = TestServer::start_with(ServerOptions::on_state(state.path()));

    let (code, list) = call(&srv, Method::GET, "/api/plugins/installed", None).await;
    assert_eq!((code, list), (200, json!({"plugins": []})));

    let body = json!({"source": demo.to_string_lossy()});
    let (code, got) = call(
        &srv,
        Method::POST,
        "/api/plugins/install",
        Some(body.clone()),
    )
    .await;
    assert_eq!(code, 200, "{got}");
    let keys: Vec<&String> = got.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "name",
            "version",
            "description",
            "enabled",
            "source",
            "resolved_ref",
            "repo_path",
            "installed_at",
            "install_path",
            "skills",
            "files"
        ]
    );
    assert_eq!(got["name"], "demo-plugin");
    assert_eq!(got["version"], "0.2.0");
    assert_eq!(got["enabled"], true);
    assert_eq!(got["resolved_ref"], Value::Null);
    assert_eq!(
        got["install_path"],
        json!(installed.join("demo-plugin").to_string_lossy())
    );
    assert_eq!(
        got["skills"],
        json!([{"name": "greet", "description": "Greets the user warmly."},
               {"name": "demo-plugin:hello", "description": "Say hello"}])
    );
    assert_eq!(
        got["files"],
        json!([
            ".mcp.json",
            ".plugin/plugin.json",
            "README.md",
            "commands/hello.md",
            "hooks/hooks.json",
            "skills/greet/SKILL.md"
        ])
    );
    assert!(installed
        .join("demo-plugin/skills/greet/SKILL.md")
        .is_file());
    let meta: Value =
        serde_json::from_slice(&std::fs::read(installed.join(".installed.json")).unwrap()).unwrap();
    let entry = &meta["extensions"]["demo-plugin"];
    let keys: Vec<&String> = entry.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "name",
            "version",
            "description",
            "enabled",
            "source",
            "requested_ref",
            "resolved_ref",
            "repo_path",
            "installed_at",
            "install_path"
        ]
    );
    assert!(entry["installed_at"].as_str().unwrap().ends_with("+00:00"));

    // Installing again needs force; force keeps the state the plugin had.
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/plugins/install",
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (code, err),
        (
            409,
            json!({"detail": "Plugin already installed. Use force=true to overwrite."})
        )
    );

    // Bad input, and sources that cannot be fetched: the reference's answers.
    let cases = [
        (
            json!({"source": ""}),
            422,
            json!({"detail": [{"type": "string_too_short", "loc": ["body", "source"], "msg": "String should have at least 1 character", "input": "", "ctx": {"min_length": 1}}]}),
        ),
        (
            json!({}),
            422,
            json!({"detail": [{"type": "missing", "loc": ["body", "source"], "msg": "Field required", "input": {}}]}),
        ),
        (
            json!({"source": 123}),
            422,
            json!({"detail": [{"type": "string_type", "loc": ["body", "source"], "msg": "Input should be a valid string", "input": 123}]}),
        ),
        (
            json!({"source": "notapath"}),
            400,
            json!({"detail": "Failed to fetch plugin source. Check that the source is valid."}),
        ),
        (
            json!({"source": "github:OpenHands"}),
            400,
            json!({"detail": "Failed to fetch plugin source. Check that the source is valid."}),
        ),
        (
            json!({"source": demo.to_string_lossy(), "repo_path": "../x"}),
            400,
            json!({"detail": "Failed to fetch plugin source. Check that the source is valid."}),
        ),
        (
            json!({"source": src.path().join("missing").to_string_lossy()}),
            400,
            json!({"detail": "Failed to fetch plugin source. Check that the source is valid."}),
        ),
    ];
    for (req, status, answer) in cases {
        let (code, got) = call(
            &srv,
            Method::POST,
            "/api/plugins/install",
            Some(req.clone()),
        )
        .await;
        assert_eq!((code, got), (status, answer), "{req}");
    }
    let bad = src.path().join("bad");
    write(&bad.join(".plugin/plugin.json"), r#"{"name":"Bad_Name"}"#);
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/plugins/install",
        Some(json!({"source": bad.to_string_lossy()})),
    )
    .await;
    assert_eq!(
        (code, err),
        (
            422,
            json!({"detail": "Invalid plugin. Ensure it has a valid kebab-case name."})
        )
    );
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/plugins/install",
        Some(json!({"source": demo.join("README.md").to_string_lossy()})),
    )
    .await;
    assert_eq!(code, 500);
    assert_eq!(
        err["exception"],
        json!(format!(
            "Plugin directory not found: {}",
            demo.join("README.md").display()
        ))
    );
    assert_eq!(err["error_id"].as_str().unwrap().len(), 32);

    // A whole git repository installs under its repository name, pinned to its commit.
    let repo = src.path().join("gitrepo");
    demo_plugin(&repo, "other-plugin");
    git_repo(&repo);
    let url = format!("file://{}", repo.display());
    let (code, got) = call(
        &srv,
        Method::POST,
        "/api/plugins/install",
        Some(json!({"source": url, "repo_path": "other-plugin"})),
    )
    .await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["name"], "other-plugin");
    assert_eq!(got["resolved_ref"], json!(head(&repo)));
    assert_eq!(got["repo_path"], "other-plugin");
    assert!(
        std::fs::read_dir(state.path().join("persistence/cache/extensions"))
            .unwrap()
            .any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("gitrepo-"))
    );

    // Enable/disable (idempotent, lax booleans), get, errors.
    let path = "/api/plugins/installed/demo-plugin";
    let (code, got) = call(&srv, Method::PATCH, path, Some(json!({"enabled": false}))).await;
    assert_eq!(
        (code, got),
        (200, json!({"name": "demo-plugin", "enabled": false}))
    );
    let (code, got) = call(&srv, Method::PATCH, path, Some(json!({"enabled": "no"}))).await;
    assert_eq!(
        (code, got),
        (200, json!({"name": "demo-plugin", "enabled": false}))
    );
    let (code, err) = call(&srv, Method::PATCH, path, Some(json!({"enabled": "maybe"}))).await;
    assert_eq!(
        (code, err["detail"][0]["type"].clone()),
        (422, json!("bool_parsing"))
    );
    let (code, err) = call(
        &srv,
        Method::PATCH,
        "/api/plugins/installed/unknown-plugin",
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(
        (code, err),
        (
            404,
            json!({"detail": "Plugin 'unknown-plugin' is not installed"})
        )
    );
    let (code, err) = call(&srv, Method::GET, "/api/plugins/installed/Bad_Name", None).await;
    assert_eq!(code, 422);
    assert_eq!(
        err["detail"][0],
        json!({"type": "string_pattern_mismatch", "loc": ["path", "plugin_name"],
               "msg": "String should match pattern '^[a-z0-9]+(?:-[a-z0-9]+)*$'",
               "input": "Bad_Name", "ctx": {"pattern": "^[a-z0-9]+(?:-[a-z0-9]+)*$"}})
    );
    let (code, got) = call(&srv, Method::GET, path, None).await;
    assert_eq!((code, got["enabled"].clone()), (200, json!(false)));

    // A directory copied into the store is adopted by the listing (not by a plain get).
    let copied = installed.join("manual-plug");
    copy_dir(&installed.join("demo-plugin"), &copied);
    std::fs::remove_file(copied.join(".plugin/plugin.json")).unwrap();
    let (code, _) = call(
        &srv,
        Method::GET,
        "/api/plugins/installed/manual-plug",
        None,
    )
    .await;
    assert_eq!(code, 404);
    let (_, list) = call(&srv, Method::GET, "/api/plugins/installed", None).await;
    assert_eq!(
        names(&list["plugins"]),
        ["demo-plugin", "other-plugin", "manual-plug"]
    );
    assert_eq!(list["plugins"][2]["source"], "local");

    // Refresh reinstalls from the source and keeps the enabled state; a source that is gone
    // keeps the installed copy.
    write(&demo.join("NEW.md"), "new\n");
    let (code, got) = call(
        &srv,
        Method::POST,
        "/api/plugins/installed/demo-plugin/refresh",
        None,
    )
    .await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["message"], "Plugin 'demo-plugin' updated");
    assert_eq!(got["plugin"]["enabled"], false);
    assert!(installed.join("demo-plugin/NEW.md").is_file());
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/plugins/installed/manual-plug/refresh",
        None,
    )
    .await;
    assert_eq!(
        (code, err),
        (
            400,
            json!({"detail": "Failed to fetch the source of plugin 'manual-plug'. The installed copy was kept."})
        )
    );

    // Everything survives a restart.
    drop(srv);
    srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let (_, list) = call(&srv, Method::GET, "/api/plugins/installed", None).await;
    assert_eq!(
        names(&list["plugins"]),
        ["demo-plugin", "other-plugin", "manual-plug"]
    );
    assert_eq!(list["plugins"][0]["enabled"], false);

    // Disabled plugins are not available; enabled ones are.
    let (_, avail) = call(
        &srv,
        Method::POST,
        "/api/plugins",
        Some(json!({"load_project": false})),
    )
    .await;
    assert_eq!(names(&avail["plugins"]), ["other-plugin", "manual-plug"]);

    let (code, got) = call(&srv, Method::DELETE, path, None).await;
    assert_eq!(
        (code, got),
        (200, json!({"message": "Plugin 'demo-plugin' uninstalled"}))
    );
    assert!(!installed.join("demo-plugin").exists());
    let (code, got) = call(&srv, Method::DELETE, path, None).await;
    assert_eq!(
        (code, got),
        (
            404,
            json!({"detail": "Plugin 'demo-plugin' is not installed"})
        )
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn available_plugins_strict_fetch_and_the_marketplace() {
    let state = tempfile::tempdir().unwrap();
    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let persistence = state.path().join("persistence");

    // User plugins (~/.agents/plugins) and project plugins (.openhands/plugins).
    demo_plugin(&srv.root_path().join("home/.agents/plugins"), "user-plug");
    let project = srv.workdir();
    let ap = project.join(".openhands/plugins/projplug");
    write(
        &ap.join("plugin.json"),
        r#"{"$schema":"https://agent-plugins.org/schemas/1.0.0/plugin.schema.json","name":"ap-plugin","version":"1.1.0","description":"Agent plugins format","extensions":{"dev.openhands":{"entry_command":"go"}}}"#,
    );
    write(
        &ap.join("skills/alpha/SKILL.md"),
        "---\ndescription: Alpha skill\n---\nAlpha body\n",
    );
    write(
        &ap.join("dev.openhands/commands/go.md"),
        "---\ndescription: Go cmd\n---\nGo!\n",
    );
    let (code, got) = call(
        &srv,
        Method::POST,
        "/api/plugins",
        Some(json!({"load_user": false, "project_dir": project.to_string_lossy()})),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        got,
        json!({"plugins": [{"name": "ap-plugin", "version": "1.1.0", "description": "Agent plugins format",
            "path": ap.canonicalize().unwrap().to_string_lossy(),
            "skills": [{"name": "alpha", "description": "Alpha skill"}, {"name": "ap-plugin:go", "description": "Go cmd"}],
            "files": ["dev.openhands/commands/go.md", "plugin.json", "skills/alpha/SKILL.md"]}]})
    );
    let (_, got) = call(
        &srv,
        Method::POST,
        "/api/plugins",
        Some(json!({"project_dir": project.to_string_lossy()})),
    )
    .await;
    assert_eq!(names(&got["plugins"]), ["user-plug", "ap-plugin"]);
    let (_, got) = call(
        &srv,
        Method::POST,
        "/api/plugins",
        Some(json!({"load_user": false, "load_project": false})),
    )
    .await;
    assert_eq!(got, json!({"plugins": []}));
    let (code, err) = call(
        &srv,
        Method::POST,
        "/api/plugins",
        Some(json!({"load_user": "nope"})),
    )
    .await;
    assert_eq!(
        (code, err["detail"][0]["type"].clone()),
        (422, json!("bool_parsing"))
    );

    // Strict fetch of a local plugin: the raw manifest, skills and commands.
    let (code, got) = call(
        &srv,
        Method::POST,
        "/api/plugins/fetch",
        Some(json!({"source": ap.to_string_lossy()})),
    )
    .await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(
        got,
        json!({"path": ap.canonicalize().unwrap().to_string_lossy(), "resolved_ref": null,
               "source": ap.to_string_lossy(), "repo_path": null,
               "manifest": {"$schema": "https://agent-plugins.org/schemas/1.0.0/plugin.schema.json",
                            "name": "ap-plugin", "version": "1.1.0", "description": "Agent plugins format",
                            "extensions": {"dev.openhands": {"entry_command": "go"}}},
               "skills": ["alpha"], "commands": ["go"]})
    );
    // A git source is pinned to the commit fetched, under the plugin cache.
    let repo = srv.workdir().join("gitrepo");
    demo_plugin(&repo, "demo-plugin");
    git_repo(&repo);
    let sha = head(&repo);
    let url = format!("file://{}", repo.display());
    let (code, got) = call(
        &srv,
        Method::POST,
        "/api/plugins/fetch",
        Some(json!({"source": url, "repo_path": "demo-plugin", "ref": "main"})),
    )
    .await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["resolved_ref"], json!(sha));
    let pinned = persistence.join(format!(
        "cache/plugins/gitrepo-{}/resolved-refs/{sha}",
        hash16(&url)
    ));
    assert_eq!(
        got["path"],
        json!(pinned.join("demo-plugin").to_string_lossy())
    );
    assert!(!pinned.join(".git").exists());
    assert_eq!(
        (got["skills"].clone(), got["commands"].clone()),
        (json!(["greet"]), json!(["hello"]))
    );

    let nomanifest = srv.workdir();
    write(&nomanifest.join("skills/beta/SKILL.md"), "beta\n");
    let cases = [
        (
            json!({"source": nomanifest.to_string_lossy()}),
            422,
            json!({"detail": {"code": "invalid_plugin", "message": "Invalid plugin: plugin.json not found."}}),
        ),
        (
            json!({"source": "notapath"}),
            422,
            json!({"detail": {"code": "invalid_source", "message": "Invalid plugin source."}}),
        ),
        (
            json!({"source": "https://${TOK}@github.com/o/r.git"}),
            422,
            json!({"detail": {"code": "missing_secret", "message": "Missing secret: TOK"}}),
        ),
        (
            json!({"source": url, "ref": "no-such-branch"}),
            422,
            json!({"detail": {"code": "ref_not_found", "message": "fatal: couldn't find remote ref no-such-branch"}}),
        ),
        (
            json!({"source": ap.to_string_lossy(), "repo_path": "../x"}),
            422,
            json!({"detail": {"code": "repo_path_not_found", "message": "repo_path not found: ../x"}}),
        ),
        (
            json!({"source": "http://127.0.0.1:1/x/repo.git"}),
            502,
            json!({"detail": "Internal Server Error", "exception": "502: {'code': 'source_unavailable', 'message': \"fatal: unable to access 'http://127.0.0.1:1/x/repo.git/': Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't connect to server\"}"}),
        ),
        (
            json!({"source": "x", "timeout": 0}),
            422,
            json!({"detail": [{"type": "greater_than_equal", "loc": ["body", "timeout"], "msg": "Input should be greater than or equal to 1", "input": 0, "ctx": {"ge": 1}}]}),
        ),
        (
            json!({"source": "x", "secrets": {"TOK": "abc"}}),
            422,
            json!({"detail": [{"type": "model_attributes_type", "loc": ["body", "secrets", "TOK"], "msg": "Input should be a valid dictionary or object to extract fields from", "input": "abc"}]}),
        ),
    ];
    for (req, status, answer) in cases {
        let (code, got) = call(&srv, Method::POST, "/api/plugins/fetch", Some(req.clone())).await;
        if status == 502 {
            // curl's wording of the refused connection varies with its version.
            assert_eq!(code, 502, "{req}: {got}");
            assert!(
                got["exception"]
                    .as_str()
                    .unwrap()
                    .starts_with("502: {'code': 'source_unavailable', 'message': "),
                "{got}"
            );
            continue;
        }
        assert_eq!((code, got), (status, answer), "{req}");
    }
    let secret = json!({"source": "${BASE}", "repo_path": "demo-plugin",
                        "secrets": {"BASE": {"kind": "StaticSecret", "value": repo.to_string_lossy()}}});
    let (code, got) = call(&srv, Method::POST, "/api/plugins/fetch", Some(secret)).await;
    assert_eq!((code, got["source"].clone()), (200, json!("${BASE}")));

    // The marketplace catalog: the cached clone of the public repository is used as it is
    // when it cannot be updated; only ./plugins/ entries; installed is marked.
    let clone = persistence.join("cache/skills/public-skills");
    demo_plugin(&clone.join("plugins"), "demo-plugin");
    write(
        &clone.join(".plugin/marketplace.json"),
        r#"{"name":"m","owner":{"name":"T"},"plugins":[
            {"name":"demo-plugin","source":"./plugins/demo-plugin","description":"Demo from market"},
            {"name":"remote-one","source":{"source":"github","repo":"someone/repo","path":"plugins/remote-one","ref":"v1"},"description":"remote"},
            {"name":"skill-like","source":"./skills/gamma"}]}"#,
    );
    git_repo(&clone);
    git(
        &clone,
        &[
            "remote",
            "add",
            "origin",
            &srv.workdir().join("nowhere").to_string_lossy(),
        ],
    );
    call(
        &srv,
        Method::POST,
        "/api/plugins/install",
        Some(json!({"source": clone.join("plugins/demo-plugin").to_string_lossy()})),
    )
    .await;
    let (code, got) = call(&srv, Method::GET, "/api/plugins/marketplace", None).await;
    assert_eq!(code, 200, "{got}");
    let at = clone.canonicalize().unwrap().join("plugins/demo-plugin");
    assert_eq!(
        got["plugins"],
        json!([{"name": "demo-plugin", "description": "Demo from market", "source": at.to_string_lossy(),
                "ref": null, "repo_path": null, "installed": true, "path": at.to_string_lossy(),
                "skills": [{"name": "greet", "description": "Greets the user warmly."}, {"name": "demo-plugin:hello", "description": "Say hello"}],
                "files": [".mcp.json", ".plugin/plugin.json", "README.md", "commands/hello.md", "hooks/hooks.json", "skills/greet/SKILL.md"]},
               {"name": "remote-one", "description": "remote", "source": "github:someone/repo", "ref": "v1",
                "repo_path": "plugins/remote-one", "installed": false, "path": null, "skills": null, "files": null}])
    );
    // The catalog is cached; installed is always fresh.
    call(
        &srv,
        Method::DELETE,
        "/api/plugins/installed/demo-plugin",
        None,
    )
    .await;
    let (_, got) = call(&srv, Method::GET, "/api/plugins/marketplace", None).await;
    assert_eq!(got["plugins"][0]["installed"], false);
}

/// `sha256(text)[..16]`, as the cache directories are named.
fn hash16(text: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn plugins_reach_the_conversation_agent() {
    let state = tempfile::tempdir().unwrap();
    let srv = TestServer::start_with(ServerOptions::on_state(state.path()));
    let llm = MockLlm::start().await;
    let src = tempfile::tempdir().unwrap();
    let workspace =
        json!({"working_dir": srv.workdir().to_string_lossy(), "kind": "LocalWorkspace"});

    // A marketplace holding one plugin, registered by the agent.
    let market = src.path().join("market");
    let market_plugin = demo_plugin(&market.join("plugins"), "market-plugin");
    write(
        &market_plugin.join("skills/greet/SKILL.md"),
        "---\nname: market-skill\ndescription: From the market.\n---\nmarket-skill-token\n",
    );
    write(
        &market.join(".plugin/marketplace.json"),
        r#"{"name":"test-market","owner":{"name":"T"},"plugins":[
            {"name":"market-plugin","source":"./plugins/market-plugin"},
            {"name":"remote-one","source":{"source":"url","url":"http://127.0.0.1:1/remote.git"}}]}"#,
    );
    let attached = demo_plugin(src.path(), "attached-plugin");

    // `plugins` are checked when the conversation is created.
    let mut agent = llm.agent();
    agent["agent_context"] = json!({"registered_marketplaces": [
        {"name": "test-market", "source": market.to_string_lossy()},
        {"name": "broken-market", "source": "http://127.0.0.1:1/nothing.git"}]});
    let bad = json!({"agent": agent, "workspace": workspace,
                     "plugins": [{"source": "github:a/b", "repo_path": "/abs"}]});
    let (code, err) = call(&srv, Method::POST, "/api/conversations", Some(bad)).await;
    assert_eq!(
        (code, err),
        (
            422,
            json!({"detail": [{"type": "value_error", "loc": ["body", "plugins", 0, "repo_path"],
            "msg": "Value error, repo_path must be relative, not absolute", "input": "/abs",
            "ctx": {"error": "repo_path must be relative, not absolute"}}]})
        )
    );
    let start = json!({"agent": agent, "workspace": workspace,
                       "plugins": [{"source": attached.to_string_lossy()}]});
    let (code, info) = call(&srv, Method::POST, "/api/conversations", Some(start)).await;
    assert_eq!(code, 201, "{info}");
    let id = info["id"].as_str().unwrap().to_string();
    let meta: Value = serde_json::from_slice(
        &std::fs::read(
            state
                .path()
                .join("conversations")
                .join(id.replace('-', ""))
                .join("meta.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(
        meta["plugins"],
        json!([{"source": attached.to_string_lossy(), "ref": null, "repo_path": null}])
    );

    // load_plugin: the reference's errors, then the plugin joins the agent.
    let load = format!("/api/conversations/{id}/load_plugin");
    let cases = [
        (
            json!({}),
            422,
            json!({"detail": [{"type": "missing", "loc": ["body", "plugin_ref"], "msg": "Field required", "input": null}]}),
        ),
        (
            json!({"plugin_ref": 5}),
            422,
            json!({"detail": [{"type": "string_type", "loc": ["body", "plugin_ref"], "msg": "Input should be a valid string", "input": 5}]}),
        ),
        (
            json!({"plugin_ref": "nonexistent"}),
            404,
            json!({"detail": "Plugin 'nonexistent' not found in any registered marketplace"}),
        ),
        (
            json!({"plugin_ref": "x@nomarket"}),
            404,
            json!({"detail": "Marketplace 'nomarket' is not registered"}),
        ),
        (
            json!({"plugin_ref": "nonexistent@test-market"}),
            404,
            json!({"detail": "Plugin 'nonexistent' not found in marketplace 'test-market'"}),
        ),
        (
            json!({"plugin_ref": "@test-market"}),
            400,
            json!({"detail": "Plugin reference must use 'plugin-name@marketplace-name'"}),
        ),
        (
            json!({"plugin_ref": ""}),
            400,
            json!({"detail": "Plugin reference must not be empty"}),
        ),
        (
            json!({"plugin_ref": "remote-one@test-market"}),
            400,
            json!({"detail": "Failed to fetch plugin from http://127.0.0.1:1/remote.git"}),
        ),
        (
            json!({"plugin_ref": "market-plugin@broken-market"}),
            400,
            json!({"detail": "Failed to fetch plugin from http://127.0.0.1:1/nothing.git"}),
        ),
        (
            json!({"plugin_ref": "market-plugin"}),
            200,
            json!({"success": true}),
        ),
    ];
    for (req, status, answer) in cases {
        let (code, got) = call(&srv, Method::POST, &load, Some(req.clone())).await;
        assert_eq!((code, got), (status, answer), "{req}");
    }
    let (code, _) = call(
        &srv,
        Method::POST,
        "/api/conversations/00000000-0000-0000-0000-000000000000/load_plugin",
        Some(json!({"plugin_ref": "x"})),
    )
    .await;
    assert_eq!(code, 404);

    let (_, conv) = call(
        &srv,
        Method::GET,
        &format!("/api/conversations/{id}?include_skills=true"),
        None,
    )
    .await;
    let skills = &conv["agent"]["agent_context"]["skills"];
    assert_eq!(
        names(skills),
        [
            "greet",
            "attached-plugin:hello",
            "market-skill",
            "market-plugin:hello"
        ]
    );
    assert_eq!(
        skills[1],
        json!({"name": "attached-plugin:hello",
               "content": "## hello\n\nSay hello\n\n**Arguments**: `$ARGUMENTS` - <name>\n\n\nSay hello to $ARGUMENTS.",
               "trigger": {"type": "keyword", "keywords": ["/attached-plugin:hello"]},
               "source": attached.canonicalize().unwrap().join("commands/hello.md").to_string_lossy(),
               "mcp_tools": null, "inputs": [], "is_agentskills_format": false, "version": "1.0.0",
               "description": "Say hello", "license": null, "compatibility": null, "metadata": null,
               "allowed_tools": ["terminal"], "disable_model_invocation": false, "resources": null})
    );
    assert_eq!(
        conv["agent"]["mcp_config"]["demo-mcp"],
        json!({"command": "echo", "args": [market_plugin.canonicalize().unwrap().to_string_lossy(), "bar"], "enabled": true})
    );
    assert_eq!(
        conv["hook_config"]["user_prompt_submit"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "both plugins' hooks: {}",
        conv["hook_config"]
    );
    let (_, events) = call(
        &srv,
        Method::GET,
        &format!("/api/conversations/{id}/events/search?limit=100"),
        None,
    )
    .await;
    let kinds: Vec<(Value, Value)> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].clone(), e["key"].clone()))
        .collect();
    let update = |k: &str| (json!("ConversationStateUpdateEvent"), json!(k));
    assert_eq!(
        kinds,
        [
            update("agent"),
            update("hook_config"),
            update("hook_config"),
            update("agent")
        ]
    );

    // The skills reach the LLM, and the plugins' hook runs on the user's message.
    let msg = json!({"role": "user", "content": [{"type": "text", "text": "[[mock:text]] tok-plug"}], "run": true});
    let (code, _) = call(
        &srv,
        Method::POST,
        &format!("/api/conversations/{id}/events"),
        Some(msg),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        wait_for_end(&srv, &id, 60).await["execution_status"],
        "finished"
    );
    let sent: Vec<Value> = llm
        .requests_with("tok-plug")
        .into_iter()
        .filter(|r| r["tools"].is_array())
        .collect();
    assert!(!sent.is_empty(), "the agent's LLM was called");
    let prompt = sent[0]["messages"][0].to_string();
    assert!(prompt.contains("plugin-skill-token"), "{prompt}");
    assert!(prompt.contains("market-skill-token"), "{prompt}");
    let (_, events) = call(
        &srv,
        Method::GET,
        &format!("/api/conversations/{id}/events/search?limit=100"),
        None,
    )
    .await;
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "HookExecutionEvent"
                && e["stdout"].as_str().is_some_and(|s| s.contains("hook-ran"))),
        "{events}"
    );

    // A conversation whose plugin cannot be fetched: load_plugin answers 400, a message 500.
    // (No test source reaches the network: a refused local port stands for an unreachable host.)
    let start = json!({"agent": agent, "workspace": workspace, "plugins": [{"source": "http://127.0.0.1:1/foo.git"}]});
    let (_, info) = call(&srv, Method::POST, "/api/conversations", Some(start)).await;
    let id = info["id"].as_str().unwrap();
    let (code, got) = call(
        &srv,
        Method::POST,
        &format!("/api/conversations/{id}/load_plugin"),
        Some(json!({"plugin_ref": "market-plugin"})),
    )
    .await;
    assert_eq!(
        (code, got),
        (
            400,
            json!({"detail": "Failed to fetch plugin from http://127.0.0.1:1/foo.git"})
        )
    );
    let msg = json!({"role": "user", "content": [{"type": "text", "text": "hi"}], "run": false});
    let (code, got) = call(
        &srv,
        Method::POST,
        &format!("/api/conversations/{id}/events"),
        Some(msg),
    )
    .await;
    assert_eq!(code, 500);
    assert_eq!(
        got["exception"],
        "Failed to fetch plugin from http://127.0.0.1:1/foo.git"
    );
}
