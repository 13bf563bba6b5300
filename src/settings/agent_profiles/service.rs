//! The agent-profile operations of [`SettingsService`]: list, get, save, delete, rename,
//! activate, the seeded `default`, and launching.

use super::*;

pub(super) fn store_error(name: &str, e: StoreError) -> SettingsError {
    match e {
        StoreError::NotFound => SettingsError::NotFound(format!("Agent profile '{name}' not found")),
        StoreError::Exists => SettingsError::Conflict(format!("Agent profile '{name}' already exists")),
        StoreError::LimitReached => SettingsError::Conflict(format!(
            "Agent profile limit reached ({MAX_AGENT_PROFILES}). Delete a profile before saving a new one."
        )),
        StoreError::Corrupt(m) => SettingsError::BadRequest(m),
        StoreError::Io(e) => SettingsError::Io(e.to_string()),
    }
}

pub(super) fn invalid(e: Invalid) -> SettingsError {
    match e {
        Invalid::Issues(issues) => SettingsError::Rejected(Value::Array(issues)),
        Invalid::Unreadable => SettingsError::Invalid("Invalid agent profile".into()),
    }
}

/// Whether an LLM carries configuration worth keeping as a profile (a key, a subscription or
/// an endpoint), not bare defaults.
pub(super) fn llm_has_real_config(llm: &Value) -> bool {
    crate::settings::ProfileStore::api_key_set(llm)
        || llm["is_subscription"] == true
        || llm["auth_type"] == "subscription"
        || llm["base_url"]
            .as_str()
            .is_some_and(|u| !u.trim().is_empty())
}

impl SettingsService {
    pub(in crate::settings) fn agent_store(&self) -> AgentProfileStore {
        AgentProfileStore::new(self.dir.join("agent-profiles"))
    }

    /// Keeps `active_agent_profile_id` on a stored profile: a missing or dangling pointer moves
    /// to `default`, seeded from the agent settings when absent (with a `default` LLM profile
    /// mirroring a configured LLM), else to the first other profile. Blocking; the caller holds
    /// the lock.
    pub(super) fn ensure_active_blocking(&self) -> Result<(), SettingsError> {
        let store = self.agent_store();
        let cipher = self.cipher();
        let path = self.settings_path();
        let settings = Self::load_settings(&path, cipher.as_deref(), false)?;
        let known = |id: &str| store.name_for_id(id).map(|n| n.is_some());
        if let Some(id) = &settings.active_agent_profile_id {
            if known(id).map_err(|e| store_error("", e))? {
                return Ok(());
            }
        }
        let target = match store.load(SEED_PROFILE_NAME) {
            Ok(p) => p["id"].as_str().map(str::to_string),
            Err(StoreError::NotFound) => {
                let mut llm_ref = settings.active_profile.clone().filter(|p| !p.is_empty());
                if llm_ref.is_none() && settings.agent_settings["agent_kind"] != "acp" {
                    llm_ref = Some(SEED_PROFILE_NAME.into());
                    self.seed_default_llm_profile(&settings.agent_settings["llm"]);
                }
                let seed = seed_from_settings(&settings.agent_settings, llm_ref.as_deref());
                match store.save(&seed) {
                    Ok(()) => {
                        tracing::info!(id = %seed["id"], "seeded the default agent profile");
                        seed["id"].as_str().map(str::to_string)
                    }
                    Err(StoreError::LimitReached) => None,
                    Err(e) => return Err(store_error(SEED_PROFILE_NAME, e)),
                }
            }
            Err(_) => {
                tracing::warn!("agent profile 'default' exists but cannot be read; leaving it");
                None
            }
        };
        let target = match target {
            Some(id) => Some(id),
            None => store
                .summaries()
                .map_err(|e| store_error("", e))?
                .into_iter()
                .find(|s| s["id"].is_string() && s["name"] != SEED_PROFILE_NAME)
                .and_then(|s| s["id"].as_str().map(str::to_string)),
        };
        let Some(id) = target else { return Ok(()) };
        let mut settings = Self::load_settings(&path, cipher.as_deref(), true)?;
        settings.active_agent_profile_id = Some(id);
        crate::settings::store::write_json(&path, &settings.to_stored(cipher.as_deref()))
            .map_err(|e| SettingsError::Io(e.to_string()))
    }

