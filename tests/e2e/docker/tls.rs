//! A remote build host: a second dockerd listening on TLS with a throwaway CA, reached with
//! `DOCKER_HOST` + `DOCKER_TLS_VERIFY` + `DOCKER_CERT_PATH` and through a Docker context; a CA
//! the daemon's certificate does not chain to is refused with the host named.

use std::path::Path;

use super::{local_project, local_run};
use crate::support::docker_config::DockerConfigDir;
use crate::support::text;
use crate::support::tls_daemon::TlsDaemon;
use envelope_tests::env::{parts, unique};

#[tokio::test]
async fn builds_on_a_daemon_over_tls_from_docker_host_and_from_a_context() {
    let Some((env, docker)) = parts("tls daemon").await else {
        return;
    };
    let remote = TlsDaemon::start();
    remote.daemon.load_image(env.docker_cli(), env.base_image());
    let image = unique("envelope-e2e/remote");
    let (project, source) = local_project(
        &image,
        &format!("FROM {}\nCOPY hello /hello\n", env.base_image()),
    );
    let reference = format!("{image}:e2e");

    // `run app --local` in `project` against the remote daemon, with the files in `certs`.
    let over_tls = |project: &Path, source: &Path, certs: &Path| {
        let output = local_run(env, project, source, None)
            .env("DOCKER_HOST", remote.host())
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", certs)
            .output()
            .unwrap();
        (text(&output), output.status.code())
    };
    let (all, code) = over_tls(project.path(), source.path(), &remote.client_dir());
    assert_eq!(code, Some(0), "{all}");
    assert!(
        remote.daemon.has_image(&reference),
        "built on the remote daemon:\n{all}"
    );
    assert!(
        docker.inspect_image(&reference).await.is_err(),
        "not on the local daemon"
    );

    // The same daemon as a Docker context, chosen by DOCKER_CONTEXT.
    let config = DockerConfigDir::new("{}");
    config.add_context("remote-build", &remote.host(), Some(&remote.client_dir()));
    let (project, source) = local_project(
        &image,
        &format!("FROM {}\nCOPY hello /hello-again\n", env.base_image()),
    );
    let mut command = local_run(env, project.path(), source.path(), None);
    config.apply(&mut command);
    let output = command
        .env("DOCKER_CONTEXT", "remote-build")
        .output()
        .unwrap();
    let all = text(&output);
    assert_eq!(output.status.code(), Some(0), "{all}");

    // A CA the daemon's certificate does not chain to.
    let (all, code) = over_tls(project.path(), source.path(), &remote.wrong_ca_dir());
    eprintln!("{all}");
    assert_eq!(code, Some(6), "{all}");
    assert!(
        all.contains(&format!(
            "cannot reach the Docker daemon at tcp://127.0.0.1:{} (TLS) from DOCKER_HOST",
            remote.port
        )),
        "{all}"
    );
    assert!(all.to_lowercase().contains("certificate"), "{all}");
}
