//! Launchers: Cloud and Runtime-API launchers against local fakes of their APIs (exact request
//! sequences, retries, timeouts, cleanup on failure); Apptainer against a stand-in CLI that checks
//! the real grammar and runs our server; Docker against real containers (`#[ignore]`d; asked for
//! with `--include-ignored`, they fail when the daemon, the base image or the image build is
//! missing or broken); the Python SDK's own DockerWorkspace on our image.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use agent_server::client::{
    ApiRemoteOptions, ApiRemoteWorkspace, ApptainerOptions, ApptainerWorkspace, ClientError,
    CloudOptions, DockerBuild, DockerOptions, DockerWorkspace, OpenHandsCloudWorkspace,
    RemoteWorkspace, SifSource,
};
use serde_json::{json, Map, Value};

use crate::fakes::Fake;
use crate::support::mock_llm::MockLlm;
use crate::support::sdk_python;

const FAST: Duration = Duration::from_millis(10);

// ---------------------------------------------------------------- Cloud API

fn sandbox(base: &str, status: &str) -> Value {
    json!({
        "id": "sb1", "created_by_user_id": "u", "sandbox_spec_id": "spec", "status": status,
        "session_api_key": "sess-1", "created_at": "2026-11-25T00:00:00",
        "exposed_urls": if status == "RUNNING" {
            json!([{"name": "VSCODE", "url": format!("{base}/vscode"), "port": 1},
                   {"name": "AGENT_SERVER", "url": format!("{base}/agent/"), "port": 2}])
        } else { Value::Null },
    })
}

fn cloud_opts(fake: &Fake) -> CloudOptions {
    let mut o = CloudOptions::new(format!("{}/", fake.url), "cloud-key");
    o.poll_first = FAST;
    o.poll_max = FAST;
    o
}

