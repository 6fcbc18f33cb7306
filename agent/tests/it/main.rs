//! Integration tests of envelope-agent: against a fake GitHub (the one allowed fake), real git
//! repositories, SQLite and DynamoDB stores, over HTTP, and in headless Chromium.
// Test code: a failed `unwrap` is a failed test, which is what it should be.
#![allow(clippy::unwrap_used)]

mod browser;
mod cli;
mod environments;
mod fake_github;
mod polling;
mod recovery;
mod shared_sessions;
mod support;
mod untrusted;
mod web;
mod webhook;
