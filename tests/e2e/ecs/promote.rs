//! Environments and promotion through the binary, on two clusters of ministack: a release
//! runs in `staging` (its own cluster and service names, no approval) with a `verify:` check against a real HTTP
//! server on 127.0.0.1, then `promote --from staging --to prod` deploys the very digest staging
//! verified to prod's cluster without building, through prod's approval gate and migration.

use std::path::Path;

use crate::support::ecs::{
    Cluster, ROLES, api_project, app_repository, parts, pipeline_runner, record_of,
};
use crate::support::health_endpoint::HealthEndpoint;
use crate::support::{run_id, stage, text};

/// Gives the project's `api` pipeline a `staging` environment on `staging` (its own service
/// names, no approval) and a `prod` one on the cluster its stages name, and a deploy `verify:`
/// check of `up`.
fn with_environments(project: &Path, staging: &Cluster, up: &str) {
    let file = project.join("pipelines/api.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    let services: String = ROLES
        .iter()
        .map(|role| format!("      envelope-prod-{role}: envelope-staging-{role}\n"))
        .collect();
    let environments = format!(
        "environments:\n  staging:\n    cluster: {}\n    services:\n{services}    approval: skip\n  prod: {{}}\nstages:\n",
        staging.name
    );
    let mut yaml = yaml.replacen("stages:\n", &environments, 1);
    assert!(yaml.trim_end().ends_with("timeout: 2m"), "{yaml}");
    yaml.push_str(&format!(
        "      verify:\n        - url: {up}\n          body_contains: Application up\n          \
         timeout: 5s\n          interval: 1s\n"
    ));
    std::fs::write(file, yaml).unwrap();
}

fn runner(project: &Path, args: &[&str]) -> std::process::Output {
    pipeline_runner(project).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_verified_in_staging_is_promoted_to_prod_by_digest_through_prods_gate() {
    let Some(env) = parts("promote staging to prod").await else {
        return;
    };
    let staging = Cluster::create_named(env, true, "envelope-staging").await;
    let prod = Cluster::create(env, true).await;
    staging.wait_until_running().await;
    prod.wait_until_running().await;
    let prod_before = prod.task_definitions().await;
    let up = HealthEndpoint::start(200, "Application up").await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &prod, &url, 0);
    with_environments(project.path(), &staging, &up.url);
    let project = project.path().to_path_buf();

    let (nothing, staged) = tokio::task::spawn_blocking({
        let project = project.clone();
        move || {
            let nothing = runner(
                &project,
                &["promote", "api", "--from", "staging", "--to", "prod"],
            );
            let staged = runner(
                &project,
                &["run", "api", "--env", "staging", "--ref", "v2.0.0"],
            );
            (nothing, staged)
        }
    })
    .await
    .unwrap();

    // Before staging deployed anything there is nothing to promote: exit code 8.
    assert_eq!(nothing.status.code(), Some(8), "{}", text(&nothing));
    assert!(
        text(&nothing).contains("`api` has no successful deploy in `staging` to promote"),
        "{}",
        text(&nothing)
    );
    assert_eq!(staged.status.code(), Some(0), "{}", text(&staged));
    assert_eq!(
        prod.task_definitions().await,
        prod_before,
        "staging's run left prod alone"
    );
    let staging_run = run_id(&staged);
    let staging_record = record_of(&project, &staging_run);
    assert_eq!(staging_record["pipeline"], "api@staging");
    assert!(
        staging_record["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["kind"] != "approval"),
        "staging skips the gate: {staging_record}"
    );
    let image = stage(&staging_record, "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    for role in ROLES {
        staging
            .settled_images(&format!("envelope-staging-{role}"), role, &image)
            .await;
    }

    // `diff --env prod` of the staging run: what the promotion would change on prod's services.
    let (previewed, nothing_in_prod) = tokio::task::spawn_blocking({
        let project = project.clone();
        let staging_run = staging_run.clone();
        move || {
            (
                runner(&project, &["diff", "api", "--env", "prod", &staging_run]),
                runner(&project, &["diff", "api", "--env", "prod"]),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(previewed.status.code(), Some(0), "{}", text(&previewed));
    let shown = String::from_utf8_lossy(&previewed.stdout);
    for role in ROLES {
        assert!(
            shown.contains(&format!("service envelope-prod-{role} (")),
            "prod's services are compared:\n{shown}"
        );
        assert!(
            shown.contains(&format!("container {role}: image ")) && shown.contains(&image),
            "{shown}"
        );
    }
    assert!(!shown.contains("envelope-staging-"), "{shown}");
    assert_eq!(
        nothing_in_prod.status.code(),
        Some(2),
        "{}",
        text(&nothing_in_prod)
    );
    assert!(
        text(&nothing_in_prod).contains("no run of `api@prod` pushed an image yet"),
        "{}",
        text(&nothing_in_prod)
    );

    // The promotion waits at prod's gate, then migrates and deploys staging's digest.
    let (promoted, approved, resumed) = tokio::task::spawn_blocking({
        let project = project.clone();
        move || {
            let promoted = runner(
                &project,
                &[
                    "promote", "api", "--from", "staging", "--to", "prod", "--until", "approval",
                ],
            );
            let run = run_id(&promoted);
            let approved = runner(&project, &["approve", &run]);
            let resumed = runner(&project, &["resume", &run]);
            (promoted, approved, resumed)
        }
    })
    .await
    .unwrap();
    assert_eq!(promoted.status.code(), Some(4), "{}", text(&promoted));
    assert_eq!(approved.status.code(), Some(0), "{}", text(&approved));
    assert_eq!(resumed.status.code(), Some(0), "{}", text(&resumed));
    let record = record_of(&project, &run_id(&promoted));
    assert_eq!(record["pipeline"], "api@prod");
    assert_eq!(record["trigger"]["kind"]["kind"], "promotion");
    assert_eq!(record["trigger"]["kind"]["from_run"], staging_run.as_str());
    assert_eq!(record["trigger"]["kind"]["from_pipeline"], "api@staging");
    assert_eq!(
        stage(&record, "build")["status"],
        "skipped",
        "nothing is built"
    );
    assert_eq!(stage(&record, "push")["outputs"]["image"], image.as_str());
    assert_eq!(stage(&record, "approval")["status"], "succeeded");
    assert_eq!(stage(&record, "migrate")["outputs"]["exit_code"], 0);
    assert_eq!(stage(&record, "deploy")["status"], "succeeded");
    for role in ROLES {
        prod.settled_images(&format!("envelope-prod-{role}"), role, &image)
            .await;
    }
    // Each environment lists its own runs.
    let history = runner(
        &project,
        &["history", "api", "--env", "prod", "--output", "json"],
    );
    let listed: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}
