//! The build cache from a registry: after its local image and build cache records are gone, a
//! rebuild with `cache_from` takes every step from the pushed inline cache, with registry
//! credentials when the registry needs them.

use std::collections::HashMap;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{PruneBuildOptions, PushImageOptions, RemoveImageOptions};
use envelope_runner::exec::build::RegistryCredentials;
use envelope_runner::secret::Secret;
use futures_util::StreamExt;

use super::{context, request, run_build, save, text};
use crate::support::docker::RemoveImages;
use envelope_tests::env::{TestEnv, parts, unique};

#[tokio::test]
async fn after_pruning_its_build_cache_a_rebuild_takes_every_step_from_the_pushed_inline_cache() {
    let Some((env, docker)) = parts("build cache_from").await else {
        return;
    };
    let repository = format!("{}/{}", env.registry(), unique("envelope-e2e/build-cache"));
    cache_round_trip(&docker, env, &repository, None).await;
}

#[tokio::test]
async fn cache_from_a_registry_that_needs_credentials_uses_registry_auth() {
    let Some((env, docker)) = parts("build cache_from with auth").await else {
        return;
    };
    let registry = env.auth_registry();
    let repository = format!("{registry}/{}", unique("envelope-e2e/build-cache-auth"));
    let credentials = RegistryCredentials {
        server: registry.to_owned(),
        username: "AWS".to_owned(),
        password: Secret::new(env.auth_password()),
        expires_at: None,
    };
    cache_round_trip(&docker, env, &repository, Some(credentials)).await;
}

/// Build with several steps, push, remove the local image and the build's cache records,
/// rebuild with `cache_from` the pushed image: every step after FROM must come from the cache.
async fn cache_round_trip(
    docker: &Docker,
    env: &TestEnv,
    repository: &str,
    credentials: Option<RegistryCredentials>,
) {
    let marker = unique("cache");
    let dockerfile = format!(
        "FROM {}\nRUN echo {marker} > /marker\nCOPY app.txt /app.txt\nRUN sha256sum /app.txt > /app.sum\nRUN sleep 1 && echo slow > /slow\n",
        env.base_image()
    );
    let dir = context(&[("Dockerfile", &dockerfile), ("app.txt", "cached app\n")]);
    let first_tag = format!("{repository}:first");
    let second_tag = format!("{repository}:second");
    let _cleanup = RemoveImages {
        docker_cli: env.docker_cli().to_owned(),
        references: vec![first_tag.clone(), second_tag.clone()],
    };
    let docker_credentials = credentials.as_ref().map(|credentials| DockerCredentials {
        username: Some(credentials.username.clone()),
        password: Some(credentials.password.expose().to_owned()),
        serveraddress: Some(credentials.server.clone()),
        ..DockerCredentials::default()
    });

    let mut request = request(dir.path());
    request.tags = vec![first_tag.clone()];
    let (result, _events) = run_build(docker, &request).await;
    let first = result.unwrap_or_else(|error| panic!("first build failed: {error}"));
    push(docker, repository, "first", docker_credentials).await;

    prune_and_remove(docker, &first_tag, &marker).await;
    assert!(
        docker.inspect_image(&first.image_id).await.is_err(),
        "the image is gone"
    );

    request.tags = vec![second_tag.clone()];
    request.cache_from = vec![first_tag];
    request.registry_auth = credentials.iter().cloned().collect();
    let (result, events) = run_build(docker, &request).await;
    let second = result.unwrap_or_else(|error| panic!("rebuild failed: {error}"));

    let steps: Vec<_> = second
        .steps
        .iter()
        .filter(|step| {
            step.instruction()
                .is_some_and(|instruction| instruction != "FROM")
        })
        .collect();
    assert_eq!(steps.len(), 4, "{:#?}", second.steps);
    for step in steps {
        assert!(
            step.cached,
            "not from the cache: {step:?}\nall steps: {:#?}",
            second.steps
        );
    }
    assert!(
        second
            .steps
            .iter()
            .any(|step| step.name.starts_with("importing cache manifest from")),
        "{:#?}",
        second.steps
    );
    assert!(!format!("{events:?}").contains(&env.auth_password()));
    let image = save(docker, &second.image_id).await;
    assert_eq!(text(&image, "marker"), format!("{marker}\n"));

    if credentials.is_some() {
        // Without the credentials the same rebuild finds nothing to reuse.
        prune_and_remove(docker, &second_tag, &marker).await;
        request.registry_auth.clear();
        let (result, _events) = run_build(docker, &request).await;
        let anonymous = result.unwrap_or_else(|error| panic!("anonymous rebuild failed: {error}"));
        assert!(
            anonymous
                .steps
                .iter()
                .any(|step| step.instruction() == Some("RUN") && !step.cached),
            "{:#?}",
            anonymous.steps
        );
    }
}

