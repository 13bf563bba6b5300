//! The soak of the reliability checks (its own test binary, so that its load does not run beside
//! the other tests): for `AGENT_SERVER_SOAK_SECS` (default 45; by hand 600) the server runs
//! - 64 clients running bash commands in a loop (`execute_bash_command`, each answer checked),
//! - 200 WebSocket subscribers: 50 on `/sockets/bash-events` (the most the server takes, as the
//!   reference) and 150 on the events sockets of the conversations below,
//! - 20 conversations at a time running agent turns on the scripted mock LLM (each turn: the
//!   terminal runs a command, then `finish`); after 4 turns a conversation is deleted and a new
//!   one takes its place.
//!
//! Checked: no error anywhere (every answer as expected, every subscriber sent every event:
//! each bash subscriber every command and its result, each conversation subscriber exactly the
//! events `events/search` lists); the server's RSS flat after the warm-up (within 10%); file
//! descriptors and threads back to their idle baseline once the load stops; no zombie child and
//! no process left. Then connection floods (thousands of connections, half of them with a
//! request sent and never read) and a slowloris (headers trickled a line a second) leave
//! `/health` answering, every slowloris connection closed by the server, and RSS, fds and
//! threads back near idle. The figures are printed (`-- --nocapture`).

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as WsMsg;

use support::mock_llm::MockLlm;
use support::{ServerOptions, TestServer};

const KEY: &str = "soak-key-7f3a";
const BASH_CLIENTS: usize = 64;
const BASH_SUBSCRIBERS: usize = 50;
const CONVERSATIONS: usize = 20;
const CONVERSATION_SUBSCRIBERS: usize = 150;
const TURNS_PER_CONVERSATION: usize = 4;
/// Header-read timeout the server gets here (the default is 30 s), so the slowloris ends soon.
const HEADER_TIMEOUT_SECS: u64 = 10;

/// What the load saw: counts and the errors (the first ones kept for the report).
#[derive(Default)]
struct Tally {
    commands: AtomicU64,
    bash_events: AtomicU64,
    conversation_events: AtomicU64,
    turns: AtomicU64,
    conversations: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 20 {
            first.push(what);
        }
    }
}

fn debug() -> bool {
    std::env::var_os("AGENT_SERVER_SOAK_DEBUG").is_some()
}

