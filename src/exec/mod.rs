//! Bash commands of the workspace API: each runs in its own process group; its output becomes
//! `BashOutput` events, persisted as files in the bash events directory and published live.
//!
//! Memory stays bounded for any output size: chunks go to disk as they are produced, the index
//! holds metadata only, and every answer that may hold output text (search pages, batch gets,
//! the merged `execute_bash_command` result) is produced as a byte stream, one event at a time.

mod model;
pub mod orphans;
mod runner;
mod store;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::sync::{broadcast, mpsc};
use tokio_util::task::TaskTracker;

pub use model::{
    BashCommand, BashError, BashEvent, BashEventKind, BashEventPage, BashEventSortOrder,
    BashOutput, ExecuteBashRequest, SearchQuery, DEFAULT_TIMEOUT_SECS,
};
pub use runner::{CHUNK_BYTES, FLUSH_AFTER, KILL_GRACE};
pub use store::{max_events, set_max_events, DEFAULT_MAX_EVENTS};

use runner::Control;
use store::{Announced, Stamp, Store};

/// Most live subscribers (bash-events WebSockets) at once, as the reference.
pub const MAX_SUBSCRIBERS: usize = 50;
/// Announcements a subscriber may fall behind before it reads the store instead (names, and the
/// text of small events).
const SUBSCRIBER_BACKLOG: usize = 1024;
/// Names a catching-up subscriber takes from the index at a time.
const CATCH_UP_BATCH: usize = 64;
/// Bytes of events a catching-up subscriber reads from disk in one blocking task (at least one
/// event): reading a batch at a time lets it catch up faster than commands produce events.
const CATCH_UP_BYTES: usize = 256 * 1024;
/// How long shutdown waits for commands to end after stopping them.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);
/// Byte chunks buffered ahead of a streamed response body.
const BODY_BACKLOG: usize = 2;

/// A JSON response body produced piece by piece.
pub type JsonStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// Errors of the bash service.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The server is shutting down.
    #[error("Bash event service is closed")]
    Closed,
    /// An event could not be written.
    #[error("cannot store bash event: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs commands and keeps their events.
#[derive(Debug, Clone)]
pub struct BashService {
    inner: Arc<Inner>,
}

/// State shared by the service handle and its running commands.
#[derive(Debug)]
pub(crate) struct Inner {
    store: Arc<Store>,
    /// Working directory of commands that name none (`None`: the server's).
    default_cwd: Option<String>,
    /// Commands still running, by hex id. Short critical sections only, never across `.await`.
    running: Mutex<HashMap<String, Arc<Control>>>,
    /// Newly stored events, for live subscribers (sent by the store).
    events: broadcast::Sender<Announced>,
    subscribers: Arc<AtomicUsize>,
    closed: AtomicBool,
    tasks: TaskTracker,
}

impl Inner {
    /// Stores the event `build` makes (announced to subscribers); a failure is logged.
    async fn append(&self, build: impl FnOnce(&Stamp) -> BashEvent) -> Option<Stamp> {
        match self.store.append(build).await {
            Ok((_, stamp)) => Some(stamp),
            Err(e) => {
                tracing::error!(error = %e, "cannot store bash event");
                None
            }
        }
    }

    fn running(&self) -> MutexGuard<'_, HashMap<String, Arc<Control>>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A live feed of newly stored events (see [`BashService::subscribe`]). A subscriber that falls
/// more than the announcement backlog behind catches up from the store, so it misses nothing.
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Announced>,
    /// Name of the last event yielded or skipped. Events are stored in name order, so an
    /// announcement at or before it was already read from the store.
    last: Option<Arc<str>>,
    /// Reading the stored events after `last` before returning to the live feed.
    catching_up: bool,
    /// Names of events to read from the store, then yield in order: taken from the index
    /// while catching up, or announced without their text. Left in place until read, which
    /// keeps [`Subscription::next`] cancel-safe.
    backlog: VecDeque<Arc<str>>,
    /// Events read from the store, to yield in order (`None`: the file was gone or invalid).
    loaded: VecDeque<(Arc<str>, Option<String>)>,
    store: Arc<Store>,
    count: Arc<AtomicUsize>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a subscription yields next.
#[derive(Debug)]
pub enum Received {
    /// One event as compact JSON.
    Event(String),
    /// The service is gone.
    Closed,
    /// Events this subscriber had not read yet were deleted by the retention limit
    /// (`OH_BASH_EVENTS_MAX`) before it could: it fell too far behind and must resync.
    Missed,
}

impl Subscription {
    /// Yields every stored event first (oldest first), then the live ones, with none twice.
    pub fn replay_stored(&mut self) {
        self.last = None;
        self.backlog.clear();
        self.loaded.clear();
        self.catching_up = true;
    }

