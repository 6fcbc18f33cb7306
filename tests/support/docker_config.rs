//! A Docker CLI configuration directory of a test's own (`DOCKER_CONFIG`): its `config.json`,
//! Docker contexts, and real `docker-credential-<name>` helper scripts in a `bin/` folder put
//! first on the runner's PATH. Each helper logs its calls (`get SERVER`) to a file and answers
//! with a secret kept in a file of its own (mode 600), never in the script. The directory is
//! removed when dropped. Only the runner command it is applied to sees it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct DockerConfigDir {
    dir: tempfile::TempDir,
}

impl DockerConfigDir {
    /// A directory whose `config.json` is `json`.
    pub fn new(json: &str) -> DockerConfigDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("config.json"), json).unwrap();
        DockerConfigDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `docker-credential-<name>`, which answers every `get` with `username` and
    /// `secret`.
    pub fn add_helper(&self, name: &str, username: &str, secret: &str) {
        let secret_file = self.path().join(format!("secret-{name}"));
        std::fs::write(&secret_file, secret).unwrap();
        std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let script = self
            .path()
            .join("bin")
            .join(format!("docker-credential-{name}"));
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n\
                 read -r server\n\
                 echo \"$1 $server\" >> '{calls}'\n\
                 [ \"$1\" = get ] || exit 1\n\
                 printf '{{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"%s\"}}\\n' \
                 \"$server\" '{username}' \"$(cat '{secret}')\"\n",
                calls = self.calls_file().display(),
                secret = secret_file.display(),
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn calls_file(&self) -> PathBuf {
        self.path().join("calls.log")
    }

    /// Every helper call so far, as `get SERVER` lines.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.calls_file())
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Stores Docker context `name` pointing at `host`, with `tls` (a directory holding
    /// `ca.pem`, `cert.pem`, `key.pem`) copied in as `docker context create` does.
    pub fn add_context(&self, name: &str, host: &str, tls: Option<&Path>) {
        let id = sha256_hex(name);
        let meta = self.path().join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            format!(
                r#"{{"Name":"{name}","Metadata":{{}},"Endpoints":{{"docker":{{"Host":"{host}","SkipTLSVerify":false}}}}}}"#
            ),
        )
        .unwrap();
        if let Some(tls) = tls {
            let target = self.path().join("contexts/tls").join(&id).join("docker");
            std::fs::create_dir_all(&target).unwrap();
            for file in ["ca.pem", "cert.pem", "key.pem"] {
                std::fs::copy(tls.join(file), target.join(file)).unwrap();
            }
        }
    }

    /// Points `command` at this configuration: `DOCKER_CONFIG`, and the helpers first on PATH.
    pub fn apply(&self, command: &mut Command) {
        let path = format!(
            "{}:{}",
            self.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        command.env("DOCKER_CONFIG", self.path()).env("PATH", path);
    }
}

/// The hex SHA-256 of `text`, by `sha256sum` (how the Docker CLI names a context's folder).
fn sha256_hex(text: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg("printf %s \"$1\" | sha256sum")
        .arg("sh")
        .arg(text)
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}
