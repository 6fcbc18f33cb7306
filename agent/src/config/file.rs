//! The configuration file as written: the serde model that YAML is read into and whose
//! derived JSON Schema checks the keys (see [`super::schema`]).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// How long a run's lease and a pipeline's deploy lock last without renewal (default
    /// `60s`, at least `3s`): an agent that dies leaves its runs to the others after this long.
    /// Agents sharing a store should use the same value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl: Option<String>,
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
    /// The pipeline's environment its releases run in (one of the pipeline file's
    /// `environments:`, as `envelope-runner run --env` takes); runs are recorded as
    /// `PIPELINE@ENVIRONMENT`. Default: the pipeline as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
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
