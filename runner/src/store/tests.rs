//! The store contract, checked against both stores: SQLite files in temporary directories, and
//! DynamoDB tables of their own in the AWS emulator (see `dynamodb_tests`). Each contract test
//! is a function of a [`Fixture`]; `contract_tests!` runs it as `sqlite::NAME` and
//! `dynamodb::NAME`. What only one store has (SQLite files, schema versions, DynamoDB tables)
//! is tested for that store alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tempfile::TempDir;

use super::dynamodb_tests::TestTable;
use super::*;
use crate::run::{
    ApprovalRecord, RunId, RunRecord, RunStatus, RunTrigger, StageOutputs, StageRecord,
    StageStatus, TriggerKind,
};

fn stage(name: &str, status: StageStatus) -> StageRecord {
    StageRecord {
        name: name.into(),
        kind: crate::run::StageKind::Build,
        status,
        started_at: None,
        finished_at: None,
        outputs: StageOutputs::default(),
        error: None,
    }
}

fn run_with_id(id: &str, pipeline: &str) -> RunRecord {
    RunRecord {
        id: RunId(id.into()),
        pipeline: pipeline.into(),
        status: RunStatus::Running,
        trigger: RunTrigger {
            kind: TriggerKind::Release {
                repository: "envelope/api".into(),
                release_id: 42,
                author: None,
            },
            git_ref: "v1.2.3".into(),
            sha: None,
            tag: Some("v1.2.3".into()),
        },
        created_at: "2026-11-26T09:00:00Z".into(),
        finished_at: None,
        context: [("account".to_owned(), "123456789012".to_owned())].into(),
        stages: ["source", "build", "push", "approval", "migrate", "deploy"]
            .into_iter()
            .map(|name| stage(name, StageStatus::Pending))
            .collect(),
    }
}

fn new_run(pipeline: &str) -> RunRecord {
    run_with_id(&RunId::new().0, pipeline)
}

fn approval(approved: bool, by: &str) -> ApprovalRecord {
    ApprovalRecord {
        approved,
        by: by.into(),
        at: "2026-11-26T10:00:00Z".into(),
        comment: Some(format!("{by} looked at it")),
    }
}

/// One empty store for one test, and handles onto it as separate processes would open them.
enum Fixture {
    Sqlite(TempDir),
    DynamoDb(Box<TestTable>),
}

impl Fixture {
    fn sqlite() -> Fixture {
        Fixture::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A table of the test's own, or `None` when the emulator cannot be reached and that is
    /// allowed (see [`TestTable::create`]).
    async fn dynamodb(test: &str) -> Option<Fixture> {
        let table = TestTable::create(test).await?;
        Some(Fixture::DynamoDb(Box::new(table)))
    }

    /// A new handle with a connection (or client) of its own.
    async fn open(&self) -> Arc<dyn Store> {
        self.open_with_clock(Clock::system()).await
    }

    async fn open_with_clock(&self, clock: Clock) -> Arc<dyn Store> {
        match self {
            Fixture::Sqlite(directory) => Arc::new(
                open_sqlite(&state_path(directory))
                    .unwrap()
                    .with_clock(clock),
            ),
            Fixture::DynamoDb(table) => Arc::new(table.open().await.with_clock(clock)),
        }
    }
}

/// Runs each named `async fn NAME(fixture: Fixture)` against both stores, as the tests
/// `sqlite::NAME` and `dynamodb::NAME`. Several worker threads, so that handles race for real.
macro_rules! contract_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Fixture::sqlite()).await;
                }
            )+
        }

        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(fixture) = super::Fixture::dynamodb(stringify!($name)).await {
                        super::$name(fixture).await;
                    }
                }
            )+
        }
    };
}

contract_tests!(
    a_run_comes_back_as_it_was_stored,
    a_run_id_is_created_once,
    a_stage_transition_replaces_that_stage_and_moves_the_current_stage,
    stage_transitions_of_one_run_from_several_processes_keep_the_current_stage,
    writes_to_an_unknown_run_say_so,
    run_status_and_finish_time_are_set_and_cleared,
    runs_are_listed_newest_first_by_pipeline_and_page,
    events_are_read_back_in_order_after_a_sequence_number,
    the_first_approval_decision_wins_across_processes,
    racing_approval_decisions_record_exactly_one,
    leases_are_granted_held_expired_renewed_and_lost,
    a_trigger_starts_one_run,
    writers_in_two_processes_at_once_both_succeed,
);

