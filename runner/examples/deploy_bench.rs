//! Benchmark: how soon after ECS reports a rollout COMPLETED the deploy stage gives its
//! verdict (target: median ≤ 0.5 s, none over 2 s), and how many ECS calls it makes per
//! deployed service (target: DescribeServices ≤ 1.5, preflight included).
//!
//! Against ministack (real containers on the Docker daemon): a cluster with N services that
//! share one image (like api/worker/scheduler/reverb), deployed back and forth between two
//! digests. While `Deploy::wait` runs, the benchmark itself polls DescribeServices directly
//! (every 20 ms, not counted) to timestamp the moment each service's new deployment is PRIMARY,
//! COMPLETED and running == desired; the verdict time is when the library reports the service
//! finished. The library's calls go through a counting HTTP proxy (by X-Amz-Target).
//!
//! Needs the test environment (`scripts/test-env up`). Usually run through
//! `scripts/bench-deploy`:
//!
//! ```text
//! cargo run -p envelope-runner --example deploy_bench -- [--rounds 3] [--services 4]
//! ```
// A benchmark or development tool, not product code: it may panic on a broken set-up.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition,
    DeploymentCircuitBreaker, DeploymentConfiguration, LaunchType, NetworkConfiguration,
    NetworkMode,
};
use envelope_runner::exec::ecs::deploy::{
    Deploy, DeployProgress, DeployRecord, DeployRequest, OnFailure, Phase,
};
use envelope_runner::exec::ecs::{EcsAws, PollSchedule};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const ROLES: [&str; 10] = [
    "api",
    "worker",
    "scheduler",
    "reverb",
    "tenant",
    "hq",
    "horizon",
    "mailer",
    "search",
    "ws",
];

struct Options {
    rounds: usize,
    services: usize,
    registry: String,
    base_image: String,
    docker_cli: String,
    endpoint: String,
}

