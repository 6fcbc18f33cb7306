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
//! | session  | `session#SHA256`| `session`          | `approver`, `csrf`, `expires_at_ms` (N), `expires_at` (N, the TTL attribute) |
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

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_smithy_types::retry::RetryConfig;

use super::clock::Clock;
use super::error::StoreError;
use table::check_layout;
#[cfg(test)]
pub(super) use table::definition_argument;

mod contract;
mod fencing;
mod item;
mod request;
mod sessions;
mod table;

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

    /// Measures leases and sessions against `clock` instead of the system clock, and hands it
    /// to whoever asks [`Store::clock`](super::Store::clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn table(&self) -> &str {
        &self.table
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
