//! `verify:` checks of a service's target groups: the service's load balancers (each target
//! group's ARN and the container port it registers, from DescribeServices `loadBalancers`),
//! the groups' names and target types (DescribeTargetGroups: only `ip` groups, where awsvpc
//! tasks register by their private address), then, every `interval` until the deadline, the
//! new tasks (found as task checks find them) and DescribeTargetHealth of each group: every
//! new task's `IP:PORT` target must be `healthy`. One report per target group, ending with
//! what the group last said of each new task.

use aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum;
use tokio::time::Instant;

use super::task_checks::{address_of, short};
use super::{Deploy, describe_one};
use crate::exec::ecs::Call;
use crate::exec::verify::{self, CheckReport, LastAnswer, TargetGroupCheck, target_health};

/// What a target group check wants, in words.
const EXPECTED: &str = "every new task's target healthy";

/// A target group a service registers its tasks with.
struct Group {
    arn: String,
    /// The name DescribeTargetGroups gave, else the ARN.
    name: String,
    /// The container port the service registers (the targets' port).
    port: i32,
    /// `ip`, `instance`, …; empty when DescribeTargetGroups did not list the group.
    target_type: String,
}

impl Deploy<'_> {
    /// Runs `check`: one report per target group of the service (or one failed report when
    /// the service has no target group or they cannot be read).
    pub(super) async fn check_target_groups(&self, check: &TargetGroupCheck) -> Vec<CheckReport> {
        let start = Instant::now();
        let not_attempted = |error: String| {
            vec![verify::not_attempted(
                format!("target groups of {}", check.service),
                EXPECTED.to_owned(),
                start.elapsed(),
                error,
            )]
        };
        let Some(revision) = self.record.task_definitions.get(&check.service).cloned() else {
            return not_attempted(format!(
                "`{}` is not a service of this deploy, so it has no new revision",
                check.service
            ));
        };
        let groups = match self.target_groups(&check.service).await {
            Ok(groups) => groups,
            Err(error) => return not_attempted(error),
        };
        let runs = groups
            .iter()
            .map(|group| self.watch_target_group(check, &revision, group, start));
        futures_util::future::join_all(runs).await
    }

    /// The target groups `service` registers its tasks with, or why there are none to ask.
    async fn target_groups(&self, service: &str) -> Result<Vec<Group>, String> {
        let described = describe_one(self.aws, &self.request.cluster, service)
            .await
            .map_err(|error| format!("the service could not be read: {error}"))?;
        let mut groups: Vec<Group> = described
            .load_balancers()
            .iter()
            .filter_map(|balancer| {
                Some(Group {
                    arn: balancer.target_group_arn()?.to_owned(),
                    name: String::new(),
                    port: balancer.container_port()?,
                    target_type: String::new(),
                })
            })
            .collect();
        if groups.is_empty() {
            return Err(if described.load_balancers().is_empty() {
                format!(
                    "{service} has no load balancer, so there is no target group to ask; remove \
                     the `target_group` check, or add the load balancer to the service"
                )
            } else {
                format!(
                    "{service} registers its tasks with a Classic Load Balancer only, which has \
                     no target groups; check the tasks with `task: {{service, port, path}}` instead"
                )
            });
        }
        let arns: Vec<String> = groups.iter().map(|group| group.arn.clone()).collect();
        let output = self
            .aws
            .call(
                Call::new(
                    "read the service's target groups",
                    "elasticloadbalancing:DescribeTargetGroups",
                    service,
                )
                .idempotent(),
                || {
                    self.aws
                        .elbv2()
                        .describe_target_groups()
                        .set_target_group_arns(Some(arns.clone()))
                        .send()
                },
            )
            .await
            .map_err(|error| format!("the target groups could not be read: {error}"))?;
        for group in &mut groups {
            let listed = output
                .target_groups()
                .iter()
                .find(|listed| listed.target_group_arn() == Some(group.arn.as_str()));
            group.name = listed
                .and_then(|listed| listed.target_group_name())
                .unwrap_or(&group.arn)
                .to_owned();
            group.target_type = listed
                .and_then(|listed| listed.target_type())
                .map(|kind| kind.as_str().to_owned())
                .unwrap_or_default();
        }
        Ok(groups)
    }

    /// Asks `group` about the new tasks of `check.service` every `interval` until each one's
    /// target is healthy or the deadline (from `start`) is near.
    async fn watch_target_group(
        &self,
        check: &TargetGroupCheck,
        revision: &str,
        group: &Group,
        start: Instant,
    ) -> CheckReport {
        let deadline = start + check.timeout;
        let label = format!("target group {} (service {})", group.name, check.service);
        if group.target_type != TargetTypeEnum::Ip.as_str() {
            let kind = match group.target_type.as_str() {
                "" => "an unknown target type".to_owned(),
                kind => format!("target type `{kind}`"),
            };
            let error = format!(
                "the target group has {kind}; a `target_group` check asks `ip` target groups \
                 only (awsvpc tasks, registered by their address): check the tasks with \
                 `task: {{service, port, path}}` or a `url` instead"
            );
            return verify::not_attempted(label, EXPECTED.to_owned(), start.elapsed(), error);
        }
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (last, more) = match self.ask_target_group(&check.service, revision, group).await {
                Ok(last) => (last, true),
                // The calls retried what another attempt cures; this one would fail again.
                Err(error) => (LastAnswer::NoAnswer { error }, false),
            };
            let passed =
                matches!(&last, LastAnswer::Targets(seen) if target_health::all_healthy(seen));
            let out_of_time = Instant::now() + check.interval > deadline;
            if passed || !more || out_of_time || attempts >= verify::MAX_ATTEMPTS {
                return CheckReport {
                    url: label,
                    passed,
                    attempts,
                    elapsed: start.elapsed(),
                    expected: EXPECTED.to_owned(),
                    last,
                };
            }
            tokio::time::sleep(check.interval).await;
        }
    }

    /// One look: the new tasks, and what `group` says of each one's target (or why there is
    /// nothing to judge yet). An error is a call that failed for good.
    async fn ask_target_group(
        &self,
        service: &str,
        revision: &str,
        group: &Group,
    ) -> Result<LastAnswer, String> {
        let tasks = self
            .new_tasks(service, revision)
            .await
            .map_err(|error| format!("the new tasks could not be listed: {error}"))?;
        if tasks.is_empty() {
            return Ok(LastAnswer::NoAnswer {
                error: format!(
                    "no task of {service} is RUNNING on its new revision {}",
                    short(revision)
                ),
            });
        }
        let Some(addresses) = tasks.iter().map(address_of).collect::<Option<Vec<&str>>>() else {
            return Ok(LastAnswer::NoAnswer {
                error: "a new task has no network interface address (yet): an `ip` target \
                        group registers awsvpc tasks by that address"
                    .to_owned(),
            });
        };
        let output = self
            .aws
            .call(
                Call::new(
                    "read the health of the target group's targets",
                    "elasticloadbalancing:DescribeTargetHealth",
                    &group.name,
                )
                .idempotent(),
                || {
                    self.aws
                        .elbv2()
                        .describe_target_health()
                        .target_group_arn(&group.arn)
                        .send()
                },
            )
            .await
            .map_err(|error| format!("the target group's health could not be read: {error}"))?;
        Ok(LastAnswer::Targets(target_health::targets_seen(
            &addresses,
            group.port,
            output.target_health_descriptions(),
            &self.redactor,
        )))
    }
}
