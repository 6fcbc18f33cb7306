//! The deploy stage's `verify:` checks: each asks a `url` (http(s) with a host), the new
//! tasks of a service of the stage (`task`) or that service's target groups
//! (`target_group`, without `status` and `body_contains`): exactly one of them, with
//! durations and a status that make sense.

use super::{Checker, check_duration_of, key};
use crate::pipeline::model::{TaskTarget, VerifyCheck};
use crate::pipeline::verify;
use crate::pipeline::yaml::PathSegment;

/// The deploy stage's `verify:` checks: durations, and exactly one of a `url` (http(s) with a
/// host), a `task` (a service of the stage, a path starting with `/`) and a `target_group`
/// (a service of the stage).
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
        let kinds: Vec<&str> = [
            ("url", check.url.is_some()),
            ("task", check.task.is_some()),
            ("target_group", check.target_group.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        match kinds.as_slice() {
            [] => {
                let position = checker.position(&at);
                let diagnostic = checker.error(
                    position,
                    "a verify check needs `url`, `task` or `target_group`",
                );
                diagnostic.help = Some(
                    "add `url: https://${env.API_HOST}/up`, `task: {service: <a service of this stage>, port: 8080, path: /up}`, or `target_group: {service: <a service of this stage>}`"
                        .into(),
                );
            }
            [_] => {}
            [first, second, ..] => {
                let position = checker.key_position(&field(second));
                let diagnostic = checker.error(
                    position,
                    format!("a verify check has both `{first}` and `{second}`"),
                );
                diagnostic.label = Some("one check asks one kind of target".into());
                diagnostic.help = Some(format!(
                    "split it into two checks, one with `{first}`, one with `{second}`"
                ));
            }
        }
        if let Some(url) = &check.url
            && let Some(problem) = verify::url_problem(url)
        {
            let position = checker.position(&field("url"));
            let diagnostic = checker.error(position, format!("bad verify URL: {problem}"));
            diagnostic.label = Some("not an http(s) URL".into());
            diagnostic.help =
                Some("write a full URL, for example https://${env.API_HOST}/up".into());
        }
        if let Some(task) = &check.task
            && kinds.len() == 1
        {
            check_task_target(checker, task, services, &field("task"));
        }
        if let Some(target_group) = &check.target_group
            && kinds.len() == 1
        {
            check_service(
                checker,
                &target_group.service,
                services,
                &[field("target_group"), vec![key("service")]].concat(),
                "only the stage's own services get new tasks to register",
            );
            // The load balancer judges the targets by its own health check.
            let http_only = [
                (
                    "status",
                    check.status.is_some(),
                    "the status is the target group's health check matcher",
                ),
                (
                    "body_contains",
                    check.body_contains.is_some(),
                    "a load balancer's health check reads no body",
                ),
            ];
            for (name, written, why) in http_only {
                if written {
                    let position = checker.key_position(&field(name));
                    let diagnostic = checker.error(
                        position,
                        format!("`{name}` does not apply to a `target_group` check"),
                    );
                    diagnostic.label =
                        Some("the load balancer's own health check judges the targets".into());
                    diagnostic.help = Some(format!(
                        "remove `{name}` ({why}), or check the tasks over HTTP in a check of \
                         their own: `task: {{service, port, path}}` with `{name}`"
                    ));
                }
            }
        }
    }
}

/// A service a check names must be one the stage deploys (names built from variables are
/// compared when the plan renders them).
fn check_service(
    checker: &mut Checker,
    service: &str,
    services: &[String],
    at: &[PathSegment],
    label: &str,
) {
    let templated = service.contains("${") || services.iter().any(|s| s.contains("${"));
    if !templated && !services.iter().any(|s| s == service) {
        let position = checker.position(at);
        let diagnostic = checker.error(
            position,
            format!("`{service}` is not a service of this deploy stage"),
        );
        diagnostic.label = Some(label.into());
        diagnostic.help = Some(format!("use one of: {}", services.join(", ")));
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
    check_service(
        checker,
        &task.service,
        services,
        &field("service"),
        "only the stage's own services get new tasks",
    );
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
