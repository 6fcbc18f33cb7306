//! Store overhead of the state store: time per stage transition, `history`-style listings, and
//! what opening the store plus one read costs a `history` or `status` command, over 10,000
//! recorded runs (or `--runs N`), against their targets.
//!
//! Run with `cargo run -p envelope-runner --example store_bench [DIRECTORY]` (the dev profile:
//! release builds take too long on the project's machines; dependencies, SQLite included, are
//! built at opt-level 1). The store file goes in a temporary directory inside DIRECTORY
//! (default: the system's temporary directory); pass a directory on the disk the store will
//! really live on, since every commit waits for an fsync.
//!
//! `--store dynamodb://TABLE` measures a DynamoDB table instead, reached with the environment's
//! AWS configuration (`eval "$(scripts/test-env env)"` for the emulator). A missing table is
//! created, and deleted again at the end; an existing one is used as it is and kept.
//! `--runs N` records N runs instead of 10,000 (DynamoDB over the network takes a while).
// A benchmark or development tool, not product code: it may panic on a broken set-up.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envelope_runner::run::{
    RunId, RunRecord, RunStatus, RunTrigger, StageOutputs, StageRecord, StageStatus, TriggerKind,
};
use envelope_runner::store::{
    DynamoDbStore, LeaseOutcome, Store, StoreLocation, dynamodb_client_config, open_sqlite,
};

const RECORDED_RUNS: usize = 10_000;
const EVENTS_PER_RECORDED_RUN: u64 = 20;
const TRANSITIONS: usize = 1_000;
const LISTING_REPEATS: usize = 20;
const PIPELINES: [&str; 3] = ["api", "tenant", "hq"];
const STAGES: [&str; 6] = ["source", "build", "push", "approval", "migrate", "deploy"];

const TRANSITION_TARGET: Duration = Duration::from_millis(5);
const LISTING_TARGET: Duration = Duration::from_millis(100);
/// What opening the store and one read may cost a command, however many runs there are.
const COMMAND_TARGET: Duration = Duration::from_millis(10);

/// The store measured, and what is needed to open it again.
enum Bench {
    Sqlite {
        path: PathBuf,
        _directory: tempfile::TempDir,
    },
    DynamoDb {
        client: aws_sdk_dynamodb::Client,
        table: String,
        created: bool,
    },
}