    /// The next event if it is already read or announced with its text; `None` otherwise
    /// ([`Subscription::next`] then waits or reads). Lets a sender batch ready events.
    pub fn try_next(&mut self) -> Option<String> {
        if let Some((_, Some(_))) = self.loaded.front() {
            let (name, json) = self.loaded.pop_front()?;
            self.last = Some(name);
            return json;
        }
        if !self.loaded.is_empty() || self.catching_up || !self.backlog.is_empty() {
            return None;
        }
        loop {
            match self.rx.try_recv() {
                Ok(announced) => match self.take(announced) {
                    Some(json) => return Some(json),
                    None if !self.backlog.is_empty() => return None,
                    None => {}
                },
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    self.fell_behind(missed);
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// An announcement's JSON to yield; `None` when it was already yielded, or when it must be
    /// read from the store (then left in `backlog`).
    fn take(&mut self, Announced { name, json }: Announced) -> Option<String> {
        if self.last.as_ref().is_some_and(|last| name <= *last) {
            return None;
        }
        match json {
            Some(json) => {
                self.last = Some(name);
                Some(json.to_string())
            }
            None => {
                self.backlog.push_back(name);
                None
            }
        }
    }

    /// Missed announcements: catch up from the store.
    fn fell_behind(&mut self, missed: u64) {
        tracing::debug!(missed, "bash events subscriber behind; reading the store");
        self.catching_up = true;
    }

    /// The next stored event. Cancel-safe: an event being read when the future is dropped is
    /// returned by the next call.
    pub async fn next(&mut self) -> Received {
        loop {
            if let Some((name, json)) = self.loaded.pop_front() {
                match json {
                    Some(json) => {
                        self.last = Some(name);
                        return Received::Event(json);
                    }
                    None if self.store.newest_evicted().is_some_and(|e| e >= name) => {
                        return Received::Missed
                    }
                    None => {
                        self.last = Some(name);
                        continue;
                    }
                }
            }
            if !self.backlog.is_empty() {
                let names: Vec<Arc<str>> =
                    self.backlog.iter().take(CATCH_UP_BATCH).cloned().collect();
                let read = self.store.load_json_many(&names, CATCH_UP_BYTES).await;
                for json in read {
                    if let Some(name) = self.backlog.pop_front() {
                        self.loaded.push_back((name, json));
                    }
                }
                continue;
            }
            if self.catching_up {
                // Read in name order up to `last`: anything deleted after it was never sent.
                let evicted = self.store.newest_evicted();
                if evicted.is_some_and(|e| self.last.as_ref().is_some_and(|last| e > *last)) {
                    return Received::Missed;
                }
                let names = self.store.names_after(self.last.as_deref(), CATCH_UP_BATCH);
                if names.is_empty() {
                    self.catching_up = false;
                }
                self.backlog.extend(names);
                continue;
            }
            match self.rx.recv().await {
                Ok(announced) => {
                    if let Some(json) = self.take(announced) {
                        return Received::Event(json);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => self.fell_behind(missed),
                Err(broadcast::error::RecvError::Closed) => return Received::Closed,
            }
        }
    }
}

/// Sends pieces of a streamed body; `false` once the reader is gone.
struct BodySink(mpsc::Sender<Bytes>);

impl BodySink {
    async fn send(&self, bytes: impl Into<Bytes>) -> bool {
        self.0.send(bytes.into()).await.is_ok()
    }
}

/// A body produced by `produce` on its own task, with backpressure from the reader.
fn spawn_body<F, Fut>(produce: F) -> JsonStream
where
    F: FnOnce(BodySink) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_BACKLOG);
    tokio::spawn(produce(BodySink(tx)));
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok(b), rx))
    }))
}

