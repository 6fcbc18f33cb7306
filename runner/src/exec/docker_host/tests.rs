//! How the daemon is chosen: DOCKER_HOST beats DOCKER_CONTEXT beats `currentContext`.

use super::*;
use std::path::Path;

/// A configuration directory with `config.json` and two contexts: `remote` (TLS material) and
/// `plain` (a TCP host without TLS).
fn config_dir(current_context: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = match current_context {
        Some(name) => format!(r#"{{"currentContext": "{name}"}}"#),
        None => "{}".to_owned(),
    };
    std::fs::write(dir.path().join("config.json"), json).expect("config.json");
    for (name, host, tls) in [
        ("remote", "tcp://10.0.0.5:2376", true),
        ("plain", "tcp://10.0.0.6:2375", false),
        ("skipper", "tcp://10.0.0.7:2376", true),
    ] {
        let id = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(name.as_bytes()));
        let meta = dir.path().join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).expect("meta dir");
        let skip = name == "skipper";
        std::fs::write(
            meta.join("meta.json"),
            format!(
                r#"{{"Name":"{name}","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":{skip}}}}}}}"#
            ),
        )
        .expect("meta.json");
        if tls {
            std::fs::create_dir_all(dir.path().join("contexts/tls").join(&id).join("docker"))
                .expect("tls dir");
        }
    }
    dir
}

fn tls_dir_of(dir: &Path, name: &str) -> PathBuf {
    let id = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(name.as_bytes()));
    dir.join("contexts/tls").join(id).join("docker")
}

fn env(
    host: Option<&str>,
    verify: bool,
    cert_path: Option<&str>,
    context: Option<&str>,
) -> DockerEnvironment {
    DockerEnvironment {
        host: host.map(str::to_owned),
        tls_verify: verify.then(|| "1".to_owned()),
        cert_path: cert_path.map(str::to_owned),
        context: context.map(str::to_owned),
    }
}

#[test]
fn docker_host_beats_docker_context_beats_current_context() {
    let dir = config_dir(Some("remote"));
    let config = DockerConfig::load(dir.path()).expect("config");
    let remote_tls = TlsFiles::in_dir(&tls_dir_of(dir.path(), "remote"));
    let current = format!(
        "currentContext in {}",
        dir.path().join("config.json").display()
    );
    let cases = [
        (
            env(
                Some("tcp://127.0.0.1:2376"),
                true,
                Some("/certs"),
                Some("plain"),
            ),
            Transport::Tls {
                address: "127.0.0.1:2376".into(),
                files: TlsFiles::in_dir(Path::new("/certs")),
            },
            Origin::Environment,
        ),
        (
            env(Some("tcp://127.0.0.1:2376"), true, None, None),
            Transport::Tls {
                address: "127.0.0.1:2376".into(),
                files: TlsFiles::in_dir(dir.path()),
            },
            Origin::Environment,
        ),
        (
            env(
                Some("https://docker.example.com:2376/"),
                false,
                Some("/certs"),
                None,
            ),
            Transport::Tls {
                address: "docker.example.com:2376".into(),
                files: TlsFiles::in_dir(Path::new("/certs")),
            },
            Origin::Environment,
        ),
        (
            env(Some("tcp://127.0.0.1:2375"), false, Some("/certs"), None),
            Transport::Plain("tcp://127.0.0.1:2375".into()),
            Origin::Environment,
        ),
        (
            env(Some("unix:///run/docker.sock"), true, None, None),
            Transport::Plain("unix:///run/docker.sock".into()),
            Origin::Environment,
        ),
        (
            env(None, true, Some("/ignored"), Some("plain")),
            Transport::Plain("tcp://10.0.0.6:2375".into()),
            Origin::Context {
                name: "plain".into(),
                named_by: "DOCKER_CONTEXT".into(),
            },
        ),
        (
            env(None, false, None, None),
            Transport::Tls {
                address: "10.0.0.5:2376".into(),
                files: remote_tls,
            },
            Origin::Context {
                name: "remote".into(),
                named_by: current,
            },
        ),
        (
            env(None, false, None, Some("default")),
            Transport::Local,
            Origin::Default,
        ),
    ];
    for (env, transport, origin) in cases {
        let target = resolve(&env, &config).expect("resolves");
        assert_eq!(target.transport, transport, "{env:?}");
        assert_eq!(target.origin, origin, "{env:?}");
    }
    let nothing = DockerConfig::load(&dir.path().join("absent")).expect("empty");
    let local = resolve(&env(None, false, None, None), &nothing).expect("local");
    assert_eq!(local.transport, Transport::Local);
}

#[test]
fn unusable_hosts_and_contexts_say_which_and_what_to_do() {
    let dir = config_dir(None);
    let config = DockerConfig::load(dir.path()).expect("config");
    let missing_meta = dir
        .path()
        .join("contexts/meta")
        .join(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"gone")))
        .join("meta.json");
    let cases = [
        (
            env(Some("ssh://me@build-host"), false, None, None),
            "the Docker host `ssh://me@build-host` (DOCKER_HOST) cannot be used: only unix://, \
             tcp:// and https:// are supported; point it at a daemon's socket or TCP port"
                .to_owned(),
        ),
        (
            env(None, false, None, Some("gone")),
            format!(
                "the Docker context `gone` (named by DOCKER_CONTEXT) does not exist: there is no \
                 {}; create it with `docker context create`, or name another context",
                missing_meta.display()
            ),
        ),
        (
            env(None, false, None, Some("skipper")),
            "the Docker context `skipper` skips TLS verification (SkipTLSVerify), which this \
             runner does not do; give the context the daemon's CA (`docker context update \
             skipper --docker \"host=...,ca=...,cert=...,key=...\"`)"
                .to_owned(),
        ),
    ];
    for (env, message) in cases {
        let error = resolve(&env, &config).expect_err("refused");
        assert_eq!(error.to_string(), message, "{env:?}");
    }
}

#[test]
fn a_missing_tls_file_is_named_with_the_host() {
    let dir = config_dir(None);
    let target = DockerTarget {
        transport: Transport::Tls {
            address: "10.0.0.5:2376".into(),
            files: TlsFiles::in_dir(dir.path()),
        },
        origin: Origin::Environment,
    };
    let error = connect(&target).expect_err("no files");
    assert_eq!(
        error.to_string(),
        format!(
            "cannot connect to the Docker daemon at tcp://10.0.0.5:2376 (TLS) from DOCKER_HOST \
             over TLS: {} is missing; put the daemon's CA and your client certificate and key \
             there as ca.pem, cert.pem and key.pem",
            dir.path().join("ca.pem").display()
        )
    );
}
