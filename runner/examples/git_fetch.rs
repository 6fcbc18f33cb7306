//! Runs the source stage once from the command line; `scripts/bench-git` times it.
//!
//! ```text
//! git_fetch <url> <reference> <cache-dir> <checkout-dir> [--shallow] [--verbose]
//! ```
//!
//! The token, if any, comes from the environment variable `GIT_FETCH_TOKEN`. Prints the
//! resolved sha and whether the mirror was reused; with `--verbose`, every progress event with
//! the milliseconds since start on stderr.
// A benchmark or development tool, not product code: it may panic on a broken set-up.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use envelope_runner::exec::source::{SourceRequest, fetch};
use envelope_runner::secret::Secret;

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let shallow = arguments.iter().any(|argument| argument == "--shallow");
    let verbose = arguments.iter().any(|argument| argument == "--verbose");
    let positional: Vec<&String> = arguments
        .iter()
        .filter(|argument| !argument.starts_with("--"))
        .collect();
    let [url, reference, cache_dir, checkout_dir] = positional[..] else {
        eprintln!("usage: git_fetch <url> <reference> <cache-dir> <checkout-dir> [--shallow]");
        return ExitCode::from(2);
    };
    let request = SourceRequest {
        url: url.clone(),
        reference: reference.clone(),
        expected_sha: None,
        token: std::env::var("GIT_FETCH_TOKEN").ok().map(Secret::new),
        cache_dir: PathBuf::from(cache_dir),
        checkout_dir: PathBuf::from(checkout_dir),
        shallow_without_mirror: shallow,
    };
    let start = Instant::now();
    let result = fetch(&request, &mut |event| {
        if verbose {
            eprintln!("{:>6} ms {event:?}", start.elapsed().as_millis());
        }
    });
    if verbose {
        eprintln!("{:>6} ms done", start.elapsed().as_millis());
    }
    match result {
        Ok(output) => {
            println!(
                "{} fetched_from_mirror={}",
                output.sha, output.fetched_from_mirror
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
