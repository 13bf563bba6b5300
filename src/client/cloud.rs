//! [`OpenHandsCloudWorkspace`]: a sandbox provisioned through the OpenHands Cloud API
//! (`/api/v1/sandboxes`), with the Cloud's `get_llm()` / `get_secrets()`.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::guard::{self, Release};
use super::workspace::{check, health_ok, RemoteWorkspace, WorkspaceOptions, SESSION_KEY_HEADER};
use super::ClientError;

/// Options of [`OpenHandsCloudWorkspace::start`].
#[derive(Debug, Clone)]
pub struct CloudOptions {
    /// e.g. `https://app.all-hands.dev` (a trailing `/` is removed).
    pub cloud_api_url: String,
    /// Sent as `Authorization: Bearer <key>`.
    pub cloud_api_key: String,
    /// Query parameter of the create call (custom images via sandbox specs).
    pub sandbox_spec_id: Option<String>,
    /// HTTP timeout of the create and resume calls.
    pub init_timeout: Duration,
    /// Timeout of other Cloud calls and read timeout of the agent-server client.
    pub api_timeout: Duration,
    /// Budget of the readiness polling (hard-coded 300 s in the reference).
    pub ready_timeout: Duration,
    /// First wait between readiness polls (doubles up to `poll_max`); reference: 2 s / 10 s.
    pub poll_first: Duration,
    pub poll_max: Duration,
    /// Keep the sandbox on cleanup (no DELETE).
    pub keep_alive: bool,
    /// Resume this sandbox instead of creating one.
    pub sandbox_id: Option<String>,
    /// The SDK runs inside the sandbox: talk to the local server, provision nothing.
    pub local_agent_server_mode: bool,
    /// Local-mode port (`$AGENT_SERVER_PORT` wins).
    pub agent_server_port: u16,
    pub working_dir: String,
}

impl CloudOptions {
    /// Options with the reference defaults.
    pub fn new(cloud_api_url: impl Into<String>, cloud_api_key: impl Into<String>) -> Self {
        CloudOptions {
            cloud_api_url: cloud_api_url.into(),
            cloud_api_key: cloud_api_key.into(),
            sandbox_spec_id: None,
            init_timeout: Duration::from_secs(300),
            api_timeout: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(300),
            poll_first: Duration::from_secs(2),
            poll_max: Duration::from_secs(10),
            keep_alive: false,
            sandbox_id: None,
            local_agent_server_mode: false,
            agent_server_port: 60000,
            working_dir: "/workspace/project".into(),
        }
    }
}

/// `SandboxInfo` as the Cloud API returns it.
#[derive(Debug, Clone, Deserialize)]
pub struct SandboxInfo {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub session_api_key: Option<String>,
    #[serde(default)]
    pub exposed_urls: Option<Vec<ExposedUrl>>,
    #[serde(default)]
    pub sandbox_spec_id: Option<String>,
}

/// One entry of `exposed_urls` (`AGENT_SERVER`, `VSCODE`, `WORKER_1`, …).
#[derive(Debug, Clone, Deserialize)]
pub struct ExposedUrl {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub port: Option<u16>,
}

/// A Cloud sandbox running an agent server. Derefs to its [`RemoteWorkspace`].
#[derive(Debug)]
pub struct OpenHandsCloudWorkspace {
    workspace: RemoteWorkspace,
    opts: CloudOptions,
    sandbox_id: Option<String>,
    session_api_key: Option<String>,
    exposed_urls: Vec<ExposedUrl>,
    http: reqwest::Client,
    ticket: Option<u64>,
}

impl std::ops::Deref for OpenHandsCloudWorkspace {
    type Target = RemoteWorkspace;
    fn deref(&self) -> &RemoteWorkspace {
        &self.workspace
    }
}

struct Cloud<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    key: &'a str,
}

impl Cloud<'_> {
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(self.key)
            .query(query)
            .timeout(timeout)
            .send()
            .await?;
        check(resp).await
    }
}

