//! The three-agent drill: three `envelope-agent` processes share one DynamoDB table on
//! ministack and watch ten repositories of the fake GitHub, one pipeline each; thirty releases
//! (three per repository) are published at once. Each pipeline builds a one-line image on the
//! ECS app's image and deploys it to a service of its own on ministack's ECS, so every release
//! is one ECS deployment.
//!
//! Checked: every release has exactly one run in the store and it succeeded; per service, the
//! deployments ECS reports are exactly those the three runs recorded, and none was created
//! before the previous one completed (ECS's own `createdAt` and the `updatedAt` of its
//! COMPLETED rollout, sampled with DescribeServices since ministack's ListServiceDeployments
//! is a stub); and the agent that holds a run of `drill-0` past its gate (its rollout done, its
//! `verify:` check of a page on 127.0.0.1 failing until then) is SIGKILLed, after which another
//! agent resumes the run once the run's lease has expired and finishes it. Meanwhile newer runs
//! of `drill-0` wait at the gate: taking the expired deploy lock over would deploy over the
//! killed run's release, which then finds its deployment replaced and fails.
//!
//! The figures `scripts/bench-drill` reports are printed on a `drill:` line: releases per
//! minute, time from publish to the deploy stage's start (median and p95, from the agents'
//! logs) and DynamoDB calls per release (counted by a proxy every agent's AWS calls go
//! through).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use envelope_runner::run::{RunStatus, TriggerKind};
use envelope_runner::store::{DynamoDbStore, Store};

use crate::support::agents::{
    AgentConfig, AgentProcess, FakeGithubProcess, app_repository, drill_pipeline, first_by_run,
};
use crate::support::counting_proxy::CountingProxy;
use crate::support::ecs::{Cluster, DeploymentSampler, parts};
use crate::support::health_endpoint::HealthEndpoint;
use envelope_tests::env::{TestEnv, dynamodb_store};

const PIPELINES: usize = 10;
const TAGS: [&str; 3] = ["v1.0.1", "v1.0.2", "v1.0.3"];
/// Short, so that the killed agent's run is taken over quickly.
const LEASE_TTL_SECONDS: u64 = 15;
const DYNAMODB: &str = "DynamoDB_20120810";

/// Deletes the drill's table when dropped.
struct TableGuard {
    env: &'static TestEnv,
    name: String,
}

impl Drop for TableGuard {
    fn drop(&mut self) {
        let (env, name) = (self.env, self.name.clone());
        crate::support::cleanup::on_own_runtime(async move {
            let client = aws_sdk_dynamodb::Client::new(&env.sdk_config(env.endpoint()).await);
            let _ = client.delete_table().table_name(&name).send().await;
        });
    }
}

