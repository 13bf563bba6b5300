//! [`KubernetesWorkspace`] (cargo feature `kubernetes`): claims an agent-server pod from a
//! [kubernetes-sigs/agent-sandbox](https://github.com/kubernetes-sigs/agent-sandbox) warm pool,
//! as the Python SDK's `AgentSandboxWorkspace` does, over the Kubernetes REST API directly (no
//! kubectl, no client library).
//!
//! `start()` creates a `SandboxClaim` (`extensions.agents.x-k8s.io/v1alpha1`) naming a
//! `SandboxTemplate` (the warm pool's), polls the claim until its status names the `Sandbox`,
//! polls that `Sandbox` (`agents.x-k8s.io/v1alpha1`) until its `Ready` condition is true, then
//! waits for `/health` at `host` (a sandbox router or gateway) or at the sandbox's Service
//! (`status.serviceFQDN`, reachable from inside the cluster). `cleanup()` and `Drop` delete the
//! claim (the controller deletes the pod); `pause()`/`resume()` set the Sandbox's
//! `spec.operatingMode`. See ARCHITECTURE.md, "Kubernetes".

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::guard::{self, Release};
use super::workspace::{RemoteWorkspace, WorkspaceOptions};
use super::ClientError;

const CLAIMS: &str = "/apis/extensions.agents.x-k8s.io/v1alpha1";
const SANDBOXES: &str = "/apis/agents.x-k8s.io/v1alpha1";
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Options of [`KubernetesWorkspace::start`].
#[derive(Debug, Clone)]
pub struct KubernetesOptions {
    /// API server base URL, e.g. `https://10.96.0.1:443`.
    pub api_server: String,
    /// Bearer token (a ServiceAccount token allowed to create/get/delete sandboxclaims and
    /// get/patch sandboxes in `namespace`).
    pub token: Option<String>,
    /// PEM CA bundle of the API server (default: the system roots).
    pub ca_cert_pem: Option<Vec<u8>>,
    pub namespace: String,
    /// `SandboxTemplate` to claim from (its `SandboxWarmPool` hands out a running pod).
    pub template: String,
    /// Claim name (default `agent-server-<random>`).
    pub claim_name: Option<String>,
    /// Labels on the claim.
    pub labels: Vec<(String, String)>,
    /// Safety net: the controller deletes the claim this long after creation.
    pub shutdown_after: Option<Duration>,
    /// Agent server URL (router, gateway, port-forward); default `http://<serviceFQDN>:<port>`.
    pub host: Option<String>,
    /// Port of the agent server in the pod.
    pub server_port: u16,
    /// The session key the template's pods run with (e.g. from a Secret).
    pub api_key: Option<String>,
    /// Claim → Ready deadline.
    pub ready_timeout: Duration,
    /// Ready → `/health` deadline.
    pub health_check_timeout: Duration,
    /// Pause between polls of the claim and the sandbox.
    pub poll_interval: Duration,
    pub working_dir: String,
    /// Keep the claim on cleanup and drop.
    pub keep_alive: bool,
}

impl KubernetesOptions {
    /// Options for `api_server` claiming from `template`.
    pub fn new(api_server: impl Into<String>, template: impl Into<String>) -> Self {
        KubernetesOptions {
            api_server: api_server.into(),
            token: None,
            ca_cert_pem: None,
            namespace: "default".into(),
            template: template.into(),
            claim_name: None,
            labels: Vec::new(),
            shutdown_after: None,
            host: None,
            server_port: 8000,
            api_key: None,
            ready_timeout: Duration::from_secs(180),
            health_check_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(500),
            working_dir: "/workspace".into(),
            keep_alive: false,
        }
    }

    /// Options from a pod's ServiceAccount (`KUBERNETES_SERVICE_HOST/PORT`, the mounted token,
    /// CA and namespace).
    pub fn in_cluster(template: impl Into<String>) -> Result<Self, ClientError> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            ClientError::Invalid("not in a cluster: no KUBERNETES_SERVICE_HOST".into())
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let read = |f: &str| {
            let p = format!("{SA_DIR}/{f}");
            std::fs::read(&p).map_err(|e| ClientError::Io { path: p, source: e })
        };
        let mut o = KubernetesOptions::new(format!("https://{host}:{port}"), template);
        o.token = Some(String::from_utf8_lossy(&read("token")?).trim().to_string());
        o.ca_cert_pem = Some(read("ca.crt")?);
        o.namespace = String::from_utf8_lossy(&read("namespace")?)
            .trim()
            .to_string();
        Ok(o)
    }
}

/// The API connection (cheap to clone).
#[derive(Debug, Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    namespace: String,
}

