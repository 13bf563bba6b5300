//! Flows of the reference's own examples, driven by the official Python SDK (the venv of
//! `tests/sdk/setup-venv.sh`) against the real binary, with scripted LLMs from `tests/sdk/`.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use crate::support::{sdk_python, TestServer};

/// Example "conversation with a local agent server": a stop hook blocks finishing while a
/// Python file does not compile, its feedback reaches the agent, which fixes the file; the
/// title comes from a second LLM; the client's run loop ends with the status `finished`.
#[test]
#[ignore = "needs the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn stop_hook_example_flow_through_the_python_sdk() {
    let server = TestServer::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/stop_hook_flow.py");
    run_python(
        &server,
        &[script.as_os_str(), "--server".as_ref(), server.url.as_ref()],
        "PASS stop_hook_flow",
    );
}

/// Runs the SDK venv's Python with `args` in the server's directory; asserts that it succeeded
/// and printed `expect` (else shows its output and the server's log). Returns stdout and stderr.
fn run_python(server: &TestServer, args: &[&OsStr], expect: &str) -> (String, String) {
    let out = Command::new(sdk_python())
        .args(args)
        .env("OPENHANDS_SUPPRESS_BANNER", "1")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .current_dir(server.root_path())
        .output()
        .expect("run the SDK's Python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stdout.contains(expect),
        "stdout:\n{stdout}\nstderr (tail):\n{}\nserver log (tail):\n{}",
        tail(&stderr, 4000),
        tail(&server.log(), 4000)
    );
    (stdout, stderr)
}

/// Runs `tests/sdk/<name>.py SERVER_URL LLM_URL PROJECT_DIR` and asserts it printed
/// `PASS <name>`.
fn run_flow(server: &TestServer, llm_url: &str, project: &Path, name: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/sdk/{name}.py"));
    run_python(
        server,
        &[
            script.as_os_str(),
            server.url.as_ref(),
            llm_url.as_ref(),
            project.as_os_str(),
        ],
        &format!("PASS {name}"),
    );
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// The official client with `client_tools`: the agent's call of a client-defined tool reaches
/// the client's callback as an `ActionEvent` whose action holds the arguments (not `null`).
#[test]
#[ignore = "needs the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn client_defined_tool_call_reaches_the_python_client() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let llm = rt.block_on(crate::support::mock_llm::MockLlm::start());
    let server = TestServer::start();
    let script = r#"
import sys
from pydantic import SecretStr
from openhands.sdk import LLM, Conversation, Workspace
from openhands.sdk.event.llm_convertible.action import ActionEvent
from openhands.sdk.tool.client_tool import ClientToolSpec
from openhands.tools.preset.default import get_default_agent

spec = ClientToolSpec(
    name="show_notification",
    description="Display a notification banner in the UI.",
    parameters={"type": "object",
                "properties": {"message": {"type": "string"},
                               "level": {"type": "string", "enum": ["info", "warning", "error"]}},
                "required": ["message", "level"]},
)
seen = []
def on_event(e):
    if isinstance(e, ActionEvent) and e.tool_name == "show_notification":
        seen.append(e)
llm = LLM(usage_id="agent", model="openai/mock", base_url=sys.argv[2],
          api_key=SecretStr("mock-key"), num_retries=0)
conv = Conversation(agent=get_default_agent(llm=llm, cli_mode=True),
                    workspace=Workspace(host=sys.argv[1]), client_tools=[spec], callbacks=[on_event])
conv.send_message("[[mock:client]] tok-sdk-client")
conv.run()
print("STATUS", conv.state.execution_status.value, flush=True)
action = seen[0].action.model_dump() if seen and seen[0].action is not None else None
print("ACTION", action.get("message") if action else None, action.get("level") if action else None, flush=True)
conv.close()
"#;
    let (stdout, stderr) = run_python(
        &server,
        &[
            "-c".as_ref(),
            script.as_ref(),
            server.url.as_ref(),
            llm.base_url.as_ref(),
        ],
        "STATUS finished",
    );
    assert!(
        stdout.contains("ACTION hello client info"),
        "{stdout}\n{}",
        tail(&stderr, 4000)
    );
}

/// `RemoteWorkspace.get_llm()` (settings, then the active profile), `get_llm(profile_name)`,
/// `get_secrets()`, `get_secrets(names)`, `get_mcp_config()`, `load_skills_from_agent_server()`
/// from the official client, and a
/// secret handed to a conversation as a `LookupSecret` used by the agent in a command.
#[test]
#[ignore = "needs the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn settings_secrets_and_profiles_through_the_python_sdk() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let llm = rt.block_on(crate::support::mock_llm::MockLlm::start());
    let server = TestServer::start_with(crate::support::ServerOptions {
        env: vec![("OH_SECRET_KEY".into(), "flow-key-1".into())],
        ..Default::default()
    });
    let project = server.workdir();
    std::fs::write(project.join("AGENTS.md"), "Run the tests first.\n").unwrap();
    let skill = project.join(".openhands/skills/deploy.md");
    std::fs::create_dir_all(skill.parent().unwrap()).unwrap();
    std::fs::write(&skill, "---\ntriggers:\n- deploy\n---\nDeploy with make.\n").unwrap();
    run_flow(&server, &llm.base_url, &project, "settings_flow");
    assert!(
        !server.log().contains("ghp_flow_7d1"),
        "the secret reached the log"
    );
}

/// A conversation-scoped `RemoteWorkspace` (`runtime_conversation_id`) from the official
/// client: `stop_command()`, `execute_command()`, file upload and download, Git changes, all
/// through `/api/conversations/{id}/...`.
#[test]
#[ignore = "needs the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn scoped_remote_workspace_through_the_python_sdk() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let llm = rt.block_on(crate::support::mock_llm::MockLlm::start());
    let server = TestServer::start();
    run_flow(
        &server,
        &llm.base_url,
        &server.workdir(),
        "scoped_workspace_flow",
    );
}

