//! The deploy's `verify:` checks: run together once every service's rollout COMPLETED; a
//! check that does not pass is a failure of the release, handled like a failed rollout
//! (every service rolled back unless `on_failure` is `stop`). A task check gives one report
//! per new task (see [`task_checks`](super::task_checks)), a target group check one per
//! target group of its service (see [`target_group_checks`](super::target_group_checks)), an
//! alarm check one (see [`alarm_checks`](super::alarm_checks)).

use super::{Deploy, DeployProgress, Progress, RolloutFailure};
use crate::exec::verify::{self, Check, CheckReport};
use crate::redact::Redactor;

impl<'a> Deploy<'a> {
    /// Runs `checks` after the rollout; bodies and errors in reports pass through `redactor`.
    pub fn verified(mut self, checks: Vec<Check>, redactor: Redactor) -> Self {
        self.checks = checks;
        self.redactor = redactor;
        self
    }

    /// The reports of the checks run so far, in the order of the pipeline file (a task
    /// check's reports in the order of the tasks' ARNs, a target group check's in the order
    /// of the service's load balancers).
    pub fn check_reports(&self) -> &[CheckReport] {
        &self.check_reports
    }

    /// Runs every check at once; the failed ones, keyed by their shown URL.
    pub(super) async fn verify(&mut self, progress: Progress<'_>) -> Vec<(String, RolloutFailure)> {
        let this = &*self;
        let runs = this.checks.iter().map(|check| async move {
            match check {
                Check::Url(check) => vec![verify::run(check, &this.redactor).await],
                Check::Task(check) => this.check_tasks(check).await,
                Check::TargetGroup(check) => this.check_target_groups(check).await,
                Check::Alarm(check) => vec![this.watch_alarm(check).await],
            }
        });
        let reports: Vec<CheckReport> = futures_util::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect();
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
