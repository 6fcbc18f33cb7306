//! `--check`'s look at the agent's own environment: the variables a pipeline reads while its
//! runs go (end-of-run webhook URLs, BuildKit secrets), which the agent process must have.
//! Only names are reported, never values.

use envelope_runner::pipeline::CompiledPipeline;
use envelope_runner::pipeline::model::Stage;

/// Every variable `compiled` reads from the environment during a run that is unset or empty
/// here, with the pipeline key that names it (e.g. `notify.slack_env`).
pub fn missing_variables(compiled: &CompiledPipeline) -> Vec<(String, String)> {
    let pipeline = &compiled.pipeline;
    let mut named: Vec<(String, String)> = Vec::new();
    if let Some(notify) = &pipeline.notify {
        for (key, name) in [
            ("notify.slack_env", &notify.slack_env),
            ("notify.webhook_env", &notify.webhook_env),
        ] {
            if let Some(name) = name {
                named.push((key.to_owned(), name.clone()));
            }
        }
    }
    for stage in &pipeline.stages {
        if let Stage::Build(build) = stage {
            for secret in &build.secrets {
                if let Some(name) = &secret.env {
                    named.push((format!("build.secrets[{}].env", secret.id), name.clone()));
                }
            }
        }
    }
    named
        .into_iter()
        .filter(|(_, name)| std::env::var_os(name).is_none_or(|value| value.is_empty()))
        .collect()
}
