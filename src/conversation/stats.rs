//! `ConversationStats` (`{"usage_to_metrics": {usage_id: Metrics}}`): per-LLM token usage,
//! cost and latency, in the full form (with per-call lists) and the snapshot form streamed in
//! `stats` state updates.

use serde_json::{json, Map, Value};

use crate::llm::Usage;

fn zero_usage(model: &str) -> Value {
    json!({
        "model": model, "prompt_tokens": 0, "completion_tokens": 0, "cache_read_tokens": 0,
        "cache_write_tokens": 0, "reasoning_tokens": 0, "context_window": 0,
        "per_turn_token": 0, "response_id": "",
    })
}

fn metrics_mut<'a>(
    stats: &'a mut Value,
    usage_id: &str,
    model: &str,
) -> Option<&'a mut Map<String, Value>> {
    if !stats.is_object() {
        *stats = json!({"usage_to_metrics": {}});
    }
    let all = stats
        .as_object_mut()?
        .entry("usage_to_metrics")
        .or_insert_with(|| json!({}));
    if !all.is_object() {
        *all = json!({});
    }
    let entry = all.as_object_mut()?.entry(usage_id).or_insert_with(|| {
        json!({
            "model_name": model,
            "accumulated_cost": 0.0,
            "max_budget_per_task": null,
            "accumulated_token_usage": zero_usage(model),
            "costs": [],
            "response_latencies": [],
            "token_usages": [],
        })
    });
    entry.as_object_mut()
}

/// Makes sure `usage_id` has an entry (the reference registers each LLM at first use).
pub fn register(stats: &mut Value, usage_id: &str, model: &str) {
    let _ = metrics_mut(stats, usage_id, model);
}

/// Records one LLM call.
pub fn record(
    stats: &mut Value,
    usage_id: &str,
    model: &str,
    usage: &Usage,
    cost: f64,
    response_id: &str,
    latency: f64,
) {
    let Some(m) = metrics_mut(stats, usage_id, model) else {
        return;
    };
    let acc_cost = m
        .get("accumulated_cost")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
        + cost;
    m.insert("accumulated_cost".into(), json!(acc_cost));
    let per_turn = usage.prompt_tokens + usage.completion_tokens;
    let call = json!({
        "model": model, "prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
        "cache_read_tokens": usage.cache_read_tokens, "cache_write_tokens": usage.cache_write_tokens,
        "reasoning_tokens": usage.reasoning_tokens, "context_window": usage.context_window,
        "per_turn_token": per_turn, "response_id": response_id,
    });
    let mut acc = m
        .get("accumulated_token_usage")
        .cloned()
        .unwrap_or_else(|| zero_usage(model));
    if !acc.is_object() {
        acc = zero_usage(model);
    }
    for k in [
        "prompt_tokens",
        "completion_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    ] {
        let sum = acc.get(k).and_then(Value::as_u64).unwrap_or(0)
            + call.get(k).and_then(Value::as_u64).unwrap_or(0);
        acc[k] = json!(sum);
    }
    let cw = acc
        .get("context_window")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .max(usage.context_window);
    acc["context_window"] = json!(cw);
    acc["per_turn_token"] = json!(per_turn);
    acc["response_id"] = json!("");
    m.insert("accumulated_token_usage".into(), acc);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    push(
        m,
        "costs",
        json!({"model": model, "cost": cost, "timestamp": now}),
    );
    push(
        m,
        "response_latencies",
        json!({"model": model, "latency": latency, "response_id": response_id}),
    );
    push(m, "token_usages", call);
}

fn push(m: &mut Map<String, Value>, key: &str, v: Value) {
    match m.get_mut(key) {
        Some(Value::Array(a)) => a.push(v),
        _ => {
            m.insert(key.into(), json!([v]));
        }
    }
}

/// The snapshot form (no per-call lists) streamed as the `stats` state update.
pub fn snapshot(stats: &Value) -> Value {
    let mut out = Map::new();
    if let Some(all) = stats.get("usage_to_metrics").and_then(Value::as_object) {
        for (k, m) in all {
            out.insert(
                k.clone(),
                json!({
                    "model_name": m.get("model_name").cloned().unwrap_or(Value::Null),
                    "accumulated_cost": m.get("accumulated_cost").cloned().unwrap_or(json!(0.0)),
                    "max_budget_per_task": m.get("max_budget_per_task").cloned().unwrap_or(Value::Null),
                    "accumulated_token_usage": m.get("accumulated_token_usage").cloned().unwrap_or(Value::Null),
                }),
            );
        }
    }
    json!({"usage_to_metrics": out})
}

/// Cost of one call: the provider's figure, or the per-token overrides of the LLM JSON.
pub fn call_cost(llm: &Value, usage: &Usage) -> f64 {
    if usage.cost > 0.0 {
        return usage.cost;
    }
    let input = llm.get("input_cost_per_token").and_then(Value::as_f64);
    let output = llm.get("output_cost_per_token").and_then(Value::as_f64);
    if input.is_none() && output.is_none() {
        return 0.0;
    }
    usage.prompt_tokens as f64 * input.unwrap_or(0.0)
        + usage.completion_tokens as f64 * output.unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_snapshots() {
        let mut s = json!({"usage_to_metrics": {}});
        let u = Usage {
            prompt_tokens: 1010,
            completion_tokens: 50,
            ..Default::default()
        };
        let llm = json!({"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6});
        let c = call_cost(&llm, &u);
        assert!((c - 0.00111).abs() < 1e-12);
        record(&mut s, "agent", "m", &u, c, "r1", 0.1);
        record(&mut s, "agent", "m", &u, c, "r2", 0.1);
        let snap = snapshot(&s);
        let acc = &snap["usage_to_metrics"]["agent"]["accumulated_token_usage"];
        assert_eq!(acc["prompt_tokens"], 2020);
        assert_eq!(acc["per_turn_token"], 1060);
        assert!(snap["usage_to_metrics"]["agent"].get("costs").is_none());
        assert_eq!(
            s["usage_to_metrics"]["agent"]["token_usages"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
    }
}
