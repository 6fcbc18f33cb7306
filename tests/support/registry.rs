//! Registries as a test sees them: an ECR client and registry address for ministack, and the
//! digest a registry gives for a tag, asked with oci-client.

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use crate::env::TestEnv;

/// An ECR client for ministack, configured from the env file (not the process env).
pub fn ecr_client(env: &TestEnv) -> aws_sdk_ecr::Client {
    use aws_sdk_ecr::config::{BehaviorVersion, Credentials, Region};
    let config = aws_sdk_ecr::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(env.var("AWS_ENDPOINT_URL"))
        .region(Region::new(env.var("AWS_REGION").to_string()))
        .credentials_provider(Credentials::new(
            env.var("AWS_ACCESS_KEY_ID"),
            env.var("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "envelope-e2e",
        ))
        .build();
    aws_sdk_ecr::Client::from_conf(config)
}

/// ministack's registry, `host:port` of AWS_ENDPOINT_URL.
pub fn ecr_endpoint(env: &TestEnv) -> String {
    let url = env.var("AWS_ENDPOINT_URL");
    url.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string()
}

/// The digest `registry` (plain HTTP) gives for `path:tag`, asked with oci-client.
pub async fn oci_digest(registry: &str, path: &str, tag: &str, auth: &RegistryAuth) -> String {
    let client = oci_client::Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let reference =
        oci_client::Reference::with_tag(registry.to_string(), path.to_string(), tag.to_string());
    client
        .fetch_manifest_digest(&reference, auth)
        .await
        .unwrap_or_else(|e| panic!("oci-client HEAD {registry}/{path}:{tag}: {e}"))
}

/// Fails unless `digest` is `sha256:` and 64 hex digits.
pub fn assert_sha256(digest: &str) {
    assert!(
        digest.len() == 71
            && digest.starts_with("sha256:")
            && digest[7..].bytes().all(|b| b.is_ascii_hexdigit()),
        "not a sha256 digest: {digest}"
    );
}
