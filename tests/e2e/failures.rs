//! Every failure says why: a failing Dockerfile step (with and without a buildspec, on a
//! terminal-less CLI, in `logs`, in the run record and in a GitHub Actions annotation), a bad
//! image reference, a push the registry refuses, an unreachable Docker daemon and missing AWS
//! credentials, each driven through the `envelope-runner` binary against the real daemon,
//! registries and AWS emulator.

use crate::support::{project_with, run_id, runner, stage, status_json, text};
use envelope_tests::env::{TestEnv, parts, unique};
use envelope_tests::git_fixture::{WorkRepo, closed_port};
use std::path::{Path, PathBuf};
use std::process::Output;

/// A repository whose Dockerfile has `run` as its second step, tagged `v1.0.0`, served from
/// a bare copy; returns the temporary directory, the bare repository's URL and the commit.
fn app_with(env: &TestEnv, run: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let repo = WorkRepo::init(dir.path().join("work")).unwrap();
    let sha = repo
        .commit_file(
            "Dockerfile",
            &format!("FROM {}\nRUN {run}\n", env.base_image()),
            "app",
        )
        .unwrap();
    repo.tag("v1.0.0").unwrap();
    let bare = dir.path().join("app.git");
    repo.publish(&bare).unwrap();
    (dir, format!("file://{}", bare.display()), sha)
}

