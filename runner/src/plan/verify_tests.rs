//! Tests of the deploy stage's `verify:` checks in plans: both kinds of target, their
//! defaults, and a task check whose service, once rendered, is not one of the stage's.

use crate::pipeline;
use crate::plan::{CheckTarget, PlanContext, PlanError, Step, TaskCheckStep, plan};

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
