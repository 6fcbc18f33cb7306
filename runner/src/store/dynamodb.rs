//! The shared store: one DynamoDB table that every agent and CI job working on the same
//! pipelines reads and writes, with conditional writes where the contract needs a winner.
//!
//! # Key schema
//!
//! One table, keyed by `pk` (string, partition key) and `sk` (string, sort key); on-demand
//! capacity is enough (`DynamoDbStore::create_table_if_missing` makes it that way, and the
//! error for a missing table prints the equivalent `aws dynamodb create-table` command).
//!
//! | item     | `pk`            | `sk`               | other attributes                          |
//! |----------|-----------------|--------------------|-------------------------------------------|
//! | run      | `run#ID`        | `run`              | `run_id`, `pipeline`, `listing` (`runs`), `status`, `created_at`, `finished_at`, `git_ref`, `sha`, `tag`, `current_stage`, `revision` (N), `record` (JSON) |
//! | stage    | `run#ID`        | `stage#NAME`       | `position` (N), `finished` (BOOL), `record` (JSON) |
//! | approval | `run#ID`        | `approval#STAGE`   | `record` (JSON)                           |
//! | event    | `events#ID`     | sequence number, 20 digits zero-padded | `line`                |
//! | lease    | `lease#KEY`     | `lease`            | `holder` (absent once released), `expires_at_ms` (N), `generation` (N) |
//! | trigger  | `trigger#KEY`   | `trigger`          | `first_run`, `claimed_at_ms` (N)          |
//!
//! Two global secondary indexes list runs newest first (run ids are ULIDs, which sort by start
//! time). Only run items carry their key attributes, so the indexes hold runs and nothing else,
//! and they project the fields a listing shows, so `list_runs` never reads a run's record:
//!
//! - `runs_by_pipeline`: partition `pipeline`, sort `run_id` (`history PIPELINE`);
//! - `runs_by_id`: partition `listing`, always `runs`, sort `run_id` (every pipeline). One
//!   partition for all runs is far below DynamoDB's per-partition limits at the rate runs
//!   start and change.
//!
//! Stages are items of their own, like the SQLite store's stage rows, so a run never nears
//! DynamoDB's 400 KB item limit however many outputs its stages record; a run and its stages
//! share a partition, so `get_run` is one strongly consistent query. Events live in a partition
//! per run of their own, so reading a run never pages through its log.
//!
//! # Writes
//!
//! Each contract operation is one conditional write (see the table in the module `store`), with
//! two exceptions that keep a run item's derived fields (`current_stage`, `sha`) in step with its
//! stages, as the SQLite store's transactions do: `create_run` writes the run and its stages in
//! one `TransactWriteItems` (so no reader sees a run without its stages), and `save_stage` reads
//! the run's stages, then writes the stage and the run's derived fields in one transaction
//! conditioned on the run's `revision`, and starts over if another process wrote a stage of the
//! same run in between.
//!
//! Lease expiry is compared against the store's [`Clock`], passed in the condition expression:
//! DynamoDB's own clock is never consulted.
//!
//! # Where it differs from the SQLite store
//!
//! - `list_runs` reads a global secondary index, which DynamoDB updates asynchronously: a run
//!   created or changed a moment ago may be missing or stale in a listing for a short while
//!   (usually well under a second). `get_run`, `events`, approvals, leases and claims are read
//!   with strong consistency.
//! - One item holds at most 400 KB: a run record, one stage, one approval or one event line
//!   larger than that is refused with [`StoreError::OutOfRange`] before anything is written. A
//!   run has at most 99 stages (one transaction holds 100 items).
//! - Lease expiry is judged by the clock of the process that asks; processes on several
//!   machines agree only as well as their clocks do, so leases should be much longer than the
//!   expected clock skew.
//! - A conditional put whose response was lost and that the SDK sent again finds its own first
//!   write: `decide_approval` then answers `AlreadyDecided` with the caller's own decision, and
//!   `claim_trigger` `Some` of the caller's own run. `create_run` is immune (transactions carry
//!   an idempotency token).
//!
//! Throttling (`ThrottlingException`, `ProvisionedThroughputExceededException`,
//! `RequestLimitExceeded`, throttled or conflicting transactions, unprocessed batch items) is
//! retried with exponential backoff and jitter, by the SDK's standard retry strategy for whole
//! requests and by this module for parts of them; only when that gives up does a caller see
//! [`StoreError::Throttled`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{BuildError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CancellationReason, GlobalSecondaryIndex,
    IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType, Put, PutRequest,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, TableDescription, TableStatus,
    TransactWriteItem, Update, WriteRequest,
};
use aws_smithy_types::retry::RetryConfig;
use rand::Rng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::clock::{Clock, duration_millis};
use super::error::StoreError;
use super::{ApprovalOutcome, LeaseOutcome, RunSummary, Store};
use crate::error_chain;
use crate::run::{ApprovalRecord, RunId, RunRecord, RunStatus, StageRecord};

mod fencing;

/// The table's partition and sort key attributes.
const PARTITION_KEY: &str = "pk";
const SORT_KEY: &str = "sk";

/// The index of one pipeline's runs, and the index of all runs; both sorted by run id.
const RUNS_BY_PIPELINE: &str = "runs_by_pipeline";
const RUNS_BY_ID: &str = "runs_by_id";
/// The partition key of `runs_by_id` and its one value.
const LISTING: &str = "listing";
const LISTING_RUNS: &str = "runs";

