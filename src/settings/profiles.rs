//! LLM profiles: `profiles/<name>.json`, one SDK `LLM` object each (fields that are not null,
//! secrets sealed or masked, `"schema_version": 1`), as the reference's profile store writes them.
//! Blocking file I/O: call from `spawn_blocking`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::document::{default_llm, seal_value, unseal_value, LLM_SECRET_FIELDS};
use crate::crypto::{Cipher, MASK};

/// Most profiles a server keeps (creating one more answers 409).
pub const MAX_PROFILES: usize = 50;

/// Whether `name` is a valid profile name (`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The store key a name addresses: `foo.json` is profile `foo`.
pub fn canonical(name: &str) -> &str {
    name.strip_suffix(".json").unwrap_or(name)
}

/// A profile as listed (`ProfileInfo`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ProfileInfo {
    pub name: String,
    pub model: Option<String>,
    pub base_url: Option<String>,
    pub provider_connection_id: Option<String>,
    pub provider_connection_broken: bool,
    pub api_key_set: bool,
}

/// What went wrong with a profile operation.
#[derive(Debug)]
pub enum ProfileError {
    NotFound,
    Exists,
    LimitReached,
    Corrupt(String),
    Io(std::io::Error),
}

impl From<std::io::Error> for ProfileError {
    fn from(e: std::io::Error) -> Self {
        ProfileError::Io(e)
    }
}

/// The profile directory.
#[derive(Debug, Clone)]
pub struct ProfileStore {
    dir: PathBuf,
}

fn has_key(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|k| !k.trim().is_empty() && k != MASK)
}

