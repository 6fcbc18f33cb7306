//! The agent's configuration file: which repositories start which pipelines, where runs are
//! kept, how GitHub is polled, and who may approve.
//!
//! Parsing reuses the runner's front end: the YAML becomes a located tree, the tree is checked
//! against the JSON Schema derived from [`ConfigFile`] (unknown keys are errors with a
//! suggestion, at `file:line:col`), then the meaning is checked. Everything here is pure:
//! secrets are named by environment variable and read later by [`Credentials::from_env`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use envelope_runner::pipeline::diagnostic::{Diagnostic, Diagnostics, SourceFile};
use envelope_runner::pipeline::document::DocumentKind;
use envelope_runner::pipeline::yaml::{self, Node, PathSegment};
use envelope_runner::pipeline::{duration, names};
use envelope_runner::secret::Secret;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Shortest approver token accepted: 32 characters, for example 16 random bytes as hex
/// (`openssl rand -hex 32` gives 64).
pub const MIN_APPROVER_TOKEN_CHARS: usize = 32;

/// The configuration file as written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "envelope-agent configuration")]
pub struct ConfigFile {
    /// Folder that holds `pipelines/` (default: the folder of this file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Run store: an SQLite path, `sqlite:PATH` or `dynamodb://TABLE`
    /// (default `<project>/.envelope/state.db`). Agents that share a store share the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// This agent's name in run leases (default: the host name). Agents sharing a store need
    /// different names; an agent restarted under the same name resumes its runs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Address of the web UI, webhook and metrics (default `127.0.0.1:8080`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The address people use to reach the agent; an `https://` URL marks the session cookie
    /// `Secure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Folder for git mirrors and checkouts (default `~/.cache/envelope-runner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<String>,
    /// How GitHub is reached and polled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GithubFile>,
    /// Runs executing at once (default 2); later ones wait as `queued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// How long running stages may go on after SIGTERM before they are stopped; a stopped
    /// stage runs again when the run is resumed (default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace: Option<String>,
    /// How often runs waiting at an approval gate are checked for a decision made elsewhere,
    /// for example with `envelope-runner approve` (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_poll: Option<String>,
    /// How long a web UI sign-in lasts (default `12h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_ttl: Option<String>,
    /// People who may see runs and approve or reject them, each with a token kept in an
    /// environment variable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<ApproverFile>,
    /// May the person who published a release approve its run (default false)? Their GitHub
    /// login is the release's `author.login`; an approver's is `github_login`, else `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_self_approval: Option<bool>,
    /// Environment variable holding a bearer token that may read `/metrics` (a Prometheus
    /// scraper). Approvers may read it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token_env: Option<String>,
    /// The repositories whose releases start pipelines.
    pub repositories: Vec<RepositoryFile>,
}

/// The `github:` section.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GithubFile {
    /// REST API base URL (default `https://api.github.com`; GitHub Enterprise:
    /// `https://HOST/api/v3`). Must be https, except on this machine (`localhost`,
    /// 127.0.0.0/8, `::1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Environment variable holding the API token (default `GITHUB_TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Environment variable holding the webhook secret; without it `POST /webhooks/github`
    /// is not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_env: Option<String>,
    /// How often each repository is polled (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval: Option<String>,
    /// Most polling requests an hour across all repositories (default 4800, under GitHub's
    /// 5,000 an hour); with many repositories each is polled less often to stay under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_hour: Option<u32>,
}

/// One entry of `approvers:`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproverFile {
    /// The name recorded with each decision.
    pub name: String,
    /// Environment variable holding this approver's sign-in token (at least 32 characters).
    pub token_env: String,
    /// This approver's GitHub login, compared with a release's author (default: `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_login: Option<String>,
}

