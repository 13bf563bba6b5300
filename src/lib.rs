//! `agent-server`: a wire-compatible Rust replacement for the OpenHands agent-server.
//!
//! Reading order:
//! - [`client`]: typed client of a running server and the sandbox launchers (Docker, Apptainer, Cloud, Runtime API).
//! - [`config`]: CLI flags, environment and the JSON config file, validated once into [`config::Config`].
//! - [`error`]: the one error type and its mapping to HTTP status codes and bodies.
//! - [`server`]: the axum application: routes, auth, WebSockets. The only module that knows HTTP.
//! - [`exec`]: bash commands run by the workspace API (process groups, output chunking, bash events).
//! - [`files`] and [`git`]: the file and git services behind `/api/file/*` and `/api/git/*`.
//! - [`llm`]: LLM clients behind the [`llm::LlmClient`] trait.
//! - [`mcp`]: MCP server connections (stdio and streamable HTTP) whose tools the agent uses.
//! - [`tools`]: the agent's tools behind the [`tools::Tool`] trait.
//! - [`settings`]: persisted settings, custom secrets and LLM profiles.
//! - [`skills`]: skills loaded from the project, the user's directories and installed ones.
//! - [`plugins`]: plugins (skills, commands, hooks, MCP servers): loading, fetching, installing.
//! - [`gateway`]: the OpenAI-compatible gateway (one agent turn per completion request).
//! - [`conversation`]: server-side conversations: agent loop, events, persistence.
//! - [`canvas`]: Canvas extensions (installed UI bundles) and their optional app backends.
//! - [`util`], [`persist`], [`crypto`], [`schema`], [`hook_config`]: leaves any module may use;
//!   modules import one way only (ARCHITECTURE.md, "Layers").

pub mod acp;
pub mod canvas;
pub mod client;
pub mod config;
pub mod conversation;
pub mod crypto;
pub mod error;
pub mod exec;
pub mod files;
pub mod gateway;
pub mod git;
pub mod hook_config;
pub mod llm;
pub mod mcp;
pub mod persist;
pub mod plugins;
pub mod schema;
pub mod server;
pub mod settings;
pub mod skills;
pub mod subagents;
pub mod tools;
pub mod urlcode;
pub mod util;
pub mod wire;
