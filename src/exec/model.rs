//! Wire shapes of the bash API (`ExecuteBashRequest`, `BashCommand`, `BashOutput`, `BashError`,
//! pages), serialised with the reference's field order; ids are hex, timestamps UTC with `Z`.

use serde::{Deserialize, Serialize};

/// Default `timeout` of a command, in seconds.
pub const DEFAULT_TIMEOUT_SECS: i64 = 300;

/// A request to run one command (`POST /api/bash/start_bash_command`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecuteBashRequest {
    /// The shell command, run with `/bin/sh -c` (as the reference does).
    pub command: String,
    /// Working directory; `null` means the service's default.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Seconds before the command's process group is killed (exit code -1).
    #[serde(default = "default_timeout")]
    pub timeout: i64,
}

fn default_timeout() -> i64 {
    DEFAULT_TIMEOUT_SECS
}

/// A started command, as stored and returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BashCommand {
    pub command: String,
    pub cwd: Option<String>,
    pub timeout: i64,
    /// Hex id; also the `command_id` of its outputs.
    pub id: String,
    pub timestamp: String,
    #[schema(example = "BashCommand")]
    pub kind: String,
}

/// One chunk of a command's output; the last one carries `exit_code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BashOutput {
    pub id: String,
    pub timestamp: String,
    pub command_id: String,
    /// Position of the chunk, one counter shared by both streams, from 0.
    #[serde(default)]
    pub order: i64,
    /// `null` while the command runs (all chunks but the last).
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub stdout: Option<String>,
    #[serde(default)]
    pub stderr: Option<String>,
    #[schema(example = "BashOutput")]
    pub kind: String,
}

/// An error reported on the bash-events WebSocket (never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BashError {
    pub id: String,
    pub timestamp: String,
    pub code: String,
    pub detail: String,
    pub kind: String,
}

impl BashError {
    /// A new error event stamped now.
    pub fn new(code: &str, detail: impl Into<String>) -> Self {
        BashError {
            id: crate::util::hex_id(),
            timestamp: crate::util::utc_timestamp(),
            code: code.into(),
            detail: detail.into(),
            kind: "BashError".into(),
        }
    }
}

/// A stored bash event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum BashEvent {
    Command(BashCommand),
    Output(BashOutput),
}

impl BashEvent {
    /// Parses a stored event, dispatching on `kind`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Kind {
            kind: String,
        }
        let kind: Kind = serde_json::from_slice(bytes)?;
        match kind.kind.as_str() {
            "BashCommand" => Ok(BashEvent::Command(serde_json::from_slice(bytes)?)),
            "BashOutput" => Ok(BashEvent::Output(serde_json::from_slice(bytes)?)),
            other => Err(serde::de::Error::custom(format!(
                "unknown bash event kind {other:?}"
            ))),
        }
    }

    /// The event's hex id.
    pub fn id(&self) -> &str {
        match self {
            BashEvent::Command(c) => &c.id,
            BashEvent::Output(o) => &o.id,
        }
    }
}

/// Sort order of `bash_events/search`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub enum BashEventSortOrder {
    #[default]
    #[serde(rename = "TIMESTAMP")]
    Timestamp,
    #[serde(rename = "TIMESTAMP_DESC")]
    TimestampDesc,
}

/// The kinds of stored events (`kind__eq`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BashEventKind {
    Command,
    Output,
}

impl BashEventKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BashEventKind::Command => "BashCommand",
            BashEventKind::Output => "BashOutput",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "BashCommand" => Some(BashEventKind::Command),
            "BashOutput" => Some(BashEventKind::Output),
            _ => None,
        }
    }
}

/// Filters and paging of `bash_events/search` (already validated).
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub kind: Option<BashEventKind>,
    /// Hex command id (matches only outputs).
    pub command_id: Option<String>,
    /// Inclusive lower bound (compared at microsecond precision, as file names are).
    pub timestamp_gte: Option<chrono::DateTime<chrono::Utc>>,
    /// Exclusive upper bound.
    pub timestamp_lt: Option<chrono::DateTime<chrono::Utc>>,
    /// Only outputs with `order` greater than this (commands pass).
    pub order_gt: Option<i64>,
    pub sort_order: BashEventSortOrder,
    /// File name of the first event of the page.
    pub page_id: Option<String>,
    /// 1..=100.
    pub limit: usize,
}

/// A page of search results, as the reference's `BashEventPage`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BashEventPage {
    pub items: Vec<BashEvent>,
    pub next_page_id: Option<String>,
}
