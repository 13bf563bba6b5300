//! What REST answers show of a conversation: `ConversationInfo`, the state with secrets
//! masked, and listings that read unloaded conversations from disk.

use super::docs::load_docs;
use super::*;

impl Conversation {
    // ----- views -------------------------------------------------------------------------

    pub(in crate::conversation) fn state_view(
        &self,
        secrets: SecretView,
        include_skills: bool,
    ) -> Map<String, Value> {
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
        info_of(state, meta.to_map(), with_runtime)
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
    pub(in crate::conversation) fn full_state_value(&self) -> Value {
        let state = self.state_view(SecretView::Masked, false);
        let mut out = Map::new();
        for (k, v) in state {
            if !v.is_null() {
                out.insert(k, v);
            }
        }
        Value::Object(out)
    }
}

/// The state as clients see it: `persistence_dir` set, secrets nulled or masked, skills
/// emptied unless asked for.
pub(in crate::conversation) fn view_state(
    mut state: ConversationState,
    persistence_dir: &str,
    secrets: SecretView,
    include_skills: bool,
) -> Map<String, Value> {
    state.persistence_dir = Some(persistence_dir.to_string());
    let f: &dyn Fn(&str) -> Value = match secrets {
        SecretView::Null => &|_| Value::Null,
        SecretView::Masked => &|_| Value::String(MASK.into()),
    };
    crypto::map_secret_fields(&mut state.agent, f);
    if !include_skills {
        if let Some(ctx) = state
            .agent
            .get_mut("agent_context")
            .and_then(Value::as_object_mut)
        {
            if ctx.contains_key("skills") {
                ctx.insert("skills".into(), json!([]));
            }
        }
    }
    crypto::map_registry(&mut state.secret_registry, f);
    state.to_map()
}

/// `ConversationInfo` from a viewed state and the metadata.
pub(in crate::conversation) fn info_of(
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
                    Ok((i, info_of(state, d.meta.to_map(), with_runtime)))
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
