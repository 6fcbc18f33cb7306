//! The phases run in CodeBuild's order around the image build; a failure skips what CodeBuild
//! skips (or, with `on-failure: CONTINUE`, does not), `finally` runs after a failed command,
//! and `post_build` runs after a failed build.

use envelope_runner::exec::buildspec::PhaseStatus;
use tempfile::TempDir;

use super::{context, run_in_temp, run_with, statuses};

#[tokio::test]
async fn phases_run_in_order_around_the_image_build() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n\
         \x20 post_build:\n    commands: [echo four]\n\
         \x20 build:\n    commands: [echo three]\n    finally: [echo three-finally]\n\
         \x20 install:\n    commands: [echo one]\n\
         \x20 pre_build:\n    commands: [echo two]\n",
    )
    .await;
    let entries: Vec<String> = run
        .log
        .entries()
        .into_iter()
        .filter(|entry| !entry.starts_with("$ "))
        .collect();
    assert_eq!(
        entries,
        [
            "start install",
            "one",
            "end install succeeded",
            "start pre_build",
            "two",
            "end pre_build succeeded",
            "start build",
            "three",
            "image build",
            "three-finally",
            "end build succeeded",
            "start post_build",
            "four",
            "end post_build succeeded",
        ]
    );
    assert!(run.outcome.succeeded);
    assert_eq!(
        run.statuses(),
        statuses(&[
            ("install", "ok"),
            ("pre_build", "ok"),
            ("build", "ok"),
            ("post_build", "ok")
        ])
    );
}

#[tokio::test]
async fn without_a_build_phase_the_image_build_runs_between_pre_build_and_post_build() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  pre_build:\n    commands: [echo before]\n\
         \x20 post_build:\n    commands: [echo after]\n",
    )
    .await;
    assert_eq!(
        run.log
            .entries()
            .into_iter()
            .filter(|entry| !entry.starts_with("$ ") && !entry.starts_with("start "))
            .collect::<Vec<_>>(),
        [
            "before",
            "end pre_build succeeded",
            "image build",
            "end build succeeded",
            "after",
            "end post_build succeeded"
        ]
    );
    assert!(run.outcome.succeeded);
}

#[tokio::test]
async fn finally_runs_after_a_failed_command() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  build:\n    commands:\n      - echo first\n\
         \x20     - sh -c 'exit 7'\n      - echo never\n\
         \x20   finally:\n      - echo \"finally ran, succeeding=$CODEBUILD_BUILD_SUCCEEDING\"\n",
    )
    .await;
    assert_eq!(
        run.log.lines(),
        ["first", "finally ran, succeeding=0"],
        "{:?}",
        run.log.entries()
    );
    assert!(!run.outcome.succeeded);
    let build = run.phase("build");
    assert_eq!(build.status, PhaseStatus::Failed);
    assert_eq!(build.failed_command.as_deref(), Some("sh -c 'exit 7'"));
    assert_eq!(build.exit_code, Some(7));
    assert_eq!(
        build.error.as_deref(),
        Some("`sh -c 'exit 7'` exited with status 7")
    );
    assert!(
        run.image_build_env.is_none(),
        "no image build after a failed command"
    );
}

#[tokio::test]
async fn a_failure_in_finally_fails_the_phase() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  pre_build:\n    commands: [echo ok]\n    finally: ['false', echo never]\n\
         \x20 build:\n    commands: [echo skipped]\n",
    )
    .await;
    assert_eq!(run.log.lines(), ["ok"]);
    assert_eq!(
        run.statuses(),
        statuses(&[("pre_build", "failed"), ("build", "skipped")])
    );
    assert_eq!(
        run.phase("pre_build").failed_command.as_deref(),
        Some("false")
    );
}

#[tokio::test]
async fn on_failure_continue_runs_the_next_phase_and_fails_the_build() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  install:\n    on-failure: CONTINUE\n    commands: ['false', echo never]\n\
         \x20 pre_build:\n    commands: ['echo \"pre_build runs, succeeding=$CODEBUILD_BUILD_SUCCEEDING\"']\n\
         \x20 build:\n    commands: [echo build runs]\n",
    )
    .await;
    assert_eq!(
        run.log.lines(),
        ["pre_build runs, succeeding=0", "build runs"]
    );
    assert!(!run.outcome.succeeded);
    assert_eq!(
        run.statuses(),
        statuses(&[("install", "failed"), ("pre_build", "ok"), ("build", "ok")])
    );
    assert_eq!(
        run.outcome.first_failure().map(|phase| phase.name.as_str()),
        Some("install")
    );
}

#[tokio::test]
async fn a_failing_install_skips_every_later_phase_and_the_image_build() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  install:\n    commands: [echo installing, 'false']\n    finally: [echo install-finally]\n\
         \x20 pre_build:\n    commands: [echo pre_build]\n\
         \x20 build:\n    commands: [echo build]\n\
         \x20 post_build:\n    commands: [echo post_build]\n",
    )
    .await;
    assert_eq!(run.log.lines(), ["installing", "install-finally"]);
    assert!(
        run.image_build_env.is_none(),
        "the image build must not run"
    );
    assert!(!run.outcome.succeeded);
    assert_eq!(
        run.statuses(),
        statuses(&[
            ("install", "failed"),
            ("pre_build", "skipped"),
            ("build", "skipped"),
            ("post_build", "skipped")
        ])
    );
    assert!(
        run.log
            .entries()
            .contains(&"end post_build skipped".to_string()),
        "{:?}",
        run.log.entries()
    );
}

#[tokio::test]
async fn a_failing_build_still_runs_post_build_with_succeeding_0() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nphases:\n  install:\n    commands: ['echo \"install: $CODEBUILD_BUILD_SUCCEEDING\"']\n\
         \x20 build:\n    commands: ['false']\n\
         \x20 post_build:\n    commands: ['echo \"post_build: $CODEBUILD_BUILD_SUCCEEDING\"']\n",
    )
    .await;
    assert_eq!(run.log.lines(), ["install: 1", "post_build: 0"]);
    assert!(!run.outcome.succeeded);
    assert_eq!(
        run.statuses(),
        statuses(&[("install", "ok"), ("build", "failed"), ("post_build", "ok")])
    );
}

#[tokio::test]
async fn a_failed_image_build_is_a_build_phase_failure() {
    let source = TempDir::new().unwrap();
    let run = run_with(
        "version: 0.2\nphases:\n  build:\n    commands: [echo commands]\n    finally: ['echo \"finally: $CODEBUILD_BUILD_SUCCEEDING\"']\n\
         \x20 post_build:\n    commands: ['echo \"post_build: $CODEBUILD_BUILD_SUCCEEDING\"']\n",
        &context(source.path()),
        Some("Dockerfile:3: unknown instruction RUNN"),
    )
    .await;
    assert_eq!(run.log.lines(), ["commands", "finally: 0", "post_build: 0"]);
    assert!(!run.outcome.succeeded);
    let build = run.phase("build");
    assert_eq!(build.status, PhaseStatus::Failed);
    assert_eq!(build.failed_command, None);
    assert_eq!(
        build.error.as_deref(),
        Some("the image build failed: Dockerfile:3: unknown instruction RUNN")
    );
    assert_eq!(run.phase("post_build").status, PhaseStatus::Succeeded);
}
