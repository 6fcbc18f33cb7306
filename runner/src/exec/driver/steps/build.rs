//! The build stage: a Docker build of the checkout, with or without a buildspec.

use crate::event::Event;
use crate::exec::driver::progress::{build_event, buildspec_event};
use crate::exec::driver::*;
use crate::exec::{build, buildspec as phases};
use crate::plan::{self, Plan};
use crate::run::{RunRecord, StageOutputs};
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::time::Duration;

impl Driver {
    /// The repository a build's image goes to: the plan's, or for `--local` the bare image name
    /// (or the `--registry` given).
    pub(in crate::exec::driver) fn repository_of(&self, planned: &str, image_name: &str) -> String {
        match (&self.settings.local_source, &self.settings.local_registry) {
            (Some(_), Some(registry)) => format!("{registry}/{image_name}"),
            (Some(_), None) => image_name.to_owned(),
            (None, _) => planned.to_owned(),
        }
    }

    pub(in crate::exec::driver) async fn build(
        &self,
        step: &plan::BuildStep,
        plan: &Plan,
        record: &RunRecord,
        state: &mut RunState,
    ) -> Result<StepResult, StageFailure> {
        let docker = self.docker().await?;
        let checkout = state
            .checkout
            .clone()
            .ok_or_else(|| StageFailure::new("no source checkout: the source stage did not run"))?;
        crate::pipeline::paths::check_build_inputs(
            &self.compiled,
            &step.name,
            &checkout,
            &step.context,
            &step.dockerfile,
        )
        .map_err(StageFailure::new)?;
        let repository = self.repository_of(&step.repository, &step.image_name);
        let credentials = self.credentials_for(&repository).await?;
        let endpoint = self.endpoint_for(&repository);
        let secrets = self.resolve_secrets(step).await?;
        let request = build::BuildRequest {
            context_dir: checkout.join(&step.context),
            dockerfile: PathBuf::from(&step.dockerfile),
            target: step.target.clone(),
            platform: step.platform.clone(),
            build_args: step.build_args.clone(),
            secrets,
            labels: step.labels.clone(),
            tags: step
                .tags
                .iter()
                .map(|tag| format!("{repository}:{tag}"))
                .collect(),
            cache_from: if self.settings.is_local() && self.settings.local_registry.is_none() {
                Vec::new()
            } else {
                step.cache_from
                    .iter()
                    .map(|reference| {
                        with_endpoint(
                            reference,
                            &step.repository,
                            &repository,
                            endpoint.as_deref(),
                        )
                    })
                    .collect()
            },
            registry_auth: credentials
                .iter()
                .map(|c| build::RegistryCredentials {
                    server: endpoint.clone().unwrap_or_else(|| c.server.clone()),
                    ..c.clone()
                })
                .collect(),
            no_cache: false,
            idle_timeout: Some(Duration::from_secs(step.idle_timeout_seconds)),
        };
        let stage = step.name.clone();
        let events = self.events.clone();
        let progress = move |progress: build::BuildProgress| {
            if let Some(event) = build_event(&stage, progress) {
                events.emit(event);
            }
        };
        let output = match &step.buildspec {
            None => build::build(&docker, &request, &progress)
                .await
                .map_err(|error| {
                    let environment = error.is_environment();
                    StageFailure::of(error, environment)
                })?,
            Some(spec_plan) => {
                let spec = self
                    .compiled
                    .buildspecs
                    .get(&spec_plan.path)
                    .cloned()
                    .ok_or_else(|| {
                        StageFailure::new(format!("buildspec {} was not loaded", spec_plan.path))
                    })?;
                self.build_with_buildspec(
                    &spec, &docker, request, &checkout, plan, record, step, &progress, state,
                )
                .await?
            }
        };
        self.events.emit(Event::Output {
            stage: step.name.clone(),
            key: "image id".into(),
            value: output.image_id.clone(),
        });
        state
            .image_ids
            .insert(step.name.clone(), output.image_id.clone());
        Ok(StepResult::done(StageOutputs {
            image_id: Some(output.image_id),
            exported: state.exported.clone(),
            ..StageOutputs::default()
        }))
    }

