//! Sign-ins shared by agents on one store, as behind a load balancer: a session opened on one
//! agent works on another, survives a restart, and signing out on one ends it on every agent.

use std::time::Duration;

use envelope_runner::run::RunStatus;

use crate::fake_github::{FakeGithub, ReleaseSpec};
use crate::support::*;

async fn a_session_is_shared_by_two_agents_and_survives_a_restart(store: TestStore) {
    let project = Project::new();
    let github = FakeGithub::start().await;
    github.add_repository(REPOSITORY);
    let first = start_agent(settings(&project, &github, "agent-a"), &store).await;
    let second = start_agent(settings(&project, &github, "agent-b"), &store).await;
    project.tag("v1.2.0");
    let release = github.publish(REPOSITORY, ReleaseSpec::published("v1.2.0"));
    let run = wait_for_status(
        first.store().as_ref(),
        release,
        RunStatus::Waiting,
        Duration::from_secs(20),
    )
    .await;
    let run_path = format!("/runs/{}", run.id);

    // Signed in on the first agent; the same cookie approves on the second.
    let mut alice = Browser::new(first.address());
    assert_eq!(alice.sign_in(ALICE_TOKEN).await.status, 303);
    let session = alice.cookie("envelope_session").unwrap().to_owned();
    alice.address = second.address();
    let page = alice.get(&run_path).await;
    assert_eq!(page.status, 200, "{page:?}");
    let csrf = page.hidden_input("csrf").expect("a decision form");
    let approved = alice
        .post(
            &format!("{run_path}/decision"),
            &[
                ("csrf", &csrf),
                ("stage", "approval"),
                ("decision", "approve"),
            ],
        )
        .await;
    assert_eq!(approved.status, 303, "{approved:?}");
    let decision = second
        .store()
        .approval(&run.id, "approval")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(decision.by, "alice");

    // The first agent restarts: still signed in there, with the same session.
    first.shutdown().await;
    let first = start_agent(settings(&project, &github, "agent-a"), &store).await;
    alice.address = first.address();
    let list = alice.get("/").await;
    assert_eq!(list.status, 200, "{list:?}");
    assert!(list.body.contains(&run.id.0), "{}", list.body);
    assert_eq!(alice.cookie("envelope_session"), Some(session.as_str()));

    // Signing out on the second agent ends the session on the first one too.
    alice.address = second.address();
    let out = alice.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303, "{out:?}");
    let refused = http(
        first.address(),
        "GET",
        "/",
        &[("Cookie", &format!("envelope_session={session}"))],
        b"",
    )
    .await;
    assert_eq!(refused.status, 303, "{refused:?}");
    assert!(
        refused
            .header("location")
            .unwrap()
            .starts_with("/login?next="),
        "{refused:?}"
    );

    first.shutdown().await;
    second.shutdown().await;
    store.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_shared_by_two_agents_on_one_sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("shared.db").display());
    a_session_is_shared_by_two_agents_and_survives_a_restart(TestStore::Sqlite(url)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_shared_by_two_agents_on_one_dynamodb_store() {
    let Some(table) = DynamoTable::create("shared-sessions").await else {
        return;
    };
    a_session_is_shared_by_two_agents_and_survives_a_restart(TestStore::DynamoDb(table)).await;
}
