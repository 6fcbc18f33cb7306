//! The SQLite store's schema and its versioned migrations.
//!
//! `PRAGMA user_version` holds the number of migration steps applied; `PRAGMA application_id`
//! marks the file as ours. Opening checks, in an order that writes nothing until the file is
//! known to be ours, intact and not newer than this build:
//!
//! 1. read the header (garbage bytes fail here: damaged);
//! 2. a file with tables but not our application id is someone else's database;
//! 3. a schema version above [`SUPPORTED_VERSION`] is from a newer envelope-runner;
//! 4. `PRAGMA quick_check` of an existing store when the caller asks for it (after an unclean
//!    shutdown, see `sqlite/integrity.rs`; damaged pages fail here);
//! 5. only then switch to WAL and apply the missing steps, in one `BEGIN IMMEDIATE`
//!    transaction, re-reading the version inside it (another process may have migrated first).
//!
//! # Layout (version 1) and why
//!
//! - `runs`: one row per run. What a listing shows and filters on is in columns (pipeline,
//!   status, created_at, git_ref, sha, tag, current_stage), so `list_runs` reads one index and
//!   no JSON; rows are keyed by the run id, a ULID that sorts by start time, so "newest first"
//!   is a backwards walk of the primary key (or of `runs_by_pipeline` for one pipeline) that
//!   stops after `limit` rows however many runs there are. The rest of the record (the trigger,
//!   and fields added to `RunRecord` later) is JSON in `record`, which keeps old rows readable
//!   as the record grows. Mutable fields (status, finished_at) live only in their columns.
//! - `stages`: one row per stage, JSON `record`, with `position` for order and `finished` for
//!   the current stage. A stage transition is then one small upsert instead of
//!   read-decode-modify-rewrite of a whole run, and it maps onto one DynamoDB item per stage.
//!   `runs.current_stage` is derived from it in the same transaction.
//! - `events`, `approvals`, `leases`, `trigger_claims`: keyed exactly as the conditional writes
//!   in the `Store` contract address them.
//!
//! Version 2 adds `leases.generation` (the fencing token; 0 for leases written by version 1,
//! so their next grant is generation 1).
//!
//! Version 3 adds `sessions`: web sign-in sessions keyed by the SHA-256 of their id, with the
//! expiry (by the store's clock) indexed so expired ones are deleted cheaply.

use std::path::Path;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use super::error::StoreError;

/// `PRAGMA application_id` of an envelope-runner store: "ENVR".
pub(crate) const APPLICATION_ID: i64 = 0x454e_5652;

