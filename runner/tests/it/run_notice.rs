//! The notification a run's end sends (the pipeline's top-level `notify:`): which ending a run
//! counts as, and the plain text, JSON and Slack message people read.

use envelope_runner::exec::run_notice::{Ending, RunNotice, ending_of};
use envelope_runner::pipeline::model::RunEnding;
use envelope_runner::run::{
    RunId, RunRecord, RunStatus, RunTrigger, StageKind, StageOutputs, StageRecord, StageStatus,
    TriggerKind,
};
use std::collections::BTreeMap;
use std::time::Duration;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const IMAGE: &str = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/envelope-api@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn stage(name: &str, kind: StageKind, status: StageStatus, outputs: StageOutputs) -> StageRecord {
    StageRecord {
        name: name.into(),
        kind,
        status,
        started_at: None,
        finished_at: None,
        outputs,
        error: None,
    }
}

/// A release run of `api` that pushed one image and reached its deploy stage, which ended
/// `deploy` (putting back `rolled_back`).
fn release_run(deploy: StageStatus, rolled_back: &[(&str, &str)]) -> RunRecord {
    RunRecord {
        id: RunId("01jqexample0000000000000000".into()),
        pipeline: "api".into(),
        status: RunStatus::Running,
        trigger: RunTrigger {
            kind: TriggerKind::Cli { user: "ada".into() },
            git_ref: "v1.4.0".into(),
            sha: None,
            tag: Some("v1.4.0".into()),
        },
        created_at: "2026-12-07T05:00:00Z".into(),
        finished_at: None,
        context: BTreeMap::new(),
        stages: vec![
            stage(
                "source",
                StageKind::Source,
                StageStatus::Succeeded,
                StageOutputs {
                    sha: Some(SHA.into()),
                    ..StageOutputs::default()
                },
            ),
            stage(
                "build",
                StageKind::Build,
                StageStatus::Succeeded,
                StageOutputs::default(),
            ),
            stage(
                "push",
                StageKind::Push,
                StageStatus::Succeeded,
                StageOutputs {
                    image: Some(IMAGE.into()),
                    ..StageOutputs::default()
                },
            ),
            stage(
                "deploy",
                StageKind::Deploy,
                deploy,
                StageOutputs {
                    rolled_back: rolled_back
                        .iter()
                        .map(|(service, revision)| ((*service).into(), (*revision).into()))
                        .collect(),
                    ..StageOutputs::default()
                },
            ),
        ],
    }
}

const DEPLOY_FAILED: &str = "the deploy failed:\n  envelope-prod-api: 3 tasks stopped (Essential container in task exited) <exit 1> & more\nRolled back every service of the release to the revision it ran before:\n  envelope-prod-api: back on envelope-prod-api:41 (rollback completed)";

fn notice(
    record: &RunRecord,
    status: RunStatus,
    stage: Option<&str>,
    error: Option<&str>,
) -> RunNotice {
    RunNotice::of(
        record,
        Ending {
            outcome: ending_of(record, status).expect("an ending that is told"),
            status,
            stage,
            error,
            duration: Duration::from_secs(754),
            link: Some("https://deploy.example.com/runs/01jqexample0000000000000000".into()),
            release: None,
        },
    )
}

#[test]
fn each_ending_counts_as_failure_rollback_or_success() {
    let rolled = release_run(
        StageStatus::Failed,
        &[("envelope-prod-api", "envelope-prod-api:41")],
    );
    let failed = release_run(StageStatus::Failed, &[]);
    let deployed = release_run(StageStatus::Succeeded, &[]);
    let mut redeploy = deployed.clone();
    redeploy.trigger.kind = TriggerKind::Rollback {
        from_run: RunId("01jqearlier000000000000000".into()),
    };
    let cases = [
        (&rolled, RunStatus::Failed, Some(RunEnding::Rollback)),
        (&failed, RunStatus::Failed, Some(RunEnding::Failure)),
        (&failed, RunStatus::Rejected, Some(RunEnding::Failure)),
        (&deployed, RunStatus::Succeeded, Some(RunEnding::Success)),
        (&redeploy, RunStatus::Succeeded, Some(RunEnding::Rollback)),
        (&redeploy, RunStatus::Failed, Some(RunEnding::Failure)),
        (&deployed, RunStatus::Waiting, None),
        (&deployed, RunStatus::Cancelled, None),
        (&deployed, RunStatus::Superseded, None),
    ];
    for (record, status, expected) in cases {
        assert_eq!(
            ending_of(record, status),
            expected,
            "{status:?} of a {:?} run",
            record.trigger.kind
        );
    }
}

