//! A GitHub release served over real HTTP on 127.0.0.1: archives made by
//! `scripts/package-release` from the binaries of this test build, under the same paths as
//! github.com (`/OWNER/REPO/releases/download/v<version>/<asset>`, `/releases/latest`
//! redirecting to `/releases/tag/v<version>`), and a log of every request it answered.

use envelope_tests::env::{repo_root, runner_binary};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The version of this workspace, which the archives carry.
pub(crate) const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The path of the repository's releases on the server, as on github.com.
const RELEASES: &str = "/envelope-runner/envelope-runner/releases";

/// The two targets a release ships.
pub(crate) const TARGETS: [&str; 2] = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"];

pub(crate) fn archive_name(target: &str) -> String {
    format!("envelope-runner-{VERSION}-{target}.tar.gz")
}

/// A release of this build: its assets in `dir/v<version>/` and the binaries they hold.
pub(crate) struct Release {
    pub(crate) dir: tempfile::TempDir,
    /// The binaries packaged: this build's, without debug info.
    pub(crate) binaries: PathBuf,
}

impl Release {
    /// The folder of one version's assets, as `releases/download/v<version>/` serves it.
    pub(crate) fn assets(&self) -> PathBuf {
        self.dir.path().join(format!("v{VERSION}"))
    }
}

/// One archive per target with its `.sha256`, and `SHA256SUMS`, made by the script the
/// release workflow runs. The binaries are this build's with the debug info stripped, as a
/// release build has none (and a quarter of the size makes the archive four times faster).
pub(crate) fn package_release(targets: &[&str]) -> Release {
    let built = runner_binary()
        .parent()
        .expect("target/<profile>")
        .to_path_buf();
    package_binaries(targets, |binaries| {
        for binary in ["envelope-runner", "envelope-agent"] {
            run(Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(binaries.join(binary))
                .arg(built.join(binary)));
        }
    })
}

/// A release of the binaries `put` writes into the folder it is given.
pub(crate) fn package_binaries(targets: &[&str], put: impl FnOnce(&Path)) -> Release {
    let dir = tempfile::tempdir().expect("release folder");
    let binaries = dir.path().join("bin");
    std::fs::create_dir_all(&binaries).expect("release binaries folder");
    put(&binaries);
    let release = Release { dir, binaries };
    let script = repo_root().join("scripts/package-release");
    for target in targets {
        run(Command::new(&script)
            .args(["archive", "--target", target, "--bin-dir"])
            .arg(&release.binaries)
            .arg("--out")
            .arg(release.assets()));
    }
    run(Command::new(&script).arg("sums").arg(release.assets()));
    release
}

/// Runs a command that must succeed.
fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Serves `root` (holding `v<version>/` folders) until dropped.
pub(crate) struct ReleaseServer {
    address: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReleaseServer {
    pub(crate) fn start(root: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let address = listener.local_addr().expect("listening address");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (root, requests, stop) = (root.to_path_buf(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        answer(stream, &root, address, &requests);
                    }
                }
            })
        };
        ReleaseServer {
            address,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// What install.sh takes as ENVELOPE_RUNNER_DOWNLOAD_URL.
    pub(crate) fn download_url(&self) -> String {
        format!("http://{}{RELEASES}/download", self.address)
    }

    /// The paths requested so far (`GET /…`), in order; the log is emptied.
    pub(crate) fn take_requests(&self) -> Vec<String> {
        std::mem::take(&mut *self.requests.lock().expect("request log"))
    }
}

impl Drop for ReleaseServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the stop.
        let _ = TcpStream::connect(self.address);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads one request and answers it (`Connection: close`): a release asset, the `latest`
/// redirect, a tag page, or 404.
fn answer(stream: TcpStream, root: &Path, address: SocketAddr, log: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    // The headers are read to their end and not used.
    let mut header = String::new();
    while reader.read_line(&mut header).is_ok_and(|read| read > 2) {
        header.clear();
    }
    let mut words = request_line.split_whitespace();
    let (Some(method), Some(path)) = (words.next(), words.next()) else {
        return;
    };
    log.lock()
        .expect("request log")
        .push(format!("{method} {path}"));
    let (status, headers, body) = respond(path, root, address);
    let mut out = &stream;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    );
    let _ = out.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = out.write_all(&body);
    }
}

fn respond(path: &str, root: &Path, address: SocketAddr) -> (&'static str, String, Vec<u8>) {
    let not_found = ("404 Not Found", String::new(), b"Not Found".to_vec());
    let Some(rest) = path.strip_prefix(RELEASES) else {
        return not_found;
    };
    if rest == "/latest" {
        let location = format!("http://{address}{RELEASES}/tag/v{VERSION}");
        return ("302 Found", format!("Location: {location}\r\n"), Vec::new());
    }
    if rest.starts_with("/tag/v") {
        return ("200 OK", String::new(), b"<html>release</html>".to_vec());
    }
    let Some(asset) = rest.strip_prefix("/download/") else {
        return not_found;
    };
    let safe = asset.split('/').count() == 2 && !asset.split('/').any(|part| part.starts_with('.'));
    match std::fs::read(root.join(asset)) {
        Ok(body) if safe => ("200 OK", String::new(), body),
        _ => not_found,
    }
}
