//! Children left by a server that was killed (`kill -9`, OOM, a crash) are found and killed
//! when the next server starts on the same state.
//!
//! Every child the server starts (workspace commands, the agent's terminal, hooks) carries the
//! variable [`MARKER`] in its environment, with a value derived from the server's state
//! directories; children inherit it down the tree, so grandchildren that were reparented carry
//! it too. At start-up the server scans `/proc` for processes with its value and kills them and
//! their process groups. A server stopped normally kills its children itself, so this only
//! finds leftovers. Nothing is written per command.

use std::path::Path;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

/// The environment variable that marks a server's children.
pub const MARKER: &str = "OH_AGENT_SERVER_CHILD_OF";

/// The marker value for a server keeping its state in these directories: the same across
/// restarts, different for servers on other state.
pub fn marker_value(state_dirs: &[&Path]) -> String {
    let mut hash = Sha256::new();
    for dir in state_dirs {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        hash.update(dir.as_os_str().as_encoded_bytes());
        hash.update([0]);
    }
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The processes other than this one whose environment holds `MARKER=value`. Blocking: reads
/// `/proc`.
pub fn marked(value: &str) -> Vec<u32> {
    let needle = format!("{MARKER}={value}");
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            let found = environ
                .split(|b| *b == 0)
                .any(|var| var == needle.as_bytes());
            (found && pid != me).then_some(pid)
        })
        .collect()
}

/// Kills the processes (and their process groups) whose environment holds `MARKER=value`,
/// except this process; returns how many were found. Blocking: reads `/proc`.
pub fn sweep(value: &str) -> usize {
    let found = marked(value);
    for pid in &found {
        let Ok(raw) = i32::try_from(*pid) else {
            continue;
        };
        let pid = Pid::from_raw(raw);
        if let Ok(group) = nix::unistd::getpgid(Some(pid)) {
            // Never our own group (a server started by one of its own children's shells).
            if group != nix::unistd::getpgrp() {
                let _ = killpg(group, Signal::SIGKILL);
            }
        }
        let _ = kill(pid, Signal::SIGKILL);
    }
    found.len()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn marked_processes_are_killed_others_are_not() {
        let value = marker_value(&[Path::new("/nonexistent/for-this-test")]);
        assert_eq!(value.len(), 16);
        assert_eq!(
            value,
            marker_value(&[Path::new("/nonexistent/for-this-test")])
        );
        let spawn = |marker: &str| {
            let mut cmd = std::process::Command::new("sh");
            cmd.args(["-c", "sleep 60 & sleep 60"]).env(MARKER, marker);
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            cmd.spawn().unwrap()
        };
        let mut marked = spawn(&value);
        let mut other = spawn("something-else");
        std::thread::sleep(std::time::Duration::from_millis(200));
        // The shell and its background `sleep` inherit the marker; killing the first one's
        // group ends both.
        assert!(sweep(&value) >= 1);
        let status = marked.wait().unwrap();
        assert!(!status.success());
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(sweep(&value), 0, "a marked process survived");
        assert!(
            other.try_wait().unwrap().is_none(),
            "an unmarked process was killed"
        );
        let _ = killpg(Pid::from_raw(other.id() as i32), Signal::SIGKILL);
        let _ = other.wait();
    }
}
