//! Flows of the reference's own examples, driven by the official Python SDK (the venv of
//! `tests/sdk/setup-venv.sh`) against the real binary, with scripted LLMs from `tests/sdk/`.

use std::path::Path;
use std::process::Command;

use crate::support::{sdk_python, TestServer};

/// Example "conversation with a local agent server": a stop hook blocks finishing while a
/// Python file does not compile, its feedback reaches the agent, which fixes the file; the
/// title comes from a second LLM; the client's run loop ends with the status `finished`.
#[test]
#[ignore = "needs the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn stop_hook_example_flow_through_the_python_sdk() {
    let python = sdk_python();
    let server = TestServer::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/stop_hook_flow.py");
    let out = Command::new(python)
        .arg(script)
        .args(["--server", &server.url])
        .env("OPENHANDS_SUPPRESS_BANNER", "1")
        .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        .current_dir(server.root_path())
        .output()
        .expect("run the SDK flow");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("PASS stop_hook_flow"),
        "stdout:\n{stdout}\nstderr (tail):\n{}\nserver log (tail):\n{}",
        tail(&stderr, 4000),
        tail(&server.log(), 4000)
    );
}

fn tail(s: &str, n: usize) -> &str {
    let mut i = s.len().saturating_sub(n);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}
