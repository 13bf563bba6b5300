//! The built-in `finish` and `think` tools every agent gets.

use serde_json::{json, Map, Value};

use super::args::Validator;
use super::{definition, simple_observation, Tool, ToolContext, ToolError, ToolOutput};
use crate::llm::ToolDefinition;

/// `finish{message}`: ends the task; the observation repeats the message.
pub struct FinishTool;

/// `think{thought}`: lets the model reason in the open; nothing is executed.
pub struct ThinkTool;

fn read_only_annotations(title: &str) -> Value {
    json!({"title": title, "readOnlyHint": true, "destructiveHint": false,
           "idempotentHint": true, "openWorldHint": false})
}

#[async_trait::async_trait]
impl Tool for FinishTool {
    fn name(&self) -> &'static str {
        "finish"
    }
    fn kind(&self) -> &'static str {
        "FinishTool"
    }
    fn definition(&self) -> ToolDefinition {
        definition(
            "finish",
            "Call this when you are done: either the user's request is fully handled, or you \
             cannot make further progress on your own.\n\n\
             In `message`, tell the user what you did and what came of it, anything they \
             should do next, and, if you stopped short, why and what you would need to go on."
                .into(),
            json!({"message": {"type": "string", "description": "What to tell the user as the closing message."}}),
            &["message"],
        )
    }
    fn read_only(&self) -> bool {
        true
    }
    fn annotations(&self) -> Value {
        read_only_annotations("finish")
    }
    fn parse_action(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let mut v = Validator::new("FinishAction", args);
        let message = v.string("message", true);
        v.finish()?;
        Ok(json!({"message": message.unwrap_or_default(), "kind": "FinishAction"}))
    }
    async fn execute(&self, action: &Value, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let message = action.get("message").and_then(Value::as_str).unwrap_or("");
        Ok(simple_observation(
            "FinishObservation",
            message,
            false,
            Map::new(),
        ))
    }
}

#[async_trait::async_trait]
impl Tool for ThinkTool {
    fn name(&self) -> &'static str {
        "think"
    }
    fn kind(&self) -> &'static str {
        "ThinkTool"
    }
    fn definition(&self) -> ToolDefinition {
        definition(
            "think",
            "Write down your reasoning. This tool runs nothing, reads nothing and changes \
             nothing; it only records the thought so your thinking is visible.\n\n\
             Good moments to use it: weighing several possible fixes for a bug you found, \
             working out why tests fail, comparing ways to restructure code, sketching the \
             design of a feature, or keeping track of hypotheses while debugging."
                .into(),
            json!({"thought": {"type": "string", "description": "The reasoning to record."}}),
            &["thought"],
        )
    }
    fn read_only(&self) -> bool {
        true
    }
    fn annotations(&self) -> Value {
        read_only_annotations("think")
    }
    fn parse_action(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let mut v = Validator::new("ThinkAction", args);
        let thought = v.string("thought", true);
        v.finish()?;
        Ok(json!({"thought": thought.unwrap_or_default(), "kind": "ThinkAction"}))
    }
    async fn execute(&self, _action: &Value, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        Ok(simple_observation(
            "ThinkObservation",
            "Your thought has been logged.",
            false,
            Map::new(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::ctx;
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[tokio::test]
    async fn finish_repeats_the_message() {
        let (_d, ctx) = ctx();
        let action = FinishTool.parse_action(&map(json!({"message": "all done"})));
        assert_eq!(
            action,
            Ok(json!({"message": "all done", "kind": "FinishAction"}))
        );
        let out = FinishTool
            .execute(&action.unwrap_or_default(), &ctx)
            .await
            .map_err(|e| e.0);
        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            out.observation,
            json!({"content": [{"cache_prompt": false, "type": "text", "text": "all done"}],
                   "is_error": false, "kind": "FinishObservation"})
        );
        assert_eq!(out.llm_text(), "all done");
        let err = FinishTool.parse_action(&map(json!({})));
        assert_eq!(
            err,
            Err("1 validation error for FinishAction\nmessage\n  Field required".into())
        );
    }

    #[tokio::test]
    async fn think_logs_the_thought() {
        let (_d, ctx) = ctx();
        let action = ThinkTool.parse_action(&map(json!({"thought": "hmm"})));
        assert_eq!(action, Ok(json!({"thought": "hmm", "kind": "ThinkAction"})));
        let out = ThinkTool
            .execute(&action.unwrap_or_default(), &ctx)
            .await
            .map_err(|e| e.0);
        let out = out.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.observation["kind"], "ThinkObservation");
        assert_eq!(out.llm_text(), "Your thought has been logged.");
        assert!(ThinkTool.parse_action(&map(json!({"thought": 3}))).is_err());
    }
}
