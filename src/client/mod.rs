//! Client side of the agent server: typed access to a running server ([`RemoteWorkspace`],
//! [`RemoteConversation`]) and launchers that provision one in a sandbox and clean it up
//! ([`DockerWorkspace`], [`PodmanWorkspace`], [`ApptainerWorkspace`], [`SlurmWorkspace`],
//! [`OpenHandsCloudWorkspace`], [`ApiRemoteWorkspace`]).
//!
//! Every launcher follows the same lifecycle as the Python SDK's: `start()` provisions the sandbox,
//! waits for `GET /health` and returns a ready workspace; `cleanup()` (or dropping the value, also
//! while unwinding from a panic) releases it. [`cleanup_on_signals`] extends that to Ctrl-C/SIGTERM.

mod apptainer;
mod cloud;
mod conversation;
mod docker;
mod error;
mod guard;
#[cfg(feature = "kubernetes")]
mod kubernetes;
pub mod launch;
mod podman;
mod remote_api;
mod slurm;
mod workspace;

pub use apptainer::{ApptainerOptions, ApptainerWorkspace, SifSource};
pub use cloud::{CloudOptions, OpenHandsCloudWorkspace, SandboxInfo};
pub use conversation::{
    event_id, event_kind, ConversationOptions, ExecutionStatus, RemoteConversation, RunOutcome,
};
pub use docker::{DockerBuild, DockerOptions, DockerWorkspace};
pub use error::ClientError;
pub use guard::{cleanup_all, cleanup_on_signals, find_available_tcp_port, port_is_free};
#[cfg(feature = "kubernetes")]
pub use kubernetes::{KubernetesOptions, KubernetesWorkspace};
pub use podman::{PodmanOptions, PodmanWorkspace};
pub use remote_api::{ApiRemoteOptions, ApiRemoteWorkspace, ImagePullPolicy, TargetType};
pub use slurm::{SlurmOptions, SlurmServer, SlurmWorkspace};
pub use workspace::{
    CommandResult, FileOperationResult, GitChange, GitDiff, RemoteWorkspace, WorkspaceOptions,
};
