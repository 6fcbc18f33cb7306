//! The meaning checks of a configuration file that passed its schema: addresses, URLs,
//! durations, environment variable names, approvers and repositories, each error located at
//! its value; and filling in the defaults to make [`Settings`].

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use envelope_runner::pipeline::diagnostic::{Diagnostic, Diagnostics, SourceFile};
use envelope_runner::pipeline::yaml::{Node, PathSegment};
use envelope_runner::pipeline::{duration, names};

use super::{
    ApproverSettings, ConfigFile, DEFAULT_API_URL, DEFAULT_APPROVAL_POLL, DEFAULT_CONCURRENCY,
    DEFAULT_LEASE_TTL, DEFAULT_LISTEN, DEFAULT_MAX_REQUESTS_PER_HOUR, DEFAULT_POLL_INTERVAL,
    DEFAULT_SESSION_TTL, DEFAULT_SHUTDOWN_GRACE, DEFAULT_TOKEN_ENV, GithubSettings, MIN_LEASE_TTL,
    Settings, WatchedRepository, is_loopback_host,
};

pub(super) struct Checker<'a> {
    pub(super) source: &'a SourceFile,
    pub(super) tree: &'a Node,
    pub(super) diagnostics: Diagnostics,
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

    pub(super) fn settings(&mut self, file: &ConfigFile, base: &Path) -> Settings {
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
        let lease_ttl = self.duration(
            file.lease_ttl.as_deref(),
            &[key("lease_ttl")],
            DEFAULT_LEASE_TTL,
        );
        if lease_ttl < MIN_LEASE_TTL {
            self.error(
                &[key("lease_ttl")],
                format!(
                    "lease_ttl must be at least {}s: the lease is renewed every third of it",
                    MIN_LEASE_TTL.as_secs()
                ),
                "for example `60s` (the default)",
            );
        }
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
        let mut pipeline_approvers: std::collections::BTreeMap<String, Vec<&str>> =
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
            if let Some(environment) = &repository.environment
                && !names::is_pipeline_name(environment)
            {
                self.error(
                    &field("environment"),
                    format!("`{environment}` is not an environment name"),
                    "name one of the pipeline file's `environments:`, for example `prod`",
                );
            }
            // Approvers belong to what the entry runs: the pipeline, in its environment.
            let run_key = envelope_runner::pipeline::environment::run_key(
                &repository.pipeline,
                repository.environment.as_deref(),
            );
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
                match pipeline_approvers.get(&run_key) {
                    Some(other) if *other != sorted => self.error(
                        &field("approvers"),
                        format!(
                            "pipeline `{run_key}` is given different approvers by another repository entry"
                        ),
                        "approvers belong to the pipeline: list the same names on every entry that names it",
                    ),
                    Some(_) => {}
                    None => {
                        pipeline_approvers.insert(run_key, sorted);
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
            lease_ttl,
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
                    environment: repository.environment.clone(),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::parse_text;

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
    fn lease_ttl_defaults_to_a_minute_and_is_at_least_three_seconds() {
        let with = |ttl: &str| {
            parse_text(&format!(
                "{ttl}repositories:\n  - {{ repository: epactltd/api, pipeline: api }}\n"
            ))
        };
        assert_eq!(with("").unwrap().lease_ttl, Duration::from_secs(60));
        assert_eq!(
            with("lease_ttl: 6s\n").unwrap().lease_ttl,
            Duration::from_secs(6)
        );
        let error = with("lease_ttl: 2s\n").unwrap_err();
        assert!(error.contains("agent.yaml:1:12"), "{error}");
        assert!(error.contains("at least 3s"), "{error}");
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
