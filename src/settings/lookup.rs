//! Resolving `LookupSecret`s: a secret the client names by URL (usually this server's own
//! `/api/settings/secrets/<name>`, as `RemoteWorkspace.get_secrets()` builds them) whose value
//! is fetched when the agent needs it, so it never passes through the client.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::SettingsService;

const SECRET_PATH: &str = "/api/settings/secrets/";

/// This server's secrets and the port it listens on: URLs of this server are answered from
/// the store directly (the reference does the same), others over HTTP.
#[derive(Debug, Clone)]
pub struct LocalSecrets {
    pub service: Arc<SettingsService>,
    pub port: u16,
}

impl LocalSecrets {
    /// The secret name when `url` is this server's own secret URL (a loopback host, our port).
    fn own_name<'a>(&self, url: &'a reqwest::Url) -> Option<&'a str> {
        let loopback = matches!(
            url.host_str(),
            Some("127.0.0.1" | "localhost" | "[::1]" | "::1")
        );
        let name = url.path().strip_prefix(SECRET_PATH)?;
        (loopback && url.port_or_known_default() == Some(self.port) && !name.contains('/'))
            .then_some(name)
            .filter(|n| !n.is_empty())
    }
}

/// The value of a `LookupSecret` source (`{"url", "headers"}`), or `None` when it cannot be
/// had (the reason is logged, never the value).
pub async fn resolve(source: &Value, local: Option<&LocalSecrets>) -> Option<String> {
    let raw = source.get("url")?.as_str()?;
    let url = match reqwest::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "a LookupSecret URL cannot be parsed");
            return None;
        }
    };
    if let Some(local) = local {
        if let Some(name) = local.own_name(&url) {
            if let Ok(v) = local.service.secret_value(name).await {
                return Some(v);
            }
        }
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .ok()?;
    let mut request = client.get(url);
    for (k, v) in source
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if let Some(v) = v.as_str() {
            request = request.header(k, v);
        }
    }
    match request.send().await.and_then(|r| r.error_for_status()) {
        Ok(r) => r.text().await.ok(),
        Err(e) => {
            tracing::warn!(status = ?e.status(), "a LookupSecret could not be fetched");
            None
        }
    }
}
