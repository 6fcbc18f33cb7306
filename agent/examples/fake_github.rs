//! The integration tests' fake GitHub as a program, for `scripts/bench-agent`: serves
//! `--repositories N` repositories (`acme/app-000`, …) with one old release each, and
//! `GET /_stats` with the number of requests answered, by status; `POST
//! /_publish/{owner}/{repo}/{tag}` publishes a release (the agents drill).
//!
//!     fake_github --listen 127.0.0.1:8900 --repositories 100
// A benchmark or development tool, not product code: it may panic on a broken set-up.
#![allow(clippy::unwrap_used)]

#[path = "../tests/it/fake_github.rs"]
mod fake_github;

use fake_github::{FakeGithub, ReleaseSpec};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut repositories = 100usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDRESS"),
            "--repositories" => {
                repositories = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--repositories N")
            }
            other => panic!("unknown argument {other}; use --listen ADDRESS --repositories N"),
        }
    }
    let github =
        FakeGithub::start_on(listen.parse().expect("an address such as 127.0.0.1:8900")).await;
    for index in 0..repositories {
        let repository = format!("acme/app-{index:03}");
        github.publish(
            &repository,
            ReleaseSpec {
                published_at: chrono::Utc::now() - chrono::Duration::days(30),
                ..ReleaseSpec::published("v1.0.0")
            },
        );
    }
    println!("listening on {}", github.url);
    let _ = tokio::signal::ctrl_c().await;
}
