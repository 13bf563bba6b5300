//! Test support: start the real `agent-server` binary on a free port with private directories,
//! wait until `/health` answers, and kill it (as a process group) when the handle drops.

#![allow(dead_code)]

pub mod mock_llm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server started from the built binary.
pub struct TestServer {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub port: u16,
    /// Private root holding `conversations/`, `bash_events/`, `home/`, `work/`.
    pub root: tempfile::TempDir,
    pub api_key: Option<String>,
    log_path: PathBuf,
}

/// Options for [`TestServer::start_with`].
#[derive(Default, Clone)]
pub struct ServerOptions {
    pub api_key: Option<String>,
    /// Reuse a conversations directory (restart tests).
    pub conversations_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// Run the server as user `nobody` when the tests run as root (file permissions then apply
    /// to it); as another user it runs as that user anyway.
    pub unprivileged: bool,
}

/// The official Python SDK's interpreter: `$AGENT_SERVER_SDK_VENV/bin/python`, by default the
/// venv `tests/sdk/setup-venv.sh` makes. The tests that call this are `#[ignore]`d unless asked
/// for; asked for without the venv, they fail and say how to make it.
pub fn sdk_python() -> PathBuf {
    let venv = match std::env::var_os("AGENT_SERVER_SDK_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME"))
            .join(".cache/oh-compat/venv-1.58.2"),
    };
    let python = venv.join("bin/python");
    assert!(
        python.exists(),
        "no Python SDK venv at {} (run tests/sdk/setup-venv.sh)",
        venv.display()
    );
    python
}

impl ServerOptions {
    /// Options for servers that share `state` (conversations, bash events, settings), so that
    /// a restarted server finds what an earlier one left.
    pub fn on_state(state: &Path) -> Self {
        ServerOptions {
            conversations_dir: Some(state.join("conversations")),
            env: vec![
                (
                    "OH_BASH_EVENTS_DIR".into(),
                    state.join("bash_events").display().to_string(),
                ),
                (
                    "OH_PERSISTENCE_DIR".into(),
                    state.join("persistence").display().to_string(),
                ),
            ],
            ..ServerOptions::default()
        }
    }
}

/// Sends `method path` (with a JSON body) to `srv`: the status and the JSON answer (a string
/// when the answer is not JSON).
pub async fn call(
    srv: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = srv.client().request(method, format!("{}{path}", srv.url));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("request");
    let code = r.status().as_u16();
    let text = r.text().await.expect("body");
    (
        code,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// Waits (up to `secs`) until conversation `id` ends (`finished`, `error` or `stuck`) and
/// returns the conversation as the server then shows it.
pub async fn wait_for_end(srv: &TestServer, id: &str, secs: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, c) = call(
            srv,
            reqwest::Method::GET,
            &format!("/api/conversations/{id}"),
            None,
        )
        .await;
        if matches!(
            c["execution_status"].as_str(),
            Some("finished" | "error" | "stuck")
        ) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "conversation {id} did not end: {c}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl TestServer {
    /// A server without authentication.
    pub fn start() -> Self {
        Self::start_with(ServerOptions::default())
    }

    pub fn start_with(opts: ServerOptions) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conversations = opts
            .conversations_dir
            .clone()
            .unwrap_or_else(|| root.path().join("conversations"));
        for d in ["home", "tmp", "work"] {
            std::fs::create_dir_all(root.path().join(d)).expect("mkdir");
        }
        let log_path = root.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let as_nobody = opts.unprivileged && nix::unistd::geteuid().is_root();
        let exe = if as_nobody {
            // A copy nobody can reach (the build directory may be under a private home).
            let copy = root.path().join("agent-server");
            std::fs::copy(env!("CARGO_BIN_EXE_agent-server"), &copy).expect("copy the binary");
            copy
        } else {
            PathBuf::from(env!("CARGO_BIN_EXE_agent-server"))
        };
        let mut cmd = Command::new(exe);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(root.path())
            .env_remove("SESSION_API_KEY")
            .env_remove("OH_SESSION_API_KEYS_0")
            .env("HOME", root.path().join("home"))
            .env("TMPDIR", root.path().join("tmp"))
            .env("OH_CONVERSATIONS_PATH", &conversations)
            .env("OH_BASH_EVENTS_DIR", root.path().join("bash_events"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(k) = &opts.api_key {
            cmd.env("SESSION_API_KEY", k);
        }
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        if as_nobody {
            use std::os::unix::fs::PermissionsExt;
            for d in [root.path().to_path_buf(), conversations.clone()]
                .into_iter()
                .chain(["home", "tmp", "work"].map(|d| root.path().join(d)))
            {
                std::fs::create_dir_all(&d).expect("mkdir");
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777))
                    .expect("chmod");
            }
            std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
            std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("spawn agent-server");
        let mut server = TestServer {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
            port,
            root,
            api_key: opts.api_key,
            log_path,
        };
        server.wait_healthy(Duration::from_secs(20));
        server
    }

    fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"GET /health HTTP/1.0\r\nHost: x\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.0 200") || buf.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("agent-server exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent-server not healthy in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A fresh working directory under the server's root.
    pub fn workdir(&self) -> PathBuf {
        let d = self
            .root
            .path()
            .join("work")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&d).expect("mkdir workdir");
        d
    }

    pub fn root_path(&self) -> &Path {
        self.root.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The server process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Resident set size of the server process in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Peak resident set size (VmHWM) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Sends `signal` to the server's process group and waits for it to exit.
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal) {
        if let Some(mut child) = self.child.take() {
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, signal);
            let _ = child.wait();
        }
    }

    /// Sends `signal` to the server alone and waits at most `timeout` for it to exit; true
    /// when it did (otherwise it is killed).
    pub fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal, timeout: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
        false
    }

    /// A reqwest client with the session key header when one is set.
    pub fn client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(k) = &self.api_key {
            headers.insert("X-Session-API-Key", k.parse().expect("header value"));
        }
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop_with(nix::sys::signal::Signal::SIGKILL);
    }
}

/// A tmpfs of `size` (e.g. `"1m"`) mounted on a fresh temporary directory, unmounted when
/// dropped. Needs root: panics otherwise.
pub struct Tmpfs {
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(mounted.success(), "cannot mount a tmpfs (root needed)");
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Files under `root` that a crash or a failed write must not leave behind: temp files, and
/// event files (`event-*`) that are empty or not a JSON object (a torn write set aside as
/// `.<name>.torn` is fine).
pub fn torn_or_temp_files(root: &Path) -> std::collections::HashSet<PathBuf> {
    let mut found = std::collections::HashSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                dirs.push(path);
            } else if name.ends_with(".tmp")
                || (name.starts_with("event-")
                    && !std::fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                        .is_some_and(|v| v.is_object()))
            {
                found.insert(path);
            }
        }
    }
    found
}
