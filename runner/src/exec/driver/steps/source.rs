//! The source stage: clone or fetch the commit, or take a local working tree.

use crate::event::Event;
use crate::exec::driver::*;
use crate::exec::source::{self, SourceProgress, SourceRequest};
use crate::plan::{self, Plan, Step};
use crate::run::{RunRecord, StageOutputs};
use crate::secret::Secret;

impl Driver {
    pub(in crate::exec::driver) async fn source(
        &self,
        step: &plan::SourceStep,
        record: &RunRecord,
        state: &mut RunState,
    ) -> Result<StepResult, StageFailure> {
        if let Some(local) = &self.settings.local_source {
            let sha = local_head(local);
            self.events.emit(Event::Output {
                stage: step.name.clone(),
                key: "working tree".into(),
                value: format!(
                    "{} ({})",
                    local.display(),
                    sha.as_deref().unwrap_or("not a git repository")
                ),
            });
            state.checkout = Some(local.clone());
            state.sha = sha.clone();
            return Ok(StepResult::done(StageOutputs {
                sha,
                ..StageOutputs::default()
            }));
        }
        let checkout_dir = self
            .settings
            .cache_dir
            .join("work")
            .join(&record.id.0)
            .join("source");
        if checkout_dir.exists() {
            // A resumed run re-fetches into a clean tree: half-written checkouts are not trusted.
            let _ = std::fs::remove_dir_all(&checkout_dir);
        }
        let token = std::env::var(&step.token_env)
            .ok()
            .filter(|t| !t.is_empty())
            .map(Secret::new);
        let request = SourceRequest {
            url: step.url.clone(),
            reference: step.reference.clone(),
            expected_sha: step.expected_sha.clone(),
            token,
            cache_dir: self.settings.cache_dir.clone(),
            checkout_dir: checkout_dir.clone(),
            shallow_without_mirror: false,
        };
        let events = self.events.clone();
        let stage = step.name.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut last_percent = None;
            source::fetch(&request, &mut |progress| match progress {
                SourceProgress::Fetching { url } => events.emit(Event::Log {
                    stage: stage.clone(),
                    line: format!("fetching {url}"),
                }),
                SourceProgress::Transfer {
                    received_objects,
                    total_objects,
                    received_bytes,
                } => {
                    let percent = (received_objects * 100)
                        .checked_div(total_objects)
                        .unwrap_or(100)
                        / 25;
                    if last_percent != Some(percent) && received_objects == total_objects {
                        last_percent = Some(percent);
                        events.emit(Event::Log {
                            stage: stage.clone(),
                            line: format!(
                                "received {received_objects}/{total_objects} objects ({} KiB)",
                                received_bytes / 1024
                            ),
                        });
                    }
                }
                SourceProgress::CheckedOut { sha } => events.emit(Event::Log {
                    stage: stage.clone(),
                    line: format!("checked out {sha}"),
                }),
            })
        })
        .await
        .map_err(|error| {
            StageFailure::new(format!("the source step stopped unexpectedly: {error}"))
        })?;
        let output = result.map_err(|error| {
            let environment = error.is_environment();
            StageFailure::of(error, environment)
        })?;
        self.events.emit(Event::Output {
            stage: step.name.clone(),
            key: "commit".into(),
            value: output.sha.clone(),
        });
        state.sha = Some(output.sha.clone());
        state.checkout = Some(output.checkout_dir.clone());
        Ok(StepResult::done(StageOutputs {
            sha: Some(output.sha),
            ..StageOutputs::default()
        }))
    }

    /// A resumed run whose source stage finished in another process (or before a crash) needs
    /// the checkout again: reuse it when it is still there, else fetch the recorded commit.
    pub(in crate::exec::driver) async fn ensure_checkout(
        &self,
        plan: &Plan,
        record: &RunRecord,
        state: &mut RunState,
    ) -> Result<(), StageFailure> {
        if let Some(local) = &self.settings.local_source {
            state.checkout = Some(local.clone());
            return Ok(());
        }
        if state.checkout.as_ref().is_some_and(|dir| dir.is_dir()) {
            return Ok(());
        }
        let existing = self
            .settings
            .cache_dir
            .join("work")
            .join(&record.id.0)
            .join("source");
        if existing.is_dir()
            && existing
                .read_dir()
                .is_ok_and(|mut entries| entries.next().is_some())
        {
            state.checkout = Some(existing);
            return Ok(());
        }
        let Some(Step::Source(source)) = plan.steps.first() else {
            return Err(StageFailure::new("the plan has no source step"));
        };
        self.events.emit(Event::Notice {
            stage: None,
            message: format!(
                "checking out {} again for the resumed run",
                state.sha.as_deref().unwrap_or(&source.reference)
            ),
        });
        let mut source = source.clone();
        source.expected_sha = state.sha.clone().or(source.expected_sha);
        self.source(&source, record, state).await.map(|_| ())
    }
}

/// The commit at HEAD of a local working tree; uncommitted changes are built but not marked.
pub(in crate::exec::driver) fn local_head(path: &std::path::Path) -> Option<String> {
    let repository = git2::Repository::discover(path).ok()?;
    let sha = repository
        .head()
        .ok()?
        .peel_to_commit()
        .ok()?
        .id()
        .to_string();
    Some(sha)
}
