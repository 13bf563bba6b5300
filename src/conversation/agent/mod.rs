//! The agent loop run server-side for one conversation: lazy initialization ([`init`]),
//! the run loop ([`step`]), condensation ([`condense`]) and side calls ([`side`]). The LLM
//! view of the history is [`crate::conversation::history`]; the runtime a conversation holds is
//! [`crate::conversation::runtime`].

mod condense;
mod init;
mod side;
mod step;

pub use crate::conversation::runtime::{llm_settings, AgentRuntime, Tools};
pub use init::{ensure_initialized, install_runtime};
pub use side::{ask_agent, autotitle, side_call, transcript};
pub use step::run;
