//! `envelope-runner run` end to end: a git repository served over smart HTTP (with a token)
//! and file://, the real Docker daemon building with BuildKit, a real registry, and the run
//! record in the SQLite store.

use crate::support::private_daemon::PrivateDaemon;
use crate::support::{
    TOKEN, example_app, project, run_id, runner, stage, status_json, status_json_with_store, text,
};
use envelope_tests::env::{head_manifest, parts, unique};
use envelope_tests::git_fixture::{GitServer, TestCertificate};
use serde_json::Value;
use std::process::Command;

#[tokio::test]
async fn run_until_push_over_smart_http_records_the_registry_digest() {
    let Some((env, docker)) = parts("run_until_push_over_smart_http").await else {
        return;
    };
    let app = example_app();
    let server = GitServer::start(&app.bare_root, Some(TOKEN)).unwrap();
    let image = format!("e2e/{}", unique("run"));
    let project = project(&server.url("hello.git"), env.registry(), &image);

    let output = runner(env, project.path())
        .env("GITHUB_TOKEN", TOKEN)
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(
        !all.contains(TOKEN),
        "the token leaked into the output:\n{all}"
    );
    let run = run_id(&output);

    let record = status_json(env, project.path(), &run);
    let sha = app.repo.head().unwrap();
    assert_eq!(stage(&record, "source")["outputs"]["sha"], sha.as_str());
    assert_eq!(stage(&record, "build")["status"], "succeeded");
    let push = stage(&record, "push");
    assert_eq!(push["status"], "succeeded", "{record}");
    let digest = push["outputs"]["digest"].as_str().unwrap().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert_eq!(
        push["outputs"]["image"],
        format!("{}/{image}@{digest}", env.registry()).as_str()
    );
    assert_eq!(
        stage(&record, "approval")["status"],
        "pending",
        "--until push stops before the gate"
    );

    for tag in ["v1.0.0", &sha[..7], "latest"] {
        let (status, registry_digest) = head_manifest(env.registry(), &image, tag).await;
        assert_eq!(status, 200, "tag {tag}");
        assert_eq!(
            registry_digest.as_deref(),
            Some(digest.as_str()),
            "tag {tag}"
        );
    }

    let inspected = docker
        .inspect_image(&format!("{}/{image}:v1.0.0", env.registry()))
        .await
        .unwrap();
    let labels = inspected.config.unwrap().labels.unwrap();
    assert_eq!(labels["org.opencontainers.image.revision"], sha);
    assert_eq!(labels["org.opencontainers.image.version"], "v1.0.0");
    assert_eq!(
        labels["org.opencontainers.image.source"],
        server.url("hello.git")
    );
    assert!(!labels["org.opencontainers.image.created"].is_empty());

    // Resume finishes nothing twice: the build and push are read from the store.
    let logs = runner(env, project.path())
        .args(["logs", &run])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&logs.stdout).contains("[push]"),
        "{}",
        text(&logs)
    );
}

