//! Environments: one pipeline's stages run against another cluster, services, AWS account,
//! region or registry, with or without the approval gate. Pure.
//!
//! [`CompiledPipeline::in_environment`] turns a compiled pipeline into the one a run in an
//! environment executes: the environment's overrides are applied to the typed stages, so plan,
//! the driver and every executor see ordinary stages and need not know environments exist.
//!
//! Runs in an environment are recorded under the run key `PIPELINE@ENVIRONMENT` (for example
//! `api@staging`): the store keeps their history, the deploy lock and rollback targets apart from
//! the pipeline's runs without an environment (whose key stays the pipeline's name, so their
//! records are the same as before environments existed). Neither name may contain `@`.

use super::CompiledPipeline;
use super::diagnostic::{quoted_list, suggest};
use super::model::{Aws, EnvironmentApproval, Stage};

/// What separates a pipeline's name from its environment's in a run key.
pub const RUN_KEY_SEPARATOR: char = '@';

/// The key a run of `pipeline` in `environment` (if any) is recorded under.
pub fn run_key(pipeline: &str, environment: Option<&str>) -> String {
    match environment {
        Some(environment) => format!("{pipeline}{RUN_KEY_SEPARATOR}{environment}"),
        None => pipeline.to_owned(),
    }
}

/// The pipeline and environment a run key names: `api@staging` → (`api`, `staging`).
pub fn split_run_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once(RUN_KEY_SEPARATOR) {
        Some((pipeline, environment)) => (pipeline, Some(environment)),
        None => (key, None),
    }
}

/// Why a pipeline cannot run in the environment asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentError {
    #[error(
        "pipeline `{pipeline}` declares no environments, so it cannot run in `{asked}`: add an `environments:` section to its file, or leave out --env"
    )]
    NoneDeclared { pipeline: String, asked: String },
    #[error("pipeline `{pipeline}` has no environment `{asked}`{hint}")]
    Unknown {
        pipeline: String,
        asked: String,
        hint: String,
    },
}

impl CompiledPipeline {
    /// The key this pipeline's runs are recorded under: its name, or `name@environment`.
    pub fn run_key(&self) -> String {
        run_key(&self.name, self.environment.as_deref())
    }

