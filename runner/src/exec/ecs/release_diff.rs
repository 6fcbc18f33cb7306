//! What a release would change on ECS, read with Describe calls only (DescribeServices,
//! DescribeTaskDefinition; nothing is registered or updated): for each service a deploy stage
//! rolls and each migrate stage's service, the task definition it runs now and the
//! [`TaskDefinitionDiff`] of the revision the stage would register, made by the same
//! [`next_revision_for`] the stages use, so the diff cannot drift from what they do. Also the
//! `verify:` checks a deploy runs after its rollouts, as lines for people. When the service's
//! task definition family has a newer revision than the one it runs, a note says how that one
//! differs: the deploy builds on the service's revision, so those differences do not go out.
//!
//! `envelope-runner diff` prints a [`ReleaseDiff`]; an approval gate keeps its
//! [`ReleaseDiff::lines`] in its stage record and notice.

use serde::Serialize;

use super::EcsAws;
use super::deploy::{describe_one, next_revision_for};
use aws_sdk_ecs::types::TaskDefinition;

use super::taskdef::{TaskDefinitionDiff, diff, round_trip};
use crate::plan::Step;

/// At most this many lines of a diff are kept in a gate's record and notice; the rest are
/// counted in a last line.
pub const MAX_LINES: usize = 200;
/// A line longer than this is cut (a long environment or an inline JSON setting).
pub const MAX_LINE_CHARS: usize = 400;

/// What a release would change, stage by stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReleaseDiff {
    /// The images the release deploys, `repository@sha256:…`.
    pub images: Vec<String>,
    pub services: Vec<ServiceDiff>,
}

/// One service of a migrate or deploy stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceDiff {
    pub stage: String,
    /// `migrate` or `deploy`.
    pub kind: &'static str,
    pub cluster: String,
    pub service: String,
    /// The task definition the service runs now (its ARN), when ECS said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// What the new revision changes; `None` when it could not be read (see `unavailable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<TaskDefinitionDiff>,
    /// Why the diff could not be read: ECS's error, as people read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// The task definition family's newest revision, when it is not the one the service runs
    /// and differs from it: the deploy builds on the service's revision, so none of these
    /// differences go out (a revision registered by Terraform, say, but never deployed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newer: Option<NewerRevision>,
}

/// A newer revision of the service's task definition family that the deploy does not use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewerRevision {
    /// Its ARN.
    pub task_definition: String,
    /// How it differs from the revision the service runs (tags left out).
    pub differences: TaskDefinitionDiff,
}

impl ReleaseDiff {
    /// Whether any service would change (an unreadable one counts as unknown, not as a change).
    pub fn has_changes(&self) -> bool {
        self.services
            .iter()
            .any(|s| s.diff.as_ref().is_some_and(|d| !d.is_empty()))
    }

    /// Whether some service's diff could not be read.
    pub fn has_unavailable(&self) -> bool {
        self.services.iter().any(|s| s.unavailable.is_some())
    }

    /// The diff for people, a line per change, grouped by service:
    ///
    /// ```text
    /// deploy `deploy`, service envelope-prod-api (envelope-api:3):
    ///   container api: image …/envelope-api@sha256:aa… → …/envelope-api@sha256:bb…
    /// deploy `deploy`, service envelope-prod-worker (envelope-worker:3): no change
    /// ```
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for service in &self.services {
            let mut head = format!(
                "{} `{}`, service {}",
                service.kind, service.stage, service.service
            );
            if let Some(current) = &service.current {
                head.push_str(&format!(" ({})", short(current)));
            }
            let changes = service.change_lines();
            if service.diff.as_ref().is_some_and(|d| !d.is_empty()) || service.newer.is_some() {
                lines.push(format!("{head}:"));
                lines.extend(changes.iter().map(|change| format!("  {change}")));
            } else {
                lines.push(format!("{head}: {}", changes.join("; ")));
            }
        }
        lines
    }

    /// [`ReleaseDiff::lines`] bounded for a record or a message: at most [`MAX_LINES`] lines
    /// of at most [`MAX_LINE_CHARS`] characters.
    pub fn bounded_lines(&self) -> Vec<String> {
        bounded(self.lines())
    }
}