impl OpenHandsCloudWorkspace {
    /// Creates (or resumes `sandbox_id`) a sandbox and waits until its agent server is healthy.
    /// On failure the sandbox is deleted unless `keep_alive` (as in the reference).
    pub async fn start(mut opts: CloudOptions) -> Result<Self, ClientError> {
        opts.cloud_api_url = opts.cloud_api_url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        if opts.local_agent_server_mode {
            let port = std::env::var("AGENT_SERVER_PORT")
                .ok()
                .and_then(|p| p.parse().ok())
                .unwrap_or(opts.agent_server_port);
            let key = std::env::var("SESSION_API_KEY")
                .ok()
                .or_else(|| std::env::var("OH_SESSION_API_KEYS_0").ok());
            let mut w = WorkspaceOptions::new(format!("http://localhost:{port}"));
            w.api_key = key.clone();
            w.working_dir = opts.working_dir.clone();
            w.read_timeout = opts.api_timeout;
            let sandbox_id = opts
                .sandbox_id
                .clone()
                .or_else(|| std::env::var("SANDBOX_ID").ok());
            return Ok(OpenHandsCloudWorkspace {
                workspace: RemoteWorkspace::with_options(w)?,
                opts,
                sandbox_id,
                session_api_key: key,
                exposed_urls: Vec::new(),
                http,
                ticket: None,
            });
        }
        let mut ws = OpenHandsCloudWorkspace {
            workspace: RemoteWorkspace::new("undefined", None)?,
            opts,
            sandbox_id: None,
            session_api_key: None,
            exposed_urls: Vec::new(),
            http,
            ticket: None,
        };
        if let Err(e) = ws.provision().await {
            // Only a sandbox this call created carries a ticket (see `provision`).
            if let Some(t) = ws.ticket.take() {
                guard::unregister(t);
                if let Some(id) = ws.sandbox_id.take() {
                    delete_sandbox(
                        ws.opts.cloud_api_url.clone(),
                        ws.opts.cloud_api_key.clone(),
                        id,
                    )
                    .await;
                }
            }
            ws.sandbox_id = None;
            return Err(e);
        }
        if ws.ticket.is_none() {
            if let Some(id) = ws.sandbox_id.clone() {
                ws.track(id);
            }
        }
        Ok(ws)
    }

