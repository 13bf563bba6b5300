use super::*;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_claude_code_plugin_with_skills_commands_hooks_and_mcp() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    write(
        &dir.join(".plugin/plugin.json"),
        r#"{"name":"demo-plugin","version":"0.2.0","description":"Demo","author":"Jane <j@x>"}"#,
    );
    write(
        &dir.join("skills/greet/SKILL.md"),
        "---\nname: greet\ndescription: Greets.\n---\nAlways greet.\n",
    );
    write(&dir.join("skills/README.md"), "readme");
    write(
        &dir.join("skills/loose.md"),
        "---\ntriggers: [foo]\n---\nloose\n",
    );
    write(
        &dir.join("commands/hello.md"),
        "---\ndescription: Say hello\nargument-hint: <name>\nallowed-tools: [terminal]\n---\nSay hello to $ARGUMENTS.\n",
    );
    write(&dir.join("commands/README.md"), "x");
    write(
        &dir.join("hooks/hooks.json"),
        r#"{"hooks":{"UserPromptSubmit":[{"matcher":"*","hooks":[{"type":"command","command":"echo hi"}]}]}}"#,
    );
    write(
        &dir.join(".mcp.json"),
        r#"{"mcpServers":{"m":{"command":"echo","args":["${SKILL_ROOT}","${FOO_UNSET_X:-bar}"]}}}"#,
    );
    let p = load(&dir, &tmp.path().join("data")).unwrap();
    assert_eq!(
        (p.name.as_str(), p.version.as_str()),
        ("demo-plugin", "0.2.0")
    );
    let names: Vec<String> = p.all_skills().iter().map(|s| s.name.clone()).collect();
    assert_eq!(names, ["greet", "loose", "demo-plugin:hello"]);
    let hello = &p.all_skills()[2].json;
    assert_eq!(
        hello["content"],
        "## hello\n\nSay hello\n\n**Arguments**: `$ARGUMENTS` - <name>\n\n\nSay hello to $ARGUMENTS."
    );
    assert_eq!(hello["allowed_tools"], json!(["terminal"]));
    assert_eq!(hello["trigger"]["keywords"], json!(["/demo-plugin:hello"]));
    assert_eq!(p.skills[1].json["trigger"]["type"], "keyword");
    assert!(p.hooks.unwrap()["user_prompt_submit"][0]["hooks"][0]["command"] == "echo hi");
    let root = source::resolve(&dir).to_string_lossy().into_owned();
    assert_eq!(
        p.mcp["m"],
        json!({"command": "echo", "args": [root, "${FOO_UNSET_X:-bar}"], "enabled": true})
    );
    assert_eq!(
        list_files(&dir),
        [
            ".mcp.json",
            ".plugin/plugin.json",
            "commands/README.md",
            "commands/hello.md",
            "hooks/hooks.json",
            "skills/README.md",
            "skills/greet/SKILL.md",
            "skills/loose.md"
        ]
    );
}

#[test]
fn formats_and_manifest_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let dir = tmp.path().join("nomanifest");
    write(
        &dir.join("skills/beta/SKILL.md"),
        "---\ndescription: Beta\n---\nBeta body\n",
    );
    let p = load(&dir, &data).unwrap();
    assert_eq!(p.name, "nomanifest");
    assert_eq!(p.description, "Plugin loaded from nomanifest");
    assert_eq!(p.skills[0].json["is_agentskills_format"], true);

    let dir = tmp.path().join("rootnoschema");
    write(&dir.join("plugin.json"), r#"{"name":"copilot-style"}"#);
    assert_eq!(load(&dir, &data).unwrap().name, "rootnoschema");

    let dir = tmp.path().join("ap");
    write(
        &dir.join("plugin.json"),
        &format!(
            r#"{{"$schema":"{AGENT_PLUGINS_SCHEMA}","name":"ap-plugin","version":"1.1.0","x":1,"extensions":{{"dev.openhands":{{"entry_command":"go"}}}}}}"#
        ),
    );
    write(
        &dir.join("dev.openhands/commands/go.md"),
        "---\ndescription: Go cmd\n---\nGo!\n",
    );
    let p = load(&dir, &data).unwrap();
    assert_eq!(p.name, "ap-plugin");
    assert_eq!(
        p.all_skills()[0].json["content"],
        "## go\n\nGo cmd\n\n\nGo!"
    );

    let dir = tmp.path().join("badschema");
    write(
        &dir.join("plugin.json"),
        r#"{"$schema":"https://example.com/x.json","name":"x"}"#,
    );
    let err = load(&dir, &data).unwrap_err().to_string();
    assert!(
        err.ends_with(&format!(
            "plugin.json: 'https://example.com/x.json'. Supported: {AGENT_PLUGINS_SCHEMA}"
        )),
        "{err}"
    );
    write(
        &dir.join("plugin.json"),
        &format!(r#"{{"$schema":"{AGENT_PLUGINS_SCHEMA}","name":"Bad_Name"}}"#),
    );
    let err = load(&dir, &data).unwrap_err().to_string();
    assert!(
        err.ends_with(
            r"'Bad_Name' does not match '^(?!.*(?:--|\\.\\.))[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?$'"
        ),
        "{err}"
    );

    let dir = tmp.path().join("badjson");
    write(&dir.join(".plugin/plugin.json"), "{bad");
    let err = load(&dir, &data).unwrap_err().to_string();
    assert!(err
        .ends_with("Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"));
    assert!(matches!(
        load(&dir.join(".plugin/plugin.json"), &data),
        Err(LoadError::NotFound(_))
    ));
}
