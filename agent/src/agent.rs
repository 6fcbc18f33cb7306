//! One agent: the store, the scheduler, the poller and the HTTP server, started together and
//! stopped in order (polling first, then runs, then the server). Callable in-process, more
//! than once, which is how the tests run several agents on one store.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use envelope_runner::store::{self, Store};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::approval_rules::ApprovalRules;
use crate::config::{Credentials, Settings, WatchedRepository};
use crate::github::GithubClient;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::poller::Poller;
use crate::scheduler::{Scheduler, SchedulerSettings, load_pipeline};
use crate::web::{self, App, session::Sessions};

/// Why the agent could not start. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(
        "repository {repository} names pipeline `{pipeline}`, which cannot be used:\n{message}"
    )]
    Pipeline {
        repository: String,
        pipeline: String,
        message: String,
    },
    #[error(transparent)]
    Github(#[from] crate::github::GithubError),
    #[error(
        "cannot listen on {address}: {source}; choose another `listen:` address or stop what uses it"
    )]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
}

impl StartError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        use envelope_runner::exit_codes;
        match self {
            StartError::Store(error) => error.exit_code(),
            StartError::Pipeline { .. } => exit_codes::INVALID_INPUT,
            StartError::Github(_) | StartError::Listen { .. } => exit_codes::ENVIRONMENT,
        }
    }
}

/// A started agent.
pub struct Agent {
    address: SocketAddr,
    scheduler: Scheduler,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    grace: std::time::Duration,
    stop_polling: CancellationToken,
    stop_server: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Check the pipelines, open the store, bind the listener and start polling, recovery
    /// and the server. Must run inside a Tokio runtime.
    pub async fn start(settings: Settings, credentials: Credentials) -> Result<Agent, StartError> {
        check_pipelines(&settings)?;
        let store = store::open(&settings.store).await?;
        Agent::start_with_store(settings, credentials, store).await
    }

