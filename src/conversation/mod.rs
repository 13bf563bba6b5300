//! Server-side conversations: the registry of conversations, their persisted state and event
//! log, the live event fan-out to WebSocket subscribers, and the agent loop that runs them.
//!
//! Reading order: [`events`] (event JSON shapes and timestamps), [`crate::crypto`] (secrets),
//! [`store`] (crash-safe on-disk layout), [`stats`] (token/cost metrics), [`service`] (the
//! registry and one [`service::Conversation`]), [`agent`] (the run loop), [`stuck`] (stuck
//! detection), [`hooks`] (command hooks).
//!
//! A request naming `agent_settings` or an `agent_profile_id` gets its `agent` from
//! [`crate::settings::launch`] before it reaches the registry.
//!
//! [`children`] starts child conversations (a route and the `start_child_conversation`
//! tool), [`goal`] runs goal mode's judged rounds, [`task`] is the `task` tool (a sub-agent
//! definition from [`crate::subagents`] run as a child conversation). Plugins ([`plugins`])
//! are loaded before the agent first runs and by `load_plugin`.
//!
//! An `ACPAgent` conversation is run by its ACP server's session ([`acp_run`]).
//!
//! Not implemented (answered with a clear 400/422 or ignored): prompt/agent hooks (command
//! hooks only), ownership leases, security analyzers other than "use the risk the LLM gave".

pub mod acp_run;
pub mod agent;
pub mod children;
pub mod control;
pub mod events;
pub mod goal;
pub mod history;
pub mod hooks;
pub mod meta;
pub mod plugins;
pub mod runtime;
pub mod service;
pub mod state;
pub mod stats;
pub mod store;
pub mod stuck;
pub mod switch;
pub mod task;

pub use meta::StoredConversation;
pub use service::{Conversation, ConversationService};
pub use state::{ConversationState, StateField};

/// Failures of conversation operations, mapped to HTTP errors by the server module.
#[derive(Debug, thiserror::Error)]
pub enum ConversationError {
    /// No conversation with this id.
    #[error("Conversation not found")]
    NotFound,
    /// The request conflicts with the conversation's state (e.g. already running).
    #[error("{0}")]
    Conflict(String),
    /// Too many runs at once.
    #[error("{0}")]
    TooManyRuns(String),
    /// The request is invalid (422).
    #[error("{0}")]
    Invalid(String),
    /// The request is refused with a sentence (422 `{"detail": "..."}`).
    #[error("{0}")]
    Refused(String),
    /// Something named in the request does not exist (404 with a message).
    #[error("{0}")]
    Missing(String),
    /// An LLM call made on behalf of the request failed.
    #[error("{0}")]
    Llm(String),
    /// A plugin the conversation names could not be fetched or loaded.
    #[error("{0}")]
    Plugin(String),
    /// Disk failure.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub use crate::wire::ExecutionStatus;

#[cfg(test)]
mod tests;