fn cloud_api(req: &crate::fakes::Req, base: &str, statuses: &[&str]) -> (u16, Value) {
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/api/v1/sandboxes") => (200, sandbox(base, "STARTING")),
        ("POST", "/api/v1/sandboxes/sb1/resume") => (200, json!({"success": true})),
        ("GET", "/api/v1/sandboxes") => {
            let s = statuses[req.nth.min(statuses.len() - 1)];
            (200, json!([sandbox(base, s)]))
        }
        ("GET", "/agent/health") => (200, json!({"status": "ok"})),
        ("GET", "/api/v1/users/me") => (
            200,
            json!({"llm_model": "litellm_proxy/claude", "llm_api_key": "llm-secret",
                   "llm_base_url": null,
                   "llm_profiles": {"profiles": {"fast": {"model": "small", "temperature": 0.0}}}}),
        ),
        ("GET", "/api/v1/sandboxes/sb1/settings/secrets") => (
            200,
            json!({"secrets": [{"name": "github_token", "description": "GitHub"},
                               {"name": "other", "description": null}]}),
        ),
        ("DELETE", "/api/v1/sandboxes/sb1") => (200, json!({"success": true})),
        _ => (404, json!({"detail": "Not Found"})),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_creates_polls_serves_settings_and_deletes() {
    let fake = Fake::start(|r, b| cloud_api(r, b, &["STARTING", "RUNNING"])).await;
    let mut o = cloud_opts(&fake);
    o.sandbox_spec_id = Some("spec".into());
    let mut ws = OpenHandsCloudWorkspace::start(o).await.unwrap();
    assert_eq!(ws.host(), format!("{}/agent", fake.url));
    assert_eq!(ws.api_key(), Some("sess-1"));
    assert_eq!(ws.working_dir(), "/workspace/project");
    assert_eq!(ws.sandbox_id(), Some("sb1"));

    let llm = ws.get_llm(None, Map::new()).await.unwrap();
    assert_eq!(
        Value::Object(llm),
        json!({"model": "litellm_proxy/claude", "api_key": "llm-secret"})
    );
    let mut over = Map::new();
    over.insert("temperature".into(), json!(0.5));
    let prof = ws.get_llm(Some("fast"), over).await.unwrap();
    assert_eq!(
        Value::Object(prof),
        json!({"model": "small", "temperature": 0.5, "usage_id": "profile:fast"})
    );
    let secrets = ws.get_secrets(Some(&["github_token"])).await.unwrap();
    assert_eq!(
        Value::Object(secrets),
        json!({"github_token": {
            "kind": "LookupSecret",
            "url": format!("{}/api/v1/sandboxes/sb1/settings/secrets/github_token", fake.url),
            "headers": {"X-Session-API-Key": "sess-1"}, "description": "GitHub"}})
    );
    ws.cleanup().await.unwrap();
    assert!(matches!(ws.resume().await, Err(ClientError::State(_))));

    assert_eq!(
        fake.lines(),
        [
            "POST /api/v1/sandboxes?sandbox_spec_id=spec",
            "GET /api/v1/sandboxes?id=sb1",
            "GET /api/v1/sandboxes?id=sb1",
            "GET /agent/health",
            "GET /api/v1/users/me?expose_secrets=true",
            "GET /api/v1/users/me?expose_secrets=true",
            "GET /api/v1/sandboxes/sb1/settings/secrets",
            "DELETE /api/v1/sandboxes/sb1?sandbox_id=sb1",
        ]
    );
    for r in fake.requests() {
        match r.path.as_str() {
            "/agent/health" => assert_eq!(r.header("authorization"), None),
            "/api/v1/sandboxes/sb1/settings/secrets" => {
                assert_eq!(r.header("authorization"), None);
                assert_eq!(r.header("x-session-api-key"), Some("sess-1"));
            }
            "/api/v1/users/me" => {
                assert_eq!(r.header("authorization"), Some("Bearer cloud-key"));
                assert_eq!(r.header("x-session-api-key"), Some("sess-1"));
            }
            _ => assert_eq!(
                r.header("authorization"),
                Some("Bearer cloud-key"),
                "{}",
                r.line()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_failed_start_deletes_the_sandbox() {
    let fake = Fake::start(|r, b| cloud_api(r, b, &["STARTING", "ERROR"])).await;
    let err = OpenHandsCloudWorkspace::start(cloud_opts(&fake))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Sandbox failed with status: ERROR");
    assert_eq!(
        fake.lines().last().unwrap(),
        "DELETE /api/v1/sandboxes/sb1?sandbox_id=sb1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_poll_budget_and_keep_alive_and_resume() {
    // Never ready: the readiness budget ends the start, and keep_alive keeps the sandbox.
    let fake = Fake::start(|r, b| cloud_api(r, b, &["STARTING"])).await;
    let mut o = cloud_opts(&fake);
    o.ready_timeout = Duration::from_millis(200);
    o.keep_alive = true;
    let err = OpenHandsCloudWorkspace::start(o).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    assert!(fake.lines().iter().all(|l| !l.starts_with("DELETE")));

    // An existing sandbox id is resumed, not created; it is deleted on drop.
    let fake = Fake::start(|r, b| cloud_api(r, b, &["PAUSED", "RUNNING"])).await;
    let mut o = cloud_opts(&fake);
    o.sandbox_id = Some("sb1".into());
    let ws = OpenHandsCloudWorkspace::start(o).await.unwrap();
    drop(ws);
    assert_eq!(
        fake.lines(),
        [
            "POST /api/v1/sandboxes/sb1/resume",
            "GET /api/v1/sandboxes?id=sb1",
            "POST /api/v1/sandboxes/sb1/resume",
            "GET /api/v1/sandboxes?id=sb1",
            "GET /agent/health",
            "DELETE /api/v1/sandboxes/sb1?sandbox_id=sb1",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cloud_http_errors_are_typed_and_not_retried_while_polling() {
    let fake = Fake::start(|r, _| match r.path.as_str() {
        "/api/v1/sandboxes" if r.method == "POST" => (401, json!({"detail": "bad key"})),
        _ => (500, json!({})),
    })
    .await;
    let err = OpenHandsCloudWorkspace::start(cloud_opts(&fake))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(fake.lines(), ["POST /api/v1/sandboxes"]);
}

// ---------------------------------------------------------------- Runtime API

fn runtime_api(req: &crate::fakes::Req, base: &str, pods: &[&str]) -> (u16, Value) {
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/sessions/s1") if req.nth == 0 => (404, json!({"detail": "not found"})),
        ("GET", "/sessions/s1") => {
            let s = pods[(req.nth - 1).min(pods.len() - 1)];
            (
                200,
                json!({"status": "running", "pod_status": s, "pod_logs": "oom killed",
                         "runtime_id": "rt1", "url": format!("{base}/rt")}),
            )
        }
        ("POST", "/start") => (
            200,
            json!({"runtime_id": "rt1", "url": format!("{base}/rt"), "session_api_key": "rk"}),
        ),
        ("POST", "/pause" | "/resume" | "/stop") => (200, json!({})),
        ("GET", "/rt/health") => (200, json!({"status": "ok"})),
        _ => (404, json!({})),
    }
}

fn runtime_opts(fake: &Fake) -> ApiRemoteOptions {
    let mut o = ApiRemoteOptions::new(&fake.url, "rt-key", "img:1");
    o.session_id = Some("s1".into());
    o.poll_first = FAST;
    o.poll_max = FAST;
    o
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_api_starts_waits_pauses_resumes_and_stops() {
    let fake = Fake::start(|r, b| runtime_api(r, b, &["pending", "running", "ready"])).await;
    std::env::set_var("AGENT_SERVER_TEST_FORWARDED", "fwd");
    let mut o = runtime_opts(&fake);
    o.forward_env = vec![
        "AGENT_SERVER_TEST_FORWARDED".into(),
        "NOT_SET_ANYWHERE_X".into(),
    ];
    o.resource_factor = 2;
    let mut ws = ApiRemoteWorkspace::start(o).await.unwrap();
    assert_eq!(ws.host(), format!("{}/rt", fake.url));
    assert_eq!(ws.api_key(), Some("rk"));
    assert_eq!(ws.runtime_id(), Some("rt1"));
    ws.pause().await.unwrap();
    ws.resume().await.unwrap();
    ws.cleanup().await.unwrap();
    assert_eq!(
        fake.lines(),
        [
            "GET /sessions/s1",
            "POST /start",
            "GET /sessions/s1",
            "GET /sessions/s1",
            "GET /sessions/s1",
            "GET /rt/health",
            "POST /pause",
            "POST /resume",
            "GET /sessions/s1",
            "GET /rt/health",
            "POST /stop",
        ]
    );
    let reqs = fake.requests();
    for r in reqs.iter().filter(|r| !r.path.starts_with("/rt")) {
        assert_eq!(r.header("x-api-key"), Some("rt-key"), "{}", r.line());
        assert_eq!(r.header("x-session-api-key"), None, "{}", r.line());
    }
    assert_eq!(
        reqs[1].body,
        json!({"image": "img:1", "command": "/usr/local/bin/openhands-agent-server --port 60000",
               "working_dir": "/", "environment": {"AGENT_SERVER_TEST_FORWARDED": "fwd"},
               "session_id": "s1", "run_as_user": 10001, "fs_group": 10001,
               "image_pull_policy": "IfNotPresent", "runtime_class": "sysbox-runc",
               "resource_factor": 2})
    );
    for r in reqs
        .iter()
        .filter(|r| r.method == "POST" && r.path != "/start")
    {
        assert_eq!(r.body, json!({"runtime_id": "rt1"}));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_api_crash_stops_the_runtime_and_reports_logs() {
    let fake = Fake::start(|r, b| runtime_api(r, b, &["pending", "CrashLoopBackOff"])).await;
    let err = ApiRemoteWorkspace::start(runtime_opts(&fake))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("possibly OOM") && msg.contains("oom killed"),
        "{msg}"
    );
    assert_eq!(fake.lines().last().unwrap(), "POST /stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_api_times_out_attaches_and_validates() {
    // Pending forever: the startup budget ends it; pause_on_close pauses instead of stopping.
    let fake = Fake::start(|r, b| runtime_api(r, b, &["pending"])).await;
    let mut o = runtime_opts(&fake);
    o.startup_wait_timeout = Duration::from_millis(150);
    o.pause_on_close = true;
    let err = ApiRemoteWorkspace::start(o).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    assert_eq!(fake.lines().last().unwrap(), "POST /pause");

    // A running session is attached without /start; keep_alive leaves it alone.
    let fake = Fake::start(|r, b| {
        if r.path == "/sessions/s1" {
            (
                200,
                json!({"status": "running", "pod_status": "ready", "runtime_id": "rt9",
                         "url": format!("{b}/rt"), "session_api_key": "k9"}),
            )
        } else {
            runtime_api(r, b, &["ready"])
        }
    })
    .await;
    let mut o = runtime_opts(&fake);
    o.keep_alive = true;
    let ws = ApiRemoteWorkspace::start(o).await.unwrap();
    assert_eq!(ws.runtime_id(), Some("rt9"));
    assert_eq!(ws.api_key(), Some("k9"));
    drop(ws);
    assert_eq!(
        fake.lines(),
        ["GET /sessions/s1", "GET /sessions/s1", "GET /rt/health"]
    );

    let mut o = runtime_opts(&fake);
    o.resource_factor = 3;
    assert!(matches!(
        ApiRemoteWorkspace::start(o).await,
        Err(ClientError::Invalid(_))
    ));
}

// ---------------------------------------------------------------- Apptainer (stand-in CLI)

/// A per-test wrapper around the stand-in CLI (its settings must not leak between tests).
fn fake_apptainer(dir: &Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let real = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fakes/apptainer");
    let wrapper = dir.join("apptainer");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport FAKE_APPTAINER_LOG='{}' FAKE_APPTAINER_SERVER='{}'\nexec '{}' \"$@\"\n",
            dir.join("calls.log").display(),
            env!("CARGO_BIN_EXE_agent-server"),
            real.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper.display().to_string()
}

#[tokio::test]
async fn apptainer_pulls_once_runs_the_server_and_kills_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let mut o = ApptainerOptions::new(SifSource::Image("docker-daemon://agent-server:ci".into()));
    o.apptainer = fake_apptainer(dir.path());
    o.cache_dir = Some(dir.path().join("cache"));
    o.api_key = Some("app-key".into());
    o.mount_dir = Some(dir.path().to_path_buf());
    o.extra_bind_mounts = vec![format!("{}:/data:ro", dir.path().display())];
    o.detach_logs = false;
    let mut ws = ApptainerWorkspace::start(o.clone()).await.unwrap();
    assert!(ws.alive().await);
    assert_eq!(ws.api_key(), Some("app-key"));
    let sif = ws.sif().to_path_buf();
    assert_eq!(
        sif,
        dir.path().join("cache/docker-daemon_agent-server_ci.sif")
    );
    // The key reached the server through APPTAINERENV_*, not the command line.
    let unauth = RemoteWorkspace::new(ws.host(), None).unwrap();
    let err = unauth.get_command_output(None).await.unwrap_err();
    assert_eq!(err.status(), Some(401));
    let port = ws.host_port();
    ws.cleanup().await.unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    // Second start reuses the cached SIF; dropping the workspace kills the server too.
    let ws = ApptainerWorkspace::start(o).await.unwrap();
    let port = ws.host_port();
    drop(ws);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let calls = std::fs::read_to_string(&log).unwrap();
    let verbs: Vec<_> = calls
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        verbs,
        ["version", "pull", "run", "version", "run"],
        "{calls}"
    );
    assert!(
        !calls.contains("app-key"),
        "the key leaked onto a command line: {calls}"
    );
}

#[tokio::test]
async fn apptainer_reports_a_server_that_dies() {
    let dir = tempfile::tempdir().unwrap();
    let sif = dir.path().join("bad.sif");
    // A SIF whose "server" exits at once.
    std::fs::write(&sif, "FAKE-SIF /bin/false\n").unwrap();
    let mut o = ApptainerOptions::new(SifSource::File(sif));
    o.apptainer = fake_apptainer(dir.path());
    o.detach_logs = false;
    let err = ApptainerWorkspace::start(o).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("Container process stopped unexpectedly with exit code 1"),
        "{err}"
    );
    let mut o = ApptainerOptions::new(SifSource::File(dir.path().join("missing.sif")));
    o.apptainer = fake_apptainer(dir.path());
    assert!(matches!(
        ApptainerWorkspace::start(o).await,
        Err(ClientError::Invalid(_))
    ));
}

#[tokio::test]
#[ignore = "needs the apptainer CLI (not packaged for Debian) and Docker with the base image; run with --include-ignored"]
async fn apptainer_real_cli_when_installed() {
    let out = std::process::Command::new("apptainer")
        .arg("version")
        .output()
        .expect("no `apptainer` on PATH");
    assert!(out.status.success(), "`apptainer version` failed");
    let image = docker_image();
    let dir = tempfile::tempdir().unwrap();
    let mut o = ApptainerOptions::new(SifSource::Image(format!("docker-daemon://{image}")));
    o.cache_dir = Some(dir.path().to_path_buf());
    o.api_key = Some("k".into());
    let mut ws = ApptainerWorkspace::start(o).await.unwrap();
    assert!(ws.alive().await);
    ws.cleanup().await.unwrap();
}

// ---------------------------------------------------------------- Docker (real)

/// Base image for test images (built by images/ci-setup.sh with debootstrap).
fn base_image() -> String {
    std::env::var("AGENT_SERVER_BASE_IMAGE").unwrap_or_else(|_| "agent-server-base:bookworm".into())
}

fn docker_ok() -> Result<(), String> {
    let out = std::process::Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map_err(|e| format!("no docker CLI ({e})"))?;
    if !out.status.success() {
        return Err("no Docker daemon reachable".into());
    }
    let base = std::process::Command::new("docker")
        .args(["image", "inspect", &base_image()])
        .output()
        .map_err(|e| e.to_string())?;
    if !base.status.success() {
        return Err(format!(
            "base image {} missing (images/ci-setup.sh builds it)",
            base_image()
        ));
    }
    Ok(())
}

/// Builds (once per test run) an image from the binary under test, through DockerWorkspace's own
/// build path (the Dockerfile's `prebuilt` target). Panics with the reason when Docker, the base
/// image or the build fails: the tests that call it are `#[ignore]`d unless asked for.
fn docker_image() -> String {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    let res = IMAGE.get_or_init(|| {
        docker_ok()?;
        let ctx =
            std::env::temp_dir().join(format!("agent-server-test-ctx-{}", std::process::id()));
        std::fs::create_dir_all(&ctx).map_err(|e| e.to_string())?;
        std::fs::copy(env!("CARGO_BIN_EXE_agent-server"), ctx.join("agent-server"))
            .map_err(|e| e.to_string())?;
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile"),
            ctx.join("Dockerfile"),
        )
        .map_err(|e| e.to_string())?;
        let tag = "agent-server:test-local".to_string();
        let build = DockerBuild {
            context: ctx.clone(),
            dockerfile: None,
            target: Some("prebuilt".into()),
            build_args: vec![("BASE_IMAGE".into(), base_image())],
            tag: tag.clone(),
        };
        // Build through a throwaway start: the image is what we want; the container is removed.
        // (Own thread and runtime: callers may be inside a runtime already.)
        let started = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            let o = DockerOptions {
                build: Some(build),
                detach_logs: false,
                ..Default::default()
            };
            rt.block_on(async {
                let mut ws = DockerWorkspace::start(o).await?;
                ws.cleanup().await
            })
            .map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "image build thread panicked".to_string())?;
        let _ = std::fs::remove_dir_all(&ctx);
        started?;
        Ok(tag)
    });
    match res {
        Ok(t) => t.clone(),
        Err(e) => panic!("Docker image for the launcher tests: {e}"),
    }
}

fn containers_named(name: &str) -> String {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("name={name}"),
            "--format",
            "{{.Names}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn docker_opts(image: &str) -> DockerOptions {
    let mut o = DockerOptions::image(image);
    o.api_key = Some("docker-key".into());
    o.detach_logs = false;
    o.health_check_timeout = Duration::from_secs(30);
    o
}

#[tokio::test]
#[ignore = "needs Docker and the base image (images/ci-setup.sh); run with --include-ignored"]
async fn docker_runs_pauses_resumes_and_removes_the_container() {
    let image = docker_image();
    let mut ws = DockerWorkspace::start(docker_opts(&image)).await.unwrap();
    let name = ws.name().to_string();
    assert!(ws.host().starts_with("http://127.0.0.1:"));
    assert_eq!(ws.api_key(), Some("docker-key"));
    assert!(ws.alive().await);
    let info = ws.server_info().await.unwrap();
    assert!(info.get("uptime").is_some(), "{info}");
    // Auth is on: a client without the key is refused.
    let anon = RemoteWorkspace::new(ws.host(), None).unwrap();
    assert_eq!(
        anon.get_command_output(None).await.unwrap_err().status(),
        Some(401)
    );
    ws.pause().await.unwrap();
    assert!(!ws.alive().await);
    ws.resume().await.unwrap();
    assert!(ws.alive().await);
    ws.cleanup().await.unwrap();
    assert_eq!(containers_named(&name), "");
    assert!(matches!(ws.pause().await, Err(ClientError::State(_))));
}

#[tokio::test]
#[ignore = "needs Docker and the base image (images/ci-setup.sh); run with --include-ignored"]
async fn docker_workspace_runs_commands_files_and_git() {
    let image = docker_image();
    let host_dir = tempfile::tempdir().unwrap();
    std::fs::write(host_dir.path().join("from-host.txt"), "mounted\n").unwrap();
    std::env::set_var("AGENT_SERVER_TEST_FWD", "forwarded-value");
    let mut o = docker_opts(&image);
    o.forward_env = vec!["AGENT_SERVER_TEST_FWD".into()];
    o.env = vec![("AGENT_SERVER_TEST_SET".into(), "set-value".into())];
    o.volumes = vec![format!("{}:/mnt/host:ro", host_dir.path().display())];
    let mut ws = DockerWorkspace::start(o).await.unwrap();
    let mut chunks = Vec::new();
    let r = ws
        .execute_command_streaming(
            "echo out; echo err >&2; id -u; exit 3",
            Some("/tmp"),
            Duration::from_secs(20),
            |o, e| chunks.push((o.to_string(), e.to_string())),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 3);
    assert_eq!(r.stdout, "out\n10001\n");
    assert_eq!(r.stderr, "err\n");
    assert!(!r.timeout_occurred);
    assert!(!chunks.is_empty());
    let r = ws
        .execute_command(
            "echo $AGENT_SERVER_TEST_FWD $AGENT_SERVER_TEST_SET; cat /mnt/host/from-host.txt",
            None,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, "forwarded-value set-value\nmounted\n", "{r:?}");
    let slow = ws
        .execute_command("sleep 30", None, Duration::from_secs(1))
        .await
        .unwrap();
    assert!(slow.timeout_occurred);
    assert_eq!(slow.exit_code, -1);

    // Files, both ways, 3 MiB.
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("big.bin");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let up = ws
        .file_upload(&local, "/workspace/project/big.bin")
        .await
        .unwrap();
    assert_eq!(up.file_size, Some(data.len() as u64));
    let back = dir.path().join("sub/back.bin");
    ws.file_download("/workspace/project/big.bin", &back)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // Git.
    let r = ws
        .execute_command(
            "cd /workspace/project && git init -q && git -c user.email=a@b -c user.name=a commit -q --allow-empty -m init && echo hi > new.txt",
            None,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
    let changes = ws.git_changes("project").await.unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.path.ends_with("new.txt") && c.status == "ADDED"),
        "{changes:?}"
    );
    let diff = ws.git_diff("project/new.txt").await.unwrap();
    assert_eq!(diff.modified.as_deref().map(str::trim_end), Some("hi"));
    ws.cleanup().await.unwrap();
}

#[test]
#[ignore = "needs Docker and the base image (images/ci-setup.sh); run with --include-ignored"]
fn docker_container_is_removed_after_a_panic() {
    let image = docker_image();
    let name = format!("agent-server-panic-{}", std::process::id());
    let n2 = name.clone();
    let joined = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let mut o = docker_opts(&image);
            o.name = Some(n2.clone());
            let _ws = DockerWorkspace::start(o).await.unwrap();
            assert_eq!(containers_named(&n2), n2);
            panic!("test panic while the container runs");
        })
    })
    .join();
    assert!(joined.is_err());
    assert_eq!(containers_named(&name), "");
}

#[tokio::test]
#[ignore = "needs Docker and the base image (images/ci-setup.sh); run with --include-ignored"]
async fn docker_failed_start_leaves_no_container() {
    let image = docker_image();
    let name = format!("agent-server-fail-{}", std::process::id());
    let mut o = docker_opts(&image);
    o.name = Some(name.clone());
    // The "server" exits at once.
    o.extra_run_args = vec!["--entrypoint".into(), "/bin/false".into()];
    let err = DockerWorkspace::start(o).await.unwrap_err();
    assert!(matches!(err, ClientError::Failed(_)), "{err}");
    assert_eq!(containers_named(&name), "");

    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let mut o = docker_opts(&image);
    o.host_port = Some(busy.local_addr().unwrap().port());
    let err = DockerWorkspace::start(o).await.unwrap_err();
    assert!(err.to_string().contains("is not available"), "{err}");
}

#[test]
#[ignore = "needs Docker and the agent-server image (images/ci-setup.sh); run with --include-ignored"]
fn launch_docker_detached_prints_url_and_key() {
    let image = docker_image();
    // As the README shows it: `eval` in a shell exports the prefixed variables and leaves the
    // shell's own ones alone.
    let script = format!(
        "CONTAINER_NAME=mine; eval \"$('{}' launch docker -d --api-key launch-key '{image}')\" || exit 9; \
         printf '%s\\n' \"$AGENT_SERVER_URL\" \"$AGENT_SERVER_API_KEY\" \"$AGENT_SERVER_CONTAINER_NAME\" \"$CONTAINER_NAME\"",
        env!("CARGO_BIN_EXE_agent-server")
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let [url, key, name, mine] = lines[..] else {
        panic!("{stdout}")
    };
    assert!(url.starts_with("http://127.0.0.1:"), "{stdout}");
    assert_eq!((key, mine), ("launch-key", "mine"));
    let name = name.to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let alive = rt.block_on(async {
        let ws = RemoteWorkspace::new(url, Some("launch-key".into())).unwrap();
        ws.alive().await && ws.server_info().await.is_ok()
    });
    assert_eq!(containers_named(&name), name);
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &name])
        .output();
    assert!(alive);

    // --json: one object with the same facts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent-server"))
        .args([
            "launch",
            "docker",
            "-d",
            "--json",
            "--api-key",
            "k2",
            &image,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = v["container_name"].as_str().unwrap().to_string();
    assert_eq!(v["api_key"], "k2");
    assert!(v["url"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    assert_eq!(containers_named(&name), name);
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &name])
        .output();
}

/// `launch docker -v DIR:/workspace/project` with DIR owned by an ordinary user: the server runs
/// as that user and writes the mounted workspace (the image's own user could not).
#[test]
#[ignore = "needs Docker and the base image (images/ci-setup.sh); run with --include-ignored"]
fn launch_docker_mounted_workspace_is_writable() {
    use std::os::unix::fs::MetadataExt;
    let image = docker_image();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(4321), Some(4321)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_agent-server"))
        .args(["launch", "docker", "-d", "--json", "--api-key", "mk", "-v"])
        .arg(format!("{}:/workspace/project", dir.path().display()))
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let name = v["container_name"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let r = rt.block_on(async {
        let ws = RemoteWorkspace::new(v["url"].as_str().unwrap(), Some("mk".into())).unwrap();
        ws.execute_command(
            "echo made > /workspace/project/made.txt && id -u",
            None,
            Duration::from_secs(30),
        )
        .await
    });
    let _ = std::process::Command::new("docker")
        .args(["rm", "-f", &name])
        .output();
    let r = r.unwrap();
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "4321\n"), "{r:?}");
    let made = dir.path().join("made.txt");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "made\n");
    assert_eq!(std::fs::metadata(&made).unwrap().uid(), 4321);
}