impl Bench {
    async fn open(&self) -> Result<Arc<dyn Store>, Box<dyn std::error::Error>> {
        Ok(match self {
            Bench::Sqlite { path, .. } => Arc::new(open_sqlite(path)?),
            Bench::DynamoDb { client, table, .. } => {
                Arc::new(DynamoDbStore::open(client.clone(), table).await?)
            }
        })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut parent = std::env::temp_dir();
    let mut store_url = None;
    let mut recorded_runs = RECORDED_RUNS;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--store") => store_url = args.next().and_then(|url| url.into_string().ok()),
            Some("--runs") => {
                recorded_runs = args
                    .next()
                    .and_then(|runs| runs.to_str()?.parse().ok())
                    .ok_or("--runs takes a number of runs")?;
            }
            _ => parent = PathBuf::from(arg),
        }
    }
    let profile = if cfg!(debug_assertions) {
        "dev profile (dependencies, SQLite included, at opt-level 1)"
    } else {
        "release profile"
    };
    let bench = match store_url.as_deref().map(StoreLocation::parse).transpose()? {
        None => {
            let directory = tempfile::Builder::new()
                .prefix("store-bench-")
                .tempdir_in(&parent)?;
            let path = directory.path().join("state.db");
            println!("store_bench: SQLite store at {}", path.display());
            Bench::Sqlite {
                path,
                _directory: directory,
            }
        }
        Some(StoreLocation::DynamoDb { table }) => {
            let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .load()
                .await;
            let client = aws_sdk_dynamodb::Client::from_conf(dynamodb_client_config(&sdk_config));
            let created = DynamoDbStore::create_table_if_missing(&client, &table).await?;
            let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| "AWS".into());
            let made = if created {
                "created for the bench"
            } else {
                "existing"
            };
            println!("store_bench: DynamoDB table {table} ({made}) at {endpoint}");
            Bench::DynamoDb {
                client,
                table,
                created,
            }
        }
        Some(StoreLocation::Sqlite(_)) => {
            return Err("--store takes dynamodb://TABLE; for SQLite, name a DIRECTORY".into());
        }
    };
    println!("build: {profile}");

    let store = bench.open().await?;

    // History: 10,000 finished runs across three pipelines, each with six stages and outputs.
    let started = Instant::now();
    for number in 0..recorded_runs {
        let mut run = new_run(PIPELINES[number % PIPELINES.len()], number);
        for stage in &mut run.stages {
            stage.status = StageStatus::Succeeded;
        }
        run.status = RunStatus::Succeeded;
        run.finished_at = Some(run.created_at.clone());
        store.create_run(&run).await?;
        let events: Vec<_> = (1..=EVENTS_PER_RECORDED_RUN)
            .map(|seq| {
                (
                    seq,
                    format!(r#"{{"event":"log","stage":"build","line":"step {seq} of the image build"}}"#),
                )
            })
            .collect();
        store.append_events(&run.id, &events).await?;
    }
    println!(
        "recorded {recorded_runs} runs ({EVENTS_PER_RECORDED_RUN} events each) in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Stage transitions: runs of six stages, each stage going running, then succeeded, with
    // the outputs a real stage records.
    let mut transitions = Vec::with_capacity(TRANSITIONS);
    let mut per_run = Vec::new();
    let mut number = recorded_runs;
    while transitions.len() < TRANSITIONS {
        let mut store_time = Duration::ZERO;
        let mut run = new_run("api", number);
        number += 1;
        let timed = Instant::now();
        store.create_run(&run).await?;
        let lease = store
            .acquire_lease("pipeline/api", &run.id.0, Duration::from_secs(60))
            .await?;
        assert!(matches!(lease, LeaseOutcome::Granted { .. }));
        store_time += timed.elapsed();
        for index in 0..run.stages.len() {
            for status in [StageStatus::Running, StageStatus::Succeeded] {
                let stage = &mut run.stages[index];
                stage.status = status;
                if status == StageStatus::Succeeded {
                    stage.outputs = outputs(&stage.name);
                }
                let timed = Instant::now();
                store.save_stage(&run.id, stage).await?;
                let elapsed = timed.elapsed();
                store_time += elapsed;
                transitions.push(elapsed);
            }
        }
        let timed = Instant::now();
        store
            .set_run_status(&run.id, RunStatus::Succeeded, Some(&now()))
            .await?;
        store.release_lease("pipeline/api", &run.id.0).await?;
        store_time += timed.elapsed();
        per_run.push(store_time);
    }
    transitions.truncate(TRANSITIONS);

    let mut pipeline_listing = Vec::new();
    let mut full_listing = Vec::new();
    let mut listed = 0;
    for _ in 0..LISTING_REPEATS {
        let timed = Instant::now();
        let page = store.list_runs(Some("api"), 50, None).await?;
        pipeline_listing.push(timed.elapsed());
        assert_eq!(page.len(), 50);
        let timed = Instant::now();
        listed = store.list_runs(None, usize::MAX, None).await?.len();
        full_listing.push(timed.elapsed());
    }
    drop(store);

    // What a `history` or `status` command pays: open the store (schema check; pages only
    // after an unclean shutdown), then one read. Each sample opens the store afresh.
    let (mut opens, mut histories, mut statuses) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..LISTING_REPEATS {
        let timed = Instant::now();
        drop(bench.open().await?);
        opens.push(timed.elapsed());
        let timed = Instant::now();
        let store = bench.open().await?;
        assert!(!store.list_runs(Some("api"), 20, None).await?.is_empty());
        drop(store);
        histories.push(timed.elapsed());
        let timed = Instant::now();
        let store = bench.open().await?;
        let newest = store.list_runs(None, 1, None).await?;
        assert!(store.get_run(&newest[0].id).await?.is_some());
        drop(store);
        statuses.push(timed.elapsed());
    }
    let size = match &bench {
        Bench::Sqlite { path, .. } => format!(
            "a {:.0} MB SQLite file",
            std::fs::metadata(path)?.len() as f64 / 1e6
        ),
        Bench::DynamoDb { .. } => "DynamoDB: DescribeTable and layout check".into(),
    };

    println!();
    println!(
        "{:<64} {:>9} {:>9} {:>8}  verdict",
        "measure", "median", "p95", "target"
    );
    let rows = [
        (
            format!(
                "save_stage, runs of 6 stages ({} transitions)",
                transitions.len()
            ),
            transitions,
            Some(TRANSITION_TARGET),
        ),
        (
            format!("list_runs(Some(\"api\"), 50) over {listed} runs"),
            pipeline_listing,
            Some(LISTING_TARGET),
        ),
        (
            format!("list_runs(None, all) over {listed} runs"),
            full_listing,
            Some(LISTING_TARGET),
        ),
        (
            format!(
                "store time per run: create, lease, 12 transitions ({} runs)",
                per_run.len()
            ),
            per_run,
            None,
        ),
        (
            format!("open the store ({size})"),
            opens,
            Some(COMMAND_TARGET),
        ),
        (
            format!("history: open + list_runs(Some(\"api\"), 20) over {listed} runs"),
            histories,
            Some(COMMAND_TARGET),
        ),
        (
            format!("status: open + newest run + get_run over {listed} runs"),
            statuses,
            Some(COMMAND_TARGET),
        ),
    ];
    for (name, mut samples, target) in rows {
        samples.sort();
        let (median, p95) = (percentile(&samples, 50), percentile(&samples, 95));
        let (target, verdict) = match target {
            Some(target) => (
                format!("< {} ms", target.as_millis()),
                if p95 < target { "ok" } else { "OVER" },
            ),
            None => ("-".to_owned(), ""),
        };
        println!(
            "{name:<64} {:>9} {:>9} {target:>8}  {verdict}",
            millis(median),
            millis(p95)
        );
    }
    if let Bench::DynamoDb {
        client,
        table,
        created: true,
    } = &bench
    {
        client.delete_table().table_name(table).send().await?;
        println!("deleted the table {table}");
    }
    Ok(())
}

fn new_run(pipeline: &str, number: usize) -> RunRecord {
    RunRecord {
        id: RunId::new(),
        pipeline: pipeline.into(),
        status: RunStatus::Running,
        trigger: RunTrigger {
            kind: TriggerKind::Release {
                repository: format!("envelope/{pipeline}"),
                release_id: number as u64,
                author: None,
            },
            git_ref: format!("v1.{number}.0"),
            sha: Some(format!("{number:040x}")),
            tag: Some(format!("v1.{number}.0")),
        },
        created_at: now(),
        finished_at: None,
        context: Default::default(),
        stages: STAGES
            .into_iter()
            .map(|name| StageRecord {
                name: name.into(),
                kind: name.parse().expect("a stage kind"),
                status: StageStatus::Pending,
                started_at: Some(now()),
                finished_at: None,
                outputs: StageOutputs::default(),
                error: None,
            })
            .collect(),
    }
}

/// What each kind of stage records when it succeeds, so rows have their real size.
fn outputs(stage: &str) -> StageOutputs {
    let mut outputs = StageOutputs::default();
    let image = "123456789012.dkr.ecr.eu-west-2.amazonaws.com/envelope-api";
    let digest = "sha256:4f1c0e0b8a2d6e3f9b7c5a1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f";
    match stage {
        "source" => outputs.sha = Some("0123456789abcdef0123456789abcdef01234567".into()),
        "build" => outputs.image_id = Some(digest.into()),
        "push" => {
            outputs.image = Some(format!("{image}@{digest}"));
            outputs.digest = Some(digest.into());
        }
        "migrate" => {
            outputs.task_arn =
                Some("arn:aws:ecs:eu-west-2:123456789012:task/envelope/0a1b2c3d".into());
            outputs.exit_code = Some(0);
        }
        "deploy" => {
            for service in ["api", "worker", "scheduler", "reverb"] {
                let definition = format!(
                    "arn:aws:ecs:eu-west-2:123456789012:task-definition/envelope-{service}:42"
                );
                outputs
                    .task_definitions
                    .insert(service.into(), definition.clone());
                outputs
                    .previous_task_definitions
                    .insert(service.into(), definition.replace(":42", ":41"));
                outputs
                    .deployments
                    .insert(service.into(), format!("ecs-svc/{service}1234567890"));
            }
        }
        _ => {}
    }
    outputs
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}
