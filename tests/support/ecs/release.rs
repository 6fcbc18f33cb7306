//! A whole release of the ECS app through the `envelope-runner` binary: the app's source in a
//! git repository, a project whose `api` pipeline builds it, gates it, migrates and deploys
//! it on a [`Cluster`], and the runner commands that take a release to and past its gate.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use super::{Cluster, images, write_source};
use crate::env::{TestEnv, test_env};
use crate::git_fixture::WorkRepo;
use crate::support::{run_id, runner, text};

/// The app's source in a git repository tagged `tag`, with `crash_roles` roles that exit at
/// once: the repository's folder and its `file://` URL.
pub fn app_repository(env: &TestEnv, tag: &str, crash_roles: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let repo = WorkRepo::init(&work).unwrap();
    write_source(env, &work, tag, crash_roles);
    repo.git(&["add", "-A"]).unwrap();
    repo.git(&["commit", "-q", "-m", "release"]).unwrap();
    repo.tag(tag).unwrap();
    let bare = dir.path().join("app.git");
    repo.publish(&bare).unwrap();
    let url = format!("file://{}", bare.display());
    (dir, url)
}

/// A project whose `api` pipeline builds the app and migrates and deploys it on `cluster`. It
/// pushes the shared test repository under tags of its own (`<cluster>-<release tag>`): two
/// tests pushing different images under one tag at the same time would race, and the runner
/// fails the push that lost.
pub fn api_project(
    env: &TestEnv,
    cluster: &Cluster,
    url: &str,
    migrate_exit: i32,
) -> tempfile::TempDir {
    api_project_notifying(env, cluster, url, migrate_exit, None)
}

/// `api_project` whose approval gate POSTs its notice to `webhook`.
pub fn api_project_notifying(
    env: &TestEnv,
    cluster: &Cluster,
    url: &str,
    migrate_exit: i32,
    webhook: Option<&str>,
) -> tempfile::TempDir {
    api_project_with(env, cluster, url, migrate_exit, webhook, "")
}

/// `api_project` with `top` (YAML: top-level keys such as `notify:`) before its stages.
pub fn api_project_telling(
    env: &TestEnv,
    cluster: &Cluster,
    url: &str,
    top: &str,
) -> tempfile::TempDir {
    api_project_with(env, cluster, url, 0, None, top)
}

fn api_project_with(
    env: &TestEnv,
    cluster: &Cluster,
    url: &str,
    migrate_exit: i32,
    webhook: Option<&str>,
    top: &str,
) -> tempfile::TempDir {
    let notify = webhook
        .map(|hook| format!("\n      notify:\n        webhook: {hook}"))
        .unwrap_or_default();
    let repository = images(env).repository.clone();
    let image = repository.split_once('/').unwrap().1.to_owned();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        dir.path().join("pipelines/api.yaml"),
        format!(
            r#"source:
  repository: {url}
  tags: ["v*"]
aws:
  region: {region}
  registry: {registry}
{top}stages:
  - build:
      image: {image}
      tags: ["{cluster}-${{release.tag}}"]
  - approval:
      timeout: 1h{notify}
  - migrate:
      cluster: {cluster}
      service: envelope-prod-api
      container: api
      command: [/app/migrate, "{migrate_exit}", "25"]
      timeout: 2m
  - deploy:
      cluster: {cluster}
      services: [envelope-prod-api, envelope-prod-worker, envelope-prod-scheduler, envelope-prod-reverb]
      timeout: 2m
"#,
            region = env.region(),
            registry = env.registry(),
            cluster = cluster.name,
        ),
    )
    .unwrap();
    dir
}

/// The runner against the shared test environment.
pub fn pipeline_runner(project: &Path) -> Command {
    runner(test_env().expect("test environment"), project)
}

/// A run's record (`status --output json`).
pub fn record_of(project: &Path, run: &str) -> Value {
    let output = pipeline_runner(project)
        .args(["status", run, "--output", "json"])
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs the `api` pipeline (tag v2.0.0) to its gate and approves it from a second process,
/// with `approver` options: the run's id.
fn approved_release(project: &Path, approver: &[&str]) -> String {
    let paused = pipeline_runner(project)
        .args(["run", "api", "--ref", "v2.0.0", "--until", "approval"])
        .output()
        .unwrap();
    assert_eq!(paused.status.code(), Some(4), "{}", text(&paused));
    let run = run_id(&paused);
    let approved = pipeline_runner(project)
        .args(["approve", &run])
        .args(approver)
        .output()
        .unwrap();
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    run
}

/// A release run to its gate and approved, not resumed: its id.
pub fn approve_waiting_release(project: &Path) -> String {
    approved_release(project, &[])
}

/// Run to the gate, approve from a second process, resume: the run's output and exit code.
pub fn release(project: &Path) -> (String, Output) {
    let run = approved_release(project, &["--as", "release-manager"]);
    let resumed = pipeline_runner(project)
        .args(["resume", &run])
        .output()
        .unwrap();
    (run, resumed)
}
