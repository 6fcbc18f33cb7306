//! The push stage of a promotion to an environment that pulls from another registry than the
//! promoted run pushed to: the run's image is copied by digest into this environment's
//! repository (see `push::copy`), and later stages deploy that copy.

use crate::exec::driver::*;
use crate::exec::push;
use crate::plan;

impl Driver {
    /// Copy the image the push stage of `from_run` recorded to this step's repository. A
    /// copy that is run again (a re-attached run) uploads only what the target lacks.
    pub(in crate::exec::driver) async fn copy_promoted(
        &self,
        step: &plan::PushStep,
        from_run: &RunId,
        state: &mut RunState,
    ) -> Result<StepResult, StageFailure> {
        let from = self
            .store
            .get_run(from_run)
            .await
            .map_err(|error| StageFailure::environment(error.to_string()))?
            .ok_or_else(|| {
                StageFailure::new(format!(
                    "run {from_run}, whose image this promotion copies, is no longer in the store"
                ))
            })?;
        let source = from
            .stage(&step.name)
            .and_then(|stage| stage.outputs.image.clone())
            .ok_or_else(|| {
                StageFailure::new(format!(
                    "run {from_run} recorded no image for stage `{}`, so there is nothing to copy",
                    step.name
                ))
            })?;
        let target = self.repository_of(&step.repository, self.image_name_of(step));
        self.ensure_ecr_repository(step, &target).await?;
        let source_repository = source.split_once('@').map_or(source.as_str(), |(r, _)| r);
        let request = push::CopyRequest {
            source: source.clone(),
            target: target.clone(),
            tags: step.tags.clone(),
            source_credentials: self.source_credentials(source_repository).await?,
            target_credentials: self.credentials_for(&target).await?,
            target_endpoint: self.endpoint_for(&target),
        };
        let output = push::copy(&request).await.map_err(|error| {
            let environment = error.is_environment();
            StageFailure::of(error, environment)
        })?;
        let copied = format!(
            "from {source}: {} blobs copied ({} bytes), {} already in {target}",
            output.blobs_copied, output.bytes_copied, output.blobs_present
        );
        Ok(self.image_in_place(
            step,
            state,
            output.image_ref,
            output.digest,
            ("copied", copied),
        ))
    }

    /// The source registry's credentials as a push would use them, except that an ECR source
    /// in another region than this environment's is opened with a token from its own region
    /// (an ECR token works only in the region that issued it).
    async fn source_credentials(
        &self,
        repository: &str,
    ) -> Result<Option<push::RegistryCredentials>, StageFailure> {
        let host = repository.split('/').next().unwrap_or("");
        if let Some(ecr) = push::ecr::parse_ecr_host(host) {
            let config = self.aws().await?;
            if config.region().map(|r| r.as_ref()) != Some(ecr.region.as_str()) {
                let config = config
                    .to_builder()
                    .region(aws_config::Region::new(ecr.region.clone()))
                    .build();
                let auth = push::ecr::EcrAuth::new(aws_sdk_ecr::Client::new(&config));
                return self.ecr_credentials(&auth, host).await.map(Some);
            }
        }
        self.credentials_for(repository).await
    }
}
