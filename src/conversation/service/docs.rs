//! One conversation's persisted state: its documents (`meta.json`, `base_state.json`,
//! secrets decrypted in memory), its event log, and writing them crash-safely.

use super::create::*;
use super::fanout::*;
use super::*;

/// Reads a conversation's documents from disk, secrets decrypted and defaults filled. With
/// `reset` (the first load after start-up) the confirmation policy and the security analyzer
/// go back to their creation-time values, as the reference does when it loads a conversation;
/// the flag returned says whether that changed the state. Blocking.
pub(in crate::conversation) fn load_docs(
    dir: &Path,
    id: Uuid,
    cipher: Option<&Cipher>,
    reset: bool,
) -> std::io::Result<Docs> {
    let stored_meta = match store::read_json(&dir.join("meta.json"))? {
        Value::Object(m) => m,
        _ => return Err(std::io::Error::other("meta.json is not an object")),
    };
    let mut meta = StoredConversation::from_map(stored_meta)
        .map_err(|e| std::io::Error::other(format!("meta.json: {e}")))?;
    let stored = match store::read_json(&dir.join("base_state.json")) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    let mut state = ConversationState::with_defaults(stored, id, &meta);
    crypto::map_secret_fields(&mut state.agent, &|s| crypto::unseal(cipher, s));
    crypto::map_registry(&mut state.secret_registry, &|s| crypto::unseal(cipher, s));
    for v in meta.secrets.values_mut() {
        if let Some(Value::String(s)) = v.get("value").cloned().as_ref() {
            v["value"] = crypto::unseal(cipher, s);
        }
    }
    let mut changed = false;
    if reset {
        let policy = &meta.confirmation_policy;
        if !policy.is_null() && state.confirmation_policy != *policy {
            state.confirmation_policy = policy.clone();
            changed = true;
        }
        if state.security_analyzer != meta.security_analyzer {
            state.security_analyzer = meta.security_analyzer.clone();
            changed = true;
        }
    }
    Ok(Docs {
        state,
        meta,
        changed,
    })
}

impl Conversation {
    // ----- plain accessors -------------------------------------------------------------

    /// `execution_status`.
    pub fn status(&self) -> ExecutionStatus {
        let inner = lock(&self.inner);
        if !inner.docs_loaded {
            return inner.summary.status;
        }
        inner.state.execution_status
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
        if key == "created_at" {
            inner.meta.created_at.clone()
        } else {
            inner.meta.updated_at.clone()
        }
    }

