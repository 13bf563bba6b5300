//! The conversation registry ([`ConversationService`]) and one live conversation
//! ([`Conversation`]): its state (the reference's `ConversationState`, kept as JSON), its
//! append-only event log (persisted before it is published), the WebSocket subscribers it
//! fans events out to, and the control of its run task.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::crypto::{self, Cipher, MASK};
use super::events::{self, Clock};
use super::{agent, stats, status, store, ConversationError};

/// Capacity of one WebSocket subscriber's queue; a subscriber that falls this far behind is
/// disconnected (it reconnects and reconciles over REST) instead of slowing the agent.
pub const SUBSCRIBER_QUEUE: usize = 2048;
/// Most subscribers one conversation accepts.
pub const MAX_SUBSCRIBERS: usize = 50;

/// The registry of conversations under `conversations_path`.
pub struct ConversationService {
    root: PathBuf,
    cipher: Option<Arc<Cipher>>,
    max_runs: usize,
    active_runs: Arc<AtomicUsize>,
    convs: Mutex<HashMap<Uuid, Arc<Conversation>>>,
    create_lock: tokio::sync::Mutex<()>,
    /// Answers `LookupSecret`s that point at this server (set once at start-up).
    local_secrets: Arc<std::sync::OnceLock<crate::settings::lookup::LocalSecrets>>,
    /// This registry, for the tools that start child conversations (set once at start-up).
    self_ref: Arc<std::sync::OnceLock<std::sync::Weak<ConversationService>>>,
    /// Sub-agent definitions the `task` tool can run.
    pub subagents: Arc<crate::subagents::Registry>,
    /// The user's persistence directory (user sub-agent files live in its `agents/`).
    user_dir: std::sync::OnceLock<PathBuf>,
}

impl std::fmt::Debug for ConversationService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConversationService")
            .field("root", &self.root)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<str>>,
}

/// The receiving side given to a WebSocket handler.
pub struct Subscription {
    /// Serialized events, the `full_state` snapshot first.
    pub rx: mpsc::Receiver<Arc<str>>,
    /// Set when the stream was cut because the subscriber was too slow.
    pub overflowed: Arc<AtomicBool>,
    id: u64,
    conv: Arc<Conversation>,
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
    done: Arc<tokio::sync::Notify>,
    finished: Arc<AtomicBool>,
}

struct Inner {
    /// `ConversationState` with secrets in plaintext (empty while `docs_loaded` is false).
    state: Map<String, Value>,
    /// `StoredConversation` with secrets in plaintext (empty while `docs_loaded` is false).
    meta: Map<String, Value>,
    /// Whether `state` and `meta` hold the documents. An idle conversation keeps only its
    /// `summary` in memory; the documents are read from disk again when needed.
    docs_loaded: bool,
    /// Not loaded since start-up: the first load resets policy and analyzer like the reference.
    first_load: bool,
    /// `state` has changes not yet in `base_state.json` (stats between status changes).
    dirty: bool,
    /// What listing and counting need while the documents are not loaded.
    summary: Summary,
    events: Option<Vec<Value>>,
    clock: Clock,
    subscribers: Vec<Subscriber>,
    next_sub: u64,
    overflow_flags: HashMap<u64, Arc<AtomicBool>>,
    run: Option<RunCtl>,
    title_started: bool,
    /// Last time the event log was needed (idle conversations release it).
    last_used: std::time::Instant,
}

/// The fields of an unloaded conversation that search, count and sorting read.
#[derive(Debug, Default, Clone)]
struct Summary {
    status: Box<str>,
    created_at: Box<str>,
    updated_at: Box<str>,
}

impl Summary {
    fn of(state: &Map<String, Value>, meta: &Map<String, Value>) -> Summary {
        let s = |m: &Map<String, Value>, k: &str| -> Box<str> {
            m.get(k).and_then(Value::as_str).unwrap_or_default().into()
        };
        Summary {
            status: s(state, "execution_status"),
            created_at: s(meta, "created_at"),
            updated_at: s(meta, "updated_at"),
        }
    }
}

/// `meta.json` fields read at start-up (the rest is skipped without being kept).
#[derive(Deserialize)]
struct MetaHead {
    id: Option<Value>,
    parent_conversation_id: Option<Value>,
    created_at: Option<Value>,
    updated_at: Option<Value>,
}

/// `base_state.json` field read at start-up.
#[derive(Deserialize)]
struct StateHead {
    execution_status: Option<Value>,
}

/// Reads a conversation's documents from disk, secrets decrypted and defaults filled. With
/// `reset` (the first load after start-up) the confirmation policy and the security analyzer
/// go back to their creation-time values, as the reference does when it loads a conversation;
/// the flag returned says whether that changed the state. Blocking.
fn load_docs(dir: &Path, id: Uuid, cipher: Option<&Cipher>, reset: bool) -> std::io::Result<Docs> {
    let mut meta = match store::read_json(&dir.join("meta.json"))? {
        Value::Object(m) => m,
        _ => return Err(std::io::Error::other("meta.json is not an object")),
    };
    let mut state = match store::read_json(&dir.join("base_state.json")) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if let Some(agent) = state.get_mut("agent") {
        crypto::map_secret_fields(agent, &|s| crypto::unseal(cipher, s));
    }
    if let Some(reg) = state.get_mut("secret_registry") {
        crypto::map_registry(reg, &|s| crypto::unseal(cipher, s));
    }
    if let Some(secrets) = meta.get_mut("secrets").and_then(Value::as_object_mut) {
        for v in secrets.values_mut() {
            if let Some(Value::String(s)) = v.get("value").cloned().as_ref() {
                v["value"] = crypto::unseal(cipher, s);
            }
        }
    }
    fill_state_defaults(&mut state, id, &meta);
    let mut changed = false;
    if reset {
        for k in ["confirmation_policy", "security_analyzer"] {
            if let Some(v) = meta.get(k) {
                if (!v.is_null() || k == "security_analyzer") && state.get(k) != Some(v) {
                    state.insert(k.into(), v.clone());
                    changed = true;
                }
            }
        }
    }
    Ok(Docs {
        state,
        meta,
        changed,
    })
}

/// A conversation's documents as read from disk.
struct Docs {
    state: Map<String, Value>,
    meta: Map<String, Value>,
    /// The first-load reset changed the state (it must be written before it is dropped).
    changed: bool,
}

/// One conversation.
pub struct Conversation {
    /// The conversation id.
    pub id: Uuid,
    /// The conversation that started this one (`parent_conversation_id`), if any.
    pub parent: Option<Uuid>,
    dir: PathBuf,
    persistence_dir: String,
    cipher: Option<Arc<Cipher>>,
    inner: Mutex<Inner>,
    write_lock: tokio::sync::Mutex<()>,
    load_lock: tokio::sync::Mutex<()>,
    pub(super) runtime: tokio::sync::Mutex<Option<Arc<agent::AgentRuntime>>>,
    deleted: AtomicBool,
    active_runs: Arc<AtomicUsize>,
    max_runs: usize,
    /// The conversation-scoped bash runner (`<dir>/bash_events`), created on first use.
    bash: std::sync::OnceLock<Arc<crate::exec::BashService>>,
    /// Values of the `LookupSecret`s last resolved (name, value).
    lookups: std::sync::RwLock<Vec<(String, String)>>,
    local_secrets: Arc<std::sync::OnceLock<crate::settings::lookup::LocalSecrets>>,
    /// The registry this conversation belongs to (for starting children).
    registry: Arc<std::sync::OnceLock<std::sync::Weak<ConversationService>>>,
    /// The goal loop working on this conversation, if any.
    goal: Mutex<Option<super::goal::GoalCtl>>,
    /// The ACP session of an `ACPAgent` conversation, once started.
    pub(super) acp: tokio::sync::Mutex<Option<Arc<crate::acp::Session>>>,
}

/// Keys of `StoredConversation` taken from the create request, with their defaults.
fn meta_defaults() -> Vec<(&'static str, Value)> {
    vec![
        ("workspace", Value::Null),
        ("worktree", json!(false)),
        ("worktree_options", Value::Null),
        ("conversation_id", Value::Null),
        ("parent_conversation_id", Value::Null),
        ("confirmation_policy", json!({"kind": "NeverConfirm"})),
        ("security_analyzer", Value::Null),
        ("initial_message", Value::Null),
        ("max_iterations", json!(500)),
        ("stuck_detection", json!(true)),
        ("secrets", json!({})),
        ("secrets_encrypted", json!(false)),
        ("tool_module_qualnames", json!({})),
        ("client_tools", json!([])),
        ("agent_launch_additions", Value::Null),
        ("agent_definitions", json!([])),
        ("plugins", Value::Null),
        ("hook_config", Value::Null),
        ("tags", json!({})),
        ("user_id", Value::Null),
        ("observability_metadata", json!({})),
        ("observability_tags", json!([])),
        ("observability_span_name", json!("conversation")),
        ("observability_parent_span_context", Value::Null),
        ("autotitle", json!(true)),
        ("title_llm_profile", Value::Null),
        ("prompt", Value::Null),
        ("launched_agent_profile", Value::Null),
    ]
}

