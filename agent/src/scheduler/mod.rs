//! Starting and resuming runs.
//!
//! - **One run per release.** A release is claimed in the store (`claim_trigger`) under
//!   `release:<owner/repo>:<release id>` with the id of the run about to be created; only the
//!   first claim anywhere creates a run. An agent that dies between the claim and the run
//!   record leaves an orphan claim; the run id in it is a ULID, so its age is known, and an
//!   old orphan is adopted by creating the run under exactly that id (`create_run` succeeds
//!   once).
//! - **One agent per run.** A run is worked on under the lease `run:<id>`, renewed while held.
//!   A run waiting at an approval gate holds no lease and no execution slot: it is parked, and
//!   resumed (by whichever agent gets the lease first) once the gate is decided or timed out.
//!   Runs left `queued`/`running` by an agent that stopped are resumed the same way once its
//!   lease is free: at once by an agent restarted under the same name, after the lease expires
//!   by any other.
//! - **A concurrency cap.** At most `concurrency` runs execute at once; the rest wait `queued`.
//! - **Shutdown.** Queued runs are let go at once; executing runs get a grace period, then their
//!   futures are dropped. The store already has each stage's state, so a stopped stage simply
//!   runs again when the run is resumed.
//!
//! This module owns the scheduler's state and what it is asked from outside; `offer` claims a
//! release and creates its run, `jobs` executes runs and stops them at shutdown, `recovery`
//! finds runs to resume.

mod jobs;
mod offer;
mod recovery;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use envelope_runner::pipeline::{self, CompiledPipeline};
use envelope_runner::report::EventSink;
use envelope_runner::run::RunId;
use envelope_runner::store::{Store, StoreError};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::release;
use crate::reporter::LogReporter;

/// Where runs come from, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Poll,
    Webhook,
}

impl Via {
    pub fn label(self) -> &'static str {
        match self {
            Via::Poll => "poll",
            Via::Webhook => "webhook",
        }
    }
}

/// What offering a release did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// This agent claimed the release and started run.
    Started(RunId),
    /// A run for this release exists already (started here or elsewhere, now or earlier).
    AlreadyStarted(RunId),
    /// Another agent (or this one) is creating the run right now; ask again later.
    Busy,
    /// The release cannot start the pipeline (the pipeline does not load or plan); the reason
    /// is logged.
    NotStartable(String),
}

impl std::fmt::Display for Offer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Offer::Started(run) => write!(formatter, "started run {run}"),
            Offer::AlreadyStarted(run) => write!(formatter, "run {run} exists already"),
            Offer::Busy => {
                formatter.write_str("its run is being created right now; polling finishes the job")
            }
            Offer::NotStartable(reason) => write!(formatter, "cannot start the pipeline: {reason}"),
        }
    }
}

impl Offer {
    /// Nothing more to do for this release.
    pub fn is_settled(&self) -> bool {
        !matches!(self, Offer::Busy)
    }
}

/// What the scheduler needs to know.
#[derive(Clone)]
pub struct SchedulerSettings {
    pub project: PathBuf,
    pub agent_id: String,
    pub cache_dir: PathBuf,
    pub concurrency: usize,
    /// Pipelines this agent runs; runs of other pipelines in a shared store are left alone.
    pub pipelines: BTreeSet<String>,
    /// The agent's own secret values (GitHub token, webhook secret, approver and metrics
    /// tokens): redacted from every run's output like the run's own secrets.
    pub secrets: Vec<envelope_runner::secret::Secret>,
    /// Where people reach the agent: run notifications link to `<public_url>/runs/<id>`.
    pub public_url: Option<String>,
    /// How long a run's lease (and a pipeline's deploy lock) lasts without renewal; an agent
    /// that vanishes frees its runs after this long. Renewed every third of it.
    pub lease_ttl: Duration,
}

