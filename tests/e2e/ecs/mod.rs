//! ECS end-to-end tests: migrate and deploy against ministack (see `support::ecs`), through
//! the library (`migrate`, `deploy`, `throttling`) and through the binary (`release`,
//! `kill_resume`). Each test builds its own cluster mirroring the Envelope API's; images come
//! from the plain registry on 127.0.0.1:5000, pinned by digest. Library calls go through a
//! [`CountingProxy`](crate::support::counting_proxy::CountingProxy) where a test counts or
//! throttles them.
//!
//! Every test skips (with a note on stderr) only when ENVELOPE_TEST_REQUIRE_DOCKER is unset and
//! Docker or ministack cannot be reached; CI sets it, so there they run for real.

mod deploy;
mod diff;
mod kill_resume;
mod migrate;
mod promote;
mod promote_copy;
mod release;
mod throttling;
mod verify;
mod verify_alarm;
mod verify_target_group;
mod verify_tasks;

use std::sync::{Arc, Mutex};

use envelope_runner::exec::ecs::migrate::MigrationProgress;

/// A progress callback that keeps (and prints) every event.
fn recorder<T: Clone + std::fmt::Debug + Send + 'static>()
-> (Arc<Mutex<Vec<T>>>, impl Fn(T) + Send + Sync) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |event: T| {
        eprintln!("progress: {event:?}");
        sink.lock().unwrap().push(event);
    })
}

/// The log lines a migration's progress carried, in order.
fn log_lines(events: &[MigrationProgress]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            MigrationProgress::Log { line } => Some(line.clone()),
            _ => None,
        })
        .collect()
}

/// What `/app/migrate CODE LINES` prints.
fn expected_migration_lines(code: i32, lines: usize) -> Vec<String> {
    let mut out: Vec<String> = (1..=lines)
        .map(|i| format!("Migrating: 2026_01_01_0000{i:02}_step_{i}"))
        .collect();
    out.push(format!("migration finished with exit code {code}"));
    out
}
