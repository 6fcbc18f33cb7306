//! Driving the `envelope-runner` binary: the command against the test environment and a
//! project folder, its output as text, the run id it printed and a run's record.

use crate::env::{TestEnv, runner_binary};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// The runner as a command: the test environment's variables, no colour, a cache and (when
/// the project has a `store-url` file) a store of the project's own.
pub fn runner(env: &TestEnv, project: &Path) -> Command {
    let mut command = Command::new(runner_binary());
    command
        .envs(env.vars())
        .env("NO_COLOR", "1")
        .env("ENVELOPE_CACHE_DIR", project.join("cache"))
        .env_remove("GITHUB_TOKEN")
        .envs(
            // A test that writes `store-url` into the project runs against that store.
            std::fs::read_to_string(project.join("store-url"))
                .ok()
                .map(|url| ("ENVELOPE_STORE", url.trim().to_owned())),
        )
        .arg("--project")
        .arg(project);
    command
}

/// The exit code, stdout and stderr, for an assertion's message.
pub fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The run id the runner printed (`run <id> ...`).
pub fn run_id(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .split_whitespace()
        .skip_while(|word| *word != "run")
        .nth(1)
        .unwrap_or_else(|| panic!("no run id in {}", text(output)))
        .to_string()
}

/// A run's record (`status --output json`); the command must succeed.
pub fn status_json(env: &TestEnv, project: &Path, run: &str) -> Value {
    let output = runner(env, project)
        .args(["status", run, "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The record of stage `name` in a run record.
pub fn stage<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {record}"))
}

/// [`status_json`] from the store at `store`.
pub fn status_json_with_store(env: &TestEnv, project: &Path, run: &str, store: &Path) -> Value {
    let output = runner(env, project)
        .args(["status", run, "--output", "json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}
