//! The deploy stage's `verify:` checks: each asks a `url` (http(s) with a host), the new
//! tasks of a service of the stage (`task`), that service's target groups (`target_group`,
//! without `status` and `body_contains`) or watches a CloudWatch `alarm` (with a name and a
//! `for`, without `status`, `body_contains` and `timeout`): exactly one of them, with
//! durations and a status that make sense.

use super::{Checker, check_duration_of, key};
use crate::pipeline::model::{TaskTarget, VerifyCheck};
use crate::pipeline::verify;
use crate::pipeline::yaml::PathSegment;

/// The deploy stage's `verify:` checks: durations, and exactly one of a `url` (http(s) with a
/// host), a `task` (a service of the stage, a path starting with `/`), a `target_group` (a
/// service of the stage) and an `alarm` (a name).
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
            ("alarm", check.alarm.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        match kinds.as_slice() {
            [] => {
                let position = checker.position(&at);
                let diagnostic = checker.error(
                    position,
                    "a verify check needs `url`, `task`, `target_group` or `alarm`",
                );
                diagnostic.help = Some(
                    "add `url: https://${env.API_HOST}/up`, `task: {service: <a service of this stage>, port: 8080, path: /up}`, `target_group: {service: <a service of this stage>}`, or `alarm: {name: <a CloudWatch alarm>, for: 5m}`"
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
            let not_here = [
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
            refuse_http_keys(checker, &at, "target_group", &not_here);
        }
        if let Some(alarm) = &check.alarm
            && kinds.len() == 1
        {
            let alarm_at = field("alarm");
            check_duration_of(checker, alarm.watch_for.as_deref(), &alarm_at, "for");
            if alarm.name.trim().is_empty() {
                let position = checker.position(&[alarm_at, vec![key("name")]].concat());
                checker.error(position, "the alarm has no name").help =
                    Some("write the CloudWatch alarm's name, such as api-5xx".into());
            }
            let not_here = [
                (
                    "status",
                    check.status.is_some(),
                    "an alarm is judged by its state",
                ),
                (
                    "body_contains",
                    check.body_contains.is_some(),
                    "an alarm is judged by its state",
                ),
                (
                    "timeout",
                    check.timeout.is_some(),
                    "the alarm is watched for its `for`",
                ),
            ];
            refuse_http_keys(checker, &at, "alarm", &not_here);
        }
    }
}

/// An error for each key of `keys` written on a `kind` check, which does not read it: what it
/// is (`status`), whether it is written, and why it does not apply.
fn refuse_http_keys(
    checker: &mut Checker,
    at: &[PathSegment],
    kind: &str,
    keys: &[(&str, bool, &str)],
) {
    for (name, written, why) in keys {
        if !written {
            continue;
        }
        let position = checker.key_position(&[at.to_vec(), vec![key(name)]].concat());
        let article = if kind.starts_with('a') { "an" } else { "a" };
        let diagnostic = checker.error(
            position,
            format!("`{name}` does not apply to {article} `{kind}` check"),
        );
        diagnostic.label = Some(match kind {
            "alarm" => "the alarm's own state judges the release".into(),
            _ => "the load balancer's own health check judges the targets".into(),
        });
        diagnostic.help = Some(match *name {
            "timeout" => "remove `timeout` and write how long to watch as the alarm's `for`".into(),
            _ => format!(
                "remove `{name}` ({why}), or check the tasks over HTTP in a check of their \
                 own: `task: {{service, port, path}}` with `{name}`"
            ),
        });
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
