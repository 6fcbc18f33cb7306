//! `diff` through the lifecycle API: what deploying a run's images (or given ones) would
//! change on ECS, planned as the run plans and read with the run's AWS settings, recording
//! nothing; and the same diff an approval gate keeps when it opens.

use std::time::Duration;

use super::*;
use crate::exec::ecs::release_diff::{self, ReleaseDiff};
use crate::plan::Step;

/// How long an approval gate waits for ECS to describe what the release changes before it
/// opens without the diff (which it then says is unavailable).
pub(in crate::exec::driver) const GATE_DIFF_TIMEOUT: Duration = Duration::from_secs(30);

/// `repository@sha256:…` of every image `record` pushed (its succeeded push stages).
pub fn pushed_images(record: &RunRecord) -> Vec<String> {
    state::restore_state(record).images.into_values().collect()
}

/// What a deploy would change, and the checks that run after it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DiffReport {
    pub pipeline: String,
    /// The run whose plan (and, without `--image`, whose images) the diff is made from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(flatten)]
    pub diff: ReleaseDiff,
    /// The `verify:` checks the deploy runs after its rollouts, a line each.
    pub checks: Vec<String>,
}

impl Driver {
    /// What deploying `images` would change in every migrate and deploy stage of the plan of
    /// `run` (or, without a run, of the pipeline with its declared environment): only
    /// DescribeServices and DescribeTaskDefinition are called. AWS that cannot be reached
    /// makes every service's diff unavailable, with the reason.
    pub async fn diff(
        &self,
        run: Option<&RunRecord>,
        images: &[String],
    ) -> Result<DiffReport, DriverError> {
        let mut context = match run {
            Some(record) => plan_context(record),
            None => PlanContext {
                git_ref: self
                    .compiled
                    .pipeline
                    .source
                    .branch
                    .clone()
                    .unwrap_or_else(|| "HEAD".to_owned()),
                env: self.compiled.declared_env(),
                ..PlanContext::default()
            },
        };
        self.settle_aws(&mut context).await?;
        let plan = plan::plan(&self.compiled, &context)?;
        let diff = self.release_diff(&plan.steps, images).await;
        Ok(DiffReport {
            pipeline: self.compiled.name.clone(),
            run: run.map(|record| record.id.0.clone()),
            diff,
            checks: release_diff::planned_checks(&plan.steps),
        })
    }

    /// [`release_diff::release_diff`] of `steps` with this run's ECS client; when there is
    /// none (no credentials, no region), every service says why its diff is unavailable.
    pub(super) async fn release_diff(&self, steps: &[Step], images: &[String]) -> ReleaseDiff {
        match self.ecs().await {
            Ok(aws) => release_diff::release_diff(aws, steps, images).await,
            Err(failure) => release_diff::unavailable(steps, images, &failure.message),
        }
    }
}