/// Validated `StartConversationRequest`.
struct CreateRequest {
    id: Option<Uuid>,
    agent: Value,
    meta: Map<String, Value>,
    working_dir: String,
}

/// The reference's checks of `parent_conversation_id`: another, existing conversation on the
/// same workspace.
fn check_parent(
    svc: &ConversationService,
    id: Uuid,
    parent: &str,
    working_dir: Option<&str>,
) -> Result<(), ConversationError> {
    let parent_id = Uuid::parse_str(parent)
        .map_err(|_| invalid("parent_conversation_id: Input should be a valid UUID"))?;
    if parent_id == id {
        return Err(ConversationError::Refused(
            "A conversation cannot be its own parent".into(),
        ));
    }
    let Some(p) = svc.get(&parent_id) else {
        return Err(ConversationError::Refused(format!(
            "Parent conversation {parent_id} not found"
        )));
    };
    let canon = |d: &str| std::fs::canonicalize(d).unwrap_or_else(|_| PathBuf::from(d));
    if working_dir.is_some_and(|w| canon(&p.working_dir()) != canon(w)) {
        return Err(ConversationError::Refused(format!(
            "Parent conversation {parent_id} belongs to a different workspace"
        )));
    }
    Ok(())
}

fn invalid(msg: impl Into<String>) -> ConversationError {
    ConversationError::Invalid(msg.into())
}

fn parse_create(body: &Value, cipher: Option<&Cipher>) -> Result<CreateRequest, ConversationError> {
    let obj = body
        .as_object()
        .ok_or_else(|| invalid("Input should be a valid dictionary"))?;
    let mut agent = match obj.get("agent") {
        Some(a @ Value::Object(_)) => a.clone(),
        // `agent_settings` and `agent_profile_id` are turned into an `agent` before this
        // (`SettingsService::resolve_agent_source`).
        Some(Value::Null) | None => {
            return Err(invalid(
                "One of `agent`, `agent_settings`, or `agent_profile_id` must be provided",
            ));
        }
        Some(_) => return Err(invalid("agent: Input should be a valid dictionary")),
    };
    if agent.get("llm").is_none_or(|l| !l.is_object()) {
        return Err(invalid("agent.llm: Field required"));
    }
    match agent.get("kind").and_then(Value::as_str) {
        None => {
            agent["kind"] = json!("Agent");
        }
        Some("Agent") => {}
        Some("ACPAgent") => {
            let has_command = agent["acp_command"]
                .as_array()
                .is_some_and(|c| c.iter().any(|v| v.as_str().is_some_and(|s| !s.is_empty())));
            if !has_command {
                return Err(invalid("agent.acp_command: Field required"));
            }
        }
        Some(other) => {
            return Err(invalid(format!(
                "agent kind {other:?} is not supported by this server"
            )))
        }
    }
    if obj.get("secrets_encrypted").and_then(Value::as_bool) == Some(true) {
        crypto::map_secret_fields(&mut agent, &|s| crypto::unseal(cipher, s));
    }
    // Client-defined tools join the agent's tools with their spec, as the reference injects
    // them; the specs are also kept in the metadata (`client_tools`).
    let client_tools = match obj.get("client_tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(specs) => crate::tools::client::validate_specs(specs).map_err(invalid)?,
    };
    if !client_tools.is_empty() {
        if !agent.get("tools").is_some_and(Value::is_array) {
            agent["tools"] = json!([]);
        }
        if let Some(tools) = agent.get_mut("tools").and_then(Value::as_array_mut) {
            for spec in &client_tools {
                let name = spec["name"].clone();
                if tools.iter().any(|t| t.get("name") == Some(&name)) {
                    return Err(invalid(format!(
                        "Client tool name {name} collides with an existing non-client tool. Choose a unique client tool name."
                    )));
                }
                tools.push(json!({"name": name, "params": {"spec": spec}}));
            }
        }
    }
    let working_dir = obj
        .get("workspace")
        .and_then(|w| w.get("working_dir"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("workspace: Field required"))?
        .to_string();
    if let Some(rt) = obj.get("conversation_runtime") {
        if !(rt.is_null() || rt == "local") {
            return Err(invalid("This server only runs local conversations"));
        }
    }
    let id = match obj.get("conversation_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            Uuid::parse_str(s)
                .map_err(|_| invalid("conversation_id: Input should be a valid UUID"))?,
        ),
        Some(_) => return Err(invalid("conversation_id: Input should be a valid UUID")),
    };
    let mut meta = Map::new();
    for (k, default) in meta_defaults() {
        let v = obj.get(k).cloned().unwrap_or(default.clone());
        let v = if v.is_null() && !default.is_null() {
            default
        } else {
            v
        };
        meta.insert(k.into(), v);
    }
    meta["workspace"] = json!({"working_dir": working_dir, "kind": "LocalWorkspace"});
    match meta.get("max_iterations").and_then(Value::as_i64) {
        Some(n) if n >= 1 => {}
        _ => {
            return Err(invalid(
                "max_iterations: Input should be greater than or equal to 1",
            ))
        }
    }
    if let Some(tags) = meta.get("tags").and_then(Value::as_object) {
        validate_tags(tags)?;
    } else {
        return Err(invalid("tags: Input should be a valid dictionary"));
    }
    // Modules of the built-in tools the agent names, so that any client can deserialize the
    // tool events (the reference records the server-resolved ones).
    let client_tool_names: Vec<String> = meta["client_tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect();
    if let Some(modules) = meta
        .get_mut("tool_module_qualnames")
        .and_then(Value::as_object_mut)
    {
        for tool in agent["tools"].as_array().into_iter().flatten() {
            let Some(name) = tool["name"].as_str() else {
                continue;
            };
            if client_tool_names.iter().any(|c| c == name) {
                continue;
            }
            if let Some(module) = crate::tools::ToolSet::module_of(name) {
                modules.entry(name).or_insert_with(|| json!(module));
            }
        }
    }
    // Secrets may be given as plain strings or `{"value": ...}`.
    if let Some(secrets) = meta.get_mut("secrets").and_then(Value::as_object_mut) {
        for v in secrets.values_mut() {
            *v = normalize_secret(v.clone());
        }
    }
    Ok(CreateRequest {
        id,
        agent,
        meta,
        working_dir,
    })
}

/// Checks tag keys (`^[a-z0-9]+$`) and values (≤256 chars).
pub fn validate_tags(tags: &Map<String, Value>) -> Result<(), ConversationError> {
    for (k, v) in tags {
        if k.is_empty()
            || !k
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(invalid(format!("tags: key {k:?} must match ^[a-z0-9]+$")));
        }
        match v.as_str() {
            Some(s) if s.chars().count() <= 256 => {}
            Some(_) => {
                return Err(invalid(format!(
                    "tags: value of {k:?} is longer than 256 characters"
                )))
            }
            None => return Err(invalid(format!("tags: value of {k:?} must be a string"))),
        }
    }
    Ok(())
}

/// A plain string or `{"value": ..}` becomes a `StaticSecret`.
pub fn normalize_secret(v: Value) -> Value {
    match v {
        Value::String(s) => json!({"value": s, "kind": "StaticSecret"}),
        Value::Object(mut m) => {
            if !m.contains_key("kind") {
                m.insert("kind".into(), json!("StaticSecret"));
            }
            Value::Object(m)
        }
        other => other,
    }
}

fn persistence_dir_string(root: &Path, hex: &str) -> String {
    root.join(hex).to_string_lossy().into_owned()
}

impl ConversationService {
    /// Opens the registry: lists `root/*/meta.json` (events stay on disk until needed) and
    /// recovers conversations that were running when the previous process stopped.
    pub fn open(root: PathBuf, secret_key: Option<&str>, max_runs: usize) -> std::io::Result<Self> {
        let cipher = secret_key.and_then(Cipher::from_key).map(Arc::new);
        Self::open_with(root, cipher, max_runs, Arc::default())
    }

