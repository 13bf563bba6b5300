//! file_editor tests on private temporary directories.

use serde_json::{json, Map, Value};

use super::super::test_support::{ctx, obs_text};
use super::*;

fn map(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

async fn run(t: &FileEditorTool, ctx: &ToolContext, args: Value) -> ToolOutput {
    let action = t
        .parse_action(&map(args))
        .unwrap_or_else(|e| panic!("invalid action: {e}"));
    t.execute(&action, ctx)
        .await
        .unwrap_or_else(|e| panic!("execute failed: {e}"))
}

#[test]
fn parse_action_omits_absent_fields_and_validates() {
    let (_d, ctx) = ctx();
    let t = FileEditorTool::new(&ctx.working_dir);
    assert_eq!(
        t.parse_action(&map(json!({"command": "view", "path": "/x"}))),
        Ok(json!({"command": "view", "path": "/x", "kind": "FileEditorAction"}))
    );
    let err = t
        .parse_action(&map(
            json!({"command": "delete", "path": "/x", "insert_line": -2}),
        ))
        .err()
        .unwrap_or_default();
    assert!(
        err.contains(
            "command\n  Input should be 'view', 'create', 'str_replace', 'insert' or 'undo_edit'"
        ),
        "{err}"
    );
    assert!(
        err.contains("insert_line\n  Input should be greater than or equal to 0"),
        "{err}"
    );
    let err = t
        .parse_action(&map(json!({"command": "view"})))
        .err()
        .unwrap_or_default();
    assert!(err.contains("path\n  Field required"), "{err}");
}

#[tokio::test]
async fn create_view_replace_insert_undo() {
    let (_d, ctx) = ctx();
    let t = FileEditorTool::new(&ctx.working_dir);
    let p = ctx.working_dir.join("a.py");
    let ps = p.to_string_lossy().to_string();

    let out = run(
        &t,
        &ctx,
        json!({"command": "create", "path": ps, "file_text": "def broken(:\n    pass\n"}),
    )
    .await;
    assert_eq!(
        out.observation,
        json!({"content": [{"cache_prompt": false, "type": "text", "text": format!("File created successfully at: {ps}")}],
               "is_error": false, "command": "create", "path": ps, "prev_exist": false,
               "new_content": "def broken(:\n    pass\n", "kind": "FileEditorObservation"})
    );
    let out = run(
        &t,
        &ctx,
        json!({"command": "create", "path": ps, "file_text": "x"}),
    )
    .await;
    assert_eq!(
        obs_text(&out),
        format!("Invalid `path` parameter: {ps}. File already exists at: {ps}. Cannot overwrite files using command `create`.")
    );
    assert_eq!(out.observation["is_error"], true);
    assert!(out.observation.get("path").is_none());

    let out = run(&t, &ctx, json!({"command": "str_replace", "path": ps, "old_str": "def broken(:", "new_str": "def broken():"})).await;
    assert_eq!(
        obs_text(&out),
        format!("The file {ps} has been edited. Here's the result of running `cat -n` on a snippet of {ps}:\n     1\tdef broken():\n     2\t    pass\nReview the changes and make sure they are as expected. Edit the file again if necessary.")
    );
    assert_eq!(out.observation["old_content"], "def broken(:\n    pass\n");
    assert_eq!(out.observation["new_content"], "def broken():\n    pass\n");

    let out = run(&t, &ctx, json!({"command": "view", "path": ps})).await;
    assert_eq!(
        obs_text(&out),
        format!("Here's the result of running `cat -n` on {ps}:\n     1\tdef broken():\n     2\t    pass\n")
    );
    assert_eq!(out.observation["prev_exist"], true);
    assert!(out.observation.get("old_content").is_none());

    let out = run(
        &t,
        &ctx,
        json!({"command": "insert", "path": ps, "insert_line": 0, "new_str": "# top"}),
    )
    .await;
    assert!(
        obs_text(&out).contains("     1\t# top\n     2\tdef broken():"),
        "{}",
        obs_text(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&p).unwrap_or_default(),
        "# top\ndef broken():\n    pass\n"
    );
    let out = run(
        &t,
        &ctx,
        json!({"command": "insert", "path": ps, "insert_line": 9, "new_str": "x"}),
    )
    .await;
    assert_eq!(obs_text(&out), "Invalid `insert_line` parameter: 9. It should be within the range of allowed values: [0, 3]");

    let out = run(
        &t,
        &ctx,
        json!({"command": "view", "path": ps, "view_range": [2, 10]}),
    )
    .await;
    assert_eq!(
        obs_text(&out),
        format!("NOTE: We only show up to 3 since there're only 3 lines in this file.\nHere's the result of running `cat -n` on {ps}:\n     2\tdef broken():\n     3\t    pass\n")
    );
    let out = run(
        &t,
        &ctx,
        json!({"command": "view", "path": ps, "view_range": [3, -1]}),
    )
    .await;
    assert!(obs_text(&out).ends_with("     3\t    pass\n"));
    let out = run(
        &t,
        &ctx,
        json!({"command": "view", "path": ps, "view_range": [0, 1]}),
    )
    .await;
    assert!(obs_text(&out).contains(
        "Its first element `0` should be within the range of lines of the file: [1, 3]."
    ));

    let out = run(&t, &ctx, json!({"command": "undo_edit", "path": ps})).await;
    assert!(obs_text(&out).starts_with(&format!("Last edit to {ps} undone successfully. Here's the result of running `cat -n` on {ps}:\n     1\tdef broken():")));
    assert_eq!(
        std::fs::read_to_string(&p).unwrap_or_default(),
        "def broken():\n    pass\n"
    );
    run(&t, &ctx, json!({"command": "undo_edit", "path": ps})).await;
    assert_eq!(
        std::fs::read_to_string(&p).unwrap_or_default(),
        "def broken(:\n    pass\n"
    );
    run(&t, &ctx, json!({"command": "undo_edit", "path": ps})).await;
    let out = run(&t, &ctx, json!({"command": "undo_edit", "path": ps})).await;
    assert_eq!(obs_text(&out), format!("No edit history found for {ps}."));
}

#[tokio::test]
async fn replace_uniqueness_and_path_errors() {
    let (_d, ctx) = ctx();
    let t = FileEditorTool::new(&ctx.working_dir);
    let p = ctx.working_dir.join("b.txt");
    let ps = p.to_string_lossy().to_string();
    std::fs::write(&p, "x = 1\ny = 2\nx = 1\n").unwrap_or_default();
    let out = run(
        &t,
        &ctx,
        json!({"command": "str_replace", "path": ps, "old_str": "x = 1", "new_str": "x = 3"}),
    )
    .await;
    assert_eq!(obs_text(&out), "No replacement was performed. Multiple occurrences of old_str `x = 1` in lines [1, 3]. Please ensure it is unique.");
    let out = run(
        &t,
        &ctx,
        json!({"command": "str_replace", "path": ps, "old_str": "zzz", "new_str": "q"}),
    )
    .await;
    assert_eq!(
        obs_text(&out),
        format!("No replacement was performed, old_str `zzz` did not appear verbatim in {ps}.")
    );
    let out = run(
        &t,
        &ctx,
        json!({"command": "str_replace", "path": ps, "old_str": "  y = 2  ", "new_str": "y = 5"}),
    )
    .await;
    assert_eq!(out.observation["is_error"], false, "{}", obs_text(&out));
    let out = run(
        &t,
        &ctx,
        json!({"command": "str_replace", "path": ps, "old_str": "a", "new_str": "a"}),
    )
    .await;
    assert_eq!(obs_text(&out), "Invalid `new_str` parameter: a. No replacement was performed. `new_str` and `old_str` must be different.");
    let out = run(
        &t,
        &ctx,
        json!({"command": "str_replace", "path": ps, "old_str": "x"}),
    )
    .await;
    assert_eq!(
        obs_text(&out),
        "Parameter `new_str` is required for command: str_replace."
    );
    let out = run(
        &t,
        &ctx,
        json!({"command": "create", "path": ctx.working_dir.join("c").to_string_lossy()}),
    )
    .await;
    assert_eq!(
        obs_text(&out),
        "Parameter `file_text` is required for command: create."
    );

    let out = run(&t, &ctx, json!({"command": "view", "path": "b.txt"})).await;
    assert_eq!(obs_text(&out), format!("Invalid `path` parameter: b.txt. The path should be an absolute path. Maybe you meant {ps}?"));
    assert!(out
        .llm_text()
        .starts_with("[An error occurred during execution.]\n"));
    let missing = ctx
        .working_dir
        .join("nope.txt")
        .to_string_lossy()
        .to_string();
    let out = run(&t, &ctx, json!({"command": "view", "path": missing})).await;
    assert_eq!(obs_text(&out), format!("Invalid `path` parameter: {missing}. The path {missing} does not exist. Please provide a valid path."));
    let wd = ctx.working_dir.to_string_lossy().to_string();
    let out = run(
        &t,
        &ctx,
        json!({"command": "insert", "path": wd, "insert_line": 0, "new_str": "x"}),
    )
    .await;
    assert!(obs_text(&out)
        .ends_with("is a directory and only the `view` command can be used on directories."));
    std::fs::write(ctx.working_dir.join("bin.dat"), [0u8, 1, 2, 3, 0, 0]).unwrap_or_default();
    let out = run(
        &t,
        &ctx,
        json!({"command": "view", "path": format!("{wd}/bin.dat")}),
    )
    .await;
    assert!(
        obs_text(&out).contains("File appears to be binary"),
        "{}",
        obs_text(&out)
    );
}

#[tokio::test]
async fn view_directory_two_levels_without_hidden() {
    let (_d, ctx) = ctx();
    let t = FileEditorTool::new(&ctx.working_dir);
    let wd = ctx.working_dir.clone();
    for d in ["src/deep/deeper", ".git"] {
        std::fs::create_dir_all(wd.join(d)).unwrap_or_default();
    }
    for f in [
        "README.md",
        "src/main.rs",
        "src/.hidden",
        "src/deep/x.rs",
        ".env",
    ] {
        std::fs::write(wd.join(f), "x").unwrap_or_default();
    }
    let w = wd.to_string_lossy().to_string();
    let out = run(&t, &ctx, json!({"command": "view", "path": w})).await;
    assert_eq!(
        obs_text(&out),
        format!("Here's the files and directories up to 2 levels deep in {w}, excluding hidden items:\n{w}/\n{w}/README.md\n{w}/src/\n{w}/src/deep/\n{w}/src/main.rs\n\n2 hidden files/directories in this directory are excluded. You can use 'ls -la {w}' to see them.")
    );
}