impl ServiceDiff {
    /// Each change of this service's task definition, a line each (images first), or the one
    /// line `no change`, or `diff unavailable: why`.
    pub fn change_lines(&self) -> Vec<String> {
        let Some(diff) = &self.diff else {
            return vec![match &self.unavailable {
                Some(why) => format!("diff unavailable: {why}"),
                None => "diff unavailable".to_owned(),
            }];
        };
        let mut lines = if diff.is_empty() {
            vec!["no change".to_owned()]
        } else {
            diff_lines(diff)
        };
        if let Some(newer) = &self.newer {
            lines.push(format!(
                "not deployed: {}, the family's newest revision, differs from the revision the \
                 service runs, which the deploy builds on:",
                short(&newer.task_definition)
            ));
            lines.extend(
                diff_lines(&newer.differences)
                    .into_iter()
                    .map(|line| format!("  {line}")),
            );
        }
        lines
    }
}

/// A line per change of `diff`: images first, then every other field.
fn diff_lines(diff: &TaskDefinitionDiff) -> Vec<String> {
    let images = diff.images.iter().map(|change| {
        format!(
            "container {}: image {} → {}",
            change.container, change.before, change.after
        )
    });
    let other = diff
        .other
        .iter()
        .map(|change| format!("{}: {} → {}", change.field, change.before, change.after));
    images.chain(other).collect()
}

/// `lines` cut to [`MAX_LINES`] lines of at most [`MAX_LINE_CHARS`] characters; what was
/// left out is counted in the last line.
pub fn bounded(lines: Vec<String>) -> Vec<String> {
    let total = lines.len();
    let mut kept: Vec<String> = lines
        .into_iter()
        .take(MAX_LINES)
        .map(|line| {
            if line.chars().count() > MAX_LINE_CHARS {
                let cut: String = line.chars().take(MAX_LINE_CHARS).collect();
                format!("{cut}… (cut)")
            } else {
                line
            }
        })
        .collect();
    if total > MAX_LINES {
        kept.push(format!("… and {} more lines", total - MAX_LINES));
    }
    kept
}

/// Every service `steps` act on, unread: a plan's migrate steps (their service) and deploy
/// steps (each service); other steps are passed over.
fn services<'a>(steps: impl IntoIterator<Item = &'a Step>) -> Vec<ServiceDiff> {
    let mut out = Vec::new();
    for step in steps {
        let (kind, name, cluster, services) = match step {
            Step::Migrate(m) => ("migrate", &m.name, &m.cluster, vec![m.service.clone()]),
            Step::Deploy(d) => ("deploy", &d.name, &d.cluster, d.services.clone()),
            _ => continue,
        };
        out.extend(services.into_iter().map(|service| ServiceDiff {
            stage: name.clone(),
            kind,
            cluster: cluster.clone(),
            service,
            current: None,
            diff: None,
            unavailable: None,
            newer: None,
        }));
    }
    out
}

/// What `steps` (a plan's migrate and deploy steps) would change with `images` swapped in.
/// A service whose diff cannot be read gets the reason instead; the others are still read.
pub async fn release_diff<'a>(
    aws: &EcsAws,
    steps: impl IntoIterator<Item = &'a Step>,
    images: &[String],
) -> ReleaseDiff {
    let mut services = services(steps);
    for entry in &mut services {
        match describe_one(aws, &entry.cluster, &entry.service).await {
            Err(error) => entry.unavailable = Some(error.to_string()),
            Ok(described) => {
                entry.current = described.task_definition.clone();
                match next_revision_for(aws, &entry.service, &described, images).await {
                    Ok((current, next)) => {
                        entry.diff = Some(next.diff);
                        entry.newer = newer_revision(aws, &current).await;
                    }
                    Err(error) => entry.unavailable = Some(error.to_string()),
                }
            }
        }
    }
    ReleaseDiff {
        images: images.to_vec(),
        services,
    }
}

