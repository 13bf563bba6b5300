//! The settings document: the reference's defaults, validation of a merged document against
//! the schema the server serves (`/api/settings/agent-schema`), the deep merge of diffs, and the
//! three views of its secret fields (plaintext in memory, sealed on disk, masked in answers).
//!
//! This file holds [`Settings`] as loaded, stored and answered; `update.rs` applies an update's
//! diffs, `defaults.rs` the defaults and the merge, `validate.rs` the schema checks,
//! `secret_fields.rs` the secret fields and their three views.

mod defaults;
mod secret_fields;
mod update;
mod validate;

use serde_json::{json, Value};

use self::defaults::{defaults, fill_defaults};
use self::secret_fields::map_secrets;
use crate::crypto::Cipher;

pub use self::defaults::{deep_merge, default_llm, variant_defaults};
pub use self::secret_fields::{
    expose_value, seal_value, unseal_value, Expose, UndecryptableSecret, LLM_SECRET_FIELDS,
};
pub use self::validate::{validate_llm, validate_mcp_server, FieldError};

/// Version of the persisted `settings.json` layout the reference writes.
pub const PERSISTED_SCHEMA_VERSION: u64 = 6;

/// `GET /api/settings/agent-schema` of the reference, which validation follows.
pub const AGENT_SCHEMA: &str = include_str!("../data/agent_schema.json");
/// `GET /api/settings/conversation-schema` of the reference.
pub const CONVERSATION_SCHEMA: &str = include_str!("../data/conversation_schema.json");

/// The persisted settings, secrets in plaintext (a secret that could not be decrypted is null).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub agent_settings: Value,
    pub conversation_settings: Value,
    pub active_profile: Option<String>,
    pub active_agent_profile_id: Option<String>,
    pub active_meta_profile: Option<String>,
    pub misc_settings: Value,
}

impl Default for Settings {
    fn default() -> Self {
        let mut agent = defaults()["agent_settings"].clone();
        agent["agent_context"]["current_datetime"] = json!(crate::util::utc_timestamp());
        Settings {
            agent_settings: agent,
            conversation_settings: defaults()["conversation_settings"].clone(),
            active_profile: None,
            active_agent_profile_id: None,
            active_meta_profile: None,
            misc_settings: json!({}),
        }
    }
}

fn opt_string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

impl Settings {
    /// Reads a stored document: missing fields take their defaults; secrets are decrypted.
    /// With `strict`, a secret that cannot be decrypted fails the load (read-modify-write must
    /// not overwrite it); otherwise it reads as null.
    pub fn from_stored(
        stored: &Value,
        cipher: Option<&Cipher>,
        strict: bool,
    ) -> Result<Settings, UndecryptableSecret> {
        let mut s = Settings::default();
        if let Some(agent) = stored.get("agent_settings").filter(|v| v.is_object()) {
            let mut agent = agent.clone();
            let kind = agent["agent_kind"]
                .as_str()
                .unwrap_or("openhands")
                .to_string();
            fill_defaults(&mut agent, &variant_defaults(&kind));
            s.agent_settings = agent;
        }
        if let Some(conv) = stored
            .get("conversation_settings")
            .filter(|v| v.is_object())
        {
            let mut conv = conv.clone();
            fill_defaults(&mut conv, &s.conversation_settings);
            s.conversation_settings = conv;
        }
        s.active_profile = opt_string(&stored["active_profile"]);
        s.active_agent_profile_id = opt_string(&stored["active_agent_profile_id"]);
        s.active_meta_profile = opt_string(&stored["active_meta_profile"]);
        if stored["misc_settings"].is_object() {
            s.misc_settings = stored["misc_settings"].clone();
        }
        let mut failed = false;
        map_secrets(
            &mut s.agent_settings,
            &mut |v| match unseal_value(cipher, v) {
                Ok(p) => Value::String(p),
                Err(_) => {
                    failed = true;
                    Value::Null
                }
            },
        );
        if failed && strict {
            return Err(UndecryptableSecret);
        }
        Ok(s)
    }