    /// The inner state with the documents loaded. An idle conversation touched by a
    /// synchronous accessor reads them here, outside the lock and marked as blocking for the
    /// runtime (async paths load them first with [`Self::ensure_docs`]). When they cannot be
    /// read the maps stay empty and unsaved.
    pub(in crate::conversation) fn loaded(&self) -> MutexGuard<'_, Inner> {
        let reset = {
            let inner = lock(&self.inner);
            if inner.docs_loaded {
                return inner;
            }
            inner.first_load
        };
        let docs = crate::util::blocking_section(|| {
            load_docs(&self.dir, self.id, self.cipher.as_deref(), reset)
        });
        let mut inner = lock(&self.inner);
        if !inner.docs_loaded {
            match docs {
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

    /// Reads the state (loading an idle conversation's documents first).
    pub fn read_state<R>(&self, f: impl FnOnce(&ConversationState) -> R) -> R {
        f(&self.loaded().state)
    }

    /// A registry of conversations kept under this one's directory (`<dir>/<name>`), sealed
    /// with the same key: the conversations the `task` tool runs.
    pub fn nested_service(&self, name: &str) -> std::io::Result<ConversationService> {
        let shared = self
            .registry()
            .upgrade()
            .map(|s| s.subagents.clone())
            .unwrap_or_default();
        let lifecycle = (self.tasks.clone(), self.stopping.clone());
        ConversationService::open_with(
            self.dir.join(name),
            self.cipher.clone(),
            64,
            shared,
            lifecycle,
        )
    }

    /// The registry this conversation belongs to, if it is still up.
    pub fn registry(&self) -> std::sync::Weak<ConversationService> {
        self.registry.get().cloned().unwrap_or_default()
    }

    /// Reads the metadata (loading an idle conversation's documents first).
    pub fn read_meta<R>(&self, f: impl FnOnce(&StoredConversation) -> R) -> R {
        f(&self.loaded().meta)
    }

    /// The working directory of the workspace.
    pub fn working_dir(&self) -> String {
        self.loaded().state.working_dir().to_string()
    }

    /// `<conversations_path>/<hex>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The agent JSON with secrets in plaintext.
    pub fn agent_json(&self) -> Value {
        self.loaded().state.agent.clone()
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

    pub(in crate::conversation) fn secret_sources(&self) -> Vec<(String, Value)> {
        let inner = self.loaded();
        inner
            .state
            .secret_sources()
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
    /// `<dir>/bash_events`, commands default to the working directory. Opened (the events
    /// directory read, off the runtime) on first use and again after an idle release.
    pub async fn bash_service(&self) -> std::io::Result<Arc<crate::exec::BashService>> {
        let mut bash = self.bash.lock().await;
        bash.last_used = std::time::Instant::now();
        if let Some(b) = &bash.service {
            return Ok(b.clone());
        }
        let dir = self.dir.join("bash_events");
        let cwd = std::path::PathBuf::from(self.working_dir());
        let svc = tokio::task::spawn_blocking(move || {
            crate::exec::BashService::with_default_cwd(dir, Some(cwd))
        })
        .await
        .map_err(std::io::Error::other)??;
        let svc = Arc::new(svc);
        bash.service = Some(svc.clone());
        Ok(svc)
    }

    /// Drops the scoped bash runner (its in-memory event index; the files stay) when no
    /// request used it for `ttl` and nothing holds it: no command running, no subscriber, no
    /// response streaming. The next request opens it again. Returns true when released.
    pub fn release_bash_if_idle(&self, ttl: Duration) -> bool {
        let Ok(mut bash) = self.bash.try_lock() else {
            return false;
        };
        let idle = bash.last_used.elapsed() >= ttl
            && bash
                .service
                .as_ref()
                .is_some_and(|b| Arc::strong_count(b) == 1 && b.is_unused());
        if idle {
            bash.service = None;
        }
        idle
    }

    /// The control of the active run, if any.
    pub fn run_ctl(&self) -> Option<RunCtl> {
        lock(&self.inner).run.clone()
    }

    /// Whether the documents are in memory.
    pub(crate) fn docs_loaded(&self) -> bool {
        lock(&self.inner).docs_loaded
    }

    /// Whether the state has changes not yet written to `base_state.json`.
    pub(in crate::conversation) fn is_dirty(&self) -> bool {
        lock(&self.inner).dirty
    }

    /// True once deleted.
    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    // ----- persistence -------------------------------------------------------------------

    pub(in crate::conversation) async fn save_state(&self) -> std::io::Result<()> {
        let (mut state, cipher) = {
            let mut inner = self.loaded();
            if !inner.docs_loaded {
                return Err(not_loaded());
            }
            inner.dirty = false;
            (inner.state.clone(), self.cipher.clone())
        };
        state.persistence_dir = Some(self.persistence_dir.clone());
        let path = self.dir.join("base_state.json");
        let written = tokio::task::spawn_blocking(move || {
            store::write_json(&path, &stored_form(state, cipher.as_deref()))
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
            for v in meta.secrets.values_mut() {
                if let Some(Value::String(s)) = v.get("value").cloned().as_ref() {
                    v["value"] = crypto::seal(c, s);
                }
            }
            store::write_json(&path, &Value::Object(meta.to_map()))
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

    pub(in crate::conversation) fn install_events(&self, loaded: Vec<Value>) {
        let mut inner = self.loaded();
        for e in &loaded {
            if let Some(ts) = events::str_field(e, "timestamp") {
                inner.clock.observe(ts);
            }
        }
        // HEAD is derived from the log, which is written before base_state.
        if let Some(last) = loaded.iter().rev().find(|e| events::moves_head(e)) {
            inner.state.leaf_event_id = Some(events::id(last).to_string());
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
            inner.state = ConversationState::default();
            inner.meta = StoredConversation::default();
            inner.docs_loaded = false;
        }
        drop(inner);
        if let Some(rt) = rt.take() {
            self.tasks.spawn(async move {
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

    pub(in crate::conversation) async fn append_locked(
        &self,
        body: Value,
    ) -> std::io::Result<Value> {
        self.ensure_events().await?;
        let (ev, index) = {
            let mut inner = self.loaded();
            let id = crate::util::dashed_id();
            let ts = inner.clock.tick();
            let n = inner.events.as_ref().map_or(0, Vec::len);
            let head = inner.state.leaf_event_id.clone();
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
            inner.state.leaf_event_id = Some(events::id(&ev).to_string());
        }
        if let Some(evs) = inner.events.as_mut() {
            evs.push(ev.clone());
        }
        publish(&mut inner, text);
        Ok(ev)
    }

    /// Sets state fields, persists `base_state.json`, and (if `emit`) appends one
    /// `ConversationStateUpdateEvent` per field.
    pub async fn set_fields(&self, fields: Vec<StateField>, emit: bool) -> std::io::Result<()> {
        self.ensure_events().await?;
        let _w = self.write_lock.lock().await;
        let announced: Vec<(&str, Value)> = if emit {
            fields.iter().map(|f| (f.key(), f.event_value())).collect()
        } else {
            Vec::new()
        };
        // Stats change on every LLM call; their events carry the totals, and base_state is
        // rewritten with them at the next status change or when the run ends.
        let only_stats = fields.iter().all(|f| matches!(f, StateField::Stats(_)));
        {
            let mut inner = self.loaded();
            for f in fields {
                inner.state.apply(f);
            }
        }
        if !self.is_deleted() && !only_stats {
            self.save_state().await?;
        } else {
            lock(&self.inner).dirty = true;
        }
        for (k, v) in announced {
            self.append_locked(events::state_update(k, v)).await?;
        }
        Ok(())
    }

    /// Sets one state field ([`Self::set_fields`]).
    pub async fn set_field(&self, field: StateField, emit: bool) -> std::io::Result<()> {
        self.set_fields(vec![field], emit).await
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
    pub async fn set_status(&self, new: ExecutionStatus) -> std::io::Result<()> {
        if self.status() == new {
            return Ok(());
        }
        self.set_field(StateField::ExecutionStatus(new), true).await
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
            let s = &mut inner.state.stats;
            stats::record(s, usage_id, model, usage, cost, response_id, latency);
            s.clone()
        };
        self.set_field(StateField::Stats(stats_now), true).await
    }

    /// Registers LLM usage ids in the stats (without an event).
    pub fn register_usage(&self, usage_id: &str, model: &str) {
        let mut inner = self.loaded();
        inner.dirty = true;
        stats::register(&mut inner.state.stats, usage_id, model);
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
                inner.meta.title = Some(t);
            }
            if let Some(t) = &tags {
                inner.meta.tags = t.clone();
            }
            inner.meta.updated_at = crate::util::utc_timestamp();
        }
        if let Some(t) = tags {
            self.set_field(StateField::Tags(t), true).await?;
        }
        self.save_meta().await
    }

    /// Updates the secret registry (no event, like the reference).
    pub async fn update_secrets(&self, secrets: Map<String, Value>) -> std::io::Result<()> {
        let reg = {
            let inner = self.loaded();
            let mut reg = inner.state.secret_registry.clone();
            if !reg.get("secret_sources").is_some_and(Value::is_object) {
                reg = json!({"secret_sources": {}});
            }
            for (k, v) in secrets {
                reg["secret_sources"][k] = normalize_secret(v);
            }
            reg
        };
        self.set_field(StateField::SecretRegistry(reg), false)
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
    pub(in crate::conversation) fn recover_interrupted_run_blocking(&self) -> std::io::Result<()> {
        let loaded = store::load_events(&self.dir.join("events"))?;
        self.install_events(loaded);
        let pending = {
            let inner = lock(&self.inner);
            crate::conversation::history::unanswered_actions(inner.events.as_deref().unwrap_or(&[]))
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
            json!(ExecutionStatus::Error),
        ));
        let mut inner = self.loaded();
        inner.state.execution_status = ExecutionStatus::Error;
        for (i, body) in bodies.into_iter().enumerate() {
            let id = crate::util::dashed_id();
            let ts = inner.clock.tick();
            let n = inner.events.as_ref().map_or(0, Vec::len);
            let parent = if i < pending.len() {
                Some(events::id(&pending[i]).to_string())
            } else {
                inner.state.leaf_event_id.clone()
            };
            let ev = events::finalize(body, &id, &ts, parent.as_deref());
            store::write_json(
                &self.dir.join("events").join(store::event_file_name(n, &id)),
                &ev,
            )?;
            if events::moves_head(&ev) {
                inner.state.leaf_event_id = Some(id);
            }
            if let Some(evs) = inner.events.as_mut() {
                evs.push(ev);
            }
        }
        let mut state = inner.state.clone();
        drop(inner);
        state.persistence_dir = Some(self.persistence_dir.clone());
        store::write_json(
            &self.dir.join("base_state.json"),
            &stored_form(state, self.cipher.as_deref()),
        )
    }
}

/// `base_state.json`'s content: secrets sealed, null fields left out.
fn stored_form(mut state: ConversationState, cipher: Option<&Cipher>) -> Value {
    crypto::map_secret_fields(&mut state.agent, &|s| crypto::seal(cipher, s));
    crypto::map_registry(&mut state.secret_registry, &|s| crypto::seal(cipher, s));
    Value::Object(
        state
            .to_map()
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .collect(),
    )
}

pub(in crate::conversation) fn not_loaded() -> std::io::Error {
    std::io::Error::other("the conversation's files could not be read; they are left as they are")
}

/// Puts freshly read documents in place.
pub(in crate::conversation) fn install_docs(inner: &mut Inner, docs: Docs) {
    let Docs {
        mut state,
        meta,
        changed,
    } = docs;
    // HEAD is derived from the log when it is in memory (the log is written first).
    if let Some(leaf) = inner.state.leaf_event_id.take() {
        state.leaf_event_id = Some(leaf);
    }
    inner.state = state;
    inner.meta = meta;
    inner.docs_loaded = true;
    inner.first_load = false;
    inner.dirty |= changed;
}
