//! Run state store: runs and their stages, event logs, approvals, leases and trigger claims,
//! shared by every process that works on the same pipelines.
//!
//! [`Store`] is the contract; [`SqliteStore`] (the embedded default, `.envelope/state.db`) is
//! its first implementation, [`DynamoDbStore`] (a table shared by agents and CI jobs,
//! `dynamodb://TABLE`) its second. The contract is written so that each operation is either a
//! read or one conditional write of one item (a DynamoDB `PutItem`/`UpdateItem` with a condition
//! expression):
//!
//! | operation          | write and its condition                                           |
//! |--------------------|-------------------------------------------------------------------|
//! | `create_run`       | put the run, only if the id is new                                |
//! | `save_stage`       | put one stage of a run that exists (overwrites that stage)        |
//! | `set_run_status`   | update status and finish time of a run that exists                |
//! | `append_events`    | put one item per event; an existing `(run, seq)` is overwritten   |
//! | `decide_approval`  | put the decision, only if none exists                             |
//! | `acquire_lease`    | put with the next generation, only if absent, expired, or held by the same holder |
//! | `extend_lease`     | update the expiry, only if still held by the same holder (*and generation*, when one is given) |
//! | `renew_lease`      | `extend_lease` without a generation                               |
//! | `confirm_lease`    | `extend_lease` with the generation the grant gave                 |
//! | `release_lease`    | clear holder and expiry (the generation stays), only if held by the same holder |
//! | `supersede_run`    | update the status of a run, only if it is still before its gate   |
//! | `claim_trigger`    | put, only if the key is new                                       |
//! | `put_session`      | put the session (overwrites one of the same id)                   |
//! | `delete_session`   | delete the session, if there                                      |
//!
//! "Exists" checks on runs are safe as a read before the write because runs are never deleted.
//! Nothing in the contract needs a transaction over several items; both stores use transactions
//! anyway where they keep derived fields (a run's current stage) next to the data, and the
//! DynamoDB store writes a new run and its stages (separate items) in one transaction.
//!
//! Lease and session times come from the store's [`Clock`], never from the database's own
//! clock. Sessions are stored under the SHA-256 of their id (see `sessions`), never the id.

mod clock;
mod codec;
mod dynamodb;
mod error;
mod schema;
mod sessions;
mod sqlite;

#[cfg(test)]
mod dynamodb_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::run::{ApprovalRecord, RunId, RunRecord, RunStatus, StageRecord};

pub use clock::{Clock, ManualClock};
pub use dynamodb::{DynamoDbStore, client_config as dynamodb_client_config};
pub use error::StoreError;
pub use sessions::SessionRecord;
pub use sqlite::SqliteStore;

/// Where the store lives when nothing else is said, relative to the working directory.
pub const DEFAULT_PATH: &str = ".envelope/state.db";

