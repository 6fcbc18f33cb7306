//! What an approval gate tells approvers (SNS text and webhook JSON) once it knows what the
//! release changes on ECS and which checks run after the deploy; and `diff`'s refusals of bad
//! input, before any AWS call.

use envelope_runner::exec::notify::{ApprovalNotice, ServiceChange};
use std::process::Command;

const IMAGE: &str = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/envelope-api@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

fn notice() -> ApprovalNotice {
    ApprovalNotice {
        pipeline: "api".into(),
        run: "01jqexample0000000000000000".into(),
        stage: "approval".into(),
        git_ref: "v1.4.0".into(),
        release: Some("v1.4.0".into()),
        commit: None,
        images: vec![IMAGE.into()],
        migration: Some(vec!["php".into(), "artisan".into(), "migrate".into(), "--force".into()]),
        services: vec![ServiceChange {
            service: "envelope-prod-api".into(),
            changes: vec!["container api: image …@sha256:1111 → …@sha256:9f86".into()],
        }],
        diff: vec![
            "migrate `migrate`, service envelope-prod-api (envelope-api:41):".into(),
            "  container api: image …@sha256:1111 → …@sha256:9f86".into(),
            "deploy `deploy`, service envelope-prod-api (envelope-api:41):".into(),
            "  container api: image …@sha256:1111 → …@sha256:9f86".into(),
            "deploy `deploy`, service envelope-prod-worker: diff unavailable: ECS has no service `envelope-prod-worker` in cluster `envelope-prod`".into(),
        ],
        checks: vec![
            "after `deploy`: GET https://api.envelope.host/up must answer 200 with a body containing \"Application up\" (retried every 5s for up to 5m)".into(),
        ],
        approve_with: "envelope-runner approve 01jqexample0000000000000000".into(),
        expires_at: "2026-11-26T10:00:00Z".into(),
    }
}

#[test]
fn the_notice_shows_the_diff_and_the_checks() {
    insta::assert_snapshot!("approval_notice_text", notice().text());
    insta::assert_json_snapshot!("approval_notice_json", notice());
}

#[test]
fn a_notice_without_a_diff_reads_as_before() {
    let old = ApprovalNotice {
        diff: Vec::new(),
        checks: Vec::new(),
        ..notice()
    };
    let text = old.text();
    assert!(
        text.contains("envelope-prod-api: container api: image"),
        "{text}"
    );
    assert!(
        !text.contains("Changes:") && !text.contains("Checks"),
        "{text}"
    );
    let json = serde_json::to_value(&old).unwrap();
    assert!(json.get("diff").is_none() && json.get("checks").is_none());
}

fn diff(args: &[&str], store: &std::path::Path) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_envelope-runner"))
        .current_dir(crate::workspace_root())
        .env("NO_COLOR", "1")
        .arg("diff")
        .args(args)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn diff_refuses_a_tag_for_an_image_and_a_pipeline_without_a_pushed_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("state.db");
    let (code, stderr) = diff(
        &["api", "--image", "registry.example/envelope-api:v1"],
        &store,
    );
    assert_eq!(code, Some(2), "{stderr}");
    insta::assert_snapshot!("diff_image_by_tag", stderr);
    let (code, stderr) = diff(&["api"], &store);
    assert_eq!(code, Some(2), "{stderr}");
    insta::assert_snapshot!("diff_nothing_pushed", stderr);
    let (code, stderr) = diff(&["api", "01jqnosuchrun00000000000000"], &store);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("no run 01jqnosuchrun00000000000000 in the store"),
        "{stderr}"
    );
}
