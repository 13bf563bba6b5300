//! The browser bridge to running Canvas App backends: short-lived sessions delivered as an
//! HttpOnly cookie (stored by the SHA-256 of their token, bound to one app and the port of its
//! running backend), and the origin, path and query rules of the `/app-backends/...` ingress.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::manifest::UrlParts;

/// Cookie carrying the session token.
pub const SESSION_COOKIE: &str = "oh_app_backend_session";
/// How long a session lives.
pub const SESSION_TTL: Duration = Duration::from_secs(300);
/// The `sandbox` attribute the Canvas frame should get.
pub const IFRAME_SANDBOX: &str =
    "allow-forms allow-modals allow-popups allow-same-origin allow-scripts";

/// One app session.
#[derive(Debug)]
struct Session {
    name: String,
    port: u16,
    expires_at: SystemTime,
    /// Cancelled when the session is revoked or expires: bridged WebSockets end.
    revoked: CancellationToken,
}

/// A session an authorised request belongs to.
#[derive(Debug, Clone)]
pub struct Authorized {
    /// Cancelled when the session ends.
    pub revoked: CancellationToken,
    pub expires_at: SystemTime,
}

/// The live app sessions.
#[derive(Debug, Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<[u8; 32], Session>>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn prune(map: &mut HashMap<[u8; 32], Session>) {
        let now = SystemTime::now();
        map.retain(|_, s| {
            let live = s.expires_at > now;
            if !live {
                s.revoked.cancel();
            }
            live
        });
    }

    /// A new session for the backend of `name` on `port`: its token and expiry.
    pub fn create(&self, name: &str, port: u16) -> (String, SystemTime) {
        let bytes: [u8; 32] = rand::random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let expires_at = SystemTime::now() + SESSION_TTL;
        let mut map = self.lock();
        Self::prune(&mut map);
        map.insert(
            digest(&token),
            Session {
                name: name.to_string(),
                port,
                expires_at,
                revoked: CancellationToken::new(),
            },
        );
        (token, expires_at)
    }

    /// The live session of `token` for the backend of `name` on `port`.
    pub fn authorize(&self, token: Option<&str>, name: &str, port: u16) -> Option<Authorized> {
        let token = token.filter(|t| !t.is_empty())?;
        let key = digest(token);
        let mut map = self.lock();
        Self::prune(&mut map);
        let (stored, session) = map.get_key_value(&key)?;
        if !bool::from(stored.ct_eq(&key)) || session.name != name || session.port != port {
            return None;
        }
        Some(Authorized {
            revoked: session.revoked.clone(),
            expires_at: session.expires_at,
        })
    }

    /// Ends the session of `token`.
    pub fn revoke_token(&self, token: Option<&str>) {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return;
        };
        if let Some(s) = self.lock().remove(&digest(token)) {
            s.revoked.cancel();
        }
    }

    /// Ends every session of an app.
    pub fn revoke_app(&self, name: &str) {
        self.lock().retain(|_, s| {
            let keep = s.name != name;
            if !keep {
                s.revoked.cancel();
            }
            keep
        });
    }

    /// Ends every session (server shutdown).
    pub fn revoke_all(&self) {
        for (_, s) in self.lock().drain() {
            s.revoked.cancel();
        }
    }
}

/// `scheme://host:port` of an http(s) URL (host lower-cased, default ports filled in).
pub fn origin(url: &str) -> Option<String> {
    let parts = UrlParts::split(url);
    if parts.scheme != "http" && parts.scheme != "https" {
        return None;
    }
    let host = parts.hostname()?;
    let port = match parts.port() {
        Ok(Some(p)) => p,
        Ok(None) if parts.scheme == "https" => 443,
        Ok(None) => 80,
        Err(_) => return None,
    };
    Some(format!("{}://{host}:{port}", parts.scheme))
}

/// Why the ingress configuration cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    NotConfigured,
    Misconfigured,
}

