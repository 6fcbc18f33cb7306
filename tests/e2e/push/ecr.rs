//! Pushes to ministack's ECR: credentials from GetAuthorizationToken (cached), a repository
//! created only when asked, the endpoint override that keeps the ECR name, a missing
//! repository, and an immutable tag.

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use envelope_runner::exec::push::ecr::{
    EcrAuth, EcrError, RepositoryOptions, TagMutability, ensure_repository,
};
use envelope_runner::exec::push::{PushError, PushProgress, push};
use oci_client::secrets::RegistryAuth;

use super::{recorder, request};
use crate::support::registry::{assert_sha256, ecr_client, ecr_endpoint, oci_digest};
use crate::support::test_image::TestImage;
use envelope_tests::env::{head_manifest, parts, unique};

#[tokio::test]
async fn ecr_credentials_come_from_get_authorization_token_and_are_cached() {
    let Some((env, _docker)) = parts("ecr token").await else {
        return;
    };
    let now = Arc::new(Mutex::new(Utc::now()));
    let clock = {
        let now = now.clone();
        Arc::new(move || *now.lock().unwrap()) as Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>
    };
    let auth = EcrAuth::new(ecr_client(env)).with_clock(clock);

    let credentials = auth.credentials().await.unwrap();
    assert_eq!(credentials.username, "AWS");
    assert!(!credentials.password.is_empty());
    assert!(
        credentials.server.ends_with(".amazonaws.com") && credentials.server.contains(".dkr.ecr."),
        "{}",
        credentials.server
    );
    let expires_at = credentials.expires_at.expect("ECR names an expiry");
    assert!(
        expires_at > Utc::now() + chrono::Duration::hours(11),
        "{expires_at}"
    );
    assert!(!format!("{credentials:?}").contains(credentials.password.expose()));
    assert_eq!(auth.token_requests(), 1);

    // Cached while fresh.
    auth.credentials().await.unwrap();
    assert_eq!(auth.token_requests(), 1);

    // Refreshed once the clock reaches the expiry (less the margin).
    *now.lock().unwrap() = expires_at - chrono::Duration::minutes(5);
    auth.credentials().await.unwrap();
    assert_eq!(auth.token_requests(), 2);
}

#[tokio::test]
async fn a_missing_ecr_repository_is_created_only_when_asked() {
    let Some((env, _docker)) = parts("ecr repository").await else {
        return;
    };
    let client = ecr_client(env);
    let name = unique("envelope-e2e/created");

    let missing = ensure_repository(&client, &name, &RepositoryOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(missing, EcrError::RepositoryMissing { .. }),
        "{missing:?}"
    );
    assert!(missing.is_environment());
    assert!(missing.to_string().contains(&name), "{missing}");
    assert!(missing.to_string().contains("create"), "{missing}");

    let options = RepositoryOptions {
        create_if_missing: true,
        tag_mutability: TagMutability::Immutable,
        ..RepositoryOptions::default()
    };
    let created = ensure_repository(&client, &name, &options).await.unwrap();
    assert!(created.created);
    assert_eq!(created.name, name);
    assert_eq!(created.tag_mutability, Some(TagMutability::Immutable));
    assert!(
        created.uri.ends_with(&format!(".amazonaws.com/{name}")),
        "{}",
        created.uri
    );

    let again = ensure_repository(&client, &name, &options).await.unwrap();
    assert!(!again.created);
    assert_eq!(again.uri, created.uri);
}

