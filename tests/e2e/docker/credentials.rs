//! Registry credentials from the Docker CLI's `config.json`: a real `docker-credential-*`
//! helper script on PATH serves the htpasswd registry for a push and for the pull of a private
//! base image; an `auths` entry pushes too; a wrong password and a missing helper fail with
//! errors that name the registry (and the helper) and never show the secret.

use base64::Engine;
use oci_client::secrets::RegistryAuth;

use super::{local_project, local_run};
use crate::support::docker::remove_images;
use crate::support::docker_config::DockerConfigDir;
use crate::support::registry::oci_digest;
use crate::support::{run_id, stage, status_json, text};
use envelope_tests::env::{parts, unique};

#[tokio::test]
async fn a_credential_helper_pushes_and_pulls_a_private_base_image() {
    let Some((env, _docker)) = parts("credential helper").await else {
        return;
    };
    let registry = env.auth_registry();
    let password = env.auth_password();
    let config = DockerConfigDir::new(&format!(
        r#"{{"credHelpers": {{"{registry}": "envtest"}}}}"#
    ));
    config.add_helper("envtest", "AWS", &password);

    // A push to the htpasswd registry, under the image's whole name (`envelope-e2e/…`).
    let image = unique("envelope-e2e/helper-base");
    let (project, source) = local_project(
        &image,
        &format!("FROM {}\nCOPY hello /hello\n", env.base_image()),
    );
    let mut command = local_run(env, project.path(), source.path(), Some(registry));
    config.apply(&mut command);
    let output = command.output().unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(!all.contains(&password), "the password was printed:\n{all}");
    let record = status_json(env, project.path(), &run_id(&output));
    let digest = stage(&record, "push")["outputs"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let auth = RegistryAuth::Basic("AWS".into(), password.clone());
    assert_eq!(oci_digest(registry, &image, "e2e", &auth).await, digest);
    assert!(
        config.calls().contains(&format!("get {registry}")),
        "the helper was asked: {:?}",
        config.calls()
    );

    // The pushed image as a private base image: the daemon must pull it, so its local tag
    // goes first.
    let pushed = format!("{registry}/{image}:e2e");
    remove_images(env.docker_cli(), std::slice::from_ref(&pushed));
    let calls_before = config.calls().len();
    let app = unique("envelope-e2e/helper-app");
    let (project, source) = local_project(&app, &format!("FROM {pushed}\nCOPY hello /app\n"));
    let mut command = local_run(env, project.path(), source.path(), None);
    config.apply(&mut command);
    let output = command.output().unwrap();
    let all = text(&output);
    remove_images(env.docker_cli(), &[pushed, format!("{app}:e2e")]);
    assert_eq!(output.status.code(), Some(0), "{all}");
    assert!(!all.contains(&password), "the password was printed:\n{all}");
    assert!(
        config.calls().len() > calls_before,
        "the daemon's pull asked the helper: {:?}",
        config.calls()
    );
}

#[tokio::test]
async fn auths_push_and_a_wrong_password_or_missing_helper_is_named() {
    let Some((env, _docker)) = parts("auths").await else {
        return;
    };
    let registry = env.auth_registry();
    let password = env.auth_password();
    let auths = |password: &str| {
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
        DockerConfigDir::new(&format!(
            r#"{{"auths": {{"{registry}": {{"auth": "{auth}"}}}}}}"#
        ))
    };
    let image = unique("envelope-e2e/auths");
    let (project, source) = local_project(
        &image,
        &format!("FROM {}\nCOPY hello /hello\n", env.base_image()),
    );
    let run = |config: &DockerConfigDir| {
        let mut command = local_run(env, project.path(), source.path(), Some(registry));
        config.apply(&mut command);
        command.output().unwrap()
    };

    let right = run(&auths(&password));
    let all = text(&right);
    assert_eq!(right.status.code(), Some(0), "{all}");
    let auth = RegistryAuth::Basic("AWS".into(), password.clone());
    oci_digest(registry, &image, "e2e", &auth).await;

    let wrong_password = "wrong-password-that-must-not-be-printed";
    let wrong = run(&auths(wrong_password));
    let all = text(&wrong);
    eprintln!("{all}");
    assert_ne!(wrong.status.code(), Some(0), "{all}");
    assert!(
        all.contains(&format!(
            "the registry at {registry} refused the credentials of user `AWS`"
        )),
        "the registry is named:\n{all}"
    );
    assert!(
        !all.contains(wrong_password),
        "the password was printed:\n{all}"
    );

    let missing = DockerConfigDir::new(&format!(
        r#"{{"credHelpers": {{"{registry}": "envmissing"}}}}"#
    ));
    let output = run(&missing);
    let all = text(&output);
    eprintln!("{all}");
    assert_eq!(output.status.code(), Some(6), "{all}");
    assert!(
        all.contains(&format!(
            "the Docker credential helper `docker-credential-envmissing` (named by `credHelpers` \
             in {}) for registry {registry} is not on PATH; install it, or remove it from the \
             configuration",
            missing.path().join("config.json").display()
        )),
        "{all}"
    );
    remove_images(env.docker_cli(), &[format!("{registry}/{image}:e2e")]);
}
