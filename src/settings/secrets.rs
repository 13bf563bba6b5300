//! `secrets.json`: named custom secrets, each value sealed with the server's key
//! (`{"custom_secrets": {NAME: {"name", "secret", "description"}}}`, as the reference writes it).

use serde_json::{json, Map, Value};

use super::document::{seal_value, unseal_value, UndecryptableSecret};
use crate::crypto::Cipher;

/// Whether `name` is a valid secret name: a letter, then letters, digits or `_`; 1–64 chars.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.len() <= 64
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One secret's name and description (never its value), as listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SecretItem {
    pub name: String,
    pub description: Option<String>,
}

/// The secrets file as read: its entries, and the rest of its JSON (other keys, such as the
/// reference's `_credential_versions`, are kept when it is rewritten).
#[derive(Debug, Clone, Default)]
pub struct SecretsFile {
    doc: Map<String, Value>,
    entries: Map<String, Value>,
}

impl SecretsFile {
    /// Wraps a stored document (`None` for no file yet).
    pub fn new(stored: Option<Value>) -> Self {
        let mut doc = match stored {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        let entries = match doc.remove("custom_secrets") {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        };
        SecretsFile { doc, entries }
    }

    fn entries(&self) -> &Map<String, Value> {
        &self.entries
    }

    fn entries_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.entries
    }

    /// Names and descriptions, in the stored order.
    pub fn list(&self) -> Vec<SecretItem> {
        self.entries()
            .iter()
            .map(|(name, e)| SecretItem {
                name: name.clone(),
                description: e["description"].as_str().map(str::to_string),
            })
            .collect()
    }

    /// The plaintext of `name`: `Ok(None)` when absent, `Err` when stored under another key.
    pub fn value(
        &self,
        cipher: Option<&Cipher>,
        name: &str,
    ) -> Result<Option<String>, UndecryptableSecret> {
        match self.entries().get(name).and_then(|e| e["secret"].as_str()) {
            None => Ok(None),
            Some(stored) => unseal_value(cipher, stored).map(Some),
        }
    }

    /// Fails when any stored value cannot be decrypted: a rewrite would keep values nobody
    /// can read next to new ones, so writes refuse (the reference does the same).
    pub fn check_readable(&self, cipher: Option<&Cipher>) -> Result<(), UndecryptableSecret> {
        for e in self.entries().values() {
            if let Some(stored) = e["secret"].as_str() {
                unseal_value(cipher, stored)?;
            }
        }
        Ok(())
    }

    /// Inserts or replaces `name`.
    pub fn set(
        &mut self,
        cipher: Option<&Cipher>,
        name: &str,
        value: &str,
        description: Option<&str>,
    ) {
        self.entries_mut().insert(
            name.to_string(),
            json!({"name": name, "secret": seal_value(cipher, value), "description": description}),
        );
    }

    /// Removes `name`; false when it was not there.
    pub fn remove(&mut self, name: &str) -> bool {
        self.entries_mut().remove(name).is_some()
    }

    /// The document to store.
    pub fn to_stored(&self) -> Value {
        let mut doc = self.doc.clone();
        doc.insert("custom_secrets".into(), Value::Object(self.entries.clone()));
        Value::Object(doc)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_reference_pattern() {
        assert!(valid_name("GITHUB_TOKEN"));
        assert!(valid_name("a"));
        assert!(!valid_name("1abc"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(65)));
    }

    #[test]
    fn values_are_sealed_and_other_keys_cannot_read_them() {
        let key = Cipher::from_key("one").unwrap();
        let mut file = SecretsFile::new(None);
        file.set(Some(&key), "TOKEN", "ghp_x", Some("gh"));
        assert!(!file.to_stored().to_string().contains("ghp_x"));
        assert_eq!(
            file.value(Some(&key), "TOKEN").unwrap().as_deref(),
            Some("ghp_x")
        );
        let other = Cipher::from_key("two").unwrap();
        assert!(file.value(Some(&other), "TOKEN").is_err());
        assert!(file.check_readable(Some(&other)).is_err());
        assert_eq!(
            file.list(),
            [SecretItem {
                name: "TOKEN".into(),
                description: Some("gh".into())
            }]
        );
        assert!(file.remove("TOKEN"));
        assert!(!file.remove("TOKEN"));
    }
}
