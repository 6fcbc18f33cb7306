//! The agent's configuration file: which repositories start which pipelines, where runs are
//! kept, how GitHub is polled, and who may approve.
//!
//! Parsing reuses the runner's front end: the YAML becomes a located tree, the tree is checked
//! against the JSON Schema derived from [`ConfigFile`] (unknown keys are errors with a
//! suggestion, at `file:line:col`), then the meaning is checked. Only [`load`] reads a file;
//! [`parse`] and the checks are pure. Secrets are named by environment variable and read later
//! by [`Credentials::from_env`].
//!
//! This module owns the defaults, the checked [`Settings`], [`load`] and [`parse`]; the file
//! as written is in `file`, the meaning checks in `check`, the secrets in `credentials`.

mod check;
mod credentials;
mod file;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use envelope_runner::pipeline::diagnostic::{Diagnostic, Diagnostics, SourceFile};
use envelope_runner::pipeline::document::DocumentKind;
use envelope_runner::pipeline::yaml;

use check::Checker;
pub use credentials::{Credentials, SecretError};
pub use file::{ApproverFile, ConfigFile, GithubFile, RepositoryFile};

/// Where GitHub's REST API is when the file names no other.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The environment variable that holds the GitHub token when the file names no other.
pub const DEFAULT_TOKEN_ENV: &str = "GITHUB_TOKEN";
/// How often each repository is polled when the file says nothing.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// GitHub allows 5,000 REST requests an hour per token; polling stays under this by default and
/// leaves the rest for people and other tools using the same token.
pub const DEFAULT_MAX_REQUESTS_PER_HOUR: u32 = 4_800;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_CONCURRENCY: u32 = 2;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
pub const DEFAULT_APPROVAL_POLL: Duration = Duration::from_secs(10);
/// How long a run's lease lasts without renewal when the file says nothing.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);
/// Shortest lease accepted: it is renewed every third of its time to live, and a store round
/// trip must fit in that comfortably.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(3);
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Shortest approver token accepted: 32 characters, for example 16 random bytes as hex
/// (`openssl rand -hex 32` gives 64).
pub const MIN_APPROVER_TOKEN_CHARS: usize = 32;

/// The configuration with defaults filled in and every value checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub project: PathBuf,
    pub store: String,
    /// `None`: the host name, read when the agent starts.
    pub agent_id: Option<String>,
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub github: GithubSettings,
    pub concurrency: usize,
    pub shutdown_grace: Duration,
    pub approval_poll: Duration,
    /// Runs' leases and the deploy lock: how long they last without renewal.
    pub lease_ttl: Duration,
    pub session_ttl: Duration,
    pub approvers: Vec<ApproverSettings>,
    /// `false`: a release's author cannot approve its run.
    pub allow_self_approval: bool,
    pub metrics_token_env: Option<String>,
    pub repositories: Vec<WatchedRepository>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GithubSettings {
    pub api_url: String,
    pub token_env: String,
    pub webhook_secret_env: Option<String>,
    pub poll_interval: Duration,
    pub max_requests_per_hour: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApproverSettings {
    pub name: String,
    pub token_env: String,
    /// Compared with a release's author; `None`: the name.
    pub github_login: Option<String>,
    /// `file:line:col` of `token_env`, for messages about the token.
    pub token_env_at: Option<String>,
}

impl ApproverSettings {
    /// The GitHub login this approver is taken to be.
    pub fn login(&self) -> &str {
        self.github_login.as_deref().unwrap_or(&self.name)
    }
}

/// A repository the agent watches and the pipeline its releases start.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchedRepository {
    /// `owner/name` as written.
    pub repository: String,
    pub pipeline: String,
    /// The pipeline's environment its releases run in; `None`: the pipeline as written.
    pub environment: Option<String>,
    /// Tag globs; `None` takes the pipeline's `source.tags`.
    pub tags: Option<Vec<String>>,
    pub include_prereleases: bool,
    /// Approver names who may decide this pipeline's gates; `None`: every approver.
    pub approvers: Option<Vec<String>>,
}

impl WatchedRepository {
    /// The key this entry's runs are recorded under: `PIPELINE` or `PIPELINE@ENVIRONMENT`.
    pub fn run_key(&self) -> String {
        envelope_runner::pipeline::environment::run_key(&self.pipeline, self.environment.as_deref())
    }
}

impl Settings {
    /// Settings for tests and embedders: one repository list, everything else default.
    pub fn new(project: impl Into<PathBuf>, repositories: Vec<WatchedRepository>) -> Self {
        let project = project.into();
        Settings {
            store: project.join(".envelope/state.db").display().to_string(),
            project,
            agent_id: None,
            listen: DEFAULT_LISTEN.parse().expect("default address parses"),
            public_url: None,
            cache_dir: None,
            github: GithubSettings {
                api_url: DEFAULT_API_URL.into(),
                token_env: DEFAULT_TOKEN_ENV.into(),
                webhook_secret_env: None,
                poll_interval: DEFAULT_POLL_INTERVAL,
                max_requests_per_hour: DEFAULT_MAX_REQUESTS_PER_HOUR,
            },
            concurrency: DEFAULT_CONCURRENCY as usize,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            approval_poll: DEFAULT_APPROVAL_POLL,
            lease_ttl: DEFAULT_LEASE_TTL,
            session_ttl: DEFAULT_SESSION_TTL,
            approvers: Vec::new(),
            allow_self_approval: false,
            metrics_token_env: None,
            repositories,
        }
    }

    /// How often each repository is actually polled: the configured interval, stretched when
    /// polling every repository that often would exceed the hourly request budget.
    pub fn effective_poll_interval(&self) -> Duration {
        effective_poll_interval(
            self.github.poll_interval,
            self.repositories.len(),
            self.github.max_requests_per_hour,
        )
    }

