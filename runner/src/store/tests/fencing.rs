//! The contract of lease generations (fencing tokens) and of superseding a run only before its
//! gate, on both stores; and an SQLite store of schema version 1 opened by this build.

use super::*;

contract_tests!(
    a_lease_generation_fences_out_every_earlier_grant,
    a_lease_reads_as_its_holder_left_it,
    superseding_never_touches_a_run_past_its_gate,
    superseding_and_starting_past_the_gate_never_both_win,
);

/// The gate of the test runs: `migrate` (position 4) is the first stage after `approval`.
const GATE: usize = 4;

fn generation(outcome: LeaseOutcome) -> u64 {
    match outcome {
        LeaseOutcome::Granted { generation, .. } => generation,
        held => panic!("expected the lease, got {held:?}"),
    }
}

async fn a_lease_reads_as_its_holder_left_it(fixture: Fixture) {
    let time = ManualClock::starting_at(start());
    let store = fixture.open_with_clock(time.clock()).await;
    let ttl = Duration::from_secs(30);
    let key = "pipeline:api:gate";
    assert_eq!(store.lease(key).await.unwrap(), None, "never taken");

    let granted = generation(store.acquire_lease(key, "run-a", ttl).await.unwrap());
    let read = store.lease(key).await.unwrap().expect("held");
    assert_eq!(
        (read.holder.as_str(), read.generation, read.expires_at),
        ("run-a", granted, start() + chrono::Duration::seconds(30))
    );
    // Expired, it still reads as run-a's: taking it over is the reader's call.
    time.advance(Duration::from_secs(45));
    let expired = store.lease(key).await.unwrap().expect("still recorded");
    assert_eq!(expired.holder, "run-a");
    assert!(expired.expires_at < time.clock().now());

    store.release_lease(key, "run-a").await.unwrap();
    assert_eq!(store.lease(key).await.unwrap(), None, "released");
}

async fn a_lease_generation_fences_out_every_earlier_grant(fixture: Fixture) {
    let time = ManualClock::starting_at(start());
    let first = fixture.open_with_clock(time.clock()).await;
    let second = fixture.open_with_clock(time.clock()).await;
    let ttl = Duration::from_secs(30);
    let key = "pipeline:api:gate";

    let a1 = generation(first.acquire_lease(key, "run-a", ttl).await.unwrap());
    assert!(first.confirm_lease(key, "run-a", a1, ttl).await.unwrap());
    assert!(
        !second.confirm_lease(key, "run-b", a1, ttl).await.unwrap(),
        "another holder cannot confirm it"
    );

    // The same run taking it again (a resume in a new process) fences out its older grant.
    let a2 = generation(first.acquire_lease(key, "run-a", ttl).await.unwrap());
    assert!(a2 > a1);
    assert!(!first.confirm_lease(key, "run-a", a1, ttl).await.unwrap());
    assert!(first.confirm_lease(key, "run-a", a2, ttl).await.unwrap());

    // Confirming extends the lease like a heartbeat does.
    time.advance(Duration::from_secs(20));
    assert!(first.confirm_lease(key, "run-a", a2, ttl).await.unwrap());
    time.advance(Duration::from_secs(20));
    assert!(matches!(
        second.acquire_lease(key, "run-b", ttl).await.unwrap(),
        LeaseOutcome::Held { by, .. } if by == "run-a"
    ));

    // Expired and taken over: the old holder's token is dead even though it never released.
    time.advance(Duration::from_secs(31));
    let b = generation(second.acquire_lease(key, "run-b", ttl).await.unwrap());
    assert!(b > a2);
    assert!(
        !first.confirm_lease(key, "run-a", a2, ttl).await.unwrap(),
        "the old holder learns it lost the lease before its next change"
    );
    assert!(second.confirm_lease(key, "run-b", b, ttl).await.unwrap());

    // Releasing keeps the generation growing, so a token from before a release never passes
    // again; a released lease cannot be confirmed or renewed by its last holder.
    second.release_lease(key, "run-b").await.unwrap();
    assert!(!second.confirm_lease(key, "run-b", b, ttl).await.unwrap());
    assert!(!second.renew_lease(key, "run-b", ttl).await.unwrap());
    let b2 = generation(second.acquire_lease(key, "run-b", ttl).await.unwrap());
    assert!(b2 > b, "{b2} after {b}");
    assert!(!second.confirm_lease(key, "run-b", b, ttl).await.unwrap());
}

/// A run whose stages before the gate succeeded (the last one `before_gate`), its gate stage `at_gate`.
async fn stored_run(store: &dyn Store, before_gate: StageStatus, at_gate: StageStatus) -> RunId {
    let mut run = new_run("api");
    for stage in run.stages.iter_mut().take(GATE) {
        stage.status = StageStatus::Succeeded;
    }
    run.stages[GATE - 1].status = before_gate;
    run.stages[GATE].status = at_gate;
    store.create_run(&run).await.unwrap();
    run.id
}

