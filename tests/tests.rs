//! The crate's integration tests: each module starts the real binary on a free port.
#![allow(clippy::unwrap_used)]

mod support;

mod acp;
mod bash;
mod canvas;
mod cluster;
mod conversations;
mod crash_loop;
mod fakes;
mod files;
mod git;
mod gui_routes;
mod launchers;
mod llm_faults;
mod plugins;
mod profiles;
mod readme;
mod sdk_flows;
mod server_details;
mod settings;
