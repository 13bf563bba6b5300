//! Conversation scenarios: WebSocket fan-out of one conversation's events to many subscribers,
//! and agent steps against an instant scripted LLM (one conversation, then many at once).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::mock_llm::DIRECTIVE;
use crate::report::Outcome;
use crate::stats::pct;
use crate::{http, Ctx};

/// The API key given to the mock LLM (it checks none).
const MOCK_API_KEY: &str = "sk-bench-mock";

/// Creates a conversation whose agent talks to `llm_base` (nothing is run).
pub async fn create(c: &Ctx<'_>, llm_base: &str, max_iterations: usize) -> anyhow::Result<String> {
    let work = c
        .work_dir()
        .join(format!("conv-{}", uuid::Uuid::new_v4().simple()));
    tokio::fs::create_dir_all(&work).await?;
    let body = json!({
        "agent": {
            "kind": "Agent",
            "llm": {"model": "openai/mock", "api_key": MOCK_API_KEY, "base_url": llm_base,
                    "usage_id": "agent", "num_retries": 0, "timeout": 60},
            "tools": [],
        },
        "workspace": {"working_dir": work.to_string_lossy(), "kind": "LocalWorkspace"},
        "max_iterations": max_iterations,
        "stuck_detection": true,
        "autotitle": false,
    });
    let r = c
        .client
        .post(format!("{}/api/conversations", c.base))
        .json(&body)
        .send()
        .await?;
    let (st, v) = http::json(r).await?;
    ensure!(st == 201 || st == 200, "create conversation HTTP {st}: {v}");
    let id = v["id"]
        .as_str()
        .or(v["conversation_id"].as_str())
        .context("conversation without id")?;
    Ok(id.to_owned())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to `/sockets/events/{id}` and waits for the first frame (the state snapshot).
async fn subscribe(c: &Ctx<'_>, id: &str) -> anyhow::Result<Ws> {
    let url = format!("{}/sockets/events/{id}", c.base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(&url),
    )
    .await
    .context("websocket connect timeout")??;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("no first frame within 30 s")?
        {
            Some(Ok(Message::Text(_))) => return Ok(ws),
            Some(Ok(Message::Close(f))) => bail!("closed before the first frame: {f:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("websocket error before the first frame: {e}"),
            None => bail!("websocket ended before the first frame"),
        }
    }
}

async fn send_message(c: &Ctx<'_>, id: &str, text: &str) -> anyhow::Result<()> {
    let r = c
        .client
        .post(format!("{}/api/conversations/{id}/events", c.base))
        .json(&json!({"role": "user", "content": [{"type": "text", "text": text}], "run": false}))
        .send()
        .await?;
    let (st, v) = http::json(r).await?;
    ensure!(st == 200, "send message HTTP {st}: {v}");
    Ok(())
}

/// `subs` subscribers spread evenly over `convs` conversations; `fanout_msgs` messages posted
/// one after the other, round-robin over the conversations; latency = POST sent -> the last
/// subscriber of that conversation has the `MessageEvent`.
pub async fn fanout(
    c: &Ctx<'_>,
    subs: usize,
    convs: usize,
    prefix: &str,
) -> anyhow::Result<Outcome> {
    let convs = convs.clamp(1, subs.max(1));
    let mut ids = Vec::with_capacity(convs);
    for _ in 0..convs {
        ids.push(create(c, "http://127.0.0.1:9/v1", 10).await?);
    }
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (tx, mut rx) = mpsc::channel::<anyhow::Result<usize>>(subs * 4 + 16);
    let mut readers = Vec::new();
    let mut per_conv = vec![0usize; convs];
    for k in 0..subs {
        let ci = k % convs;
        let ws = subscribe(c, &ids[ci]).await.with_context(|| {
            format!(
                "subscriber #{} of {subs} ({} per conversation)",
                k + 1,
                subs.div_ceil(convs)
            )
        })?;
        per_conv[ci] += 1;
        let (tx, tag) = (tx.clone(), tag.clone());
        readers.push(tokio::spawn(async move {
            let (_, mut rd) = ws.split();
            let needle = format!("fan{tag}m");
            while let Some(m) = rd.next().await {
                match m {
                    Ok(Message::Text(t)) => {
                        if let Some(pos) = t.find(&needle) {
                            let rest = &t[pos + needle.len()..];
                            let i: usize = rest
                                .get(..6)
                                .and_then(|d| d.parse().ok())
                                .unwrap_or(usize::MAX);
                            if tx.send(Ok(i)).await.is_err() {
                                break;
                            }
                        }
                    }
                    Ok(Message::Close(f)) => {
                        let _ = tx
                            .send(Err(anyhow::anyhow!("subscriber closed: {f:?}")))
                            .await;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        break;
                    }
                }
            }
        }));
    }
    drop(tx);
    let mut lat = Vec::new();
    let mut deliveries = 0usize;
    let t0 = Instant::now();
    for i in 0..c.p.fanout_msgs {
        let ci = i % convs;
        let want = per_conv[ci];
        let t = Instant::now();
        send_message(c, &ids[ci], &format!("fan{tag}m{i:06} hello subscribers")).await?;
        let mut got = 0;
        while got < want {
            match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                Err(_) => bail!("message {i}: only {got} of {want} subscribers got it within 30 s"),
                Ok(None) => bail!("all subscribers gone"),
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(k))) => {
                    ensure!(k == i, "a subscriber got message {k} while waiting for {i}");
                    got += 1;
                }
            }
        }
        deliveries += want;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let wall = t0.elapsed().as_secs_f64();
    for r in &readers {
        r.abort();
    }
    let mut o = Outcome::default();
    o.value(&format!("{prefix}_events_per_s"), deliveries as f64 / wall);
    o.value(&format!("{prefix}_lat_p50_ms"), pct(&lat, 50.0));
    o.value(&format!("{prefix}_lat_p99_ms"), pct(&lat, 99.0));
    o.detail(&format!("{prefix}_subscribers"), subs);
    o.detail(&format!("{prefix}_conversations"), convs);
    o.detail(&format!("{prefix}_messages"), c.p.fanout_msgs);
    for id in ids {
        let _ = c
            .client
            .delete(format!("{}/api/conversations/{id}", c.base))
            .send()
            .await;
    }
    Ok(o)
}

