//! An ECS cluster on ministack like envelope-prod-cluster: four services (api, worker,
//! scheduler and reverb; or the roles a test names) sharing the app image, awsvpc on a subnet
//! and security group made with ministack's EC2 API, awslogs into one log group, under unique
//! names (tests never reset ministack: a reset would wipe other tests' ECR repositories).
//! Dropping it deletes the services and the cluster and removes every container of the cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition,
    DeploymentCircuitBreaker, DeploymentConfiguration, KeyValuePair, LaunchType, LogConfiguration,
    LogDriver, NetworkConfiguration, NetworkMode, Tag,
};
use envelope_runner::exec::ecs::PollSchedule;
use envelope_runner::exec::ecs::deploy::{DeployRequest, OnFailure};
use envelope_runner::exec::ecs::migrate::MigrationRequest;

use super::{Images, ROLES, ec2, images};
use crate::env::{TestEnv, unique};
use crate::support::docker::remove_containers;

/// A cluster like envelope-prod-cluster: four services sharing the app image on awsvpc.
pub struct Cluster {
    env: &'static TestEnv,
    /// The emulator the cluster lives on.
    endpoint: String,
    pub name: String,
    arn: String,
    /// Where the services' and the migrations' awslogs output goes.
    pub log_group: String,
    /// The subnet the tasks run on.
    pub subnet: String,
    /// Service names in ROLES order: `<prefix>-<role>`.
    pub services: Vec<String>,
    /// What the service names start with (`envelope-prod` unless created otherwise).
    service_prefix: String,
    pub ecs: aws_sdk_ecs::Client,
}

impl Cluster {
    /// `breaker`: whether the services use the deployment circuit breaker with rollback.
    pub async fn create(env: &'static TestEnv, breaker: bool) -> Cluster {
        Cluster::create_at(env, env.endpoint(), breaker).await
    }

    /// [`Cluster::create`] on the emulator at `endpoint`.
    pub async fn create_at(env: &'static TestEnv, endpoint: &str, breaker: bool) -> Cluster {
        Cluster::create_with(env, endpoint, breaker, "envelope-prod", &ROLES, None).await
    }

    /// [`Cluster::create`] whose services are `<service_prefix>-<role>` (another environment's
    /// names, such as `envelope-staging-api`).
    pub async fn create_named(
        env: &'static TestEnv,
        breaker: bool,
        service_prefix: &str,
    ) -> Cluster {
        Cluster::create_with(env, env.endpoint(), breaker, service_prefix, &ROLES, None).await
    }

    /// A cluster of one service per role in `roles` (at most 10), `<service_prefix>-<role>`,
    /// each running `/app/start <role>` from images v1, without the circuit breaker.
    pub async fn create_roles(
        env: &'static TestEnv,
        endpoint: &str,
        service_prefix: &str,
        roles: &[&str],
    ) -> Cluster {
        Cluster::create_with(env, endpoint, false, service_prefix, roles, None).await
    }

    /// [`Cluster::create_named`] (with the circuit breaker) whose services run `app_image` instead
    /// of v1 from the plain registry: another registry's image, for an environment that
    /// deploys from there.
    pub async fn create_running(
        env: &'static TestEnv,
        service_prefix: &str,
        app_image: &str,
    ) -> Cluster {
        Cluster::create_with(
            env,
            env.endpoint(),
            true,
            service_prefix,
            &ROLES,
            Some(app_image),
        )
        .await
    }

    async fn create_with(
        env: &'static TestEnv,
        endpoint: &str,
        breaker: bool,
        service_prefix: &str,
        roles: &[&str],
        app_image: Option<&str>,
    ) -> Cluster {
        // Built (once per process) before anything that must be cleaned up.
        let images = images(env);
        let app_image = app_image.unwrap_or(&images.v1);
        let name = unique("envelope-e2e-cluster");
        let config = env.sdk_config(endpoint).await;
        let ecs = aws_sdk_ecs::Client::new(&config);
        let network = ec2::network(env, endpoint, &name).await;
        let arn = ecs
            .create_cluster()
            .cluster_name(&name)
            .send()
            .await
            .unwrap()
            .cluster
            .and_then(|cluster| cluster.cluster_arn)
            .expect("CreateCluster returns the cluster's ARN");
        // From here on a panic drops `cluster`, which removes what was made so far.
        let mut cluster = Cluster {
            env,
            endpoint: endpoint.to_owned(),
            log_group: format!("/ecs/{name}"),
            name,
            arn,
            subnet: network.subnet.clone(),
            services: Vec::new(),
            service_prefix: service_prefix.to_owned(),
            ecs,
        };
        aws_sdk_cloudwatchlogs::Client::new(&config)
            .create_log_group()
            .log_group_name(&cluster.log_group)
            .send()
            .await
            .unwrap();
        for role in roles {
            let service = cluster
                .create_service(role, images, app_image, &network.security_group, breaker)
                .await;
            cluster.services.push(service);
        }
        cluster.wait_until_running().await;
        cluster
    }

