//! `/api/git/*` against the real binary: changes and diffs (added, modified, deleted, renamed,
//! nested repositories), explicit refs, commits, and the non-repository answers.

use std::path::Path;

use serde_json::{json, Value};

use crate::support::TestServer;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "user.name=tester",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

async fn get(server: &TestServer, route: &str, query: &[(&str, &str)]) -> (u16, Value) {
    let resp = server
        .client()
        .get(format!("{}{route}", server.url))
        .query(query)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A repository with one commit, then: a modification, a deletion, a staged rename, an
/// untracked file (with a space), and a nested repository with its own change.
fn scenario(root: &Path) -> std::path::PathBuf {
    let repo = root.join("repo");
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    git(&repo, &["init", "-q"]);
    std::fs::write(repo.join("modified.txt"), "one\ntwo\nthree\n").unwrap();
    std::fs::write(repo.join("deleted.txt"), "bye\n").unwrap();
    std::fs::write(
        repo.join("old name.txt"),
        "a file long enough to be seen as a rename\n",
    )
    .unwrap();
    std::fs::write(repo.join("sub/kept.txt"), "same\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "base"]);
    std::fs::write(repo.join("modified.txt"), "one\nTWO\nthree\n").unwrap();
    std::fs::remove_file(repo.join("deleted.txt")).unwrap();
    git(&repo, &["mv", "old name.txt", "new name.txt"]);
    std::fs::write(repo.join("added file.txt"), "brand new\n").unwrap();

    let nested = repo.join("nested");
    std::fs::create_dir_all(&nested).unwrap();
    git(&nested, &["init", "-q"]);
    std::fs::write(nested.join("inner.txt"), "v1\n").unwrap();
    git(&nested, &["add", "-A"]);
    git(&nested, &["commit", "-qm", "inner"]);
    std::fs::write(nested.join("inner.txt"), "v2\n").unwrap();
    repo
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_owned(),
                c["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn changes_cover_every_kind_and_nested_repositories() {
    let server = TestServer::start();
    let repo = scenario(&server.workdir());
    let expected = owned(&[
        ("added file.txt", "ADDED"),
        ("deleted.txt", "DELETED"),
        ("modified.txt", "UPDATED"),
        ("nested/inner.txt", "UPDATED"),
        ("new name.txt", "ADDED"),
        ("old name.txt", "DELETED"),
    ]);
    for r in [None, Some("HEAD")] {
        let mut q = vec![("path", repo.to_str().unwrap())];
        if let Some(r) = r {
            q.push(("ref", r));
        }
        let (status, body) = get(&server, "/api/git/changes", &q).await;
        assert_eq!(status, 200);
        assert_eq!(pairs(&body), expected, "ref={r:?}");
    }
    // The client's `"."` form and a sub-directory (paths relative to it).
    let dotted = format!("{}/.", repo.display());
    let (_, body) = get(&server, "/api/git/changes", &[("path", &dotted)]).await;
    assert_eq!(pairs(&body), expected);
    std::fs::write(repo.join("sub/kept.txt"), "edited\n").unwrap();
    let (_, body) = get(
        &server,
        "/api/git/changes",
        &[("path", repo.join("sub").to_str().unwrap())],
    )
    .await;
    assert_eq!(pairs(&body), owned(&[("kept.txt", "UPDATED")]));

    // A directory that only holds repositories reports theirs, prefixed.
    let parent = repo.parent().unwrap();
    let (status, body) = get(
        &server,
        "/api/git/changes",
        &[("path", parent.to_str().unwrap())],
    )
    .await;
    assert_eq!(status, 200);
    assert!(pairs(&body).contains(&("repo/modified.txt".into(), "UPDATED".into())));
}

#[tokio::test]
async fn changes_outside_repositories_and_unknown_refs() {
    let server = TestServer::start();
    let plain = server.workdir();
    std::fs::write(plain.join("f.txt"), "x").unwrap();
    let (status, body) = get(
        &server,
        "/api/git/changes",
        &[("path", plain.to_str().unwrap())],
    )
    .await;
    assert_eq!((status, body), (200, json!([])));
    let missing = plain.join("missing");
    let (status, body) = get(
        &server,
        "/api/git/changes",
        &[("path", missing.to_str().unwrap())],
    )
    .await;
    assert_eq!((status, body), (200, json!([])));
    let (status, _) = get(&server, "/api/git/changes", &[]).await;
    assert_eq!(status, 422);

    let repo = scenario(&server.workdir());
    let (status, body) = get(
        &server,
        "/api/git/changes",
        &[("path", repo.to_str().unwrap()), ("ref", "no-such-ref")],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["detail"],
        "Git command failed: git --no-pager rev-parse --verify 'no-such-ref^{commit}'"
    );

    // A fresh repository without commits: everything is an addition, with or without ref=HEAD.
    let fresh = server.workdir();
    git(&fresh, &["init", "-q"]);
    std::fs::write(fresh.join("first.txt"), "1\n").unwrap();
    for q in [vec![], vec![("ref", "HEAD")]] {
        let mut q = q;
        q.push(("path", fresh.to_str().unwrap()));
        let (status, body) = get(&server, "/api/git/changes", &q).await;
        assert_eq!(
            (status, body),
            (200, json!([{"status": "ADDED", "path": "first.txt"}]))
        );
    }
}

#[tokio::test]
async fn diffs_of_modified_added_deleted_and_foreign_files() {
    let server = TestServer::start();
    let repo = scenario(&server.workdir());
    let diff = |p: std::path::PathBuf, extra: Vec<(&'static str, String)>| {
        let server = &server;
        async move {
            let mut q: Vec<(&str, String)> = vec![("path", p.display().to_string())];
            q.extend(extra);
            let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
            get(server, "/api/git/diff", &q).await
        }
    };
    assert_eq!(
        diff(repo.join("modified.txt"), vec![]).await,
        (
            200,
            json!({"modified": "one\nTWO\nthree", "original": "one\ntwo\nthree"})
        )
    );
    assert_eq!(
        diff(repo.join("added file.txt"), vec![]).await,
        (200, json!({"modified": "brand new", "original": ""}))
    );
    assert_eq!(
        diff(repo.join("deleted.txt"), vec![]).await,
        (200, json!({"modified": "", "original": "bye"}))
    );
    assert_eq!(
        diff(repo.join("nested/inner.txt"), vec![("ref", "HEAD".into())]).await,
        (200, json!({"modified": "v2", "original": "v1"}))
    );
    let outside = server.workdir().join("plain.txt");
    std::fs::write(&outside, "x").unwrap();
    assert_eq!(
        diff(outside, vec![]).await,
        (200, json!({"modified": null, "original": null}))
    );
    let nowhere = repo.join("never.txt");
    let (status, body) = diff(nowhere.clone(), vec![]).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["detail"],
        format!("File does not exist: {}", nowhere.display())
    );
    let (status, body) = diff(repo.join("modified.txt"), vec![("ref", "nope".into())]).await;
    assert_eq!(status, 400);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .starts_with("Git command failed: "));

    let big = repo.join("big.txt");
    std::fs::write(&big, vec![b'x'; 1024 * 1024 + 1]).unwrap();
    let (status, body) = diff(big, vec![]).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["detail"],
        "File too large for git diff: 1048577 bytes (max: 1048576 bytes)"
    );

    let head = git(&repo, &["rev-parse", "HEAD"]);
    let (status, body) = diff(
        repo.join("modified.txt"),
        vec![("ref", "HEAD".into()), ("commit", head.clone())],
    )
    .await;
    assert_eq!(
        (status, body["detail"].clone()),
        (400, json!("'ref' and 'commit' are mutually exclusive"))
    );
    let (status, body) = diff(repo.join("modified.txt"), vec![("commit", "xyz".into())]).await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["query", "commit"]));
    // A commit diff reads both sides from git (trimmed): the root commit added the file.
    assert_eq!(
        diff(repo.join("deleted.txt"), vec![("commit", head.clone())]).await,
        (200, json!({"modified": "bye", "original": ""}))
    );
    // The repository's root is no file: empty sides, not a listing of its tree.
    let empty = json!({"modified": "", "original": ""});
    assert_eq!(diff(repo.clone(), vec![]).await, (200, empty.clone()));
    assert_eq!(
        diff(repo.clone(), vec![("commit", head)]).await,
        (200, empty)
    );
}

