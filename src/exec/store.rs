//! The bash events directory: one JSON file per event named
//! `<YYYYMMDDHHMMSSffffff>_<Kind>[_<command hex>]_<event hex>` (as the reference), written
//! atomically (temp file + rename), plus an in-memory index of names and metadata (never output
//! text) that answers searches without scanning or reading the directory.
//!
//! Cleared event files are kept as empty spares (`.spares/<n>`, so the directory itself holds
//! only event files, as the reference's does) and written into again (then renamed) by later
//! events: reusing an inode costs nothing, while allocating one on ext4 after many deletions
//! scans past every recently freed inode (milliseconds per file on a busy directory). When few
//! spares are left, a blocking task makes new empty ones beside the single writer, so the
//! writer does not wait for inode allocation.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::{Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};

use super::model::{BashEvent, BashEventKind, BashEventSortOrder, SearchQuery};

/// Prefix of temporary files (hidden, so never indexed or counted).
const TEMP_PREFIX: &str = ".tmp-";
/// Subdirectory of spare files: cleared events, emptied, and files made ahead, named by number,
/// waiting to be reused (hidden, never indexed).
const SPARES_DIR: &str = ".spares";
/// Prefix of the spare files of earlier versions, kept in the events directory itself.
const OLD_SPARE_PREFIX: &str = ".spare-";
/// Most spare files kept; a clear beyond this deletes.
const MAX_SPARES: usize = 4096;
/// When fewer spares than this are left, new empty ones are made beside the writer...
const SPARES_LOW_WATER: usize = 64;
/// ... up to this many: a burst of 128 commands (two events each) finds its files ready.
const SPARES_AHEAD: usize = 256;
/// How much of an output file is read to find its `order` after a restart.
const ORDER_PROBE_BYTES: usize = 4096;

/// Events whose JSON is at most this long are announced with their text, so live subscribers
/// send them without reading the file back (the announcement backlog then holds at most
/// `backlog × INLINE_JSON_BYTES`).
const INLINE_JSON_BYTES: usize = 2048;

/// A newly stored event, as told to live subscribers.
#[derive(Debug, Clone)]
pub(crate) struct Announced {
    /// The event's file name.
    pub name: Arc<str>,
    /// Its JSON as stored, when it is small (see [`INLINE_JSON_BYTES`]).
    pub json: Option<Arc<str>>,
}

/// A time for a new event: its file-name prefix and its `timestamp` field.
#[derive(Debug, Clone)]
pub(crate) struct Stamp {
    pub name_prefix: String,
    pub timestamp: String,
}

/// What the index knows about one event file.
#[derive(Debug, Clone)]
struct Meta {
    kind: BashEventKind,
    command_id: Option<Arc<str>>,
    event_id: Arc<str>,
    /// `None` for outputs found on disk at start-up until [`Store::ensure_orders`] reads them.
    order: Option<i64>,
}

#[derive(Debug, Default)]
struct Index {
    by_name: BTreeMap<Arc<str>, Meta>,
    by_id: HashMap<Arc<str>, Arc<str>>,
    outputs_by_command: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
    unresolved_orders: usize,
    /// Name of the newest event deleted by the retention limit.
    newest_evicted: Option<Arc<str>>,
}

impl Index {
    fn insert(&mut self, name: Arc<str>, meta: Meta) {
        if meta.kind == BashEventKind::Output && meta.order.is_none() {
            self.unresolved_orders += 1;
        }
        self.by_id.insert(meta.event_id.clone(), name.clone());
        if let Some(cmd) = &meta.command_id {
            self.outputs_by_command
                .entry(cmd.clone())
                .or_default()
                .insert(name.clone());
        }
        if let Some(old) = self.by_name.insert(name, meta) {
            if old.kind == BashEventKind::Output && old.order.is_none() {
                self.unresolved_orders = self.unresolved_orders.saturating_sub(1);
            }
        }
    }

    fn remove(&mut self, name: &str) {
        let Some(meta) = self.by_name.remove(name) else {
            return;
        };
        if meta.kind == BashEventKind::Output && meta.order.is_none() {
            self.unresolved_orders = self.unresolved_orders.saturating_sub(1);
        }
        if self.by_id.get(&meta.event_id).is_some_and(|n| &**n == name) {
            self.by_id.remove(&meta.event_id);
        }
        if let Some(cmd) = &meta.command_id {
            if let Some(set) = self.outputs_by_command.get_mut(cmd) {
                set.remove(name);
                if set.is_empty() {
                    self.outputs_by_command.remove(cmd);
                }
            }
        }
    }
}

/// Removes the oldest entries beyond `keep` from `index` (names sort by time); returns their
/// names, whose files the caller deletes.
fn evict_oldest(index: &mut Index, keep: usize) -> Vec<Arc<str>> {
    let excess = index.by_name.len().saturating_sub(keep);
    if excess == 0 {
        return Vec::new();
    }
    let names: Vec<Arc<str>> = index.by_name.keys().take(excess).cloned().collect();
    for name in &names {
        index.remove(name);
    }
    index.newest_evicted = names.last().cloned();
    names
}

