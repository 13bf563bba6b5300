//! Goal mode: the agent works toward an objective in rounds; after each run a judge (the
//! agent's LLM, with the reference's audit prompt) reads the transcript and decides whether the
//! objective is provably done. Until it is, or the round cap is reached, a follow-up message
//! naming what is missing starts the next round. Progress is published as `goal` state-update
//! events (persisted, not part of the state, never shown to the LLM).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::service::Conversation;
use super::{events, ConversationError, ExecutionStatus};

const JUDGE_SYSTEM_PROMPT: &str = "You are auditing whether a long-running GOAL has been COMPLETED by an AI software agent.

Derive the concrete requirements implied by the objective. For EACH requirement,
look for authoritative evidence in the transcript: file contents, command
output, or test results produced by the agent. Treat missing, uncertain, or
merely-claimed-but-unverified evidence as NOT satisfied.

Respond with STRICT JSONand nothing else, in exactly this shape:
{\"score\": <float 0.0-1.0, probability the FULL objective is provably done>, \"complete\": <true|false>, \"missing\": \"<concise description of what remains, or an empty string if complete>\"}";

const RESUME_PROMPT: &str = "Resuming a goal that was paused or interrupted. Re-check the real current state of the workspace (do not rely on memory) and continue making concrete, verified progress toward the original objective. Finish only once every requirement is provably satisfied.";

fn followup(iteration: u64, missing: &str) -> String {
    format!(
        "The goal is NOT yet complete (audit iteration {iteration}).\nOutstanding: {missing}\n\n\
         Inspect the real current state of the workspace (do not rely on memory). For each \
         remaining requirement, make concrete progress and gather authoritative evidence by \
         running the relevant tests/commands. Keep the full objective intact and finish only \
         once every requirement is provably satisfied."
    )
}

/// Where a goal loop starts.
#[derive(Debug, Clone)]
pub struct GoalStart {
    pub objective: String,
    pub max_iterations: u64,
    pub iteration: u64,
    pub resume: bool,
}

/// The judge's verdict: `{score, complete, missing}`.
pub fn parse_verdict(reply: &str) -> Value {
    let parsed = serde_json::from_str::<Value>(reply.trim())
        .ok()
        .or_else(|| {
            let start = reply.find('{')?;
            let end = reply.rfind('}')?;
            (end > start)
                .then(|| serde_json::from_str::<Value>(&reply[start..=end]).ok())
                .flatten()
        });
    let Some(data) = parsed.filter(Value::is_object) else {
        return json!({"score": 0.0, "complete": false, "missing": "Judge verdict could not be parsed."});
    };
    let score = match &data["score"] {
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
    .clamp(0.0, 1.0);
    let complete = match data.get("complete") {
        None | Some(Value::Null) => score >= 1.0,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(_) => true,
    };
    let missing = match data.get("missing") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    json!({"score": score, "complete": complete, "missing": missing})
}

async fn emit(
    conv: &Conversation,
    start: &GoalStart,
    iteration: u64,
    active: bool,
    state: &str,
    verdict: Value,
) {
    let value = json!({
        "active": active, "status": state, "iteration": iteration,
        "max_iterations": start.max_iterations, "objective": start.objective, "verdict": verdict,
    });
    if let Err(e) = conv.append(events::state_update("goal", value)).await {
        tracing::warn!(conversation = %conv.id, error = %e, "could not record the goal status");
    }
}

/// Waits until the conversation's current run has ended (or `cancel`).
async fn run_end(conv: &Arc<Conversation>, cancel: &CancellationToken) -> bool {
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        if conv.run_ctl().is_none() && conv.status() != ExecutionStatus::Running {
            return true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

async fn say_and_run(conv: &Arc<Conversation>, text: &str) -> Result<(), ConversationError> {
    conv.send_goal_message(json!([{"type": "text", "text": text}]))
        .await?;
    match conv.start_run() {
        Ok(()) | Err(ConversationError::Conflict(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The loop; ends with a `complete`, `capped` or `interrupted` status.
pub async fn run(conv: Arc<Conversation>, start: GoalStart, cancel: CancellationToken) {
    let mut iteration = start.iteration;
    emit(&conv, &start, iteration, true, "running", Value::Null).await;
    let first = if start.resume {
        RESUME_PROMPT
    } else {
        start.objective.as_str()
    };
    let mut next = first.to_string();
    let end = loop {
        if let Err(e) = say_and_run(&conv, &next).await {
            tracing::warn!(conversation = %conv.id, error = %e, "goal round could not start");
            break ("interrupted", Value::Null);
        }
        // Let the run task mark the conversation running before waiting for its end.
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !run_end(&conv, &cancel).await {
            break ("interrupted", Value::Null);
        }
        let st = conv.status();
        if st == ExecutionStatus::Paused || st == ExecutionStatus::Error {
            break ("interrupted", Value::Null);
        }
        let verdict = match judge(&conv, &start.objective).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(conversation = %conv.id, error = %e, "goal judge failed");
                break ("interrupted", Value::Null);
            }
        };
        if cancel.is_cancelled() {
            break ("interrupted", Value::Null);
        }
        iteration += 1;
        if verdict["complete"] == true {
            break ("complete", verdict);
        }
        if iteration >= start.max_iterations {
            break ("capped", verdict);
        }
        emit(&conv, &start, iteration, true, "running", verdict.clone()).await;
        let missing = verdict["missing"].as_str().filter(|m| !m.is_empty());
        next = followup(
            iteration,
            missing.unwrap_or("Some requirements are not yet verified."),
        );
    };
    emit(&conv, &start, iteration, false, end.0, end.1).await;
    conv.goal_finished();
}

async fn judge(conv: &Arc<Conversation>, objective: &str) -> Result<Value, ConversationError> {
    use crate::llm::{Message, Role};
    let transcript = super::agent::transcript(conv).await?;
    let user = format!(
        "<objective>\n{objective}\n</objective>\n\n<transcript>\n{transcript}\n</transcript>"
    );
    let usage_id = conv.agent_json()["llm"]["usage_id"]
        .as_str()
        .unwrap_or("agent")
        .to_string();
    let reply = super::agent::side_call(
        conv,
        vec![
            Message::text(Role::System, JUDGE_SYSTEM_PROMPT),
            Message::text(Role::User, user),
        ],
        Vec::new(),
        &usage_id,
    )
    .await?;
    Ok(parse_verdict(&reply))
}

/// The last `goal` status recorded in `evs`.
pub fn last_status(evs: &[Value]) -> Option<Value> {
    evs.iter()
        .rev()
        .find(|e| e["kind"] == "ConversationStateUpdateEvent" && e["key"] == "goal")
        .map(|e| e["value"].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_read_leniently() {
        assert_eq!(
            parse_verdict(r#"{"score": 1, "complete": true, "missing": ""}"#)["complete"],
            true
        );
        let v = parse_verdict("Sure! {\"score\": \"0.4\", \"missing\": \"tests\"} done");
        assert_eq!(
            (v["score"].as_f64(), v["complete"].clone()),
            (Some(0.4), json!(false))
        );
        assert_eq!(
            parse_verdict("no json")["missing"],
            "Judge verdict could not be parsed."
        );
        assert_eq!(parse_verdict(r#"{"score": 7}"#)["complete"], true);
    }
}
