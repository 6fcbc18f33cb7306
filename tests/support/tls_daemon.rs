//! A private `dockerd` ([`PrivateDaemon`]) that also listens on `tcp://127.0.0.1:PORT` with TLS
//! and client-certificate verification, under a throwaway CA made with `openssl` for the test:
//! `client_dir()` holds `ca.pem`, `cert.pem` and `key.pem` as `DOCKER_CERT_PATH` expects them,
//! `wrong_ca_dir()` the same client files with another CA's `ca.pem`. Dropping it stops the
//! daemon and removes everything (see [`PrivateDaemon`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::private_daemon::PrivateDaemon;

pub struct TlsDaemon {
    pub daemon: PrivateDaemon,
    pub port: u16,
    certs: tempfile::TempDir,
}

impl TlsDaemon {
    pub fn start() -> TlsDaemon {
        let certs = tempfile::tempdir().unwrap();
        let dir = certs.path();
        make_certificates(dir);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let file = |name: &str| dir.join(name).display().to_string();
        let daemon = PrivateDaemon::start_with(vec![
            "--host".into(),
            format!("tcp://127.0.0.1:{port}"),
            "--tlsverify".into(),
            "--tlscacert".into(),
            file("ca.pem"),
            "--tlscert".into(),
            file("server-cert.pem"),
            "--tlskey".into(),
            file("server-key.pem"),
        ]);
        TlsDaemon {
            daemon,
            port,
            certs,
        }
    }

    /// `tcp://127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// `ca.pem`, `cert.pem`, `key.pem` of a client the daemon accepts.
    pub fn client_dir(&self) -> PathBuf {
        self.certs.path().join("client")
    }

    /// The client's files with a `ca.pem` the daemon's certificate does not chain to.
    pub fn wrong_ca_dir(&self) -> PathBuf {
        self.certs.path().join("wrong-ca")
    }
}

/// A CA, a server certificate for 127.0.0.1, a client certificate, and a second CA; EC keys
/// (quick to make).
fn make_certificates(dir: &Path) {
    let script = r#"
set -e
cd "$1"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out "$1" 2>/dev/null; }
for ca in ca other-ca; do
  key $ca-key.pem
  openssl req -x509 -new -key $ca-key.pem -out $ca.pem -days 2 -subj "/CN=envelope test $ca" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
done
sign() { # sign NAME SUBJECT EXTENSIONS
  key $1-key.pem
  openssl req -new -key $1-key.pem -out $1.csr -subj "/CN=$2"
  printf '%s\n' "$3" > $1.ext
  openssl x509 -req -in $1.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
    -out $1-cert.pem -extfile $1.ext 2>/dev/null
}
sign server 127.0.0.1 "subjectAltName=IP:127.0.0.1
extendedKeyUsage=serverAuth
basicConstraints=CA:FALSE"
sign client envelope-test-client "extendedKeyUsage=clientAuth
basicConstraints=CA:FALSE"
mkdir client wrong-ca
cp ca.pem client/ca.pem
cp other-ca.pem wrong-ca/ca.pem
for d in client wrong-ca; do cp client-cert.pem $d/cert.pem; cp client-key.pem $d/key.pem; done
"#;
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "making the test certificates with openssl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
