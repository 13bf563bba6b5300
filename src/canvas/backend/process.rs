//! Backend processes: started without a shell in their own process group, health-checked,
//! their output drained into the bounded log, stopped with SIGTERM then SIGKILL.

use super::*;

pub(super) fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| -s))
        .unwrap_or(-1)
}

pub(super) fn group_alive(pgid: u32) -> bool {
    let Ok(pgid) = i32::try_from(pgid) else {
        return false;
    };
    killpg(Pid::from_raw(pgid), None).is_ok()
}

pub(super) fn signal_group(pgid: u32, signal: Signal) {
    if let Ok(pgid) = i32::try_from(pgid) {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

impl Backends {
    /// Starts the prepared backend of `revision` and waits until it is ready, unhealthy or
    /// stopped.
    pub async fn start(&self, name: &str, revision: &str) -> Result<Status, CanvasError> {
        let slot = self.slot(name);
        let task = {
            let _op = slot.slot.op.lock().await;
            let disk = self.disk(name).await?;
            let current = Self::compose(name, &disk, &slot.slot);
            if matches!(current.state, "missing" | "unsupported") {
                return Ok(current);
            }
            let running = {
                let mut guard = slot.slot.rt();
                let rt = guard.get_or_insert_with(Runtime::new);
                if rt.alive() {
                    if rt.revision.as_deref() != Some(revision) {
                        return Err(conflict("a different backend revision is already running"));
                    }
                    Some(rt.start.clone())
                } else {
                    None
                }
            };
            match running {
                Some(None) => return self.refresh_unlocked(name, &slot.slot).await,
                Some(Some(task)) => Some(task),
                None => self.launch(name, revision, &disk, &slot.slot).await?,
            }
        };
        if let Some(task) = &task {
            task.done.cancelled().await;
        }
        let _op = slot.slot.op.lock().await;
        let unhealthy = {
            let mut guard = slot.slot.rt();
            match guard.as_mut() {
                Some(rt) => {
                    if let (Some(mine), Some(current)) = (&task, &rt.start) {
                        if mine.id == current.id {
                            rt.start = None;
                        }
                    }
                    rt.state == RunState::Unhealthy
                }
                None => false,
            }
        };
        if unhealthy {
            self.terminate(&slot.slot).await;
        }
        self.status_unlocked(name, &slot.slot).await
    }

    /// Spawns the backend (the app's lock held); answers its health wait, or `None` when it
    /// could not be spawned (the runtime then says why).
    pub(super) async fn launch(
        &self,
        name: &str,
        revision: &str,
        disk: &DiskView,
        slot: &Arc<Slot>,
    ) -> Result<Option<StartTask>, CanvasError> {
        if disk.revision.as_deref() != Some(revision) {
            return Err(conflict(
                "approval revision does not match installed revision",
            ));
        }
        let prepared = disk
            .prepared
            .as_ref()
            .filter(|p| p.revision == revision)
            .ok_or_else(|| conflict("backend revision must be prepared before start"))?;
        let artifact_dir = PathBuf::from(&prepared.artifact_dir);
        let Some((backend, artifact, platform)) = Self::parts(disk.manifest.as_ref()) else {
            return Ok(None);
        };
        let backend = backend.clone();
        let expected = self
            .artifacts_dir
            .join(name)
            .join(&prepared.artifact_sha256);
        let (dir_ok, same_dir) = {
            let (a, e) = (artifact_dir.clone(), expected);
            blocking(move || {
                (
                    a.is_dir(),
                    crate::canvas::source::resolve(&a) == crate::canvas::source::resolve(&e),
                )
            })
            .await?
        };
        if !dir_ok {
            return Err(conflict("prepared backend artifact is missing"));
        }
        if prepared.platform != platform.as_str()
            || prepared.artifact_sha256 != artifact.sha256
            || !same_dir
        {
            return Err(conflict(
                "prepared backend metadata does not match manifest",
            ));
        }
        let had_process = slot.rt().as_ref().is_some_and(|rt| rt.child.is_some());
        if had_process {
            self.terminate(slot).await;
        }
        let package_root = crate::canvas::source::resolve(&self.installed.dir().join(name));
        let data_dir = self.data_dir.join(name);
        let port = {
            let d = data_dir.clone();
            blocking(move || -> Result<u16, CanvasError> {
                std::fs::create_dir_all(&d).map_err(io)?;
                allocate_port().map_err(io)
            })
            .await??
        };
        let stop_requested = CancellationToken::new();
        let logs = {
            let mut guard = slot.rt();
            let rt = guard.get_or_insert_with(Runtime::new);
            rt.state = RunState::Starting;
            rt.detail = None;
            rt.port = Some(port);
            rt.revision = Some(revision.to_string());
            rt.logs = Arc::default();
            rt.stop_requested = stop_requested.clone();
            rt.exit = None;
            rt.logs.clone()
        };
        let spawned = {
            let (b, d, a, root) = (
                backend.clone(),
                data_dir.clone(),
                artifact_dir.clone(),
                package_root.clone(),
            );
            blocking(move || command(&b, port, &d, &a, &root)).await?
        };
        let child = spawned.and_then(|mut cmd| {
            cmd.spawn()
                .map_err(|e| python_os_error(&e, cmd.as_std().get_program()))
        });
        let mut child = match child {
            Ok(c) => c,
            Err(detail) => {
                tracing::warn!(app = %name, %detail, "canvas app backend did not start");
                if let Some(rt) = slot.rt().as_mut() {
                    rt.state = RunState::Unhealthy;
                    rt.detail = Some(detail);
                }
                self.terminate(slot).await;
                return Ok(None);
            }
        };
        let pid = child.id();
        tracing::info!(app = %name, pid, port, "canvas app backend started");
        if let Some(pid) = pid {
            let run_dir = self.run_dir.clone();
            let name = name.to_string();
            let _ = blocking(move || write_run_record(&run_dir, &name, pid)).await;
        }
        let mut drains = Vec::new();
        if let Some(out) = child.stdout.take() {
            drains.push(tokio::spawn(drain(out, b"[stdout] ", logs.clone())));
        }
        if let Some(err) = child.stderr.take() {
            drains.push(tokio::spawn(drain(err, b"[stderr] ", logs)));
        }
        // The process is recorded before its health wait starts (the wait checks it).
        if let Some(rt) = slot.rt().as_mut() {
            rt.child = Some(child);
            rt.pid = pid;
            rt.drains = drains;
        }
        let done = CancellationToken::new();
        let id = self.next_task.fetch_add(1, Ordering::Relaxed);
        let handle = tokio::spawn(await_healthy(
            slot.clone(),
            self.probe.clone(),
            backend.health.clone(),
            port,
            stop_requested,
            done.clone(),
        ));
        let task = StartTask {
            id,
            done,
            abort: handle.abort_handle(),
        };
        if let Some(rt) = slot.rt().as_mut() {
            rt.start = Some(task.clone());
        }
        Ok(Some(task))
    }

    /// Stops the process group (SIGTERM, SIGKILL after [`STOP_TIMEOUT`]), reaps it and
    /// forgets the process; the app's lock is held.
    pub(super) async fn terminate(&self, slot: &Slot) {
        let (pid, exited) = {
            let mut guard = slot.rt();
            let Some(rt) = guard.as_mut() else {
                return;
            };
            if rt.child.is_none() {
                return;
            }
            (rt.pid, rt.poll_exit().is_some())
        };
        if let Some(pgid) = pid {
            if !exited {
                signal_group(pgid, Signal::SIGTERM);
                if !wait_group_exit(slot, pgid, STOP_TIMEOUT).await {
                    signal_group(pgid, Signal::SIGKILL);
                    wait_group_exit(slot, pgid, STOP_TIMEOUT).await;
                }
            } else if group_alive(pgid) {
                signal_group(pgid, Signal::SIGKILL);
                wait_group_exit(slot, pgid, STOP_TIMEOUT).await;
            }
        }
        let (child, drains) = {
            let mut guard = slot.rt();
            match guard.as_mut() {
                Some(rt) => (rt.child.take(), std::mem::take(&mut rt.drains)),
                None => (None, Vec::new()),
            }
        };
        let mut exit = None;
        if let Some(mut child) = child {
            // Bounded: a process that survives SIGKILL (stuck in the kernel) is left to the
            // runtime's reaper rather than holding the app's lock.
            if let Ok(Ok(status)) = tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
                exit = Some(exit_code(status));
            }
        }
        for mut drain in drains {
            if tokio::time::timeout(DRAIN_WAIT, &mut drain).await.is_err() {
                drain.abort();
            }
        }
        if let Some(pgid) = pid {
            let _ = tokio::fs::remove_file(self.run_dir.join(format!("{pgid}.json"))).await;
        }
        if let Some(rt) = slot.rt().as_mut() {
            rt.exit = rt.exit.or(exit);
            rt.pid = None;
            rt.port = None;
        }
    }

    /// Stops a backend (idempotent); its health wait, if any, is abandoned.
    pub async fn stop(&self, name: &str) -> Result<Status, CanvasError> {
        let slot = self.slot(name);
        let (status, task) = {
            let _op = slot.slot.op.lock().await;
            let task = {
                let mut guard = slot.slot.rt();
                match guard.as_mut() {
                    Some(rt) => {
                        rt.stop_requested.cancel();
                        let task = rt.start.take();
                        if let Some(t) = &task {
                            t.abort.abort();
                        }
                        Some(task)
                    }
                    None => None,
                }
            };
            if task.is_some() {
                self.terminate(&slot.slot).await;
                if let Some(rt) = slot.slot.rt().as_mut() {
                    rt.state = RunState::Stopped;
                    rt.detail = None;
                }
                tracing::info!(app = %name, "canvas app backend stopped");
            }
            (
                self.status_unlocked(name, &slot.slot).await?,
                task.flatten(),
            )
        };
        if let Some(task) = task {
            task.done.cancelled().await;
        }
        Ok(status)
    }
}

/// Polls until the process group `pgid` is gone (reaping the leader); `false` on timeout.
pub(super) async fn wait_group_exit(slot: &Slot, pgid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(rt) = slot.rt().as_mut() {
            rt.poll_exit();
        }
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(STOP_POLL).await;
    }
}