/// Run item attributes the indexes project: everything a [`RunSummary`] shows besides the keys.
const LISTED_ATTRIBUTES: [&str; 8] = [
    "pipeline",
    "status",
    "git_ref",
    "sha",
    "tag",
    "created_at",
    "finished_at",
    "current_stage",
];

/// Run record fields kept in attributes of the run item (they change after creation) or in
/// stage items, and therefore left out of the run's JSON so that there is one copy of each.
const FIELDS_OUTSIDE_RECORD_JSON: [&str; 3] = ["status", "finished_at", "stages"];

/// DynamoDB's item size limit. Items are checked against it before they are sent, so that an
/// oversized record is reported as what it is rather than as a validation error.
const MAX_ITEM_BYTES: usize = 400 * 1024;
/// Actions in one `TransactWriteItems`, and puts in one `BatchWriteItem`.
const MAX_TRANSACTION_ITEMS: usize = 100;
const MAX_BATCH_ITEMS: usize = 25;

/// Attempts of a whole request (the SDK's retry strategy) and of this module's own retries
/// (throttled or conflicting transactions, unprocessed batch items, lost optimistic races).
const MAX_ATTEMPTS: u32 = 8;
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The run state store in a DynamoDB table. Cheap to clone (clones share the client).
#[derive(Debug, Clone)]
pub struct DynamoDbStore {
    client: Client,
    table: String,
    clock: Clock,
}

impl DynamoDbStore {
    /// Connects to `table` with the AWS configuration of the environment (credentials, region,
    /// `AWS_ENDPOINT_URL` or `AWS_ENDPOINT_URL_DYNAMODB`), and checks that the table exists and
    /// is laid out as this module expects.
    pub async fn from_environment(table: &str) -> Result<Self, StoreError> {
        let sdk_config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(crate::timeouts::aws_config())
            .load()
            .await;
        if sdk_config.region().is_none() {
            return Err(StoreError::DynamoDb {
                table: table.into(),
                operation: "opening the store",
                detail:
                    "no AWS region is configured; set AWS_REGION (or a region in the AWS profile)"
                        .into(),
            });
        }
        Self::open(Client::from_conf(client_config(&sdk_config)), table).await
    }

