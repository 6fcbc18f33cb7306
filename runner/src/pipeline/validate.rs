//! Semantic checks on a structurally valid pipeline: names, order, durations, image names,
//! variables and their availability. Pure: it sees the typed pipeline and the located tree.

use crate::pipeline::diagnostic::{Diagnostic, Diagnostics, SourceFile};
use crate::pipeline::model::{Aws, Pipeline, Stage};
use crate::pipeline::template::{self, Availability, Lookup};
use crate::pipeline::yaml::{Node, PathSegment, Position, Value};
use crate::pipeline::{duration, names, paths};
use std::collections::BTreeMap;

mod environments;
mod notify;
mod verify_checks;

/// Everything the checks need to point at places in the file.
struct Checker<'a> {
    tree: &'a Node,
    source: &'a SourceFile,
    diagnostics: Diagnostics,
}

impl Checker<'_> {
    fn position(&self, path: &[PathSegment]) -> Position {
        self.tree
            .at_path(path)
            .map(|node| node.position)
            .unwrap_or(self.tree.position)
    }

    fn key_position(&self, path: &[PathSegment]) -> Position {
        self.tree
            .key_at_path(path)
            .map(|key| key.position)
            .unwrap_or_else(|| self.position(path))
    }

    fn error(&mut self, position: Position, message: impl Into<String>) -> &mut Diagnostic {
        self.diagnostics
            .push(Diagnostic::error(self.source, position, message));
        self.diagnostics.0.last_mut().expect("just pushed")
    }
}

fn key(name: &str) -> PathSegment {
    PathSegment::Key(name.to_owned())
}

fn stage_path(index: usize, kind: &str) -> Vec<PathSegment> {
    vec![key("stages"), PathSegment::Index(index), key(kind)]
}

/// Run every semantic check; returns all problems found.
pub fn check(pipeline: &Pipeline, name: &str, tree: &Node, source: &SourceFile) -> Diagnostics {
    let mut checker = Checker {
        tree,
        source,
        diagnostics: Diagnostics::default(),
    };
    check_name(&mut checker, pipeline, name);
    check_source(&mut checker, pipeline);
    check_aws(&mut checker, pipeline);
    check_stages(&mut checker, pipeline);
    environments::check(&mut checker, pipeline);
    if let Some(run_notify) = &pipeline.notify {
        notify::check_run(&mut checker, run_notify);
    }
    check_variables(&mut checker, pipeline);
    checker.diagnostics
}

fn check_name(checker: &mut Checker, pipeline: &Pipeline, name: &str) {
    if !names::is_pipeline_name(name) {
        let position = if pipeline.name.is_some() {
            checker.position(&[key("name")])
        } else {
            Position { line: 1, column: 1 }
        };
        checker
            .error(position, format!("`{name}` is not a valid pipeline name"))
            .help = Some("use lowercase letters, digits and `-`, starting with a letter".into());
    }
    for (index, variable) in pipeline.env.iter().enumerate() {
        if !names::is_env_name(variable) {
            let position = checker.position(&[key("env"), PathSegment::Index(index)]);
            checker
                .error(
                    position,
                    format!("`{variable}` is not an environment variable name"),
                )
                .help = Some("use letters, digits and `_`, not starting with a digit".into());
        } else if names::looks_secret(variable) && !pipeline.env_not_secret.contains(variable) {
            let position = checker.position(&[key("env"), PathSegment::Index(index)]);
            checker
                .error(
                    position,
                    format!(
                        "`{variable}` looks like a secret: declared `env:` values are kept in the run's record and shown in plans"
                    ),
                )
                .help = Some(format!(
                "pass secrets as a build's `secrets:` or a buildspec's `secrets-manager:`; if `{variable}` is not a secret, also list it under `env_not_secret:`"
            ));
        }
    }
    for (index, variable) in pipeline.env_not_secret.iter().enumerate() {
        if !pipeline.env.contains(variable) {
            let position = checker.position(&[key("env_not_secret"), PathSegment::Index(index)]);
            checker
                .error(position, format!("`{variable}` is not declared in `env:`"))
                .help = Some("list only names that `env:` declares".into());
        }
    }
}

