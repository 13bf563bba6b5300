//! The bash part of the workspace API: routes, validation, streaming chunks, stop/timeout killing
//! the whole tree, concurrency, large output in bounded memory, restart, and the bash-events socket.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{ServerOptions, TestServer};

fn api(srv: &TestServer, path: &str) -> String {
    format!("{}/api/bash{path}", srv.url)
}

async fn start(srv: &TestServer, body: Value) -> Value {
    let r = srv
        .client()
        .post(api(srv, "/start_bash_command"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "start_bash_command {body}");
    r.json().await.unwrap()
}

async fn execute(srv: &TestServer, body: Value) -> Value {
    let r = srv
        .client()
        .post(api(srv, "/execute_bash_command"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "execute_bash_command {body}");
    r.json().await.unwrap()
}

async fn search(srv: &TestServer, query: &str) -> (u16, Value) {
    let r = srv
        .client()
        .get(format!("{}?{query}", api(srv, "/bash_events/search")))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// What the official client's `execute_command` does: poll outputs with `order__gt`, fail on a
/// duplicate id, stop at the first exit code. Returns (stdout, stderr, exit_code, polls).
async fn poll_like_the_client(srv: &TestServer, command_id: &str) -> (String, String, i64) {
    let (mut out, mut err) = (String::new(), String::new());
    let mut last_order = -1i64;
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut q = format!(
            "kind__eq=BashOutput&sort_order=TIMESTAMP&limit=100&command_id__eq={command_id}"
        );
        if last_order >= 0 {
            q.push_str(&format!("&order__gt={last_order}"));
        }
        let (status, page) = search(srv, &q).await;
        assert_eq!(status, 200, "{page}");
        let mut exit = None;
        for item in page["items"].as_array().unwrap() {
            let id = item["id"].as_str().unwrap().to_string();
            assert!(seen.insert(id.clone()), "duplicate event {id}");
            last_order = last_order.max(item["order"].as_i64().unwrap());
            out.push_str(item["stdout"].as_str().unwrap_or_default());
            err.push_str(item["stderr"].as_str().unwrap_or_default());
            if let Some(code) = item["exit_code"].as_i64() {
                exit = Some(code);
            }
        }
        if let Some(code) = exit {
            return (out, err, code);
        }
        assert!(Instant::now() < deadline, "command did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_hex_id(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[tokio::test]
async fn start_search_get_batch_and_clear() {
    let srv = TestServer::start();
    let c = srv.client();
    let cmd = start(
        &srv,
        json!({"command": "echo out; echo err 1>&2; exit 3", "timeout": 10}),
    )
    .await;
    assert_eq!(cmd["kind"], "BashCommand");
    assert_eq!(cmd["cwd"], Value::Null);
    assert_eq!(cmd["timeout"], 10);
    assert!(is_hex_id(&cmd["id"]), "{cmd}");
    assert!(cmd["timestamp"].as_str().unwrap().ends_with('Z'));
    let cid = cmd["id"].as_str().unwrap();
    let (out, err, code) = poll_like_the_client(&srv, cid).await;
    assert_eq!((out.as_str(), err.as_str(), code), ("out\n", "err\n", 3));

    let (_, page) = search(&srv, "").await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    assert_eq!(items[0], cmd);
    let output = &items[1];
    assert_eq!(output["kind"], "BashOutput");
    assert_eq!(output["command_id"], cmd["id"]);
    assert_eq!(output["order"], 0);
    assert!(is_hex_id(&output["id"]));
    assert_eq!(page["next_page_id"], Value::Null);

    // Files named as the reference names them (and the `.spares` directory of empty files for
    // later events).
    let mut names: Vec<String> = std::fs::read_dir(srv.root_path().join("bash_events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".spares")
        .collect();
    names.sort();
    assert_eq!(names.len(), 2);
    assert!(
        names[0].ends_with(&format!("_BashCommand_{cid}")),
        "{names:?}"
    );
    assert!(
        names[1].ends_with(&format!(
            "_BashOutput_{cid}_{}",
            output["id"].as_str().unwrap()
        )),
        "{names:?}"
    );
    assert!(names[0][..20].bytes().all(|b| b.is_ascii_digit()));

    // Paging: the cursor is the file name of the next event.
    let (_, first) = search(&srv, "limit=1").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    assert_eq!(first["next_page_id"], json!(names[1]));
    let (_, second) = search(&srv, &format!("limit=1&page_id={}", names[1])).await;
    assert_eq!(second["items"][0], *output);
    assert_eq!(second["next_page_id"], Value::Null);
    let (_, desc) = search(&srv, "sort_order=TIMESTAMP_DESC&limit=1").await;
    assert_eq!(desc["items"][0], *output);
    let (_, only_cmds) = search(&srv, "kind__eq=BashCommand").await;
    assert_eq!(only_cmds["items"].as_array().unwrap().len(), 1);
    let (_, none) = search(&srv, &format!("command_id__eq={cid}&order__gt=0")).await;
    assert_eq!(none["items"], json!([]));
    let (_, future) = search(&srv, "timestamp__gte=2999-01-01T00:00:00Z").await;
    assert_eq!(future["items"], json!([]));
    let (_, past) = search(&srv, "timestamp__lt=2000-01-01").await;
    assert_eq!(past["items"], json!([]));

    // One by id (hex only), and the batch form with a JSON body.
    let r = c
        .get(api(&srv, &format!("/bash_events/{cid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), cmd);
    let dashed = uuid::Uuid::parse_str(cid).unwrap().to_string();
    let r = c
        .get(api(&srv, &format!("/bash_events/{dashed}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "Not Found"})
    );
    let r = c
        .get(api(&srv, "/bash_events/"))
        .json(&json!([cid, "nope"]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!([cmd, null]));

    let r = c.delete(api(&srv, "/bash_events")).send().await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"cleared_count": 2})
    );
    let (_, empty) = search(&srv, "").await;
    assert_eq!(empty, json!({"items": [], "next_page_id": null}));
}

#[tokio::test]
async fn bad_input_gets_the_reference_errors() {
    let srv = TestServer::start();
    let c = srv.client();
    for (query, kind, field) in [
        ("kind__eq=Foo", "literal_error", "kind__eq"),
        ("command_id__eq=zz", "uuid_parsing", "command_id__eq"),
        (
            "timestamp__gte=bad",
            "datetime_from_date_parsing",
            "timestamp__gte",
        ),
        ("order__gt=1.5", "int_parsing", "order__gt"),
        ("sort_order=X", "enum", "sort_order"),
        ("limit=0", "greater_than", "limit"),
        ("limit=101", "less_than_equal", "limit"),
        ("limit=abc", "int_parsing", "limit"),
    ] {
        let (status, body) = search(&srv, query).await;
        assert_eq!(status, 422, "{query}: {body}");
        assert_eq!(body["detail"][0]["type"], kind, "{query}: {body}");
        assert_eq!(body["detail"][0]["loc"], json!(["query", field]), "{query}");
    }
    let (status, body) = search(&srv, "limit=0&kind__eq=Foo").await;
    assert_eq!(status, 422);
    assert_eq!(
        body["detail"].as_array().unwrap().len(),
        2,
        "all issues at once"
    );
    let (status, _) = search(&srv, "limit=5.0&page_id=unknown").await;
    assert_eq!(status, 200);

    for (body, kind) in [
        (&b"{bad"[..], "json_invalid"),
        (b"[1]", "model_attributes_type"),
        (b"{}", "missing"),
        (b"{\"command\": 5}", "string_type"),
        (b"{\"command\": \"x\", \"timeout\": 1.5}", "int_from_float"),
        (b"{\"command\": \"x\", \"cwd\": 5}", "string_type"),
        (b"", "missing"),
    ] {
        for route in ["/start_bash_command", "/execute_bash_command"] {
            let r = c
                .post(api(&srv, route))
                .header("content-type", "application/json")
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 422, "{route} {}", String::from_utf8_lossy(body));
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["detail"][0]["type"], kind, "{v}");
        }
    }
    for body in [json!([1]), json!({"a": 1})] {
        let r = c
            .get(api(&srv, "/bash_events/"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
    }
    let r = c.get(api(&srv, "/bash_events/")).send().await.unwrap();
    assert_eq!(r.status(), 422);

    let r = c
        .post(api(&srv, "/bash_commands/zz/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["detail"][0]["loc"], json!(["path", "command_id"]));
    let r = c
        .post(api(
            &srv,
            &format!("/bash_commands/{}/stop", uuid::Uuid::new_v4()),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .get(api(&srv, "/bash_events/0123456789abcdef0123456789abcdef"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A missing cwd is reported as the command's output, not as an HTTP error.
    let out = execute(&srv, json!({"command": "echo hi", "cwd": "/no/such/dir"})).await;
    assert_eq!(out["exit_code"], -1);
    assert_eq!(out["stdout"], Value::Null);
    let stderr = out["stderr"].as_str().unwrap();
    assert!(stderr.starts_with("Error executing command: "), "{stderr}");
    assert!(stderr.contains("/no/such/dir"), "{stderr}");
    assert!(srv.log().lines().all(|l| !l.contains("panicked")));
}

#[tokio::test]
async fn execute_joins_everything_and_honours_cwd() {
    let srv = TestServer::start();
    let dir = srv.workdir();
    let out = execute(
        &srv,
        json!({"command": "pwd; echo e >&2; echo x > here.txt; exit 7", "cwd": dir}),
    )
    .await;
    assert_eq!(out["kind"], "BashOutput");
    assert_eq!(out["exit_code"], 7);
    assert_eq!(out["stdout"], format!("{}\n", dir.display()));
    assert_eq!(out["stderr"], "e\n");
    assert!(dir.join("here.txt").exists());
    let out = execute(&srv, json!({"command": "true"})).await;
    assert_eq!(
        (out["stdout"].clone(), out["stderr"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(out["exit_code"], 0);
    // Invalid UTF-8 is replaced; multi-byte characters survive chunking (3 MB of them).
    let out = execute(&srv, json!({"command": "printf 'a\\377b'"})).await;
    assert_eq!(out["stdout"], "a\u{fffd}b");
    let out = execute(&srv, json!({"command": "yes 'é€😀' | head -n 300000"})).await;
    let stdout = out["stdout"].as_str().unwrap();
    assert_eq!(stdout.len(), 3_000_000);
    assert!(
        stdout == "é€😀\n".repeat(300_000),
        "multi-byte text damaged"
    );
    assert!(
        out["order"].as_i64().unwrap() >= 2,
        "3 MB must span several chunks: {}",
        out["order"]
    );
}

#[tokio::test]
async fn output_is_published_while_the_command_runs() {
    let srv = TestServer::start();
    let cmd = start(&srv, json!({"command": "echo first; sleep 3; echo second"})).await;
    let cid = cmd["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let first = loop {
        let (_, page) = search(&srv, &format!("command_id__eq={cid}")).await;
        if let Some(item) = page["items"].as_array().unwrap().first() {
            break item.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no output while the command runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first["stdout"], "first\n");
    assert_eq!(first["exit_code"], Value::Null);
    let (out, _, code) = poll_like_the_client(&srv, cid).await;
    assert_eq!((out.as_str(), code), ("first\nsecond\n", 0));
}

#[tokio::test]
async fn stop_and_timeout_kill_the_whole_tree() {
    let srv = TestServer::start();
    let dir = srv.workdir();
    let c = srv.client();
    // Each command leaves a grandchild that would write a file after 3 s.
    let tree = |name: &str| format!("(sleep 3; touch {name}) & sleep 100");
    let stopped = start(&srv, json!({"command": tree("stopped"), "cwd": dir})).await;
    let timed = start(
        &srv,
        json!({"command": tree("timed"), "cwd": dir, "timeout": 1}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sid = stopped["id"].as_str().unwrap();
    let r = c
        .post(api(&srv, &format!("/bash_commands/{sid}/stop")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"success": true}));
    let (_, _, code) = poll_like_the_client(&srv, sid).await;
    assert_eq!(code, -15);
    let (out, err, code) = poll_like_the_client(&srv, timed["id"].as_str().unwrap()).await;
    assert_eq!((out.as_str(), err.as_str(), code), ("", "", -1));
    // Idempotent; a dashed id works too.
    let dashed = uuid::Uuid::parse_str(sid).unwrap().to_string();
    let r = c
        .post(api(&srv, &format!("/bash_commands/{dashed}/stop")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        !dir.join("stopped").exists(),
        "a stopped command's grandchild survived"
    );
    assert!(
        !dir.join("timed").exists(),
        "a timed-out command's grandchild survived"
    );
}

#[tokio::test]
async fn concurrent_commands_keep_their_own_output() {
    let srv = TestServer::start();
    let runs = (0..20).map(|i| {
        let srv = &srv;
        async move {
            let body = json!({"command": format!("for j in $(seq 1 200); do echo c{i}-$j; echo e{i} >&2; done; exit {i}")});
            (i, execute(srv, body).await)
        }
    });
    for (i, out) in futures::future::join_all(runs).await {
        let expected: String = (1..=200).map(|j| format!("c{i}-{j}\n")).collect();
        assert_eq!(out["stdout"].as_str().unwrap(), expected, "command {i}");
        assert_eq!(
            out["stderr"].as_str().unwrap(),
            format!("e{i}\n").repeat(200)
        );
        assert_eq!(out["exit_code"], i);
    }
}

#[tokio::test]
async fn fifty_megabytes_in_bounded_memory() {
    let srv = TestServer::start();
    // `seq 1 6500000` prints 51,388,895 bytes.
    let n = 6_500_000u64;
    let cmd = start(&srv, json!({"command": format!("seq 1 {n}")})).await;
    let (out, err, code) = poll_like_the_client(&srv, cmd["id"].as_str().unwrap()).await;
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.len() > 50_000_000, "{} bytes", out.len());
    let mut expected = String::with_capacity(out.len());
    for i in 1..=n {
        expected.push_str(&i.to_string());
        expected.push('\n');
    }
    assert!(out == expected, "reassembled output differs");
    drop(expected);
    // The merged answer of execute_bash_command is streamed too.
    let r = srv
        .client()
        .post(api(&srv, "/execute_bash_command"))
        .json(&json!({"command": format!("seq 1 {n}")}))
        .send()
        .await
        .unwrap();
    let merged: Value = r.json().await.unwrap();
    assert!(
        merged["stdout"].as_str().unwrap() == out,
        "merged output differs"
    );
    let peak_mib = srv.peak_rss_kib() / 1024;
    assert!(
        peak_mib < 100,
        "server peak RSS {peak_mib} MiB for 50 MB of output"
    );
}

#[tokio::test]
async fn events_survive_a_restart() {
    let events = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        env: vec![(
            "OH_BASH_EVENTS_DIR".into(),
            events.path().display().to_string(),
        )],
        ..ServerOptions::default()
    };
    let srv = TestServer::start_with(opts.clone());
    // Three chunks (two full ones and the rest) and one small command.
    let big = start(
        &srv,
        json!({"command": "head -c 2500000 /dev/zero | tr '\\0' x"}),
    )
    .await;
    let big_id = big["id"].as_str().unwrap().to_string();
    let (out, _, _) = poll_like_the_client(&srv, &big_id).await;
    assert_eq!(out.len(), 2_500_000);
    let small = execute(&srv, json!({"command": "echo kept"})).await;
    drop(srv);

    let srv = TestServer::start_with(opts);
    let (out, _, code) = poll_like_the_client(&srv, &big_id).await;
    assert_eq!((out.len(), code), (2_500_000, 0));
    let (_, page) = search(&srv, &format!("command_id__eq={big_id}&order__gt=1")).await;
    let items = page["items"].as_array().unwrap();
    assert!(
        items.iter().all(|i| i["order"].as_i64().unwrap() > 1),
        "{}",
        items.len()
    );
    let r = srv
        .client()
        .get(api(
            &srv,
            &format!("/bash_events/{}", small["id"].as_str().unwrap()),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["stdout"], "kept\n");
    let r = srv
        .client()
        .post(api(&srv, &format!("/bash_commands/{big_id}/stop")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "a finished command from before the restart is known"
    );
    // New events sort after the old ones (run to its end: no write is left in flight).
    let newer = execute(&srv, json!({"command": "true"})).await;
    let (_, last) = search(
        &srv,
        "kind__eq=BashCommand&sort_order=TIMESTAMP_DESC&limit=1",
    )
    .await;
    assert_eq!(last["items"][0]["id"], newer["command_id"]);
    assert!(!has_temp_files(events.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_running_commands_and_records_their_end() {
    let events = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        env: vec![(
            "OH_BASH_EVENTS_DIR".into(),
            events.path().display().to_string(),
        )],
        ..ServerOptions::default()
    };
    let mut srv = TestServer::start_with(opts.clone());
    let dir = srv.workdir();
    let cmd = start(
        &srv,
        json!({"command": "(sleep 2; touch late) & sleep 100", "cwd": dir}),
    )
    .await;
    // A request waiting for a command gets its answer when the server stops.
    let waiting = tokio::spawn({
        let (client, url) = (srv.client(), api(&srv, "/execute_bash_command"));
        async move {
            let r = client
                .post(url)
                .json(&json!({"command": "sleep 100"}))
                .send()
                .await;
            r.unwrap().json::<Value>().await.unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    srv.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        t0.elapsed()
    );
    assert_eq!(waiting.await.unwrap()["exit_code"], -15);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(!dir.join("late").exists(), "a command outlived the server");
    let srv = TestServer::start_with(opts);
    let (_, _, code) = poll_like_the_client(&srv, cmd["id"].as_str().unwrap()).await;
    assert_eq!(code, -15, "the stopped command's final output was stored");
}

#[tokio::test]
async fn a_command_cut_off_by_a_crash_ends_after_the_restart() {
    let events = tempfile::tempdir().unwrap();
    let opts = ServerOptions {
        env: vec![(
            "OH_BASH_EVENTS_DIR".into(),
            events.path().display().to_string(),
        )],
        ..ServerOptions::default()
    };
    let mut srv = TestServer::start_with(opts.clone());
    let cmd = start(
        &srv,
        json!({"command": "echo before; sleep 5", "timeout": 6}),
    )
    .await;
    let cid = cmd["id"].as_str().unwrap().to_string();
    let finished = start(&srv, json!({"command": "echo done"})).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    srv.stop_with(nix::sys::signal::Signal::SIGKILL);
    let srv = TestServer::start_with(opts);
    let (out, err, code) = poll_like_the_client(&srv, &cid).await;
    assert_eq!((out.as_str(), code), ("before\n", -1), "{err}");
    assert!(err.contains("restarted"), "{err}");
    // A command that had finished is left alone.
    let fid = finished["id"].as_str().unwrap();
    let (_, page) = search(&srv, &format!("command_id__eq={fid}")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
}

/// True when a hidden file (a temporary one) is left in the events directory.
fn has_temp_files(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().any(|e| {
        let e = e.unwrap();
        e.file_name().to_string_lossy().starts_with('.') && e.file_type().unwrap().is_file()
    })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(srv: &TestServer, query: &str) -> Result<Ws, String> {
    let url = format!(
        "{}/sockets/bash-events{query}",
        srv.url.replace("http://", "ws://")
    );
    tokio_tungstenite::connect_async(url)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// Sends `v` as one text frame.
async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next text frame as JSON, or the close code.
async fn ws_next(ws: &mut Ws) -> Result<Value, Option<CloseCode>> {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(15), ws.next())
            .await
            .expect("frame in time");
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

#[tokio::test]
async fn websocket_auth_and_live_events() {
    let key = "bash-ws-key";
    let srv = TestServer::start_with(ServerOptions {
        api_key: Some(key.into()),
        ..ServerOptions::default()
    });
    // REST needs the key too.
    let r = reqwest::Client::new()
        .get(api(&srv, "/bash_events/search"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (status, _) = search(&srv, "").await;
    assert_eq!(status, 200);

    // No key: a non-auth first frame closes with 4001.
    let mut ws = ws_connect(&srv, "").await.unwrap();
    ws.send(Message::Text(
        json!({"command": "echo no"}).to_string().into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        ws_next(&mut ws).await.unwrap_err(),
        Some(CloseCode::from(4001))
    );
    // Wrong key in the first frame: 4001.
    let mut ws = ws_connect(&srv, "").await.unwrap();
    ws.send(Message::Text(
        json!({"type": "auth", "session_api_key": "wrong"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    assert_eq!(
        ws_next(&mut ws).await.unwrap_err(),
        Some(CloseCode::from(4001))
    );
    // Wrong key in the query: the handshake is refused.
    assert!(ws_connect(&srv, "?session_api_key=wrong").await.is_err());

    // Right key: live events, inbound requests, errors for bad frames.
    let mut ws = ws_connect(&srv, "").await.unwrap();
    send_json(&mut ws, json!({"type": "auth", "session_api_key": key})).await;
    ws.send(Message::Text(
        json!({"command": "echo via-socket"}).to_string().into(),
    ))
    .await
    .unwrap();
    let cmd = ws_next(&mut ws).await.unwrap();
    assert_eq!(
        (cmd["kind"].as_str(), cmd["command"].as_str()),
        (Some("BashCommand"), Some("echo via-socket"))
    );
    let out = ws_next(&mut ws).await.unwrap();
    assert_eq!(out["kind"], "BashOutput");
    assert_eq!(out["stdout"], "via-socket\n");
    assert_eq!(out["stderr"], Value::Null, "None values are sent");
    assert_eq!(out["exit_code"], 0);
    // Commands started over REST reach the socket too.
    start(&srv, json!({"command": "echo via-rest"})).await;
    assert_eq!(ws_next(&mut ws).await.unwrap()["kind"], "BashCommand");
    assert_eq!(ws_next(&mut ws).await.unwrap()["stdout"], "via-rest\n");
    ws.send(Message::Text(json!({"cmd": 1}).to_string().into()))
        .await
        .unwrap();
    let e = ws_next(&mut ws).await.unwrap();
    assert_eq!(
        (e["kind"].as_str(), e["code"].as_str()),
        (Some("BashError"), Some("ValidationError"))
    );
    ws.send(Message::Text("not json".into())).await.unwrap();
    assert_eq!(ws_next(&mut ws).await.unwrap()["kind"], "BashError");

    // The query key works, and resend_mode=all replays history first.
    let mut ws = ws_connect(&srv, &format!("?session_api_key={key}&resend_mode=all"))
        .await
        .unwrap();
    let first = ws_next(&mut ws).await.unwrap();
    assert_eq!(first, cmd, "replay starts with the oldest event");
}

#[tokio::test]
async fn many_clients_at_once_cost_little_memory() {
    let srv = TestServer::start();
    for _ in 0..3 {
        execute(&srv, json!({"command": "true"})).await;
    }
    let before = srv.rss_kib();
    // 64 clients, each on its own connection, run commands at the same time.
    let clients: Vec<_> = (0..64).map(|_| srv.client()).collect();
    let runs = clients.iter().map(|c| async {
        for _ in 0..3 {
            let r = c
                .post(api(&srv, "/execute_bash_command"))
                .json(&json!({"command": "echo hi"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["stdout"], "hi\n");
        }
    });
    futures::future::join_all(runs).await;
    let grown_mib = srv.peak_rss_kib().saturating_sub(before) / 1024;
    // About 2 MiB here; 42 MiB when a connection deep-copied the router (~300 KiB) and a
    // command held 128 KiB of read buffers.
    assert!(
        grown_mib < 12,
        "server RSS grew by {grown_mib} MiB for 64 concurrent clients"
    );
}

#[tokio::test]
async fn commands_do_not_see_the_servers_credentials() {
    let srv = TestServer::start_with(ServerOptions {
        api_key: Some("k-secret-1".into()),
        env: vec![
            ("OH_SESSION_API_KEYS_0".into(), "k-secret-1".into()),
            ("OH_SECRET_KEY".into(), "k-secret-3".into()),
            ("AGENT_SERVER_TEST_VISIBLE".into(), "shown".into()),
        ],
        ..ServerOptions::default()
    });
    for _ in 0..2 {
        let out = execute(&srv, json!({"command": "env"})).await;
        let env = out["stdout"].as_str().unwrap();
        assert!(!env.contains("k-secret"), "{env}");
        assert!(env.contains("AGENT_SERVER_TEST_VISIBLE=shown\n"), "{env}");
        assert!(env.contains("AI_AGENT=openhands\n"), "{env}");
    }
}

/// Even at `RUST_LOG=trace` the server's log never shows a session key, whether it came in a
/// header or in a WebSocket's first frame.
#[tokio::test]
async fn session_key_never_reaches_the_log_even_at_trace() {
    let key = "trace-key-4d1f0c9b7e";
    let srv = TestServer::start_with(ServerOptions {
        api_key: Some(key.into()),
        env: vec![("RUST_LOG".into(), "trace".into())],
        ..ServerOptions::default()
    });
    let (status, _) = search(&srv, "").await;
    assert_eq!(status, 200);
    let mut ws = ws_connect(&srv, "").await.unwrap();
    send_json(&mut ws, json!({"type": "auth", "session_api_key": key})).await;
    ws.send(Message::Text(
        json!({"command": "echo traced"}).to_string().into(),
    ))
    .await
    .unwrap();
    let cmd = ws_next(&mut ws).await.unwrap();
    assert_eq!(cmd["command"], "echo traced");
    drop(ws);
    let log = srv.log();
    assert!(
        log.contains("TRACE"),
        "not a trace log: {}",
        &log[..log.len().min(2000)]
    );
    assert!(!log.contains(key), "the key is in the log");
}

/// Commands of a server killed with SIGKILL keep running (nothing could stop them); the next
/// server on the same state kills them, grandchildren included, and says so once.
#[tokio::test]
async fn commands_left_by_a_killed_server_are_killed_at_the_next_start() {
    let state = tempfile::tempdir().unwrap();
    let opts = ServerOptions::on_state(state.path());
    let pid_file = state.path().join("bg.pid");
    let mut first = TestServer::start_with(opts.clone());
    start(
        &first,
        json!({"command": format!("sleep 300 & echo $! > '{}'; sleep 300", pid_file.display())}),
    )
    .await;
    let mut bg = String::new();
    for _ in 0..100 {
        bg = std::fs::read_to_string(&pid_file).unwrap_or_default();
        if !bg.trim().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bg = nix::unistd::Pid::from_raw(bg.trim().parse().unwrap());
    let alive = |pid| {
        // A zombie counts as gone: its /proc status says so.
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|s| !s.contains("State:\tZ"))
    };
    first.stop_with(nix::sys::signal::Signal::SIGKILL);
    assert!(
        alive(bg),
        "the background command died with the server already"
    );

    let second = TestServer::start_with(opts);
    for _ in 0..100 {
        if !alive(bg) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(bg), "the orphaned command is still running");
    let log = second.log();
    assert_eq!(
        log.matches("killed processes left running by an earlier server")
            .count(),
        1,
        "{log}"
    );
}

/// Zombies whose parent is `ppid` (host view of /proc).
fn zombies_of(ppid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("status")).ok())
        .filter(|s| s.contains("State:\tZ") && s.contains(&format!("\nPPid:\t{ppid}\n")))
        .count()
}

/// Runs the server as PID 1 of a new PID namespace, has a command leave orphans behind, and
/// returns how many zombies PID 1 still has after they ended.
async fn zombies_left_as_pid_1(no_init: bool) -> usize {
    let port = crate::support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc"])
        .arg(env!("CARGO_BIN_EXE_agent-server"))
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .current_dir(dir.path())
        .env_remove("SESSION_API_KEY")
        .env_remove("OH_SESSION_API_KEYS_0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if no_init {
        cmd.env("AGENT_SERVER_NO_INIT", "1");
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut unshare = cmd.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if client.get(format!("{url}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let pid1: u32 = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", unshare.id()))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let r = client
        .post(format!("{url}/api/bash/execute_bash_command"))
        .json(&json!({"command": "for i in 1 2 3 4; do (sleep 0.1 &); done; true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let zombies = zombies_of(pid1);
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(unshare.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let _ = unshare.wait();
    zombies
}

/// As PID 1 (a container without an init) the server reaps the orphans of commands; without its
/// built-in init they would stay zombies.
#[tokio::test]
#[ignore = "needs root for `unshare --pid`; run with --include-ignored"]
async fn as_pid_1_the_server_reaps_orphans() {
    assert!(
        zombies_left_as_pid_1(true).await >= 4,
        "the test cannot tell: no zombies even without the init"
    );
    assert_eq!(zombies_left_as_pid_1(false).await, 0);
}

/// With `OH_BASH_EVENTS_MAX` the server keeps only the newest events (on disk and in its index),
/// so history no longer grows memory without bound; the newest stay searchable.
#[tokio::test]
async fn bash_event_retention_keeps_the_newest() {
    let srv = TestServer::start_with(ServerOptions {
        env: vec![("OH_BASH_EVENTS_MAX".into(), "40".into())],
        ..ServerOptions::default()
    });
    let mut last = String::new();
    for i in 0..60 {
        let out = execute(&srv, json!({"command": format!("echo run-{i}")})).await;
        last = out["command_id"].as_str().unwrap_or_default().to_string();
    }
    assert!(!last.is_empty());
    let (status, page) = search(&srv, "limit=100").await;
    assert_eq!(status, 200);
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 40, "{page}");
    assert!(
        page.to_string().contains(&last),
        "the newest command is gone"
    );
    assert!(
        !page.to_string().contains("echo run-0\""),
        "the oldest is still there"
    );
    let files = std::fs::read_dir(srv.root_path().join("bash_events"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(files, 40);
}
