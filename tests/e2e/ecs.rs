//! ECS end-to-end tests: migrate and deploy against ministack, whose ECS runs every task as a
//! real container on the Docker daemon (real exit codes, stop codes, rolling deployments,
//! circuit breaker and rollback) and forwards awslogs output to its CloudWatch Logs.
//!
//! Each test builds its own cluster mirroring the Envelope API's (api, worker, scheduler and
//! reverb sharing one image, awsvpc on a subnet and security group made with ministack's EC2
//! API, awslogs into one log group) under unique names, so tests never reset ministack (a
//! reset would wipe other tests' ECR repositories). Images come from the plain registry on
//! 127.0.0.1:5000, pinned by digest.
//!
//! Calls go through a small HTTP proxy in front of ministack that counts every operation
//! (X-Amz-Target) and can answer the first N calls of an operation with a
//! ThrottlingException, the way AWS does.
//!
//! Every test skips (with a note on stderr) only when ENVELOPE_TEST_REQUIRE_DOCKER is unset and
//! Docker or ministack cannot be reached; CI sets it, so there they run for real.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition,
    DeploymentCircuitBreaker, DeploymentConfiguration, KeyValuePair, LaunchType, LogConfiguration,
    LogDriver, NetworkConfiguration, NetworkMode, Tag, TaskField,
};
use bytes::Bytes;
use envelope_runner::exec::ecs::deploy::{
    self, Deploy, DeployProgress, DeployRecord, DeployRequest, OnFailure, Phase, RolloutFailure,
};
use envelope_runner::exec::ecs::migrate::{
    Migration, MigrationProgress, MigrationRecord, MigrationRequest,
};
use envelope_runner::exec::ecs::{EcsAws, EcsError, PollSchedule};
use envelope_tests::env::{TestEnv, test_env, unique};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

pub(crate) const ROLES: [&str; 4] = ["api", "worker", "scheduler", "reverb"];

// ---------------------------------------------------------------- the environment

/// The environment, or `None` (after a note) when Docker or ministack cannot be reached and
/// ENVELOPE_TEST_REQUIRE_DOCKER is unset.
pub(crate) async fn parts(test: &str) -> Option<&'static TestEnv> {
    let required = std::env::var_os("ENVELOPE_TEST_REQUIRE_DOCKER").is_some();
    let reason = match tokio::task::spawn_blocking(test_env).await.unwrap() {
        Ok(env) => {
            let docker_ok = Command::new(env.docker_cli())
                .arg("info")
                .output()
                .is_ok_and(|o| o.status.success());
            let ministack_ok = http_get(&format!("{}/_ministack/ready", env.endpoint()))
                .await
                .is_ok_and(|(status, _)| status == 200);
            match (docker_ok, ministack_ok) {
                (true, true) => return Some(env),
                (false, _) => "Docker does not answer".to_owned(),
                (_, false) => format!("ministack does not answer at {}", env.endpoint()),
            }
        }
        Err(reason) => reason,
    };
    if required {
        panic!("{test}: ENVELOPE_TEST_REQUIRE_DOCKER is set but {reason}");
    }
    eprintln!("{test}: skipped: {reason} (set ENVELOPE_TEST_REQUIRE_DOCKER to fail instead)");
    None
}

// ---------------------------------------------------------------- images

/// The app image in three versions, pushed to the plain registry and pinned by digest.
struct Images {
    repository: String,
    /// What the services run before the deploy.
    v1: String,
    /// A good new release.
    v2: String,
    /// A release whose worker exits at once ("cannot connect to the queue").
    bad: String,
    /// v1's content under another repository: a sidecar that must keep its image.
    sidecar: String,
}

const START: &str = r#"#!/bin/sh
# /app/start ROLE: what a service runs. Roles listed in /app/crash-roles exit at once.
role="${1:-app}"
echo "$role: starting version $(cat /app/version)"
if grep -qx "$role" /app/crash-roles; then
    echo "$role: cannot connect to the queue"
    exit 1
fi
trap 'echo "$role: stopping"; exit 0' TERM INT
while true; do sleep 1; done
"#;

const MIGRATE: &str = r#"#!/bin/sh
# /app/migrate [EXIT-CODE] [LINES]: what `php artisan migrate --force` stands for.
code="${1:-0}"
lines="${2:-30}"
i=1
while [ "$i" -le "$lines" ]; do
    echo "Migrating: 2026_01_01_0000$(printf %02d "$i")_step_$i"
    i=$((i + 1))
done
echo "migration finished with exit code $code"
exit "$code"
"#;

fn images(env: &TestEnv) -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let repository = format!("{}/envelope-e2e/ecs-app", env.registry());
        let build = |version: &str, crash_roles: &str, reference: &str| -> String {
            let dir = tempfile::tempdir().unwrap();
            let app = dir.path().join("app");
            std::fs::create_dir(&app).unwrap();
            std::fs::write(app.join("version"), format!("{version}\n")).unwrap();
            std::fs::write(app.join("crash-roles"), crash_roles).unwrap();
            for (name, text) in [("start", START), ("migrate", MIGRATE)] {
                std::fs::write(app.join(name), text).unwrap();
                let mut permissions = std::fs::metadata(app.join(name)).unwrap().permissions();
                std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
                std::fs::set_permissions(app.join(name), permissions).unwrap();
            }
            std::fs::write(
                dir.path().join("Dockerfile"),
                format!(
                    "FROM {}\nCOPY app /app\n",
                    env.var("ENVELOPE_TEST_BASE_IMAGE")
                ),
            )
            .unwrap();
            docker(
                env,
                &[
                    "build",
                    "-q",
                    "-t",
                    reference,
                    &dir.path().display().to_string(),
                ],
            );
            push(env, reference)
        };
        let v1 = build("v1", "", &format!("{repository}:v1"));
        let v2 = build("v2", "", &format!("{repository}:v2"));
        let bad = build("v3-bad", "worker\n", &format!("{repository}:v3-bad"));
        let sidecar_tag = format!("{}/envelope-e2e/ecs-sidecar:1", env.registry());
        docker(env, &["tag", &format!("{repository}:v1"), &sidecar_tag]);
        let sidecar = push(env, &sidecar_tag);
        Images {
            repository,
            v1,
            v2,
            bad,
            sidecar,
        }
    })
}