fn check_source(checker: &mut Checker, pipeline: &Pipeline) {
    let repository = &pipeline.source.repository;
    if let Err(problem) = names::check_repository(repository) {
        let position = checker.position(&[key("source"), key("repository")]);
        checker.error(position, problem).help = Some(
            "write GitHub `owner/repo`, or a git URL such as https://host/org/repo.git or file:///path"
                .into(),
        );
    }
    for (index, pattern) in pipeline.source.tags.iter().enumerate() {
        if let Err(error) = globset::Glob::new(pattern) {
            let position =
                checker.position(&[key("source"), key("tags"), PathSegment::Index(index)]);
            checker
                .error(
                    position,
                    format!(
                        "tag pattern `{pattern}` is not a valid glob: {}",
                        error.kind()
                    ),
                )
                .help = Some("use `*` and `?` wildcards, for example `v*`".into());
        }
    }
    if let Some(variable) = &pipeline.source.token_env
        && !names::is_env_name(variable)
    {
        let position = checker.position(&[key("source"), key("token_env")]);
        checker.error(
            position,
            format!("`{variable}` is not an environment variable name"),
        );
    }
}

fn check_aws(checker: &mut Checker, pipeline: &Pipeline) {
    if let Some(aws) = &pipeline.aws {
        check_aws_at(checker, aws, &[key("aws")]);
    }
}

/// An `aws:` mapping at `at`: the pipeline's, or an environment's.
fn check_aws_at(checker: &mut Checker, aws: &Aws, at: &[PathSegment]) {
    if let Some(account) = &aws.account
        && !(account.len() == 12 && account.chars().all(|c| c.is_ascii_digit()))
    {
        let position = checker.position(&[at, &[key("account")]].concat());
        checker
            .error(position, format!("`{account}` is not an AWS account id"))
            .help = Some("an account id is 12 digits, in quotes: account: \"123456789012\"".into());
    }
    if let Some(region) = &aws.region
        && !names::is_region(region)
    {
        let position = checker.position(&[at, &[key("region")]].concat());
        checker
            .error(position, format!("`{region}` is not an AWS region"))
            .help = Some("regions look like `eu-west-2` or `us-east-1`".into());
    }
}

