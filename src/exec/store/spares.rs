//! Spare files: cleared event files kept empty under `.spares/` and reused by later events,
//! made ahead of the writer when few are left.

use super::*;

impl Store {
    /// Starts making new empty spares on another blocking thread (unless one is at it), called
    /// when few are left: allocating an inode can be slow (see the module comment), and this way
    /// a busy store does it beside its single writer instead of in it. Same files, made a little
    /// earlier.
    pub(super) fn make_spares_ahead(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.making_spares.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let store = self.clone();
                rt.spawn_blocking(move || store.make_spares());
            }
            Err(_) => self.making_spares.store(false, Ordering::Release),
        }
    }

    /// Creates empty spares until [`SPARES_AHEAD`] are ready (blocking); stops at an error.
    pub(super) fn make_spares(&self) {
        use std::sync::atomic::Ordering;
        while lock(&self.spares).len() < SPARES_AHEAD {
            let n = self.next_spare.fetch_add(1, Ordering::Relaxed);
            let path = self.spares_dir.join(n.to_string());
            let made = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path);
            if let Err(e) = made {
                tracing::debug!(error = %e, "cannot make a spare bash event file");
                break;
            }
            lock(&self.spares).push_front(n);
        }
        self.making_spares.store(false, Ordering::Release);
    }

    /// Turns a cleared event file into an empty spare (blocking); false when the pool is full
    /// or the file cannot be moved (the caller deletes it).
    pub(super) fn keep_as_spare(&self, path: &Path) -> bool {
        if lock(&self.spares).len() >= MAX_SPARES {
            return false;
        }
        let n = self
            .next_spare
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let spare = self.spares_dir.join(n.to_string());
        if std::fs::rename(path, &spare).is_err() {
            return false;
        }
        // Emptied through an open file: ext4 flushes a file truncated to zero at its next
        // close, and that close is here rather than after the spare's next write.
        let emptied = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&spare);
        if emptied.is_err() {
            let _ = std::fs::remove_file(&spare);
            return true;
        }
        lock(&self.spares).push_back(n);
        true
    }

    /// Deletes every event file (not temp files) and forgets them; returns how many.
    pub async fn clear(self: &Arc<Self>) -> std::io::Result<usize> {
        let dir = self.dir.clone();
        let store = self.clone();
        let removed = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
                    continue;
                }
                if !store.keep_as_spare(&entry.path()) {
                    if let Err(e) = std::fs::remove_file(entry.path()) {
                        tracing::warn!(name, error = %e, "cannot delete bash event file");
                    }
                }
                names.push(name);
            }
            Ok(names)
        })
        .await
        .map_err(std::io::Error::other)??;
        let mut idx = lock(&self.index);
        for name in &removed {
            idx.remove(name);
        }
        Ok(removed.len())
    }
}