/// The newest ACTIVE revision of `current`'s family (DescribeTaskDefinition by family name)
/// when it is newer than `current` and differs from it in more than tags. A note only: when
/// it cannot be read, there is none.
async fn newer_revision(aws: &EcsAws, current: &TaskDefinition) -> Option<NewerRevision> {
    let family = current.family.as_deref()?;
    let newest = aws
        .describe_task_definition(family)
        .await
        .ok()?
        .task_definition?;
    if newest.revision <= current.revision {
        return None;
    }
    let differences = diff(&round_trip(current, &[]), &round_trip(&newest, &[]));
    (!differences.is_empty()).then(|| NewerRevision {
        task_definition: newest.task_definition_arn.clone().unwrap_or_default(),
        differences: TaskDefinitionDiff {
            from: current.task_definition_arn.clone().unwrap_or_default(),
            ..differences
        },
    })
}

/// The diff of `steps` when ECS cannot be asked at all: every service says `why`.
pub fn unavailable<'a>(
    steps: impl IntoIterator<Item = &'a Step>,
    images: &[String],
    why: &str,
) -> ReleaseDiff {
    let mut services = services(steps);
    for entry in &mut services {
        entry.unavailable = Some(why.to_owned());
    }
    ReleaseDiff {
        images: images.to_vec(),
        services,
    }
}

/// The `verify:` checks of the deploy steps among `steps`, a line each: what is asked, what
/// must answer, and for how long it is retried. URLs are shown without credentials or query
/// values.
pub fn planned_checks<'a>(steps: impl IntoIterator<Item = &'a Step>) -> Vec<String> {
    let mut lines = Vec::new();
    for step in steps {
        let Step::Deploy(deploy) = step else {
            continue;
        };
        for check in &deploy.verify {
            lines.push(format!(
                "after `{}`: {} ({})",
                deploy.name,
                check.wanted_text(),
                check.schedule_text()
            ));
        }
    }
    lines
}