/// One entry of `repositories:`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RepositoryFile {
    /// GitHub `owner/name`.
    pub repository: String,
    /// The pipeline its releases start (`pipelines/<name>.yaml`).
    pub pipeline: String,
    /// Release tag patterns (globs such as `v*`); default: the pipeline's `source.tags`, or
    /// every tag when it lists none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Start runs for prereleases too (default false). Drafts never start a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_prereleases: Option<bool>,
    /// Names from `approvers:` who may decide this pipeline's gates (default: every approver).
    /// Entries naming the same pipeline must list the same approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<String>>,
}

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
    /// Tag globs; `None` takes the pipeline's `source.tags`.
    pub tags: Option<Vec<String>>,
    pub include_prereleases: bool,
    /// Approver names who may decide this pipeline's gates; `None`: every approver.
    pub approvers: Option<Vec<String>>,
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

    /// The approvers who may decide gates of `pipeline`: those its repository entries list,
    /// or every approver.
    pub fn pipeline_approvers(&self, pipeline: &str) -> Option<&[String]> {
        self.repositories
            .iter()
            .filter(|repository| repository.pipeline == pipeline)
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

struct Checker<'a> {
    source: &'a SourceFile,
    tree: &'a Node,
    diagnostics: Diagnostics,
}

fn key(name: &str) -> PathSegment {
    PathSegment::Key(name.to_owned())
}

