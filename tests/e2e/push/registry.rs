//! Pushes to the plain registry (two tags, one digest; a re-push uploads nothing; a missing
//! image; a registry that is down) and to the htpasswd one (the right and a wrong password).

use std::time::{Duration, Instant};

use envelope_runner::exec::push::{PushError, PushOutput, PushProgress, PushRequest, push};
use oci_client::secrets::RegistryAuth;

use super::{basic, recorder, request};
use crate::support::registry::{assert_sha256, oci_digest};
use crate::support::test_image::TestImage;
use envelope_tests::env::{head_manifest, parts, unique};

#[tokio::test]
async fn a_push_under_two_tags_gives_one_digest_that_both_tags_resolve_to() {
    let Some((env, docker)) = parts("two tags").await else {
        return;
    };
    let image = TestImage::build(env, 256 * 1024);
    let path = unique("envelope-e2e/two-tags");
    let repository = format!("{}/{path}", env.registry());
    let (events, progress) = recorder();

    let output: PushOutput = push(
        &docker,
        &request(&image, &repository, &["v1", "sha-0123abc"], None, None),
        &progress,
    )
    .await
    .unwrap();

    assert_sha256(&output.digest);
    assert_eq!(output.repository, repository);
    assert_eq!(output.image_ref, format!("{repository}@{}", output.digest));
    assert_eq!(output.tags, ["v1", "sha-0123abc"]);
    assert!(output.layers_uploaded >= 1, "{output:?}");
    assert!(
        output.bytes_uploaded >= 256 * 1024,
        "the payload layer was uploaded: {output:?}"
    );
    for tag in ["v1", "sha-0123abc"] {
        let by_oci = oci_digest(env.registry(), &path, tag, &RegistryAuth::Anonymous).await;
        assert_eq!(by_oci, output.digest, "oci-client, tag {tag}");
        let (status, by_head) = head_manifest(env.registry(), &path, tag).await;
        assert_eq!(status, 200, "HEAD tag {tag}");
        assert_eq!(
            by_head.as_deref(),
            Some(output.digest.as_str()),
            "HEAD tag {tag}"
        );
    }

    let events = events.lock().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PushProgress::LayerUploaded))
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, PushProgress::LayerUploading { sent, .. } if *sent > 0))
    );
    for tag in ["v1", "sha-0123abc"] {
        assert!(
            events.iter().any(
                |e| matches!(e, PushProgress::Verified { tag: t, digest } if t == tag && *digest == output.digest)
            ),
            "no Verified event for {tag}: {events:?}"
        );
    }
}

#[tokio::test]
async fn re_pushing_an_unchanged_image_uploads_no_layer_bytes() {
    let Some((env, docker)) = parts("re-push").await else {
        return;
    };
    let image = TestImage::build(env, 512 * 1024);
    let repository = format!("{}/{}", env.registry(), unique("envelope-e2e/re-push"));
    let request = request(&image, &repository, &["v1"], None, None);
    let ignore = |_: PushProgress| {};

    let first = push(&docker, &request, &ignore).await.unwrap();
    assert!(first.bytes_uploaded > 0, "{first:?}");

    let second = push(&docker, &request, &ignore).await.unwrap();
    assert_eq!(second.digest, first.digest);
    assert_eq!(second.bytes_uploaded, 0, "{second:?}");
    assert_eq!(second.layers_uploaded, 0, "{second:?}");
    assert_eq!(
        second.layers_skipped,
        first.layers_uploaded + first.layers_skipped,
        "every layer is skipped: first {first:?}, second {second:?}"
    );
}

#[tokio::test]
async fn a_missing_local_image_is_named() {
    let Some((env, docker)) = parts("missing image").await else {
        return;
    };
    let request = PushRequest {
        local_image: "envelope-e2e/never-built:1".to_string(),
        repository: format!("{}/envelope-e2e/never-built", env.registry()),
        tags: vec!["v1".to_string()],
        credentials: None,
        endpoint_override: None,
    };
    let error = push(&docker, &request, &|_| {}).await.unwrap_err();
    assert!(
        matches!(error, PushError::LocalImageMissing { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("envelope-e2e/never-built:1"),
        "{error}"
    );
    assert!(!error.is_environment());
}

#[tokio::test]
async fn a_registry_that_is_down_is_a_clear_environment_error() {
    let Some((env, docker)) = parts("registry down").await else {
        return;
    };
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let image = TestImage::build(env, 1024);
    let repository = format!("127.0.0.1:{port}/envelope-e2e/down");
    let started = Instant::now();

    let error = push(
        &docker,
        &request(&image, &repository, &["v1"], None, None),
        &|_| {},
    )
    .await
    .unwrap_err();

    eprintln!("{error}");
    assert!(
        matches!(error, PushError::RegistryUnreachable { .. }),
        "{error:?}"
    );
    assert!(error.is_environment());
    let message = error.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.contains("connection refused"), "{message}");
    assert!(message.contains("hint:"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a refused connection is not retried: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_htpasswd_registry_accepts_the_right_password() {
    let Some((env, docker)) = parts("htpasswd ok").await else {
        return;
    };
    let image = TestImage::build(env, 64 * 1024);
    let path = unique("envelope-e2e/auth");
    let repository = format!("{}/{path}", env.auth_registry());
    let password = env.auth_password();

    let output = push(
        &docker,
        &request(
            &image,
            &repository,
            &["v1"],
            Some(basic(env.auth_registry(), &password)),
            None,
        ),
        &|_| {},
    )
    .await
    .unwrap();

    let auth = RegistryAuth::Basic("AWS".to_string(), password);
    assert_eq!(
        oci_digest(env.auth_registry(), &path, "v1", &auth).await,
        output.digest
    );
    // Without credentials the registry does not answer the HEAD.
    let (status, _) = head_manifest(env.auth_registry(), &path, "v1").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_htpasswd_registry_refuses_a_wrong_password_and_the_error_does_not_show_it() {
    let Some((env, docker)) = parts("htpasswd wrong").await else {
        return;
    };
    let image = TestImage::build(env, 1024);
    let repository = format!("{}/{}", env.auth_registry(), unique("envelope-e2e/auth"));
    // bcrypt reads only the first 72 bytes of a password: change the start, not the end.
    let wrong = format!("wrong-{}", env.auth_password());
    let (events, progress) = recorder();

    let error = push(
        &docker,
        &request(
            &image,
            &repository,
            &["v1"],
            Some(basic(env.auth_registry(), &wrong)),
            None,
        ),
        &progress,
    )
    .await
    .unwrap_err();

    eprintln!("{error}");
    assert!(matches!(error, PushError::AuthRefused { .. }), "{error:?}");
    assert!(error.is_environment());
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(&wrong), "the password leaked: {shown}");
    assert!(
        !shown.contains(&env.auth_password()),
        "the password leaked: {shown}"
    );
    assert!(shown.contains(env.auth_registry()), "{shown}");
    assert!(shown.contains("user `AWS`"), "{shown}");
    let attempts = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PushProgress::TagStarted { .. }))
        .count();
    assert_eq!(attempts, 1, "refused credentials are not retried");

    // And without any credentials.
    let anonymous = push(
        &docker,
        &request(&image, &repository, &["v1"], None, None),
        &|_| {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(anonymous, PushError::AuthRefused { .. }),
        "{anonymous:?}"
    );
    assert!(anonymous.to_string().contains("anonymous"), "{anonymous}");
}