/// One step per schema version; step `i` takes a store from version `i` to `i + 1`. Append
/// only: a released step is never edited.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: runs, stages, events, approvals, leases, trigger claims.
    "
    CREATE TABLE runs (
        id            TEXT PRIMARY KEY NOT NULL,
        pipeline      TEXT NOT NULL,
        status        TEXT NOT NULL,
        created_at    TEXT NOT NULL,
        finished_at   TEXT,
        git_ref       TEXT NOT NULL,
        sha           TEXT,
        tag           TEXT,
        current_stage TEXT,
        record        TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX runs_by_pipeline ON runs (pipeline, id);
    CREATE INDEX runs_by_status ON runs (status, id);

    CREATE TABLE stages (
        run_id   TEXT NOT NULL REFERENCES runs (id),
        name     TEXT NOT NULL,
        position INTEGER NOT NULL,
        finished INTEGER NOT NULL,
        record   TEXT NOT NULL,
        PRIMARY KEY (run_id, name)
    ) WITHOUT ROWID;

    CREATE TABLE events (
        run_id TEXT NOT NULL,
        seq    INTEGER NOT NULL,
        line   TEXT NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID;

    CREATE TABLE approvals (
        run_id TEXT NOT NULL REFERENCES runs (id),
        stage  TEXT NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (run_id, stage)
    ) WITHOUT ROWID;

    CREATE TABLE leases (
        key           TEXT PRIMARY KEY NOT NULL,
        holder        TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE trigger_claims (
        key           TEXT PRIMARY KEY NOT NULL,
        run_id        TEXT NOT NULL,
        claimed_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    ",
    // 2: a lease's generation, the fencing token that grows with every grant.
    "
    ALTER TABLE leases ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    ",
    // 3: web sign-in sessions, under the SHA-256 of their id.
    "
    CREATE TABLE sessions (
        key           TEXT PRIMARY KEY NOT NULL,
        approver      TEXT,
        csrf          TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX sessions_by_expiry ON sessions (expires_at_ms);
    ",
];

/// The newest schema this build reads and writes.
pub(crate) const SUPPORTED_VERSION: i64 = MIGRATIONS.len() as i64;

/// Checks that the file at `path` is an envelope-runner store no newer than this build (and,
/// with `check_pages`, that its pages are intact), then switches it to WAL and migrates it.
/// Writes nothing before the checks pass.
pub(crate) fn check_and_migrate(
    connection: &mut Connection,
    path: &Path,
    check_pages: bool,
) -> Result<(), StoreError> {
    let sqlite = |source| sqlite_error(path, source);
    let (version, application_id, tables) = {
        // One read snapshot: a store that another process is creating right now is seen before
        // or after its first migration, never half-way (as a database of someone else's).
        let snapshot = connection.transaction().map_err(sqlite)?;
        let version: i64 = snapshot
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(sqlite)?;
        let application_id: i64 = snapshot
            .pragma_query_value(None, "application_id", |row| row.get(0))
            .map_err(sqlite)?;
        let tables: i64 = snapshot
            .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
            .map_err(sqlite)?;
        snapshot.finish().map_err(sqlite)?;
        (version, application_id, tables)
    };
    let fresh = version == 0 && application_id == 0 && tables == 0;
    if application_id != APPLICATION_ID && !fresh {
        return Err(StoreError::Foreign { path: path.into() });
    }
    if version > SUPPORTED_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.into(),
            found: version,
            supported: SUPPORTED_VERSION,
        });
    }
    if version > 0 && check_pages {
        super::sqlite::quick_check(connection, path)?;
    }

    // WAL lets readers (a `status` in another terminal) run while a run writes, and makes a
    // commit one append to the log.
    connection
        .pragma_update(None, "journal_mode", "wal")
        .map_err(sqlite)?;
    if version == SUPPORTED_VERSION {
        return Ok(());
    }

    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let version: i64 = transaction
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(sqlite)?;
    if version > SUPPORTED_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.into(),
            found: version,
            supported: SUPPORTED_VERSION,
        });
    }
    for step in &MIGRATIONS[usize::try_from(version).unwrap_or(0)..] {
        transaction.execute_batch(step).map_err(sqlite)?;
    }
    transaction
        .pragma_update(None, "application_id", APPLICATION_ID)
        .map_err(sqlite)?;
    transaction
        .pragma_update(None, "user_version", SUPPORTED_VERSION)
        .map_err(sqlite)?;
    transaction.commit().map_err(sqlite)
}

/// How long a write waits for another process's write to finish before giving up.
pub(crate) const BUSY_TIMEOUT_SECONDS: u64 = 10;

/// Turns an SQLite error into the store error a person can act on.
pub(crate) fn sqlite_error(path: &Path, source: rusqlite::Error) -> StoreError {
    match source.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy {
            path: path.into(),
            seconds: BUSY_TIMEOUT_SECONDS,
        },
        Some(ErrorCode::NotADatabase) => StoreError::Corrupt {
            path: path.into(),
            detail: "it is not an SQLite database".into(),
        },
        Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
            path: path.into(),
            detail: source.to_string(),
        },
        _ => StoreError::Sqlite {
            path: path.into(),
            source,
        },
    }
}
