//! Shared helpers for end-to-end tests.
pub mod env;
pub mod git_fixture;
