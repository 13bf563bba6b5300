//! The conversation registry ([`ConversationService`], [`registry`]) and one live
//! conversation ([`Conversation`]): its persisted state ([`docs`]: the reference's
//! `ConversationState` kept as JSON, and the append-only event log, persisted before it is
//! published), the WebSocket subscribers it fans events out to ([`fanout`]) and the views
//! REST answers show ([`views`]). Running it is [`super::control`]'s job.

mod create;
mod docs;
mod fanout;
mod registry;
mod views;

pub use create::{normalize_secret, validate_tags};
pub use views::infos;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::events::{self, Clock};
use super::meta::StoredConversation;
use super::state::{ConversationState, StateField};
use super::{stats, store, ConversationError, ExecutionStatus};
use crate::crypto::{self, Cipher, MASK};

/// Capacity of one WebSocket subscriber's queue; a subscriber that falls this far behind is
/// disconnected (it reconnects and reconciles over REST) instead of slowing the agent.
pub const SUBSCRIBER_QUEUE: usize = 2048;
/// Most subscribers one conversation accepts.
pub const MAX_SUBSCRIBERS: usize = 50;

/// The registry of conversations under `conversations_path`.
pub struct ConversationService {
    /// Every task this registry's conversations start (runs, goal loops, titles, snapshots,
    /// the idle release): [`ConversationService::shutdown`] waits for them.
    pub(super) tasks: TaskTracker,
    /// Cancelled at shutdown: the idle release stops and no new run starts.
    pub(super) stopping: CancellationToken,
    pub(super) root: PathBuf,
    pub(super) cipher: Option<Arc<Cipher>>,
    pub(super) max_runs: usize,
    pub(super) active_runs: Arc<AtomicUsize>,
    pub(super) convs: Mutex<HashMap<Uuid, Arc<Conversation>>>,
    pub(super) create_lock: tokio::sync::Mutex<()>,
    /// Answers `LookupSecret`s that point at this server (set once at start-up).
    pub(super) local_secrets: Arc<std::sync::OnceLock<crate::settings::lookup::LocalSecrets>>,
    /// This registry, for the tools that start child conversations (set once at start-up).
    pub(super) self_ref: Arc<std::sync::OnceLock<std::sync::Weak<ConversationService>>>,
    /// Sub-agent definitions the `task` tool can run.
    pub subagents: Arc<crate::subagents::Registry>,
    /// The user's persistence directory (user sub-agent files live in its `agents/`).
    pub(super) user_dir: std::sync::OnceLock<PathBuf>,
}

impl std::fmt::Debug for ConversationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationService")
            .field("root", &self.root)
            .finish()
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why a subscriber's stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The conversation was deleted.
    Deleted,
    /// The subscriber fell too far behind.
    Overflow,
}

/// One WebSocket subscriber's queue.
pub(super) struct Subscriber {
    pub(super) id: u64,
    pub(super) tx: mpsc::Sender<Arc<str>>,
}

/// The receiving side given to a WebSocket handler.
pub struct Subscription {
    /// Serialized events, the `full_state` snapshot first.
    pub rx: mpsc::Receiver<Arc<str>>,
    /// Set when the stream was cut because the subscriber was too slow.
    pub overflowed: Arc<AtomicBool>,
    pub(super) id: u64,
    pub(super) conv: Arc<Conversation>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = lock(&self.conv.inner);
        inner.subscribers.retain(|s| s.id != self.id);
    }
}

/// Control of an active run task.
#[derive(Clone)]
pub struct RunCtl {
    /// Cancelled by `interrupt`.
    pub cancel: CancellationToken,
    /// Set when a message asked for another run while this one was going.
    pub rerun: Arc<AtomicBool>,
    /// Set when a user message was appended during the run.
    pub new_message: Arc<AtomicBool>,
    /// Set when the run loop has stopped looking at `rerun` (only [`Conversation::end_run`]
    /// acts on a request made after that).
    pub exiting: Arc<AtomicBool>,
    pub(super) done: Arc<tokio::sync::Notify>,
    pub(super) finished: Arc<AtomicBool>,
}

