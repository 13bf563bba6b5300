//! Client-defined tools (`client_tools` of `POST /api/conversations`): tools described by a JSON
//! spec and carried out by the client, not the server. The agent calls them like any tool; the
//! `ActionEvent` (with the arguments as its action, `kind: ClientAction_<name>`) reaches the
//! client over the events WebSocket, and the agent gets an acknowledgment right away, as the
//! reference's `ClientTool` does.
//!
//! The spec travels with the conversation in the agent's tool list
//! (`{"name": <name>, "params": {"spec": <spec>}}`), so a restarted server rebuilds the tool.

use serde_json::{json, Map, Value};

use super::{simple_observation, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolDefinition;

/// The acknowledgment the agent receives for a client tool call.
const DISPATCHED: &str = "Tool call dispatched to client.";

/// A tool carried out by the client.
#[derive(Debug, Clone)]
pub struct ClientTool {
    name: String,
    description: String,
    parameters: Value,
    annotations: Value,
}

impl ClientTool {
    /// The tool of a validated spec (see [`validate_specs`]).
    pub fn from_spec(spec: &Value) -> Option<Self> {
        Some(ClientTool {
            name: spec.get("name")?.as_str()?.to_owned(),
            description: spec.get("description")?.as_str()?.to_owned(),
            parameters: spec
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            annotations: spec.get("annotations").cloned().unwrap_or(Value::Null),
        })
    }

    fn action_kind(&self) -> String {
        format!("ClientAction_{}", self.name)
    }
}

/// Checks `client_tools` of a create request as the reference's `ClientToolSpec` model does
/// (name and description strings, `parameters` an object schema, names unique) and returns the
/// specs with their defaults filled in; the error says what is wrong.
pub fn validate_specs(specs: &Value) -> Result<Vec<Value>, String> {
    let Some(list) = specs.as_array() else {
        return Err("client_tools: Input should be a valid list".into());
    };
    let mut out: Vec<Value> = Vec::with_capacity(list.len());
    for (i, spec) in list.iter().enumerate() {
        let field = |name: &str| -> Result<String, String> {
            match spec.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                Some(Value::String(_)) if name == "description" => Ok(String::new()),
                Some(_) => Err(format!(
                    "client_tools.{i}.{name}: Input should be a valid string"
                )),
                None => Err(format!("client_tools.{i}.{name}: Field required")),
            }
        };
        let name = field("name")?;
        let description = field("description")?;
        let parameters = spec
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        if parameters.get("type").and_then(Value::as_str) != Some("object") {
            return Err(format!(
                "client_tools.{i}.parameters: ClientToolSpec.parameters must be an object JSON Schema (got type={})",
                parameters.get("type").map_or("None".to_string(), Value::to_string)
            ));
        }
        if out.iter().any(|s| s["name"] == name.as_str()) {
            return Err(format!(
                "Duplicate client tool name '{name}' in one registration request. Client tool names must be unique."
            ));
        }
        out.push(json!({
            "name": name,
            "description": description,
            "parameters": parameters,
            "annotations": spec.get("annotations").cloned().unwrap_or(Value::Null),
        }));
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Tool for ClientTool {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &str {
        "ClientTool"
    }
    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters: self.parameters.clone(),
        }
    }
    fn read_only(&self) -> bool {
        self.annotations
            .get("readOnlyHint")
            .and_then(Value::as_bool)
            == Some(true)
    }
    fn annotations(&self) -> Value {
        self.annotations.clone()
    }
    fn system_prompt_entry(&self) -> Value {
        let mut entry = json!({
            "description": self.description,
            "action_type": self.action_kind(),
            "observation_type": "ClientToolObservation",
        });
        if !self.annotations.is_null() {
            entry["annotations"] = self.annotations.clone();
        }
        entry["kind"] = json!("ClientTool");
        entry["title"] = json!(self.name);
        // The client's model of this tool needs its name and original schema.
        entry["client_tool_name"] = json!(self.name);
        entry["input_schema"] = self.parameters.clone();
        entry
    }
    fn parse_action(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let required = self
            .parameters
            .get("required")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let missing: Vec<&str> = required
            .iter()
            .filter_map(Value::as_str)
            .filter(|r| !args.contains_key(*r))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{} validation error(s) for {}: {} Field required",
                missing.len(),
                self.action_kind(),
                missing.join(", ")
            ));
        }
        let mut action = args.clone();
        action.insert("kind".into(), json!(self.action_kind()));
        Ok(Value::Object(action))
    }
    async fn execute(&self, _action: &Value, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        Ok(simple_observation(
            "ClientToolObservation",
            DISPATCHED,
            false,
            Map::new(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn specs_are_checked_like_the_reference() {
        let ok = validate_specs(&json!([{"name": "notify", "description": "d",
            "parameters": {"type": "object", "properties": {"m": {"type": "string"}}, "required": ["m"]}}]))
        .unwrap();
        assert_eq!(ok[0]["annotations"], Value::Null);
        let not_object = validate_specs(&json!([{"name": "x", "description": "d",
            "parameters": {"type": "string"}}]));
        assert!(not_object
            .unwrap_err()
            .contains("must be an object JSON Schema"));
        let dup = validate_specs(
            &json!([{"name": "x", "description": "d"}, {"name": "x", "description": "e"}]),
        );
        assert!(dup.unwrap_err().contains("Duplicate client tool name 'x'"));
        assert!(validate_specs(&json!([{"description": "d"}]))
            .unwrap_err()
            .contains("name: Field required"));
    }

    #[test]
    fn the_action_keeps_the_arguments() {
        let spec = &validate_specs(&json!([{"name": "notify", "description": "d",
            "parameters": {"type": "object", "properties": {"m": {"type": "string"}}, "required": ["m"]}}]))
        .unwrap()[0];
        let tool = ClientTool::from_spec(spec).unwrap();
        let args: Map<String, Value> = serde_json::from_value(json!({"m": "hi"})).unwrap();
        assert_eq!(
            tool.parse_action(&args).unwrap(),
            json!({"m": "hi", "kind": "ClientAction_notify"})
        );
        assert!(tool
            .parse_action(&Map::new())
            .unwrap_err()
            .contains("m Field required"));
    }
}