    /// Uses `table` through `client`, after checking that the table exists and is laid out as
    /// this module expects. The client's retry configuration is used as it is; see
    /// [`client_config`] for the one [`DynamoDbStore::from_environment`] uses.
    pub async fn open(client: Client, table: &str) -> Result<Self, StoreError> {
        let store = Self::unchecked(client, table);
        let described = store
            .client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|error| store.sdk_error("checking the table", error))?;
        match described.table() {
            Some(description) => check_layout(table, description)?,
            None => return Err(store.table_missing()),
        }
        Ok(store)
    }

    /// Uses `table` through `client` as it is, without a first request (tests aim the client at
    /// stand-ins that answer only what a test needs).
    pub(crate) fn unchecked(client: Client, table: &str) -> Self {
        DynamoDbStore {
            client,
            table: table.into(),
            clock: Clock::system(),
        }
    }

    /// Measures leases against `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates `table` with the key schema and indexes the store needs (on-demand capacity)
    /// unless it exists, and waits until it is active. `true` if this call created it. An
    /// existing table is not checked here; [`DynamoDbStore::open`] does that.
    pub async fn create_table_if_missing(client: &Client, table: &str) -> Result<bool, StoreError> {
        let error = |detail: String| StoreError::DynamoDb {
            table: table.into(),
            operation: "creating the table",
            detail,
        };
        let created = match client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .set_attribute_definitions(Some(attribute_definitions()))
            .set_key_schema(Some(vec![
                key(PARTITION_KEY, KeyType::Hash),
                key(SORT_KEY, KeyType::Range),
            ]))
            .set_global_secondary_indexes(Some(global_secondary_indexes()))
            .send()
            .await
        {
            Ok(_) => true,
            Err(failure) if failure.code() == Some("ResourceInUseException") => false,
            Err(failure) => return Err(error(crate::aws_error::aws_error_line(&failure))),
        };
        // A new table (or one another process is creating) takes a while to become usable.
        for attempt in 0.. {
            let described = client
                .describe_table()
                .table_name(table)
                .send()
                .await
                .map_err(|failure| error(crate::aws_error::aws_error_line(&failure)))?;
            let active = described.table().is_some_and(|description| {
                description.table_status() == Some(&TableStatus::Active)
                    && description
                        .global_secondary_indexes()
                        .iter()
                        .all(|index| index.index_status() == Some(&IndexStatus::Active))
            });
            if active {
                break;
            }
            if attempt == 300 {
                return Err(error(
                    "the table did not become active within 5 minutes".into(),
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(created)
    }

    /// The command that creates the table as [`DynamoDbStore::create_table_if_missing`] does,
    /// for a person to run once.
    pub fn create_table_command(table: &str, region: Option<&str>) -> String {
        let region = region
            .map(|region| format!(" --region {region}"))
            .unwrap_or_default();
        let definitions: Vec<String> = attribute_definitions()
            .iter()
            .map(|definition| {
                format!(
                    "AttributeName={},AttributeType=S",
                    definition.attribute_name()
                )
            })
            .collect();
        let indexes: Vec<Value> = [RUNS_BY_PIPELINE, RUNS_BY_ID]
            .into_iter()
            .map(|index| {
                serde_json::json!({
                    "IndexName": index,
                    "KeySchema": [
                        {"AttributeName": index_partition_key(index), "KeyType": "HASH"},
                        {"AttributeName": "run_id", "KeyType": "RANGE"},
                    ],
                    "Projection": {
                        "ProjectionType": "INCLUDE",
                        "NonKeyAttributes": index_projection(index),
                    },
                })
            })
            .collect();
        format!(
            "aws dynamodb create-table --table-name {table}{region} --billing-mode PAY_PER_REQUEST \\\n  \
             --attribute-definitions {} \\\n  \
             --key-schema AttributeName={PARTITION_KEY},KeyType=HASH AttributeName={SORT_KEY},KeyType=RANGE \\\n  \
             --global-secondary-indexes '{}'",
            definitions.join(" "),
            Value::Array(indexes),
        )
    }

    fn store_name(&self) -> PathBuf {
        PathBuf::from(format!("dynamodb://{}", self.table))
    }

    fn table_missing(&self) -> StoreError {
        let region = self.client.config().region().map(ToString::to_string);
        StoreError::TableMissing {
            table: self.table.clone(),
            region: region
                .clone()
                .unwrap_or_else(|| "the configured region".into()),
            command: Self::create_table_command(&self.table, region.as_deref()),
        }
    }

    /// What a failed request means for the person running envelope-runner.
    fn sdk_error<E, R>(&self, operation: &'static str, error: SdkError<E, R>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        match error.code() {
            Some("ResourceNotFoundException") => return self.table_missing(),
            Some(code) if is_throttling(code) => {
                return StoreError::Throttled {
                    table: self.table.clone(),
                    operation,
                };
            }
            _ => {}
        }
        if let Some(timeout) = crate::timeouts::AwsTimeout::of(&error, "DynamoDB") {
            return StoreError::TimedOut {
                table: self.table.clone(),
                operation,
                detail: timeout.to_string(),
            };
        }
        let read = crate::aws_error::AwsFailure::of(&error);
        if read.is_credentials() {
            return StoreError::AwsCredentials {
                table: self.table.clone(),
                operation,
                detail: read.to_string(),
            };
        }
        let unreachable = match &error {
            SdkError::TimeoutError(_) => true,
            SdkError::DispatchFailure(failure) => failure.is_io() || failure.is_timeout(),
            _ => false,
        };
        let detail = match &error {
            _ if unreachable => format!(
                "DynamoDB did not answer ({}); check the network, the AWS region, and \
                 AWS_ENDPOINT_URL if an emulator or VPC endpoint is meant",
                error_chain(&error)
            ),
            SdkError::ServiceError(_) => format!(
                "{}: {}",
                error.code().unwrap_or("error"),
                error.message().unwrap_or("no message")
            ),
            _ => format!(
                "{}; check the AWS credentials and region",
                error_chain(&error)
            ),
        };
        StoreError::DynamoDb {
            table: self.table.clone(),
            operation,
            detail,
        }
    }

    fn unreadable(&self, what: impl Into<String>, detail: impl Into<String>) -> StoreError {
        StoreError::UnreadableRecord {
            path: self.store_name(),
            what: what.into(),
            detail: detail.into(),
        }
    }

    fn parse_json<T: DeserializeOwned>(&self, json: &str, what: &str) -> Result<T, StoreError> {
        serde_json::from_str(json).map_err(|error| self.unreadable(what, error.to_string()))
    }

    fn string<'a>(&self, item: &'a Item, name: &str, what: &str) -> Result<&'a str, StoreError> {
        optional_string(item, name)
            .ok_or_else(|| self.unreadable(what, format!("the attribute `{name}` is missing")))
    }

    fn number(&self, item: &Item, name: &str, what: &str) -> Result<i64, StoreError> {
        match item.get(name) {
            Some(AttributeValue::N(number)) => number
                .parse()
                .map_err(|_| self.unreadable(what, format!("`{name}` is not a whole number"))),
            _ => Err(self.unreadable(what, format!("the attribute `{name}` is missing"))),
        }
    }

    /// Every item of one partition, in sort key order, read with strong consistency.
    async fn partition(
        &self,
        partition: &str,
        operation: &'static str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_values(":pk", string(partition))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|error| self.sdk_error(operation, error))?;
            items.extend(page.items().iter().cloned());
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                return Ok(items);
            }
        }
    }

    /// One item by its keys, read with strong consistency.
    async fn item(
        &self,
        partition: &str,
        sort: &str,
        operation: &'static str,
    ) -> Result<Option<Item>, StoreError> {
        let read = self
            .client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .set_key(Some(item_key(partition, sort)))
            .send()
            .await
            .map_err(|error| self.sdk_error(operation, error))?;
        Ok(read.item().cloned())
    }

    /// Runs a transaction, retrying it with backoff while DynamoDB cancels it for throttling or
    /// a conflict with another transaction. `Ok(Err(reasons))` when a condition failed; the
    /// reasons are in the order of `items`.
    async fn transact(
        &self,
        operation: &'static str,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<CancellationReason>>, StoreError> {
        let mut attempt = 0;
        loop {
            let error = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(Ok(())),
                Err(error) => error,
            };
            let reasons = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    cancelled.cancellation_reasons().to_vec()
                }
                _ => return Err(self.sdk_error(operation, error)),
            };
            let code = |reason: &CancellationReason| reason.code().unwrap_or("None").to_owned();
            if reasons
                .iter()
                .any(|reason| code(reason) == "ConditionalCheckFailed")
            {
                return Ok(Err(reasons));
            }
            let retryable = reasons.iter().all(|reason| {
                matches!(
                    code(reason).as_str(),
                    "None"
                        | "TransactionConflict"
                        | "ThrottlingError"
                        | "ProvisionedThroughputExceeded"
                )
            });
            if !retryable {
                let detail = reasons
                    .iter()
                    .filter(|reason| code(reason) != "None")
                    .map(|reason| {
                        format!(
                            "{}: {}",
                            code(reason),
                            reason.message().unwrap_or("no message")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                return Err(StoreError::DynamoDb {
                    table: self.table.clone(),
                    operation,
                    detail: format!("DynamoDB cancelled the transaction ({detail})"),
                });
            }
            attempt += 1;
            if attempt >= MAX_ATTEMPTS {
                return Err(StoreError::Throttled {
                    table: self.table.clone(),
                    operation,
                });
            }
            tokio::time::sleep(backoff(attempt)).await;
        }
    }

    /// The existing item a conditional put ran into: DynamoDB returns it with the failure when
    /// asked to; otherwise (or if it is gone by now) it is read.
    async fn conflicting_item(
        &self,
        returned: Option<&Item>,
        partition: &str,
        sort: &str,
        operation: &'static str,
    ) -> Result<Option<Item>, StoreError> {
        match returned {
            Some(item) if !item.is_empty() => Ok(Some(item.clone())),
            _ => self.item(partition, sort, operation).await,
        }
    }

    fn check_size(&self, item: &Item, what: impl FnOnce() -> String) -> Result<(), StoreError> {
        let size = item_size(item);
        if size > MAX_ITEM_BYTES {
            return Err(StoreError::OutOfRange {
                what: format!(
                    "{} ({} KB; a DynamoDB item holds at most {} KB)",
                    what(),
                    size.div_ceil(1024),
                    MAX_ITEM_BYTES / 1024
                ),
            });
        }
        Ok(())
    }

    fn put(&self, item: Item) -> Put {
        required(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .build(),
        )
    }

    fn stage_item(
        &self,
        id: &RunId,
        position: i64,
        stage: &StageRecord,
    ) -> Result<Item, StoreError> {
        let item = Item::from([
            (PARTITION_KEY.into(), string(run_partition(id))),
            (SORT_KEY.into(), string(stage_sort_key(&stage.name))),
            ("position".into(), number(position)),
            (
                "finished".into(),
                AttributeValue::Bool(stage.status.is_finished()),
            ),
            ("record".into(), string(to_json(stage))),
        ]);
        self.check_size(&item, || format!("stage `{}` of run {id}", stage.name))?;
        Ok(item)
    }

    fn stage_from_item(&self, id: &RunId, item: &Item) -> Result<(i64, StageRecord), StoreError> {
        let name = optional_string(item, SORT_KEY)
            .and_then(|sort| sort.strip_prefix(STAGE_PREFIX))
            .unwrap_or_default();
        let what = format!("stage `{name}` of run {id}");
        let position = self.number(item, "position", &what)?;
        let stage = self.parse_json(self.string(item, "record", &what)?, &what)?;
        Ok((position, stage))
    }

    fn summary_from_item(&self, item: &Item) -> Result<RunSummary, StoreError> {
        let id = self.string(item, "run_id", "a run")?;
        let what = format!("run {id}");
        let owned = |name| optional_string(item, name).map(str::to_owned);
        Ok(RunSummary {
            id: RunId(id.to_owned()),
            pipeline: self.string(item, "pipeline", &what)?.to_owned(),
            status: self.status(self.string(item, "status", &what)?, &what)?,
            git_ref: self.string(item, "git_ref", &what)?.to_owned(),
            sha: owned("sha"),
            tag: owned("tag"),
            created_at: self.string(item, "created_at", &what)?.to_owned(),
            finished_at: owned("finished_at"),
            current_stage: owned("current_stage"),
        })
    }

    fn status(&self, name: &str, what: &str) -> Result<RunStatus, StoreError> {
        serde_json::from_value(Value::String(name.to_owned()))
            .map_err(|_| self.unreadable(what, format!("unknown status `{name}`")))
    }
}

