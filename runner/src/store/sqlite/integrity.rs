//! When the SQLite store's pages are checked (`PRAGMA quick_check`), so that opening costs the
//! same with 10 runs as with 100,000.
//!
//! A whole-file check on every open made every command slower as history grew (65 ms for
//! 10,000 runs). Pages are now checked:
//!
//! - **after an unclean shutdown**: every process that opens the store holds a shared `flock`
//!   on the file for as long as it has it open (SQLite's own locks are `fcntl` locks, which
//!   `flock` does not touch on Linux). A process that can take the lock exclusively is the
//!   only one with the store open; if it then finds a non-empty `-wal` file, the last process
//!   did not close the store (SQLite deletes the log when the last connection closes), so it
//!   checks the pages before it uses them;
//! - **on demand**: [`check`], behind `envelope-runner store check`;
//! - **whenever SQLite reads a damaged page**: the query fails with `SQLITE_CORRUPT`, which
//!   `schema::sqlite_error` reports as [`StoreError::Corrupt`] with the same advice.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::super::error::StoreError;
use super::super::schema::sqlite_error;

/// How many `quick_check` problems to put in an error message.
const PROBLEMS_SHOWN: usize = 3;

/// The shared lock on the store file, held while a connection has the store open.
#[derive(Debug)]
pub(super) struct OpenLock {
    _file: File,
}

/// What opening found about the last process to use the store.
pub(super) enum LastClose {
    /// Another process has the store open, or the last one closed it cleanly.
    Clean,
    /// This process is alone and the last one left its write-ahead log behind.
    Unclean,
}

/// Takes the shared lock on the store file at `path` (which exists: SQLite has opened it),
/// after finding out, while briefly holding it exclusively, whether the last process to use
/// the store closed it.
pub(super) fn lock_open(path: &Path) -> Result<(OpenLock, LastClose), StoreError> {
    let io = |source: std::io::Error| StoreError::Corrupt {
        path: path.into(),
        detail: format!("cannot lock the file: {source}"),
    };
    let file = File::open(path).map_err(io)?;
    let last_close = match file.try_lock() {
        Ok(()) => {
            let last_close = if wal_left_behind(path) {
                LastClose::Unclean
            } else {
                LastClose::Clean
            };
            file.unlock().map_err(io)?;
            last_close
        }
        Err(std::fs::TryLockError::WouldBlock) => LastClose::Clean,
        Err(std::fs::TryLockError::Error(error)) => return Err(io(error)),
    };
    // Blocks only while another process that is alone checks the pages.
    file.lock_shared().map_err(io)?;
    Ok((OpenLock { _file: file }, last_close))
}

/// Whether a non-empty `<store>-wal` file is next to the store.
fn wal_left_behind(path: &Path) -> bool {
    let mut wal = PathBuf::from(path).into_os_string();
    wal.push("-wal");
    std::fs::metadata(wal).is_ok_and(|metadata| metadata.len() > 0)
}

/// `PRAGMA quick_check` of the store at `path`, without changing it: the b-tree structure of
/// every page, without the cost of checking index contents.
pub fn check(path: &Path) -> Result<(), StoreError> {
    // Read-write without create: a missing store is an error, and a read-only connection could
    // not replay a write-ahead log left behind. The check itself writes nothing.
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection =
        Connection::open_with_flags(path, flags).map_err(|source| sqlite_error(path, source))?;
    keep_file_as_is(&connection, true);
    quick_check(&connection, path)
}

/// Whether closing `connection` may copy its write-ahead log into the store file (SQLite does
/// when the last connection closes). Off while a store is not yet known to be intact, and
/// once it is known to be damaged, so that an error saying the file was not modified is true.
pub(super) fn keep_file_as_is(connection: &Connection, keep: bool) {
    // Fails only for an unknown option, which this one is not since SQLite 3.16.
    let _ = connection.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        keep,
    );
}

/// `PRAGMA quick_check` on an open connection.
pub(crate) fn quick_check(connection: &Connection, path: &Path) -> Result<(), StoreError> {
    let mut statement = connection
        .prepare("PRAGMA quick_check")
        .map_err(|source| sqlite_error(path, source))?;
    let problems = statement
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|source| sqlite_error(path, source))?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    let mut detail = problems
        .iter()
        .take(PROBLEMS_SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > PROBLEMS_SHOWN {
        detail.push_str(&format!("; and {} more", problems.len() - PROBLEMS_SHOWN));
    }
    Err(StoreError::Corrupt {
        path: path.into(),
        detail: format!("integrity check: {detail}"),
    })
}
