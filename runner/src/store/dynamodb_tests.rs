//! The DynamoDB store's own tests, and the fixture that gives every DynamoDB test (these and the
//! contract tests in `tests.rs`) a table of its own in the AWS emulator.
//!
//! The emulator is ministack on 127.0.0.1 as `scripts/test-env` runs it; its address and
//! credentials come from `scripts/test-env env`, never from the process environment, so no test
//! can reach a real AWS account. Other tests use the emulator at the same time, so nothing here
//! resets it: each test creates a table under a unique name and deletes it when done. A test
//! skips (with a note on stderr) only when ENVELOPE_TEST_REQUIRE_DOCKER is unset and the
//! emulator does not answer; with it set, the test environment is started and the test runs.
//!
//! Throttling, unprocessed batch items and cancelled transactions cannot be provoked on the
//! emulator; those tests talk to a small stand-in server that answers as DynamoDB does.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, Region};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_smithy_types::retry::RetryConfig;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::dynamodb::{client_config, definition_argument};
use super::*;
use crate::run::{
    ApprovalRecord, RunId, RunRecord, RunStatus, RunTrigger, StageOutputs, StageRecord,
    StageStatus, TriggerKind,
};

// ---------------------------------------------------------------- the emulator and its tables

/// Where the emulator listens and how to sign in, from `scripts/test-env env`.
#[derive(Debug, Clone)]
struct Emulator {
    endpoint: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
}

impl Emulator {
    /// The settings `scripts/test-env env` prints (it writes them even when nothing runs).
    fn read() -> Result<Emulator, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-env");
        let output = Command::new(&script)
            .arg("env")
            .output()
            .map_err(|error| format!("running {} env: {error}", script.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} env failed: {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let vars: BTreeMap<String, String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.trim().strip_prefix("export "))
            .filter_map(|assignment| assignment.split_once('='))
            .map(|(name, value)| (name.to_owned(), value.trim_matches('"').to_owned()))
            .collect();
        let var = |name: &str| {
            vars.get(name)
                .cloned()
                .ok_or_else(|| format!("scripts/test-env env does not set {name}"))
        };
        Ok(Emulator {
            endpoint: var("AWS_ENDPOINT_URL")?,
            region: var("AWS_REGION")?,
            access_key_id: var("AWS_ACCESS_KEY_ID")?,
            secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
        })
    }

    /// The client configuration the store uses in production, aimed at the emulator.
    async fn config(&self) -> aws_sdk_dynamodb::Config {
        client_config(&sdk_config(&self.endpoint, &self.region, self.credentials()).await)
    }

    fn credentials(&self) -> Credentials {
        Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            None,
            None,
            "envelope-test-env",
        )
    }

    /// Whether the emulator answers a DynamoDB request, asked once without retries.
    async fn answers(&self) -> Result<(), String> {
        let config = self
            .config()
            .await
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build();
        let probe = Client::from_conf(config).list_tables().limit(1).send();
        match tokio::time::timeout(Duration::from_secs(10), probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!(
                "the AWS emulator at {} does not answer ({})",
                self.endpoint,
                DisplayErrorContext(&error)
            )),
            Err(_) => Err(format!(
                "the AWS emulator at {} did not answer within 10 s",
                self.endpoint
            )),
        }
    }
}

async fn sdk_config(
    endpoint: &str,
    region: &str,
    credentials: Credentials,
) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .load()
        .await
}