#[tokio::test]
async fn commits_and_commit_changes() {
    let server = TestServer::start();
    let repo = scenario(&server.workdir());
    git(&repo, &["commit", "-qam", "second: edits"]);
    let (status, page) = get(
        &server,
        "/api/git/commits",
        &[("path", repo.to_str().unwrap())],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(page["has_more"], false);
    let commits = page["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 2);
    assert_eq!(commits[0]["subject"], "second: edits");
    assert_eq!(commits[0]["author"], "tester");
    let sha = commits[0]["sha"].as_str().unwrap().to_owned();
    assert!(sha.starts_with(commits[0]["short_sha"].as_str().unwrap()));
    assert!(commits[0]["timestamp"].as_str().unwrap().contains('T'));

    let (_, page) = get(
        &server,
        "/api/git/commits",
        &[("path", repo.to_str().unwrap()), ("limit", "1")],
    )
    .await;
    assert_eq!(page["commits"].as_array().unwrap().len(), 1);
    assert_eq!(page["has_more"], true);
    let (status, _) = get(
        &server,
        "/api/git/commits",
        &[("path", repo.to_str().unwrap()), ("limit", "0")],
    )
    .await;
    assert_eq!(status, 422);
    let plain = server.workdir();
    assert_eq!(
        get(
            &server,
            "/api/git/commits",
            &[("path", plain.to_str().unwrap())]
        )
        .await,
        (200, json!({"commits": [], "has_more": false}))
    );

    let (status, changes) = get(
        &server,
        &format!("/api/git/commits/{sha}/changes"),
        &[("path", repo.to_str().unwrap())],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        pairs(&changes),
        owned(&[
            ("deleted.txt", "DELETED"),
            ("modified.txt", "UPDATED"),
            ("old name.txt", "DELETED"),
            ("new name.txt", "ADDED"),
        ])
    );
    let (status, body) = get(
        &server,
        "/api/git/commits/abcdef12/changes",
        &[("path", repo.to_str().unwrap())],
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .starts_with("Git command failed"));
    let (status, body) = get(
        &server,
        "/api/git/commits/not-hex/changes",
        &[("path", repo.to_str().unwrap())],
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["path", "sha"]));
}

#[tokio::test]
async fn repository_search_validates_the_provider() {
    let server = TestServer::start();
    let route = "/api/git/repositories/search";
    assert_eq!(
        get(&server, route, &[("provider", "github")]).await,
        (
            200,
            json!({"items": [], "next_page_id": null, "missing_token": true})
        )
    );
    assert_eq!(
        get(&server, route, &[("provider", "gitlab")]).await,
        (
            400,
            json!({"detail": "Repository discovery is not supported for provider 'gitlab'"})
        )
    );
    let (status, body) = get(&server, route, &[("provider", "svn")]).await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], "enum");
}
