//! Builds a directory with the build stage and prints its steps and how long it took.
//!
//!     cargo run -p envelope-runner --example build_context -- <context-dir> [tag] [runs]
//!
//! With `runs` > 1 the build is repeated (warm builds) and each run's wall time printed, to
//! compare with `DOCKER_BUILDKIT=1 /usr/bin/docker build` of the same directory.
// A benchmark or development tool, not product code: it may panic on a broken set-up.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use envelope_runner::exec::build::{BuildProgress, BuildRequest, build};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let context_dir = PathBuf::from(
        args.next()
            .ok_or("usage: build_context <context-dir> [tag] [runs]")?,
    );
    let tag = args.next();
    let runs: usize = args
        .next()
        .map(|runs| runs.parse())
        .transpose()?
        .unwrap_or(1);

    let docker = bollard::Docker::connect_with_defaults()?
        .negotiate_version()
        .await?;
    let request = BuildRequest {
        context_dir,
        dockerfile: PathBuf::from("Dockerfile"),
        tags: tag.into_iter().collect(),
        ..BuildRequest::default()
    };
    let quiet = runs > 1;
    let show = |event: BuildProgress| {
        if quiet {
            return;
        }
        match event {
            BuildProgress::Step {
                name,
                cached,
                completed: true,
                duration,
                error,
                ..
            } => {
                let state = match (cached, error) {
                    (_, Some(error)) => format!("ERROR {error}"),
                    (true, None) => "CACHED".to_owned(),
                    (false, None) => format!("{:.2}s", duration.unwrap_or_default().as_secs_f64()),
                };
                println!("=> {name} {state}");
            }
            BuildProgress::Log { step, line } => println!("   {step}: {line}"),
            _ => {}
        }
    };
    for run in 1..=runs {
        let started = Instant::now();
        let output = build(&docker, &request, &show).await?;
        println!(
            "run {run}: {} in {:.3}s",
            output.image_id,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
