//! `verify:` checks of a service's target groups (`target_group: {service}`) on ministack: a
//! web service behind an `ip` target group (health check path `/cgi-bin/up`) whose 2 tasks
//! run busybox httpd (see [`WebCluster`]), which ministack's ECS registers in the group by
//! their addresses. A release whose `/cgi-bin/up` answers 500 is rolled back although ECS
//! reported the rollout COMPLETED, the report naming each unhealthy target; a healthy release
//! passes; a service without a load balancer fails the check with a message saying what to
//! do.
//!
//! ministack's alb.py reports every registered target `healthy` without asking it, so every
//! AWS call goes through a [`TargetHealthProxy`], which answers DescribeTargetHealth as an ALB
//! does: it probes each listed target (only 127.0.0.0/8 and the test daemon's containers)
//! and reports `unhealthy` (Target.ResponseCodeMismatch) for the broken release's tasks.

use std::collections::BTreeSet;
use std::time::Duration;

use envelope_runner::exec::ecs::deploy::{Deploy, DeployProgress, DeployRecord, RolloutFailure};
use envelope_runner::exec::ecs::{EcsAws, EcsError};
use envelope_runner::exec::verify::{
    CheckReport, LastAnswer, TargetGroupCheck, TargetHealth, TargetSeen,
};
use envelope_runner::redact::Redactor;

use super::recorder;
use crate::support::ecs::{TargetGroup, UP_PATH, WEB_PORT, WebCluster, parts, web_images};
use crate::support::target_health_proxy::TargetHealthProxy;
use envelope_tests::env::TestEnv;

/// Every new task of the web service healthy in its target group, looked at every second
/// for 5 s.
fn healthy_check() -> TargetGroupCheck {
    TargetGroupCheck {
        service: "web".into(),
        timeout: Duration::from_secs(5),
        interval: Duration::from_secs(1),
    }
}

struct Deployed {
    result: Result<(), EcsError>,
    reports: Vec<CheckReport>,
    events: Vec<DeployProgress>,
    proxy: TargetHealthProxy,
}

/// Deploys `image` to the cluster's web service with [`healthy_check`], every AWS call
/// through a [`TargetHealthProxy`].
async fn deploy_checked(env: &'static TestEnv, cluster: &WebCluster, image: &str) -> Deployed {
    let proxy = TargetHealthProxy::start(env.endpoint(), UP_PATH, env.docker_cli()).await;
    let aws = EcsAws::new(&env.sdk_config(&proxy.url).await);
    let request = cluster.deploy(image, Duration::from_secs(120));
    let (events, progress) = recorder();
    let mut deploy = Deploy::new(&aws, &request, DeployRecord::default())
        .verified(vec![healthy_check().into()], Redactor::new());
    deploy.prepare(&progress).await.unwrap();
    deploy.update(&progress).await.unwrap();
    let result = deploy.wait(&progress).await.map(|_| ());
    let reports = deploy.check_reports().to_vec();
    let events = events.lock().unwrap().clone();
    Deployed {
        result,
        reports,
        events,
        proxy,
    }
}

