//! The SQLite store's web sessions: one row per session in `sessions`, keyed by the SHA-256 of
//! the session id, with its expiry in milliseconds by the store's clock. Writing a session
//! first deletes the expired ones, so the table holds live sessions and few others.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::super::SessionRecord;
use super::Failure;

/// Replaces the session under `key` and drops every session expired at `now`.
pub(super) fn put(
    connection: &mut Connection,
    key: &str,
    session: &SessionRecord,
    expires: i64,
    now: i64,
) -> Result<(), Failure> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    transaction
        .prepare_cached("DELETE FROM sessions WHERE expires_at_ms <= ?1")?
        .execute([now])?;
    transaction
        .prepare_cached(
            "INSERT INTO sessions (key, approver, csrf, expires_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (key) DO UPDATE
                 SET approver = excluded.approver, csrf = excluded.csrf,
                     expires_at_ms = excluded.expires_at_ms",
        )?
        .execute(params![key, session.approver, session.csrf, expires])?;
    transaction.commit()?;
    Ok(())
}

/// The session under `key` if it has not expired at `now`.
pub(super) fn get(
    connection: &Connection,
    key: &str,
    now: i64,
) -> Result<Option<SessionRecord>, Failure> {
    Ok(connection
        .prepare_cached(
            "SELECT approver, csrf FROM sessions WHERE key = ?1 AND expires_at_ms > ?2",
        )?
        .query_row(params![key, now], |row| {
            Ok(SessionRecord {
                approver: row.get(0)?,
                csrf: row.get(1)?,
            })
        })
        .optional()?)
}

pub(super) fn delete(connection: &Connection, key: &str) -> Result<(), Failure> {
    connection
        .prepare_cached("DELETE FROM sessions WHERE key = ?1")?
        .execute([key])?;
    Ok(())
}
