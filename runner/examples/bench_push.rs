//! Benchmark: a re-push of an unchanged image, envelope-runner's push stage next to
//! `docker push` of the same image to the same registry.
//!
//! The figure that matters is "layer bytes uploaded" on a re-push: it must be 0, because every
//! layer is already in the registry. Times are wall-clock, daemon and registry included;
//! envelope's push also checks every tag's digest against the registry (oci-client HEAD).
//!
//! Needs the test environment (`scripts/test-env up`). Usually run through `scripts/bench-push`:
//!
//! ```text
//! cargo run -p envelope-runner --example bench_push -- [--runs 5] [--payload-mb 16]
//!     [--registry 127.0.0.1:5000] [--base-image envelope-test/busybox:1] [--docker /usr/bin/docker]
//! ```
// A benchmark or development tool, not product code: it may panic on a broken set-up.
#![allow(clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use envelope_runner::exec::push::{PushOutput, PushRequest, push};

struct Options {
    runs: usize,
    payload_mb: usize,
    registry: String,
    base_image: String,
    docker_cli: String,
}

impl Options {
    fn from_args() -> Result<Options, String> {
        let env_or = |name: &str, default: &str| std::env::var(name).unwrap_or(default.into());
        let mut options = Options {
            runs: 5,
            payload_mb: 16,
            registry: env_or("ENVELOPE_TEST_REGISTRY", "127.0.0.1:5000"),
            base_image: env_or("ENVELOPE_TEST_BASE_IMAGE", "envelope-test/busybox:1"),
            docker_cli: env_or("ENVELOPE_TEST_DOCKER_CLI", "/usr/bin/docker"),
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || args.next().ok_or(format!("{flag} needs a value"));
            match flag.as_str() {
                "--runs" => options.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
                "--payload-mb" => {
                    options.payload_mb =
                        value()?.parse().map_err(|e| format!("--payload-mb: {e}"))?
                }
                "--registry" => options.registry = value()?,
                "--base-image" => options.base_image = value()?,
                "--docker" => options.docker_cli = value()?,
                "-h" | "--help" => {
                    return Err(
                        "usage: bench_push [--runs N] [--payload-mb M] [--registry HOST:PORT] \
                                [--base-image IMAGE] [--docker PATH]"
                            .to_string(),
                    );
                }
                other => return Err(format!("unknown argument `{other}` (try --help)")),
            }
        }
        if options.runs == 0 {
            return Err("--runs must be at least 1".to_string());
        }
        Ok(options)
    }
}

#[tokio::main]
async fn main() {
    let options = match Options::from_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("bench_push: {message}");
            std::process::exit(2);
        }
    };
    if let Err(message) = run(&options).await {
        eprintln!("bench_push: {message}");
        std::process::exit(1);
    }
}

