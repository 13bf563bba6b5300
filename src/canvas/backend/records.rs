//! Run records (`run/<pgid>.json`) and the start-up sweep of backends a dead server left running.

use super::*;

impl Backends {
    /// Kills backends a server that died without stopping them left running (their run
    /// records name them), before anything is served. Blocking.
    pub fn reap_orphans(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.run_dir) else {
            return 0;
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        let mut killed = 0;
        for path in paths {
            let record = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| RunRecord::from_json(&v));
            let Some(record) = record else {
                let _ = std::fs::remove_file(&path);
                continue;
            };
            if process_start_time(record.server_pid) == Some(record.server_start_time) {
                continue; // Its server still runs and owns it.
            }
            if self.is_recorded_backend(&record) {
                killed += 1;
                signal_group(record.pgid, Signal::SIGTERM);
                if !wait_gone_blocking(record.pgid, STOP_TIMEOUT) {
                    signal_group(record.pgid, Signal::SIGKILL);
                    wait_gone_blocking(record.pgid, STOP_TIMEOUT);
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        killed
    }

    pub(super) fn is_recorded_backend(&self, record: &RunRecord) -> bool {
        if process_start_time(record.pgid) != Some(record.start_time) {
            return false;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", record.pgid)) else {
            return false;
        };
        let prefix = format!(
            "{}/",
            crate::canvas::source::resolve(&self.artifacts_dir.join(&record.name)).display()
        );
        cmdline
            .split(|b| *b == 0)
            .any(|arg| String::from_utf8_lossy(arg).starts_with(&prefix))
    }
}

/// `run/<pgid>.json`: which server started which backend process group.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct RunRecord {
    name: String,
    pgid: u32,
    start_time: u64,
    server_pid: u32,
    server_start_time: u64,
}

impl RunRecord {
    pub(super) fn from_json(v: &Value) -> Option<Self> {
        let int = |k: &str| v.get(k).and_then(Value::as_u64);
        Some(RunRecord {
            name: v.get("name")?.as_str()?.to_string(),
            pgid: u32::try_from(int("pgid")?).ok()?,
            start_time: int("start_time")?,
            server_pid: u32::try_from(int("server_pid")?).ok()?,
            server_start_time: int("server_start_time")?,
        })
    }
}

/// A process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub(super) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(19)?.parse().ok()
}

pub(super) fn write_run_record(run_dir: &Path, name: &str, pgid: u32) {
    let me = std::process::id();
    let (Some(start_time), Some(server_start_time)) =
        (process_start_time(pgid), process_start_time(me))
    else {
        return;
    };
    let record = json!({
        "name": name,
        "pgid": pgid,
        "start_time": start_time,
        "server_pid": me,
        "server_start_time": server_start_time,
    });
    if std::fs::create_dir_all(run_dir).is_ok() {
        let path = run_dir.join(format!("{pgid}.json"));
        if let Err(e) = crate::persist::write_atomic(&path, record.to_string().as_bytes()) {
            tracing::warn!(error = %e, "cannot write canvas app backend run record");
        }
    }
}
