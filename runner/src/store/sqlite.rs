//! The embedded store: one SQLite file shared by every envelope-runner process on the machine.
//!
//! Each `SqliteStore` owns one connection. Calls run on Tokio's blocking threads (SQLite may
//! wait up to the busy timeout for another process's write), one at a time per handle; other
//! processes, and other handles of this one, use their own connections. Writes that read
//! before they write (leases, approvals, claims, stage transitions) run in `BEGIN IMMEDIATE`
//! transactions: they take the write lock before reading, so two writers queue behind the busy
//! timeout instead of failing on a stale read snapshot. See `schema.rs` for the layout.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::clock::{Clock, duration_millis};
use super::codec::{self, enum_name, run_record_json, to_json};
use super::error::StoreError;
use super::schema::{self, BUSY_TIMEOUT_SECONDS, sqlite_error};
use super::sessions::session_key;
use super::{ApprovalOutcome, LeaseOutcome, LeaseState, RunSummary, SessionRecord, Store};
use crate::run::{ApprovalRecord, RunId, RunRecord, RunStatus, StageRecord};

mod fencing;
mod integrity;
mod sessions;

pub(super) use integrity::check;
pub(super) use integrity::quick_check;

/// Prepared statements kept per connection; every statement below fits.
const STATEMENT_CACHE: usize = 32;

/// The run state store in an SQLite file. Cheap to clone (clones share the connection).
/// Needs a Tokio runtime.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    shared: Arc<Shared>,
    clock: Clock,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    connection: Mutex<Connection>,
    /// Held as long as the connection, so a later process knows it is not alone.
    _open: integrity::OpenLock,
}