impl Checker<'_> {
    fn error(&mut self, path: &[PathSegment], message: impl Into<String>, help: &str) {
        let position = self
            .tree
            .at_path(path)
            .map(|node| node.position)
            .unwrap_or(self.tree.position);
        self.diagnostics
            .push(Diagnostic::error(self.source, position, message).with_help(help));
    }

    /// `file:line:col` of the value at `path`.
    fn location(&self, path: &[PathSegment]) -> Option<String> {
        let node = self.tree.at_path(path)?;
        Some(format!(
            "{}:{}:{}",
            self.source.path.display(),
            node.position.line,
            node.position.column
        ))
    }

    fn duration(
        &mut self,
        text: Option<&str>,
        path: &[PathSegment],
        default: Duration,
    ) -> Duration {
        let Some(text) = text else {
            return default;
        };
        match duration::parse(text) {
            Ok(value) if !value.is_zero() => value,
            Ok(_) => {
                self.error(
                    path,
                    "the duration must be longer than zero",
                    "for example `60s`",
                );
                default
            }
            Err(message) => {
                self.error(
                    path,
                    message,
                    "write a duration such as `60s`, `5m` or `12h`",
                );
                default
            }
        }
    }

    fn env_name(&mut self, name: &str, path: &[PathSegment]) {
        if !names::is_env_name(name) {
            self.error(
                path,
                format!("`{name}` is not an environment variable name"),
                "name the variable that holds the secret (for example `GITHUB_TOKEN`), never the secret itself",
            );
        }
    }

    fn settings(&mut self, file: &ConfigFile, base: &Path) -> Settings {
        let project = match &file.project {
            Some(project) => base.join(project),
            None => base.to_path_buf(),
        };
        let store = file
            .store
            .clone()
            .unwrap_or_else(|| project.join(".envelope/state.db").display().to_string());
        if let Err(error) = envelope_runner::store::StoreLocation::parse(&store) {
            self.error(
                &[key("store")],
                error.to_string(),
                "use an SQLite path, `sqlite:PATH` or `dynamodb://TABLE`",
            );
        }
        if let Some(id) = &file.agent_id
            && (id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            self.error(
                &[key("agent_id")],
                format!("`{id}` is not a usable agent name"),
                "use letters, digits, `-`, `_` or `.`, for example `deploy-agent-1`",
            );
        }
        let listen_text = file.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = match listen_text.parse::<SocketAddr>() {
            Ok(address) => address,
            Err(_) => {
                self.error(
                    &[key("listen")],
                    format!("`{listen_text}` is not an address to listen on"),
                    "write IP:PORT, for example `0.0.0.0:8080` or `127.0.0.1:8080`",
                );
                DEFAULT_LISTEN.parse().expect("default address parses")
            }
        };
        if let Some(url) = &file.public_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            self.error(
                &[key("public_url")],
                format!("`{url}` is not an http(s) URL"),
                "write the address people open, for example https://deploy.example.com",
            );
        }
        let github_file = file.github.clone().unwrap_or_default();
        let github_path = |name: &str| vec![key("github"), key(name)];
        let api_url = github_file
            .api_url
            .clone()
            .unwrap_or_else(|| DEFAULT_API_URL.to_owned());
        match api_url.parse::<axum::http::Uri>() {
            Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {}
            Ok(uri)
                if uri.scheme_str() == Some("http")
                    && uri.host().is_some_and(is_loopback_host) => {}
            Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => self.error(
                &github_path("api_url"),
                format!(
                    "`{api_url}` is plain http: the GitHub token would cross the network unencrypted"
                ),
                "write an https:// URL (GitHub Enterprise: https://HOST/api/v3); http is accepted only for this machine (localhost, 127.0.0.0/8, ::1)",
            ),
            _ => self.error(
                &github_path("api_url"),
                format!("`{api_url}` is not an https URL"),
                "write https://api.github.com, or for GitHub Enterprise https://HOST/api/v3",
            ),
        }
        let token_env = github_file
            .token_env
            .clone()
            .unwrap_or_else(|| DEFAULT_TOKEN_ENV.to_owned());
        self.env_name(&token_env, &github_path("token_env"));
        if let Some(name) = &github_file.webhook_secret_env {
            self.env_name(name, &github_path("webhook_secret_env"));
        }
        let poll_interval = self.duration(
            github_file.poll_interval.as_deref(),
            &github_path("poll_interval"),
            DEFAULT_POLL_INTERVAL,
        );
        let max_requests_per_hour = github_file
            .max_requests_per_hour
            .unwrap_or(DEFAULT_MAX_REQUESTS_PER_HOUR);
        if max_requests_per_hour == 0 {
            self.error(
                &github_path("max_requests_per_hour"),
                "the request budget must be at least 1",
                "GitHub allows 5,000 requests an hour per token; the default is 4800",
            );
        }
        let concurrency = file.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 {
            self.error(
                &[key("concurrency")],
                "concurrency must be at least 1",
                "the number of runs that may execute at once, for example 2",
            );
        }
        let shutdown_grace = self.duration(
            file.shutdown_grace.as_deref(),
            &[key("shutdown_grace")],
            DEFAULT_SHUTDOWN_GRACE,
        );
        let approval_poll = self.duration(
            file.approval_poll.as_deref(),
            &[key("approval_poll")],
            DEFAULT_APPROVAL_POLL,
        );
        let session_ttl = self.duration(
            file.session_ttl.as_deref(),
            &[key("session_ttl")],
            DEFAULT_SESSION_TTL,
        );
        let mut approver_names = BTreeSet::new();
        for (index, approver) in file.approvers.iter().enumerate() {
            let path = [key("approvers"), PathSegment::Index(index)];
            if approver.name.trim().is_empty() {
                self.error(
                    &[&path[..], &[key("name")]].concat(),
                    "the approver's name is empty",
                    "the name is recorded with every decision; write who this is",
                );
            } else if !approver_names.insert(approver.name.trim()) {
                self.error(
                    &[&path[..], &[key("name")]].concat(),
                    format!("approver `{}` is listed twice", approver.name),
                    "each approver needs one entry (and one token)",
                );
            }
            self.env_name(
                &approver.token_env,
                &[&path[..], &[key("token_env")]].concat(),
            );
            if let Some(login) = &approver.github_login
                && !is_github_login(login)
            {
                self.error(
                    &[&path[..], &[key("github_login")]].concat(),
                    format!("`{login}` is not a GitHub login"),
                    "write the user name shown on the approver's GitHub profile, for example `octocat`",
                );
            }
        }
        if let Some(name) = &file.metrics_token_env {
            self.env_name(name, &[key("metrics_token_env")]);
        }
        if file.repositories.is_empty() {
            self.error(
                &[key("repositories")],
                "no repositories to watch",
                "add `- { repository: owner/name, pipeline: api }`",
            );
        }
        let mut seen = BTreeSet::new();
        let mut pipeline_approvers: std::collections::BTreeMap<&str, Vec<&str>> =
            std::collections::BTreeMap::new();
        for (index, repository) in file.repositories.iter().enumerate() {
            let path = [key("repositories"), PathSegment::Index(index)];
            let field = |name: &str| [&path[..], &[key(name)]].concat();
            if !is_github_repository(&repository.repository) {
                self.error(
                    &field("repository"),
                    format!(
                        "`{}` is not a GitHub repository name",
                        repository.repository
                    ),
                    "write owner/name, for example epactltd/api",
                );
            } else if !seen.insert(repository.repository.to_ascii_lowercase()) {
                self.error(
                    &field("repository"),
                    format!("`{}` is listed twice", repository.repository),
                    "one release starts one run: list each repository once",
                );
            }
            if !names::is_pipeline_name(&repository.pipeline) {
                self.error(
                    &field("pipeline"),
                    format!("`{}` is not a pipeline name", repository.pipeline),
                    "name a file in pipelines/ without `.yaml`, for example `api`",
                );
            }
            if let Some(listed) = &repository.approvers {
                if listed.is_empty() {
                    self.error(
                        &field("approvers"),
                        "the approver list is empty: nobody could approve this pipeline",
                        "name at least one approver from `approvers:`, or remove the key to let every approver decide",
                    );
                }
                for (approver_index, name) in listed.iter().enumerate() {
                    if !approver_names.contains(name.trim()) {
                        let known = approver_names
                            .iter()
                            .map(|name| format!("`{name}`"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        self.error(
                            &[
                                &field("approvers")[..],
                                &[PathSegment::Index(approver_index)],
                            ]
                            .concat(),
                            format!("`{name}` is not one of the configured approvers"),
                            &if known.is_empty() {
                                "add them under the top-level `approvers:` first".to_owned()
                            } else {
                                format!("use a name from the top-level `approvers:` ({known})")
                            },
                        );
                    }
                }
                let mut sorted: Vec<&str> = listed.iter().map(|name| name.trim()).collect();
                sorted.sort_unstable();
                sorted.dedup();
                match pipeline_approvers.get(repository.pipeline.as_str()) {
                    Some(other) if *other != sorted => self.error(
                        &field("approvers"),
                        format!(
                            "pipeline `{}` is given different approvers by another repository entry",
                            repository.pipeline
                        ),
                        "approvers belong to the pipeline: list the same names on every entry that names it",
                    ),
                    Some(_) => {}
                    None => {
                        pipeline_approvers.insert(repository.pipeline.as_str(), sorted);
                    }
                }
            }
            for (tag_index, pattern) in repository.tags.iter().flatten().enumerate() {
                if let Err(error) = globset::Glob::new(pattern) {
                    self.error(
                        &[&field("tags")[..], &[PathSegment::Index(tag_index)]].concat(),
                        format!("`{pattern}` is not a tag pattern: {error}"),
                        "write a glob such as `v*` or `release-*`",
                    );
                }
            }
        }
        Settings {
            project,
            store,
            agent_id: file.agent_id.clone(),
            listen,
            public_url: file
                .public_url
                .as_deref()
                .map(|url| url.trim_end_matches('/').to_owned()),
            cache_dir: file.cache_dir.as_ref().map(|dir| base.join(dir)),
            github: GithubSettings {
                api_url: api_url.trim_end_matches('/').to_owned(),
                token_env,
                webhook_secret_env: github_file.webhook_secret_env.clone(),
                poll_interval,
                max_requests_per_hour,
            },
            concurrency: concurrency.max(1) as usize,
            shutdown_grace,
            approval_poll,
            session_ttl,
            approvers: file
                .approvers
                .iter()
                .enumerate()
                .map(|(index, approver)| ApproverSettings {
                    name: approver.name.trim().to_owned(),
                    token_env: approver.token_env.clone(),
                    github_login: approver.github_login.clone(),
                    token_env_at: self.location(&[
                        key("approvers"),
                        PathSegment::Index(index),
                        key("token_env"),
                    ]),
                })
                .collect(),
            allow_self_approval: file.allow_self_approval.unwrap_or(false),
            metrics_token_env: file.metrics_token_env.clone(),
            repositories: file
                .repositories
                .iter()
                .map(|repository| WatchedRepository {
                    repository: repository.repository.clone(),
                    pipeline: repository.pipeline.clone(),
                    tags: repository.tags.clone(),
                    include_prereleases: repository.include_prereleases.unwrap_or(false),
                    approvers: repository
                        .approvers
                        .as_ref()
                        .map(|names| names.iter().map(|name| name.trim().to_owned()).collect()),
                })
                .collect(),
        }
    }
}