#[async_trait::async_trait]
impl Store for DynamoDbStore {
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        if run.stages.len() >= MAX_TRANSACTION_ITEMS {
            return Err(StoreError::OutOfRange {
                what: format!(
                    "run {} with {} stages (a DynamoDB store keeps runs of up to {} stages)",
                    run.id,
                    run.stages.len(),
                    MAX_TRANSACTION_ITEMS - 1
                ),
            });
        }
        let sha = run.trigger.sha.clone().or_else(|| {
            run.stages
                .iter()
                .find_map(|stage| stage.outputs.sha.clone())
        });
        let mut item = Item::from([
            (PARTITION_KEY.into(), string(run_partition(&run.id))),
            (SORT_KEY.into(), string(RUN_SORT_KEY)),
            ("run_id".into(), string(&run.id.0)),
            ("pipeline".into(), string(&run.pipeline)),
            (LISTING.into(), string(LISTING_RUNS)),
            ("status".into(), string(enum_name(&run.status))),
            ("created_at".into(), string(&run.created_at)),
            ("git_ref".into(), string(&run.trigger.git_ref)),
            ("revision".into(), number(0)),
            ("record".into(), string(run_record_json(run))),
        ]);
        let optional = [
            ("finished_at", run.finished_at.clone()),
            ("sha", sha),
            ("tag", run.trigger.tag.clone()),
            (
                "current_stage",
                run.next_stage().map(|stage| stage.name.clone()),
            ),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                item.insert(name.into(), string(value));
            }
        }
        self.check_size(&item, || format!("run {}", run.id))?;
        let put_run = required(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .build(),
        );
        let mut items = vec![TransactWriteItem::builder().put(put_run).build()];
        for (position, stage) in run.stages.iter().enumerate() {
            let position = i64::try_from(position).unwrap_or(i64::MAX);
            let put = self.put(self.stage_item(&run.id, position, stage)?);
            items.push(TransactWriteItem::builder().put(put).build());
        }
        match self.transact("creating a run", items).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::RunExists { id: run.id.clone() }),
        }
    }

    async fn get_run(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        let items = self.partition(&run_partition(id), "reading a run").await?;
        let Some(run_item) = items
            .iter()
            .find(|item| optional_string(item, SORT_KEY) == Some(RUN_SORT_KEY))
        else {
            return Ok(None);
        };
        let what = format!("run {id}");
        let mut value: Value = self.parse_json(self.string(run_item, "record", &what)?, &what)?;
        if let Some(object) = value.as_object_mut() {
            let status = self.string(run_item, "status", &what)?;
            object.insert("status".into(), Value::String(status.to_owned()));
            object.insert("stages".into(), Value::Array(Vec::new()));
        }
        let mut run: RunRecord = serde_json::from_value(value)
            .map_err(|error| self.unreadable(&what, error.to_string()))?;
        run.finished_at = optional_string(run_item, "finished_at").map(str::to_owned);
        let mut stages = items
            .iter()
            .filter(|item| is_stage(item))
            .map(|item| self.stage_from_item(id, item))
            .collect::<Result<Vec<_>, _>>()?;
        stages.sort_by_key(|(position, _)| *position);
        run.stages = stages.into_iter().map(|(_, stage)| stage).collect();
        Ok(Some(run))
    }

    async fn save_stage(&self, id: &RunId, stage: &StageRecord) -> Result<(), StoreError> {
        const OPERATION: &str = "recording a stage transition";
        for attempt in 0..MAX_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            let items = self.partition(&run_partition(id), OPERATION).await?;
            let Some(run_item) = items
                .iter()
                .find(|item| optional_string(item, SORT_KEY) == Some(RUN_SORT_KEY))
            else {
                return Err(StoreError::RunNotFound { id: id.clone() });
            };
            let revision = self.number(run_item, "revision", &format!("run {id}"))?;
            // (position, name, finished) of every stage, with this one replaced or appended.
            let mut stages = Vec::new();
            for item in items.iter().filter(|item| is_stage(item)) {
                let what = format!("a stage of run {id}");
                let sort = self.string(item, SORT_KEY, &what)?;
                let name = &sort[STAGE_PREFIX.len()..];
                let finished = matches!(item.get("finished"), Some(AttributeValue::Bool(true)));
                stages.push((self.number(item, "position", &what)?, name, finished));
            }
            let position = match stages.iter().find(|(_, name, _)| *name == stage.name) {
                Some((position, _, _)) => *position,
                None => stages
                    .iter()
                    .map(|(position, _, _)| position + 1)
                    .max()
                    .unwrap_or(0),
            };
            stages.retain(|(_, name, _)| *name != stage.name);
            stages.push((position, stage.name.as_str(), stage.status.is_finished()));
            stages.sort_by_key(|(position, _, _)| *position);
            let current_stage = stages
                .iter()
                .find(|(_, _, finished)| !finished)
                .map(|(_, name, _)| (*name).to_owned());

            let put_stage = self.put(self.stage_item(id, position, stage)?);
            let mut set = vec!["#revision = :next"];
            let mut remove = Vec::new();
            let mut names = HashMap::from([("#revision".to_owned(), "revision".to_owned())]);
            let mut values = HashMap::from([
                (":next".to_owned(), number(revision + 1)),
                (":revision".to_owned(), number(revision)),
            ]);
            names.insert("#current".into(), "current_stage".into());
            match current_stage {
                Some(current) => {
                    set.push("#current = :current");
                    values.insert(":current".into(), string(current));
                }
                None => remove.push("#current"),
            }
            if let Some(sha) = &stage.outputs.sha {
                set.push("#sha = if_not_exists(#sha, :sha)");
                names.insert("#sha".into(), "sha".into());
                values.insert(":sha".into(), string(sha));
            }
            let mut expression = format!("SET {}", set.join(", "));
            if !remove.is_empty() {
                expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
            }
            let update_run = required(
                Update::builder()
                    .table_name(&self.table)
                    .set_key(Some(item_key(&run_partition(id), RUN_SORT_KEY)))
                    .update_expression(expression)
                    .condition_expression("#revision = :revision")
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(Some(values))
                    .build(),
            );
            let items = vec![
                TransactWriteItem::builder().put(put_stage).build(),
                TransactWriteItem::builder().update(update_run).build(),
            ];
            // A failed condition means another process recorded a stage of this run since the
            // read: read again and recompute.
            if self.transact(OPERATION, items).await?.is_ok() {
                return Ok(());
            }
        }
        Err(StoreError::DynamoDb {
            table: self.table.clone(),
            operation: OPERATION,
            detail: format!(
                "other processes kept recording stages of run {id} at the same time; retry"
            ),
        })
    }

    async fn set_run_status(
        &self,
        id: &RunId,
        status: RunStatus,
        finished_at: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(&run_partition(id), RUN_SORT_KEY)))
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#finished", "finished_at")
            .expression_attribute_values(":status", string(enum_name(&status)));
        update = match finished_at {
            Some(finished_at) => update
                .update_expression("SET #status = :status, #finished = :finished")
                .expression_attribute_values(":finished", string(finished_at)),
            None => update.update_expression("SET #status = :status REMOVE #finished"),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Err(StoreError::RunNotFound { id: id.clone() })
            }
            Err(error) => Err(self.sdk_error("setting a run's status", error)),
        }
    }

    async fn list_runs(
        &self,
        pipeline: Option<&str>,
        limit: usize,
        before: Option<&RunId>,
    ) -> Result<Vec<RunSummary>, StoreError> {
        let mut summaries = Vec::new();
        if limit == 0 {
            return Ok(summaries);
        }
        let (index, partition_name, partition) = match pipeline {
            Some(pipeline) => (RUNS_BY_PIPELINE, "pipeline", pipeline),
            None => (RUNS_BY_ID, LISTING, LISTING_RUNS),
        };
        let mut condition = "#partition = :partition".to_owned();
        if before.is_some() {
            condition.push_str(" AND #run_id < :before");
        }
        let mut start = None;
        loop {
            // DynamoDB ends a page at 1 MB whatever the limit says.
            let page_size = limit - summaries.len();
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(&condition)
                .scan_index_forward(false)
                .limit(i32::try_from(page_size).unwrap_or(i32::MAX))
                .expression_attribute_names("#partition", partition_name)
                .expression_attribute_values(":partition", string(partition))
                .set_exclusive_start_key(start);
            if let Some(before) = before {
                query = query
                    .expression_attribute_names("#run_id", "run_id")
                    .expression_attribute_values(":before", string(&before.0));
            }
            let page = query
                .send()
                .await
                .map_err(|error| self.sdk_error("listing runs", error))?;
            for item in page.items() {
                summaries.push(self.summary_from_item(item)?);
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() || summaries.len() >= limit {
                summaries.truncate(limit);
                return Ok(summaries);
            }
        }
    }

    async fn append_events(&self, id: &RunId, events: &[(u64, String)]) -> Result<(), StoreError> {
        const OPERATION: &str = "recording events";
        // One put per sequence number: the last line given for it, as a rewrite would leave it
        // (a batch may not name one item twice).
        let mut latest = BTreeMap::new();
        for (seq, line) in events {
            event_seq(*seq)?;
            latest.insert(*seq, line);
        }
        let mut requests = Vec::with_capacity(latest.len());
        for (seq, line) in latest {
            let item = Item::from([
                (PARTITION_KEY.into(), string(events_partition(id))),
                (SORT_KEY.into(), string(event_sort_key(seq))),
                ("line".into(), string(line.as_str())),
            ]);
            self.check_size(&item, || format!("event {seq} of run {id}"))?;
            let put = required(PutRequest::builder().set_item(Some(item)).build());
            requests.push(WriteRequest::builder().put_request(put).build());
        }
        for chunk in requests.chunks(MAX_BATCH_ITEMS) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0;
            while !pending.is_empty() {
                if attempt > 0 {
                    if attempt >= MAX_ATTEMPTS {
                        return Err(StoreError::Throttled {
                            table: self.table.clone(),
                            operation: OPERATION,
                        });
                    }
                    tokio::time::sleep(backoff(attempt)).await;
                }
                attempt += 1;
                let written = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|error| self.sdk_error(OPERATION, error))?;
                // DynamoDB hands back what it did not write (throttled partitions): retry that.
                pending = written
                    .unprocessed_items()
                    .and_then(|unprocessed| unprocessed.get(&self.table))
                    .cloned()
                    .unwrap_or_default();
            }
        }
        Ok(())
    }

    async fn events(
        &self,
        id: &RunId,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let after = after_seq.map(event_seq).transpose()?;
        let mut events = Vec::new();
        if limit == 0 {
            return Ok(events);
        }
        let mut condition = "#pk = :pk".to_owned();
        if after.is_some() {
            condition.push_str(" AND #sk > :after");
        }
        let mut start = None;
        loop {
            let page_size = limit - events.len();
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression(&condition)
                .limit(i32::try_from(page_size).unwrap_or(i32::MAX))
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_values(":pk", string(events_partition(id)))
                .set_exclusive_start_key(start);
            if let Some(after) = after {
                query = query
                    .expression_attribute_names("#sk", SORT_KEY)
                    .expression_attribute_values(":after", string(event_sort_key(after)));
            }
            let page = query
                .send()
                .await
                .map_err(|error| self.sdk_error("reading events", error))?;
            for item in page.items() {
                let what = format!("an event of run {id}");
                let sort = self.string(item, SORT_KEY, &what)?;
                let seq = sort
                    .parse()
                    .map_err(|_| self.unreadable(&what, format!("sequence number `{sort}`")))?;
                events.push((seq, self.string(item, "line", &what)?.to_owned()));
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() || events.len() >= limit {
                events.truncate(limit);
                return Ok(events);
            }
        }
    }

    async fn decide_approval(
        &self,
        id: &RunId,
        stage: &str,
        decision: &ApprovalRecord,
    ) -> Result<ApprovalOutcome, StoreError> {
        const OPERATION: &str = "recording an approval";
        let partition = run_partition(id);
        // Runs are never deleted, so a run seen here still exists at the write.
        if self
            .item(&partition, RUN_SORT_KEY, OPERATION)
            .await?
            .is_none()
        {
            return Err(StoreError::RunNotFound { id: id.clone() });
        }
        let sort = approval_sort_key(stage);
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Item::from([
                (PARTITION_KEY.into(), string(&partition)),
                (SORT_KEY.into(), string(&sort)),
                ("record".into(), string(to_json(decision))),
            ])))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let returned = match written {
            Ok(_) => return Ok(ApprovalOutcome::Recorded),
            Err(error) => match condition_failed(&error) {
                Some(existing) => existing,
                None => return Err(self.sdk_error(OPERATION, error)),
            },
        };
        // Decisions are never deleted, so the one that won is there.
        let existing = self
            .conflicting_item(returned.as_ref(), &partition, &sort, OPERATION)
            .await?
            .ok_or_else(|| {
                self.unreadable(
                    format!("the approval of stage `{stage}` of run {id}"),
                    "it disappeared",
                )
            })?;
        let what = format!("the approval of stage `{stage}` of run {id}");
        let record = self.parse_json(self.string(&existing, "record", &what)?, &what)?;
        Ok(ApprovalOutcome::AlreadyDecided(record))
    }

    async fn approval(
        &self,
        id: &RunId,
        stage: &str,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let item = self
            .item(
                &run_partition(id),
                &approval_sort_key(stage),
                "reading an approval",
            )
            .await?;
        let what = format!("the approval of stage `{stage}` of run {id}");
        item.map(|item| self.parse_json(self.string(&item, "record", &what)?, &what))
            .transpose()
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        self.acquire_generation(key, holder, ttl).await
    }

    async fn renew_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let expires = self.clock.now_millis().saturating_add(duration_millis(ttl));
        let renewed = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(&lease_partition(key), LEASE_SORT_KEY)))
            .update_expression("SET #expires = :expires")
            .condition_expression("#holder = :holder")
            .expression_attribute_names("#expires", "expires_at_ms")
            .expression_attribute_names("#holder", "holder")
            .expression_attribute_values(":expires", number(expires))
            .expression_attribute_values(":holder", string(holder))
            .send()
            .await;
        match renewed {
            Ok(_) => Ok(true),
            Err(error)
                if matches!(
                    error.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(error) => Err(self.sdk_error("renewing a lease", error)),
        }
    }

    async fn confirm_lease(
        &self,
        key: &str,
        holder: &str,
        generation: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.confirm_generation(key, holder, generation, ttl).await
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        self.release_keeping_generation(key, holder).await
    }

    async fn supersede_run(
        &self,
        id: &RunId,
        gate: usize,
        finished_at: &str,
    ) -> Result<bool, StoreError> {
        self.supersede_before_gate(id, gate, finished_at).await
    }

    async fn claim_trigger(&self, key: &str, run: &RunId) -> Result<Option<RunId>, StoreError> {
        const OPERATION: &str = "claiming a trigger";
        let partition = trigger_partition(key);
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Item::from([
                (PARTITION_KEY.into(), string(&partition)),
                (SORT_KEY.into(), string(TRIGGER_SORT_KEY)),
                ("first_run".into(), string(&run.0)),
                ("claimed_at_ms".into(), number(self.clock.now_millis())),
            ])))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PARTITION_KEY)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let returned = match written {
            Ok(_) => return Ok(None),
            Err(error) => match condition_failed(&error) {
                Some(existing) => existing,
                None => return Err(self.sdk_error(OPERATION, error)),
            },
        };
        let what = format!("the claim of trigger `{key}`");
        // Claims are never deleted, so the first one is there.
        let existing = self
            .conflicting_item(returned.as_ref(), &partition, TRIGGER_SORT_KEY, OPERATION)
            .await?
            .ok_or_else(|| self.unreadable(&what, "it disappeared"))?;
        Ok(Some(RunId(
            self.string(&existing, "first_run", &what)?.to_owned(),
        )))
    }
}