/// The emulator's settings once it answers, or why a test cannot use it. When
/// ENVELOPE_TEST_REQUIRE_DOCKER is set, a silent emulator is started (`scripts/test-env up`).
async fn emulator() -> Result<Emulator, String> {
    static SETTINGS: OnceLock<Result<Emulator, String>> = OnceLock::new();
    let emulator = SETTINGS.get_or_init(Emulator::read).clone()?;
    let Err(reason) = emulator.answers().await else {
        return Ok(emulator);
    };
    if !required() {
        return Err(reason);
    }
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    let started = tokio::task::spawn_blocking(move || {
        STARTED
            .get_or_init(|| {
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/test-env");
                let up = Command::new(&script)
                    .arg("up")
                    .output()
                    .map_err(|error| format!("running {} up: {error}", script.display()))?;
                if up.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{reason}, and {} up failed:\n{}",
                        script.display(),
                        String::from_utf8_lossy(&up.stderr)
                    ))
                }
            })
            .clone()
    })
    .await
    .unwrap();
    started?;
    emulator.answers().await.map(|()| emulator)
}

fn required() -> bool {
    std::env::var_os("ENVELOPE_TEST_REQUIRE_DOCKER").is_some()
}

/// A table in the emulator for one test, deleted when dropped (also when the test fails).
pub(super) struct TestTable {
    name: String,
    emulator: Emulator,
    config: aws_sdk_dynamodb::Config,
}

impl TestTable {
    /// A new, empty store table named after `test`, or `None` (after a note on stderr) when the
    /// emulator does not answer and ENVELOPE_TEST_REQUIRE_DOCKER is unset.
    pub(super) async fn create(test: &str) -> Option<TestTable> {
        let table = Self::reserve(test).await?;
        let created = DynamoDbStore::create_table_if_missing(&table.client(), &table.name)
            .await
            .unwrap();
        assert!(created, "{} existed already", table.name);
        Some(table)
    }

    /// A unique table name, with nothing created under it yet.
    async fn reserve(test: &str) -> Option<TestTable> {
        let emulator = match emulator().await {
            Ok(emulator) => emulator,
            Err(reason) if required() => {
                panic!("{test}: ENVELOPE_TEST_REQUIRE_DOCKER is set but {reason}")
            }
            Err(reason) => {
                eprintln!(
                    "{test}: skipped: {reason} (set ENVELOPE_TEST_REQUIRE_DOCKER to fail instead)"
                );
                return None;
            }
        };
        // Table names: 3 to 255 of letters, digits, `_`, `-` and `.`.
        let test: String = test.chars().take(150).collect();
        Some(TestTable {
            name: format!("envelope-test-{test}-{}", RunId::new()),
            config: emulator.config().await,
            emulator,
        })
    }

    /// A client of its own, as another process would have.
    pub(super) fn client(&self) -> Client {
        Client::from_conf(self.config.clone())
    }

    /// A store handle of its own on this table.
    pub(super) async fn open(&self) -> DynamoDbStore {
        DynamoDbStore::open(self.client(), &self.name)
            .await
            .unwrap_or_else(|error| panic!("opening {}: {error}", self.name))
    }
}

impl Drop for TestTable {
    fn drop(&mut self) {
        // On a thread and runtime of its own, with a client of its own: the test's runtime may be
        // the one this runs on, and its connections are driven by that runtime's tasks.
        let (name, emulator) = (self.name.clone(), self.emulator.clone());
        let deleted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = Client::from_conf(emulator.config().await);
                match client.delete_table().table_name(&name).send().await {
                    Ok(_) => {}
                    Err(error) if error.code() == Some("ResourceNotFoundException") => {}
                    Err(error) => eprintln!(
                        "could not delete the test table {name}: {}",
                        DisplayErrorContext(&error)
                    ),
                }
            });
        })
        .join();
        if deleted.is_err() {
            eprintln!("deleting the test table {} panicked", self.name);
        }
    }
}

// ---------------------------------------------------------------- records

fn run_of(stages: Vec<StageRecord>) -> RunRecord {
    RunRecord {
        id: RunId::new(),
        pipeline: "api".into(),
        status: RunStatus::Running,
        trigger: RunTrigger {
            kind: TriggerKind::Cli { user: "ana".into() },
            git_ref: "v1.2.3".into(),
            sha: None,
            tag: Some("v1.2.3".into()),
        },
        created_at: "2026-11-26T09:00:00Z".into(),
        finished_at: None,
        context: Default::default(),
        stages,
    }
}

