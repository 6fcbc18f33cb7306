//! The approval gate's deadline with injected time: a run on a real SQLite store whose clock
//! is a `ManualClock`, on a paused tokio runtime. A ticker moves the clock as tokio's timer
//! advances, so an hour-long gate times out in milliseconds and nothing sleeps for real.

use super::approval_deadline;
use crate::exec::driver::{Driver, RunOutcome, RunSettings};
use crate::pipeline::{CompiledPipeline, compile_text};
use crate::plan::PlanContext;
use crate::report::{EventSink, NullReporter};
use crate::run::{
    ApprovalRecord, RunId, RunRecord, RunStatus, RunTrigger, StageKind, StageOutputs, StageRecord,
    StageStatus, TriggerKind, sample,
};
use crate::store::{ManualClock, Store, open_sqlite};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const PIPELINE: &str = "source:\n  repository: acme/app\n  tags: [\"v*\"]\naws:\n  region: eu-west-2\n  account: \"123456789012\"\nstages:\n  - approval:\n      timeout: 1h\n";

/// How far the clock moves per tick of tokio's (paused) timer.
const TICK: Duration = Duration::from_secs(1);
/// How often the gate looks for a decision.
const POLL: Duration = Duration::from_secs(30);

fn start() -> DateTime<Utc> {
    "2026-11-26T09:00:00Z".parse().unwrap()
}

fn minutes(count: i64) -> chrono::Duration {
    chrono::Duration::minutes(count)
}

fn time_of(text: Option<&str>) -> DateTime<Utc> {
    text.expect("a time").parse().unwrap()
}

/// A store on a manual clock, a driver reading the same clock, and a run whose source stage
/// finished so that its next stage is the gate.
struct Gate {
    _directory: TempDir,
    store: Arc<dyn Store>,
    time: ManualClock,
    driver: Driver,
    run: RunId,
}

impl Gate {
    async fn new() -> Gate {
        let directory = tempfile::tempdir().unwrap();
        let time = ManualClock::starting_at(start());
        let store: Arc<dyn Store> = Arc::new(
            open_sqlite(&directory.path().join("state.db"))
                .unwrap()
                .with_clock(time.clock()),
        );
        let settings = RunSettings::for_tests(
            directory.path(),
            store.as_ref(),
            "tester",
            POLL,
            Duration::from_secs(60),
        );
        let driver = Driver::new(
            compile_text(PIPELINE),
            store.clone(),
            settings,
            EventSink::new(Box::new(NullReporter)),
        );
        let run = RunId::new();
        let trigger = RunTrigger {
            kind: TriggerKind::Cli {
                user: "tester".into(),
            },
            git_ref: "v1.2.3".into(),
            sha: None,
            tag: Some("v1.2.3".into()),
        };
        let context = PlanContext {
            git_ref: "v1.2.3".into(),
            ..PlanContext::default()
        };
        let record = driver
            .create(run.clone(), trigger, context, RunStatus::Queued)
            .await
            .unwrap();
        assert_eq!(
            record.created_at, "2026-11-26T09:00:00Z",
            "on the store's clock"
        );
        let source = StageRecord {
            outputs: StageOutputs {
                sha: Some("0123456789abcdef0123456789abcdef01234567".into()),
                ..StageOutputs::default()
            },
            ..sample::stage("source", StageKind::Source, StageStatus::Succeeded)
        };
        store.save_stage(&run, &source).await.unwrap();
        Gate {
            _directory: directory,
            store,
            time,
            driver,
            run,
        }
    }

    /// The gate as an earlier process left it: waiting since `started`.
    async fn waiting_since(&self, started: DateTime<Utc>) {
        let gate = StageRecord {
            started_at: Some(started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            ..sample::stage("approval", StageKind::Approval, StageStatus::Waiting)
        };
        self.store.save_stage(&self.run, &gate).await.unwrap();
        self.store
            .set_run_status(&self.run, RunStatus::Waiting, None)
            .await
            .unwrap();
    }

    /// Resume the run with the clock following tokio's timer; `decide` (if any) records a
    /// decision once the clock shows that many minutes past the start.
    async fn resume(&self, decide: Option<(i64, bool)>) -> (RunOutcome, RunRecord) {
        let time = self.time.clone();
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                time.advance(TICK);
            }
        });
        let decider = decide.map(|(after, approved)| {
            let (store, run, clock) = (self.store.clone(), self.run.clone(), self.store.clock());
            tokio::spawn(async move {
                while clock.now() < start() + minutes(after) {
                    tokio::time::sleep(TICK).await;
                }
                let decision = ApprovalRecord {
                    approved,
                    by: "alice".into(),
                    at: clock.now().to_rfc3339(),
                    comment: None,
                };
                store
                    .decide_approval(&run, "approval", &decision)
                    .await
                    .unwrap();
            })
        });
        let outcome = self.driver.resume(&self.run).await.unwrap();
        ticker.abort();
        if let Some(decider) = decider {
            decider.abort();
        }
        let record = self.store.get_run(&self.run).await.unwrap().unwrap();
        (outcome, record)
    }
}

