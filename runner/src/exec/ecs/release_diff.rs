//! What a release would change on ECS, read with Describe calls only (DescribeServices,
//! DescribeTaskDefinition; nothing is registered or updated): for each service a deploy stage
//! rolls and each migrate stage's service, the task definition it runs now and the
//! [`TaskDefinitionDiff`] of the revision the stage would register, made by the same
//! [`next_revision_for`] the stages use, so the diff cannot drift from what they do. Also the
//! `verify:` checks a deploy runs after its rollouts, as lines for people.
//!
//! `envelope-runner diff` prints a [`ReleaseDiff`]; an approval gate keeps its
//! [`ReleaseDiff::lines`] in its stage record and notice.

use serde::Serialize;

use super::EcsAws;
use super::deploy::{describe_one, next_revision_for};
use super::taskdef::TaskDefinitionDiff;
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
            if service.diff.as_ref().is_some_and(|d| !d.is_empty()) {
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
        if diff.is_empty() {
            return vec!["no change".to_owned()];
        }
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
                    Ok((_, next)) => entry.diff = Some(next.diff),
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
            let body = check
                .body_contains
                .as_deref()
                .map(|text| format!(" with a body containing {text:?}"))
                .unwrap_or_default();
            lines.push(format!(
                "after `{}`: GET {} must answer {}{body} (retried every {}s for up to {})",
                deploy.name,
                crate::pipeline::verify::shown(&check.url),
                check.status,
                check.interval_seconds,
                check.timeout
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