fn is_terminal(status: &str) -> bool {
    !matches!(status, "running" | "")
}

/// What a run looked like from a subscriber.
struct RunTrace {
    action_times: Vec<Instant>,
    end: Instant,
}

/// Reads a conversation's socket until the run ends: a non-running status after `running`.
async fn watch_run(mut ws: Ws, deadline: Instant) -> anyhow::Result<RunTrace> {
    let mut action_times = Vec::new();
    let mut thoughts = HashSet::new();
    let mut running = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, ws.next()).await {
            Err(_) => bail!(
                "run did not end in time ({} steps seen)",
                action_times.len()
            ),
            Ok(None) => bail!("socket ended during the run"),
            Ok(Some(m)) => m?,
        };
        let Message::Text(t) = m else {
            if let Message::Close(f) = m {
                bail!("socket closed during the run: {f:?}");
            }
            continue;
        };
        let now = Instant::now();
        let ev: Value = serde_json::from_str(&t).context("non-JSON frame")?;
        match ev["kind"].as_str().unwrap_or("") {
            "ActionEvent" => {
                let th = ev["action"]["thought"].as_str().unwrap_or("").to_owned();
                ensure!(
                    th.starts_with("MOCK_THOUGHT"),
                    "unexpected action: {}",
                    &t[..t.len().min(300)]
                );
                ensure!(thoughts.insert(th.clone()), "duplicate step {th:?}");
                action_times.push(now);
            }
            "ConversationStateUpdateEvent" => {
                let status = match ev["key"].as_str() {
                    Some("execution_status") => ev["value"].as_str(),
                    Some("full_state") => ev["value"]["execution_status"].as_str(),
                    _ => None,
                };
                if let Some(s) = status {
                    if s == "running" {
                        running = true;
                    } else if running && is_terminal(s) {
                        let _ = ws.close(None).await;
                        return Ok(RunTrace {
                            action_times,
                            end: now,
                        });
                    }
                }
            }
            _ => {}
        }
    }
}

async fn event_count(c: &Ctx<'_>, id: &str) -> anyhow::Result<u64> {
    let r = c
        .client
        .get(format!("{}/api/conversations/{id}/events/count", c.base))
        .send()
        .await?;
    let (st, v) = http::json(r).await?;
    ensure!(st == 200, "events/count HTTP {st}: {v}");
    v.as_u64().context("events/count is not an integer")
}

async fn start_run(c: &Ctx<'_>, id: &str) -> anyhow::Result<()> {
    let r = c
        .client
        .post(format!("{}/api/conversations/{id}/run", c.base))
        .send()
        .await?;
    let st = r.status().as_u16();
    let b = r.text().await.unwrap_or_default();
    ensure!(st < 300, "run HTTP {st}: {b}");
    Ok(())
}

