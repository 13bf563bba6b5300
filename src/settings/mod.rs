//! User settings, custom secrets and LLM profiles, persisted as the reference does under the
//! persistence directory (`OH_PERSISTENCE_DIR`, else `~/.openhands`): `settings.json`,
//! `secrets.json` and `profiles/<name>.json`, files 0600 in 0700 directories, secret values
//! sealed with the server's key (plaintext in the file when the server has no key, as there).
//!
//! [`SettingsService`] is the one owner of these files: every read-modify-write runs under one
//! lock, on the blocking pool, and is written atomically. Stored secrets the key cannot decrypt
//! are never overwritten: writes refuse with [`SettingsError::KeyMismatch`].

pub mod agent_profiles;
pub mod connections;
pub mod document;
pub mod launch;
pub mod lookup;
pub mod meta_profiles;
pub mod profiles;
pub mod secrets;
pub mod store;
pub mod workspaces;

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};

pub use document::{Expose, FieldError, Settings};
pub use profiles::{ProfileInfo, ProfileStore};
pub use secrets::SecretItem;

use crate::crypto::{Cipher, MASK};
use profiles::ProfileError;
use secrets::SecretsFile;
use store::Read;

/// What a settings, secrets or profile operation can fail with (mapped to HTTP in `error.rs`).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// 400: the request makes no sense (e.g. an update with nothing in it).
    #[error("{0}")]
    BadRequest(String),
    /// 404: the named secret, profile or MCP server does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 409: the name is taken, or a limit is reached.
    #[error("{0}")]
    Conflict(String),
    /// 422 with a message: a name or value the reference refuses with a sentence.
    #[error("{0}")]
    Invalid(String),
    /// 422 with pydantic-like issues (`loc` relative to the request body).
    #[error("validation failed")]
    Fields(Vec<FieldError>),
    /// 422 whose `detail` is this list, as the reference words it (agent profiles).
    #[error("validation failed")]
    Rejected(Value),
    /// The stored file holds secrets (or JSON) this server's key cannot read; `conflict`
    /// decides between the reference's 409 (settings) and 500 (secrets).
    #[error("{what} file is corrupted or encrypted with a different key: restore that key as OH_SECRET_KEY or add it to OH_PREVIOUS_SECRET_KEYS")]
    KeyMismatch { what: &'static str, conflict: bool },
    /// 503: encrypted output was asked for but the server has no key.
    #[error("Encryption not available: OH_SECRET_KEY is not configured. Cannot return encrypted secrets.")]
    NoKey,
    /// 500: the file system failed.
    #[error("{0}")]
    Io(String),
}

/// A partial settings update (`SettingsUpdateRequest`); `Some(None)` clears a pointer.
#[derive(Debug, Default, Clone)]
pub struct SettingsUpdate {
    pub agent_settings_diff: Option<Value>,
    pub conversation_settings_diff: Option<Value>,
    pub misc_settings_diff: Option<Value>,
    pub active_profile: Option<Option<String>>,
    pub active_agent_profile_id: Option<Option<String>>,
    pub active_meta_profile: Option<Option<String>>,
}

impl SettingsUpdate {
    /// Reads the request body; unknown fields are ignored and explicit nulls of the diffs
    /// count as absent, as the reference does.
    pub fn from_json(body: &Value) -> Self {
        let diff = |k: &str| body.get(k).filter(|v| !v.is_null()).cloned();
        let pointer = |k: &str| body.get(k).map(|v| v.as_str().map(str::to_string));
        SettingsUpdate {
            agent_settings_diff: diff("agent_settings_diff"),
            conversation_settings_diff: diff("conversation_settings_diff"),
            misc_settings_diff: diff("misc_settings_diff"),
            active_profile: pointer("active_profile"),
            active_agent_profile_id: pointer("active_agent_profile_id"),
            active_meta_profile: pointer("active_meta_profile"),
        }
    }

    fn is_empty(&self) -> bool {
        self.agent_settings_diff.is_none()
            && self.conversation_settings_diff.is_none()
            && self.misc_settings_diff.is_none()
            && self.active_profile.is_none()
            && self.active_agent_profile_id.is_none()
            && self.active_meta_profile.is_none()
    }
}

