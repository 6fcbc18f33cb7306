//! The secrets a configuration names, read from the environment when the agent starts.

use envelope_runner::secret::Secret;

use super::{MIN_APPROVER_TOKEN_CHARS, Settings};

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
    /// [`MIN_APPROVER_TOKEN_CHARS`] characters. Every problem is reported, not only the first,
    /// so one `--check` names every variable to export.
    pub fn from_env(
        settings: &Settings,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Credentials, Vec<SecretError>> {
        let read = |name: &str| {
            lookup(name)
                .filter(|value| !value.is_empty())
                .map(Secret::new)
        };
        let mut problems = Vec::new();
        let required = |what: String, name: &str, problems: &mut Vec<SecretError>| {
            let secret = read(name);
            if secret.is_none() {
                problems.push(SecretError::Missing {
                    what,
                    variable: name.to_owned(),
                });
            }
            secret
        };
        let webhook_secret = settings
            .github
            .webhook_secret_env
            .as_ref()
            .and_then(|name| required("the webhook secret".into(), name, &mut problems));
        let metrics_token = settings
            .metrics_token_env
            .as_ref()
            .and_then(|name| required("the metrics token".into(), name, &mut problems));
        let mut approvers = Vec::new();
        for approver in &settings.approvers {
            let what = format!("approver {}'s token", approver.name);
            let Some(token) = required(what, &approver.token_env, &mut problems) else {
                continue;
            };
            let length = token.expose().chars().count();
            if length < MIN_APPROVER_TOKEN_CHARS {
                problems.push(SecretError::ShortToken {
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
        if !problems.is_empty() {
            return Err(problems);
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
    use crate::config::tests::parse_text;

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
    }

    #[test]
    fn every_missing_or_short_secret_is_named_at_once() {
        let settings = parse_text(concat!(
            "github: { webhook_secret_env: HOOK }\n",
            "metrics_token_env: METRICS\n",
            "approvers: [{ name: alice, token_env: ALICE }, { name: bob, token_env: BOB }]\n",
            "repositories: [{ repository: a/b, pipeline: api }]\n",
        ))
        .unwrap();
        let env = |name: &str| (name == "BOB").then(|| "short".to_owned());
        let problems: Vec<String> = Credentials::from_env(&settings, &env)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        for variable in ["HOOK", "METRICS", "ALICE"] {
            assert!(
                problems
                    .iter()
                    .any(|p| p.contains(variable) && p.contains("not set")),
                "{variable} not named: {problems:#?}"
            );
        }
        assert!(
            problems
                .iter()
                .any(|p| p.contains("BOB") && p.contains("5 characters")),
            "{problems:#?}"
        );
    }
}
