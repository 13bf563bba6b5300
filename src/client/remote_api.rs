//! [`ApiRemoteWorkspace`]: an agent server started through the OpenHands Runtime API
//! (`/start`, `/sessions/{id}`, `/pause`, `/resume`, `/stop`, header `X-API-Key`).

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Map, Value};

use super::guard::{self, Release};
use super::workspace::{check, health_ok, RemoteWorkspace, WorkspaceOptions};
use super::ClientError;

/// `image_pull_policy` of `/start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    fn as_str(self) -> &'static str {
        match self {
            ImagePullPolicy::Always => "Always",
            ImagePullPolicy::IfNotPresent => "IfNotPresent",
            ImagePullPolicy::Never => "Never",
        }
    }
}

/// Which server executable the image has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetType {
    /// `/usr/local/bin/openhands-agent-server` (also our image's path, see the Dockerfile).
    Binary,
    /// `/agent-server/.venv/bin/python -m openhands.agent_server`.
    Source,
}

/// Options of [`ApiRemoteWorkspace::start`].
#[derive(Debug, Clone)]
pub struct ApiRemoteOptions {
    pub runtime_api_url: String,
    /// Sent as `X-API-Key`.
    pub runtime_api_key: String,
    /// Image the runtime cluster pulls.
    pub server_image: String,
    pub image_pull_policy: ImagePullPolicy,
    /// Session id (re-attach by reusing it); default `agent-server-<uuid>`.
    pub session_id: Option<String>,
    /// 1, 2, 4 or 8.
    pub resource_factor: u32,
    pub runtime_class: Option<String>,
    /// HTTP timeout of `/start` and `/resume`.
    pub init_timeout: Duration,
    /// Budget of the readiness polling.
    pub startup_wait_timeout: Duration,
    /// Timeout of other calls.
    pub api_timeout: Duration,
    /// First wait between readiness polls (doubles up to `poll_max`); reference: 2 s / 10 s.
    pub poll_first: Duration,
    pub poll_max: Duration,
    /// Do nothing on cleanup.
    pub keep_alive: bool,
    /// Cleanup pauses instead of stopping.
    pub pause_on_close: bool,
    pub target_type: TargetType,
    /// Variables of this process copied into the runtime's environment.
    pub forward_env: Vec<String>,
    pub working_dir: String,
}

impl ApiRemoteOptions {
    /// Options with the reference defaults.
    pub fn new(
        runtime_api_url: impl Into<String>,
        runtime_api_key: impl Into<String>,
        server_image: impl Into<String>,
    ) -> Self {
        ApiRemoteOptions {
            runtime_api_url: runtime_api_url.into(),
            runtime_api_key: runtime_api_key.into(),
            server_image: server_image.into(),
            image_pull_policy: ImagePullPolicy::IfNotPresent,
            session_id: None,
            resource_factor: 1,
            runtime_class: Some("sysbox-runc".into()),
            init_timeout: Duration::from_secs(300),
            startup_wait_timeout: Duration::from_secs(300),
            api_timeout: Duration::from_secs(60),
            poll_first: Duration::from_secs(2),
            poll_max: Duration::from_secs(10),
            keep_alive: false,
            pause_on_close: false,
            target_type: TargetType::Binary,
            forward_env: Vec::new(),
            working_dir: "/workspace".into(),
        }
    }
}

/// A runtime started through the Runtime API. Derefs to its [`RemoteWorkspace`].
#[derive(Debug)]
pub struct ApiRemoteWorkspace {
    workspace: RemoteWorkspace,
    opts: ApiRemoteOptions,
    session_id: String,
    runtime_id: Option<String>,
    runtime_url: Option<String>,
    http: reqwest::Client,
    ticket: Option<u64>,
}

impl std::ops::Deref for ApiRemoteWorkspace {
    type Target = RemoteWorkspace;
    fn deref(&self) -> &RemoteWorkspace {
        &self.workspace
    }
}