pub(super) struct Inner {
    /// `ConversationState` with secrets in plaintext (defaults while `docs_loaded` is false).
    pub(super) state: ConversationState,
    /// `StoredConversation` with secrets in plaintext (defaults while `docs_loaded` is false).
    pub(super) meta: StoredConversation,
    /// Whether `state` and `meta` hold the documents. An idle conversation keeps only its
    /// `summary` in memory; the documents are read from disk again when needed.
    pub(super) docs_loaded: bool,
    /// Not loaded since start-up: the first load resets policy and analyzer like the reference.
    pub(super) first_load: bool,
    /// `state` has changes not yet in `base_state.json` (stats between status changes).
    pub(super) dirty: bool,
    /// What listing and counting need while the documents are not loaded.
    pub(super) summary: Summary,
    pub(super) events: Option<Vec<Value>>,
    pub(super) clock: Clock,
    pub(super) subscribers: Vec<Subscriber>,
    pub(super) next_sub: u64,
    pub(super) overflow_flags: HashMap<u64, Arc<AtomicBool>>,
    pub(super) run: Option<RunCtl>,
    pub(super) title_started: bool,
    /// Last time the event log was needed (idle conversations release it).
    pub(super) last_used: std::time::Instant,
}

/// The fields of an unloaded conversation that search, count and sorting read.
#[derive(Debug, Default, Clone)]
pub(super) struct Summary {
    pub(super) status: ExecutionStatus,
    pub(super) created_at: Box<str>,
    pub(super) updated_at: Box<str>,
}

impl Summary {
    fn of(state: &ConversationState, meta: &StoredConversation) -> Summary {
        Summary {
            status: state.execution_status,
            created_at: meta.created_at.as_str().into(),
            updated_at: meta.updated_at.as_str().into(),
        }
    }
}

/// `meta.json` fields read at start-up (the rest is skipped without being kept).
#[derive(Deserialize)]
pub(super) struct MetaHead {
    pub(super) id: Option<Value>,
    pub(super) parent_conversation_id: Option<Value>,
    pub(super) created_at: Option<Value>,
    pub(super) updated_at: Option<Value>,
}

/// `base_state.json` field read at start-up.
#[derive(Deserialize)]
pub(super) struct StateHead {
    pub(super) execution_status: Option<Value>,
}

/// A conversation's documents as read from disk.
pub(super) struct Docs {
    pub(super) state: ConversationState,
    pub(super) meta: StoredConversation,
    /// The first-load reset changed the state (it must be written before it is dropped).
    pub(super) changed: bool,
}

/// One conversation.
pub struct Conversation {
    /// The registry's task tracker: every task of this conversation is spawned on it.
    pub(super) tasks: TaskTracker,
    /// The registry's shutdown signal.
    pub(super) stopping: CancellationToken,
    /// The conversation id.
    pub id: Uuid,
    /// The conversation that started this one (`parent_conversation_id`), if any.
    pub parent: Option<Uuid>,
    pub(super) dir: PathBuf,
    pub(super) persistence_dir: String,
    pub(super) cipher: Option<Arc<Cipher>>,
    pub(super) inner: Mutex<Inner>,
    pub(super) write_lock: tokio::sync::Mutex<()>,
    pub(super) load_lock: tokio::sync::Mutex<()>,
    pub(super) runtime: tokio::sync::Mutex<Option<Arc<super::runtime::AgentRuntime>>>,
    pub(super) deleted: AtomicBool,
    pub(super) active_runs: Arc<AtomicUsize>,
    pub(super) max_runs: usize,
    /// The conversation-scoped bash runner (`<dir>/bash_events`): opened on first use,
    /// released (its index dropped, its files kept) when idle.
    pub(super) bash: tokio::sync::Mutex<ScopedBash>,
    /// Values of the `LookupSecret`s last resolved (name, value).
    pub(super) lookups: std::sync::RwLock<Vec<(String, String)>>,
    pub(super) local_secrets: Arc<std::sync::OnceLock<crate::settings::lookup::LocalSecrets>>,
    /// The registry this conversation belongs to (for starting children).
    pub(super) registry: Arc<std::sync::OnceLock<std::sync::Weak<ConversationService>>>,
    /// Cancels the goal loop working on this conversation, if any.
    pub(super) goal: Mutex<Option<CancellationToken>>,
    /// The ACP session of an `ACPAgent` conversation, once started.
    pub(super) acp: tokio::sync::Mutex<Option<Arc<crate::acp::Session>>>,
}

/// How a state view shows secrets.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum SecretView {
    Null,
    Masked,
}

impl RunCtl {
    /// Waits until the run task has ended.
    pub async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            if self.finished.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// A conversation's scoped bash runner and when a request last used it.
#[derive(Debug)]
pub(super) struct ScopedBash {
    pub(super) service: Option<Arc<crate::exec::BashService>>,
    pub(super) last_used: std::time::Instant,
}

impl Default for ScopedBash {
    fn default() -> Self {
        ScopedBash {
            service: None,
            last_used: std::time::Instant::now(),
        }
    }
}