/// A project whose pipeline `hello` builds `image` for `registry`, with `buildspec` as the
/// build's buildspec when given.
fn project(url: &str, registry: &str, image: &str, buildspec: Option<&str>) -> tempfile::TempDir {
    let project = project_with(url, registry, image, "", "");
    if let Some(spec) = buildspec {
        std::fs::create_dir_all(project.path().join("buildspecs")).unwrap();
        std::fs::write(project.path().join("buildspecs/build.yml"), spec).unwrap();
        let path = project.path().join("pipelines/hello.yaml");
        let pipeline = std::fs::read_to_string(&path).unwrap().replace(
            "      tags: [",
            "      buildspec: buildspecs/build.yml\n      tags: [",
        );
        std::fs::write(&path, pipeline).unwrap();
    }
    project
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The final `error: ...` message (it runs to the end of standard error).
fn final_error(output: &Output) -> String {
    let stderr = stderr(output);
    let start = stderr
        .find("error: stage `")
        .unwrap_or_else(|| panic!("no final error in {}", text(output)));
    stderr[start..].trim_end().to_owned()
}

const BUILDSPEC: &str = "version: 0.2\nphases:\n  pre_build:\n    commands:\n      - echo \
                         before the image build\n  build:\n    commands:\n      - echo building\n";

#[tokio::test]
async fn a_failing_step_is_failed_with_its_exit_code_and_last_lines_everywhere() {
    failing_step(None).await;
}

#[tokio::test]
async fn a_failing_step_under_a_buildspec_keeps_its_cause_everywhere() {
    failing_step(Some(BUILDSPEC)).await;
}

async fn failing_step(buildspec: Option<&str>) {
    let Some((env, _docker)) = parts("a failing step").await else {
        return;
    };
    let marker = unique("boom-cause");
    // One stream, so that the order of the lines is known.
    let run = format!("sh -c \"echo compiling >&2; echo {marker} >&2; exit 3\"");
    let step = format!("[2/2] RUN {run}");
    let (_app, url, sha) = app_with(env, &run);
    let image = format!("e2e/{}", unique("failing-step"));
    let project = project(&url, env.registry(), &image, buildspec);

    let output = runner(env, project.path())
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    let stderr = stderr(&output);
    // The step is shown as failed, never as done.
    assert!(
        stderr.contains(&format!("FAILED {step}")) && stderr.contains("): exit code 3\n"),
        "{all}"
    );
    assert!(!stderr.contains(&format!("DONE {step}")), "{all}");
    // The final message: the step, its exit code and its last output line.
    let error = final_error(&output);
    let cause = format!("step `{step}` failed with exit code 3\nlast output lines:\n");
    assert!(error.contains(&cause), "{all}");
    assert!(
        error.ends_with(&format!("\n  compiling\n  {marker}")),
        "{all}"
    );
    if buildspec.is_some() {
        assert!(
            error.starts_with(
                "error: stage `build` failed: buildspec phase `build` failed: the image build \
                 failed: step `"
            ),
            "{all}"
        );
    }

    // `logs` replays the same from the store.
    let id = run_id(&output);
    let logs = runner(env, project.path())
        .args(["logs", &id])
        .output()
        .unwrap();
    assert_eq!(logs.status.code(), Some(0), "{}", text(&logs));
    let logs = String::from_utf8_lossy(&logs.stdout);
    assert!(
        logs.contains(&format!("[build] FAILED {step}")) && logs.contains("): exit code 3\n"),
        "{logs}"
    );
    assert!(logs.contains(&cause), "{logs}");
    assert!(logs.contains(&format!("  {marker}")), "{logs}");

    // The run record's stage error.
    let record = status_json(env, project.path(), &id);
    let stored = stage(&record, "build")["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(stored.contains(&cause), "{stored}");
    assert!(stored.ends_with(&format!("\n  {marker}")), "{stored}");

    // In GitHub Actions, the failure annotation carries it too.
    let job = ActionsJob::new(project.path(), &sha);
    let output = job
        .command(env, project.path())
        .args(["run", "hello", "--until", "push"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let annotation = log
        .lines()
        .find(|line| line.starts_with("::error title=Stage build failed::"))
        .unwrap_or_else(|| panic!("no error annotation in {log}"));
    assert!(
        annotation.contains("failed with exit code 3%0Alast output lines:%0A"),
        "{annotation}"
    );
    assert!(
        annotation.contains(&format!("%0A  {marker}")),
        "{annotation}"
    );
    assert!(annotation.contains("[2/2] RUN sh -c"), "{annotation}");
}

/// The variables of a GitHub Actions job triggered by publishing release v1.0.0 at `sha`.
struct ActionsJob {
    variables: Vec<(String, String)>,
    _files: tempfile::TempDir,
}

impl ActionsJob {
    fn new(workspace: &Path, sha: &str) -> Self {
        let files = tempfile::tempdir().unwrap();
        let event = files.path().join("event.json");
        std::fs::write(
            &event,
            r#"{"action": "published", "release": {"tag_name": "v1.0.0", "draft": false}}"#,
        )
        .unwrap();
        let path = |name: &str| -> String {
            let path: PathBuf = files.path().join(name);
            path.to_string_lossy().into_owned()
        };
        let variables = [
            ("GITHUB_ACTIONS", "true".to_owned()),
            ("CI", "true".to_owned()),
            ("GITHUB_EVENT_NAME", "release".to_owned()),
            ("GITHUB_EVENT_PATH", path("event.json")),
            ("GITHUB_REF", "refs/tags/v1.0.0".to_owned()),
            ("GITHUB_REF_NAME", "v1.0.0".to_owned()),
            ("GITHUB_REF_TYPE", "tag".to_owned()),
            ("GITHUB_SHA", sha.to_owned()),
            ("GITHUB_RUN_ID", "9876543210".to_owned()),
            ("GITHUB_RUN_ATTEMPT", "1".to_owned()),
            ("GITHUB_ACTOR", "octocat".to_owned()),
            ("GITHUB_REPOSITORY", "acme/deploy".to_owned()),
            ("GITHUB_SERVER_URL", "https://github.com".to_owned()),
            ("GITHUB_WORKSPACE", workspace.to_string_lossy().into_owned()),
            ("GITHUB_OUTPUT", path("output")),
            ("GITHUB_STEP_SUMMARY", path("summary")),
        ]
        .map(|(key, value)| (key.to_owned(), value))
        .to_vec();
        ActionsJob {
            variables,
            _files: files,
        }
    }

    fn command(&self, env: &TestEnv, project: &Path) -> std::process::Command {
        let mut command = runner(env, project);
        command.envs(self.variables.iter().map(|(key, value)| (key, value)));
        command
    }
}

#[tokio::test]
async fn a_docker_host_nobody_listens_on_is_an_environment_error() {
    let Some((env, _docker)) = parts("docker host unreachable").await else {
        return;
    };
    let (_app, url, _sha) = app_with(env, "true");
    let project = project(&url, env.registry(), "e2e/unreachable-daemon", None);
    let host = format!("tcp://127.0.0.1:{}", closed_port());

    let output = runner(env, project.path())
        .env("DOCKER_HOST", &host)
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(6), "{all}");
    let error = final_error(&output);
    assert!(
        error.starts_with(&format!(
            "error: stage `build` failed: cannot reach the Docker daemon at {host} from DOCKER_HOST ("
        )),
        "{all}"
    );
    assert!(error.contains("refused"), "{all}");
    assert!(
        error.contains("set DOCKER_HOST (or DOCKER_CONTEXT) to a running daemon"),
        "{all}"
    );
}

#[tokio::test]
async fn an_image_reference_the_registry_cannot_take_is_named_with_the_reason() {
    let Some((env, _docker)) = parts("invalid reference").await else {
        return;
    };
    let (_app, url, _sha) = app_with(env, "true");
    let registry = format!("{}/Team", env.registry());
    let image = format!("e2e/{}", unique("bad-reference"));
    let project = project(&url, &registry, &image, Some(BUILDSPEC));

    let output = runner(env, project.path())
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    let error = final_error(&output);
    assert!(
        error.contains(&format!(
            "the image build failed: cannot tag the image as `{registry}/{image}:v1.0.0`: "
        )),
        "{all}"
    );
    assert!(error.contains("lowercase"), "{all}");
}

#[tokio::test]
async fn a_build_the_daemon_cannot_do_names_the_image_and_why() {
    let Some((env, _docker)) = parts("daemon error").await else {
        return;
    };
    let (_app, url, _sha) = app_with(env, "true");
    let image = format!("e2e/{}", unique("no-target"));
    let project = project(&url, env.registry(), &image, None);
    let path = project.path().join("pipelines/hello.yaml");
    let pipeline = std::fs::read_to_string(&path)
        .unwrap()
        .replace("      tags: [", "      target: nosuchstage\n      tags: [");
    std::fs::write(&path, pipeline).unwrap();

    let output = runner(env, project.path())
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(1), "{all}");
    let error = final_error(&output);
    assert!(
        error.starts_with(&format!(
            "error: stage `build` failed: the build of {}/{image}:v1.0.0 failed: ",
            env.registry()
        )),
        "{all}"
    );
    assert!(error.contains("nosuchstage"), "{all}");
}

#[tokio::test]
async fn a_push_the_registry_refuses_names_the_repository_and_why() {
    let Some((env, _docker)) = parts("push refused").await else {
        return;
    };
    let (_app, url, _sha) = app_with(env, "true");
    let image = format!("e2e/{}", unique("refused"));
    let project = project(&url, env.auth_registry(), &image, None);

    let output = runner(env, project.path())
        .env_remove("ENVELOPE_REGISTRY_USERNAME")
        .env_remove("ENVELOPE_REGISTRY_PASSWORD")
        .env_remove("ENVELOPE_REGISTRY_PASSWORD_FILE")
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "push"])
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(6), "{all}");
    let error = final_error(&output);
    assert!(
        error.starts_with(&format!(
            "error: stage `push` failed: the registry at {} refused an anonymous push (no \
             credentials were given) for {}/{image}: ",
            env.auth_registry(),
            env.auth_registry()
        )),
        "{all}"
    );
    assert!(error.contains("no basic auth credentials"), "{all}");
}