/// On a Docker daemon of its own: `builder prune -af` on the shared one would cut other
/// tests' builds off mid-stream (and theirs would refill the cache this test empties).
#[tokio::test]
async fn run_from_a_file_url_pushes_and_a_rebuild_after_prune_is_fully_cached() {
    let Some((env, _docker)) = parts("run_from_a_file_url").await else {
        return;
    };
    let daemon = PrivateDaemon::start();
    daemon.load_image(env.docker_cli(), env.base_image());
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let image = format!("e2e/{}", unique("cached"));
    let project = project(&url, env.registry(), &image);

    let first = runner(env, project.path())
        .env("DOCKER_HOST", daemon.host())
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    let first_record = status_json(env, project.path(), &run_id(&first));
    let first_digest = stage(&first_record, "push")["outputs"]["digest"].clone();

    // Forget every local layer: the next build can only reuse what the registry has.
    let prune = Command::new("/usr/bin/docker")
        .args(["--host", &daemon.host(), "builder", "prune", "-af"])
        .env("DOCKER_BUILDKIT", "1")
        .output()
        .unwrap();
    assert!(prune.status.success(), "{}", text(&prune));
    let sha = app.repo.head().unwrap();
    for tag in ["v1.0.0", &sha[..7], "latest"] {
        let reference = format!("{}/{image}:{tag}", env.registry());
        let removed = Command::new("/usr/bin/docker")
            .args(["--host", &daemon.host(), "image", "rm", &reference])
            .output()
            .unwrap();
        assert!(removed.status.success(), "{}", text(&removed));
        assert!(!daemon.has_image(&reference), "{reference} is gone");
    }

    let second = runner(env, project.path())
        .env("DOCKER_HOST", daemon.host())
        .args([
            "run",
            "hello",
            "--ref",
            "v1.0.0",
            "--until",
            "push",
            "--log-format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    let steps: Vec<Value> = String::from_utf8_lossy(&second.stderr)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["event"] == "build_step" && event["completed"] == true)
        .collect();
    let dockerfile_steps: Vec<&Value> = steps
        .iter()
        .filter(|step| {
            let name = step["step"].as_str().unwrap_or("");
            ["RUN ", "COPY ", "WORKDIR "]
                .iter()
                .any(|kind| name.contains(kind))
        })
        .collect();
    assert!(
        dockerfile_steps.len() >= 4,
        "expected the Dockerfile's steps in {steps:?}"
    );
    for step in &dockerfile_steps {
        assert_eq!(step["cached"], true, "step not cached: {step}");
    }
    // Built entirely from cached layers and pushed again: the record holds what the registry
    // serves for the tag now. (Whether the digest changed depends only on the `created` label,
    // the run's start to the second.)
    let second_record = status_json(env, project.path(), &run_id(&second));
    let second_digest = &stage(&second_record, "push")["outputs"]["digest"];
    assert!(
        first_digest
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    let (status, registry_digest) = head_manifest(env.registry(), &image, "v1.0.0").await;
    assert_eq!(status, 200);
    assert_eq!(second_digest.as_str(), registry_digest.as_deref());
}

#[tokio::test]
async fn a_wrong_token_fails_the_source_stage_as_an_environment_error_without_printing_it() {
    let Some((env, _docker)) = parts("a_wrong_token").await else {
        return;
    };
    let app = example_app();
    let server = GitServer::start(&app.bare_root, Some(TOKEN)).unwrap();
    let project = project(
        &server.url("hello.git"),
        env.registry(),
        &format!("e2e/{}", unique("token")),
    );
    let wrong = "ghs_wrongTokenAlsoNeverPrinted987654321";
    let output = runner(env, project.path())
        .env("GITHUB_TOKEN", wrong)
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(6), "{all}");
    assert!(all.contains("authentication failed"), "{all}");
    assert!(!all.contains(wrong) && !all.contains(TOKEN), "{all}");
}

#[tokio::test]
async fn a_missing_ref_fails_the_source_stage_and_records_why() {
    let Some((env, _docker)) = parts("a_missing_ref").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = project(&url, env.registry(), &format!("e2e/{}", unique("ref")));
    let output = runner(env, project.path())
        .args(["run", "hello", "--ref", "v9.9.9", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    assert!(all.contains("v9.9.9"), "{all}");
    let record = status_json(env, project.path(), &run_id(&output));
    assert_eq!(record["status"], "failed");
    assert_eq!(stage(&record, "source")["status"], "failed");
    assert_eq!(stage(&record, "build")["status"], "skipped");
}

#[tokio::test]
async fn a_registry_that_is_down_fails_the_push_as_an_environment_error() {
    let Some((env, _docker)) = parts("a_registry_that_is_down").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let closed = format!("127.0.0.1:{}", envelope_tests::git_fixture::closed_port());
    let project = project(&url, &closed, &format!("e2e/{}", unique("down")));
    let output = runner(env, project.path())
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(6), "{all}");
    let record = status_json(env, project.path(), &run_id(&output));
    assert_eq!(stage(&record, "push")["status"], "failed", "{record}");
}

#[tokio::test]
async fn local_mode_builds_the_working_tree_and_skips_the_remote_stages() {
    let Some((env, docker)) = parts("local_mode").await else {
        return;
    };
    let example = envelope_tests::env::repo_root().join("examples/hello");
    let state = tempfile::tempdir().unwrap();
    let output = runner(env, &example)
        .current_dir(&example)
        .env("ENVELOPE_CACHE_DIR", state.path())
        .args(["run", "hello", "--local", "--store"])
        .arg(state.path().join("state.db"))
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    let record = status_json_with_store(
        env,
        &example,
        &run_id(&output),
        &state.path().join("state.db"),
    );
    let image_id = stage(&record, "build")["outputs"]["image_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(image_id.starts_with("sha256:"), "{record}");
    assert_eq!(stage(&record, "push")["status"], "skipped", "{record}");
    // A local run is a branch run: approval, migrate and deploy are not even planned.
    let planned: Vec<&str> = record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|stage| stage["name"].as_str())
        .collect();
    assert_eq!(planned, ["source", "build", "push"], "{record}");
    assert!(all.contains(&image_id), "the digest is printed:\n{all}");
    let inspected = docker.inspect_image("envelope/hello:latest").await.unwrap();
    assert_eq!(inspected.id.as_deref(), Some(image_id.as_str()));
}

#[tokio::test]
async fn a_run_fetches_over_https_with_the_token_and_refuses_an_untrusted_certificate() {
    let Some((env, _docker)) = parts("run over https").await else {
        return;
    };
    let app = example_app();
    let certificate = TestCertificate::new().unwrap();
    let server = GitServer::start_tls(&app.bare_root, Some(TOKEN), &certificate).unwrap();
    let url = server.url("hello.git");
    assert!(url.starts_with("https://"), "{url}");
    let project = project(&url, env.registry(), &format!("e2e/{}", unique("https")));

    // The system's store does not know the test authority: the fetch must not go through.
    let refused = runner(env, project.path())
        .env("GITHUB_TOKEN", TOKEN)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "source"])
        .output()
        .unwrap();
    let all = text(&refused);
    assert_eq!(refused.status.code(), Some(6), "{all}");
    assert!(
        all.contains("is not trusted (UnknownIssuer)") && all.contains("SSL_CERT_FILE"),
        "{all}"
    );
    assert!(!all.contains(TOKEN), "the token leaked:\n{all}");

    // Trusting it (as a company CA would be), the same run fetches the tag with the token.
    let output = runner(env, project.path())
        .env("GITHUB_TOKEN", TOKEN)
        .env("SSL_CERT_FILE", &certificate.ca)
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "source"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(!all.contains(TOKEN), "the token leaked:\n{all}");
    let record = status_json(env, project.path(), &run_id(&output));
    let source = stage(&record, "source");
    assert_eq!(source["status"], "succeeded", "{record}");
    assert_eq!(source["outputs"]["sha"], app.repo.head().unwrap().as_str());
}
