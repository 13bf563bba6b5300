//! Server details, auth on REST, error bodies.

use crate::support::{call, ServerOptions, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn health_alive_ready_and_server_info() {
    let srv = TestServer::start();
    let c = srv.client();
    for (path, want) in [("/health", "ok"), ("/alive", "ok"), ("/ready", "ready")] {
        let r = c.get(format!("{}{path}", srv.url)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], want, "{path}");
    }
    let info: Value = c
        .get(format!("{}/server_info", srv.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for field in [
        "uptime",
        "idle_time",
        "version",
        "usable_tools",
        "capabilities",
        "docs",
    ] {
        assert!(
            info.get(field).is_some(),
            "server_info lacks {field}: {info}"
        );
    }
    // The version fields name the reference release we are wire-compatible with; our own
    // version is reported beside them.
    for field in [
        "version",
        "sdk_version",
        "tools_version",
        "workspace_version",
    ] {
        assert_eq!(info[field], "1.58.2", "{field}: {info}");
    }
    assert_eq!(info["implementation"]["name"], "agent-server");
    assert_eq!(
        info["implementation"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{info}"
    );
}

#[tokio::test]
async fn unknown_route_and_wrong_method_bodies() {
    let srv = TestServer::start();
    let c = srv.client();
    let r = c
        .get(format!("{}/no/such/route", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({"detail": "Not Found"})
    );
    let r = c.post(format!("{}/health", srv.url)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({"detail": "Method Not Allowed"})
    );
}

#[tokio::test]
async fn api_routes_need_the_key_health_does_not() {
    let srv = TestServer::start_with(ServerOptions {
        api_key: Some("sekrit".into()),
        ..Default::default()
    });
    let anon = reqwest::Client::new();
    let r = anon
        .get(format!("{}/api/bash/bash_events/search", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({"detail": "Unauthorized"})
    );
    let r = anon
        .get(format!("{}/api/bash/bash_events/search", srv.url))
        .header("X-Session-API-Key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        anon.get(format!("{}/health", srv.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        anon.get(format!("{}/server_info", srv.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn openapi_document_is_served() {
    let srv = TestServer::start();
    let get = |path: &str| srv.client().get(format!("{}{path}", srv.url)).send();
    let r = get("/openapi.json").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    // Every reference resolves (schemathesis skipped parameters whose schema was missing).
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    match (k.as_str(), x) {
                        ("$ref", Value::String(r)) => out.push(r.clone()),
                        _ => refs(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&v, &mut all);
    for r in all {
        let name = r.trim_start_matches("#/components/schemas/");
        assert!(
            v["components"]["schemas"].get(name).is_some(),
            "unresolvable {r}"
        );
    }
    for page in ["/docs", "/redoc"] {
        let docs = get(page).await.unwrap();
        assert_eq!(docs.status(), 200);
        assert!(docs.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = docs.text().await.unwrap();
        // The page embeds the whole document for its forms: every operation can be tried.
        let start = html
            .find(r#"<script id="spec" type="application/json">"#)
            .unwrap();
        let rest = &html[start..];
        let json = &rest[rest.find('>').unwrap() + 1..rest.find("</script>").unwrap()];
        let embedded: Value = serde_json::from_str(json).unwrap();
        assert_eq!(embedded["paths"], v["paths"], "{page}");
        assert!(
            html.contains("addEventListener(\"submit\""),
            "{page}: no request form"
        );
    }
}

#[tokio::test]
async fn log_written_to_a_file_is_plain_text() {
    let srv = TestServer::start();
    let r = srv
        .client()
        .get(format!("{}/health", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = srv.log();
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log written to a file: {log:?}"
    );
}

/// Over the configured body limit every route answers the same JSON 413; uploads stream to disk
/// and are not limited; under the default limit a body of several MiB passes.
#[tokio::test]
async fn body_limit_is_one_json_413_everywhere() {
    let srv = TestServer::start_with(ServerOptions {
        env: vec![("OH_MAX_REQUEST_BODY_BYTES".into(), "4096".into())],
        ..Default::default()
    });
    let c = srv.client();
    let big = serde_json::json!({"command": format!("true {}", "x".repeat(5000))});
    let id = uuid::Uuid::new_v4();
    for path in [
        "/api/bash/execute_bash_command".to_string(),
        "/api/bash/start_bash_command".to_string(),
        "/api/conversations".to_string(),
        format!("/api/conversations/{id}/events"),
        format!("/api/conversations/{id}/fork"),
    ] {
        let r = c
            .post(format!("{}{path}", srv.url))
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["detail"]
                .as_str()
                .unwrap()
                .contains("OH_MAX_REQUEST_BODY_BYTES"),
            "{path}: {v}"
        );
    }
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(vec![7u8; 100_000]).file_name("x.bin"),
    );
    let target = srv.workdir().join("uploaded.bin");
    let r = c
        .post(format!("{}/api/file/upload", srv.url))
        .query(&[("path", target.to_str().unwrap())])
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 100_000);

    // The default limit (64 MiB) takes bodies the old fixed 2 MiB cap refused.
    let srv = TestServer::start();
    let ids: Vec<String> = (0..100_000)
        .map(|i| format!("no-such-event-{i:020}"))
        .collect();
    let r = srv
        .client()
        .get(format!("{}/api/bash/bash_events/", srv.url))
        .json(&ids)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Vec<Value> = r.json().await.unwrap();
    assert_eq!(v.len(), 100_000);
}

/// Sends one HTTP/1.1 request with a body on `stream` and reads the answer's head and body.
async fn raw_request(
    stream: &mut tokio::net::TcpStream,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text;
            }
        }
        assert!(n > 0, "connection closed mid-answer: {text}");
    }
}

/// An answer given without reading the request body (401, unknown route, 405) says
/// `Connection: close`, because the server cannot reuse that connection; an answer after the
/// body was read keeps the connection open for the next request.
#[tokio::test]
async fn early_answers_close_the_connection_explicitly() {
    let srv = TestServer::start_with(ServerOptions {
        api_key: Some("k-early".into()),
        ..Default::default()
    });
    let addr = srv.url.trim_start_matches("http://").to_string();
    let body = r#"{"command": "echo hi"}"#;
    for (method, path, headers, status) in [
        (
            "POST",
            "/api/bash/execute_bash_command",
            "X-Session-API-Key: wrong\r\n",
            "401",
        ),
        ("POST", "/no/such/route", "", "404"),
        ("POST", "/health", "", "405"),
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let answer = raw_request(&mut s, method, path, headers, body).await;
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .to_ascii_lowercase();
        assert!(head.starts_with(&format!("http/1.1 {status}")), "{head}");
        assert!(head.contains("connection: close"), "{path}: {head}");
    }
    // Read bodies: the same connection serves two commands.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    for _ in 0..2 {
        let answer = raw_request(
            &mut s,
            "POST",
            "/api/bash/execute_bash_command",
            "X-Session-API-Key: k-early\r\n",
            body,
        )
        .await;
        let head = answer
            .split("\r\n\r\n")
            .next()
            .unwrap()
            .to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{answer}");
        assert!(!head.contains("connection: close"), "{head}");
        assert!(answer.contains("hi\\n"), "{answer}");
    }
}

/// Reads from `s` until the peer closes it (true) or `wait` passes (false).
async fn closed_by_peer(s: &mut tokio::net::TcpStream, wait: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Idle and half-sent connections, and keep-alive ones idle after a request, are closed after
/// the header-read timeout, and a flood over the connection cap gets a quick 503 instead of
/// hanging; afterwards `/health` answers again.
#[tokio::test]
async fn idle_and_half_sent_connections_are_closed_and_floods_capped() {
    use tokio::io::AsyncWriteExt;
    let srv = TestServer::start_with(ServerOptions {
        env: vec![
            // Long enough that the flood below outlives the probes on a loaded machine.
            ("OH_HEADER_READ_TIMEOUT_SECONDS".into(), "8".into()),
            ("OH_MAX_CONNECTIONS".into(), "20".into()),
        ],
        ..Default::default()
    });
    let addr = srv.url.trim_start_matches("http://").to_string();
    let wait = std::time::Duration::from_secs(16);

    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(&addr).await.unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A keep-alive connection that was served once, then left idle.
    let mut served = tokio::net::TcpStream::connect(&addr).await.unwrap();
    served
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(
        wait,
        tokio::io::AsyncReadExt::read_exact(&mut served, &mut head),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    assert!(
        closed_by_peer(&mut idle, wait).await,
        "idle connection kept"
    );
    assert!(
        closed_by_peer(&mut half, wait).await,
        "half-sent request kept"
    );
    assert!(
        closed_by_peer(&mut served, wait).await,
        "keep-alive connection left idle after a request kept"
    );

    // Twenty idle connections fill the cap; the next ones are told so at once. Until the
    // server has accepted all twenty (a loaded machine may lag), a probe may still be served;
    // a flood whose connections timed out first is replaced (three floods at most).
    let mut flood = Vec::new();
    let mut answer = String::new();
    'floods: for _ in 0..3 {
        flood.clear();
        for _ in 0..20 {
            flood.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
        }
        // Probes for at most ~4 s, within the 8 s the flood's connections live.
        for _ in 0..40 {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut bytes = Vec::new();
            tokio::time::timeout(
                wait,
                tokio::io::AsyncReadExt::read_to_end(&mut s, &mut bytes),
            )
            .await
            .unwrap()
            .unwrap();
            answer = String::from_utf8_lossy(&bytes).into_owned();
            if answer.starts_with("HTTP/1.1 503") {
                break 'floods;
            }
        }
    }
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // The flood times out; the server then serves again.
    for mut f in flood {
        assert!(closed_by_peer(&mut f, wait).await);
    }
    let r = srv
        .client()
        .get(format!("{}/health", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Every operation of the reference's contract is either declared in our `/openapi.json` with
/// the reference's operation id, or listed in the README as not served (never both), and every
/// declared reference operation is routed (not answered by the router's 404/405 fallbacks).
#[tokio::test]
async fn every_reference_operation_is_declared_or_named_in_the_readme() {
    let contract: Value =
        serde_json::from_str(include_str!("../src/server/contract/openapi-1.58.2.json")).unwrap();
    let readme = include_str!("../README.md");
    let section = readme
        .split("<!-- not-served:start -->")
        .nth(1)
        .and_then(|s| s.split("<!-- not-served:end -->").next())
        .expect("README lists the operations not served");
    let listed: std::collections::BTreeSet<String> = section
        .lines()
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_string)
        .collect();
    let srv = TestServer::start();
    let ours: Value = srv
        .client()
        .get(format!("{}/openapi.json", srv.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut declared = 0;
    for (path, item) in contract["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let key = format!("{} {path}", method.to_uppercase());
            let mine = &ours["paths"][path][method];
            if listed.contains(&key) {
                assert!(mine.is_null(), "{key} is declared and listed as not served");
                continue;
            }
            assert_eq!(
                mine["operationId"], op["operationId"],
                "{key}: not declared with the reference's operation id, nor listed in the README"
            );
            declared += 1;
            // Routed: a request reaches a handler (any answer but the fallbacks' 405, or their
            // 404 for a path without parameters; with parameters a handler may answer 404).
            let url = format!("{}{}", srv.url, path.replace('{', "x").replace('}', ""));
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = srv.client().request(m, url).send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            let fallback_404 =
                status == 404 && body == r#"{"detail":"Not Found"}"# && !path.contains('{');
            assert!(
                status != 405 && !fallback_404,
                "{key} is declared but not routed ({status} {body})"
            );
        }
    }
    assert_eq!(declared + listed.len(), 177);
}

/// Deferred init: dormant (503 on `/api/*`, `/health` fine) even where the configured paths
/// cannot be written yet, `POST /api/init` checked against the secret key, a failed attempt
/// reported and retried, then the delivered session key and paths are in force.
#[tokio::test]
async fn deferred_init_from_dormant_to_ready() {
    let srv = TestServer::start_with(crate::support::ServerOptions {
        env: vec![
            ("OH_DEFERRED_INIT".into(), "true".into()),
            ("OH_SECRET_KEY".into(), "boot-key".into()),
            (
                "OH_CONVERSATIONS_PATH".into(),
                "/proc/not-writable/conversations".into(),
            ),
        ],
        ..Default::default()
    });
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", srv.url)).send();
    let init = |body: Value, key: &str| {
        http.post(format!("{}/api/init", srv.url))
            .header("X-Init-API-Key", key)
            .json(&body)
            .send()
    };
    let status = get("/api/init")
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(status, json!({"state": "dormant", "error": null}));
    let r = get("/api/workspaces").await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("deferred-init state 'dormant'"));
    assert_eq!(get("/health").await.unwrap().status(), 200);
    assert_eq!(init(json!({}), "wrong").await.unwrap().status(), 401);
    assert_eq!(
        init(json!({"bogus": 1}), "boot-key")
            .await
            .unwrap()
            .status(),
        422
    );

    let bad = json!({"conversations_path": "/proc/no-such-dir/convs"});
    assert_eq!(init(bad, "boot-key").await.unwrap().status(), 500);
    let status = get("/api/init")
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(status["state"], "dormant");
    assert!(status["error"].is_string(), "{status}");

    let convs = srv.root_path().join("delivered/conversations");
    let body = json!({"session_api_keys": ["user-key"], "conversations_path": convs.to_string_lossy(),
                      "env": {"DELIVERED_VAR": "v-17"}});
    let r = init(body, "boot-key").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"state": "ready", "error": null})
    );
    assert_eq!(get("/api/workspaces").await.unwrap().status(), 401);
    let with_key = |path: &str| {
        http.get(format!("{}{path}", srv.url))
            .header("X-Session-API-Key", "user-key")
            .send()
    };
    assert_eq!(with_key("/api/workspaces").await.unwrap().status(), 200);
    assert_eq!(init(json!({}), "boot-key").await.unwrap().status(), 400);
    // Commands see the delivered environment; conversations live under the delivered path.
    let r = http
        .post(format!("{}/api/bash/execute_bash_command", srv.url))
        .header("X-Session-API-Key", "user-key")
        .json(&json!({"command": "echo \"$DELIVERED_VAR:${OH_AGENT_SERVER_CHILD_OF:+marked}\""}))
        .send()
        .await
        .unwrap();
    // ...and the orphan marker (a restarted server can find them).
    assert!(r.text().await.unwrap().contains("v-17:marked"));
    assert!(convs.is_dir());
}

/// An invalid `OH_ALLOW_CORS_ORIGIN_REGEX` stops the server at start-up, non-zero, with a
/// message naming the variable (it used to be dropped silently).
#[test]
fn an_invalid_cors_regex_stops_the_server_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agent-server"))
        .args(["--port", "0"])
        .current_dir(dir.path())
        .env("OH_ALLOW_CORS_ORIGIN_REGEX", "https://(a|b")
        .env("OH_PERSISTENCE_DIR", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started with an invalid CORS regex");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("OH_ALLOW_CORS_ORIGIN_REGEX"), "{stderr}");
}

/// `idle_time` counts from the last work the reference counts (commands, file transfers, git
/// reads); browsing the home directory, listing sub-directories and searching repositories do
/// not reset it, as there (an idle-reaping platform would otherwise keep a sandbox alive).
#[tokio::test]
async fn browsing_does_not_reset_the_idle_time_and_file_work_does() {
    let srv = TestServer::start();
    let idle = || async {
        let (code, info) = call(&srv, Method::GET, "/server_info", None).await;
        assert_eq!(code, 200);
        info["idle_time"].as_f64().expect("idle_time")
    };
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    for path in [
        "/api/file/home".to_string(),
        format!("/api/file/search_subdirs?path={}", srv.workdir().display()),
        "/api/git/repositories/search?provider=github".to_string(),
    ] {
        let (code, answer) = call(&srv, Method::GET, &path, None).await;
        assert_eq!(code, 200, "{path}: {answer}");
    }
    let after_browsing = idle().await;
    assert!(
        after_browsing >= 2.0,
        "browsing reset idle_time: {after_browsing}"
    );
    let file = srv.workdir().join("f.txt");
    std::fs::write(&file, "x").unwrap();
    let (code, _) = call(
        &srv,
        Method::GET,
        &format!("/api/file/download?path={}", file.display()),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let after_download = idle().await;
    assert!(
        after_download < 2.0,
        "a download resets idle_time: {after_download}"
    );
}
