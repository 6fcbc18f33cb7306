//! Copying a multi-platform image (an OCI image index of two platform manifests) by digest,
//! registry to registry, as a promotion does: from the plain registry to the htpasswd one. The
//! index and both children land at the digests the source serves, with every blob; a second
//! copy writes and uploads nothing. The images are written with oci-client byte for byte, so
//! every digest is known before the copy.

use envelope_runner::exec::push::{CopyOutput, CopyRequest, copy};
use hyper::header::HeaderValue;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use super::basic;
use envelope_tests::env::{parts, unique};

const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn client() -> Client {
    Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    })
}

/// A blob's descriptor.
fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest_of(bytes), "size": bytes.len()})
}

/// Writes one platform's image (config, one layer, manifest) to `registry/path` and returns
/// the manifest's bytes.
async fn push_platform(client: &Client, registry: &str, path: &str, arch: &str) -> Vec<u8> {
    let at = |digest: &str| Reference::with_digest(registry.into(), path.into(), digest.into());
    let layer = format!("layer of the {arch} image, {}", unique("bytes")).into_bytes();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [digest_of(&layer)]},
    }))
    .unwrap();
    for blob in [&layer, &config] {
        client
            .push_blob(&at(&digest_of(blob)), blob.clone(), &digest_of(blob))
            .await
            .unwrap();
    }
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", &layer)],
    }))
    .unwrap();
    client
        .push_manifest_raw(
            &at(&digest_of(&manifest)),
            manifest.clone(),
            HeaderValue::from_static(MANIFEST_TYPE),
        )
        .await
        .unwrap();
    manifest
}

#[tokio::test]
async fn an_image_index_is_copied_with_its_platform_manifests_at_the_same_digests() {
    let Some((env, _docker)) = parts("copy an image index").await else {
        return;
    };
    let source_client = client();
    let path = unique("envelope-e2e/index");
    let children = [
        push_platform(&source_client, env.registry(), &path, "amd64").await,
        push_platform(&source_client, env.registry(), &path, "arm64").await,
    ];
    let entries: Vec<serde_json::Value> = children
        .iter()
        .zip(["amd64", "arm64"])
        .map(|(manifest, arch)| {
            let mut entry = descriptor(MANIFEST_TYPE, manifest);
            entry["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
            entry
        })
        .collect();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_TYPE,
        "manifests": entries,
    }))
    .unwrap();
    let index_digest = digest_of(&index);
    source_client
        .push_manifest_raw(
            &Reference::with_tag(env.registry().into(), path.clone(), "v1".into()),
            index.clone(),
            HeaderValue::from_static(INDEX_TYPE),
        )
        .await
        .unwrap();

    let target = format!(
        "{}/{}",
        env.auth_registry(),
        unique("envelope-e2e/index-copy")
    );
    let request = CopyRequest {
        source: format!("{}/{path}@{index_digest}", env.registry()),
        target: target.clone(),
        tags: vec!["v1".into()],
        source_credentials: None,
        target_credentials: Some(basic(env.auth_registry(), &env.auth_password())),
        target_endpoint: None,
    };
    let first: CopyOutput = copy(&request).await.unwrap();
    assert_eq!(first.digest, index_digest);
    assert_eq!(first.image_ref, format!("{target}@{index_digest}"));
    assert_eq!(
        first.manifests, 3,
        "the index and its two children: {first:?}"
    );
    assert_eq!(
        (first.blobs_copied, first.blobs_present),
        (4, 0),
        "two configs and two layers: {first:?}"
    );

    // The target serves the index and each child byte for byte, by digest.
    let target_client = client();
    let auth = RegistryAuth::Basic("AWS".into(), env.auth_password());
    let (registry, target_path) = target.split_once('/').unwrap();
    let served =
        |digest: &str| Reference::with_digest(registry.into(), target_path.into(), digest.into());
    for (bytes, media_type) in [
        (&index, INDEX_TYPE),
        (&children[0], MANIFEST_TYPE),
        (&children[1], MANIFEST_TYPE),
    ] {
        let (body, digest) = target_client
            .pull_manifest_raw(&served(&digest_of(bytes)), &auth, &[media_type])
            .await
            .unwrap();
        assert_eq!(
            (body.as_ref(), digest),
            (bytes.as_slice(), digest_of(bytes))
        );
    }

    let again = copy(&request).await.unwrap();
    assert_eq!(
        (again.manifests, again.blobs_copied, again.bytes_copied),
        (0, 0, 0),
        "nothing written twice: {again:?}"
    );
}
