//! Child conversations: a conversation started by another one (`POST
//! /api/conversations/{id}/children`, or the agent's `start_child_conversation` tool) with the
//! parent's agent, secrets and settings, in the parent's workspace or in a git worktree of it,
//! and the task as its first message. Children are ordinary conversations that record
//! `parent_conversation_id`; the parent lists them as `sub_conversation_ids`.

use std::path::{Path, PathBuf};
use std::sync::Weak;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::service::ConversationService;
use super::{ConversationError, StoredConversation};
use crate::git::{run_git, GitOptions};
use crate::llm::ToolDefinition;
use crate::tools::{Tool, ToolContext, ToolError, ToolOutput};

/// Where worktrees of child conversations are made.
fn worktree_base() -> PathBuf {
    std::env::temp_dir().join("conversation-worktrees")
}

/// `StartChildConversationRequest`.
#[derive(Debug, Clone)]
pub struct ChildRequest {
    pub task: String,
    pub title: Option<String>,
    /// `"worktree"` (a git worktree when the workspace is in a repository) or `"shared"`.
    pub isolation: String,
}

/// A worktree made for a child: where it is and what the child is told about it.
struct Worktree {
    workspace: PathBuf,
    guidance: String,
}

async fn git(args: &[&str], cwd: &Path) -> Option<String> {
    run_git(args, cwd, &GitOptions::default()).await.ok()
}

/// Makes a worktree on a new branch for child `id` when `workspace` is inside a git repository
/// with at least one commit; `None` otherwise (the child then shares the workspace).
async fn make_worktree(workspace: &Path, id: Uuid) -> Option<Worktree> {
    let top = PathBuf::from(git(&["git", "rev-parse", "--show-toplevel"], workspace).await?);
    // A repository without commits has nothing to branch from.
    git(&["git", "rev-parse", "--verify", "HEAD"], &top).await?;
    let repo_name = top.file_name()?.to_string_lossy().into_owned();
    let root = worktree_base().join(id.to_string()).join(&repo_name);
    let relative = workspace
        .canonicalize()
        .ok()?
        .strip_prefix(top.canonicalize().ok()?)
        .ok()?
        .to_path_buf();
    tokio::fs::create_dir_all(root.parent()?).await.ok()?;
    let branch = format!("openhands/{id}");
    // Branch off main, else master, else whatever is checked out.
    let mut base = "HEAD".to_string();
    for candidate in ["main", "master"] {
        let reference = format!("refs/heads/{candidate}");
        if git(
            &["git", "rev-parse", "--verify", "--quiet", &reference],
            &top,
        )
        .await
        .is_some()
        {
            base = candidate.to_string();
            break;
        }
    }
    let root_text = root.to_string_lossy().into_owned();
    git(
        &["git", "worktree", "add", "-b", &branch, &root_text, &base],
        &top,
    )
    .await?;
    let active = root.join(relative);
    let guidance = format!(
        "This conversation uses a dedicated git worktree.\n\
         - Original workspace: {}\n\
         - Worktree root: {}\n\
         - Active workspace: {}\n\
         - Branch: {branch}\n\
         Do all file and git work inside this worktree. Do your work on a new, \
         appropriately-named branch, based off the main/master branch, and do not switch back \
         to the original workspace.",
        workspace.display(),
        root.display(),
        active.display()
    );
    Some(Worktree {
        workspace: active,
        guidance,
    })
}

impl ConversationService {
    /// Starts a child of `parent_id` running `req.task`; answers
    /// `StartChildConversationResponse`.
    pub async fn start_child(
        &self,
        parent_id: &Uuid,
        req: ChildRequest,
    ) -> Result<Value, ConversationError> {
        let Some(parent) = self.get(parent_id) else {
            return Err(ConversationError::Missing(
                "Parent conversation not found".into(),
            ));
        };
        self.check_capacity()?;
        let child_id = Uuid::new_v4();
        let parent_ws = PathBuf::from(parent.working_dir());
        let worktree = if req.isolation == "worktree" {
            make_worktree(&parent_ws, child_id).await
        } else {
            None
        };
        let mut agent = parent.agent_json();
        let workspace = match &worktree {
            Some(w) => {
                let ctx = agent
                    .as_object_mut()
                    .map(|a| a.entry("agent_context").or_insert_with(|| json!({})));
                if let Some(ctx) = ctx {
                    if !ctx.is_object() {
                        *ctx = json!({});
                    }
                    let prior = ctx["system_message_suffix"].as_str().unwrap_or_default();
                    let joined = if prior.is_empty() {
                        w.guidance.clone()
                    } else {
                        format!("{prior}\n\n{}", w.guidance)
                    };
                    ctx["system_message_suffix"] = json!(joined);
                }
                w.workspace.clone()
            }
            None => parent_ws.clone(),
        };
        // The parent's stored configuration, copied field by field into the request.
        let stored = parent.read_meta(StoredConversation::to_map);
        // Client-defined tools travel inside the agent's tool list already.
        let mut body = Map::new();
        for key in [
            "confirmation_policy",
            "security_analyzer",
            "max_iterations",
            "stuck_detection",
            "tags",
            "agent_definitions",
            "hook_config",
            "autotitle",
            "tool_module_qualnames",
            "launched_agent_profile",
        ] {
            if let Some(v) = stored.get(key).filter(|v| !v.is_null()) {
                body.insert(key.into(), v.clone());
            }
        }
        if let Some(sources) = parent.read_state(|s| s.secret_sources().cloned()) {
            body.insert("secrets".into(), Value::Object(sources));
        }
        body.insert("agent".into(), agent);
        body.insert("conversation_id".into(), json!(child_id.to_string()));
        body.insert(
            "parent_conversation_id".into(),
            json!(parent_id.to_string()),
        );
        body.insert(
            "workspace".into(),
            json!({"working_dir": workspace.to_string_lossy(), "kind": "LocalWorkspace"}),
        );
        body.insert("worktree".into(), json!(req.isolation == "worktree"));
        body.insert(
            "initial_message".into(),
            json!({"role": "user", "content": [{"type": "text", "text": req.task}], "run": true}),
        );
        let (child, _) = self.create_with(&Value::Object(body), false).await?;
        if let Some(title) = &req.title {
            child.set_title(Some(title.clone()), None).await?;
        }
        Ok(json!({
            "conversation_id": child.id.to_string(),
            "parent_conversation_id": parent_id.to_string(),
            "status": child.status(),
            "title": req.title,
            "url": null,
            "workspace": workspace.to_string_lossy(),
            "isolation": if worktree.is_some() { "worktree" } else { "shared" },
        }))
    }
}