    /// This pipeline as it runs in `environment` (`None`: as written). The environment's
    /// cluster and service names replace the stages', its `aws:` settings the pipeline's, and
    /// `approval: skip` leaves the approval stages out.
    pub fn in_environment(
        mut self,
        environment: Option<&str>,
    ) -> Result<CompiledPipeline, EnvironmentError> {
        let Some(asked) = environment else {
            return Ok(self);
        };
        let declared = &self.pipeline.environments;
        let Some(overrides) = declared.get(asked).cloned() else {
            if declared.is_empty() {
                return Err(EnvironmentError::NoneDeclared {
                    pipeline: self.name,
                    asked: asked.to_owned(),
                });
            }
            let hint = match suggest(asked, declared.keys().map(String::as_str)) {
                Some(candidate) => format!("; did you mean `{candidate}`?"),
                None => format!(
                    "; it declares {}",
                    quoted_list(declared.keys().map(String::as_str))
                ),
            };
            return Err(EnvironmentError::Unknown {
                pipeline: self.name,
                asked: asked.to_owned(),
                hint,
            });
        };
        let service = |name: &String| {
            overrides
                .services
                .get(name)
                .cloned()
                .unwrap_or_else(|| name.clone())
        };
        let skip_approval = overrides.approval == Some(EnvironmentApproval::Skip);
        self.pipeline
            .stages
            .retain(|stage| !(skip_approval && matches!(stage, Stage::Approval(_))));
        for stage in &mut self.pipeline.stages {
            match stage {
                Stage::Migrate(migrate) => {
                    if let Some(cluster) = &overrides.cluster {
                        migrate.cluster.clone_from(cluster);
                    }
                    migrate.service = service(&migrate.service);
                }
                Stage::Deploy(deploy) => {
                    if let Some(cluster) = &overrides.cluster {
                        deploy.cluster.clone_from(cluster);
                    }
                    deploy.services = deploy.services.iter().map(service).collect();
                }
                Stage::Build(_) | Stage::Approval(_) => {}
            }
        }
        if let Some(aws) = &overrides.aws {
            self.aws = Aws {
                region: aws.region.clone().or(self.aws.region.take()),
                account: aws.account.clone().or(self.aws.account.take()),
                registry: aws.registry.clone().or(self.aws.registry.take()),
            };
        }
        self.environment = Some(asked.to_owned());
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::compile_text;

    const PIPELINE: &str = r#"
source: {repository: acme/app}
aws: {region: eu-west-2, account: "111111111111"}
environments:
  staging:
    cluster: staging-cluster
    services: {prod-api: staging-api, prod-worker: staging-worker}
    aws: {account: "222222222222", registry: registry.staging.example}
    approval: skip
  prod: {}
stages:
  - build: {image: app}
  - approval: {}
  - migrate: {cluster: prod-cluster, service: prod-api, container: app, command: [migrate]}
  - deploy: {cluster: prod-cluster, services: [prod-api, prod-worker, prod-cron]}
"#;

    fn clusters_and_services(compiled: &CompiledPipeline) -> Vec<String> {
        compiled
            .pipeline
            .stages
            .iter()
            .map(|stage| match stage {
                Stage::Build(_) => "build".to_owned(),
                Stage::Approval(_) => "approval".to_owned(),
                Stage::Migrate(m) => format!("migrate {} {}", m.cluster, m.service),
                Stage::Deploy(d) => format!("deploy {} {}", d.cluster, d.services.join(",")),
            })
            .collect()
    }

    #[test]
    fn an_environment_replaces_clusters_services_aws_and_skips_the_gate() {
        let staging = compile_text(PIPELINE)
            .in_environment(Some("staging"))
            .unwrap();
        assert_eq!(
            clusters_and_services(&staging),
            [
                "build",
                "migrate staging-cluster staging-api",
                "deploy staging-cluster staging-api,staging-worker,prod-cron",
            ]
        );
        assert_eq!(staging.aws.region.as_deref(), Some("eu-west-2"));
        assert_eq!(staging.aws.account.as_deref(), Some("222222222222"));
        assert_eq!(
            staging.aws.registry.as_deref(),
            Some("registry.staging.example")
        );
        assert_eq!(staging.run_key(), "app@staging");
    }

    #[test]
    fn an_empty_environment_and_no_environment_keep_the_stages_as_written() {
        let written = clusters_and_services(&compile_text(PIPELINE));
        let prod = compile_text(PIPELINE).in_environment(Some("prod")).unwrap();
        assert_eq!(clusters_and_services(&prod), written);
        assert_eq!(prod.run_key(), "app@prod");
        let plain = compile_text(PIPELINE).in_environment(None).unwrap();
        assert_eq!(clusters_and_services(&plain), written);
        assert_eq!(plain.run_key(), "app");
    }

    #[test]
    fn an_unknown_environment_is_refused_with_what_exists() {
        let cases = [
            (
                PIPELINE,
                "stagin",
                "pipeline `app` has no environment `stagin`; did you mean `staging`?",
            ),
            (
                PIPELINE,
                "qa",
                "pipeline `app` has no environment `qa`; it declares `prod`, `staging`",
            ),
            (
                "source: {repository: acme/app}\nstages:\n  - build: {image: app}\n",
                "prod",
                "pipeline `app` declares no environments, so it cannot run in `prod`: add an `environments:` section to its file, or leave out --env",
            ),
        ];
        for (text, asked, message) in cases {
            let error = compile_text(text).in_environment(Some(asked)).unwrap_err();
            assert_eq!(error.to_string(), message, "--env {asked}");
        }
    }

    #[test]
    fn run_keys_split_back_into_pipeline_and_environment() {
        for (pipeline, environment) in [("api", None), ("api", Some("staging"))] {
            let key = run_key(pipeline, environment);
            assert_eq!(split_run_key(&key), (pipeline, environment));
        }
    }
}