impl SqliteStore {
    pub(crate) fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDirectory {
                path: parent.into(),
                source,
            })?;
        }
        let sqlite = |source| sqlite_error(path, source);
        let mut connection = Connection::open(path).map_err(sqlite)?;
        connection
            .busy_timeout(Duration::from_secs(BUSY_TIMEOUT_SECONDS))
            .map_err(sqlite)?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        integrity::keep_file_as_is(&connection, true);
        let (open, last_close) = integrity::lock_open(path)?;
        let check_pages = matches!(last_close, integrity::LastClose::Unclean);
        // Switching a new file to WAL takes an exclusive lock for which SQLite does not wait
        // (it answers SQLITE_BUSY at once), so processes creating the store together retry.
        let deadline = std::time::Instant::now() + Duration::from_secs(BUSY_TIMEOUT_SECONDS);
        loop {
            match schema::check_and_migrate(&mut connection, path, check_pages) {
                Err(StoreError::Busy { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(15));
                }
                result => break result?,
            }
        }
        integrity::keep_file_as_is(&connection, false);
        connection
            .pragma_update(None, "foreign_keys", true)
            .map_err(sqlite)?;
        // FULL: a committed stage transition survives a power cut too, so a finished migration
        // or deploy is never forgotten and repeated. In WAL mode this costs one fsync of the log
        // per commit.
        connection
            .pragma_update(None, "synchronous", "full")
            .map_err(sqlite)?;
        Ok(SqliteStore {
            shared: Arc::new(Shared {
                path: path.into(),
                connection: Mutex::new(connection),
                _open: open,
            }),
            clock: Clock::system(),
        })
    }

    /// Measures leases and sessions against `clock` instead of the system clock, and hands it
    /// to whoever asks [`Store::clock`](super::Store::clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Runs `operation` on this handle's connection on a blocking thread.
    async fn with_connection<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        let outcome = tokio::task::spawn_blocking(move || {
            // A panic mid-operation dropped its transaction, which rolled it back: the
            // connection is still good.
            let mut connection = shared
                .connection
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let result = operation(&mut connection)
                .map_err(|failure| failure.into_store_error(&shared.path));
            if let Err(StoreError::Corrupt { .. }) = &result {
                integrity::keep_file_as_is(&connection, true);
            }
            result
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => Err(StoreError::Interrupted {
                    path: self.shared.path.clone(),
                }),
            },
        }
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn clock(&self) -> Clock {
        self.clock.clone()
    }

    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let run = run.clone();
        self.with_connection(move |connection| create_run(connection, &run))
            .await
    }

    async fn get_run(&self, id: &RunId) -> Result<Option<RunRecord>, StoreError> {
        let id = id.clone();
        self.with_connection(move |connection| get_run(connection, &id))
            .await
    }

    async fn save_stage(&self, id: &RunId, stage: &StageRecord) -> Result<(), StoreError> {
        let (id, stage) = (id.clone(), stage.clone());
        self.with_connection(move |connection| save_stage(connection, &id, &stage))
            .await
    }

    async fn set_run_status(
        &self,
        id: &RunId,
        status: RunStatus,
        finished_at: Option<&str>,
    ) -> Result<(), StoreError> {
        let id = id.clone();
        let finished_at = finished_at.map(str::to_owned);
        self.with_connection(move |connection| {
            let changed = connection
                .prepare_cached("UPDATE runs SET status = ?2, finished_at = ?3 WHERE id = ?1")?
                .execute(params![id.0, enum_name(&status), finished_at])?;
            if changed == 0 {
                return Err(StoreError::RunNotFound { id }.into());
            }
            Ok(())
        })
        .await
    }

    async fn list_runs(
        &self,
        pipeline: Option<&str>,
        limit: usize,
        before: Option<&RunId>,
    ) -> Result<Vec<RunSummary>, StoreError> {
        let pipeline = pipeline.map(str::to_owned);
        let before = before.cloned();
        self.with_connection(move |connection| {
            list_runs(connection, pipeline.as_deref(), limit, before.as_ref())
        })
        .await
    }

    async fn append_events(&self, id: &RunId, events: &[(u64, String)]) -> Result<(), StoreError> {
        let id = id.clone();
        let events = events
            .iter()
            .map(|(seq, line)| Ok((event_seq(*seq)?, line.clone())))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.with_connection(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut insert = transaction.prepare_cached(
                    "INSERT INTO events (run_id, seq, line) VALUES (?1, ?2, ?3)
                     ON CONFLICT (run_id, seq) DO UPDATE SET line = excluded.line",
                )?;
                for (seq, line) in &events {
                    insert.execute(params![id.0, seq, line])?;
                }
            }
            transaction.commit()?;
            Ok(())
        })
        .await
    }

    async fn events(
        &self,
        id: &RunId,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let id = id.clone();
        let after = after_seq.map(event_seq).transpose()?.unwrap_or(-1);
        self.with_connection(move |connection| {
            let mut select = connection.prepare_cached(
                "SELECT seq, line FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = select
                .query_map(params![id.0, after, sql_limit(limit)], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(seq, line)| {
                    let seq = u64::try_from(seq).map_err(|_| Failure::Unreadable {
                        what: format!("an event of run {id}"),
                        detail: format!("negative sequence number {seq}"),
                    })?;
                    Ok((seq, line))
                })
                .collect()
        })
        .await
    }

    async fn decide_approval(
        &self,
        id: &RunId,
        stage: &str,
        decision: &ApprovalRecord,
    ) -> Result<ApprovalOutcome, StoreError> {
        let (id, stage) = (id.clone(), stage.to_owned());
        let record = to_json(decision);
        self.with_connection(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            require_run(&transaction, &id)?;
            let inserted = transaction
                .prepare_cached(
                    "INSERT INTO approvals (run_id, stage, record) VALUES (?1, ?2, ?3)
                     ON CONFLICT (run_id, stage) DO NOTHING",
                )?
                .execute(params![id.0, stage, record])?;
            let outcome = if inserted == 1 {
                ApprovalOutcome::Recorded
            } else {
                // The insert found a decision in this same write transaction, so it is there.
                let existing = read_approval(&transaction, &id, &stage)?
                    .ok_or(Failure::Sqlite(rusqlite::Error::QueryReturnedNoRows))?;
                ApprovalOutcome::AlreadyDecided(existing)
            };
            transaction.commit()?;
            Ok(outcome)
        })
        .await
    }

    async fn approval(
        &self,
        id: &RunId,
        stage: &str,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let (id, stage) = (id.clone(), stage.to_owned());
        self.with_connection(move |connection| read_approval(connection, &id, &stage))
            .await
    }

    async fn acquire_lease(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        let now = self.clock.now_millis();
        let expires = now.saturating_add(duration_millis(ttl));
        self.with_connection(move |connection| {
            fencing::acquire(connection, &key, &holder, expires, now)
        })
        .await
    }

    async fn extend_lease(
        &self,
        key: &str,
        holder: &str,
        generation: Option<u64>,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        let expires = self.clock.now_millis().saturating_add(duration_millis(ttl));
        self.with_connection(move |connection| {
            fencing::extend(connection, &key, &holder, generation, expires)
        })
        .await
    }

    async fn lease(&self, key: &str) -> Result<Option<LeaseState>, StoreError> {
        let key = key.to_owned();
        self.with_connection(move |connection| fencing::read(connection, &key))
            .await
    }

    async fn release_lease(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let (key, holder) = (key.to_owned(), holder.to_owned());
        self.with_connection(move |connection| fencing::release(connection, &key, &holder))
            .await
    }

    async fn supersede_run(
        &self,
        id: &RunId,
        gate: usize,
        finished_at: &str,
    ) -> Result<bool, StoreError> {
        let (id, finished_at) = (id.clone(), finished_at.to_owned());
        self.with_connection(move |connection| {
            fencing::supersede(connection, &id, gate, &finished_at)
        })
        .await
    }

    async fn claim_trigger(&self, key: &str, run: &RunId) -> Result<Option<RunId>, StoreError> {
        let (key, run) = (key.to_owned(), run.clone());
        let now = self.clock.now_millis();
        self.with_connection(move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let claimed = transaction
                .prepare_cached(
                    "INSERT INTO trigger_claims (key, run_id, claimed_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO NOTHING",
                )?
                .execute(params![key, run.0, now])?;
            let existing = if claimed == 1 {
                None
            } else {
                let first: String = transaction
                    .prepare_cached("SELECT run_id FROM trigger_claims WHERE key = ?1")?
                    .query_row([&key], |row| row.get(0))?;
                Some(RunId(first))
            };
            transaction.commit()?;
            Ok(existing)
        })
        .await
    }

    async fn put_session(
        &self,
        id: &str,
        session: &SessionRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let (key, session) = (session_key(id), session.clone());
        let now = self.clock.now_millis();
        let expires = now.saturating_add(duration_millis(ttl));
        self.with_connection(move |connection| {
            sessions::put(connection, &key, &session, expires, now)
        })
        .await
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let key = session_key(id);
        let now = self.clock.now_millis();
        self.with_connection(move |connection| sessions::get(connection, &key, now))
            .await
    }

    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        let key = session_key(id);
        self.with_connection(move |connection| sessions::delete(connection, &key))
            .await
    }
}

