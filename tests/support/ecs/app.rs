//! The app the ECS tests deploy: its source (a Dockerfile on the test base image and the
//! scripts every role and the migration run), and that source built in three versions, pushed
//! to the plain registry and pinned by digest.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::env::TestEnv;

/// The app image in three versions, pushed to the plain registry and pinned by digest.
pub struct Images {
    pub repository: String,
    /// What the services run before the deploy.
    pub v1: String,
    /// A good new release.
    pub v2: String,
    /// A release whose worker exits at once ("cannot connect to the queue").
    pub bad: String,
    /// v1's content under another repository: a sidecar that must keep its image.
    pub sidecar: String,
}

const START: &str = r#"#!/bin/sh
# /app/start ROLE: what a service runs. Roles listed in /app/crash-roles exit at once.
role="${1:-app}"
echo "$role: starting version $(cat /app/version)"
if grep -qx "$role" /app/crash-roles; then
    echo "$role: cannot connect to the queue"
    exit 1
fi
trap 'echo "$role: stopping"; exit 0' TERM INT
while true; do sleep 1; done
"#;

const MIGRATE: &str = r#"#!/bin/sh
# /app/migrate [EXIT-CODE] [LINES]: what `php artisan migrate --force` stands for.
code="${1:-0}"
lines="${2:-30}"
i=1
while [ "$i" -le "$lines" ]; do
    echo "Migrating: 2026_01_01_0000$(printf %02d "$i")_step_$i"
    i=$((i + 1))
done
echo "migration finished with exit code $code"
exit "$code"
"#;

/// Writes the app's source into `dir`: `Dockerfile` and `app/` (`version`, `crash-roles`, and
/// the executable `start` and `migrate`), with `crash_roles` roles that exit at once.
pub fn write_source(env: &TestEnv, dir: &Path, version: &str, crash_roles: &str) {
    let app = dir.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("version"), format!("{version}\n")).unwrap();
    std::fs::write(app.join("crash-roles"), crash_roles).unwrap();
    for (name, text) in [("start", START), ("migrate", MIGRATE)] {
        std::fs::write(app.join(name), text).unwrap();
        let mut permissions = std::fs::metadata(app.join(name)).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(app.join(name), permissions).unwrap();
    }
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {}\nCOPY app /app\n", env.base_image()),
    )
    .unwrap();
}

/// The images, built and pushed once per test process.
pub fn images(env: &TestEnv) -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let repository = format!("{}/envelope-e2e/ecs-app", env.registry());
        let build = |version: &str, crash_roles: &str, reference: &str| -> String {
            let dir = tempfile::tempdir().unwrap();
            write_source(env, dir.path(), version, crash_roles);
            docker(
                env,
                &[
                    "build",
                    "-q",
                    "-t",
                    reference,
                    &dir.path().display().to_string(),
                ],
            );
            push(env, reference)
        };
        let v1 = build("v1", "", &format!("{repository}:v1"));
        let v2 = build("v2", "", &format!("{repository}:v2"));
        let bad = build("v3-bad", "worker\n", &format!("{repository}:v3-bad"));
        let sidecar_tag = format!("{}/envelope-e2e/ecs-sidecar:1", env.registry());
        docker(env, &["tag", &format!("{repository}:v1"), &sidecar_tag]);
        let sidecar = push(env, &sidecar_tag);
        Images {
            repository,
            v1,
            v2,
            bad,
            sidecar,
        }
    })
}

/// `image` (any reference the daemon has) tagged `reference` (`repo:tag`) and pushed there:
/// `repo@sha256:…`.
pub fn push_as(env: &TestEnv, image: &str, reference: &str) -> String {
    docker(env, &["pull", "-q", image]);
    docker(env, &["tag", image, reference]);
    push(env, reference)
}

pub(super) fn docker(env: &TestEnv, args: &[&str]) -> String {
    try_docker(env, args).unwrap_or_else(|error| panic!("docker {args:?} failed: {error}"))
}

/// The docker CLI's output, or its error output when it fails.
fn try_docker(env: &TestEnv, args: &[&str]) -> Result<String, String> {
    let output = Command::new(env.docker_cli())
        .env("DOCKER_BUILDKIT", "1")
        .args(args)
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

/// Pushes `reference` (`repo:tag`) and returns `repo@sha256:…`. Every test process pushes the
/// same images at its start, and the registry sometimes answers one of several identical
/// uploads at once with a 500: a failed push is tried twice more, a second apart.
pub(super) fn push(env: &TestEnv, reference: &str) -> String {
    let mut attempt = 1;
    let out = loop {
        match try_docker(env, &["push", reference]) {
            Ok(out) => break out,
            Err(error) if attempt < 3 => {
                eprintln!("docker push {reference} (attempt {attempt}) failed: {error}");
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(error) => panic!("docker push {reference} failed {attempt} times: {error}"),
        }
    };
    let digest = out
        .split_whitespace()
        .skip_while(|word| *word != "digest:")
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in docker push output:\n{out}"));
    let repository = reference.rsplit_once(':').unwrap().0;
    format!("{repository}@{digest}")
}
