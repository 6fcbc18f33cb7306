//! An image built for a test on the test base image, with a payload of its own that does not
//! compress; removed with every tag it got when dropped.

use std::process::Command;

use crate::env::{TestEnv, unique};
use crate::support::docker::remove_images;

/// A freshly built image (its own random payload on top of the base image), removed with
/// every tag it gets when dropped.
pub struct TestImage {
    docker_cli: String,
    /// `sha256:…`, as `docker build -q` printed it.
    pub id: String,
}

impl TestImage {
    pub fn build(env: &TestEnv, payload_bytes: usize) -> TestImage {
        let dir = tempfile::tempdir().unwrap();
        let name = unique("envelope-e2e/push-src");
        std::fs::write(
            dir.path().join("payload"),
            pseudo_random(&name, payload_bytes),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!("FROM {}\nCOPY payload /payload\n", env.base_image()),
        )
        .unwrap();
        let output = Command::new(env.docker_cli())
            .env("DOCKER_BUILDKIT", "1")
            .args(["build", "-q", "-t", &format!("{name}:1")])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "docker build failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
        assert!(id.starts_with("sha256:"), "docker build -q printed {id:?}");
        TestImage {
            docker_cli: env.docker_cli().to_string(),
            id,
        }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        remove_images(&self.docker_cli, std::slice::from_ref(&self.id));
    }
}

/// `len` bytes that do not compress, different for every seed.
fn pseudo_random(seed: &str, len: usize) -> Vec<u8> {
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.bytes() {
        state = (state ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
