//! Tools of MCP servers (`mcp_config` of the agent): each tool a server lists becomes an agent
//! tool of the same name whose action is `MCPToolAction {data}` and whose observation is
//! `MCPToolObservation {content, is_error, tool_name}`, as the reference records them.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::{text_content, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolDefinition;
use crate::mcp::McpClient;

/// One tool of a connected MCP server.
#[derive(Debug, Clone)]
pub struct McpTool {
    client: Arc<McpClient>,
    name: String,
    description: String,
    schema: Value,
    annotations: Value,
}

impl McpTool {
    /// The tool `tool` (MCP JSON from `tools/list`) of `client`.
    pub fn new(client: Arc<McpClient>, tool: &Value) -> Option<Self> {
        Some(McpTool {
            name: tool.get("name")?.as_str()?.to_string(),
            description: tool
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("No description provided")
                .to_string(),
            schema: tool
                .get("inputSchema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            annotations: tool.get("annotations").cloned().unwrap_or(Value::Null),
            client,
        })
    }
}

#[async_trait::async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        "MCPToolDefinition"
    }

    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters: self.schema.clone(),
        }
    }

    fn read_only(&self) -> bool {
        self.annotations
            .get("readOnlyHint")
            .and_then(Value::as_bool)
            == Some(true)
    }

    fn parse_action(&self, args: &Map<String, Value>) -> Result<Value, String> {
        Ok(json!({"data": args, "kind": "MCPToolAction"}))
    }

    async fn execute(&self, action: &Value, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let args = action
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let result = self
            .client
            .call(&self.name, args)
            .await
            .map_err(|e| ToolError(e.to_string()))?;
        let is_error = result["isError"].as_bool().unwrap_or(false);
        let mut content = vec![text_content(format!("[Tool '{}' executed.]", self.name))];
        let mut texts = vec![format!("[Tool '{}' executed.]", self.name)];
        for block in result["content"].as_array().into_iter().flatten() {
            match block["type"].as_str() {
                Some("text") => {
                    let t = block["text"].as_str().unwrap_or("").to_string();
                    content.push(text_content(t.clone()));
                    texts.push(t);
                }
                Some("image") => content.push(json!({
                    "cache_prompt": false, "type": "image",
                    "image_urls": [format!("data:{};base64,{}",
                        block["mimeType"].as_str().unwrap_or("image/png"),
                        block["data"].as_str().unwrap_or(""))],
                })),
                _ => {}
            }
        }
        Ok(ToolOutput {
            observation: json!({"content": content, "is_error": is_error,
                                "tool_name": self.name, "kind": "MCPToolObservation"}),
        })
    }

    fn annotations(&self) -> Value {
        self.annotations.clone()
    }

    fn system_prompt_entry(&self) -> Value {
        let mut entry = json!({
            "description": self.description,
            "action_type": "MCPToolAction",
            "observation_type": "MCPToolObservation",
        });
        if !self.annotations.is_null() {
            entry["annotations"] = self.annotations.clone();
        }
        entry["kind"] = json!("MCPToolDefinition");
        entry["title"] = json!(self.name);
        entry
    }

    async fn close(&self) {
        self.client.close().await;
    }
}
