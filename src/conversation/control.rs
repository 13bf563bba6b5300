//! Run control of one conversation: user messages (hooks, titles), starting, queueing,
//! pausing and interrupting runs, rejecting pending actions. Above the conversation state
//! ([`super::service`]) and the agent loop ([`super::agent`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::events::{self};
use super::service::{lock, Conversation, RunCtl};
use super::{agent, ConversationError, ExecutionStatus, StateField};

impl Conversation {
    // ----- operations --------------------------------------------------------------------

    /// Appends a user message (initializing the agent first), and optionally runs.
    pub async fn send_message(
        self: &Arc<Self>,
        content: Value,
        run: bool,
    ) -> Result<(), ConversationError> {
        // A user's message supersedes a goal loop.
        self.stop_goal();
        self.send_message_inner(content, run).await
    }

    /// Sends a goal loop's own message (the loop keeps going; it starts the run itself).
    pub async fn send_goal_message(
        self: &Arc<Self>,
        content: Value,
    ) -> Result<(), ConversationError> {
        self.send_message_inner(content, false).await
    }

    /// Starts a goal loop (`POST .../goal`, or `.../goal/resume` with `start.resume`).
    pub fn start_goal(
        self: &Arc<Self>,
        start: super::goal::GoalStart,
    ) -> Result<(), ConversationError> {
        let busy =
            || ConversationError::Conflict("Conversation run or goal loop already running.".into());
        let mut goal = lock(&self.goal);
        if goal.is_some() || self.run_ctl().is_some() || self.status() == ExecutionStatus::Running {
            return Err(busy());
        }
        if self.active_runs.load(Ordering::Acquire) >= self.max_runs {
            return Err(ConversationError::TooManyRuns(
                "Conversation run limit reached. Retry the request later.".into(),
            ));
        }
        let cancel = CancellationToken::new();
        *goal = Some(cancel.clone());
        self.tasks
            .spawn(super::goal::run(self.clone(), start, cancel));
        Ok(())
    }

    /// Stops the goal loop, if any (a run in progress goes on).
    pub fn stop_goal(&self) {
        if let Some(g) = lock(&self.goal).as_ref() {
            g.cancel();
        }
    }

    /// Called by the goal loop when it ends.
    pub fn goal_finished(&self) {
        *lock(&self.goal) = None;
    }

    async fn send_message_inner(
        self: &Arc<Self>,
        content: Value,
        run: bool,
    ) -> Result<(), ConversationError> {
        self.ensure_events().await?;
        agent::ensure_initialized(self).await?;
        let mut body = events::user_message("user", content);
        let suffix = self
            .agent_json()
            .get("agent_context")
            .and_then(|c| c.get("user_message_suffix"))
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .map(str::to_owned);
        if let Some(sfx) = suffix {
            body["extended_content"] = json!([events::text(&sfx)]);
        }
        let msg = self.append(body).await?;
        let msg_id = events::id(&msg).to_string();
        let running = self.run_ctl();
        if let Some(ctl) = &running {
            ctl.new_message.store(true, Ordering::Release);
        }
        self.set_field(StateField::LastUserMessageId(msg_id.clone()), true)
            .await?;
        let text_body = events::message_text(&msg);
        if let Some(reason) = super::hooks::user_prompt_submit(self, &text_body, &msg_id).await? {
            let mut blocked = self.read_state(|s| s.blocked_messages.clone());
            blocked.insert(msg_id.clone(), json!(reason));
            self.set_field(StateField::BlockedMessages(blocked), true)
                .await?;
        }
        // A finished conversation has work again, as in the reference, even when its loop is
        // still winding down: the loop then goes on (it reads `idle` as "continue"), or a later
        // `run` starts from `idle`. Left `finished`, the message would never be run.
        let st = self.status();
        if st == ExecutionStatus::Finished || st == ExecutionStatus::Stuck {
            self.set_status(ExecutionStatus::Idle).await?;
        }
        self.maybe_autotitle(&msg);
        if run && self.start_or_queue_run()? {
            // Queued behind a loop that is winding down: the conversation is no longer done.
            let st = self.status();
            if st == ExecutionStatus::Finished || st == ExecutionStatus::Stuck {
                self.set_status(ExecutionStatus::Idle).await?;
            }
        }
        Ok(())
    }

    /// Starts a run, or asks the active one to run again once it stops. The request is made
    /// under the same lock that [`Self::end_run`] takes to retire a run, so it is never lost.
    /// Returns true when the request was queued behind a run loop that had already stopped.
    fn start_or_queue_run(self: &Arc<Self>) -> Result<bool, ConversationError> {
        for _ in 0..3 {
            {
                let inner = lock(&self.inner);
                if let Some(ctl) = &inner.run {
                    ctl.rerun.store(true, Ordering::Release);
                    return Ok(ctl.exiting.load(Ordering::Acquire));
                }
            }
            match self.start_run() {
                Err(ConversationError::Conflict(_)) => continue,
                other => return other.map(|()| false),
            }
        }
        Err(ConversationError::Conflict(
            "Conversation already running. Wait for completion or pause first.".into(),
        ))
    }

    fn maybe_autotitle(self: &Arc<Self>, first: &Value) {
        let should = {
            let mut inner = self.loaded();
            let want = inner.meta.autotitle && inner.meta.title.is_none() && !inner.title_started;
            if want {
                inner.title_started = true;
            }
            want
        };
        if should {
            let conv = self.clone();
            let text = events::message_text(first);
            self.tasks
                .spawn(async move { agent::autotitle(conv, text).await });
        }
    }