mod environments;
mod fencing;
mod sessions;
mod sqlite_file;

fn state_path(directory: &TempDir) -> PathBuf {
    directory.path().join(".envelope").join("state.db")
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-26T09:00:00Z")
        .unwrap()
        .to_utc()
}

async fn a_run_comes_back_as_it_was_stored(fixture: Fixture) {
    let store = fixture.open().await;
    let mut run = new_run("api");
    run.trigger.sha = Some("0123456789abcdef0123456789abcdef01234567".into());
    run.stages[0].status = StageStatus::Succeeded;
    run.stages[0].outputs.sha = run.trigger.sha.clone();
    run.stages[2].status = StageStatus::Succeeded;
    run.stages[2].outputs.image = Some("123.dkr.ecr.eu-west-2.amazonaws.com/api@sha256:ab".into());
    run.stages[2].outputs.digest = Some("sha256:ab".into());
    run.stages[2]
        .outputs
        .exported
        .insert("VERSION".into(), "1.2.3".into());
    run.stages[5]
        .outputs
        .deployments
        .insert("api".into(), "ecs-svc/123".into());
    run.stages[3].outputs.approval = Some(approval(true, "ana"));
    run.stages[4].error = Some("the migration task exited with code 1".into());
    run.context
        .insert("ENVIRONMENT".into(), "production".into());

    store.create_run(&run).await.unwrap();

    assert_eq!(store.get_run(&run.id).await.unwrap(), Some(run));
    assert_eq!(store.get_run(&RunId::new()).await.unwrap(), None);
}

async fn a_run_id_is_created_once(fixture: Fixture) {
    let store = fixture.open().await;
    let run = new_run("api");
    store.create_run(&run).await.unwrap();

    let error = store.create_run(&run).await.unwrap_err();

    assert!(matches!(&error, StoreError::RunExists { id } if *id == run.id));
}

async fn a_stage_transition_replaces_that_stage_and_moves_the_current_stage(fixture: Fixture) {
    let store = fixture.open().await;
    let run = new_run("api");
    store.create_run(&run).await.unwrap();
    let current = |store: Arc<dyn Store>| async move {
        let listed = store.list_runs(None, 1, None).await.unwrap();
        (listed[0].current_stage.clone(), listed[0].sha.clone())
    };
    assert_eq!(current(store.clone()).await, (Some("source".into()), None));

    let mut source = stage("source", StageStatus::Running);
    store.save_stage(&run.id, &source).await.unwrap();
    source.status = StageStatus::Succeeded;
    source.outputs.sha = Some("abc123".into());
    store.save_stage(&run.id, &source).await.unwrap();

    let stored = store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(stored.stages.len(), 6, "replaced, not appended");
    assert_eq!(stored.stages[0], source);
    assert_eq!(
        current(store.clone()).await,
        (Some("build".into()), Some("abc123".into())),
        "the source stage's sha fills in a trigger without one"
    );

    // A stage the run did not have goes after the others.
    store
        .save_stage(&run.id, &stage("notify", StageStatus::Pending))
        .await
        .unwrap();
    let names: Vec<_> = store.get_run(&run.id).await.unwrap().unwrap().stages;
    let names: Vec<_> = names.iter().map(|stage| stage.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "source", "build", "push", "approval", "migrate", "deploy", "notify"
        ]
    );

    for name in names.iter().skip(1) {
        store
            .save_stage(&run.id, &stage(name, StageStatus::Succeeded))
            .await
            .unwrap();
    }
    assert_eq!(current(store.clone()).await.0, None);
}