/// The DynamoDB client configuration the store uses: the environment's, with more patient
/// retries than the SDK's default (3 attempts), since a throttled stage transition is better
/// waited out than failed.
pub fn client_config(sdk_config: &aws_config::SdkConfig) -> aws_sdk_dynamodb::Config {
    aws_sdk_dynamodb::config::Builder::from(sdk_config)
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(INITIAL_BACKOFF)
                .with_max_backoff(MAX_BACKOFF),
        )
        .build()
}

type Item = HashMap<String, AttributeValue>;

const RUN_SORT_KEY: &str = "run";
const STAGE_PREFIX: &str = "stage#";
const LEASE_SORT_KEY: &str = "lease";
const TRIGGER_SORT_KEY: &str = "trigger";

fn run_partition(id: &RunId) -> String {
    format!("run#{id}")
}

fn stage_sort_key(name: &str) -> String {
    format!("{STAGE_PREFIX}{name}")
}

fn approval_sort_key(stage: &str) -> String {
    format!("approval#{stage}")
}

fn events_partition(id: &RunId) -> String {
    format!("events#{id}")
}

/// Zero-padded so that the string order of sort keys is the order of sequence numbers.
fn event_sort_key(seq: u64) -> String {
    format!("{seq:020}")
}

fn lease_partition(key: &str) -> String {
    format!("lease#{key}")
}

