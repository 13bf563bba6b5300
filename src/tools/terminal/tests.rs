//! Terminal tests against a real bash.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::super::test_support::{ctx, obs_text};
use super::*;

fn tool(ctx: &ToolContext, soft_secs: f64) -> TerminalTool {
    TerminalTool::new(TerminalOptions::from_params(
        &json!({"no_change_timeout_seconds": soft_secs}),
        ctx,
    ))
}

fn map(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

async fn run(t: &TerminalTool, ctx: &ToolContext, args: Value) -> ToolOutput {
    let action = t
        .parse_action(&map(args))
        .unwrap_or_else(|e| panic!("invalid action: {e}"));
    t.execute(&action, ctx)
        .await
        .unwrap_or_else(|e| panic!("execute failed: {e}"))
}

fn require_bash() {
    let found = std::process::Command::new("bash")
        .arg("-c")
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    assert!(found, "the terminal tool needs bash on PATH");
}

#[test]
fn parse_action_fills_defaults_and_validates() {
    let (_d, ctx) = ctx();
    let t = tool(&ctx, 30.0);
    assert_eq!(
        t.parse_action(&map(json!({"command": "ls"}))),
        Ok(json!({"command": "ls", "is_input": false, "reset": false, "kind": "TerminalAction"}))
    );
    let a = t.parse_action(&map(
        json!({"command": "ls", "timeout": 20, "is_input": "false"}),
    ));
    assert_eq!(
        a.map(|v| serde_json::to_string(&v).unwrap_or_default()),
        Ok(r#"{"command":"ls","is_input":false,"timeout":20.0,"reset":false,"kind":"TerminalAction"}"#.into())
    );
    let err = t
        .parse_action(&map(json!({"timeout": -1})))
        .err()
        .unwrap_or_default();
    assert!(
        err.starts_with("2 validation errors for TerminalAction"),
        "{err}"
    );
    assert!(err.contains("command\n  Field required"), "{err}");
    assert!(
        err.contains("timeout\n  Input should be greater than or equal to 0"),
        "{err}"
    );
}

#[tokio::test]
async fn runs_commands_and_keeps_state() {
    require_bash();
    let (_d, ctx) = ctx();
    let t = tool(&ctx, 30.0);
    let out = run(&t, &ctx, json!({"command": "echo hello"})).await;
    assert_eq!(obs_text(&out), "hello");
    let o = &out.observation;
    assert_eq!(o["kind"], "TerminalObservation");
    assert_eq!(o["exit_code"], 0);
    assert_eq!(o["command"], "echo hello");
    assert_eq!(o["is_error"], false);
    assert_eq!(o["timeout"], false);
    assert_eq!(o["metadata"]["exit_code"], 0);
    assert_eq!(o["metadata"]["pid"], -1);
    assert_eq!(
        o["metadata"]["suffix"],
        "\n[The command completed with exit code 0.]"
    );
    let wd = ctx.working_dir.to_string_lossy().to_string();
    assert_eq!(o["metadata"]["working_dir"], wd.as_str());
    assert!(out
        .llm_text()
        .starts_with("hello\n[The command completed with exit code 0.]"));
    assert!(out
        .llm_text()
        .contains(&format!("[Current working directory: {wd}]")));
    assert!(out
        .llm_text()
        .ends_with("[Command finished with exit code 0]"));

    let out = run(&t, &ctx, json!({"command": "false"})).await;
    assert_eq!(out.observation["exit_code"], 1);
    let out = run(
        &t,
        &ctx,
        json!({"command": "mkdir -p sub && cd sub && export FOO=bar"}),
    )
    .await;
    assert_eq!(out.observation["exit_code"], 0);
    let out = run(&t, &ctx, json!({"command": "pwd; echo $FOO"})).await;
    assert_eq!(obs_text(&out), format!("{wd}/sub\nbar"));
    assert_eq!(
        out.observation["metadata"]["working_dir"],
        format!("{wd}/sub")
    );
    // A prompt set by the user (e.g. a virtualenv) does not leak into outputs.
    run(&t, &ctx, json!({"command": "PS1='(venv) $ '"})).await;
    let out = run(&t, &ctx, json!({"command": "echo plain"})).await;
    assert_eq!(obs_text(&out), "plain");
    let out = run(
        &t,
        &ctx,
        json!({"command": "for i in 1 2; do\n echo n$i\ndone"}),
    )
    .await;
    assert_eq!(obs_text(&out), "n1\nn2");
    let out = run(
        &t,
        &ctx,
        json!({"command": "cat <<'EOF'\nline a\nline b\nEOF"}),
    )
    .await;
    assert_eq!(obs_text(&out), "line a\nline b");
    let long = format!("echo {}", "x".repeat(5000));
    let out = run(&t, &ctx, json!({"command": long})).await;
    assert_eq!(obs_text(&out), "x".repeat(5000));

    // Several commands at once are refused without running anything.
    let out = run(&t, &ctx, json!({"command": "echo one\necho two"})).await;
    assert_eq!(out.observation["is_error"], true);
    assert!(obs_text(&out).starts_with("Cannot execute multiple commands at once."));
    assert!(obs_text(&out).contains("(1) echo one\n(2) echo two"));
    assert!(out
        .llm_text()
        .starts_with(super::super::ERROR_MESSAGE_HEADER));

    // Nothing running: empty command and input are errors.
    let out = run(&t, &ctx, json!({"command": ""})).await;
    assert_eq!(
        obs_text(&out),
        "No previous running command to retrieve logs from."
    );
    assert_eq!(out.observation["is_error"], true);
    assert!(out.observation.get("exit_code").is_none());
    let out = run(&t, &ctx, json!({"command": "x", "is_input": true})).await;
    assert_eq!(
        obs_text(&out),
        "No previous running command to interact with."
    );

    let out = run(&t, &ctx, json!({"command": "[{\"a\": 1}]"})).await;
    assert_eq!(out.observation["is_error"], true);
    assert!(obs_text(&out).contains("list literal"));
    t.close().await;
}

#[tokio::test]
async fn soft_timeout_input_and_ctrl_c() {
    require_bash();
    let (_d, ctx) = ctx();
    let t = tool(&ctx, 1.0);
    let out = run(
        &t,
        &ctx,
        json!({"command": "read -p 'Name: ' n && echo \"hi $n\""}),
    )
    .await;
    assert_eq!(out.observation["exit_code"], -1);
    assert_eq!(obs_text(&out), "Name:");
    let suffix = out.observation["metadata"]["suffix"]
        .as_str()
        .unwrap_or_default();
    assert!(
        suffix.starts_with("\n[The command has no new output after 1 seconds."),
        "{suffix}"
    );
    assert!(!out.llm_text().contains("[Command finished with exit code"));

    // A new command is refused while this one runs.
    let out = run(&t, &ctx, json!({"command": "echo other"})).await;
    assert_eq!(out.observation["is_error"], true);
    let suffix = out.observation["metadata"]["suffix"]
        .as_str()
        .unwrap_or_default();
    assert!(
        suffix.contains("\"echo other\" was NOT executed"),
        "{suffix}"
    );

    let out = run(&t, &ctx, json!({"command": "Bob", "is_input": true})).await;
    assert_eq!(out.observation["exit_code"], 0);
    assert_eq!(obs_text(&out), "hi Bob");

    let out = run(&t, &ctx, json!({"command": "sleep 30"})).await;
    assert_eq!(out.observation["exit_code"], -1);
    let out = run(&t, &ctx, json!({"command": ""})).await;
    assert_eq!(out.observation["exit_code"], -1);
    assert_eq!(
        out.observation["metadata"]["prefix"],
        "[Below is the output of the previous command.]\n"
    );
    let out = run(&t, &ctx, json!({"command": "C-c", "is_input": true})).await;
    assert_eq!(out.observation["exit_code"], 130);
    assert_eq!(
        out.observation["metadata"]["suffix"],
        "\n[The command completed with exit code 130. CTRL+C was sent.]"
    );
    let out = run(&t, &ctx, json!({"command": "echo alive"})).await;
    assert_eq!(obs_text(&out), "alive");
    t.close().await;
}

#[tokio::test]
async fn hard_timeout_and_reset() {
    require_bash();
    let (_d, ctx) = ctx();
    let t = tool(&ctx, 30.0);
    run(&t, &ctx, json!({"command": "export KEEP=1"})).await;
    let out = run(
        &t,
        &ctx,
        json!({"command": "while true; do echo tick; sleep 0.2; done", "timeout": 1}),
    )
    .await;
    assert_eq!(out.observation["exit_code"], -1);
    assert!(obs_text(&out).contains("tick"));
    let suffix = out.observation["metadata"]["suffix"]
        .as_str()
        .unwrap_or_default();
    assert!(
        suffix.starts_with("\n[The command timed out after 1.0 seconds."),
        "{suffix}"
    );

    let err = t
        .execute(
            &json!({"command": "x", "is_input": true, "reset": true}),
            &ctx,
        )
        .await
        .err()
        .map(|e| e.0);
    assert_eq!(
        err.as_deref(),
        Some("Cannot use reset=True with is_input=True")
    );

    let out = run(&t, &ctx, json!({"command": "", "reset": true})).await;
    assert_eq!(out.observation["command"], "[RESET]");
    assert_eq!(out.observation["exit_code"], 0);
    assert!(obs_text(&out).starts_with("Terminal session has been reset."));
    let out = run(
        &t,
        &ctx,
        json!({"command": "echo \"[$KEEP]\"", "reset": true}),
    )
    .await;
    assert_eq!(out.observation["command"], "[RESET] echo \"[$KEEP]\"");
    assert!(obs_text(&out).ends_with("\n\n[]"), "{}", obs_text(&out));
    t.close().await;
}

#[tokio::test]
async fn long_output_is_truncated_and_saved() {
    require_bash();
    let (_d, ctx) = ctx();
    let t = tool(&ctx, 30.0);
    let out = run(
        &t,
        &ctx,
        json!({"command": "seq 1 200000 | sed 's/^/big-line-/'", "timeout": 120}),
    )
    .await;
    assert_eq!(out.observation["exit_code"], 0);
    let text = obs_text(&out);
    assert!(text.starts_with("big-line-1\nbig-line-2\n"));
    assert!(text.ends_with("big-line-200000"));
    assert!(
        out.llm_text().chars().count() <= MAX_OUTPUT_CHARS,
        "{}",
        out.llm_text().len()
    );
    let save_dir = ctx.persistence_dir.join("observations");
    assert_eq!(
        out.observation["full_output_save_dir"],
        save_dir.to_string_lossy().as_ref()
    );
    let saved: Vec<_> = std::fs::read_dir(&save_dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert_eq!(saved.len(), 1, "{saved:?}");
    let name = saved[0]
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    assert!(
        name.starts_with("terminal_output_") && name.ends_with(".txt"),
        "{name}"
    );
    assert!(text.contains(&saved[0].to_string_lossy().to_string()));
    let full = std::fs::read_to_string(&saved[0]).unwrap_or_default();
    assert_eq!(full.lines().count(), 200_000);
    assert!(full.lines().any(|l| l == "big-line-100000"));
    t.close().await;
}

#[tokio::test]
async fn cancellation_interrupts_the_command() {
    require_bash();
    let (_d, ctx) = ctx();
    let t = tool(&ctx, 30.0);
    let fresh = ToolContext {
        cancel: tokio_util::sync::CancellationToken::new(),
        ..ctx.clone()
    };
    run(&t, &fresh, json!({"command": "echo started"})).await;
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        cancel.cancel();
    });
    let out = run(&t, &ctx, json!({"command": "sleep 60", "timeout": 100})).await;
    assert_eq!(out.observation["exit_code"], 130);
    // A cancel that lands right after the command was typed still returns promptly.
    let out = run(&t, &ctx, json!({"command": "sleep 60", "timeout": 100})).await;
    assert_ne!(out.observation["exit_code"], 0);
    let ctx2 = ToolContext {
        cancel: tokio_util::sync::CancellationToken::new(),
        ..ctx.clone()
    };
    let out = run(&t, &ctx2, json!({"command": "echo after"})).await;
    assert_eq!(obs_text(&out), "after");
    t.close().await;
}

#[tokio::test]
async fn close_kills_background_jobs() {
    require_bash();
    let (_d, ctx) = ctx();
    let t = tool(&ctx, 30.0);
    let out = run(
        &t,
        &ctx,
        json!({"command": "echo ${SESSION_API_KEY:-unset} $AI_AGENT"}),
    )
    .await;
    assert!(obs_text(&out).starts_with("unset "), "{}", obs_text(&out));
    let out = run(&t, &ctx, json!({"command": "sleep 300 & echo $!"})).await;
    let pid: i32 = obs_text(&out)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(pid > 0, "{}", obs_text(&out));
    t.close().await;
    let mut gone = false;
    for _ in 0..50 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "background job {pid} survived close");
}

