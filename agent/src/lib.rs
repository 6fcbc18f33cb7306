//! envelope-agent: the self-hosted trigger of envelope-runner.
//!
//! It polls GitHub releases of the configured repositories (conditional requests, rate limits
//! honoured), takes release webhooks, starts one run per release through a claim in the shared
//! store, executes runs in-process with a concurrency cap, parks them at approval gates, and
//! serves an approval web UI with `/healthz` and `/metrics`. See ARCHITECTURE.md.

pub mod agent;
mod approval_rules;
mod check_env;
mod cli;
pub mod config;
mod github;
mod health;
pub mod metrics;
mod poller;
mod rate_limit;
mod release;
mod reporter;
pub mod scheduler;
mod web;
mod webhook;

pub use agent::Agent;

/// Run the command line given by `args` (program name first); returns the exit code.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    cli::main(args)
}