#[test]
#[ignore = "needs Docker and the base image (images/ci-setup.sh); run with --include-ignored"]
fn launch_docker_foreground_removes_the_container_on_ctrl_c() {
    let image = docker_image();
    let name = format!("agent-server-fg-{}", std::process::id());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agent-server"))
        .args(["launch", "docker", "-q", "--name", &name, &image])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(
        first.starts_with("export AGENT_SERVER_URL='http://127.0.0.1:"),
        "{first}"
    );
    assert_eq!(containers_named(&name), name);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(containers_named(&name), "");
}

// ---------------------------------------------------------------- the Python SDK on our image

/// PATH for the Python SDK with a `docker` shim in front (see the comment inside).
fn python_path_with_docker_shim() -> String {
    // The SDK always asks for `--ulimit nofile=65536:65536`; where the machine's hard limit is
    // lower (sandboxes without CAP_SYS_RESOURCE) Docker refuses, so a `docker` shim first on PATH
    // drops just that pair there. Everything else reaches the real CLI untouched.
    let shim_dir = tempfile::tempdir().unwrap().keep();
    let real_docker = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v docker"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    std::fs::write(
        shim_dir.as_path().join("docker"),
        format!(
            "#!/usr/bin/env bash\nargs=()\nwhile (($#)); do\n  if [[ $1 == --ulimit && $2 == nofile=65536:65536 ]] && (( $(ulimit -Hn) < 65536 )); then shift 2; continue; fi\n  args+=(\"$1\"); shift\ndone\nexec '{}' \"${{args[@]}}\"\n",
            real_docker.trim()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            shim_dir.as_path().join("docker"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
    format!(
        "{}:{}",
        shim_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
#[ignore = "needs Docker, the base image (images/ci-setup.sh) and the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn python_sdk_docker_workspace_drives_our_image() {
    let image = docker_image();
    let python = sdk_python();
    let script = r#"
import sys
from openhands.workspace import DockerWorkspace
with DockerWorkspace(server_image=sys.argv[1], detach_logs=False, health_check_timeout=60) as ws:
    r = ws.execute_command("echo hello-from-sdk; pwd", cwd="/tmp", timeout=30)
    print("RESULT", r.exit_code, repr(r.stdout), flush=True)
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, &image])
        .env("PATH", python_path_with_docker_shim())
        .env_remove("OH_SESSION_API_KEYS_0")
        .env("SESSION_API_KEY", "py-key")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("RESULT 0 'hello-from-sdk\\n/tmp\\n'"),
        "{stdout}\n{stderr}"
    );
}