/// One sample of the server process.
#[derive(Clone, Copy, Debug)]
struct Usage {
    rss_kib: u64,
    fds: usize,
    threads: u64,
}

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn usage(pid: u32) -> Usage {
    Usage {
        rss_kib: status_field(pid, "VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0),
        threads: status_field(pid, "Threads:"),
    }
}

/// The server's children: (pid, state letter).
fn children(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let mut fields = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .unwrap_or("")
            .split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next());
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if let (Some(state), Some(ppid)) = (state, ppid) {
            if ppid == pid {
                out.push((child, state));
            }
        }
    }
    out
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Waits (up to `secs`) until the server's fds and threads are at most the baseline's; the
/// usage then (or at the deadline).
async fn settle_to(pid: u32, baseline: Usage, secs: u64) -> Usage {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let now = usage(pid);
        if (now.fds <= baseline.fds && now.threads <= baseline.threads) || Instant::now() > deadline
        {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `GET /health` on a fresh connection: the status line's code (0 when none came in 10 s).
async fn health(addr: &str) -> u16 {
    let answer = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        String::from_utf8_lossy(&buf)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// One client running commands until `stop`, checking every answer.
async fn bash_client(srv: Arc<TestServer>, n: usize, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let client = srv.client();
    let url = format!("{}/api/bash/execute_bash_command", srv.url);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        // Mostly short commands; every eighth prints about 9 kB.
        let (command, want) = if i % 8 == 0 {
            let lines: String = (1..=2000).map(|k| format!("{k}\n")).collect();
            ("seq 1 2000".to_string(), lines)
        } else {
            let marker = format!("soak-{n}-{i}");
            (format!("echo {marker}"), format!("{marker}\n"))
        };
        let answer = async {
            let r = client
                .post(&url)
                .json(&json!({"command": command, "timeout": 60}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let body: Value = r.json().await.map_err(|e| e.to_string())?;
            if status != 200 || body["stdout"] != want.as_str() || body["exit_code"] != 0 {
                return Err(format!(
                    "{status}: {}",
                    &body.to_string()[..200.min(body.to_string().len())]
                ));
            }
            Ok(())
        };
        match answer.await {
            Ok(()) => {
                tally.commands.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tally.error(format!("command {command}: {e}")),
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(srv: &TestServer, path: &str) -> Result<Ws, String> {
    let url = format!(
        "{}{path}?session_api_key={KEY}",
        srv.url.replace("http://", "ws://")
    );
    tokio_tungstenite::connect_async(url)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// Counts of one bash-events subscriber: our commands and their final outputs.
#[derive(Default)]
struct BashSeen {
    commands: AtomicU64,
    results: AtomicU64,
    /// Command ids seen (only with `AGENT_SERVER_SOAK_DEBUG`).
    ids: Mutex<HashSet<String>>,
}

/// A bash-events subscriber: counts the soak's commands and final outputs until `stop`.
async fn bash_subscriber(
    mut ws: Ws,
    seen: Arc<BashSeen>,
    stop: tokio_util::sync::CancellationToken,
    tally: Arc<Tally>,
) {
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            () = stop.cancelled() => return,
        };
        match msg {
            Some(Ok(WsMsg::Text(t))) => {
                tally.bash_events.fetch_add(1, Ordering::Relaxed);
                let Ok(v) = serde_json::from_str::<Value>(&t) else {
                    tally.error(format!("bash subscriber: not JSON: {t}"));
                    continue;
                };
                match v["kind"].as_str() {
                    Some("BashCommand") => {
                        seen.commands.fetch_add(1, Ordering::Relaxed);
                        if debug() {
                            let id = v["id"].as_str().unwrap_or_default().to_string();
                            seen.ids.lock().unwrap().insert(id);
                        }
                    }
                    Some("BashOutput") if !v["exit_code"].is_null() => {
                        seen.results.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            Some(Ok(WsMsg::Close(frame))) => {
                // 1013: it fell behind further than the retention limit (`OH_BASH_EVENTS_MAX`).
                tally.error(format!("bash subscriber closed by the server: {frame:?}"));
                return;
            }
            Some(Ok(_)) => {}
            other => {
                tally.error(format!("bash subscriber closed: {other:?}"));
                return;
            }
        }
    }
}

/// A conversation subscriber: the ids of the events it was sent (snapshots aside).
async fn conversation_subscriber(
    mut ws: Ws,
    ids: Arc<Mutex<HashSet<String>>>,
    finished: Option<tokio::sync::mpsc::UnboundedSender<Value>>,
    stop: tokio_util::sync::CancellationToken,
    tally: Arc<Tally>,
) {
    loop {
        let msg = tokio::select! {
            m = ws.next() => m,
            () = stop.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
        };
        match msg {
            Some(Ok(WsMsg::Text(t))) => {
                tally.conversation_events.fetch_add(1, Ordering::Relaxed);
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if v["kind"] == "ConversationStateUpdateEvent" && v["key"] == "full_state" {
                    continue;
                }
                if let Some(id) = v["id"].as_str() {
                    ids.lock().unwrap().insert(id.to_string());
                }
                if let Some(tx) = &finished {
                    let _ = tx.send(v);
                }
            }
            Some(Ok(_)) => {}
            other => {
                tally.error(format!("conversation subscriber closed: {other:?}"));
                return;
            }
        }
    }
}

async fn listed_ids(srv: &TestServer, id: &str) -> Result<HashSet<String>, String> {
    let mut out = HashSet::new();
    let mut page = String::new();
    loop {
        let (code, v) = support::call(
            srv,
            reqwest::Method::GET,
            &format!("/api/conversations/{id}/events/search?limit=100{page}"),
            None,
        )
        .await;
        if code != 200 {
            return Err(format!("events/search: {code} {v}"));
        }
        for e in v["items"].as_array().into_iter().flatten() {
            if let Some(id) = e["id"].as_str() {
                out.insert(id.to_string());
            }
        }
        match v["next_page_id"].as_str() {
            Some(p) => page = format!("&page_id={p}"),
            None => return Ok(out),
        }
    }
}

/// One conversation slot: until `stop`, a conversation with `subscribers` sockets runs
/// [`TURNS_PER_CONVERSATION`] agent turns, its sockets are checked against `events/search`,
/// and it is deleted.
async fn conversation_slot(
    srv: Arc<TestServer>,
    llm_agent: Value,
    slot: usize,
    subscribers: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let work = srv.workdir();
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        if let Err(e) =
            one_conversation(&srv, &llm_agent, &work, slot, round, subscribers, &tally).await
        {
            tally.error(format!("conversation slot {slot} round {round}: {e}"));
            // Do not spin on a persistent failure.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn one_conversation(
    srv: &TestServer,
    llm_agent: &Value,
    work: &std::path::Path,
    slot: usize,
    round: usize,
    subscribers: usize,
    tally: &Arc<Tally>,
) -> Result<(), String> {
    let (code, info) = support::call(
        srv,
        reqwest::Method::POST,
        "/api/conversations",
        Some(json!({
            "agent": llm_agent,
            "workspace": {"working_dir": work.display().to_string(), "kind": "LocalWorkspace"},
            "max_iterations": 50,
            "stuck_detection_thresholds": {"ignored": true},
        })),
    )
    .await;
    if code != 201 {
        return Err(format!("create: {code} {info}"));
    }
    let id = info["id"].as_str().unwrap_or_default().to_string();
    let result = drive_conversation(srv, &id, slot, round, subscribers, tally).await;
    // Deleted even after a failure, so that what it holds is released.
    let (code, v) = support::call(
        srv,
        reqwest::Method::DELETE,
        &format!("/api/conversations/{id}"),
        None,
    )
    .await;
    result?;
    if code != 200 {
        return Err(format!("delete: {code} {v}"));
    }
    tally.conversations.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The turns of one conversation and the check of its sockets.
async fn drive_conversation(
    srv: &TestServer,
    id: &str,
    slot: usize,
    round: usize,
    subscribers: usize,
    tally: &Arc<Tally>,
) -> Result<(), String> {
    let stop_sockets = tokio_util::sync::CancellationToken::new();
    // Sockets are closed on every way out.
    let _closing = stop_sockets.clone().drop_guard();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut sockets = Vec::new();
    for k in 0..subscribers {
        let mut ws = ws(srv, &format!("/sockets/events/{id}")).await?;
        // The snapshot comes first: from then on the socket is subscribed.
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(WsMsg::Text(_)))) => {}
            other => return Err(format!("socket {k}: no snapshot: {other:?}")),
        }
        let ids = Arc::new(Mutex::new(HashSet::new()));
        let task = tokio::spawn(conversation_subscriber(
            ws,
            ids.clone(),
            (k == 0).then(|| tx.clone()),
            stop_sockets.clone(),
            tally.clone(),
        ));
        sockets.push((ids, task));
    }
    drop(tx);
    let before = listed_ids(srv, id).await?;
    for turn in 0..TURNS_PER_CONVERSATION {
        let marker = format!("soak-{slot}-{round}-{turn}");
        let (code, v) = support::call(
            srv,
            reqwest::Method::POST,
            &format!("/api/conversations/{id}/events"),
            Some(json!({"role": "user", "content": [{"type": "text",
                "text": format!("[[mock:echo marker={marker}]] turn {turn}")}], "run": true})),
        )
        .await;
        if code != 200 {
            return Err(format!("message: {code} {v}"));
        }
        // The turn ends with the terminal's marker seen, then the status `finished`.
        let mut marker_seen = false;
        let want = format!("{marker}-42");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let ev = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => return Err("the first socket ended".into()),
                Err(_) => {
                    let (_, c) = support::call(
                        srv,
                        reqwest::Method::GET,
                        &format!("/api/conversations/{id}"),
                        None,
                    )
                    .await;
                    let (_, evs) = support::call(
                        srv,
                        reqwest::Method::GET,
                        &format!(
                            "/api/conversations/{id}/events/search?sort_order=TIMESTAMP_DESC&limit=6"
                        ),
                        None,
                    )
                    .await;
                    let tail: Vec<String> = evs["items"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| {
                            let t = e.to_string();
                            format!("{}: {}", e["kind"], &t[..t.len().min(300)])
                        })
                        .collect();
                    return Err(format!(
                        "turn {turn} did not end in 120 s (marker seen: {marker_seen}); status {}; \
                         newest events: {tail:#?}",
                        c["execution_status"]
                    ));
                }
            };
            if ev["kind"] == "ObservationEvent" && ev.to_string().contains(&want) {
                marker_seen = true;
            }
            if ev["kind"] == "ConversationStateUpdateEvent" && ev["key"] == "execution_status" {
                match ev["value"].as_str() {
                    Some("finished") if marker_seen => break,
                    Some("error" | "stuck") => return Err(format!("turn {turn}: {ev}")),
                    _ => {}
                }
            }
        }
        tally.turns.fetch_add(1, Ordering::Relaxed);
    }
    // Every socket was sent exactly what the conversation lists (after it connected).
    let listed = listed_ids(srv, id).await?;
    let want: HashSet<&String> = listed.difference(&before).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    for (k, (ids, _)) in sockets.iter().enumerate() {
        loop {
            let got = ids.lock().unwrap().clone();
            let got: HashSet<&String> = got.iter().collect();
            if got == want {
                break;
            }
            if Instant::now() > deadline || !got.is_subset(&want) {
                let extra: Vec<_> = got.difference(&want).take(3).collect();
                let missing: Vec<_> = want.difference(&got).take(3).collect();
                return Err(format!(
                    "socket {k}: sent {} events, {} listed; extra {extra:?}, missing {missing:?}",
                    got.len(),
                    want.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop_sockets.cancel();
    for (_, task) in sockets {
        let _ = task.await;
    }
    Ok(())
}

/// Opens `n` connections (half of them send a request they never read the answer of), checks
/// that a new client is still answered, and closes them all. Connections that could not be
/// opened are counted as errors.
async fn flood(addr: &str, n: usize, tally: &Tally) -> u16 {
    let mut held = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let opened = futures::future::join_all(chunk.iter().map(|i| async move {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            if i % 2 == 0 {
                s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await?;
            }
            Ok::<_, std::io::Error>(s)
        }))
        .await;
        for s in opened {
            match s {
                Ok(s) => held.push(s),
                Err(e) => tally.error(format!("flood connect: {e}")),
            }
        }
    }
    let during = health(addr).await;
    drop(held);
    during
}

/// Opens `n` connections that send a request's first line and then one header line a second;
/// returns how many the server closed within the header timeout and a margin, and the
/// `/health` status seen meanwhile.
async fn slowloris(addr: &str, n: usize) -> (usize, u16) {
    let closed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
            continue;
        };
        let closed = closed.clone();
        tasks.push(tokio::spawn(async move {
            let deadline =
                tokio::time::Instant::now() + Duration::from_secs(HEADER_TIMEOUT_SECS + 20);
            if s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                .await
                .is_err()
            {
                closed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let mut buf = [0u8; 256];
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    r = s.read(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {} // a 408 or the like; the close follows
                    },
                    _ = tick.tick() => {
                        if s.write_all(b"X-Trickle: a\r\n").await.is_err() {
                            break;
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => return,
                }
            }
            closed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = health(addr).await;
    for t in tasks {
        let _ = t.await;
    }
    (closed.load(Ordering::Relaxed) as usize, during)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_under_load_then_floods() {
    let secs: u64 = std::env::var("AGENT_SERVER_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45);
    // Warm-up: the first third, at most two minutes (pools, caches and the bash-event
    // retention window fill up).
    let warm_up = Duration::from_secs((secs / 3).min(120));
    let floods: usize = if secs >= 300 { 5 } else { 2 };
    let flood_size: usize = if secs >= 300 { 4000 } else { 3000 };
    let slow_size: usize = 1000;

    let mut env = vec![
        (
            "OH_HEADER_READ_TIMEOUT_SECONDS".into(),
            HEADER_TIMEOUT_SECS.to_string(),
        ),
        // 20 conversations run at once (the default allows 10, then answers 429).
        ("OH_MAX_CONCURRENT_RUNS".into(), CONVERSATIONS.to_string()),
    ];
    if debug() {
        env.push(("RUST_LOG".into(), "info,agent_server::exec=debug".into()));
    }
    if secs < 300 {
        // The short mode's warm-up must fill the bash-event retention window (its index is
        // the memory that grows with history up to the limit): 5,000 events, not 20,000.
        env.push(("OH_BASH_EVENTS_MAX".into(), "5000".into()));
    }
    let srv = Arc::new(TestServer::start_with(ServerOptions {
        api_key: Some(KEY.into()),
        env,
        ..ServerOptions::default()
    }));
    let pid = srv.pid();
    let addr = srv.url.trim_start_matches("http://").to_string();
    let marker = agent_server::exec::orphans::marker_value(&[
        &srv.root_path().join("conversations"),
        &srv.root_path().join("bash_events"),
    ]);
    let llm = MockLlm::start_unrecorded().await;
    let tally = Arc::new(Tally::default());

    // Idle baseline, after one request of each kind has set up what a first request sets up.
    assert_eq!(health(&addr).await, 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = usage(pid);

    // The load.
    let stop = Arc::new(AtomicBool::new(false));
    let stop_subscribers = tokio_util::sync::CancellationToken::new();
    let mut subscribers = Vec::new();
    for k in 0..BASH_SUBSCRIBERS {
        let socket = ws(&srv, "/sockets/bash-events")
            .await
            .unwrap_or_else(|e| panic!("bash subscriber {k}: {e}"));
        let seen = Arc::new(BashSeen::default());
        let task = tokio::spawn(bash_subscriber(
            socket,
            seen.clone(),
            stop_subscribers.clone(),
            tally.clone(),
        ));
        subscribers.push((seen, task));
    }
    let started = Instant::now();
    let mut load = Vec::new();
    for n in 0..BASH_CLIENTS {
        load.push(tokio::spawn(bash_client(
            srv.clone(),
            n,
            stop.clone(),
            tally.clone(),
        )));
    }
    for slot in 0..CONVERSATIONS {
        let per_slot = CONVERSATION_SUBSCRIBERS / CONVERSATIONS
            + usize::from(slot < CONVERSATION_SUBSCRIBERS % CONVERSATIONS);
        load.push(tokio::spawn(conversation_slot(
            srv.clone(),
            llm.agent(),
            slot,
            per_slot,
            stop.clone(),
            tally.clone(),
        )));
    }
    // Samples once a second.
    let mut samples: Vec<(Duration, Usage)> = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push((started.elapsed(), usage(pid)));
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let load_secs = started.elapsed().as_secs_f64();
    let series: Vec<String> = samples
        .iter()
        .step_by(5)
        .map(|(t, u)| format!("{}s:{:.1}", t.as_secs(), mib(u.rss_kib)))
        .collect();
    println!("soak: RSS (MiB) during the load: {}", series.join(" "));
    let commands = tally.commands.load(Ordering::Relaxed);
    // Every bash subscriber is sent every command and its result.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (k, (seen, _)) in subscribers.iter().enumerate() {
        while (seen.commands.load(Ordering::Relaxed) < commands
            || seen.results.load(Ordering::Relaxed) < commands)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (c, r) = (
            seen.commands.load(Ordering::Relaxed),
            seen.results.load(Ordering::Relaxed),
        );
        if c != commands || r != commands {
            if debug() {
                let mine = seen.ids.lock().unwrap().clone();
                let all: HashSet<String> = subscribers
                    .iter()
                    .flat_map(|(s, _)| s.ids.lock().unwrap().clone())
                    .collect();
                let missing: Vec<&String> = all.difference(&mine).collect();
                println!("soak: subscriber {k} lacks {missing:?}");
                for id in missing {
                    for l in srv.log().lines().filter(|l| l.contains(id.as_str())) {
                        println!("  {l}");
                    }
                    let (code, ev) = support::call(
                        &srv,
                        reqwest::Method::GET,
                        &format!("/api/bash/bash_events/{id}"),
                        None,
                    )
                    .await;
                    println!("  stored: {code} {ev}");
                }
            }
            tally.error(format!(
                "bash subscriber {k}: sent {c} commands and {r} results of {commands}"
            ));
        }
    }
    println!(
        "soak: [{:.0} s] subscribers checked",
        started.elapsed().as_secs_f64()
    );
    stop_subscribers.cancel();
    for (_, task) in subscribers {
        task.await.unwrap();
    }
    drop(llm);

    // After the load: back to the baseline, nothing left behind.
    let after_load = settle_to(pid, idle, 30).await;
    let kids = children(pid);
    let zombies = kids.iter().filter(|(_, s)| *s == 'Z').count();
    let left = agent_server::exec::orphans::marked(&marker);

    let (warm, steady): (Vec<_>, Vec<_>) = samples.iter().partition(|(t, _)| *t < warm_up);
    let at_warm = warm.last().map(|(_, u)| u.rss_kib).unwrap_or(idle.rss_kib);
    let steady_peak = steady.iter().map(|(_, u)| u.rss_kib).max().unwrap_or(0);
    let steady_last = steady.last().map(|(_, u)| u.rss_kib).unwrap_or(0);
    let peak = samples.iter().map(|(_, u)| u.rss_kib).max().unwrap_or(0);
    let peak_fds = samples.iter().map(|(_, u)| u.fds).max().unwrap_or(0);
    let peak_threads = samples.iter().map(|(_, u)| u.threads).max().unwrap_or(0);

    // Floods and a slowloris.
    println!(
        "soak: [{:.0} s] settled after the load",
        started.elapsed().as_secs_f64()
    );
    let before_floods = usage(pid);
    let mut during_floods = Vec::new();
    for _ in 0..floods {
        during_floods.push(flood(&addr, flood_size, &tally).await);
    }
    println!(
        "soak: [{:.0} s] floods done",
        started.elapsed().as_secs_f64()
    );
    let (slow_closed, during_slow) = slowloris(&addr, slow_size).await;
    println!(
        "soak: [{:.0} s] slowloris done",
        started.elapsed().as_secs_f64()
    );
    let after_attacks = settle_to(pid, idle, 30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_attacks = usage(pid).rss_kib;
    let health_after = health(&addr).await;

    println!(
        "soak: {load_secs:.0} s of load: {commands} commands ({:.0}/s), {} agent turns in {} \
         conversations, {} bash events and {} conversation events sent to 200 subscribers, \
         {} errors",
        commands as f64 / load_secs,
        tally.turns.load(Ordering::Relaxed),
        tally.conversations.load(Ordering::Relaxed),
        tally.bash_events.load(Ordering::Relaxed),
        tally.conversation_events.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    println!(
        "soak: RSS idle {:.1} MiB, after warm-up ({} s) {:.1}, steady peak {:.1} ({:+.1}%), \
         end of load {:.1}, peak {:.1}, after the load {:.1} MiB",
        mib(idle.rss_kib),
        warm_up.as_secs(),
        mib(at_warm),
        mib(steady_peak),
        (steady_peak as f64 / at_warm.max(1) as f64 - 1.0) * 100.0,
        mib(steady_last),
        mib(peak),
        mib(after_load.rss_kib),
    );
    println!(
        "soak: fds idle {} / peak {} / after {}; threads idle {} / peak {} / after {}; \
         children after {}, zombies {zombies}, marked processes left {}",
        idle.fds,
        peak_fds,
        after_load.fds,
        idle.threads,
        peak_threads,
        after_load.threads,
        kids.len(),
        left.len(),
    );
    println!(
        "soak: {floods} floods of {flood_size} connections (/health during: {during_floods:?}), \
         slowloris {slow_closed}/{slow_size} closed by the server (/health during: {during_slow}); \
         RSS before {:.1} MiB, after {:.1} MiB; fds after {}, threads after {}; /health after: \
         {health_after}",
        mib(before_floods.rss_kib),
        mib(rss_after_attacks),
        after_attacks.fds,
        after_attacks.threads,
    );

    let log = srv.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    println!(
        "soak: {} warnings in the server log{}",
        warnings.len(),
        warnings
            .iter()
            .take(5)
            .map(|l| format!("\n  {l}"))
            .collect::<String>()
    );
    if debug() {
        let behind = log
            .lines()
            .filter(|l| l.contains("subscriber behind"))
            .count();
        println!("soak: {behind} times a bash subscriber fell behind");
    }
    let errors = tally.first_errors.lock().unwrap().clone();
    assert_eq!(
        tally.errors.load(Ordering::Relaxed),
        0,
        "errors under load: {errors:#?}"
    );
    assert!(commands > 0 && tally.turns.load(Ordering::Relaxed) > 0);
    assert!(
        steady_peak * 10 <= at_warm * 11,
        "RSS grew after the warm-up: {} -> {} KiB",
        at_warm,
        steady_peak
    );
    assert!(
        after_load.fds <= idle.fds && after_load.threads <= idle.threads,
        "not back to the baseline after the load: {after_load:?}, idle {idle:?}"
    );
    assert_eq!(zombies, 0, "zombie children: {kids:?}");
    assert!(kids.is_empty(), "children left after the load: {kids:?}");
    assert!(left.is_empty(), "processes of the server left: {left:?}");
    assert!(
        during_floods.iter().all(|s| *s == 200),
        "/health during the floods: {during_floods:?}"
    );
    assert_eq!(during_slow, 200, "/health during the slowloris");
    assert_eq!(slow_closed, slow_size, "slowloris connections kept open");
    assert_eq!(health_after, 200);
    assert!(
        after_attacks.fds <= idle.fds && after_attacks.threads <= idle.threads,
        "not back to the baseline after the floods: {after_attacks:?}, idle {idle:?}"
    );
    assert!(
        rss_after_attacks * 10 <= before_floods.rss_kib * 11,
        "RSS after the floods {rss_after_attacks} KiB, before {} KiB",
        before_floods.rss_kib
    );
}