    /// The session cookie gets `Secure` when people reach the agent over HTTPS.
    pub fn secure_cookies(&self) -> bool {
        self.public_url
            .as_deref()
            .is_some_and(|url| url.starts_with("https://"))
    }

    /// The approvers who may decide gates of the runs recorded under `run_key` (a pipeline,
    /// or `PIPELINE@ENVIRONMENT`): those its repository entries list, or every approver.
    pub fn pipeline_approvers(&self, run_key: &str) -> Option<&[String]> {
        self.repositories
            .iter()
            .filter(|repository| repository.run_key() == run_key)
            .find_map(|repository| repository.approvers.as_deref())
    }
}

/// Whether `host` (from a URL) is this machine: `localhost`, 127.0.0.0/8 or `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|address| address.is_loopback())
}

/// `interval`, or longer when `repositories` polls at that interval would make more than
/// `budget` requests an hour.
pub fn effective_poll_interval(interval: Duration, repositories: usize, budget: u32) -> Duration {
    if repositories == 0 || budget == 0 {
        return interval;
    }
    let floor = Duration::from_secs_f64(repositories as f64 * 3600.0 / f64::from(budget));
    interval.max(floor)
}

/// JSON Schema of the configuration file.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ConfigFile)).expect("schema serializes")
}

/// Read and check the configuration file at `path`.
pub fn load(path: &Path) -> Result<Settings, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        let mut diagnostics = Diagnostics::default();
        diagnostics.push(
            Diagnostic::error(
                &SourceFile::new(path, ""),
                yaml::Position::default(),
                format!(
                    "cannot read the agent configuration {}: {error}",
                    path.display()
                ),
            )
            .with_help("pass the file with --config (or ENVELOPE_AGENT_CONFIG)"),
        );
        diagnostics
    })?;
    let base = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    parse(&SourceFile::new(path, text), base)
}

/// The configuration file, for the runner's front end: parse, require a mapping, check the
/// schema.
const CONFIG_FILE: DocumentKind = DocumentKind {
    called: "the agent configuration",
    read_as: "the agent configuration",
    start_with: "start with `repositories:`",
    schema,
    empty_is_default: false,
};

/// Check a configuration text; relative paths in it are taken from `base`. Pure.
pub fn parse(source: &SourceFile, base: &Path) -> Result<Settings, Diagnostics> {
    let (tree, mut diagnostics) = CONFIG_FILE.check(source)?;
    if diagnostics.has_errors() {
        diagnostics.sort();
        return Err(diagnostics);
    }
    let file: ConfigFile = CONFIG_FILE.read(&tree, source)?;
    let mut checker = Checker {
        source,
        tree: &tree,
        diagnostics,
    };
    let settings = checker.settings(&file, base);
    if checker.diagnostics.has_errors() {
        checker.diagnostics.sort();
        return Err(checker.diagnostics);
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse_text(text: &str) -> Result<Settings, String> {
        parse(
            &SourceFile::new("agent.yaml", text),
            Path::new("/srv/envelope"),
        )
        .map_err(|diagnostics| diagnostics.render(false))
    }

    #[test]
    fn minimal_file_gets_the_documented_defaults() {
        let settings =
            parse_text("repositories:\n  - repository: epactltd/api\n    pipeline: api\n").unwrap();
        assert_eq!(settings.project, PathBuf::from("/srv/envelope"));
        assert_eq!(settings.store, "/srv/envelope/.envelope/state.db");
        assert_eq!(settings.github.api_url, "https://api.github.com");
        assert_eq!(settings.github.token_env, "GITHUB_TOKEN");
        assert_eq!(settings.github.poll_interval, Duration::from_secs(60));
        assert_eq!(settings.concurrency, 2);
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8080");
        assert!(!settings.repositories[0].include_prereleases);
        assert_eq!(settings.repositories[0].tags, None);
        assert!(!settings.secure_cookies());
    }

    #[test]
    fn unknown_keys_are_located_with_a_suggestion() {
        let error = parse_text("repositories:\n  - repository: epactltd/api\n    pipline: api\n")
            .unwrap_err();
        assert!(error.contains("agent.yaml:3:5"), "{error}");
        assert!(error.contains("pipline"), "{error}");
        assert!(error.contains("pipeline"), "{error}");

        // At the top level the message names the agent's configuration, not a pipeline.
        let error = parse_text("listen_on: 1\n").unwrap_err();
        assert!(
            error.contains("unknown key `listen_on` at the top level of the agent configuration"),
            "{error}"
        );
        assert!(
            error.contains("missing key `repositories` in the agent configuration"),
            "{error}"
        );
    }

    #[test]
    fn the_poll_interval_stretches_to_stay_within_the_request_budget() {
        let minute = Duration::from_secs(60);
        assert_eq!(effective_poll_interval(minute, 10, 4800), minute);
        assert_eq!(effective_poll_interval(minute, 80, 4800), minute);
        assert_eq!(
            effective_poll_interval(minute, 100, 4800),
            Duration::from_secs(75)
        );
        assert_eq!(
            effective_poll_interval(minute, 100, 5000),
            Duration::from_secs(72)
        );
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../envelope-agent.example.yaml");
        let settings = parse(
            &SourceFile::new("envelope-agent.example.yaml", text),
            Path::new("/srv/envelope"),
        )
        .map_err(|diagnostics| diagnostics.render(false))
        .unwrap();
        assert_eq!(settings.store, "dynamodb://envelope-runs");
        assert_eq!(settings.repositories.len(), 3);
        assert_eq!(settings.approvers[1].name, "Sam Okafor");
        assert!(settings.secure_cookies());
        assert_eq!(settings.effective_poll_interval(), Duration::from_secs(60));
    }
}
