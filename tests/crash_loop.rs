//! The crash loop of the reliability checks: the server is killed with SIGKILL at random moments
//! of agent runs (scripted LLM) and restarted on the same state, again and again. After every
//! restart: every conversation loads, every event a WebSocket client was sent is on disk
//! (`events/search` lists it), no torn or temp file is left on disk, each repair is logged
//! once, no process of the killed server is left running, and a run continues to `finished`.
//! `AGENT_SERVER_CRASH_LOOP_KILLS` sets the number of kills (default 8; the long mode by hand:
//! 100).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMsg;

use crate::support::mock_llm::MockLlm;
use crate::support::{torn_or_temp_files, ServerOptions, TestServer};

async fn call(
    srv: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = srv.client().request(method, format!("{}{path}", srv.url));
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

async fn listed_ids(srv: &TestServer, id: &str) -> HashSet<String> {
    let mut out = HashSet::new();
    let mut page = String::new();
    loop {
        let (code, v) = call(
            srv,
            reqwest::Method::GET,
            &format!("/api/conversations/{id}/events/search?limit=100{page}"),
            None,
        )
        .await;
        assert_eq!(code, 200, "{v}");
        for e in v["items"].as_array().unwrap() {
            out.insert(e["id"].as_str().unwrap().to_string());
        }
        match v["next_page_id"].as_str() {
            Some(p) => page = format!("&page_id={p}"),
            None => return out,
        }
    }
}

/// Start time of a process (clock ticks since boot, field 22 of `/proc/<pid>/stat`).
fn start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    after_name
        .split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The paths of the repairs a server's log reports (torn event files set aside, temp files
/// removed).
fn repairs_logged(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            l.contains("set aside a torn event file")
                || l.contains("removed the temp file of a write a crash interrupted")
        })
        .filter_map(|l| {
            let at = l.find(" path=")? + " path=".len();
            l[at..].split_whitespace().next().map(str::to_string)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing() {
    let kills: usize = std::env::var("AGENT_SERVER_CRASH_LOOP_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let state = tempfile::tempdir().unwrap();
    let work = state.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let opts = ServerOptions::on_state(state.path());
    let marker = agent_server::exec::orphans::marker_value(&[
        &state.path().join("conversations"),
        &state.path().join("bash_events"),
    ]);
    let llm = MockLlm::start().await;
    let mut srv = TestServer::start_with(opts.clone());
    let mut seen: HashMap<String, Arc<Mutex<HashSet<String>>>> = HashMap::new();
    let mut rng = rand::rng();
    let mut repairs: HashMap<String, usize> = HashMap::new();
    for round in 0..kills {
        let (code, info) = call(
            &srv,
            reqwest::Method::POST,
            "/api/conversations",
            Some(json!({
                "agent": llm.agent(),
                "workspace": {"working_dir": work.display().to_string(), "kind": "LocalWorkspace"},
                "max_iterations": 1000,
                "stuck_detection_thresholds": {"ignored": true},
                "stuck_detection": false,
            })),
        )
        .await;
        assert_eq!(code, 201, "{info}");
        let id = info["id"].as_str().unwrap().to_string();
        // A client on the events socket records every persisted event it is sent.
        let got = Arc::new(Mutex::new(HashSet::new()));
        seen.insert(id.clone(), got.clone());
        let url = format!(
            "{}/sockets/events/{id}",
            srv.url.replace("http://", "ws://")
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        tokio::spawn(async move {
            while let Some(Ok(WsMsg::Text(t))) = ws.next().await {
                let Ok(v) = serde_json::from_str::<Value>(&t) else {
                    continue;
                };
                if v["kind"] == "ConversationStateUpdateEvent" && v["key"] == "full_state" {
                    continue; // snapshots are not events of the log
                }
                if let Some(id) = v["id"].as_str() {
                    got.lock().unwrap().insert(id.to_string());
                }
            }
        });
        let (code, v) = call(
            &srv,
            reqwest::Method::POST,
            &format!("/api/conversations/{id}/events"),
            Some(json!({"role": "user", "content": [{"type": "text",
                "text": format!("[[mock:loop sleep=0.02]] round {round}")}], "run": true})),
        )
        .await;
        assert_eq!(code, 200, "{v}");
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..700))).await;
        srv.stop_with(nix::sys::signal::Signal::SIGKILL);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The check below is only worth something if the client was sent events.
        let sent = seen[&id].lock().unwrap().len();
        assert!(sent >= 2, "round {round}: the client saw {sent} events");

        srv = TestServer::start_with(opts.clone());
        let server_start = start_ticks(srv.pid());
        for (cid, got) in &seen {
            let (code, v) = call(
                &srv,
                reqwest::Method::GET,
                &format!("/api/conversations/{cid}"),
                None,
            )
            .await;
            assert_eq!(
                code, 200,
                "round {round}: conversation {cid} does not load: {v}"
            );
            let listed = listed_ids(&srv, cid).await;
            let missing: Vec<String> = got
                .lock()
                .unwrap()
                .iter()
                .filter(|e| !listed.contains(*e))
                .cloned()
                .collect();
            assert!(
                missing.is_empty(),
                "round {round}: sent but not on disk: {missing:?}"
            );
        }
        // No torn file is left among the events and no temp file of an interrupted write.
        let leftovers = torn_or_temp_files(&state.path().join("conversations"));
        if !leftovers.is_empty() {
            // A temp file may be a write of the new server in flight: only one still there
            // a moment later is a leftover.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let again = torn_or_temp_files(&state.path().join("conversations"));
            let stuck: Vec<_> = leftovers.iter().filter(|p| again.contains(*p)).collect();
            assert!(stuck.is_empty(), "round {round}: left on disk: {stuck:?}");
        }
        // Each repair is said once, at the restart that made it.
        for path in repairs_logged(&srv.log()) {
            *repairs.entry(path).or_insert(0) += 1;
        }
        // Nothing of the killed server survives its successor's start.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let old: Vec<u32> = agent_server::exec::orphans::marked(&marker)
                .into_iter()
                .filter(|pid| start_ticks(*pid) < server_start)
                .collect();
            if old.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: left running: {old:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let repeated: Vec<_> = repairs.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "repairs said more than once: {repeated:?}"
    );
    println!(
        "{kills} kills: {} leftovers repaired (torn event files set aside, temp files removed)",
        repairs.len()
    );
    // A run continues after the last restart: a fresh message runs to the end.
    let last = seen.keys().next().unwrap().clone();
    let (code, v) = call(
        &srv,
        reqwest::Method::POST,
        &format!("/api/conversations/{last}/events"),
        Some(json!({"role": "user", "content": [{"type": "text", "text": "[[mock:echo]] after the crashes"}], "run": true})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = call(
            &srv,
            reqwest::Method::GET,
            &format!("/api/conversations/{last}"),
            None,
        )
        .await;
        if v["execution_status"] == "finished" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the run after the crashes did not finish: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