fn docker(env: &TestEnv, args: &[&str]) -> String {
    let output = Command::new(env.docker_cli())
        .env("DOCKER_BUILDKIT", "1")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Pushes `reference` (`repo:tag`) and returns `repo@sha256:…`.
fn push(env: &TestEnv, reference: &str) -> String {
    let out = docker(env, &["push", reference]);
    let digest = out
        .split_whitespace()
        .skip_while(|word| *word != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{out}"));
    let repository = reference.rsplit_once(':').unwrap().0;
    format!("{repository}@{digest}")
}

// ---------------------------------------------------------------- a counting, throttling proxy

#[derive(Default)]
struct ProxyState {
    /// Every call: operation and when it arrived.
    calls: Vec<(String, Instant)>,
    /// Operation → calls still to be answered with a ThrottlingException.
    throttle: HashMap<String, usize>,
    throttled: HashMap<String, usize>,
}

/// An HTTP proxy in front of ministack that counts calls by X-Amz-Target operation and can
/// throttle the first N calls of an operation.
struct Proxy {
    url: String,
    state: Arc<Mutex<ProxyState>>,
}

type ProxyBody = BoxBody<Bytes, hyper::Error>;

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        handle(request, state.clone(), upstream.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Proxy { url, state }
    }

    fn throttle(&self, operation: &str, times: usize) {
        self.state
            .lock()
            .unwrap()
            .throttle
            .insert(operation.to_owned(), times);
    }

    /// Calls of `operation` that reached the proxy (throttled ones included).
    fn count(&self, operation: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(op, _)| op == operation)
            .count()
    }

    fn throttled(&self, operation: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .throttled
            .get(operation)
            .copied()
            .unwrap_or(0)
    }

    fn times(&self, operation: &str) -> Vec<Instant> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(op, _)| op == operation)
            .map(|(_, at)| *at)
            .collect()
    }

    fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for (op, _) in &self.state.lock().unwrap().calls {
            *counts.entry(op.clone()).or_default() += 1;
        }
        counts
    }
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<Mutex<ProxyState>>,
    upstream: String,
) -> Result<Response<ProxyBody>, Infallible> {
    let operation = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit('.').next())
        .unwrap_or("other")
        .to_owned();
    let throttle = {
        let mut state = state.lock().unwrap();
        state.calls.push((operation.clone(), Instant::now()));
        let remaining = state.throttle.get(&operation).copied().unwrap_or(0);
        if remaining > 0 {
            state.throttle.insert(operation.clone(), remaining - 1);
            *state.throttled.entry(operation.clone()).or_default() += 1;
        }
        remaining > 0
    };
    if throttle {
        let body = Full::new(Bytes::from_static(
            br#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
        ))
        .map_err(|never| match never {})
        .boxed();
        return Ok(Response::builder()
            .status(400)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amzn-requestid", "throttled-by-the-test-proxy")
            .body(body)
            .unwrap());
    }
    match forward(request, &upstream).await {
        Ok(response) => Ok(response.map(|body| body.boxed())),
        Err(error) => Ok(Response::builder()
            .status(502)
            .body(
                Full::new(Bytes::from(format!("proxy: {error}")))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap()),
    }
}

