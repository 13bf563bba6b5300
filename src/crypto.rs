//! Secrets at rest and on the wire: Fernet tokens keyed like the reference
//! (`base64(sha256(OH_SECRET_KEY))`), and the three views of a secret field: plaintext in
//! memory, a token (or `**********` without a key) on disk, `null` in REST and `**********` on
//! the WebSocket.

use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The literal the reference writes for a secret it cannot (or will not) show.
pub const MASK: &str = "**********";

/// Field names holding secrets inside agent/LLM JSON.
const SECRET_FIELDS: [&str; 4] = [
    "api_key",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
];

/// A Fernet cipher derived from the server's secret key.
pub struct Cipher {
    fernet: fernet::Fernet,
}

impl std::fmt::Debug for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cipher(..)")
    }
}

impl Cipher {
    /// The cipher for `key` (any string), or `None` if the key cannot be used.
    pub fn from_key(key: &str) -> Option<Self> {
        let digest = Sha256::digest(key.as_bytes());
        let b64 = base64::engine::general_purpose::URL_SAFE.encode(digest);
        fernet::Fernet::new(&b64).map(|fernet| Cipher { fernet })
    }

    /// Encrypts `plain` into a Fernet token.
    pub fn encrypt(&self, plain: &str) -> String {
        self.fernet.encrypt(plain.as_bytes())
    }

    /// Decrypts a token; `None` when it is not a token of this key.
    pub fn decrypt(&self, token: &str) -> Option<String> {
        self.fernet
            .decrypt(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    }
}

/// Replaces every string secret field anywhere inside `value` with `f(secret)`.
pub fn map_secret_fields(value: &mut Value, f: &dyn Fn(&str) -> Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if SECRET_FIELDS.contains(&k.as_str()) {
                    if let Value::String(s) = v {
                        *v = f(s);
                    }
                } else {
                    map_secret_fields(v, f);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| map_secret_fields(v, f)),
        _ => {}
    }
}

/// Replaces the `value` of every secret source in a `secret_registry` with `f(value)`.
pub fn map_registry(registry: &mut Value, f: &dyn Fn(&str) -> Value) {
    if let Some(sources) = registry
        .get_mut("secret_sources")
        .and_then(Value::as_object_mut)
    {
        for src in sources.values_mut() {
            if let Some(Value::String(s)) = src.get("value").cloned().as_ref() {
                src["value"] = f(s);
            }
            if let Some(headers) = src.get_mut("headers").and_then(Value::as_object_mut) {
                for h in headers.values_mut() {
                    if let Value::String(s) = h.clone() {
                        *h = f(&s);
                    }
                }
            }
        }
    }
}

/// The on-disk form of a secret: a token with a key, the mask without.
pub fn seal(cipher: Option<&Cipher>, plain: &str) -> Value {
    match cipher {
        Some(c) => Value::String(c.encrypt(plain)),
        None => Value::String(MASK.into()),
    }
}

/// The in-memory form of a stored secret: decrypted, or `null` when it cannot be.
pub fn unseal(cipher: Option<&Cipher>, stored: &str) -> Value {
    match cipher.and_then(|c| c.decrypt(stored)) {
        Some(p) => Value::String(p),
        None => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_and_reference_tokens() {
        let c = Cipher::from_key("test-secret-key-123").expect("cipher");
        let t = c.encrypt("sk-1");
        assert_eq!(c.decrypt(&t).as_deref(), Some("sk-1"));
        assert_eq!(c.decrypt(MASK), None);
        // A token written by the Python reference with the same key.
        let py = "gAAAAABrBsVZoXUGrd-6jwXeNgcLCc3mlXz-pmc4z4ENRglqwRaTNAKdBLTZ86czaFw0U2UAQNebbQ2P8wrM4ipvND43hjjt_A==";
        assert!(c.decrypt(py).is_some());
    }

    #[test]
    fn secret_fields_are_mapped_recursively() {
        let mut v =
            json!({"llm": {"api_key": "k", "model": "m"}, "condenser": {"llm": {"api_key": "k2"}}});
        map_secret_fields(&mut v, &|_| Value::Null);
        assert_eq!(v["llm"]["api_key"], Value::Null);
        assert_eq!(v["condenser"]["llm"]["api_key"], Value::Null);
        assert_eq!(v["llm"]["model"], "m");
    }
}
