//! Promotion to an environment that pulls from another registry, through the binary: staging
//! pushes to the plain registry (127.0.0.1:5000), prod's `aws.registry` is ministack's ECR
//! (127.0.0.1:4566), so `promote --from staging --to prod` copies the image by digest into
//! prod's repository before prod's deploy, and prod runs that copy at the very digest staging
//! ran. A second promotion uploads no blob again. A third environment pulls from the htpasswd
//! registry on 127.0.0.1:5001: with its password the copy lands there at the same digest; with
//! a wrong one the promotion fails at the copy (exit 6, both repositories named) and deploys
//! nothing. A fourth names its registry as ECR does (`<account>.dkr.ecr.<region>.amazonaws.com`,
//! which cannot be reached here): with `ENVELOPE_REGISTRY_ENDPOINT` at ministack's ECR, the copy
//! goes there, as a push does, and the image keeps its ECR name.

use std::path::Path;
use std::process::Output;

use oci_client::secrets::RegistryAuth;

use crate::support::ecs::{
    Cluster, ROLES, api_project, app_repository, images, parts, pipeline_runner, push_as, record_of,
};
use crate::support::registry::oci_digest;
use crate::support::{run_id, stage, text};
use envelope_tests::env::{TestEnv, unique};

/// A repository in ministack's ECR, deleted (with its images) when dropped.
struct EcrRepository {
    env: &'static TestEnv,
    name: String,
}

impl EcrRepository {
    async fn create(env: &'static TestEnv, name: &str) -> EcrRepository {
        aws_sdk_ecr::Client::new(&env.sdk_config(env.endpoint()).await)
            .create_repository()
            .repository_name(name)
            .send()
            .await
            .unwrap();
        EcrRepository {
            env,
            name: name.to_owned(),
        }
    }
}

impl Drop for EcrRepository {
    fn drop(&mut self) {
        let env = self.env;
        let name = self.name.clone();
        crate::support::cleanup::on_own_runtime(async move {
            let _ = aws_sdk_ecr::Client::new(&env.sdk_config(env.endpoint()).await)
                .delete_repository()
                .repository_name(name)
                .force(true)
                .send()
                .await;
        });
    }
}

