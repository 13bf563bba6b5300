//! `POST /api/acp/models`, run as the reference runs it. A discovery starts the ACP server in
//! a throw-away directory, reads its models and stops it. It runs on its own task: a client
//! that leaves does not stop it, and whoever asks next gets its answer. The same request asked
//! while one runs waits for that one; at most two run at once; answers without an `error` are
//! kept five minutes (`refresh` asks again).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Semaphore};

use super::{providers, session_models, start_session, AcpError};
use crate::persist::ScratchDir;

/// How long an answer without an error is reused (the reference's `_CACHE_TTL_SECONDS`).
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Discoveries running at once (the reference's `_MAX_CONCURRENT_DISCOVERIES`).
const MAX_RUNNING: usize = 2;
/// Answers kept at most; the ones closest to expiry leave first.
const MAX_CACHED: usize = 64;
/// Name prefix of a discovery's scratch directory under the conversations directory.
const SCRATCH_PREFIX: &str = ".acp-model-discovery-";

/// One ask: the validated `agent_settings`, the secrets as the server's environment, and
/// whether a kept answer may be used.
#[derive(Debug)]
pub struct Ask {
    pub settings: Value,
    pub env: Vec<(String, String)>,
    pub refresh: bool,
}

/// The model discoveries of one server: those running and the answers kept.
#[derive(Debug)]
pub struct Discoveries {
    /// Where scratch directories go (the conversations directory: the ACP servers share the
    /// conversations' caches there, as in the reference).
    scratch_root: PathBuf,
    state: Mutex<State>,
    running: Semaphore,
}

#[derive(Debug, Default)]
struct State {
    /// Answers by request key, with their expiry.
    kept: HashMap<String, (Instant, Value)>,
    /// Discoveries running, by request key: their answer once sent.
    in_flight: HashMap<String, watch::Receiver<Option<Value>>>,
}

impl Discoveries {
    /// Discoveries with scratch directories under `scratch_root`. Blocking: removes the scratch
    /// directories a killed server left there.
    pub fn new(scratch_root: PathBuf) -> Arc<Self> {
        remove_leftovers(&scratch_root);
        Arc::new(Self {
            scratch_root,
            state: Mutex::default(),
            running: Semaphore::new(MAX_RUNNING),
        })
    }

    /// The `ACPModelDiscovery` answer to `ask`.
    pub async fn discover(self: &Arc<Self>, ask: Ask) -> Value {
        let key = request_key(&ask);
        let mut answer = {
            let mut state = self.state();
            let kept = state
                .kept
                .get(&key)
                .filter(|(expiry, _)| *expiry > Instant::now());
            match kept {
                Some((_, value)) if !ask.refresh => return value.clone(),
                _ => {}
            }
            match state.in_flight.get(&key) {
                Some(answer) => answer.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    state.in_flight.insert(key.clone(), rx.clone());
                    let run = Run {
                        discoveries: self.clone(),
                        key: Some(key),
                    };
                    tokio::spawn(run.run(ask, tx));
                    rx
                }
            }
        };
        let value = match answer.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        };
        value.unwrap_or_else(|| {
            failure(&AcpError::new(
                "ACPInitError",
                "the model discovery stopped before it answered",
            ))
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A discovery's task. Its key leaves the in-flight map when it ends, even by a panic.
struct Run {
    discoveries: Arc<Discoveries>,
    key: Option<String>,
}

impl Run {
    async fn run(mut self, ask: Ask, answer: watch::Sender<Option<Value>>) {
        let value = {
            let _slot = self.discoveries.running.acquire().await;
            discover_models(&ask.settings, &ask.env, &self.discoveries.scratch_root).await
        };
        if let Some(key) = self.key.take() {
            let mut state = self.discoveries.state();
            state.in_flight.remove(&key);
            if value["error"].is_null() {
                keep(&mut state.kept, key, value.clone());
            }
        }
        let _ = answer.send(Some(value));
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.discoveries.state().in_flight.remove(&key);
        }
    }
}

/// Keeps `value` for [`CACHE_TTL`], dropping expired answers (and, over [`MAX_CACHED`], the
/// ones closest to expiry).
fn keep(kept: &mut HashMap<String, (Instant, Value)>, key: String, value: Value) {
    let now = Instant::now();
    kept.retain(|_, (expiry, _)| *expiry > now);
    while kept.len() >= MAX_CACHED {
        let Some(first) = kept
            .iter()
            .min_by_key(|(_, (e, _))| *e)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        kept.remove(&first);
    }
    kept.insert(key, (now + CACHE_TTL, value));
}

/// What tells two asks apart, as the reference's key: the command, its arguments, session mode,
/// data-dir isolation, file secrets and secret values (hashed: no secret is kept in the clear).
fn request_key(ask: &Ask) -> String {
    let s = &ask.settings;
    let mut secrets: Vec<&(String, String)> = ask.env.iter().collect();
    secrets.sort();
    let payload = json!({
        "command": providers::resolve_command(s).unwrap_or_default(),
        "args": s["acp_args"], "session_mode": s["acp_session_mode"],
        "isolate": s["acp_isolate_data_dir"], "file_secrets": s["acp_file_secrets"],
        "secrets": secrets,
    });
    format!("{:x}", Sha256::digest(payload.to_string().as_bytes()))
}

/// Starts the server of `settings` in a throw-away directory under `scratch_root`, reports its
/// models (`ACPModelDiscovery`) and stops it. Failures are reported in the body's `error`, as
/// the reference does.
async fn discover_models(settings: &Value, env: &[(String, String)], scratch_root: &Path) -> Value {
    let scratch =
        ScratchDir::new(scratch_root.join(format!("{SCRATCH_PREFIX}{}", crate::util::hex_id())));
    let workspace = scratch.path().join("workspace");
    let answer = match tokio::fs::create_dir_all(&workspace).await {
        Err(e) => Err(AcpError::new("ACPSpawnError", e.to_string())),
        Ok(()) => start_session(settings, env, &workspace).await,
    };
    let out = match answer {
        Ok(session) => {
            let (current, available, _) = session_models(&session.new_session);
            let switchable = session
                .agent_name
                .as_str()
                .and_then(providers::detect)
                .is_some();
            session.process.kill();
            json!({
                "agent_name": session.agent_name, "agent_version": session.agent_version,
                "current_model_id": current, "available_models": available,
                "supports_runtime_model_switch": switchable, "error": null,
            })
        }
        Err(e) => failure(&e),
    };
    scratch.remove().await;
    out
}

/// An `ACPModelDiscovery` that reports `error`.
fn failure(error: &AcpError) -> Value {
    json!({
        "agent_name": null, "agent_version": null, "current_model_id": null,
        "available_models": [], "supports_runtime_model_switch": false,
        "error": {"code": error.code, "detail": error.detail},
    })
}

/// Removes the scratch directories of discoveries a killed server left under `root`.
fn remove_leftovers(root: &Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(SCRATCH_PREFIX)
        {
            let path = entry.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a leftover ACP model-discovery directory")
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove a leftover ACP model-discovery directory")
                }
            }
        }
    }
}
