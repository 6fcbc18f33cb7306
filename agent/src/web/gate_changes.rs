//! The part of the run page that says what an open approval gate lets through: what the
//! stages after it change on ECS (per service: image digest before → after, every other task
//! definition field) and the checks the deploy runs after its rollouts. Both were recorded
//! in the gate's stage record when it opened (redacted and bounded there), so the page asks
//! no AWS service.

use std::fmt::Write;

use envelope_runner::run::StageRecord;

use super::pages::escape;

/// The gate's recorded diff and checks, as HTML; a note when it recorded no diff although
/// ECS stages follow (`ecs_stages_follow`).
pub(super) fn section(body: &mut String, gate: Option<&StageRecord>, ecs_stages_follow: bool) {
    let Some(outputs) = gate.map(|stage| &stage.outputs) else {
        return;
    };
    if outputs.changes.is_empty() {
        if ecs_stages_follow {
            body.push_str(
                "<p class=\"muted\" id=\"no-changes\">No task definition diff was recorded when \
                 this gate opened.</p>",
            );
        }
    } else {
        body.push_str("<h3>What changes on ECS</h3><pre id=\"changes\">");
        for line in &outputs.changes {
            body.push_str(&escape(line));
            body.push('\n');
        }
        body.push_str("</pre>");
    }
    if !outputs.planned_checks.is_empty() {
        body.push_str("<h3>Checks after the deploy</h3><ul id=\"checks\">");
        for check in &outputs.planned_checks {
            let _ = write!(body, "<li>{}</li>", escape(check));
        }
        body.push_str("</ul>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envelope_runner::run::{StageKind, StageOutputs, StageStatus};

    fn gate(changes: &[&str], checks: &[&str]) -> StageRecord {
        StageRecord {
            name: "approval".into(),
            kind: StageKind::Approval,
            status: StageStatus::Waiting,
            started_at: None,
            finished_at: None,
            outputs: StageOutputs {
                changes: changes.iter().map(|s| s.to_string()).collect(),
                planned_checks: checks.iter().map(|s| s.to_string()).collect(),
                ..StageOutputs::default()
            },
            error: None,
        }
    }

    #[test]
    fn the_recorded_diff_and_checks_are_shown_escaped() {
        let mut body = String::new();
        section(
            &mut body,
            Some(&gate(
                &[
                    "deploy `deploy`, service api (api:3):",
                    "  cpu: 256 → <512>",
                ],
                &["after `deploy`: GET https://api.example/up must answer 200"],
            )),
            true,
        );
        assert!(body.contains("<pre id=\"changes\">deploy `deploy`, service api (api:3):\n  cpu: 256 → &lt;512&gt;\n</pre>"), "{body}");
        assert!(
            body.contains("<li>after `deploy`: GET https://api.example/up must answer 200</li>"),
            "{body}"
        );
        let mut none = String::new();
        section(&mut none, Some(&gate(&[], &[])), true);
        assert!(
            none.contains("No task definition diff was recorded"),
            "{none}"
        );
        let mut nothing_follows = String::new();
        section(&mut nothing_follows, Some(&gate(&[], &[])), false);
        assert!(nothing_follows.is_empty());
    }
}
