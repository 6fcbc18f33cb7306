//! `plan`: show what a run would do for a ref, without network or store.

use super::Context;
use super::shared::report_diagnostics;
use crate::cli::OutputFormat;
use crate::exit_codes;
use crate::pipeline;
use crate::plan::{self as planner, PlanContext};
use crate::trigger::actions::plan_error_annotation;
use std::io::Write;

/// What to plan for, as the command line gives it.
pub(super) struct Target {
    /// Branch, tag or commit (in GitHub Actions, default: the release or pushed ref).
    pub git_ref: Option<String>,
    /// The commit the ref resolves to.
    pub sha: Option<String>,
    /// The AWS region (default: the pipeline's, then AWS_REGION, then AWS_DEFAULT_REGION).
    pub region: Option<String>,
    /// The environment of the pipeline to plan in (`--env`).
    pub environment: Option<String>,
}

pub(super) fn plan(
    context: &Context,
    name: &str,
    target: Target,
    output: OutputFormat,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let path = match pipeline::find(&context.project, name) {
        Ok(path) => path,
        Err(message) => {
            let _ = writeln!(stderr, "error: {message}");
            return exit_codes::INVALID_INPUT;
        }
    };
    let Target {
        git_ref,
        sha,
        region,
        environment,
    } = target;
    let compiled = match pipeline::load(&path) {
        Ok(compiled) => compiled,
        Err(diagnostics) => {
            report_diagnostics(&diagnostics, &context.diagnostics(), stderr);
            return exit_codes::INVALID_INPUT;
        }
    };
    let compiled = match compiled.in_environment(environment.as_deref()) {
        Ok(compiled) => compiled,
        Err(error) => {
            let _ = writeln!(stderr, "error: {error}");
            return exit_codes::INVALID_INPUT;
        }
    };
    let env = compiled.declared_env();
    // In GitHub Actions the release (or pushed ref) and its commit are the default.
    let actions = context
        .job
        .as_ref()
        .filter(|_| git_ref.is_none())
        .and_then(|job| job.environment.trigger());
    let (git_ref, sha) = match (git_ref, actions) {
        (Some(git_ref), _) => (git_ref, sha),
        (None, Some(trigger)) => (trigger.git_ref, sha.or(trigger.sha)),
        (None, None) => {
            let _ = writeln!(
                stderr,
                "error: give --ref (a release tag, branch or commit); only in GitHub Actions does it default to the release or pushed ref"
            );
            return exit_codes::INVALID_INPUT;
        }
    };
    // The same region a run would settle on, short of the AWS profile and instance metadata
    // (plan reads no files beyond the project and asks no service).
    let region = region
        .or_else(|| compiled.aws.region.clone())
        .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
        .or_else(|| {
            std::env::var("AWS_DEFAULT_REGION")
                .ok()
                .filter(|r| !r.is_empty())
        });
    let plan_context = PlanContext {
        git_ref,
        sha,
        env,
        region,
        ..PlanContext::default()
    };
    match planner::plan(&compiled, &plan_context) {
        Ok(plan) => {
            let _ = match output {
                OutputFormat::Json => writeln!(
                    stdout,
                    "{}",
                    serde_json::to_string_pretty(&plan).unwrap_or_default()
                ),
                OutputFormat::Text => write!(stdout, "{}", plan.render_text()),
            };
            exit_codes::OK
        }
        Err(error) => {
            if let Some(job) = &context.job {
                let _ = writeln!(
                    stderr,
                    "{}",
                    plan_error_annotation(&path, &error, &job.paths)
                );
            }
            let _ = writeln!(stderr, "error: {error}");
            exit_codes::INVALID_INPUT
        }
    }
}