/// Which change to make to one named MCP server.
#[derive(Debug, Clone)]
pub enum McpChange {
    /// Add it (409 when the name exists).
    Create(Value),
    /// Merge a sparse patch into it (404 when absent).
    Patch(Value),
    /// Remove it (404 when absent).
    Delete,
}

/// Owner of the settings, secrets and profile files.
#[derive(Debug)]
pub struct SettingsService {
    dir: PathBuf,
    cipher: Option<Arc<Cipher>>,
    profiles: ProfileStore,
    /// Serialises every read-modify-write of these files.
    lock: tokio::sync::Mutex<()>,
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SettingsError> + Send + 'static,
) -> Result<T, SettingsError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SettingsError::Io(e.to_string()))?
}

fn io(e: std::io::Error) -> SettingsError {
    SettingsError::Io(e.to_string())
}

fn profile_error(name: &str, e: ProfileError) -> SettingsError {
    match e {
        ProfileError::NotFound => SettingsError::NotFound(format!("Profile '{name}' not found")),
        ProfileError::Exists => SettingsError::Conflict(format!("Profile '{name}' already exists")),
        ProfileError::LimitReached => SettingsError::Conflict(format!(
            "Profile limit reached ({}). Delete a profile before saving a new one.",
            profiles::MAX_PROFILES
        )),
        ProfileError::Corrupt(m) => SettingsError::BadRequest(m),
        ProfileError::Io(e) => io(e),
    }
}