    /// `POST /run`: starts a run; `Conflict` while one is running. A run asked for while a pause
    /// is pending (the loop still finishing its step) resumes it, as the reference does: status
    /// `running` again at once, and the loop carries on (or starts again if it already stopped).
    pub async fn request_run(self: &Arc<Self>) -> Result<(), ConversationError> {
        if self.status() == ExecutionStatus::Paused && self.run_ctl().is_some() {
            self.set_status(ExecutionStatus::Running).await?;
            return self.start_or_queue_run().map(|_| ());
        }
        self.start_run()
    }

    /// Starts a background run. `Conflict` when one is active, `TooManyRuns` at capacity.
    pub fn start_run(self: &Arc<Self>) -> Result<(), ConversationError> {
        if self.stopping.is_cancelled() {
            return Err(ConversationError::Conflict(
                "The server is shutting down; runs are not started.".into(),
            ));
        }
        let ctl = {
            let mut inner = lock(&self.inner);
            if inner.run.is_some() {
                return Err(ConversationError::Conflict(
                    "Conversation already running. Wait for completion or pause first.".into(),
                ));
            }
            let n = self.active_runs.fetch_add(1, Ordering::AcqRel);
            if n >= self.max_runs {
                self.active_runs.fetch_sub(1, Ordering::AcqRel);
                return Err(ConversationError::TooManyRuns(format!(
                    "Maximum number of concurrent runs ({}) reached",
                    self.max_runs
                )));
            }
            let ctl = RunCtl {
                cancel: CancellationToken::new(),
                rerun: Arc::new(AtomicBool::new(false)),
                new_message: Arc::new(AtomicBool::new(false)),
                exiting: Arc::new(AtomicBool::new(false)),
                done: Arc::new(tokio::sync::Notify::new()),
                finished: Arc::new(AtomicBool::new(false)),
            };
            inner.run = Some(ctl.clone());
            ctl
        };
        let conv = self.clone();
        let tasks = self.tasks.clone();
        self.tasks.spawn(async move {
            let c2 = conv.clone();
            let ctl2 = ctl.clone();
            // A task of its own, so that a panic in the loop is reported and the run retired.
            let res = tasks.spawn(async move { agent::run(c2, ctl2).await }).await;
            if let Err(e) = res {
                tracing::error!(conversation = %conv.id, error = %e, "run task failed");
                let _ = conv
                    .append(events::conversation_error("InternalError", &e.to_string()))
                    .await;
                let _ = conv.set_status(ExecutionStatus::Error).await;
            }
            conv.end_run(&ctl).await;
        });
        Ok(())
    }

    async fn end_run(self: &Arc<Self>, ctl: &RunCtl) {
        if !self.is_deleted() {
            let _w = self.write_lock.lock().await;
            if let Err(e) = self.save_state().await {
                tracing::warn!(conversation = %self.id, error = %e, "could not save the state");
            }
        }
        // A message that asked for a run after the loop's last look at `rerun` is honoured here.
        let again = {
            let mut inner = lock(&self.inner);
            inner.run = None;
            ctl.rerun.swap(false, Ordering::AcqRel) && !ctl.cancel.is_cancelled()
        };
        self.active_runs.fetch_sub(1, Ordering::AcqRel);
        ctl.finished.store(true, Ordering::Release);
        ctl.done.notify_waiters();
        if again && !self.is_deleted() {
            let st = self.status();
            if st == ExecutionStatus::Finished
                || st == ExecutionStatus::Paused
                || st == ExecutionStatus::Stuck
            {
                let _ = self.set_status(ExecutionStatus::Idle).await;
            }
            if let Err(e) = self.start_run() {
                tracing::warn!(conversation = %self.id, error = %e, "could not start the queued run");
            }
            return;
        }
        self.publish_full_state();
        // The client only accepts a snapshot after its POST /run returned; a very fast run can
        // beat that response, so repeat the snapshot shortly after, to the sockets connected
        // now only: a socket opened since got its own snapshot first, and an extra one after
        // its replay would be an event `events/search` does not list.
        let upto = self.subscriptions_so_far();
        let conv = self.clone();
        self.tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if conv.run_ctl().is_none() && !conv.is_deleted() {
                conv.publish_full_state_to(upto);
            }
        });
    }

    /// Pauses: status `paused` + `PauseEvent` when idle or running; always a snapshot.
    pub async fn pause(&self) -> std::io::Result<()> {
        let st = self.status();
        if st == ExecutionStatus::Idle || st == ExecutionStatus::Running {
            self.set_status(ExecutionStatus::Paused).await?;
            self.append(events::bare("PauseEvent", "user")).await?;
        }
        self.publish_full_state();
        Ok(())
    }

    /// Interrupts the run now (or pauses when none is active).
    pub async fn interrupt(&self) -> std::io::Result<()> {
        match self.run_ctl() {
            Some(ctl) => {
                ctl.cancel.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(5), ctl.wait()).await;
                self.publish_full_state();
                Ok(())
            }
            None => self.pause().await,
        }
    }

    /// Rejects every pending action (`UserRejectObservation`), status → idle.
    pub async fn reject_pending(&self, reason: &str) -> std::io::Result<()> {
        let pending = self.with_events(super::history::pending_actions).await?;
        if self.status() == ExecutionStatus::WaitingForConfirmation {
            self.set_status(ExecutionStatus::Idle).await?;
        }
        for a in pending {
            let body = events::user_reject(
                events::str_field(&a, "tool_name").unwrap_or(""),
                events::str_field(&a, "tool_call_id").unwrap_or(""),
                reason,
                "user",
                events::id(&a),
            );
            self.append(body).await?;
        }
        Ok(())
    }
}