/// The inside of a JSON string literal for `s` (escaped, without the quotes).
fn json_string_body(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_owned()).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Gives commands cut off by a server crash their final output (exit code -1), so clients
/// polling them across the restart see them end.
async fn finish_interrupted(inner: Arc<Inner>) {
    let store = inner.store.clone();
    let interrupted = tokio::task::spawn_blocking(move || store.take_interrupted())
        .await
        .unwrap_or_default();
    for (command_id, order) in interrupted {
        tracing::info!(%command_id, "bash command was cut off by a server restart");
        inner
            .append(|stamp| {
                BashEvent::Output(BashOutput {
                    id: crate::util::hex_id(),
                    timestamp: stamp.timestamp.clone(),
                    command_id: command_id.to_string(),
                    order,
                    exit_code: Some(-1),
                    stdout: None,
                    stderr: Some(INTERRUPTED_TEXT.into()),
                    kind: "BashOutput".into(),
                })
            })
            .await;
    }
}

/// Final stderr of a command whose server stopped without recording its end.
const INTERRUPTED_TEXT: &str = "The agent server restarted while this command was running";

impl BashService {
    /// A service keeping its events under `events_dir` (created if missing); commands without a
    /// `cwd` run in the server's working directory.
    pub fn new(events_dir: PathBuf) -> std::io::Result<Self> {
        Self::with_default_cwd(events_dir, None)
    }

    /// A service whose commands without a `cwd` run in `default_cwd` (echoed in `BashCommand`),
    /// as the conversation-scoped copies of the routes need.
    pub fn with_default_cwd(
        events_dir: PathBuf,
        default_cwd: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        Self::keeping(events_dir, default_cwd, store::max_events())
    }

    /// [`BashService::with_default_cwd`] keeping at most `max_events` events.
    fn keeping(
        events_dir: PathBuf,
        default_cwd: Option<PathBuf>,
        max_events: usize,
    ) -> std::io::Result<Self> {
        let (events, _) = broadcast::channel(SUBSCRIBER_BACKLOG);
        let store = Store::open_keeping(events_dir, events.clone(), max_events)?;
        let service = BashService {
            inner: Arc::new(Inner {
                store: Arc::new(store),
                default_cwd: default_cwd.map(|p| p.to_string_lossy().into_owned()),
                running: Mutex::new(HashMap::new()),
                events,
                subscribers: Arc::new(AtomicUsize::new(0)),
                closed: AtomicBool::new(false),
                tasks: TaskTracker::new(),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let inner = service.inner.clone();
            service.inner.tasks.spawn(finish_interrupted(inner));
        }
        Ok(service)
    }

    /// Where events are kept.
    pub fn events_dir(&self) -> &Path {
        self.inner.store.dir()
    }

    /// The working directory of commands that name none.
    pub fn default_cwd(&self) -> Option<&str> {
        self.inner.default_cwd.as_deref()
    }

    /// Starts a command in the background; its `BashCommand` is stored before this returns.
    pub async fn start(&self, request: ExecuteBashRequest) -> Result<BashCommand, ExecError> {
        self.start_with_control(request).await.map(|(c, _)| c)
    }

    async fn start_with_control(
        &self,
        request: ExecuteBashRequest,
    ) -> Result<(BashCommand, Arc<Control>), ExecError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(ExecError::Closed);
        }
        let request_cwd = request.cwd.filter(|c| !c.is_empty());
        let id = crate::util::hex_id();
        let mut command = BashCommand {
            command: request.command,
            cwd: request_cwd.or_else(|| inner.default_cwd.clone()),
            timeout: request.timeout,
            id,
            timestamp: String::new(),
            kind: "BashCommand".into(),
        };
        let (_, stamp) = inner
            .store
            .append(|stamp| {
                command.timestamp = stamp.timestamp.clone();
                BashEvent::Command(command.clone())
            })
            .await?;
        command.timestamp = stamp.timestamp;
        let control = Arc::new(Control::new());
        inner.running().insert(command.id.clone(), control.clone());
        let task_inner = inner.clone();
        let task_command = command.clone();
        let task_control = control.clone();
        inner.tasks.spawn(async move {
            let id = task_command.id.clone();
            runner::run(task_inner.clone(), task_command, task_control).await;
            task_inner.running().remove(&id);
        });
        Ok((command, control))
    }

