//! Pipelines as code: load files, parse with locations, check structure and meaning.
//!
//! `load` is the only function here that touches the file system; `compile` is a pure
//! function of the file texts. Errors come back all at once as `Diagnostics`.

mod defaults;
pub mod diagnostic;
pub mod document;
pub mod duration;
pub mod environment;
pub mod model;
pub mod names;
pub mod paths;
mod salvage;
pub mod structure;
pub mod template;
pub mod untrusted;
pub mod validate;
pub mod verify;
pub mod yaml;

use crate::buildspec::{self, Buildspec};
use diagnostic::{Diagnostic, Diagnostics, SourceFile};
use model::{Aws, Pipeline, ProjectDefaults};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use yaml::{Node, PathSegment};

/// The project defaults file, next to `pipelines/`.
pub const DEFAULTS_FILE: &str = "envelope.yaml";
/// Where pipelines live, relative to the project root.
pub const PIPELINES_DIR: &str = "pipelines";

/// A pipeline that passed every check, with everything plan needs.
#[derive(Debug, Clone)]
pub struct CompiledPipeline {
    pub name: String,
    pub file: SourceFile,
    pub tree: Node,
    pub pipeline: Pipeline,
    /// Pipeline `aws:` over project defaults (and the environment's `aws:` over both).
    pub aws: Aws,
    /// The project's `env:` defaults (`envelope.yaml`), for the names the pipeline declares.
    pub env_defaults: BTreeMap<String, String>,
    /// The environment this pipeline runs in (see `environment`), `None` as written.
    pub environment: Option<String>,
    /// Buildspecs by the path the pipeline wrote.
    pub buildspecs: BTreeMap<String, Buildspec>,
    pub project_root: PathBuf,
}

/// The texts `compile` needs: the pipeline file, the defaults file and the buildspecs the
/// pipeline names (or why a buildspec was not read: see `paths`).
#[derive(Debug, Clone)]
pub struct Sources {
    pub pipeline: SourceFile,
    pub defaults: Option<SourceFile>,
    pub buildspecs: BTreeMap<String, Result<SourceFile, paths::PathProblem>>,
    pub project_root: PathBuf,
}

/// A pipeline compiled from `text` alone (no defaults file, no buildspecs), for unit tests.
#[cfg(test)]
pub(crate) fn compile_text(text: impl Into<String>) -> CompiledPipeline {
    let sources = Sources {
        pipeline: diagnostic::SourceFile::new("pipelines/app.yaml", text.into()),
        defaults: None,
        buildspecs: BTreeMap::new(),
        project_root: ".".into(),
    };
    compile(&sources).unwrap_or_else(|diagnostics| panic!("{}", diagnostics.render(false)))
}

/// JSON Schema of pipeline files.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Pipeline)).expect("schema serializes")
}

/// JSON Schema of the project defaults file.
pub fn defaults_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(ProjectDefaults)).expect("schema serializes")
}

/// The project root of a pipeline file: the folder above `pipelines/`, or the file's folder.
pub fn project_root_of(path: &Path) -> PathBuf {
    let folder = path.parent().unwrap_or(Path::new("."));
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    if folder.file_name().is_some_and(|name| name == PIPELINES_DIR) {
        let root = folder.parent().unwrap_or(Path::new("."));
        if root.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            root.to_path_buf()
        }
    } else {
        folder.to_path_buf()
    }
}