    fn open_with(
        root: PathBuf,
        cipher: Option<Arc<Cipher>>,
        max_runs: usize,
        subagents: Arc<crate::subagents::Registry>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        let svc = ConversationService {
            subagents,
            user_dir: std::sync::OnceLock::new(),
            root,
            cipher,
            max_runs: max_runs.max(1),
            active_runs: Arc::new(AtomicUsize::new(0)),
            convs: Mutex::new(HashMap::new()),
            create_lock: tokio::sync::Mutex::new(()),
            local_secrets: Arc::new(std::sync::OnceLock::new()),
            self_ref: Arc::new(std::sync::OnceLock::new()),
        };
        let mut loaded = HashMap::new();
        for entry in std::fs::read_dir(&svc.root)?.flatten() {
            let path = entry.path();
            if !path.join("meta.json").is_file() {
                continue;
            }
            match svc.load_dir(&path) {
                Ok(conv) => {
                    loaded.insert(conv.id, Arc::new(conv));
                }
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "skipping unreadable conversation")
                }
            }
        }
        *lock(&svc.convs) = loaded;
        Ok(svc)
    }

    fn new_conversation(
        &self,
        id: Uuid,
        state: Map<String, Value>,
        meta: Map<String, Value>,
    ) -> Conversation {
        let hex = id.simple().to_string();
        let parent = meta
            .get("parent_conversation_id")
            .and_then(Value::as_str)
            .and_then(|p| Uuid::parse_str(p).ok());
        Conversation {
            id,
            parent,
            dir: self.root.join(&hex),
            persistence_dir: persistence_dir_string(&self.root, &hex),
            cipher: self.cipher.clone(),
            inner: Mutex::new(Inner {
                summary: Summary::of(&state, &meta),
                state,
                meta,
                docs_loaded: true,
                first_load: false,
                dirty: false,
                events: None,
                clock: Clock::default(),
                subscribers: Vec::new(),
                next_sub: 0,
                overflow_flags: HashMap::new(),
                run: None,
                title_started: false,
                last_used: std::time::Instant::now(),
            }),
            write_lock: tokio::sync::Mutex::new(()),
            load_lock: tokio::sync::Mutex::new(()),
            runtime: tokio::sync::Mutex::new(None),
            deleted: AtomicBool::new(false),
            active_runs: self.active_runs.clone(),
            max_runs: self.max_runs,
            bash: std::sync::OnceLock::new(),
            lookups: std::sync::RwLock::new(Vec::new()),
            local_secrets: self.local_secrets.clone(),
            registry: self.self_ref.clone(),
            goal: Mutex::new(None),
            acp: tokio::sync::Mutex::new(None),
        }
    }

    /// Lets `LookupSecret`s that name this server's own secret URLs be answered from `local`.
    pub fn set_local_secrets(&self, local: crate::settings::lookup::LocalSecrets) {
        let _ = self.local_secrets.set(local);
    }

    /// Lists one conversation directory at start-up: only the summary is kept in memory; a
    /// conversation that was running is loaded and recovered (blocking).
    fn load_dir(&self, dir: &Path) -> std::io::Result<Conversation> {
        let meta: MetaHead = serde_json::from_slice(&std::fs::read(dir.join("meta.json"))?)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let text = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_owned));
        let hex = text(meta.id)
            .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let id = Uuid::parse_str(&hex).map_err(std::io::Error::other)?;
        let state: Option<StateHead> = std::fs::read(dir.join("base_state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let mut conv = self.new_conversation(id, Map::new(), Map::new());
        conv.parent = text(meta.parent_conversation_id).and_then(|p| Uuid::parse_str(&p).ok());
        {
            let mut inner = lock(&conv.inner);
            inner.docs_loaded = false;
            inner.first_load = true;
            inner.summary = Summary {
                status: text(state.and_then(|s| s.execution_status))
                    .unwrap_or_else(|| status::IDLE.into())
                    .into(),
                created_at: text(meta.created_at).unwrap_or_default().into(),
                updated_at: text(meta.updated_at).unwrap_or_default().into(),
            };
        }
        if conv.status() == status::RUNNING {
            drop(conv.loaded());
            conv.recover_interrupted_run_blocking()?;
        }
        Ok(conv)
    }

    /// The conversation `id`, if it exists.
    pub fn get(&self, id: &Uuid) -> Option<Arc<Conversation>> {
        lock(&self.convs).get(id).cloned()
    }

    /// Refuses new work when every run slot is taken.
    pub(super) fn check_capacity(&self) -> Result<(), ConversationError> {
        if self.active_runs.load(Ordering::Acquire) >= self.max_runs {
            return Err(ConversationError::TooManyRuns(format!(
                "Maximum number of concurrent runs ({}) reached",
                self.max_runs
            )));
        }
        Ok(())
    }

    /// Sets the user's persistence directory (`OH_PERSISTENCE_DIR`).
    pub fn set_persistence_dir(&self, dir: PathBuf) {
        let _ = self.user_dir.set(dir);
    }

    /// The user's persistence directory, if set.
    pub fn persistence_dir(&self) -> PathBuf {
        self.user_dir.get().cloned().unwrap_or_default()
    }

    /// Lets the agents' `start_child_conversation` tools reach this registry.
    pub fn set_self_ref(&self, me: std::sync::Weak<ConversationService>) {
        let _ = self.self_ref.set(me);
    }

    /// Ids of the conversations started by `parent`, oldest first (`sub_conversation_ids`).
    pub fn children_of(&self, parent: &Uuid) -> Vec<Uuid> {
        let mut kids: Vec<Arc<Conversation>> = lock(&self.convs)
            .values()
            .filter(|c| c.parent.as_ref() == Some(parent))
            .cloned()
            .collect();
        kids.sort_by_cached_key(|c| c.sort_key("created_at"));
        kids.into_iter().map(|c| c.id).collect()
    }

    /// Every conversation, newest first.
    pub fn all(&self) -> Vec<Arc<Conversation>> {
        let mut v: Vec<_> = lock(&self.convs).values().cloned().collect();
        v.sort_by_cached_key(|c| std::cmp::Reverse(c.sort_key("created_at")));
        v
    }

    /// Creates a conversation; returns it and whether it is new (`false` = existing id).
    pub async fn create(
        &self,
        body: &Value,
    ) -> Result<(Arc<Conversation>, bool), ConversationError> {
        self.create_with(body, true).await
    }

    /// [`Self::create`]; `check_parent` false for a child started by its parent (its worktree
    /// is another directory than the parent's workspace).
    pub(super) async fn create_with(
        &self,
        body: &Value,
        check_parent_workspace: bool,
    ) -> Result<(Arc<Conversation>, bool), ConversationError> {
        let req = parse_create(body, self.cipher.as_deref())?;
        let _guard = self.create_lock.lock().await;
        if let Some(id) = req.id {
            if let Some(c) = self.get(&id) {
                return Ok((c, false));
            }
        }
        self.check_capacity()?;
        let id = req.id.unwrap_or_else(Uuid::new_v4);
        if let Some(parent) = req
            .meta
            .get("parent_conversation_id")
            .and_then(Value::as_str)
        {
            let workspace = check_parent_workspace.then_some(req.working_dir.as_str());
            check_parent(self, id, parent, workspace)?;
        }
        prepare_workspace(&req.working_dir).await?;
        let now = crate::util::utc_timestamp();
        let mut meta = req.meta;
        meta.insert("required_runtime_credential_bindings".into(), json!([]));
        meta.insert("id".into(), json!(id.simple().to_string()));
        meta.insert("title".into(), Value::Null);
        meta.insert("metrics".into(), Value::Null);
        meta.insert("created_at".into(), json!(now));
        meta.insert("updated_at".into(), json!(now));
        meta.insert("forked_from_conversation_id".into(), Value::Null);
        meta.insert("forked_from_event_id".into(), Value::Null);
        let mut state = Map::new();
        state.insert("agent".into(), req.agent);
        fill_state_defaults(&mut state, id, &meta);
        if let Some(secrets) = meta.get("secrets").and_then(Value::as_object) {
            if !secrets.is_empty() {
                state["secret_registry"] = json!({"secret_sources": secrets.clone()});
            }
        }
        let conv = Arc::new(self.new_conversation(id, state, meta));
        {
            let mut inner = lock(&conv.inner);
            inner.events = Some(Vec::new());
        }
        let dir = conv.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            std::fs::create_dir_all(dir.join("events"))?;
            store::sync_dir(&dir);
            if let Some(root) = dir.parent() {
                store::sync_dir(root);
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)??;
        // base_state first: a directory is listed once its meta.json exists.
        conv.save_state().await?;
        conv.save_meta().await?;
        lock(&self.convs).insert(id, conv.clone());
        if let Some(msg) = conv.meta_value("initial_message").filter(|m| m.is_object()) {
            let content = msg.get("content").cloned().unwrap_or(json!([]));
            conv.send_message(content, true).await?;
        }
        Ok((conv, true))
    }

    /// Deletes a conversation: stops its run, closes its sockets, removes its directory.
    pub async fn delete(&self, id: &Uuid) -> Result<(), ConversationError> {
        let conv = lock(&self.convs)
            .remove(id)
            .ok_or(ConversationError::NotFound)?;
        conv.deleted.store(true, Ordering::Release);
        if let Some(ctl) = conv.run_ctl() {
            ctl.cancel.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), ctl.wait()).await;
        }
        {
            let mut inner = lock(&conv.inner);
            inner.subscribers.clear();
        }
        if let Some(rt) = conv.runtime.lock().await.take() {
            for t in rt.tools.iter() {
                t.close().await;
            }
        }
        if let Some(b) = conv.bash.get() {
            b.shutdown().await;
        }
        let _w = conv.write_lock.lock().await;
        let dir = conv.dir.clone();
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(())
    }

    /// Registers a conversation built elsewhere (fork).
    pub(super) fn insert(&self, conv: Arc<Conversation>) {
        lock(&self.convs).insert(conv.id, conv);
    }

    /// Forks `source` into a new conversation with copied events.
    pub async fn fork(
        &self,
        source: &Arc<Conversation>,
        new_id: Option<Uuid>,
        title: Option<String>,
        tags: Option<Map<String, Value>>,
        reset_metrics: bool,
        from_event_id: Option<String>,
    ) -> Result<Arc<Conversation>, ConversationError> {
        let _guard = self.create_lock.lock().await;
        let id = new_id.unwrap_or_else(Uuid::new_v4);
        if self.get(&id).is_some() {
            return Err(ConversationError::Conflict(format!(
                "Conversation {id} already exists"
            )));
        }
        let mut events = source.events().await?;
        if let Some(from) = &from_event_id {
            let pos = events
                .iter()
                .position(|e| events::id(e) == from)
                .ok_or_else(|| {
                    ConversationError::Missing(format!("Unknown from_event_id: {from}"))
                })?;
            events.truncate(pos + 1);
        }
        let (mut state, mut meta) = {
            let inner = source.loaded();
            (inner.state.clone(), inner.meta.clone())
        };
        let now = crate::util::utc_timestamp();
        meta["id"] = json!(id.simple().to_string());
        meta["conversation_id"] = Value::Null;
        meta["created_at"] = json!(now);
        meta["updated_at"] = json!(now);
        meta["title"] = title.map(Value::String).unwrap_or(Value::Null);
        meta["forked_from_conversation_id"] = json!(source.id.to_string());
        meta["forked_from_event_id"] = from_event_id
            .clone()
            .map(Value::String)
            .unwrap_or(Value::Null);
        if let Some(t) = tags {
            validate_tags(&t)?;
            meta["tags"] = Value::Object(t.clone());
            state.insert("tags".into(), Value::Object(t));
        }
        state.insert("id".into(), json!(id.to_string()));
        let hex = id.simple().to_string();
        state.insert(
            "persistence_dir".into(),
            json!(persistence_dir_string(&self.root, &hex)),
        );
        state.insert("execution_status".into(), json!(status::IDLE));
        if reset_metrics {
            state.insert("stats".into(), json!({"usage_to_metrics": {}}));
        }
        let leaf = events
            .iter()
            .rev()
            .find(|e| events::moves_head(e))
            .map(|e| events::id(e).to_string());
        state.insert(
            "leaf_event_id".into(),
            leaf.map(Value::String).unwrap_or(Value::Null),
        );
        let conv = Arc::new(self.new_conversation(id, state, meta));
        let dir = conv.dir.clone();
        let evs = events.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let ed = dir.join("events");
            std::fs::create_dir_all(&ed)?;
            for (i, e) in evs.iter().enumerate() {
                store::write_json(&ed.join(store::event_file_name(i, events::id(e))), e)?;
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)??;
        {
            let mut inner = lock(&conv.inner);
            for e in &events {
                if let Some(ts) = events::str_field(e, "timestamp") {
                    inner.clock.observe(ts);
                }
            }
            inner.events = Some(events);
        }
        conv.save_meta().await?;
        conv.save_state().await?;
        self.insert(conv.clone());
        Ok(conv)
    }

    /// Starts the background task that releases conversations idle for
    /// `OH_CONVERSATION_IDLE_TTL_SECONDS` (default 20 min); their files stay on disk.
    pub fn start_idle_release(self: &Arc<Self>) {
        let ttl = std::env::var("OH_CONVERSATION_IDLE_TTL_SECONDS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1200);
        let svc = Arc::downgrade(self);
        let period = Duration::from_secs(ttl.clamp(1, 60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let Some(svc) = svc.upgrade() else {
                    return;
                };
                for conv in svc.all() {
                    if conv.is_dirty() && conv.run_ctl().is_none() {
                        let _ = conv.persist_state().await;
                    }
                    if conv.release_if_idle(Duration::from_secs(ttl)) {
                        tracing::debug!(conversation = %conv.id, "released an idle conversation");
                    }
                }
            }
        });
    }

    /// Stops every run (graceful shutdown) and writes each conversation's metadata.
    pub async fn shutdown(&self) {
        for conv in self.all() {
            let active = conv.run_ctl().is_some() || conv.runtime.lock().await.is_some();
            if !active {
                continue;
            }
            if let Some(ctl) = conv.run_ctl() {
                ctl.cancel.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(3), ctl.wait()).await;
            }
            let _ = conv.save_state().await;
            let _ = conv.save_meta().await;
            if let Some(rt) = conv.runtime.lock().await.take() {
                for t in rt.tools.iter() {
                    t.close().await;
                }
            }
        }
    }
}

