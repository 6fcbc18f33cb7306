//! Command-line interface: argument parsing and dispatch to the library.

use crate::exit_codes;
use crate::pipeline::{self, diagnostic::Diagnostics};
use crate::plan::{self, PlanContext};
use clap::{Parser, Subcommand, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

/// Pipelines as code for containers on ECS: build with BuildKit, push to ECR by digest,
/// approve, migrate and deploy, and roll back when a deploy fails.
#[derive(Debug, Parser)]
#[command(name = "envelope-runner", version, about, long_about = None, max_term_width = 100)]
#[command(
    after_help = "Exit codes: 0 ok, 1 a stage failed, 2 invalid input, 3 approval rejected or \
timed out, 4 waiting (paused), 5 locked or superseded, 6 environment unusable, 7 store error, \
130 cancelled."
)]
pub struct Cli {
    /// Project root: the folder that holds pipelines/ (default: the current folder).
    #[arg(long, global = true, value_name = "DIR", env = "ENVELOPE_PROJECT")]
    pub project: Option<PathBuf>,

    /// Colour in output: auto, always or never.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check pipeline files and the buildspecs they use; report every problem with its place.
    Validate {
        /// Pipeline files (default: pipelines/*.yaml under the project root).
        files: Vec<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Show exactly what a run would do: images, tags, tasks, services, commands. No network.
    Plan {
        /// Pipeline name (pipelines/<NAME>.yaml) or path to a pipeline file.
        pipeline: String,
        /// Branch, tag or commit to build (default in GitHub Actions: the release tag or the
        /// pushed ref, with GITHUB_SHA).
        #[arg(long = "ref", value_name = "REF")]
        git_ref: Option<String>,
        /// The commit the ref resolves to (40 hex characters), when known.
        #[arg(long)]
        sha: Option<String>,
        /// AWS region, as `run --region` takes it (default: the pipeline's, envelope.yaml's,
        /// then AWS_REGION).
        #[arg(long, value_name = "REGION")]
        region: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Run a pipeline: source, build, push, approval, migrate, deploy.
    Run {
        /// Pipeline name (pipelines/<NAME>.yaml) or path to a pipeline file.
        pipeline: String,
        /// Branch, tag or commit to build (default: the pipeline's branch; with --local, HEAD).
        #[arg(long = "ref", value_name = "REF")]
        git_ref: Option<String>,
        /// The commit the ref must resolve to.
        #[arg(long)]
        sha: Option<String>,
        /// Stop after this stage (name or kind) and leave the rest for `resume`.
        #[arg(long, value_name = "STAGE")]
        until: Option<String>,
        /// Build from the working tree with the local Docker daemon; skip approval, migrate and
        /// deploy. Reproduces a CI build on a laptop.
        #[arg(long)]
        local: bool,
        /// With --local: the working tree to build (default: the current folder).
        #[arg(long, value_name = "DIR", requires = "local")]
        source: Option<PathBuf>,
        /// With --local: push to this registry host (for example 127.0.0.1:5000).
        #[arg(long, value_name = "HOST", requires = "local")]
        registry: Option<String>,
        #[command(flatten)]
        common: RunArgs,
    },
    /// Continue a run from its first unfinished stage (after an approval, a crash or --until).
    Resume {
        /// The run id.
        run: String,
        /// Stop after this stage (name or kind) again.
        #[arg(long, value_name = "STAGE")]
        until: Option<String>,
        #[command(flatten)]
        common: RunArgs,
    },
    /// Run a failed run's failed stage again, and the stages after it.
    Retry {
        /// The run id.
        run: String,
        #[command(flatten)]
        common: RunArgs,
    },
    /// Redeploy an earlier successful run's images (no build), as a run of its own.
    Rollback {
        /// Pipeline name.
        pipeline: String,
        /// The run whose images go back out (default: the successful run before the newest one).
        #[arg(long, value_name = "RUN")]
        to: Option<String>,
        #[command(flatten)]
        common: RunArgs,
    },
    /// Approve (or reject) a run waiting at an approval gate.
    Approve {
        /// The run id.
        run: String,
        /// Reject instead of approving.
        #[arg(long)]
        reject: bool,
        /// A note recorded with the decision.
        #[arg(long)]
        comment: Option<String>,
        /// The approval stage, when the pipeline has several.
        #[arg(long)]
        stage: Option<String>,
        /// Who decides (default: $ENVELOPE_USER, $GITHUB_ACTOR or $USER).
        #[arg(long = "as", value_name = "NAME")]
        approver: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show a run: its stages, outputs and errors (default: the newest run).
    Status {
        run: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List recent runs of a pipeline (or of all pipelines), newest first.
    History {
        pipeline: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print a run's event log.
    Logs {
        run: String,
        /// Only this stage's lines.
        #[arg(long)]
        stage: Option<String>,
        /// Keep printing new lines until the run finishes.
        #[arg(long)]
        follow: bool,
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the JSON Schema of pipeline files (point your editor's YAML support at it).
    Schema {
        /// Which schema: the pipeline file, the project defaults file, or a buildspec.
        #[arg(value_enum, default_value_t = SchemaKind::Pipeline)]
        kind: SchemaKind,
    },
    /// Watch GitHub releases, run pipelines and serve the approval web UI: runs the
    /// `envelope-agent` program installed next to this one (`agent --help` shows its options).
    #[command(disable_help_flag = true)]
    Agent {
        /// Arguments for envelope-agent, for example `--config envelope-agent.yaml`.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
}

/// Where run state lives.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Run store: a SQLite file path (default <project>/.envelope/state.db).
    #[arg(long, value_name = "URL", env = "ENVELOPE_STORE")]
    pub store: Option<String>,
}

/// Options shared by `run` and `resume`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Contact this registry host:port instead of the one the pipeline names (a mirror, a VPC
    /// endpoint, a local emulator).
    #[arg(long, value_name = "HOST:PORT", env = "ENVELOPE_REGISTRY_ENDPOINT")]
    pub registry_endpoint: Option<String>,
    /// AWS region for this run; beats the pipeline's `aws.region`, envelope.yaml and
    /// AWS_REGION. A resumed run keeps the region it started in unless this is given.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// Cache folder for git mirrors and checkouts.
    #[arg(long, value_name = "DIR", env = "ENVELOPE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Log format: text (timestamped lines) or json (one object per line).
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub log_format: OutputFormat,
    /// How often a waiting approval gate checks for a decision, in seconds.
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS", hide = true)]
    pub approval_poll: f64,
    /// How long the pipeline's deploy lock lives without a heartbeat, in seconds (renewed every
    /// third of it; a run that cannot renew it in time stops before its next AWS change).
    #[arg(
        long,
        default_value_t = 60.0,
        value_name = "SECONDS",
        env = "ENVELOPE_LEASE_TTL"
    )]
    pub lease_ttl: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    Pipeline,
    Defaults,
    Buildspec,
}

/// Parse arguments and run; returns the process exit code.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return match error.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit_codes::OK
                }
                _ => exit_codes::INVALID_INPUT,
            };
        }
    };
    let color = match cli.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
        }
    };
    let project = cli.project.clone().unwrap_or_else(|| PathBuf::from("."));
    // Locks are taken per command: run commands write from several threads.
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    match cli.command {
        Command::Validate { files, output } => {
            validate(&project, &files, output, color, &mut stdout, &mut stderr)
        }
        Command::Plan {
            pipeline,
            git_ref,
            sha,
            region,
            output,
        } => plan_command(
            &project,
            &pipeline,
            git_ref,
            sha,
            region,
            output,
            color,
            &mut stdout,
            &mut stderr,
        ),
        Command::Run { .. }
        | Command::Resume { .. }
        | Command::Retry { .. }
        | Command::Rollback { .. }
        | Command::Approve { .. }
        | Command::Status { .. }
        | Command::History { .. }
        | Command::Logs { .. } => crate::commands::dispatch(cli.command, &project, color),
        Command::Agent { args } => agent(&args),
        Command::Schema { kind } => {
            let schema = match kind {
                SchemaKind::Pipeline => pipeline::schema(),
                SchemaKind::Defaults => pipeline::defaults_schema(),
                SchemaKind::Buildspec => crate::buildspec::schema(),
            };
            let _ = writeln!(
                stdout,
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            exit_codes::OK
        }
    }
}