impl ApiRemoteWorkspace {
    /// Attaches to a running/paused runtime of `session_id` or starts one, then waits until it is
    /// ready. On failure the runtime is stopped (paused with `pause_on_close`) unless `keep_alive`.
    pub async fn start(mut opts: ApiRemoteOptions) -> Result<Self, ClientError> {
        if ![1, 2, 4, 8].contains(&opts.resource_factor) {
            return Err(ClientError::Invalid(format!(
                "resource_factor must be 1, 2, 4 or 8, got {}",
                opts.resource_factor
            )));
        }
        opts.runtime_api_url = opts.runtime_api_url.trim_end_matches('/').to_string();
        let session_id = opts
            .session_id
            .clone()
            .unwrap_or_else(|| format!("agent-server-{}", uuid::Uuid::new_v4()));
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        let mut ws = ApiRemoteWorkspace {
            workspace: RemoteWorkspace::new("undefined", None)?,
            opts,
            session_id,
            runtime_id: None,
            runtime_url: None,
            http,
            ticket: None,
        };
        if let Err(e) = ws.provision().await {
            if let Some(t) = ws.ticket.take() {
                guard::unregister(t);
                if let Some(id) = ws.runtime_id.take() {
                    release_runtime(
                        ws.opts.runtime_api_url.clone(),
                        ws.opts.runtime_api_key.clone(),
                        id,
                        ws.opts.pause_on_close,
                    )
                    .await;
                }
            }
            ws.runtime_id = None;
            return Err(e);
        }
        Ok(ws)
    }

