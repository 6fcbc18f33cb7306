//! Who may take the pipeline's deploy lock over once its lease expired: a run waiting at the
//! gate on a real SQLite store whose clock is a `ManualClock`, on a paused tokio runtime.

use super::deploy_lock::Waiting;
use crate::exec::driver::{Driver, GateResult, RunSettings};
use crate::pipeline::compile_text;
use crate::pipeline::model::Concurrency;
use crate::plan::PlanContext;
use crate::report::{EventSink, NullReporter};
use crate::run::{RunId, RunRecord, RunStatus, RunTrigger, TriggerKind, sample};
use crate::store::{LeaseOutcome, ManualClock, Store, open_sqlite};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const PIPELINE: &str = "source:\n  repository: acme/app\n  tags: [\"v*\"]\naws:\n  region: eu-west-2\n  account: \"123456789012\"\nstages:\n  - approval:\n      timeout: 1h\n";
/// The pipeline compiles as `app`.
const KEY: &str = "pipeline:app:gate";
const TTL: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_secs(5);

fn start() -> DateTime<Utc> {
    "2026-12-07T09:00:00Z".parse().unwrap()
}

fn release(id: u64) -> TriggerKind {
    TriggerKind::Release {
        repository: "acme/app".into(),
        release_id: id,
        author: None,
    }
}

/// A store on a manual clock, and a driver about to take the gate for a newer release's run.
struct Lock {
    _directory: TempDir,
    store: Arc<dyn Store>,
    time: ManualClock,
    driver: Driver,
    waiting: RunRecord,
}

impl Lock {
    async fn new() -> Lock {
        let directory = tempfile::tempdir().unwrap();
        let time = ManualClock::starting_at(start());
        let store: Arc<dyn Store> = Arc::new(
            open_sqlite(&directory.path().join("state.db"))
                .unwrap()
                .with_clock(time.clock()),
        );
        let settings = RunSettings::for_tests(directory.path(), store.as_ref(), "agent", POLL, TTL);
        let driver = Driver::new(
            compile_text(PIPELINE),
            store.clone(),
            settings,
            EventSink::new(Box::new(NullReporter)),
        );
        let trigger = RunTrigger {
            kind: release(2),
            git_ref: "v1.0.1".into(),
            sha: None,
            tag: Some("v1.0.1".into()),
        };
        let context = PlanContext {
            git_ref: "v1.0.1".into(),
            ..PlanContext::default()
        };
        let waiting = driver
            .create(RunId::new(), trigger, context, RunStatus::Running)
            .await
            .unwrap();
        Lock {
            _directory: directory,
            store,
            time,
            driver,
            waiting,
        }
    }

    /// An older run `id` (of `kind`, now `status`) that took the lock at the start, as a
    /// process that then died leaves it: the lease not renewed since.
    async fn holder(&self, id: &str, kind: TriggerKind, status: RunStatus) -> RunId {
        let mut record = sample::run(status, vec![]);
        record.id = RunId(id.into());
        record.trigger.kind = kind;
        self.store.create_run(&record).await.unwrap();
        let granted = self.store.acquire_lease(KEY, id, TTL).await.unwrap();
        assert!(
            matches!(granted, LeaseOutcome::Granted { .. }),
            "{granted:?}"
        );
        record.id
    }

    /// Takes the gate with `within` of tokio's (paused) time: whether it was granted then.
    async fn take(&self, within: Duration) -> bool {
        let taken = tokio::time::timeout(
            within,
            self.driver.hold_gate(&self.waiting, Concurrency::Queued),
        )
        .await;
        match taken {
            Err(_) => false,
            Ok(Ok(GateResult::Held(lease))) => {
                lease.release().await;
                true
            }
            Ok(Ok(GateResult::Stopped(outcome))) => panic!("stopped: {outcome:?}"),
            Ok(Err(error)) => panic!("{error}"),
        }
    }

    /// The notices the waiting run recorded.
    async fn notices(&self) -> Vec<String> {
        self.store
            .events(&self.waiting.id, None, 1000)
            .await
            .unwrap()
            .into_iter()
            .map(|(_, line)| line)
            .filter(|line| line.contains("\"notice\"") || line.contains("approval gate"))
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn an_unfinished_release_keeps_the_lock_after_its_lease_expired_until_it_finishes() {
    let lock = Lock::new().await;
    let older = lock
        .holder("01older0000000000000000000", release(1), RunStatus::Running)
        .await;
    lock.time.advance(TTL * 2);
    assert!(
        !lock.take(Duration::from_secs(600)).await,
        "the lock was taken over from a release in flight"
    );
    let notices = lock.notices().await;
    assert!(
        notices.iter().any(|notice| notice.contains(&format!(
            "run {older} of `app` stopped past the approval gate without finishing"
        ))),
        "{notices:#?}"
    );
    // An agent resumes the older run (the lease is its own again) and it finishes.
    let resumed = lock.store.acquire_lease(KEY, &older.0, TTL).await.unwrap();
    assert!(
        matches!(resumed, LeaseOutcome::Granted { .. }),
        "{resumed:?}"
    );
    assert!(
        !lock.take(Duration::from_secs(30)).await,
        "taken from the resumed run"
    );
    lock.store.release_lease(KEY, &older.0).await.unwrap();
    lock.store
        .set_run_status(&older, RunStatus::Succeeded, Some("2026-12-07T09:05:00Z"))
        .await
        .unwrap();
    assert!(
        lock.take(POLL * 2).await,
        "the lock once the older run finished"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_taken_over_from_a_finished_run_and_from_a_run_no_agent_resumes() {
    let cases = [
        ("a finished release", release(1), RunStatus::Failed),
        (
            "a CLI run, resumed only by whoever started it",
            TriggerKind::Cli { user: "ci".into() },
            RunStatus::Running,
        ),
        (
            "a release parked at a later approval gate",
            release(1),
            RunStatus::Waiting,
        ),
    ];
    for (case, kind, status) in cases {
        let lock = Lock::new().await;
        lock.holder("01older0000000000000000000", kind, status)
            .await;
        assert!(
            !lock.take(POLL * 3).await,
            "{case}: taken while its lease lives"
        );
        lock.time.advance(TTL * 2);
        assert!(lock.take(POLL * 2).await, "{case}: not taken once expired");
    }
}

#[test]
fn a_renewed_lease_is_not_told_again_but_a_stop_is() {
    let at = start();
    let later = at + chrono::Duration::seconds(20);
    let held = Waiting::Held("01a".into(), at);
    assert!(held.same_as(&Waiting::Held("01a".into(), later)));
    assert!(!held.same_as(&Waiting::Held("01b".into(), at)));
    assert!(!held.same_as(&Waiting::Kept("01a".into(), at)));
}
