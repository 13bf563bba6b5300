//! [`RemoteConversation`]: create or attach to a conversation on an agent server, send messages,
//! run it to a terminal status and read its events without losing any.
//!
//! Events stay `serde_json::Value`s (the server's event model is large and evolving); the small
//! typed views [`event_kind`], [`event_id`] and [`ExecutionStatus`] are all the client needs.
//! A background task keeps the events WebSocket open, reconnecting with backoff; after every
//! (re)connection it reconciles with `GET …/events/search` (all pages), de-duplicating by id, so an
//! event published while the socket was down is still delivered once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, watch};
use tokio_tungstenite::tungstenite::Message;

use super::workspace::RemoteWorkspace;
use super::ClientError;

/// The `kind` discriminator of an event.
pub fn event_kind(event: &Value) -> Option<&str> {
    event.get("kind").and_then(Value::as_str)
}

/// The `id` of an event.
pub fn event_id(event: &Value) -> Option<&str> {
    event.get("id").and_then(Value::as_str)
}

pub use crate::wire::ExecutionStatus;

/// The status a server reported, or a protocol error for a value the wire does not have.
fn parse_status(s: &str) -> Result<ExecutionStatus, ClientError> {
    ExecutionStatus::parse(s)
        .ok_or_else(|| ClientError::Protocol(format!("unknown execution_status {s:?}")))
}

/// How a conversation is created.
#[derive(Debug, Clone)]
pub struct ConversationOptions {
    /// The `agent` object (`{"kind":"Agent","llm":{…},"tools":[…]}`).
    pub agent: Value,
    /// `workspace.working_dir` on the server.
    pub working_dir: String,
    /// Attach to (or create with) this id.
    pub conversation_id: Option<uuid::Uuid>,
    pub max_iterations: u32,
    /// Further `StartConversationRequest` fields (`secrets`, `tags`, `tool_module_qualnames`, …).
    pub extra: Map<String, Value>,
}

impl ConversationOptions {
    /// Options for `agent` working in `working_dir`.
    pub fn new(agent: Value, working_dir: impl Into<String>) -> Self {
        ConversationOptions {
            agent,
            working_dir: working_dir.into(),
            conversation_id: None,
            max_iterations: 500,
            extra: Map::new(),
        }
    }
}

/// How [`RemoteConversation::run`] ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub status: ExecutionStatus,
}

#[derive(Debug, Clone, Default)]
struct Signals {
    seq: u64,
    /// The socket delivered its first state update since (re)connecting.
    connected: bool,
    /// `(seq, status)` of the latest `full_state` snapshot.
    full_state: Option<(u64, String)>,
    /// `(seq, status)` of the latest per-field `execution_status` update.
    field: Option<(u64, String)>,
}

#[derive(Debug, Default)]
struct Log {
    ids: HashSet<String>,
    events: Vec<Value>,
}

#[derive(Debug)]
struct Shared {
    log: Mutex<Log>,
    state: Mutex<Option<Value>>,
    signals: watch::Sender<Signals>,
    live: broadcast::Sender<Value>,
}

impl Shared {
    /// Adds `event` unless its id is known; returns whether it was new.
    fn insert(&self, event: Value) -> bool {
        let Some(id) = event_id(&event).map(str::to_string) else {
            return false;
        };
        let Ok(mut log) = self.log.lock() else {
            return false;
        };
        if !log.ids.insert(id) {
            return false;
        }
        // Keep timestamp order when a reconciled event lands among live ones.
        let ts = event.get("timestamp").and_then(Value::as_str).unwrap_or("");
        let at = log
            .events
            .iter()
            .rposition(|e| e.get("timestamp").and_then(Value::as_str).unwrap_or("") <= ts)
            .map_or(0, |i| i + 1);
        log.events.insert(at, event);
        true
    }
}

