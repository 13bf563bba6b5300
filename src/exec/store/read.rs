//! Reading and searching stored events: loads by name, the index queries (after a name, a
//! command's outputs, searches with filters, sort and paging) and the order backfill.

use super::*;

impl Store {
    /// Reads one event file; `None` (and the name leaves the index) when it is gone or invalid.
    pub async fn load(&self, name: &str) -> Option<BashEvent> {
        let path = self.dir.join(name);
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<BashEvent> {
            let bytes = std::fs::read(&path)?;
            BashEvent::from_json(&bytes).map_err(std::io::Error::other)
        })
        .await;
        match read {
            Ok(Ok(event)) => Some(event),
            Ok(Err(e)) => {
                self.skip_unreadable(name, &e);
                None
            }
            Err(_) => None,
        }
    }

    /// Reads one event's JSON text as stored (our files are compact; files written by the
    /// reference are indented, which is still valid JSON). Checked to be JSON, not re-serialised.
    pub async fn load_json(&self, name: &str) -> Option<String> {
        let names = [Arc::from(name)];
        self.load_json_many(&names, 0).await.pop().flatten()
    }

    /// Reads the JSON text of the first of `names` in order, in one blocking task, until
    /// `budget` bytes are read (at least one event, at most all of them): one result per name
    /// read, `None` for a file gone or invalid (the name then leaves the index).
    pub async fn load_json_many(&self, names: &[Arc<str>], budget: usize) -> Vec<Option<String>> {
        let dir = self.dir.clone();
        let owned = names.to_vec();
        let read = tokio::task::spawn_blocking(move || {
            let mut read = Vec::with_capacity(owned.len());
            let mut bytes = 0;
            for name in &owned {
                let result = read_json(&dir.join(&**name));
                bytes += result.as_ref().map_or(0, String::len);
                read.push(result);
                if bytes >= budget {
                    break;
                }
            }
            read
        })
        .await;
        let Ok(read) = read else {
            // The runtime is shutting down.
            return names.iter().map(|_| None).collect();
        };
        read.into_iter()
            .zip(names)
            .map(|(result, name)| result.map_err(|e| self.skip_unreadable(name, &e)).ok())
            .collect()
    }

    /// Drops an unreadable event from the index. A file deleted by the retention limit after
    /// its name was taken is expected under load (debug); anything else is a warning.
    fn skip_unreadable(&self, name: &str, error: &std::io::Error) {
        let mut index = lock(&self.index);
        let evicted = index.newest_evicted.as_deref().is_some_and(|e| e >= name);
        if error.kind() == std::io::ErrorKind::NotFound && evicted {
            tracing::debug!(
                name,
                "bash event deleted by the retention limit before its read"
            );
        } else {
            tracing::warn!(name, %error, "unreadable bash event skipped");
        }
        index.remove(name);
    }

    /// File name of the event with this hex id.
    pub fn name_of(&self, event_id: &str) -> Option<Arc<str>> {
        lock(&self.index).by_id.get(event_id).cloned()
    }

    /// Up to `limit` event names after `after` (all from the first when `None`), in name order:
    /// new events only ever join the end of that order.
    pub fn names_after(&self, after: Option<&str>, limit: usize) -> Vec<Arc<str>> {
        let idx = lock(&self.index);
        let range = match after {
            Some(a) => idx
                .by_name
                .range::<str, _>((Bound::Excluded(a), Bound::Unbounded)),
            None => idx.by_name.range::<str, _>(..),
        };
        range.take(limit).map(|(name, _)| name.clone()).collect()
    }

    /// The name of the newest event the retention limit deleted (events are deleted oldest
    /// first, so a reader that has read up to an earlier name missed one).
    pub fn newest_evicted(&self) -> Option<Arc<str>> {
        lock(&self.index).newest_evicted.clone()
    }

    /// The name of the newest stored event.
    pub fn last_name(&self) -> Option<Arc<str>> {
        lock(&self.index).by_name.keys().next_back().cloned()
    }

    /// Names of a command's outputs, in file-name (= time) order.
    pub fn outputs_of(&self, command_id: &str) -> Vec<Arc<str>> {
        lock(&self.index)
            .outputs_by_command
            .get(command_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Commands of a previous run that never got their final output (the server died while they
    /// ran), each with the `order` its final output should get. Blocking; answers once.
    pub fn take_interrupted(&self) -> Vec<(Arc<str>, i64)> {
        let found = std::mem::take(&mut *lock(&self.found_commands));
        found
            .into_iter()
            .filter_map(|(command_id, last)| match last {
                None => Some((command_id, 0)),
                Some(name) => {
                    let path = self.dir.join(&*name);
                    if head_token(&path, "exit_code").as_deref() != Some("null") {
                        return None;
                    }
                    let order = read_order(&path)?;
                    Some((command_id, order + 1))
                }
            })
            .collect()
    }

    /// Reads the `order` of outputs indexed at start-up (once; later outputs carry theirs).
    pub async fn ensure_orders(self: &Arc<Self>) {
        let store = self.clone();
        self.orders_ready
            .get_or_init(|| async move {
                let pending: Vec<Arc<str>> = {
                    let idx = lock(&store.index);
                    if idx.unresolved_orders == 0 {
                        return;
                    }
                    idx.by_name
                        .iter()
                        .filter(|(_, m)| m.kind == BashEventKind::Output && m.order.is_none())
                        .map(|(n, _)| n.clone())
                        .collect()
                };
                let dir = store.dir.clone();
                let found = tokio::task::spawn_blocking(move || {
                    pending
                        .into_iter()
                        .map(|n| {
                            let order = read_order(&dir.join(&*n));
                            (n, order)
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                let mut idx = lock(&store.index);
                for (name, order) in found {
                    match order {
                        Some(o) => {
                            if let Some(m) = idx.by_name.get_mut(&name) {
                                if m.order.is_none() {
                                    m.order = Some(o);
                                    idx.unresolved_orders = idx.unresolved_orders.saturating_sub(1);
                                }
                            }
                        }
                        None => idx.remove(&name),
                    }
                }
            })
            .await;
    }

    /// Picks the names of one search page and the cursor of the next, from the index alone.
    /// Filters apply before `limit`; an unknown cursor starts from the beginning (as the reference).
    pub fn select(&self, q: &SearchQuery) -> (Vec<Arc<str>>, Option<String>) {
        let idx = lock(&self.index);
        let empty = BTreeSet::new();
        let outputs_of_command = q
            .command_id
            .as_deref()
            .map(|c| idx.outputs_by_command.get(c).unwrap_or(&empty));
        if q.command_id.is_some() && q.kind == Some(BashEventKind::Command) {
            return (Vec::new(), None);
        }
        let lo_s = q.timestamp_gte.as_ref().map(name_prefix);
        let hi_s = q.timestamp_lt.as_ref().map(name_prefix);
        let lo = lo_s.as_deref();
        let hi = hi_s.as_deref();
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if lo >= hi {
                return (Vec::new(), None);
            }
        }
        let passes_name_filters = |name: &str| -> bool {
            let in_set = match outputs_of_command {
                Some(set) => set.contains(name),
                None => true,
            };
            in_set
                && lo.is_none_or(|l| name >= l)
                && hi.is_none_or(|h| name < h)
                && idx
                    .by_name
                    .get(name)
                    .is_some_and(|m| q.kind.is_none_or(|k| k == m.kind))
        };
        let descending = q.sort_order == BashEventSortOrder::TimestampDesc;
        let cursor = q
            .page_id
            .as_deref()
            .filter(|p| !p.is_empty() && passes_name_filters(p));
        let mut lower: Bound<&str> = lo.map_or(Bound::Unbounded, Bound::Included);
        let mut upper: Bound<&str> = hi.map_or(Bound::Unbounded, Bound::Excluded);
        if let Some(c) = cursor {
            if descending {
                upper = Bound::Included(c);
            } else {
                lower = Bound::Included(c);
            }
        }
        let names: Box<dyn Iterator<Item = &Arc<str>>> = match outputs_of_command {
            Some(set) => {
                let r = set.range::<str, _>((lower, upper));
                if descending {
                    Box::new(r.rev())
                } else {
                    Box::new(r)
                }
            }
            None => {
                let r = idx.by_name.range::<str, _>((lower, upper)).map(|(n, _)| n);
                if descending {
                    Box::new(r.rev())
                } else {
                    Box::new(r)
                }
            }
        };
        let mut page = Vec::new();
        let mut next = None;
        for name in names {
            let Some(meta) = idx.by_name.get(name) else {
                continue;
            };
            if q.kind.is_some_and(|k| k != meta.kind) {
                continue;
            }
            if let (Some(gt), Some(order)) = (q.order_gt, meta.order) {
                if order <= gt {
                    continue;
                }
            }
            if page.len() >= q.limit {
                next = Some(name.to_string());
                break;
            }
            page.push(name.clone());
        }
        (page, next)
    }
}

/// The raw JSON token after `"key":` in the first bytes of a stored event (outputs put `order`
/// and `exit_code` before their text, in our files and the reference's).
pub(super) fn head_token(path: &Path, key: &str) -> Option<String> {
    let mut head = vec![0u8; ORDER_PROBE_BYTES];
    let mut f = std::fs::File::open(path).ok()?;
    let mut filled = 0;
    while filled < head.len() {
        match f.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => return None,
        }
    }
    let head = String::from_utf8_lossy(&head[..filled]);
    let quoted = format!("\"{key}\"");
    let pos = head.find(&quoted)?;
    let rest = head[pos + quoted.len()..].trim_start().strip_prefix(':')?;
    let token: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    (!token.is_empty()).then_some(token)
}

/// The `order` of a stored output: found in the file's head, else by parsing it all.
pub(super) fn read_order(path: &Path) -> Option<i64> {
    if let Some(order) = head_token(path, "order").and_then(|t| t.parse().ok()) {
        return Some(order);
    }
    match BashEvent::from_json(&std::fs::read(path).ok()?).ok()? {
        BashEvent::Output(o) => Some(o.order),
        BashEvent::Command(_) => None,
    }
}

/// One event file's JSON text, compact: ours are written compact; the reference's indented
/// files are re-serialised.
fn read_json(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).map_err(std::io::Error::other)?;
    let mut text = String::from_utf8(bytes).map_err(std::io::Error::other)?;
    if text.starts_with("{\n") {
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(std::io::Error::other)?;
        return Ok(value.to_string());
    }
    text.truncate(text.trim_end().len());
    Ok(text)
}