/// What the report's target group last said of each new task.
fn targets(report: &CheckReport) -> &[TargetSeen] {
    match &report.last {
        LastAnswer::Targets(targets) => targets,
        other => panic!("no targets seen: {other:?} in {report}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_unhealthy_in_its_target_group_is_rolled_back_naming_each_target() {
    let Some(env) = parts("target group check of an unhealthy release").await else {
        return;
    };
    let group = TargetGroup::create(env).await;
    let cluster = WebCluster::create_behind(env, 2, &group.arn).await;
    let before = cluster.task_definition().await;
    let deployed = deploy_checked(env, &cluster, &web_images(env).broken).await;
    let error = deployed.result.unwrap_err();
    let message = error.to_string();
    let EcsError::Deploy(failure) = &error else {
        panic!("not a deploy failure: {message}");
    };
    assert_eq!(deployed.reports.len(), 1, "one report per target group");
    assert_eq!(failure.failures.len(), 1, "{message}");
    let RolloutFailure::Verify(report) = &failure.failures[0].1 else {
        panic!("not a verify failure: {message}");
    };
    assert_eq!(
        report.url,
        format!("target group {} (service web)", group.name)
    );
    assert!(!report.passed);
    assert!((3..=7).contains(&report.attempts), "{report}");
    let seen = targets(report);
    assert_eq!(seen.len(), 2, "both new tasks: {report}");
    for target in seen {
        assert!(target.target.ends_with(&format!(":{WEB_PORT}")), "{report}");
        assert_eq!(
            target.health,
            TargetHealth::Other {
                state: "unhealthy".into(),
                reason: Some("Target.ResponseCodeMismatch".into()),
                description: Some("Health checks failed with these codes: [500]".into()),
            },
            "{report}"
        );
    }
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "last seen: {}:{WEB_PORT} unhealthy (Target.ResponseCodeMismatch: Health checks \
             failed with these codes: [500])",
            seen[0].target.split(':').next().unwrap()
        )),
        "{text}"
    );
    assert!(
        message.contains("All services run their previous revisions"),
        "{message}"
    );
    // ECS said the rollout COMPLETED; the target group's verdict still sent it back.
    assert!(deployed.events.iter().any(|e| matches!(
        e,
        DeployProgress::Finished {
            outcome: Ok(()),
            ..
        }
    )));
    assert!(
        deployed
            .events
            .iter()
            .any(|e| matches!(e, DeployProgress::RollbackStarted { .. }))
    );
    assert_eq!(cluster.task_definition().await, before);
    // The proxy asked the new tasks themselves.
    let probed: BTreeSet<String> = deployed.proxy.probed().into_iter().collect();
    for target in seen {
        assert!(probed.contains(&target.target), "{probed:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_healthy_in_its_target_group_passes() {
    let Some(env) = parts("target group check of a healthy release").await else {
        return;
    };
    let group = TargetGroup::create(env).await;
    let cluster = WebCluster::create_behind(env, 2, &group.arn).await;
    let before = cluster.task_definition().await;
    let deployed = deploy_checked(env, &cluster, &web_images(env).v2).await;
    deployed.result.unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(deployed.reports.len(), 1, "{:#?}", deployed.reports);
    let report = &deployed.reports[0];
    assert!(report.passed, "{report}");
    let seen = targets(report);
    assert_eq!(seen.len(), 2, "{report}");
    assert!(seen.iter().all(TargetSeen::is_healthy), "{report}");
    let addresses: BTreeSet<&str> = seen.iter().map(|t| t.target.as_str()).collect();
    assert_eq!(addresses.len(), 2, "two tasks, two targets: {report}");
    assert!(
        report.to_string().starts_with(&format!(
            "check target group {} (service web) passed",
            group.name
        )),
        "{report}"
    );
    assert_ne!(cluster.task_definition().await, before, "the service moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_group_check_of_a_service_without_a_load_balancer_fails_saying_so() {
    let Some(env) = parts("target group check without a load balancer").await else {
        return;
    };
    let cluster = WebCluster::create(env, 1).await;
    let before = cluster.task_definition().await;
    let deployed = deploy_checked(env, &cluster, &web_images(env).v2).await;
    let message = deployed.result.unwrap_err().to_string();
    assert_eq!(deployed.reports.len(), 1, "{:#?}", deployed.reports);
    let report = &deployed.reports[0];
    assert!(!report.passed);
    assert_eq!(report.attempts, 0, "nothing to ask: {report}");
    assert!(
        report.to_string().contains(
            "web has no load balancer, so there is no target group to ask; remove the \
             `target_group` check, or add the load balancer to the service"
        ),
        "{report}"
    );
    assert!(message.contains("target groups of web"), "{message}");
    assert_eq!(cluster.task_definition().await, before, "rolled back");
}