fn trigger_partition(key: &str) -> String {
    format!("trigger#{key}")
}

fn is_stage(item: &Item) -> bool {
    optional_string(item, SORT_KEY).is_some_and(|sort| sort.starts_with(STAGE_PREFIX))
}

fn item_key(partition: &str, sort: &str) -> Item {
    Item::from([
        (PARTITION_KEY.into(), string(partition)),
        (SORT_KEY.into(), string(sort)),
    ])
}

fn string(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn number(value: i64) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn optional_string<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Some(value),
        _ => None,
    }
}

/// An item's size as DynamoDB counts it, close enough for the checks here: attribute names
/// plus values (numbers counted as their text).
fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| {
            name.len()
                + match value {
                    AttributeValue::S(text) | AttributeValue::N(text) => text.len(),
                    _ => 1,
                }
        })
        .sum()
}

fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "ProvisionedThroughputExceededException"
            | "RequestLimitExceeded"
            | "TransactionInProgressException"
    )
}

/// Exponential backoff with full jitter for this module's own retries.
fn backoff(attempt: u32) -> Duration {
    let ceiling = INITIAL_BACKOFF
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(MAX_BACKOFF);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}

/// Every attribute used as a key, of the table or of an index.
fn attribute_definitions() -> Vec<AttributeDefinition> {
    [PARTITION_KEY, SORT_KEY, "pipeline", LISTING, "run_id"]
        .into_iter()
        .map(|name| {
            required(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build(),
            )
        })
        .collect()
}