fn stage_with_output(name: &str, bytes: usize) -> StageRecord {
    let mut outputs = StageOutputs::default();
    outputs.exported.insert("LARGE".into(), "x".repeat(bytes));
    StageRecord {
        name: name.into(),
        kind: crate::run::StageKind::Build,
        status: StageStatus::Succeeded,
        started_at: None,
        finished_at: None,
        outputs,
        error: None,
    }
}

// ---------------------------------------------------------------- the table

#[tokio::test]
async fn a_missing_table_is_reported_with_the_command_that_creates_it() {
    let Some(table) = TestTable::reserve("a_missing_table_is_reported").await else {
        return;
    };

    let error = DynamoDbStore::open(table.client(), &table.name)
        .await
        .unwrap_err();

    assert!(
        matches!(error, StoreError::TableMissing { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    for expected in [
        format!("the DynamoDB table `{}` does not exist", table.name),
        format!("aws dynamodb create-table --table-name {}", table.name),
        format!("--region {}", table.emulator.region),
        "PAY_PER_REQUEST".to_owned(),
        "--store dynamodb://TABLE".to_owned(),
    ] {
        assert!(message.contains(&expected), "{expected:?} in {message}");
    }
    assert_eq!(error.exit_code(), crate::exit_codes::STORE);
}

#[tokio::test]
async fn the_printed_command_creates_the_table_the_store_creates() {
    let Some(table) = TestTable::create("the_printed_command_creates").await else {
        return;
    };
    let command = DynamoDbStore::create_table_command(&table.name, Some("eu-west-2"));
    let indexes_json = command
        .split_once("--global-secondary-indexes '")
        .and_then(|(_, rest)| rest.strip_suffix('\''))
        .expect("the command ends with the indexes as JSON");
    let printed: Vec<Value> = serde_json::from_str(indexes_json).unwrap();
    let described = table
        .client()
        .describe_table()
        .table_name(&table.name)
        .send()
        .await
        .unwrap();
    let described = described.table().unwrap();

    // Index name -> (keys, projected attributes), from the command and from the real table.
    let from_command: BTreeMap<String, (Vec<String>, BTreeSet<String>)> = printed
        .iter()
        .map(|index| {
            let keys = index["KeySchema"]
                .as_array()
                .unwrap()
                .iter()
                .map(|key| format!("{} {}", key["AttributeName"], key["KeyType"]).replace('"', ""))
                .collect();
            let projected = index["Projection"]["NonKeyAttributes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|name| name.as_str().unwrap().to_owned())
                .collect();
            (
                index["IndexName"].as_str().unwrap().to_owned(),
                (keys, projected),
            )
        })
        .collect();
    let from_table: BTreeMap<String, (Vec<String>, BTreeSet<String>)> = described
        .global_secondary_indexes()
        .iter()
        .map(|index| {
            let keys = index
                .key_schema()
                .iter()
                .map(|key| format!("{} {}", key.attribute_name(), key.key_type().as_str()))
                .collect();
            let projected = index
                .projection()
                .map(|projection| projection.non_key_attributes().iter().cloned().collect())
                .unwrap_or_default();
            (index.index_name().unwrap().to_owned(), (keys, projected))
        })
        .collect();
    assert_eq!(from_command, from_table);
    let definitions: BTreeSet<String> = described
        .attribute_definitions()
        .iter()
        .map(definition_argument)
        .collect();
    for definition in definitions {
        assert!(command.contains(&definition), "{definition} in {command}");
    }
    assert!(command.contains("AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE"));
}

#[tokio::test]
async fn creating_the_table_again_leaves_it_and_its_runs_alone() {
    let Some(table) = TestTable::create("creating_the_table_again").await else {
        return;
    };
    let run = run_of(vec![stage_with_output("build", 10)]);
    table.open().await.create_run(&run).await.unwrap();

    let created = DynamoDbStore::create_table_if_missing(&table.client(), &table.name)
        .await
        .unwrap();

    assert!(!created);
    assert_eq!(
        table.open().await.get_run(&run.id).await.unwrap(),
        Some(run)
    );
}

#[tokio::test]
async fn a_table_made_for_something_else_is_refused() {
    let Some(table) = TestTable::reserve("a_table_made_for_something_else").await else {
        return;
    };
    let client = table.client();
    client
        .create_table()
        .table_name(&table.name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let error = DynamoDbStore::open(client.clone(), &table.name)
        .await
        .unwrap_err();

    assert!(
        matches!(error, StoreError::ForeignTable { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("not an envelope-runner state store"),
        "{message}"
    );
    assert!(message.contains("Nothing was written"), "{message}");
    let items = client.scan().table_name(&table.name).send().await.unwrap();
    assert_eq!(items.count(), 0);
}

// ---------------------------------------------------------------- item sizes

#[tokio::test]
async fn a_run_larger_than_one_item_fits_since_each_stage_is_an_item() {
    let Some(table) = TestTable::create("a_run_larger_than_one_item").await else {
        return;
    };
    let store = table.open().await;
    // Six stages of 150 KB each: 900 KB, more than twice what one item holds.
    let run = run_of(
        ["source", "build", "push", "approval", "migrate", "deploy"]
            .into_iter()
            .map(|name| stage_with_output(name, 150 * 1024))
            .collect(),
    );

    store.create_run(&run).await.unwrap();
    let mut deploy = run.stages[5].clone();
    deploy.error = Some("y".repeat(100 * 1024));
    store.save_stage(&run.id, &deploy).await.unwrap();

    let mut expected = run.clone();
    expected.stages[5] = deploy;
    assert_eq!(store.get_run(&run.id).await.unwrap(), Some(expected));
}

#[tokio::test]
async fn records_over_the_item_limit_are_refused_before_anything_is_written() {
    let Some(table) = TestTable::create("records_over_the_item_limit").await else {
        return;
    };
    let store = table.open().await;
    let huge = stage_with_output("build", 500 * 1024);

    let oversized_run = run_of(vec![stage_with_output("source", 10), huge.clone()]);
    let error = store.create_run(&oversized_run).await.unwrap_err();
    assert!(matches!(error, StoreError::OutOfRange { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("stage `build`"), "{message}");
    assert!(message.contains("at most 400 KB"), "{message}");
    assert_eq!(store.get_run(&oversized_run.id).await.unwrap(), None);

    let run = run_of(vec![stage_with_output("build", 10)]);
    store.create_run(&run).await.unwrap();
    assert!(matches!(
        store.save_stage(&run.id, &huge).await,
        Err(StoreError::OutOfRange { .. })
    ));
    let line = "z".repeat(500 * 1024);
    let error = store
        .append_events(&run.id, &[(1, "{}".into()), (2, line)])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("event 2 of run"), "{error}");
    assert_eq!(store.events(&run.id, None, 10).await.unwrap(), []);
    assert_eq!(store.get_run(&run.id).await.unwrap(), Some(run));
}

#[tokio::test]
async fn events_written_twice_in_one_call_keep_the_last_line_and_page_past_one_batch() {
    let Some(table) = TestTable::create("events_written_twice").await else {
        return;
    };
    let store = table.open().await;
    let id = RunId::new();
    let mut events: Vec<(u64, String)> = (1..=60).map(|seq| (seq, format!("line {seq}"))).collect();
    events.push((7, "line 7, again".into()));

    store.append_events(&id, &events).await.unwrap();

    let stored = store.events(&id, None, 1000).await.unwrap();
    assert_eq!(stored.len(), 60);
    assert_eq!(stored[6], (7, "line 7, again".into()));
    assert_eq!(stored[59], (60, "line 60".into()));
    assert_eq!(
        store.events(&id, Some(58), 1000).await.unwrap(),
        [(59, "line 59".into()), (60, "line 60".into())]
    );
}

mod stand_in;