/// Runs at most this long after the gate should have answered: one look for a decision.
fn close_after(case: &str, what: &str, time: DateTime<Utc>, expected: DateTime<Utc>) {
    let late = time - expected;
    assert!(
        late >= chrono::Duration::zero() && late <= minutes(1),
        "{case}: {what} at {time}, expected {expected} (or up to a poll later)"
    );
}

/// (case, the gate waited since (minutes from the start) in an earlier process, a decision
/// (minutes, approved), run status, error, the gate's start, its end (minutes)).
type GateCase = (
    &'static str,
    Option<i64>,
    Option<(i64, bool)>,
    RunStatus,
    Option<&'static str>,
    i64,
    i64,
);

#[tokio::test(start_paused = true)]
async fn the_gate_answers_by_its_deadline_on_the_run_s_clock() {
    let rows: [GateCase; 5] = [
        (
            "no decision: the gate times out an hour after it opened",
            None,
            None,
            RunStatus::Rejected,
            Some("approval timed out after 1h: nothing after the gate ran"),
            0,
            60,
        ),
        (
            "an approval before the deadline lets the run through",
            None,
            Some((20, true)),
            RunStatus::Succeeded,
            None,
            0,
            20,
        ),
        (
            "a rejection before the deadline stops the run",
            None,
            Some((45, false)),
            RunStatus::Rejected,
            None,
            0,
            45,
        ),
        (
            "a resumed gate keeps its deadline from when it first opened",
            Some(-50),
            None,
            RunStatus::Rejected,
            Some("approval timed out after 1h: nothing after the gate ran"),
            -50,
            10,
        ),
        (
            "a gate resumed past its deadline times out at once",
            Some(-120),
            None,
            RunStatus::Rejected,
            Some("approval timed out after 1h: nothing after the gate ran"),
            -120,
            0,
        ),
    ];
    for (case, waited_since, decide, status, error, opened, ended) in rows {
        let gate = Gate::new().await;
        if let Some(since) = waited_since {
            gate.waiting_since(start() + minutes(since)).await;
        }
        let began = tokio::time::Instant::now();
        let (outcome, record) = gate.resume(decide).await;
        assert_eq!(outcome.status, status, "{case}: {outcome:?}");
        if let Some(error) = error {
            assert_eq!(outcome.error.as_deref(), Some(error), "{case}");
        }
        let stage = record.stage("approval").unwrap();
        assert_eq!(
            time_of(stage.started_at.as_deref()),
            start() + minutes(opened),
            "{case}"
        );
        let deadline = approval_deadline(Some(&gate.driver.compiled), &record, "approval");
        assert_eq!(deadline, Some(start() + minutes(opened + 60)), "{case}");
        let end = start() + minutes(ended);
        close_after(
            case,
            "the gate ended",
            time_of(stage.finished_at.as_deref()),
            end,
        );
        close_after(
            case,
            "the run ended",
            time_of(record.finished_at.as_deref()),
            end,
        );
        // tokio's timer went as far as the clock did: the waits were timer sleeps.
        let waited = began.elapsed().as_secs() as i64;
        assert!(
            (waited - (ended.max(0) * 60)).abs() <= 60,
            "{case}: tokio's timer moved {waited}s"
        );
    }
}

#[test]
fn the_deadline_is_the_gate_s_start_plus_its_planned_timeout() {
    let compiled: CompiledPipeline = compile_text(PIPELINE);
    let gate = |started: Option<&str>| {
        sample::run(
            RunStatus::Waiting,
            vec![StageRecord {
                started_at: started.map(str::to_owned),
                ..sample::stage("approval", StageKind::Approval, StageStatus::Waiting)
            }],
        )
    };
    let opened = Some("2026-11-26T09:00:00Z");
    // (case, the pipeline it is planned with, the gate's start, the stage asked about → deadline).
    let rows = [
        (
            "the plan's timeout",
            Some(&compiled),
            opened,
            "approval",
            Some(start() + minutes(60)),
        ),
        (
            "the default week when the pipeline cannot be read",
            None,
            opened,
            "approval",
            Some(start() + chrono::Duration::days(7)),
        ),
        (
            "none before the gate opened",
            Some(&compiled),
            None,
            "approval",
            None,
        ),
        (
            "none for a stage the run lacks",
            Some(&compiled),
            opened,
            "final",
            None,
        ),
    ];
    for (case, compiled, started, stage, deadline) in rows {
        assert_eq!(
            approval_deadline(compiled, &gate(started), stage),
            deadline,
            "{case}"
        );
    }
}