    /// The document as stored in `settings.json`.
    pub fn to_stored(&self, cipher: Option<&Cipher>) -> Value {
        let mut agent = self.agent_settings.clone();
        map_secrets(&mut agent, &mut |v| seal_value(cipher, v));
        json!({
            "schema_version": PERSISTED_SCHEMA_VERSION,
            "agent_settings": agent,
            "conversation_settings": self.conversation_settings,
            "active_profile": self.active_profile,
            "active_agent_profile_id": self.active_agent_profile_id,
            "active_meta_profile": self.active_meta_profile,
            "misc_settings": self.misc_settings,
        })
    }

    /// Whether the LLM has a non-empty API key.
    pub fn llm_api_key_is_set(&self) -> bool {
        self.agent_settings["llm"]["api_key"]
            .as_str()
            .is_some_and(|k| !k.trim().is_empty())
    }

    /// `SettingsResponse` with secrets shown as `mode` says.
    pub fn response(&self, cipher: Option<&Cipher>, mode: Expose) -> Value {
        let mut agent = self.agent_settings.clone();
        map_secrets(&mut agent, &mut |v| expose_value(cipher, v, mode));
        json!({
            "agent_settings": agent,
            "conversation_settings": self.conversation_settings,
            "llm_api_key_is_set": self.llm_api_key_is_set(),
            "active_profile": self.active_profile,
            "active_agent_profile_id": self.active_agent_profile_id,
            "active_meta_profile": self.active_meta_profile,
            "misc_settings": self.misc_settings,
        })
    }

    /// Sets the active meta-profile and mirrors it into OpenHands agent settings (routing on
    /// while one is active; `meta`, when given, is its configuration). Agent settings that
    /// cannot route (ACP) clear the pointer instead.
    pub fn apply_active_meta_profile(&mut self, name: Option<String>, meta: Option<Value>) {
        if self.agent_settings["agent_kind"] != "openhands" {
            self.active_meta_profile = None;
            return;
        }
        if let Some(agent) = self.agent_settings.as_object_mut() {
            agent.insert("active_meta_profile".into(), json!(name));
            agent.insert(
                "enable_classify_and_switch_llm_tool".into(),
                json!(name.is_some()),
            );
            if let Some(meta) = meta {
                agent.insert("meta_profile".into(), meta);
            }
        }
        self.active_meta_profile = name;
    }

    /// Replaces the LLM with `llm` (a validated, complete LLM object).
    pub fn set_llm(&mut self, llm: Value) {
        self.agent_settings["llm"] = llm;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    use crate::crypto::MASK;

    #[test]
    fn secrets_are_sealed_on_disk_and_masked_in_answers() {
        let cipher = Cipher::from_key("k").unwrap();
        let mut s = Settings::default();
        let diff = json!({"llm": {"api_key": "sk-secret"}});
        s.apply_diffs(Some(&diff), None, None, Some(&cipher))
            .unwrap();
        let stored = s.to_stored(Some(&cipher));
        let token = stored["agent_settings"]["llm"]["api_key"].as_str().unwrap();
        assert!(token.starts_with("gAAAAA"));
        assert!(!stored.to_string().contains("sk-secret"));
        let back = Settings::from_stored(&stored, Some(&cipher), true).unwrap();
        assert_eq!(back.agent_settings["llm"]["api_key"], "sk-secret");
        let shown = back.response(Some(&cipher), Expose::Redacted);
        assert_eq!(shown["agent_settings"]["llm"]["api_key"], MASK);
        assert_eq!(shown["llm_api_key_is_set"], true);
        // A masked value sent back keeps the stored key.
        let mut again = back.clone();
        let diff = json!({"llm": {"api_key": MASK}});
        again
            .apply_diffs(Some(&diff), None, None, Some(&cipher))
            .unwrap();
        assert_eq!(again.agent_settings["llm"]["api_key"], "sk-secret");
        // Another key cannot read it: strict loads fail, lenient ones read null.
        let other = Cipher::from_key("other").unwrap();
        assert!(Settings::from_stored(&stored, Some(&other), true).is_err());
        let lenient = Settings::from_stored(&stored, Some(&other), false).unwrap();
        assert!(lenient.agent_settings["llm"]["api_key"].is_null());
    }
}