/// A project of ten pipelines `drill-N` (see [`drill_pipeline`]); `drill-0`'s deploy verifies
/// `health` (a page on 127.0.0.1 the test controls) after its rollout.
fn project(env: &TestEnv, cluster: &Cluster, url: &str, health: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    for index in 0..PIPELINES {
        let verify = (index == 0).then_some(health);
        std::fs::write(
            dir.path().join(format!("pipelines/drill-{index}.yaml")),
            drill_pipeline(env, url, &cluster.name, index, verify),
        )
        .unwrap();
    }
    dir
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_run_thirty_releases_once_each_one_deploy_at_a_time_and_take_over_a_killed_agents_run()
 {
    let Some(env) = parts("agents drill").await else {
        return;
    };
    let roles: Vec<String> = (0..PIPELINES).map(|index| format!("d{index}")).collect();
    let role_names: Vec<&str> = roles.iter().map(String::as_str).collect();
    let cluster = Cluster::create_roles(env, env.endpoint(), "drill", &role_names).await;
    let store_url = dynamodb_store(env, "agents-drill").await;
    let table = store_url.trim_start_matches("dynamodb://").to_owned();
    let _table_guard = TableGuard {
        env,
        name: table.clone(),
    };
    let dynamodb = aws_sdk_dynamodb::Client::new(&env.sdk_config(env.endpoint()).await);
    let store = DynamoDbStore::open(dynamodb.clone(), &table).await.unwrap();
    let proxy = CountingProxy::start(env.endpoint()).await;
    let (_app, url) = app_repository(env, &TAGS);
    // `drill-0`'s check fails until its first run's agent is killed in the middle of it.
    let health = HealthEndpoint::start(503, "Application up").await;
    let project = project(env, &cluster, &url, &health.url);
    let work = tempfile::tempdir().unwrap();
    let github = FakeGithubProcess::start(PIPELINES).await;

    let mut agents: Vec<AgentProcess> = (1..=3)
        .map(|n| {
            let id = format!("drill-agent-{n}");
            let watched: Vec<(String, String)> = (0..PIPELINES)
                .map(|index| (format!("acme/app-{index:03}"), format!("drill-{index}")))
                .collect();
            let config = AgentConfig {
                dir: work.path(),
                project: project.path(),
                store: &store_url,
                github: &github.url,
                lease_ttl_seconds: LEASE_TTL_SECONDS,
            }
            .write(&id, &watched);
            AgentProcess::start(
                env,
                &id,
                &config,
                work.path().join(format!("{id}.log")),
                &[
                    ("AWS_ENDPOINT_URL", proxy.url.as_str()),
                    ("GITHUB_TOKEN", "ghp_drill_token_for_the_fake"),
                ],
            )
        })
        .collect();
    // Every agent has polled every repository twice: releases published from now on are news.
    let started = Instant::now();
    while github.requests().await.unwrap_or(0) < (3 * 2 * PIPELINES) as u64 {
        for agent in &mut agents {
            assert!(
                agent.alive(),
                "{} exited:\n{}",
                agent.id,
                std::fs::read_to_string(&agent.log).unwrap()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agents did not poll"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Release times on GitHub are whole seconds: be a second past the agents' start.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sampler = DeploymentSampler::start(cluster.ecs.clone(), &cluster.name, &cluster.services);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Thirty releases at once.
    let dynamodb_before = proxy.service_count(DYNAMODB);
    let mut published: BTreeMap<(String, u64), (usize, DateTime<Utc>)> = BTreeMap::new();
    for tag in TAGS {
        for index in 0..PIPELINES {
            let repository = format!("acme/app-{index:03}");
            let (id, at) = github.publish(&repository, tag).await;
            published.insert((repository, id), (index, at));
        }
    }
    let first_publish = published.values().map(|(_, at)| *at).min().unwrap();

    // Kill the agent that holds the run of `drill-0` that is past its gate: its rollout is
    // done and its check keeps failing, so the run is between its deployment and its verdict
    // while the pipeline's other runs wait at the gate.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (victim_run, victim_agent, lease_expires_ms) = loop {
        assert!(
            Instant::now() < deadline,
            "no run of drill-0 reached its deploy's check"
        );
        let mut verifying = None;
        for run in store.list_runs(Some("drill-0"), 10, None).await.unwrap() {
            let record = store.get_run(&run.id).await.unwrap().unwrap();
            let deploy = record.stage("deploy").unwrap();
            if record.status == RunStatus::Running
                && deploy.status == envelope_runner::run::StageStatus::Running
                && !deploy.outputs.deployments.is_empty()
            {
                verifying = Some(run.id);
            }
        }
        if let Some(run) = verifying
            && health.hits() > 0
        {
            let lease = dynamodb
                .get_item()
                .table_name(&table)
                .key(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!("lease#run:{run}")),
                )
                .key(
                    "sk",
                    aws_sdk_dynamodb::types::AttributeValue::S("lease".into()),
                )
                .send()
                .await
                .unwrap();
            let item = lease.item().cloned().unwrap_or_default();
            if let Some(holder) = item.get("holder").and_then(|v| v.as_s().ok()) {
                let agent = agents.iter().position(|agent| &agent.id == holder).unwrap();
                agents[agent].kill();
                let expires: i64 = item["expires_at_ms"].as_n().unwrap().parse().unwrap();
                health.answer(200);
                break (run, agent, expires);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    // Every release finishes.
    let deadline = Instant::now() + Duration::from_secs(150);
    let runs = loop {
        let runs = store.list_runs(None, 100, None).await.unwrap();
        let settled = runs.len() >= published.len()
            && runs.iter().all(|run| {
                !matches!(
                    run.status,
                    RunStatus::Queued | RunStatus::Running | RunStatus::Waiting
                )
            });
        if settled {
            break runs;
        }
        assert!(
            Instant::now() < deadline,
            "the releases did not all finish: {:#?}",
            runs.iter()
                .map(|run| (&run.pipeline, &run.tag, run.status, &run.current_stage))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let dynamodb_calls = proxy.service_count(DYNAMODB) - dynamodb_before;
    // One more sample after the last verdict.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let deployments = sampler.by_service();
    drop(sampler);

    // Exactly one run per release, every one succeeded.
    let mut runs_of_release: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    let mut recorded: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut failed = Vec::new();
    for summary in &runs {
        let record = store.get_run(&summary.id).await.unwrap().unwrap();
        let TriggerKind::Release {
            repository,
            release_id,
            ..
        } = &record.trigger.kind
        else {
            panic!(
                "run {} was not started by a release: {:?}",
                summary.id, record.trigger
            );
        };
        runs_of_release
            .entry((repository.clone(), *release_id))
            .or_default()
            .push(summary.id.0.clone());
        if record.status != RunStatus::Succeeded {
            failed.push(record.clone());
        }
        let deploy = record.stage("deploy").unwrap();
        for (service, deployment) in &deploy.outputs.deployments {
            recorded
                .entry(service.clone())
                .or_default()
                .insert(deployment.clone());
        }
    }
    assert_eq!(
        runs_of_release.keys().collect::<BTreeSet<_>>(),
        published.keys().collect::<BTreeSet<_>>(),
        "runs for exactly the published releases"
    );
    for (release, ids) in &runs_of_release {
        assert_eq!(
            ids.len(),
            1,
            "release {release:?} ran {} times: {ids:?}",
            ids.len()
        );
    }

    // ECS: each service's deployments after the publish were each created after the one
    // before it completed. Checked first: overlapping deploys fail runs too, and the timeline
    // names the cause.
    let publish_secs = first_publish.timestamp_millis() as f64 / 1000.0;
    let mut during_by_service = BTreeMap::new();
    for service in &cluster.services {
        let seen = deployments.get(service).cloned().unwrap_or_default();
        let (before, during): (Vec<_>, Vec<_>) = seen
            .into_iter()
            .partition(|deployment| deployment.created_at < publish_secs - 0.5);
        let mut previous = before.last().cloned();
        for deployment in &during {
            if let Some(previous) = &previous {
                let completed = previous.completed_at.unwrap_or_else(|| {
                    panic!(
                        "{service}: deployment {} was replaced before it completed",
                        previous.id
                    )
                });
                assert!(
                    deployment.created_at >= completed,
                    "{service}: deployment {} was created at {} while {} ran until {completed}",
                    deployment.id,
                    deployment.created_at,
                    previous.id
                );
            }
            previous = Some(deployment.clone());
        }
        if let Some(last) = during.last() {
            assert!(
                last.completed_at.is_some(),
                "{service}: {last:?} never completed"
            );
        }
        during_by_service.insert(service.clone(), during);
    }

    // Then the runs: a run that failed for another reason deployed nothing, which the counts
    // below would only show as a missing deployment.
    assert!(failed.is_empty(), "runs that did not succeed: {failed:#?}");

    // Each service's deployments are exactly its three runs'.
    for (service, during) in &during_by_service {
        let during_ids: BTreeSet<String> = during.iter().map(|d| d.id.clone()).collect();
        assert_eq!(
            Some(&during_ids),
            recorded.get(service),
            "{service}: ECS's deployments against the runs' records ({during:#?})"
        );
        assert_eq!(during.len(), TAGS.len(), "{service}: {during:#?}");
    }

    // The killed agent's run was taken over by another agent once the lease had expired.
    let resumed_by: Vec<&AgentProcess> = agents
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != victim_agent)
        .map(|(_, agent)| agent)
        .filter(|agent| {
            agent.lines().iter().any(|line| {
                line.message
                    .starts_with(&format!("resuming run {victim_run}"))
            })
        })
        .collect();
    assert_eq!(
        resumed_by.len(),
        1,
        "one other agent resumed run {victim_run}"
    );
    let restarted = resumed_by[0]
        .lines()
        .into_iter()
        .filter(|line| line.run.as_deref() == Some(victim_run.0.as_str()))
        .find(|line| line.message.starts_with("[deploy] started"))
        .expect("the deploy ran again on the agent that resumed the run");
    assert!(
        restarted.at.timestamp_millis() >= lease_expires_ms,
        "the deploy restarted at {} before the lease expired ({lease_expires_ms} ms)",
        restarted.at
    );
    // Whether a newer run of drill-0 waited at the gate for the killed run to be resumed (it
    // did unless the killed agent held those runs too): printed with the figures.
    let kept_waiting = agents.iter().any(|agent| {
        agent.lines().iter().any(|line| {
            line.message.contains(&format!(
                "run {victim_run} of `drill-0` stopped past the approval gate without finishing"
            ))
        })
    });

    // The figures.
    let deploy_started = first_by_run(&agents, "[deploy] started");
    let deploy_done = first_by_run(&agents, "[deploy] succeeded");
    let mut waits: Vec<f64> = Vec::new();
    for (release, ids) in &runs_of_release {
        let (_, at) = published[release];
        let started = deploy_started[&ids[0]];
        waits.push(seconds_between(at, started));
    }
    waits.sort_by(f64::total_cmp);
    let last_done = deploy_done.values().max().copied().unwrap();
    let minutes = seconds_between(first_publish, last_done) / 60.0;
    let releases = published.len() as f64;
    eprintln!(
        "drill: {} releases, {} pipelines, 3 agents (one killed) | releases per minute {:.1} ({:.1}s from the first publish to the last deploy) | publish to deploy start: median {:.1}s, p95 {:.1}s | DynamoDB calls per release {:.1} ({dynamodb_calls} calls) | a newer drill-0 run waited at the gate for the killed run: {}",
        published.len(),
        PIPELINES,
        releases / minutes,
        minutes * 60.0,
        percentile(&waits, 0.5),
        percentile(&waits, 0.95),
        dynamodb_calls as f64 / releases,
        if kept_waiting { "yes" } else { "no" },
    );
}
