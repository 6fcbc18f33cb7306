//! The SQLite store's lease and superseding writes: leases with a generation (the fencing
//! token), and superseding a run only while it is before its gate. Each is one statement (or
//! one `BEGIN IMMEDIATE` transaction), the condition DynamoDB checks in its conditional write.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::super::clock::from_millis;
use super::super::{LeaseOutcome, LeaseState};
use super::{Failure, enum_name, require_run};
use crate::run::{RunId, RunStatus, StageStatus};

/// Takes the lease if free, expired, or already `holder`'s, with the next generation.
pub(super) fn acquire(
    connection: &mut Connection,
    key: &str,
    holder: &str,
    expires: i64,
    now: i64,
) -> Result<LeaseOutcome, Failure> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // The condition DynamoDB would check: free, expired, or already ours.
    let taken = transaction
        .prepare_cached(
            "INSERT INTO leases (key, holder, expires_at_ms, generation) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT (key) DO UPDATE
                 SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms,
                     generation = leases.generation + 1
                 WHERE leases.holder = excluded.holder OR leases.expires_at_ms <= ?4",
        )?
        .execute(params![key, holder, expires, now])?;
    let (by, expires_at, generation): (String, i64, i64) = transaction
        .prepare_cached("SELECT holder, expires_at_ms, generation FROM leases WHERE key = ?1")?
        .query_row([key], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
    transaction.commit()?;
    Ok(if taken == 1 {
        LeaseOutcome::Granted {
            expires_at: from_millis(expires_at),
            generation: u64::try_from(generation).unwrap_or(0),
        }
    } else {
        LeaseOutcome::Held {
            by,
            expires_at: from_millis(expires_at),
        }
    })
}

/// Extends the lease only if `holder` holds it, under `generation` when one is given.
pub(super) fn extend(
    connection: &mut Connection,
    key: &str,
    holder: &str,
    generation: Option<u64>,
    expires: i64,
) -> Result<bool, Failure> {
    let generation = generation.map(|generation| i64::try_from(generation).unwrap_or(i64::MAX));
    let extended = connection
        .prepare_cached(
            "UPDATE leases SET expires_at_ms = ?4
             WHERE key = ?1 AND holder = ?2 AND (?3 IS NULL OR generation = ?3)",
        )?
        .execute(params![key, holder, generation, expires])?;
    Ok(extended == 1)
}

/// The lease `key` if someone holds it (a released lease has an empty holder).
pub(super) fn read(connection: &mut Connection, key: &str) -> Result<Option<LeaseState>, Failure> {
    let row: Option<(String, i64, i64)> = connection
        .prepare_cached("SELECT holder, expires_at_ms, generation FROM leases WHERE key = ?1")?
        .query_row([key], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    Ok(row
        .filter(|(holder, _, _)| !holder.is_empty())
        .map(|(holder, expires_at, generation)| LeaseState {
            holder,
            expires_at: from_millis(expires_at),
            generation: u64::try_from(generation).unwrap_or(0),
        }))
}

/// Frees the lease if `holder` has it, keeping its generation.
pub(super) fn release(connection: &mut Connection, key: &str, holder: &str) -> Result<(), Failure> {
    connection
        .prepare_cached(
            "UPDATE leases SET holder = '', expires_at_ms = 0 WHERE key = ?1 AND holder = ?2",
        )?
        .execute(params![key, holder])?;
    Ok(())
}

/// Marks a run superseded only while it is queued, running or waiting and no stage from
/// position `gate` on has left `pending`, in one statement.
pub(super) fn supersede(
    connection: &mut Connection,
    id: &RunId,
    gate: usize,
    finished_at: &str,
) -> Result<bool, Failure> {
    let gate = i64::try_from(gate).unwrap_or(i64::MAX);
    let changed = connection
        .prepare_cached(
            "UPDATE runs SET status = ?3, finished_at = ?4
             WHERE id = ?1 AND status IN (?5, ?6, ?7)
               AND NOT EXISTS (SELECT 1 FROM stages
                               WHERE run_id = ?1 AND position >= ?2
                                 AND json_extract(record, '$.status') != ?8)",
        )?
        .execute(params![
            id.0,
            gate,
            enum_name(&RunStatus::Superseded),
            finished_at,
            enum_name(&RunStatus::Queued),
            enum_name(&RunStatus::Running),
            enum_name(&RunStatus::Waiting),
            enum_name(&StageStatus::Pending),
        ])?;
    if changed == 0 {
        // Unknown runs are an error; known ones were past the gate or finished.
        require_run(connection, id)?;
    }
    Ok(changed == 1)
}