    /// Runs a command to its end and returns its merged `BashOutput` (all chunks joined) as a
    /// JSON body streamed from the chunk files.
    pub async fn execute(&self, request: ExecuteBashRequest) -> Result<JsonStream, ExecError> {
        let (command, control) = self.start_with_control(request).await?;
        let outcome = control.wait_done(None).await;
        let store = self.inner.store.clone();
        let names = store.outputs_of(&command.id);
        let outcome = match (outcome, names.is_empty()) {
            (Some(o), false) => o,
            _ => {
                // Nothing stored (events cleared meanwhile): the reference's empty answer.
                let empty = BashOutput {
                    id: crate::util::hex_id(),
                    timestamp: store.stamp().timestamp,
                    command_id: command.id,
                    order: 0,
                    exit_code: Some(-1),
                    stdout: None,
                    stderr: None,
                    kind: "BashOutput".into(),
                };
                let json = serde_json::to_vec(&empty).map_err(std::io::Error::other)?;
                return Ok(Box::pin(futures::stream::once(async move {
                    Ok(Bytes::from(json))
                })));
            }
        };
        if let (Some(whole), [_]) = (&outcome.whole, names.as_slice()) {
            // One small chunk, still stored: the answer is that chunk.
            let json = serde_json::to_vec(whole).map_err(std::io::Error::other)?;
            return Ok(Box::pin(futures::stream::once(async move {
                Ok(Bytes::from(json))
            })));
        }
        Ok(spawn_body(move |sink| async move {
            let last = &outcome.last;
            let head = format!(
                "{{\"id\":{},\"timestamp\":{},\"command_id\":{},\"order\":{},\"exit_code\":{},",
                serde_json::Value::from(last.id.as_str()),
                serde_json::Value::from(last.timestamp.as_str()),
                serde_json::Value::from(last.command_id.as_str()),
                last.order,
                last.exit_code.unwrap_or(-1),
            );
            if !sink.send(head).await {
                return;
            }
            for (field, present) in [
                ("stdout", outcome.any_stdout),
                ("stderr", outcome.any_stderr),
            ] {
                let opening = if field == "stdout" {
                    "\"stdout\":"
                } else {
                    ",\"stderr\":"
                };
                if !sink.send(opening).await {
                    return;
                }
                if !present {
                    if !sink.send("null").await {
                        return;
                    }
                    continue;
                }
                if !sink.send("\"").await {
                    return;
                }
                for name in &names {
                    let Some(BashEvent::Output(o)) = store.load(name).await else {
                        continue;
                    };
                    let text = if field == "stdout" {
                        o.stdout
                    } else {
                        o.stderr
                    };
                    if let Some(text) = text.filter(|t| !t.is_empty()) {
                        if !sink.send(json_string_body(&text)).await {
                            return;
                        }
                    }
                }
                if !sink.send("\"").await {
                    return;
                }
            }
            sink.send(",\"kind\":\"BashOutput\"}").await;
        }))
    }

    /// Picks one search page: the names of its events and the cursor of the next page.
    async fn select(&self, query: &SearchQuery) -> (Vec<Arc<str>>, Option<String>) {
        if query.order_gt.is_some() {
            self.inner.store.ensure_orders().await;
        }
        self.inner.store.select(query)
    }

    /// One search page as a `BashEventPage` JSON body, events read a batch at a time.
    pub async fn search(&self, query: SearchQuery) -> JsonStream {
        let (names, next) = self.select(&query).await;
        let store = self.inner.store.clone();
        spawn_body(move |sink| async move {
            if !sink.send("{\"items\":[").await {
                return;
            }
            let mut first = true;
            let mut rest = &names[..];
            while !rest.is_empty() {
                let batch = &rest[..rest.len().min(CATCH_UP_BATCH)];
                let read = store.load_json_many(batch, CATCH_UP_BYTES).await;
                rest = &rest[read.len()..];
                for json in read.into_iter().flatten() {
                    let piece = if first { json } else { format!(",{json}") };
                    first = false;
                    if !sink.send(piece).await {
                        return;
                    }
                }
            }
            let tail = format!(
                "],\"next_page_id\":{}}}",
                serde_json::Value::from(next.as_deref())
            );
            sink.send(tail).await;
        })
    }