/// A conversation on a remote agent server. Dropping it stops the event task (the conversation
/// itself stays on the server; see [`delete`](Self::delete)).
#[derive(Debug)]
pub struct RemoteConversation {
    ws: RemoteWorkspace,
    id: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RemoteConversation {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RemoteConversation {
    /// Creates a conversation (or attaches when `conversation_id` exists), connects the event
    /// stream and waits (up to 30 s) until it delivered the initial state.
    pub async fn create(
        ws: &RemoteWorkspace,
        opts: ConversationOptions,
    ) -> Result<Self, ClientError> {
        if let Some(id) = opts.conversation_id {
            let req = ws.request(Method::GET, &format!("/api/conversations/{id}"));
            match RemoteWorkspace::send_json::<Value>(req).await {
                Ok(_) => return Self::connect(ws, id.to_string()).await,
                Err(e) if e.status() == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        let mut body = json!({
            "agent": opts.agent,
            "workspace": {"working_dir": opts.working_dir, "kind": "LocalWorkspace"},
            "max_iterations": opts.max_iterations,
        });
        if let Some(id) = opts.conversation_id {
            body["conversation_id"] = json!(id.to_string());
        }
        if let Some(obj) = body.as_object_mut() {
            obj.extend(opts.extra);
        }
        let info: Value =
            RemoteWorkspace::send_json(ws.request(Method::POST, "/api/conversations").json(&body))
                .await?;
        let id = info
            .get("id")
            .or_else(|| info.get("conversation_id"))
            .and_then(Value::as_str)
            .ok_or_else(|| ClientError::Protocol(format!("no conversation id in {info}")))?;
        Self::connect(ws, id.to_string()).await
    }

    /// Attaches to an existing conversation (404 ⇒ error).
    pub async fn attach(ws: &RemoteWorkspace, id: &str) -> Result<Self, ClientError> {
        RemoteWorkspace::send_json::<Value>(
            ws.request(Method::GET, &format!("/api/conversations/{id}")),
        )
        .await?;
        Self::connect(ws, id.to_string()).await
    }

    async fn connect(ws: &RemoteWorkspace, id: String) -> Result<Self, ClientError> {
        let (signals, _) = watch::channel(Signals::default());
        let (live, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            log: Mutex::new(Log::default()),
            state: Mutex::new(None),
            signals,
            live,
        });
        let mut rx = shared.signals.subscribe();
        let task = tokio::spawn(socket_loop(ws.clone(), id.clone(), shared.clone()));
        let conv = RemoteConversation {
            ws: ws.clone(),
            id,
            shared,
            task,
        };
        let ready = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|s| s.connected));
        match ready.await {
            Ok(Ok(_)) => {}
            _ => {
                return Err(ClientError::WebSocket(format!(
                    "the events socket of conversation {} did not deliver its state within 30 s",
                    conv.id
                )))
            }
        }
        conv.reconcile().await?;
        Ok(conv)
    }

    /// The conversation id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Appends a user message (does not start a run).
    pub async fn send_message(&self, text: &str) -> Result<(), ClientError> {
        let body = json!({
            "role": "user",
            "content": [{"type": "text", "text": text, "cache_prompt": false}],
            "run": false,
        });
        RemoteWorkspace::send(self.post("/events").json(&body)).await?;
        Ok(())
    }

    fn post(&self, suffix: &str) -> reqwest::RequestBuilder {
        self.ws.request(
            Method::POST,
            &format!("/api/conversations/{}{suffix}", self.id),
        )
    }

    /// Starts a run and waits (at most `timeout`) until the conversation leaves `running`.
    /// A run ending in `error` or `stuck` is returned as [`ClientError::RunFailed`].
    pub async fn run(&self, timeout: Duration) -> Result<RunOutcome, ClientError> {
        let mut rx = self.shared.signals.subscribe();
        let armed = rx.borrow().seq;
        match RemoteWorkspace::send(self.post("/run").timeout(Duration::from_secs(30))).await {
            Ok(_) => {}
            Err(e) if e.status() == Some(409) => {}
            Err(e) => return Err(e),
        }
        let outcome = tokio::time::timeout(timeout, async {
            let mut poll = tokio::time::interval(Duration::from_secs(2));
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut terminal_polls = 0u32;
            loop {
                {
                    let s = rx.borrow_and_update().clone();
                    if let Some((seq, st)) = &s.field {
                        if *seq > armed && (st == "error" || st == "stuck") {
                            return parse_status(st);
                        }
                    }
                    if let Some((seq, st)) = &s.full_state {
                        if *seq > armed && st != "running" {
                            return parse_status(st);
                        }
                    }
                }
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            return Err(ClientError::WebSocket("event task ended".into()));
                        }
                    }
                    _ = poll.tick() => {
                        // Fallback when the socket is down: REST shows a settled status.
                        if let Ok(st) = self.execution_status().await {
                            if matches!(st, ExecutionStatus::Running) {
                                terminal_polls = 0;
                            } else {
                                terminal_polls += 1;
                                if terminal_polls >= 15 {
                                    return Ok(st);
                                }
                            }
                        }
                    }
                }
            }
        })
        .await;
        let status = match outcome {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClientError::Timeout(format!(
                    "conversation {} still running after {timeout:?}",
                    self.id
                )))
            }
        };
        self.reconcile().await?;
        match status {
            ExecutionStatus::Error | ExecutionStatus::Stuck => {
                let detail = self
                    .events()
                    .iter()
                    .rev()
                    .find(|e| event_kind(e) == Some("ConversationErrorEvent"))
                    .and_then(|e| e.get("detail").and_then(Value::as_str))
                    .unwrap_or("")
                    .to_string();
                Err(ClientError::RunFailed {
                    status: status.as_str().to_string(),
                    detail,
                })
            }
            status => Ok(RunOutcome { status }),
        }
    }

    /// `POST …/pause`.
    pub async fn pause(&self) -> Result<(), ClientError> {
        RemoteWorkspace::send(self.post("/pause")).await.map(|_| ())
    }

    /// `POST …/interrupt` (cancels the in-flight LLM call).
    pub async fn interrupt(&self) -> Result<(), ClientError> {
        RemoteWorkspace::send(self.post("/interrupt"))
            .await
            .map(|_| ())
    }

    /// `GET /api/conversations/{id}` (ConversationInfo).
    pub async fn state(&self) -> Result<Value, ClientError> {
        RemoteWorkspace::send_json(
            self.ws
                .request(Method::GET, &format!("/api/conversations/{}", self.id)),
        )
        .await
    }

    /// The latest `full_state` snapshot received over the socket, if any.
    pub fn cached_state(&self) -> Option<Value> {
        self.shared.state.lock().ok().and_then(|s| s.clone())
    }

    /// The current execution status (REST).
    pub async fn execution_status(&self) -> Result<ExecutionStatus, ClientError> {
        let info = self.state().await?;
        parse_status(
            info.get("execution_status")
                .and_then(Value::as_str)
                .unwrap_or(""),
        )
    }

    /// Every persisted event received so far, in log order, each exactly once.
    pub fn events(&self) -> Vec<Value> {
        self.shared
            .log
            .lock()
            .map(|l| l.events.clone())
            .unwrap_or_default()
    }

    /// Live events as they arrive (including transient ones); a slow receiver may lag, but
    /// [`events`](Self::events) stays complete.
    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.shared.live.subscribe()
    }

    /// Fetches every page of `GET …/events/search` and merges what was missed.
    pub async fn reconcile(&self) -> Result<usize, ClientError> {
        reconcile(&self.ws, &self.id, &self.shared).await
    }

    /// `DELETE /api/conversations/{id}`.
    pub async fn delete(self) -> Result<(), ClientError> {
        RemoteWorkspace::send(
            self.ws
                .request(Method::DELETE, &format!("/api/conversations/{}", self.id)),
        )
        .await
        .map(|_| ())
    }
}