/// The configured public ingress URL without its trailing `/`.
pub fn public_url(configured: Option<&str>) -> Result<String, Ingress> {
    let value = configured
        .filter(|v| !v.is_empty())
        .ok_or(Ingress::NotConfigured)?;
    let parts = UrlParts::split(value);
    if (parts.scheme != "http" && parts.scheme != "https") || parts.netloc.is_empty() {
        return Err(Ingress::Misconfigured);
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// Whether a control-plane `Origin` may bootstrap sessions: loopback, the Docker host, or a
/// configured CORS origin.
pub fn allowed_control_origin(
    origin_header: &str,
    cors_origins: &[String],
    cors_regex: Option<&str>,
    docker_host: Option<&str>,
) -> bool {
    let Some(normalized) = origin(origin_header) else {
        return false;
    };
    let host = UrlParts::split(origin_header).hostname();
    if matches!(host.as_deref(), Some("localhost" | "127.0.0.1")) {
        return true;
    }
    if docker_host.is_some_and(|d| !d.is_empty() && host.as_deref() == Some(d)) {
        return true;
    }
    if cors_origins
        .iter()
        .any(|c| origin(c).as_deref() == Some(normalized.as_str()))
    {
        return true;
    }
    cors_regex
        .and_then(|r| crate::config::cors_regex(r).ok())
        .is_some_and(|re| re.is_match(origin_header))
}

/// Whether a session cookie may be set for a request from `request_origin`: HTTPS, or a
/// loopback host.
pub fn secure_context(request_origin: Option<&str>) -> bool {
    let Some(o) = request_origin else {
        return false;
    };
    let parts = UrlParts::split(o);
    parts.scheme == "https"
        || matches!(
            parts.hostname().as_deref(),
            Some("localhost" | "127.0.0.1" | "::1")
        )
}

use crate::urlcode::quote_plus;
pub use crate::urlcode::{encode_path, unquote};

/// Whether a proxied path is safe: decoded until stable, no `\` and no `.`/`..` segment.
pub fn valid_proxy_path(path: &str) -> bool {
    let mut candidate = path.to_string();
    let mut stable = false;
    for _ in 0..=path.len() {
        let decoded = unquote(&candidate);
        if decoded == candidate {
            stable = true;
            break;
        }
        candidate = decoded;
    }
    stable && !candidate.contains('\\') && !candidate.split('/').any(|p| p == "." || p == "..")
}

/// A query string without credentials (`session_api_key`, `x-session-api-key`,
/// `authorization`, any case), re-encoded as `urlencode(parse_qsl(..., keep_blank_values))`.
pub fn strip_auth_query(query: &str) -> String {
    crate::urlcode::query_pairs(query)
        .into_iter()
        .filter(|(key, _)| {
            !matches!(
                key.to_lowercase().as_str(),
                "session_api_key" | "x-session-api-key" | "authorization"
            )
        })
        .map(|(key, value)| format!("{}={}", quote_plus(&key), quote_plus(&value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `expires_at` as pydantic writes a UTC datetime (`...T08:23:02.299263Z`).
pub fn iso_utc(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let micros = (d.as_nanos() as f64 / 1000.0).round() as i64;
    let dt = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    if dt.timestamp_subsec_micros() == 0 {
        dt.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        dt.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_as_the_reference_checks_them() {
        assert!(valid_proxy_path("foo/bar"));
        assert!(valid_proxy_path(""));
        assert!(!valid_proxy_path("a/%2e%2e/b"));
        assert!(!valid_proxy_path("%252e%252e"));
        assert!(!valid_proxy_path("a\\b"));
        assert!(!valid_proxy_path("./x"));
        assert_eq!(
            strip_auth_query("x=1&session_api_key=zz&y=2&Authorization=b&z&w=a+b%2F"),
            "x=1&y=2&z=&w=a+b%2F"
        );
        assert_eq!(encode_path("a b/ü%20"), "a%20b/%C3%BC%20");
    }

    #[test]
    fn origins_and_sessions() {
        assert_eq!(
            origin("HTTP://LocalHost").as_deref(),
            Some("http://localhost:80")
        );
        assert_eq!(
            origin("https://x.y:8443/p").as_deref(),
            Some("https://x.y:8443")
        );
        assert_eq!(origin("ftp://x"), None);
        assert_eq!(public_url(None), Err(Ingress::NotConfigured));
        assert_eq!(public_url(Some("nope")), Err(Ingress::Misconfigured));
        assert_eq!(public_url(Some("http://h:1/")).unwrap(), "http://h:1");
        assert!(allowed_control_origin(
            "http://localhost:3000",
            &[],
            None,
            None
        ));
        assert!(!allowed_control_origin("http://evil", &[], None, None));
        assert!(allowed_control_origin(
            "https://app.example",
            &["https://APP.example:443".into()],
            None,
            None
        ));
        assert!(allowed_control_origin(
            "https://a.ex",
            &[],
            Some(r"https://.*\.ex"),
            None
        ));
        assert!(!allowed_control_origin("", &[], None, None));

        let sessions = Sessions::default();
        let (token, _) = sessions.create("app", 1234);
        assert_eq!(token.len(), 43);
        assert!(sessions.authorize(Some(&token), "app", 1234).is_some());
        assert!(sessions.authorize(Some(&token), "app", 1235).is_none());
        assert!(sessions.authorize(Some(&token), "other", 1234).is_none());
        let auth = sessions.authorize(Some(&token), "app", 1234).unwrap();
        sessions.revoke_app("app");
        assert!(auth.revoked.is_cancelled());
        assert!(sessions.authorize(Some(&token), "app", 1234).is_none());
    }
}
