//! Who may decide a run's approval gate in the web UI: an approver the run's pipeline lists
//! (every approver when it lists none), and, unless `allow_self_approval` is set, not the
//! person who published the release: they may reject their own release, never approve it.
//!
//! A release's publisher is its GitHub `author.login`; an approver is taken to be the GitHub
//! user `github_login`, else their configured name (compared without regard to case, as
//! GitHub compares logins). Pure.

use std::collections::{BTreeMap, BTreeSet};

use envelope_runner::run::{RunRecord, TriggerKind};

use crate::config::Settings;

/// Why an approver may not make a decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "{approver} is not an approver of pipeline `{pipeline}`; ask one of {allowed} to decide"
    )]
    NotPipelineApprover {
        approver: String,
        pipeline: String,
        /// The names that may, for the message.
        allowed: String,
    },
    #[error(
        "{approver} published this release (GitHub user {login}), so someone else must approve it; rejecting it is still possible"
    )]
    OwnRelease { approver: String, login: String },
}

/// The approval rules of one agent's configuration.
#[derive(Debug, Clone, Default)]
pub struct ApprovalRules {
    /// Pipeline → the approver names that may decide it; absent: everyone.
    pipelines: BTreeMap<String, BTreeSet<String>>,
    /// Approver name → GitHub login, lowercase.
    logins: BTreeMap<String, String>,
    allow_self_approval: bool,
}

impl ApprovalRules {
    pub fn new(settings: &Settings) -> Self {
        let pipelines = settings
            .repositories
            .iter()
            .filter_map(|repository| {
                let names = repository.approvers.as_ref()?;
                Some((
                    repository.run_key(),
                    names.iter().cloned().collect::<BTreeSet<_>>(),
                ))
            })
            .collect();
        let logins = settings
            .approvers
            .iter()
            .map(|approver| (approver.name.clone(), approver.login().to_ascii_lowercase()))
            .collect();
        ApprovalRules {
            pipelines,
            logins,
            allow_self_approval: settings.allow_self_approval,
        }
    }

    /// `Ok` when `approver` may approve (`approved`) or reject the gates of `record`.
    pub fn check(&self, approver: &str, record: &RunRecord, approved: bool) -> Result<(), Refusal> {
        if let Some(allowed) = self.pipelines.get(&record.pipeline)
            && !allowed.contains(approver)
        {
            return Err(Refusal::NotPipelineApprover {
                approver: approver.to_owned(),
                pipeline: record.pipeline.clone(),
                allowed: allowed.iter().cloned().collect::<Vec<_>>().join(", "),
            });
        }
        if approved
            && !self.allow_self_approval
            && let TriggerKind::Release {
                author: Some(author),
                ..
            } = &record.trigger.kind
        {
            let login = self
                .logins
                .get(approver)
                .cloned()
                .unwrap_or_else(|| approver.to_ascii_lowercase());
            if login == author.to_ascii_lowercase() {
                return Err(Refusal::OwnRelease {
                    approver: approver.to_owned(),
                    login: author.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ApproverSettings, WatchedRepository};
    use envelope_runner::run::{RunId, RunStatus, RunTrigger};

    fn record(pipeline: &str, author: Option<&str>) -> RunRecord {
        RunRecord {
            id: RunId("01jrun".into()),
            pipeline: pipeline.into(),
            status: RunStatus::Waiting,
            trigger: RunTrigger {
                kind: TriggerKind::Release {
                    repository: "acme/api".into(),
                    release_id: 1,
                    author: author.map(str::to_owned),
                },
                git_ref: "v1".into(),
                sha: None,
                tag: Some("v1".into()),
            },
            created_at: "2026-11-26T09:00:00Z".into(),
            finished_at: None,
            context: Default::default(),
            stages: Vec::new(),
        }
    }

    fn rules(allow_self_approval: bool) -> ApprovalRules {
        let repository =
            |name: &str, pipeline: &str, approvers: Option<&[&str]>| WatchedRepository {
                repository: name.into(),
                pipeline: pipeline.into(),
                environment: None,
                tags: None,
                include_prereleases: false,
                approvers: approvers.map(|names| names.iter().map(|n| n.to_string()).collect()),
            };
        let mut settings = Settings::new(
            "/srv",
            vec![
                repository("acme/api", "api", Some(&["alice", "bob"])),
                repository("acme/web", "web", None),
            ],
        );
        let approver = |name: &str, login: Option<&str>| ApproverSettings {
            name: name.into(),
            token_env: "T".into(),
            github_login: login.map(str::to_owned),
            token_env_at: None,
        };
        settings.approvers = vec![
            approver("alice", Some("Alice-GH")),
            approver("bob", None),
            approver("carol", None),
        ];
        settings.allow_self_approval = allow_self_approval;
        ApprovalRules::new(&settings)
    }

    #[test]
    fn who_may_decide() {
        let rules = rules(false);
        let cases = [
            (
                "alice",
                record("api", Some("octocat")),
                true,
                Ok::<(), &str>(()),
            ),
            ("alice", record("api", Some("alice-gh")), true, Err("own")),
            ("alice", record("api", Some("alice-gh")), false, Ok(())),
            ("bob", record("api", Some("Bob")), true, Err("own")),
            ("bob", record("api", None), true, Ok(())),
            ("carol", record("api", None), false, Err("pipeline")),
            ("carol", record("web", Some("octocat")), true, Ok(())),
            ("carol", record("web", Some("carol")), true, Err("own")),
            ("carol", record("other", None), true, Ok(())),
        ];
        for (approver, record, approved, expected) in cases {
            let result = rules.check(approver, &record, approved);
            let kind = result.map_err(|refusal| match refusal {
                Refusal::NotPipelineApprover { .. } => "pipeline",
                Refusal::OwnRelease { .. } => "own",
            });
            assert_eq!(kind, expected, "{approver} on {record:?}");
        }
    }

    #[test]
    fn self_approval_can_be_allowed() {
        let rules = rules(true);
        assert_eq!(
            rules.check("alice", &record("api", Some("alice-gh")), true),
            Ok(())
        );
        let refusal = self::rules(false)
            .check("carol", &record("api", None), true)
            .unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "carol is not an approver of pipeline `api`; ask one of alice, bob to decide"
        );
    }
}
