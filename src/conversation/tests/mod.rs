//! Agent-loop tests with a scripted fake LLM and fake tools (no network, no processes).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::agent::{install_runtime, AgentRuntime, Tools};
use super::{events, Conversation, ConversationService, ExecutionStatus};
use crate::llm::{
    Completion, CompletionRequest, LlmClient, LlmError, ToolCall, ToolDefinition, Usage,
};
use crate::tools::{Tool, ToolContext, ToolError, ToolOutput};

/// One scripted answer.
#[derive(Clone)]
enum Reply {
    Text(&'static str),
    Call(&'static str, Value),
    Fail(LlmError),
    Slow(Duration),
}

struct FakeLlm {
    script: Mutex<VecDeque<Reply>>,
    /// Used when the script is exhausted.
    fallback: Option<Reply>,
    seen: Mutex<Vec<CompletionRequest>>,
    n: Mutex<u32>,
}

impl FakeLlm {
    fn new(script: Vec<Reply>, fallback: Option<Reply>) -> Arc<Self> {
        Arc::new(FakeLlm {
            script: Mutex::new(script.into()),
            fallback,
            seen: Mutex::new(Vec::new()),
            n: Mutex::new(0),
        })
    }
}

#[async_trait::async_trait]
impl LlmClient for FakeLlm {
    async fn complete(&self, request: CompletionRequest) -> Result<Completion, LlmError> {
        self.seen.lock().expect("lock").push(request);
        let next = self
            .script
            .lock()
            .expect("lock")
            .pop_front()
            .or(self.fallback.clone());
        let n = {
            let mut n = self.n.lock().expect("lock");
            *n += 1;
            *n
        };
        let usage = Usage {
            prompt_tokens: 100,
            completion_tokens: 10,
            ..Default::default()
        };
        let base = Completion {
            response_id: format!("resp-{n}"),
            usage,
            ..Default::default()
        };
        match next {
            Some(Reply::Text(t)) => Ok(Completion {
                text: Some(t.into()),
                ..base
            }),
            Some(Reply::Call(name, args)) => Ok(Completion {
                tool_calls: vec![ToolCall {
                    id: format!("call-{n}"),
                    name: name.into(),
                    arguments: args.to_string(),
                    responses_item_id: None,
                }],
                ..base
            }),
            Some(Reply::Fail(e)) => Err(e),
            Some(Reply::Slow(d)) => {
                tokio::time::sleep(d).await;
                Ok(Completion {
                    text: Some("late".into()),
                    ..base
                })
            }
            None => Ok(Completion {
                text: Some("done".into()),
                ..base
            }),
        }
    }
}

struct EchoTool;

#[async_trait::async_trait]
impl Tool for EchoTool {
    fn name(&self) -> &'static str {
        "echo"
    }
    fn kind(&self) -> &'static str {
        "EchoTool"
    }
    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: "echo".into(),
            description: "echo text".into(),
            parameters: json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        }
    }
    fn read_only(&self) -> bool {
        false
    }
    fn parse_action(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let t = args
            .get("text")
            .and_then(Value::as_str)
            .ok_or("text: Field required")?;
        Ok(json!({"text": t, "kind": "EchoAction"}))
    }
    async fn execute(&self, action: &Value, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let t = action["text"].as_str().unwrap_or_default().to_string();
        Ok(ToolOutput {
            observation: json!({"content": [events::text(&t)], "is_error": false, "kind": "EchoObservation"}),
        })
    }
}

struct FinishTool;

#[async_trait::async_trait]
impl Tool for FinishTool {
    fn name(&self) -> &'static str {
        "finish"
    }
    fn kind(&self) -> &'static str {
        "FinishTool"
    }
    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: "finish".into(),
            description: "finish".into(),
            parameters: json!({"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}),
        }
    }
    fn read_only(&self) -> bool {
        true
    }
    fn parse_action(&self, args: &Map<String, Value>) -> Result<Value, String> {
        Ok(
            json!({"message": args.get("message").cloned().unwrap_or(json!("")), "kind": "FinishAction"}),
        )
    }
    async fn execute(&self, action: &Value, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let m = action["message"].as_str().unwrap_or_default().to_string();
        Ok(ToolOutput {
            observation: json!({"content": [events::text(&m)], "is_error": false, "kind": "FinishObservation"}),
        })
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    work: std::path::PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("conversations");
    let work = dir.path().join("work");
    Fixture {
        _dir: dir,
        root,
        work,
    }
}

async fn create(svc: &ConversationService, fx: &Fixture, extra: Value) -> Arc<Conversation> {
    let mut body = json!({
        "agent": {"llm": {"model": "openai/fake", "api_key": "sk-secret", "usage_id": "agent",
                          "input_cost_per_token": 0.001, "output_cost_per_token": 0.002},
                  "tools": [{"name": "echo", "params": {}}], "kind": "Agent"},
        "workspace": {"working_dir": fx.work.to_string_lossy(), "kind": "LocalWorkspace"},
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let (conv, created) = svc.create(&body).await.expect("create");
    assert!(created);
    conv
}

async fn install(conv: &Arc<Conversation>, llm: Arc<FakeLlm>) {
    install_with(conv, llm, None).await
}

async fn install_with(
    conv: &Arc<Conversation>,
    llm: Arc<FakeLlm>,
    condenser: Option<Arc<FakeLlm>>,
) {
    let ctx = ToolContext {
        working_dir: conv.working_dir().into(),
        persistence_dir: conv.dir().to_path_buf(),
        cancel: Default::default(),
    };
    let tools = Tools(vec![Arc::new(EchoTool), Arc::new(FinishTool)]);
    let llm_json = conv.agent_json()["llm"].clone();
    let mut rt = AgentRuntime::new(llm, &llm_json, tools, ctx);
    if let Some(c) = condenser {
        rt = rt.with_condenser_llm(c);
    }
    install_runtime(conv, Arc::new(rt)).await.expect("install");
}

async fn run_to_end(conv: &Arc<Conversation>) {
    conv.start_run().expect("start");
    for _ in 0..500 {
        if conv.run_ctl().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run did not end");
}

fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .filter(|e| events::kind(e) != "ConversationStateUpdateEvent")
        .map(|e| events::kind(e).to_string())
        .collect()
}

fn msg(t: &str) -> Value {
    json!([events::text(t)])
}

mod persistence;
mod runs;