/// `agent`: become the `envelope-agent` program found next to this executable (or on the
/// PATH). The agent is a crate of its own that depends on this one, so it cannot be linked in;
/// the process is replaced, so SIGTERM reaches the agent directly.
fn agent(args: &[std::ffi::OsString]) -> i32 {
    let name = format!("envelope-agent{}", std::env::consts::EXE_SUFFIX);
    let program = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(&name)))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from(&name));
    let mut command = std::process::Command::new(&program);
    command.args(args);
    #[cfg(unix)]
    let error = std::os::unix::process::CommandExt::exec(&mut command);
    #[cfg(not(unix))]
    let error = match command.status() {
        Ok(status) => return status.code().unwrap_or(exit_codes::ENVIRONMENT),
        Err(error) => error,
    };
    eprintln!(
        "error: cannot start {}: {error}; install envelope-agent next to envelope-runner (the release archive and the image ship both)",
        program.display()
    );
    exit_codes::ENVIRONMENT
}

fn report_diagnostics(diagnostics: &Diagnostics, color: bool, stderr: &mut dyn Write) {
    let rendered = crate::trigger::actions::render_diagnostics(diagnostics, color);
    let _ = write!(stderr, "{rendered}");
}

fn validate(
    project: &Path,
    files: &[PathBuf],
    output: OutputFormat,
    color: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let files = if files.is_empty() {
        pipeline::list_pipelines(project)
    } else {
        files.to_vec()
    };
    if files.is_empty() {
        let _ = writeln!(
            stderr,
            "error: no pipeline files in {}/{}: pass files, or run from the project root (or --project DIR)",
            project.display(),
            pipeline::PIPELINES_DIR
        );
        return exit_codes::INVALID_INPUT;
    }
    let mut all = Diagnostics::default();
    let mut results = Vec::new();
    for file in &files {
        match pipeline::load(file) {
            Ok(compiled) => {
                results.push(serde_json::json!({
                    "file": file.display().to_string(),
                    "pipeline": compiled.name,
                    "ok": true,
                    "buildspecs": compiled.buildspecs.keys().collect::<Vec<_>>(),
                }));
                if output == OutputFormat::Text {
                    let buildspecs = if compiled.buildspecs.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " (buildspecs: {})",
                            compiled
                                .buildspecs
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    let _ = writeln!(
                        stdout,
                        "ok  {} → pipeline `{}`{buildspecs}",
                        file.display(),
                        compiled.name
                    );
                }
            }
            Err(diagnostics) => {
                results.push(serde_json::json!({
                    "file": file.display().to_string(),
                    "ok": false,
                    "errors": diagnostics.0.iter().map(|d| serde_json::json!({
                        "file": d.source.path.display().to_string(),
                        "line": d.position.line,
                        "column": d.position.column,
                        "message": d.message,
                        "label": d.label,
                        "help": d.help,
                    })).collect::<Vec<_>>(),
                }));
                all.extend(diagnostics);
            }
        }
    }
    if output == OutputFormat::Json {
        let _ = writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&results).unwrap_or_default()
        );
    }
    if all.has_errors() {
        if output == OutputFormat::Text {
            report_diagnostics(&all, color, stderr);
        } else {
            crate::trigger::actions::annotate_diagnostics(&all);
        }
        exit_codes::INVALID_INPUT
    } else {
        exit_codes::OK
    }
}

