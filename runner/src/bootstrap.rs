//! What both binaries (`envelope-runner` and `envelope-agent`) do before their real work:
//! parse the command line with clap's own help and errors, start the async runtime, and
//! wait for the signal to stop.

use crate::exit_codes;

/// The parsed command line, or the exit code after clap printed help, the version or a usage
/// error (0 for help and version, [`exit_codes::INVALID_INPUT`] otherwise).
pub fn parse_args<C: clap::Parser>(
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<C, i32> {
    C::try_parse_from(args).map_err(|error| {
        let _ = error.print();
        match error.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                exit_codes::OK
            }
            _ => exit_codes::INVALID_INPUT,
        }
    })
}

/// A multi-threaded runtime (`worker_threads` of them, or one per core), or the exit code
/// after saying why there is none.
pub fn runtime(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime, i32> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = worker_threads {
        builder.worker_threads(threads);
    }
    builder.enable_all().build().map_err(|error| {
        eprintln!("error: cannot start the async runtime: {error}");
        exit_codes::ENVIRONMENT
    })
}

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM.
pub async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Write `text` to standard output (see [`write_output`]).
pub fn print_stdout(text: &str) -> i32 {
    write_output(&mut std::io::stdout().lock(), text.as_bytes())
}

/// Write a command's whole output. A reader that went away (`… | head`) ends the output
/// quietly with [`exit_codes::OK`], as other command-line tools do; any other write error is
/// said on standard error with [`exit_codes::ENVIRONMENT`].
pub fn write_output(out: &mut dyn std::io::Write, bytes: &[u8]) -> i32 {
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => exit_codes::OK,
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => exit_codes::OK,
        Err(error) => {
            eprintln!("error: cannot write to standard output: {error}");
            exit_codes::ENVIRONMENT
        }
    }
}
