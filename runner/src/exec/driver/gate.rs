//! Which approval gate of a run a decision is for, and whether it may be decided now: the one
//! rule the CLI's `approve`/`reject` and the agent's web UI both apply.

use std::fmt;

use crate::run::{RunRecord, RunStatus, StageKind, StageRecord, StageStatus};

/// Why no gate of a run can take a decision now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateRefusal {
    /// The run has no approval stage (of that name).
    NoGate { run: String, stage: Option<String> },
    /// The gate is not waiting: not reached yet, already passed, or the run ended.
    NotWaiting {
        run: String,
        gate: String,
        why: String,
    },
}

impl fmt::Display for GateRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GateRefusal::NoGate { run, stage } => write!(
                f,
                "run {run} has no approval stage{}",
                stage
                    .as_ref()
                    .map(|s| format!(" named `{s}`"))
                    .unwrap_or_default()
            ),
            GateRefusal::NotWaiting { run, gate, why } => write!(
                f,
                "the approval `{gate}` of run {run} is not waiting for a decision ({why}); \
                 `envelope-runner status {run}` shows where the run is"
            ),
        }
    }
}

/// The gate of `record` a decision is for: the approval stage named `stage`; without a name,
/// the run's only gate, else the one waiting. Only a gate the run is waiting at can be
/// decided: not one it has not reached (an approval given in advance would let a later,
/// different build through), not one already passed, and not one of a run that ended. A run
/// cancelled while it waited at the gate still waits there: `resume` takes it back to it.
pub fn gate_to_decide<'a>(
    record: &'a RunRecord,
    stage: Option<&str>,
) -> Result<&'a StageRecord, GateRefusal> {
    let gates: Vec<&StageRecord> = record
        .stages
        .iter()
        .filter(|s| s.kind == StageKind::Approval)
        .collect();
    let gate = match (stage, gates.as_slice()) {
        (Some(name), _) => gates.iter().find(|s| s.name == name).copied(),
        (None, [only]) => Some(*only),
        (None, _) => gates
            .iter()
            .find(|s| s.status == StageStatus::Waiting)
            .copied(),
    };
    let Some(gate) = gate else {
        return Err(GateRefusal::NoGate {
            run: record.id.0.clone(),
            stage: stage.map(str::to_owned),
        });
    };
    let waiting = matches!(
        (gate.status, record.status),
        (
            StageStatus::Waiting,
            RunStatus::Waiting | RunStatus::Running
        ) | (StageStatus::Cancelled, RunStatus::Cancelled)
    );
    if waiting {
        return Ok(gate);
    }
    let why = match gate.status {
        StageStatus::Pending => "the run has not reached it yet".to_owned(),
        StageStatus::Waiting => format!("the run is {}", record.status.as_str()),
        other => format!("it is already {}", other.as_str()),
    };
    Err(GateRefusal::NotWaiting {
        run: record.id.0.clone(),
        gate: gate.name.clone(),
        why,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::sample;

    fn run(status: RunStatus, gates: &[(&str, StageStatus)]) -> RunRecord {
        let mut stages = vec![sample::stage(
            "build",
            StageKind::Build,
            StageStatus::Succeeded,
        )];
        stages.extend(
            gates
                .iter()
                .map(|(name, status)| sample::stage(name, StageKind::Approval, *status)),
        );
        sample::run(status, stages)
    }

    #[test]
    fn the_waiting_gate_is_found_by_name_or_alone() {
        let one = run(RunStatus::Waiting, &[("approval", StageStatus::Waiting)]);
        assert_eq!(gate_to_decide(&one, None).unwrap().name, "approval");
        let two = run(
            RunStatus::Waiting,
            &[
                ("qa", StageStatus::Succeeded),
                ("prod", StageStatus::Waiting),
            ],
        );
        assert_eq!(gate_to_decide(&two, None).unwrap().name, "prod");
        assert_eq!(gate_to_decide(&two, Some("prod")).unwrap().name, "prod");
        let cancelled = run(
            RunStatus::Cancelled,
            &[("approval", StageStatus::Cancelled)],
        );
        assert_eq!(gate_to_decide(&cancelled, None).unwrap().name, "approval");
    }

    #[test]
    fn a_gate_not_waiting_or_not_there_is_refused_with_the_reason() {
        let early = run(RunStatus::Running, &[("approval", StageStatus::Pending)]);
        assert_eq!(
            gate_to_decide(&early, None).unwrap_err().to_string(),
            "the approval `approval` of run 01jd0000000000000000000000 is not waiting for a decision (the run has \
             not reached it yet); `envelope-runner status 01jd0000000000000000000000` shows where the run is"
        );
        let passed = run(
            RunStatus::Waiting,
            &[
                ("qa", StageStatus::Succeeded),
                ("prod", StageStatus::Waiting),
            ],
        );
        assert!(
            gate_to_decide(&passed, Some("qa"))
                .unwrap_err()
                .to_string()
                .contains("(it is already succeeded)")
        );
        let failed = run(RunStatus::Failed, &[("approval", StageStatus::Waiting)]);
        assert!(
            gate_to_decide(&failed, None)
                .unwrap_err()
                .to_string()
                .contains("(the run is failed)")
        );
        assert_eq!(
            gate_to_decide(&passed, Some("staging"))
                .unwrap_err()
                .to_string(),
            "run 01jd0000000000000000000000 has no approval stage named `staging`"
        );
        let none = run(RunStatus::Running, &[]);
        assert_eq!(
            gate_to_decide(&none, None).unwrap_err().to_string(),
            "run 01jd0000000000000000000000 has no approval stage"
        );
    }
}
