//! A pipeline with `environments:`: it matches the published schema, plans in each
//! environment with that environment's cluster, services, account and approval rule, and the
//! command line refuses an environment the pipeline does not declare.

use envelope_runner::pipeline;
use envelope_runner::plan::{self, PlanContext};
use std::process::Command;

fn project() -> std::path::PathBuf {
    crate::fixtures().join("environments")
}

fn plan_text(environment: Option<&str>) -> String {
    let mut compiled = pipeline::load(&project().join("pipelines/api.yaml"))
        .unwrap_or_else(|d| panic!("{}", d.render(false)))
        .in_environment(environment)
        .unwrap();
    compiled.file.path = "pipelines/api.yaml".into();
    let context = PlanContext {
        git_ref: "v1.2.3".into(),
        sha: Some("0123456789abcdef0123456789abcdef01234567".into()),
        ..PlanContext::default()
    };
    plan::plan(&compiled, &context).unwrap().render_text()
}

#[test]
fn the_schema_accepts_environments_and_rejects_unknown_keys_in_one() {
    let schema = pipeline::schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let text = std::fs::read_to_string(project().join("pipelines/api.yaml")).unwrap();
    let tree = pipeline::yaml::parse(&text).unwrap();
    assert!(validator.is_valid(&tree.to_json()));
    let bad = pipeline::yaml::parse(
        "source: {repository: a/b}\nenvironments: {prod: {clustr: x}}\nstages:\n  - build: {image: x}\n",
    )
    .unwrap();
    assert!(!validator.is_valid(&bad.to_json()));
}

#[test]
fn staging_plans_its_own_cluster_services_and_account_without_the_gate() {
    let staging = plan_text(Some("staging"));
    insta::assert_snapshot!("environment_staging_plan", staging);
    assert!(!staging.contains("envelope-prod"), "{staging}");
    assert!(!staging.contains("approval"), "{staging}");
    // The registry follows the environment's account.
    assert!(
        staging.contains("210987654321.dkr.ecr.eu-west-2"),
        "{staging}"
    );
}

#[test]
fn an_empty_environment_plans_the_stages_as_written() {
    let as_written = plan_text(None);
    let prod = plan_text(Some("prod"));
    assert_eq!(
        prod.replacen("pipeline api in environment prod (", "pipeline api (", 1),
        as_written
    );
}

#[test]
fn plan_refuses_an_environment_the_pipeline_does_not_declare() {
    let output = Command::new(env!("CARGO_BIN_EXE_envelope-runner"))
        .current_dir(project())
        .env("NO_COLOR", "1")
        .args(["plan", "api", "--ref", "v1.2.3", "--env", "stagin"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: pipeline `api` has no environment `stagin`; did you mean `staging`?\n"
    );
}
