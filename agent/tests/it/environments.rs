//! A repository entry's `environment:`: its releases run in that environment of the pipeline
//! (recorded as `PIPELINE@ENVIRONMENT`), and an environment the pipeline does not declare stops
//! the agent at start, naming the ones it does.

use std::time::Duration;

use envelope_agent::Agent;
use envelope_runner::run::{RunStatus, StageStatus};

use crate::fake_github::{FakeGithub, ReleaseSpec};
use crate::support::*;

/// The test pipeline with a `staging` environment that skips the approval gate, and `prod`
/// that keeps it.
fn with_environments(project: &Project) {
    let path = project
        .root
        .join("pipelines")
        .join(format!("{PIPELINE}.yaml"));
    let written = std::fs::read_to_string(&path).unwrap();
    let declared = "environments:\n  staging:\n    approval: skip\n  prod: {}\n";
    std::fs::write(&path, format!("{declared}{written}")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_runs_in_the_environment_its_repository_entry_names() {
    let project = Project::new();
    with_environments(&project);
    let github = FakeGithub::start().await;
    let mut settings = settings(&project, &github, "agent-staging");
    settings.repositories[0].environment = Some("staging".into());
    let store = TestStore::Sqlite(project.sqlite_url());
    let agent = start_agent(settings, &store).await;

    project.tag("v2.0.0");
    let release = github.publish(REPOSITORY, ReleaseSpec::published("v2.0.0"));
    // As written the pipeline waits at its gate; staging skips it, so the run ends.
    let run = wait_for_status(
        agent.store().as_ref(),
        release,
        RunStatus::Succeeded,
        Duration::from_secs(20),
    )
    .await;
    let record = agent.store().get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(record.pipeline, format!("{PIPELINE}@staging"));
    assert_eq!(
        record.stage("source").unwrap().status,
        StageStatus::Succeeded
    );
    assert!(record.stage("approval").is_none(), "{:?}", record.stages);
    // Runs of the pipeline as written (another agent's work) are not this entry's.
    let plain = agent
        .store()
        .list_runs(Some(PIPELINE), 10, None)
        .await
        .unwrap();
    assert!(plain.is_empty(), "{plain:?}");
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_the_pipeline_does_not_declare_stops_the_agent_at_start() {
    let project = Project::new();
    with_environments(&project);
    let github = FakeGithub::start().await;
    let mut settings = settings(&project, &github, "agent-typo");
    settings.repositories[0].environment = Some("prdo".into());
    let store = TestStore::Sqlite(project.sqlite_url());
    let error = match Agent::start_with_store(settings, credentials(), store.open().await).await {
        Ok(_) => panic!("an agent started with environment `prdo`"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("acme/app"), "{error}");
    assert!(
        error.contains("no environment `prdo`; did you mean `prod`?"),
        "{error}"
    );
}
