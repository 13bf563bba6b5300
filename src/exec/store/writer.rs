//! The write path: appended events queue up and one drainer at a time writes them in name
//! order, each atomically (a spare or temp file renamed into place), then indexes and announces
//! them.

use super::*;

/// An event waiting to be written, and who waits for its file name.
pub(super) struct Job {
    stamp: Stamp,
    event: BashEvent,
    reply: tokio::sync::oneshot::Sender<std::io::Result<Arc<str>>>,
}

/// The append queue. Its length is bounded by the appenders: each waits for its own event.
#[derive(Default)]
pub(super) struct Queue {
    jobs: VecDeque<Job>,
    /// A drainer is at work (on the blocking pool); it stops when the queue is empty.
    draining: bool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("jobs", &self.jobs.len())
            .field("draining", &self.draining)
            .finish()
    }
}

/// Hands the queue on if a drainer stops early (a panic): the next drainer takes the rest.
pub(super) struct DrainGuard<'a> {
    store: &'a Arc<Store>,
    finished: bool,
}

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let restart = {
            let mut q = lock(&self.store.queue);
            q.draining = !q.jobs.is_empty();
            q.draining
        };
        if restart {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    let store = self.store.clone();
                    rt.spawn_blocking(move || store.drain());
                }
                // No runtime to hand on to: the next append starts a drainer.
                Err(_) => lock(&self.store.queue).draining = false,
            }
        }
    }
}

impl Store {
    /// Stores the event `build` makes for a fresh stamp (written atomically, indexed, announced)
    /// and returns its file name and stamp. Cancel-safe: once queued, the event is stored even
    /// if the caller stops waiting.
    pub async fn append(
        self: &Arc<Self>,
        build: impl FnOnce(&Stamp) -> BashEvent,
    ) -> std::io::Result<(Arc<str>, Stamp)> {
        let (reply, written) = tokio::sync::oneshot::channel();
        let (stamp, start_drainer) = {
            let mut q = lock(&self.queue);
            // Stamped and queued under one lock: queue order is name order.
            let stamp = self.stamp();
            let event = build(&stamp);
            q.jobs.push_back(Job {
                stamp: stamp.clone(),
                event,
                reply,
            });
            let start = !q.draining;
            q.draining = true;
            (stamp, start)
        };
        if start_drainer {
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.drain());
        }
        let name = written
            .await
            .map_err(|_| std::io::Error::other("bash event writer stopped"))??;
        Ok((name, stamp))
    }

    /// Writes queued events until none is left (blocking). A busy store keeps one drainer
    /// going, with no hand-off between events.
    pub(super) fn drain(self: Arc<Self>) {
        let mut guard = DrainGuard {
            store: &self,
            finished: false,
        };
        loop {
            let job = {
                let mut q = lock(&self.queue);
                match q.jobs.pop_front() {
                    Some(job) => job,
                    None => {
                        q.draining = false;
                        guard.finished = true;
                        return;
                    }
                }
            };
            let result = self.write(&job.stamp, job.event).map(|(name, meta, json)| {
                let evicted = {
                    let mut index = lock(&self.index);
                    index.insert(name.clone(), meta);
                    evict_oldest(&mut index, self.max_events)
                };
                // Files of events past the retention limit become spares (this runs on the
                // blocking pool).
                for old in evicted {
                    let path = self.dir.join(&*old);
                    if !self.keep_as_spare(&path) {
                        let _ = std::fs::remove_file(&path);
                    }
                }
                let _ = self.announce.send(Announced {
                    name: name.clone(),
                    json,
                });
                name
            });
            let _ = job.reply.send(result);
        }
    }

    /// A fresh time, strictly later than every earlier stamp of this store.
    pub fn stamp(&self) -> Stamp {
        let now = Utc::now().timestamp_micros();
        let micros = {
            let mut last = lock(&self.last_micros);
            let m = now.max(*last + 1);
            *last = m;
            m
        };
        let t = DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or_else(Utc::now);
        let timestamp = if micros % 1_000_000 == 0 {
            t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        } else {
            t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
        };
        Stamp {
            name_prefix: name_prefix(&t),
            timestamp,
        }
    }

    /// Writes `event` atomically under the name built from `stamp`; returns its index entry and,
    /// when it is small, its JSON. Blocking.
    pub(super) fn write(
        self: &Arc<Self>,
        stamp: &Stamp,
        event: BashEvent,
    ) -> std::io::Result<(Arc<str>, Meta, Option<Arc<str>>)> {
        let (name, meta) = match &event {
            BashEvent::Command(c) => (
                format!("{}_BashCommand_{}", stamp.name_prefix, c.id),
                Meta {
                    kind: BashEventKind::Command,
                    command_id: None,
                    event_id: Arc::from(c.id.as_str()),
                    order: None,
                },
            ),
            BashEvent::Output(o) => (
                format!("{}_BashOutput_{}_{}", stamp.name_prefix, o.command_id, o.id),
                Meta {
                    kind: BashEventKind::Output,
                    command_id: Some(Arc::from(o.command_id.as_str())),
                    event_id: Arc::from(o.id.as_str()),
                    order: Some(o.order),
                },
            ),
        };
        let (spare, few_left) = {
            let mut spares = lock(&self.spares);
            (spares.pop_back(), spares.len() < SPARES_LOW_WATER)
        };
        if few_left {
            self.make_spares_ahead();
        }
        let spare = spare.map(|n| self.spares_dir.join(n.to_string()));
        let bytes = write_atomic(&self.dir, &name, &event, spare)?;
        let json = if bytes.len() <= INLINE_JSON_BYTES {
            String::from_utf8(bytes).ok().map(Arc::from)
        } else {
            None
        };
        Ok((Arc::from(name), meta, json))
    }
}

/// Writes `event` to a file not yet visible as an event (the spare file `spare`, else
/// `dir/.tmp-<name>`) then renames it to `dir/<name>`, so a reader (or a restart after a crash)
/// sees either the whole event or nothing. Returns the JSON written.
pub(super) fn write_atomic(
    dir: &Path,
    name: &str,
    event: &BashEvent,
    spare: Option<PathBuf>,
) -> std::io::Result<Vec<u8>> {
    let bytes = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    // A spare is an existing empty file: opening it allocates no inode. Not opened with
    // O_TRUNC, which would make ext4 flush the file to disk when it is closed.
    let reused = spare.and_then(|path| {
        let file = std::fs::OpenOptions::new().write(true).open(&path).ok()?;
        if file.metadata().ok()?.len() != 0 {
            file.set_len(0).ok()?;
        }
        Some((path, file))
    });
    let (tmp, mut file) = match reused {
        Some(reused) => reused,
        None => {
            let path = dir.join(format!("{TEMP_PREFIX}{name}"));
            let file = std::fs::File::create(&path)?;
            (path, file)
        }
    };
    let written = file.write_all(&bytes);
    drop(file);
    let result = written.and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| bytes)
}
