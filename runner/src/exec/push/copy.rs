//! Copying an image by digest from one repository to another, registry to registry (with
//! oci-client, not through the Docker daemon): what a promotion does when the environment it
//! deploys in pulls from another registry than the run it promotes pushed to.
//!
//! Manifests are copied as the bytes the source serves, so the target answers the same digest;
//! an image index brings its child manifests along, and a manifest the target has is not
//! written again. A blob the target already has (a HEAD answers it) is not uploaded again; on the same registry a missing blob is mounted from the
//! source repository first, and only uploaded when the mount is refused. Blobs are streamed
//! from the source to the target, never held whole. After the copy the target is asked which
//! digest it serves, and anything but the source's digest is an error.

use futures_util::TryStreamExt;
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::Digest as _;

use super::error::{FailureKind, redact};
use super::reference::{RegistryEndpoint, Repository};
use super::verify::{describe, registry_auth, registry_client};
use super::{ReferenceError, RegistryCredentials};

/// Manifest types asked for: a copy takes whatever the source has, index or single manifest.
const MANIFEST_TYPES: [&str; 4] = [
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
];

/// One image to copy.
pub struct CopyRequest {
    /// `repository@sha256:...`, as the run that pushed it recorded it.
    pub source: String,
    /// The repository to copy to, as the pipeline writes it.
    pub target: String,
    /// Tags the copy also gets in the target (the digest is copied in any case).
    pub tags: Vec<String>,
    pub source_credentials: Option<RegistryCredentials>,
    pub target_credentials: Option<RegistryCredentials>,
    /// The `host:port` to contact for the target instead of the registry its name gives (a
    /// mirror, a VPC endpoint, an emulator: the run's `--registry-endpoint`), as a push does.
    /// The copy keeps the target's name (`CopyOutput::image_ref`).
    pub target_endpoint: Option<String>,
}

/// What a copy did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyOutput {
    /// `target@sha256:...`: the reference later stages deploy.
    pub image_ref: String,
    pub digest: String,
    /// Manifests written by digest (an index and its children count one each; tags aside).
    pub manifests: usize,
    /// Blobs uploaded or mounted into the target, and their bytes.
    pub blobs_copied: usize,
    pub bytes_copied: u64,
    /// Blobs the target already had.
    pub blobs_present: usize,
}

/// A copy that did not complete. Messages name both repositories and never a credential.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    InvalidReference(#[from] ReferenceError),

    #[error(
        "cannot copy {source_image} to {target}: `{source_image}` is not `repository@sha256:...`\n  hint: promote a run whose push stage recorded a digest"
    )]
    NoDigest {
        source_image: String,
        target: String,
    },

    #[error("cannot copy {source_image} to {target}: {action} failed: {detail}\n  hint: {hint}")]
    Registry {
        source_image: String,
        target: String,
        action: String,
        detail: String,
        hint: &'static str,
        environment: bool,
    },

    #[error(
        "copied {source_image} to {target}, but {target} answers {found} for it instead of the same digest\n  hint: the target registry rewrote the manifest; copy to a registry that stores manifests as they are sent"
    )]
    DigestChanged {
        source_image: String,
        target: String,
        found: String,
    },
}

impl CopyError {
    /// Whether the failure lies outside the pipeline (a registry, the network, credentials).
    pub fn is_environment(&self) -> bool {
        matches!(
            self,
            CopyError::Registry {
                environment: true,
                ..
            }
        )
    }
}

/// One side of a copy: its client, reference parts and credentials.
struct Side {
    client: Client,
    host: String,
    path: String,
    auth: RegistryAuth,
}

impl Side {
    async fn new(
        repository: &Repository,
        credentials: Option<&RegistryCredentials>,
        endpoint: RegistryEndpoint,
    ) -> Self {
        let client = registry_client(&endpoint);
        let auth = registry_auth(credentials);
        client.store_auth_if_needed(endpoint.host(), &auth).await;
        Side {
            client,
            host: endpoint.host().to_owned(),
            path: repository.path().to_owned(),
            auth,
        }
    }

    fn at(&self, digest: &str) -> Reference {
        Reference::with_digest(self.host.clone(), self.path.clone(), digest.to_owned())
    }

    fn tagged(&self, tag: &str) -> Reference {
        Reference::with_tag(self.host.clone(), self.path.clone(), tag.to_owned())
    }
}

/// The copy in progress: both sides, what to say in errors, and the tally.
struct Copying<'a> {
    request: &'a CopyRequest,
    source: Side,
    target: Side,
    same_registry: bool,
    output: CopyOutput,
}