/// A command id found at start-up and the file name of its last output, if any.
type FoundCommand = (Arc<str>, Option<Arc<str>>);

/// The event files of one bash service and their index.
#[derive(Debug)]
pub(crate) struct Store {
    dir: PathBuf,
    /// `dir/.spares`: empty files waiting to become events (see the module comment).
    spares_dir: PathBuf,
    /// Guards the index; held only for in-memory work, never across I/O or `.await`.
    index: Mutex<Index>,
    /// Microseconds since the epoch of the last stamp, so names strictly increase.
    last_micros: Mutex<i64>,
    /// Resolves the orders of outputs found at start-up, once, on the first search needing them.
    orders_ready: tokio::sync::OnceCell<()>,
    /// Appends waiting to be written, in stamp (= name) order. One drainer at a time writes,
    /// indexes and announces them in that order, so events become visible in name order: a
    /// reader paging by cursor never misses an event that lands behind it.
    queue: Mutex<Queue>,
    /// Numbers of the spare files ready for reuse, taken from the back; files made ahead join
    /// at the front, so cleared files are reused first.
    spares: Mutex<VecDeque<u64>>,
    /// Number of the next spare file.
    next_spare: std::sync::atomic::AtomicU64,
    /// A blocking task is making new empty spares (see [`Store::make_spares_ahead`]).
    making_spares: std::sync::atomic::AtomicBool,
    /// Names of newly stored events, in name order, for live subscribers.
    announce: tokio::sync::broadcast::Sender<Announced>,
    /// Commands found at start-up with the name of their last output, checked once by
    /// [`Store::take_interrupted`].
    found_commands: Mutex<Vec<FoundCommand>>,
    /// Events kept at most; older ones are deleted as new ones come (see [`max_events`]).
    max_events: usize,
}

/// Default of [`set_max_events`]: at about 0.6 kB of index per event, the index stays under
/// roughly 12 MiB (10,000 commands' worth of history).
pub const DEFAULT_MAX_EVENTS: usize = 20_000;

static MAX_EVENTS: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(DEFAULT_MAX_EVENTS);

/// Sets how many bash events each store keeps (`OH_BASH_EVENTS_MAX`): the oldest beyond it are
/// deleted, at start-up and as new events are stored, so memory and disk do not grow with
/// history. Applies to stores opened afterwards.
pub fn set_max_events(n: usize) {
    MAX_EVENTS.store(n.max(1), std::sync::atomic::Ordering::Relaxed);
}

/// The current [`set_max_events`] value.
pub fn max_events() -> usize {
    MAX_EVENTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Parses `<ts>_<Kind>[_<command>]_<id>` into (kind, command id, event id).
fn parse_name(name: &str) -> Option<(BashEventKind, Option<&str>, &str)> {
    let parts: Vec<&str> = name.split('_').collect();
    let ts = parts.first()?;
    if ts.len() != 20 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match (BashEventKind::parse(parts.get(1)?)?, parts.len()) {
        (BashEventKind::Command, 3) => Some((BashEventKind::Command, None, parts[2])),
        (BashEventKind::Output, 4) => Some((BashEventKind::Output, Some(parts[2]), parts[3])),
        _ => None,
    }
}

/// The time at the start of an event file's name: `YYYYMMDDHHMMSSffffff` (UTC).
const NAME_TIME_FORMAT: &str = "%Y%m%d%H%M%S%6f";

/// `YYYYMMDDHHMMSSffffff` of a UTC time, the file-name prefix and search-bound form.
pub(crate) fn name_prefix(t: &DateTime<Utc>) -> String {
    t.format(NAME_TIME_FORMAT).to_string()
}

/// An event waiting to be written, and who waits for its file name.
struct Job {
    stamp: Stamp,
    event: BashEvent,
    reply: tokio::sync::oneshot::Sender<std::io::Result<Arc<str>>>,
}

/// The append queue. Its length is bounded by the appenders: each waits for its own event.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// A drainer is at work (on the blocking pool); it stops when the queue is empty.
    draining: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("jobs", &self.jobs.len())
            .field("draining", &self.draining)
            .finish()
    }
}

/// Hands the queue on if a drainer stops early (a panic): the next drainer takes the rest.
struct DrainGuard<'a> {
    store: &'a Arc<Store>,
    finished: bool,
}

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let restart = {
            let mut q = lock(&self.store.queue);
            q.draining = !q.jobs.is_empty();
            q.draining
        };
        if restart {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let store = self.store.clone();
                    rt.spawn_blocking(move || store.drain());
                }
                // No runtime to hand on to: the next append starts a drainer.
                Err(_) => lock(&self.store.queue).draining = false,
            }
        }
    }
}

