//! Cluster launchers for real: Slurm jobs on the one-node cluster of images/slurm-setup.sh and
//! Podman containers of our image. Eight workspaces at once through each, driven by the official
//! Python SDK's `Workspace(host=...)`, then released with nothing left behind; the Slurm error
//! paths (a job failing at start, a start that times out while running or while queued). These
//! fail, never skip, when Slurm, Podman or the SDK venv is missing: they are `#[ignore]`d for a
//! plain `cargo test` and CI runs them with `--include-ignored`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use agent_server::client::{
    ClientError, PodmanOptions, PodmanWorkspace, RemoteWorkspace, SlurmOptions, SlurmServer,
    SlurmWorkspace,
};
use serde_json::Value;

use crate::support::sdk_python;

#[cfg(feature = "kubernetes")]
mod kubernetes;

const N: usize = 8;

fn require_slurm() {
    let out = Command::new("sinfo").args(["-h", "-o", "%t"]).output();
    match out {
        Ok(o) if o.status.success() && !o.stdout.is_empty() => {}
        Ok(o) => panic!(
            "no Slurm cluster answers sinfo (run images/slurm-setup.sh): {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("no sinfo ({e}): run images/slurm-setup.sh"),
    }
}

/// Job ids in the queue (any state squeue shows) with this job name.
fn queued(name: &str) -> Vec<String> {
    let out = Command::new("squeue")
        .args(["-h", "-n", name, "-o", "%i %T"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn job_name(tag: &str) -> String {
    format!("ast-{}-{tag}", std::process::id())
}

fn slurm_opts(name: &str, state: &Path) -> SlurmOptions {
    let mut o = SlurmOptions::new(SlurmServer::Binary(
        env!("CARGO_BIN_EXE_agent-server").into(),
    ));
    o.job_name = name.into();
    o.state_dir = Some(state.to_path_buf());
    o.memory = Some("200M".into());
    o.cpus_per_task = Some(1);
    o.time_limit = Some("15".into());
    o.start_timeout = Duration::from_secs(120);
    o
}

/// Runs `command` (cwd /tmp) on every `(host, key)` through the Python SDK's `Workspace`;
/// returns each `(exit_code, stdout)`.
fn sdk_run_on_each(targets: &[(String, Option<String>)], command: &str) -> Vec<(i64, String)> {
    let script = r#"
import json, sys
from openhands.sdk import Workspace
results = []
for host, key in json.loads(sys.argv[1]):
    ws = Workspace(host=host, api_key=key)
    r = ws.execute_command(sys.argv[2], cwd="/tmp", timeout=60)
    results.append([r.exit_code, r.stdout])
print("RESULT " + json.dumps(results), flush=True)
"#;
    let out = Command::new(sdk_python())
        .args([
            "-c",
            script,
            &serde_json::to_string(targets).unwrap(),
            command,
        ])
        .env_remove("SESSION_API_KEY")
        .env_remove("OH_SESSION_API_KEYS_0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line:\n{stdout}\n{stderr}"));
    let v: Vec<(i64, String)> = serde_json::from_str(line).unwrap();
    assert_eq!(v.len(), targets.len());
    v
}

// ---------------------------------------------------------------- Slurm

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs slurm (images/slurm-setup.sh) and the Python SDK venv (tests/sdk/setup-venv.sh)"]
async fn slurm_eight_jobs_at_once_serve_the_python_sdk_and_leave_no_job() {
    require_slurm();
    let python = sdk_python();
    assert!(python.exists());
    let state = tempfile::tempdir().unwrap();
    let name = job_name("eight");
    let starts = (0..N).map(|_| SlurmWorkspace::start(slurm_opts(&name, state.path())));
    let mut all: Vec<SlurmWorkspace> = futures::future::join_all(starts)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();

    let mut ids: Vec<String> = all
        .iter()
        .map(|w| w.job_id().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "one job per workspace: {ids:?}");
    let running = queued(&name);
    assert_eq!(running.len(), N, "{running:?}");
    assert!(
        running.iter().all(|l| l.ends_with(" RUNNING")),
        "{running:?}"
    );
    for w in &all {
        assert!(w.alive().await, "{}", w.host());
        assert!(w.port() > 0);
        assert!(w.api_key().is_some_and(|k| k.len() >= 32));
        // The key is required: a client without it is refused.
        let anon = RemoteWorkspace::new(w.host(), None).unwrap();
        let err = anon
            .execute_command("true", None, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err.status(), Some(401), "{err}");
    }

    // The official SDK runs a command in each; it runs inside that workspace's own job.
    let targets: Vec<(String, Option<String>)> = all
        .iter()
        .map(|w| (w.host().to_string(), w.api_key().map(String::from)))
        .collect();
    let results = sdk_run_on_each(&targets, "echo job-$SLURM_JOB_ID");
    for (w, (code, stdout)) in all.iter().zip(results) {
        assert_eq!(code, 0);
        assert_eq!(stdout.trim(), format!("job-{}", w.job_id().unwrap()));
    }

    let dirs: Vec<_> = all.iter().map(|w| w.job_dir().to_path_buf()).collect();
    futures::future::join_all(all.iter_mut().map(|w| w.cleanup()))
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()
        .unwrap();
    assert_eq!(queued(&name), Vec::<String>::new());
    assert!(dirs.iter().all(|d| !d.exists()), "job directories removed");
    assert!(all.iter().all(|w| w.job_id().is_none()));
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs slurm (images/slurm-setup.sh)"]
async fn slurm_job_failing_at_start_reports_its_log_tail() {
    require_slurm();
    let state = tempfile::tempdir().unwrap();
    let name = job_name("badbin");
    let mut o = slurm_opts(&name, state.path());
    o.server = SlurmServer::Binary("/nonexistent/agent-server".into());
    let err = SlurmWorkspace::start(o).await.unwrap_err();
    let ClientError::Job {
        job_id,
        state: job_state,
        timed_out,
        log_tail,
        log_path,
        ..
    } = &err
    else {
        panic!("not a job error: {err}");
    };
    assert!(!timed_out, "{err}");
    assert!(!job_id.is_empty());
    assert!(
        log_tail.contains("/nonexistent/agent-server: No such file or directory"),
        "{err}"
    );
    assert!(
        log_tail.contains("agent-server exited with status 127"),
        "{err}"
    );
    assert!(
        ["FAILED", "COMPLETED", "ENDED", "COMPLETING"].contains(&job_state.as_str()),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "Slurm job {job_id} ended before its server was ready"
        )),
        "{text}"
    );
    // The full log is kept for the user; no job is left.
    assert!(Path::new(log_path).exists());
    assert_eq!(queued(&name), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs slurm (images/slurm-setup.sh)"]
async fn slurm_start_timeouts_cancel_the_job() {
    require_slurm();
    let state = tempfile::tempdir().unwrap();

    // Running but never ready: a "server" that never announces an address.
    let slow = state.path().join("slow-server");
    std::fs::write(&slow, "#!/bin/sh\necho starting-slowly\nexec sleep 600\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755)).unwrap();
    let running = job_name("slow");
    let mut o = slurm_opts(&running, state.path());
    o.server = SlurmServer::Binary(slow);
    o.start_timeout = Duration::from_secs(8);

    // Never scheduled within the deadline: the job may not begin for an hour. Kept alive or
    // not (`launch slurm -d`), a job that never became ready is cancelled.
    let pending = job_name("queued");
    let mut q = slurm_opts(&pending, state.path());
    q.keep_alive = true;
    q.sbatch_args = vec!["--begin=now+3600".into()];
    q.start_timeout = Duration::from_secs(3);

    let (slow_err, queued_err) = tokio::join!(SlurmWorkspace::start(o), SlurmWorkspace::start(q));
    let slow_err = slow_err.unwrap_err();
    match &slow_err {
        ClientError::Job {
            timed_out: true,
            state,
            log_tail,
            ..
        } => {
            assert_eq!(state, "RUNNING", "{slow_err}");
            assert!(log_tail.contains("starting-slowly"), "{slow_err}");
        }
        _ => panic!("not a timed-out job: {slow_err}"),
    }
    assert!(slow_err
        .to_string()
        .contains("did not become ready in time"));
    let queued_err = queued_err.unwrap_err();
    match &queued_err {
        ClientError::Job {
            timed_out: true,
            state,
            reason,
            ..
        } => {
            assert_eq!(state, "PENDING", "{queued_err}");
            assert_eq!(reason.as_deref(), Some("BeginTime"), "{queued_err}");
        }
        _ => panic!("not a timed-out job: {queued_err}"),
    }
    assert_eq!(queued(&running), Vec::<String>::new());
    assert_eq!(queued(&pending), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs slurm (images/slurm-setup.sh)"]
async fn slurm_job_runs_a_sif_with_apptainer() {
    // Apptainer is not packaged here: the job runs the stand-in CLI of tests/fakes/apptainer
    // (the real grammar; its "SIF" names our binary; --compat gives a clean environment).
    require_slurm();
    use agent_server::client::{ApptainerOptions, SifSource};
    use std::os::unix::fs::PermissionsExt;
    let state = tempfile::tempdir().unwrap();
    let calls = state.path().join("calls.log");
    let wrapper = state.path().join("apptainer");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport FAKE_APPTAINER_LOG='{}' FAKE_APPTAINER_SERVER='{}'\nexec '{}/tests/fakes/apptainer' \"$@\"\n",
            calls.display(),
            env!("CARGO_BIN_EXE_agent-server"),
            env!("CARGO_MANIFEST_DIR"),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sif = state.path().join("agent-server.sif");
    std::fs::write(
        &sif,
        format!("FAKE-SIF {}\n", env!("CARGO_BIN_EXE_agent-server")),
    )
    .unwrap();
    let mut a = ApptainerOptions::new(SifSource::File(sif.clone()));
    a.apptainer = wrapper.display().to_string();
    let name = job_name("sif");
    let mut o = slurm_opts(&name, state.path());
    o.server = SlurmServer::Apptainer(Box::new(a));
    o.env = vec![("MARKER".into(), "inside-the-sif".into())];
    let mut ws = SlurmWorkspace::start(o).await.unwrap();
    assert_eq!(ws.working_dir(), "/workspace");
    let r = ws
        .execute_command("echo $MARKER", Some("/tmp"), Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(r.stdout.trim(), "inside-the-sif");
    let anon = RemoteWorkspace::new(ws.host(), None).unwrap();
    let err = anon
        .execute_command("true", None, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "the key reached the server: {err}");
    assert_eq!(
        std::fs::read_to_string(&calls).unwrap(),
        format!(
            "run --compat --no-mount hostfs --no-mount bind-paths --no-mount tmp {} --host 0.0.0.0 --port 0\n",
            sif.display()
        )
    );
    ws.cleanup().await.unwrap();
    assert_eq!(queued(&name), Vec::<String>::new());
}

#[test]
#[ignore = "needs slurm (images/slurm-setup.sh)"]
fn slurm_job_is_cancelled_when_the_workspace_is_dropped_by_a_panic() {
    require_slurm();
    let state = tempfile::tempdir().unwrap();
    let name = job_name("panic");
    let (n, dir) = (name.clone(), state.path().to_path_buf());
    let res = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let ws = SlurmWorkspace::start(slurm_opts(&n, &dir)).await.unwrap();
            assert_eq!(queued(&n).len(), 1);
            assert!(ws.alive().await);
            panic!("boom while the job runs");
        })
    })
    .join();
    assert!(res.is_err(), "the thread panicked");
    assert_eq!(queued(&name), Vec::<String>::new());
}

#[test]
#[ignore = "needs slurm (images/slurm-setup.sh)"]
fn launch_slurm_detached_prints_url_key_and_job() {
    require_slurm();
    let state = tempfile::tempdir().unwrap();
    let name = job_name("cli");
    let out = Command::new(env!("CARGO_BIN_EXE_agent-server"))
        .args(["launch", "slurm", "-d", "--json", "--api-key", "cli-key"])
        .args(["--job-name", &name, "--mem", "200M", "--time", "10"])
        .arg("--state-dir")
        .arg(state.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    let job = v["job_id"].as_str().unwrap().to_string();
    assert_eq!(v["api_key"], "cli-key");
    assert_eq!(queued(&name), [format!("{job} RUNNING")]);
    let url = v["url"].as_str().unwrap().to_string();
    let r = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let ws = RemoteWorkspace::new(&url, Some("cli-key".into())).unwrap();
            ws.execute_command("echo $SLURM_JOB_NAME", None, Duration::from_secs(10))
                .await
        });
    assert_eq!(r.unwrap().stdout.trim(), name);
    assert!(Path::new(v["log"].as_str().unwrap()).exists());
    let _ = Command::new("scancel").arg(&job).status();
    for _ in 0..100 {
        if queued(&name).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("job {job} still queued after scancel");
}

// ---------------------------------------------------------------- Podman

fn podman_image() -> String {
    std::env::var("AGENT_SERVER_IMAGE").unwrap_or_else(|_| "agent-server:latest".into())
}

fn require_podman() {
    let out = Command::new("podman").args(["version"]).output();
    assert!(
        out.as_ref().is_ok_and(|o| o.status.success()),
        "no working podman (images/slurm-setup.sh installs it): {out:?}"
    );
}

fn podman_containers(prefix: &str) -> Vec<String> {
    let out = Command::new("podman")
        .args(["ps", "-a", "--filter", &format!("name={prefix}")])
        .args(["--format", "{{.Names}}"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs podman (images/slurm-setup.sh), the agent-server image (images/ci-setup.sh) and the Python SDK venv"]
async fn podman_eight_containers_at_once_serve_the_python_sdk_and_leave_none() {
    require_podman();
    let python = sdk_python();
    assert!(python.exists());
    let prefix = format!("ast-podman-{}-", std::process::id());
    let starts = (0..N).map(|i| {
        let mut o = PodmanOptions::image(podman_image());
        o.run.name = Some(format!("{prefix}{i}"));
        o.run.api_key = Some(format!("podman-key-{i}"));
        o.run.detach_logs = false;
        o.run.health_check_timeout = Duration::from_secs(90);
        PodmanWorkspace::start(o)
    });
    let mut all: Vec<PodmanWorkspace> = futures::future::join_all(starts)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(podman_containers(&prefix).len(), N);
    for w in &all {
        assert!(w.alive().await);
        assert!(w.host().starts_with("http://127.0.0.1:"));
    }
    // Podman marks its containers with container=podman; each answers with its own name.
    let targets: Vec<(String, Option<String>)> = all
        .iter()
        .map(|w| (w.host().to_string(), w.api_key().map(String::from)))
        .collect();
    let results = sdk_run_on_each(&targets, "echo $container $(hostname)");
    for (w, (code, stdout)) in all.iter().zip(results) {
        assert_eq!(code, 0);
        let id = w.container_id().unwrap();
        assert_eq!(stdout.trim(), format!("podman {}", &id[..12]), "{stdout}");
    }
    futures::future::join_all(all.iter_mut().map(|w| w.cleanup()))
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()
        .unwrap();
    assert_eq!(podman_containers(&prefix), Vec::<String>::new());
}

#[test]
#[ignore = "needs podman (images/slurm-setup.sh) and the agent-server image (images/ci-setup.sh)"]
fn launch_podman_detached_prints_url_and_key() {
    require_podman();
    let name = format!("ast-podman-cli-{}", std::process::id());
    let out = Command::new(env!("CARGO_BIN_EXE_agent-server"))
        .args(["launch", "podman", "-d", "--json", "--api-key", "pk"])
        .args(["--name", &name, &podman_image()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let res = std::panic::catch_unwind(|| {
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(v["container_name"], name.as_str());
        assert_eq!(podman_containers(&name), std::slice::from_ref(&name));
        let url = v["url"].as_str().unwrap().to_string();
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let ws = RemoteWorkspace::new(&url, Some("pk".into())).unwrap();
                let r = ws.execute_command("echo $container", None, Duration::from_secs(10));
                r.await.unwrap().stdout
            })
    });
    let _ = Command::new("podman").args(["rm", "-f", &name]).output();
    assert_eq!(res.unwrap().trim(), "podman");
    assert_eq!(podman_containers(&name), Vec::<String>::new());
}
