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

#[tokio::test]
async fn text_reply_finishes_and_records_stats() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    let llm = FakeLlm::new(vec![Reply::Text("hello there")], None);
    install(&conv, llm.clone()).await;
    conv.send_message(msg("hi"), false).await.expect("send");
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    let evs = conv.events().await.expect("events");
    assert_eq!(
        kinds(&evs),
        ["SystemPromptEvent", "MessageEvent", "MessageEvent"]
    );
    let last = evs
        .iter()
        .rev()
        .find(|e| events::kind(e) == "MessageEvent")
        .expect("reply");
    assert_eq!(last["source"], "agent");
    assert_eq!(last["llm_response_id"], "resp-1");
    let stats = conv.state_value("stats").expect("stats");
    let cost = stats["usage_to_metrics"]["agent"]["accumulated_cost"]
        .as_f64()
        .expect("cost");
    assert!((cost - 0.12).abs() < 1e-9, "cost {cost}");
    // The stats update precedes the reply, and secrets never reach the disk in clear.
    let on_disk = std::fs::read_to_string(conv.dir().join("base_state.json")).expect("base_state");
    assert!(!on_disk.contains("sk-secret"));
    // The LLM saw the system prompt, the user message and the tool definitions with the
    // injected parameters first.
    let req = &llm.seen.lock().expect("lock")[0];
    assert_eq!(req.messages.len(), 2);
    let props = req.tools[0].parameters["properties"]
        .as_object()
        .expect("props");
    let keys: Vec<&String> = props.keys().collect();
    assert_eq!(keys, ["security_risk", "summary", "text"]);
    let finish_props = req.tools[1].parameters["properties"]
        .as_object()
        .expect("props");
    assert!(!finish_props.contains_key("security_risk"));
}

#[tokio::test]
async fn tool_calls_produce_actions_and_observations_then_finish() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    let llm = FakeLlm::new(
        vec![
            Reply::Call(
                "echo",
                json!({"text": "one", "summary": "say one", "security_risk": "LOW"}),
            ),
            Reply::Call("nope", json!({})),
            Reply::Call("echo", json!({"wrong": 1})),
            Reply::Call("finish", json!({"message": "all done"})),
        ],
        None,
    );
    install(&conv, llm.clone()).await;
    conv.send_message(msg("go"), true).await.expect("send");
    for _ in 0..500 {
        if conv.run_ctl().is_none() && conv.status() != ExecutionStatus::Idle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    let evs = conv.events().await.expect("events");
    assert_eq!(
        kinds(&evs),
        [
            "SystemPromptEvent",
            "MessageEvent",
            "ActionEvent",
            "ObservationEvent",
            "ActionEvent",
            "AgentErrorEvent",
            "ActionEvent",
            "AgentErrorEvent",
            "ActionEvent",
            "ObservationEvent"
        ]
    );
    let action = evs
        .iter()
        .find(|e| events::kind(e) == "ActionEvent")
        .expect("action");
    assert_eq!(action["summary"], "say one");
    assert_eq!(
        action["security_risk"], "UNKNOWN",
        "no analyzer: risk not recorded"
    );
    assert_eq!(action["action"]["kind"], "EchoAction");
    let obs = evs
        .iter()
        .find(|e| events::kind(e) == "ObservationEvent")
        .expect("obs");
    assert_eq!(obs["action_id"], action["id"]);
    let unknown = evs
        .iter()
        .find(|e| events::kind(e) == "AgentErrorEvent")
        .expect("err");
    assert!(unknown["error"]
        .as_str()
        .unwrap_or_default()
        .contains("Tool 'nope' not found"));
    // The second request carried the tool result as the LLM text of the tool.
    let seen = llm.seen.lock().expect("lock");
    let tool_msg = seen[1]
        .messages
        .iter()
        .find(|m| m.role == crate::llm::Role::Tool)
        .expect("tool msg");
    assert_eq!(tool_msg.content, vec!["one".to_string()]);
    // Parent chain: every event but the first has a parent.
    assert!(evs.iter().skip(1).all(|e| e.get("parent_id").is_some()));
}

