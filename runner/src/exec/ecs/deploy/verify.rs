//! The deploy's `verify:` checks: run together once every service's rollout COMPLETED; a
//! check that does not pass is a failure of the release, handled like a failed rollout
//! (every service rolled back unless `on_failure` is `stop`).

use super::{Deploy, DeployProgress, Progress, RolloutFailure};
use crate::exec::verify::{self, CheckReport, HttpCheck};
use crate::redact::Redactor;

impl<'a> Deploy<'a> {
    /// Runs `checks` after the rollout; bodies and errors in reports pass through `redactor`.
    pub fn verified(mut self, checks: Vec<HttpCheck>, redactor: Redactor) -> Self {
        self.checks = checks;
        self.redactor = redactor;
        self
    }

    /// The reports of the checks run so far, in the order of the pipeline file.
    pub fn check_reports(&self) -> &[CheckReport] {
        &self.check_reports
    }

    /// Runs every check at once; the failed ones, keyed by their shown URL.
    pub(super) async fn verify(&mut self, progress: Progress<'_>) -> Vec<(String, RolloutFailure)> {
        let runs = self
            .checks
            .iter()
            .map(|check| verify::run(check, &self.redactor));
        let reports = futures_util::future::join_all(runs).await;
        let mut failures = Vec::new();
        for report in &reports {
            progress(DeployProgress::Verified(report.clone()));
            if !report.passed {
                failures.push((
                    format!("verify {}", report.url),
                    RolloutFailure::Verify(Box::new(report.clone())),
                ));
            }
        }
        self.check_reports = reports;
        failures
    }
}
