//! Blocking `git` runs for plugin sources: each child starts from [`crate::util::git_command`]
//! (the children's environment, no prompts, its own process group), its output is captured
//! (bounded), and on the deadline the whole group is killed. Call from `spawn_blocking`.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Most bytes kept of each output stream.
const OUTPUT_CAP: usize = 256 * 1024;
/// How often a running child is polled.
const POLL: Duration = Duration::from_millis(10);

/// What a finished git command printed.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exited with status 0.
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Why a git command has no [`Output`].
#[derive(Debug)]
pub enum RunError {
    /// The deadline passed; the process group was killed.
    TimedOut,
    /// It could not be started.
    Spawn(std::io::Error),
}

/// A `git` command (see the module docs) with `args`.
pub fn command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = crate::util::git_command();
    cmd.args(args);
    cmd
}

fn read_capped(stream: Option<impl Read>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `cmd` to completion within `timeout`. Once the git process has exited (and before it
/// is reaped, so its group id cannot be reused) anything left in its group is killed, so that
/// a lingering helper cannot hold the output pipes open.
pub fn run(mut cmd: Command, timeout: Duration) -> Result<Output, RunError> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(RunError::Spawn)?;
    let pid = Pid::from_raw(child.id() as i32);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || read_capped(stdout));
    let err_reader = std::thread::spawn(move || read_capped(stderr));
    let deadline = Instant::now() + timeout;
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    let mut timed_out = false;
    loop {
        match waitid(Id::Pid(pid), flags) {
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() >= deadline {
                    timed_out = true;
                    break;
                }
                std::thread::sleep(POLL);
            }
            Ok(_) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => break,
        }
    }
    let _ = killpg(pid, Signal::SIGKILL);
    let status = child.wait();
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if timed_out {
        return Err(RunError::TimedOut);
    }
    Ok(Output {
        success: status.is_ok_and(|s| s.success()),
        stdout,
        stderr,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn output_and_deadline() {
        let out = run(command(["--version"]), Duration::from_secs(30)).unwrap();
        assert!(out.success && out.stdout.starts_with("git version"));
        // Not git, but the same treatment: a child that outlives the deadline is killed.
        let mut sleeper = Command::new("sh");
        sleeper.args(["-c", "sleep 30 & sleep 30"]);
        std::os::unix::process::CommandExt::process_group(&mut sleeper, 0);
        sleeper.stdin(Stdio::null());
        let started = Instant::now();
        assert!(matches!(
            run(sleeper, Duration::from_millis(200)),
            Err(RunError::TimedOut)
        ));
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
