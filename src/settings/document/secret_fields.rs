//! The secret fields of agent settings and their three views: plaintext in memory, sealed
//! under the server's key on disk, masked (or as asked) in answers.

use serde_json::Value;

use crate::crypto::{Cipher, MASK};

/// Secret string fields of an LLM object.
pub const LLM_SECRET_FIELDS: [&str; 4] = [
    "api_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
];

/// How secret fields appear in an answer (`X-Expose-Secrets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expose {
    /// `**********` for a set secret, `null` for an unset one (no header).
    Redacted,
    /// Fernet tokens under the server's key (`encrypted`; needs a key).
    Encrypted,
    /// The values themselves (`plaintext`).
    Plaintext,
}

/// Applies `f` to every secret string of agent settings: LLM secret fields, the critic key,
/// and the `env`/`headers` values of MCP servers.
pub(super) fn map_secrets(agent: &mut Value, f: &mut dyn FnMut(&str) -> Value) {
    for field in LLM_SECRET_FIELDS {
        if let Some(Value::String(s)) = agent["llm"].get(field).cloned() {
            agent["llm"][field] = f(&s);
        }
    }
    if let Some(Value::String(s)) = agent["verification"].get("critic_api_key").cloned() {
        agent["verification"]["critic_api_key"] = f(&s);
    }
    if let Some(servers) = agent.get_mut("mcp_config").and_then(Value::as_object_mut) {
        for server in servers.values_mut() {
            for map in ["env", "headers"] {
                if let Some(values) = server.get_mut(map).and_then(Value::as_object_mut) {
                    for v in values.values_mut() {
                        if let Value::String(s) = v.clone() {
                            *v = f(&s);
                        }
                    }
                }
            }
        }
    }
}

/// A stored secret could not be decrypted with the server's key.
#[derive(Debug, Clone, Copy)]
pub struct UndecryptableSecret;

/// Turns one stored secret into plaintext: a token is decrypted (`Err` when it cannot be);
/// anything else was stored without a key and is the value itself.
pub fn unseal_value(cipher: Option<&Cipher>, stored: &str) -> Result<String, UndecryptableSecret> {
    if stored.starts_with("gAAAAA") {
        return cipher
            .and_then(|c| c.decrypt(stored))
            .ok_or(UndecryptableSecret);
    }
    Ok(stored.to_string())
}

/// The on-disk form of one secret: a token under the key, the value itself without a key
/// (as the reference stores it; the file is 0600).
pub fn seal_value(cipher: Option<&Cipher>, plain: &str) -> Value {
    match cipher {
        Some(c) if plain != MASK => Value::String(c.encrypt(plain)),
        _ => Value::String(plain.to_string()),
    }
}

/// The answer form of one secret.
pub fn expose_value(cipher: Option<&Cipher>, plain: &str, mode: Expose) -> Value {
    match mode {
        Expose::Redacted => Value::String(MASK.into()),
        Expose::Plaintext => Value::String(plain.into()),
        Expose::Encrypted => seal_value(cipher, plain),
    }
}
