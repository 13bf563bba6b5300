//! Workspace scenarios: `/health`, `execute_bash_command` latency, concurrent clients, the
//! `/sockets/bash-events` socket, large output through the SDK's polling scheme, and big file
//! upload/download. Every answer is checked; a wrong one fails the metric.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use crate::report::Outcome;
use crate::stats::pct;
use crate::{http, Ctx, MIB};

/// Best effort: `DELETE /api/bash/bash_events` so that phases do not depend on history.
pub async fn clear_bash_events(c: &Ctx<'_>) -> String {
    match c
        .client
        .delete(format!("{}/api/bash/bash_events", c.base))
        .send()
        .await
    {
        Ok(r) => r.status().as_u16().to_string(),
        Err(e) => format!("error: {e}"),
    }
}

pub async fn health(c: &Ctx<'_>) -> anyhow::Result<Outcome> {
    let mut lat = Vec::new();
    for i in 0..c.p.lat_n + 5 {
        let t = Instant::now();
        let r = c.client.get(format!("{}/health", c.base)).send().await?;
        ensure!(r.status() == 200, "/health HTTP {}", r.status());
        r.bytes().await?;
        if i >= 5 {
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut o = Outcome::default();
    o.value("health_p50_ms", pct(&lat, 50.0));
    Ok(o)
}

async fn exec_once(
    client: &reqwest::Client,
    base: &str,
    command: &str,
    want: &str,
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let r = client
        .post(format!("{base}/api/bash/execute_bash_command"))
        .json(&json!({ "command": command }))
        .send()
        .await?;
    let (st, v) = http::json(r).await?;
    let dt = t.elapsed().as_secs_f64() * 1e3;
    ensure!(st == 200, "execute_bash_command HTTP {st}: {v}");
    ensure!(
        v["exit_code"] == 0,
        "exit_code {} (want 0): {v}",
        v["exit_code"]
    );
    let out = v["stdout"].as_str().unwrap_or("");
    ensure!(
        out == want,
        "stdout mismatch: {} bytes, want {}; head {:?}",
        out.len(),
        want.len(),
        &out[..out.len().min(60)]
    );
    let err = v["stderr"].as_str().unwrap_or("");
    ensure!(err.is_empty(), "unexpected stderr {err:?}");
    Ok(dt)
}

async fn exec_series(
    c: &Ctx<'_>,
    command: &str,
    want: &str,
    prefix: &str,
) -> anyhow::Result<Outcome> {
    let mut lat = Vec::new();
    for i in 0..c.p.lat_n + 5 {
        let dt = exec_once(&c.client, &c.base, command, want).await?;
        if i >= 5 {
            lat.push(dt);
        }
    }
    let mut o = Outcome::default();
    for p in [50.0, 95.0, 99.0] {
        o.value(&format!("{prefix}_p{p:.0}_ms"), pct(&lat, p));
    }
    o.detail("n", lat.len());
    o.detail("max_ms", lat.iter().cloned().fold(0.0, f64::max));
    Ok(o)
}

pub async fn exec_true(c: &Ctx<'_>) -> anyhow::Result<Outcome> {
    exec_series(c, "true", "", "exec_true").await
}

pub async fn exec_echo(c: &Ctx<'_>) -> anyhow::Result<Outcome> {
    let payload = "x".repeat(1023);
    exec_series(
        c,
        &format!("echo {payload}"),
        &format!("{payload}\n"),
        "exec_echo",
    )
    .await
}

pub async fn concurrency(c: &Ctx<'_>) -> anyhow::Result<Outcome> {
    let (nc, per) = (c.p.conc_clients, c.p.conc_per_client);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..nc)
        .map(|_| {
            let base = c.base.clone();
            tokio::spawn(async move {
                // One client per task: its own keep-alive connection.
                let client = http::client()?;
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    lat.push(exec_once(&client, &base, "true", "").await?);
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errs = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(l)) => lat.extend(l),
            Ok(Err(e)) => errs.push(format!("{e:#}")),
            Err(e) => errs.push(e.to_string()),
        }
    }
    let wall = t0.elapsed().as_secs_f64();
    if let Some(e) = errs.first() {
        bail!("{} of {nc} clients failed; first: {e}", errs.len());
    }
    ensure!(
        lat.len() == nc * per,
        "{} of {} commands",
        lat.len(),
        nc * per
    );
    let mut o = Outcome::default();
    o.value("conc_cmds_per_s", lat.len() as f64 / wall);
    o.value("conc_p99_ms", pct(&lat, 99.0));
    o.detail("clients", nc);
    o.detail("per_client", per);
    o.detail("p50_ms", pct(&lat, 50.0));
    Ok(o)
}

fn norm_id(v: &Value) -> String {
    v.as_str()
        .unwrap_or("")
        .replace('-', "")
        .to_ascii_lowercase()
}

/// `ws://.../sockets/bash-events`: `bash_ws_n` echo commands with `bash_ws_window` in flight.
pub async fn bash_ws(c: &Ctx<'_>) -> anyhow::Result<Outcome> {
    let (n, window) = (c.p.bash_ws_n, c.p.bash_ws_window);
    let url = format!("{}/sockets/bash-events", c.base.replacen("http", "ws", 1));
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(20),
        tokio_tungstenite::connect_async(&url),
    )
    .await
    .context("websocket connect timeout")??;
    let (mut tx, mut rx) = ws.split();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut id2tok: HashMap<String, String> = HashMap::new();
    let mut orphans: HashMap<String, Vec<Value>> = HashMap::new();
    let mut out: HashMap<String, String> = HashMap::new();
    let mut lat = Vec::new();
    let (mut events, mut next, mut in_flight) = (0usize, 0usize, 0usize);
    let t0 = Instant::now();
    let mut t_last = t0;
    let deadline = t0 + Duration::from_secs_f64(c.p.phase_timeout_s);
    while lat.len() < n {
        while in_flight < window && next < n {
            let tok = format!("wsb{tag}n{next:06}");
            sent.insert(tok.clone(), Instant::now());
            tx.send(Message::text(
                json!({ "command": format!("echo {tok}") }).to_string(),
            ))
            .await?;
            next += 1;
            in_flight += 1;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = match tokio::time::timeout(left, rx.next()).await {
            Err(_) => bail!("only {} of {n} commands finished in time", lat.len()),
            Ok(None) => bail!("websocket closed after {} of {n} commands", lat.len()),
            Ok(Some(m)) => m?,
        };
        let text = match msg {
            Message::Text(t) => t.to_string(),
            Message::Close(f) => bail!("websocket closed by server: {f:?}"),
            _ => continue,
        };
        let now = Instant::now();
        events += 1;
        t_last = now;
        let ev: Value = serde_json::from_str(&text).context("non-JSON frame")?;
        let mut outputs = Vec::new();
        match ev["kind"].as_str() {
            Some("BashCommand") => {
                let tok = ev["command"]
                    .as_str()
                    .unwrap_or("")
                    .trim_start_matches("echo ");
                if sent.contains_key(tok) {
                    let cid = norm_id(&ev["id"]);
                    id2tok.insert(cid.clone(), tok.to_owned());
                    outputs.extend(orphans.remove(&cid).unwrap_or_default());
                }
            }
            Some("BashOutput") => outputs.push(ev),
            Some("BashError") => bail!("server sent an error: {text}"),
            _ => {}
        }
        for ev in outputs {
            let cid = norm_id(&ev["command_id"]);
            let Some(tok) = id2tok.get(&cid).cloned() else {
                orphans.entry(cid).or_default().push(ev);
                continue;
            };
            let buf = out.entry(tok.clone()).or_default();
            buf.push_str(ev["stdout"].as_str().unwrap_or(""));
            if let Some(code) = ev["exit_code"].as_i64() {
                ensure!(code == 0, "exit_code {code} for {tok}");
                ensure!(
                    *buf == format!("{tok}\n"),
                    "output mismatch for {tok}: {buf:?}"
                );
                lat.push(now.duration_since(sent[&tok]).as_secs_f64() * 1e3);
                in_flight -= 1;
            }
        }
    }
    let _ = tx.send(Message::Close(None)).await;
    let dur = t_last.duration_since(t0).as_secs_f64();
    let mut o = Outcome::default();
    o.value("bash_ws_events_per_s", events as f64 / dur);
    o.value("bash_ws_lat_p50_ms", pct(&lat, 50.0));
    o.detail("commands", n);
    o.detail("events", events);
    o.detail("lat_p95_ms", pct(&lat, 95.0));
    Ok(o)
}

/// Expected output of the large-output command, by running it here.
pub fn bigout_expected(cmd: &str) -> anyhow::Result<(u64, String, f64)> {
    use std::io::Read;
    let t0 = Instant::now();
    let mut child = std::process::Command::new("/bin/bash")
        .args(["-c", cmd])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut so = child.stdout.take().context("no stdout")?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let k = so.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    ensure!(child.wait()?.success(), "local run of {cmd:?} failed");
    Ok((n, hex(&h.finalize()), t0.elapsed().as_secs_f64()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `start_bash_command` with a big output, then polling `bash_events/search` as `RemoteWorkspace`
/// does until the event with `exit_code`; bytes and sha256 must match a local run.
pub async fn large_output(c: &Ctx<'_>) -> anyhow::Result<Outcome> {
    let (cmd, exp_len, exp_sha) = (&c.data.bigout_cmd, c.data.bigout_len, &c.data.bigout_sha);
    let t0 = Instant::now();
    let r = c
        .client
        .post(format!("{}/api/bash/start_bash_command", c.base))
        .json(&json!({ "command": cmd, "timeout": c.p.phase_timeout_s as u64 }))
        .send()
        .await?;
    let (st, v) = http::json(r).await?;
    ensure!(st == 200, "start_bash_command HTTP {st}: {v}");
    let cid = v["id"].as_str().context("no id")?.to_owned();
    let mut h = Sha256::new();
    let (mut n, mut last, mut polls, mut exit) = (0u64, -1i64, 0u32, None);
    let deadline = t0 + Duration::from_secs_f64(c.p.phase_timeout_s);
    while exit.is_none() {
        ensure!(
            Instant::now() < deadline,
            "no exit_code in time ({} bytes)",
            n
        );
        let mut q = vec![
            ("kind__eq", "BashOutput".to_owned()),
            ("command_id__eq", cid.clone()),
            ("sort_order", "TIMESTAMP".to_owned()),
            ("limit", "100".to_owned()),
        ];
        if last >= 0 {
            q.push(("order__gt", last.to_string()));
        }
        let r = c
            .client
            .get(format!("{}/api/bash/bash_events/search", c.base))
            .query(&q)
            .send()
            .await?;
        let (st, v) = http::json(r).await?;
        polls += 1;
        ensure!(st == 200, "bash_events/search HTTP {st}: {v}");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        for ev in &items {
            let order = ev["order"].as_i64().context("event without order")?;
            ensure!(
                order == last + 1,
                "chunk order {order} after {last} (gap or duplicate)"
            );
            last = order;
            let s = ev["stdout"].as_str().unwrap_or("");
            h.update(s.as_bytes());
            n += s.len() as u64;
            if let Some(e) = ev["stderr"].as_str().filter(|e| !e.is_empty()) {
                bail!("unexpected stderr {:?}", &e[..e.len().min(100)]);
            }
            if let Some(code) = ev["exit_code"].as_i64() {
                exit = Some(code);
            }
        }
        if exit.is_none() {
            tokio::time::sleep(Duration::from_millis(c.p.poll_ms)).await;
        }
    }
    let dt = t0.elapsed().as_secs_f64();
    ensure!(exit == Some(0), "exit_code {exit:?}");
    ensure!(n == exp_len, "{n} bytes reassembled, want {exp_len}");
    ensure!(hex(&h.finalize()) == *exp_sha, "sha256 mismatch");
    let mut o = Outcome::default();
    o.value("bigout_s", dt);
    o.value("bigout_mib_s", n as f64 / MIB as f64 / dt);
    if let Some(pk) = c.sampler.and_then(|s| s.peak(t0, Instant::now())) {
        o.value("bigout_peak_rss_mib", pk as f64 / MIB as f64);
    }
    o.detail("chunks", last + 1);
    o.detail("polls", polls);
    o.detail("bytes", n);
    Ok(o)
}

async fn sha_file(p: PathBuf) -> anyhow::Result<(u64, String)> {
    let mut f = tokio::fs::File::open(&p)
        .await
        .with_context(|| format!("open {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).await?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex(&h.finalize())))
}

/// Upload then download of the big file, `xfer_reps` times; median MiB/s per direction.
pub async fn transfer(c: &Ctx<'_>) -> anyhow::Result<Outcome> {
    let size = c.data.big_size;
    let dir = c
        .dirs
        .map(|d| d.workspace.clone())
        .unwrap_or_else(|| c.data.dir.clone());
    let t_phase = Instant::now();
    let mut up = Vec::new();
    let mut down = Vec::new();
    let mut o = Outcome::default();
    let mut errs: Vec<(&str, String)> = Vec::new();
    for rep in 0..c.p.xfer_reps {
        let up_path = dir.join(format!("upload_big_{rep}.bin"));
        let r: anyhow::Result<f64> = async {
            let f = tokio::fs::File::open(&c.data.big_path).await?;
            let body =
                reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
            let part = reqwest::multipart::Part::stream_with_length(body, size)
                .file_name("big.bin")
                .mime_str("application/octet-stream")?;
            let form = reqwest::multipart::Form::new().part("file", part);
            let t = Instant::now();
            let r = c
                .client
                .post(format!("{}/api/file/upload", c.base))
                .query(&[("path", up_path.to_string_lossy().as_ref())])
                .multipart(form)
                .send()
                .await?;
            let (st, v) = http::json(r).await?;
            let dt = t.elapsed().as_secs_f64();
            ensure!(st == 200, "upload HTTP {st}: {v}");
            if let Some(fs) = v["file_size"].as_u64() {
                ensure!(fs == size, "server reports file_size {fs}, sent {size}");
            }
            let (n, sha) = sha_file(up_path.clone()).await?;
            ensure!(
                n == size && sha == c.data.big_sha,
                "uploaded file differs on disk ({n} bytes)"
            );
            Ok(dt)
        }
        .await;
        let _ = tokio::fs::remove_file(&up_path).await;
        match r {
            Ok(dt) => up.push(dt),
            Err(e) => errs.push(("upload_mib_s", format!("{e:#}"))),
        }
        let dl_path = dir.join(format!("download_big_{rep}.bin"));
        let r: anyhow::Result<f64> = async {
            if std::fs::hard_link(&c.data.big_path, &dl_path).is_err() {
                tokio::fs::copy(&c.data.big_path, &dl_path).await?;
            }
            let t = Instant::now();
            let r = c
                .client
                .get(format!("{}/api/file/download", c.base))
                .query(&[("path", dl_path.to_string_lossy().as_ref())])
                .send()
                .await?;
            ensure!(r.status() == 200, "download HTTP {}", r.status());
            let mut s = r.bytes_stream();
            let mut h = Sha256::new();
            let mut n = 0u64;
            while let Some(b) = s.next().await {
                let b = b?;
                h.update(&b);
                n += b.len() as u64;
            }
            let dt = t.elapsed().as_secs_f64();
            ensure!(n == size, "downloaded {n} bytes, want {size}");
            ensure!(
                hex(&h.finalize()) == c.data.big_sha,
                "download sha256 mismatch"
            );
            Ok(dt)
        }
        .await;
        let _ = tokio::fs::remove_file(&dl_path).await;
        match r {
            Ok(dt) => down.push(dt),
            Err(e) => errs.push(("download_mib_s", format!("{e:#}"))),
        }
    }
    let mib = size as f64 / MIB as f64;
    for (k, e) in errs {
        o.fail(&[k], e);
    }
    if !up.is_empty() {
        o.value("upload_mib_s", mib / crate::stats::median(&up));
    }
    if !down.is_empty() {
        o.value("download_mib_s", mib / crate::stats::median(&down));
    }
    if let Some(pk) = c.sampler.and_then(|s| s.peak(t_phase, Instant::now())) {
        o.value("xfer_peak_rss_mib", pk as f64 / MIB as f64);
    }
    o.detail("size_bytes", size);
    Ok(o)
}
