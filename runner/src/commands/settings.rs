//! What a run command (`run`, `resume`, `retry`, `rollback`) takes from its options and the
//! environment: the driver's [`RunSettings`] (cache folder, user, timings, cancellation on
//! signals) and the reporter `--log-format` asks for.

use super::shared::current_user;
use crate::cli::{OutputFormat, RunArgs};
use crate::exec::driver::RunSettings;
use crate::exit_codes;
use crate::report::{JsonReporter, PlainReporter, Reporter, TerminalReporter};
use crate::store::Clock;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

fn cache_dir(args: &RunArgs) -> PathBuf {
    args.cache_dir.clone().unwrap_or_else(|| {
        std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("envelope-runner")
    })
}

pub(super) fn reporter(args: &RunArgs) -> Box<dyn Reporter> {
    match args.log_format {
        OutputFormat::Json => Box::new(JsonReporter::new(std::io::stderr())),
        OutputFormat::Text if std::io::stderr().is_terminal() => Box::new(TerminalReporter::new()),
        OutputFormat::Text => Box::new(PlainReporter::new(std::io::stderr(), true)),
    }
}

pub(super) fn settings(args: &RunArgs) -> RunSettings {
    RunSettings {
        cache_dir: cache_dir(args),
        until: None,
        local_source: None,
        local_registry: None,
        build_secrets: Default::default(),
        registry_endpoint: args.registry_endpoint.clone(),
        user: current_user(),
        approval_poll: Duration::from_secs_f64(args.approval_poll.max(0.05)),
        lease_ttl: Duration::from_secs_f64(args.lease_ttl.max(1.0)),
        cancel: cancel_on_signals(),
        region: args.region.clone(),
        // The store a command opens measures its leases against the system clock too.
        clock: Clock::system(),
        run_link: None,
    }
}

/// A token cancelled by Ctrl-C or SIGTERM, so a run checkpoints its stage and exits 130.
fn cancel_on_signals() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        crate::bootstrap::stop_signal().await;
        eprintln!(
            "envelope-runner: stopping: checkpointing the current stage (signal again to force)"
        );
        cancel.cancel();
        // A second signal ends the process at once.
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(exit_codes::CANCELLED);
    });
    token
}
