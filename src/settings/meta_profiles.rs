//! Meta-profiles: model-routing configurations (`meta-profiles/<name>.json`) whose models are
//! names of saved LLM profiles, as the reference's `MetaProfileStore` keeps them. The active
//! one is `active_meta_profile` of `settings.json`, mirrored into the OpenHands agent settings
//! (`active_meta_profile`, `enable_classify_and_switch_llm_tool`, `meta_profile`).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};

use super::profiles::canonical;
use super::store::{read_json, write_json, Read};
use super::{SettingsError, SettingsService};
use crate::schema::ValidationIssue;

/// Most meta-profiles a server keeps (creating one more answers 409).
pub const MAX_META_PROFILES: usize = 50;

/// What a meta-profile store operation can fail with.
#[derive(Debug)]
pub enum MetaError {
    LimitReached,
    Corrupt(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for MetaError {
    fn from(e: std::io::Error) -> Self {
        MetaError::Io(e)
    }
}

/// The `meta-profiles` directory.
#[derive(Debug, Clone)]
pub struct MetaProfileStore {
    dir: PathBuf,
}

/// Validates a `MetaProfile` (issues located under `loc`); `routable` also refuses one with
/// neither classes nor a prompt template, as saving does.
pub fn validate(
    body: &Value,
    loc: &[Value],
    routable: bool,
) -> Result<Value, Vec<ValidationIssue>> {
    let meta = crate::schema::validate("MetaProfile", body, loc)?;
    let value_error = |msg: &str| {
        vec![ValidationIssue {
            kind: "value_error".into(),
            loc: loc.to_vec(),
            msg: format!("Value error, {msg}"),
            input: body.clone(),
        }]
    };
    if let Some(template) = meta["prompt_template"].as_str() {
        let has_slot = regex::Regex::new(r"\{\{\s*instance_text\s*\}\}")
            .map(|re| re.is_match(template))
            .unwrap_or(true);
        if !has_slot {
            return Err(value_error(
                "Direct-routing meta-profiles must include {{ instance_text }} in prompt_template.",
            ));
        }
        if meta["classes"].as_array().is_some_and(|c| !c.is_empty()) {
            return Err(value_error(
                "Direct-routing meta-profiles cannot also define classes.",
            ));
        }
    }
    let no_route =
        meta["classes"].as_array().is_none_or(Vec::is_empty) && meta["prompt_template"].is_null();
    if routable && no_route {
        return Err(value_error(
            "A meta-profile needs either classes or a prompt_template to route.",
        ));
    }
    Ok(meta)
}

impl MetaProfileStore {
    /// The store in `dir` (created on first save).
    pub fn new(dir: PathBuf) -> Self {
        MetaProfileStore { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.json", canonical(name)))
    }

    /// Stored names, alphabetically.
    pub fn names(&self) -> Result<Vec<String>, MetaError> {
        Ok(super::store::json_names(&self.dir)?)
    }

    /// The meta-profile `name`, or `None` when there is none.
    pub fn load(&self, name: &str) -> Result<Option<Value>, MetaError> {
        match read_json(&self.path(name))? {
            Read::Missing => Ok(None),
            Read::Corrupt => Err(MetaError::Corrupt(format!(
                "Failed to load meta-profile `{name}`: not JSON"
            ))),
            Read::Json(data) => validate(&data, &[], false).map(Some).map_err(|issues| {
                let why = issues.first().map(|i| i.msg.clone()).unwrap_or_default();
                MetaError::Corrupt(format!("Failed to load meta-profile `{name}`: {why}"))
            }),
        }
    }

    /// `MetaProfileInfo` of every readable meta-profile.
    pub fn summaries(&self) -> Result<Vec<Value>, MetaError> {
        let mut out = Vec::new();
        for name in self.names()? {
            match read_json(&self.path(&name))? {
                Read::Json(data) if data.is_object() => out.push(json!({
                    "name": name,
                    "classifier_model": data.get("classifier_model").cloned().unwrap_or(Value::Null),
                    "num_classes": data["classes"].as_array().map_or(0, Vec::len),
                })),
                _ => tracing::warn!(meta_profile = %name, "skipping an unreadable meta-profile"),
            }
        }
        Ok(out)
    }

    /// Saves `meta` as `name` (409 past the limit when it is new).
    pub fn save(&self, name: &str, meta: &Value) -> Result<(), MetaError> {
        let path = self.path(name);
        if !path.exists() && self.names()?.len() >= MAX_META_PROFILES {
            return Err(MetaError::LimitReached);
        }
        write_json(&path, meta).map_err(MetaError::Io)
    }

    /// Deletes `name`; a missing one is no error.
    pub fn delete(&self, name: &str) -> Result<(), MetaError> {
        Ok(super::store::remove_if_exists(&self.path(name))?)
    }
}

fn meta_error(e: MetaError) -> SettingsError {
    match e {
        MetaError::LimitReached => SettingsError::Conflict(format!(
            "Meta-profile limit reached ({MAX_META_PROFILES}). Delete a meta-profile before saving a new one."
        )),
        MetaError::Corrupt(m) => SettingsError::BadRequest(m),
        MetaError::Io(e) => SettingsError::Io(e.to_string()),
    }
}

fn not_found(name: &str) -> SettingsError {
    SettingsError::NotFound(format!("Meta-profile '{name}' not found"))
}

impl SettingsService {
    pub(super) fn meta_store(&self) -> MetaProfileStore {
        MetaProfileStore::new(self.dir.join("meta-profiles"))
    }

    async fn with_meta<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(MetaProfileStore) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, SettingsError> {
        let store = self.meta_store();
        tokio::task::spawn_blocking(move || f(store))
            .await
            .map_err(|e| SettingsError::Io(e.to_string()))?
            .map_err(meta_error)
    }

    /// `GET /api/meta-profiles`.
    pub async fn list_meta_profiles(self: &Arc<Self>) -> Result<Value, SettingsError> {
        let list = self.with_meta(|s| s.summaries()).await?;
        let active = self.settings().await?.active_meta_profile;
        Ok(json!({"meta_profiles": list, "active_meta_profile": active}))
    }

    /// The meta-profile `name` (404 when absent).
    pub async fn meta_profile(self: &Arc<Self>, name: &str) -> Result<Value, SettingsError> {
        let n = name.to_string();
        self.with_meta(move |s| s.load(&n))
            .await?
            .ok_or_else(|| not_found(name))
    }

    /// Saves a validated meta-profile.
    pub async fn save_meta_profile(
        self: &Arc<Self>,
        name: &str,
        meta: Value,
    ) -> Result<(), SettingsError> {
        let _guard = self.lock.lock().await;
        let n = name.to_string();
        self.with_meta(move |s| s.save(&n, &meta)).await
    }

    /// Deletes a meta-profile (idempotent); clears the active pointer (and the agent's copy)
    /// when it named it.
    pub async fn delete_meta_profile(self: &Arc<Self>, name: &str) -> Result<(), SettingsError> {
        {
            let _guard = self.lock.lock().await;
            let n = name.to_string();
            self.with_meta(move |s| s.delete(&n)).await?;
        }
        if self.settings().await?.active_meta_profile.as_deref() != Some(name) {
            return Ok(());
        }
        self.modify_settings(|s, _| {
            s.active_meta_profile = None;
            if let Some(agent) = s.agent_settings.as_object_mut() {
                if agent.contains_key("active_meta_profile") {
                    agent.insert("active_meta_profile".into(), Value::Null);
                    agent.insert("enable_classify_and_switch_llm_tool".into(), json!(false));
                    agent.insert("meta_profile".into(), Value::Null);
                }
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Records `name` as the active meta-profile and gives the agent settings its routing;
    /// answers false (changing nothing) when the agent settings cannot route (ACP).
    pub async fn activate_meta_profile(
        self: &Arc<Self>,
        name: &str,
    ) -> Result<bool, SettingsError> {
        let meta = self.meta_profile(name).await?;
        let n = name.to_string();
        let settings = self
            .modify_settings(move |s, _| {
                s.apply_active_meta_profile(Some(n), Some(meta));
                Ok(())
            })
            .await
            .map_err(|e| match e {
                SettingsError::KeyMismatch { .. } => SettingsError::Conflict(
                    "Settings file is corrupted or encrypted with a different key".into(),
                ),
                SettingsError::Io(_) => SettingsError::Io("Failed to activate meta-profile".into()),
                e => e,
            })?;
        Ok(settings.active_meta_profile.as_deref() == Some(name))
    }

    /// Checks that the pointers of a settings update name stored profiles (404 otherwise).
    pub(super) async fn check_pointer_targets(
        self: &Arc<Self>,
        agent_profile_id: Option<&str>,
        meta_profile: Option<&str>,
    ) -> Result<(), SettingsError> {
        if let Some(id) = agent_profile_id {
            if self.agent_profile_by_id(id).await?.is_none() {
                return Err(SettingsError::NotFound(format!(
                    "Agent profile with id '{id}' not found"
                )));
            }
        }
        if let Some(name) = meta_profile {
            self.meta_profile(name).await?;
        }
        Ok(())
    }
}