    #[allow(clippy::too_many_arguments)]
    pub(in crate::exec::driver) async fn build_with_buildspec(
        &self,
        spec: &crate::buildspec::Buildspec,
        docker: &bollard::Docker,
        request: build::BuildRequest,
        checkout: &std::path::Path,
        plan: &Plan,
        record: &RunRecord,
        step: &plan::BuildStep,
        progress: &(dyn Fn(build::BuildProgress) + Send + Sync),
        state: &mut RunState,
    ) -> Result<build::BuildOutput, StageFailure> {
        let secret_env = match self.aws_if_needed(spec).await? {
            Some(config) => phases::resolve_secret_env(spec, &config)
                .await
                .map_err(|error| {
                    let environment = error.is_environment();
                    StageFailure::of(error, environment)
                })?,
            None => BTreeMap::new(),
        };
        self.events
            .redactor()
            .add_all(secret_env.values().map(Secret::expose));
        let start_ms = chrono::DateTime::parse_from_rfc3339(&record.created_at)
            .map(|t| t.timestamp_millis())
            .unwrap_or_default();
        let sha = plan.trigger.sha.clone().unwrap_or_default();
        let trigger = plan
            .trigger
            .tag
            .as_ref()
            .map(|tag| format!("tag/{tag}"))
            .or_else(|| {
                plan.trigger
                    .branch
                    .as_ref()
                    .map(|branch| format!("branch/{branch}"))
            });
        let run_id = record.id.0.clone();
        let env = phases::codebuild_variables(&phases::CodebuildFacts {
            source_dir: checkout,
            resolved_source_version: &sha,
            build_number: 1,
            project: &plan.pipeline,
            run_id: &run_id,
            start_time_ms: start_ms,
            initiator: &self.settings.user,
            webhook_trigger: trigger.as_deref(),
        });
        let context = phases::BuildspecContext {
            source_dir: checkout.to_path_buf(),
            env,
            secret_env,
        };
        let stage = step.name.clone();
        let events = self.events.clone();
        let on_progress = move |progress: phases::BuildspecProgress| {
            if let Some(event) = buildspec_event(&stage, progress) {
                events.emit(event);
            }
        };
        let built: Arc<tokio::sync::Mutex<Option<build::BuildOutput>>> = Arc::default();
        let build_error: Arc<tokio::sync::Mutex<Option<build::BuildError>>> = Arc::default();
        let (slot, error_slot) = (built.clone(), build_error.clone());
        let outcome = phases::run(spec, &context, &on_progress, move |_env| {
            Box::pin(async move {
                match build::build(docker, &request, progress).await {
                    Ok(output) => *slot.lock().await = Some(output),
                    Err(error) => {
                        let message = error.to_string();
                        *error_slot.lock().await = Some(error);
                        return Err(message);
                    }
                }
                Ok::<(), String>(())
            })
        })
        .await
        .map_err(|error| StageFailure::new(error.to_string()))?;
        state.exported.extend(outcome.exported.clone());
        if !outcome.succeeded {
            let (message, environment) =
                build::buildspec_failure(&outcome, build_error.lock().await.as_ref());
            return Err(StageFailure::of(message, environment));
        }
        let output = built.lock().await.take();
        output
            .ok_or_else(|| StageFailure::new("the buildspec finished but the image was not built"))
    }
}

/// Point a registry reference at the endpoint override and the run's repository.
pub(in crate::exec::driver) fn with_endpoint(
    reference: &str,
    planned_repository: &str,
    repository: &str,
    endpoint: Option<&str>,
) -> String {
    let reference = match reference.strip_prefix(planned_repository) {
        Some(rest) => format!("{repository}{rest}"),
        None => reference.to_owned(),
    };
    match endpoint {
        Some(endpoint) => match reference.split_once('/') {
            Some((_, path)) => format!("{endpoint}/{path}"),
            None => reference,
        },
        None => reference,
    }
}