async fn run(options: &Options) -> Result<(), String> {
    let docker = Docker::connect_with_local_defaults()
        .map_err(|e| format!("cannot connect to Docker: {e}"))?
        .negotiate_version()
        .await
        .map_err(|e| format!("Docker does not answer: {e}"))?;

    let unique = format!(
        "{}-{:x}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let image = build_image(options, &unique)?;
    let result = measure(&docker, options, &unique, &image.id).await;
    drop(image);
    result
}

async fn measure(
    docker: &Docker,
    options: &Options,
    unique: &str,
    image_id: &str,
) -> Result<(), String> {
    let repository = format!("{}/envelope-bench/push-{unique}", options.registry);
    let request = PushRequest {
        local_image: image_id.to_string(),
        repository: repository.clone(),
        tags: vec!["v1".to_string()],
        credentials: None,
        endpoint_override: None,
    };
    let quiet = |_| {};

    let started = Instant::now();
    let cold = push(docker, &request, &quiet)
        .await
        .map_err(|e| format!("first push: {e}"))?;
    let cold_time = started.elapsed();

    let mut envelope_times = Vec::new();
    let mut envelope_last: Option<PushOutput> = None;
    let mut envelope_bytes = 0;
    for _ in 0..options.runs {
        let started = Instant::now();
        let output = push(docker, &request, &quiet)
            .await
            .map_err(|e| format!("re-push: {e}"))?;
        envelope_times.push(started.elapsed());
        envelope_bytes += output.bytes_uploaded;
        if output.digest != cold.digest {
            return Err(format!(
                "the re-push changed the digest: {} then {}",
                cold.digest, output.digest
            ));
        }
        envelope_last = Some(output);
    }
    let envelope_last = envelope_last.expect("at least one run");

    // The same image, same registry and tag, pushed by the Docker CLI.
    let mut cli_times = Vec::new();
    let (mut cli_pushed, mut cli_existing) = (0, 0);
    for _ in 0..options.runs {
        let started = Instant::now();
        let output = Command::new(&options.docker_cli)
            .args(["push", &format!("{repository}:v1")])
            .output()
            .map_err(|e| format!("running {} push: {e}", options.docker_cli))?;
        cli_times.push(started.elapsed());
        if !output.status.success() {
            return Err(format!(
                "docker push failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        cli_pushed = text.lines().filter(|l| l.ends_with(": Pushed")).count();
        cli_existing = text
            .lines()
            .filter(|l| l.ends_with(": Layer already exists"))
            .count();
    }

    println!(
        "re-push of an unchanged image: {} MiB of random payload in 2 layers on {}, registry {}, \
         {} run(s) each",
        options.payload_mb, options.base_image, options.registry, options.runs
    );
    println!();
    println!(
        "{:<30} {:>8} {:>8} {:>14} {:>9} {:>9} {:>9}",
        "", "uploaded", "skipped", "layer bytes", "median", "min", "max"
    );
    println!(
        "{:<30} {:>8} {:>8} {:>14} {:>9} {:>9} {:>9}",
        "envelope push, first",
        cold.layers_uploaded,
        cold.layers_skipped,
        cold.bytes_uploaded,
        millis(cold_time),
        "",
        ""
    );
    let (median, min, max) = stats(&mut envelope_times);
    println!(
        "{:<30} {:>8} {:>8} {:>14} {:>9} {:>9} {:>9}",
        "envelope push, re-push",
        envelope_last.layers_uploaded,
        envelope_last.layers_skipped,
        envelope_bytes,
        millis(median),
        millis(min),
        millis(max)
    );
    let (median, min, max) = stats(&mut cli_times);
    println!(
        "{:<30} {:>8} {:>8} {:>14} {:>9} {:>9} {:>9}",
        format!("{} push, re-push", options.docker_cli),
        cli_pushed,
        cli_existing,
        "(not shown)",
        millis(median),
        millis(min),
        millis(max)
    );
    println!();
    println!(
        "layer bytes uploaded by {} envelope re-push(es): {envelope_bytes} (target 0)",
        options.runs
    );
    println!("digest: {}", cold.digest);
    if envelope_bytes != 0 {
        return Err(format!(
            "a re-push of an unchanged image uploaded {envelope_bytes} layer bytes; expected 0"
        ));
    }
    Ok(())
}

fn stats(times: &mut [Duration]) -> (Duration, Duration, Duration) {
    times.sort();
    (times[times.len() / 2], times[0], times[times.len() - 1])
}

fn millis(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1000.0)
}

/// A freshly built image (two layers of random bytes on the base image), removed on drop.
struct BuiltImage {
    docker_cli: String,
    id: String,
}

impl Drop for BuiltImage {
    fn drop(&mut self) {
        let _ = Command::new(&self.docker_cli)
            .args(["image", "rm", "-f", &self.id])
            .output();
    }
}

fn build_image(options: &Options, unique: &str) -> Result<BuiltImage, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("making a build context: {e}"))?;
    let half = options.payload_mb * 1024 * 1024 / 2;
    for (name, seed) in [("a", 1u64), ("b", 2u64)] {
        std::fs::write(dir.path().join(name), random_bytes(unique, seed, half))
            .map_err(|e| format!("writing the payload: {e}"))?;
    }
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}\nCOPY a /payload/a\nCOPY b /payload/b\n",
            options.base_image
        ),
    )
    .map_err(|e| format!("writing the Dockerfile: {e}"))?;
    let output = Command::new(&options.docker_cli)
        .env("DOCKER_BUILDKIT", "1")
        .args([
            "build",
            "-q",
            "-t",
            &format!("envelope-bench/push-src:{unique}"),
        ])
        .arg(dir.path())
        .output()
        .map_err(|e| format!("running {} build: {e}", options.docker_cli))?;
    if !output.status.success() {
        return Err(format!(
            "docker build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(BuiltImage {
        docker_cli: options.docker_cli.clone(),
        id: String::from_utf8_lossy(&output.stdout).trim().to_string(),
    })
}

/// Bytes that do not compress (xorshift), different per run and per layer.
fn random_bytes(unique: &str, seed: u64, len: usize) -> Vec<u8> {
    let mut state = unique
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64 ^ seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
