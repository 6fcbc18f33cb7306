//! The end of a run told to the pipeline's `notify:` targets, through the binary: a deployed
//! release's summary POSTed once (the process that finishes a run killed after telling does not
//! tell it again) with its GitHub Actions workflow link; webhooks that answer 500 or never answer change neither the exit code nor
//! the outcome, cost at most their timeout, and never show their URL's path.
//! (A rolled-back release told to SNS and Slack: `ecs/release.rs`.)

use crate::support::webhook::{Answer, Receiver};
use crate::support::{example_app, project_with, run_id, runner, text};
use envelope_runner::run::{RunId, RunStatus};
use envelope_tests::env::{TestEnv, parts, unique};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_deployed_release_is_told_once_with_its_workflow_run_link() {
    let Some((env, _docker)) = parts("run notification on success").await else {
        return;
    };
    let hook = Receiver::start(Answer::Status(204)).await;
    let path = "/deploys/T0/hook-secret-canary";
    let app = example_app();
    let url = format!("file://{}", app.bare_root.join("hello.git").display());
    let project = project_with(
        &url,
        env.registry(),
        &format!("e2e/{}", unique("told")),
        &format!(
            "notify:\n  on: [success]\n  webhook: {}{path}\n",
            hook.origin
        ),
        "",
    );
    let job = |command: &mut std::process::Command| {
        command
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_REPOSITORY", "acme/deploy")
            .env("GITHUB_RUN_ID", "4242")
            .env("GITHUB_STEP_SUMMARY", project.path().join("summary.md"))
            .env("GITHUB_OUTPUT", project.path().join("outputs"));
    };
    let mut command = runner(env, project.path());
    job(&mut command);
    command.args(["run", "hello", "--ref", "v1.0.0"]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(!all.contains("hook-secret-canary"), "{all}");
    let run = run_id(&output);

    let posts = hook.bodies(path);
    assert_eq!(posts.len(), 1, "{:?}", hook.received());
    let notice: serde_json::Value = serde_json::from_str(&posts[0]).unwrap();
    assert_eq!(notice["outcome"], "success", "{notice}");
    assert_eq!(notice["status"], "succeeded", "{notice}");
    assert_eq!(notice["pipeline"], "hello");
    assert_eq!(notice["run"], run.as_str());
    assert_eq!(notice["release"], "v1.0.0");
    assert_eq!(
        notice["link"], "https://github.com/acme/deploy/actions/runs/4242",
        "{notice}"
    );
    assert!(
        notice["images"][0].as_str().unwrap().contains("@sha256:"),
        "{notice}"
    );
    assert_eq!(
        notice["commit"].as_str().map(str::len),
        Some(40),
        "{notice}"
    );

    // The run's events say where it went (host only); the process that finishes it again
    // does not tell it a second time.
    let logs = runner(env, project.path())
        .args(["logs", &run])
        .output()
        .unwrap();
    let logs = text(&logs);
    assert!(
        logs.contains(&format!(
            "notified how the run ended (success): webhook:{}",
            hook.origin
        )),
        "{logs}"
    );
    assert!(!logs.contains("hook-secret-canary"), "{logs}");
    // A process killed after telling, before the run's status was final, leaves it running:
    // the process that finishes it does not tell it again.
    let store = envelope_runner::store::open(
        &project
            .path()
            .join(".envelope/state.db")
            .display()
            .to_string(),
    )
    .await
    .unwrap();
    store
        .set_run_status(&RunId(run.clone()), RunStatus::Running, None)
        .await
        .unwrap();
    drop(store);
    let mut again = runner(env, project.path());
    job(&mut again);
    again.args(["resume", &run]);
    let again = tokio::task::spawn_blocking(move || again.output().unwrap())
        .await
        .unwrap();
    let again_text = text(&again);
    assert_eq!(again.status.code(), Some(0), "{again_text}");
    assert!(again_text.contains("succeeded"), "{again_text}");
    assert_eq!(
        hook.bodies(path).len(),
        1,
        "told once: {:?}",
        hook.received()
    );
}

#[tokio::test]
async fn notifications_that_fail_or_hang_leave_the_exit_code_alone() {
    let Some((env, _docker)) = parts("run notification failing").await else {
        return;
    };
    let refusing = Receiver::start(Answer::Status(500)).await;
    let hanging = Receiver::start(Answer::Hang).await;
    let slack_url = format!("{}/services/T0/B0/slack-canary", hanging.origin);
    // The same failing run without notifications, for the exit code it must keep.
    let (_plain, plain, _) = failing_run(env, "", slack_url.clone()).await;
    let expected = plain.status.code();
    assert_ne!(expected, Some(0), "{}", text(&plain));
    let top = format!(
        "notify:\n  webhook: {}/hooks/refused-canary\n  slack_env: ENVELOPE_TEST_SLACK_URL\n",
        refusing.origin
    );
    let refusing_origin = refusing.origin.clone();
    let hanging_origin = hanging.origin.clone();
    let (_project, output, took) = failing_run(env, &top, slack_url).await;
    let all = text(&output);
    assert_eq!(output.status.code(), expected, "{all}");
    assert_eq!(refusing.received().len(), 1, "the failure was sent: {all}");
    assert_eq!(hanging.received().len(), 1, "and reached Slack: {all}");
    assert!(
        took < Duration::from_secs(40),
        "a webhook that never answers costs its timeout (10s), not more: {took:?}"
    );
    let warnings: Vec<&str> = all
        .lines()
        .filter(|line| line.contains("nobody was told how the run ended"))
        .collect();
    assert_eq!(warnings.len(), 2, "{all}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains(&refusing_origin) && w.contains("500")),
        "{all}"
    );
    assert!(
        warnings.iter().any(|w| w.contains(&hanging_origin)),
        "{all}"
    );
    for canary in ["refused-canary", "slack-canary"] {
        assert!(!all.contains(canary), "{canary} shown:\n{all}");
    }
}

/// A run whose source does not exist (it fails at once, before Docker), with `top` in its
/// pipeline and `slack_url` in `ENVELOPE_TEST_SLACK_URL`: its project, output and duration.
async fn failing_run(
    env: &'static TestEnv,
    top: &str,
    slack_url: String,
) -> (tempfile::TempDir, std::process::Output, Duration) {
    let missing = format!("file:///nonexistent/{}.git", unique("repo"));
    let project = project_with(
        &missing,
        env.registry(),
        &format!("e2e/{}", unique("untold")),
        top,
        "",
    );
    let mut command = runner(env, project.path());
    command
        .env("ENVELOPE_TEST_SLACK_URL", slack_url)
        .args(["run", "hello", "--ref", "v1.0.0"]);
    let started = Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    (project, output, started.elapsed())
}