/// An MCP server over streamable HTTP (the official `mcp` package's FastMCP): the test route
/// lists and calls its tool, and an agent uses it in a run.
#[test]
#[ignore = "needs the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn mcp_server_over_streamable_http() {
    use serde_json::{json, Value};
    let python = sdk_python();
    let port = crate::support::free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/mcp_http_server.py");
    let mut mcp = Command::new(python)
        .arg(script)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the MCP server");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let llm = rt.block_on(crate::support::mock_llm::MockLlm::start());
    let server = TestServer::start();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let result = rt.block_on(async {
        let http = server.client();
        let body = json!({"server": {"type": "http", "url": url},
                          "tool_call": {"name": "echo_text", "arguments": {"text": "x"}}});
        let mut answer = Value::Null;
        for _ in 0..100 {
            answer = http.post(format!("{}/api/mcp/test", server.url)).json(&body).send().await.unwrap()
                .json().await.unwrap();
            if answer["ok"] == true {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(answer["tool_result"]["text"], "HTTP ECHO: x", "{answer}");
        let mut agent = llm.agent();
        agent["mcp_config"] = json!({"web": {"url": url, "transport": "http"}});
        let create = json!({"agent": agent,
            "workspace": {"working_dir": server.workdir().to_string_lossy(), "kind": "LocalWorkspace"},
            "initial_message": {"role": "user", "content": [{"type": "text", "text": "[[mock:mcp text=over-http]]"}], "run": true}});
        let conv: Value = http.post(format!("{}/api/conversations", server.url)).json(&create).send().await.unwrap()
            .json().await.unwrap();
        let id = conv["id"].as_str().unwrap().to_string();
        for _ in 0..300 {
            let c: Value = http.get(format!("{}/api/conversations/{id}", server.url)).send().await.unwrap()
                .json().await.unwrap();
            if c["execution_status"] == "finished" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let page: Value = http.get(format!("{}/api/conversations/{id}/events/search?limit=100", server.url))
            .send().await.unwrap().json().await.unwrap();
        page.to_string()
    });
    let _ = mcp.kill();
    let _ = mcp.wait();
    assert!(result.contains("HTTP ECHO: over-http"), "{result}");
}

/// The SDK's own remote-agent-server examples 01 and 11–16 (vendored unmodified in
/// `tests/fixtures/upstream_examples`) run against our binary with the scripted LLM of
/// `tests/sdk/example_mock.py`; each must exit 0 (they assert what they need themselves).
#[test]
#[ignore = "needs the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn upstream_examples_run_unmodified_against_our_server() {
    let python = sdk_python();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let runner = root.join("tests/sdk/run_example.py");
    let examples = root.join("tests/fixtures/upstream_examples");
    let scratch = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for name in [
        "01_convo_with_local_agent_server.py",
        "11_conversation_fork.py",
        "12_settings_and_secrets_api.py",
        "13_workspace_get_llm.py",
        "14_client_defined_tools.py",
        "15_openai_compatible_gateway.py",
        "16_deferred_init.py",
    ] {
        let out = Command::new(&python)
            .arg(&runner)
            .arg(examples.join(name))
            .arg(env!("CARGO_BIN_EXE_agent-server"))
            // Settings, profiles and conversations of the examples stay in the scratch dir.
            .env("HOME", scratch.path())
            .env(
                "OH_PERSISTENCE_DIR",
                scratch.path().join(name).join("persistence"),
            )
            .env(
                "OH_CONVERSATIONS_PATH",
                scratch.path().join(name).join("conversations"),
            )
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .output()
            .expect("run the example");
        if !out.status.success() {
            failures.push(format!(
                "{name}: {}\nstdout (tail):\n{}\nstderr (tail):\n{}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stdout), 3000),
                tail(&String::from_utf8_lossy(&out.stderr), 3000)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The upstream live-server tests that use the server over HTTP only (vendored in
/// `tests/fixtures/upstream_tests`; `tests/sdk/run_live_server_tests.py` lists them) pass
/// against our binary, as they do against the reference.
#[test]
#[ignore = "needs the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn upstream_live_server_tests_pass_against_our_server() {
    let python = sdk_python();
    let runner = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/run_live_server_tests.py");
    let out = Command::new(python)
        .arg(runner)
        .arg(env!("CARGO_BIN_EXE_agent-server"))
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .output()
        .expect("run the live-server tests");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("8 passed"),
        "{}\n{}",
        tail(&stdout, 6000),
        tail(&String::from_utf8_lossy(&out.stderr), 2000)
    );
}

/// The routes of agent profiles, meta-profiles, provider connections, sub-agents, ACP model
/// discovery, plugins and Canvas extensions answer the reference's own request shapes as the
/// reference does: the reference
/// server (from the SDK venv) and ours get the same requests
/// (`tests/fixtures/reference_probes/`), their answers are compared after normalising ids and
/// times (`tests/sdk/compare_with_reference.py`).
#[test]
#[ignore = "needs the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn profile_sub_agent_and_acp_routes_answer_like_the_reference() {
    let python = sdk_python();
    let server = TestServer::start();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python)
        .arg(root.join("tests/sdk/compare_with_reference.py"))
        .arg(&server.url)
        .arg(root.join("tests/fixtures/reference_probes"))
        .output()
        .expect("run the comparison");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(" 0 answers differ"),
        "stdout:\n{stdout}\nstderr (tail):\n{}",
        tail(&String::from_utf8_lossy(&out.stderr), 3000)
    );
}
