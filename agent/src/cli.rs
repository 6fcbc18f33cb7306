//! Command-line interface of `envelope-agent`: parse arguments, load the configuration, run
//! until SIGTERM or Ctrl-C.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use envelope_runner::{bootstrap, exit_codes};

use crate::agent::Agent;
use crate::config::{self, Credentials};

/// Watches GitHub releases and runs envelope-runner pipelines for them; serves the approval
/// web UI, the release webhook, /healthz and /metrics.
#[derive(Debug, Parser)]
#[command(name = "envelope-agent", version, about, long_about = None, max_term_width = 100)]
#[command(
    after_help = "Stops on SIGTERM or Ctrl-C: polling ends, running stages get `shutdown_grace` to \
finish, and a restarted agent resumes what was left. Exit codes: 0 stopped cleanly, 2 invalid \
configuration or pipeline, 6 environment unusable (address in use, secret missing, approver token shorter than 32 \
characters), 7 store error."
)]
pub struct Cli {
    /// The agent's configuration file.
    #[arg(
        long,
        short,
        value_name = "FILE",
        env = "ENVELOPE_AGENT_CONFIG",
        default_value = "envelope-agent.yaml"
    )]
    pub config: PathBuf,
    /// Check the configuration, its secrets and the pipelines it names, then exit.
    #[arg(long)]
    pub check: bool,
    /// Print the JSON Schema of the configuration file and exit.
    #[arg(long)]
    pub schema: bool,
    /// Log format: text lines or JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Run the agent as the command line says; returns the exit code.
pub fn main(args: impl IntoIterator<Item = OsString>) -> i32 {
    let cli: Cli = match bootstrap::parse_args(args) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if cli.schema {
        let schema = serde_json::to_string_pretty(&config::schema()).unwrap_or_default();
        return bootstrap::print_stdout(&format!("{schema}\n"));
    }
    init_logging(cli.log_format);
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let settings = match config::load(&cli.config) {
        Ok(settings) => settings,
        Err(diagnostics) => {
            eprint!("{}", diagnostics.render(color));
            return exit_codes::INVALID_INPUT;
        }
    };
    let credentials = match Credentials::from_env(&settings, &|name| std::env::var(name).ok()) {
        Ok(credentials) => credentials,
        Err(problems) => {
            for problem in problems {
                eprintln!("error: {problem}");
            }
            return exit_codes::ENVIRONMENT;
        }
    };
    let runtime = match bootstrap::runtime(Some(2)) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        if cli.check {
            return check(settings).await;
        }
        let agent = match Agent::start(settings, credentials).await {
            Ok(agent) => agent,
            Err(error) => {
                eprintln!("error: {error}");
                return error.exit_code();
            }
        };
        bootstrap::stop_signal().await;
        agent.shutdown().await;
        exit_codes::OK
    })
}

/// `--check`: every pipeline the configuration names loads, and the variables its runs read
/// from the environment are set (exit code 6 naming each one that is not).
async fn check(settings: config::Settings) -> i32 {
    let mut code = exit_codes::OK;
    for repository in &settings.repositories {
        match crate::scheduler::load_pipeline(&settings.project, &repository.pipeline) {
            Ok(compiled) => {
                let missing = crate::check_env::missing_variables(&compiled);
                for (key, name) in &missing {
                    eprintln!(
                        "error: {} → pipeline `{}`: `{key}` names {name}, which is not set in the agent's environment; set it (systemd: Environment= or EnvironmentFile=) or remove `{key}`",
                        repository.repository, compiled.name
                    );
                }
                if !missing.is_empty() {
                    if code == exit_codes::OK {
                        code = exit_codes::ENVIRONMENT;
                    }
                    continue;
                }
                let line = format!(
                    "ok  {} → pipeline `{}`\n",
                    repository.repository, compiled.name
                );
                if bootstrap::print_stdout(&line) != exit_codes::OK {
                    code = exit_codes::ENVIRONMENT;
                }
            }
            Err(message) => {
                eprintln!(
                    "error: {} → pipeline `{}`:\n{message}",
                    repository.repository, repository.pipeline
                );
                code = exit_codes::INVALID_INPUT;
            }
        }
    }
    if let Err(error) = envelope_runner::store::StoreLocation::parse(&settings.store) {
        eprintln!("error: {error}");
        code = exit_codes::INVALID_INPUT;
    }
    code
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("ENVELOPE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,octocrab=warn,hyper=warn,tower_http=warn"));
    // Colour only for a person at a terminal: a service's log (journald, CloudWatch) would
    // keep the escape codes as text.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
