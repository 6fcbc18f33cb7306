//! `check-store`: every page of the SQLite run store read once (`PRAGMA quick_check`), the file
//! left as it is. Opening the store checks pages only after an unclean shutdown (see
//! `store/sqlite/integrity.rs`), so this is the on-demand check.

use std::io::Write;
use std::path::Path;

use super::shared::{store_failed, store_url};
use crate::cli::StoreArgs;
use crate::exit_codes;
use crate::store::{self, StoreLocation};

pub(super) fn check_store(project: &Path, args: &StoreArgs, stdout: &mut dyn Write) -> i32 {
    let url = store_url(project, args);
    let path = match StoreLocation::parse(&url) {
        Ok(StoreLocation::Sqlite(path)) => path,
        Ok(StoreLocation::DynamoDb { table }) => {
            let _ = writeln!(
                stdout,
                "dynamodb://{table}: DynamoDB keeps its own data intact; there is nothing to check"
            );
            return exit_codes::OK;
        }
        Err(error) => return store_failed(error),
    };
    if !path.is_file() {
        eprintln!(
            "error: there is no run store at {}: pass --store, or run from the project root (or --project DIR)",
            path.display()
        );
        return exit_codes::INVALID_INPUT;
    }
    match store::check_sqlite(&path) {
        Ok(()) => {
            let _ = writeln!(stdout, "{}: every page is intact", path.display());
            exit_codes::OK
        }
        Err(error) => store_failed(error),
    }
}
