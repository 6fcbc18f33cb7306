//! The Docker CLI's conventions: registry credentials from `config.json` (helpers, `auths`)
//! for pushes and for private base images, and a remote daemon over TLS (`DOCKER_HOST` with
//! `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`, and a Docker context); and the daemon's streamed
//! answers read to their end when their line ends arrive late (`line_ends`).

mod credentials;
mod line_ends;
mod tls;

use std::path::Path;
use std::process::Command;

use crate::support::runner;
use envelope_tests::env::TestEnv;

/// A project whose pipeline `app` builds `image` (tag `e2e`) from a source folder holding
/// `dockerfile` and a file `hello`: `(project, source)`.
fn local_project(image: &str, dockerfile: &str) -> (tempfile::TempDir, tempfile::TempDir) {
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("Dockerfile"), dockerfile).unwrap();
    std::fs::write(source.path().join("hello"), image).unwrap();
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(project.path().join("pipelines")).unwrap();
    std::fs::write(
        project.path().join("pipelines/app.yaml"),
        format!(
            "source:\n  repository: acme/app\nstages:\n  - build:\n      image: {image}\n      tags: [e2e]\n"
        ),
    )
    .unwrap();
    (project, source)
}

/// `run app --local --source SOURCE` (and `--registry REGISTRY`), without the Docker and
/// registry variables of the test process: each test sets its own.
fn local_run(env: &TestEnv, project: &Path, source: &Path, registry: Option<&str>) -> Command {
    let mut command = runner(env, project);
    for name in [
        "DOCKER_HOST",
        "DOCKER_TLS_VERIFY",
        "DOCKER_CERT_PATH",
        "DOCKER_CONTEXT",
        "DOCKER_CONFIG",
        "ENVELOPE_REGISTRY_USERNAME",
        "ENVELOPE_REGISTRY_PASSWORD",
        "ENVELOPE_REGISTRY_PASSWORD_FILE",
    ] {
        command.env_remove(name);
    }
    command
        .args(["run", "app", "--local", "--source"])
        .arg(source);
    if let Some(registry) = registry {
        command.args(["--registry", registry]);
    }
    command
}