#[tokio::test]
async fn max_iterations_and_llm_errors_end_in_error() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false, "max_iterations": 3})).await;
    let llm = FakeLlm::new(vec![], Some(Reply::Call("echo", json!({"text": "again"}))));
    install(&conv, llm).await;
    conv.send_message(msg("loop"), false).await.expect("send");
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::Error);
    let evs = conv.events().await.expect("events");
    assert_eq!(
        evs.iter()
            .filter(|e| events::kind(e) == "ActionEvent")
            .count(),
        3
    );
    let err = evs
        .iter()
        .rev()
        .find(|e| events::kind(e) == "ConversationErrorEvent")
        .expect("error");
    assert_eq!(err["code"], "MaxIterationsReached");

    let conv2 = create(&svc, &fx, json!({"autotitle": false})).await;
    install(
        &conv2,
        FakeLlm::new(
            vec![Reply::Fail(LlmError::Authentication("401".into()))],
            None,
        ),
    )
    .await;
    conv2.send_message(msg("hi"), false).await.expect("send");
    run_to_end(&conv2).await;
    assert_eq!(conv2.status(), ExecutionStatus::Error);
    let evs = conv2.events().await.expect("events");
    let err = evs
        .iter()
        .rev()
        .find(|e| events::kind(e) == "ConversationErrorEvent")
        .expect("error");
    assert_eq!(err["code"], "LLMAuthenticationError");
}

#[tokio::test]
async fn confirmation_reject_and_accept() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(
        &svc,
        &fx,
        json!({"autotitle": false, "confirmation_policy": {"kind": "AlwaysConfirm"}}),
    )
    .await;
    let llm = FakeLlm::new(
        vec![
            Reply::Call("echo", json!({"text": "risky"})),
            Reply::Call("echo", json!({"text": "second"})),
        ],
        Some(Reply::Call("finish", json!({"message": "ok"}))),
    );
    install(&conv, llm).await;
    conv.send_message(msg("go"), false).await.expect("send");
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::WaitingForConfirmation);
    conv.reject_pending("no thanks").await.expect("reject");
    assert_eq!(conv.status(), ExecutionStatus::Idle);
    let evs = conv.events().await.expect("events");
    let rej = evs
        .iter()
        .find(|e| events::kind(e) == "UserRejectObservation")
        .expect("reject");
    assert_eq!(rej["rejection_reason"], "no thanks");
    assert_eq!(rej["rejection_source"], "user");
    // Next run stops again at the second action; running again accepts it.
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::WaitingForConfirmation);
    run_to_end(&conv).await;
    let evs = conv.events().await.expect("events");
    let obs: Vec<&Value> = evs
        .iter()
        .filter(|e| events::kind(e) == "ObservationEvent")
        .collect();
    assert_eq!(obs[0]["observation"]["content"][0]["text"], "second");
}

#[tokio::test]
async fn interrupt_abandons_the_llm_call_and_pauses() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    install(
        &conv,
        FakeLlm::new(vec![Reply::Slow(Duration::from_secs(60))], None),
    )
    .await;
    conv.send_message(msg("slow"), true).await.expect("send");
    tokio::time::sleep(Duration::from_millis(100)).await;
    conv.interrupt().await.expect("interrupt");
    assert!(
        conv.run_ctl().is_none(),
        "interrupt waits for the run to stop"
    );
    assert_eq!(conv.status(), ExecutionStatus::Paused);
    let evs = conv.events().await.expect("events");
    assert_eq!(
        kinds(&evs).last().map(String::as_str),
        Some("InterruptEvent")
    );
}

#[tokio::test]
async fn pause_stops_at_the_step_boundary() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(
        &svc,
        &fx,
        json!({"autotitle": false, "stuck_detection": false}),
    )
    .await;
    install(
        &conv,
        FakeLlm::new(vec![], Some(Reply::Call("echo", json!({"text": "tick"})))),
    )
    .await;
    conv.send_message(msg("loop"), true).await.expect("send");
    tokio::time::sleep(Duration::from_millis(50)).await;
    conv.pause().await.expect("pause");
    for _ in 0..500 {
        if conv.run_ctl().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(conv.run_ctl().is_none());
    assert_eq!(conv.status(), ExecutionStatus::Paused);
    let evs = conv.events().await.expect("events");
    assert!(evs.iter().any(|e| events::kind(e) == "PauseEvent"));
}