async fn forward(request: Request<Incoming>, upstream: &str) -> Result<Response<Incoming>, String> {
    let stream = tokio::net::TcpStream::connect(upstream)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// A plain HTTP request (used for ministack's EC2 Query API and its health endpoint).
async fn http_request(
    method: &str,
    url: &str,
    headers: &[(&str, String)],
    body: String,
) -> Result<(u16, String), String> {
    let rest = url.trim_start_matches("http://");
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

pub(crate) async fn http_get(url: &str) -> Result<(u16, String), String> {
    tokio::time::timeout(
        Duration::from_secs(5),
        http_request("GET", url, &[], String::new()),
    )
    .await
    .map_err(|_| "timed out".to_owned())?
}

// ---------------------------------------------------------------- the cluster

/// A cluster like envelope-prod-cluster: four services sharing the app image on awsvpc.
pub(crate) struct Cluster {
    env: &'static TestEnv,
    /// The emulator the cluster lives on.
    endpoint: String,
    pub(crate) name: String,
    arn: String,
    log_group: String,
    subnet: String,
    /// Service names in ROLES order.
    pub(crate) services: Vec<String>,
    pub(crate) ecs: aws_sdk_ecs::Client,
}

/// One call of ministack's EC2 Query API. ministack routes by the SigV4 credential scope and
/// does not check the signature, so a well-formed header with a dummy signature is enough.
async fn ec2(env: &TestEnv, endpoint: &str, params: &[(&str, &str)]) -> String {
    let mut body = String::from("Version=2016-11-15");
    for (name, value) in params {
        body.push('&');
        body.push_str(name);
        body.push('=');
        for byte in value.bytes() {
            if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
                body.push(byte as char);
            } else {
                body.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/20260101/{}/ec2/aws4_request, SignedHeaders=host, Signature=00",
        env.var("AWS_ACCESS_KEY_ID"),
        env.region()
    );
    let (status, text) = http_request(
        "POST",
        &format!("{endpoint}/"),
        &[
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
            ),
            ("authorization", auth),
        ],
        body,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "EC2 {params:?}: {text}");
    text
}

fn xml_value(xml: &str, tag: &str) -> String {
    let open = format!("<{tag}>");
    let start = xml
        .find(&open)
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
        + open.len();
    let end = xml[start..].find('<').unwrap() + start;
    xml[start..end].to_owned()
}

impl Cluster {
    /// `breaker`: whether the services use the deployment circuit breaker with rollback.
    pub(crate) async fn create(env: &'static TestEnv, breaker: bool) -> Cluster {
        Cluster::create_at(env, env.endpoint(), breaker).await
    }

    /// [`Cluster::create`] on the emulator at `endpoint`.
    pub(crate) async fn create_at(env: &'static TestEnv, endpoint: &str, breaker: bool) -> Cluster {
        let images = images(env);
        let name = unique("envelope-e2e-cluster");
        let config = env.sdk_config(endpoint).await;
        let ecs = aws_sdk_ecs::Client::new(&config);
        let logs = aws_sdk_cloudwatchlogs::Client::new(&config);

        let vpc = xml_value(
            &ec2(
                env,
                endpoint,
                &[("Action", "CreateVpc"), ("CidrBlock", "10.42.0.0/16")],
            )
            .await,
            "vpcId",
        );
        let subnet = xml_value(
            &ec2(
                env,
                endpoint,
                &[
                    ("Action", "CreateSubnet"),
                    ("VpcId", &vpc),
                    ("CidrBlock", "10.42.1.0/24"),
                ],
            )
            .await,
            "subnetId",
        );
        let security_group = xml_value(
            &ec2(
                env,
                endpoint,
                &[
                    ("Action", "CreateSecurityGroup"),
                    ("GroupName", &format!("{name}-laravel")),
                    ("GroupDescription", "envelope laravel tasks"),
                    ("VpcId", &vpc),
                ],
            )
            .await,
            "groupId",
        );

        let arn = ecs
            .create_cluster()
            .cluster_name(&name)
            .send()
            .await
            .unwrap()
            .cluster
            .and_then(|cluster| cluster.cluster_arn)
            .expect("CreateCluster returns the cluster's ARN");
        let log_group = format!("/ecs/{name}");
        logs.create_log_group()
            .log_group_name(&log_group)
            .send()
            .await
            .unwrap();

        let mut services = Vec::new();
        for role in ROLES {
            let log = LogConfiguration::builder()
                .log_driver(LogDriver::Awslogs)
                .options("awslogs-group", &log_group)
                .options("awslogs-region", env.region())
                .options("awslogs-stream-prefix", "ecs")
                .build()
                .unwrap();
            let mut register = ecs
                .register_task_definition()
                .family(format!("{name}-{role}"))
                .network_mode(NetworkMode::Awsvpc)
                .requires_compatibilities(Compatibility::Fargate)
                .cpu("256")
                .memory("512")
                .tags(Tag::builder().key("Environment").value("e2e").build())
                .container_definitions(
                    ContainerDefinition::builder()
                        .name(role)
                        .image(&images.v1)
                        .essential(true)
                        .command("/app/start")
                        .command(role)
                        .environment(KeyValuePair::builder().name("APP_ENV").value("e2e").build())
                        .log_configuration(log.clone())
                        .build(),
                );
            if role == "api" {
                register = register.container_definitions(
                    ContainerDefinition::builder()
                        .name("log-router")
                        .image(&images.sidecar)
                        .essential(false)
                        .command("/app/start")
                        .command("log-router")
                        .build(),
                );
            }
            let td = register.send().await.unwrap().task_definition.unwrap();
            let service = format!("envelope-prod-{role}");
            ecs.create_service()
                .cluster(&name)
                .service_name(&service)
                .task_definition(td.task_definition_arn.unwrap())
                .desired_count(1)
                .launch_type(LaunchType::Fargate)
                .network_configuration(
                    NetworkConfiguration::builder()
                        .awsvpc_configuration(
                            AwsVpcConfiguration::builder()
                                .subnets(&subnet)
                                .security_groups(&security_group)
                                .assign_public_ip(AssignPublicIp::Disabled)
                                .build()
                                .unwrap(),
                        )
                        .build(),
                )
                .deployment_configuration(
                    DeploymentConfiguration::builder()
                        .maximum_percent(200)
                        .minimum_healthy_percent(100)
                        .deployment_circuit_breaker(
                            DeploymentCircuitBreaker::builder()
                                .enable(breaker)
                                .rollback(breaker)
                                .build(),
                        )
                        .build(),
                )
                .send()
                .await
                .unwrap();
            services.push(service);
        }
        let cluster = Cluster {
            env,
            endpoint: endpoint.to_owned(),
            name,
            arn,
            log_group,
            subnet,
            services,
            ecs,
        };
        cluster.wait_until_running().await;
        cluster
    }

    /// Waits until every service runs its desired tasks (ministack reports a new service's
    /// first deployment COMPLETED before any task runs).
    pub(crate) async fn wait_until_running(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = self
                .ecs
                .describe_services()
                .cluster(&self.name)
                .set_services(Some(self.services.clone()))
                .send()
                .await
                .unwrap();
            let ready = out.services().iter().all(|s| {
                s.deployments().len() == 1
                    && s.deployments()[0].running_count == s.desired_count
                    && s.deployments()[0].rollout_state().map(|r| r.as_str()) == Some("COMPLETED")
            });
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "services did not start: {:#?}",
                out.services()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub(crate) async fn task_definitions(&self) -> BTreeMap<String, String> {
        let out = self
            .ecs
            .describe_services()
            .cluster(&self.name)
            .set_services(Some(self.services.clone()))
            .send()
            .await
            .unwrap();
        out.services()
            .iter()
            .map(|s| {
                (
                    s.service_name().unwrap().to_owned(),
                    s.task_definition().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// The images of the running tasks of `service`, by container.
    async fn running_images(&self, service: &str) -> Vec<BTreeMap<String, String>> {
        let arns = self
            .ecs
            .list_tasks()
            .cluster(&self.name)
            .service_name(service)
            .send()
            .await
            .unwrap()
            .task_arns
            .unwrap_or_default();
        if arns.is_empty() {
            return Vec::new();
        }
        let tasks = self
            .ecs
            .describe_tasks()
            .cluster(&self.name)
            .set_tasks(Some(arns))
            .send()
            .await
            .unwrap();
        tasks
            .tasks()
            .iter()
            .filter(|t| t.last_status() == Some("RUNNING"))
            .map(|t| {
                t.containers()
                    .iter()
                    .map(|c| (c.name().unwrap().to_owned(), c.image().unwrap().to_owned()))
                    .collect()
            })
            .collect()
    }

    /// The running tasks of `service` once every one of them runs `image` in container
    /// `role`. ECS (and ministack) report a rollout COMPLETED while the replaced tasks are
    /// still being stopped, so this waits a little for them to go.
    pub(crate) async fn settled_images(
        &self,
        service: &str,
        role: &str,
        image: &str,
    ) -> Vec<BTreeMap<String, String>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let running = self.running_images(service).await;
            if !running.is_empty() && running.iter().all(|task| task[role] == image) {
                return running;
            }
            assert!(
                Instant::now() < deadline,
                "{service}: running tasks do not settle on {image}: {running:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn container_images(&self, task_definition: &str) -> BTreeMap<String, String> {
        let td = self
            .ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .unwrap()
            .task_definition
            .unwrap();
        td.container_definitions()
            .iter()
            .map(|c| (c.name().unwrap().to_owned(), c.image().unwrap().to_owned()))
            .collect()
    }

    fn migration(&self, images: &[&str], command: &[&str]) -> MigrationRequest {
        MigrationRequest {
            cluster: self.name.clone(),
            service: "envelope-prod-api".into(),
            container: "api".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            images: images.iter().map(|s| s.to_string()).collect(),
            run_id: ulid_like(),
            pipeline: "api".into(),
            stage: "migrate".into(),
            timeout: Duration::from_secs(120),
            poll: PollSchedule::MIGRATION,
        }
    }

    fn deploy(&self, image: &str, timeout: Duration) -> DeployRequest {
        DeployRequest {
            cluster: self.name.clone(),
            services: self.services.clone(),
            images: vec![image.to_owned()],
            run_id: ulid_like(),
            stage: "deploy".into(),
            timeout,
            rollback_timeout: Duration::from_secs(120),
            on_failure: OnFailure::Rollback,
            poll: PollSchedule::DEPLOY,
        }
    }
}

impl Drop for Cluster {
    /// Deletes the services (their task containers stop) and the cluster.
    fn drop(&mut self) {
        let env = self.env;
        let endpoint = self.endpoint.clone();
        let name = self.name.clone();
        let services = self.services.clone();
        // A client of its own: the test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let ecs = aws_sdk_ecs::Client::new(&env.sdk_config(&endpoint).await);
                for service in services {
                    let _ = ecs
                        .delete_service()
                        .cluster(&name)
                        .service(service)
                        .force(true)
                        .send()
                        .await;
                }
                let _ = ecs.delete_cluster().cluster(&name).send().await;
            });
        })
        .join();
        // The emulator stops a deleted service's essential containers but leaves the others
        // (the api's log-router sidecar) running: remove every container of the cluster.
        crate::support::remove_containers(
            self.env.docker_cli(),
            &format!("label=com.amazonaws.ecs.cluster={}", self.arn),
        );
    }
}

/// A run id shaped like the runner's (a lower-case ULID: 26 characters).
fn ulid_like() -> String {
    let id = unique("r").replace('-', "");
    format!("{:0>26}", &id[id.len().saturating_sub(26)..]).to_lowercase()
}

/// A progress callback that keeps (and prints) every event.
fn recorder<T: Clone + std::fmt::Debug + Send + 'static>()
-> (Arc<Mutex<Vec<T>>>, impl Fn(T) + Send + Sync) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |event: T| {
        eprintln!("progress: {event:?}");
        sink.lock().unwrap().push(event);
    })
}

fn log_lines(events: &[MigrationProgress]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            MigrationProgress::Log { line } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

fn expected_migration_lines(code: i32, lines: usize) -> Vec<String> {
    let mut out: Vec<String> = (1..=lines)
        .map(|i| format!("Migrating: 2026_01_01_0000{i:02}_step_{i}"))
        .collect();
    out.push(format!("migration finished with exit code {code}"));
    out
}

// ---------------------------------------------------------------- migrate

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_exits_0_succeeds_with_every_log_line_and_is_never_started_twice() {
    let Some(env) = parts("migration exit 0").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let proxy = Proxy::start(env.endpoint()).await;
    let aws = EcsAws::new(&env.sdk_config(&proxy.url).await);
    let request = cluster.migration(&[&images.v2], &["/app/migrate", "0", "30"]);
    let (events, progress) = recorder();

    let mut migration = Migration::new(&aws, &request, MigrationRecord::default());
    migration.register(&progress).await.unwrap();
    let registered = migration.record().task_definition.clone().unwrap();
    // What the caller records between the steps survives a round trip through JSON.
    let stored = serde_json::to_string(migration.record()).unwrap();
    let record: MigrationRecord = serde_json::from_str(&stored).unwrap();
    assert_eq!(&record, migration.record());
    migration.start(&progress).await.unwrap();
    let task_arn = migration.record().task_arn.clone().unwrap();
    let outcome = migration.wait(&progress).await.unwrap();

    assert_eq!(outcome.exit_code, 0);
    assert_eq!(outcome.task_arn, task_arn);
    assert_eq!(
        log_lines(&events.lock().unwrap()),
        expected_migration_lines(0, 30),
        "every line, in order, none lost at the end"
    );
    assert_eq!(outcome.log_lines, 31);
    let stream = outcome.log_stream.clone().unwrap();
    assert_eq!(
        stream,
        format!(
            "{} ecs/api/{}",
            cluster.log_group,
            task_arn.rsplit('/').next().unwrap()
        )
    );

    // The new revision has the new digest for the app and the sidecar untouched.
    let images_in_td = cluster.container_images(&registered).await;
    assert_eq!(images_in_td["api"], images.v2);
    assert_eq!(images_in_td["log-router"], images.sidecar);

    // The task ran on the service's network, named the run, and carried its tags.
    let task = cluster
        .ecs
        .describe_tasks()
        .cluster(&cluster.name)
        .tasks(&task_arn)
        .include(TaskField::Tags)
        .send()
        .await
        .unwrap()
        .tasks
        .unwrap()
        .remove(0);
    assert_eq!(task.started_by(), Some(request.started_by().as_str()));
    assert!(request.started_by().len() <= 36);
    assert_eq!(task.launch_type(), Some(&LaunchType::Fargate));
    let subnet = task
        .attachments()
        .iter()
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("subnetId"));
    assert_eq!(
        subnet.and_then(|d| d.value()),
        Some(cluster.subnet.as_str())
    );
    let tags: BTreeMap<_, _> = task
        .tags()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert_eq!(tags["envelope:run"], request.run_id);
    assert_eq!(tags["envelope:pipeline"], "api");
    assert_eq!(proxy.count("RunTask"), 1);

    // Resumed with the recorded task: it re-attaches and judges the same task again.
    let mut resumed = Migration::new(&aws, &request, migration.record().clone());
    let again = resumed.run(&|_| {}).await.unwrap();
    assert_eq!(again.task_arn, task_arn);
    // Killed after RunTask but before recording its answer: the run's task is found by
    // startedBy instead of starting a second one.
    let lost = MigrationRecord {
        task_definition: Some(registered.clone()),
        task_arn: None,
    };
    let (reattach_events, reattach_progress) = recorder();
    let mut after_crash = Migration::new(&aws, &request, lost);
    after_crash.start(&reattach_progress).await.unwrap();
    assert_eq!(
        after_crash.record().task_arn.as_deref(),
        Some(task_arn.as_str())
    );
    assert!(
        reattach_events
            .lock()
            .unwrap()
            .contains(&MigrationProgress::Started {
                task_arn: task_arn.clone(),
                reattached: true
            })
    );
    assert_eq!(proxy.count("RunTask"), 1, "never a second migration task");
    assert_eq!(proxy.count("RegisterTaskDefinition"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_exits_1_fails_with_its_last_log_lines() {
    let Some(env) = parts("migration exit 1").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let request = cluster.migration(&[&images.v2], &["/app/migrate", "1", "30"]);
    let (events, progress) = recorder();

    let error = Migration::new(&aws, &request, MigrationRecord::default())
        .run(&progress)
        .await
        .unwrap_err();
    let EcsError::MigrationFailed {
        exit_code,
        ref last_lines,
        ref container,
        ..
    } = error
    else {
        panic!("expected a failed migration, got {error:?}");
    };
    assert_eq!(exit_code, 1);
    assert_eq!(container, "api");
    let expected = expected_migration_lines(1, 30);
    assert_eq!(
        last_lines,
        &expected[expected.len() - 20..],
        "the last 20 lines"
    );
    assert_eq!(
        log_lines(&events.lock().unwrap()),
        expected,
        "all lines were streamed"
    );
    let message = error.to_string();
    assert!(message.contains("exited with code 1"), "{message}");
    assert!(
        message.contains("migration finished with exit code 1"),
        "{message}"
    );
    assert!(
        message.contains("Migrating: 2026_01_01_000030_step_30"),
        "{message}"
    );
    assert!(
        !message.contains("step_10\n"),
        "only the last lines: {message}"
    );
    assert!(message.contains("The deploy did not start"), "{message}");
    assert!(!error.is_environment());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_cannot_start_fails_and_is_not_exit_0() {
    let Some(env) = parts("migration fails to start").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let missing = format!("{}@sha256:{}", images.repository, "0".repeat(64));
    let request = cluster.migration(&[&missing], &["/app/migrate", "0", "3"]);
    let (events, progress) = recorder();

    let result = Migration::new(&aws, &request, MigrationRecord::default())
        .run(&progress)
        .await;
    let error = result.expect_err("a task that never ran must not succeed");
    let EcsError::MigrationFailedToStart { ref reason, .. } = error else {
        panic!("expected a task that failed to start, got {error:?}");
    };
    assert!(
        reason.contains("manifest unknown") || reason.contains("not found"),
        "{reason}"
    );
    assert!(
        error.to_string().contains("there is no exit code"),
        "{error}"
    );
    assert!(error.is_environment());
    assert!(log_lines(&events.lock().unwrap()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_that_runs_too_long_is_stopped_and_fails() {
    let Some(env) = parts("migration timeout").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let mut request = cluster.migration(
        &[&images.v2],
        &["sh", "-c", "echo waiting for a lock; sleep 600"],
    );
    request.timeout = Duration::from_secs(4);
    let (events, progress) = recorder();

    let error = Migration::new(&aws, &request, MigrationRecord::default())
        .run(&progress)
        .await
        .unwrap_err();
    let EcsError::MigrationTimedOut {
        ref task, stopped, ..
    } = error
    else {
        panic!("expected a timeout, got {error:?}");
    };
    assert!(stopped, "{error}");
    assert_eq!(log_lines(&events.lock().unwrap()), ["waiting for a lock"]);
    let status = cluster
        .ecs
        .describe_tasks()
        .cluster(&cluster.name)
        .tasks(task)
        .send()
        .await
        .unwrap()
        .tasks
        .unwrap()
        .remove(0);
    assert_eq!(
        status.last_status(),
        Some("STOPPED"),
        "the task does not run on"
    );
    assert!(
        error
            .to_string()
            .contains("was still running after 4s and was stopped"),
        "{error}"
    );
}

// ---------------------------------------------------------------- deploy

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_of_four_services_runs_the_new_digest_with_one_describe_call_per_poll() {
    let Some(env) = parts("deploy of 4 services").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let before = cluster.task_definitions().await;
    let proxy = Proxy::start(env.endpoint()).await;
    let aws = EcsAws::new(&env.sdk_config(&proxy.url).await);
    let request = cluster.deploy(&images.v2, Duration::from_secs(120));
    let (events, progress) = recorder();

    // What the approval page shows: per service, the image before and after.
    let diffs = deploy::preview(
        &aws,
        &cluster.name,
        &cluster.services,
        std::slice::from_ref(&images.v2),
    )
    .await
    .unwrap();
    for ((service, diff), role) in diffs.iter().zip(ROLES) {
        assert_eq!(service, &format!("envelope-prod-{role}"));
        assert_eq!(diff.images.len(), 1, "{diff}");
        assert_eq!(
            (
                diff.images[0].container.as_str(),
                diff.images[0].before.as_str(),
                diff.images[0].after.as_str()
            ),
            (role, images.v1.as_str(), images.v2.as_str())
        );
        assert!(diff.other.is_empty(), "{diff}");
    }
    assert_eq!(
        proxy.count("RegisterTaskDefinition"),
        0,
        "a preview registers nothing"
    );

    let mut deploy = Deploy::new(&aws, &request, DeployRecord::default());
    let preflight = deploy.prepare(&progress).await.unwrap();
    assert_eq!(preflight.len(), 4);
    assert!(
        preflight
            .iter()
            .all(|p| p.circuit_breaker.is_some_and(|b| b.rollback))
    );
    deploy.update(&progress).await.unwrap();
    let describes_before_wait = proxy.count("DescribeServices");
    assert_eq!(
        describes_before_wait, 2,
        "one call for the preview, one for the preflight"
    );
    let report = deploy.wait(&progress).await.unwrap();

    // One DescribeServices call per poll for the 4 services, each poll at least the
    // schedule's first interval apart.
    let describe_times = proxy.times("DescribeServices");
    let wait_calls = &describe_times[describes_before_wait..];
    assert_eq!(
        wait_calls.len() as u32,
        report.polls,
        "{:?}",
        proxy.counts()
    );
    assert!(report.polls >= 2, "a rollout takes more than one look");
    for pair in wait_calls.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(450),
            "{:?}",
            pair[1] - pair[0]
        );
    }
    // Registrations were held to one per second.
    let registrations = proxy.times("RegisterTaskDefinition");
    assert_eq!(registrations.len(), 4);
    for pair in registrations.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(900),
            "{:?}",
            pair[1] - pair[0]
        );
    }

    let record = deploy.record().clone();
    let after = cluster.task_definitions().await;
    for service in &cluster.services {
        assert_eq!(record.previous_task_definitions[service], before[service]);
        assert_eq!(after[service], record.task_definitions[service]);
        assert_ne!(after[service], before[service]);
        let role = service.trim_start_matches("envelope-prod-");
        let in_td = cluster.container_images(&after[service]).await;
        assert_eq!(in_td[role], images.v2, "{service}");
        let running = cluster.settled_images(service, role, &images.v2).await;
        assert_eq!(
            running.len(),
            1,
            "{service} runs one task, of the new digest: {running:?}"
        );
        if role == "api" {
            assert_eq!(
                in_td["log-router"], images.sidecar,
                "the sidecar keeps its image"
            );
            assert_eq!(running[0]["log-router"], images.sidecar);
        }
    }
    let deployed: Vec<_> = report.services.iter().map(|s| s.service.clone()).collect();
    assert_eq!(deployed, cluster.services);

    // The live view saw rollout progress and the services' new events.
    let events = events.lock().unwrap().clone();
    for service in &cluster.services {
        assert!(events.iter().any(|e| matches!(e, DeployProgress::Rollout(r)
            if &r.service == service && r.new.running == 1 && r.rollout_state == "COMPLETED")));
        assert!(
            events.iter().any(
                |e| matches!(e, DeployProgress::ServiceEvent { service: s, .. } if s == service)
            )
        );
        assert!(events.iter().any(|e| matches!(e, DeployProgress::Finished { service: s, phase: Phase::Deploy, outcome: Ok(()) } if s == service)));
    }

    // Resumed with the record: no registration and no UpdateService, only the wait.
    let stored: DeployRecord =
        serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
    let (registers, updates) = (
        proxy.count("RegisterTaskDefinition"),
        proxy.count("UpdateService"),
    );
    let resumed = Deploy::new(&aws, &request, stored)
        .run(&|_| {})
        .await
        .unwrap();
    assert_eq!(resumed.services, report.services);
    assert_eq!(proxy.count("RegisterTaskDefinition"), registers);
    assert_eq!(proxy.count("UpdateService"), updates);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_whose_worker_crashes_rolls_every_service_back() {
    let Some(env) = parts("deploy rollback").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let before = cluster.task_definitions().await;
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let request = cluster.deploy(&images.bad, Duration::from_secs(120));
    let (events, progress) = recorder();

    let error = Deploy::new(&aws, &request, DeployRecord::default())
        .run(&progress)
        .await
        .unwrap_err();
    let EcsError::Deploy(ref failure) = error else {
        panic!("expected a failed deploy, got {error:?}");
    };
    // The worker's deployment was rolled back by ECS's circuit breaker (or marked FAILED).
    let (failed_service, why) = &failure.failures[0];
    assert_eq!(failed_service, "envelope-prod-worker", "{failure}");
    assert!(
        matches!(
            why,
            RolloutFailure::RolledBack { .. } | RolloutFailure::Failed { .. }
        ),
        "{why:?}"
    );
    let rollback = failure.rollback.as_ref().expect("on_failure: rollback");
    assert!(rollback.complete(), "{failure}");
    let message = error.to_string();
    assert!(
        message.contains("Rolled back every service of the release"),
        "{message}"
    );
    assert!(
        message.contains("All services run their previous revisions"),
        "{message}"
    );
    assert!(!error.is_environment());

    // Every service, the healthy ones included, runs its previous revision and image again.
    let after = cluster.task_definitions().await;
    assert_eq!(after, before, "{message}");
    for service in &cluster.services {
        let role = service.trim_start_matches("envelope-prod-");
        let running = cluster.settled_images(service, role, &images.v1).await;
        assert_eq!(running.len(), 1, "{service}: {running:?}");
    }
    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, DeployProgress::RollbackStarted { .. }))
    );
    assert!(
        events.iter().any(|e| matches!(e, DeployProgress::ServiceEvent { message, .. } if message.contains("circuit breaker"))),
        "ECS's own events are shown"
    );
    for service in &cluster.services {
        assert!(
            events.iter().any(|e| matches!(e, DeployProgress::Finished { service: s, phase: Phase::Rollback, outcome: Ok(()) } if s == service)),
            "{service} rollback finished"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_that_times_out_without_a_circuit_breaker_is_rolled_back() {
    let Some(env) = parts("deploy timeout").await else {
        return;
    };
    // No circuit breaker: ECS (and ministack) replace the crashing worker tasks forever.
    let cluster = Cluster::create(env, false).await;
    let images = images(env);
    let before = cluster.task_definitions().await;
    let aws = EcsAws::new(&env.sdk_config(env.endpoint()).await);
    let request = cluster.deploy(&images.bad, Duration::from_secs(20));

    let error = Deploy::new(&aws, &request, DeployRecord::default())
        .run(&|_| {})
        .await
        .unwrap_err();
    let EcsError::Deploy(ref failure) = error else {
        panic!("expected a failed deploy, got {error:?}");
    };
    let failed: Vec<_> = failure.failures.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(failed, ["envelope-prod-worker"], "{failure}");
    assert!(
        matches!(
            failure.failures[0].1,
            RolloutFailure::TimedOut { .. } | RolloutFailure::TasksKeepStopping { .. }
        ),
        "{failure}"
    );
    assert!(failure.rollback.as_ref().unwrap().complete(), "{failure}");
    assert_eq!(cluster.task_definitions().await, before);
    for service in &cluster.services {
        let role = service.trim_start_matches("envelope-prod-");
        let running = cluster.settled_images(service, role, &images.v1).await;
        assert_eq!(running.len(), 1, "{service}: {running:?}");
    }
}

// ---------------------------------------------------------------- throttling

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_calls_are_retried_and_the_release_goes_out() {
    let Some(env) = parts("throttling").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    let images = images(env);
    let proxy = Proxy::start(env.endpoint()).await;
    for operation in [
        "DescribeServices",
        "DescribeTaskDefinition",
        "RegisterTaskDefinition",
        "UpdateService",
        "RunTask",
        "DescribeTasks",
        "ListTasks",
        "GetLogEvents",
    ] {
        proxy.throttle(operation, 2);
    }
    let aws = EcsAws::new(&env.sdk_config(&proxy.url).await);

    let migration = cluster.migration(&[&images.v2], &["/app/migrate", "0", "5"]);
    let (events, progress) = recorder();
    let outcome = Migration::new(&aws, &migration, MigrationRecord::default())
        .run(&progress)
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, 0);
    assert_eq!(
        log_lines(&events.lock().unwrap()),
        expected_migration_lines(0, 5)
    );
    assert_eq!(proxy.throttled("RunTask"), 2);
    assert_eq!(
        proxy.count("RunTask"),
        3,
        "two throttled attempts, one task"
    );

    let deploy = cluster.deploy(&images.v2, Duration::from_secs(120));
    let report = Deploy::new(&aws, &deploy, DeployRecord::default())
        .run(&|_| {})
        .await
        .unwrap();
    assert_eq!(report.services.len(), 4);
    for operation in [
        "DescribeServices",
        "DescribeTaskDefinition",
        "RegisterTaskDefinition",
        "UpdateService",
        "GetLogEvents",
    ] {
        assert_eq!(
            proxy.throttled(operation),
            2,
            "{operation}: {:?}",
            proxy.counts()
        );
    }
    // 1 migration revision + 4 service revisions, plus the 2 throttled attempts.
    assert_eq!(proxy.count("RegisterTaskDefinition"), 5 + 2);
    assert_eq!(proxy.count("UpdateService"), 4 + 2);
    let counted = aws.call_counts();
    assert_eq!(
        counted["ecs:RegisterTaskDefinition"], 7,
        "the library counts what the proxy saw"
    );
    let after = cluster.task_definitions().await;
    for service in &cluster.services {
        let role = service.trim_start_matches("envelope-prod-");
        assert_eq!(
            cluster.container_images(&after[service]).await[role],
            images.v2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_that_never_stops_fails_as_an_environment_problem() {
    let Some(env) = parts("throttling forever").await else {
        return;
    };
    let proxy = Proxy::start(env.endpoint()).await;
    proxy.throttle("DescribeServices", usize::MAX);
    let aws = EcsAws::new(&env.sdk_config(&proxy.url).await).with_backoff(
        envelope_runner::backoff::Backoff::full(
            4,
            Duration::from_millis(10),
            Duration::from_millis(50),
        ),
    );
    let request = DeployRequest {
        cluster: "envelope-e2e-no-such-cluster".into(),
        services: vec!["envelope-prod-api".into()],
        images: vec![format!(
            "{}@sha256:{}",
            images(env).repository,
            "a".repeat(64)
        )],
        run_id: ulid_like(),
        stage: "deploy".into(),
        timeout: Duration::from_secs(5),
        rollback_timeout: Duration::from_secs(5),
        on_failure: OnFailure::Rollback,
        poll: PollSchedule::DEPLOY,
    };
    let error = Deploy::new(&aws, &request, DeployRecord::default())
        .prepare(&|_| {})
        .await
        .unwrap_err();
    assert_eq!(proxy.count("DescribeServices"), 4, "attempts are bounded");
    assert_eq!(error.aws_code(), Some("ThrottlingException"));
    assert!(error.is_environment());
    assert!(
        error
            .to_string()
            .contains("still throttled after 4 attempts"),
        "{error}"
    );
}

// ---------------------------------------------------------------- whole pipelines

/// The app's source in a git repository tagged `tag`: the Dockerfile the images above use,
/// with `crash_roles` roles that exit at once.
pub(crate) fn app_repository(
    env: &TestEnv,
    tag: &str,
    crash_roles: &str,
) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let repo = envelope_tests::git_fixture::WorkRepo::init(&work).unwrap();
    std::fs::create_dir_all(work.join("app")).unwrap();
    std::fs::write(work.join("app/version"), format!("{tag}\n")).unwrap();
    std::fs::write(work.join("app/crash-roles"), crash_roles).unwrap();
    for (name, text) in [("start", START), ("migrate", MIGRATE)] {
        std::fs::write(work.join("app").join(name), text).unwrap();
        let mut permissions = std::fs::metadata(work.join("app").join(name))
            .unwrap()
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(work.join("app").join(name), permissions).unwrap();
    }
    std::fs::write(
        work.join("Dockerfile"),
        format!(
            "FROM {}\nCOPY app /app\n",
            env.var("ENVELOPE_TEST_BASE_IMAGE")
        ),
    )
    .unwrap();
    repo.git(&["add", "-A"]).unwrap();
    repo.git(&["commit", "-q", "-m", "release"]).unwrap();
    repo.tag(tag).unwrap();
    let bare = dir.path().join("app.git");
    repo.publish(&bare).unwrap();
    let url = format!("file://{}", bare.display());
    (dir, url)
}

/// A project whose `api` pipeline builds the app and migrates and deploys it on `cluster`.
pub(crate) fn api_project(
    env: &TestEnv,
    cluster: &Cluster,
    url: &str,
    migrate_exit: i32,
) -> tempfile::TempDir {
    api_project_notifying(env, cluster, url, migrate_exit, None)
}

/// `api_project` whose approval gate POSTs its notice to `webhook`.
fn api_project_notifying(
    env: &TestEnv,
    cluster: &Cluster,
    url: &str,
    migrate_exit: i32,
    webhook: Option<&str>,
) -> tempfile::TempDir {
    let notify = webhook
        .map(|hook| format!("\n      notify:\n        webhook: {hook}"))
        .unwrap_or_default();
    let repository = images(env).repository.clone();
    let image = repository.split_once('/').unwrap().1.to_owned();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::write(
        dir.path().join("pipelines/api.yaml"),
        format!(
            r#"source:
  repository: {url}
  tags: ["v*"]
aws:
  region: {region}
  registry: {registry}
stages:
  - build:
      image: {image}
      tags: ["${{release.tag}}"]
  - approval:
      timeout: 1h{notify}
  - migrate:
      cluster: {cluster}
      service: envelope-prod-api
      container: api
      command: [/app/migrate, "{migrate_exit}", "25"]
      timeout: 2m
  - deploy:
      cluster: {cluster}
      services: [envelope-prod-api, envelope-prod-worker, envelope-prod-scheduler, envelope-prod-reverb]
      timeout: 2m
"#,
            region = env.region(),
            registry = env.registry(),
            cluster = cluster.name,
        ),
    )
    .unwrap();
    dir
}

pub(crate) fn pipeline_runner(project: &std::path::Path) -> Command {
    let shared = envelope_tests::env::test_env().expect("test environment");
    crate::support::runner(shared, project)
}

pub(crate) fn stage_of<'a>(record: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    crate::support::stage(record, name)
}

pub(crate) fn record_of(project: &std::path::Path, run: &str) -> serde_json::Value {
    let output = pipeline_runner(project)
        .args(["status", run, "--output", "json"])
        .output()
        .unwrap();
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Run to the gate, approve from a second process, resume: the run's output and exit code.
pub(crate) fn release(project: &std::path::Path) -> (String, std::process::Output) {
    let paused = pipeline_runner(project)
        .args(["run", "api", "--ref", "v2.0.0", "--until", "approval"])
        .output()
        .unwrap();
    assert_eq!(
        paused.status.code(),
        Some(4),
        "{}",
        crate::support::text(&paused)
    );
    let run = crate::support::run_id(&paused);
    let approved = pipeline_runner(project)
        .args(["approve", &run, "--as", "release-manager"])
        .output()
        .unwrap();
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        crate::support::text(&approved)
    );
    let resumed = pipeline_runner(project)
        .args(["resume", &run])
        .output()
        .unwrap();
    (run, resumed)
}

#[tokio::test]
async fn a_release_goes_through_approval_migration_and_a_deploy_of_four_services() {
    let Some(env) = parts("a_release_goes_through").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let before = cluster.task_definitions().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/approvals", listener.local_addr().unwrap());
    let notice = tokio::spawn(crate::approval::capture_one_post(listener));
    let project = api_project_notifying(env, &cluster, &url, 0, Some(&hook));
    let (run, resumed) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || release(&project)
    })
    .await
    .unwrap();
    let all = crate::support::text(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{all}");
    assert!(
        all.contains("Migrating: 2026_01_01_000025_step_25"),
        "the migration's log lines are shown:\n{all}"
    );
    // The approver saw each service's task definition change, image before → after.
    let notice: serde_json::Value = serde_json::from_str(&notice.await.unwrap()).unwrap();
    let changes = notice["services"].as_array().unwrap();
    assert_eq!(changes.len(), 4, "{notice}");
    for change in changes {
        let text = change["changes"].to_string();
        assert!(
            text.contains(&images(env).v1) && text.contains('→'),
            "{notice}"
        );
    }
    let record = record_of(project.path(), &run);
    assert_eq!(record["status"], "succeeded");
    let image = stage_of(&record, "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(stage_of(&record, "migrate")["outputs"]["exit_code"], 0);
    let deploy = &stage_of(&record, "deploy")["outputs"];
    let after = cluster.task_definitions().await;
    for role in ROLES {
        let service = format!("envelope-prod-{role}");
        assert_ne!(
            after[&service], before[&service],
            "{service} moved to a new revision"
        );
        assert_eq!(
            deploy["previous_task_definitions"][&service],
            before[&service].as_str()
        );
        assert!(deploy["deployments"][&service].is_string(), "{deploy}");
        cluster.settled_images(&service, role, &image).await;
    }
}

#[tokio::test]
async fn a_migration_that_exits_1_fails_the_run_and_nothing_is_deployed() {
    let Some(env) = parts("a_migration_that_exits_1_fails_the_run").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let before = cluster.task_definitions().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 1);
    let (run, resumed) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || release(&project)
    })
    .await
    .unwrap();
    let all = crate::support::text(&resumed);
    assert_eq!(resumed.status.code(), Some(1), "{all}");
    assert!(
        all.contains("migration finished with exit code 1"),
        "the last log lines are in the error:\n{all}"
    );
    let record = record_of(project.path(), &run);
    assert_eq!(stage_of(&record, "migrate")["status"], "failed");
    assert_eq!(stage_of(&record, "deploy")["status"], "skipped");
    assert_eq!(
        cluster.task_definitions().await,
        before,
        "no service was touched"
    );
}

#[tokio::test]
async fn a_release_whose_worker_crashes_fails_and_every_service_is_back_on_its_previous_revision() {
    let Some(env) = parts("a_release_whose_worker_crashes_fails").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let before = cluster.task_definitions().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "worker\n");
    let project = api_project(env, &cluster, &url, 0);
    let (run, resumed) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || release(&project)
    })
    .await
    .unwrap();
    let all = crate::support::text(&resumed);
    assert_eq!(resumed.status.code(), Some(1), "{all}");
    assert!(
        all.contains("envelope-prod-worker"),
        "the failing service is named:\n{all}"
    );
    assert!(
        all.contains("rolled back") || all.contains("rolling back"),
        "the output says the release was rolled back:\n{all}"
    );
    let record = record_of(project.path(), &run);
    assert_eq!(record["status"], "failed");
    assert_eq!(stage_of(&record, "deploy")["status"], "failed");
    let after = cluster.task_definitions().await;
    assert_eq!(
        after, before,
        "every service of the release is back on its previous revision"
    );
}