/// `owner/name` with GitHub's characters.
fn is_github_repository(text: &str) -> bool {
    let Some((owner, name)) = text.split_once('/') else {
        return false;
    };
    let part = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    part(owner) && part(name) && name != "." && name != ".."
}

/// A GitHub user name: letters, digits and single hyphens, at most 39 characters.
fn is_github_login(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 39
        && !text.starts_with('-')
        && !text.ends_with('-')
        && !text.contains("--")
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// The secrets the configuration names, read from the environment.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub github_token: Option<Secret>,
    pub webhook_secret: Option<Secret>,
    /// Approver name and token.
    pub approvers: Vec<(String, Secret)>,
    pub metrics_token: Option<Secret>,
}

/// A secret the configuration names that the environment does not hold, or holds unusably.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "{what} is read from the environment variable {variable}, which is not set or empty; export it before starting the agent"
    )]
    Missing { what: String, variable: String },
    #[error(
        "{at}: approver {approver}'s token (environment variable {variable}) is {length} characters long; approver tokens need at least {MIN_APPROVER_TOKEN_CHARS}. Generate one with `openssl rand -hex 32`, export it as {variable}, and give it to {approver}"
    )]
    ShortToken {
        /// `file:line:col` of the approver's `token_env`.
        at: String,
        approver: String,
        variable: String,
        length: usize,
    },
}

