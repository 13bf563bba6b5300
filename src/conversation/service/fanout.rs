//! Fan-out to WebSocket subscribers: bounded queues, `full_state` snapshots, transient
//! events; a subscriber that falls behind is disconnected.

use super::*;

impl Conversation {
    /// Publishes a `full_state` snapshot to the subscribers (not persisted).
    pub fn publish_full_state(&self) {
        self.publish_full_state_to(u64::MAX);
    }

    /// The number of subscriptions made so far: [`Self::publish_full_state_to`] with it
    /// reaches only the subscribers connected by now.
    pub fn subscriptions_so_far(&self) -> u64 {
        lock(&self.inner).next_sub
    }

    /// Publishes a `full_state` snapshot to the subscribers whose subscription number is at
    /// most `upto` (later ones got a snapshot of their own when they connected).
    pub fn publish_full_state_to(&self, upto: u64) {
        // The snapshot is built only when someone will receive it.
        if !lock(&self.inner).subscribers.iter().any(|s| s.id <= upto) {
            return;
        }
        let value = self.full_state_value();
        let mut inner = lock(&self.inner);
        let ts = inner.clock.tick();
        let ev = events::finalize(
            events::state_update("full_state", value),
            &crate::util::dashed_id(),
            &ts,
            None,
        );
        let text: Arc<str> = Arc::from(serde_json::to_string(&ev).unwrap_or_default());
        publish_to(&mut inner, text, |id| id <= upto);
    }

    /// Publishes a transient event (never persisted), e.g. a `ServerErrorEvent` to one socket.
    pub fn transient_event(&self, body: Value) -> Value {
        let ts = lock(&self.inner).clock.tick();
        events::finalize(body, &crate::util::dashed_id(), &ts, None)
    }

    /// Publishes a WebSocket-only event (e.g. `StreamingDeltaEvent`); never persisted.
    pub fn publish_transient(&self, body: Value) {
        let mut inner = lock(&self.inner);
        if inner.subscribers.is_empty() {
            return;
        }
        let ts = inner.clock.tick();
        let ev = events::finalize(body, &crate::util::dashed_id(), &ts, None);
        let text: Arc<str> = Arc::from(serde_json::to_string(&ev).unwrap_or_default());
        publish(&mut inner, text);
    }

    /// Subscribes to live events; the `full_state` snapshot is queued first.
    pub fn subscribe(self: &Arc<Self>) -> Result<Subscription, ConversationError> {
        let value = self.full_state_value();
        let mut inner = lock(&self.inner);
        if inner.subscribers.len() >= MAX_SUBSCRIBERS {
            return Err(ConversationError::TooManyRuns(
                "Too many connections for this conversation".into(),
            ));
        }
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let ts = inner.clock.tick();
        let ev = events::finalize(
            events::state_update("full_state", value),
            &crate::util::dashed_id(),
            &ts,
            None,
        );
        let _ = tx.try_send(Arc::from(serde_json::to_string(&ev).unwrap_or_default()));
        inner.next_sub += 1;
        let id = inner.next_sub;
        let flag = Arc::new(AtomicBool::new(false));
        inner.overflow_flags.insert(id, flag.clone());
        inner.subscribers.push(Subscriber { id, tx });
        Ok(Subscription {
            rx,
            overflowed: flag,
            id,
            conv: self.clone(),
        })
    }
}

/// Sends `text` to every subscriber; a full queue disconnects that subscriber.
pub(in crate::conversation) fn publish(inner: &mut Inner, text: Arc<str>) {
    publish_to(inner, text, |_| true);
}

/// Sends `text` to the subscribers whose id passes `to`; a full queue disconnects one.
pub(in crate::conversation) fn publish_to(
    inner: &mut Inner,
    text: Arc<str>,
    to: impl Fn(u64) -> bool,
) {
    let mut dropped = Vec::new();
    for s in inner.subscribers.iter().filter(|s| to(s.id)) {
        match s.tx.try_send(text.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if let Some(f) = inner.overflow_flags.get(&s.id) {
                    f.store(true, Ordering::Release);
                }
                dropped.push(s.id);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => dropped.push(s.id),
        }
    }
    if !dropped.is_empty() {
        inner.subscribers.retain(|s| !dropped.contains(&s.id));
        for id in dropped {
            inner.overflow_flags.remove(&id);
        }
    }
}
