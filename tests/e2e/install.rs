//! Installing a release the two documented ways, against a release served over real HTTP on
//! 127.0.0.1 and laid out like GitHub's (archives packaged by `scripts/package-release` from
//! the binaries of this build): `install.sh` run as a process (`curl … | sh`), and the GitHub
//! Action's own steps from `action.yml`. Checked: the archive for the machine's architecture
//! is chosen, a checksum mismatch and a binary that does not start are refused with nothing
//! installed, the installed binaries run, and a second install takes the verified archive
//! from the cache without downloading.

mod action_steps;
mod release_server;

use crate::support::text;
use action_steps::{ActionsCache, Job};
use envelope_tests::env::repo_root;
use release_server::{
    Release, ReleaseServer, TARGETS, VERSION, archive_name, package_binaries, package_release,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A machine to install on: its own HOME, TMPDIR and a folder of stand-in commands first on
/// PATH.
struct Machine {
    dir: tempfile::TempDir,
    /// The rest of PATH after the stand-ins.
    path: String,
}

impl Machine {
    fn new() -> Self {
        Self::with_path(std::env::var("PATH").unwrap_or_default())
    }

    fn with_path(path: String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["home", "tmp", "fake-bin"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Machine { dir, path }
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn cached_archive(&self, target: &str) -> PathBuf {
        self.home()
            .join(".cache/envelope-runner")
            .join(VERSION)
            .join(archive_name(target))
    }

    /// A stand-in command: `case "$1"` arms, anything else runs the real one.
    fn fake(&self, command: &str, arms: &str) {
        let file = self.dir.path().join("fake-bin").join(command);
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(command))
            .find(|path| path.is_file())
            .unwrap();
        let script = format!(
            "#!/bin/sh\ncase \"$1\" in\n{arms}\n*) exec {} \"$@\" ;;\nesac\n",
            real.display()
        );
        std::fs::write(&file, script).unwrap();
        chmod_executable(&file);
    }

    /// `uname -s` and `uname -m` answering as another machine would.
    fn fake_uname(&self, system: &str, machine: &str) {
        self.fake(
            "uname",
            &format!("-s) echo {system} ;;\n-m) echo {machine} ;;"),
        );
    }

    /// `sh install.sh ARGS…` with the download address of `server`.
    fn install(&self, server: &ReleaseServer, args: &[&str]) -> Output {
        let fake_bin = self.dir.path().join("fake-bin");
        let shell = fake_bin.join("sh");
        let shell = if shell.exists() {
            shell
        } else {
            PathBuf::from("/bin/sh")
        };
        let mut path = fake_bin.display().to_string();
        if !self.path.is_empty() {
            path = format!("{path}:{}", self.path);
        }
        Command::new(shell)
            .arg(repo_root().join("install.sh"))
            .args(args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.home())
            .env("TMPDIR", self.dir.path().join("tmp"))
            .env("ENVELOPE_RUNNER_DOWNLOAD_URL", server.download_url())
            .output()
            .unwrap()
    }

    /// Nothing left behind in TMPDIR.
    fn assert_tmp_empty(&self) {
        let left: Vec<_> = std::fs::read_dir(self.dir.path().join("tmp"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "install.sh left {left:?} in TMPDIR");
    }
}

fn chmod_executable(file: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The target of this machine, and the other one a release ships.
fn targets() -> (&'static str, &'static str) {
    let host = TARGETS
        .into_iter()
        .find(|target| target.starts_with(std::env::consts::ARCH))
        .expect("the tests run on x86_64 or aarch64");
    let other = TARGETS.into_iter().find(|target| *target != host).unwrap();
    (host, other)
}

/// The requests install.sh makes for one target's archive: its checksum, then the archive.
fn asset_requests(server: &ReleaseServer, target: &str) -> Vec<String> {
    let url = format!(
        "{}/v{VERSION}/{}",
        server.download_url(),
        archive_name(target)
    );
    let path = &url[url.find("/envelope-runner/").unwrap()..];
    vec![format!("GET {path}.sha256"), format!("GET {path}")]
}

/// `DIR/envelope-runner --version` and `DIR/envelope-agent --version` answer for this build,
/// and the installed runner is the binary the release packaged.
fn assert_installed(dir: &Path, release: &Release) {
    let runner = Command::new(dir.join("envelope-runner"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&runner.stdout).trim(),
        format!("envelope-runner {VERSION}"),
        "{}",
        text(&runner)
    );
    let agent = Command::new(dir.join("envelope-agent"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&agent.stdout).starts_with("envelope-agent "),
        "{}",
        text(&agent)
    );
    assert!(
        std::fs::read(dir.join("envelope-runner")).unwrap()
            == std::fs::read(release.binaries.join("envelope-runner")).unwrap(),
        "{}/envelope-runner is not the binary the release packaged",
        dir.display()
    );
}

/// A release of this build for `targets`, served on 127.0.0.1.
fn served_release(targets: &[&str]) -> (Release, ReleaseServer) {
    let release = package_release(targets);
    let server = ReleaseServer::start(release.dir.path());
    (release, server)
}

#[test]
fn install_script_installs_this_machines_archive_then_reuses_the_verified_one() {
    let (host, _) = targets();
    let (release, server) = served_release(&[host]);

    // As a user who is not root, without --dir: ~/.local/bin.
    let machine = Machine::new();
    machine.fake("id", "-u) echo 1000 ;;");
    let first = machine.install(&server, &[VERSION]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(server.take_requests(), asset_requests(&server, host));
    let default_dir = machine.home().join(".local/bin");
    assert_installed(&default_dir, &release);
    assert!(
        stderr(&first).contains("is not on PATH"),
        "{}",
        text(&first)
    );
    assert!(machine.cached_archive(host).is_file());
    machine.assert_tmp_empty();

    // Again (as `v<version>`, elsewhere): the verified archive in the cache, no download.
    let elsewhere = machine.dir.path().join("elsewhere");
    let dir = elsewhere.to_str().unwrap();
    let second = machine.install(&server, &[&format!("v{VERSION}"), "--dir", dir]);
    assert_eq!(second.status.code(), Some(0), "{}", text(&second));
    assert_eq!(server.take_requests(), Vec::<String>::new());
    assert!(
        stderr(&second).contains("using the verified archive cached"),
        "{}",
        text(&second)
    );
    assert_installed(&elsewhere, &release);

    // A cached archive that no longer matches its checksum is downloaded again.
    let cached = machine.cached_archive(host);
    let mut bytes = std::fs::read(&cached).unwrap();
    bytes.push(0);
    std::fs::write(&cached, bytes).unwrap();
    let third = machine.install(&server, &[VERSION, "--dir", dir]);
    assert_eq!(third.status.code(), Some(0), "{}", text(&third));
    assert!(
        stderr(&third).contains("no longer matches its checksum"),
        "{}",
        text(&third)
    );
    assert_eq!(server.take_requests(), asset_requests(&server, host));
    assert_installed(&elsewhere, &release);

    // No version: the release `releases/latest` redirects to.
    let releases = "/envelope-runner/envelope-runner/releases";
    let latest_requests = vec![
        format!("GET {releases}/latest"),
        format!("GET {releases}/tag/v{VERSION}"),
    ];
    let fresh = Machine::new();
    let printed = fresh.install(&server, &["--print-version"]);
    assert_eq!(printed.status.code(), Some(0), "{}", text(&printed));
    assert_eq!(String::from_utf8_lossy(&printed.stdout).trim(), VERSION);
    assert_eq!(server.take_requests(), latest_requests);
    let bin = fresh.dir.path().join("bin");
    let latest = fresh.install(&server, &["--dir", bin.to_str().unwrap()]);
    assert_eq!(latest.status.code(), Some(0), "{}", text(&latest));
    let mut expected = latest_requests;
    expected.extend(asset_requests(&server, host));
    assert_eq!(server.take_requests(), expected);
    assert_installed(&bin, &release);
}

#[test]
fn install_script_installs_nothing_when_the_binary_does_not_start_here() {
    let (host, _) = targets();
    // What an older glibc than the release needs makes the dynamic loader say.
    let release = package_binaries(&[host], |binaries| {
        for binary in ["envelope-runner", "envelope-agent"] {
            let file = binaries.join(binary);
            std::fs::write(
                &file,
                format!(
                    "#!/bin/sh\necho \"{binary}: /lib/libc.so.6: version \\`GLIBC_2.99' not found\" >&2\nexit 1\n"
                ),
            )
            .unwrap();
            chmod_executable(&file);
        }
    });
    let server = ReleaseServer::start(release.dir.path());
    let machine = Machine::new();
    let bin = machine.dir.path().join("bin");
    let output = machine.install(&server, &[VERSION, "--dir", bin.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(4), "{}", text(&output));
    let message = stderr(&output);
    for expected in ["does not start on this machine", "glibc 2.28", "GLIBC_2.99"] {
        assert!(message.contains(expected), "{}", text(&output));
    }
    assert!(!bin.exists(), "nothing is installed");
    machine.assert_tmp_empty();
}

#[test]
fn install_script_chooses_the_archive_for_the_machines_architecture() {
    let (host, other) = targets();
    let (_release, server) = served_release(&[host, other]);
    let arch = other.split('-').next().unwrap();

    let machine = Machine::new();
    machine.fake_uname("Linux", arch);
    let bin = machine.dir.path().join("bin");
    let dir = bin.to_str().unwrap();
    let output = machine.install(&server, &[VERSION, "--dir", dir]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(server.take_requests(), asset_requests(&server, other));
    assert!(
        stderr(&output).contains(&format!("for {other} in {dir}")),
        "{}",
        text(&output)
    );

    // No build for the machine: exit 2, nothing downloaded or installed.
    for (system, machine_name, named) in [
        ("Linux", "riscv64", "riscv64"),
        ("Darwin", "arm64", "Darwin"),
    ] {
        let machine = Machine::new();
        machine.fake_uname(system, machine_name);
        let output = machine.install(&server, &[VERSION, "--dir", dir]);
        assert_eq!(output.status.code(), Some(2), "{}", text(&output));
        assert!(
            stderr(&output).contains(&format!("no release build for {named}")),
            "{}",
            text(&output)
        );
        assert!(
            stderr(&output).contains("cargo install"),
            "{}",
            text(&output)
        );
        assert_eq!(server.take_requests(), Vec::<String>::new());
    }
}

#[test]
fn install_script_and_action_refuse_an_archive_that_does_not_match_its_checksum() {
    let (host, _) = targets();
    let (release, server) = served_release(&[host]);
    // One byte of the served archive changes; its .sha256 still names the original.
    let served = release.assets().join(archive_name(host));
    let mut bytes = std::fs::read(&served).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&served, bytes).unwrap();
    let expected = std::fs::read_to_string(served.with_extension("gz.sha256")).unwrap();
    let expected = expected.split_whitespace().next().unwrap();

    let machine = Machine::new();
    let bin = machine.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("envelope-runner"), "the previous install").unwrap();
    let output = machine.install(&server, &[VERSION, "--dir", bin.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let message = stderr(&output);
    assert!(message.contains("checksum mismatch"), "{}", text(&output));
    assert!(message.contains(expected), "{}", text(&output));
    assert!(
        message.contains("nothing was installed"),
        "{}",
        text(&output)
    );
    assert_eq!(
        std::fs::read_to_string(bin.join("envelope-runner")).unwrap(),
        "the previous install"
    );
    assert!(!bin.join("envelope-agent").exists());
    assert!(!machine.cached_archive(host).exists());
    machine.assert_tmp_empty();

    // The action's install step fails the same way, and nothing is saved to the cache.
    let cache = ActionsCache {
        dir: machine.dir.path().join("actions-cache"),
    };
    std::fs::create_dir_all(&cache.dir).unwrap();
    let job = Job::new(runner_arch(), download_env(&server));
    let report = job.run_action(&[], &cache, &machine.path);
    assert!(!report.succeeded);
    let install = report.step("install");
    assert_eq!(install.status.code(), Some(3), "{}", text(install));
    assert!(report.github_path.is_empty());
    assert_eq!(std::fs::read_dir(&cache.dir).unwrap().count(), 0);
}

#[test]
fn install_script_runs_on_a_minimal_machine_with_busybox_wget_and_shasum() {
    let (host, _) = targets();
    let (release, server) = served_release(&[host]);
    // Only busybox's applets (its sh, wget, tar, …): no curl, no bash, no coreutils.
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .expect("busybox is installed (scripts/test-env up installs busybox-static)");
    let machine = Machine::with_path(String::new());
    let fake_bin = machine.dir.path().join("fake-bin");
    let applets = Command::new(&busybox).arg("--list").output().unwrap();
    let shasum = ["/usr/bin/shasum", "/bin/shasum"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.is_file());
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        // With perl's shasum on the machine, the script must use it instead.
        if applet == "sha256sum" && shasum.is_some() {
            continue;
        }
        std::os::unix::fs::symlink(&busybox, fake_bin.join(applet)).unwrap();
    }
    if let Some(shasum) = &shasum {
        std::os::unix::fs::symlink(shasum, fake_bin.join("shasum")).unwrap();
    } else {
        eprintln!("install: no shasum here; busybox's sha256sum checks the archive");
    }
    assert!(fake_bin.join("wget").exists(), "busybox has wget");

    let bin = machine.dir.path().join("bin");
    let output = machine.install(&server, &["latest", "--dir", bin.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let requests = server.take_requests();
    assert_eq!(requests[2..], asset_requests(&server, host), "{requests:?}");
    assert!(requests[0].ends_with("/releases/latest"), "{requests:?}");
    assert_installed(&bin, &release);
    machine.assert_tmp_empty();
}

/// `RUNNER_ARCH` of this machine, as GitHub names it.
fn runner_arch() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "ARM64",
        _ => "X64",
    }
}

fn download_env(server: &ReleaseServer) -> Vec<(String, String)> {
    vec![(
        "ENVELOPE_RUNNER_DOWNLOAD_URL".to_owned(),
        server.download_url(),
    )]
}

#[test]
fn action_installs_the_release_of_its_ref_caches_it_and_runs_envelope_runner() {
    let (host, _) = targets();
    let (release, server) = served_release(&[host]);
    let path = std::env::var("PATH").unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ActionsCache {
        dir: cache_dir.path().to_path_buf(),
    };

    // First job: no version input, so the release of the action's own Cargo.toml; `args`.
    let job = Job::new(runner_arch(), download_env(&server));
    let report = job.run_action(&[("args", "--version")], &cache, &path);
    for (id, output) in &report.steps {
        assert!(output.status.success(), "step {id}: {}", text(output));
    }
    assert_eq!(
        report.cache_key,
        format!("envelope-runner-{VERSION}-Linux-{}", runner_arch())
    );
    assert!(!report.cache_hit);
    assert_eq!(report.outputs["version"]["version"], VERSION);
    assert_eq!(server.take_requests(), asset_requests(&server, host));
    assert_eq!(report.github_path.len(), 1, "{:?}", report.github_path);
    assert_eq!(
        report.outputs["install"]["install-dir"],
        report.github_path[0].display().to_string()
    );
    assert_installed(&report.github_path[0], &release);
    assert_eq!(
        String::from_utf8_lossy(&report.step("run").stdout).trim(),
        format!("envelope-runner {VERSION}")
    );

    // Second job on a fresh machine: the cache entry is restored, nothing is downloaded, and
    // without `args` nothing runs.
    let job = Job::new(runner_arch(), download_env(&server));
    let report = job.run_action(&[("version", &format!("v{VERSION}"))], &cache, &path);
    assert!(
        report.succeeded,
        "{}",
        text(&report.steps.last().unwrap().1)
    );
    assert!(report.cache_hit);
    assert_eq!(server.take_requests(), Vec::<String>::new());
    let ran: Vec<&str> = report.steps.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ran, ["version", "install"]);
    assert_installed(&report.github_path[0], &release);

    // `version: latest` asks which release that is before choosing the cache key.
    let job = Job::new(runner_arch(), download_env(&server));
    let report = job.run_action(&[("version", "latest")], &cache, &path);
    assert!(
        report.succeeded,
        "{}",
        text(&report.steps.last().unwrap().1)
    );
    assert_eq!(report.outputs["version"]["version"], VERSION);
    assert!(report.cache_hit);
    let requests = server.take_requests();
    assert!(
        requests.len() == 2 && requests[0].ends_with("/releases/latest"),
        "{requests:?}"
    );
}