/// The pipeline name a file gets when it sets none: its stem.
pub fn name_from_path(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Find `pipelines/<name>.yaml` (or `.yml`) under a project root, or take a path as given.
pub fn find(project_root: &Path, name_or_path: &str) -> Result<PathBuf, String> {
    let as_path = Path::new(name_or_path);
    if name_or_path.ends_with(".yaml") || name_or_path.ends_with(".yml") {
        return if as_path.is_file() {
            Ok(as_path.to_path_buf())
        } else {
            Err(format!("no pipeline file at {name_or_path}"))
        };
    }
    for extension in ["yaml", "yml"] {
        let candidate = if project_root == Path::new(".") {
            PathBuf::from(PIPELINES_DIR)
        } else {
            project_root.join(PIPELINES_DIR)
        }
        .join(format!("{name_or_path}.{extension}"));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    let known = list_pipelines(project_root)
        .iter()
        .map(|path| name_from_path(path))
        .collect::<Vec<_>>();
    let hint = match diagnostic::suggest(name_or_path, known.iter().map(String::as_str)) {
        Some(candidate) => format!("; did you mean `{candidate}`?"),
        None if known.is_empty() => format!(
            "; there is no {PIPELINES_DIR}/ folder in {}: run from the project root or pass --project",
            project_root.display()
        ),
        None => format!("; known pipelines: {}", known.join(", ")),
    };
    Err(format!(
        "no pipeline `{name_or_path}` in {}/{PIPELINES_DIR}{hint}",
        project_root.display()
    ))
}

/// Every `*.yaml` / `*.yml` in `<root>/pipelines`, sorted.
pub fn list_pipelines(project_root: &Path) -> Vec<PathBuf> {
    let folder = if project_root == Path::new(".") {
        PathBuf::from(PIPELINES_DIR)
    } else {
        project_root.join(PIPELINES_DIR)
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    files
}

/// Read a pipeline file and everything it refers to, then compile it.
pub fn load(path: &Path) -> Result<CompiledPipeline, Diagnostics> {
    let sources = read_sources(path)?;
    compile(&sources)
}

/// The file I/O half of `load`. Every file is read through `paths`: regular files of at most
/// 1 MiB, UTF-8, and (but for the pipeline file itself) inside the project.
pub fn read_sources(path: &Path) -> Result<Sources, Diagnostics> {
    let text = paths::read_text(path).map_err(|problem| {
        let mut diagnostics = Diagnostics::default();
        diagnostics.push(file_diagnostic(
            path,
            &problem,
            "pipeline file",
            "check the path; pipelines live in pipelines/<name>.yaml",
        ));
        diagnostics
    })?;
    let pipeline = SourceFile::new(path, text);
    let project_root = project_root_of(path);
    let defaults_path = project_root.join(DEFAULTS_FILE);
    let defaults = if defaults_path.symlink_metadata().is_ok() {
        match paths::read_inside(&project_root, DEFAULTS_FILE) {
            Ok(text) => Some(SourceFile::new(display_relative(&defaults_path), text)),
            Err(problem) => {
                let mut diagnostics = Diagnostics::default();
                diagnostics.push(file_diagnostic(
                    &display_relative(&defaults_path),
                    &problem,
                    "project defaults file",
                    &problem.help("the project"),
                ));
                return Err(diagnostics);
            }
        }
    } else {
        None
    };
    let mut buildspecs = BTreeMap::new();
    if let Ok(tree) = yaml::parse(&pipeline.text) {
        for path_written in buildspec_references(&tree)
            .into_iter()
            .map(|(_, path)| path)
        {
            let full = project_root.join(&path_written);
            let source = paths::read_inside(&project_root, &path_written)
                .map(|text| SourceFile::new(display_relative(&full), text));
            buildspecs.insert(path_written, source);
        }
    }
    Ok(Sources {
        pipeline,
        defaults,
        buildspecs,
        project_root,
    })
}

/// A file that cannot be read as a whole: at the first bad byte when it is not UTF-8, else
/// at its start. Never quotes the content of a file that was not read.
fn file_diagnostic(
    path: &Path,
    problem: &paths::PathProblem,
    what: &str,
    help: &str,
) -> Diagnostic {
    let written = path.display().to_string();
    let message = problem.message(what, &written, "the project");
    match problem {
        paths::PathProblem::NotUtf8 {
            line, column, text, ..
        } => Diagnostic::error(
            &SourceFile::new(path, text.as_str()),
            yaml::Position {
                line: *line,
                column: *column,
            },
            message,
        )
        .with_label("not UTF-8")
        .with_help(problem.help("the project")),
        _ => Diagnostic::error(
            &SourceFile::new(path, ""),
            yaml::Position::default(),
            message,
        )
        .with_help(help),
    }
}

fn display_relative(path: &Path) -> PathBuf {
    path.strip_prefix("./").unwrap_or(path).to_path_buf()
}

/// `(position, path)` of each `buildspec:` a pipeline tree names.
fn buildspec_references(tree: &Node) -> Vec<(yaml::Position, String)> {
    let mut found = Vec::new();
    if let Some(Node {
        value: yaml::Value::Sequence(stages),
        ..
    }) = tree.get("stages")
    {
        for stage in stages {
            if let Some(build) = stage.get("build")
                && let Some(Node {
                    value: yaml::Value::String(path),
                    position,
                }) = build.get("buildspec")
            {
                found.push((*position, path.clone()));
            }
        }
    }
    found
}

/// Pipeline files, for the shared front end: parse, require a mapping, check the schema.
const PIPELINE_FILE: document::DocumentKind = document::DocumentKind {
    called: "a pipeline file",
    read_as: "the pipeline",
    start_with: "start with `source:` and `stages:`",
    schema,
    empty_is_default: false,
};

/// Parse and check a pipeline and its buildspecs. Pure.
pub fn compile(sources: &Sources) -> Result<CompiledPipeline, Diagnostics> {
    let file = &sources.pipeline;
    let (tree, mut diagnostics) = PIPELINE_FILE.check(file)?;
    let well_formed = !diagnostics.has_errors();

    let mut defaults = ProjectDefaults::default();
    if let Some(defaults_file) = &sources.defaults {
        match defaults::compile(defaults_file) {
            Ok(parsed) => defaults = parsed,
            Err(errors) => diagnostics.extend(errors),
        }
    }

    let mut buildspecs = BTreeMap::new();
    for (position, path) in buildspec_references(&tree) {
        match sources.buildspecs.get(&path) {
            Some(Ok(source)) => match buildspec::compile(source) {
                Ok(spec) => {
                    buildspecs.insert(path, spec);
                }
                Err(errors) => diagnostics.extend(errors),
            },
            None | Some(Err(paths::PathProblem::Missing)) => diagnostics.push(
                Diagnostic::error(file, position, format!("no buildspec at `{path}`"))
                    .with_label("file not found")
                    .with_help(format!(
                        "buildspec paths are relative to the project root ({}); check the name",
                        sources.project_root.display()
                    )),
            ),
            Some(Err(problem)) => {
                let location = format!(
                    "{}:{}:{}",
                    file.path.display(),
                    position.line,
                    position.column
                );
                let diagnostic = match problem {
                    // Inside the project: show the bad byte in the buildspec itself.
                    paths::PathProblem::NotUtf8 { .. } => file_diagnostic(
                        &display_relative(&sources.project_root.join(&path)),
                        problem,
                        "buildspec",
                        "",
                    )
                    .with_help(format!("save it as UTF-8; {location} names it")),
                    _ => Diagnostic::error(
                        file,
                        position,
                        problem.message("buildspec", &path, "the project"),
                    )
                    .with_label("refused")
                    .with_help(problem.help("the project")),
                };
                diagnostics.push(diagnostic);
            }
        }
    }

    // The meaning checks run on the whole tree when its shape is right, else on the part
    // `salvage` can still read: one pass reports both kinds of error.
    let salvaged;
    let readable = if well_formed {
        &tree
    } else {
        match salvage::readable(&tree, &schema(), file) {
            Some(part) => {
                salvaged = part;
                &salvaged
            }
            None => {
                diagnostics.sort();
                return Err(diagnostics);
            }
        }
    };
    let pipeline: Pipeline = match PIPELINE_FILE.read(readable, file) {
        Ok(pipeline) => pipeline,
        // A salvaged part that still cannot be read adds nothing to its structural errors.
        Err(_) if !well_formed => {
            diagnostics.sort();
            return Err(diagnostics);
        }
        Err(error) => {
            diagnostics.extend(error);
            return Err(diagnostics);
        }
    };
    let name = pipeline
        .name
        .clone()
        .unwrap_or_else(|| name_from_path(&file.path));
    diagnostics.extend(validate::check(&pipeline, &name, readable, file));
    // A missing region is not an error here: a run also takes it from `--region` or the
    // environment (see exec::aws_target), and says so when none names one.
    let aws = merge_aws(defaults.aws.as_ref(), pipeline.aws.as_ref());
    if diagnostics.has_errors() {
        diagnostics.sort();
        return Err(diagnostics);
    }
    Ok(CompiledPipeline {
        name,
        file: file.clone(),
        tree,
        env_defaults: defaults
            .env
            .into_iter()
            .filter(|(name, _)| pipeline.env.contains(name))
            .collect(),
        pipeline,
        aws,
        environment: None,
        buildspecs,
        project_root: sources.project_root.clone(),
    })
}

fn merge_aws(defaults: Option<&Aws>, pipeline: Option<&Aws>) -> Aws {
    let defaults = defaults.cloned().unwrap_or_default();
    let pipeline = pipeline.cloned().unwrap_or_default();
    Aws {
        region: pipeline.region.or(defaults.region),
        account: pipeline.account.or(defaults.account),
        registry: pipeline.registry.or(defaults.registry),
    }
}

impl CompiledPipeline {
    /// Position of a path in the pipeline file, for annotations.
    pub fn position_of(&self, path: &[PathSegment]) -> yaml::Position {
        self.tree
            .at_path(path)
            .map(|node| node.position)
            .unwrap_or(self.tree.position)
    }

    /// The values this process's environment gives the variables the pipeline declares in
    /// `env:`, else the project's defaults (`envelope.yaml` `env:`); names with neither are
    /// left out. What a run's templates may read as `${env.NAME}`.
    pub fn declared_env(&self) -> BTreeMap<String, String> {
        self.pipeline
            .env
            .iter()
            .filter_map(|name| {
                let value = std::env::var(name)
                    .ok()
                    .or_else(|| self.env_defaults.get(name).cloned())?;
                Some((name.clone(), value))
            })
            .collect()
    }
}
