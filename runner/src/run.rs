//! What a run is made of: its id, trigger, stage states and the outputs later stages and
//! later processes rely on. These records are what the store keeps.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A run id: sortable by start time, unique across machines (a ULID, lowercase).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl RunId {
    pub fn new() -> Self {
        RunId(ulid::Ulid::new().to_string().to_lowercase())
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who or what started the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TriggerKind {
    /// A person at a terminal.
    Cli { user: String },
    /// A developer reproducing a build from the working tree.
    Local { user: String },
    /// A GitHub Actions job.
    GithubActions { run_id: String, actor: String },
    /// The agent saw a new release.
    Release {
        repository: String,
        release_id: u64,
        /// GitHub login of the release's publisher (`author.login`), when GitHub said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        author: Option<String>,
    },
    /// `rollback` redeploying an earlier run's images.
    Rollback { from_run: RunId },
    /// `promote` deploying the images a run in another environment built and verified.
    Promotion {
        from_run: RunId,
        /// The run key (`PIPELINE@ENVIRONMENT`) of the run promoted.
        from_pipeline: String,
    },
}

impl TriggerKind {
    /// Whether an agent resumes a run of this kind that stopped unfinished (its process died):
    /// a release's run is resumed by any agent that watches its pipeline; every other run only
    /// by whoever started it (`envelope-runner resume`).
    pub fn resumed_by_agents(&self) -> bool {
        matches!(self, TriggerKind::Release { .. })
    }
}

/// Where a run's code comes from and what it resolved to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTrigger {
    pub kind: TriggerKind,
    pub git_ref: String,
    pub sha: Option<String>,
    pub tag: Option<String>,
}

/// The state of a stage within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageStatus {
    Pending,
    Running,
    /// Paused at an approval gate.
    Waiting,
    Succeeded,
    Failed,
    /// Not run because an earlier stage failed, was rejected, or `--until` stopped before it.
    Skipped,
    Cancelled,
}

impl StageStatus {
    /// A finished stage is never run again.
    pub fn is_finished(self) -> bool {
        matches!(self, StageStatus::Succeeded | StageStatus::Skipped)
    }

    /// The word people read (and the JSON and the store hold).
    pub fn as_str(self) -> &'static str {
        match self {
            StageStatus::Pending => "pending",
            StageStatus::Running => "running",
            StageStatus::Waiting => "waiting",
            StageStatus::Succeeded => "succeeded",
            StageStatus::Failed => "failed",
            StageStatus::Skipped => "skipped",
            StageStatus::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for StageStatus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// The state of a whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Waiting,
    Succeeded,
    Failed,
    Rejected,
    Cancelled,
    Superseded,
}

impl RunStatus {
    /// The word people read (and the JSON and the store hold).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Rejected => "rejected",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Superseded => "superseded",
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// What a stage produced; later stages (and resumed runs) read these instead of redoing work.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StageOutputs {
    /// Source: the commit and where it was checked out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    /// Build: the local image id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// Push: `repository@sha256:...`, the reference every later stage uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Buildspec `exported-variables`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exported: BTreeMap<String, String>,
    /// Migrate / deploy: task definition ARNs by service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub task_definitions: BTreeMap<String, String>,
    /// Deploy: the task definition each service ran before, for rollback.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub previous_task_definitions: BTreeMap<String, String>,
    /// Deploy: deployment id each UpdateService call returned.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deployments: BTreeMap<String, String>,
    /// Deploy: each service the failed deploy put back on the revision it ran before, and
    /// that revision (services whose rollback did not complete are not here).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rolled_back: BTreeMap<String, String>,
    /// Deploy: how each `verify:` check ended, one readable line each (URL without
    /// credentials, attempts, time taken, last status and body excerpt when it failed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<String>,
    /// Migrate: the task and how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Approval: where the gate's notifications went, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified: Option<String>,
    /// Approval: who decided, when, and what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalRecord>,
    /// Approval: what the stages after the gate would change on ECS (per service: image
    /// digest before → after, every other task definition field), described when the gate
    /// opened, bounded, one readable line each; `diff unavailable: why` when ECS could not say.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Approval: the `verify:` checks the deploy after the gate runs, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub planned_checks: Vec<String>,
    /// What went wrong without failing the stage (a notice that could not be sent), one
    /// readable line each, for `status` and the job summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub approved: bool,
    pub by: String,
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What a stage does: one per step kind of the plan. Stored as its lower-case name, the same
/// text records held when kinds were plain strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Source,
    Build,
    Push,
    Approval,
    Migrate,
    Deploy,
}

impl StageKind {
    pub const ALL: [StageKind; 6] = [
        StageKind::Source,
        StageKind::Build,
        StageKind::Push,
        StageKind::Approval,
        StageKind::Migrate,
        StageKind::Deploy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Source => "source",
            StageKind::Build => "build",
            StageKind::Push => "push",
            StageKind::Approval => "approval",
            StageKind::Migrate => "migrate",
            StageKind::Deploy => "deploy",
        }
    }
}

impl std::str::FromStr for StageKind {
    type Err = String;