    /// Mirrors a configured LLM into a `default` LLM profile unless one exists.
    pub(super) fn seed_default_llm_profile(&self, llm: &Value) {
        let cipher = self.cipher();
        match self.profiles.load(cipher.as_deref(), SEED_PROFILE_NAME) {
            Err(crate::settings::profiles::ProfileError::NotFound) if llm_has_real_config(llm) => {
                if let Err(e) = self
                    .profiles
                    .save(cipher.as_deref(), SEED_PROFILE_NAME, llm, true)
                {
                    tracing::warn!(error = ?e, "could not seed the default LLM profile");
                }
            }
            _ => {}
        }
    }

    pub(super) async fn with_agent_store<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&SettingsService) -> Result<T, SettingsError> + Send + 'static,
    ) -> Result<T, SettingsError> {
        let _guard = self.lock.lock().await;
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| SettingsError::Io(e.to_string()))?
    }

    /// `GET /api/agent-profiles`: every profile and the active pointer (some profile is always
    /// active: `default` is seeded when none is).
    pub async fn list_agent_profiles(self: &Arc<Self>) -> Result<Value, SettingsError> {
        self.with_agent_store(|me| {
            me.ensure_active_blocking()?;
            let profiles = me.agent_store().summaries().map_err(|e| store_error("", e))?;
            let settings = Self::load_settings(&me.settings_path(), me.cipher().as_deref(), false)?;
            Ok(json!({"profiles": profiles, "active_agent_profile_id": settings.active_agent_profile_id}))
        })
        .await
    }

    /// The stored profile `name` (validated).
    pub async fn agent_profile(self: &Arc<Self>, name: &str) -> Result<Value, SettingsError> {
        let name = name.to_string();
        self.with_agent_store(move |me| {
            me.agent_store()
                .load(&name)
                .map_err(|e| store_error(&name, e))
        })
        .await
    }

    /// Saves `body` as profile `name` (the path name wins over the body's).
    pub async fn save_agent_profile(
        self: &Arc<Self>,
        name: &str,
        body: Value,
    ) -> Result<(), SettingsError> {
        let mut body = body;
        body["name"] = json!(name);
        let profile = validate(&body).map_err(invalid)?;
        self.with_agent_store(move |me| {
            let name = profile["name"].as_str().unwrap_or_default().to_string();
            me.agent_store()
                .save_preserving_identity(profile)
                .map(|_| ())
                .map_err(|e| store_error(&name, e))
        })
        .await
    }

    /// Deletes profile `name` (idempotent); when it was active, ACP agent settings are reset to
    /// the OpenHands defaults (keeping the MCP servers) and another profile becomes active.
    pub async fn delete_agent_profile(self: &Arc<Self>, name: &str) -> Result<(), SettingsError> {
        let name = name.to_string();
        self.with_agent_store(move |me| {
            let store = me.agent_store();
            let id = store
                .summaries()
                .map_err(|e| store_error(&name, e))?
                .into_iter()
                .find(|s| s["name"].as_str() == Some(canonical(&name)))
                .and_then(|s| s["id"].as_str().map(str::to_string));
            store.delete(&name).map_err(|e| store_error(&name, e))?;
            let Some(id) = id else { return Ok(()) };
            let (path, cipher) = (me.settings_path(), me.cipher());
            let mut settings = Self::load_settings(&path, cipher.as_deref(), false)?;
            if settings.active_agent_profile_id.as_deref() != Some(id.as_str()) {
                return Ok(());
            }
            settings = Self::load_settings(&path, cipher.as_deref(), true)?;
            settings.active_agent_profile_id = None;
            if settings.agent_settings["agent_kind"] != "openhands" {
                let mcp = settings.agent_settings["mcp_config"].clone();
                settings.agent_settings = Settings::default().agent_settings;
                settings.agent_settings["mcp_config"] = mcp;
            }
            crate::settings::store::write_json(&path, &settings.to_stored(cipher.as_deref()))
                .map_err(|e| SettingsError::Io(e.to_string()))?;
            me.ensure_active_blocking()
        })
        .await
    }

    /// Renames a profile (its id, and so an active pointer, stays); answers the message.
    pub async fn rename_agent_profile(
        self: &Arc<Self>,
        name: &str,
        new_name: &str,
    ) -> Result<String, SettingsError> {
        let (name, new_name) = (name.to_string(), new_name.to_string());
        self.with_agent_store(move |me| {
            me.agent_store()
                .rename(&name, &new_name)
                .map_err(|e| match e {
                    StoreError::Exists => store_error(&new_name, e),
                    e => store_error(&name, e),
                })?;
            Ok(if name == new_name {
                format!("Agent profile '{name}' unchanged (same name)")
            } else {
                format!("Agent profile '{name}' renamed to '{new_name}'")
            })
        })
        .await
    }

    /// Points `active_agent_profile_id` at the profile with this id (nothing else changes).
    pub async fn activate_agent_profile(self: &Arc<Self>, id: &str) -> Result<(), SettingsError> {
        let id = id.to_string();
        self.with_agent_store(move |me| {
            let known = me
                .agent_store()
                .name_for_id(&id)
                .map_err(|e| store_error("", e))?;
            if known.is_none() {
                return Err(SettingsError::NotFound(format!(
                    "Agent profile with id '{id}' not found"
                )));
            }
            let (path, cipher) = (me.settings_path(), me.cipher());
            let mut settings = Self::load_settings(&path, cipher.as_deref(), true)
                .map_err(|_| SettingsError::Io("Failed to activate agent profile".into()))?;
            settings.active_agent_profile_id = Some(id);
            crate::settings::store::write_json(&path, &settings.to_stored(cipher.as_deref()))
                .map_err(|_| SettingsError::Io("Failed to activate agent profile".into()))
        })
        .await
    }

    /// The active agent profile (activating `default` when none is), if any.
    pub async fn active_agent_profile(self: &Arc<Self>) -> Result<Option<Value>, SettingsError> {
        self.with_agent_store(|me| {
            me.ensure_active_blocking()?;
            let settings = Self::load_settings(&me.settings_path(), me.cipher().as_deref(), false)?;
            let Some(id) = settings.active_agent_profile_id else {
                return Ok(None);
            };
            let store = me.agent_store();
            match store.name_for_id(&id).map_err(|e| store_error("", e))? {
                Some(name) => Ok(store.load(&name).ok()),
                None => Ok(None),
            }
        })
        .await
    }

    /// The stored profile with this id.
    pub async fn agent_profile_by_id(
        self: &Arc<Self>,
        id: &str,
    ) -> Result<Option<Value>, SettingsError> {
        let id = id.to_string();
        self.with_agent_store(move |me| {
            let store = me.agent_store();
            match store.name_for_id(&id).map_err(|e| store_error("", e))? {
                Some(name) => store
                    .load(&name)
                    .map(Some)
                    .map_err(|e| store_error(&name, e)),
                None => Ok(None),
            }
        })
        .await
    }

    /// What a launch of `profile` reads: the agent settings, LLM profiles and meta-profiles.
    pub async fn launch_inputs(self: &Arc<Self>) -> Result<LaunchInputs, SettingsError> {
        let settings = self.settings().await?;
        let (profiles, cipher) = (self.profiles.clone(), self.cipher());
        let meta_dir = self.dir.join("meta-profiles");
        Ok(LaunchInputs {
            agent_settings: settings.agent_settings,
            llm: Box::new(move |name| match profiles.load(cipher.as_deref(), name) {
                Ok(llm) => Ok(Some(llm)),
                Err(crate::settings::profiles::ProfileError::NotFound) => Ok(None),
                Err(e) => Err(format!("{e:?}")),
            }),
            meta: Box::new(move |name| {
                crate::settings::meta_profiles::MetaProfileStore::new(meta_dir.clone())
                    .load(name)
                    .map_err(|e| format!("{e:?}"))
            }),
        })
    }

    /// `POST /api/agent-profiles/{name}/materialize`: diagnostics of the stored profile, or of
    /// `draft` when given.
    pub async fn materialize_agent_profile(
        self: &Arc<Self>,
        name: &str,
        draft: Option<Value>,
    ) -> Result<Value, SettingsError> {
        let profile = match draft {
            Some(mut d) => {
                d["name"] = json!(name);
                validate(&d).map_err(invalid)?
            }
            None => self.agent_profile(name).await?,
        };
        let inputs = self.launch_inputs().await?;
        tokio::task::spawn_blocking(move || materialize(&profile, &inputs))
            .await
            .map_err(|e| SettingsError::Io(e.to_string()))
    }
}