fn index_partition_key(index: &str) -> &'static str {
    if index == RUNS_BY_PIPELINE {
        "pipeline"
    } else {
        LISTING
    }
}

/// The non-key attributes an index carries: the listed ones apart from its own keys.
fn index_projection(index: &str) -> Vec<&'static str> {
    LISTED_ATTRIBUTES
        .into_iter()
        .filter(|name| *name != index_partition_key(index))
        .collect()
}

fn global_secondary_indexes() -> Vec<GlobalSecondaryIndex> {
    [RUNS_BY_PIPELINE, RUNS_BY_ID]
        .into_iter()
        .map(|index| {
            let projection = Projection::builder()
                .projection_type(ProjectionType::Include)
                .set_non_key_attributes(Some(
                    index_projection(index)
                        .into_iter()
                        .map(Into::into)
                        .collect(),
                ))
                .build();
            required(
                GlobalSecondaryIndex::builder()
                    .index_name(index)
                    .key_schema(key(index_partition_key(index), KeyType::Hash))
                    .key_schema(key("run_id", KeyType::Range))
                    .projection(projection)
                    .build(),
            )
        })
        .collect()
}

fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    required(
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(key_type)
            .build(),
    )
}

/// Checks that an existing table has the store's keys and indexes, so that a table made for
/// something else is refused before anything is written to it.
fn check_layout(table: &str, description: &TableDescription) -> Result<(), StoreError> {
    let foreign = |detail: String| StoreError::ForeignTable {
        table: table.into(),
        detail,
    };
    let keys = |schema: &[KeySchemaElement]| -> Vec<(String, KeyType)> {
        schema
            .iter()
            .map(|element| {
                (
                    element.attribute_name().to_owned(),
                    element.key_type().clone(),
                )
            })
            .collect()
    };
    let expected = vec![
        (PARTITION_KEY.to_owned(), KeyType::Hash),
        (SORT_KEY.to_owned(), KeyType::Range),
    ];
    if keys(description.key_schema()) != expected {
        return Err(foreign(format!(
            "its key is not `{PARTITION_KEY}` (partition) and `{SORT_KEY}` (sort)"
        )));
    }
    for index in [RUNS_BY_PIPELINE, RUNS_BY_ID] {
        let found = description
            .global_secondary_indexes()
            .iter()
            .find(|found| found.index_name() == Some(index));
        let expected = vec![
            (index_partition_key(index).to_owned(), KeyType::Hash),
            ("run_id".to_owned(), KeyType::Range),
        ];
        if found.is_none_or(|found| keys(found.key_schema()) != expected) {
            return Err(foreign(format!(
                "it has no global secondary index `{index}` on `{}` and `run_id`",
                index_partition_key(index)
            )));
        }
    }
    Ok(())
}