#[allow(clippy::too_many_arguments)]
fn plan_command(
    project: &Path,
    name: &str,
    git_ref: Option<String>,
    sha: Option<String>,
    region: Option<String>,
    output: OutputFormat,
    color: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> i32 {
    let path = match pipeline::find(project, name) {
        Ok(path) => path,
        Err(message) => {
            let _ = writeln!(stderr, "error: {message}");
            return exit_codes::INVALID_INPUT;
        }
    };
    let compiled = match pipeline::load(&path) {
        Ok(compiled) => compiled,
        Err(diagnostics) => {
            report_diagnostics(&diagnostics, color, stderr);
            return exit_codes::INVALID_INPUT;
        }
    };
    let env = compiled
        .pipeline
        .env
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|value| (name.clone(), value)))
        .collect();
    // In GitHub Actions the release (or pushed ref) and its commit are the default.
    let actions = git_ref
        .is_none()
        .then(crate::trigger::actions::ActionsEnvironment::detect)
        .flatten()
        .and_then(|environment| environment.trigger());
    let (git_ref, sha) = match (git_ref, actions) {
        (Some(git_ref), _) => (git_ref, sha),
        (None, Some(trigger)) => (trigger.git_ref, sha.or(trigger.sha)),
        (None, None) => {
            let _ = writeln!(
                stderr,
                "error: give --ref (a release tag, branch or commit); only in GitHub Actions does it default to the release or pushed ref"
            );
            return exit_codes::INVALID_INPUT;
        }
    };
    // The same region a run would settle on, short of the AWS profile and instance metadata
    // (plan reads no files beyond the project and asks no service).
    let region = region
        .or_else(|| compiled.aws.region.clone())
        .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
        .or_else(|| {
            std::env::var("AWS_DEFAULT_REGION")
                .ok()
                .filter(|r| !r.is_empty())
        });
    let context = PlanContext {
        git_ref,
        sha,
        env,
        region,
        ..PlanContext::default()
    };
    match plan::plan(&compiled, &context) {
        Ok(plan) => {
            let _ = match output {
                OutputFormat::Json => writeln!(
                    stdout,
                    "{}",
                    serde_json::to_string_pretty(&plan).unwrap_or_default()
                ),
                OutputFormat::Text => write!(stdout, "{}", plan.render_text()),
            };
            exit_codes::OK
        }
        Err(error) => {
            crate::trigger::actions::annotate_plan_error(&path, &error);
            let _ = writeln!(stderr, "error: {error}");
            exit_codes::INVALID_INPUT
        }
    }
}