#[tokio::test]
async fn rollback_to_an_earlier_run_puts_its_digest_back_on_all_four_services() {
    let Some(env) = parts("rollback_to_an_earlier_run").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let (_first_repo, first_url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &first_url, 0);
    let pipeline_file = project.path().join("pipelines/api.yaml");
    let (first, output) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || release(&project)
    })
    .await
    .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        crate::support::text(&output)
    );
    let first_image = stage_of(&record_of(project.path(), &first), "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_string();

    // A second release from other source code: a different digest.
    let (_second_repo, second_url) = app_repository(env, "v2.0.0", "");
    std::fs::write(
        &pipeline_file,
        std::fs::read_to_string(&pipeline_file)
            .unwrap()
            .replace(&first_url, &second_url)
            .replace("\"25\"", "\"3\""),
    )
    .unwrap();
    let (second, output) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || release(&project)
    })
    .await
    .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        crate::support::text(&output)
    );
    let second_image = stage_of(&record_of(project.path(), &second), "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(first_image, second_image);

    let rollback = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        let first = first.clone();
        move || {
            pipeline_runner(&project)
                .args(["rollback", "api", "--to", &first])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let all = crate::support::text(&rollback);
    assert_eq!(rollback.status.code(), Some(0), "{all}");
    let rollback_run = crate::support::run_id(&rollback);
    let record = record_of(project.path(), &rollback_run);
    assert_eq!(record["trigger"]["kind"]["kind"], "rollback", "{record}");
    assert_eq!(
        stage_of(&record, "build")["status"],
        "skipped",
        "nothing was rebuilt"
    );
    assert_eq!(
        stage_of(&record, "migrate")["status"],
        "skipped",
        "no migration ran"
    );
    for role in ROLES {
        cluster
            .settled_images(&format!("envelope-prod-{role}"), role, &first_image)
            .await;
    }
}

/// Resume a release in the background and SIGKILL it once `ready` holds for its record.
fn kill_when(
    project: &std::path::Path,
    run: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let mut child = pipeline_runner(project)
        .args(["resume", run])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let record = record_of(project, run);
        let timed_out = Instant::now() >= deadline;
        if ready(&record) || timed_out {
            let _ = child.kill();
            let _ = child.wait();
            assert!(!timed_out, "never reached the point to kill at: {record}");
            return record;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn approve_waiting_release(project: &std::path::Path) -> String {
    let paused = pipeline_runner(project)
        .args(["run", "api", "--ref", "v2.0.0", "--until", "approval"])
        .output()
        .unwrap();
    assert_eq!(
        paused.status.code(),
        Some(4),
        "{}",
        crate::support::text(&paused)
    );
    let run = crate::support::run_id(&paused);
    let approved = pipeline_runner(project)
        .args(["approve", &run])
        .output()
        .unwrap();
    assert_eq!(
        approved.status.code(),
        Some(0),
        "{}",
        crate::support::text(&approved)
    );
    run
}

#[tokio::test]
async fn a_run_killed_during_its_migration_resumes_on_the_same_task() {
    killed_during_migration(false).await;
}

#[tokio::test]
async fn a_run_killed_during_its_migration_resumes_on_the_same_task_with_the_dynamodb_store() {
    killed_during_migration(true).await;
}

async fn killed_during_migration(dynamodb: bool) {
    let Some(env) = parts("a_run_killed_during_its_migration").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 0);
    if dynamodb {
        let shared = envelope_tests::env::test_env().expect("test environment");
        let store = envelope_tests::env::dynamodb_store(shared, "e2e-ecs-kill").await;
        std::fs::write(project.path().join("store-url"), store).unwrap();
    }
    let pipeline_file = project.path().join("pipelines/api.yaml");
    // A migration slow enough to be caught running.
    std::fs::write(
        &pipeline_file,
        std::fs::read_to_string(&pipeline_file).unwrap().replace(
            r#"command: [/app/migrate, "0", "25"]"#,
            r#"command: [/bin/sh, -c, "sleep 4; /app/migrate 0 5"]"#,
        ),
    )
    .unwrap();
    let (record, resumed, run) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || {
            let run = approve_waiting_release(&project);
            let killed = kill_when(&project, &run, |r| {
                stage_of(r, "migrate")["status"] == "running"
                    && stage_of(r, "migrate")["outputs"]["task_arn"].is_string()
            });
            let resumed = pipeline_runner(&project)
                .args(["resume", &run])
                .output()
                .unwrap();
            (killed, resumed, run)
        }
    })
    .await
    .unwrap();
    let task = stage_of(&record, "migrate")["outputs"]["task_arn"]
        .as_str()
        .unwrap()
        .to_string();
    let all = crate::support::text(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{all}");
    let finished = record_of(project.path(), &run);
    assert_eq!(
        stage_of(&finished, "migrate")["outputs"]["task_arn"],
        task.as_str(),
        "one migration task in total"
    );
    assert_eq!(finished["status"], "succeeded");
}

#[tokio::test]
async fn a_run_killed_during_its_deploy_resumes_on_the_same_deployments() {
    killed_during_deploy(false).await;
}

#[tokio::test]
async fn a_run_killed_during_its_deploy_resumes_on_the_same_deployments_with_the_dynamodb_store() {
    killed_during_deploy(true).await;
}

async fn killed_during_deploy(dynamodb: bool) {
    let Some(env) = parts("a_run_killed_during_its_deploy").await else {
        return;
    };
    let cluster = Cluster::create(env, true).await;
    cluster.wait_until_running().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &cluster, &url, 0);
    if dynamodb {
        let shared = envelope_tests::env::test_env().expect("test environment");
        let store = envelope_tests::env::dynamodb_store(shared, "e2e-ecs-kill").await;
        std::fs::write(project.path().join("store-url"), store).unwrap();
    }
    let (record, resumed, run) = tokio::task::spawn_blocking({
        let project = project.path().to_path_buf();
        move || {
            let run = approve_waiting_release(&project);
            let killed = kill_when(&project, &run, |r| {
                stage_of(r, "deploy")["outputs"]["deployments"]
                    .as_object()
                    .is_some_and(|d| d.len() == 4)
            });
            let resumed = pipeline_runner(&project)
                .args(["resume", &run])
                .output()
                .unwrap();
            (killed, resumed, run)
        }
    })
    .await
    .unwrap();
    let all = crate::support::text(&resumed);
    assert_eq!(resumed.status.code(), Some(0), "{all}");
    let finished = record_of(project.path(), &run);
    assert_eq!(
        stage_of(&finished, "deploy")["outputs"]["deployments"],
        stage_of(&record, "deploy")["outputs"]["deployments"],
        "one deployment per service: the resumed run waited on the recorded ones"
    );
    let image = stage_of(&finished, "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    for role in ROLES {
        cluster
            .settled_images(&format!("envelope-prod-{role}"), role, &image)
            .await;
    }
}
