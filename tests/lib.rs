//! Shared helpers for end-to-end tests: the test environment, git repositories and servers,
//! and the fixtures and runner helpers in `support`.
// Test code: a failed `unwrap` is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]
pub mod env;
pub mod git_fixture;
pub mod support;