async fn superseding_never_touches_a_run_past_its_gate(fixture: Fixture) {
    let store = fixture.open().await;
    let at = "2026-11-26T11:00:00Z";

    let waiting = stored_run(store.as_ref(), StageStatus::Waiting, StageStatus::Pending).await;
    store
        .set_run_status(&waiting, RunStatus::Waiting, None)
        .await
        .unwrap();
    assert!(store.supersede_run(&waiting, GATE, at).await.unwrap());
    let record = store.get_run(&waiting).await.unwrap().unwrap();
    assert_eq!(record.status, RunStatus::Superseded);
    assert_eq!(record.finished_at.as_deref(), Some(at));
    assert!(
        !store.supersede_run(&waiting, GATE, at).await.unwrap(),
        "a run is superseded once"
    );

    let past = stored_run(store.as_ref(), StageStatus::Succeeded, StageStatus::Running).await;
    assert!(!store.supersede_run(&past, GATE, at).await.unwrap());
    let record = store.get_run(&past).await.unwrap().unwrap();
    assert_eq!(
        record.status,
        RunStatus::Running,
        "a run past its gate is left alone"
    );
    assert_eq!(record.finished_at, None);

    let failed_after =
        stored_run(store.as_ref(), StageStatus::Succeeded, StageStatus::Failed).await;
    assert!(!store.supersede_run(&failed_after, GATE, at).await.unwrap());

    let finished = stored_run(store.as_ref(), StageStatus::Succeeded, StageStatus::Pending).await;
    store
        .set_run_status(&finished, RunStatus::Failed, Some(at))
        .await
        .unwrap();
    assert!(!store.supersede_run(&finished, GATE, at).await.unwrap());
    assert_eq!(
        store.get_run(&finished).await.unwrap().unwrap().status,
        RunStatus::Failed
    );

    assert!(matches!(
        store.supersede_run(&RunId::new(), GATE, at).await,
        Err(StoreError::RunNotFound { .. })
    ));
}

/// The driver's side of the race: record the first stage past the gate as running, then read
/// the run's status; it goes on only if the run was not superseded. Superseding and going on
/// must never both happen, however the two processes interleave.
async fn superseding_and_starting_past_the_gate_never_both_win(fixture: Fixture) {
    let runner = fixture.open().await;
    let newer = fixture.open().await;
    let mut both = Vec::new();
    let mut outcomes = std::collections::BTreeMap::<(bool, bool), usize>::new();
    for _ in 0..12 {
        let id = stored_run(
            runner.as_ref(),
            StageStatus::Succeeded,
            StageStatus::Pending,
        )
        .await;
        let record = runner.get_run(&id).await.unwrap().unwrap();
        let mut starting = record.stages[GATE].clone();
        starting.status = StageStatus::Running;
        let start = {
            let runner = runner.clone();
            let id = id.clone();
            tokio::spawn(async move {
                runner.save_stage(&id, &starting).await.unwrap();
                let status = runner.get_run(&id).await.unwrap().unwrap().status;
                status != RunStatus::Superseded
            })
        };
        let supersede = {
            let newer = newer.clone();
            let id = id.clone();
            tokio::spawn(async move {
                newer
                    .supersede_run(&id, GATE, "2026-11-26T11:00:00Z")
                    .await
                    .unwrap()
            })
        };
        let (went_on, superseded) = (start.await.unwrap(), supersede.await.unwrap());
        *outcomes.entry((went_on, superseded)).or_default() += 1;
        if went_on && superseded {
            both.push(id);
        }
        assert!(went_on || superseded, "one of them wins");
    }
    assert!(
        both.is_empty(),
        "both won for {both:?}; outcomes {outcomes:?}"
    );
}

/// A store written by an envelope-runner with schema version 1 (leases without a generation)
/// opens, is migrated, and its lease keeps working with generations from 1.
#[tokio::test]
async fn a_version_1_store_with_a_held_lease_is_migrated_and_keeps_it() {
    let directory = tempfile::tempdir().unwrap();
    let path = state_path(&directory);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let far = Utc::now().timestamp_millis() + 3_600_000;
    {
        let connection = rusqlite::Connection::open(&path).unwrap();
        connection.execute_batch(schema::MIGRATIONS[0]).unwrap();
        connection
            .pragma_update(None, "application_id", schema::APPLICATION_ID)
            .unwrap();
        connection.pragma_update(None, "user_version", 1).unwrap();
        connection
            .execute(
                "INSERT INTO leases (key, holder, expires_at_ms) VALUES ('pipeline:api:gate', 'run-old', ?1)",
                [far],
            )
            .unwrap();
    }
    let store = open_sqlite(&path).unwrap();
    let version: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, schema::SUPPORTED_VERSION);
    assert!(version >= 2);
    let ttl = Duration::from_secs(30);
    assert!(matches!(
        store.acquire_lease("pipeline:api:gate", "run-new", ttl).await.unwrap(),
        LeaseOutcome::Held { by, .. } if by == "run-old"
    ));
    assert!(
        store
            .renew_lease("pipeline:api:gate", "run-old", ttl)
            .await
            .unwrap()
    );
    assert!(
        !store
            .confirm_lease("pipeline:api:gate", "run-old", 1, ttl)
            .await
            .unwrap(),
        "a lease from version 1 has generation 0 until it is granted again"
    );
    let granted = generation(
        store
            .acquire_lease("pipeline:api:gate", "run-old", ttl)
            .await
            .unwrap(),
    );
    assert_eq!(granted, 1);
    assert!(
        store
            .confirm_lease("pipeline:api:gate", "run-old", 1, ttl)
            .await
            .unwrap()
    );
}
