//! The shipped pipelines and buildspecs validate, plan, and match the published schema.

use envelope_runner::pipeline;
use envelope_runner::plan::{self, CheckTarget, PlanContext, Step};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn shipped_pipelines() -> Vec<std::path::PathBuf> {
    let files = pipeline::list_pipelines(&crate::workspace_root());
    assert!(
        files.len() >= 3,
        "expected api, tenant and hq pipelines, found {files:?}"
    );
    files
}

#[test]
fn every_shipped_pipeline_validates_and_plans() {
    for path in shipped_pipelines() {
        let compiled = pipeline::load(&path)
            .unwrap_or_else(|d| panic!("{}:\n{}", path.display(), d.render(false)));
        let context = PlanContext {
            git_ref: "v1.2.3".into(),
            sha: Some(SHA.into()),
            // What `plan` gives them with no `API_HOST` & co. exported: envelope.yaml's.
            env: compiled.env_defaults.clone(),
            ..PlanContext::default()
        };
        let plan =
            plan::plan(&compiled, &context).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(matches!(plan.steps[0], Step::Source(_)));
        assert!(
            plan.steps.iter().any(|s| matches!(s, Step::Deploy(_))),
            "{} deploys",
            path.display()
        );
    }
}

#[test]
fn every_shipped_buildspec_is_used_and_valid() {
    let root = crate::workspace_root();
    let mut used = std::collections::BTreeSet::new();
    for path in shipped_pipelines() {
        let compiled = pipeline::load(&path).unwrap();
        used.extend(compiled.buildspecs.keys().cloned());
    }
    for entry in std::fs::read_dir(root.join("buildspecs"))
        .unwrap()
        .flatten()
    {
        let relative = format!("buildspecs/{}", entry.file_name().to_string_lossy());
        let source = pipeline::diagnostic::SourceFile::new(
            &relative,
            std::fs::read_to_string(entry.path()).unwrap(),
        );
        envelope_runner::buildspec::compile(&source)
            .unwrap_or_else(|d| panic!("{}", d.render(false)));
        assert!(
            used.contains(&relative),
            "{relative} is not used by any pipeline"
        );
    }
}

#[test]
fn api_plan_names_every_image_tag_task_and_service() {
    let mut compiled = pipeline::load(&crate::workspace_root().join("pipelines/api.yaml")).unwrap();
    // Snapshots name the file as the repository does, not where this checkout lives.
    compiled.file.path = "pipelines/api.yaml".into();
    let context = PlanContext {
        git_ref: "v1.2.3".into(),
        sha: Some(SHA.into()),
        env: compiled.env_defaults.clone(),
        run_id: Some("01jzexampleexampleexample0".into()),
        created: Some("2026-11-26T09:00:00Z".into()),
        account: Some("123456789012".into()),
        ..PlanContext::default()
    };
    let plan = plan::plan(&compiled, &context).unwrap();
    let json = serde_json::to_value(&plan).unwrap();
    let text = json.to_string();
    for expected in [
        "123456789012.dkr.ecr.eu-west-2.amazonaws.com/envelope-api",
        "v1.2.3",
        "0123456",
        "envelope-prod-api",
        "envelope-prod-worker",
        "envelope-prod-scheduler",
        "envelope-prod-reverb",
        "envelope-prod-cluster",
        "migrate",
        "--force",
        "arn:aws:sns:eu-west-2:123456789012:envelope-deploy-approval",
    ] {
        assert!(text.contains(expected), "plan lacks {expected}");
    }
    insta::assert_json_snapshot!("api_plan", json);
    insta::assert_snapshot!("api_plan_text", plan.render_text());
}

#[test]
fn the_token_line_appears_only_for_remotes_fetched_over_https() {
    let mut compiled = pipeline::load(&crate::workspace_root().join("pipelines/api.yaml")).unwrap();
    let context = PlanContext {
        git_ref: "v1.2.3".into(),
        sha: Some(SHA.into()),
        env: compiled.env_defaults.clone(),
        ..PlanContext::default()
    };
    let text = plan::plan(&compiled, &context).unwrap().render_text();
    assert!(text.contains("token     $GITHUB_TOKEN"), "{text}");

    compiled.pipeline.source.repository = "file:///srv/git/api.git".into();
    let text = plan::plan(&compiled, &context).unwrap().render_text();
    assert!(
        text.contains("clone     file:///srv/git/api.git at v1.2.3"),
        "{text}"
    );
    assert!(!text.contains("token"), "{text}");
}

#[test]
fn a_branch_run_of_the_api_builds_and_pushes_only() {
    let compiled = pipeline::load(&crate::workspace_root().join("pipelines/api.yaml")).unwrap();
    let context = PlanContext {
        git_ref: "main".into(),
        sha: Some(SHA.into()),
        env: compiled.env_defaults.clone(),
        ..PlanContext::default()
    };
    let plan = plan::plan(&compiled, &context).unwrap();
    let kinds: Vec<&str> = plan.steps.iter().map(|step| step.kind().as_str()).collect();
    assert_eq!(kinds, ["source", "build", "push"]);
    assert_eq!(plan.left_out, ["approval", "migrate", "deploy"]);
    let Step::Build(build) = &plan.steps[1] else {
        panic!("the second step builds")
    };
    // The release's own tag is left out; the version is the short sha.
    assert_eq!(build.tags, ["0123456", "latest"]);
    assert_eq!(build.build_args["APP_VERSION"], "0123456");
    assert!(
        plan.render_text()
            .contains("left out  approval, migrate, deploy")
    );

    // A release of the same pipeline keeps every stage.
    let release = PlanContext {
        git_ref: "v1.2.3".into(),
        ..context
    };
    let plan = plan::plan(&compiled, &release).unwrap();
    assert!(plan.left_out.is_empty());
    assert_eq!(plan.steps.len(), 6);
}