pub(super) fn wait_gone_blocking(pgid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !group_alive(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(STOP_POLL);
    }
}

/// Waits for a starting backend to answer its health probe (its own task, so the app's lock
/// stays free); sets the runtime's state when done.
pub(super) async fn await_healthy(
    slot: Arc<Slot>,
    client: reqwest::Client,
    health: manifest::Health,
    port: u16,
    stop: CancellationToken,
    done: CancellationToken,
) {
    // Whatever ends this wait (also an abort), waiters are released.
    let _done = done.drop_guard();
    let deadline = Instant::now() + crate::util::duration_from_secs(health.timeout_seconds);
    let interval = crate::util::duration_from_secs(health.interval_seconds);
    let url = format!("http://127.0.0.1:{port}{}", health.path);
    let outcome: Result<(), String> = loop {
        if Instant::now() >= deadline {
            break Err("backend health check timed out".into());
        }
        if stop.is_cancelled() {
            return;
        }
        let exited = {
            let mut guard = slot.rt();
            match guard.as_mut() {
                Some(rt) if rt.child.is_some() => rt.poll_exit().map(|c| c.to_string()),
                _ => Some("None".to_string()),
            }
        };
        if let Some(code) = exited {
            break Err(format!("backend exited with code {code}"));
        }
        let ok = tokio::select! {
            r = client.get(&url).send() => r.is_ok_and(|r| (200..400).contains(&r.status().as_u16())),
            _ = stop.cancelled() => return,
        };
        if ok {
            break Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.cancelled() => return,
        }
    };
    if let Some(rt) = slot.rt().as_mut() {
        match outcome {
            _ if stop.is_cancelled() => {
                rt.state = RunState::Stopped;
                rt.detail = None;
            }
            Ok(()) => {
                rt.state = RunState::Ready;
                rt.detail = None;
            }
            Err(detail) => {
                rt.state = RunState::Unhealthy;
                rt.detail = Some(detail);
            }
        }
    }
}