    /// A kind by its name, as `--until` and records spell it.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        StageKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| format!("no stage kind `{text}`"))
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stage of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    pub name: String,
    pub kind: StageKind,
    pub status: StageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub outputs: StageOutputs,
    /// What went wrong, written for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A run as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: RunId,
    pub pipeline: String,
    pub status: RunStatus,
    pub trigger: RunTrigger,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// What planning needs to reproduce the run's plan on resume: ref, sha, creation time,
    /// account and the declared environment variables' values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context: BTreeMap<String, String>,
    pub stages: Vec<StageRecord>,
}

impl RunRecord {
    /// The first stage that still has to run, if any.
    pub fn next_stage(&self) -> Option<&StageRecord> {
        self.stages.iter().find(|stage| !stage.status.is_finished())
    }

    /// Whether the run has begun a stage past its approval gate: a migration or a deploy, the
    /// only stages after the last approval (and, without one, the first ones the gate holds).
    pub fn past_its_gate(&self) -> bool {
        self.stages.iter().any(|stage| {
            matches!(stage.kind, StageKind::Migrate | StageKind::Deploy)
                && stage.status != StageStatus::Pending
        })
    }

    pub fn stage(&self, name: &str) -> Option<&StageRecord> {
        self.stages.iter().find(|stage| stage.name == name)
    }

    pub fn stage_mut(&mut self, name: &str) -> Option<&mut StageRecord> {
        self.stages.iter_mut().find(|stage| stage.name == name)
    }
}

/// Records for unit tests: a CLI run of release `v1.2.3` of pipeline `api`, and a stage.
#[cfg(test)]
pub(crate) mod sample {
    use super::*;

    pub(crate) fn run(status: RunStatus, stages: Vec<StageRecord>) -> RunRecord {
        RunRecord {
            id: RunId("01jd0000000000000000000000".into()),
            pipeline: "api".into(),
            status,
            trigger: RunTrigger {
                kind: TriggerKind::Cli { user: "ci".into() },
                git_ref: "v1.2.3".into(),
                sha: None,
                tag: Some("v1.2.3".into()),
            },
            created_at: "2026-11-26T09:00:00Z".into(),
            finished_at: None,
            context: BTreeMap::new(),
            stages,
        }
    }

    pub(crate) fn stage(name: &str, kind: StageKind, status: StageStatus) -> StageRecord {
        StageRecord {
            name: name.into(),
            kind,
            status,
            started_at: None,
            finished_at: None,
            outputs: StageOutputs::default(),
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_are_the_serialized_names() {
        use RunStatus as R;
        use StageStatus as S;
        for status in [
            R::Queued,
            R::Running,
            R::Waiting,
            R::Succeeded,
            R::Failed,
            R::Rejected,
            R::Cancelled,
            R::Superseded,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(status.to_string(), status.as_str());
        }
        for status in [
            S::Pending,
            S::Running,
            S::Waiting,
            S::Succeeded,
            S::Failed,
            S::Skipped,
            S::Cancelled,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
            assert_eq!(status.to_string(), status.as_str());
        }
    }

    #[test]
    fn run_ids_sort_by_creation() {
        let first = RunId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = RunId::new();
        assert!(first < second);
        assert_eq!(first.0.len(), 26);
    }

    #[test]
    fn stage_kinds_are_stored_as_the_names_records_always_held() {
        for kind in StageKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(serde_json::from_str::<StageKind>(&json).unwrap(), kind);
            assert_eq!(kind.as_str().parse::<StageKind>(), Ok(kind));
        }
        // A stage record as the stores wrote it before kinds were an enum.
        let old = r#"{"name":"api-push","kind":"push","status":"succeeded","outputs":{}}"#;
        let stage: StageRecord = serde_json::from_str(old).unwrap();
        assert_eq!(stage.kind, StageKind::Push);
        assert_eq!(serde_json::to_string(&stage).unwrap(), old);
        assert!("notify".parse::<StageKind>().is_err());
    }

    #[test]
    fn finished_stages_are_skipped_on_resume() {
        let stage = |name: &str, status| sample::stage(name, name.parse().unwrap(), status);
        let run = sample::run(
            RunStatus::Waiting,
            vec![
                stage("source", StageStatus::Succeeded),
                stage("build", StageStatus::Succeeded),
                stage("approval", StageStatus::Waiting),
                stage("deploy", StageStatus::Pending),
            ],
        );
        assert_eq!(run.next_stage().unwrap().name, "approval");
    }

    #[test]
    fn a_run_is_past_its_gate_once_a_migration_or_deploy_left_pending() {
        let run = |approval, deploy| {
            sample::run(
                RunStatus::Running,
                vec![
                    sample::stage("approval", StageKind::Approval, approval),
                    sample::stage("deploy", StageKind::Deploy, deploy),
                ],
            )
        };
        assert!(!run(StageStatus::Waiting, StageStatus::Pending).past_its_gate());
        assert!(run(StageStatus::Succeeded, StageStatus::Running).past_its_gate());
        assert!(run(StageStatus::Succeeded, StageStatus::Cancelled).past_its_gate());
    }
}
