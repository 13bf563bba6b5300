//! Starting and stopping a server under test: private directories, placeholders, its own
//! process group, readiness on `GET /health`, and a tree kill at the end.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::procfs;

/// How to reach a server: a start command with placeholders, or a running server's URL.
#[derive(Clone, Debug)]
pub enum Target {
    Command(String),
    Url(String),
}

/// One server of the comparison.
#[derive(Clone, Debug)]
pub struct ServerSpec {
    pub name: String,
    pub target: Target,
}

impl ServerSpec {
    /// `NAME=CMD` or `NAME=http://host:port`.
    pub fn parse(s: &str) -> anyhow::Result<ServerSpec> {
        let (name, rest) = s
            .split_once('=')
            .with_context(|| format!("--server wants NAME=CMD or NAME=URL, got {s:?}"))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            bail!("bad server name {name:?}");
        }
        let target = if rest.starts_with("http://") {
            Target::Url(rest.trim_end_matches('/').to_owned())
        } else {
            Target::Command(rest.to_owned())
        };
        Ok(ServerSpec {
            name: name.to_owned(),
            target,
        })
    }

    pub fn is_local(&self) -> bool {
        matches!(self.target, Target::Command(_))
    }
}

/// Directories given to a started server.
#[derive(Clone)]
pub struct Dirs {
    pub root: PathBuf,
    pub home: PathBuf,
    pub tmpdir: PathBuf,
    pub conversations: PathBuf,
    pub workdir: PathBuf,
    pub workspace: PathBuf,
    pub bash_events: PathBuf,
}

impl Dirs {
    fn create(root: PathBuf) -> std::io::Result<Dirs> {
        let d = Dirs {
            home: root.join("home"),
            tmpdir: root.join("tmp"),
            conversations: root.join("conversations"),
            workdir: root.join("work"),
            workspace: root.join("work/workspace/project"),
            bash_events: root.join("work/workspace/bash_events"),
            root,
        };
        for p in [
            &d.home,
            &d.tmpdir,
            &d.conversations,
            &d.workdir,
            &d.workspace,
            &d.bash_events,
        ] {
            std::fs::create_dir_all(p)?;
        }
        Ok(d)
    }
}

/// A running server (started by us, or an external one given by URL).
pub struct Running {
    pub base: String,
    pub port: u16,
    child: Option<Child>,
    pub dirs: Option<Dirs>,
    pub t_spawn: Instant,
    keep_tmp: bool,
}

/// Options for starting servers.
#[derive(Clone, Default)]
pub struct StartOpts {
    pub tmp_root: PathBuf,
    pub env: Vec<(String, String)>,
    pub keep_tmp: bool,
    /// Use this conversations directory instead of a fresh one (scale scenario).
    pub conversations: Option<PathBuf>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Splits a command line into words (single/double quotes, backslash escapes).
fn split_words(cmd: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = cmd.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        x => cur.push(x),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        x => cur.push(x),
                    }
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Some(out)
}

/// A simple command runs directly (leading `VAR=value` words become environment) so that no
/// shell sits in the measured tree; anything with shell syntax runs via `/bin/sh -c`.
fn build_argv(cmd: &str) -> (Vec<String>, Vec<(String, String)>) {
    const SHELL: &str = ";&|<>()$`*?~\n#{}[]!";
    if !cmd.chars().any(|c| SHELL.contains(c)) {
        if let Some(mut words) = split_words(cmd) {
            let mut env = Vec::new();
            while let Some(w) = words.first() {
                match w.split_once('=') {
                    Some((k, v))
                        if !k.is_empty()
                            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                            && !k.starts_with(|c: char| c.is_ascii_digit()) =>
                    {
                        env.push((k.to_owned(), v.to_owned()));
                        words.remove(0);
                    }
                    _ => break,
                }
            }
            if !words.is_empty() {
                return (words, env);
            }
        }
    }
    (
        vec!["/bin/sh".into(), "-c".into(), cmd.to_owned()],
        Vec::new(),
    )
}

/// True when `GET /health` answers 200 on a fresh connection.
pub fn health_200(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf[..got].starts_with(b"HTTP/1.1 200") || buf[..got].starts_with(b"HTTP/1.0 200")
}