/// `mkdir -p` the working directory and `git init` it when it is not inside a repository.
async fn prepare_workspace(dir: &str) -> Result<(), ConversationError> {
    tokio::fs::create_dir_all(dir).await?;
    let inside = tokio::process::Command::new("git")
        .args(["rev-parse", "--is-inside-work-tree"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .status()
        .await;
    if !matches!(inside, Ok(s) if s.success()) {
        let r = tokio::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .status()
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, dir, "git init failed");
        }
    }
    Ok(())
}

/// Fills the `ConversationState` fields the reference always has.
fn fill_state_defaults(state: &mut Map<String, Value>, id: Uuid, meta: &Map<String, Value>) {
    let m = |k: &str, d: Value| meta.get(k).cloned().filter(|v| !v.is_null()).unwrap_or(d);
    let defaults: Vec<(&str, Value)> = vec![
        ("id", json!(id.to_string())),
        ("agent", json!({})),
        ("workspace", m("workspace", json!({}))),
        ("persistence_dir", Value::Null),
        ("max_iterations", m("max_iterations", json!(500))),
        ("stuck_detection", m("stuck_detection", json!(true))),
        ("execution_status", json!(status::IDLE)),
        (
            "confirmation_policy",
            m("confirmation_policy", json!({"kind": "NeverConfirm"})),
        ),
        ("security_analyzer", m("security_analyzer", Value::Null)),
        ("activated_knowledge_skills", json!([])),
        ("activated_path_rules", json!([])),
        ("invoked_skills", json!([])),
        ("blocked_actions", json!({})),
        ("blocked_messages", json!({})),
        ("last_user_message_id", Value::Null),
        ("leaf_event_id", Value::Null),
        ("head_is_empty", json!(false)),
        ("stats", json!({"usage_to_metrics": {}})),
        ("secret_registry", json!({"secret_sources": {}})),
        ("tags", m("tags", json!({}))),
        ("agent_state", json!({})),
        ("hook_config", Value::Null),
    ];
    let mut out = Map::new();
    for (k, d) in defaults {
        let v = state.shift_remove(k).unwrap_or(d);
        out.insert(k.into(), v);
    }
    // Keep fields we do not know about (written by a newer reference).
    for (k, v) in std::mem::take(state) {
        out.insert(k, v);
    }
    *state = out;
}

/// How a state view shows secrets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SecretView {
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

impl Conversation {
    // ----- plain accessors -------------------------------------------------------------

    /// `execution_status`.
    pub fn status(&self) -> String {
        let inner = lock(&self.inner);
        if !inner.docs_loaded {
            return inner.summary.status.to_string();
        }
        inner
            .state
            .get("execution_status")
            .and_then(Value::as_str)
            .unwrap_or(status::IDLE)
            .to_string()
    }

    /// `created_at` or `updated_at` (the keys search sorts by), without loading documents.
    pub fn sort_key(&self, key: &str) -> String {
        let inner = lock(&self.inner);
        if !inner.docs_loaded {
            let v = if key == "created_at" {
                &inner.summary.created_at
            } else {
                &inner.summary.updated_at
            };
            return v.to_string();
        }
        inner
            .meta
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// The inner state with the documents loaded (read from disk, blocking, when an idle
    /// conversation is touched by a synchronous accessor; async paths load them first with
    /// [`Self::ensure_docs`]). When they cannot be read the maps stay empty and unsaved.
    fn loaded(&self) -> MutexGuard<'_, Inner> {
        let mut inner = lock(&self.inner);
        if !inner.docs_loaded {
            match load_docs(&self.dir, self.id, self.cipher.as_deref(), inner.first_load) {
                Ok(docs) => install_docs(&mut inner, docs),
                Err(e) => {
                    tracing::warn!(conversation = %self.id, error = %e, "cannot load the conversation")
                }
            }
        }
        inner
    }

    /// Loads the documents of an idle conversation from disk (off the runtime).
    pub async fn ensure_docs(&self) -> std::io::Result<()> {
        let reset = {
            let inner = lock(&self.inner);
            if inner.docs_loaded {
                return Ok(());
            }
            inner.first_load
        };
        let _l = self.load_lock.lock().await;
        if lock(&self.inner).docs_loaded {
            return Ok(());
        }
        let (dir, id, cipher) = (self.dir.clone(), self.id, self.cipher.clone());
        let docs =
            tokio::task::spawn_blocking(move || load_docs(&dir, id, cipher.as_deref(), reset))
                .await
                .map_err(std::io::Error::other)??;
        let mut inner = lock(&self.inner);
        if !inner.docs_loaded {
            install_docs(&mut inner, docs);
        }
        Ok(())
    }

    /// A state field.
    pub fn state_value(&self, key: &str) -> Option<Value> {
        self.loaded().state.get(key).cloned()
    }

    /// A registry of conversations kept under this one's directory (`<dir>/<name>`), sealed
    /// with the same key: the conversations the `task` tool runs.
    pub fn nested_service(&self, name: &str) -> std::io::Result<ConversationService> {
        let shared = self
            .registry()
            .upgrade()
            .map(|s| s.subagents.clone())
            .unwrap_or_default();
        ConversationService::open_with(self.dir.join(name), self.cipher.clone(), 64, shared)
    }

