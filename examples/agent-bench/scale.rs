//! Scale: many persisted conversations generated in the reference's on-disk layout (from a
//! captured sample), then start-up time, RSS and `conversations/search` latency with them.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context};
use serde_json::{json, Value};

use crate::http;
use crate::report::Outcome;
use crate::stats::pct;

/// Templates read from a persisted conversation (`meta.json`, `base_state.json`, `events/`).
pub struct Sample {
    meta: Value,
    base_state: Value,
    events: Vec<Value>,
}

impl Sample {
    pub fn load(dir: &Path) -> anyhow::Result<Sample> {
        let read = |p: PathBuf| -> anyhow::Result<Value> {
            let b = std::fs::read(&p).with_context(|| format!("read {}", p.display()))?;
            Ok(serde_json::from_slice(&b)?)
        };
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir.join("events"))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        let events = names
            .into_iter()
            .map(read)
            .collect::<anyhow::Result<Vec<_>>>()?;
        ensure!(
            events.len() >= 12,
            "sample has only {} events",
            events.len()
        );
        Ok(Sample {
            meta: read(dir.join("meta.json"))?,
            base_state: read(dir.join("base_state.json"))?,
            events,
        })
    }

    /// Writes `n` conversations of `events` events each under `root`; returns the ids (hex).
    pub fn generate(
        &self,
        root: &Path,
        work: &Path,
        n: usize,
        events: usize,
    ) -> anyhow::Result<Vec<String>> {
        std::fs::create_dir_all(root)?;
        let base = chrono::Utc::now().naive_utc() - chrono::Duration::days(1);
        let tail = self.events.len().saturating_sub(11);
        let mut ids = Vec::with_capacity(n);
        for k in 0..n {
            let id = uuid::Uuid::new_v4();
            let hex = id.simple().to_string();
            let dir = root.join(&hex);
            let evdir = dir.join("events");
            std::fs::create_dir_all(&evdir)?;
            let t0 = base + chrono::Duration::seconds(k as i64 * 60);
            let mut last_user = None;
            let mut last_id = String::new();
            for i in 0..events {
                // The sample's events in order, then its last step-like stretch repeated.
                let tpl = if i < self.events.len() {
                    &self.events[i]
                } else {
                    &self.events[tail + (i - self.events.len()) % (self.events.len() - tail)]
                };
                let mut ev = tpl.clone();
                let eid = uuid::Uuid::new_v4().to_string();
                let ts = (t0 + chrono::Duration::milliseconds(i as i64 * 10))
                    .format("%Y-%m-%dT%H:%M:%S%.6f")
                    .to_string();
                ev["id"] = json!(eid);
                ev["timestamp"] = json!(ts);
                if ev["kind"] == "MessageEvent" && ev["source"] == "user" {
                    last_user = Some(eid.clone());
                }
                std::fs::write(
                    evdir.join(format!("event-{i:05}-{eid}.json")),
                    serde_json::to_vec(&ev)?,
                )?;
                last_id = eid;
            }
            std::fs::write(evdir.join(".eventlog.lock"), b"")?;
            std::fs::write(evdir.join(format!(".eventlog-len-{events}.marker")), b"")?;
            let created = t0.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
            let updated = (t0 + chrono::Duration::milliseconds(events as i64 * 10))
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string();
            let mut meta = self.meta.clone();
            meta["id"] = json!(hex);
            meta["title"] = json!(format!("bench conversation {k}"));
            meta["created_at"] = json!(created);
            meta["updated_at"] = json!(updated);
            meta["workspace"]["working_dir"] = json!(work.to_string_lossy());
            std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta)?)?;
            let mut st = self.base_state.clone();
            st["id"] = json!(id.to_string());
            st["persistence_dir"] = json!(dir.to_string_lossy());
            st["workspace"]["working_dir"] = json!(work.to_string_lossy());
            st["execution_status"] = json!("finished");
            st["leaf_event_id"] = json!(last_id);
            if let Some(u) = last_user {
                st["last_user_message_id"] = json!(u);
            }
            std::fs::write(dir.join("base_state.json"), serde_json::to_vec(&st)?)?;
            ids.push(hex);
        }
        Ok(ids)
    }
}

/// Search latency on a server started over `n` generated conversations. Start-up time and RSS
/// are taken by the caller; this checks paging sees every conversation, then times first pages.
pub async fn search(base: &str, n: usize, reps: usize) -> anyhow::Result<Outcome> {
    let client = http::client()?;
    let url = format!("{base}/api/conversations/search");
    let page = |page_id: Option<String>| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let mut q = vec![("limit", "100".to_owned())];
            if let Some(p) = page_id {
                q.push(("page_id", p));
            }
            let r = client.get(&url).query(&q).send().await?;
            let (st, v) = http::json(r).await?;
            ensure!(st == 200, "conversations/search HTTP {st}: {v}");
            anyhow::Ok(v)
        }
    };
    let mut o = Outcome::default();
    let t = Instant::now();
    let first = page(None).await?;
    o.value("scale_search_first_ms", t.elapsed().as_secs_f64() * 1e3);
    // Verify: walk every page, count distinct ids.
    let mut seen = std::collections::HashSet::new();
    let mut v = first;
    loop {
        let items = v["items"].as_array().context("no items")?;
        for it in items {
            seen.insert(it["id"].as_str().unwrap_or("").replace('-', ""));
        }
        match v["next_page_id"].as_str() {
            Some(p) if !p.is_empty() && seen.len() <= n => v = page(Some(p.to_owned())).await?,
            _ => break,
        }
    }
    ensure!(
        seen.len() == n,
        "search paged through {} conversations, {n} on disk",
        seen.len()
    );
    let mut lat = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let v = page(None).await?;
        ensure!(
            v["items"].as_array().map(Vec::len) == Some(n.min(100)),
            "first page has {:?} items",
            v["items"].as_array().map(Vec::len)
        );
        lat.push(t.elapsed().as_secs_f64() * 1e3);
    }
    o.value("scale_search_p50_ms", pct(&lat, 50.0));
    o.value("scale_search_p99_ms", pct(&lat, 99.0));
    Ok(o)
}