/// Copy `request.source` to `request.target` by digest, and its tags; see the module comment.
pub async fn copy(request: &CopyRequest) -> Result<CopyOutput, CopyError> {
    let (source_repository, digest) =
        request
            .source
            .split_once('@')
            .ok_or_else(|| CopyError::NoDigest {
                source_image: request.source.clone(),
                target: request.target.clone(),
            })?;
    let source_repository = Repository::parse(source_repository)?;
    let target_repository = Repository::parse(&request.target)?;
    let target_endpoint = RegistryEndpoint::resolve(
        request.target_endpoint.as_deref(),
        target_repository.registry(),
    )?;
    let source = Side::new(
        &source_repository,
        request.source_credentials.as_ref(),
        RegistryEndpoint::for_registry(source_repository.registry()),
    )
    .await;
    let target = Side::new(
        &target_repository,
        request.target_credentials.as_ref(),
        target_endpoint,
    )
    .await;
    let mut copy = Copying {
        request,
        same_registry: source.host == target.host,
        source,
        target,
        output: CopyOutput {
            image_ref: format!("{}@{digest}", target_repository.as_written()),
            digest: digest.to_owned(),
            manifests: 0,
            blobs_copied: 0,
            bytes_copied: 0,
            blobs_present: 0,
        },
    };
    let (body, media_type) = copy.manifest(digest).await?;
    for tag in &request.tags {
        copy.put_manifest(&copy.target.tagged(tag), &body, &media_type)
            .await?;
    }
    // The target must now answer the source's digest, by digest and by every tag.
    let mut references = vec![copy.target.at(digest)];
    references.extend(request.tags.iter().map(|tag| copy.target.tagged(tag)));
    for reference in references {
        let found = copy
            .target
            .client
            .fetch_manifest_digest(&reference, &copy.target.auth)
            .await
            .map_err(|error| copy.failed("asking the target which digest it serves", &error))?;
        if found != digest {
            return Err(CopyError::DigestChanged {
                source_image: request.source.clone(),
                target: request.target.clone(),
                found,
            });
        }
    }
    Ok(copy.output)
}

impl Copying<'_> {
    /// Copy the manifest `digest` and everything it refers to that the target lacks;
    /// returns its bytes and media type.
    async fn manifest(&mut self, digest: &str) -> Result<(bytes::Bytes, String), CopyError> {
        let (body, _) = self
            .source
            .client
            .pull_manifest_raw(&self.source.at(digest), &self.source.auth, &MANIFEST_TYPES)
            .await
            .map_err(|error| self.failed("reading the manifest from the source", &error))?;
        let computed = format!("sha256:{:x}", sha2::Sha256::digest(&body));
        if computed != digest {
            return Err(self.failed_with(
                "reading the manifest from the source",
                format!("the source served a manifest whose digest is {computed}"),
                false,
            ));
        }
        let parsed: serde_json::Value = serde_json::from_slice(&body).map_err(|error| {
            self.failed_with(
                "reading the manifest from the source",
                format!("it is not JSON: {error}"),
                false,
            )
        })?;
        let children = parsed.get("manifests").and_then(|m| m.as_array());
        let media_type = parsed
            .get("mediaType")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| match children {
                Some(_) => OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned(),
                None => OCI_IMAGE_MEDIA_TYPE.to_owned(),
            });
        match children {
            Some(children) => {
                for child in children.clone() {
                    let child = descriptor_digest(&child)
                        .ok_or_else(|| self.malformed("an index entry has no digest"))?;
                    Box::pin(self.manifest(&child)).await?;
                }
            }
            None => {
                let config = parsed.get("config").map(descriptor);
                let layers = parsed
                    .get("layers")
                    .and_then(|l| l.as_array())
                    .map(|l| l.iter().map(descriptor).collect::<Vec<_>>())
                    .unwrap_or_default();
                for (blob, size) in config.into_iter().chain(layers) {
                    let blob = blob.ok_or_else(|| self.malformed("a blob has no digest"))?;
                    self.blob(&blob, size).await?;
                }
            }
        }
        // Every blob is asked for even when the manifest is there already, so that what the
        // copy reports counts them; the manifest itself is only written when missing.
        let present = self
            .target
            .client
            .fetch_manifest_digest(&self.target.at(digest), &self.target.auth)
            .await
            .is_ok_and(|found| found == digest);
        if !present {
            self.output.manifests += 1;
            self.put_manifest(&self.target.at(digest), &body, &media_type)
                .await?;
        }
        Ok((body, media_type))
    }

    async fn put_manifest(
        &self,
        reference: &Reference,
        body: &bytes::Bytes,
        media_type: &str,
    ) -> Result<(), CopyError> {
        let content_type = media_type
            .parse()
            .map_err(|_| self.malformed("its media type is not a header value"))?;
        self.target
            .client
            .push_manifest_raw(reference, body.clone(), content_type)
            .await
            .map_err(|error| self.failed("writing the manifest to the target", &error))?;
        Ok(())
    }

    /// One blob into the target: nothing when it is there, a mount on the same registry, else
    /// streamed from the source.
    async fn blob(&mut self, digest: &str, size: u64) -> Result<(), CopyError> {
        let target = self.target.at(digest);
        let exists = self
            .target
            .client
            .blob_exists(&target, digest)
            .await
            .map_err(|error| self.failed("asking the target for a blob", &error))?;
        if exists {
            self.output.blobs_present += 1;
            return Ok(());
        }
        self.output.blobs_copied += 1;
        self.output.bytes_copied += size;
        if self.same_registry
            && self
                .target
                .client
                .mount_blob(&target, &self.source.at(digest), digest)
                .await
                .is_ok()
        {
            return Ok(());
        }
        let stream = self
            .source
            .client
            .pull_blob_stream(&self.source.at(digest), digest)
            .await
            .map_err(|error| self.failed("reading a blob from the source", &error))?;
        let length = stream.content_length.or(Some(size));
        let stream = stream.map_err(OciDistributionError::from);
        self.target
            .client
            .push_blob_stream(&target, stream, digest, length)
            .await
            .map_err(|error| self.failed("uploading a blob to the target", &error))?;
        Ok(())
    }

    fn failed(&self, action: &str, error: &OciDistributionError) -> CopyError {
        let (kind, detail) = describe(error);
        let environment = !matches!(kind, FailureKind::Other);
        self.failed_with(action, detail, environment)
            .with_hint(kind)
    }

    fn failed_with(&self, action: &str, detail: String, environment: bool) -> CopyError {
        let mut detail = detail;
        for credentials in [
            &self.request.source_credentials,
            &self.request.target_credentials,
        ]
        .into_iter()
        .flatten()
        {
            detail = redact(
                &detail,
                Some(&credentials.username),
                &[credentials.password.expose()],
            );
        }
        CopyError::Registry {
            source_image: self.request.source.clone(),
            target: self.request.target.clone(),
            action: action.to_owned(),
            detail,
            hint: "check that both registries are reachable from here",
            environment,
        }
    }

    fn malformed(&self, detail: &str) -> CopyError {
        self.failed_with(
            "reading the manifest from the source",
            detail.to_owned(),
            false,
        )
    }
}