impl Credentials {
    /// Read every secret `settings` names through `lookup` (the process environment in the
    /// binary). The GitHub token may be missing (public repositories, 60 requests an hour);
    /// every other named secret must be there, and approver tokens must have at least
    /// [`MIN_APPROVER_TOKEN_CHARS`] characters.
    pub fn from_env(
        settings: &Settings,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Credentials, SecretError> {
        let read = |name: &str| {
            lookup(name)
                .filter(|value| !value.is_empty())
                .map(Secret::new)
        };
        let required = |what: String, name: &str| {
            read(name).ok_or_else(|| SecretError::Missing {
                what,
                variable: name.to_owned(),
            })
        };
        let webhook_secret = match &settings.github.webhook_secret_env {
            Some(name) => Some(required("the webhook secret".into(), name)?),
            None => None,
        };
        let metrics_token = match &settings.metrics_token_env {
            Some(name) => Some(required("the metrics token".into(), name)?),
            None => None,
        };
        let mut approvers = Vec::new();
        for approver in &settings.approvers {
            let token = required(
                format!("approver {}'s token", approver.name),
                &approver.token_env,
            )?;
            let length = token.expose().chars().count();
            if length < MIN_APPROVER_TOKEN_CHARS {
                return Err(SecretError::ShortToken {
                    at: approver
                        .token_env_at
                        .clone()
                        .unwrap_or_else(|| "the agent configuration".to_owned()),
                    approver: approver.name.clone(),
                    variable: approver.token_env.clone(),
                    length,
                });
            }
            approvers.push((approver.name.clone(), token));
        }
        Ok(Credentials {
            github_token: read(&settings.github.token_env),
            webhook_secret,
            approvers,
            metrics_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Settings, String> {
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
    }

    #[test]
    fn meaning_errors_point_at_the_value() {
        let error = parse_text(concat!(
            "listen: everywhere\n",
            "github:\n  poll_interval: soon\n  token_env: ghp_abc123-secret\n",
            "approvers:\n  - { name: alice, token_env: A }\n  - { name: alice, token_env: B }\n",
            "repositories:\n  - repository: not-a-repo\n    pipeline: api\n",
        ))
        .unwrap_err();
        for expected in [
            "agent.yaml:1:9",
            "not an address",
            "agent.yaml:3:18",
            "agent.yaml:4:14",
            "not an environment variable name",
            "listed twice",
            "not a GitHub repository name",
        ] {
            assert!(error.contains(expected), "missing {expected:?} in\n{error}");
        }
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
        let text = include_str!("../envelope-agent.example.yaml");
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

    #[test]
    fn secrets_come_from_the_named_variables() {
        let settings = parse_text(concat!(
            "github: { webhook_secret_env: HOOK }\n",
            "approvers: [{ name: alice, token_env: ALICE }]\n",
            "repositories: [{ repository: a/b, pipeline: api }]\n",
        ))
        .unwrap();
        let env = |name: &str| match name {
            "HOOK" => Some("s3cret".to_owned()),
            "ALICE" => Some("alice-token-0123456789abcdef012345".to_owned()),
            _ => None,
        };
        let credentials = Credentials::from_env(&settings, &env).unwrap();
        assert_eq!(credentials.webhook_secret.unwrap().expose(), "s3cret");
        assert_eq!(credentials.approvers[0].0, "alice");
        assert!(credentials.github_token.is_none());
        let missing = Credentials::from_env(&settings, &|_| None).unwrap_err();
        assert!(missing.to_string().contains("HOOK"), "{missing}");
    }

    #[test]
    fn api_url_is_https_except_on_this_machine() {
        let with = |url: &str| {
            parse_text(&format!(
                "github: {{ api_url: \"{url}\" }}\nrepositories: [{{ repository: a/b, pipeline: api }}]\n"
            ))
        };
        for allowed in [
            "https://api.github.com",
            "https://github.example.com/api/v3",
            "http://localhost:8080",
            "http://127.0.0.1:9000",
            "http://127.1.2.3",
            "http://[::1]:9000/api",
        ] {
            assert!(with(allowed).is_ok(), "{allowed}: {:?}", with(allowed));
        }
        for refused in [
            "http://api.github.com",
            "http://10.0.0.5",
            "http://localhost.example.com",
            "ftp://api.github.com",
            "api.github.com",
        ] {
            let error = with(refused).unwrap_err();
            assert!(error.contains("agent.yaml:1:20"), "{refused}: {error}");
        }
    }

    #[test]
    fn pipeline_approvers_name_configured_approvers_and_agree() {
        let settings = parse_text(concat!(
            "approvers:\n  - { name: alice, token_env: A, github_login: alice-gh }\n  - { name: bob, token_env: B }\n",
            "repositories:\n  - { repository: a/b, pipeline: api, approvers: [alice] }\n",
            "  - { repository: a/c, pipeline: web }\n",
        ))
        .unwrap();
        assert_eq!(
            settings.pipeline_approvers("api"),
            Some(&["alice".to_owned()][..])
        );
        assert_eq!(settings.pipeline_approvers("web"), None);
        assert_eq!(settings.approvers[0].login(), "alice-gh");
        assert_eq!(settings.approvers[1].login(), "bob");
        assert!(!settings.allow_self_approval);
        let error = parse_text(concat!(
            "approvers: [{ name: alice, token_env: A }]\n",
            "repositories:\n  - { repository: a/b, pipeline: api, approvers: [alcie] }\n",
            "  - { repository: a/c, pipeline: api, approvers: [alice] }\n",
        ))
        .unwrap_err();
        for expected in [
            "agent.yaml:3:51",
            "`alcie` is not one of the configured approvers",
            "`alice`",
            "agent.yaml:4:50",
            "different approvers",
        ] {
            assert!(error.contains(expected), "missing {expected:?} in\n{error}");
        }
    }
}