    /// The registry this conversation belongs to, if it is still up.
    pub fn registry(&self) -> std::sync::Weak<ConversationService> {
        self.registry.get().cloned().unwrap_or_default()
    }

    /// A metadata field.
    pub fn meta_value(&self, key: &str) -> Option<Value> {
        self.loaded().meta.get(key).cloned()
    }

    /// The working directory of the workspace.
    pub fn working_dir(&self) -> String {
        self.loaded()
            .state
            .get("workspace")
            .and_then(|w| w.get("working_dir"))
            .and_then(Value::as_str)
            .unwrap_or(".")
            .to_string()
    }

    /// `<conversations_path>/<hex>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The agent JSON with secrets in plaintext.
    pub fn agent_json(&self) -> Value {
        self.state_value("agent").unwrap_or(Value::Null)
    }

    /// Secret name → plaintext value, for tools and masking: static secrets, and the
    /// `LookupSecret`s as last resolved ([`Conversation::resolve_lookup_secrets`]).
    pub fn secret_values(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (k, v) in self.secret_sources() {
            if let Some(s) = v.get("value").and_then(Value::as_str) {
                out.push((k, s.to_string()));
            }
        }
        let lookups = self.lookups.read().unwrap_or_else(|e| e.into_inner());
        out.extend(lookups.iter().cloned());
        out
    }