impl ProfileStore {
    /// The store in `dir` (created on first save).
    pub fn new(dir: PathBuf) -> Self {
        ProfileStore { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.json", canonical(name)))
    }

    fn names(&self) -> std::io::Result<Vec<String>> {
        super::store::json_names(&self.dir)
    }

    fn read(path: &Path) -> Result<Value, ProfileError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(ProfileError::NotFound),
            Err(e) => return Err(e.into()),
        };
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.is_object() => Ok(v),
            _ => Err(ProfileError::Corrupt(format!(
                "profile file {} is not a JSON object",
                path.display()
            ))),
        }
    }

    /// Every readable profile file as stored, by name.
    pub fn list_raw(&self) -> Vec<(String, Value)> {
        self.names()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|n| Self::read(&self.path(&n)).ok().map(|d| (n, d)))
            .collect()
    }

    /// Summaries of the valid profiles, by name; unreadable files are skipped.
    pub fn list(&self) -> Result<Vec<ProfileInfo>, ProfileError> {
        let mut out = Vec::new();
        for name in self.names()? {
            let Ok(data) = Self::read(&self.path(&name)) else {
                tracing::warn!(profile = %name, "skipping an unreadable LLM profile");
                continue;
            };
            let text = |k: &str| data[k].as_str().map(str::to_string);
            out.push(ProfileInfo {
                model: text("model"),
                base_url: text("base_url"),
                provider_connection_id: text("provider_connection_id"),
                provider_connection_broken: false,
                api_key_set: has_key(&data["api_key"]),
                name,
            });
        }
        Ok(out)
    }

    /// The complete LLM object of `name` with secrets decrypted (a secret under another key
    /// reads as null; a masked one as the mask).
    pub fn load(&self, cipher: Option<&Cipher>, name: &str) -> Result<Value, ProfileError> {
        let stored = Self::read(&self.path(name))?;
        let mut llm = default_llm();
        if let (Some(full), Some(given)) = (llm.as_object_mut(), stored.as_object()) {
            for (k, v) in given {
                if full.contains_key(k) {
                    full.insert(k.clone(), v.clone());
                }
            }
        }
        for field in LLM_SECRET_FIELDS {
            if let Some(s) = llm[field].as_str().map(str::to_string) {
                // A profile saved without secrets holds the mask: no key.
                llm[field] = match unseal_value(cipher, &s) {
                    Ok(plain) if plain != MASK => Value::String(plain),
                    _ => Value::Null,
                };
            }
        }
        Ok(llm)
    }

    /// Whether a loaded LLM has a usable key.
    pub fn api_key_set(llm: &Value) -> bool {
        has_key(&llm["api_key"])
    }

    /// Saves `llm` (complete and validated) as `name`, replacing one of that name; secrets are
    /// sealed with `include_secrets`, masked without.
    pub fn save(
        &self,
        cipher: Option<&Cipher>,
        name: &str,
        llm: &Value,
        include_secrets: bool,
    ) -> Result<(), ProfileError> {
        let path = self.path(name);
        if !path.exists() && self.names()?.len() >= MAX_PROFILES {
            return Err(ProfileError::LimitReached);
        }
        let mut out = Map::new();
        for (k, v) in llm.as_object().into_iter().flatten() {
            if v.is_null() {
                continue;
            }
            let v = match (LLM_SECRET_FIELDS.contains(&k.as_str()), v.as_str()) {
                (true, Some(s)) if include_secrets => seal_value(cipher, s),
                (true, Some(_)) => json!(MASK),
                _ => v.clone(),
            };
            out.insert(k.clone(), v);
        }
        if out.get("provider_connection_id").is_some() {
            out.remove("api_key");
            out.remove("base_url");
        }
        out.insert("schema_version".into(), json!(1));
        super::store::ensure_dir(&self.dir)?;
        let bytes =
            serde_json::to_vec_pretty(&Value::Object(out)).map_err(std::io::Error::other)?;
        crate::persist::write_atomic(&path, &bytes)?;
        Ok(())
    }

    /// Deletes `name`; deleting a missing profile succeeds (the reference is idempotent).
    pub fn delete(&self, name: &str) -> Result<(), ProfileError> {
        Ok(super::store::remove_if_exists(&self.path(name))?)
    }

    /// Renames `old` to `new` (a same-name rename checks that the profile exists).
    pub fn rename(&self, old: &str, new: &str) -> Result<(), ProfileError> {
        let from = self.path(old);
        if !from.exists() {
            return Err(ProfileError::NotFound);
        }
        if canonical(old) == canonical(new) {
            return Ok(());
        }
        let to = self.path(new);
        if to.exists() {
            return Err(ProfileError::Exists);
        }
        fs::rename(&from, &to)?;
        crate::persist::sync_dir(&self.dir);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_reference_pattern() {
        assert!(valid_name("fast"));
        assert!(valid_name("gpt-4o.mini_2"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(65)));
    }

    #[test]
    fn save_load_rename_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = ProfileStore::new(dir.path().join("profiles"));
        let key = Cipher::from_key("k").unwrap();
        let mut llm = default_llm();
        llm["model"] = json!("openai/gpt-4o");
        llm["api_key"] = json!("sk-1");
        store.save(Some(&key), "fast", &llm, true).unwrap();
        let raw = fs::read_to_string(dir.path().join("profiles/fast.json")).unwrap();
        assert!(!raw.contains("sk-1") && raw.contains("\"schema_version\": 1"));
        assert_eq!(store.load(Some(&key), "fast").unwrap()["api_key"], "sk-1");
        assert!(store.list().unwrap()[0].api_key_set);
        store.save(Some(&key), "bare", &llm, false).unwrap();
        assert!(!store.list().unwrap()[0].api_key_set); // "bare" sorts first
        assert!(matches!(
            store.rename("fast", "bare"),
            Err(ProfileError::Exists)
        ));
        store.rename("fast", "quick").unwrap();
        assert!(matches!(
            store.load(None, "fast"),
            Err(ProfileError::NotFound)
        ));
        store.delete("quick").unwrap();
        store.delete("quick").unwrap();
        assert_eq!(store.list().unwrap().len(), 1);
    }
}
