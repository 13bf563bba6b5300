//! The registry of conversations: opening a directory of them, create, get, delete, fork,
//! the idle release and the graceful shutdown.

use super::create::*;
use super::*;

impl ConversationService {
    /// Opens the registry: lists `root/*/meta.json` (events stay on disk until needed) and
    /// recovers conversations that were running when the previous process stopped.
    pub fn open(root: PathBuf, secret_key: Option<&str>, max_runs: usize) -> std::io::Result<Self> {
        let cipher = secret_key.and_then(Cipher::from_key).map(Arc::new);
        let lifecycle = (TaskTracker::new(), CancellationToken::new());
        Self::open_with(root, cipher, max_runs, Arc::default(), lifecycle)
    }

    pub(in crate::conversation) fn open_with(
        root: PathBuf,
        cipher: Option<Arc<Cipher>>,
        max_runs: usize,
        subagents: Arc<crate::subagents::Registry>,
        (tasks, stopping): (TaskTracker, CancellationToken),
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&root)?;
        let svc = ConversationService {
            tasks,
            stopping,
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

    pub(in crate::conversation) fn new_conversation(
        &self,
        id: Uuid,
        state: ConversationState,
        meta: StoredConversation,
    ) -> Conversation {
        let hex = id.simple().to_string();
        let parent = meta
            .parent_conversation_id
            .as_deref()
            .and_then(|p| Uuid::parse_str(p).ok());
        Conversation {
            tasks: self.tasks.clone(),
            stopping: self.stopping.clone(),
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
            bash: tokio::sync::Mutex::new(ScopedBash::default()),
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
    pub(in crate::conversation) fn load_dir(&self, dir: &Path) -> std::io::Result<Conversation> {
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
        let mut conv = self.new_conversation(
            id,
            ConversationState::default(),
            StoredConversation::default(),
        );
        conv.parent = text(meta.parent_conversation_id).and_then(|p| Uuid::parse_str(&p).ok());
        {
            let mut inner = lock(&conv.inner);
            inner.docs_loaded = false;
            inner.first_load = true;
            inner.summary = Summary {
                status: text(state.and_then(|s| s.execution_status))
                    .map_or(ExecutionStatus::Idle, |s| {
                        ExecutionStatus::parse(&s).unwrap_or(ExecutionStatus::Error)
                    }),
                created_at: text(meta.created_at).unwrap_or_default().into(),
                updated_at: text(meta.updated_at).unwrap_or_default().into(),
            };
        }
        if conv.status() == ExecutionStatus::Running {
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
    pub(in crate::conversation) fn check_capacity(&self) -> Result<(), ConversationError> {
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
    pub(in crate::conversation) async fn create_with(
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
        if let Some(parent) = req.meta.parent_conversation_id.as_deref() {
            let workspace = check_parent_workspace.then_some(req.working_dir.as_str());
            check_parent(self, id, parent, workspace)?;
        }
        prepare_workspace(&req.working_dir).await?;
        let now = crate::util::utc_timestamp();
        let mut meta = req.meta;
        meta.required_runtime_credential_bindings = json!([]);
        meta.id = id.simple().to_string();
        meta.title = None;
        meta.metrics = Value::Null;
        meta.created_at = now.clone();
        meta.updated_at = now;
        meta.forked_from_conversation_id = None;
        meta.forked_from_event_id = None;
        let mut stored = Map::new();
        stored.insert("agent".into(), req.agent);
        let mut state = ConversationState::with_defaults(stored, id, &meta);
        if !meta.secrets.is_empty() {
            state.secret_registry = json!({"secret_sources": meta.secrets.clone()});
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
        let initial = conv.read_meta(|m| Some(m.initial_message.clone()));
        if let Some(msg) = initial.filter(Value::is_object) {
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
        if let Some(b) = conv.bash.lock().await.service.take() {
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
        meta.id = id.simple().to_string();
        meta.conversation_id = Value::Null;
        meta.created_at = now.clone();
        meta.updated_at = now;
        meta.title = title;
        meta.forked_from_conversation_id = Some(source.id.to_string());
        meta.forked_from_event_id = from_event_id.clone();
        if let Some(t) = tags {
            validate_tags(&t)?;
            meta.tags = t.clone();
            state.tags = t;
        }
        state.id = json!(id.to_string());
        let hex = id.simple().to_string();
        state.persistence_dir = Some(persistence_dir_string(&self.root, &hex));
        state.execution_status = ExecutionStatus::Idle;
        if reset_metrics {
            state.stats = json!({"usage_to_metrics": {}});
        }
        state.leaf_event_id = events
            .iter()
            .rev()
            .find(|e| events::moves_head(e))
            .map(|e| events::id(e).to_string());
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

    /// Starts the background task that releases conversations idle for `ttl` (the server's
    /// `OH_CONVERSATION_IDLE_TTL_SECONDS`); their files stay on disk. It ends at shutdown.
    pub fn start_idle_release(self: &Arc<Self>, ttl: Duration) {
        let svc = Arc::downgrade(self);
        let period = ttl.clamp(Duration::from_secs(1), Duration::from_secs(60));
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = stopping.cancelled() => return,
                }
                let Some(svc) = svc.upgrade() else {
                    return;
                };
                let mut released = false;
                for conv in svc.all() {
                    if conv.is_dirty() && conv.run_ctl().is_none() {
                        let _ = conv.persist_state().await;
                    }
                    if conv.release_if_idle(ttl) {
                        tracing::debug!(conversation = %conv.id, "released an idle conversation");
                        released = true;
                    }
                    if conv.release_bash_if_idle(ttl) {
                        tracing::debug!(conversation = %conv.id, "released an idle bash runner");
                        released = true;
                    }
                }
                if released {
                    crate::util::trim_heap_soon();
                }
            }
        });
    }

    /// Graceful shutdown, in order: nothing new starts (the idle release ends, runs are
    /// refused); every run and goal loop is cancelled and awaited (a tool gets a moment to
    /// stop its process and report); then each conversation's terminals and bash commands are
    /// stopped, their process groups killed; last, the state of every conversation that ran
    /// or changed is written.
    pub async fn shutdown(&self) {
        self.stopping.cancel();
        let convs = self.all();
        let mut ran = Vec::with_capacity(convs.len());
        for conv in &convs {
            if let Some(goal) = lock(&conv.goal).as_ref() {
                goal.cancel();
            }
            let run = conv.run_ctl();
            if let Some(ctl) = &run {
                ctl.cancel.cancel();
            }
            ran.push(run.is_some() || conv.runtime.lock().await.is_some());
        }
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("conversation tasks still running after 5 s; stopping their tools");
        }
        for (conv, ran) in convs.iter().zip(ran) {
            if let Some(rt) = conv.runtime.lock().await.take() {
                for t in rt.tools.iter() {
                    t.close().await;
                }
            }
            if let Some(bash) = conv.bash.lock().await.service.take() {
                bash.shutdown().await;
            }
            if (ran || conv.is_dirty()) && conv.docs_loaded() {
                let _w = conv.write_lock.lock().await;
                if let Err(e) = conv.save_state().await {
                    tracing::warn!(conversation = %conv.id, error = %e, "could not save the state");
                }
                if let Err(e) = conv.save_meta().await {
                    tracing::warn!(conversation = %conv.id, error = %e, "could not save the metadata");
                }
            }
        }
    }
}