async fn stage_transitions_of_one_run_from_several_processes_keep_the_current_stage(
    fixture: Fixture,
) {
    let run = new_run("api");
    fixture.open().await.create_run(&run).await.unwrap();

    // Every stage finishes at once, each recorded by a process of its own, some of them twice.
    let recorded: Vec<_> = run.stages.iter().chain(&run.stages[..2]).collect();
    let start = Arc::new(tokio::sync::Barrier::new(recorded.len()));
    let mut writers = Vec::new();
    for (number, recorded) in recorded.into_iter().enumerate() {
        let (store, id, start) = (fixture.open().await, run.id.clone(), Arc::clone(&start));
        let mut stage = recorded.clone();
        stage.status = StageStatus::Succeeded;
        stage.outputs.exit_code = Some(i32::try_from(number).unwrap());
        writers.push(tokio::spawn(async move {
            start.wait().await;
            store.save_stage(&id, &stage).await
        }));
    }
    for writer in writers {
        writer.await.unwrap().unwrap();
    }

    let store = fixture.open().await;
    let stored = store.get_run(&run.id).await.unwrap().unwrap();
    let names: Vec<_> = stored
        .stages
        .iter()
        .map(|stage| stage.name.as_str())
        .collect();
    let created: Vec<_> = run.stages.iter().map(|stage| stage.name.as_str()).collect();
    assert_eq!(names, created, "no stage lost, added or moved");
    assert!(
        stored
            .stages
            .iter()
            .all(|stage| stage.status == StageStatus::Succeeded)
    );
    let summary = &store.list_runs(Some("api"), 1, None).await.unwrap()[0];
    assert_eq!(summary.current_stage, None, "every stage finished");

    // And back: the first stage fails on a retry, so the run is there again.
    store
        .save_stage(&run.id, &stage("source", StageStatus::Failed))
        .await
        .unwrap();
    let summary = &store.list_runs(Some("api"), 1, None).await.unwrap()[0];
    assert_eq!(summary.current_stage.as_deref(), Some("source"));
}

async fn writes_to_an_unknown_run_say_so(fixture: Fixture) {
    let store = fixture.open().await;
    let unknown = RunId::new();

    let errors = [
        store
            .save_stage(&unknown, &stage("build", StageStatus::Running))
            .await
            .unwrap_err(),
        store
            .set_run_status(&unknown, RunStatus::Failed, None)
            .await
            .unwrap_err(),
        store
            .decide_approval(&unknown, "approval", &approval(true, "ana"))
            .await
            .unwrap_err(),
    ];

    for error in errors {
        assert!(matches!(&error, StoreError::RunNotFound { id } if *id == unknown));
        assert!(error.to_string().contains("history"), "{error}");
    }
}

async fn run_status_and_finish_time_are_set_and_cleared(fixture: Fixture) {
    let store = fixture.open().await;
    let run = new_run("api");
    store.create_run(&run).await.unwrap();

    store
        .set_run_status(&run.id, RunStatus::Failed, Some("2026-11-26T09:30:00Z"))
        .await
        .unwrap();
    let stored = store.get_run(&run.id).await.unwrap().unwrap();
    assert_eq!(stored.status, RunStatus::Failed);
    assert_eq!(stored.finished_at.as_deref(), Some("2026-11-26T09:30:00Z"));

    // Resumed: running again, not finished.
    store
        .set_run_status(&run.id, RunStatus::Running, None)
        .await
        .unwrap();
    let summary = &store.list_runs(None, 1, None).await.unwrap()[0];
    assert_eq!(
        (summary.status, summary.finished_at.as_deref()),
        (RunStatus::Running, None)
    );
}