    fn secret_sources(&self) -> Vec<(String, Value)> {
        let inner = self.loaded();
        inner
            .state
            .get("secret_registry")
            .and_then(|r| r.get("secret_sources"))
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    /// Fetches the values of the `LookupSecret`s (this server's own URLs from its store).
    pub async fn resolve_lookup_secrets(&self) {
        let mut values = Vec::new();
        for (name, source) in self.secret_sources() {
            if source.get("kind").and_then(Value::as_str) != Some("LookupSecret") {
                continue;
            }
            match crate::settings::lookup::resolve(&source, self.local_secrets.get()).await {
                Some(v) => values.push((name, v)),
                None => tracing::warn!(secret = %name, "a LookupSecret has no value"),
            }
        }
        *self.lookups.write().unwrap_or_else(|e| e.into_inner()) = values;
    }

    /// The bash runner of the conversation-scoped `/bash` routes: events under
    /// `<dir>/bash_events`, commands default to the working directory.
    pub fn bash_service(&self) -> std::io::Result<Arc<crate::exec::BashService>> {
        if let Some(b) = self.bash.get() {
            return Ok(b.clone());
        }
        let svc = Arc::new(crate::exec::BashService::with_default_cwd(
            self.dir.join("bash_events"),
            Some(self.working_dir().into()),
        )?);
        Ok(self.bash.get_or_init(|| svc).clone())
    }

    /// The control of the active run, if any.
    pub fn run_ctl(&self) -> Option<RunCtl> {
        lock(&self.inner).run.clone()
    }

    /// Whether the documents are in memory.
    #[cfg(test)]
    pub(crate) fn docs_loaded(&self) -> bool {
        lock(&self.inner).docs_loaded
    }

    /// Whether the state has changes not yet written to `base_state.json`.
    fn is_dirty(&self) -> bool {
        lock(&self.inner).dirty
    }

    /// True once deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    // ----- views -------------------------------------------------------------------------

    fn state_view(&self, secrets: SecretView, include_skills: bool) -> Map<String, Value> {
        let state = self.loaded().state.clone();
        view_state(state, &self.persistence_dir, secrets, include_skills)
    }

    /// `ConversationInfo` as REST returns it.
    pub fn info(&self, include_skills: bool, with_runtime: bool) -> Value {
        let (state, meta) = {
            let inner = self.loaded();
            (inner.state.clone(), inner.meta.clone())
        };
        let state = view_state(
            state,
            &self.persistence_dir,
            SecretView::Null,
            include_skills,
        );
        info_of(state, meta, with_runtime)
    }

    /// [`Self::info`] without keeping an idle conversation's documents in memory: they are
    /// read from disk for this answer only.
    pub async fn info_view(
        self: &Arc<Self>,
        include_skills: bool,
        with_runtime: bool,
    ) -> std::io::Result<Value> {
        let mut out = infos(std::slice::from_ref(self), include_skills, with_runtime).await?;
        out.pop()
            .ok_or_else(|| std::io::Error::other("no conversation info"))
    }

    /// The `full_state` value (WebSocket form: secrets masked, nulls omitted).
    fn full_state_value(&self) -> Value {
        let state = self.state_view(SecretView::Masked, false);
        let mut out = Map::new();
        for (k, v) in state {
            if !v.is_null() {
                out.insert(k, v);
            }
        }
        Value::Object(out)
    }

    // ----- persistence -------------------------------------------------------------------

    async fn save_state(&self) -> std::io::Result<()> {
        let (mut state, cipher) = {
            let mut inner = self.loaded();
            if !inner.docs_loaded {
                return Err(not_loaded());
            }
            inner.dirty = false;
            (inner.state.clone(), self.cipher.clone())
        };
        state.insert("persistence_dir".into(), json!(self.persistence_dir));
        let path = self.dir.join("base_state.json");
        let written = tokio::task::spawn_blocking(move || {
            let c = cipher.as_deref();
            if let Some(agent) = state.get_mut("agent") {
                crypto::map_secret_fields(agent, &|s| crypto::seal(c, s));
            }
            if let Some(reg) = state.get_mut("secret_registry") {
                crypto::map_registry(reg, &|s| crypto::seal(c, s));
            }
            let state: Map<String, Value> =
                state.into_iter().filter(|(_, v)| !v.is_null()).collect();
            store::write_json(&path, &Value::Object(state))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        if written.is_err() {
            lock(&self.inner).dirty = true;
        }
        written
    }

    /// Writes `meta.json`.
    pub async fn save_meta(&self) -> std::io::Result<()> {
        let (mut meta, cipher) = {
            let inner = self.loaded();
            if !inner.docs_loaded {
                return Err(not_loaded());
            }
            (inner.meta.clone(), self.cipher.clone())
        };
        let path = self.dir.join("meta.json");
        tokio::task::spawn_blocking(move || {
            let c = cipher.as_deref();
            if let Some(secrets) = meta.get_mut("secrets").and_then(Value::as_object_mut) {
                for v in secrets.values_mut() {
                    if let Some(Value::String(s)) = v.get("value").cloned().as_ref() {
                        v["value"] = crypto::seal(c, s);
                    }
                }
            }
            store::write_json(&path, &Value::Object(meta))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Loads the event log from disk on first use.
    pub async fn ensure_events(&self) -> std::io::Result<()> {
        self.ensure_docs().await?;
        {
            let mut inner = lock(&self.inner);
            inner.last_used = std::time::Instant::now();
            if inner.events.is_some() {
                return Ok(());
            }
        }
        let _l = self.load_lock.lock().await;
        if lock(&self.inner).events.is_some() {
            return Ok(());
        }
        let dir = self.dir.join("events");
        let loaded = tokio::task::spawn_blocking(move || store::load_events(&dir))
            .await
            .map_err(std::io::Error::other)??;
        self.install_events(loaded);
        Ok(())
    }

    fn install_events(&self, loaded: Vec<Value>) {
        let mut inner = self.loaded();
        for e in &loaded {
            if let Some(ts) = events::str_field(e, "timestamp") {
                inner.clock.observe(ts);
            }
        }
        // HEAD is derived from the log, which is written before base_state.
        if let Some(last) = loaded.iter().rev().find(|e| events::moves_head(e)) {
            let id = events::id(last).to_string();
            inner.state.insert("leaf_event_id".into(), json!(id));
        }
        inner.events = Some(loaded);
    }

    /// A copy of every event.
    pub async fn events(&self) -> std::io::Result<Vec<Value>> {
        self.ensure_events().await?;
        Ok(lock(&self.inner).events.clone().unwrap_or_default())
    }

    /// Runs `f` over the event log without copying it.
    pub async fn with_events<R>(&self, f: impl FnOnce(&[Value]) -> R) -> std::io::Result<R> {
        // Retried: an idle conversation may release its log between the load and the read.
        for _ in 0..3 {
            self.ensure_events().await?;
            let inner = lock(&self.inner);
            if let Some(evs) = inner.events.as_deref() {
                return Ok(f(evs));
            }
        }
        Err(std::io::Error::other("the event log could not be loaded"))
    }

    /// Releases the in-memory log, documents and tools of a conversation idle for `ttl` (no
    /// run, no subscriber, nothing unsaved); only its summary stays. Returns true when released.
    pub fn release_if_idle(&self, ttl: Duration) -> bool {
        let Ok(_w) = self.write_lock.try_lock() else {
            return false;
        };
        let Ok(mut rt) = self.runtime.try_lock() else {
            return false;
        };
        let mut inner = lock(&self.inner);
        if inner.run.is_some()
            || !inner.subscribers.is_empty()
            || (inner.events.is_none() && !inner.docs_loaded)
            || inner.dirty
            || inner.last_used.elapsed() < ttl
        {
            return false;
        }
        inner.events = None;
        if inner.docs_loaded {
            inner.summary = Summary::of(&inner.state, &inner.meta);
            inner.state = Map::new();
            inner.meta = Map::new();
            inner.docs_loaded = false;
        }
        drop(inner);
        if let Some(rt) = rt.take() {
            tokio::spawn(async move {
                for t in rt.tools.iter() {
                    t.close().await;
                }
            });
        }
        true
    }

    /// Appends an event: stamps id/timestamp/parent, persists it, then publishes it.
    pub async fn append(&self, body: Value) -> std::io::Result<Value> {
        self.ensure_events().await?;
        let _w = self.write_lock.lock().await;
        self.append_locked(body).await
    }

    async fn append_locked(&self, body: Value) -> std::io::Result<Value> {
        self.ensure_events().await?;
        let (ev, index) = {
            let mut inner = self.loaded();
            let id = crate::util::dashed_id();
            let ts = inner.clock.tick();
            let n = inner.events.as_ref().map_or(0, Vec::len);
            let head = inner
                .state
                .get("leaf_event_id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let parent = match head {
                Some(h) => Some(h),
                None if n > 0 => Some("__root__".to_string()),
                None => None,
            };
            (events::finalize(body, &id, &ts, parent.as_deref()), n)
        };
        if !self.is_deleted() {
            let path = self
                .dir
                .join("events")
                .join(store::event_file_name(index, events::id(&ev)));
            let ev2 = ev.clone();
            tokio::task::spawn_blocking(move || store::write_new_json(&path, &ev2))
                .await
                .map_err(std::io::Error::other)??;
        }
        let text: Arc<str> = Arc::from(serde_json::to_string(&ev).unwrap_or_default());
        let mut inner = self.loaded();
        if events::moves_head(&ev) {
            inner
                .state
                .insert("leaf_event_id".into(), json!(events::id(&ev)));
        }
        if let Some(evs) = inner.events.as_mut() {
            evs.push(ev.clone());
        }
        publish(&mut inner, text);
        Ok(ev)
    }

    /// Sets state fields, persists `base_state.json`, and (if `emit`) appends one
    /// `ConversationStateUpdateEvent` per field.
    pub async fn set_fields(&self, fields: Vec<(&str, Value)>, emit: bool) -> std::io::Result<()> {
        self.ensure_events().await?;
        let _w = self.write_lock.lock().await;
        {
            let mut inner = self.loaded();
            for (k, v) in &fields {
                inner.state.insert((*k).to_string(), v.clone());
            }
        }
        // Stats change on every LLM call; their events carry the totals, and base_state is
        // rewritten with them at the next status change or when the run ends.
        let only_stats = fields.iter().all(|(k, _)| *k == "stats");
        if !self.is_deleted() && !only_stats {
            self.save_state().await?;
        } else {
            lock(&self.inner).dirty = true;
        }
        if emit {
            for (k, v) in fields {
                let v = if k == "stats" { stats::snapshot(&v) } else { v };
                self.append_locked(events::state_update(k, v)).await?;
            }
        }
        Ok(())
    }

    /// Writes `base_state.json` now (e.g. after stats changed outside a run).
    pub async fn persist_state(&self) -> std::io::Result<()> {
        if self.is_deleted() {
            return Ok(());
        }
        let _w = self.write_lock.lock().await;
        self.save_state().await
    }

    /// Sets `execution_status` (with its state-update event) when it changes.
    pub async fn set_status(&self, new: &str) -> std::io::Result<()> {
        if self.status() == new {
            return Ok(());
        }
        self.set_fields(vec![("execution_status", json!(new))], true)
            .await
    }

    /// Records one LLM call's usage and emits a `stats` update.
    pub async fn record_usage(
        &self,
        usage_id: &str,
        model: &str,
        usage: &crate::llm::Usage,
        cost: f64,
        response_id: &str,
        latency: f64,
    ) -> std::io::Result<()> {
        let stats_now = {
            let mut inner = self.loaded();
            inner.dirty = true;
            let s = inner
                .state
                .entry("stats")
                .or_insert_with(|| json!({"usage_to_metrics": {}}));
            stats::record(s, usage_id, model, usage, cost, response_id, latency);
            s.clone()
        };
        self.set_fields(vec![("stats", stats_now)], true).await
    }

    /// Registers LLM usage ids in the stats (without an event).
    pub fn register_usage(&self, usage_id: &str, model: &str) {
        let mut inner = self.loaded();
        inner.dirty = true;
        let s = inner
            .state
            .entry("stats")
            .or_insert_with(|| json!({"usage_to_metrics": {}}));
        stats::register(s, usage_id, model);
    }

    /// Publishes a `full_state` snapshot to the subscribers (not persisted).
    pub fn publish_full_state(&self) {
        self.publish_full_state_to(u64::MAX);
    }

    /// The number of subscriptions made so far: [`Self::publish_full_state_to`] with it
    /// reaches only the subscribers connected by now.
    pub fn subscriptions_so_far(&self) -> u64 {
        lock(&self.inner).next_sub
    }

    /// Publishes a `full_state` snapshot to the subscribers whose subscription number is at
    /// most `upto` (later ones got a snapshot of their own when they connected).
    pub fn publish_full_state_to(&self, upto: u64) {
        // The snapshot is built only when someone will receive it.
        if !lock(&self.inner).subscribers.iter().any(|s| s.id <= upto) {
            return;
        }
        let value = self.full_state_value();
        let mut inner = lock(&self.inner);
        let ts = inner.clock.tick();
        let ev = events::finalize(
            events::state_update("full_state", value),
            &crate::util::dashed_id(),
            &ts,
            None,
        );
        let text: Arc<str> = Arc::from(serde_json::to_string(&ev).unwrap_or_default());
        publish_to(&mut inner, text, |id| id <= upto);
    }

    /// Publishes a transient event (never persisted), e.g. a `ServerErrorEvent` to one socket.
    pub fn transient_event(&self, body: Value) -> Value {
        let ts = lock(&self.inner).clock.tick();
        events::finalize(body, &crate::util::dashed_id(), &ts, None)
    }

    /// Publishes a WebSocket-only event (e.g. `StreamingDeltaEvent`); never persisted.
    pub fn publish_transient(&self, body: Value) {
        let mut inner = lock(&self.inner);
        if inner.subscribers.is_empty() {
            return;
        }
        let ts = inner.clock.tick();
        let ev = events::finalize(body, &crate::util::dashed_id(), &ts, None);
        let text: Arc<str> = Arc::from(serde_json::to_string(&ev).unwrap_or_default());
        publish(&mut inner, text);
    }

    /// Subscribes to live events; the `full_state` snapshot is queued first.
    pub fn subscribe(self: &Arc<Self>) -> Result<Subscription, ConversationError> {
        let value = self.full_state_value();
        let mut inner = lock(&self.inner);
        if inner.subscribers.len() >= MAX_SUBSCRIBERS {
            return Err(ConversationError::TooManyRuns(
                "Too many connections for this conversation".into(),
            ));
        }
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let ts = inner.clock.tick();
        let ev = events::finalize(
            events::state_update("full_state", value),
            &crate::util::dashed_id(),
            &ts,
            None,
        );
        let _ = tx.try_send(Arc::from(serde_json::to_string(&ev).unwrap_or_default()));
        inner.next_sub += 1;
        let id = inner.next_sub;
        let flag = Arc::new(AtomicBool::new(false));
        inner.overflow_flags.insert(id, flag.clone());
        inner.subscribers.push(Subscriber { id, tx });
        Ok(Subscription {
            rx,
            overflowed: flag,
            id,
            conv: self.clone(),
        })
    }

    // ----- operations --------------------------------------------------------------------

    /// Appends a user message (initializing the agent first), and optionally runs.
    pub async fn send_message(
        self: &Arc<Self>,
        content: Value,
        run: bool,
    ) -> Result<(), ConversationError> {
        // A user's message supersedes a goal loop.
        self.stop_goal();
        self.send_message_inner(content, run).await
    }

    /// Sends a goal loop's own message (the loop keeps going; it starts the run itself).
    pub async fn send_goal_message(
        self: &Arc<Self>,
        content: Value,
    ) -> Result<(), ConversationError> {
        self.send_message_inner(content, false).await
    }

    /// Starts a goal loop (`POST .../goal`, or `.../goal/resume` with `start.resume`).
    pub fn start_goal(
        self: &Arc<Self>,
        start: super::goal::GoalStart,
    ) -> Result<(), ConversationError> {
        let busy =
            || ConversationError::Conflict("Conversation run or goal loop already running.".into());
        let mut goal = lock(&self.goal);
        if goal.is_some() || self.run_ctl().is_some() || self.status() == status::RUNNING {
            return Err(busy());
        }
        if self.active_runs.load(Ordering::Acquire) >= self.max_runs {
            return Err(ConversationError::TooManyRuns(
                "Conversation run limit reached. Retry the request later.".into(),
            ));
        }
        let cancel = CancellationToken::new();
        *goal = Some(super::goal::GoalCtl {
            cancel: cancel.clone(),
        });
        tokio::spawn(super::goal::run(self.clone(), start, cancel));
        Ok(())
    }

    /// Stops the goal loop, if any (a run in progress goes on).
    pub fn stop_goal(&self) {
        if let Some(g) = lock(&self.goal).as_ref() {
            g.cancel.cancel();
        }
    }

    /// Called by the goal loop when it ends.
    pub fn goal_finished(&self) {
        *lock(&self.goal) = None;
    }

    async fn send_message_inner(
        self: &Arc<Self>,
        content: Value,
        run: bool,
    ) -> Result<(), ConversationError> {
        self.ensure_events().await?;
        agent::ensure_initialized(self).await?;
        let mut body = events::user_message("user", content);
        let suffix = self
            .agent_json()
            .get("agent_context")
            .and_then(|c| c.get("user_message_suffix"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned);
        if let Some(sfx) = suffix {
            body["extended_content"] = json!([events::text(&sfx)]);
        }
        let msg = self.append(body).await?;
        let msg_id = events::id(&msg).to_string();
        let running = self.run_ctl();
        if let Some(ctl) = &running {
            ctl.new_message.store(true, Ordering::Release);
        }
        self.set_fields(vec![("last_user_message_id", json!(msg_id))], true)
            .await?;
        let text_body = events::message_text(&msg);
        if let Some(reason) = super::hooks::user_prompt_submit(self, &text_body, &msg_id).await? {
            let mut blocked = self
                .state_value("blocked_messages")
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({}));
            blocked[msg_id.as_str()] = json!(reason);
            self.set_fields(vec![("blocked_messages", blocked)], true)
                .await?;
        }
        let st = self.status();
        if running.is_none() && (st == status::FINISHED || st == status::STUCK) {
            self.set_status(status::IDLE).await?;
        }
        self.maybe_autotitle(&msg);
        if run && self.start_or_queue_run()? {
            // Queued behind a loop that is winding down: the conversation is no longer done.
            let st = self.status();
            if st == status::FINISHED || st == status::STUCK {
                self.set_status(status::IDLE).await?;
            }
        }
        Ok(())
    }

    /// Starts a run, or asks the active one to run again once it stops. The request is made
    /// under the same lock that [`Self::end_run`] takes to retire a run, so it is never lost.
    /// Returns true when the request was queued behind a run loop that had already stopped.
    fn start_or_queue_run(self: &Arc<Self>) -> Result<bool, ConversationError> {
        for _ in 0..3 {
            {
                let inner = lock(&self.inner);
                if let Some(ctl) = &inner.run {
                    ctl.rerun.store(true, Ordering::Release);
                    return Ok(ctl.exiting.load(Ordering::Acquire));
                }
            }
            match self.start_run() {
                Err(ConversationError::Conflict(_)) => continue,
                other => return other.map(|()| false),
            }
        }
        Err(ConversationError::Conflict(
            "Conversation already running. Wait for completion or pause first.".into(),
        ))
    }

    fn maybe_autotitle(self: &Arc<Self>, first: &Value) {
        let should = {
            let mut inner = self.loaded();
            let want = inner
                .meta
                .get("autotitle")
                .and_then(Value::as_bool)
                .unwrap_or(true)
                && inner.meta.get("title").is_none_or(Value::is_null)
                && !inner.title_started;
            if want {
                inner.title_started = true;
            }
            want
        };
        if should {
            let conv = self.clone();
            let text = events::message_text(first);
            tokio::spawn(async move { agent::autotitle(conv, text).await });
        }
    }

    /// Sets the title (meta) and bumps `updated_at`.
    pub async fn set_title(
        &self,
        title: Option<String>,
        tags: Option<Map<String, Value>>,
    ) -> std::io::Result<()> {
        {
            let mut inner = self.loaded();
            if let Some(t) = title {
                inner.meta.insert("title".into(), json!(t));
            }
            if let Some(t) = &tags {
                inner.meta.insert("tags".into(), Value::Object(t.clone()));
            }
            inner
                .meta
                .insert("updated_at".into(), json!(crate::util::utc_timestamp()));
        }
        if let Some(t) = tags {
            self.set_fields(vec![("tags", Value::Object(t))], true)
                .await?;
        }
        self.save_meta().await
    }

    /// `POST /run`: starts a run; `Conflict` while one is running. A run asked for while a pause
    /// is pending (the loop still finishing its step) resumes it, as the reference does: status
    /// `running` again at once, and the loop carries on (or starts again if it already stopped).
    pub async fn request_run(self: &Arc<Self>) -> Result<(), ConversationError> {
        if self.status() == status::PAUSED && self.run_ctl().is_some() {
            self.set_status(status::RUNNING).await?;
            return self.start_or_queue_run().map(|_| ());
        }
        self.start_run()
    }

    /// Starts a background run. `Conflict` when one is active, `TooManyRuns` at capacity.
    pub fn start_run(self: &Arc<Self>) -> Result<(), ConversationError> {
        let ctl = {
            let mut inner = lock(&self.inner);
            if inner.run.is_some() {
                return Err(ConversationError::Conflict(
                    "Conversation already running. Wait for completion or pause first.".into(),
                ));
            }
            let n = self.active_runs.fetch_add(1, Ordering::AcqRel);
            if n >= self.max_runs {
                self.active_runs.fetch_sub(1, Ordering::AcqRel);
                return Err(ConversationError::TooManyRuns(format!(
                    "Maximum number of concurrent runs ({}) reached",
                    self.max_runs
                )));
            }
            let ctl = RunCtl {
                cancel: CancellationToken::new(),
                rerun: Arc::new(AtomicBool::new(false)),
                new_message: Arc::new(AtomicBool::new(false)),
                exiting: Arc::new(AtomicBool::new(false)),
                done: Arc::new(tokio::sync::Notify::new()),
                finished: Arc::new(AtomicBool::new(false)),
            };
            inner.run = Some(ctl.clone());
            ctl
        };
        let conv = self.clone();
        tokio::spawn(async move {
            let c2 = conv.clone();
            let ctl2 = ctl.clone();
            let res = tokio::spawn(async move { agent::run(c2, ctl2).await }).await;
            if let Err(e) = res {
                tracing::error!(conversation = %conv.id, error = %e, "run task failed");
                let _ = conv
                    .append(events::conversation_error("InternalError", &e.to_string()))
                    .await;
                let _ = conv.set_status(status::ERROR).await;
            }
            conv.end_run(&ctl).await;
        });
        Ok(())
    }

    async fn end_run(self: &Arc<Self>, ctl: &RunCtl) {
        if !self.is_deleted() {
            let _w = self.write_lock.lock().await;
            if let Err(e) = self.save_state().await {
                tracing::warn!(conversation = %self.id, error = %e, "could not save the state");
            }
        }
        // A message that asked for a run after the loop's last look at `rerun` is honoured here.
        let again = {
            let mut inner = lock(&self.inner);
            inner.run = None;
            ctl.rerun.swap(false, Ordering::AcqRel) && !ctl.cancel.is_cancelled()
        };
        self.active_runs.fetch_sub(1, Ordering::AcqRel);
        ctl.finished.store(true, Ordering::Release);
        ctl.done.notify_waiters();
        if again && !self.is_deleted() {
            let st = self.status();
            if st == status::FINISHED || st == status::PAUSED || st == status::STUCK {
                let _ = self.set_status(status::IDLE).await;
            }
            if let Err(e) = self.start_run() {
                tracing::warn!(conversation = %self.id, error = %e, "could not start the queued run");
            }
            return;
        }
        self.publish_full_state();
        // The client only accepts a snapshot after its POST /run returned; a very fast run can
        // beat that response, so repeat the snapshot shortly after, to the sockets connected
        // now only: a socket opened since got its own snapshot first, and an extra one after
        // its replay would be an event `events/search` does not list.
        let upto = self.subscriptions_so_far();
        let conv = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if conv.run_ctl().is_none() && !conv.is_deleted() {
                conv.publish_full_state_to(upto);
            }
        });
    }

    /// Pauses: status `paused` + `PauseEvent` when idle or running; always a snapshot.
    pub async fn pause(&self) -> std::io::Result<()> {
        let st = self.status();
        if st == status::IDLE || st == status::RUNNING {
            self.set_status(status::PAUSED).await?;
            self.append(events::bare("PauseEvent", "user")).await?;
        }
        self.publish_full_state();
        Ok(())
    }

    /// Interrupts the run now (or pauses when none is active).
    pub async fn interrupt(&self) -> std::io::Result<()> {
        match self.run_ctl() {
            Some(ctl) => {
                ctl.cancel.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(5), ctl.wait()).await;
                self.publish_full_state();
                Ok(())
            }
            None => self.pause().await,
        }
    }

    /// Rejects every pending action (`UserRejectObservation`), status → idle.
    pub async fn reject_pending(&self, reason: &str) -> std::io::Result<()> {
        let pending = self.with_events(super::history::pending_actions).await?;
        if self.status() == status::WAITING {
            self.set_status(status::IDLE).await?;
        }
        for a in pending {
            let body = events::user_reject(
                events::str_field(&a, "tool_name").unwrap_or(""),
                events::str_field(&a, "tool_call_id").unwrap_or(""),
                reason,
                "user",
                events::id(&a),
            );
            self.append(body).await?;
        }
        Ok(())
    }

    /// Updates the secret registry (no event, like the reference).
    pub async fn update_secrets(&self, secrets: Map<String, Value>) -> std::io::Result<()> {
        let reg = {
            let inner = self.loaded();
            let mut reg = inner
                .state
                .get("secret_registry")
                .cloned()
                .unwrap_or(json!({"secret_sources": {}}));
            if !reg.get("secret_sources").is_some_and(Value::is_object) {
                reg = json!({"secret_sources": {}});
            }
            for (k, v) in secrets {
                reg["secret_sources"][k] = normalize_secret(v);
            }
            reg
        };
        self.set_fields(vec![("secret_registry", reg)], false)
            .await?;
        self.resolve_lookup_secrets().await;
        let secrets = self.secret_values();
        if let Some(rt) = self.runtime.lock().await.as_ref() {
            for t in rt.tools.iter() {
                t.set_secrets(&secrets);
            }
        }
        Ok(())
    }

    /// Marks a conversation found `running` at start-up: an `AgentErrorEvent` for each action
    /// left without a result, then status `error` (blocking; start-up only).
    fn recover_interrupted_run_blocking(&self) -> std::io::Result<()> {
        let loaded = store::load_events(&self.dir.join("events"))?;
        self.install_events(loaded);
        let pending = {
            let inner = lock(&self.inner);
            super::history::unanswered_actions(inner.events.as_deref().unwrap_or(&[]))
        };
        let mut bodies: Vec<Value> = pending
            .iter()
            .map(|a| {
                events::agent_error(
                    events::str_field(a, "tool_name").unwrap_or(""),
                    events::str_field(a, "tool_call_id").unwrap_or(""),
                    "A restart occurred while this tool was in progress. This may indicate a fatal memory error or system crash. The tool execution was interrupted and did not complete.",
                    events::internal_error(),
                )
            })
            .collect();
        bodies.push(events::state_update(
            "execution_status",
            json!(status::ERROR),
        ));
        let mut inner = self.loaded();
        inner
            .state
            .insert("execution_status".into(), json!(status::ERROR));
        for (i, body) in bodies.into_iter().enumerate() {
            let id = crate::util::dashed_id();
            let ts = inner.clock.tick();
            let n = inner.events.as_ref().map_or(0, Vec::len);
            let parent = if i < pending.len() {
                Some(events::id(&pending[i]).to_string())
            } else {
                inner
                    .state
                    .get("leaf_event_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let ev = events::finalize(body, &id, &ts, parent.as_deref());
            store::write_json(
                &self.dir.join("events").join(store::event_file_name(n, &id)),
                &ev,
            )?;
            if events::moves_head(&ev) {
                inner.state.insert("leaf_event_id".into(), json!(id));
            }
            if let Some(evs) = inner.events.as_mut() {
                evs.push(ev);
            }
        }
        let mut state = inner.state.clone();
        drop(inner);
        state.insert("persistence_dir".into(), json!(self.persistence_dir));
        let c = self.cipher.as_deref();
        if let Some(agent) = state.get_mut("agent") {
            crypto::map_secret_fields(agent, &|s| crypto::seal(c, s));
        }
        if let Some(reg) = state.get_mut("secret_registry") {
            crypto::map_registry(reg, &|s| crypto::seal(c, s));
        }
        let state: Map<String, Value> = state.into_iter().filter(|(_, v)| !v.is_null()).collect();
        store::write_json(&self.dir.join("base_state.json"), &Value::Object(state))
    }
}

/// The state as clients see it: `persistence_dir` set, secrets nulled or masked, skills
/// emptied unless asked for.
fn view_state(
    mut state: Map<String, Value>,
    persistence_dir: &str,
    secrets: SecretView,
    include_skills: bool,
) -> Map<String, Value> {
    state.insert("persistence_dir".into(), json!(persistence_dir));
    let f: &dyn Fn(&str) -> Value = match secrets {
        SecretView::Null => &|_| Value::Null,
        SecretView::Masked => &|_| Value::String(MASK.into()),
    };
    if let Some(agent) = state.get_mut("agent") {
        crypto::map_secret_fields(agent, f);
        if !include_skills {
            if let Some(ctx) = agent
                .get_mut("agent_context")
                .and_then(Value::as_object_mut)
            {
                if ctx.contains_key("skills") {
                    ctx.insert("skills".into(), json!([]));
                }
            }
        }
    }
    if let Some(reg) = state.get_mut("secret_registry") {
        crypto::map_registry(reg, f);
    }
    state
}

/// `ConversationInfo` from a viewed state and the metadata.
fn info_of(
    mut state: Map<String, Value>,
    mut meta: Map<String, Value>,
    with_runtime: bool,
) -> Value {
    let mut s = |k: &str| state.remove(k).unwrap_or(Value::Null);
    let mut out = Map::new();
    for k in [
        "id",
        "workspace",
        "persistence_dir",
        "max_iterations",
        "stuck_detection",
        "execution_status",
        "confirmation_policy",
        "security_analyzer",
        "activated_knowledge_skills",
        "invoked_skills",
        "blocked_actions",
        "blocked_messages",
        "last_user_message_id",
        "leaf_event_id",
        "stats",
        "secret_registry",
        "agent_state",
        "hook_config",
    ] {
        out.insert(k.into(), s(k));
    }
    for k in [
        "title",
        "metrics",
        "created_at",
        "updated_at",
        "forked_from_conversation_id",
        "forked_from_event_id",
        "parent_conversation_id",
    ] {
        out.insert(k.into(), meta.remove(k).unwrap_or(Value::Null));
    }
    out.insert("sub_conversation_ids".into(), json!([]));
    out.insert("tags".into(), s("tags"));
    out.insert("current_model_id".into(), Value::Null);
    out.insert("available_models".into(), json!([]));
    out.insert("supports_runtime_model_switch".into(), json!(false));
    let mut m = |k: &str, default: Value| meta.remove(k).unwrap_or(default);
    out.insert(
        "launched_agent_profile".into(),
        m("launched_agent_profile", Value::Null),
    );
    out.insert("agent".into(), s("agent"));
    out.insert("client_tools".into(), m("client_tools", json!([])));
    out.insert(
        "tool_module_qualnames".into(),
        m("tool_module_qualnames", json!({})),
    );
    out.insert(
        "runtime_info".into(),
        if with_runtime {
            json!({"runtime_status": "available", "can_resume": true, "runtime_error": null})
        } else {
            Value::Null
        },
    );
    Value::Object(out)
}

/// `ConversationInfo` of each conversation, in order. Idle conversations are read from disk
/// (all in one blocking task) and stay unloaded.
pub async fn infos(
    convs: &[Arc<Conversation>],
    include_skills: bool,
    with_runtime: bool,
) -> std::io::Result<Vec<Value>> {
    let mut out: Vec<Option<Value>> = Vec::with_capacity(convs.len());
    let mut cold = Vec::new();
    for (i, c) in convs.iter().enumerate() {
        let inner = lock(&c.inner);
        if inner.docs_loaded {
            drop(inner);
            out.push(Some(c.info(include_skills, with_runtime)));
        } else {
            cold.push((i, c.clone(), inner.first_load));
            out.push(None);
        }
    }
    if !cold.is_empty() {
        let read = tokio::task::spawn_blocking(move || {
            cold.into_iter()
                .map(|(i, c, reset)| {
                    let d = load_docs(&c.dir, c.id, c.cipher.as_deref(), reset)?;
                    let state = view_state(
                        d.state,
                        &c.persistence_dir,
                        SecretView::Null,
                        include_skills,
                    );
                    Ok((i, info_of(state, d.meta, with_runtime)))
                })
                .collect::<std::io::Result<Vec<_>>>()
        })
        .await
        .map_err(std::io::Error::other)??;
        for (i, v) in read {
            out[i] = Some(v);
        }
        crate::util::trim_heap_soon();
    }
    Ok(out.into_iter().flatten().collect())
}

fn not_loaded() -> std::io::Error {
    std::io::Error::other("the conversation's files could not be read; they are left as they are")
}

/// Puts freshly read documents in place.
fn install_docs(inner: &mut Inner, docs: Docs) {
    let Docs {
        mut state,
        meta,
        changed,
    } = docs;
    // HEAD is derived from the log when it is in memory (the log is written first).
    if let Some(leaf) = inner.state.get("leaf_event_id").filter(|v| !v.is_null()) {
        state.insert("leaf_event_id".into(), leaf.clone());
    }
    inner.state = state;
    inner.meta = meta;
    inner.docs_loaded = true;
    inner.first_load = false;
    inner.dirty |= changed;
}

/// Sends `text` to every subscriber; a full queue disconnects that subscriber.
fn publish(inner: &mut Inner, text: Arc<str>) {
    publish_to(inner, text, |_| true);
}

/// Sends `text` to the subscribers whose id passes `to`; a full queue disconnects one.
fn publish_to(inner: &mut Inner, text: Arc<str>, to: impl Fn(u64) -> bool) {
    let mut dropped = Vec::new();
    for s in inner.subscribers.iter().filter(|s| to(s.id)) {
        match s.tx.try_send(text.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(f) = inner.overflow_flags.get(&s.id) {
                    f.store(true, Ordering::Release);
                }
                dropped.push(s.id);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => dropped.push(s.id),
        }
    }
    if !dropped.is_empty() {
        inner.subscribers.retain(|s| !dropped.contains(&s.id));
        for id in dropped {
            inner.overflow_flags.remove(&id);
        }
    }
}