// ---------------------------------------------------------------- RemoteConversation (fake server)

mod conversation_fake {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
    use axum::extract::{Path, State};
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::{json, Value};
    use tokio::sync::broadcast;

    /// A conversation server that, during a run, drops every events socket after two events and
    /// publishes two more while the client is away.
    #[derive(Clone)]
    pub struct Conv {
        pub log: Arc<Mutex<Vec<Value>>>,
        status: Arc<Mutex<String>>,
        tx: broadcast::Sender<Option<Value>>,
        pub connects: Arc<Mutex<u32>>,
    }

    fn event(n: usize, kind: &str) -> Value {
        json!({"id": format!("ev-{n:03}"), "timestamp": format!("2026-11-25T10:00:{n:02}.000000"),
               "source": "agent", "kind": kind})
    }

    impl Conv {
        fn publish(&self, ev: Value) {
            self.log.lock().unwrap().push(ev.clone());
            let _ = self.tx.send(Some(ev));
        }

        fn status_event(&self, n: usize, status: &str) -> Value {
            *self.status.lock().unwrap() = status.into();
            let mut e = event(n, "ConversationStateUpdateEvent");
            e["key"] = json!("execution_status");
            e["value"] = json!(status);
            e
        }

        fn full_state(&self) -> Value {
            json!({"id": uuid::Uuid::new_v4().simple().to_string(), "timestamp": "2026-11-25T10:59:59",
                   "source": "environment", "kind": "ConversationStateUpdateEvent", "key": "full_state",
                   "value": {"execution_status": *self.status.lock().unwrap()}})
        }
    }