    fn cloud(&self) -> Cloud<'_> {
        Cloud {
            http: &self.http,
            base: &self.opts.cloud_api_url,
            key: &self.opts.cloud_api_key,
        }
    }

    async fn provision(&mut self) -> Result<(), ClientError> {
        let init = self.opts.init_timeout;
        let info: SandboxInfo = if let Some(id) = self.opts.sandbox_id.clone() {
            // A caller's sandbox is not deleted when resuming it fails (the reference deletes it).
            self.sandbox_id = Some(id.clone());
            let path = format!("/api/v1/sandboxes/{id}/resume");
            let resp = self.cloud().call(Method::POST, &path, &[], init).await?;
            // The resume answer is not relied upon; the id is the caller's.
            let _ = resp.bytes().await;
            SandboxInfo {
                id,
                status: None,
                session_api_key: None,
                exposed_urls: None,
                sandbox_spec_id: None,
            }
        } else {
            let spec = self.opts.sandbox_spec_id.clone();
            let q: Vec<(&str, &str)> = spec
                .as_deref()
                .map(|s| vec![("sandbox_spec_id", s)])
                .unwrap_or_default();
            let resp = self
                .cloud()
                .call(Method::POST, "/api/v1/sandboxes", &q, init)
                .await?;
            let info: SandboxInfo = resp.json().await?;
            self.track(info.id.clone());
            info
        };
        self.session_api_key = info.session_api_key.clone();
        self.wait_until_ready().await?;
        let url = self
            .exposed_urls
            .iter()
            .find(|u| u.name == "AGENT_SERVER")
            .map(|u| u.url.trim_end_matches('/').to_string())
            .ok_or_else(|| {
                ClientError::Protocol(format!("Agent server URL not found in sandbox {}", info.id))
            })?;
        let mut w = WorkspaceOptions::new(url);
        w.api_key = self.session_api_key.clone();
        w.working_dir = self.opts.working_dir.clone();
        w.read_timeout = self.opts.api_timeout;
        self.workspace = RemoteWorkspace::with_options(w)?;
        Ok(())
    }

    fn track(&mut self, id: String) {
        self.sandbox_id = Some(id.clone());
        if self.opts.keep_alive {
            return;
        }
        let (base, key) = (
            self.opts.cloud_api_url.clone(),
            self.opts.cloud_api_key.clone(),
        );
        self.ticket = Some(guard::register(Box::new(move || {
            guard::run_blocking(delete_sandbox(base, key, id));
        }) as Release));
    }

    /// Polls `GET /api/v1/sandboxes?id=` until `RUNNING` and the agent server is healthy.
    async fn wait_until_ready(&mut self) -> Result<(), ClientError> {
        let id = self
            .sandbox_id
            .clone()
            .ok_or_else(|| ClientError::State("Sandbox is not running".into()))?;
        let deadline = Instant::now() + self.opts.ready_timeout;
        let mut waits = guard::backoff(self.opts.poll_first, self.opts.poll_max);
        loop {
            let resp = self
                .cloud()
                .call(
                    Method::GET,
                    "/api/v1/sandboxes",
                    &[("id", &id)],
                    self.opts.api_timeout,
                )
                .await?;
            let list: Vec<Option<SandboxInfo>> = resp.json().await?;
            let not_yet = match list.into_iter().next().flatten() {
                None => format!("Sandbox {id} not found"),
                Some(info) => match info.status.as_deref().unwrap_or("") {
                    "RUNNING" => {
                        if info.session_api_key.is_some() {
                            self.session_api_key = info.session_api_key.clone();
                        }
                        self.exposed_urls = info.exposed_urls.unwrap_or_default();
                        match self.exposed_urls.iter().find(|u| u.name == "AGENT_SERVER") {
                            Some(u)
                                if !health_ok(&self.http, &u.url, Duration::from_secs(5)).await =>
                            {
                                "agent server not healthy yet".to_string()
                            }
                            _ => return Ok(()),
                        }
                    }
                    s @ ("ERROR" | "MISSING") => {
                        return Err(ClientError::Failed(format!(
                            "Sandbox failed with status: {s}"
                        )))
                    }
                    "PAUSED" => {
                        let path = format!("/api/v1/sandboxes/{id}/resume");
                        self.cloud()
                            .call(Method::POST, &path, &[], self.opts.init_timeout)
                            .await?;
                        "sandbox paused, resume requested".into()
                    }
                    s => format!("sandbox status {s}"),
                },
            };
            let wait = waits.next().unwrap_or(self.opts.poll_max);
            if Instant::now() + wait > deadline {
                return Err(ClientError::Timeout(format!(
                    "Sandbox {id} not ready in time: {not_yet}"
                )));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The sandbox id.
    pub fn sandbox_id(&self) -> Option<&str> {
        self.sandbox_id.as_deref()
    }

    /// URLs the sandbox exposes.
    pub fn exposed_urls(&self) -> &[ExposedUrl] {
        &self.exposed_urls
    }

    /// The workspace API.
    pub fn workspace(&self) -> &RemoteWorkspace {
        &self.workspace
    }

    async fn users_me(&self, expose: bool) -> Result<Value, ClientError> {
        if self.sandbox_id.is_none() {
            return Err(ClientError::State("Sandbox is not running".into()));
        }
        let mut last = None;
        for wait in guard::backoff(Duration::from_secs(1), Duration::from_secs(5)).take(3) {
            let mut req = self
                .http
                .get(format!("{}/api/v1/users/me", self.opts.cloud_api_url))
                .bearer_auth(&self.opts.cloud_api_key)
                .timeout(self.opts.api_timeout);
            if expose {
                req = req.query(&[("expose_secrets", "true")]);
            }
            if let Some(k) = &self.session_api_key {
                req = req.header(SESSION_KEY_HEADER, k);
            }
            match RemoteWorkspace::send_json::<Value>(req).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() => {
                    last = Some(e);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Failed("users/me failed".into())))
    }

    /// The account's LLM settings as `LLM` keyword arguments (`model`, `api_key`, `base_url`), or
    /// profile `name`'s (with `usage_id = "profile:<name>"`); `overrides` win.
    pub async fn get_llm(
        &self,
        profile_name: Option<&str>,
        overrides: Map<String, Value>,
    ) -> Result<Map<String, Value>, ClientError> {
        let me = self.users_me(true).await?;
        let mut out = Map::new();
        match profile_name {
            None => {
                for (from, to) in [
                    ("llm_model", "model"),
                    ("llm_api_key", "api_key"),
                    ("llm_base_url", "base_url"),
                ] {
                    match me.get(from) {
                        Some(Value::Null) | None => {}
                        Some(Value::String(s)) if s.is_empty() => {}
                        Some(v) => {
                            out.insert(to.into(), v.clone());
                        }
                    }
                }
            }
            Some(name) => {
                let profile = me
                    .pointer("/llm_profiles/profiles")
                    .and_then(|p| p.get(name))
                    .and_then(Value::as_object)
                    .ok_or_else(|| ClientError::State(format!("LLM profile {name} not found")))?;
                out.extend(profile.clone());
                out.insert("usage_id".into(), json!(format!("profile:{name}")));
            }
        }
        out.extend(overrides);
        Ok(out)
    }

    /// `LookupSecret`s for the sandbox's secrets (values stay in the Cloud; the agent server
    /// fetches them with the session key), optionally filtered by `names`.
    pub async fn get_secrets(
        &self,
        names: Option<&[&str]>,
    ) -> Result<Map<String, Value>, ClientError> {
        let id = self
            .sandbox_id
            .as_deref()
            .ok_or_else(|| ClientError::State("Sandbox is not running".into()))?;
        let key = self.session_api_key.clone().unwrap_or_default();
        let base = format!(
            "{}/api/v1/sandboxes/{id}/settings/secrets",
            self.opts.cloud_api_url
        );
        let mut last = None;
        let mut listing = None;
        for wait in guard::backoff(Duration::from_secs(1), Duration::from_secs(5)).take(3) {
            let req = self
                .http
                .get(&base)
                .header(SESSION_KEY_HEADER, &key)
                .timeout(self.opts.api_timeout);
            match RemoteWorkspace::send_json::<Value>(req).await {
                Ok(v) => {
                    listing = Some(v);
                    break;
                }
                Err(e) if e.is_transient() => {
                    last = Some(e);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
        let listing =
            listing.ok_or_else(|| last.unwrap_or_else(|| ClientError::Failed("secrets".into())))?;
        let mut out = Map::new();
        for s in listing
            .get("secrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = s.get("name").and_then(Value::as_str) else {
                continue;
            };
            if names.is_some_and(|n| !n.contains(&name)) {
                continue;
            }
            out.insert(
                name.to_string(),
                json!({
                    "kind": "LookupSecret",
                    "url": format!("{base}/{name}"),
                    "headers": {SESSION_KEY_HEADER: key},
                    "description": s.get("description").cloned().unwrap_or(Value::Null),
                }),
            );
        }
        Ok(out)
    }

    /// Not available: the reference does not call the Cloud's pause endpoint either.
    pub async fn pause(&self) -> Result<(), ClientError> {
        Err(ClientError::State(
            "OpenHandsCloudWorkspace.pause() is not yet supported - Cloud API pause endpoint not available".into(),
        ))
    }

    /// `POST …/resume`, then the readiness poll.
    pub async fn resume(&mut self) -> Result<(), ClientError> {
        let id = self
            .sandbox_id
            .clone()
            .ok_or_else(|| ClientError::State("Cannot resume: sandbox is not running".into()))?;
        self.cloud()
            .call(
                Method::POST,
                &format!("/api/v1/sandboxes/{id}/resume"),
                &[],
                self.opts.init_timeout,
            )
            .await?;
        self.wait_until_ready().await
    }

    /// Deletes the sandbox unless `keep_alive`; the workspace is unusable afterwards.
    pub async fn cleanup(&mut self) -> Result<(), ClientError> {
        if let Some(t) = self.ticket.take() {
            guard::unregister(t);
        }
        if self.opts.local_agent_server_mode {
            return Ok(());
        }
        let Some(id) = self.sandbox_id.take() else {
            return Ok(());
        };
        self.session_api_key = None;
        self.exposed_urls.clear();
        if self.opts.keep_alive {
            return Ok(());
        }
        delete_sandbox(
            self.opts.cloud_api_url.clone(),
            self.opts.cloud_api_key.clone(),
            id,
        )
        .await;
        Ok(())
    }

    fn delete_now(&mut self) {
        if let Some(t) = self.ticket.take() {
            if let Some(release) = guard::unregister(t) {
                release();
            }
        }
        self.sandbox_id = None;
    }
}

impl Drop for OpenHandsCloudWorkspace {
    fn drop(&mut self) {
        self.delete_now();
    }
}

/// `DELETE /api/v1/sandboxes/{id}?sandbox_id={id}` (the handler reads the query copy); errors are
/// only logged.
async fn delete_sandbox(base: String, key: String, id: String) {
    let Ok(http) = reqwest::Client::builder().build() else {
        return;
    };
    let res = http
        .delete(format!("{base}/api/v1/sandboxes/{id}"))
        .query(&[("sandbox_id", &id)])
        .bearer_auth(key)
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(status = %r.status(), %id, "deleting the cloud sandbox failed"),
        Err(e) => tracing::warn!(error = %e, %id, "deleting the cloud sandbox failed"),
    }
}