/// `family:revision` of a task definition ARN.
fn short(task_definition: &str) -> &str {
    task_definition
        .rsplit('/')
        .next()
        .unwrap_or(task_definition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::ecs::taskdef::{FieldChange, ImageChange};

    fn service(name: &str, diff: Option<TaskDefinitionDiff>, why: Option<&str>) -> ServiceDiff {
        ServiceDiff {
            stage: "deploy".into(),
            kind: "deploy",
            cluster: "prod".into(),
            service: name.into(),
            current: why
                .is_none()
                .then(|| format!("arn:aws:ecs:eu-west-1:1:task-definition/{name}:3")),
            diff,
            unavailable: why.map(str::to_owned),
            newer: None,
        }
    }

    #[test]
    fn lines_show_each_change_no_change_and_why_a_diff_is_missing() {
        let changed = TaskDefinitionDiff {
            family: "api".into(),
            from: "arn:…:api:3".into(),
            images: vec![ImageChange {
                container: "api".into(),
                before: "r/api@sha256:aa".into(),
                after: "r/api@sha256:bb".into(),
            }],
            other: vec![FieldChange {
                field: "container api: environment".into(),
                before: "A=1".into(),
                after: "A=2".into(),
            }],
        };
        let diff = ReleaseDiff {
            images: vec!["r/api@sha256:bb".into()],
            services: vec![
                service("api", Some(changed), None),
                service("worker", Some(TaskDefinitionDiff::default()), None),
                service("gone", None, Some("ECS has no service `gone`")),
            ],
        };
        assert_eq!(
            diff.lines(),
            [
                "deploy `deploy`, service api (api:3):",
                "  container api: image r/api@sha256:aa → r/api@sha256:bb",
                "  container api: environment: A=1 → A=2",
                "deploy `deploy`, service worker (worker:3): no change",
                "deploy `deploy`, service gone: diff unavailable: ECS has no service `gone`",
            ]
        );
        assert!(diff.has_changes());
        assert!(diff.has_unavailable());
    }

    #[test]
    fn a_newer_revision_the_deploy_does_not_use_is_a_note_under_the_service() {
        let mut unchanged = service("worker", Some(TaskDefinitionDiff::default()), None);
        unchanged.newer = Some(NewerRevision {
            task_definition: "arn:aws:ecs:eu-west-1:1:task-definition/worker:5".into(),
            differences: TaskDefinitionDiff {
                other: vec![FieldChange {
                    field: "cpu".into(),
                    before: "256".into(),
                    after: "512".into(),
                }],
                ..TaskDefinitionDiff::default()
            },
        });
        let diff = ReleaseDiff {
            images: Vec::new(),
            services: vec![unchanged],
        };
        assert_eq!(
            diff.lines(),
            [
                "deploy `deploy`, service worker (worker:3):",
                "  no change",
                "  not deployed: worker:5, the family's newest revision, differs from the revision \
                 the service runs, which the deploy builds on:",
                "    cpu: 256 → 512",
            ]
        );
        assert!(
            !diff.has_changes(),
            "a revision the deploy does not use is no change"
        );
    }

    #[test]
    fn planned_checks_name_the_stage_the_url_without_secrets_and_the_answer() {
        let deploy = Step::Deploy(crate::plan::DeployStep {
            name: "deploy".into(),
            cluster: "prod".into(),
            services: vec!["api".into()],
            images: Vec::new(),
            timeout: "30m".into(),
            timeout_seconds: 1800,
            on_failure: crate::pipeline::model::OnFailure::Rollback,
            verify: vec![
                crate::plan::VerifyStep {
                    target: crate::plan::CheckTarget::Url(
                        "https://user:pw@api.example/up?token=s3cret".into(),
                    ),
                    status: Some(200),
                    body_contains: Some("Application up".into()),
                    timeout: "2m".into(),
                    timeout_seconds: 120,
                    interval_seconds: 5,
                },
                crate::plan::VerifyStep {
                    target: crate::plan::CheckTarget::Task(crate::plan::TaskCheckStep {
                        service: "api".into(),
                        port: 8080,
                        path: "/up".into(),
                    }),
                    status: Some(200),
                    body_contains: None,
                    timeout: "1m".into(),
                    timeout_seconds: 60,
                    interval_seconds: 2,
                },
                crate::plan::VerifyStep {
                    target: crate::plan::CheckTarget::TargetGroup(
                        crate::plan::TargetGroupCheckStep {
                            service: "api".into(),
                        },
                    ),
                    status: None,
                    body_contains: None,
                    timeout: "3m".into(),
                    timeout_seconds: 180,
                    interval_seconds: 5,
                },
                crate::plan::VerifyStep {
                    target: crate::plan::CheckTarget::Alarm(crate::plan::AlarmCheckStep {
                        name: "api-5xx".into(),
                    }),
                    status: None,
                    body_contains: None,
                    timeout: "5m".into(),
                    timeout_seconds: 300,
                    interval_seconds: 10,
                },
            ],
        });
        assert_eq!(
            planned_checks([&deploy]),
            [
                "after `deploy`: GET https://api.example/up?token=… must answer 200 with a body \
              containing \"Application up\" (retried every 5s for up to 2m)",
                "after `deploy`: GET /up on port 8080 of every new task of api must answer 200 \
              (retried every 2s for up to 1m)",
                "after `deploy`: every new task of api must be healthy in the target groups of \
              its load balancers (retried every 5s for up to 3m)",
                "after `deploy`: alarm api-5xx must not be in ALARM at any look for 5m (looked \
              at every 10s)"
            ]
        );
    }

    #[test]
    fn bounded_lines_cut_long_lines_and_count_what_was_left_out() {
        let lines: Vec<String> = (0..MAX_LINES + 5).map(|i| format!("line {i}")).collect();
        let kept = bounded(lines);
        assert_eq!(kept.len(), MAX_LINES + 1);
        assert_eq!(kept[MAX_LINES], "… and 5 more lines");
        let long = bounded(vec!["x".repeat(MAX_LINE_CHARS + 10)]);
        assert_eq!(
            long[0].chars().count(),
            MAX_LINE_CHARS + "… (cut)".chars().count()
        );
    }
}