/// Locks a mutex, recovering from poisoning (the index stays usable after a panic elsewhere).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Store {
    /// [`Store::open_keeping`] with the configured retention limit.
    #[cfg(test)]
    pub fn open(
        dir: PathBuf,
        announce: tokio::sync::broadcast::Sender<Announced>,
    ) -> std::io::Result<Self> {
        Self::open_keeping(dir, announce, max_events())
    }

    /// Opens (creating if needed) `dir` and indexes the events already in it, keeping at most
    /// `max_events` (the oldest beyond are deleted); new events are announced on `announce`.
    pub fn open_keeping(
        dir: PathBuf,
        announce: tokio::sync::broadcast::Sender<Announced>,
        max_events: usize,
    ) -> std::io::Result<Self> {
        let max_events = max_events.max(1);
        std::fs::create_dir_all(&dir)?;
        let spares_dir = dir.join(SPARES_DIR);
        if let Err(e) = std::fs::create_dir_all(&spares_dir) {
            // Events are then written through temporary files only.
            let dir = spares_dir.display();
            tracing::warn!(%dir, error = %e, "cannot make the spares directory");
        }
        let mut spares = VecDeque::new();
        let mut next_spare = 0;
        for entry in std::fs::read_dir(&spares_dir).into_iter().flatten() {
            let Ok(entry) = entry else { continue };
            match entry.file_name().to_str().map(str::parse::<u64>) {
                Some(Ok(n)) if spares.len() < MAX_SPARES => {
                    next_spare = next_spare.max(n + 1);
                    spares.push_back(n);
                }
                _ => {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let mut index = Index::default();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if name.starts_with(TEMP_PREFIX) || name.starts_with(OLD_SPARE_PREFIX) {
                // A write interrupted by a crash (never renamed, so never visible), or an empty
                // spare of an earlier version.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if let Some((kind, cmd, id)) = parse_name(&name) {
                let meta = Meta {
                    kind,
                    command_id: cmd.map(Arc::from),
                    event_id: Arc::from(id),
                    order: None,
                };
                index.insert(Arc::from(name.as_str()), meta);
            }
        }
        let pruned = evict_oldest(&mut index, max_events);
        for name in &pruned {
            let _ = std::fs::remove_file(dir.join(&**name));
        }
        if !pruned.is_empty() {
            tracing::info!(
                dir = %dir.display(),
                deleted = pruned.len(),
                kept = max_events,
                "deleted the oldest bash events beyond the retention limit (OH_BASH_EVENTS_MAX)"
            );
        }
        if index.unresolved_orders > 0 {
            tracing::info!(
                dir = %dir.display(),
                events = index.by_name.len(),
                "bash events found from a previous run"
            );
        }
        let found_commands = index
            .by_name
            .values()
            .filter(|m| m.kind == BashEventKind::Command)
            .map(|m| {
                let last = index
                    .outputs_by_command
                    .get(&m.event_id)
                    .and_then(|s| s.iter().next_back().cloned());
                (m.event_id.clone(), last)
            })
            .collect();
        // New names sort after every stored one even if the clock went back since they were
        // written: subscribers and page cursors rely on names growing in storing order.
        let last_micros = index
            .by_name
            .keys()
            .next_back()
            .and_then(|name| name.get(..20))
            .and_then(|ts| chrono::NaiveDateTime::parse_from_str(ts, NAME_TIME_FORMAT).ok())
            .map_or(0, |t| t.and_utc().timestamp_micros());
        Ok(Store {
            dir,
            spares_dir,
            found_commands: Mutex::new(found_commands),
            index: Mutex::new(index),
            last_micros: Mutex::new(last_micros),
            orders_ready: tokio::sync::OnceCell::new(),
            queue: Mutex::new(Queue::default()),
            spares: Mutex::new(spares),
            next_spare: std::sync::atomic::AtomicU64::new(next_spare),
            making_spares: std::sync::atomic::AtomicBool::new(false),
            announce,
            max_events,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores the event `build` makes for a fresh stamp (written atomically, indexed, announced)
    /// and returns its file name and stamp. Cancel-safe: once queued, the event is stored even
    /// if the caller stops waiting.
    pub async fn append(
        self: &Arc<Self>,
        build: impl FnOnce(&Stamp) -> BashEvent,
    ) -> std::io::Result<(Arc<str>, Stamp)> {
        let (reply, written) = tokio::sync::oneshot::channel();
        let (stamp, start_drainer) = {
            let mut q = lock(&self.queue);
            // Stamped and queued under one lock: queue order is name order.
            let stamp = self.stamp();
            let event = build(&stamp);
            q.jobs.push_back(Job {
                stamp: stamp.clone(),
                event,
                reply,
            });
            let start = !q.draining;
            q.draining = true;
            (stamp, start)
        };
        if start_drainer {
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.drain());
        }
        let name = written
            .await
            .map_err(|_| std::io::Error::other("bash event writer stopped"))??;
        Ok((name, stamp))
    }

    /// Writes queued events until none is left (blocking). A busy store keeps one drainer
    /// going, with no hand-off between events.
    fn drain(self: Arc<Self>) {
        let mut guard = DrainGuard {
            store: &self,
            finished: false,
        };
        loop {
            let job = {
                let mut q = lock(&self.queue);
                match q.jobs.pop_front() {
                    Some(job) => job,
                    None => {
                        q.draining = false;
                        guard.finished = true;
                        return;
                    }
                }
            };
            let result = self.write(&job.stamp, job.event).map(|(name, meta, json)| {
                let evicted = {
                    let mut index = lock(&self.index);
                    index.insert(name.clone(), meta);
                    evict_oldest(&mut index, self.max_events)
                };
                // Files of events past the retention limit become spares (this runs on the
                // blocking pool).
                for old in evicted {
                    let path = self.dir.join(&*old);
                    if !self.keep_as_spare(&path) {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                let _ = self.announce.send(Announced {
                    name: name.clone(),
                    json,
                });
                name
            });
            let _ = job.reply.send(result);
        }
    }

    /// A fresh time, strictly later than every earlier stamp of this store.
    pub fn stamp(&self) -> Stamp {
        let now = Utc::now().timestamp_micros();
        let micros = {
            let mut last = lock(&self.last_micros);
            let m = now.max(*last + 1);
            *last = m;
            m
        };
        let t = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_else(Utc::now);
        let timestamp = if micros % 1_000_000 == 0 {
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        } else {
            t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
        };
        Stamp {
            name_prefix: name_prefix(&t),
            timestamp,
        }
    }

    /// Writes `event` atomically under the name built from `stamp`; returns its index entry and,
    /// when it is small, its JSON. Blocking.
    fn write(
        self: &Arc<Self>,
        stamp: &Stamp,
        event: BashEvent,
    ) -> std::io::Result<(Arc<str>, Meta, Option<Arc<str>>)> {
        let (name, meta) = match &event {
            BashEvent::Command(c) => (
                format!("{}_BashCommand_{}", stamp.name_prefix, c.id),
                Meta {
                    kind: BashEventKind::Command,
                    command_id: None,
                    event_id: Arc::from(c.id.as_str()),
                    order: None,
                },
            ),
            BashEvent::Output(o) => (
                format!("{}_BashOutput_{}_{}", stamp.name_prefix, o.command_id, o.id),
                Meta {
                    kind: BashEventKind::Output,
                    command_id: Some(Arc::from(o.command_id.as_str())),
                    event_id: Arc::from(o.id.as_str()),
                    order: Some(o.order),
                },
            ),
        };
        let (spare, few_left) = {
            let mut spares = lock(&self.spares);
            (spares.pop_back(), spares.len() < SPARES_LOW_WATER)
        };
        if few_left {
            self.make_spares_ahead();
        }
        let spare = spare.map(|n| self.spares_dir.join(n.to_string()));
        let bytes = write_atomic(&self.dir, &name, &event, spare)?;
        let json = if bytes.len() <= INLINE_JSON_BYTES {
            String::from_utf8(bytes).ok().map(Arc::from)
        } else {
            None
        };
        Ok((Arc::from(name), meta, json))
    }

    /// Reads one event file; `None` (and the name leaves the index) when it is gone or invalid.
    pub async fn load(&self, name: &str) -> Option<BashEvent> {
        let path = self.dir.join(name);
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<BashEvent> {
            let bytes = std::fs::read(&path)?;
            BashEvent::from_json(&bytes).map_err(std::io::Error::other)
        })
        .await;
        match read {
            Ok(Ok(event)) => Some(event),
            Ok(Err(e)) => {
                tracing::warn!(name, error = %e, "unreadable bash event skipped");
                lock(&self.index).remove(name);
                None
            }
            Err(_) => None,
        }
    }

    /// Reads one event's JSON text as stored (our files are compact; files written by the
    /// reference are indented, which is still valid JSON). Checked to be JSON, not re-serialised.
    pub async fn load_json(&self, name: &str) -> Option<String> {
        let path = self.dir.join(name);
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let bytes = std::fs::read(&path)?;
            serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
                .map_err(std::io::Error::other)?;
            let mut text = String::from_utf8(bytes).map_err(std::io::Error::other)?;
            if text.starts_with("{\n") {
                // Written indented by the reference server: answer compact JSON like ours.
                let value: serde_json::Value =
                    serde_json::from_str(&text).map_err(std::io::Error::other)?;
                return Ok(value.to_string());
            }
            text.truncate(text.trim_end().len());
            Ok(text)
        })
        .await;
        match read {
            Ok(Ok(text)) => Some(text),
            Ok(Err(e)) => {
                tracing::warn!(name, error = %e, "unreadable bash event skipped");
                lock(&self.index).remove(name);
                None
            }
            Err(_) => None,
        }
    }

    /// File name of the event with this hex id.
    pub fn name_of(&self, event_id: &str) -> Option<Arc<str>> {
        lock(&self.index).by_id.get(event_id).cloned()
    }

    /// Up to `limit` event names after `after` (all from the first when `None`), in name order:
    /// new events only ever join the end of that order.
    pub fn names_after(&self, after: Option<&str>, limit: usize) -> Vec<Arc<str>> {
        let idx = lock(&self.index);
        let range = match after {
            Some(a) => idx
                .by_name
                .range::<str, _>((Bound::Excluded(a), Bound::Unbounded)),
            None => idx.by_name.range::<str, _>(..),
        };
        range.take(limit).map(|(name, _)| name.clone()).collect()
    }

    /// The name of the newest event the retention limit deleted (events are deleted oldest
    /// first, so a reader that has read up to an earlier name missed one).
    pub fn newest_evicted(&self) -> Option<Arc<str>> {
        lock(&self.index).newest_evicted.clone()
    }

    /// The name of the newest stored event.
    pub fn last_name(&self) -> Option<Arc<str>> {
        lock(&self.index).by_name.keys().next_back().cloned()
    }

    /// Names of a command's outputs, in file-name (= time) order.
    pub fn outputs_of(&self, command_id: &str) -> Vec<Arc<str>> {
        lock(&self.index)
            .outputs_by_command
            .get(command_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Commands of a previous run that never got their final output (the server died while they
    /// ran), each with the `order` its final output should get. Blocking; answers once.
    pub fn take_interrupted(&self) -> Vec<(Arc<str>, i64)> {
        let found = std::mem::take(&mut *lock(&self.found_commands));
        found
            .into_iter()
            .filter_map(|(command_id, last)| match last {
                None => Some((command_id, 0)),
                Some(name) => {
                    let path = self.dir.join(&*name);
                    if head_token(&path, "exit_code").as_deref() != Some("null") {
                        return None;
                    }
                    let order = read_order(&path)?;
                    Some((command_id, order + 1))
                }
            })
            .collect()
    }

    /// Reads the `order` of outputs indexed at start-up (once; later outputs carry theirs).
    pub async fn ensure_orders(self: &Arc<Self>) {
        let store = self.clone();
        self.orders_ready
            .get_or_init(|| async move {
                let pending: Vec<Arc<str>> = {
                    let idx = lock(&store.index);
                    if idx.unresolved_orders == 0 {
                        return;
                    }
                    idx.by_name
                        .iter()
                        .filter(|(_, m)| m.kind == BashEventKind::Output && m.order.is_none())
                        .map(|(n, _)| n.clone())
                        .collect()
                };
                let dir = store.dir.clone();
                let found = tokio::task::spawn_blocking(move || {
                    pending
                        .into_iter()
                        .map(|n| {
                            let order = read_order(&dir.join(&*n));
                            (n, order)
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                let mut idx = lock(&store.index);
                for (name, order) in found {
                    match order {
                        Some(o) => {
                            if let Some(m) = idx.by_name.get_mut(&name) {
                                if m.order.is_none() {
                                    m.order = Some(o);
                                    idx.unresolved_orders = idx.unresolved_orders.saturating_sub(1);
                                }
                            }
                        }
                        None => idx.remove(&name),
                    }
                }
            })
            .await;
    }

    /// Picks the names of one search page and the cursor of the next, from the index alone.
    /// Filters apply before `limit`; an unknown cursor starts from the beginning (as the reference).
    pub fn select(&self, q: &SearchQuery) -> (Vec<Arc<str>>, Option<String>) {
        let idx = lock(&self.index);
        let empty = BTreeSet::new();
        let outputs_of_command = q
            .command_id
            .as_deref()
            .map(|c| idx.outputs_by_command.get(c).unwrap_or(&empty));
        if q.command_id.is_some() && q.kind == Some(BashEventKind::Command) {
            return (Vec::new(), None);
        }
        let lo_s = q.timestamp_gte.as_ref().map(name_prefix);
        let hi_s = q.timestamp_lt.as_ref().map(name_prefix);
        let lo = lo_s.as_deref();
        let hi = hi_s.as_deref();
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if lo >= hi {
                return (Vec::new(), None);
            }
        }
        let passes_name_filters = |name: &str| -> bool {
            let in_set = match outputs_of_command {
                Some(set) => set.contains(name),
                None => true,
            };
            in_set
                && lo.is_none_or(|l| name >= l)
                && hi.is_none_or(|h| name < h)
                && idx
                    .by_name
                    .get(name)
                    .is_some_and(|m| q.kind.is_none_or(|k| k == m.kind))
        };
        let descending = q.sort_order == BashEventSortOrder::TimestampDesc;
        let cursor = q
            .page_id
            .as_deref()
            .filter(|p| !p.is_empty() && passes_name_filters(p));
        let mut lower: Bound<&str> = lo.map_or(Bound::Unbounded, Bound::Included);
        let mut upper: Bound<&str> = hi.map_or(Bound::Unbounded, Bound::Excluded);
        if let Some(c) = cursor {
            if descending {
                upper = Bound::Included(c);
            } else {
                lower = Bound::Included(c);
            }
        }
        let names: Box<dyn Iterator<Item = &Arc<str>>> = match outputs_of_command {
            Some(set) => {
                let r = set.range::<str, _>((lower, upper));
                if descending {
                    Box::new(r.rev())
                } else {
                    Box::new(r)
                }
            }
            None => {
                let r = idx.by_name.range::<str, _>((lower, upper)).map(|(n, _)| n);
                if descending {
                    Box::new(r.rev())
                } else {
                    Box::new(r)
                }
            }
        };
        let mut page = Vec::new();
        let mut next = None;
        for name in names {
            let Some(meta) = idx.by_name.get(name) else {
                continue;
            };
            if q.kind.is_some_and(|k| k != meta.kind) {
                continue;
            }
            if let (Some(gt), Some(order)) = (q.order_gt, meta.order) {
                if order <= gt {
                    continue;
                }
            }
            if page.len() >= q.limit {
                next = Some(name.to_string());
                break;
            }
            page.push(name.clone());
        }
        (page, next)
    }

    /// Starts making new empty spares on another blocking thread (unless one is at it), called
    /// when few are left: allocating an inode can be slow (see the module comment), and this way
    /// a busy store does it beside its single writer instead of in it. Same files, made a little
    /// earlier.
    fn make_spares_ahead(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.making_spares.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let store = self.clone();
                rt.spawn_blocking(move || store.make_spares());
            }
            Err(_) => self.making_spares.store(false, Ordering::Release),
        }
    }

    /// Creates empty spares until [`SPARES_AHEAD`] are ready (blocking); stops at an error.
    fn make_spares(&self) {
        use std::sync::atomic::Ordering;
        while lock(&self.spares).len() < SPARES_AHEAD {
            let n = self.next_spare.fetch_add(1, Ordering::Relaxed);
            let path = self.spares_dir.join(n.to_string());
            let made = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path);
            if let Err(e) = made {
                tracing::debug!(error = %e, "cannot make a spare bash event file");
                break;
            }
            lock(&self.spares).push_front(n);
        }
        self.making_spares.store(false, Ordering::Release);
    }

    /// Turns a cleared event file into an empty spare (blocking); false when the pool is full
    /// or the file cannot be moved (the caller deletes it).
    fn keep_as_spare(&self, path: &Path) -> bool {
        if lock(&self.spares).len() >= MAX_SPARES {
            return false;
        }
        let n = self
            .next_spare
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let spare = self.spares_dir.join(n.to_string());
        if std::fs::rename(path, &spare).is_err() {
            return false;
        }
        // Emptied through an open file: ext4 flushes a file truncated to zero at its next
        // close, and that close is here rather than after the spare's next write.
        let emptied = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&spare);
        if emptied.is_err() {
            let _ = std::fs::remove_file(&spare);
            return true;
        }
        lock(&self.spares).push_back(n);
        true
    }

    /// Deletes every event file (not temp files) and forgets them; returns how many.
    pub async fn clear(self: &Arc<Self>) -> std::io::Result<usize> {
        let dir = self.dir.clone();
        let store = self.clone();
        let removed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                if !store.keep_as_spare(&entry.path()) {
                    if let Err(e) = std::fs::remove_file(entry.path()) {
                        tracing::warn!(name, error = %e, "cannot delete bash event file");
                    }
                }
                names.push(name);
            }
            Ok(names)
        })
        .await
        .map_err(std::io::Error::other)??;
        let mut idx = lock(&self.index);
        for name in &removed {
            idx.remove(name);
        }
        Ok(removed.len())
    }
}

/// Writes `event` to a file not yet visible as an event (the spare file `spare`, else
/// `dir/.tmp-<name>`) then renames it to `dir/<name>`, so a reader (or a restart after a crash)
/// sees either the whole event or nothing. Returns the JSON written.
fn write_atomic(
    dir: &Path,
    name: &str,
    event: &BashEvent,
    spare: Option<PathBuf>,
) -> std::io::Result<Vec<u8>> {
    let bytes = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    // A spare is an existing empty file: opening it allocates no inode. Not opened with
    // O_TRUNC, which would make ext4 flush the file to disk when it is closed.
    let reused = spare.and_then(|path| {
        let file = std::fs::OpenOptions::new().write(true).open(&path).ok()?;
        if file.metadata().ok()?.len() != 0 {
            file.set_len(0).ok()?;
        }
        Some((path, file))
    });
    let (tmp, mut file) = match reused {
        Some(reused) => reused,
        None => {
            let path = dir.join(format!("{TEMP_PREFIX}{name}"));
            let file = std::fs::File::create(&path)?;
            (path, file)
        }
    };
    let written = file.write_all(&bytes);
    drop(file);
    let result = written.and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| bytes)
}

