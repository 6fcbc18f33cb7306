//! `promote`: deploy the images a run of a pipeline built and verified in one environment to
//! another environment, without building, through that environment's approval and migration.
//! Which run (the given one, else the newest successful one) and whether it may go further
//! (`promotable`) is decided here; the run itself is `Driver::promote`.

use super::Context;
use super::run::{driver, report};
use super::settings::settings;
use super::shared::{load_pipeline_in, open_store, store_failed};
use crate::cli::PromoteCommand;
use crate::exit_codes;
use crate::pipeline::environment::run_key;
use crate::run::{RunId, RunRecord, RunStatus, StageKind, StageStatus};
use crate::store::Store;

/// `promote`: the run to promote, checked, then a run of the pipeline in `--to` deploying it.
pub(super) async fn promote(context: &Context, request: PromoteCommand) -> Result<i32, i32> {
    let PromoteCommand {
        pipeline: name,
        from,
        to,
        run,
        allow_unverified,
        until,
        common,
    } = request;
    if from == to {
        eprintln!(
            "error: --from and --to both name `{from}`; promote from one environment to another"
        );
        return Err(exit_codes::INVALID_INPUT);
    }
    // Both must be environments of the pipeline; the run deploys as `--to` says.
    load_pipeline_in(context, &name, Some(&from))?;
    let compiled = load_pipeline_in(context, &name, Some(&to))?;
    let from_key = run_key(&name, Some(&from));
    let store = open_store(&context.project, &common.store).await?;
    let record = match run {
        Some(run) => given_run(store.as_ref(), &from_key, RunId(run)).await?,
        None => newest_deployed(store.as_ref(), &name, &from).await?,
    };
    if let Err(why) = promotable(&record, allow_unverified) {
        eprintln!(
            "error: run {} cannot be promoted to `{to}`: {why}",
            record.id
        );
        return Err(exit_codes::PROMOTION_REFUSED);
    }
    let env = compiled.declared_env();
    let mut settings = settings(&common);
    settings.until.clone_from(&until);
    let driver = driver(compiled, store, settings, &common, None);
    let result = driver.promote(&record, env).await;
    Ok(report(&driver, &result, None, &common, until.as_deref()).await)
}

/// The run `id`, which must be a run of the pipeline in the `--from` environment.
async fn given_run(store: &dyn Store, from_key: &str, id: RunId) -> Result<RunRecord, i32> {
    match store.get_run(&id).await {
        Ok(Some(record)) if record.pipeline == from_key => Ok(record),
        Ok(Some(record)) => {
            eprintln!(
                "error: run {id} is a run of `{}`, not of `{from_key}`; `envelope-runner history` lists runs with their pipeline and environment",
                record.pipeline
            );
            Err(exit_codes::INVALID_INPUT)
        }
        Ok(None) => {
            eprintln!("error: no run {id} in the store; `envelope-runner history` lists runs");
            Err(exit_codes::INVALID_INPUT)
        }
        Err(error) => Err(store_failed(error)),
    }
}

/// The newest run of `name` in `from` that succeeded and deployed: what that environment runs.
async fn newest_deployed(store: &dyn Store, name: &str, from: &str) -> Result<RunRecord, i32> {
    let runs = store
        .list_runs(Some(&run_key(name, Some(from))), 200, None)
        .await
        .map_err(store_failed)?;
    for summary in runs.iter().filter(|r| r.status == RunStatus::Succeeded) {
        match store.get_run(&summary.id).await {
            Ok(Some(record)) if deployed(&record) => return Ok(record),
            Ok(_) => {}
            Err(error) => return Err(store_failed(error)),
        }
    }
    eprintln!(
        "error: `{name}` has no successful deploy in `{from}` to promote; `envelope-runner history {name} --env {from}` lists its runs"
    );
    Err(exit_codes::PROMOTION_REFUSED)
}

fn deployed(record: &RunRecord) -> bool {
    record
        .stages
        .iter()
        .any(|s| s.kind == StageKind::Deploy && s.status == StageStatus::Succeeded)
}

/// Whether `record`'s images may go to another environment, or why not: the run succeeded,
/// deployed, and every deploy stage passed `verify:` checks. A deploy without checks proved
/// only that ECS started the tasks, so it is refused unless `allow_unverified`.
fn promotable(record: &RunRecord, allow_unverified: bool) -> Result<(), String> {
    if record.status != RunStatus::Succeeded {
        return Err(format!(
            "it {}; only a run that succeeded is promoted",
            record.status.as_str()
        ));
    }
    if !deployed(record) {
        return Err("it deployed nothing, so nothing was verified".into());
    }
    let unverified = record
        .stages
        .iter()
        .filter(|s| s.kind == StageKind::Deploy && s.outputs.checks.is_empty())
        .map(|s| format!("`{}`", s.name))
        .collect::<Vec<_>>();
    if !unverified.is_empty() && !allow_unverified {
        return Err(format!(
            "its deploy stage {} ran no `verify:` checks, so nothing showed the release works; add checks to the deploy stage, or pass --allow-unverified",
            unverified.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::sample;

    fn run(status: RunStatus, deploy: StageStatus, checks: &[&str]) -> RunRecord {
        let mut stage = sample::stage("deploy", StageKind::Deploy, deploy);
        stage.outputs.checks = checks.iter().map(|c| (*c).to_owned()).collect();
        sample::run(status, vec![stage])
    }

    #[test]
    fn only_a_verified_successful_deploy_is_promoted() {
        let passed = ["https://api.example/up: 200 after 1 attempt"];
        let cases = [
            (
                run(RunStatus::Succeeded, StageStatus::Succeeded, &passed),
                false,
                Ok(()),
            ),
            (
                run(RunStatus::Succeeded, StageStatus::Succeeded, &[]),
                false,
                Err(
                    "its deploy stage `deploy` ran no `verify:` checks, so nothing showed the release works; add checks to the deploy stage, or pass --allow-unverified",
                ),
            ),
            (
                run(RunStatus::Succeeded, StageStatus::Succeeded, &[]),
                true,
                Ok(()),
            ),
            (
                run(RunStatus::Failed, StageStatus::Failed, &passed),
                true,
                Err("it failed; only a run that succeeded is promoted"),
            ),
            (
                run(RunStatus::Succeeded, StageStatus::Skipped, &[]),
                true,
                Err("it deployed nothing, so nothing was verified"),
            ),
        ];
        for (record, allow_unverified, expected) in cases {
            assert_eq!(
                promotable(&record, allow_unverified),
                expected.map_err(str::to_owned),
                "{:?} {allow_unverified}",
                record.status
            );
        }
    }
}
