//! Stuck detection with the reference's thresholds, over the events since the last user
//! message: the same action and observation four times, the same action failing with the same
//! error (a nudge at three, stuck beyond), three agent messages in a row without anything
//! else, and an A/B/A/B alternation over six steps. Ids and timestamps are ignored.

use serde_json::Value;

use super::events;

/// What the detector concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep going.
    Fine,
    /// Tell the agent it is repeating itself (once).
    Nudge(String),
    /// Stop the run with status `stuck`.
    Stuck,
}

const WINDOW: usize = 20;
const NUDGE_PREFIX: &str = "You have called";

fn action_key(e: &Value) -> String {
    format!(
        "{}|{}|{}",
        events::str_field(e, "tool_name").unwrap_or(""),
        events::content_text(e.get("thought")),
        e.get("action").map(Value::to_string).unwrap_or_default()
    )
}

fn result_key(e: &Value) -> String {
    match events::kind(e) {
        "ObservationEvent" => format!(
            "obs|{}",
            e.get("observation")
                .map(Value::to_string)
                .unwrap_or_default()
        ),
        "AgentErrorEvent" => format!("err|{}", events::str_field(e, "error").unwrap_or("")),
        "UserRejectObservation" => format!(
            "rej|{}",
            events::str_field(e, "rejection_reason").unwrap_or("")
        ),
        _ => String::new(),
    }
}

/// Examines the log.
pub fn check(evs: &[Value]) -> Verdict {
    let start = evs
        .iter()
        .rposition(|e| {
            events::kind(e) == "MessageEvent" && events::str_field(e, "source") == Some("user")
        })
        .map_or(0, |i| i + 1);
    let recent: Vec<&Value> = evs[start..]
        .iter()
        .filter(|e| {
            matches!(
                events::kind(e),
                "ActionEvent"
                    | "ObservationEvent"
                    | "AgentErrorEvent"
                    | "UserRejectObservation"
                    | "MessageEvent"
            )
        })
        .collect();
    let recent = &recent[recent.len().saturating_sub(WINDOW)..];

    // Three agent messages in a row.
    let tail_msgs = recent
        .iter()
        .rev()
        .take_while(|e| {
            events::kind(e) == "MessageEvent" && events::str_field(e, "source") == Some("agent")
        })
        .count();
    if tail_msgs >= 3 {
        return Verdict::Stuck;
    }

    // (action, result) pairs in order.
    let mut pairs: Vec<(String, String, bool, String)> = Vec::new();
    for (i, e) in recent.iter().enumerate() {
        if events::kind(e) != "ActionEvent" {
            continue;
        }
        let call = events::str_field(e, "tool_call_id").unwrap_or("");
        if let Some(r) = recent[i + 1..].iter().find(|r| {
            events::str_field(r, "tool_call_id") == Some(call) && events::kind(r) != "ActionEvent"
        }) {
            pairs.push((
                action_key(e),
                result_key(r),
                events::kind(r) == "AgentErrorEvent",
                events::str_field(e, "tool_name").unwrap_or("").to_string(),
            ));
        }
    }
    let n = pairs.len();
    if n >= 4 {
        let last = &pairs[n - 4..];
        if last
            .iter()
            .all(|p| p.0 == last[0].0 && p.1 == last[0].1 && !p.2)
        {
            return Verdict::Stuck;
        }
    }
    // Same action, same error.
    let streak = pairs
        .iter()
        .rev()
        .take_while(|p| p.2 && pairs.last().is_some_and(|l| l.0 == p.0 && l.1 == p.1))
        .count();
    if streak > 3 {
        return Verdict::Stuck;
    }
    if streak == 3 {
        let nudged = evs[start..].iter().any(|e| {
            events::kind(e) == "MessageEvent"
                && events::str_field(e, "source") == Some("environment")
                && events::message_text(e).starts_with(NUDGE_PREFIX)
        });
        if !nudged {
            let (_, err, _, tool) = &pairs[n - 1];
            return Verdict::Nudge(format!(
                "{NUDGE_PREFIX} `{tool}` with the same arguments 3 times in a row and got the same error each time: {}. Repeating the call will not help; change the arguments or try a different approach.",
                err.trim_start_matches("err|")
            ));
        }
    }
    // A, B, A, B, A, B.
    if n >= 6 {
        let l = &pairs[n - 6..];
        let (a, b) = ((&l[0].0, &l[0].1), (&l[1].0, &l[1].1));
        if a != b
            && l.iter().enumerate().all(|(i, p)| {
                let want = if i % 2 == 0 { a } else { b };
                (&p.0, &p.1) == want
            })
        {
            return Verdict::Stuck;
        }
    }
    Verdict::Fine
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pair(i: usize, cmd: &str, out: &str) -> Vec<Value> {
        vec![
            json!({"kind": "ActionEvent", "id": format!("a{i}"), "tool_name": "terminal", "tool_call_id": format!("c{i}"), "action": {"command": cmd}}),
            json!({"kind": "ObservationEvent", "id": format!("o{i}"), "tool_call_id": format!("c{i}"), "observation": {"text": out}}),
        ]
    }

    fn user() -> Value {
        json!({"kind": "MessageEvent", "source": "user", "llm_message": {"content": []}})
    }

    #[test]
    fn repeated_identical_steps_are_stuck() {
        let mut evs = vec![user()];
        for i in 0..3 {
            evs.extend(pair(i, "ls", "x"));
        }
        assert_eq!(check(&evs), Verdict::Fine);
        evs.extend(pair(3, "ls", "x"));
        assert_eq!(check(&evs), Verdict::Stuck);
        // A new user message starts over.
        evs.push(user());
        assert_eq!(check(&evs), Verdict::Fine);
    }

    #[test]
    fn distinct_steps_and_alternation() {
        let mut evs = vec![user()];
        for i in 0..8 {
            evs.extend(pair(i, &format!("echo {i}"), &format!("{i}")));
        }
        assert_eq!(check(&evs), Verdict::Fine);
        let mut evs = vec![user()];
        for i in 0..6 {
            let (c, o) = if i % 2 == 0 { ("a", "1") } else { ("b", "2") };
            evs.extend(pair(i, c, o));
        }
        assert_eq!(check(&evs), Verdict::Stuck);
    }

    #[test]
    fn agent_monologue_is_stuck() {
        let m = json!({"kind": "MessageEvent", "source": "agent", "llm_message": {"content": []}});
        let evs = vec![user(), m.clone(), m.clone(), m];
        assert_eq!(check(&evs), Verdict::Stuck);
    }
}