    /// One search page held in memory (for small pages and tests).
    pub async fn search_page(&self, query: SearchQuery) -> BashEventPage {
        let (names, next_page_id) = self.select(&query).await;
        let mut items = Vec::with_capacity(names.len());
        for name in names {
            if let Some(e) = self.inner.store.load(&name).await {
                items.push(e);
            }
        }
        BashEventPage {
            items,
            next_page_id,
        }
    }

    /// One event by hex id, as compact JSON.
    pub async fn get(&self, event_id: &str) -> Option<String> {
        let name = self.inner.store.name_of(event_id)?;
        self.inner.store.load_json(&name).await
    }

    /// A JSON array with the event (or `null`) of each id, streamed.
    pub fn batch_get(&self, event_ids: Vec<String>) -> JsonStream {
        let store = self.inner.store.clone();
        spawn_body(move |sink| async move {
            if !sink.send("[").await {
                return;
            }
            for (i, id) in event_ids.iter().enumerate() {
                let json = match store.name_of(id) {
                    Some(name) => store.load_json(&name).await,
                    None => None,
                };
                let json = json.unwrap_or_else(|| "null".into());
                let piece = if i == 0 { json } else { format!(",{json}") };
                if !sink.send(piece).await {
                    return;
                }
            }
            sink.send("]").await;
        })
    }

    /// Deletes every stored event; returns how many files were removed.
    pub async fn clear(&self) -> Result<usize, ExecError> {
        Ok(self.inner.store.clear().await?)
    }

    /// Stops a command's process group (SIGTERM, SIGKILL after [`KILL_GRACE`]) and waits for its
    /// final output. True when the id is known: running, finished, or any stored event's id.
    pub async fn stop(&self, command_id: &str) -> bool {
        let control = self.inner.running().get(command_id).cloned();
        if let Some(control) = control {
            control.stop.notify_one();
            control
                .wait_done(Some(KILL_GRACE * 2 + Duration::from_secs(3)))
                .await;
            return true;
        }
        self.inner.store.name_of(command_id).is_some()
    }

