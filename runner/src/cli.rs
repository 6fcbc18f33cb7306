//! The command line's shape: the clap types for every command, option and value. Parsing
//! only; `commands` runs what they describe.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Pipelines as code for containers on ECS: build with BuildKit, push to ECR by digest,
/// approve, migrate and deploy, and roll back when a deploy fails.
#[derive(Debug, Parser)]
#[command(name = "envelope-runner", version, about, long_about = None, max_term_width = 100)]
#[command(
    after_help = "Exit codes: 0 ok, 1 a stage failed, 2 invalid input, 3 approval rejected or \
timed out, 4 waiting (paused), 5 locked or superseded, 6 environment unusable, 7 store error, \
8 promotion refused, 130 cancelled."
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
        /// Plan the run in this environment of the pipeline (one its `environments:` declares).
        #[arg(
            long = "env",
            visible_alias = "environment",
            value_name = "ENVIRONMENT"
        )]
        environment: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
    },
    /// Run a pipeline: source, build, push, approval, migrate, deploy.
    Run(RunCommand),
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
        /// Roll back this environment of the pipeline (its own runs and services).
        #[arg(
            long = "env",
            visible_alias = "environment",
            value_name = "ENVIRONMENT"
        )]
        environment: Option<String>,
        #[command(flatten)]
        common: RunArgs,
    },
    /// Show what a deploy would change per service (image digest, every other task definition
    /// field) and the checks that run after it. Reads ECS (DescribeServices,
    /// DescribeTaskDefinition) and changes nothing.
    Diff {
        /// Pipeline name (pipelines/<NAME>.yaml).
        pipeline: String,
        /// The run whose images to compare (default: the newest run of the pipeline that
        /// pushed an image).
        run: Option<String>,
        /// Compare this image (`repository@sha256:…`) instead of a run's. Repeatable.
        #[arg(long = "image", value_name = "REF@DIGEST")]
        images: Vec<String>,
        /// Compare against this environment of the pipeline (its clusters and services). RUN
        /// may be a run of another environment: what promoting it would change.
        #[arg(
            long = "env",
            visible_alias = "environment",
            value_name = "ENVIRONMENT"
        )]
        environment: Option<String>,
        /// Exit 1 when a service would change (0 when none would), like `git diff --exit-code`.
        #[arg(long)]
        exit_code: bool,
        /// AWS region (default: the run's, the pipeline's, envelope.yaml's, then AWS_REGION).
        #[arg(long, value_name = "REGION")]
        region: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Deploy the images a run in one environment built and verified to another environment,
    /// without building: through that environment's approval, migration and deploy.
    Promote(PromoteCommand),
    /// Approve (or reject) a run waiting at an approval gate.
    Approve {
        /// The run id.
        run: String,
        /// Reject instead of approving.
        #[arg(long)]
        reject: bool,
        /// A note recorded with the decision.
        #[arg(long, value_name = "TEXT")]
        comment: Option<String>,
        /// The approval stage, when the pipeline has several.
        #[arg(long, value_name = "STAGE")]
        stage: Option<String>,
        /// Who decides (default: $ENVELOPE_USER, $GITHUB_ACTOR or $USER).
        #[arg(long = "as", value_name = "NAME")]
        approver: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show a run: its stages, outputs and errors (default: the newest run).
    Status {
        /// The run id (default: the newest run of any pipeline).
        run: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List recent runs of a pipeline (or of all pipelines), newest first.
    History {
        /// Only this pipeline's runs (default: every pipeline's).
        pipeline: Option<String>,
        /// Only the pipeline's runs in this environment (default: its runs without one).
        #[arg(
            long = "env",
            visible_alias = "environment",
            value_name = "ENVIRONMENT",
            requires = "pipeline"
        )]
        environment: Option<String>,
        /// How many runs to list at most.
        #[arg(long, default_value_t = 20, value_name = "N")]
        limit: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print a run's event log.
    Logs {
        /// The run id.
        run: String,
        /// Only this stage's lines.
        #[arg(long, value_name = "STAGE")]
        stage: Option<String>,
        /// Keep printing new lines until the run finishes.
        #[arg(long)]
        follow: bool,
        /// Output format: text lines or one JSON object per event.
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        output: OutputFormat,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Read every page of the SQLite run store (`PRAGMA quick_check`) without changing it. Other
    /// commands check the pages only after an unclean shutdown; run this after a disk or power
    /// problem, or on a schedule. Exit code 7 when the store is damaged.
    CheckStore {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the JSON Schema of pipeline files (point your editor's YAML support at it).
    Schema {
        /// Which schema: the pipeline file, the project defaults file, or a buildspec.
        #[arg(value_enum, default_value_t = SchemaKind::Pipeline)]
        kind: SchemaKind,
    },
    /// Print a shell completion script, e.g. `envelope-runner completions bash >
    /// /etc/bash_completion.d/envelope-runner`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff: `envelope-runner man | man -l -`), or write one page per
    /// command into a folder.
    Man {
        /// Write envelope-runner.1 and envelope-runner-<COMMAND>.1 into this folder.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
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

// `run`'s arguments (no doc comment: clap would take it for the command's description).
#[derive(Debug, Clone, clap::Args)]
pub struct RunCommand {
    /// Pipeline name (pipelines/<NAME>.yaml) or path to a pipeline file.
    pub pipeline: String,
    /// Branch, tag or commit to build (default: the pipeline's branch; with --local, HEAD).
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// The commit the ref must resolve to.
    #[arg(long)]
    pub sha: Option<String>,
    /// Run in this environment of the pipeline (one its `environments:` declares): its
    /// cluster, services, account and approval rule, its own lock and history.
    #[arg(
        long = "env",
        visible_alias = "environment",
        value_name = "ENVIRONMENT",
        conflicts_with = "local"
    )]
    pub environment: Option<String>,
    /// Stop after this stage (name or kind) and leave the rest for `resume`.
    #[arg(long, value_name = "STAGE")]
    pub until: Option<String>,
    /// Build from the working tree with the local Docker daemon; skip approval, migrate and
    /// deploy. Reproduces a CI build on a laptop.
    #[arg(long)]
    pub local: bool,
    /// With --local: the working tree to build (default: the current folder).
    #[arg(long, value_name = "DIR", requires = "local")]
    pub source: Option<PathBuf>,
    /// With --local: push to this registry host (for example 127.0.0.1:5000).
    #[arg(long, value_name = "HOST", requires = "local")]
    pub registry: Option<String>,
    /// With --local: a BuildKit build secret, `ID=env:NAME` (from an environment variable) or
    /// `ID=file:PATH`, used instead of the source the pipeline declares for that id. Repeatable.
    #[arg(
        long = "secret",
        value_name = "ID=env:NAME|ID=file:PATH",
        requires = "local"
    )]
    pub secrets: Vec<String>,
    /// With --local: read `KEY=VALUE` lines (dotenv format) for the variables the pipeline
    /// declares in `env:`; they beat this process's environment, later files win. Repeatable.
    #[arg(long = "env-file", value_name = "PATH", requires = "local")]
    pub env_files: Vec<PathBuf>,
    #[command(flatten)]
    pub common: RunArgs,
}

// `promote`'s arguments (no doc comment: clap would take it for the command's description).
#[derive(Debug, Clone, clap::Args)]
pub struct PromoteCommand {
    /// Pipeline name.
    pub pipeline: String,
    /// The environment whose run is promoted.
    #[arg(long, value_name = "ENVIRONMENT")]
    pub from: String,
    /// The environment to deploy to.
    #[arg(long, value_name = "ENVIRONMENT")]
    pub to: String,
    /// The run to promote (default: the newest run that succeeded and deployed in --from).
    pub run: Option<String>,
    /// Promote a run whose deploy ran no `verify:` checks (refused by default, exit code 8).
    #[arg(long)]
    pub allow_unverified: bool,
    /// Stop after this stage (name or kind) and leave the rest for `resume`.
    #[arg(long, value_name = "STAGE")]
    pub until: Option<String>,
    #[command(flatten)]
    pub common: RunArgs,
}

/// Where run state lives.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// Run store: a SQLite file path, or dynamodb://TABLE to share runs between machines
    /// (default: <project>/.envelope/state.db).
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