impl Api {
    fn new(o: &KubernetesOptions) -> Result<Self, ClientError> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30));
        if let Some(pem) = &o.ca_cert_pem {
            let cert = reqwest::Certificate::from_pem(pem)
                .map_err(|e| ClientError::Invalid(format!("CA certificate: {e}")))?;
            b = b.add_root_certificate(cert);
        }
        Ok(Api {
            http: b.build()?,
            base: o.api_server.trim_end_matches('/').to_string(),
            token: o.token.clone(),
            namespace: o.namespace.clone(),
        })
    }

    fn claim_path(&self, name: &str) -> String {
        format!(
            "{CLAIMS}/namespaces/{}/sandboxclaims/{name}",
            self.namespace
        )
    }

    fn sandbox_path(&self, name: &str) -> String {
        format!("{SANDBOXES}/namespaces/{}/sandboxes/{name}", self.namespace)
    }

    /// One call; `Ok(None)` for 404, typed errors for other failures.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Value)>,
    ) -> Result<Option<Value>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req = req.header("Accept", "application/json");
        if let Some((content_type, b)) = body {
            req = req.header("Content-Type", content_type).body(b.to_string());
        }
        let resp = req.send().await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let text = resp.text().await?;
        if !status.is_success() {
            // The API server's Status object carries the reason.
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                .unwrap_or(text);
            return Err(ClientError::Status {
                method: method.to_string(),
                url,
                status: status.as_u16(),
                body: msg,
            });
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ClientError::Protocol(format!("{method} {path}: {e}")))
    }

    async fn delete_claim(&self, name: &str) -> Result<(), ClientError> {
        self.call(Method::DELETE, &self.claim_path(name), None)
            .await
            .map(|_| ())
    }
}

/// A claimed agent-sandbox pod running the agent server. Derefs to its [`RemoteWorkspace`].
#[derive(Debug)]
pub struct KubernetesWorkspace {
    workspace: RemoteWorkspace,
    api: Api,
    claim: Option<String>,
    sandbox: String,
    opts: KubernetesOptions,
    ticket: Option<u64>,
}

impl std::ops::Deref for KubernetesWorkspace {
    type Target = RemoteWorkspace;
    fn deref(&self) -> &RemoteWorkspace {
        &self.workspace
    }
}

impl KubernetesWorkspace {
    /// Claims a sandbox, waits for it and for `/health`; deletes the claim again on failure.
    pub async fn start(opts: KubernetesOptions) -> Result<Self, ClientError> {
        let api = Api::new(&opts)?;
        let claim = opts.claim_name.clone().unwrap_or_else(|| {
            format!(
                "agent-server-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..10]
            )
        });
        let mut metadata = json!({"name": claim});
        if !opts.labels.is_empty() {
            metadata["labels"] = Value::Object(
                opts.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            );
        }
        let mut spec = json!({"sandboxTemplateRef": {"name": opts.template}});
        if let Some(after) = opts.shutdown_after {
            let at = chrono::Utc::now()
                + chrono::Duration::from_std(after).unwrap_or(chrono::Duration::MAX);
            spec["lifecycle"] = json!({
                "shutdownTime": at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
                "shutdownPolicy": "Delete",
            });
        }
        let body = json!({
            "apiVersion": "extensions.agents.x-k8s.io/v1alpha1",
            "kind": "SandboxClaim",
            "metadata": metadata,
            "spec": spec,
        });
        let path = format!("{CLAIMS}/namespaces/{}/sandboxclaims", api.namespace);
        api.call(Method::POST, &path, Some(("application/json", body)))
            .await?
            .ok_or_else(|| {
                ClientError::Failed(
                    "the SandboxClaim API is not served (are the agent-sandbox extensions \
                     installed?)"
                        .into(),
                )
            })?;
        let ticket = (!opts.keep_alive).then(|| {
            let (api, claim) = (api.clone(), claim.clone());
            guard::register(Box::new(move || {
                guard::run_blocking(async move {
                    let _ = api.delete_claim(&claim).await;
                })
            }) as Release)
        });
        let mut ws = KubernetesWorkspace {
            workspace: RemoteWorkspace::new("http://unresolved.invalid", None)?,
            api,
            claim: Some(claim),
            sandbox: String::new(),
            opts,
            ticket,
        };
        match ws.wait_ready().await {
            Ok(()) => Ok(ws),
            Err(e) => {
                let _ = ws.cleanup().await;
                Err(e)
            }
        }
    }

