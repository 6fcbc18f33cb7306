//! A web app on ministack's ECS whose task containers serve real HTTP (busybox `httpd` on
//! port 8080 of the test base image): its images (`/cgi-bin/up` answers 200 "Application up",
//! or 500 "Server Error" in the broken one) and a cluster with one `web` service of it, under
//! unique names, deleted with its containers when dropped, optionally behind a target group.
//! The tasks are reachable from this machine at their bridge addresses (the address
//! ministack puts in each awsvpc task's network interface attachment).

use std::sync::OnceLock;
use std::time::Duration;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition,
    DeploymentCircuitBreaker, DeploymentConfiguration, LaunchType, LoadBalancer,
    NetworkConfiguration, NetworkMode, PortMapping,
};
use envelope_runner::exec::ecs::deploy::DeployRequest;

use super::app::{docker, push};
use super::cluster::{deploy_request, task_definitions, tear_down, wait_until_running};
use super::ec2;
use crate::env::{TestEnv, unique};

/// The port the web tasks listen on.
pub const WEB_PORT: u16 = 8080;
/// The path that says whether the app is up.
pub const UP_PATH: &str = "/cgi-bin/up";

/// The web app in three versions, pushed to the plain registry and pinned by digest.
pub struct WebImages {
    /// What the service runs before a deploy.
    pub v1: String,
    /// A good new release.
    pub v2: String,
    /// A release whose `/cgi-bin/up` answers 500 "Server Error".
    pub broken: String,
}

/// `/cgi-bin/up`: 200 with "Application up", or the status in /app/up-status.
const UP: &str = r#"#!/bin/sh
status="$(cat /app/up-status)"
if [ "$status" = 200 ]; then
    printf 'Status: 200 OK\r\nContent-Type: text/html\r\n\r\n<p>Application up (%s)</p>\n' "$(cat /app/version)"
else
    printf 'Status: %s Internal Server Error\r\nContent-Type: text/plain\r\n\r\nServer Error\n' "$status"
fi
"#;

/// The images, built and pushed once per test process.
pub fn web_images(env: &TestEnv) -> &'static WebImages {
    static IMAGES: OnceLock<WebImages> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let repository = format!("{}/envelope-e2e/ecs-web", env.registry());
        let build = |version: &str, status: u16| -> String {
            let dir = tempfile::tempdir().unwrap();
            let cgi = dir.path().join("app/www/cgi-bin");
            std::fs::create_dir_all(&cgi).unwrap();
            std::fs::write(dir.path().join("app/version"), format!("{version}\n")).unwrap();
            std::fs::write(dir.path().join("app/up-status"), format!("{status}\n")).unwrap();
            std::fs::write(cgi.join("up"), UP).unwrap();
            let mut permissions = std::fs::metadata(cgi.join("up")).unwrap().permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
            std::fs::set_permissions(cgi.join("up"), permissions).unwrap();
            std::fs::write(
                dir.path().join("Dockerfile"),
                format!("FROM {}\nCOPY app /app\n", env.base_image()),
            )
            .unwrap();
            let reference = format!("{repository}:{version}");
            docker(
                env,
                &[
                    "build",
                    "-q",
                    "-t",
                    &reference,
                    &dir.path().display().to_string(),
                ],
            );
            push(env, &reference)
        };
        WebImages {
            v1: build("v1", 200),
            v2: build("v2", 200),
            broken: build("v3-broken", 500),
        }
    })
}

/// A cluster with one service, `web`, running `tasks` tasks of the web app's v1.
pub struct WebCluster {
    env: &'static TestEnv,
    pub name: String,
    pub arn: String,
    pub service: String,
    pub ecs: aws_sdk_ecs::Client,
}

impl WebCluster {
    /// The tasks use the awsvpc network mode: each has a network interface of its own.
    pub async fn create(env: &'static TestEnv, tasks: i32) -> WebCluster {
        WebCluster::create_with(env, tasks, None).await
    }

    /// [`WebCluster::create`], the service behind a load balancer: ECS registers its tasks
    /// (their addresses, port [`WEB_PORT`] of the `web` container) in `target_group`.
    pub async fn create_behind(
        env: &'static TestEnv,
        tasks: i32,
        target_group: &str,
    ) -> WebCluster {
        WebCluster::create_with(env, tasks, Some(target_group)).await
    }

    async fn create_with(
        env: &'static TestEnv,
        tasks: i32,
        target_group: Option<&str>,
    ) -> WebCluster {
        let images = web_images(env);
        let name = unique("envelope-e2e-web");
        let config = env.sdk_config(env.endpoint()).await;
        let ecs = aws_sdk_ecs::Client::new(&config);
        let network = ec2::network(env, env.endpoint(), &name).await;
        let arn = ecs
            .create_cluster()
            .cluster_name(&name)
            .send()
            .await
            .unwrap()
            .cluster
            .and_then(|cluster| cluster.cluster_arn)
            .expect("CreateCluster returns the cluster's ARN");
        let cluster = WebCluster {
            env,
            name,
            arn,
            service: "web".into(),
            ecs,
        };
        let td = cluster
            .ecs
            .register_task_definition()
            .family(format!("{}-web", cluster.name))
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu("256")
            .memory("512")
            .container_definitions(
                ContainerDefinition::builder()
                    .name("web")
                    .image(&images.v1)
                    .essential(true)
                    .command("httpd")
                    .command("-f")
                    .command("-p")
                    .command(WEB_PORT.to_string())
                    .command("-h")
                    .command("/app/www")
                    .port_mappings(
                        PortMapping::builder()
                            .container_port(i32::from(WEB_PORT))
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .task_definition
            .unwrap();
        cluster
            .ecs
            .create_service()
            .cluster(&cluster.name)
            .service_name(&cluster.service)
            .task_definition(td.task_definition_arn.unwrap())
            .desired_count(tasks)
            .deployment_configuration(
                DeploymentConfiguration::builder()
                    .maximum_percent(200)
                    .minimum_healthy_percent(100)
                    .deployment_circuit_breaker(
                        DeploymentCircuitBreaker::builder()
                            .enable(true)
                            .rollback(true)
                            .build(),
                    )
                    .build(),
            )
            .launch_type(LaunchType::Fargate)
            .set_load_balancers(target_group.map(|arn| {
                vec![
                    LoadBalancer::builder()
                        .target_group_arn(arn)
                        .container_name("web")
                        .container_port(i32::from(WEB_PORT))
                        .build(),
                ]
            }))
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(
                        AwsVpcConfiguration::builder()
                            .subnets(&network.subnet)
                            .security_groups(&network.security_group)
                            .assign_public_ip(AssignPublicIp::Disabled)
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send()
            .await
            .unwrap();
        wait_until_running(
            &cluster.ecs,
            &cluster.name,
            std::slice::from_ref(&cluster.service),
        )
        .await;
        cluster
    }

    /// The service's current task definition.
    pub async fn task_definition(&self) -> String {
        task_definitions(&self.ecs, &self.name, std::slice::from_ref(&self.service))
            .await
            .remove(&self.service)
            .expect("the web service is described")
    }

    /// A deploy of `image` to the web service, rolled back on failure, under a new run id.
    pub fn deploy(&self, image: &str, timeout: Duration) -> DeployRequest {
        deploy_request(&self.name, vec![self.service.clone()], image, timeout)
    }
}

impl Drop for WebCluster {
    fn drop(&mut self) {
        let services = [self.service.clone()];
        tear_down(
            self.env,
            self.env.endpoint(),
            &self.name,
            &self.arn,
            &services,
        );
    }
}
