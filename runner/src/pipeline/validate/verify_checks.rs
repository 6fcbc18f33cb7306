//! The deploy stage's `verify:` checks: each asks a `url` (http(s) with a host) or the new
//! tasks of a service of the stage (`task`), never both, with durations and a status that
//! make sense.

use super::{Checker, check_duration_of, key};
use crate::pipeline::model::{TaskTarget, VerifyCheck};
use crate::pipeline::verify;
use crate::pipeline::yaml::PathSegment;

/// The deploy stage's `verify:` checks: durations, a `url` (http(s) with a host) or a `task`
/// (a service of the stage, a path starting with `/`), never both.
pub(super) fn check_verify(
    checker: &mut Checker,
    checks: &[VerifyCheck],
    services: &[String],
    stage: &[PathSegment],
) {
    for (index, check) in checks.iter().enumerate() {
        let at = [
            stage.to_vec(),
            vec![key("verify"), PathSegment::Index(index)],
        ]
        .concat();
        let field = |name: &str| [at.clone(), vec![key(name)]].concat();
        check_duration_of(checker, check.timeout.as_deref(), &at, "timeout");
        check_duration_of(checker, check.interval.as_deref(), &at, "interval");
        if let Some(status) = check.status
            && !(100..=599).contains(&status)
        {
            let position = checker.position(&field("status"));
            checker
                .error(position, format!("`{status}` is not an HTTP status"))
                .help = Some("write the status the page must answer with, such as 200".into());
        }
        match (&check.url, &check.task) {
            (Some(_), Some(_)) => {
                let position = checker.key_position(&field("task"));
                let diagnostic =
                    checker.error(position, "a verify check has both `url` and `task`");
                diagnostic.label = Some("one check asks one kind of target".into());
                diagnostic.help =
                    Some("split it into two checks, one with `url`, one with `task`".into());
            }
            (None, None) => {
                let position = checker.position(&at);
                let diagnostic = checker.error(position, "a verify check needs `url` or `task`");
                diagnostic.help = Some(
                    "add `url: https://${env.API_HOST}/up`, or `task: {service: <a service of this stage>, port: 8080, path: /up}`"
                        .into(),
                );
            }
            (Some(url), None) => {
                if let Some(problem) = verify::url_problem(url) {
                    let position = checker.position(&field("url"));
                    let diagnostic = checker.error(position, format!("bad verify URL: {problem}"));
                    diagnostic.label = Some("not an http(s) URL".into());
                    diagnostic.help =
                        Some("write a full URL, for example https://${env.API_HOST}/up".into());
                }
            }
            (None, Some(task)) => check_task_target(checker, task, services, &field("task")),
        }
    }
}

/// A `task:` target: a service the stage deploys, a port, a path starting with `/`.
fn check_task_target(
    checker: &mut Checker,
    task: &TaskTarget,
    services: &[String],
    at: &[PathSegment],
) {
    let field = |name: &str| [at.to_vec(), vec![key(name)]].concat();
    // Names built from variables are compared when the plan renders them.
    let templated = task.service.contains("${") || services.iter().any(|s| s.contains("${"));
    if !templated && !services.contains(&task.service) {
        let position = checker.position(&field("service"));
        let diagnostic = checker.error(
            position,
            format!("`{}` is not a service of this deploy stage", task.service),
        );
        diagnostic.label = Some("only the stage's own services get new tasks".into());
        diagnostic.help = Some(format!("use one of: {}", services.join(", ")));
    }
    if task.port == 0 {
        let position = checker.position(&field("port"));
        checker.error(position, "port 0 is not a port").help =
            Some("write the container port the task listens on, such as 8080".into());
    }
    if let Some(path) = &task.path
        && let Some(problem) = verify::task_path_problem(path)
    {
        let position = checker.position(&field("path"));
        let diagnostic = checker.error(position, format!("bad task check path: {problem}"));
        diagnostic.help = Some("write an absolute path, for example /up".into());
    }
}