/// Removes the local image, then prunes every build cache record this build made: the record
/// of the step that wrote `marker` and all that descend from it.
///
/// Not `docker builder prune -af`: with other builds running (CI runs tests in parallel),
/// pruning everything crashed Debian's dockerd 20.10 (a nil dereference in BuildKit 0.8's
/// `GetByBlob` while another build resolved its base image, whose records the prune had just
/// removed). Pruning by id gives this build the same state and leaves the others alone.
async fn prune_and_remove(docker: &Docker, reference: &str, marker: &str) {
    remove(docker, reference)
        .await
        .expect("remove the local image");
    let records = build_cache_records().await;
    let mut doomed: Vec<String> = records
        .iter()
        .filter(|record| record.description.contains(marker))
        .map(|record| record.id.clone())
        .collect();
    assert!(
        !doomed.is_empty(),
        "no build cache record mentions {marker}"
    );
    // Descendants, breadth first; pruned in reverse so children go before their parents.
    let mut index = 0;
    while index < doomed.len() {
        let parent = doomed[index].clone();
        doomed.extend(
            records
                .iter()
                .filter(|record| record.parent == parent)
                .map(|record| record.id.clone()),
        );
        index += 1;
    }
    for id in doomed.iter().rev() {
        docker
            .prune_build(Some(PruneBuildOptions {
                all: Some(true),
                filters: Some(HashMap::from([("id".to_owned(), vec![id.clone()])])),
                ..PruneBuildOptions::default()
            }))
            .await
            .expect("prune a build cache record");
    }
    let left: Vec<_> = build_cache_records()
        .await
        .into_iter()
        .filter(|record| doomed.contains(&record.id))
        .collect();
    assert!(
        left.is_empty(),
        "build cache records survived the prune: {left:?}"
    );
}

#[derive(Debug)]
struct CacheRecord {
    id: String,
    parent: String,
    description: String,
}

/// The daemon's build cache records. bollard 0.21 models `/system/df` as API 1.52 answers it
/// (no record list from older daemons), so this reads the 1.41 answer itself.
async fn build_cache_records() -> Vec<CacheRecord> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::UnixStream::connect("/var/run/docker.sock")
        .await
        .expect("the Docker socket");
    socket
        .write_all(b"GET /v1.41/system/df HTTP/1.0\r\nHost: docker\r\n\r\n")
        .await
        .expect("send");
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.expect("receive");
    let start = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("an HTTP response")
        + 4;
    let body: serde_json::Value = serde_json::from_slice(&response[start..]).expect("JSON");
    body["BuildCache"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|record| CacheRecord {
            id: record["ID"].as_str().unwrap_or_default().to_owned(),
            parent: record["Parent"].as_str().unwrap_or_default().to_owned(),
            description: record["Description"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

/// Removes the local image `reference`.
async fn remove(docker: &Docker, reference: &str) -> Result<(), bollard::errors::Error> {
    docker
        .remove_image(
            reference,
            Some(RemoveImageOptions {
                force: true,
                ..RemoveImageOptions::default()
            }),
            None,
        )
        .await
        .map(drop)
}

/// Pushes `repository:tag` with the daemon.
async fn push(
    docker: &Docker,
    repository: &str,
    tag: &str,
    credentials: Option<DockerCredentials>,
) {
    let mut stream = envelope_runner::exec::docker_stream::whole(docker.push_image(
        repository,
        Some(PushImageOptions {
            tag: Some(tag.to_owned()),
            ..PushImageOptions::default()
        }),
        credentials,
    ));
    while let Some(item) = stream.next().await {
        let item = item.unwrap_or_else(|error| panic!("pushing {repository}:{tag}: {error}"));
        if let Some(error) = item.error_detail.and_then(|detail| detail.message) {
            panic!("pushing {repository}:{tag}: {error}");
        }
    }
}