#[tokio::test]
async fn close_ends_a_running_call() {
    require_bash();
    let (_d, ctx) = ctx();
    let t = std::sync::Arc::new(tool(&ctx, 30.0));
    run(&t, &ctx, json!({"command": "echo ready"})).await;
    let t2 = t.clone();
    let ctx2 = ctx.clone();
    let call = tokio::spawn(async move {
        run(&t2, &ctx2, json!({"command": "sleep 100", "timeout": 200})).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    t.close().await;
    let out = call.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.observation["exit_code"], -1);
    // The tool starts a new shell when used again.
    let out = run(&t, &ctx, json!({"command": "echo again"})).await;
    assert_eq!(obs_text(&out), "again");
    t.close().await;
}

#[tokio::test]
async fn secrets_are_exported_and_hidden() {
    require_bash();
    let (_d, ctx) = ctx();
    let t = tool(&ctx, 30.0);
    t.set_secrets(&[("API_TOKEN".into(), "s3cr'et\\value".into())]);
    let out = run(&t, &ctx, json!({"command": "echo \"token=$API_TOKEN\""})).await;
    assert_eq!(obs_text(&out), "token=<secret-hidden>");
    assert!(!out.llm_text().contains("s3cr"));
    let out = run(&t, &ctx, json!({"command": "echo ${#API_TOKEN}"})).await;
    assert_eq!(obs_text(&out), "13");
    t.close().await;
}
