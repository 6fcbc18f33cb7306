//! The daemon's streamed answers read to their real end when every message's `\r\n` arrives
//! in a socket read of its own (through [`LineEndProxy`]): a build and a push succeed. Before
//! the runner ended bollard's stream at the leftover line end, both failed every time here,
//! the build as "cannot reach the Docker daemon: bytes remaining on stream".

use std::sync::atomic::Ordering;

use bollard::Docker;
use envelope_runner::exec::build::{BuildRequest, build};
use envelope_runner::exec::push::{PushRequest, push};

use crate::support::docker::RemoveImages;
use crate::support::line_end_proxy::LineEndProxy;
use crate::support::test_image::TestImage;
use envelope_tests::env::{parts, unique};

async fn through(proxy: &LineEndProxy) -> Docker {
    Docker::connect_with_http(&proxy.docker_host, 120, bollard::API_DEFAULT_VERSION)
        .unwrap()
        .negotiate_version()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_build_and_a_push_whose_line_ends_arrive_late_succeed() {
    let Some((env, _docker)) = parts("line ends read apart").await else {
        return;
    };
    let proxy = LineEndProxy::start().await;
    let docker = through(&proxy).await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}\nRUN echo {} > /marker\n",
            env.base_image(),
            unique("run")
        ),
    )
    .unwrap();
    let tag = format!("{}:1", unique("envelope-e2e/line-ends"));
    let _cleanup = RemoveImages {
        docker_cli: env.docker_cli().to_owned(),
        references: vec![tag.clone()],
    };
    let request = BuildRequest {
        context_dir: dir.path().to_owned(),
        dockerfile: "Dockerfile".into(),
        tags: vec![tag.clone()],
        ..BuildRequest::default()
    };
    let built = build(&docker, &request, &|_| {})
        .await
        .unwrap_or_else(|error| panic!("build: {error}"));
    let inspected = docker.inspect_image(&tag).await.unwrap();
    assert_eq!(inspected.id.as_deref(), Some(built.image_id.as_str()));
    let after_build = proxy.splits.load(Ordering::Relaxed);
    assert!(after_build > 0, "the proxy split no message of the build");

    let image = TestImage::build(env, 64 * 1024);
    let repository = format!("{}/{}", env.registry(), unique("envelope-e2e/line-ends"));
    let pushed = push(
        &docker,
        &PushRequest {
            local_image: image.id.clone(),
            repository: repository.clone(),
            tags: vec!["v1".to_owned()],
            credentials: None,
            endpoint_override: None,
        },
        &|_| {},
    )
    .await
    .unwrap_or_else(|error| panic!("push: {error}"));
    assert!(pushed.digest.starts_with("sha256:"), "{pushed:?}");
    assert!(
        proxy.splits.load(Ordering::Relaxed) > after_build,
        "the proxy split no message of the push"
    );
}
