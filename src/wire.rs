//! Wire types shared by the server and the client module (the reference's enums, spelled as
//! on the wire).

use serde::{Deserialize, Serialize};

/// `ConversationExecutionStatus`: where a conversation's run stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Ready for a message or a run.
    #[default]
    Idle,
    /// The agent loop is working.
    Running,
    /// Paused by the user; `run` resumes.
    Paused,
    /// An action waits for the user's confirmation.
    WaitingForConfirmation,
    /// The agent finished its task.
    Finished,
    /// The run ended with an error (`ConversationErrorEvent`).
    Error,
    /// Stuck detection stopped the run.
    Stuck,
    /// Being deleted.
    Deleting,
}

impl ExecutionStatus {
    /// Every value, in the reference's order.
    pub const ALL: [ExecutionStatus; 8] = [
        Self::Idle,
        Self::Running,
        Self::Paused,
        Self::WaitingForConfirmation,
        Self::Finished,
        Self::Error,
        Self::Stuck,
        Self::Deleting,
    ];

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::WaitingForConfirmation => "waiting_for_confirmation",
            Self::Finished => "finished",
            Self::Error => "error",
            Self::Stuck => "stuck",
            Self::Deleting => "deleting",
        }
    }

    /// Parses a wire value; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// A run has come to rest here and will not go on by itself.
    pub fn is_settled(self) -> bool {
        matches!(self, Self::Finished | Self::Error | Self::Stuck)
    }
}

impl std::fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::ExecutionStatus;

    #[test]
    fn wire_values_round_trip() {
        for s in ExecutionStatus::ALL {
            assert_eq!(ExecutionStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(
            ExecutionStatus::parse("waiting_for_confirmation"),
            Some(ExecutionStatus::WaitingForConfirmation)
        );
        assert_eq!(ExecutionStatus::parse("Running"), None);
    }
}
