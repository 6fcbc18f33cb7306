//! What a job's files say about a run: the step outputs (`$GITHUB_OUTPUT`) and the Markdown job
//! summary (`$GITHUB_STEP_SUMMARY`), made from the run as the store has it after the command
//! ([`StoredRun`], so a `resume` job reports the whole run) and the links of the job.

use crate::pipeline::names;
use crate::report::{SummaryLinks, job_summary, output_entry, run_outputs};
use crate::run::{ApprovalRecord, RunId, RunRecord, StageKind};
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;

/// A run as the store has it, with the decisions recorded at its approval gates.
#[derive(Debug, Clone)]
pub struct StoredRun {
    pub record: RunRecord,
    /// Decisions by gate name (a rejection is not a stage output, so the summary needs these).
    pub approvals: BTreeMap<String, ApprovalRecord>,
}

impl StoredRun {
    /// The run `run` from the store; `None` when the store has no such run. A gate whose
    /// decision cannot be read is shown without one.
    pub async fn read(store: &dyn Store, run: &RunId) -> Result<Option<StoredRun>, StoreError> {
        let Some(record) = store.get_run(run).await? else {
            return Ok(None);
        };
        let mut approvals = BTreeMap::new();
        for gate in record
            .stages
            .iter()
            .filter(|stage| stage.kind == StageKind::Approval)
        {
            if let Ok(Some(decision)) = store.approval(run, &gate.name).await {
                approvals.insert(gate.name.clone(), decision);
            }
        }
        Ok(Some(StoredRun { record, approvals }))
    }

    /// The lines the run appends to `$GITHUB_OUTPUT`.
    pub fn outputs(&self) -> String {
        run_outputs(&self.record)
            .iter()
            .map(|(name, value)| output_entry(name, value))
            .collect()
    }

    /// The Markdown the run appends to `$GITHUB_STEP_SUMMARY`; stage errors pass `redact`.
    pub fn summary(&self, links: &SummaryLinks, redact: &dyn Fn(&str) -> String) -> String {
        job_summary(&self.record, &self.approvals, links, redact)
    }

    /// The summary's links: the workflow run's page, and when the pipeline's `repository`
    /// (as its file gives it) is on github.com, the built commit and the release of its tag.
    pub fn links(&self, workflow_run: Option<String>, repository: Option<&str>) -> SummaryLinks {
        let record = &self.record;
        let mut links = SummaryLinks {
            workflow_run,
            ..SummaryLinks::default()
        };
        let github_repository = repository.map(names::clone_url).and_then(|url| {
            url.strip_prefix("https://github.com/")
                .and_then(|rest| rest.strip_suffix(".git"))
                .map(str::to_owned)
        });
        if let Some(repository) = github_repository {
            let sha = record
                .stages
                .iter()
                .find_map(|stage| stage.outputs.sha.clone())
                .or_else(|| record.trigger.sha.clone());
            links.commit = sha.map(|sha| format!("https://github.com/{repository}/commit/{sha}"));
            links.release = record
                .trigger
                .tag
                .as_ref()
                .map(|tag| format!("https://github.com/{repository}/releases/tag/{tag}"));
        }
        links
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trigger::actions::tests::waiting_run;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn links_to_the_commit_and_release_only_for_a_repository_on_github() {
        let run = waiting_run();
        let page = Some("https://github.com/acme/deploy/actions/runs/42".to_owned());
        assert_eq!(
            run.links(page.clone(), Some("epactltd/api")),
            SummaryLinks {
                workflow_run: page.clone(),
                commit: Some(format!("https://github.com/epactltd/api/commit/{SHA}")),
                release: Some("https://github.com/epactltd/api/releases/tag/v1.2.3".into()),
            }
        );
        for repository in [Some("file:///srv/git/api"), None] {
            assert_eq!(
                run.links(None, repository),
                SummaryLinks::default(),
                "{repository:?}"
            );
        }
    }

    #[test]
    fn outputs_name_the_run_and_its_status() {
        assert_eq!(waiting_run().outputs(), "run-id=01run\nstatus=waiting\n");
    }
}