    async fn wait_ready(&mut self) -> Result<(), ClientError> {
        let claim = self.claim.clone().unwrap_or_default();
        let deadline = Instant::now() + self.opts.ready_timeout;
        // 1. The claim names its sandbox (adopted from the warm pool or created).
        self.sandbox = loop {
            let c = self
                .api
                .call(Method::GET, &self.api.claim_path(&claim), None)
                .await?
                .ok_or_else(|| ClientError::Failed(format!("SandboxClaim {claim} was deleted")))?;
            if let Some(cond) = condition(&c, "Ready") {
                if cond.get("reason").and_then(Value::as_str) == Some("TemplateNotFound") {
                    return Err(ClientError::Failed(format!(
                        "SandboxTemplate {} not found: {}",
                        self.opts.template,
                        cond.get("message").and_then(Value::as_str).unwrap_or("")
                    )));
                }
            }
            let s = &c["status"]["sandbox"];
            let name = s["name"].as_str().or(s["Name"].as_str()).unwrap_or("");
            if !name.is_empty() {
                break name.to_string();
            }
            self.pause_or_timeout(deadline, "SandboxClaim has no sandbox yet")
                .await?;
        };
        // 2. The sandbox is Ready.
        let sandbox = loop {
            let s = self
                .api
                .call(Method::GET, &self.api.sandbox_path(&self.sandbox), None)
                .await?;
            if let Some(s) = s {
                let ready = condition(&s, "Ready")
                    .is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"));
                if ready {
                    break s;
                }
            }
            self.pause_or_timeout(deadline, "Sandbox is not Ready")
                .await?;
        };
        // 3. The server answers.
        let host = match &self.opts.host {
            Some(h) => h.clone(),
            None => {
                let fqdn = sandbox["status"]["serviceFQDN"].as_str().ok_or_else(|| {
                    ClientError::Protocol(format!(
                        "Sandbox {} is Ready without status.serviceFQDN: set `host`",
                        self.sandbox
                    ))
                })?;
                format!("http://{fqdn}:{}", self.opts.server_port)
            }
        };
        guard::wait_healthy(&host, self.opts.health_check_timeout, || async { Ok(()) })
            .await
            .map_err(|_| {
                ClientError::Timeout(format!(
                    "agent server of Sandbox {} did not answer /health at {host}",
                    self.sandbox
                ))
            })?;
        let mut w = WorkspaceOptions::new(host);
        w.api_key = self.opts.api_key.clone();
        w.working_dir = self.opts.working_dir.clone();
        self.workspace = RemoteWorkspace::with_options(w)?;
        Ok(())
    }

    async fn pause_or_timeout(&self, deadline: Instant, what: &str) -> Result<(), ClientError> {
        if Instant::now() >= deadline {
            return Err(ClientError::Timeout(format!(
                "{what} after {:?} (claim {})",
                self.opts.ready_timeout,
                self.claim.as_deref().unwrap_or("")
            )));
        }
        tokio::time::sleep(self.opts.poll_interval).await;
        Ok(())
    }

    /// The claim's name (`None` after cleanup).
    pub fn claim_name(&self) -> Option<&str> {
        self.claim.as_deref()
    }

    /// The Sandbox the claim was bound to.
    pub fn sandbox_name(&self) -> &str {
        &self.sandbox
    }

    /// Suspends the sandbox (`spec.operatingMode: Suspended`; the pod is deleted, volumes stay).
    pub async fn pause(&self) -> Result<(), ClientError> {
        self.operating_mode("Suspended").await
    }

    /// Resumes a suspended sandbox and waits for it and `/health` again.
    pub async fn resume(&mut self) -> Result<(), ClientError> {
        self.operating_mode("Running").await?;
        self.wait_ready().await
    }

    async fn operating_mode(&self, mode: &str) -> Result<(), ClientError> {
        if self.claim.is_none() {
            return Err(ClientError::State("no active sandbox".into()));
        }
        self.api
            .call(
                Method::PATCH,
                &self.api.sandbox_path(&self.sandbox),
                Some((
                    "application/merge-patch+json",
                    json!({"spec": {"operatingMode": mode}}),
                )),
            )
            .await?
            .map(|_| ())
            .ok_or_else(|| ClientError::State(format!("Sandbox {} is gone", self.sandbox)))
    }

    /// Deletes the claim (unless `keep_alive`); the controller removes the sandbox and pod.
    pub async fn cleanup(&mut self) -> Result<(), ClientError> {
        let Some(claim) = self.claim.clone() else {
            return Ok(());
        };
        if !self.opts.keep_alive {
            self.api.delete_claim(&claim).await?;
        }
        self.claim = None;
        if let Some(t) = self.ticket.take() {
            guard::unregister(t);
        }
        Ok(())
    }
}

impl Drop for KubernetesWorkspace {
    fn drop(&mut self) {
        if let Some(t) = self.ticket.take() {
            if let Some(release) = guard::unregister(t) {
                release();
            }
        }
    }
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}
