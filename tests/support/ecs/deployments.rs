//! ECS's own record of a cluster's deployments over time: a sampler that calls DescribeServices
//! every few hundred milliseconds and keeps, per deployment id, its `createdAt` and the
//! `updatedAt` ECS gave it when its rollout became COMPLETED.
//!
//! ministack answers ListServiceDeployments and DescribeServiceDeployments with empty lists
//! (stubs), and drops a deployment from DescribeServices once it has no live tasks, so the
//! timeline has to be sampled while it happens. A deployment lives at least through its
//! tasks' start-up window (over a second on ministack) and stays PRIMARY until the next
//! UpdateService, so a sample every 250 ms sees every one of them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One deployment as ECS reported it, times in Unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenDeployment {
    pub service: String,
    pub id: String,
    pub task_definition: String,
    pub created_at: f64,
    /// `updatedAt` in the first sample that showed the rollout COMPLETED.
    pub completed_at: Option<f64>,
}

/// Samples the services of a cluster until dropped.
pub struct DeploymentSampler {
    seen: Arc<Mutex<BTreeMap<String, SeenDeployment>>>,
    task: tokio::task::JoinHandle<()>,
}

impl DeploymentSampler {
    /// Starts sampling `services` (at most 10) of `cluster` with `ecs`.
    pub fn start(ecs: aws_sdk_ecs::Client, cluster: &str, services: &[String]) -> Self {
        let seen: Arc<Mutex<BTreeMap<String, SeenDeployment>>> = Arc::default();
        let shared = seen.clone();
        let cluster = cluster.to_owned();
        let services = services.to_vec();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(out) = ecs
                    .describe_services()
                    .cluster(&cluster)
                    .set_services(Some(services.clone()))
                    .send()
                    .await
                {
                    let mut seen = shared.lock().unwrap();
                    for service in out.services() {
                        for deployment in service.deployments() {
                            record(&mut seen, service.service_name().unwrap_or(""), deployment);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        DeploymentSampler { seen, task }
    }

    /// Every deployment seen so far, by service, oldest first.
    pub fn by_service(&self) -> BTreeMap<String, Vec<SeenDeployment>> {
        let mut out: BTreeMap<String, Vec<SeenDeployment>> = BTreeMap::new();
        for deployment in self.seen.lock().unwrap().values() {
            out.entry(deployment.service.clone())
                .or_default()
                .push(deployment.clone());
        }
        for list in out.values_mut() {
            list.sort_by(|a, b| a.created_at.total_cmp(&b.created_at));
        }
        out
    }
}

impl Drop for DeploymentSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn record(
    seen: &mut BTreeMap<String, SeenDeployment>,
    service: &str,
    deployment: &aws_sdk_ecs::types::Deployment,
) {
    let Some(id) = deployment.id() else { return };
    let Some(created_at) = deployment.created_at().map(|at| at.as_secs_f64()) else {
        return;
    };
    let entry = seen.entry(id.to_owned()).or_insert_with(|| SeenDeployment {
        service: service.to_owned(),
        id: id.to_owned(),
        task_definition: deployment.task_definition().unwrap_or("").to_owned(),
        created_at,
        completed_at: None,
    });
    if entry.completed_at.is_none()
        && deployment.rollout_state().map(|state| state.as_str()) == Some("COMPLETED")
    {
        entry.completed_at = deployment.updated_at().map(|at| at.as_secs_f64());
    }
}
