//! A deploy stage's `verify:` check in the plan: its URL, task, target group or alarm target
//! rendered and checked against the stage's services, and its defaults filled in (an
//! alarm's `for` is the check's timeout).

use super::resolve::timeout_of;
use super::{
    AlarmCheckStep, CheckTarget, PlanError, TargetGroupCheckStep, TaskCheckStep, VerifyStep,
};
use crate::pipeline::model::VerifyCheck;
use crate::pipeline::{duration, verify};

/// A `verify:` check with its URL (or task, target group or alarm target) rendered and
/// checked, and its defaults filled in.
pub(super) fn verify_step(
    check: &VerifyCheck,
    stage: &str,
    services: &[String],
    render: &dyn Fn(&str) -> Result<String, PlanError>,
) -> Result<VerifyStep, PlanError> {
    let bad = |problem: String| PlanError::BadVerifyCheck {
        stage: stage.to_owned(),
        problem,
    };
    let stage_service = |written: &str| -> Result<String, PlanError> {
        let service = render(written)?;
        if !services.contains(&service) {
            return Err(bad(format!(
                "`{service}` is not a service of the stage (it deploys {})",
                services.join(", ")
            )));
        }
        Ok(service)
    };
    let target = match (&check.url, &check.task, &check.target_group) {
        (None, None, None) if check.alarm.is_some() => {
            let name = check
                .alarm
                .as_ref()
                .map_or(Ok(String::new()), |a| render(&a.name))?;
            if name.trim().is_empty() {
                return Err(bad("the alarm's name is empty".into()));
            }
            CheckTarget::Alarm(AlarmCheckStep { name })
        }
        (Some(url), _, _) => {
            let url = render(url)?;
            verify::check_url(&url).map_err(bad)?;
            CheckTarget::Url(url)
        }
        (None, Some(task), _) => {
            let service = stage_service(&task.service)?;
            let path = match &task.path {
                Some(path) => render(path)?,
                None => verify::DEFAULT_TASK_PATH.to_owned(),
            };
            if let Some(problem) = verify::task_path_problem(&path) {
                return Err(bad(problem));
            }
            CheckTarget::Task(TaskCheckStep {
                service,
                port: task.port,
                path,
            })
        }
        (None, None, Some(target_group)) => CheckTarget::TargetGroup(TargetGroupCheckStep {
            service: stage_service(&target_group.service)?,
        }),
        // Validation requires one of the four.
        (None, None, None) => {
            return Err(bad(
                "the check has none of `url`, `task`, `target_group` and `alarm`".into(),
            ));
        }
    };
    // A target group's own health check judges its targets, an alarm's state the release:
    // no HTTP answer is wanted.
    let http = matches!(target, CheckTarget::Url(_) | CheckTarget::Task(_));
    let timeout = match &check.alarm {
        Some(alarm) => timeout_of(alarm.watch_for.as_deref(), verify::DEFAULT_ALARM_WATCH),
        None => timeout_of(check.timeout.as_deref(), verify::DEFAULT_TIMEOUT),
    };
    let interval = timeout_of(check.interval.as_deref(), verify::DEFAULT_INTERVAL);
    Ok(VerifyStep {
        target,
        status: http.then(|| check.status.unwrap_or(verify::DEFAULT_STATUS)),
        body_contains: match http {
            true => check.body_contains.as_deref().map(render).transpose()?,
            false => None,
        },
        timeout: duration::format(timeout),
        timeout_seconds: timeout.as_secs(),
        interval_seconds: interval.as_secs().max(1),
    })
}
