//! Secrets a build asks for, given on the command line (`--secret`) or read from the source
//! the pipeline declares (an environment variable, a file, Secrets Manager), and registered
//! with the redactor before any output can show them.

use super::*;
use crate::exec::build;
use crate::plan;
use crate::secret::Secret;

impl Driver {
    pub(super) async fn resolve_secrets(
        &self,
        step: &plan::BuildStep,
    ) -> Result<Vec<build::BuildSecret>, StageFailure> {
        let mut secrets = Vec::new();
        for reference in &step.secrets {
            let (kind, name) = reference.from.split_once(':').unwrap_or(("", ""));
            let value = match (self.settings.build_secrets.get(&reference.id), kind) {
                (Some(given), _) => given.expose().to_owned(),
                (None, "env") => std::env::var(name).map_err(|_| {
                    StageFailure::new(format!(
                        "build secret `{}` reads environment variable {name}, which is not set; export it before the run",
                        reference.id
                    ))
                })?,
                (None, "file") => crate::pipeline::paths::read_secret_file(
                    &self.compiled,
                    &step.name,
                    &reference.id,
                    name,
                )
                .map_err(StageFailure::new)?,
                (None, "aws_secret") => {
                    let client = aws_sdk_secretsmanager::Client::new(self.aws().await?);
                    let answer = client.get_secret_value().secret_id(name).send().await.map_err(|error| {
                        let read = crate::aws_error::AwsFailure::during(&error, "Secrets Manager GetSecretValue");
                        StageFailure::of(
                            format!("build secret `{}`: cannot read AWS secret {name}: {read}", reference.id),
                            read.is_environment(),
                        )
                    })?;
                    match (answer.secret_string(), answer.secret_binary()) {
                        (Some(text), _) => text.to_owned(),
                        (None, Some(_)) => return Err(StageFailure::new(format!(
                            "build secret `{}`: AWS secret {name} is stored as SecretBinary, which is never handed to a build; store it as SecretString (text) instead",
                            reference.id
                        ))),
                        (None, None) => String::new(),
                    }
                }
                (None, _) => return Err(StageFailure::new(format!("build secret `{}` has no source", reference.id))),
            };
            self.events.redactor().add(&value);
            secrets.push(build::BuildSecret {
                id: reference.id.clone(),
                value: Secret::new(value),
            });
        }
        Ok(secrets)
    }
}