/// Runs, stages, events, approvals, leases and trigger claims.
///
/// Every method is safe to call from several processes at once; the guarantees are the ones in
/// each method's documentation, not more.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Records a new run with its stages. Fails with [`StoreError::RunExists`] if the id is
    /// taken.
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError>;

    /// The run with its stages in their order, or `None` for an unknown id.
    async fn get_run(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError>;

    /// Records one stage transition: replaces the stage of that name, or appends it after the
    /// run's other stages if the run has none of that name. Fails with
    /// [`StoreError::RunNotFound`] for an unknown run.
    async fn save_stage(&self, id: &RunId, stage: &StageRecord) -> Result<(), StoreError>;

    /// Sets the run's status and finish time (`None` clears it, as when a failed run is
    /// resumed). Fails with [`StoreError::RunNotFound`] for an unknown run.
    async fn set_run_status(
        &self,
        id: &RunId,
        status: RunStatus,
        finished_at: Option<&str>,
    ) -> Result<(), StoreError>;

    /// Up to `limit` runs, newest first (by run id, which sorts by start time), of one pipeline
    /// or of all; `before` continues a listing after the last id of the previous page.
    async fn list_runs(
        &self,
        pipeline: Option<&str>,
        limit: usize,
        before: Option<&RunId>,
    ) -> Result<Vec<RunSummary>, StoreError>;

    /// Stores a run's event log lines under their sequence numbers. Writing a sequence number
    /// again replaces its line, so a retry after a crash is safe. Not atomic across events: after
    /// a failure some of them may be stored. The run is not checked to exist.
    async fn append_events(&self, id: &RunId, events: &[(u64, String)]) -> Result<(), StoreError>;

    /// Up to `limit` events of a run in sequence order, those after `after_seq` when given.
    async fn events(
        &self,
        id: &RunId,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError>;

    /// Records the decision at an approval gate. The first decision wins, whichever process
    /// makes it; later ones get [`ApprovalOutcome::AlreadyDecided`] with the first. Fails with
    /// [`StoreError::RunNotFound`] for an unknown run.
    async fn decide_approval(
        &self,
        id: &RunId,
        stage: &str,
        decision: &ApprovalRecord,
    ) -> Result<ApprovalOutcome, StoreError>;

    /// The decision recorded at a run's approval gate, if any.
    async fn approval(&self, id: &RunId, stage: &str)
    -> Result<Option<ApprovalRecord>, StoreError>;

    /// Takes the lease `key` for `ttl` if it is free, expired, or already `holder`'s (then it is
    /// renewed); otherwise says who holds it until when.
    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError>;

    /// Extends the lease to `ttl` from now only if `holder` holds it, and holds it under
    /// `generation` when one is given: whether it did. [`Store::renew_lease`] is this without a
    /// generation, [`Store::confirm_lease`] with one.
    async fn extend_lease(
        &self,
        key: &str,
        holder: &str,
        generation: Option<u64>,
        ttl: Duration,
    ) -> Result<bool, StoreError>;

    /// Extends `holder`'s lease to `ttl` from now. `false` if the lease is no longer
    /// `holder`'s: someone else took it after it expired, or it was released. A lease past its
    /// expiry that nobody took is still renewed, since no one else held it in between.
    async fn renew_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.extend_lease(key, holder, None, ttl).await
    }

    /// The fencing check: extends the lease to `ttl` from now only if `holder` still holds it
    /// under `generation`, the one [`LeaseOutcome::Granted`] gave it. `false` once anyone
    /// (the same holder in another process too) acquired it since, or it was released. Run it
    /// right before each change that only the lease holder may make.
    async fn confirm_lease(
        &self,
        key: &str,
        holder: &str,
        generation: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.extend_lease(key, holder, Some(generation), ttl).await
    }

    /// Who holds the lease `key`, until when and under which generation, read consistently;
    /// `None` if nobody does (never taken, or released). An expired lease is returned as it
    /// is: whether it may be taken over is the caller's to judge.
    async fn lease(&self, key: &str) -> Result<Option<LeaseState>, StoreError>;

    /// Gives the lease up if `holder` has it; otherwise does nothing. The lease's generation
    /// is kept, so a later grant gets a higher one.
    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError>;

    /// Marks run `id` superseded (with `finished_at`) in one conditional write, only if it is
    /// queued, running or waiting and none of its stages from position `gate` on (0-based, in
    /// the run's order) has left `pending`: a run already past its gate is never touched.
    /// `true` if this call superseded it. Fails with [`StoreError::RunNotFound`] for an unknown
    /// run.
    async fn supersede_run(
        &self,
        id: &RunId,
        gate: usize,
        finished_at: &str,
    ) -> Result<bool, StoreError>;

    /// Makes a trigger (for example a release id) start at most one run: the first claim of
    /// `key` records `run` and returns `None`; every later claim returns `Some` of that first
    /// run, also when the same run claims again.
    async fn claim_trigger(&self, key: &str, run: &RunId) -> Result<Option<RunId>, StoreError>;

    /// Keeps the web session `id` (the cookie value; only its SHA-256 is stored) for `ttl`
    /// from now by the store's clock, replacing a session of the same id.
    async fn put_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// The session `id`, or `None` if there is none or it has expired by the store's clock.
    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError>;

    /// Ends the session `id` (signing out); nothing happens for an unknown one.
    async fn delete_session(&self, id: &str) -> Result<(), StoreError>;

    /// The clock this store measures leases and sessions against. Whoever writes the times of
    /// run records (stage starts and ends, approval deadlines) reads them from it too, so a
    /// test that moves it moves every time a run sees.
    fn clock(&self) -> Clock;
}