    pub async fn start() -> (String, Conv) {
        let conv = Conv {
            log: Arc::new(Mutex::new(Vec::new())),
            status: Arc::new(Mutex::new("idle".into())),
            tx: broadcast::channel(64).0,
            connects: Arc::new(Mutex::new(0)),
        };
        let app = Router::new()
            .route(
                "/api/conversations",
                post(|| async { (axum::http::StatusCode::CREATED, Json(json!({"id": "c1"}))) }),
            )
            .route(
                "/api/conversations/{id}",
                get(|State(c): State<Conv>| async move {
                    Json(json!({"id": "c1", "execution_status": *c.status.lock().unwrap()}))
                }),
            )
            .route(
                "/api/conversations/{id}/events/search",
                get(
                    |State(c): State<Conv>,
                     axum::extract::Query(q): axum::extract::Query<
                        std::collections::HashMap<String, String>,
                    >| async move {
                        // Two per page, to exercise paging.
                        let log = c.log.lock().unwrap().clone();
                        let start = q
                            .get("page_id")
                            .and_then(|p| log.iter().position(|e| e["id"] == p.as_str()))
                            .unwrap_or(0);
                        let items: Vec<Value> = log.iter().skip(start).take(2).cloned().collect();
                        let next = log.get(start + 2).map(|e| e["id"].clone());
                        Json(json!({"items": items, "next_page_id": next}))
                    },
                ),
            )
            .route(
                "/api/conversations/{id}/events",
                post(|State(c): State<Conv>, Json(body): Json<Value>| async move {
                    let n = c.log.lock().unwrap().len();
                    let mut e = event(n, "MessageEvent");
                    e["source"] = json!("user");
                    e["llm_message"] = body;
                    c.publish(e);
                    Json(json!({"success": true}))
                }),
            )
            .route(
                "/api/conversations/{id}/run",
                post(|State(c): State<Conv>| async move {
                    tokio::spawn(run(c));
                    Json(json!({"success": true}))
                }),
            )
            .route(
                "/sockets/events/{id}",
                get(
                    |State(c): State<Conv>, Path(_id): Path<String>, ws: WebSocketUpgrade| async move {
                        ws.on_upgrade(move |s| socket(c, s))
                    },
                ),
            )
            .with_state(conv.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (url, conv)
    }

    async fn socket(c: Conv, mut s: WebSocket) {
        let mut rx = c.tx.subscribe();
        *c.connects.lock().unwrap() += 1;
        let _ = s.send(Message::text(c.full_state().to_string())).await;
        while let Ok(item) = rx.recv().await {
            match item {
                Some(ev) => {
                    if s.send(Message::text(ev.to_string())).await.is_err() {
                        return;
                    }
                }
                None => return, // dropped without a close frame, like a network failure
            }
        }
    }

    async fn run(c: Conv) {
        let n = c.log.lock().unwrap().len();
        c.publish(c.status_event(n, "running"));
        c.publish(event(n + 1, "ActionEvent"));
        c.publish(event(n + 2, "ObservationEvent"));
        let _ = c.tx.send(None);
        // Published while no socket is connected: only REST can deliver these.
        tokio::time::sleep(Duration::from_millis(30)).await;
        c.publish(event(n + 3, "ActionEvent"));
        c.publish(event(n + 4, "ObservationEvent"));
        while c.tx.receiver_count() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        c.publish(event(n + 5, "MessageEvent"));
        c.publish(c.status_event(n + 6, "finished"));
        let _ = c.tx.send(Some(c.full_state()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn conversation_run_survives_a_dropped_socket_without_losing_events() {
    use agent_server::client::{
        event_id, ConversationOptions, ExecutionStatus, RemoteConversation,
    };
    let (url, server) = conversation_fake::start().await;
    let ws = RemoteWorkspace::new(&url, None).unwrap();
    let conv = RemoteConversation::create(
        &ws,
        ConversationOptions::new(json!({"kind": "Agent"}), "/workspace/project"),
    )
    .await
    .unwrap();
    assert_eq!(conv.id(), "c1");
    let mut live = conv.subscribe();
    conv.send_message("hello").await.unwrap();
    let outcome = conv.run(Duration::from_secs(30)).await.unwrap();
    assert_eq!(outcome.status, ExecutionStatus::Finished);
    assert!(
        *server.connects.lock().unwrap() >= 2,
        "the socket never reconnected"
    );
    let want: Vec<String> = server
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let got: Vec<String> = conv
        .events()
        .iter()
        .map(|e| event_id(e).unwrap().to_string())
        .collect();
    assert_eq!(got, want, "every persisted event exactly once, in order");
    assert_eq!(want.len(), 8);
    // Live subscribers saw each persisted event once too (plus state snapshots).
    let mut seen = Vec::new();
    while let Ok(e) = live.try_recv() {
        if e["key"] != "full_state" {
            seen.push(event_id(&e).unwrap().to_string());
        }
    }
    assert_eq!(seen, want);
    assert_eq!(conv.cached_state().unwrap()["execution_status"], "finished");
}

// ---------------------------------------------------------------- conversations in Docker

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Docker and the base image (images/ci-setup.sh); run with --include-ignored"]
async fn conversation_in_docker_with_the_mock_llm() {
    use agent_server::client::{
        event_kind, ConversationOptions, ExecutionStatus, RemoteConversation,
    };
    let image = docker_image();
    let mock = MockLlm::start().await;
    // Host networking: the container reaches the mock on the host's loopback.
    let mut o = docker_opts(&image);
    o.network = Some("host".into());
    let mut ws = DockerWorkspace::start(o).await.unwrap();
    let agent = json!({
        "kind": "Agent",
        "llm": {"model": "openai/mock", "base_url": mock.base_url, "api_key": "mock-key",
                "usage_id": "agent", "num_retries": 0},
        "tools": [{"name": "terminal", "params": {}}, {"name": "file_editor", "params": {}}],
    });
    let mut co = ConversationOptions::new(agent, "/workspace/project");
    // What the official client sends along (the reference needs it to import the tools).
    co.extra.insert(
        "tool_module_qualnames".into(),
        json!({"terminal": "openhands.tools.terminal.definition",
               "file_editor": "openhands.tools.file_editor.definition"}),
    );
    let conv = RemoteConversation::create(&ws, co).await.unwrap();
    conv.send_message("[[mock:echo marker=docker-marker]]")
        .await
        .unwrap();
    let out = conv.run(Duration::from_secs(120)).await.unwrap();
    assert_eq!(out.status, ExecutionStatus::Finished);
    let events = conv.events();
    assert!(
        events
            .iter()
            .any(|e| event_kind(e) == Some("ObservationEvent")
                && e.to_string().contains("docker-marker-42")),
        "no observation with the marker in {} events",
        events.len()
    );
    let r = ws
        .execute_command(
            "cat /workspace/project/echo_out.txt",
            None,
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    assert_eq!(r.stdout, "hello from mock\n");
    conv.delete().await.unwrap();
    ws.cleanup().await.unwrap();
}

#[test]
#[ignore = "needs Docker, the base image (images/ci-setup.sh) and the Python SDK venv (tests/sdk/setup-venv.sh); run with --include-ignored"]
fn python_sdk_conversation_in_our_image() {
    let image = docker_image();
    let python = sdk_python();
    // The SDK's launcher always runs the server on container port 8000; with the host's network
    // (to reach the mock LLM on loopback) that is host port 8000.
    assert!(
        std::net::TcpListener::bind(("0.0.0.0", 8000)).is_ok(),
        "host port 8000 is busy: the SDK's DockerWorkspace needs it with the host network"
    );
    // The mock serves from this runtime's worker threads while the test thread waits for Python.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mock = rt.block_on(MockLlm::start());
    let script = r#"
import sys
from pydantic import SecretStr
from openhands.sdk import LLM, Conversation
from openhands.tools.preset.default import get_default_agent
from openhands.workspace import DockerWorkspace
import httpx, time
from openhands.workspace.docker.workspace import check_port_available
# The SDK binds without SO_REUSEADDR, so connections a previous server on port 8000 closed
# (TIME_WAIT, up to 60 s) make it refuse the port: wait for them to expire.
deadline = time.monotonic() + 90
while not check_port_available(8000) and time.monotonic() < deadline:
    time.sleep(1)
with DockerWorkspace(server_image=sys.argv[1], network="host", host_port=8000,
                     detach_logs=False, health_check_timeout=60) as ws:
    llm = LLM(usage_id="agent", model="openai/mock", base_url=sys.argv[2],
              api_key=SecretStr("mock-key"), num_retries=0, timeout=60)
    conv = Conversation(agent=get_default_agent(llm=llm, cli_mode=True), workspace=ws)
    conv.send_message("[[mock:echo marker=sdk-marker]]")
    conv.run()
    print("STATUS", conv.state.execution_status.value, flush=True)
    print("MARKER", any("sdk-marker-42" in str(e) for e in conv.state.events), flush=True)
    conv.close()
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, &image, &mock.base_url])
        .env("PATH", python_path_with_docker_shim())
        .env_remove("OH_SESSION_API_KEYS_0")
        .env("SESSION_API_KEY", "py-key")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("STATUS finished"), "{stdout}\n{stderr}");
    assert!(stdout.contains("MARKER True"), "{stdout}\n{stderr}");
}

#[test]
fn launch_apptainer_prints_url_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    fake_apptainer(dir.path());
    let sif = dir.path().join("server.sif");
    std::fs::write(
        &sif,
        format!("FAKE-SIF {}\n", env!("CARGO_BIN_EXE_agent-server")),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_agent-server"))
        .args(["launch", "apptainer", "-q", "--json", "--sif"])
        .arg(&sif)
        .env("PATH", path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    let url = v["url"].as_str().unwrap().to_string();
    let key = v["api_key"].as_str().unwrap().to_string();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let authed = rt.block_on(async {
        let ws = RemoteWorkspace::new(&url, Some(key)).unwrap();
        ws.get_command_output(None).await.is_ok()
    });
    assert!(authed);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143));
    // The server is gone: its port stops answering (allowing the kernel a moment to close it).
    let closed = (0..50).any(|_| {
        let refused = std::net::TcpStream::connect(("127.0.0.1", port)).is_err();
        if !refused {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        refused
    });
    assert!(
        closed,
        "port {port} still answers 5 s after the launcher exited"
    );
    let calls = std::fs::read_to_string(dir.path().join("calls.log")).unwrap();
    assert!(
        calls.contains("run --compat --no-mount hostfs --no-mount bind-paths --no-mount tmp"),
        "{calls}"
    );
}
