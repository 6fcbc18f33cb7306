//! The push stage: the built image to its registry under every tag.

use crate::event::Event;
use crate::exec::driver::progress::push_event;
use crate::exec::driver::*;
use crate::exec::push;
use crate::plan;
use crate::run::{StageOutputs, TriggerKind};

impl Driver {
    pub(in crate::exec::driver) async fn push(
        &self,
        step: &plan::PushStep,
        record: &RunRecord,
        state: &mut RunState,
    ) -> Result<StepResult, StageFailure> {
        if let TriggerKind::Promotion { from_run, .. } = &record.trigger.kind
            && !state.image_ids.contains_key(&step.build)
        {
            return self.copy_promoted(step, from_run, state).await;
        }
        let docker = self.docker().await?;
        let image_id = state.image_ids.get(&step.build).cloned().ok_or_else(|| {
            StageFailure::new(format!(
                "no image from stage `{}`: it did not run",
                step.build
            ))
        })?;
        let repository = self.repository_of(&step.repository, self.image_name_of(step));
        self.ensure_ecr_repository(step, &repository).await?;
        let request = push::PushRequest {
            local_image: image_id,
            repository: repository.clone(),
            tags: step.tags.clone(),
            credentials: self.credentials_for(&repository).await?,
            endpoint_override: self.endpoint_for(&repository),
        };
        let stage = step.name.clone();
        let events = self.events.clone();
        let progress = move |progress: push::PushProgress| {
            if let Some(event) = push_event(&stage, progress) {
                events.emit(event);
            }
        };
        let output = push::push(&docker, &request, &progress)
            .await
            .map_err(|error| {
                let environment = error.is_environment();
                StageFailure::of(error, environment)
            })?;
        let layers = format!(
            "{} uploaded ({} bytes), {} already in the registry",
            output.layers_uploaded, output.bytes_uploaded, output.layers_skipped
        );
        Ok(self.image_in_place(
            step,
            state,
            output.image_ref,
            output.digest,
            ("layers", layers),
        ))
    }

    /// The end of a push stage whose image is now in `image_ref`: tells the `image` output and
    /// `key: value` (what was uploaded), keeps the image for the stages after it, and records
    /// the digest.
    pub(in crate::exec::driver) fn image_in_place(
        &self,
        step: &plan::PushStep,
        state: &mut RunState,
        image_ref: String,
        digest: String,
        (key, value): (&str, String),
    ) -> StepResult {
        self.events.emit(Event::Output {
            stage: step.name.clone(),
            key: "image".into(),
            value: image_ref.clone(),
        });
        self.events.emit(Event::Output {
            stage: step.name.clone(),
            key: key.into(),
            value,
        });
        state.images.insert(step.build.clone(), image_ref.clone());
        StepResult::Done(Box::new(StageOutputs {
            digest: Some(digest),
            image: Some(image_ref),
            ..StageOutputs::default()
        }))
    }

    /// An ECR repository must exist before a push or copy to it (ECR does not create one on
    /// push): checked, and created when the build stage says `create_repository: true`.
    pub(in crate::exec::driver) async fn ensure_ecr_repository(
        &self,
        step: &plan::PushStep,
        repository: &str,
    ) -> Result<(), StageFailure> {
        if !self.settings.is_local()
            && let Some(host) =
                push::ecr::parse_ecr_host(repository.split('/').next().unwrap_or(""))
        {
            let create = self.compiled.pipeline.stages.iter().any(|stage| {
                matches!(stage, crate::pipeline::model::Stage::Build(b) if b.create_repository == Some(true) && stage.name() == step.build)
            });
            let client = aws_sdk_ecr::Client::new(self.aws().await?);
            let path = repository
                .split_once('/')
                .map(|(_, p)| p)
                .unwrap_or(repository);
            push::ecr::ensure_repository(
                &client,
                path,
                &push::ecr::RepositoryOptions {
                    registry_id: Some(host.account_id.clone()),
                    create_if_missing: create,
                    ..Default::default()
                },
            )
            .await
            .map_err(|error| {
                let environment = error.is_environment();
                StageFailure::of(error, environment)
            })?;
        }
        Ok(())
    }

    /// The `image` of the build stage this push follows, as its build step tagged it.
    pub(in crate::exec::driver) fn image_name_of<'a>(
        &'a self,
        step: &'a plan::PushStep,
    ) -> &'a str {
        self.compiled
            .pipeline
            .stages
            .iter()
            .find_map(|stage| match stage {
                crate::pipeline::model::Stage::Build(build) if stage.name() == step.build => {
                    Some(build.image.as_str())
                }
                _ => None,
            })
            .unwrap_or(&step.repository)
    }
}