#[tokio::test]
async fn reopening_keeps_events_and_recovers_a_crashed_run() {
    let fx = fixture();
    let id;
    {
        let svc = ConversationService::open(fx.root.clone(), Some("k1"), 4).expect("open");
        let conv = create(&svc, &fx, json!({"autotitle": false})).await;
        id = conv.id;
        install(&conv, FakeLlm::new(vec![Reply::Text("hello")], None)).await;
        conv.send_message(msg("hi"), false).await.expect("send");
        run_to_end(&conv).await;
        // Simulate a crash mid-run: an action without result and status running on disk.
        conv.append(json!({"source": "agent", "thought": [], "thinking_blocks": [], "action": {"text": "x", "kind": "EchoAction"},
            "tool_name": "echo", "tool_call_id": "c-crash", "tool_call": {"id": "c-crash", "name": "echo", "arguments": "{}", "origin": "completion"},
            "llm_response_id": "r", "security_risk": "UNKNOWN", "kind": "ActionEvent"}))
            .await
            .expect("append");
        conv.set_status(ExecutionStatus::Running)
            .await
            .expect("status");
    }
    let svc = ConversationService::open(fx.root.clone(), Some("k1"), 4).expect("reopen");
    let conv = svc.get(&id).expect("listed");
    assert_eq!(conv.status(), ExecutionStatus::Error);
    assert_eq!(
        conv.agent_json()["llm"]["api_key"],
        "sk-secret",
        "secret decrypted with the key"
    );
    let evs = conv.events().await.expect("events");
    let err = evs
        .iter()
        .rev()
        .find(|e| events::kind(e) == "AgentErrorEvent")
        .expect("recovery error");
    assert_eq!(err["tool_call_id"], "c-crash");
    assert!(err["error"]
        .as_str()
        .unwrap_or_default()
        .contains("restart"));
    // It can run again.
    install(&conv, FakeLlm::new(vec![Reply::Text("back")], None)).await;
    conv.send_message(msg("again"), false).await.expect("send");
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    let info = conv.info(false, true);
    assert_eq!(info["agent"]["llm"]["api_key"], Value::Null);
}

#[tokio::test]
async fn reads_the_reference_sample() {
    // Written by the reference server 1.58.2, kept in the repo.
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/reference_conversations");
    let fx = fixture();
    std::fs::create_dir_all(&fx.root).expect("mkdir");
    let status_ = std::process::Command::new("cp")
        .arg("-r")
        .arg(sample.join("d9a4accae10742dfb7b3aced612a72d3"))
        .arg(&fx.root)
        .status()
        .expect("cp");
    assert!(status_.success());
    let svc =
        ConversationService::open(fx.root.clone(), Some("test-secret-key-123"), 4).expect("open");
    let id = uuid::Uuid::parse_str("d9a4accae10742dfb7b3aced612a72d3").expect("uuid");
    let conv = svc.get(&id).expect("listed");
    assert_eq!(conv.events().await.expect("events").len(), 50);
    assert_eq!(conv.agent_json()["llm"]["model"], "openai/mock-chat");
    assert!(
        conv.agent_json()["llm"]["api_key"].is_string(),
        "reference token decrypted"
    );
    assert_eq!(
        conv.meta_value("title"),
        Some(json!("Broken Python file test"))
    );
}

#[tokio::test]
async fn a_slow_subscriber_is_cut_off_not_waited_for() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    let mut sub = conv.subscribe().expect("subscribe");
    let first = sub.rx.recv().await.expect("snapshot");
    assert!(first.contains("full_state"));
    let n = super::service::SUBSCRIBER_QUEUE + 10;
    for i in 0..n {
        conv.append(events::user_message("user", msg(&format!("m{i}"))))
            .await
            .expect("append");
    }
    // Everything was persisted although nobody read the queue.
    assert_eq!(conv.events().await.expect("events").len(), n);
    let mut got = 0;
    while sub.rx.recv().await.is_some() {
        got += 1;
    }
    assert!(got < n, "the queue is bounded");
    assert!(sub.overflowed.load(std::sync::atomic::Ordering::Acquire));
}