#[test]
fn a_rolled_back_release() {
    let record = release_run(
        StageStatus::Failed,
        &[("envelope-prod-api", "envelope-prod-api:41")],
    );
    let notice = notice(
        &record,
        RunStatus::Failed,
        Some("deploy"),
        Some(DEPLOY_FAILED),
    );
    assert_eq!(
        notice.subject(),
        "envelope-runner: api v1.4.0 failed at `deploy` and was rolled back"
    );
    insta::assert_snapshot!("rolled_back_text", notice.text());
    insta::assert_json_snapshot!("rolled_back_slack", notice.slack());
    insta::assert_json_snapshot!("rolled_back_webhook", notice);
}

#[test]
fn a_deployed_release() {
    let record = release_run(StageStatus::Succeeded, &[]);
    let notice = notice(&record, RunStatus::Succeeded, None, None);
    assert_eq!(notice.subject(), "envelope-runner: api v1.4.0 deployed");
    insta::assert_snapshot!("deployed_text", notice.text());
    insta::assert_json_snapshot!("deployed_slack", notice.slack());
}

#[test]
fn a_rejected_release_and_a_long_reason() {
    let mut record = release_run(StageStatus::Skipped, &[]);
    record.stages[0].outputs.sha = None;
    let long = "x".repeat(5_000);
    let notice = notice(&record, RunStatus::Rejected, Some("approval"), Some(&long));
    assert_eq!(notice.headline(), "api v1.4.0 rejected at `approval`");
    assert_eq!(notice.commit, None);
    let slack = notice.slack().to_string();
    assert!(slack.len() < 3_000, "Slack refuses long sections: {slack}");
    assert!(notice.text().contains("commit: -"), "{}", notice.text());
    let subject = RunNotice {
        pipeline: "p".repeat(200),
        ..notice
    }
    .subject();
    assert_eq!(
        subject.chars().count(),
        100,
        "SNS subjects stop at 100: {subject}"
    );
}

#[test]
fn the_plan_names_where_the_end_of_a_run_is_told_without_webhook_paths() {
    let project = tempfile::tempdir().unwrap();
    std::fs::create_dir(project.path().join("pipelines")).unwrap();
    let path = project.path().join("pipelines/api.yaml");
    std::fs::write(
        &path,
        "source:\n  repository: epactltd/api\n  tags: [\"v*\"]\naws:\n  region: eu-west-2\n  account: \"123456789012\"\n\
         notify:\n  on: [success, failure, success]\n  sns: arn:aws:sns:${aws.region}:${aws.account}:envelope-deploys\n  \
         slack_env: SLACK_WEBHOOK_URL\n  webhook: https://hooks.example.com/T0/secret-path\n\
         stages:\n  - build:\n      image: envelope-api\n",
    )
    .unwrap();
    let compiled = envelope_runner::pipeline::load(&path).unwrap();
    let context = envelope_runner::plan::PlanContext {
        git_ref: "v1.4.0".into(),
        ..Default::default()
    };
    let plan = envelope_runner::plan::plan(&compiled, &context).unwrap();
    let notify = plan.notify.clone().expect("`notify` planned");
    assert_eq!(notify.on, [RunEnding::Failure, RunEnding::Success]);
    assert_eq!(
        notify.sns.as_deref(),
        Some("arn:aws:sns:eu-west-2:123456789012:envelope-deploys")
    );
    let text = plan.render_text();
    assert!(
        text.contains(
            "notify    on failure, success: arn:aws:sns:eu-west-2:123456789012:envelope-deploys, $SLACK_WEBHOOK_URL (slack), https://hooks.example.com (webhook)"
        ),
        "{text}"
    );
    let json = serde_json::to_string(&plan).unwrap();
    assert!(!json.contains("secret-path"), "{json}");
    assert!(!text.contains("secret-path"), "{text}");
}