    /// A live feed of new events, or `None` when [`MAX_SUBSCRIBERS`] are already listening.
    pub fn subscribe(&self) -> Option<Subscription> {
        let count = self.inner.subscribers.clone();
        let taken = count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SUBSCRIBERS).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| {
            // Subscribed before the newest name is read: whatever is announced later is either
            // after that name (sent) or already stored before the subscription (skipped).
            let rx = self.inner.events.subscribe();
            Subscription {
                rx,
                last: self.inner.store.last_name(),
                catching_up: false,
                backlog: VecDeque::new(),
                loaded: VecDeque::new(),
                store: self.inner.store.clone(),
                count,
            }
        })
    }

    /// Number of commands still running.
    pub fn running_count(&self) -> usize {
        self.inner.running().len()
    }

    /// True when nothing but this handle uses the service: no command running, no
    /// subscriber, no response or write still reading or writing its store.
    pub fn is_unused(&self) -> bool {
        Arc::strong_count(&self.inner) == 1
            && Arc::strong_count(&self.inner.store) == 1
            && self.inner.subscribers.load(Ordering::Acquire) == 0
            && self.inner.running().is_empty()
    }

    /// Kills every running command (process trees) at server shutdown and waits (bounded) for
    /// their final outputs to be stored.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let controls: Vec<Arc<Control>> = self.inner.running().values().cloned().collect();
        for control in &controls {
            control.stop.notify_one();
        }
        self.inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_WAIT, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("bash commands still running at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores a `BashCommand` event whose command is `echo <i>`.
    async fn store_command(service: &BashService, i: usize) {
        let stored = service
            .inner
            .append(|stamp| store::tests::command(i, stamp))
            .await;
        assert!(stored.is_some(), "event {i} stored");
    }

    /// The `i` of a `BashCommand` event's `echo <i>`.
    fn echo_of(json: &str) -> usize {
        let v: serde_json::Value = serde_json::from_str(json).expect("JSON event");
        let command = v["command"].as_str().expect("a BashCommand");
        command["echo ".len()..].parse().expect("echo <i>")
    }

    /// The `i` of the next event's `echo <i>`; panics if none comes within 5 s.
    async fn next_echo(sub: &mut Subscription) -> usize {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Received::Event(json)) => echo_of(&json),
            Ok(other) => panic!("no event: {other:?}"),
            Err(_) => panic!("no event within 5 s"),
        }
    }

    /// True when the subscription has nothing to yield for 200 ms.
    async fn quiet(sub: &mut Subscription) -> bool {
        tokio::time::timeout(Duration::from_millis(200), sub.next())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_subscriber_far_behind_gets_every_event_once_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = BashService::new(dir.path().join("events")).expect("service");
        store_command(&service, 999_999).await;
        let mut sub = service.subscribe().expect("subscription");
        // Far more than the announcement backlog, while the subscriber reads nothing.
        let n = 2 * SUBSCRIBER_BACKLOG + 10;
        for i in 0..n {
            store_command(&service, i).await;
        }
        assert_eq!(next_echo(&mut sub).await, 0);
        // The store is read a batch at a time: the rest of the batch is ready at once (a
        // socket sends it in one flush), which lets a subscriber catch up with the producers.
        let ready: Vec<usize> = std::iter::from_fn(|| sub.try_next())
            .map(|json| echo_of(&json))
            .collect();
        assert_eq!(ready, (1..CATCH_UP_BATCH).collect::<Vec<_>>());
        for i in CATCH_UP_BATCH..n {
            assert_eq!(next_echo(&mut sub).await, i);
        }
        assert!(quiet(&mut sub).await, "no event twice, none from before");
        store_command(&service, n).await;
        assert_eq!(next_echo(&mut sub).await, n, "live again after catching up");
    }

    /// A subscriber so far behind that the retention limit deleted events it had not read is
    /// told so (its socket is closed for a resync) instead of skipping them silently.
    #[tokio::test]
    async fn a_subscriber_overtaken_by_the_retention_limit_is_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = BashService::keeping(dir.path().join("events"), None, 50).expect("service");
        store_command(&service, 999_999).await;
        let mut sub = service.subscribe().expect("subscription");
        for i in 0..SUBSCRIBER_BACKLOG + 100 {
            store_command(&service, i).await;
        }
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Received::Missed) => {}
            other => panic!("expected Missed, got {other:?}"),
        }
        // Within the limit, a subscriber that fell behind still gets everything.
        let mut sub = service.subscribe().expect("subscription");
        for i in 0..60 {
            store_command(&service, 2000 + i).await;
        }
        for i in 0..60 {
            assert_eq!(next_echo(&mut sub).await, 2000 + i);
        }
    }

    #[tokio::test]
    async fn ready_events_are_taken_without_waiting_and_none_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = BashService::new(dir.path().join("events")).expect("service");
        let mut sub = service.subscribe().expect("subscription");
        for i in 0..3 {
            store_command(&service, i).await;
        }
        let ready: Vec<usize> = std::iter::from_fn(|| sub.try_next())
            .map(|json| echo_of(&json))
            .collect();
        assert_eq!(ready, [0, 1, 2]);
        // Far behind: `try_next` stops at the gap and `next` reads the missed events from the
        // store; taking events both ways yields each once, in order.
        let n = 3 + 2 * SUBSCRIBER_BACKLOG + 10;
        for i in 3..n {
            store_command(&service, i).await;
        }
        let mut got = Vec::new();
        while got.len() < n - 3 {
            match sub.try_next() {
                Some(json) => got.push(echo_of(&json)),
                None => got.push(next_echo(&mut sub).await),
            }
        }
        assert_eq!(got, (3..n).collect::<Vec<_>>());
        assert!(sub.try_next().is_none());
        assert!(quiet(&mut sub).await, "no event twice");
    }

    #[tokio::test]
    async fn a_replay_yields_stored_then_live_events_once_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let service = BashService::new(dir.path().join("events")).expect("service");
        for i in 0..5 {
            store_command(&service, i).await;
        }
        let mut sub = service.subscribe().expect("subscription");
        // Announced to the subscription and also in the store when the replay reads it.
        for i in 5..8 {
            store_command(&service, i).await;
        }
        sub.replay_stored();
        for i in 0..8 {
            assert_eq!(next_echo(&mut sub).await, i);
        }
        assert!(quiet(&mut sub).await, "no event twice");
    }
}