async fn runs_are_listed_newest_first_by_pipeline_and_page(fixture: Fixture) {
    let store = fixture.open().await;
    for (number, pipeline) in ["api", "tenant", "api", "hq", "api", "api", "tenant"]
        .into_iter()
        .enumerate()
    {
        let mut run = run_with_id(&format!("01run{number:02}"), pipeline);
        run.created_at = format!("2026-11-26T09:{number:02}:00Z");
        store.create_run(&run).await.unwrap();
    }
    let ids = |summaries: Vec<RunSummary>| -> Vec<String> {
        summaries.into_iter().map(|summary| summary.id.0).collect()
    };

    let all = store.list_runs(None, 100, None).await.unwrap();
    assert_eq!(all.len(), 7);
    assert_eq!(all[0].id.0, "01run06");
    assert_eq!(all[0].pipeline, "tenant");
    assert_eq!(all[0].created_at, "2026-11-26T09:06:00Z");
    assert_eq!(all[0].git_ref, "v1.2.3");
    assert_eq!(all[0].tag.as_deref(), Some("v1.2.3"));
    assert_eq!(all[0].status, RunStatus::Running);

    let api = store.list_runs(Some("api"), 2, None).await.unwrap();
    assert_eq!(ids(api), ["01run05", "01run04"]);
    let next = store
        .list_runs(Some("api"), 2, Some(&RunId("01run04".into())))
        .await
        .unwrap();
    assert_eq!(ids(next), ["01run02", "01run00"]);
    let last = store
        .list_runs(Some("api"), 2, Some(&RunId("01run00".into())))
        .await
        .unwrap();
    assert!(last.is_empty());

    let older = store
        .list_runs(None, 3, Some(&RunId("01run03".into())))
        .await
        .unwrap();
    assert_eq!(ids(older), ["01run02", "01run01", "01run00"]);
    assert!(
        store
            .list_runs(Some("none"), 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list_runs(None, 0, None).await.unwrap().is_empty());
}

async fn events_are_read_back_in_order_after_a_sequence_number(fixture: Fixture) {
    let store = fixture.open().await;
    let run = new_run("api");
    let other = new_run("api");
    let lines = |range: std::ops::Range<u64>| -> Vec<(u64, String)> {
        range
            .map(|seq| (seq, format!(r#"{{"event":"log","line":"{seq}"}}"#)))
            .collect()
    };
    store.append_events(&run.id, &lines(1..4)).await.unwrap();
    store.append_events(&run.id, &lines(4..11)).await.unwrap();
    store.append_events(&other.id, &lines(1..3)).await.unwrap();

    assert_eq!(
        store.events(&run.id, None, 100).await.unwrap(),
        lines(1..11)
    );
    assert_eq!(
        store.events(&run.id, Some(3), 4).await.unwrap(),
        lines(4..8)
    );
    assert_eq!(store.events(&run.id, Some(10), 100).await.unwrap(), []);
    assert_eq!(
        store.events(&other.id, None, 100).await.unwrap(),
        lines(1..3)
    );

    // A retry after a crash writes the same sequence numbers again.
    store.append_events(&run.id, &lines(9..12)).await.unwrap();
    assert_eq!(
        store.events(&run.id, Some(8), 100).await.unwrap(),
        lines(9..12)
    );

    assert!(matches!(
        store
            .append_events(&run.id, &[(u64::MAX, "{}".into())])
            .await,
        Err(StoreError::OutOfRange { .. })
    ));
}

async fn the_first_approval_decision_wins_across_processes(fixture: Fixture) {
    // Two handles, two connections: the waiting run and a CLI `approve` in another process.
    let run_process = fixture.open().await;
    let cli_process = fixture.open().await;
    let run = new_run("api");
    run_process.create_run(&run).await.unwrap();
    assert_eq!(
        run_process.approval(&run.id, "approval").await.unwrap(),
        None
    );

    let approve = approval(true, "ana");
    let reject = approval(false, "ben");
    assert_eq!(
        cli_process
            .decide_approval(&run.id, "approval", &approve)
            .await
            .unwrap(),
        ApprovalOutcome::Recorded
    );
    assert_eq!(
        run_process
            .decide_approval(&run.id, "approval", &reject)
            .await
            .unwrap(),
        ApprovalOutcome::AlreadyDecided(approve.clone())
    );
    assert_eq!(
        run_process.approval(&run.id, "approval").await.unwrap(),
        Some(approve)
    );
    assert_eq!(
        run_process.approval(&run.id, "second-gate").await.unwrap(),
        None
    );
}

async fn racing_approval_decisions_record_exactly_one(fixture: Fixture) {
    let run = new_run("api");
    fixture.open().await.create_run(&run).await.unwrap();

    let mut deciders = Vec::new();
    for number in 0..4 {
        let (store, id) = (fixture.open().await, run.id.clone());
        deciders.push(tokio::spawn(async move {
            let decision = approval(number % 2 == 0, &format!("person-{number}"));
            let outcome = store.decide_approval(&id, "approval", &decision).await;
            (decision, outcome.unwrap())
        }));
    }
    let mut outcomes = Vec::new();
    for decider in deciders {
        outcomes.push(decider.await.unwrap());
    }

    let winners: Vec<_> = outcomes
        .iter()
        .filter(|(_, outcome)| *outcome == ApprovalOutcome::Recorded)
        .map(|(decision, _)| decision.clone())
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    for (_, outcome) in &outcomes {
        if let ApprovalOutcome::AlreadyDecided(existing) = outcome {
            assert_eq!(*existing, winners[0]);
        }
    }
}

async fn leases_are_granted_held_expired_renewed_and_lost(fixture: Fixture) {
    let time = ManualClock::starting_at(start());
    let first = fixture.open_with_clock(time.clock()).await;
    let second = fixture.open_with_clock(time.clock()).await;
    let ttl = Duration::from_secs(30);
    let key = "pipeline/api";

    assert_eq!(
        first.acquire_lease(key, "run-a", ttl).await.unwrap(),
        LeaseOutcome::Granted {
            expires_at: start() + ttl,
            generation: 1
        }
    );
    assert_eq!(
        second.acquire_lease(key, "run-b", ttl).await.unwrap(),
        LeaseOutcome::Held {
            by: "run-a".into(),
            expires_at: start() + ttl
        }
    );

    // A heartbeat keeps it: renewing, or acquiring again as the same holder.
    time.advance(Duration::from_secs(20));
    assert!(first.renew_lease(key, "run-a", ttl).await.unwrap());
    time.advance(Duration::from_secs(20));
    assert_eq!(
        first.acquire_lease(key, "run-a", ttl).await.unwrap(),
        LeaseOutcome::Granted {
            expires_at: start() + Duration::from_secs(70),
            generation: 2
        }
    );
    assert!(matches!(
        second.acquire_lease(key, "run-b", ttl).await.unwrap(),
        LeaseOutcome::Held { by, .. } if by == "run-a"
    ));
    assert!(!second.renew_lease(key, "run-b", ttl).await.unwrap());

    // The holder dies; at its expiry the lease is free for the next one.
    time.advance(Duration::from_secs(30));
    assert_eq!(
        second.acquire_lease(key, "run-b", ttl).await.unwrap(),
        LeaseOutcome::Granted {
            expires_at: start() + Duration::from_secs(100),
            generation: 3
        }
    );
    assert!(
        !first.renew_lease(key, "run-a", ttl).await.unwrap(),
        "the old holder learns it lost the lease"
    );

    // Releasing someone else's lease does nothing; releasing one's own frees it.
    first.release_lease(key, "run-a").await.unwrap();
    assert!(matches!(
        first.acquire_lease(key, "run-a", ttl).await.unwrap(),
        LeaseOutcome::Held { by, .. } if by == "run-b"
    ));
    second.release_lease(key, "run-b").await.unwrap();
    assert!(!second.renew_lease(key, "run-b", ttl).await.unwrap());
    assert!(matches!(
        first.acquire_lease(key, "run-a", ttl).await.unwrap(),
        LeaseOutcome::Granted { .. }
    ));

    // Other keys are independent.
    assert!(matches!(
        second
            .acquire_lease("pipeline/hq", "run-b", ttl)
            .await
            .unwrap(),
        LeaseOutcome::Granted { .. }
    ));
}

async fn a_trigger_starts_one_run(fixture: Fixture) {
    let agent = fixture.open().await;
    let ci_job = fixture.open().await;
    let (first, second) = (RunId::new(), RunId::new());
    let key = "release/envelope/api/42";

    assert_eq!(agent.claim_trigger(key, &first).await.unwrap(), None);
    assert_eq!(
        ci_job.claim_trigger(key, &second).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        agent.claim_trigger(key, &first).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        ci_job
            .claim_trigger("release/envelope/api/43", &second)
            .await
            .unwrap(),
        None
    );
}

async fn writers_in_two_processes_at_once_both_succeed(fixture: Fixture) {
    let runs_per_writer = 100;

    let mut writers = Vec::new();
    for pipeline in ["api", "tenant"] {
        let store = fixture.open().await;
        writers.push(tokio::spawn(async move {
            for number in 0..runs_per_writer {
                let run = new_run(pipeline);
                store.create_run(&run).await?;
                let mut source = stage("source", StageStatus::Succeeded);
                source.outputs.sha = Some(format!("{number:040}"));
                store.save_stage(&run.id, &source).await?;
                store
                    .append_events(&run.id, &[(1, "{}".into()), (2, "{}".into())])
                    .await?;
                store
                    .acquire_lease("pipeline/shared", pipeline, Duration::from_secs(1))
                    .await?;
                store.release_lease("pipeline/shared", pipeline).await?;
                store
                    .claim_trigger(&format!("shared/{number}"), &run.id)
                    .await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for writer in writers {
        writer.await.unwrap().unwrap();
    }

    let store = fixture.open().await;
    let listed = store.list_runs(None, 1000, None).await.unwrap();
    assert_eq!(listed.len(), 2 * runs_per_writer);
    assert!(
        listed
            .iter()
            .all(|run| run.current_stage.as_deref() == Some("build"))
    );
}