/// One line of a run listing (`history`, `status`): what a person scans for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: RunId,
    pub pipeline: String,
    pub status: RunStatus,
    pub git_ref: String,
    /// The trigger's commit, or the one the source stage resolved.
    pub sha: Option<String>,
    pub tag: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// The first stage not finished: where the run is, waits, or stopped; `None` once every
    /// stage succeeded or was skipped.
    pub current_stage: Option<String>,
}

/// What [`Store::decide_approval`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// This decision is the one that counts.
    Recorded,
    /// Someone decided first; this is their decision.
    AlreadyDecided(ApprovalRecord),
}

/// What [`Store::acquire_lease`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// The caller holds the lease until `expires_at` unless it renews it. `generation` is the
    /// fencing token: it grows with every grant, so a holder that lost the lease (even to
    /// itself in another process) is told so by [`Store::confirm_lease`].
    Granted {
        expires_at: DateTime<Utc>,
        generation: u64,
    },
    /// Someone else holds it.
    Held {
        by: String,
        expires_at: DateTime<Utc>,
    },
}

/// A lease as the store has it (see [`Store::lease`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    pub holder: String,
    pub expires_at: DateTime<Utc>,
    pub generation: u64,
}

/// Where a store lives, as given by `--store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `sqlite:PATH`, `sqlite://PATH` or a plain path.
    Sqlite(PathBuf),
    /// `dynamodb://TABLE`.
    DynamoDb { table: String },
}

impl StoreLocation {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(StoreError::UnknownUrl { url: url.into() });
            }
            return Ok(StoreLocation::Sqlite(PathBuf::from(path)));
        }
        if let Some(table) = url.strip_prefix("dynamodb://") {
            if table.is_empty() || table.contains('/') {
                return Err(StoreError::UnknownUrl { url: url.into() });
            }
            return Ok(StoreLocation::DynamoDb {
                table: table.into(),
            });
        }
        if url.is_empty() || url.contains("://") {
            return Err(StoreError::UnknownUrl { url: url.into() });
        }
        Ok(StoreLocation::Sqlite(PathBuf::from(url)))
    }
}

/// Opens the store `url` names (see [`StoreLocation::parse`]), creating an SQLite file and its
/// directory when missing. A DynamoDB table is reached with the environment's AWS configuration
/// and must exist (a missing one is reported with the command that creates it).
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match StoreLocation::parse(url)? {
        StoreLocation::Sqlite(path) => Ok(Arc::new(open_sqlite(&path)?)),
        StoreLocation::DynamoDb { table } => {
            Ok(Arc::new(DynamoDbStore::from_environment(&table).await?))
        }
    }
}

/// Opens (creating when missing, with its parent directories) the SQLite store at `path` and
/// brings its schema up to date. A damaged file, or one from a newer envelope-runner, is
/// reported and left as it is.
pub fn open_sqlite(path: &Path) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(path)
}

/// Checks every page of the SQLite store at `path` (`PRAGMA quick_check`) without changing
/// it. Opening checks them only after an unclean shutdown (see `sqlite/integrity.rs`).
pub fn check_sqlite(path: &Path) -> Result<(), StoreError> {
    sqlite::check(path)
}
