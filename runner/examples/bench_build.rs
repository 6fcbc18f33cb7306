//! One build of a context through the build stage, for scripts/bench-build: prints the wall
//! time in milliseconds and how many Dockerfile steps came from the cache.
//!
//!     bench_build <context-dir> <tag> [cache-from-ref]
// A benchmark or development tool, not product code: it may panic on a broken set-up.
#![allow(clippy::unwrap_used)]

use envelope_runner::exec::build::{BuildProgress, BuildRequest, build};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench_build <context-dir> <tag> [cache-from-ref]";
    let context_dir = PathBuf::from(args.next().ok_or(usage)?);
    let tag = args.next().ok_or(usage)?;
    let cache_from: Vec<String> = args.next().into_iter().collect();
    let docker = bollard::Docker::connect_with_defaults()?
        .negotiate_version()
        .await?;
    let request = BuildRequest {
        context_dir,
        dockerfile: PathBuf::from("Dockerfile"),
        tags: vec![tag],
        cache_from,
        ..BuildRequest::default()
    };
    let steps = AtomicUsize::new(0);
    let cached = AtomicUsize::new(0);
    let count = |event: BuildProgress| {
        if let BuildProgress::Step {
            name,
            cached: was_cached,
            completed: true,
            ..
        } = event
            && ["RUN ", "COPY ", "WORKDIR "]
                .iter()
                .any(|kind| name.contains(kind))
        {
            steps.fetch_add(1, Ordering::Relaxed);
            if was_cached {
                cached.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let started = Instant::now();
    build(&docker, &request, &count).await?;
    println!(
        "{:.1} {}/{}",
        started.elapsed().as_secs_f64() * 1000.0,
        cached.load(Ordering::Relaxed),
        steps.load(Ordering::Relaxed)
    );
    Ok(())
}