    /// Registers `role`'s task definition (the api's with a log-router sidecar) and creates
    /// its service, `<service prefix>-<role>`, running one task of `app_image`.
    async fn create_service(
        &self,
        role: &str,
        images: &Images,
        app_image: &str,
        security_group: &str,
        breaker: bool,
    ) -> String {
        let log = LogConfiguration::builder()
            .log_driver(LogDriver::Awslogs)
            .options("awslogs-group", &self.log_group)
            .options("awslogs-region", self.env.region())
            .options("awslogs-stream-prefix", "ecs")
            .build()
            .unwrap();
        let mut register = self
            .ecs
            .register_task_definition()
            .family(format!("{}-{role}", self.name))
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu("256")
            .memory("512")
            .tags(Tag::builder().key("Environment").value("e2e").build())
            .container_definitions(
                ContainerDefinition::builder()
                    .name(role)
                    .image(app_image)
                    .essential(true)
                    .command("/app/start")
                    .command(role)
                    .environment(KeyValuePair::builder().name("APP_ENV").value("e2e").build())
                    .log_configuration(log)
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
        let service = format!("{}-{role}", self.service_prefix);
        self.ecs
            .create_service()
            .cluster(&self.name)
            .service_name(&service)
            .task_definition(td.task_definition_arn.unwrap())
            .desired_count(1)
            .launch_type(LaunchType::Fargate)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(
                        AwsVpcConfiguration::builder()
                            .subnets(&self.subnet)
                            .security_groups(security_group)
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
        service
    }

    /// Waits until every service runs its desired tasks (ministack reports a new service's
    /// first deployment COMPLETED before any task runs).
    pub async fn wait_until_running(&self) {
        wait_until_running(&self.ecs, &self.name, &self.services).await;
    }

    /// Each service's current task definition.
    pub async fn task_definitions(&self) -> BTreeMap<String, String> {
        task_definitions(&self.ecs, &self.name, &self.services).await
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
    pub async fn settled_images(
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

    /// `task_definition` as DescribeTaskDefinition returns it.
    pub async fn task_definition(
        &self,
        task_definition: &str,
    ) -> aws_sdk_ecs::types::TaskDefinition {
        self.ecs
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .unwrap()
            .task_definition
            .unwrap()
    }

    /// Registers `td`'s family, network, compatibility, size and containers as a new revision (never deployed): its ARN.
    pub async fn register(&self, td: aws_sdk_ecs::types::TaskDefinition) -> String {
        self.ecs
            .register_task_definition()
            .set_family(td.family)
            .set_network_mode(td.network_mode)
            .set_requires_compatibilities(td.requires_compatibilities)
            .set_cpu(td.cpu)
            .set_memory(td.memory)
            .set_container_definitions(td.container_definitions)
            .send()
            .await
            .unwrap()
            .task_definition
            .unwrap()
            .task_definition_arn
            .unwrap()
    }

    /// The image of each container of `task_definition`.
    pub async fn container_images(&self, task_definition: &str) -> BTreeMap<String, String> {
        let td = self.task_definition(task_definition).await;
        td.container_definitions()
            .iter()
            .map(|c| (c.name().unwrap().to_owned(), c.image().unwrap().to_owned()))
            .collect()
    }

    /// A migration on the api service's task definition, under a new run id.
    pub fn migration(&self, images: &[&str], command: &[&str]) -> MigrationRequest {
        MigrationRequest {
            cluster: self.name.clone(),
            service: format!("{}-api", self.service_prefix),
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

    /// A deploy of `image` to the four services, rolled back on failure, under a new run id.
    pub fn deploy(&self, image: &str, timeout: Duration) -> DeployRequest {
        deploy_request(&self.name, self.services.clone(), image, timeout)
    }
}

/// A deploy of `image` to `services` of `cluster`, rolled back on failure, under a new run id.
pub(super) fn deploy_request(
    cluster: &str,
    services: Vec<String>,
    image: &str,
    timeout: Duration,
) -> DeployRequest {
    DeployRequest {
        cluster: cluster.to_owned(),
        services,
        images: vec![image.to_owned()],
        run_id: ulid_like(),
        stage: "deploy".into(),
        timeout,
        rollback_timeout: Duration::from_secs(120),
        on_failure: OnFailure::Rollback,
        poll: PollSchedule::DEPLOY,
    }
}

/// DescribeServices of `services` in `cluster`.
async fn describe(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    services: &[String],
) -> aws_sdk_ecs::operation::describe_services::DescribeServicesOutput {
    ecs.describe_services()
        .cluster(cluster)
        .set_services(Some(services.to_vec()))
        .send()
        .await
        .unwrap()
}

/// Waits until each of `services` runs its desired tasks on one COMPLETED deployment.
pub(super) async fn wait_until_running(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    services: &[String],
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = describe(ecs, cluster, services).await;
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

/// Each of `services`' current task definition.
pub(super) async fn task_definitions(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    services: &[String],
) -> BTreeMap<String, String> {
    let out = describe(ecs, cluster, services).await;
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

impl Drop for Cluster {
    fn drop(&mut self) {
        tear_down(
            self.env,
            &self.endpoint,
            &self.name,
            &self.arn,
            &self.services,
        );
    }
}

/// Deletes `services` (their task containers stop) and the cluster, then removes every
/// container of the cluster: the emulator stops a deleted service's essential containers but
/// leaves the others (the api's log-router sidecar) running. For fixtures' `Drop`.
pub(super) fn tear_down(
    env: &'static TestEnv,
    endpoint: &str,
    name: &str,
    arn: &str,
    services: &[String],
) {
    let endpoint = endpoint.to_owned();
    let name = name.to_owned();
    let services = services.to_vec();
    crate::support::cleanup::on_own_runtime(async move {
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
    remove_containers(
        env.docker_cli(),
        &format!("label=com.amazonaws.ecs.cluster={arn}"),
    );
}

/// A run id shaped like the runner's (a lower-case ULID: 26 characters).
pub fn ulid_like() -> String {
    let id = unique("r").replace('-', "");
    format!("{:0>26}", &id[id.len().saturating_sub(26)..]).to_lowercase()
}