/// One prepared conversation: created, subscribed, message posted, not yet running.
async fn prepare(c: &Ctx<'_>, llm: &str, steps: usize) -> anyhow::Result<(String, Ws)> {
    let id = create(c, llm, steps).await?;
    let ws = subscribe(c, &id).await?;
    let tok = uuid::Uuid::new_v4().simple().to_string();
    send_message(c, &id, &format!("{DIRECTIVE} test-token {tok}")).await?;
    Ok((id, ws))
}

/// Agent steps with the mock's `think_loop`: step intervals of one conversation, then
/// `par_convs` conversations running at once.
pub async fn agent_steps(c: &Ctx<'_>, llm: &str) -> anyhow::Result<Outcome> {
    let mut o = Outcome::default();
    let timeout = Duration::from_secs_f64(c.p.phase_timeout_s);
    // 1. one conversation
    let (id, ws) = prepare(c, llm, c.p.steps_one).await?;
    let t0 = Instant::now();
    start_run(c, &id).await?;
    let tr = watch_run(ws, t0 + timeout).await?;
    ensure!(
        tr.action_times.len() == c.p.steps_one,
        "{} steps run, max_iterations was {}",
        tr.action_times.len(),
        c.p.steps_one
    );
    let mut iv: Vec<f64> = tr
        .action_times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1e3)
        .collect();
    if iv.is_empty() {
        iv.push(tr.end.duration_since(t0).as_secs_f64() * 1e3);
    }
    // the server's own cost per step: the interval minus one bare completion of the mock
    let llm_ms = llm_floor(llm, 20).await?;
    o.value("step_p50_ms", pct(&iv, 50.0));
    o.value("step_p99_ms", pct(&iv, 99.0));
    o.value("step_overhead_p50_ms", (pct(&iv, 50.0) - llm_ms).max(0.0));
    o.value("step_overhead_p99_ms", (pct(&iv, 99.0) - llm_ms).max(0.0));
    o.detail("one_run_s", tr.end.duration_since(t0).as_secs_f64());
    // 2. many at once
    let mut prepared = Vec::new();
    for _ in 0..c.p.par_convs {
        prepared.push(prepare(c, llm, c.p.par_steps).await?);
    }
    let mut before = 0;
    for (id, _) in &prepared {
        before += event_count(c, id).await?;
    }
    let t0 = Instant::now();
    let deadline = t0 + timeout;
    let mut watchers = Vec::new();
    for (id, ws) in prepared {
        start_run(c, &id).await?;
        watchers.push((id, tokio::spawn(watch_run(ws, deadline))));
    }
    let mut steps = 0;
    let mut ids = Vec::new();
    for (id, w) in watchers {
        let tr = w.await??;
        ensure!(
            tr.action_times.len() == c.p.par_steps,
            "{id}: {} steps run, max_iterations was {}",
            tr.action_times.len(),
            c.p.par_steps
        );
        steps += tr.action_times.len();
        ids.push(id);
    }
    let wall = t0.elapsed().as_secs_f64();
    let mut after = 0;
    for id in &ids {
        after += event_count(c, id).await?;
    }
    o.value("par_wall_s", wall);
    o.value("par_steps_per_s", steps as f64 / wall);
    o.value(
        "events_persisted_per_s",
        after.saturating_sub(before) as f64 / wall,
    );
    o.detail("par_convs", c.p.par_convs);
    o.detail("par_steps", c.p.par_steps);
    o.detail("events_persisted", after.saturating_sub(before));
    Ok(o)
}

/// p50 of a bare completion from the mock LLM (the floor under one agent step).
pub async fn llm_floor(llm: &str, n: usize) -> anyhow::Result<f64> {
    let client = http::client()?;
    let mut lat = Vec::new();
    let body = json!({"model": "mock", "messages": [
        {"role": "user", "content": format!("{DIRECTIVE} test-token floor")}]});
    for i in 0..n + 3 {
        let t = Instant::now();
        let r = client
            .post(format!("{llm}/chat/completions"))
            .bearer_auth(MOCK_API_KEY)
            .json(&body)
            .send()
            .await?;
        let (st, v) = http::json(r).await?;
        ensure!(st == 200, "mock LLM HTTP {st}: {v}");
        if i >= 3 {
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(pct(&lat, 50.0))
}
