//! Real git repositories for end-to-end tests: made with the `git` CLI, served over smart HTTP
//! with token auth by `support/git/smart_http_server.py` (git http-backend as CGI), or reached
//! as file:// URLs.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{Context, bail};

/// Run `git` in `dir` with a fixed identity and no user or system configuration, so tests do
/// not depend on the machine. Returns trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        // Local submodule URLs are refused by default since git 2.38; these repositories are
        // ours.
        .args(["-c", "protocol.file.allow=always"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Envelope Test")
        .env("GIT_AUTHOR_EMAIL", "test@envelope.invalid")
        .env("GIT_COMMITTER_NAME", "Envelope Test")
        .env("GIT_COMMITTER_EMAIL", "test@envelope.invalid")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !output.status.success() {
        bail!(
            "git {args:?} in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// A non-bare repository to make commits in, published by pushing to a bare one.
pub struct WorkRepo {
    pub dir: PathBuf,
}

impl WorkRepo {
    /// `git init` with branch `main`.
    pub fn init(dir: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        git(&dir, &["init", "--quiet", "--initial-branch=main"])?;
        Ok(WorkRepo { dir })
    }

    /// Write `contents` to `path` and commit it; returns the new commit's sha.
    pub fn commit_file(&self, path: &str, contents: &str, message: &str) -> anyhow::Result<String> {
        let file = self.dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, contents)?;
        self.git(&["add", path])?;
        self.git(&["commit", "--quiet", "-m", message])?;
        self.head()
    }

    pub fn head(&self) -> anyhow::Result<String> {
        self.git(&["rev-parse", "HEAD"])
    }

    /// An annotated tag at HEAD.
    pub fn tag(&self, name: &str) -> anyhow::Result<()> {
        self.git(&["tag", "-a", name, "-m", &format!("release {name}")])?;
        Ok(())
    }

    /// Add `url` as a submodule at `path`, record `recorded_url` in .gitmodules (a relative URL,
    /// say, so it resolves against wherever the repository is served) and commit.
    pub fn add_submodule(
        &self,
        url: &str,
        path: &str,
        recorded_url: &str,
    ) -> anyhow::Result<String> {
        self.git(&["submodule", "--quiet", "add", url, path])?;
        self.git(&[
            "config",
            "--file",
            ".gitmodules",
            &format!("submodule.{path}.url"),
            recorded_url,
        ])?;
        self.git(&["add", ".gitmodules", path])?;
        self.git(&["commit", "--quiet", "-m", &format!("add submodule {path}")])?;
        self.head()
    }

    /// Make `bare` (created when missing) hold exactly this repository's branches and tags.
    pub fn publish(&self, bare: &Path) -> anyhow::Result<()> {
        if !bare.exists() {
            std::fs::create_dir_all(bare)?;
            git(
                bare,
                &["init", "--quiet", "--bare", "--initial-branch=main"],
            )?;
            // Lets clients fetch a commit by id, as GitHub does for reachable commits.
            git(
                bare,
                &["config", "uploadpack.allowReachableSHA1InWant", "true"],
            )?;
        }
        let bare = bare.to_string_lossy();
        self.git(&["push", "--quiet", "--force", "--mirror", &bare])?;
        Ok(())
    }

    pub fn git(&self, args: &[&str]) -> anyhow::Result<String> {
        git(&self.dir, args)
    }
}

/// The smart HTTP server script.
pub fn server_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/git/smart_http_server.py")
}

/// A smart HTTP git server on 127.0.0.1 serving the bare repositories under a directory;
/// killed on drop.
pub struct GitServer {
    child: Child,
    /// Held so the server's stdin stays open; it exits when this closes, even if the test
    /// process dies without dropping the server.
    _stdin: ChildStdin,
    root: PathBuf,
    pub port: u16,
    scheme: &'static str,
}

impl GitServer {
    /// Serve `root`. With a token, requests need basic auth `x-access-token:<token>`.
    pub fn start(root: &Path, token: Option<&str>) -> anyhow::Result<Self> {
        Self::spawn(root, token, None)
    }

    /// Serve `root` over HTTPS with the certificate chain and key in `tls` (PEM files).
    pub fn start_tls(
        root: &Path,
        token: Option<&str>,
        tls: &TestCertificate,
    ) -> anyhow::Result<Self> {
        Self::spawn(root, token, Some(tls))
    }

    fn spawn(
        root: &Path,
        token: Option<&str>,
        tls: Option<&TestCertificate>,
    ) -> anyhow::Result<Self> {
        let mut command = Command::new("python3");
        command
            .arg(server_script())
            .arg(root)
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .env_remove("GIT_TEST_TOKEN");
        if let Some(tls) = tls {
            command.arg("--tls").arg(&tls.chain).arg(&tls.key);
        }
        if let Some(token) = token {
            command.env("GIT_TEST_TOKEN", token);
        }
        let mut child = command
            .spawn()
            .context("starting the smart HTTP git server")?;
        let stdin = child.stdin.take().context("server stdin")?;
        let stdout = child.stdout.take().context("server stdout")?;
        // The first line is the port, printed once the socket listens.
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port = line
            .trim()
            .parse()
            .with_context(|| format!("the git server printed {line:?} instead of its port"))?;
        Ok(GitServer {
            child,
            _stdin: stdin,
            root: root.to_path_buf(),
            port,
            scheme: if tls.is_some() { "https" } else { "http" },
        })
    }

    /// `http(s)://127.0.0.1:<port>/<repository>`.
    pub fn url(&self, repository: &str) -> String {
        format!("{}://127.0.0.1:{}/{repository}", self.scheme, self.port)
    }

    /// While on, fetch responses are cut off halfway through the pack.
    pub fn truncate_fetches(&self, on: bool) -> anyhow::Result<()> {
        let marker = self.root.join(".truncate-upload-pack");
        if on {
            std::fs::write(marker, "")?;
        } else if marker.exists() {
            std::fs::remove_file(marker)?;
        }
        Ok(())
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 that nothing listens on (it was free a moment ago).
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

/// A throwaway certificate authority and a server certificate it signed for `127.0.0.1`, made
/// with the `openssl` command (Debian's ca-certificates depends on it).
pub struct TestCertificate {
    _dir: tempfile::TempDir,
    /// The authority's certificate: what a client must trust.
    pub ca: PathBuf,
    /// The server's certificate followed by the authority's.
    pub chain: PathBuf,
    pub key: PathBuf,
}

impl TestCertificate {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = |name: &str| dir.path().join(name);
        let openssl = |args: &[&str]| -> anyhow::Result<()> {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .context("running openssl")?;
            anyhow::ensure!(
                output.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            Ok(())
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=envelope test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])?;
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ])?;
        std::fs::write(
            path("server.ext"),
            "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\n\
             extendedKeyUsage=serverAuth\n",
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ])?;
        let chain = [
            std::fs::read(path("server.pem"))?,
            std::fs::read(path("ca.pem"))?,
        ]
        .concat();
        std::fs::write(path("chain.pem"), chain)?;
        Ok(TestCertificate {
            ca: path("ca.pem"),
            chain: path("chain.pem"),
            key: path("server.key"),
            _dir: dir,
        })
    }
}