impl Running {
    /// Starts (or attaches to) the server; does not wait for readiness.
    pub fn start(spec: &ServerSpec, opts: &StartOpts) -> anyhow::Result<Running> {
        let template = match &spec.target {
            Target::Url(u) => {
                let port = u
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim_end_matches('/').parse().ok())
                    .unwrap_or(80);
                return Ok(Running {
                    base: u.clone(),
                    port,
                    child: None,
                    dirs: None,
                    t_spawn: Instant::now(),
                    keep_tmp: true,
                });
            }
            Target::Command(c) => c,
        };
        let root = tempfile::Builder::new()
            .prefix(&format!("agent-bench-{}-", spec.name))
            .tempdir_in(&opts.tmp_root)?
            .keep();
        let mut dirs = Dirs::create(root)?;
        if let Some(c) = &opts.conversations {
            dirs.conversations = c.clone();
        }
        let port = free_port()?;
        let mut subst: BTreeMap<&str, String> = BTreeMap::new();
        subst.insert("port", port.to_string());
        subst.insert("conversations_dir", path_str(&dirs.conversations));
        subst.insert("workdir", path_str(&dirs.workdir));
        subst.insert("workspace_dir", path_str(&dirs.workspace));
        subst.insert("bash_events_dir", path_str(&dirs.bash_events));
        subst.insert("home", path_str(&dirs.home));
        subst.insert("tmpdir", path_str(&dirs.tmpdir));
        let mut cmd_text = template.clone();
        for (k, v) in &subst {
            cmd_text = cmd_text.replace(&format!("{{{k}}}"), v);
        }
        let (mut argv, cmd_env) = build_argv(&cmd_text);
        // The server runs in its own cwd: a relative program path is taken from ours.
        if argv[0].contains('/') && !argv[0].starts_with('/') {
            argv[0] = path_str(&std::env::current_dir()?.join(&argv[0]));
        }
        let log = std::fs::File::create(dirs.root.join("server.log"))?;
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .current_dir(&dirs.workdir)
            .env("HOME", &dirs.home)
            .env("TMPDIR", &dirs.tmpdir)
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("OPENHANDS_SUPPRESS_BANNER", "1")
            .env("OH_CONVERSATIONS_PATH", &dirs.conversations)
            .env("OH_BASH_EVENTS_DIR", &dirs.bash_events)
            .env("OH_WORKSPACE_PATH", &dirs.workspace)
            .env("OH_ENABLE_VSCODE", "false")
            .env("OH_PRELOAD_TOOLS", "false")
            .env_remove("SESSION_API_KEY")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in opts.env.iter().chain(cmd_env.iter()) {
            cmd.env(k, v);
        }
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let t_spawn = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot spawn {:?}", argv[0]))?;
        Ok(Running {
            base: format!("http://127.0.0.1:{port}"),
            port,
            child: Some(child),
            dirs: Some(dirs),
            t_spawn,
            keep_tmp: opts.keep_tmp,
        })
    }

    /// Polls `/health` every 10 ms; returns seconds from spawn to the first 200.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<f64> {
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    bail!(
                        "server exited with {st} before ready; log:\n{}",
                        self.log_tail()
                    );
                }
            }
            if health_200(self.port) {
                return Ok(self.t_spawn.elapsed().as_secs_f64());
            }
            if self.t_spawn.elapsed() > timeout {
                bail!("not ready after {timeout:?}; log:\n{}", self.log_tail());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Pid of the root process (None for an external server).
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// True while the started process has not exited.
    pub fn alive(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    pub fn log_tail(&self) -> String {
        let Some(d) = &self.dirs else {
            return String::new();
        };
        let b = std::fs::read(d.root.join("server.log")).unwrap_or_default();
        String::from_utf8_lossy(&b[b.len().saturating_sub(1500)..]).into_owned()
    }

    /// SIGTERM to the group, SIGKILL after 10 s, then SIGKILL to every descendant seen before
    /// (commands may run in their own groups); removes the private directories.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as i32;
            let snap: Vec<(i32, Option<u64>)> = procfs::tree_pids(pid)
                .into_iter()
                .filter(|&p| p != pid)
                .map(|p| (p, procfs::start_time(p)))
                .collect();
            let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = child.wait();
            for (p, st) in snap {
                if st.is_some() && procfs::start_time(p) == st {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
        }
        if let Some(d) = self.dirs.take() {
            if !self.keep_tmp {
                let _ = std::fs::remove_dir_all(&d.root);
            } else {
                eprintln!("kept {}", d.root.display());
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_commands_run_without_a_shell() {
        let (argv, env) = build_argv("A=1 B='x y' /bin/srv --port 5");
        assert_eq!(argv, ["/bin/srv", "--port", "5"]);
        assert_eq!(env, [("A".into(), "1".into()), ("B".into(), "x y".into())]);
        let (argv, _) = build_argv("srv && other");
        assert_eq!(argv[0], "/bin/sh");
    }
}
