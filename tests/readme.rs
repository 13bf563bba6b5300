//! The README's first-use commands, run as written: its Python snippet against a server started
//! like the README starts one, and its `launch docker -d` block with the snippet against the
//! image `images/build.sh` tags. The scripted LLM (tests/support/mock_llm.rs) stands in for the
//! model; it answers a prompt without a script directive with plain text, which ends the run.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::mock_llm::MockLlm;
use crate::support::{sdk_python, ServerOptions, TestServer};

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The fenced block of `lang` that follows the first line containing `marker`.
fn block_after(text: &str, marker: &str, lang: &str) -> String {
    let from = text
        .find(marker)
        .unwrap_or_else(|| panic!("README lacks {marker:?}"));
    let fence = format!("```{lang}\n");
    let start = from + text[from..].find(&fence).unwrap() + fence.len();
    let end = start + text[start..].find("\n```").unwrap();
    text[start..end].to_string() + "\n"
}

fn python_snippet() -> String {
    block_after(&readme(), "<!-- tested by tests/readme.rs", "python")
}

/// Writes the snippet as `quickstart.py` in `dir`.
fn write_quickstart(dir: &Path) -> PathBuf {
    let path = dir.join("quickstart.py");
    std::fs::write(&path, python_snippet()).unwrap();
    path
}

fn check_output(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tail = &stderr[stderr.len().saturating_sub(4000)..];
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{tail}");
    assert!(
        stdout.contains("hello from the sandbox\n"),
        "{stdout}\n{tail}"
    );
    assert!(stdout.contains("status: finished\n"), "{stdout}\n{tail}");
    stdout
}

#[test]
fn readme_snippet_is_valid_python() {
    // Cheap and always on: the snippet exists and parses (the full run needs the SDK).
    let snippet = python_snippet();
    assert!(snippet.contains("Workspace("), "{snippet}");
    let out = Command::new("python3")
        .args(["-c", "import ast, sys; ast.parse(sys.stdin.read())"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(snippet.as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn readme_python_snippet_drives_a_local_server() {
    let python = sdk_python();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let llm = rt.block_on(MockLlm::start());
    let server = TestServer::start_with(ServerOptions {
        api_key: Some("change-me".into()),
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let script = write_quickstart(dir.path());
    let out = Command::new(python)
        .arg(&script)
        .current_dir(dir.path())
        .env("AGENT_SERVER_URL", &server.url)
        .env_remove("AGENT_SERVER_API_KEY")
        .env("LLM_MODEL", "openai/mock")
        .env("LLM_BASE_URL", &llm.base_url)
        .env("LLM_API_KEY", "mock-key")
        .env("OPENHANDS_SUPPRESS_BANNER", "1")
        .output()
        .unwrap();
    check_output(&out);
    // The run really went through the model.
    assert!(!llm.requests().is_empty(), "{}", server.log());
}

#[test]
#[ignore = "needs Docker with agent-server:latest (images/ci-setup.sh) and the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn readme_launch_docker_block_then_python_snippet() {
    let python = sdk_python();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let llm = rt.block_on(MockLlm::start());
    let dir = tempfile::tempdir().unwrap();
    write_quickstart(dir.path());
    // The README's block, with our binary for `agent-server`, the SDK's interpreter for `python`
    // and the host's network (so the container reaches the scripted LLM on loopback).
    let block = block_after(&readme(), "Or let the launcher pick", "bash");
    assert!(
        block.contains("eval \"$(agent-server launch docker -d)\""),
        "{block}"
    );
    let script = block
        .replace(
            "agent-server launch docker -d",
            &format!(
                "'{}' launch docker -d --network host",
                env!("CARGO_BIN_EXE_agent-server")
            ),
        )
        .replace(
            "python quickstart.py",
            &format!("'{}' quickstart.py", python.display()),
        );
    let out = Command::new("bash")
        .args(["-euc", &script])
        .current_dir(dir.path())
        .env("LLM_MODEL", "openai/mock")
        .env("LLM_BASE_URL", &llm.base_url)
        .env("LLM_API_KEY", "mock-key")
        .env("OPENHANDS_SUPPRESS_BANNER", "1")
        .output()
        .unwrap();
    check_output(&out);
    assert!(!llm.requests().is_empty());
}

/// The README's "Run the server" command, as written (`agent-server` found on `PATH`, the port
/// swapped for a free one): the server answers, and `/api` needs the key the command sets.
#[tokio::test]
async fn readme_run_server_command_serves_with_the_key() {
    let block = block_after(&readme(), "## Run the server", "bash");
    assert!(
        block.contains("agent-server --host 127.0.0.1 --port 8000"),
        "{block}"
    );
    let port = crate::support::free_port();
    let script = block.replace("--port 8000", &format!("--port {port}"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_agent-server"))
        .parent()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("bash");
    cmd.args(["-c", script.trim()])
        .current_dir(dir.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env_remove("OH_SESSION_API_KEYS_0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client.get(format!("{url}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let search = |key: Option<&'static str>| {
        let mut r = client.get(format!("{url}/api/bash/bash_events/search"));
        if let Some(k) = key {
            r = r.header("X-Session-API-Key", k);
        }
        r.send()
    };
    let without = search(None).await.map(|r| r.status().as_u16());
    let with = search(Some("change-me")).await.map(|r| r.status().as_u16());
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    assert!(up, "the README's command did not start a server");
    assert_eq!(without.unwrap(), 401);
    assert_eq!(with.unwrap(), 200);
}