impl CopyError {
    fn with_hint(mut self, kind: FailureKind) -> Self {
        if let CopyError::Registry { hint, .. } = &mut self {
            *hint = match kind {
                FailureKind::AuthRefused => {
                    "check the credentials of both registries (ECR: the AWS identity of each environment; others: ENVELOPE_REGISTRY_USERNAME/PASSWORD or config.json), and that they may pull from the source and push to the target"
                }
                FailureKind::RepositoryMissing => {
                    "create the target repository, or set `create_repository: true` on the build stage"
                }
                FailureKind::Unreachable
                | FailureKind::Interrupted
                | FailureKind::ServerFailure => {
                    "check that both registries are reachable from here, and run the promotion again (what was copied stays)"
                }
                _ => {
                    "check both repositories; the source must still hold the image the promoted run pushed"
                }
            };
        }
        self
    }
}

/// A descriptor's digest and size.
fn descriptor(value: &serde_json::Value) -> (Option<String>, u64) {
    (
        descriptor_digest(value),
        value
            .get("size")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
    )
}

fn descriptor_digest(value: &serde_json::Value) -> Option<String> {
    value
        .get("digest")
        .and_then(|d| d.as_str())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_give_digest_and_size() {
        let value = serde_json::json!({"digest": "sha256:ab", "size": 12});
        assert_eq!(descriptor(&value), (Some("sha256:ab".to_owned()), 12));
        assert_eq!(descriptor(&serde_json::json!({})), (None, 0));
    }

    #[tokio::test]
    async fn a_source_without_a_digest_is_refused_with_both_repositories() {
        let request = CopyRequest {
            source: "127.0.0.1:5000/app:v1".into(),
            target: "127.0.0.1:5001/app".into(),
            tags: vec![],
            source_credentials: None,
            target_credentials: None,
            target_endpoint: None,
        };
        let error = copy(&request).await.expect_err("no digest");
        assert_eq!(
            error.to_string(),
            "cannot copy 127.0.0.1:5000/app:v1 to 127.0.0.1:5001/app: `127.0.0.1:5000/app:v1` is not `repository@sha256:...`\n  hint: promote a run whose push stage recorded a digest"
        );
    }
}
