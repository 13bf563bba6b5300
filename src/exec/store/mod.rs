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

mod read;
mod spares;
#[cfg(test)]
pub(crate) mod tests;
mod writer;

use writer::Queue;

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
}