/// Runs `args` with no AWS credentials anywhere the SDK looks: no variables, empty config and
/// credentials files, no instance metadata.
fn without_credentials(env: &TestEnv, project: &Path, args: &[&str]) -> Output {
    let empty = project.join("empty-aws-file");
    std::fs::write(&empty, "").unwrap();
    let mut command = runner(env, project);
    for name in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ] {
        command.env_remove(name);
    }
    command
        .env("AWS_CONFIG_FILE", &empty)
        .env("AWS_SHARED_CREDENTIALS_FILE", &empty)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test]
async fn missing_aws_credentials_are_one_line_with_what_to_do_and_exit_6() {
    let Some((env, _docker)) = parts("missing credentials").await else {
        return;
    };
    let (_app, url, _sha) = app_with(env, "true");
    let registry = format!("000000000000.dkr.ecr.{}.amazonaws.com", env.region());
    let project = project(&url, &registry, &unique("e2e/no-credentials"), None);

    // The ECR login before the build.
    let output = without_credentials(
        env,
        project.path(),
        &["run", "hello", "--ref", "v1.0.0", "--until", "push"],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(6), "{all}");
    let error = final_error(&output);
    assert_eq!(
        error,
        format!(
            "error: stage `build` failed: cannot get a registry token \
             (ecr:GetAuthorizationToken): {}",
            envelope_runner::aws_error::NO_CREDENTIALS
        ),
        "{all}"
    );

    // A DynamoDB store, before anything runs.
    let output = without_credentials(
        env,
        project.path(),
        &[
            "history",
            "hello",
            "--store",
            &format!("dynamodb://{}", unique("e2e-none")),
        ],
    );
    let all = text(&output);
    assert_eq!(output.status.code(), Some(6), "{all}");
    let stderr = stderr(&output);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{all}");
    assert!(
        stderr.contains(envelope_runner::aws_error::NO_CREDENTIALS),
        "{all}"
    );
}