    async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.opts.runtime_api_url, path))
            .header("X-API-Key", &self.opts.runtime_api_key)
            .timeout(timeout);
        if let Some(b) = body {
            req = req.json(&b);
        }
        check(req.send().await?).await
    }

    async fn provision(&mut self) -> Result<(), ClientError> {
        let t = self.opts.api_timeout;
        let path = format!("/sessions/{}", self.session_id);
        let existing = match self.api(Method::GET, &path, None, t).await {
            Ok(r) => Some(r.json::<Value>().await?),
            Err(e) if e.status() == Some(404) => None,
            Err(e) => return Err(e),
        };
        let mut attached = false;
        if let Some(data) = existing {
            match data.get("status").and_then(Value::as_str).unwrap_or("") {
                "running" => {
                    self.parse_runtime(&data)?;
                    attached = true;
                }
                "paused" => {
                    self.parse_runtime(&data)?;
                    let body = json!({"runtime_id": self.runtime_id});
                    match self
                        .api(Method::POST, "/resume", Some(body), self.opts.init_timeout)
                        .await
                    {
                        Ok(_) => attached = true,
                        Err(e) => {
                            tracing::warn!(error = %e, "resuming the runtime failed; starting a new one");
                            self.runtime_id = None;
                            self.runtime_url = None;
                        }
                    }
                }
                _ => {}
            }
        }
        if !attached {
            let body = self.start_body();
            let resp = self
                .api(Method::POST, "/start", Some(body), self.opts.init_timeout)
                .await?;
            let data: Value = resp.json().await?;
            self.parse_runtime(&data)?;
        }
        self.wait_until_ready().await?;
        let mut w = WorkspaceOptions::new(self.runtime_url.clone().unwrap_or_default());
        w.api_key = self.workspace.api_key().map(str::to_string);
        w.working_dir = self.opts.working_dir.clone();
        w.read_timeout = self.opts.api_timeout;
        self.workspace = RemoteWorkspace::with_options(w)?;
        Ok(())
    }

    fn start_body(&self) -> Value {
        let exe = match self.opts.target_type {
            TargetType::Binary => "/usr/local/bin/openhands-agent-server",
            TargetType::Source => "/agent-server/.venv/bin/python -m openhands.agent_server",
        };
        let env: Map<String, Value> = guard::forwarded_env(&self.opts.forward_env)
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect();
        let mut body = json!({
            "image": self.opts.server_image,
            "command": format!("{exe} --port 60000"),
            "working_dir": "/",
            "environment": env,
            "session_id": self.session_id,
            "run_as_user": 10001,
            "fs_group": 10001,
            "image_pull_policy": self.opts.image_pull_policy.as_str(),
        });
        if let Some(rc) = self.opts.runtime_class.as_deref().filter(|s| !s.is_empty()) {
            body["runtime_class"] = json!(rc);
        }
        if self.opts.resource_factor != 1 {
            body["resource_factor"] = json!(self.opts.resource_factor);
        }
        body
    }

    fn parse_runtime(&mut self, data: &Value) -> Result<(), ClientError> {
        let id = data
            .get("runtime_id")
            .and_then(Value::as_str)
            .or_else(|| data.get("id").and_then(Value::as_str));
        let url = data.get("url").and_then(Value::as_str);
        let (Some(id), Some(url)) = (id, url) else {
            return Err(ClientError::Protocol(format!(
                "Invalid runtime response: {data}"
            )));
        };
        self.runtime_id = Some(id.to_string());
        self.runtime_url = Some(url.trim_end_matches('/').to_string());
        let key = data
            .get("session_api_key")
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut w = WorkspaceOptions::new(url);
        w.api_key = key;
        self.workspace = RemoteWorkspace::with_options(w)?;
        if self.ticket.is_none() && !self.opts.keep_alive {
            let (base, key, id, pause) = (
                self.opts.runtime_api_url.clone(),
                self.opts.runtime_api_key.clone(),
                id.to_string(),
                self.opts.pause_on_close,
            );
            self.ticket = Some(guard::register(Box::new(move || {
                guard::run_blocking(release_runtime(base, key, id, pause));
            }) as Release));
        }
        Ok(())
    }

    /// Polls `GET /sessions/{session_id}` until `pod_status` is `ready` and `/health` answers.
    async fn wait_until_ready(&self) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.opts.startup_wait_timeout;
        let mut waits = guard::backoff(self.opts.poll_first, self.opts.poll_max);
        let path = format!("/sessions/{}", self.session_id);
        let url = self.runtime_url.clone().unwrap_or_default();
        loop {
            let data: Value = self
                .api(Method::GET, &path, None, self.opts.api_timeout)
                .await?
                .json()
                .await?;
            let status = data
                .get("pod_status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_lowercase();
            let logs = data
                .get("pod_logs")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let why = match status.as_str() {
                "ready" => {
                    if health_ok(&self.http, &url, Duration::from_secs(5)).await {
                        return Ok(());
                    }
                    "runtime ready but its agent server is not healthy yet".to_string()
                }
                "failed" | "unknown" => {
                    return Err(ClientError::Failed(format!(
                        "Runtime failed to start (pod status {status}). Pod logs:\n{logs}"
                    )))
                }
                "crashloopbackoff" => {
                    return Err(ClientError::Failed(format!(
                        "Runtime crashed and is restarting (possibly OOM). Try again.\n{logs}"
                    )))
                }
                s => format!("pod status {s:?}"),
            };
            let wait = waits.next().unwrap_or(self.opts.poll_max);
            if Instant::now() + wait > deadline {
                return Err(ClientError::Timeout(format!(
                    "Runtime {} not ready after {:?}: {why}",
                    self.session_id, self.opts.startup_wait_timeout
                )));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The runtime id.
    pub fn runtime_id(&self) -> Option<&str> {
        self.runtime_id.as_deref()
    }

    /// The session id (reuse it to re-attach).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The workspace API.
    pub fn workspace(&self) -> &RemoteWorkspace {
        &self.workspace
    }

    /// `POST /pause {"runtime_id"}`.
    pub async fn pause(&self) -> Result<(), ClientError> {
        let id = self
            .runtime_id
            .clone()
            .ok_or_else(|| ClientError::State("Cannot pause: runtime is not running".into()))?;
        self.api(
            Method::POST,
            "/pause",
            Some(json!({"runtime_id": id})),
            Duration::from_secs(30),
        )
        .await?;
        Ok(())
    }

    /// `POST /resume {"runtime_id"}`, then the readiness poll.
    pub async fn resume(&self) -> Result<(), ClientError> {
        let id = self
            .runtime_id
            .clone()
            .ok_or_else(|| ClientError::State("Cannot resume: runtime is not running".into()))?;
        self.api(
            Method::POST,
            "/resume",
            Some(json!({"runtime_id": id})),
            self.opts.init_timeout,
        )
        .await?;
        self.wait_until_ready().await
    }

    /// Stops (or pauses, with `pause_on_close`) the runtime unless `keep_alive`.
    pub async fn cleanup(&mut self) -> Result<(), ClientError> {
        if let Some(t) = self.ticket.take() {
            guard::unregister(t);
        }
        let Some(id) = self.runtime_id.take() else {
            return Ok(());
        };
        self.runtime_url = None;
        if self.opts.keep_alive {
            return Ok(());
        }
        release_runtime(
            self.opts.runtime_api_url.clone(),
            self.opts.runtime_api_key.clone(),
            id,
            self.opts.pause_on_close,
        )
        .await;
        Ok(())
    }

    fn release_now(&mut self) {
        if let Some(t) = self.ticket.take() {
            if let Some(release) = guard::unregister(t) {
                release();
            }
        }
        self.runtime_id = None;
    }
}

impl Drop for ApiRemoteWorkspace {
    fn drop(&mut self) {
        self.release_now();
    }
}

/// `POST /stop` (or `/pause`) `{"runtime_id"}`, 30 s; errors are only logged.
async fn release_runtime(base: String, key: String, id: String, pause: bool) {
    let Ok(http) = reqwest::Client::builder().build() else {
        return;
    };
    let what = if pause { "pause" } else { "stop" };
    let res = http
        .post(format!("{base}/{what}"))
        .header("X-API-Key", key)
        .json(&json!({"runtime_id": id}))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    match res {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(status = %r.status(), %id, "releasing the runtime failed"),
        Err(e) => tracing::warn!(error = %e, %id, "releasing the runtime failed"),
    }
}