impl Options {
    fn from_args() -> Result<Options, String> {
        let env_or = |name: &str, default: &str| std::env::var(name).unwrap_or(default.into());
        let mut options = Options {
            rounds: 3,
            services: 4,
            registry: env_or("ENVELOPE_TEST_REGISTRY", "127.0.0.1:5000"),
            base_image: env_or("ENVELOPE_TEST_BASE_IMAGE", "envelope-test/busybox:1"),
            docker_cli: env_or("ENVELOPE_TEST_DOCKER_CLI", "/usr/bin/docker"),
            endpoint: env_or("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--rounds" => {
                    options.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?
                }
                "--services" => {
                    options.services = value()?.parse().map_err(|e| format!("--services: {e}"))?;
                    if !(1..=ROLES.len()).contains(&options.services) {
                        return Err(format!("--services: 1 to {}", ROLES.len()));
                    }
                }
                "-h" | "--help" => {
                    println!("usage: deploy_bench [--rounds N] [--services 1..10]");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other}")),
            }
        }
        Ok(options)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let options = Options::from_args().unwrap_or_else(|error| {
        eprintln!("deploy_bench: {error}");
        std::process::exit(2);
    });
    let endpoint = options.endpoint.trim_end_matches('/').to_owned();
    let images = [build_image(&options, "a"), build_image(&options, "b")];
    let direct = aws_sdk_ecs::Client::new(&sdk_config(&endpoint).await);
    let cluster = format!(
        "envelope-bench-{}-{:x}",
        std::process::id(),
        now_nanos() % 0xffff_ffff
    );
    let services = create_services(&direct, &cluster, &options, &images[0]).await;

    let proxy = CountingProxy::start(&endpoint).await;
    let aws = EcsAws::new(&sdk_config(&proxy.url).await);

    println!(
        "deploy_bench: {} services on ministack ({}), {} rounds, poll {:?} while tasks start",
        services.len(),
        endpoint,
        options.rounds,
        PollSchedule::DEPLOY
    );
    println!();
    println!("round  service                    start→done   COMPLETED→verdict");
    let mut latencies = Vec::new();
    let mut stage_latencies = Vec::new();
    let mut calls_per_round = Vec::new();
    for round in 1..=options.rounds {
        let image = &images[round % 2];
        let request = DeployRequest {
            cluster: cluster.clone(),
            services: services.clone(),
            images: vec![image.clone()],
            run_id: format!("bench{round}"),
            stage: "deploy".into(),
            timeout: Duration::from_secs(180),
            rollback_timeout: Duration::from_secs(180),
            on_failure: OnFailure::Rollback,
            poll: PollSchedule::DEPLOY,
        };
        proxy.reset();
        let verdicts: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
        let sink = verdicts.clone();
        let progress = move |event: DeployProgress| {
            if let DeployProgress::Finished {
                service,
                phase: Phase::Deploy,
                outcome,
            } = event
            {
                assert!(outcome.is_ok(), "{service}: {outcome:?}");
                sink.lock().unwrap().insert(service, Instant::now());
            }
        };
        let started = Instant::now();
        let mut deploy = Deploy::new(&aws, &request, DeployRecord::default());
        deploy
            .prepare(&progress)
            .await
            .expect("preflight and registration");
        deploy.update(&progress).await.expect("UpdateService");
        let targets: BTreeMap<String, String> = deploy.record().task_definitions.clone();
        let observer = tokio::spawn(observe(direct.clone(), cluster.clone(), targets));
        deploy.wait(&progress).await.expect("the rollout");
        let stage_done = Instant::now();
        let completed = observer.await.unwrap();
        calls_per_round.push(proxy.counts());

        let verdicts = verdicts.lock().unwrap().clone();
        for service in &services {
            let latency = verdicts[service].saturating_duration_since(completed[service]);
            let rollout = completed[service] - started;
            println!(
                "{round:>5}  {service:<26} {:>6.2} s  {:>8.2} s",
                rollout.as_secs_f64(),
                latency.as_secs_f64()
            );
            latencies.push(latency);
        }
        let last_completed = completed.values().max().copied().unwrap();
        stage_latencies.push(stage_done.saturating_duration_since(last_completed));
    }

    latencies.sort();
    stage_latencies.sort();
    let seconds = |d: Duration| d.as_secs_f64();
    println!();
    println!(
        "per service, ECS COMPLETED → verdict:  min {:.2} s  median {:.2} s  max {:.2} s   (target: median ≤ 0.5 s, max ≤ 2 s)",
        seconds(latencies[0]),
        seconds(latencies[latencies.len() / 2]),
        seconds(*latencies.last().unwrap())
    );
    println!(
        "whole stage, last COMPLETED → return: min {:.2} s  median {:.2} s  max {:.2} s",
        seconds(stage_latencies[0]),
        seconds(stage_latencies[stage_latencies.len() / 2]),
        seconds(*stage_latencies.last().unwrap())
    );
    println!();
    println!("ECS calls per deployed service (averaged over rounds, counted by the proxy):");
    let mut totals: BTreeMap<String, usize> = BTreeMap::new();
    for counts in &calls_per_round {
        for (op, n) in counts {
            *totals.entry(op.clone()).or_default() += n;
        }
    }
    let per_service = |n: usize| n as f64 / (options.rounds * services.len()) as f64;
    for (op, n) in &totals {
        println!("  {op:<24} {:>6.2}", per_service(*n));
    }
    println!(
        "  {:<24} {:>6.2}",
        "all",
        per_service(totals.values().sum())
    );

    for service in &services {
        let _ = direct
            .delete_service()
            .cluster(&cluster)
            .service(service)
            .force(true)
            .send()
            .await;
    }
    let _ = direct.delete_cluster().cluster(&cluster).send().await;
    let worst = *latencies.last().unwrap();
    let median = latencies[latencies.len() / 2];
    let describes = per_service(totals.get("DescribeServices").copied().unwrap_or(0));
    let mut missed = Vec::new();
    if worst > Duration::from_secs(2) {
        missed.push(format!(
            "the slowest verdict took {:.2} s, over 2 s",
            seconds(worst)
        ));
    }
    if median > Duration::from_millis(500) {
        missed.push(format!(
            "the median verdict took {:.2} s, over 0.5 s",
            seconds(median)
        ));
    }
    if describes > 1.5 {
        missed.push(format!(
            "{describes:.2} DescribeServices calls per service, over 1.5"
        ));
    }
    if !missed.is_empty() {
        eprintln!("deploy_bench: {}", missed.join("; "));
        std::process::exit(1);
    }
}

/// Polls DescribeServices every 20 ms until each service's new revision is PRIMARY,
/// COMPLETED and running == desired; returns when each got there.
async fn observe(
    ecs: aws_sdk_ecs::Client,
    cluster: String,
    targets: BTreeMap<String, String>,
) -> BTreeMap<String, Instant> {
    let mut completed = BTreeMap::new();
    let names: Vec<String> = targets.keys().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    while completed.len() < targets.len() && Instant::now() < deadline {
        let output = ecs
            .describe_services()
            .cluster(&cluster)
            .set_services(Some(names.clone()))
            .send()
            .await
            .expect("DescribeServices");
        let now = Instant::now();
        for service in output.services() {
            let name = service.service_name().unwrap_or_default();
            if completed.contains_key(name) {
                continue;
            }
            let done = service.deployments().iter().any(|d| {
                d.status() == Some("PRIMARY")
                    && d.task_definition() == targets.get(name).map(String::as_str)
                    && d.rollout_state().map(|s| s.as_str()) == Some("COMPLETED")
                    && d.running_count == d.desired_count
            });
            if done {
                completed.insert(name.to_owned(), now);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    completed
}

async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .load()
        .await
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// An image that runs until stopped, pushed to the plain registry; returns `repo@sha256:…`.
fn build_image(options: &Options, variant: &str) -> String {
    let dir = std::env::temp_dir().join(format!(
        "envelope-deploy-bench-{}-{variant}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo {variant} > /variant\n\
             CMD [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n",
            options.base_image
        ),
    )
    .unwrap();
    let reference = format!("{}/envelope-bench/deploy:{variant}", options.registry);
    let run = |args: &[&str]| {
        let output = Command::new(&options.docker_cli)
            .env("DOCKER_BUILDKIT", "1")
            .args(args)
            .output()
            .expect("running docker");
        assert!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    run(&["build", "-q", "-t", &reference, &dir.display().to_string()]);
    let _ = std::fs::remove_dir_all(&dir);
    let out = run(&["push", &reference]);
    let digest = out
        .split_whitespace()
        .skip_while(|w| *w != "digest:")
        .nth(1)
        .expect("docker push prints the digest")
        .to_owned();
    format!("{}/envelope-bench/deploy@{digest}", options.registry)
}

async fn create_services(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    options: &Options,
    image: &str,
) -> Vec<String> {
    ecs.create_cluster()
        .cluster_name(cluster)
        .send()
        .await
        .unwrap();
    let mut services = Vec::new();
    for role in &ROLES[..options.services] {
        let td = ecs
            .register_task_definition()
            .family(format!("{cluster}-{role}"))
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu("256")
            .memory("512")
            .container_definitions(
                ContainerDefinition::builder()
                    .name(*role)
                    .image(image)
                    .essential(true)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .task_definition
            .unwrap();
        let name = format!("envelope-prod-{role}");
        ecs.create_service()
            .cluster(cluster)
            .service_name(&name)
            .task_definition(td.task_definition_arn.unwrap())
            .desired_count(1)
            .launch_type(LaunchType::Fargate)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(
                        AwsVpcConfiguration::builder()
                            .subnets("subnet-bench")
                            .security_groups("sg-bench")
                            .assign_public_ip(AssignPublicIp::Disabled)
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .deployment_configuration(
                DeploymentConfiguration::builder()
                    .deployment_circuit_breaker(
                        DeploymentCircuitBreaker::builder()
                            .enable(true)
                            .rollback(true)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        services.push(name);
    }
    // Wait for the first tasks: ministack reports a new service COMPLETED before any runs.
    loop {
        let output = ecs
            .describe_services()
            .cluster(cluster)
            .set_services(Some(services.clone()))
            .send()
            .await
            .unwrap();
        if output
            .services()
            .iter()
            .all(|s| s.running_count == s.desired_count)
        {
            return services;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Forwards every request to ministack and counts them by X-Amz-Target operation.
struct CountingProxy {
    url: String,
    counts: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl CountingProxy {
    async fn start(upstream: &str) -> CountingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let counts: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let shared = counts.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counts = shared.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let operation = request
                            .headers()
                            .get("x-amz-target")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.rsplit('.').next())
                            .unwrap_or("other")
                            .to_owned();
                        *counts.lock().unwrap().entry(operation).or_default() += 1;
                        forward(request, upstream.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        CountingProxy { url, counts }
    }

    fn reset(&self) {
        self.counts.lock().unwrap().clear();
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        self.counts.lock().unwrap().clone()
    }
}

async fn forward(
    request: Request<Incoming>,
    upstream: String,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(&upstream).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}
