//! `KubernetesWorkspace` (feature `kubernetes`) against a recorded Kubernetes API conversation:
//! a fake API server replays `tests/fixtures/kubernetes/*.json` in order and fails on any request
//! that differs (method, path, content type, body, bearer token); the "pod" is a real agent
//! server of ours, reached through `host` as through a sandbox router.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_server::client::{ClientError, KubernetesOptions, KubernetesWorkspace};
use serde_json::{json, Value};

use crate::fakes::Fake;
use crate::support::{ServerOptions, TestServer};

struct Replay {
    fake: Fake,
    left: Arc<Mutex<Vec<Value>>>,
    wrong: Arc<Mutex<Vec<String>>>,
}

impl Replay {
    async fn start(fixture: &str) -> Replay {
        let path = format!(
            "{}/tests/fixtures/kubernetes/{fixture}",
            env!("CARGO_MANIFEST_DIR")
        );
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut exchanges = doc["exchanges"].as_array().unwrap().clone();
        exchanges.reverse();
        let left = Arc::new(Mutex::new(exchanges));
        let wrong = Arc::new(Mutex::new(Vec::new()));
        let (l, w) = (left.clone(), wrong.clone());
        let fake = Fake::start(move |req, _| {
            let Some(ex) = l.lock().unwrap().pop() else {
                w.lock().unwrap().push(format!("unexpected {}", req.line()));
                return (
                    500,
                    json!({"kind": "Status", "message": "not in the recording"}),
                );
            };
            let mut problems = Vec::new();
            if ex["request"] != req.line().as_str() {
                problems.push(format!("expected {}, got {}", ex["request"], req.line()));
            }
            if req.header("authorization") != Some("Bearer test-token") {
                problems.push(format!("{}: no bearer token", req.line()));
            }
            if let Some(ct) = ex.get("content_type") {
                if req.header("content-type") != ct.as_str() {
                    problems.push(format!(
                        "{}: content type {:?}",
                        req.line(),
                        req.header("content-type")
                    ));
                }
            }
            if let Some(body) = ex.get("body") {
                if &req.body != body {
                    problems.push(format!("{}: body {}", req.line(), req.body));
                }
            }
            if !problems.is_empty() {
                w.lock().unwrap().extend(problems);
                return (
                    500,
                    json!({"kind": "Status", "message": "differs from the recording"}),
                );
            }
            (
                ex["status"].as_u64().unwrap() as u16,
                ex["response"].clone(),
            )
        })
        .await;
        Replay { fake, left, wrong }
    }

    fn assert_complete(&self) {
        assert_eq!(*self.wrong.lock().unwrap(), Vec::<String>::new());
        let left: Vec<String> = self
            .left
            .lock()
            .unwrap()
            .iter()
            .rev()
            .map(|e| e["request"].to_string())
            .collect();
        assert_eq!(left, Vec::<String>::new(), "exchanges never requested");
    }
}

fn opts(api: &Replay, template: &str, claim: &str) -> KubernetesOptions {
    let mut o = KubernetesOptions::new(api.fake.url.clone(), template);
    o.token = Some("test-token".into());
    o.namespace = "agents".into();
    o.claim_name = Some(claim.into());
    o.poll_interval = Duration::from_millis(10);
    o.ready_timeout = Duration::from_secs(10);
    o
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_claim_lifecycle_follows_the_recorded_api_conversation() {
    let pod = TestServer::start_with(ServerOptions {
        api_key: Some("pod-key".into()),
        ..Default::default()
    });
    let api = Replay::start("claim-lifecycle.json").await;
    let mut o = opts(&api, "openhands-agent-server", "oh-claim-1");
    o.labels = vec![("app".into(), "openhands".into())];
    o.host = Some(pod.url.clone());
    o.api_key = Some("pod-key".into());
    let mut ws = KubernetesWorkspace::start(o).await.unwrap();
    assert_eq!(ws.claim_name(), Some("oh-claim-1"));
    assert_eq!(ws.sandbox_name(), "openhands-agent-server-pool-x7k2p");
    assert_eq!(ws.host(), pod.url);
    let r = ws
        .execute_command("echo from-the-pod", Some("/tmp"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(r.stdout.trim(), "from-the-pod");
    ws.pause().await.unwrap();
    ws.resume().await.unwrap();
    ws.cleanup().await.unwrap();
    assert_eq!(ws.claim_name(), None);
    api.assert_complete();
    assert!(matches!(ws.pause().await, Err(ClientError::State(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_missing_template_is_reported_and_the_claim_deleted() {
    let api = Replay::start("template-not-found.json").await;
    let o = opts(&api, "no-such-template", "oh-claim-2");
    let err = KubernetesWorkspace::start(o).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "SandboxTemplate no-such-template not found: \
         SandboxTemplate.extensions.agents.x-k8s.io \"no-such-template\" not found"
    );
    api.assert_complete();
}

#[tokio::test(flavor = "multi_thread")]
async fn kubernetes_api_errors_are_typed() {
    // A token the API server refuses: its Status message comes back, nothing else is tried.
    let fake = Fake::start(|_, _| {
        (403, json!({"kind": "Status", "status": "Failure", "reason": "Forbidden",
            "message": "sandboxclaims.extensions.agents.x-k8s.io is forbidden: User \"system:serviceaccount:agents:default\" cannot create resource \"sandboxclaims\"",
            "code": 403}))
    })
    .await;
    let mut o = KubernetesOptions::new(fake.url.clone(), "t");
    o.claim_name = Some("c".into());
    let err = KubernetesWorkspace::start(o).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    assert!(
        err.to_string()
            .contains("cannot create resource \\\"sandboxclaims\\\"")
            || err
                .to_string()
                .contains("cannot create resource \"sandboxclaims\""),
        "{err}"
    );
    assert_eq!(
        fake.lines(),
        ["POST /apis/extensions.agents.x-k8s.io/v1alpha1/namespaces/default/sandboxclaims"]
    );
}