impl SettingsService {
    /// The service over `dir`, sealing secrets with `secret_key` when there is one.
    pub fn new(dir: PathBuf, secret_key: Option<&str>) -> Self {
        SettingsService {
            profiles: ProfileStore::new(dir.join("profiles")),
            cipher: secret_key.and_then(Cipher::from_key).map(Arc::new),
            dir,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn cipher(&self) -> Option<Arc<Cipher>> {
        self.cipher.clone()
    }

    /// Checks that `mode` can be served by this server.
    pub fn check_expose(&self, mode: Expose) -> Result<(), SettingsError> {
        if mode == Expose::Encrypted && self.cipher.is_none() {
            return Err(SettingsError::NoKey);
        }
        Ok(())
    }

    fn settings_path(&self) -> PathBuf {
        self.dir.join("settings.json")
    }

    fn secrets_path(&self) -> PathBuf {
        self.dir.join("secrets.json")
    }

    /// Loads the settings; a secret that cannot be decrypted reads as null (answers), or fails
    /// the load with `strict` (before a write).
    fn load_settings(
        path: &std::path::Path,
        cipher: Option<&Cipher>,
        strict: bool,
    ) -> Result<Settings, SettingsError> {
        let mismatch = SettingsError::KeyMismatch {
            what: "Settings",
            conflict: true,
        };
        match store::read_json(path).map_err(io)? {
            Read::Missing => Ok(Settings::default()),
            Read::Corrupt if strict => Err(mismatch),
            Read::Corrupt => {
                tracing::error!(path = %path.display(), "settings file is not JSON; serving defaults");
                Ok(Settings::default())
            }
            Read::Json(v) => Settings::from_stored(&v, cipher, strict).map_err(|_| mismatch),
        }
    }

    /// The current settings (defaults when none are stored).
    pub async fn settings(&self) -> Result<Settings, SettingsError> {
        let (path, cipher) = (self.settings_path(), self.cipher());
        blocking(move || Self::load_settings(&path, cipher.as_deref(), false)).await
    }

    /// `SettingsResponse` of the current settings.
    pub async fn settings_response(&self, mode: Expose) -> Result<Value, SettingsError> {
        self.check_expose(mode)?;
        let settings = self.settings().await?;
        Ok(settings.response(self.cipher.as_deref(), mode))
    }

    /// Loads, changes with `f`, validates and stores the settings under the lock.
    async fn modify_settings(
        &self,
        f: impl FnOnce(&mut Settings, Option<&Cipher>) -> Result<(), SettingsError> + Send + 'static,
    ) -> Result<Settings, SettingsError> {
        let _guard = self.lock.lock().await;
        let (path, cipher) = (self.settings_path(), self.cipher());
        blocking(move || {
            let cipher = cipher.as_deref();
            let mut settings = Self::load_settings(&path, cipher, true)?;
            f(&mut settings, cipher)?;
            store::write_json(&path, &settings.to_stored(cipher)).map_err(io)?;
            Ok(settings)
        })
        .await
    }

    /// Applies a partial update (`PATCH /api/settings`); answers with secrets redacted.
    pub async fn update(self: &Arc<Self>, update: SettingsUpdate) -> Result<Value, SettingsError> {
        if update.is_empty() {
            return Err(SettingsError::BadRequest(
                "At least one of agent_settings_diff, conversation_settings_diff, \
                 misc_settings_diff, active_profile, active_agent_profile_id, or \
                 active_meta_profile must be provided"
                    .into(),
            ));
        }
        self.check_pointer_targets(
            update.active_agent_profile_id.clone().flatten().as_deref(),
            update.active_meta_profile.clone().flatten().as_deref(),
        )
        .await?;
        // Setting the active profile loads its LLM, unless the update brings its own.
        let explicit_llm = update
            .agent_settings_diff
            .as_ref()
            .is_some_and(|d| d.get("llm").is_some());
        let profile_llm = match &update.active_profile {
            Some(Some(name)) if !explicit_llm => Some(self.profile_llm(name).await?),
            _ => None,
        };
        let settings = self
            .modify_settings(move |s, cipher| {
                s.apply_diffs(
                    update.agent_settings_diff.as_ref(),
                    update.conversation_settings_diff.as_ref(),
                    update.misc_settings_diff.as_ref(),
                    cipher,
                )
                .map_err(|_| SettingsError::Invalid("Settings validation failed".into()))?;
                if let Some(active) = update.active_profile {
                    s.active_profile = active.map(|n| profiles::canonical(&n).to_string());
                }
                if let Some(llm) = profile_llm {
                    if s.agent_settings["agent_kind"] != "acp" {
                        s.set_llm(llm);
                    }
                }
                if let Some(id) = update.active_agent_profile_id {
                    s.active_agent_profile_id = id;
                }
                if let Some(meta) = update.active_meta_profile {
                    s.apply_active_meta_profile(meta, None);
                } else if s.agent_settings["agent_kind"] != "openhands" {
                    s.active_meta_profile = None;
                }
                Ok(())
            })
            .await?;
        Ok(settings.response(self.cipher.as_deref(), Expose::Redacted))
    }

    /// Creates, patches or deletes one named MCP server.
    pub async fn change_mcp_server(
        &self,
        key: String,
        change: McpChange,
    ) -> Result<Value, SettingsError> {
        let settings = self
            .modify_settings(move |s, cipher| {
                let exists = s.agent_settings["mcp_config"].get(&key).is_some();
                let diff = match change {
                    McpChange::Create(_) if exists => {
                        return Err(SettingsError::Conflict(format!(
                            "MCP server '{key}' already exists"
                        )))
                    }
                    McpChange::Patch(_) | McpChange::Delete if !exists => {
                        return Err(SettingsError::NotFound(format!(
                            "MCP server '{key}' was not found"
                        )))
                    }
                    McpChange::Create(server) | McpChange::Patch(server) => server,
                    McpChange::Delete => Value::Null,
                };
                let diff = json!({"mcp_config": {key.as_str(): diff}});
                s.apply_diffs(Some(&diff), None, None, cipher)
                    .map_err(SettingsError::Fields)
            })
            .await?;
        Ok(settings.response(self.cipher.as_deref(), Expose::Redacted))
    }

    async fn secrets_file(&self) -> Result<SecretsFile, SettingsError> {
        let path = self.secrets_path();
        blocking(move || match store::read_json(&path).map_err(io)? {
            Read::Missing => Ok(SecretsFile::new(None)),
            Read::Json(v) => Ok(SecretsFile::new(Some(v))),
            Read::Corrupt => Err(SettingsError::KeyMismatch {
                what: "Secrets",
                conflict: false,
            }),
        })
        .await
    }

    /// Names and descriptions of the stored secrets.
    pub async fn list_secrets(&self) -> Result<Vec<SecretItem>, SettingsError> {
        match self.secrets_file().await {
            Ok(file) => Ok(file.list()),
            Err(SettingsError::KeyMismatch { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The value of one secret; 404 when it is absent or cannot be decrypted (as there).
    pub async fn secret_value(&self, name: &str) -> Result<String, SettingsError> {
        if !secrets::valid_name(name) {
            return Err(invalid_secret_name());
        }
        let file = self.secrets_file().await?;
        match file.value(self.cipher.as_deref(), name) {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(SettingsError::NotFound("Secret not found".into())),
            Err(_) => {
                tracing::warn!(secret = %name, "a stored secret cannot be decrypted with this server's key");
                Err(SettingsError::NotFound("Secret not found".into()))
            }
        }
    }

    /// Creates or replaces a secret.
    pub async fn put_secret(
        &self,
        name: String,
        value: String,
        description: Option<String>,
    ) -> Result<SecretItem, SettingsError> {
        if !secrets::valid_name(&name) {
            return Err(invalid_secret_name());
        }
        if value.trim().is_empty() || value == MASK {
            return Err(SettingsError::Invalid(
                "Secret value must not be empty or redacted".into(),
            ));
        }
        let item = SecretItem {
            name: name.clone(),
            description: description.clone(),
        };
        self.modify_secrets(move |file, cipher| {
            file.set(cipher, &name, &value, description.as_deref());
            Ok(())
        })
        .await?;
        Ok(item)
    }

    /// Deletes a secret (404 when absent).
    pub async fn delete_secret(&self, name: String) -> Result<(), SettingsError> {
        if !secrets::valid_name(&name) {
            return Err(invalid_secret_name());
        }
        self.modify_secrets(move |file, _| {
            if file.remove(&name) {
                Ok(())
            } else {
                Err(SettingsError::NotFound("Secret not found".into()))
            }
        })
        .await
    }

    async fn modify_secrets(
        &self,
        f: impl FnOnce(&mut SecretsFile, Option<&Cipher>) -> Result<(), SettingsError> + Send + 'static,
    ) -> Result<(), SettingsError> {
        let _guard = self.lock.lock().await;
        let mut file = self.secrets_file().await?;
        let (path, cipher) = (self.secrets_path(), self.cipher());
        blocking(move || {
            let cipher = cipher.as_deref();
            file.check_readable(cipher)
                .map_err(|_| SettingsError::KeyMismatch {
                    what: "Secrets",
                    conflict: false,
                })?;
            f(&mut file, cipher)?;
            store::write_json(&path, &file.to_stored()).map_err(io)
        })
        .await
    }

    /// The saved profiles and the active one.
    pub async fn list_profiles(&self) -> Result<Value, SettingsError> {
        let (store, connections, cipher) =
            (self.profiles.clone(), self.connections(), self.cipher());
        let list = blocking(move || {
            let mut list = store.list().map_err(|e| profile_error("", e))?;
            // A linked profile's key is its connection's.
            if list.iter().any(|p| p.provider_connection_id.is_some()) {
                let all = connections.list(cipher.as_deref()).unwrap_or_default();
                for p in list.iter_mut() {
                    if let Some(id) = &p.provider_connection_id {
                        match all.iter().find(|c| &c.id == id) {
                            None => p.provider_connection_broken = true,
                            Some(c) => p.api_key_set |= c.api_key.is_some(),
                        }
                    }
                }
            }
            Ok(list)
        })
        .await?;
        let active = self.settings().await?.active_profile;
        Ok(json!({"profiles": list, "active_profile": active}))
    }

    /// The complete LLM of profile `name`, secrets decrypted, its provider connection applied.
    pub async fn profile_llm(&self, name: &str) -> Result<Value, SettingsError> {
        let (store, cipher, name) = (self.profiles.clone(), self.cipher(), name.to_string());
        let connections = self.connections();
        blocking(move || {
            let mut llm = store
                .load(cipher.as_deref(), &name)
                .map_err(|e| profile_error(&name, e))?;
            connections.resolve(cipher.as_deref(), &format!("Profile '{name}'"), &mut llm)?;
            Ok(llm)
        })
        .await
    }

    /// Applies the provider connection an LLM from a request references (422 when it is gone).
    pub async fn resolve_connection(&self, mut llm: Value) -> Result<Value, SettingsError> {
        let (connections, cipher) = (self.connections(), self.cipher());
        blocking(move || {
            connections.resolve(cipher.as_deref(), "LLM config", &mut llm)?;
            Ok(llm)
        })
        .await
    }

    /// `ProfileDetailResponse`: the LLM with secrets as `mode` says (no header: `api_key` null).
    pub async fn profile_detail(&self, name: &str, mode: Expose) -> Result<Value, SettingsError> {
        self.check_expose(mode)?;
        // The profile as stored: a linked profile shows its link, its key is the connection's.
        let (store, connections, cipher) =
            (self.profiles.clone(), self.connections(), self.cipher());
        let n = name.to_string();
        let (mut llm, key_set) = blocking(move || {
            let llm = store
                .load(cipher.as_deref(), &n)
                .map_err(|e| profile_error(&n, e))?;
            let mut key_set = ProfileStore::api_key_set(&llm);
            if let (false, Some(id)) = (key_set, llm["provider_connection_id"].as_str()) {
                key_set = connections
                    .get(cipher.as_deref(), id)?
                    .is_some_and(|c| c.api_key.is_some());
            }
            Ok((llm, key_set))
        })
        .await?;
        for field in document::LLM_SECRET_FIELDS {
            if let Some(s) = llm[field].as_str().map(str::to_string) {
                llm[field] = document::expose_value(self.cipher.as_deref(), &s, mode);
            }
        }
        if mode == Expose::Redacted {
            llm["api_key"] = Value::Null;
        }
        Ok(json!({"name": name, "config": llm, "api_key_set": key_set}))
    }

    /// An LLM object from a request: validated like the SDK's `LLM` (errors located under
    /// `llm`), completed with the defaults, secrets sent as tokens of our key decrypted. A
    /// provider connection it references is applied by [`SettingsService::resolve_connection`].
    pub fn incoming_llm(&self, llm: &Value) -> Result<Value, SettingsError> {
        let mut llm = document::validate_llm(llm).map_err(|errors| {
            SettingsError::Fields(
                errors
                    .into_iter()
                    .map(|mut e| {
                        e.loc.insert(0, "llm".into());
                        e
                    })
                    .collect(),
            )
        })?;
        if let Some(cipher) = &self.cipher {
            for field in document::LLM_SECRET_FIELDS {
                if let Some(s) = llm[field].as_str() {
                    if let Ok(plain) = document::unseal_value(Some(cipher), s) {
                        llm[field] = Value::String(plain);
                    }
                }
            }
        }
        Ok(llm)
    }

    /// Saves `llm` (see [`SettingsService::incoming_llm`]) as `name`.
    pub async fn save_profile(
        &self,
        name: String,
        llm: Value,
        include_secrets: bool,
    ) -> Result<(), SettingsError> {
        let llm = self.incoming_llm(&llm)?;
        let _guard = self.lock.lock().await;
        let (store, cipher) = (self.profiles.clone(), self.cipher());
        blocking(move || {
            store
                .save(cipher.as_deref(), &name, &llm, include_secrets)
                .map_err(|e| profile_error(&name, e))
        })
        .await
    }

    /// Deletes a profile (idempotent); clears the active pointer when it named it.
    pub async fn delete_profile(&self, name: String) -> Result<(), SettingsError> {
        {
            let _guard = self.lock.lock().await;
            let (store, agents) = (self.profiles.clone(), self.agent_store());
            let n = name.clone();
            blocking(move || {
                // An LLM profile an agent profile references cannot go.
                let referrers = agents
                    .referrers(&n)
                    .map_err(|e| SettingsError::Io(format!("{e:?}")))?;
                if !referrers.is_empty() {
                    return Err(SettingsError::Conflict(format!(
                        "LLM profile is referenced by {} agent profile(s): {}",
                        referrers.len(),
                        referrers.join(", ")
                    )));
                }
                store.delete(&n).map_err(|e| profile_error(&n, e))
            })
            .await?;
        }
        self.retarget_active(&name, None).await
    }

    /// Renames a profile; moves the active pointer with it.
    pub async fn rename_profile(
        &self,
        name: String,
        new_name: String,
    ) -> Result<(), SettingsError> {
        {
            let _guard = self.lock.lock().await;
            let (store, agents) = (self.profiles.clone(), self.agent_store());
            let (old, new) = (name.clone(), new_name.clone());
            blocking(move || {
                store.rename(&old, &new).map_err(|e| match e {
                    ProfileError::Exists => profile_error(&new, e),
                    e => profile_error(&old, e),
                })?;
                // Agent profiles follow the rename.
                agents
                    .cascade_rename(&old, &new)
                    .map(|_| ())
                    .map_err(|e| SettingsError::Io(format!("{e:?}")))
            })
            .await?;
        }
        if profiles::canonical(&name) != profiles::canonical(&new_name) {
            self.retarget_active(&name, Some(new_name)).await?;
        }
        Ok(())
    }

    async fn retarget_active(&self, old: &str, new: Option<String>) -> Result<(), SettingsError> {
        let current = self.settings().await?.active_profile;
        if current.as_deref().map(profiles::canonical) != Some(profiles::canonical(old)) {
            return Ok(());
        }
        self.modify_settings(move |s, _| {
            s.active_profile = new.map(|n| profiles::canonical(&n).to_string());
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Applies profile `name` to the agent settings (unless they are ACP's) and marks it
    /// active; returns whether the LLM was applied.
    pub async fn activate_profile(&self, name: &str) -> Result<bool, SettingsError> {
        let llm = self.profile_llm(name).await?;
        let canonical = profiles::canonical(name).to_string();
        let mut applied = false;
        let settings = self
            .modify_settings(move |s, _| {
                if s.agent_settings["agent_kind"] != "acp" {
                    s.set_llm(llm);
                }
                s.active_profile = Some(canonical);
                Ok(())
            })
            .await?;
        if settings.agent_settings["agent_kind"] != "acp" {
            applied = true;
        }
        Ok(applied)
    }
}

fn invalid_secret_name() -> SettingsError {
    SettingsError::Invalid(
        "Invalid secret name format. Must start with a letter, contain only letters, \
         numbers, and underscores, and be 1-64 characters long."
            .into(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settings_survive_a_new_service_and_a_wrong_key_refuses_writes() {
        let dir = tempfile::tempdir().unwrap();
        let service = Arc::new(SettingsService::new(
            dir.path().to_path_buf(),
            Some("key-1"),
        ));
        let update = SettingsUpdate::from_json(
            &json!({"agent_settings_diff": {"llm": {"model": "m", "api_key": "sk-9"}}}),
        );
        let answer = service.update(update).await.unwrap();
        assert_eq!(answer["agent_settings"]["llm"]["api_key"], MASK);
        let raw = std::fs::read_to_string(dir.path().join("settings.json")).unwrap();
        assert!(!raw.contains("sk-9"));

        let again = SettingsService::new(dir.path().to_path_buf(), Some("key-1"));
        let shown = again.settings_response(Expose::Plaintext).await.unwrap();
        assert_eq!(shown["agent_settings"]["llm"]["api_key"], "sk-9");

        let wrong = Arc::new(SettingsService::new(
            dir.path().to_path_buf(),
            Some("key-2"),
        ));
        let shown = wrong.settings_response(Expose::Plaintext).await.unwrap();
        assert!(shown["agent_settings"]["llm"]["api_key"].is_null());
        let update = SettingsUpdate::from_json(&json!({"misc_settings_diff": {"a": 1}}));
        assert!(matches!(
            wrong.update(update).await,
            Err(SettingsError::KeyMismatch { conflict: true, .. })
        ));
        let raw_after = std::fs::read_to_string(dir.path().join("settings.json")).unwrap();
        assert_eq!(raw, raw_after);
    }

    #[tokio::test]
    async fn activating_a_profile_applies_its_llm() {
        let dir = tempfile::tempdir().unwrap();
        let service = SettingsService::new(dir.path().to_path_buf(), None);
        let llm = json!({"model": "openai/fast", "api_key": "sk-f"});
        service
            .save_profile("fast".into(), llm, true)
            .await
            .unwrap();
        assert!(service.activate_profile("fast").await.unwrap());
        let s = service.settings().await.unwrap();
        assert_eq!(s.active_profile.as_deref(), Some("fast"));
        assert_eq!(s.agent_settings["llm"]["model"], "openai/fast");
        service
            .rename_profile("fast".into(), "quick".into())
            .await
            .unwrap();
        assert_eq!(
            service.settings().await.unwrap().active_profile.as_deref(),
            Some("quick")
        );
        service.delete_profile("quick".into()).await.unwrap();
        assert_eq!(service.settings().await.unwrap().active_profile, None);
    }
}