    /// [`Agent::start`] with a store opened by the caller (tests, embedders).
    pub async fn start_with_store(
        settings: Settings,
        credentials: Credentials,
        store: Arc<dyn Store>,
    ) -> Result<Agent, StartError> {
        let mut repositories = Vec::new();
        let mut pipelines = BTreeSet::new();
        let mut docker_needed = false;
        for repository in &settings.repositories {
            let compiled = repository_pipeline(&settings, repository)?;
            let patterns = repository
                .tags
                .clone()
                .unwrap_or_else(|| compiled.pipeline.source.tags.clone());
            pipelines.insert(compiled.run_key());
            docker_needed |=
                compiled.pipeline.stages.iter().any(|stage| {
                    matches!(stage, envelope_runner::pipeline::model::Stage::Build(_))
                });
            repositories.push((repository.clone(), patterns));
        }
        let agent_id = settings.agent_id.clone().unwrap_or_else(host_name);
        let metrics = Arc::new(Metrics::new());
        let scheduler = Scheduler::new(
            store.clone(),
            SchedulerSettings {
                project: settings.project.clone(),
                agent_id: agent_id.clone(),
                cache_dir: settings.cache_dir.clone().unwrap_or_else(default_cache_dir),
                concurrency: settings.concurrency,
                lease_ttl: settings.lease_ttl,
                pipelines,
                secrets: credentials
                    .github_token
                    .iter()
                    .chain(&credentials.webhook_secret)
                    .chain(credentials.approvers.iter().map(|(_, token)| token))
                    .chain(&credentials.metrics_token)
                    .cloned()
                    .collect(),
                public_url: settings.public_url.clone(),
            },
            metrics.clone(),
        );
        let github =
            GithubClient::new(&settings.github.api_url, credentials.github_token.as_ref())?;
        let interval = settings.effective_poll_interval();
        if interval > settings.github.poll_interval {
            tracing::warn!(
                "polling {} repositories every {}s would make {:.0} requests an hour, over the budget of {} (github.max_requests_per_hour); each repository is polled every {}s instead. Release webhooks start runs without waiting for a poll.",
                settings.repositories.len(),
                settings.github.poll_interval.as_secs_f64(),
                settings.repositories.len() as f64 * 3600.0
                    / settings.github.poll_interval.as_secs_f64(),
                settings.github.max_requests_per_hour,
                interval.as_secs_f64()
            );
        }
        if credentials.github_token.is_none() {
            tracing::warn!(
                "{} is not set: GitHub is polled without a token (60 requests an hour, public repositories only)",
                settings.github.token_env
            );
        }
        if credentials.approvers.is_empty() {
            tracing::warn!("no approvers are configured: nobody can sign in to the web UI");
        }
        let poller = Arc::new(Poller::new(
            github,
            scheduler.clone(),
            metrics.clone(),
            repositories,
            interval,
        ));
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| StartError::Listen {
                    address: settings.listen,
                    source,
                })?;
        let address = listener.local_addr().map_err(|source| StartError::Listen {
            address: settings.listen,
            source,
        })?;
        let app = Arc::new(App {
            store: store.clone(),
            scheduler: scheduler.clone(),
            poller: poller.clone(),
            sessions: Sessions::new(
                store.clone(),
                &credentials.approvers,
                credentials.metrics_token.as_ref(),
                settings.session_ttl,
                settings.secure_cookies(),
            ),
            login_backoff: web::LoginBackoff::default(),
            rules: ApprovalRules::new(&settings),
            health: Health::new(store.clone(), poller.clone(), docker_needed, interval),
            metrics: metrics.clone(),
            webhook_secret: credentials.webhook_secret.clone(),
            project: settings.project.clone(),
        });
        let stop_polling = CancellationToken::new();
        let stop_server = CancellationToken::new();
        let tasks = vec![
            tokio::spawn(web::run(listener, web::router(app), stop_server.clone())),
            tokio::spawn(poller.run(stop_polling.clone())),
            tokio::spawn({
                let scheduler = scheduler.clone();
                let interval = settings.approval_poll;
                async move { scheduler.recovery_loop(interval).await }
            }),
        ];
        tracing::info!(
            agent = %agent_id,
            "envelope-agent {} listening on http://{address}, watching {} repositories every {}s, store {}",
            env!("CARGO_PKG_VERSION"),
            settings.repositories.len(),
            interval.as_secs_f64(),
            settings.store
        );
        Ok(Agent {
            address,
            scheduler,
            store,
            metrics,
            grace: settings.shutdown_grace,
            stop_polling,
            stop_server,
            tasks,
        })
    }

    /// Where the HTTP server listens (the real port when the configuration said `:0`).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stop polling, give running stages the grace period, stop the rest, close the server.
    pub async fn shutdown(self) {
        tracing::info!(
            "stopping: no more polling; running stages get {}s to finish",
            self.grace.as_secs()
        );
        self.stop_polling.cancel();
        self.scheduler.shutdown(self.grace).await;
        self.stop_server.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        tracing::info!("stopped");
    }
}

/// The pipeline a watched repository runs, compiled.
fn repository_pipeline(
    settings: &Settings,
    repository: &WatchedRepository,
) -> Result<envelope_runner::pipeline::CompiledPipeline, StartError> {
    load_pipeline(&settings.project, &repository.run_key()).map_err(|message| {
        StartError::Pipeline {
            repository: repository.repository.clone(),
            pipeline: repository.pipeline.clone(),
            message,
        }
    })
}

/// Every repository's pipeline loads.
fn check_pipelines(settings: &Settings) -> Result<(), StartError> {
    for repository in &settings.repositories {
        repository_pipeline(settings, repository)?;
    }
    Ok(())
}

/// This machine's name, the default agent id.
fn host_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "envelope-agent".to_owned())
}

/// Where mirrors and checkouts go when the configuration names no folder; the same place the
/// runner's CLI uses.
fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("envelope-runner")
}