/// Reads one output pipe of a backend into its log buffer, chunk by chunk.
pub(super) async fn drain(
    mut pipe: impl tokio::io::AsyncRead + Unpin,
    label: &'static [u8],
    logs: Arc<Mutex<LogBuffer>>,
) {
    let mut buf = vec![0u8; LOG_CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut entry = Vec::with_capacity(label.len() + n);
                entry.extend_from_slice(label);
                entry.extend_from_slice(&buf[..n]);
                logs.lock().unwrap_or_else(|e| e.into_inner()).push(entry);
            }
        }
    }
}

/// The backend command: placeholders filled in, the executable resolved inside the artifact,
/// the package as working directory, only the allowed environment plus `HOME`. Blocking.
pub(super) fn command(
    backend: &Backend,
    port: u16,
    data_dir: &Path,
    artifact_dir: &Path,
    package_root: &Path,
) -> Result<tokio::process::Command, String> {
    let replacements = [
        ("{port}", port.to_string()),
        ("{data_dir}", data_dir.to_string_lossy().into_owned()),
        (
            "{artifact_dir}",
            artifact_dir.to_string_lossy().into_owned(),
        ),
    ];
    let mut argv: Vec<String> = backend
        .argv
        .iter()
        .map(|arg| {
            replacements
                .iter()
                .fold(arg.clone(), |a, (k, v)| a.replace(k, v))
        })
        .collect();
    let root = crate::canvas::source::resolve(artifact_dir);
    let executable = crate::canvas::source::resolve(Path::new(&argv[0]));
    let executable_ok = executable.starts_with(&root)
        && executable.is_file()
        && nix::unistd::access(&executable, nix::unistd::AccessFlags::X_OK).is_ok();
    if !executable_ok {
        return Err(
            "backend executable must be an executable regular file inside the prepared artifact"
                .into(),
        );
    }
    argv[0] = executable.to_string_lossy().into_owned();
    let home = data_dir.join("home");
    std::fs::create_dir_all(&home).map_err(|e| python_os_error(&e, home.as_os_str()))?;
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(package_root)
        .env_clear()
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    for var in &backend.inherit_environment {
        if let Some(value) = std::env::var_os(var) {
            cmd.env(var, value);
        }
    }
    cmd.env("HOME", &home);
    // The server's marker (exec::orphans): a server started on this state kills it if this
    // server dies without stopping it.
    for (key, value) in crate::util::child_env().iter() {
        if key == crate::exec::orphans::MARKER {
            cmd.env(key, value);
        }
    }
    Ok(cmd)
}

/// An OS error worded like Python's `OSError` (`[Errno 2] No such file or directory: 'x'`).
pub(super) fn python_os_error(e: &std::io::Error, path: &std::ffi::OsStr) -> String {
    match e.raw_os_error() {
        Some(code) => format!(
            "[Errno {code}] {}: '{}'",
            nix::errno::Errno::from_raw(code).desc(),
            path.to_string_lossy()
        ),
        None => e.to_string(),
    }
}

/// A free loopback port (bound, read, released).
pub(super) fn allocate_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}