#[test]
fn the_shipped_deploys_verify_what_the_guides_checklist_checks() {
    // (pipeline, the check's URL with envelope.yaml's hosts, its expected body text, the
    // services behind the public load balancer whose target groups are checked)
    let cases = [
        (
            "api",
            "https://api.envelope.host/up",
            Some("Application up"),
            &["envelope-prod-api", "envelope-prod-reverb"][..],
        ),
        (
            "hq",
            "https://admin.envelope.host/",
            None,
            &["envelope-prod-hq"][..],
        ),
        (
            "tenant",
            "https://demo.envelope.host/",
            None,
            &["envelope-prod-tenant"][..],
        ),
    ];
    for (name, url, body, behind_the_balancer) in cases {
        let path = crate::workspace_root().join(format!("pipelines/{name}.yaml"));
        let compiled = pipeline::load(&path).unwrap();
        let context = PlanContext {
            git_ref: "v1.2.3".into(),
            sha: Some(SHA.into()),
            env: compiled.env_defaults.clone(),
            ..PlanContext::default()
        };
        let plan = plan::plan(&compiled, &context).unwrap();
        let Some(Step::Deploy(deploy)) = plan.steps.last() else {
            panic!("{name} ends with its deploy")
        };
        let verify = &deploy.verify;
        assert_eq!(verify.len(), 1 + behind_the_balancer.len(), "{name}");
        assert_eq!(verify[0].target, CheckTarget::Url(url.to_owned()), "{name}");
        assert_eq!(verify[0].status, Some(200), "{name}");
        assert_eq!(verify[0].body_contains.as_deref(), body, "{name}");
        let groups: Vec<&str> = verify[1..]
            .iter()
            .map(|check| match &check.target {
                CheckTarget::TargetGroup(group) => group.service.as_str(),
                other => panic!("{name}: {other:?}"),
            })
            .collect();
        assert_eq!(groups, behind_the_balancer, "{name}");
    }
}

#[test]
fn schema_accepts_every_shipped_pipeline() {
    let schema = pipeline::schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema is valid JSON Schema");
    for path in shipped_pipelines() {
        let text = std::fs::read_to_string(&path).unwrap();
        let tree = pipeline::yaml::parse(&text).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&tree.to_json())
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
    }
    // The same schema rejects what the structural check rejects.
    let bad = pipeline::yaml::parse("source: {repository: a/b}\nstages:\n  - build: {imgae: x}\n")
        .unwrap();
    assert!(!validator.is_valid(&bad.to_json()));
}

#[test]
fn buildspec_schema_accepts_shipped_buildspecs() {
    let schema = envelope_runner::buildspec::schema();
    let validator = jsonschema::validator_for(&schema).expect("valid JSON Schema");
    for entry in std::fs::read_dir(crate::workspace_root().join("buildspecs"))
        .unwrap()
        .flatten()
    {
        let tree = pipeline::yaml::parse(&std::fs::read_to_string(entry.path()).unwrap()).unwrap();
        assert!(
            validator.is_valid(&tree.to_json()),
            "{}",
            entry.path().display()
        );
    }
}

#[test]
fn schema_wants_a_verify_check_to_ask_one_url_the_new_tasks_a_target_group_or_an_alarm() {
    let schema = pipeline::schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema is valid JSON Schema");
    let with = |check: &str| {
        let text = format!(
            "source: {{repository: a/b}}\nstages:\n  - build: {{image: app}}\n  - deploy:\n      \
             cluster: prod\n      services: [web]\n      verify:\n        - {check}\n"
        );
        validator.is_valid(&pipeline::yaml::parse(&text).unwrap().to_json())
    };
    assert!(with("{url: \"https://api.example/up\"}"));
    assert!(with(
        "{task: {service: web, port: 8080, path: /up}, body_contains: up}"
    ));
    assert!(!with("{body_contains: up}"), "neither");
    assert!(
        !with("{url: \"https://api.example/up\", task: {service: web, port: 8080}}"),
        "both"
    );
    assert!(!with("{task: {service: web, port: 70000}}"), "not a port");
    assert!(with("{target_group: {service: web}, timeout: 3m}"));
    assert!(
        !with("{target_group: {service: web}, task: {service: web, port: 8080}}"),
        "both"
    );
    assert!(
        !with("{target_group: {service: web}, url: \"https://api.example/up\"}"),
        "both"
    );
    assert!(!with("{target_group: {}}"), "no service");
    assert!(with("{alarm: {name: api-5xx, for: 5m}, interval: 10s}"));
    assert!(with("{alarm: {name: api-5xx}}"));
    assert!(
        !with("{alarm: {name: api-5xx}, target_group: {service: web}}"),
        "both"
    );
    assert!(!with("{alarm: {for: 5m}}"), "no name");
}