fn create_run(connection: &mut Connection, run: &RunRecord) -> Result<(), Failure> {
    let record = run_record_json(run);
    let sha = run.trigger.sha.clone().or_else(|| {
        run.stages
            .iter()
            .find_map(|stage| stage.outputs.sha.clone())
    });
    let current_stage = run.next_stage().map(|stage| stage.name.clone());
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let inserted = transaction
        .prepare_cached(
            "INSERT INTO runs (id, pipeline, status, created_at, finished_at, git_ref, sha, tag,
                               current_stage, record)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (id) DO NOTHING",
        )?
        .execute(params![
            run.id.0,
            run.pipeline,
            enum_name(&run.status),
            run.created_at,
            run.finished_at,
            run.trigger.git_ref,
            sha,
            run.trigger.tag,
            current_stage,
            record,
        ])?;
    if inserted == 0 {
        return Err(StoreError::RunExists { id: run.id.clone() }.into());
    }
    {
        let mut insert = transaction.prepare_cached(
            "INSERT INTO stages (run_id, name, position, finished, record)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (position, stage) in run.stages.iter().enumerate() {
            insert.execute(params![
                run.id.0,
                stage.name,
                i64::try_from(position).unwrap_or(i64::MAX),
                stage.status.is_finished(),
                to_json(stage),
            ])?;
        }
    }
    transaction.commit()?;
    Ok(())
}

