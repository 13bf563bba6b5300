//! The crate's integration tests: each module starts the real binary on a free port.
#![allow(clippy::unwrap_used)]

mod support;

mod bash;
mod files;
mod git;
mod server_details;