#[tokio::test]
async fn stop_hook_feedback_keeps_the_agent_going() {
    let fx = fixture();
    std::fs::create_dir_all(&fx.work).expect("mkdir");
    let marker = fx.work.join("denied-once");
    let script = format!(
        "if [ -f '{m}' ]; then exit 0; else touch '{m}'; echo '{{\"decision\": \"deny\", \"additionalContext\": \"fix the syntax\"}}'; exit 2; fi",
        m = marker.display()
    );
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(
        &svc,
        &fx,
        json!({"autotitle": false, "hook_config": {"stop": [{"matcher": "*", "hooks": [{"type": "command", "command": script}]}]}}),
    )
    .await;
    install(
        &conv,
        FakeLlm::new(
            vec![],
            Some(Reply::Call("finish", json!({"message": "done"}))),
        ),
    )
    .await;
    conv.send_message(msg("go"), false).await.expect("send");
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    let evs = conv.events().await.expect("events");
    let hooks: Vec<&Value> = evs
        .iter()
        .filter(|e| events::kind(e) == "HookExecutionEvent")
        .collect();
    assert_eq!(hooks.len(), 2, "{:?}", kinds(&evs));
    assert_eq!(hooks[0]["blocked"], true);
    assert_eq!(hooks[0]["additional_context"], "fix the syntax");
    assert_eq!(hooks[1]["success"], true);
    let feedback = evs
        .iter()
        .find(|e| events::kind(e) == "MessageEvent" && e["source"] == "environment")
        .expect("feedback");
    assert!(events::message_text(feedback).starts_with("[Stop hook feedback] fix the syntax"));
    assert_eq!(
        evs.iter()
            .filter(|e| events::kind(e) == "ActionEvent")
            .count(),
        2
    );
    assert!(evs.iter().any(|e| e["key"] == "hook_config"));
}

#[tokio::test]
async fn long_histories_are_condensed_with_a_summary() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    // Give the stored agent a small condenser.
    let mut agent = conv.agent_json();
    agent["condenser"] = json!({"llm": {"model": "openai/fake", "usage_id": "condenser"}, "max_size": 8,
                                "keep_first": 2, "kind": "LLMSummarizingCondenser"});
    conv.set_fields(vec![("agent", agent)], false)
        .await
        .expect("agent");
    let script: Vec<Reply> = ["a", "b", "c", "d", "e", "f"]
        .iter()
        .map(|t| Reply::Call("echo", json!({"text": t})))
        .chain([Reply::Call("finish", json!({"message": "ok"}))])
        .collect();
    let llm = FakeLlm::new(script, None);
    let condenser = FakeLlm::new(vec![], Some(Reply::Text("SUMMARY OF EARLIER WORK")));
    install_with(&conv, llm.clone(), Some(condenser.clone())).await;
    conv.send_message(msg("go"), false).await.expect("send");
    run_to_end(&conv).await;
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    let evs = conv.events().await.expect("events");
    let cond = evs
        .iter()
        .find(|e| events::kind(e) == "Condensation")
        .unwrap_or_else(|| panic!("no Condensation: {:?}", kinds(&evs)));
    assert!(!cond["forgotten_event_ids"]
        .as_array()
        .expect("ids")
        .is_empty());
    assert_eq!(cond["summary"], "SUMMARY OF EARLIER WORK");
    assert_eq!(cond["summary_offset"], 2);
    let seen = llm.seen.lock().expect("lock");
    let last = seen.last().expect("requests");
    let texts: Vec<String> = last
        .messages
        .iter()
        .flat_map(|m| m.content.clone())
        .collect();
    assert!(
        texts.iter().any(|t| t.contains("SUMMARY OF EARLIER WORK")),
        "{texts:?}"
    );
    assert!(
        conv.state_value("stats").expect("stats")["usage_to_metrics"]
            .get("condenser")
            .is_some()
    );
}