const DESCRIPTION: &str = "Start a separate child conversation that works on a task in parallel \
with this one. The child runs its own agent with the same tools and settings, in this \
workspace (or its own git worktree), and cannot see this conversation's history: give it a \
self-contained brief. Returns the child's id; the child keeps running after this call.";

/// The agent's `start_child_conversation` tool: starts a child of its own conversation.
pub struct StartChildConversationTool {
    service: Weak<ConversationService>,
    parent: Uuid,
}

impl StartChildConversationTool {
    /// The tool of conversation `parent`.
    pub fn new(service: Weak<ConversationService>, parent: Uuid) -> Self {
        StartChildConversationTool { service, parent }
    }
}

fn failure(text: String) -> ToolOutput {
    ToolOutput {
        observation: json!({
            "content": [{"cache_prompt": false, "type": "text", "text": text}],
            "is_error": true,
            "kind": "StartChildConversationObservation",
        }),
    }
}

#[async_trait::async_trait]
impl Tool for StartChildConversationTool {
    fn name(&self) -> &str {
        "start_child_conversation"
    }

    fn kind(&self) -> &str {
        "StartChildConversationTool"
    }

    fn definition(&self) -> ToolDefinition {
        ToolDefinition {
            name: self.name().into(),
            description: DESCRIPTION.into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "task": {"type": "string", "description": "Self-contained brief for the child: the goal, relevant files or paths, constraints, and the expected deliverable. The child cannot see this conversation's history."},
                    "title": {"type": "string", "description": "Optional short title for the child conversation."},
                    "isolation": {"type": "string", "description": "'worktree' gives the child its own git worktree and branch when the workspace is a git repository; 'shared' runs it in the same directory.", "enum": ["worktree", "shared"]},
                },
                "required": ["task"],
            }),
        }
    }

    fn read_only(&self) -> bool {
        false
    }

    fn parse_action(&self, args: &Map<String, Value>) -> Result<Value, String> {
        let task = match args.get("task").and_then(Value::as_str) {
            Some(t) if !t.is_empty() => t.to_string(),
            _ => return Err("task: Field required".into()),
        };
        let isolation = match args.get("isolation").and_then(Value::as_str) {
            None => "worktree",
            Some(i @ ("worktree" | "shared")) => i,
            Some(_) => return Err("isolation: Input should be 'worktree' or 'shared'".into()),
        };
        Ok(json!({
            "task": task,
            "title": args.get("title").and_then(Value::as_str),
            "isolation": isolation,
            "kind": "StartChildConversationAction",
        }))
    }

    async fn execute(&self, action: &Value, _ctx: &ToolContext) -> Result<ToolOutput, ToolError> {
        let Some(service) = self.service.upgrade() else {
            return Ok(failure(
                "Child conversation launch failed: the server is shutting down".into(),
            ));
        };
        let req = ChildRequest {
            task: action["task"].as_str().unwrap_or_default().to_string(),
            title: action["title"].as_str().map(str::to_string),
            isolation: action["isolation"]
                .as_str()
                .unwrap_or("worktree")
                .to_string(),
        };
        let answer = match service.start_child(&self.parent, req).await {
            Ok(a) => a,
            Err(e) => return Ok(failure(format!("Child conversation launch failed: {e}"))),
        };
        let mut shown = answer.clone();
        if let Some(o) = shown.as_object_mut() {
            o.retain(|k, v| !(k == "url" && v.is_null()));
        }
        let text = format!(
            "Started child conversation {} (status: {}).\n{}",
            answer["conversation_id"].as_str().unwrap_or_default(),
            answer["status"].as_str().unwrap_or_default(),
            serde_json::to_string_pretty(&answer).unwrap_or_default()
        );
        let mut observation = json!({
            "content": [{"cache_prompt": false, "type": "text", "text": text}],
            "is_error": false,
        });
        if let (Some(o), Some(fields)) = (observation.as_object_mut(), shown.as_object()) {
            for (k, v) in fields {
                o.insert(k.clone(), v.clone());
            }
            o.insert("kind".into(), json!("StartChildConversationObservation"));
        }
        Ok(ToolOutput { observation })
    }
}