/// The raw JSON token after `"key":` in the first bytes of a stored event (outputs put `order`
/// and `exit_code` before their text, in our files and the reference's).
fn head_token(path: &Path, key: &str) -> Option<String> {
    let mut head = vec![0u8; ORDER_PROBE_BYTES];
    let mut f = std::fs::File::open(path).ok()?;
    let mut filled = 0;
    while filled < head.len() {
        match f.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => return None,
        }
    }
    let head = String::from_utf8_lossy(&head[..filled]);
    let quoted = format!("\"{key}\"");
    let pos = head.find(&quoted)?;
    let rest = head[pos + quoted.len()..].trim_start().strip_prefix(':')?;
    let token: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!token.is_empty()).then_some(token)
}

/// The `order` of a stored output: found in the file's head, else by parsing it all.
fn read_order(path: &Path) -> Option<i64> {
    if let Some(order) = head_token(path, "order").and_then(|t| t.parse().ok()) {
        return Some(order);
    }
    match BashEvent::from_json(&std::fs::read(path).ok()?).ok()? {
        BashEvent::Output(o) => Some(o.order),
        BashEvent::Command(_) => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Inodes of the files in `dir` whose names start with `prefix`.
    fn inodes(dir: &Path, prefix: &str) -> BTreeSet<u64> {
        use std::os::unix::fs::MetadataExt;
        std::fs::read_dir(dir)
            .expect("read_dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| e.metadata().expect("metadata").ino())
            .collect()
    }

    /// A `BashCommand` event running `echo <i>`.
    pub(crate) fn command(i: usize, stamp: &Stamp) -> BashEvent {
        BashEvent::Command(super::super::model::BashCommand {
            command: format!("echo {i}"),
            cwd: None,
            timeout: 1,
            id: format!("{i:032x}"),
            timestamp: stamp.timestamp.clone(),
            kind: "BashCommand".into(),
        })
    }

    #[test]
    fn names_parse_like_the_reference() {
        let (k, c, id) = parse_name("20261125112109177871_BashOutput_abc_def").expect("output");
        assert_eq!((k, c, id), (BashEventKind::Output, Some("abc"), "def"));
        let (k, c, id) = parse_name("20261125112109177871_BashCommand_abc").expect("command");
        assert_eq!((k, c, id), (BashEventKind::Command, None, "abc"));
        assert!(parse_name("2026_BashCommand_abc").is_none());
        assert!(parse_name("20261125112109177871_Other_abc").is_none());
        assert!(parse_name("20261125112109177871_BashOutput_abc").is_none());
    }

    #[test]
    fn stamps_strictly_increase() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            Store::open(dir.path().to_owned(), tokio::sync::broadcast::channel(1).0).expect("open");
        let mut last = String::new();
        for _ in 0..1000 {
            let s = store.stamp();
            assert!(s.name_prefix > last);
            assert!(s.timestamp.ends_with('Z'));
            last = s.name_prefix;
        }
    }

    #[test]
    fn stamps_follow_stored_events_written_under_a_later_clock() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Written before a restart by a clock 70 years ahead of this one.
        let future = "20960102030405123456_BashCommand_0123456789abcdef0123456789abcdef";
        std::fs::write(dir.path().join(future), "{}").expect("event file");
        let store =
            Store::open(dir.path().to_owned(), tokio::sync::broadcast::channel(1).0).expect("open");
        let first = store.stamp();
        assert!(
            first.name_prefix.as_str() > &future[..20],
            "{}",
            first.name_prefix
        );
        assert_eq!(first.name_prefix, "20960102030405123457");
        assert_eq!(first.timestamp, "2096-01-02T03:04:05.123457Z");
    }

    /// The index and the directory hold at most the configured number of events, the newest;
    /// reopening with a smaller limit deletes the oldest at start-up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retention_keeps_the_newest_events_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let event_files = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .expect("read_dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect();
            names.sort();
            names
        };
        let (tx, _rx) = tokio::sync::broadcast::channel(1024);
        let store =
            Arc::new(Store::open_keeping(dir.path().to_owned(), tx.clone(), 50).expect("open"));
        let mut names = Vec::new();
        for i in 0..120 {
            let (name, _) = store
                .append(|stamp| command(i, stamp))
                .await
                .expect("append");
            names.push(name.to_string());
        }
        assert_eq!(lock(&store.index).by_name.len(), 50);
        assert_eq!(event_files(dir.path()), names[70..]);
        assert!(store.name_of(&format!("{:032x}", 10)).is_none());
        drop(store);
        let store = Store::open_keeping(dir.path().to_owned(), tx, 30).expect("reopen");
        assert_eq!(lock(&store.index).by_name.len(), 30);
        assert_eq!(event_files(dir.path()), names[90..]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_become_visible_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, mut rx) = tokio::sync::broadcast::channel(1024);
        let store = Arc::new(Store::open(dir.path().to_owned(), tx).expect("open"));
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .append(|stamp| {
                        BashEvent::Command(super::super::model::BashCommand {
                            // every size of file, so writes finish out of order
                            command: "x".repeat((i * 7919) % 200_000),
                            cwd: None,
                            timeout: 1,
                            id: format!("{i:032x}"),
                            timestamp: stamp.timestamp.clone(),
                            kind: "BashCommand".into(),
                        })
                    })
                    .await
                    .expect("append")
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let mut announced = Vec::new();
        while let Ok(a) = rx.try_recv() {
            let a: Announced = a;
            // Small events come with their JSON, exactly the file's content.
            if let Some(json) = &a.json {
                let on_disk = std::fs::read_to_string(dir.path().join(&*a.name)).expect("read");
                assert_eq!(**json, on_disk);
            }
            announced.push(a.name.to_string());
        }
        assert_eq!(announced.len(), 200);
        let mut sorted = announced.clone();
        sorted.sort();
        assert_eq!(announced, sorted, "announced out of name order");
        assert_eq!(lock(&store.index).by_name.len(), 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn spares_are_made_ahead_of_the_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (tx, _) = tokio::sync::broadcast::channel(16);
        let store = Arc::new(Store::open(dir.path().to_owned(), tx).expect("open"));
        let event_inodes = || inodes(dir.path(), "2");
        let spare_inodes = || inodes(&dir.path().join(SPARES_DIR), "");
        store.append(|s| command(0, s)).await.expect("append");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while spare_inodes().len() < SPARES_AHEAD {
            assert!(std::time::Instant::now() < deadline, "spares made ahead");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let ahead = spare_inodes();
        for i in 1..=20 {
            store.append(|s| command(i, s)).await.expect("append");
        }
        let events = event_inodes();
        assert_eq!(events.len(), 21);
        assert_eq!(
            events.intersection(&ahead).count(),
            20,
            "written into spares"
        );
        let names: Vec<Arc<str>> = lock(&store.index).by_name.keys().cloned().collect();
        for (i, name) in names.iter().enumerate() {
            let text = std::fs::read_to_string(dir.path().join(name.as_ref())).expect("read");
            assert!(text.contains(&format!("\"echo {i}\"")), "{name}: {text}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cleared_files_are_reused_for_new_events() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = || {
            let (tx, _) = tokio::sync::broadcast::channel(16);
            Arc::new(Store::open(dir.path().to_owned(), tx).expect("open"))
        };
        let event_inodes = || inodes(dir.path(), "2");
        let spare_inodes = || inodes(&dir.path().join(SPARES_DIR), "");
        let store = open();
        for i in 0..20 {
            store.append(|s| command(i, s)).await.expect("append");
        }
        let written = event_inodes();
        assert_eq!(store.clear().await.expect("clear"), 20);
        while store
            .making_spares
            .load(std::sync::atomic::Ordering::Acquire)
        {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let spares = spare_inodes();
        assert!(written.is_subset(&spares), "cleared files kept as spares");
        assert!(event_inodes().is_empty());
        assert!(lock(&store.index).by_name.is_empty());
        // A restart finds the spares; new events are written into them, whole and readable,
        // even into spares still holding a longer write that a crash left there.
        drop(store);
        for entry in std::fs::read_dir(dir.path().join(SPARES_DIR)).expect("read_dir") {
            let path = entry.expect("entry").path();
            std::fs::write(path, vec![b'x'; 10_000]).expect("stale spare");
        }
        // Leftovers of a crash and of earlier versions in the events directory go.
        for leftover in [".tmp-20261127_BashCommand_1", ".spare-7"] {
            std::fs::write(dir.path().join(leftover), "{").expect("leftover");
        }
        let store = open();
        for leftover in [".tmp-20261127_BashCommand_1", ".spare-7"] {
            assert!(!dir.path().join(leftover).exists(), "{leftover} removed");
        }
        for i in 100..130 {
            store.append(|s| command(i, s)).await.expect("append");
        }
        let events = event_inodes();
        assert_eq!(events.len(), 30);
        assert_eq!(
            events.intersection(&spares).count(),
            spares.len().min(30),
            "spares reused"
        );
        let (names, _) = store.select(&SearchQuery {
            limit: 100,
            ..SearchQuery::default()
        });
        assert_eq!(names.len(), 30);
        for (i, name) in names.iter().enumerate() {
            match store.load(name).await {
                Some(BashEvent::Command(c)) => assert_eq!(c.command, format!("echo {}", 100 + i)),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
