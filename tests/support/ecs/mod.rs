//! ECS on ministack, whose ECS runs every task as a real container on the Docker daemon (real
//! exit codes, stop codes, rolling deployments, circuit breaker and rollback) and forwards
//! awslogs output to its CloudWatch Logs: the app and its images, a [`Cluster`] like the
//! Envelope API's, and a whole release of it through the runner.

mod app;
mod cluster;
mod deployments;
mod ec2;
mod release;
mod target_group;
mod web;

pub use app::{Images, images, push_as, write_source};
pub use cluster::{Cluster, ulid_like};
pub use deployments::{DeploymentSampler, SeenDeployment};
pub use release::{
    api_project, api_project_notifying, api_project_telling, app_repository,
    approve_waiting_release, pipeline_runner, record_of, release,
};
pub use target_group::TargetGroup;
pub use web::{UP_PATH, WEB_PORT, WebCluster, web_images};

use std::process::Command;

use crate::env::{TestEnv, test_env};

/// The roles of the Envelope API's services, one service each, in the order a [`Cluster`]
/// lists them.
pub const ROLES: [&str; 4] = ["api", "worker", "scheduler", "reverb"];

/// The environment, or `None` (after a note) when Docker or ministack cannot be reached and
/// ENVELOPE_TEST_REQUIRE_DOCKER is unset.
pub async fn parts(test: &str) -> Option<&'static TestEnv> {
    let required = std::env::var_os("ENVELOPE_TEST_REQUIRE_DOCKER").is_some();
    let reason = match tokio::task::spawn_blocking(test_env).await.unwrap() {
        Ok(env) => {
            let docker_ok = Command::new(env.docker_cli())
                .arg("info")
                .output()
                .is_ok_and(|o| o.status.success());
            let ministack_ok =
                crate::support::http::get(&format!("{}/_ministack/ready", env.endpoint()))
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
