//! Switching the LLM of an existing conversation (`switch_llm`, `switch_profile`): the agent's
//! `llm` is replaced (and the condenser's when it used the same configuration), one
//! `ConversationStateUpdateEvent` with the new agent (secrets masked) is recorded, and the next
//! step uses the new model. The tools, and with them the terminal session, are kept.

use std::sync::Arc;

use serde_json::Value;

use super::agent::AgentRuntime;
use super::{events, Conversation, ConversationError};
use crate::conversation::StateField;
use crate::crypto::{map_secret_fields, MASK};
use crate::llm;

/// An LLM object without the key it is registered under (to compare configurations).
fn config_without_usage(llm: &Value) -> Value {
    let mut v = llm.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("usage_id");
    }
    v
}

/// Installs `new_llm` (a complete, validated LLM object with secrets in plaintext) as the
/// conversation's LLM.
pub async fn switch_llm(conv: &Arc<Conversation>, new_llm: Value) -> Result<(), ConversationError> {
    let settings =
        llm::LlmSettings::from_agent_llm_json(&new_llm).map_err(ConversationError::Invalid)?;
    let mut runtime = conv.runtime.lock().await;
    let mut agent = conv.agent_json();
    let old = agent.get("llm").cloned().unwrap_or(Value::Null);
    let condenser_follows = agent
        .get("condenser")
        .and_then(|c| c.get("llm"))
        .is_some_and(|c| config_without_usage(c) == config_without_usage(&old));
    agent["llm"] = new_llm.clone();
    if condenser_follows {
        let usage = agent["condenser"]["llm"]["usage_id"].clone();
        agent["condenser"]["llm"] = new_llm.clone();
        agent["condenser"]["llm"]["usage_id"] = usage;
    }
    conv.set_field(StateField::Agent(agent.clone()), false)
        .await?;
    let mut shown = agent;
    map_secret_fields(&mut shown, &|_| Value::String(MASK.into()));
    conv.append(events::state_update("agent", shown)).await?;
    conv.register_usage(&settings.usage_id, &settings.model);
    if let Some(rt) = runtime.take() {
        let mut next = AgentRuntime::new(
            llm::client_for(&settings),
            &new_llm,
            rt.tools.clone(),
            rt.base_ctx.clone(),
        );
        if let Some(c) = &rt.condenser_llm {
            next = next.with_condenser_llm(c.clone());
        }
        *runtime = Some(Arc::new(next));
    }
    Ok(())
}