/// The project's `api` pipeline builds `image`, and has environments `staging` (its own
/// cluster and service names, the plain registry), `prod` (ministack's ECR), `vault` (the
/// htpasswd registry) and `ecr` (ECR by its AWS name), none with an approval gate.
fn with_registries(
    project: &Path,
    image: &str,
    staging: &Cluster,
    [ecr, vault, by_name]: [&str; 3],
) {
    let file = project.join("pipelines/api.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    let built = yaml
        .lines()
        .find_map(|line| line.trim().strip_prefix("image: "))
        .unwrap()
        .to_owned();
    let services: String = ROLES
        .iter()
        .map(|role| format!("      envelope-prod-{role}: envelope-staging-{role}\n"))
        .collect();
    let environments = format!(
        "environments:\n  staging:\n    cluster: {}\n    services:\n{services}    approval: skip\n  prod:\n    aws: {{registry: {ecr}}}\n    approval: skip\n  vault:\n    aws: {{registry: {vault}}}\n    approval: skip\n  ecr:\n    aws: {{registry: {by_name}}}\n    approval: skip\nstages:\n",
        staging.name,
    );
    let yaml = yaml.replacen("stages:\n", &environments, 1).replacen(
        &format!("image: {built}"),
        &format!("image: {image}"),
        1,
    );
    std::fs::write(file, yaml).unwrap();
}

/// ECR's registry as a user writes it: the emulator's account, in the test environment's
/// region.
fn ecr_by_name(env: &TestEnv) -> String {
    format!("000000000000.dkr.ecr.{}.amazonaws.com", env.region())
}

fn runner(project: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    pipeline_runner(project)
        .env_remove("ENVELOPE_REGISTRY_USERNAME")
        .env_remove("ENVELOPE_REGISTRY_PASSWORD")
        .env_remove("ENVELOPE_REGISTRY_PASSWORD_FILE")
        .envs(vars.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

/// The `copied` output line of a promotion's push stage (the progress on stderr).
fn copied(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .find(|line| line.contains("[push] copied: "))
        .unwrap_or_else(|| panic!("no copied line:\n{}", text(output)))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_to_another_registry_copies_the_digest_once_and_deploys_the_copy() {
    let Some(env) = parts("promote across registries").await else {
        return;
    };
    let image = format!("envelope-e2e/{}", unique("promote-copy"));
    let ecr = env.var("ENVELOPE_TEST_ECR_REGISTRY").to_owned();
    let _repository = EcrRepository::create(env, &image).await;
    // Each environment's services run v1 from its own registry before the promotion.
    let v1 = images(env).v1.clone();
    let staging_v1 = push_as(env, &v1, &format!("{}/{image}:v1", env.registry()));
    let prod_v1 = push_as(env, &v1, &format!("{ecr}/{image}:v1"));
    let staging = Cluster::create_running(env, "envelope-staging", &staging_v1).await;
    let prod = Cluster::create_running(env, "envelope-prod", &prod_v1).await;
    let prod_before = prod.task_definitions().await;
    let (_repo, url) = app_repository(env, "v2.0.0", "");
    let project = api_project(env, &prod, &url, 0);
    with_registries(
        project.path(),
        &image,
        &staging,
        [&ecr, env.auth_registry(), &ecr_by_name(env)],
    );
    let project = project.path().to_path_buf();
    let password_file = env
        .var("ENVELOPE_TEST_AUTH_REGISTRY_PASSWORD_FILE")
        .to_owned();

    let (staged, refused, vaulted) = tokio::task::spawn_blocking({
        let project = project.clone();
        let password_file = password_file.clone();
        move || {
            let staged = runner(
                &project,
                &["run", "api", "--env", "staging", "--ref", "v2.0.0"],
                &[],
            );
            let promote_to_vault = ["promote", "api", "--from", "staging", "--to", "vault"];
            let refused = runner(
                &project,
                &[&promote_to_vault[..], &["--allow-unverified"]].concat(),
                &[
                    ("ENVELOPE_REGISTRY_USERNAME", "AWS"),
                    ("ENVELOPE_REGISTRY_PASSWORD", "not-the-password"),
                ],
            );
            let vaulted = runner(
                &project,
                &[
                    &promote_to_vault[..],
                    &["--allow-unverified", "--until", "push"],
                ]
                .concat(),
                &[
                    ("ENVELOPE_REGISTRY_USERNAME", "AWS"),
                    ("ENVELOPE_REGISTRY_PASSWORD_FILE", &password_file),
                ],
            );
            (staged, refused, vaulted)
        }
    })
    .await
    .unwrap();
    assert_eq!(staged.status.code(), Some(0), "{}", text(&staged));
    let staging_record = record_of(&project, &run_id(&staged));
    let staged_image = stage(&staging_record, "push")["outputs"]["image"]
        .as_str()
        .unwrap()
        .to_owned();
    let (staged_repository, digest) = staged_image.split_once('@').unwrap();
    assert_eq!(staged_repository, format!("{}/{image}", env.registry()));

    // Refused credentials for the target: the copy fails, both repositories named, nothing
    // deployed; the password never shows.
    assert_eq!(refused.status.code(), Some(6), "{}", text(&refused));
    let said = text(&refused);
    assert!(
        said.contains(&format!(
            "cannot copy {staged_image} to {}/{image}",
            env.auth_registry()
        )) && said.contains("check the credentials of both registries"),
        "{said}"
    );
    assert!(!said.contains("not-the-password"), "{said}");
    let refused_record = record_of(&project, &run_id(&refused));
    assert_eq!(stage(&refused_record, "push")["status"], "failed");
    assert_eq!(stage(&refused_record, "deploy")["status"], "skipped");
    assert_eq!(
        prod.task_definitions().await,
        prod_before,
        "nothing deployed"
    );

    // With the password the copy lands in the htpasswd registry at the same digest.
    // `--until push` stops the promotion after its copy (exit 0, "stopped as asked").
    assert_eq!(vaulted.status.code(), Some(0), "{}", text(&vaulted));
    assert!(
        text(&vaulted).contains("stopped as asked"),
        "{}",
        text(&vaulted)
    );
    let vaulted_record = record_of(&project, &run_id(&vaulted));
    assert_eq!(
        stage(&vaulted_record, "push")["outputs"]["image"],
        format!("{}/{image}@{digest}", env.auth_registry()).as_str()
    );
    let auth = RegistryAuth::Basic("AWS".into(), env.auth_password());
    assert_eq!(
        oci_digest(
            env.auth_registry(),
            &image,
            &format!("{}-v2.0.0", prod.name),
            &auth
        )
        .await,
        digest,
        "the copy also has the push stage's tag"
    );

    // To prod (ministack's ECR): copied, then deployed from prod's repository.
    let (promoted, again) = tokio::task::spawn_blocking({
        let project = project.clone();
        move || {
            let promote = [
                "promote",
                "api",
                "--from",
                "staging",
                "--to",
                "prod",
                "--allow-unverified",
            ];
            (
                runner(&project, &promote, &[]),
                runner(&project, &promote, &[]),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(promoted.status.code(), Some(0), "{}", text(&promoted));
    let prod_image = format!("{ecr}/{image}@{digest}");
    let first = copied(&promoted);
    assert!(
        first.contains(&format!("from {staged_image}: ")) && !first.contains(": 0 blobs copied"),
        "the first promotion uploads the release's blobs: {first}"
    );
    let record = record_of(&project, &run_id(&promoted));
    assert_eq!(record["pipeline"], "api@prod");
    assert_eq!(stage(&record, "build")["status"], "skipped");
    assert_eq!(
        stage(&record, "push")["outputs"]["image"],
        prod_image.as_str()
    );
    assert_eq!(stage(&record, "deploy")["status"], "succeeded");
    for role in ROLES {
        prod.settled_images(&format!("envelope-prod-{role}"), role, &prod_image)
            .await;
    }
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let second = copied(&again);
    assert!(
        second.contains(": 0 blobs copied (0 bytes), ") && !second.contains(", 0 already in"),
        "the second promotion finds every blob there: {second}"
    );

    // ECR by its AWS name, reached through the endpoint: ministack's registry, which keeps one
    // store for every region, holds every blob already (prod's copy).
    let by_name = tokio::task::spawn_blocking({
        let project = project.clone();
        move || {
            runner(
                &project,
                &[
                    "promote",
                    "api",
                    "--from",
                    "staging",
                    "--to",
                    "ecr",
                    "--allow-unverified",
                    "--until",
                    "push",
                ],
                &[("ENVELOPE_REGISTRY_ENDPOINT", &ecr)],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(by_name.status.code(), Some(0), "{}", text(&by_name));
    let line = copied(&by_name);
    assert!(
        line.contains(": 0 blobs copied (0 bytes), ")
            && line.contains(&format!(" already in {}/{image}", ecr_by_name(env))),
        "the copy reached the endpoint: {line}"
    );
    let record = record_of(&project, &run_id(&by_name));
    assert_eq!(
        stage(&record, "push")["outputs"]["image"],
        format!("{}/{image}@{digest}", ecr_by_name(env)).as_str()
    );
}
