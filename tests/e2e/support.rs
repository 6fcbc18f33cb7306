//! Helpers shared by the end-to-end tests that drive the `envelope-runner` binary: the
//! example app in a served git repository, a project folder, and reading run records.

use envelope_tests::env::{TestEnv, runner_binary};
use envelope_tests::git_fixture::WorkRepo;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) const TOKEN: &str = "ghs_e2eTokenThatMustNeverBePrinted0123456789";

/// The example app committed into a fresh repository, tagged `v1.0.0`.
pub(crate) struct App {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) repo: WorkRepo,
    pub(crate) bare_root: PathBuf,
}

pub(crate) fn example_app() -> App {
    example_app_with(&[])
}

/// [`example_app`] with more files (path, contents) in the same commit.
pub(crate) fn example_app_with(extra: &[(&str, &str)]) -> App {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let repo = WorkRepo::init(&work).unwrap();
    let example = envelope_tests::env::repo_root().join("examples/hello");
    for file in ["Dockerfile", ".dockerignore", "migrate.sh", "app/server.sh"] {
        let target = work.join(file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(example.join(file), &target).unwrap();
    }
    for (file, contents) in extra {
        std::fs::write(work.join(file), contents).unwrap();
    }
    repo.git(&["add", "-A"]).unwrap();
    repo.git(&["commit", "-q", "-m", "example app"]).unwrap();
    repo.tag("v1.0.0").unwrap();
    let bare_root = dir.path().join("served");
    std::fs::create_dir_all(&bare_root).unwrap();
    repo.publish(&bare_root.join("hello.git")).unwrap();
    App {
        _dir: dir,
        repo,
        bare_root,
    }
}

/// The stages after the build that `project` gives a pipeline.
pub(crate) const APPROVAL_AND_DEPLOY: &str = r#"  - approval:
      timeout: 1h
  - deploy:
      cluster: envelope-example
      services: [hello-web]
"#;

/// A project folder with `pipelines/hello.yaml` pointing at `url` and pushing `image` to the
/// test registry, then an approval and a deploy.
pub(crate) fn project(url: &str, registry: &str, image: &str) -> tempfile::TempDir {
    project_with(url, registry, image, "", APPROVAL_AND_DEPLOY)
}

/// A project whose pipeline has `top` (extra top-level keys) and `stages` after the build.
pub(crate) fn project_with(
    url: &str,
    registry: &str,
    image: &str,
    top: &str,
    stages: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        dir.path().join("pipelines/hello.yaml"),
        format!(
            r#"source:
  repository: {url}
  tags: ["v*"]
aws:
  region: eu-west-2
  registry: {registry}
{top}stages:
  - build:
      image: {image}
      build_args:
        APP_VERSION: ${{release.tag}}
      tags: ["${{release.tag}}", "${{git.short_sha}}", latest]
{stages}"#
        ),
    )
    .unwrap();
    dir
}

pub(crate) fn runner(env: &TestEnv, project: &Path) -> Command {
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

pub(crate) fn text(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The run id the runner printed (`run <id> ...`).
pub(crate) fn run_id(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .split_whitespace()
        .skip_while(|word| *word != "run")
        .nth(1)
        .unwrap_or_else(|| panic!("no run id in {}", text(output)))
        .to_string()
}

pub(crate) fn status_json(env: &TestEnv, project: &Path, run: &str) -> Value {
    let output = runner(env, project)
        .args(["status", run, "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

pub(crate) fn stage<'a>(record: &'a Value, name: &str) -> &'a Value {
    record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {record}"))
}

pub(crate) fn status_json_with_store(
    env: &TestEnv,
    project: &Path,
    run: &str,
    store: &Path,
) -> Value {
    let output = runner(env, project)
        .args(["status", run, "--output", "json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Removes (forcibly) every container the daemon lists for a `docker ps --filter` value, e.g.
/// `label=KEY=VALUE`: what a fixture started and must not leave running.
pub(crate) fn remove_containers(docker_cli: &str, filter: &str) {
    let Ok(listed) = Command::new(docker_cli)
        .args(["ps", "-aq", "--filter", filter])
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    if !ids.is_empty() {
        let _ = Command::new(docker_cli)
            .args(["rm", "-f"])
            .args(&ids)
            .output();
    }
}
