//! Pushes whose connection a [`CuttingProxy`] resets midway: a layer upload retried and
//! verified with nothing pushed twice, a manifest upload retried by the push itself, and a push
//! cut off every time failing after bounded attempts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use envelope_runner::exec::push::{PushError, PushProgress, push};
use oci_client::secrets::RegistryAuth;

use super::{recorder, request};
use crate::support::cutting_proxy::CuttingProxy;
use crate::support::registry::{assert_sha256, oci_digest};
use crate::support::test_image::TestImage;
use envelope_tests::env::{parts, unique};

#[tokio::test]
async fn a_push_reset_midway_is_retried_verified_and_pushes_nothing_twice() {
    let Some((env, docker)) = parts("reset midway").await else {
        return;
    };
    const PAYLOAD: usize = 2 * 1024 * 1024;
    let image = TestImage::build(env, PAYLOAD);
    let proxy = CuttingProxy::start(
        env.registry().to_string(),
        "PATCH",
        "/blobs/uploads/",
        256 * 1024,
        1,
    )
    .await;
    let path = unique("envelope-e2e/cut");
    // The repository names the registry; the override sends everything through the proxy.
    let repository = format!("{}/{path}", env.registry());
    let (events, progress) = recorder();

    let output = push(
        &docker,
        &request(
            &image,
            &repository,
            &["v1"],
            None,
            Some(proxy.address.clone()),
        ),
        &progress,
    )
    .await
    .unwrap();

    assert_eq!(output.image_ref, format!("{repository}@{}", output.digest));
    assert!(output.bytes_uploaded >= PAYLOAD as u64, "{output:?}");
    // The digest the registry gives for the tag, asked directly (not through the proxy).
    assert_eq!(
        oci_digest(env.registry(), &path, "v1", &RegistryAuth::Anonymous).await,
        output.digest
    );
    let events = events.lock().unwrap();
    assert!(
        events.iter().any(|e| matches!(
            e,
            PushProgress::LayerRetrying { .. } | PushProgress::Retrying { .. }
        )),
        "the reset was noticed and retried: {events:?}"
    );

    let log = proxy.log.lock().unwrap();
    eprintln!("{log:#?}\npush output: {output:?}");
    assert_eq!(log.resets, 1, "{log:#?}");
    // Every blob (the base layer, the payload layer, the config) was completed exactly once:
    // the upload cut off never was, the retry was.
    assert!(log.blob_puts_completed.len() >= 2, "{log:#?}");
    for (digest, count) in &log.blob_puts_completed {
        assert_sha256(digest);
        assert_eq!(*count, 1, "blob {digest} completed {count} times: {log:#?}");
    }
    assert_eq!(
        log.blob_puts_sent, log.blob_puts_completed,
        "every blob PUT sent was completed, none twice"
    );
    // One manifest, put once, and the registry named the digest the push reports.
    assert_eq!(
        log.manifest_puts_sent,
        HashMap::from([("v1".to_owned(), 1)]),
        "{log:#?}"
    );
    assert_eq!(
        log.manifests_completed,
        [("v1".to_owned(), Some(output.digest.clone()))],
        "{log:#?}"
    );
    // The payload reached the registry through the proxy; the figures show what the reset
    // cost (the push output counts a retried layer's bytes as the daemon reported them).
    assert!(log.bytes_up >= PAYLOAD as u64, "{log:#?}");
    eprintln!(
        "bytes through the proxy: {}, reported uploaded: {}",
        log.bytes_up, output.bytes_uploaded
    );
}

#[tokio::test]
async fn a_manifest_upload_cut_off_is_retried_by_the_push_itself() {
    let Some((env, docker)) = parts("cut manifest").await else {
        return;
    };
    let image = TestImage::build(env, 64 * 1024);
    // The daemon retries layer uploads itself but not the manifest: the push stage does.
    let proxy = CuttingProxy::start(env.registry().to_string(), "PUT", "/manifests/", 0, 1).await;
    let path = unique("envelope-e2e/cut-manifest");
    let repository = format!("{}/{path}", env.registry());
    let (events, progress) = recorder();

    let output = push(
        &docker,
        &request(
            &image,
            &repository,
            &["v1"],
            None,
            Some(proxy.address.clone()),
        ),
        &progress,
    )
    .await
    .unwrap();

    assert_eq!(
        oci_digest(env.registry(), &path, "v1", &RegistryAuth::Anonymous).await,
        output.digest
    );
    let events = events.lock().unwrap();
    let retries: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            PushProgress::Retrying { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 1, "one retry by the push stage: {events:?}");
    eprintln!("retried after: {}", retries[0]);
    let attempts = events
        .iter()
        .filter(|e| matches!(e, PushProgress::TagStarted { .. }))
        .count();
    assert_eq!(attempts, 2);
}

#[tokio::test]
async fn a_push_cut_off_every_time_fails_as_interrupted_after_bounded_attempts() {
    let Some((env, docker)) = parts("cut always").await else {
        return;
    };
    let image = TestImage::build(env, 1024);
    let proxy = CuttingProxy::start(env.registry().to_string(), "PUT", "/manifests/", 0, 100).await;
    let repository = format!("{}/{}", env.registry(), unique("envelope-e2e/cut-always"));
    let (events, progress) = recorder();
    let started = Instant::now();

    let error = push(
        &docker,
        &request(
            &image,
            &repository,
            &["v1"],
            None,
            Some(proxy.address.clone()),
        ),
        &progress,
    )
    .await
    .unwrap_err();

    eprintln!("{error}");
    assert!(
        matches!(error, PushError::Interrupted { attempts: 4, .. }),
        "{error:?}"
    );
    assert!(error.is_environment());
    let message = error.to_string();
    assert!(message.contains("cut off midway"), "{message}");
    assert!(message.contains(&proxy.address), "{message}");
    let attempts = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PushProgress::TagStarted { .. }))
        .count();
    assert_eq!(attempts, 4);
    // Backoff of 1, 2 and 4 seconds, each with up to half taken off by jitter.
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(3500) && elapsed < Duration::from_secs(30),
        "{elapsed:?}"
    );
}