fn get_run(connection: &mut Connection, id: &RunId) -> Result<Option<RunRecord>, Failure> {
    // One read transaction: the run and its stages come from the same snapshot.
    let transaction = connection.transaction()?;
    let row = transaction
        .prepare_cached("SELECT status, finished_at, record FROM runs WHERE id = ?1")?
        .query_row([&id.0], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Option<String>>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .optional()?;
    let Some((status, finished_at, record)) = row else {
        return Ok(None);
    };
    let what = || format!("run {id}");
    let mut value: Value = from_json(&record, what)?;
    if let Some(object) = value.as_object_mut() {
        object.insert("status".into(), Value::String(status));
        object.insert("stages".into(), Value::Array(Vec::new()));
    }
    let mut run: RunRecord =
        serde_json::from_value(value).map_err(|error| Failure::Unreadable {
            what: what(),
            detail: error.to_string(),
        })?;
    run.finished_at = finished_at;
    let stages = transaction
        .prepare_cached("SELECT name, record FROM stages WHERE run_id = ?1 ORDER BY position")?
        .query_map([&id.0], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    run.stages = stages
        .into_iter()
        .map(|(name, record)| from_json(&record, || format!("stage `{name}` of run {id}")))
        .collect::<Result<_, _>>()?;
    transaction.finish()?;
    Ok(Some(run))
}

fn save_stage(connection: &mut Connection, id: &RunId, stage: &StageRecord) -> Result<(), Failure> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    require_run(&transaction, id)?;
    transaction
        .prepare_cached(
            "INSERT INTO stages (run_id, name, position, finished, record)
             VALUES (?1, ?2,
                     (SELECT coalesce(max(position) + 1, 0) FROM stages WHERE run_id = ?1),
                     ?3, ?4)
             ON CONFLICT (run_id, name) DO UPDATE
                 SET finished = excluded.finished, record = excluded.record",
        )?
        .execute(params![
            id.0,
            stage.name,
            stage.status.is_finished(),
            to_json(stage)
        ])?;
    transaction
        .prepare_cached(
            "UPDATE runs SET
                 current_stage = (SELECT name FROM stages WHERE run_id = ?1 AND finished = 0
                                  ORDER BY position LIMIT 1),
                 sha = coalesce(sha, ?2)
             WHERE id = ?1",
        )?
        .execute(params![id.0, stage.outputs.sha])?;
    transaction.commit()?;
    Ok(())
}

fn list_runs(
    connection: &Connection,
    pipeline: Option<&str>,
    limit: usize,
    before: Option<&RunId>,
) -> Result<Vec<RunSummary>, Failure> {
    // Each filter combination gets its own statement, so SQLite plans it with the right index
    // (`runs_by_pipeline`, or the primary key) instead of one plan for all of them.
    let mut conditions = Vec::new();
    let mut values: Vec<&dyn ToSql> = Vec::new();
    if let Some(pipeline) = &pipeline {
        values.push(pipeline);
        conditions.push(format!("pipeline = ?{}", values.len()));
    }
    if let Some(before) = &before {
        values.push(&before.0);
        conditions.push(format!("id < ?{}", values.len()));
    }
    let limit = sql_limit(limit);
    values.push(&limit);
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT id, pipeline, status, git_ref, sha, tag, created_at, finished_at, current_stage
         FROM runs {filter} ORDER BY id DESC LIMIT ?{}",
        values.len()
    );
    let mut select = connection.prepare_cached(&sql)?;
    let rows = select.query_map(values.as_slice(), |row| {
        Ok((
            RunId(row.get(0)?),
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, Option<String>>(4)?,
            row.get::<_, Option<String>>(5)?,
            row.get::<_, String>(6)?,
            row.get::<_, Option<String>>(7)?,
            row.get::<_, Option<String>>(8)?,
        ))
    })?;
    let mut summaries = Vec::new();
    for row in rows {
        let (id, pipeline, status, git_ref, sha, tag, created_at, finished_at, current_stage) =
            row?;
        let status = enum_from_name(&status, || format!("run {id}"))?;
        summaries.push(RunSummary {
            id,
            pipeline,
            status,
            git_ref,
            sha,
            tag,
            created_at,
            finished_at,
            current_stage,
        });
    }
    Ok(summaries)
}

fn require_run(connection: &Connection, id: &RunId) -> Result<(), Failure> {
    let exists = connection
        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")?
        .exists([&id.0])?;
    if exists {
        Ok(())
    } else {
        Err(StoreError::RunNotFound { id: id.clone() }.into())
    }
}

fn read_approval(
    connection: &Connection,
    id: &RunId,
    stage: &str,
) -> Result<Option<ApprovalRecord>, Failure> {
    let record: Option<String> = connection
        .prepare_cached("SELECT record FROM approvals WHERE run_id = ?1 AND stage = ?2")?
        .query_row(params![id.0, stage], |row| row.get(0))
        .optional()?;
    record
        .map(|record| {
            from_json(&record, || {
                format!("the approval of stage `{stage}` of run {id}")
            })
        })
        .transpose()
}

fn from_json<T: DeserializeOwned>(json: &str, what: impl FnOnce() -> String) -> Result<T, Failure> {
    codec::from_json(json).map_err(|detail| Failure::Unreadable {
        what: what(),
        detail,
    })
}

fn enum_from_name<T: DeserializeOwned>(
    name: &str,
    what: impl FnOnce() -> String,
) -> Result<T, Failure> {
    codec::enum_from_name(name).ok_or_else(|| Failure::Unreadable {
        what: what(),
        detail: format!("unknown status `{name}`"),
    })
}

fn event_seq(seq: u64) -> Result<i64, StoreError> {
    i64::try_from(seq).map_err(|_| StoreError::OutOfRange {
        what: format!("event sequence number {seq}"),
    })
}

fn sql_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Why an operation on the connection failed, before the store's path is attached.
#[derive(Debug)]
enum Failure {
    Sqlite(rusqlite::Error),
    Store(StoreError),
    Unreadable { what: String, detail: String },
}

impl Failure {
    fn into_store_error(self, path: &Path) -> StoreError {
        match self {
            Failure::Sqlite(source) => sqlite_error(path, source),
            Failure::Store(error) => error,
            Failure::Unreadable { what, detail } => StoreError::UnreadableRecord {
                path: path.into(),
                what,
                detail,
            },
        }
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(error: rusqlite::Error) -> Self {
        Failure::Sqlite(error)
    }
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        Failure::Store(error)
    }
}
