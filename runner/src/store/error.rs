//! What can go wrong with the state store, worded for the person running envelope-runner.

use std::path::PathBuf;

use crate::run::RunId;

/// Why a store operation failed. Every message names the store and says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the state store {} was written by a newer envelope-runner (store schema version {found}; this version supports up to {supported}); upgrade envelope-runner to use it. The file was not modified.",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "the state store {} is damaged ({detail}). The file was not modified. Move it aside (for example `mv {} {}.damaged`, together with any `-wal` and `-shm` files next to it) to start with an empty store, or restore it from a backup.",
        path.display(), path.display(), path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "{} is an SQLite database but not an envelope-runner state store. The file was not modified. Choose another path for the store (`--store sqlite:PATH`).",
        path.display()
    )]
    Foreign { path: PathBuf },
    #[error(
        "could not create the directory {} for the state store: {source}; check that the parent directory is writable",
        path.display()
    )]
    CreateDirectory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the state store {} stayed locked by another envelope-runner process for more than {seconds} s; retry, and look for a process that hangs while holding it",
        path.display()
    )]
    Busy { path: PathBuf, seconds: u64 },
    #[error("the state store {} failed: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the state store {} holds {what} that this version of envelope-runner cannot read ({detail}); the store itself was not modified",
        path.display()
    )]
    UnreadableRecord {
        path: PathBuf,
        what: String,
        detail: String,
    },
    #[error(
        "a run with id {id} already exists in the state store; start the run again to get a new id"
    )]
    RunExists { id: RunId },
    #[error(
        "no run with id {id} in the state store; `envelope-runner history PIPELINE` lists recent runs"
    )]
    RunNotFound { id: RunId },
    #[error("{what} is too large for the state store")]
    OutOfRange { what: String },
    #[error(
        "`{url}` is not a store this version of envelope-runner knows; use `sqlite:PATH` or a file path (default `.envelope/state.db`), or `dynamodb://TABLE` for a DynamoDB table"
    )]
    UnknownUrl { url: String },
    #[error(
        "the DynamoDB table `{table}` does not exist in {region}. Create it once (on-demand capacity, keys and indexes as envelope-runner expects) with:\n\n{command}\n\nor name an existing envelope-runner table with `--store dynamodb://TABLE`"
    )]
    TableMissing {
        table: String,
        region: String,
        command: String,
    },
    #[error(
        "the DynamoDB table `{table}` is not an envelope-runner state store: {detail}. Nothing was written to it; name another table with `--store dynamodb://TABLE` (a missing table is reported with the command that creates it)"
    )]
    ForeignTable { table: String, detail: String },
    #[error(
        "DynamoDB kept throttling the state store dynamodb://{table} while {operation}, also after retries with backoff; run the command again later, or give the table more capacity (or switch it to on-demand)"
    )]
    Throttled {
        table: String,
        operation: &'static str,
    },
    #[error("the state store dynamodb://{table} failed while {operation}: {detail}")]
    AwsCredentials {
        table: String,
        operation: &'static str,
        detail: String,
    },
    #[error("the state store dynamodb://{table} failed while {operation}: {detail}")]
    DynamoDb {
        table: String,
        operation: &'static str,
        detail: String,
    },
    /// The store's endpoint accepted the connection but did not answer in time: an
    /// environment error (exit code 6), not a damaged store.
    #[error("the state store dynamodb://{table} did not answer while {operation}: {detail}")]
    TimedOut {
        table: String,
        operation: &'static str,
        detail: String,
    },
    #[error("a state store operation on {} did not run because envelope-runner is shutting down; run the command again", path.display())]
    Interrupted { path: PathBuf },
}

impl StoreError {
    /// The process exit code for this error: a store that cannot be used is exit code 7,
    /// a store that was named wrongly is invalid input.
    pub fn exit_code(&self) -> i32 {
        match self {
            StoreError::UnknownUrl { .. } => crate::exit_codes::INVALID_INPUT,
            StoreError::RunNotFound { .. }
            | StoreError::RunExists { .. }
            | StoreError::OutOfRange { .. } => crate::exit_codes::INVALID_INPUT,
            // Missing or expired credentials: the environment, not the store, is at fault.
            StoreError::AwsCredentials { .. } => crate::exit_codes::ENVIRONMENT,
            StoreError::TimedOut { .. } => crate::exit_codes::ENVIRONMENT,
            _ => crate::exit_codes::STORE,
        }
    }
}
