//! Integration tests of the front end (validate, plan, schema) and the command line. Pure: no
//! daemon, registry or AWS needed. End-to-end tests against real parts live in the `tests` crate.
// Test code: a failed `unwrap` is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod actions;
mod approval_notice;
mod cli;
mod environments;
mod errors;
mod fuzz;
mod local;
mod paths;
mod pipelines;
mod run_notice;
mod untrusted;

use std::path::PathBuf;

/// The workspace root (where pipelines/ and buildspecs/ live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}
