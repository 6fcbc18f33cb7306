//! What goes into and out of a buildspec: exported variables captured after the last phase,
//! secret values masked and kept from the image build, CodeBuild's variables, and notices for
//! settings that do not apply.

use std::collections::BTreeMap;

use envelope_runner::exec::buildspec::{CodebuildFacts, codebuild_variables};
use envelope_runner::secret::Secret;
use tempfile::TempDir;

use super::{context, run_in_temp, run_with};

#[tokio::test]
async fn exported_variables_are_captured_after_the_last_phase() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nenv:\n  exported-variables: [IMAGE_TAG, PLAIN, NEVER_SET]\n\
         phases:\n  pre_build:\n    commands: ['export IMAGE_TAG=early']\n\
         \x20 post_build:\n    commands: ['export IMAGE_TAG=\"v1-$(echo abc)\"', 'PLAIN=\"two words\"']\n",
    )
    .await;
    assert_eq!(
        run.outcome.exported,
        BTreeMap::from([
            ("IMAGE_TAG".to_string(), "v1-abc".to_string()),
            ("PLAIN".to_string(), "two words".to_string()),
        ])
    );
    assert!(
        run.log.entries().contains(
            &"notice exported variable `NEVER_SET` is not set at the end of the build; it is left out"
                .to_string()
        ),
        "{:?}",
        run.log.entries()
    );
    // The image build sees the values of that moment.
    assert_eq!(run.image_build_env.unwrap()["IMAGE_TAG"], "early");
}

#[tokio::test]
async fn secret_values_are_masked_in_output_and_kept_from_the_image_build() {
    let source = TempDir::new().unwrap();
    let mut context = context(source.path());
    context
        .secret_env
        .insert("DB_PASSWORD".into(), Secret::new("s3cr3t-Value-42"));
    let run = run_with(
        "version: 0.2\nenv:\n  exported-variables: [COPY]\nphases:\n  build:\n    commands:\n\
         \x20     - echo \"password is $DB_PASSWORD\"\n\
         \x20     - echo \"$DB_PASSWORD\" >&2\n\
         \x20     - printf 'x%sx\\n' \"$DB_PASSWORD\"\n\
         \x20     - export COPY=\"$DB_PASSWORD\"\n\
         \x20     - test \"$DB_PASSWORD\" = s3cr3t-Value-42 && false\n",
        &context,
        None,
    )
    .await;
    assert_eq!(
        run.log.lines(),
        ["password is [REDACTED]", "[REDACTED]", "x[REDACTED]x"]
    );
    for entry in run.log.entries() {
        assert!(!entry.contains("s3cr3t"), "{entry}");
    }
    let build = run.phase("build");
    assert_eq!(
        build.failed_command.as_deref(),
        Some("test \"$DB_PASSWORD\" = [REDACTED] && false")
    );
    assert!(!build.error.as_deref().unwrap().contains("s3cr3t"));
    assert!(
        run.outcome.exported.is_empty(),
        "a secret is never stored as an exported variable"
    );
    assert!(run.image_build_env.is_none());

    // The image build gets the environment without the secret variables.
    let run = run_with(
        "version: 0.2\nphases:\n  build:\n    commands: ['test -n \"$DB_PASSWORD\"']\n",
        &context,
        None,
    )
    .await;
    assert!(run.outcome.succeeded, "{:?}", run.outcome);
    let env = run.image_build_env.unwrap();
    assert!(!env.contains_key("DB_PASSWORD"));
}

#[tokio::test]
async fn codebuild_variables_are_visible_to_commands() {
    let source = TempDir::new().unwrap();
    let mut context = context(source.path());
    context.env = codebuild_variables(&CodebuildFacts {
        source_dir: source.path(),
        resolved_source_version: "4f2c0d7e9b1a8c3d5e6f7a8b9c0d1e2f3a4b5c6d",
        build_number: 17,
        project: "api",
        run_id: "01JABCDEF",
        start_time_ms: 1_750_000_000_000,
        initiator: "github-actions",
        webhook_trigger: Some("tag/v1.2.3"),
    });
    context
        .env
        .insert("PIPELINE_ONLY".into(), "from the pipeline".into());
    let run = run_with(
        "version: 0.2\nenv:\n  variables:\n    PIPELINE_ONLY: from the buildspec\n    PORT: 8080\n\
         phases:\n  build:\n    commands:\n\
         \x20     - echo \"$CODEBUILD_RESOLVED_SOURCE_VERSION\"\n\
         \x20     - test \"$CODEBUILD_SRC_DIR\" = \"$PWD\" && echo src dir is the working directory\n\
         \x20     - echo \"#$CODEBUILD_BUILD_NUMBER $CODEBUILD_BUILD_ID $CODEBUILD_START_TIME\"\n\
         \x20     - echo \"$CODEBUILD_INITIATOR $CODEBUILD_BUILD_SUCCEEDING ${CODEBUILD_WEBHOOK_TRIGGER#tag/}\"\n\
         \x20     - echo \"$PIPELINE_ONLY $PORT\"\n",
        &context,
        None,
    )
    .await;
    assert_eq!(
        run.log.lines(),
        [
            "4f2c0d7e9b1a8c3d5e6f7a8b9c0d1e2f3a4b5c6d",
            "src dir is the working directory",
            "#17 api:01JABCDEF 1750000000000",
            "github-actions 1 v1.2.3",
            "from the pipeline 8080",
        ]
    );
}

#[tokio::test]
async fn settings_that_do_not_apply_are_noticed() {
    let (_source, run) = run_in_temp(
        "version: 0.2\nrun-as: builder\nphases:\n  install:\n    runtime-versions:\n      php: 8.3\n    commands: [echo hi]\n",
    )
    .await;
    let notices: Vec<String> = run
        .log
        .entries()
        .into_iter()
        .filter(|entry| entry.starts_with("notice "))
        .collect();
    assert_eq!(
        notices,
        [
            "notice run-as `builder` is not applied: commands run as the runner's own user",
            "notice runtime-versions are not applicable: envelope-runner uses the tools on this machine (php 8.3 requested)",
        ]
    );
    assert!(run.outcome.succeeded);
}