fn check_stages(checker: &mut Checker, pipeline: &Pipeline) {
    if pipeline.stages.is_empty() {
        let position = checker.position(&[key("stages")]);
        checker.error(position, "the pipeline has no stages").help =
            Some("add at least a `- build:` stage".into());
        return;
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let mut build_seen = false;
    for (index, stage) in pipeline.stages.iter().enumerate() {
        let kind = stage.kind().as_str();
        let path = stage_path(index, kind);
        let name = stage.name();
        if let Some(first) = seen.insert(name, index) {
            let position = checker.key_position(&path);
            let first_line = checker
                .key_position(&stage_path(first, pipeline.stages[first].kind().as_str()))
                .line;
            let diagnostic = checker.error(position, format!("duplicate stage `{name}`"));
            diagnostic.label = Some(format!(
                "a stage named `{name}` is already on line {first_line}"
            ));
            diagnostic.help = Some("stage names must be unique: give one of them a `name:`".into());
        } else if !names::is_stage_name(name) {
            let position = checker.position(&[path.clone(), vec![key("name")]].concat());
            checker
                .error(position, format!("`{name}` is not a valid stage name"))
                .help = Some("use lowercase letters, digits and `-`".into());
        }
        if ["source", "push"].contains(&name) || name.ends_with("-push") {
            let position = checker.position(&[path.clone(), vec![key("name")]].concat());
            checker
                .error(position, format!("stage name `{name}` is reserved"))
                .help = Some(
                "the runner names its source and push steps this way; pick another name".into(),
            );
        }
        match stage {
            Stage::Build(build) => {
                build_seen = true;
                check_build(checker, build, &path);
            }
            Stage::Approval(approval) => {
                check_duration(checker, approval.timeout.as_deref(), &path);
                if let Some(notify) = &approval.notify {
                    notify::check_approval(checker, notify, &path);
                }
            }
            Stage::Migrate(migrate) => {
                require_build_before(
                    checker,
                    build_seen,
                    kind,
                    &path,
                    "runs the image a build stage pushes",
                );
                check_duration(checker, migrate.timeout.as_deref(), &path);
                if migrate.command.is_empty() {
                    let position = checker.position(&[path.clone(), vec![key("command")]].concat());
                    checker
                        .error(position, "the migration command is empty")
                        .help = Some(
                        "write the command as a list, for example [php, artisan, migrate, --force]"
                            .into(),
                    );
                }
                for (field, value) in [
                    ("cluster", &migrate.cluster),
                    ("service", &migrate.service),
                    ("container", &migrate.container),
                ] {
                    check_not_blank(
                        checker,
                        value,
                        &[path.clone(), vec![key(field)]].concat(),
                        field,
                    );
                }
            }
            Stage::Deploy(deploy) => {
                require_build_before(
                    checker,
                    build_seen,
                    kind,
                    &path,
                    "rolls out the image a build stage pushes",
                );
                check_duration(checker, deploy.timeout.as_deref(), &path);
                verify_checks::check_verify(checker, &deploy.verify, &deploy.services, &path);
                check_not_blank(
                    checker,
                    &deploy.cluster,
                    &[path.clone(), vec![key("cluster")]].concat(),
                    "cluster",
                );
                if deploy.services.is_empty() {
                    let position =
                        checker.position(&[path.clone(), vec![key("services")]].concat());
                    let diagnostic =
                        checker.error(position, "the deploy stage has an empty service list");
                    diagnostic.label = Some("no services to deploy".into());
                    diagnostic.help = Some("list the ECS services that run this image, for example [envelope-prod-api]".into());
                }
                let mut services_seen = BTreeMap::new();
                for (index, service) in deploy.services.iter().enumerate() {
                    let service_path = [
                        path.clone(),
                        vec![key("services"), PathSegment::Index(index)],
                    ]
                    .concat();
                    check_not_blank(checker, service, &service_path, "service");
                    if services_seen.insert(service.as_str(), index).is_some() {
                        let position = checker.position(&service_path);
                        checker
                            .error(position, format!("service `{service}` is listed twice"))
                            .help = Some("list each service once".into());
                    }
                }
            }
        }
    }
}

fn require_build_before(
    checker: &mut Checker,
    build_seen: bool,
    kind: &str,
    path: &[PathSegment],
    why: &str,
) {
    if !build_seen {
        let position = checker.key_position(path);
        let diagnostic = checker.error(
            position,
            format!("stage `{kind}` comes before any build stage"),
        );
        diagnostic.label = Some(format!("`{kind}` {why}"));
        diagnostic.help = Some(format!("move the `{kind}` stage after a `build` stage"));
    }
}

fn check_not_blank(checker: &mut Checker, value: &str, path: &[PathSegment], what: &str) {
    if value.trim().is_empty() {
        let position = checker.position(path);
        checker.error(position, format!("the {what} name is empty"));
    }
}

fn check_duration(checker: &mut Checker, value: Option<&str>, stage: &[PathSegment]) {
    check_duration_of(checker, value, stage, "timeout");
}

fn check_duration_of(
    checker: &mut Checker,
    value: Option<&str>,
    stage: &[PathSegment],
    name: &str,
) {
    if let Some(text) = value
        && let Err(problem) = duration::parse(text)
    {
        let position = checker.position(&[stage.to_vec(), vec![key(name)]].concat());
        let diagnostic = checker.error(position, format!("bad duration for `{name}`: {problem}"));
        diagnostic.label = Some("not a duration".into());
    }
}

fn check_build(
    checker: &mut Checker,
    build: &crate::pipeline::model::BuildStage,
    path: &[PathSegment],
) {
    let at = |field: &str| [path.to_vec(), vec![key(field)]].concat();
    check_duration(checker, build.timeout.as_deref(), path);
    check_duration_of(checker, build.idle_timeout.as_deref(), path, "idle_timeout");
    if let Err(problem) = names::check_repository_name(&build.image) {
        let position = checker.position(&at("image"));
        checker.error(position, format!("`{}` is not a valid image repository name: {problem}", build.image)).help =
            Some("use lowercase letters, digits and `.`, `_`, `-` or `/` between them, for example `envelope-api`".into());
    }
    for (field, list) in [("tags", &build.tags), ("cache_from", &build.cache_from)] {
        let Some(list) = list else { continue };
        if field == "tags" && list.is_empty() {
            let position = checker.position(&at(field));
            checker.error(position, "the tag list is empty").help =
                Some("remove `tags:` to get the defaults (`${git.sha}`, `latest`) or list at least one tag".into());
        }
        for (index, tag) in list.iter().enumerate() {
            // Variables stand in as a valid tag character so that only the literal text is judged.
            let sample = template::parse(tag)
                .map(|parts| template::render(&parts, &|_| Some("x".into())))
                .unwrap_or_default();
            if let Err(problem) = names::check_tag(&sample) {
                let position =
                    checker.position(&[at(field), vec![PathSegment::Index(index)]].concat());
                let diagnostic = checker.error(
                    position,
                    format!("`{tag}` is not a valid image tag: {problem}"),
                );
                diagnostic.label = Some("bad image tag".into());
                diagnostic.help = Some("tags are up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`".into());
            }
        }
    }
    let mut ids = BTreeMap::new();
    for (index, secret) in build.secrets.iter().enumerate() {
        let secret_path = [at("secrets"), vec![PathSegment::Index(index)]].concat();
        let sources = [
            secret.env.is_some(),
            secret.file.is_some(),
            secret.aws_secret.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count();
        if sources != 1 {
            let position = checker.position(&secret_path);
            checker
                .error(
                    position,
                    format!(
                        "secret `{}` needs exactly one source, found {sources}",
                        secret.id
                    ),
                )
                .help = Some("set one of `env:`, `file:` or `aws_secret:`".into());
        }
        if ids.insert(secret.id.as_str(), index).is_some() {
            let position = checker.position(&[secret_path.clone(), vec![key("id")]].concat());
            checker.error(position, format!("secret id `{}` is used twice", secret.id));
        }
        if let Some(file) = &secret.file {
            let file_path = [secret_path.clone(), vec![key("file")]].concat();
            check_path(checker, &file_path, "secret file", file, "the project");
        }
        if let Some(variable) = &secret.env
            && !names::is_env_name(variable)
        {
            let position = checker.position(&[secret_path, vec![key("env")]].concat());
            checker.error(
                position,
                format!("`{variable}` is not an environment variable name"),
            );
        }
    }
    if let Some(context) = &build.context {
        check_path(
            checker,
            &at("context"),
            "context",
            context,
            "the repository",
        );
    }
    if let Some(dockerfile) = &build.dockerfile {
        check_path(
            checker,
            &at("dockerfile"),
            "dockerfile",
            dockerfile,
            "the build context",
        );
    }
    for argument in build.build_args.keys() {
        if !names::is_env_name(argument) {
            let position = checker.key_position(&[at("build_args"), vec![key(argument)]].concat());
            checker.error(
                position,
                format!("`{argument}` is not a valid build argument name"),
            );
        }
    }
    if let Some(platform) = &build.platform
        && !platform.contains('/')
    {
        let position = checker.position(&at("platform"));
        checker
            .error(position, format!("`{platform}` is not a platform"))
            .help = Some("write os/architecture, for example linux/amd64 or linux/arm64".into());
    }
}

/// A path the pipeline names is relative and stays inside `root` (see `paths`; the files
/// themselves are checked when they are read).
fn check_path(checker: &mut Checker, at: &[PathSegment], what: &str, written: &str, root: &str) {
    if let Err(problem) = paths::check_written(written) {
        let position = checker.position(at);
        let diagnostic = checker.error(position, problem.message(what, written, root));
        diagnostic.label = Some("refused".into());
        diagnostic.help = Some(problem.help(root));
    }
}

/// Every string in the file: its templates parse, name known variables, and use build outputs
/// only after the build that produces them.
fn check_variables(checker: &mut Checker, pipeline: &Pipeline) {
    let builds: Vec<(usize, String)> = pipeline
        .stages
        .iter()
        .enumerate()
        .filter(|(_, stage)| matches!(stage, Stage::Build(_)))
        .map(|(index, stage)| (index, stage.name().to_owned()))
        .collect();
    let mut aliases: Vec<String> = builds.iter().map(|(_, name)| name.clone()).collect();
    // `${build.digest}` means the only build stage, whatever its name.
    if builds.len() == 1 && builds[0].1 != "build" {
        aliases.push("build".into());
    }
    let mut strings = Vec::new();
    collect_strings(checker.tree, &mut Vec::new(), &mut strings);
    for (path, node, text) in strings {
        let stage_index = match path.as_slice() {
            [PathSegment::Key(stages), PathSegment::Index(index), ..] if stages == "stages" => {
                Some(*index)
            }
            _ => None,
        };
        let parts = match template::parse(&text) {
            Ok(parts) => parts,
            Err(error) => {
                let position = offset_position(checker.source, node.position, &text, error.offset);
                checker.error(position, error.message);
                continue;
            }
        };
        for part in parts {
            let template::Part::Variable { name, offset } = part else {
                continue;
            };
            let position = offset_position(checker.source, node.position, &text, offset);
            let length = name.chars().count() + 3;
            match template::lookup(&name, &pipeline.env, &aliases) {
                Lookup::Known(Availability::Always) => {}
                Lookup::Known(Availability::AfterBuild(stage)) => {
                    let producer = if stage == "build" && builds.len() == 1 {
                        builds[0].0
                    } else {
                        builds
                            .iter()
                            .find(|(_, n)| *n == stage)
                            .map(|(i, _)| *i)
                            .unwrap_or(0)
                    };
                    let user = stage_index.map(|i| pipeline.stages[i].name().to_owned());
                    let usable = matches!(stage_index, Some(index) if index > producer);
                    if !usable {
                        let place = match &user {
                            Some(user) => format!("stage `{user}`"),
                            None => "this setting".to_string(),
                        };
                        let diagnostic = checker.error(
                            position,
                            format!(
                                "{place} uses `${{{name}}}` but no build stage comes before it"
                            ),
                        );
                        diagnostic.length = Some(length);
                        diagnostic.label = Some(format!(
                            "`{name}` is only known after stage `{stage}` pushed its image"
                        ));
                        diagnostic.help =
                            Some("use build outputs only in stages after the build".into());
                    }
                }
                Lookup::UnknownEnv(variable) => {
                    let diagnostic = checker.error(
                        position,
                        format!("environment variable `{variable}` is not declared"),
                    );
                    diagnostic.length = Some(length);
                    diagnostic.label = Some("undeclared".into());
                    diagnostic.help = Some(format!(
                        "add `{variable}` to the pipeline's `env:` list to allow reading it"
                    ));
                }
                Lookup::Unknown { suggestion } => {
                    let diagnostic =
                        checker.error(position, format!("unknown variable `${{{name}}}`"));
                    diagnostic.length = Some(length);
                    match suggestion {
                        Some(candidate) => {
                            diagnostic.label = Some(format!("did you mean `${{{candidate}}}`?"));
                        }
                        None => {
                            diagnostic.label = Some("not a known variable".into());
                            let known: Vec<String> = template::FIXED
                                .iter()
                                .map(|(n, _)| format!("${{{n}}}"))
                                .collect();
                            diagnostic.help = Some(format!(
                                "known variables: {}, `${{<build stage>.digest}}`, `${{env.NAME}}`",
                                known.join(", ")
                            ));
                        }
                    }
                }
            }
        }
    }
}

fn collect_strings<'a>(
    node: &'a Node,
    path: &mut Vec<PathSegment>,
    out: &mut Vec<(Vec<PathSegment>, &'a Node, String)>,
) {
    match &node.value {
        Value::String(text) if text.contains('$') => {
            out.push((path.clone(), node, text.clone()));
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter().enumerate() {
                path.push(PathSegment::Index(index));
                collect_strings(item, path, out);
                path.pop();
            }
        }
        Value::Mapping(entries) => {
            for (key, value) in entries {
                path.push(PathSegment::Key(key.name.clone()));
                collect_strings(value, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The position of a byte offset inside a scalar, when the scalar sits on one line as
/// written; otherwise the scalar's own position.
fn offset_position(source: &SourceFile, start: Position, text: &str, offset: usize) -> Position {
    let Some(line) = source.text.lines().nth(start.line.saturating_sub(1)) else {
        return start;
    };
    let rest: String = line.chars().skip(start.column.saturating_sub(1)).collect();
    let quoted = rest.starts_with('"') || rest.starts_with('\'');
    let body = if quoted { &rest[1..] } else { rest.as_str() };
    if body.starts_with(text) || (!quoted && body.starts_with(&text[..offset.min(text.len())])) {
        let chars_before = text[..offset].chars().count();
        return Position {
            line: start.line,
            column: start.column + chars_before + usize::from(quoted),
        };
    }
    start
}