#[tokio::test]
async fn idle_conversations_release_memory_and_reload_on_use() {
    let fx = fixture();
    let svc = ConversationService::open(fx.root.clone(), None, 4).expect("open");
    let conv = create(&svc, &fx, json!({"autotitle": false})).await;
    install(
        &conv,
        FakeLlm::new(vec![Reply::Text("one"), Reply::Text("two")], None),
    )
    .await;
    conv.send_message(msg("hi"), false).await.expect("send");
    run_to_end(&conv).await;
    let before = conv.events().await.expect("events");
    {
        let _sub = conv.subscribe().expect("subscribe");
        assert!(
            !conv.release_if_idle(Duration::ZERO),
            "a watched conversation stays loaded"
        );
    }
    assert!(conv.release_if_idle(Duration::ZERO));
    let ids = |evs: &[Value]| {
        evs.iter()
            .map(|e| events::id(e).to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&conv.events().await.expect("reload")), ids(&before));
    // It keeps working: the agent is rebuilt, the system prompt is not repeated.
    install(&conv, FakeLlm::new(vec![Reply::Text("again")], None)).await;
    conv.send_message(msg("more"), false).await.expect("send");
    run_to_end(&conv).await;
    let evs = conv.events().await.expect("events");
    assert_eq!(
        evs.iter()
            .filter(|e| events::kind(e) == "SystemPromptEvent")
            .count(),
        1
    );
    assert_eq!(ids(&evs[..before.len()]), ids(&before));
}

#[tokio::test]
async fn listed_conversations_keep_a_summary_and_are_read_from_disk_on_demand() {
    let fx = fixture();
    let (id, other, created_at) = {
        let svc = ConversationService::open(fx.root.clone(), Some("k1"), 4).expect("open");
        let conv = create(
            &svc,
            &fx,
            json!({"autotitle": false, "tags": {"team": "a"}}),
        )
        .await;
        install(&conv, FakeLlm::new(vec![Reply::Text("hello")], None)).await;
        conv.send_message(msg("hi"), false).await.expect("send");
        run_to_end(&conv).await;
        conv.set_title(Some("First".into()), None)
            .await
            .expect("title");
        let other = create(&svc, &fx, json!({"autotitle": false})).await.id;
        let created_at = conv.sort_key("created_at");
        (conv.id, other, created_at)
    };
    // After a restart only a summary is in memory: status and sort keys come from it.
    let svc = ConversationService::open(fx.root.clone(), Some("k1"), 4).expect("reopen");
    let conv = svc.get(&id).expect("listed");
    assert!(!conv.docs_loaded());
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    assert_eq!(conv.sort_key("created_at"), created_at);
    // REST views read the files for the answer only.
    let second = svc.get(&other).expect("listed");
    let infos = super::service::infos(&[second.clone(), conv.clone()], false, true)
        .await
        .expect("infos");
    assert_eq!(infos[0]["id"], json!(other.to_string()));
    assert_eq!(infos[1]["title"], "First");
    assert_eq!(infos[1]["tags"], json!({"team": "a"}));
    assert_eq!(infos[1]["agent"]["llm"]["api_key"], Value::Null);
    let cost = infos[1]["stats"]["usage_to_metrics"]["agent"]["accumulated_cost"].clone();
    assert!(
        cost.as_f64().is_some_and(|c| c > 0.0),
        "stats on disk: {cost}"
    );
    assert!(!conv.docs_loaded() && !second.docs_loaded());
    // Using it loads the documents (secrets decrypted) and keeps them.
    assert_eq!(conv.agent_json()["llm"]["api_key"], "sk-secret");
    assert!(conv.docs_loaded());
    assert_eq!(conv.info(false, true), infos[1]);
    // Unsaved stats keep it in memory until they are written.
    conv.register_usage("extra", "openai/other");
    assert!(!conv.release_if_idle(Duration::ZERO));
    conv.persist_state().await.expect("persist");
    assert!(conv.release_if_idle(Duration::ZERO));
    assert!(!conv.docs_loaded());
    assert_eq!(conv.status(), ExecutionStatus::Finished);
    let stats = conv.state_value("stats").expect("stats");
    assert!(stats["usage_to_metrics"].get("extra").is_some(), "{stats}");
    assert_eq!(conv.meta_value("title"), Some(json!("First")));
}
