//! The HTTP client used by every scenario (keep-alive, no proxy, TCP_NODELAY).

use std::time::Duration;

/// A client with one pool; clone it to share connections, build another for a separate one.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(600))
        .build()
}

/// Status and JSON body of a response; a non-JSON body is an error.
pub async fn json(r: reqwest::Response) -> anyhow::Result<(u16, serde_json::Value)> {
    let st = r.status().as_u16();
    let b = r.bytes().await?;
    let v = serde_json::from_slice(&b).map_err(|e| {
        anyhow::anyhow!(
            "HTTP {st}: non-JSON body ({e}): {:?}",
            String::from_utf8_lossy(&b[..b.len().min(200)])
        )
    })?;
    Ok((st, v))
}