async fn reconcile(ws: &RemoteWorkspace, id: &str, shared: &Shared) -> Result<usize, ClientError> {
    let mut page: Option<String> = None;
    let mut added = 0;
    loop {
        let mut q = vec![("limit", "100".to_string())];
        if let Some(p) = &page {
            q.push(("page_id", p.clone()));
        }
        let body: Value = RemoteWorkspace::send_json(
            ws.request(
                Method::GET,
                &format!("/api/conversations/{id}/events/search"),
            )
            .query(&q),
        )
        .await?;
        for e in body
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if shared.insert(e.clone()) {
                added += 1;
                let _ = shared.live.send(e.clone());
            }
        }
        match body.get("next_page_id").and_then(Value::as_str) {
            Some(p) if !p.is_empty() => page = Some(p.to_string()),
            _ => return Ok(added),
        }
    }
}

/// Keeps the events socket open until a fatal close (4001/4004) or abort.
async fn socket_loop(ws: RemoteWorkspace, id: String, shared: Arc<Shared>) {
    let base = ws.host().replacen("http", "ws", 1);
    let url = format!("{base}/sockets/events/{id}");
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((mut sock, _)) => {
                if let Some(k) = ws.api_key() {
                    let auth = json!({"type": "auth", "session_api_key": k}).to_string();
                    if sock.send(Message::text(auth)).await.is_err() {
                        continue;
                    }
                }
                let mut synced = false;
                while let Some(msg) = sock.next().await {
                    let text = match msg {
                        Ok(Message::Text(t)) => t,
                        Ok(Message::Close(frame)) => {
                            let code = frame.map(|f| u16::from(f.code)).unwrap_or(0);
                            if code == 4001 || code == 4004 {
                                tracing::warn!(code, %id, "events socket closed for good");
                                return;
                            }
                            break;
                        }
                        Ok(_) => continue,
                        Err(_) => break,
                    };
                    let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    let is_state = event_kind(&event) == Some("ConversationStateUpdateEvent");
                    handle_frame(&shared, event);
                    if is_state && !synced {
                        synced = true;
                        backoff = Duration::from_millis(100);
                        if !first {
                            // Events published while we were away.
                            let _ = reconcile(&ws, &id, &shared).await;
                        }
                        first = false;
                        shared.signals.send_modify(|s| {
                            s.seq += 1;
                            s.connected = true;
                        });
                    }
                }
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(resp))
                if resp.status().as_u16() == 401 =>
            {
                tracing::warn!(%id, "events socket refused: unauthorized");
                return;
            }
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

fn handle_frame(shared: &Shared, event: Value) {
    let kind = event_kind(&event).unwrap_or("");
    if kind == "ConversationStateUpdateEvent" {
        let key = event.get("key").and_then(Value::as_str).unwrap_or("");
        if key == "full_state" {
            let status = event
                .pointer("/value/execution_status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Ok(mut s) = shared.state.lock() {
                *s = event.get("value").cloned();
            }
            shared.signals.send_modify(|s| {
                s.seq += 1;
                s.full_state = Some((s.seq, status));
            });
            let _ = shared.live.send(event);
            return;
        }
        if key == "execution_status" {
            let status = event
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if let Ok(mut s) = shared.state.lock() {
                if let Some(Value::Object(m)) = s.as_mut() {
                    m.insert("execution_status".into(), json!(status));
                }
            }
            shared.signals.send_modify(|s| {
                s.seq += 1;
                s.field = Some((s.seq, status));
            });
        }
    }
    if kind == "StreamingDeltaEvent" {
        let _ = shared.live.send(event);
        return;
    }
    if shared.insert(event.clone()) {
        let _ = shared.live.send(event);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn shared() -> Shared {
        Shared {
            log: Mutex::new(Log::default()),
            state: Mutex::new(None),
            signals: watch::channel(Signals::default()).0,
            live: broadcast::channel(16).0,
        }
    }

    #[test]
    fn events_are_deduplicated_and_kept_in_timestamp_order() {
        let s = shared();
        let ev = |id: &str, ts: &str| json!({"id": id, "timestamp": ts, "kind": "MessageEvent"});
        assert!(s.insert(ev("b", "2026-01-01T00:00:02")));
        assert!(s.insert(ev("a", "2026-01-01T00:00:01")));
        assert!(!s.insert(ev("b", "2026-01-01T00:00:02")));
        assert!(s.insert(ev("c", "2026-01-01T00:00:03")));
        let ids: Vec<_> = s
            .log
            .lock()
            .unwrap()
            .events
            .iter()
            .map(|e| event_id(e).unwrap().to_string())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn state_frames_drive_the_run_signals() {
        let s = shared();
        handle_frame(
            &s,
            json!({"id":"1","kind":"ConversationStateUpdateEvent","key":"full_state",
                   "value":{"execution_status":"finished"}}),
        );
        handle_frame(
            &s,
            json!({"id":"2","kind":"ConversationStateUpdateEvent","key":"execution_status",
                   "value":"error"}),
        );
        let sig = s.signals.borrow().clone();
        assert_eq!(sig.full_state, Some((1, "finished".into())));
        assert_eq!(sig.field, Some((2, "error".into())));
        // The snapshot is not a persisted event; the per-field update is.
        assert_eq!(s.log.lock().unwrap().events.len(), 1);
        assert_eq!(parse_status("stuck").unwrap(), ExecutionStatus::Stuck);
        assert!(matches!(
            parse_status("Running"),
            Err(ClientError::Protocol(_))
        ));
    }
}