/// Starts, executes, parks and resumes runs. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    settings: SchedulerSettings,
    permits: Arc<Semaphore>,
    jobs: Mutex<HashMap<RunId, Job>>,
    /// Claim keys being offered in this process right now.
    offering: Mutex<HashSet<String>>,
    /// Runs that failed to resume, and when to try again.
    retry_at: Mutex<HashMap<RunId, Instant>>,
    metrics: Arc<Metrics>,
    wake: Notify,
    jobs_changed: Notify,
    /// No new runs, queued ones let go.
    stopping: CancellationToken,
    /// Executing runs checkpoint their stage and stop (the driver's cancellation).
    cancel_runs: CancellationToken,
}

/// A run this process holds the lease of: queued for a slot or executing.
struct Job {
    executing: bool,
    events: Option<EventSink>,
    handle: Option<JoinHandle<()>>,
}

/// Lease key of a run.
fn lease_key(run: &RunId) -> String {
    format!("run:{run}")
}

impl Scheduler {
    pub fn new(store: Arc<dyn Store>, settings: SchedulerSettings, metrics: Arc<Metrics>) -> Self {
        Scheduler {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(settings.concurrency.max(1))),
                store,
                settings,
                jobs: Mutex::default(),
                offering: Mutex::default(),
                retry_at: Mutex::default(),
                metrics,
                wake: Notify::new(),
                jobs_changed: Notify::new(),
                stopping: CancellationToken::new(),
                cancel_runs: CancellationToken::new(),
            }),
        }
    }

    /// True once shutdown began.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.is_cancelled()
    }

    /// Look at waiting runs now (a decision was just recorded).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Runs this process is executing, and holding queued.
    pub fn job_counts(&self) -> (usize, usize) {
        let jobs = lock(&self.inner.jobs);
        let executing = jobs.values().filter(|job| job.executing).count();
        (executing, jobs.len() - executing)
    }

    /// When agents began watching `repository`: the first agent to ask records the time in
    /// the store (as the ULID of a claim), later ones and restarts read it back. Releases
    /// published before it existed already and start nothing.
    pub async fn watching_since(&self, repository: &str) -> Result<DateTime<Utc>, StoreError> {
        let marker = RunId::new();
        let first = self
            .inner
            .store
            .claim_trigger(&release::watch_key(repository), &marker)
            .await?
            .unwrap_or(marker);
        Ok(ulid_time(&first).unwrap_or_else(Utc::now))
    }

    /// The events of a run of `pipeline`, going to this agent's log with the agent's own
    /// secrets redacted.
    fn event_sink(&self, run: &RunId, pipeline: String) -> EventSink {
        let events = EventSink::new(Box::new(LogReporter::new(run.clone(), pipeline)));
        events.redactor().add_all(
            self.inner
                .settings
                .secrets
                .iter()
                .map(|secret| secret.expose()),
        );
        events
    }

    /// Load `pipelines/<name>.yaml` afresh, so that a run uses the pipeline as it is now.
    pub fn load_pipeline(&self, name: &str) -> Result<CompiledPipeline, String> {
        load_pipeline(&self.inner.settings.project, name)
    }
}

/// Load and compile the pipeline a run key names (`PIPELINE`, or `PIPELINE@ENVIRONMENT`: the
/// pipeline as it runs in that environment); errors rendered for a log line.
pub fn load_pipeline(project: &std::path::Path, key: &str) -> Result<CompiledPipeline, String> {
    let (name, environment) = pipeline::environment::split_run_key(key);
    let path = pipeline::find(project, name)?;
    pipeline::load(&path)
        .map_err(|diagnostics| diagnostics.render(false))?
        .in_environment(environment)
        .map_err(|error| error.to_string())
}

/// When a run id (a ULID) was made.
fn ulid_time(run: &RunId) -> Option<DateTime<Utc>> {
    let ulid = ulid::Ulid::from_string(&run.0.to_ascii_uppercase()).ok()?;
    DateTime::from_timestamp_millis(i64::try_from(ulid.timestamp_ms()).ok()?)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_tell_when_they_were_made() {
        let before = Utc::now() - chrono::Duration::seconds(1);
        let time = ulid_time(&RunId::new()).unwrap();
        assert!(time >= before && time <= Utc::now(), "{time}");
        assert_eq!(ulid_time(&RunId("not-a-ulid".into())), None);
    }
}
