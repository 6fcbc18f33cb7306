//! envelope-runner: pipelines as code that build container images with BuildKit, push them to
//! ECR by digest, and migrate and deploy them on ECS.
//!
//! The front end (`pipeline`, `buildspec`, `plan`) is pure and synchronous; `exec` drives the
//! outside world and emits `event`s that `report` renders. See ARCHITECTURE.md.

pub mod aws_error;
pub mod backoff;
pub mod bootstrap;
pub mod buildspec;
mod error_chain;
pub use error_chain::error_chain;
pub mod event;
pub mod exec;
pub mod exit_codes;
pub mod pipeline;
pub mod plan;
pub mod redact;
pub mod run;
pub mod secret;
pub mod store;
pub mod timeouts;
pub mod trigger;

pub mod cli;
mod commands;
pub mod report;

/// Run the command line given by `args` (program name first); returns the exit code.
/// Callable in-process and more than once.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    commands::main(args)
}
