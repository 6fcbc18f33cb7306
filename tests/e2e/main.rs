//! End-to-end tests of envelope-runner against real parts: a Docker daemon, registries, an AWS
//! emulator and git servers started by `scripts/test-env up`.
// Test code: a failed `unwrap` is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

// The fixtures and runner helpers, under the path every test file imports them by.
use envelope_tests::support;

mod agent_shutdown;
mod agents;
mod approval;
mod build;
mod buildspec;
mod docker;
mod drills;
mod ecs;
mod failures;
mod image;
mod inputs;
mod install;
mod lease;
mod local;
mod notify;
mod outage;
mod push;
mod reattach;
mod redaction;
mod run;
mod runs;
mod shipped;
mod source;
mod timeouts;