/// The item a conditional put ran into when its condition failed (`Some(None)` when DynamoDB
/// did not return it), or `None` for any other failure.
fn condition_failed<R>(error: &SdkError<PutItemError, R>) -> Option<Option<Item>> {
    match error.as_service_error() {
        Some(PutItemError::ConditionalCheckFailedException(failed)) => Some(failed.item().cloned()),
        _ => None,
    }
}

/// The SDK's builders fail only when a required field is missing; every call here sets them.
fn required<T>(built: Result<T, BuildError>) -> T {
    built.expect("every required field of the DynamoDB request is set")
}

/// The run as JSON without the fields kept elsewhere (see [`FIELDS_OUTSIDE_RECORD_JSON`]).
fn run_record_json(run: &RunRecord) -> String {
    let mut value = serde_json::to_value(run).expect("run records serialize to JSON");
    if let Some(object) = value.as_object_mut() {
        for field in FIELDS_OUTSIDE_RECORD_JSON {
            object.remove(field);
        }
    }
    value.to_string()
}

/// Records are plain data with string keys, which serde_json always serializes.
fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("store records serialize to JSON")
}

/// A status enum's name as it appears in JSON output, which is also how items store it.
fn enum_name(value: &impl Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(name)) => name,
        _ => unreachable!("status enums serialize to their snake_case name"),
    }
}

/// Sequence numbers are limited to the SQLite store's range, so both stores accept the same.
fn event_seq(seq: u64) -> Result<u64, StoreError> {
    if i64::try_from(seq).is_ok() {
        Ok(seq)
    } else {
        Err(StoreError::OutOfRange {
            what: format!("event sequence number {seq}"),
        })
    }
}
