//! push end-to-end tests: the real Docker daemon pushing to real registries (plain and
//! htpasswd, in `registry`) and to ministack's ECR (`ecr`), checked with oci-client and a plain
//! HTTP HEAD, and pushes whose connection is cut midway (`cut_off`).
//!
//! Every test skips (with a note on stderr) only when ENVELOPE_TEST_REQUIRE_DOCKER is unset and
//! Docker cannot be reached; CI sets it, so there they run for real.

mod copy_index;
mod cut_off;
mod ecr;
mod registry;

use std::sync::{Arc, Mutex};

use envelope_runner::exec::push::{PushProgress, PushRequest, RegistryCredentials};
use envelope_runner::secret::Secret;

use crate::support::test_image::TestImage;

/// A progress callback that keeps every event.
fn recorder() -> (
    Arc<Mutex<Vec<PushProgress>>>,
    impl Fn(PushProgress) + Send + Sync,
) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |event| sink.lock().unwrap().push(event))
}

/// A push of `image` to `repository` under `tags`.
fn request(
    image: &TestImage,
    repository: &str,
    tags: &[&str],
    credentials: Option<RegistryCredentials>,
    endpoint_override: Option<String>,
) -> PushRequest {
    PushRequest {
        local_image: image.id.clone(),
        repository: repository.to_string(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        credentials,
        endpoint_override,
    }
}

/// Credentials for user `AWS` (what ECR calls its user) at `registry`.
fn basic(registry: &str, password: &str) -> RegistryCredentials {
    RegistryCredentials {
        server: registry.to_string(),
        username: "AWS".to_string(),
        password: Secret::new(password),
        expires_at: None,
    }
}