#[tokio::test]
async fn an_ecr_push_goes_through_the_endpoint_override_and_keeps_the_ecr_name() {
    let Some((env, docker)) = parts("ecr push").await else {
        return;
    };
    let client = ecr_client(env);
    let name = unique("envelope-e2e/ecr");
    let repository = ensure_repository(
        &client,
        &name,
        &RepositoryOptions {
            create_if_missing: true,
            ..RepositoryOptions::default()
        },
    )
    .await
    .unwrap();
    let credentials = EcrAuth::new(client.clone()).credentials().await.unwrap();
    let image = TestImage::build(env, 128 * 1024);

    let output = push(
        &docker,
        &request(
            &image,
            &repository.uri,
            &["v1", "sha-feedbeef"],
            Some(credentials),
            Some(ecr_endpoint(env)),
        ),
        &|_| {},
    )
    .await
    .unwrap();

    assert_sha256(&output.digest);
    assert_eq!(
        output.image_ref,
        format!("{}@{}", repository.uri, output.digest)
    );
    assert!(output.bytes_uploaded > 0, "{output:?}");
    for tag in ["v1", "sha-feedbeef"] {
        let by_oci = oci_digest(&ecr_endpoint(env), &name, tag, &RegistryAuth::Anonymous).await;
        assert_eq!(by_oci, output.digest, "oci-client, tag {tag}");
        let (status, by_head) = head_manifest(&ecr_endpoint(env), &name, tag).await;
        assert_eq!(status, 200, "HEAD {tag}");
        assert_eq!(
            by_head.as_deref(),
            Some(output.digest.as_str()),
            "HEAD {tag}"
        );
    }
    // ECR's own API sees the same image.
    let described = client
        .describe_images()
        .repository_name(&name)
        .send()
        .await
        .unwrap();
    let details = described.image_details();
    assert!(
        details
            .iter()
            .any(|d| d.image_digest() == Some(output.digest.as_str())
                && d.image_tags().iter().any(|t| t == "v1")),
        "DescribeImages: {details:?}"
    );
}

#[tokio::test]
async fn an_ecr_push_to_a_repository_that_does_not_exist_says_so() {
    let Some((env, docker)) = parts("ecr missing").await else {
        return;
    };
    let image = TestImage::build(env, 1024);
    let uri = format!(
        "000000000000.dkr.ecr.{}.amazonaws.com/{}",
        env.var("AWS_REGION"),
        unique("envelope-e2e/absent")
    );

    let error = push(
        &docker,
        &request(&image, &uri, &["v1"], None, Some(ecr_endpoint(env))),
        &|_| {},
    )
    .await
    .unwrap_err();

    assert!(
        matches!(error, PushError::RepositoryMissing { .. }),
        "{error:?}"
    );
    assert!(error.is_environment());
    assert!(error.to_string().contains(&uri), "{error}");
}

#[tokio::test]
async fn an_immutable_tag_cannot_be_pushed_again_with_another_image() {
    let Some((env, docker)) = parts("ecr immutable").await else {
        return;
    };
    let client = ecr_client(env);
    let name = unique("envelope-e2e/immutable");
    let repository = ensure_repository(
        &client,
        &name,
        &RepositoryOptions {
            create_if_missing: true,
            tag_mutability: TagMutability::Immutable,
            ..RepositoryOptions::default()
        },
    )
    .await
    .unwrap();
    let credentials = EcrAuth::new(client).credentials().await.unwrap();
    let first = TestImage::build(env, 1024);
    let second = TestImage::build(env, 1024);
    let endpoint = Some(ecr_endpoint(env));

    let pushed = push(
        &docker,
        &request(
            &first,
            &repository.uri,
            &["v1"],
            Some(credentials.clone()),
            endpoint.clone(),
        ),
        &|_| {},
    )
    .await
    .unwrap();

    let (events, progress) = recorder();
    let error = push(
        &docker,
        &request(
            &second,
            &repository.uri,
            &["v1"],
            Some(credentials),
            endpoint,
        ),
        &progress,
    )
    .await
    .unwrap_err();

    eprintln!("{error}");
    assert!(matches!(error, PushError::TagImmutable { .. }), "{error:?}");
    assert!(!error.is_environment());
    let message = error.to_string();
    assert!(
        message.contains("`v1`") && message.contains(&repository.uri),
        "{message}"
    );
    let attempts = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PushProgress::TagStarted { .. }))
        .count();
    assert_eq!(attempts, 1, "an immutable tag is not retried");
    // The tag still names the first image.
    let (_, digest) = head_manifest(&ecr_endpoint(env), &name, "v1").await;
    assert_eq!(digest.as_deref(), Some(pushed.digest.as_str()));
}
