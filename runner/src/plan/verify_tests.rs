//! Tests of the deploy stage's `verify:` checks in plans: the four kinds of target, their
//! defaults, and a task or target group check whose service, once rendered, is not one of
//! the stage's.

use crate::pipeline;
use crate::plan::{
    AlarmCheckStep, CheckTarget, PlanContext, PlanError, Step, TargetGroupCheckStep, TaskCheckStep,
    plan,
};

fn compiled(verify: &str) -> pipeline::CompiledPipeline {
    pipeline::compile_text(format!(
        "source:\n  repository: acme/app\n  tags: [\"v*\"]\nenv: [WEB]\naws:\n  region: eu-west-2\n\
         stages:\n  - build:\n      image: app\n  - deploy:\n      cluster: prod\n      \
         services: [web, worker]\n      verify:\n{verify}"
    ))
}

fn context(web: &str) -> PlanContext {
    PlanContext {
        git_ref: "v1.2.3".into(),
        env: [("WEB".to_owned(), web.to_owned())].into(),
        ..PlanContext::default()
    }
}

#[test]
fn a_task_check_names_a_service_port_and_path_and_shows_as_such() {
    let compiled = compiled(
        "        - task: {service: web, port: 8080}\n          body_contains: Application up\n\
         \x20       - url: https://api.example/up\n",
    );
    let plan = plan(&compiled, &context("web")).unwrap();
    let Some(Step::Deploy(deploy)) = plan.steps.last() else {
        panic!("the plan ends with its deploy")
    };
    assert_eq!(
        deploy.verify[0].target,
        CheckTarget::Task(TaskCheckStep {
            service: "web".into(),
            port: 8080,
            path: "/".into(),
        })
    );
    assert_eq!(
        deploy.verify[0].target_text(),
        "/ on port 8080 of every new task of web"
    );
    assert_eq!(
        deploy.verify[1].target,
        CheckTarget::Url("https://api.example/up".into())
    );
    let json = serde_json::to_value(&deploy.verify).unwrap();
    assert_eq!(
        json[0]["task"],
        serde_json::json!({"service": "web", "port": 8080, "path": "/"})
    );
    assert_eq!(json[1]["url"], "https://api.example/up");
}

#[test]
fn a_task_check_of_a_service_the_stage_does_not_deploy_cannot_be_planned() {
    let compiled = compiled("        - task: {service: \"${env.WEB}\", port: 8080, path: /up}\n");
    assert!(plan(&compiled, &context("web")).is_ok());
    let error = plan(&compiled, &context("billing")).unwrap_err();
    assert!(matches!(error, PlanError::BadVerifyCheck { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("`billing` is not a service of the stage (it deploys web, worker)"),
        "{error}"
    );
}

#[test]
fn a_target_group_check_names_a_service_and_wants_no_http_answer() {
    let compiled = compiled(
        "        - target_group: {service: \"${env.WEB}\"}\n          timeout: 3m\n          \
         interval: 2s\n",
    );
    let plan = plan(&compiled, &context("web")).unwrap();
    let Some(Step::Deploy(deploy)) = plan.steps.last() else {
        panic!("the plan ends with its deploy")
    };
    let check = &deploy.verify[0];
    assert_eq!(
        check.target,
        CheckTarget::TargetGroup(TargetGroupCheckStep {
            service: "web".into()
        })
    );
    assert_eq!(check.status, None, "the load balancer judges the targets");
    assert_eq!((check.timeout_seconds, check.interval_seconds), (180, 2));
    assert_eq!(
        check.wanted_text(),
        "every new task of web must be healthy in the target groups of its load balancers"
    );
    let json = serde_json::to_value(check).unwrap();
    assert_eq!(json["target_group"], serde_json::json!({"service": "web"}));
    assert!(json.get("status").is_none(), "{json}");
    assert!(
        plan.render_text()
            .contains("verify    every new task of web healthy in its target groups within 3m"),
        "{}",
        plan.render_text()
    );
    let error = plan_error(&compiled, "billing");
    assert!(
        error.contains("`billing` is not a service of the stage (it deploys web, worker)"),
        "{error}"
    );
}

fn plan_error(compiled: &pipeline::CompiledPipeline, web: &str) -> String {
    let error = plan(compiled, &context(web)).unwrap_err();
    assert!(matches!(error, PlanError::BadVerifyCheck { .. }), "{error}");
    error.to_string()
}

#[test]
fn an_alarm_check_is_watched_for_its_for_and_wants_no_http_answer() {
    let compiled = compiled(
        "        - alarm: {name: api-5xx, for: 10m}\n          interval: 15s\n\
         \x20       - alarm: {name: \"${env.WEB}-5xx\"}\n",
    );
    let plan = plan(&compiled, &context("web")).unwrap();
    let Some(Step::Deploy(deploy)) = plan.steps.last() else {
        panic!("the plan ends with its deploy")
    };
    let (watched, defaulted) = (&deploy.verify[0], &deploy.verify[1]);
    assert_eq!(
        watched.target,
        CheckTarget::Alarm(AlarmCheckStep {
            name: "api-5xx".into()
        })
    );
    assert_eq!(watched.status, None);
    assert_eq!(
        (watched.timeout_seconds, watched.interval_seconds),
        (600, 15)
    );
    assert_eq!(
        watched.wanted_text(),
        "alarm api-5xx must not be in ALARM at any look for 10m"
    );
    assert_eq!(watched.schedule_text(), "looked at every 15s");
    assert_eq!(defaulted.target_text(), "alarm web-5xx");
    assert_eq!(defaulted.timeout, "5m", "the default `for`");
    let json = serde_json::to_value(watched).unwrap();
    assert_eq!(json["alarm"], serde_json::json!({"name": "api-5xx"}));
    assert!(
        plan.render_text()
            .contains("verify    alarm api-5xx never in ALARM for 10m"),
        "{}",
        plan.render_text()
    );
}
