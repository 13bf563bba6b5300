//! LLM provider connections: a shared `api_key` (+ optional `base_url`) that LLM profiles
//! reference by `provider_connection_id`, kept in one file
//! (`provider-connections/provider_connections.json`, keys sealed with the server's key) as
//! the reference's `ProviderConnectionStore` keeps them. A linked profile stores no credential
//! of its own: the connection's are applied when the profile is loaded, so rotating a key here
//! reaches every profile at its next use.
//!
//! Blocking file I/O: call from `spawn_blocking` (the [`SettingsService`] methods do).

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};

use super::document::{seal_value, unseal_value};
use super::store::{read_json, write_json, Read};
use super::{SettingsError, SettingsService};
use crate::crypto::{Cipher, MASK};
use crate::schema::ValidationIssue;

/// Most connections a server keeps.
pub const MAX_CONNECTIONS: usize = 64;

/// One stored connection, its key in the clear (`None` when unset or unreadable).
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: String,
    pub display_name: String,
    pub provider: String,
    pub api_key: Option<String>,
    pub base_url: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Connection {
    /// `ProviderConnectionResponse` (never the key).
    pub fn response(&self) -> Value {
        json!({
            "id": self.id, "display_name": self.display_name, "provider": self.provider,
            "base_url": self.base_url, "created_at": self.created_at,
            "updated_at": self.updated_at, "api_key_set": self.api_key.is_some(),
        })
    }

    fn stored(&self, cipher: Option<&Cipher>) -> Value {
        json!({
            "id": self.id, "display_name": self.display_name, "provider": self.provider,
            "api_key": self.api_key.as_deref().map(|k| seal_value(cipher, k)),
            "base_url": self.base_url, "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    fn from_stored(v: &Value, cipher: Option<&Cipher>) -> Option<Connection> {
        let text = |k: &str| v[k].as_str().map(str::to_string);
        let api_key = text("api_key")
            .and_then(|k| unseal_value(cipher, &k).ok())
            .filter(|k| !k.trim().is_empty() && k != MASK);
        Some(Connection {
            id: text("id")?,
            display_name: text("display_name")?,
            provider: text("provider").unwrap_or_else(|| "custom".into()),
            api_key,
            base_url: text("base_url"),
            created_at: v["created_at"].as_i64().unwrap_or_default(),
            updated_at: v["updated_at"].as_i64().unwrap_or_default(),
        })
    }
}

/// The connections file.
#[derive(Debug, Clone)]
pub struct ConnectionStore {
    path: PathBuf,
}

impl ConnectionStore {
    /// The store under the persistence directory `dir`.
    pub fn new(dir: &std::path::Path) -> Self {
        ConnectionStore {
            path: dir
                .join("provider-connections")
                .join("provider_connections.json"),
        }
    }

    /// Every connection; a file that is not readable fails (it is never overwritten).
    pub fn list(&self, cipher: Option<&Cipher>) -> Result<Vec<Connection>, SettingsError> {
        let unreadable = |why: &str| {
            SettingsError::BadRequest(format!("Provider connections file is unreadable: {why}"))
        };
        match read_json(&self.path).map_err(|e| SettingsError::Io(e.to_string()))? {
            Read::Missing => Ok(Vec::new()),
            Read::Corrupt => Err(unreadable("not JSON")),
            Read::Json(v) => Ok(v["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| Connection::from_stored(c, cipher))
                .collect()),
        }
    }

    /// The connection `id`.
    pub fn get(
        &self,
        cipher: Option<&Cipher>,
        id: &str,
    ) -> Result<Option<Connection>, SettingsError> {
        Ok(self.list(cipher)?.into_iter().find(|c| c.id == id))
    }

    fn write(&self, cipher: Option<&Cipher>, all: &[Connection]) -> Result<(), SettingsError> {
        let doc = json!({
            "schema_version": 1,
            "connections": all.iter().map(|c| c.stored(cipher)).collect::<Vec<_>>(),
        });
        write_json(&self.path, &doc).map_err(|e| SettingsError::Io(e.to_string()))
    }

    /// Applies connection credentials to an LLM that references one (its `api_key` and
    /// `base_url` win); a reference to a missing connection fails unless the LLM has a key.
    pub fn resolve(
        &self,
        cipher: Option<&Cipher>,
        owner: &str,
        llm: &mut Value,
    ) -> Result<(), SettingsError> {
        let Some(id) = llm["provider_connection_id"].as_str().map(str::to_string) else {
            return Ok(());
        };
        match self.get(cipher, &id)? {
            Some(c) => {
                llm["base_url"] = json!(c.base_url);
                if let Some(key) = c.api_key {
                    llm["api_key"] = json!(key);
                }
                Ok(())
            }
            None if super::ProfileStore::api_key_set(llm) => Ok(()),
            None => Err(SettingsError::Invalid(format!(
                "{owner} references provider connection '{id}', which does not exist. \
                 Update the profile or recreate the connection."
            ))),
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn not_found(id: &str) -> SettingsError {
    SettingsError::NotFound(format!("Provider connection '{id}' not found"))
}

/// Checks a key given in a request: a real one, not blank or the mask.
fn key_issue(body: &Value) -> Option<ValidationIssue> {
    let key = body.get("api_key")?.as_str()?;
    (key.trim().is_empty() || key == MASK).then(|| {
        ValidationIssue::new(
            "value_error",
            &["body", "api_key"],
            "Value error, api_key must be a real key, not blank or redacted",
        )
        .with_input(key)
    })
}

/// Position of the field an issue is about in the model (pydantic reports in field order).
fn field_rank(model: &str, loc: &[Value]) -> usize {
    let names = crate::schema::property_names(model);
    loc.get(1)
        .and_then(Value::as_str)
        .and_then(|f| names.iter().position(|n| n == f))
        .unwrap_or(names.len())
}

/// Validates a `ProviderConnectionCreateRequest` / `ProviderConnectionUpdateRequest`.
pub fn validate_request(model: &str, body: &Value) -> Result<Value, Vec<ValidationIssue>> {
    let (checked, mut issues) = match crate::schema::validate(model, body, &[json!("body")]) {
        Ok(v) => (v, Vec::new()),
        Err(issues) => (Value::Null, issues),
    };
    let key_loc = [json!("body"), json!("api_key")];
    if !issues.iter().any(|i| i.loc == key_loc) {
        issues.extend(key_issue(body));
    }
    if !issues.is_empty() {
        issues.sort_by_key(|i| field_rank(model, &i.loc));
        return Err(issues);
    }
    if model == "ProviderConnectionUpdateRequest" {
        for field in ["display_name", "provider"] {
            if body.get(field).is_some_and(Value::is_null) {
                return Err(vec![ValidationIssue::new(
                    "value_error",
                    &["body"],
                    format!("Value error, {field} cannot be set to null"),
                )
                .with_input(body.clone())]);
            }
        }
    }
    Ok(checked)
}

impl SettingsService {
    pub(super) fn connections(&self) -> ConnectionStore {
        ConnectionStore::new(&self.dir)
    }

    async fn with_connections<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&SettingsService, ConnectionStore, Option<&Cipher>) -> Result<T, SettingsError>
            + Send
            + 'static,
    ) -> Result<T, SettingsError> {
        let _guard = self.lock.lock().await;
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let cipher = me.cipher();
            f(&me, me.connections(), cipher.as_deref())
        })
        .await
        .map_err(|e| SettingsError::Io(e.to_string()))?
    }

    /// `GET /api/llm/provider-connections`.
    pub async fn list_connections(self: &Arc<Self>) -> Result<Value, SettingsError> {
        self.with_connections(|_, store, cipher| {
            Ok(Value::Array(
                store
                    .list(cipher)?
                    .iter()
                    .map(Connection::response)
                    .collect(),
            ))
        })
        .await
    }

    /// Creates a connection from a validated request.
    pub async fn create_connection(self: &Arc<Self>, body: Value) -> Result<Value, SettingsError> {
        self.with_connections(move |_, store, cipher| {
            let mut all = store.list(cipher)?;
            if all.len() >= MAX_CONNECTIONS {
                return Err(SettingsError::Conflict(format!(
                    "Provider connection limit reached ({MAX_CONNECTIONS}). Delete one before adding another."
                )));
            }
            let t = now();
            let text = |k: &str| body[k].as_str().map(str::to_string);
            let c = Connection {
                id: uuid::Uuid::new_v4().simple().to_string(),
                display_name: text("display_name").unwrap_or_default(),
                provider: text("provider").unwrap_or_else(|| "custom".into()),
                api_key: text("api_key"),
                base_url: text("base_url"),
                created_at: t,
                updated_at: t,
            };
            all.push(c.clone());
            store.write(cipher, &all)?;
            tracing::info!(connection_id = %c.id, "created an LLM provider connection");
            Ok(c.response())
        })
        .await
    }

    /// Updates the fields a validated request sets (a key can be rotated, never cleared).
    pub async fn update_connection(
        self: &Arc<Self>,
        id: &str,
        body: Value,
    ) -> Result<Value, SettingsError> {
        let id = id.to_string();
        self.with_connections(move |_, store, cipher| {
            let set = body.as_object().cloned().unwrap_or_default();
            if set.is_empty() {
                return Err(SettingsError::Invalid(
                    "Provide at least one provider connection field to update".into(),
                ));
            }
            let mut all = store.list(cipher)?;
            let Some(c) = all.iter_mut().find(|c| c.id == id) else {
                return Err(not_found(&id));
            };
            if set.get("api_key").is_some_and(Value::is_null) {
                return Err(SettingsError::Invalid(
                    "api_key cannot be cleared; provide a new key to rotate it".into(),
                ));
            }
            let text = |k: &str| set.get(k).and_then(Value::as_str).map(str::to_string);
            if let Some(v) = text("display_name") {
                c.display_name = v;
            }
            if let Some(v) = text("provider") {
                c.provider = v;
            }
            if set.contains_key("base_url") {
                c.base_url = text("base_url");
            }
            if let Some(v) = text("api_key") {
                c.api_key = Some(v);
            }
            c.updated_at = now();
            let answer = c.response();
            store.write(cipher, &all)?;
            Ok(answer)
        })
        .await
    }

    /// Deletes a connection nothing references any more (409 naming the references).
    pub async fn delete_connection(self: &Arc<Self>, id: &str) -> Result<Value, SettingsError> {
        let id = id.to_string();
        self.with_connections(move |me, store, cipher| {
            let mut all = store.list(cipher)?;
            let Some(pos) = all.iter().position(|c| c.id == id) else {
                return Err(not_found(&id));
            };
            let profiles: Vec<String> = me
                .profiles
                .list_raw()
                .into_iter()
                .filter(|(_, data)| data["provider_connection_id"].as_str() == Some(id.as_str()))
                .map(|(name, _)| name)
                .collect();
            let settings = SettingsService::load_settings(&me.settings_path(), cipher, false)?;
            let active = settings.agent_settings["agent_kind"] == "openhands"
                && settings.agent_settings["llm"]["provider_connection_id"].as_str() == Some(id.as_str());
            let mut reasons = Vec::new();
            if !profiles.is_empty() {
                reasons.push(format!("referenced by LLM profile(s): {}", profiles.join(", ")));
            }
            if active {
                reasons.push("referenced by the active agent settings".to_string());
            }
            if !reasons.is_empty() {
                return Err(SettingsError::Conflict(format!(
                    "Provider connection cannot be deleted while it is {}. Update those references before deleting it.",
                    reasons.join(" and ")
                )));
            }
            let gone = all.remove(pos);
            store.write(cipher, &all)?;
            let mut answer = gone.response();
            answer["api_key_set"] = json!(false);
            Ok(answer)
        })
        .await
    }
}
