//! The shipped `pipelines/api.yaml`, `envelope.yaml` and buildspec run as a user runs them:
//! only the repository (no GitHub here) and the AWS endpoint (ministack) differ. No region,
//! account or registry is set for them: the region comes from `envelope.yaml`, the account
//! from STS, the registry is ECR's (reached through `--registry-endpoint`).

use crate::support::sns::Subscriber;
use crate::support::{example_app, example_app_with, run_id, runner, stage, status_json, text};
use envelope_tests::env::{TestEnv, head_manifest, parts, repo_root, unique};
use std::path::Path;
use std::process::{Command, Output};

/// ministack's account, as its STS answers GetCallerIdentity.
const EMULATOR_ACCOUNT: &str = "000000000000";
/// A build secret the shipped api pipeline reads; it must never be printed.
const COMPOSER_AUTH: &str = "{\"github-oauth\":{\"github.com\":\"composer-canary-5150\"}}";

/// A project made of the shipped files, with every pipeline's `source.repository` pointed at
/// `url`.
fn shipped_project(url: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    for folder in ["pipelines", "buildspecs"] {
        std::fs::create_dir_all(dir.path().join(folder)).unwrap();
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(
                &path,
                dir.path().join(folder).join(path.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    std::fs::copy(root.join("envelope.yaml"), dir.path().join("envelope.yaml")).unwrap();
    for pipeline in ["api", "tenant", "hq"] {
        let file = dir.path().join(format!("pipelines/{pipeline}.yaml"));
        let text = std::fs::read_to_string(&file).unwrap();
        let shipped = format!("  repository: epactltd/{pipeline}\n");
        assert!(text.contains(&shipped), "{text}");
        std::fs::write(
            &file,
            text.replace(&shipped, &format!("  repository: {url}\n")),
        )
        .unwrap();
    }
    dir
}

/// `envelope-runner` with the test environment less the region (the shipped files name it),
/// and the build secret a CI job of the api would have.
fn shipped_runner(env: &TestEnv, project: &Path) -> Command {
    let mut command = runner(env, project);
    command
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("COMPOSER_AUTH", COMPOSER_AUTH)
        .env("ENVELOPE_REGISTRY_ENDPOINT", ecr_endpoint(env));
    command
}

/// ministack serves ECR's registry API on its own `host:port`.
fn ecr_endpoint(env: &TestEnv) -> String {
    env.endpoint()
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned()
}

async fn aws(env: &TestEnv, region: &str) -> aws_config::SdkConfig {
    env.sdk_config(env.endpoint())
        .await
        .into_builder()
        .region(aws_config::Region::new(region.to_owned()))
        .build()
}

/// The repository as the team's infrastructure makes it (the shipped pipeline does not ask the
/// runner to create it).
async fn ensure_repository(config: &aws_config::SdkConfig, name: &str) {
    let ecr = aws_sdk_ecr::Client::new(config);
    if let Err(error) = ecr.create_repository().repository_name(name).send().await {
        let exists = error
            .as_service_error()
            .is_some_and(|e| e.is_repository_already_exists_exception());
        assert!(exists, "creating ECR repository {name}: {error:?}");
    }
}

/// The digest ECR holds under `tag`, if any.
async fn ecr_digest(config: &aws_config::SdkConfig, repository: &str, tag: &str) -> Option<String> {
    let ecr = aws_sdk_ecr::Client::new(config);
    let answer = ecr
        .batch_get_image()
        .repository_name(repository)
        .image_ids(
            aws_sdk_ecr::types::ImageIdentifier::builder()
                .image_tag(tag)
                .build(),
        )
        .send()
        .await
        .ok()?;
    answer
        .images()
        .first()
        .and_then(|image| image.image_id())
        .and_then(|id| id.image_digest())
        .map(str::to_owned)
}

async fn run_blocking(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn assert_no_canary(output: &Output) {
    let all = text(output);
    assert!(
        !all.contains("composer-canary-5150"),
        "the build secret was printed:\n{all}"
    );
    assert!(
        !all.contains("<aws.account>") && !all.contains("<aws.region>"),
        "a placeholder reached a name:\n{all}"
    );
}

/// A release of the shipped pipeline `pipeline` up to its push, from the example app with
/// `extra` files: the image in ECR under every tag, the account from STS and the region from
/// `envelope.yaml`. The run's output and the commit, or `None` when the test is skipped.
async fn shipped_release_pushes_to_ecr(
    pipeline: &str,
    extra: &[(&str, &str)],
) -> Option<(Output, String)> {
    let (env, _docker) = parts(&format!("shipped {pipeline} until push")).await?;
    let repository = format!("envelope-{pipeline}");
    let config = aws(env, "eu-west-2").await;
    ensure_repository(&config, &repository).await;
    let app = example_app_with(extra);
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = shipped_project(&url);

    let mut command = shipped_runner(env, project.path());
    command.args(["run", pipeline, "--ref", "v1.0.0", "--until", "push"]);
    let output = run_blocking(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_no_canary(&output);
    let record = status_json(env, project.path(), &run_id(&output));
    assert_eq!(record["context"]["account"], EMULATOR_ACCOUNT, "{record}");
    assert_eq!(record["context"]["region"], "eu-west-2", "{record}");
    let push = stage(&record, "push");
    let digest = push["outputs"]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        push["outputs"]["image"],
        format!("{EMULATOR_ACCOUNT}.dkr.ecr.eu-west-2.amazonaws.com/{repository}@{digest}")
            .as_str()
    );
    let sha = app.repo.head().unwrap();
    for tag in ["v1.0.0", &sha[..7], "latest"] {
        assert_eq!(
            ecr_digest(&config, &repository, tag).await.as_deref(),
            Some(digest.as_str()),
            "ECR tag {tag}"
        );
    }
    Some((output, sha))
}

#[tokio::test]
async fn the_shipped_api_pipeline_pushes_to_ecr_under_every_tag() {
    shipped_release_pushes_to_ecr("api", &[]).await;
}

/// The front ends (tenant, hq) share the frontend buildspec, which checks for the Nuxt app's
/// package.json and reports the commit it built after the image build.
async fn shipped_frontend_pushes_to_ecr(pipeline: &str) {
    let package = [("package.json", "{\"name\": \"front-end\"}\n")];
    let Some((output, sha)) = shipped_release_pushes_to_ecr(pipeline, &package).await else {
        return;
    };
    assert!(
        String::from_utf8_lossy(&output.stderr).contains(&format!(" of {sha} done")),
        "the buildspec's post_build ran: {}",
        text(&output)
    );
}

#[tokio::test]
async fn the_shipped_tenant_pipeline_pushes_to_ecr_under_every_tag() {
    shipped_frontend_pushes_to_ecr("tenant").await;
}

#[tokio::test]
async fn the_shipped_hq_pipeline_pushes_to_ecr_under_every_tag() {
    shipped_frontend_pushes_to_ecr("hq").await;
}

#[tokio::test]
async fn a_branch_run_of_the_shipped_api_pipeline_builds_and_pushes_only() {
    let Some((env, _docker)) = parts("shipped api branch run").await else {
        return;
    };
    let config = aws(env, "eu-west-2").await;
    ensure_repository(&config, "envelope-api").await;
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = shipped_project(&url);

    // No --ref: the pipeline's `branch: main`.
    let mut command = shipped_runner(env, project.path());
    command.args(["run", "api"]);
    let output = run_blocking(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_no_canary(&output);
    let record = status_json(env, project.path(), &run_id(&output));
    let names: Vec<&str> = record["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|stage| stage["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["source", "build", "push"], "{record}");
    assert_eq!(record["status"], "succeeded");
    let digest = stage(&record, "push")["outputs"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let sha = app.repo.head().unwrap();
    assert_eq!(
        ecr_digest(&config, "envelope-api", &sha[..7])
            .await
            .as_deref(),
        Some(digest.as_str())
    );
    let plan = shipped_runner(env, project.path())
        .args(["plan", "api", "--ref", "main"])
        .output()
        .unwrap();
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan_text.contains("left out  approval, migrate, deploy"),
        "{plan_text}"
    );
}

#[tokio::test]
async fn the_shipped_api_pipeline_runs_in_a_second_region_without_edits() {
    let Some((env, _docker)) = parts("shipped api second region").await else {
        return;
    };
    let config = aws(env, "us-east-1").await;
    ensure_repository(&config, "envelope-api").await;
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = shipped_project(&url);

    let mut command = shipped_runner(env, project.path());
    command.args([
        "run",
        "api",
        "--ref",
        "v1.0.0",
        "--until",
        "build",
        "--region",
        "us-east-1",
    ]);
    let output = run_blocking(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let run = run_id(&output);
    // The run keeps its region when resumed without the flag (the files say eu-west-2).
    let mut command = shipped_runner(env, project.path());
    command.args(["resume", &run, "--until", "push"]);
    let resumed = run_blocking(command).await;
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let record = status_json(env, project.path(), &run);
    assert_eq!(record["context"]["region"], "us-east-1", "{record}");
    let push = stage(&record, "push");
    let digest = push["outputs"]["digest"].as_str().unwrap();
    assert!(
        push["outputs"]["image"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "{EMULATOR_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/"
            )),
        "{push}"
    );
    // ministack's registry port serves every region's repositories under one path, so the
    // image is checked there; the region shows in the ECR host the run recorded above.
    let (status, served) = head_manifest(&ecr_endpoint(env), "envelope-api", "v1.0.0").await;
    assert_eq!(status, 200);
    assert_eq!(served.as_deref(), Some(digest));
}

#[tokio::test]
async fn the_shipped_approval_notice_reaches_a_subscriber_of_the_topic() {
    let Some((env, _docker)) = parts("shipped approval notice").await else {
        return;
    };
    let config = aws(env, "eu-west-2").await;
    ensure_repository(&config, "envelope-api").await;
    // The team's topic (the shipped pipeline names it) with an SQS queue subscribed to it.
    let subscriber = Subscriber::subscribe(&config, "envelope-deploy-approval").await;
    let topic = subscriber.topic.clone();
    assert_eq!(
        topic,
        format!("arn:aws:sns:eu-west-2:{EMULATOR_ACCOUNT}:envelope-deploy-approval")
    );

    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = shipped_project(&url);
    let mut command = shipped_runner(env, project.path());
    command.args(["run", "api", "--ref", "v1.0.0", "--until", "approval"]);
    let output = run_blocking(command).await;
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    assert_no_canary(&output);
    let run = run_id(&output);
    assert!(!text(&output).contains("warning"), "{}", text(&output));

    // Other runs publish to the same topic: only this run's notice counts.
    let messages = subscriber.messages_containing(&run).await;
    let message = messages
        .first()
        .expect("the approval notice reached the queue");
    assert!(
        message.contains("Pipeline api is waiting for approval"),
        "{message}"
    );
    assert!(
        message.contains(&format!("envelope-runner approve {run}")),
        "{message}"
    );
    let record = status_json(env, project.path(), &run);
    assert!(
        stage(&record, "approval")["outputs"]["notified"]
            .as_str()
            .unwrap()
            .contains(&format!("sns:{topic}"))
    );
}

#[tokio::test]
async fn a_notice_that_cannot_be_sent_is_a_warning_in_every_mode() {
    let Some((env, _docker)) = parts("unsent approval notice").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let missing = unique("no-such-topic");
    let stages = format!(
        "  - approval:\n      timeout: 1h\n      notify:\n        sns: arn:aws:sns:${{aws.region}}:${{aws.account}}:{missing}\n"
    );
    let project = crate::support::project_with(
        &url,
        env.registry(),
        &format!("e2e/{}", unique("unsent")),
        "",
        &stages,
    );
    let summary = project.path().join("summary.md");
    let mut command = runner(env, project.path());
    command
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_OUTPUT", project.path().join("outputs"))
        .args(["run", "hello", "--ref", "v1.0.0", "--until", "approval"]);
    let output = run_blocking(command).await;
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let all = text(&output);
    let warnings: Vec<&str> = all
        .lines()
        .filter(|line| line.contains("approvers were not told"))
        .collect();
    assert_eq!(warnings.len(), 1, "{all}");
    let warning = warnings[0];
    assert!(
        warning.starts_with("::warning title=envelope-runner%3A approval::"),
        "{warning}"
    );
    assert!(
        warning.contains(&format!(
            "arn:aws:sns:eu-west-2:{EMULATOR_ACCOUNT}:{missing}"
        )) && warning.contains("was not sent ("),
        "{warning}"
    );
    assert!(warning.len() < 400, "one readable line: {warning}");
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert!(summary.contains("### Warnings"), "{summary}");
    assert!(summary.contains("approvers were not told"), "{summary}");

    // The run's record keeps it, for `status` and a later job's summary.
    let record = status_json(env, project.path(), &run_id(&output));
    let kept = stage(&record, "approval")["outputs"]["warnings"][0]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(kept.contains("approvers were not told"), "{record}");
}

#[tokio::test]
async fn without_an_answer_from_sts_the_run_stops_before_docker() {
    let Some((env, _docker)) = parts("no sts answer").await else {
        return;
    };
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = shipped_project(&url);
    // Nothing listens there: every AWS call, STS first, is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut command = shipped_runner(env, project.path());
    command
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_MAX_ATTEMPTS", "1")
        .args(["run", "api", "--ref", "v1.0.0", "--until", "push"]);
    let output = run_blocking(command).await;
    let all = text(&output);
    assert_eq!(output.status.code(), Some(6), "{all}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error_lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{all}");
    assert!(
        error_lines[0].contains("cannot learn the AWS account")
            && error_lines[0].contains("aws: { account:"),
        "{all}"
    );
    assert!(!all.contains("<aws.account>"), "{all}");
    assert!(!all.contains("[build]"), "nothing was built:\n{all}");
}
